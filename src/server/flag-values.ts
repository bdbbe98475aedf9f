/**
 * The syntax of flag values, for flags.ts: sizes accept `k`, `kb`, `m`, `mb`, `g`, `gb` (powers of
 * 1024) or plain bytes; durations accept `ms`, `s`, `m`, `h` or plain seconds, and a timer's at
 * most MAX_TIMER_MS; switches, integers in a range, `host:port` members, and `--group` specs with
 * their options. Each throws `ConfigError` naming the flag and what it expected.
 */
import { MAX_TIMER_MS } from "../cluster/loader.ts";
import { canonicalMember, dialSpelling } from "../cluster/member-id.ts";
import { ConfigError, type GroupSpec } from "./config.ts";

export function parseGroup(spec: string): GroupSpec {
  const [name, memory, ttl, options, extra] = spec.split(":");
  if (!name || extra !== undefined) throw new ConfigError(`--group expects NAME[:SIZE[:TTL[:OPTIONS]]], got '${spec}'`);
  if (!/^[\w.-]+$/.test(name)) throw new ConfigError(`group name '${name}' may use letters, digits, '_', '.', '-'`);
  const g: GroupSpec = {
    name,
    memory: memory ? parseSize("--group size", memory) : undefined,
    ttlMs: ttl ? parseTtl("--group ttl", ttl) : 0,
  };
  for (const option of options ? options.split(",") : []) parseGroupOption(g, option);
  return g;
}

function parseGroupOption(g: GroupSpec, option: string): void {
  const eq = option.indexOf("=");
  const key = eq < 0 ? option : option.slice(0, eq);
  const value = eq < 0 ? "" : option.slice(eq + 1);
  switch (key) {
    case "admit":
      if (value === "always") g.admission = "always";
      else if (value === "lru-k") g.admission = "lru-k";
      else if (value.startsWith("lru-k=")) {
        g.admission = "lru-k";
        g.admissionK = parseInteger(`--group ${g.name} admit=lru-k=K`, value.slice(6), 1, 255);
      } else throw new ConfigError(`--group ${g.name}: admit must be always, lru-k or lru-k=K, got '${value}'`);
      return;
    case "negttl":
      g.negativeTtlMs = parseTtl(`--group ${g.name} negttl`, value);
      return;
    case "timeout":
      g.loadTimeoutMs = parseLoadTimeout(`--group ${g.name} timeout`, value);
      return;
    case "multi":
      g.multiLoadWindow = parseInteger(`--group ${g.name} multi`, value, 1, 4096);
      return;
    case "maxitem":
      g.maxItemSize = parseSize(`--group ${g.name} maxitem`, value);
      return;
    default:
      throw new ConfigError(`--group ${g.name}: unknown option '${option}' (admit=, negttl=, timeout=, multi=, maxitem=)`);
  }
}

const SIZE_UNITS: Record<string, number> = { "": 1, b: 1, k: 1024, kb: 1024, m: 1024 ** 2, mb: 1024 ** 2, g: 1024 ** 3, gb: 1024 ** 3 };

export function parseSize(flag: string, text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(text.trim());
  const unit = m && Object.hasOwn(SIZE_UNITS, m[2]!.toLowerCase()) ? SIZE_UNITS[m[2]!.toLowerCase()] : undefined; // (not a unit "constructor")
  if (!m || unit === undefined) throw new ConfigError(`${flag} expects a size like 64mb, 512k or 1048576, got '${text}'`);
  const bytes = Math.floor(Number(m[1]) * unit);
  if (!(bytes > 0) || !Number.isSafeInteger(bytes)) throw new ConfigError(`${flag} must be a positive size, got '${text}'`);
  return bytes;
}

