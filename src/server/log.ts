/**
 * Logger writes one line per event, with a level filter and optional JSON lines.
 *
 * Nothing on the request hot path logs; connection faults and lifecycle events do. The sink is
 * injected (stderr by default) so tests can capture lines, and so several nodes in one process
 * keep separate logs.
 */
export const LOG_LEVELS = ["debug", "info", "warn", "error", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export type LogFields = Record<string, unknown>;

export class Logger {
  private readonly min: number;
  private readonly json: boolean;
  private readonly sink: (line: string) => void;

  constructor(level: LogLevel = "info", json = false, sink: (line: string) => void = (l) => process.stderr.write(l + "\n")) {
    this.min = LOG_LEVELS.indexOf(level);
    this.json = json;
    this.sink = sink;
  }

  enabled(level: LogLevel): boolean {
    return LOG_LEVELS.indexOf(level) >= this.min;
  }

  debug(msg: string, fields?: LogFields): void {
    this.log("debug", msg, fields);
  }
  info(msg: string, fields?: LogFields): void {
    this.log("info", msg, fields);
  }
  warn(msg: string, fields?: LogFields): void {
    this.log("warn", msg, fields);
  }
  error(msg: string, fields?: LogFields): void {
    this.log("error", msg, fields);
  }

  private log(level: LogLevel, msg: string, fields?: LogFields): void {
    if (!this.enabled(level)) return;
    const time = new Date().toISOString();
    if (this.json) {
      this.sink(JSON.stringify({ time, level, msg, ...fields }));
      return;
    }
    let line = `${time} ${level.toUpperCase().padEnd(5)} ${msg}`;
    if (fields) {
      for (const [k, v] of Object.entries(fields)) {
        if (v === undefined) continue;
        const text = typeof v === "string" ? v : typeof v === "object" ? JSON.stringify(v) : String(v);
        line += ` ${k}=${/\s/.test(text) ? JSON.stringify(text) : text}`;
      }
    }
    this.sink(line);
  }
}

/** linesLeftOut is the field saying how many lines a LogBudget held back before this one (none: no field). */
export function linesLeftOut(held: number): { linesLeftOut?: number } {
  return held > 0 ? { linesLeftOut: held } : {};
}

/**
 * LogBudget lets at most `lines` lines of one kind through per `windowMs`: a flood of bad
 * connections (garbage, wrong tokens, connections past the limit) must not flood the log too.
 * The lines held back are counted, and the next line let through says how many there were.
 */
export class LogBudget {
  private windowStart = -Infinity;
  private used = 0;
  private heldBack = 0;

  constructor(private readonly lines: number, private readonly windowMs = 1000) {}

  /** take returns -1 when a line at `now` (ms) is held back, else how many were held back before it. */
  take(now: number): number {
    if (now - this.windowStart >= this.windowMs) {
      this.windowStart = now;
      this.used = 0;
    }
    if (this.used >= this.lines) {
      this.heldBack++;
      return -1;
    }
    this.used++;
    const held = this.heldBack;
    this.heldBack = 0;
    return held;
  }
}