const DURATION_UNITS: Record<string, number> = { "": 1000, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

export function parseDuration(flag: string, text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|)$/i.exec(text.trim());
  if (!m) throw new ConfigError(`${flag} expects a duration like 250ms, 30s, 5m or 1h, got '${text}'`);
  const ms = Math.round(Number(m[1]) * DURATION_UNITS[m[2]!.toLowerCase()]!);
  // (400 digits would be Infinity: "no expiry", not what was written)
  if (!Number.isSafeInteger(ms)) throw new ConfigError(`${flag} is too long: at most ${Number.MAX_SAFE_INTEGER} ms, got '${text}'`);
  return ms;
}

/**
 * parseTtl reads (with `parse`) a TTL whose 0 means none (a group's TTL: no expiry; negttl: off;
 * --mirror-ttl, a timer's: no cap; --idle-timeout, a timer's: never): a duration under 1 ms but
 * not 0 is refused, since it rounds to 0 and would mean none, the opposite of what was written.
 */
export function parseTtl(flag: string, text: string, parse: (flag: string, text: string) => number = parseDuration): number {
  const ms = parse(flag, text);
  if (ms === 0 && /[1-9]/.test(text)) throw new ConfigError(`${flag} must be at least 1ms or 0 (none), got '${text}'`);
  return ms;
}

/** parseTimer is parseDuration for a duration a timer waits: at most MAX_TIMER_MS (24.8 days). */
export function parseTimer(flag: string, text: string): number {
  const ms = parseDuration(flag, text);
  if (ms > MAX_TIMER_MS) throw new ConfigError(`${flag} must be at most ${MAX_TIMER_MS} ms (about 24 days), got '${text}'`);
  return ms;
}

/**
 * parseTimerAtLeast reads a timer's duration that must be at least `min` ms: a smaller one
 * (0 included) is refused, saying why, rather than silently raised to `min`.
 */
export function parseTimerAtLeast(flag: string, text: string, min: number, why: string): number {
  const ms = parseTimer(flag, text);
  if (!(ms >= min)) throw new ConfigError(`${flag} must be at least ${min}ms (${why}), got '${text}'`);
  return ms;
}

/**
 * parseLoadTimeout reads a load timeout: at least 1 ms. 0 is refused, not taken as "off" as by
 * other timers (a load without a deadline could hold its callers for good), nor as 1 ms (it was,
 * and every load failed).
 */
export function parseLoadTimeout(flag: string, text: string): number {
  const ms = parseTimer(flag, text);
  if (!(ms >= 1)) throw new ConfigError(`${flag} must be at least 1ms (a load needs a deadline), got '${text}'`);
  return ms;
}

/** parseSwitch reads an on/off flag: on when given alone, else its `=value` says which. */
export function parseSwitch(flag: string, inline: string | undefined): boolean {
  if (inline === undefined) return true;
  const v = inline.trim().toLowerCase();
  if (v === "true" || v === "1" || v === "yes" || v === "on") return true;
  if (v === "false" || v === "0" || v === "no" || v === "off") return false;
  throw new ConfigError(`${flag} is on when given alone, or takes true/false (yes/no, on/off, 1/0), got '${inline}'`);
}

/**
 * parseMember reads a `host:port` member id into its canonical spelling (src/cluster/member-id.ts);
 * an IPv6 host is in brackets, a link-local one with its zone (`[fe80::1%eth0]:8001`: Bun connects
 * through the interface it names).
 */
export function parseMember(flag: string, text: string): string {
  const id = canonicalMember(text);
  if (id === undefined) throw new ConfigError(`${flag} expects host:port with a port of 1..65535, got '${text}'`);
  return id;
}

/**
 * parseDialMember is parseMember for an id the node dials or looks up (--peers, --peers-dns): a
 * host name's trailing dot is kept (dialSpelling); the member lists read it into the id.
 */
export function parseDialMember(flag: string, text: string): string {
  parseMember(flag, text); // (what is no id throws)
  return dialSpelling(text)!;
}

export function parseInteger(flag: string, text: string, min: number, max: number): number {
  const n = Number(text);
  if (!/^\d+$/.test(text.trim()) || n < min || n > max) throw new ConfigError(`${flag} expects an integer in [${min}, ${max}], got '${text}'`);
  return n;
}
