/**
 * NodeProcess is the node under soak: `bun node.ts --port 0 ...` spawned as a child process, its
 * port read from its "listening on" log line, its resident memory read from /proc/<pid>/status.
 *
 * The child's log lines are kept (the last few hundred) and those at level warn or error are
 * counted, so the summary can show what the node complained about; all of them go to a file
 * when one is given (`--node-log` of soak.ts). `stop()` sends SIGTERM and
 * returns the exit code (the node flushes what it owes and exits 0). When the node has an admin
 * port (`--admin-port 0`), its address is read from the log too and `purge()` asks it for a full
 * collection (`POST /memory/purge`) and returns its memory after it: what the node retains.
 */
import type { MemoryFigures } from "../../src/server/admin-server.ts";
import { resolve } from "node:path";

const REPO = resolve(import.meta.dir, "../..");
const KEEP_LINES = 200;
/** KEEP_ERRORS: ERROR lines kept (`errors`). */
const KEEP_ERRORS = 20;

function spawnNode(args: readonly string[]) {
  return Bun.spawn([process.execPath, "node.ts", ...args], { cwd: REPO, stdout: "pipe", stderr: "pipe" });
}

export class NodeProcess {
  readonly proc: ReturnType<typeof spawnNode>;
  readonly args: readonly string[];
  port = 0;
  /** adminPort is the node's admin port, 0 until its log line is seen (or without one). */
  adminPort = 0;
  readonly lines: string[] = [];
  warnings = 0;
  /** errors: the node's ERROR lines (the first KEEP_ERRORS), kept apart from `lines`, which roll over. */
  readonly errors: string[] = [];
  private exited = false;
  private exitCode: number | null = null;
  /** log receives every line when a log file was given. */
  private log: ReturnType<ReturnType<typeof Bun.file>["writer"]> | undefined;

  private constructor(args: readonly string[]) {
    this.args = args;
    this.proc = spawnNode(args);
    void this.proc.exited.then((code) => {
      this.exited = true;
      this.exitCode = code;
    });
  }

  /** start spawns the node and resolves once it listens (rejects if it exits or stays silent 15 s). */
  static async start(args: readonly string[], logFile?: string): Promise<NodeProcess> {
    const node = new NodeProcess(["--port", "0", "--host", "127.0.0.1", ...args]);
    if (logFile !== undefined) node.log = Bun.file(logFile).writer();
    const listening = new Promise<number>((ok, fail) => {
      const timer = setTimeout(() => fail(new Error(`node did not listen within 15 s:\n${node.lines.join("\n")}`)), 15_000);
      const onLine = (line: string): void => {
        const admin = /admin port listening\b.*?:(\d+)/.exec(line);
        if (admin) node.adminPort = Number(admin[1]);
        const m = /listening on \S+:(\d+)/.exec(line);
        if (m) {
          clearTimeout(timer);
          ok(Number(m[1]));
        }
      };
      void node.pump(node.proc.stdout, onLine);
      void node.pump(node.proc.stderr, onLine);
      void node.proc.exited.then((code) => {
        clearTimeout(timer);
        fail(new Error(`node exited with ${code} before listening:\n${node.lines.join("\n")}`));
      });
    });
    node.port = await listening;
    return node;
  }

  get pid(): number {
    return this.proc.pid;
  }

  /** alive is false once the node has exited (a crash during the soak is a violation). */
  get alive(): boolean {
    return !this.exited;
  }

  get code(): number | null {
    return this.exitCode;
  }

  /** rssBytes reads VmRSS from /proc/<pid>/status; -1 if the process is gone. */
  async rssBytes(): Promise<number> {
    try {
      const status = await Bun.file(`/proc/${this.pid}/status`).text();
      const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
      return m ? Number(m[1]) * 1024 : -1;
    } catch {
      return -1;
    }
  }

  /** purge runs a full collection in the node (its admin port) and returns its memory after it. */
  async purge(): Promise<MemoryFigures> {
    if (this.adminPort === 0) throw new Error("the node has no admin port (start it with --admin-port 0)");
    const r = await fetch(`http://127.0.0.1:${this.adminPort}/memory/purge`, { method: "POST", signal: AbortSignal.timeout(10_000) });
    if (!r.ok) throw new Error(`POST /memory/purge: HTTP ${r.status}`);
    return ((await r.json()) as { after: MemoryFigures }).after;
  }

  /** stop sends SIGTERM and waits up to 10 s for the exit code (SIGKILL after that: code null). */
  async stop(): Promise<number | null> {
    if (this.exited) return this.exitCode;
    this.proc.kill("SIGTERM");
    const timeout = new Promise<null>((ok) => setTimeout(() => ok(null), 10_000).unref());
    const code = await Promise.race([this.proc.exited, timeout]);
    if (code === null) {
      this.proc.kill("SIGKILL");
      await this.proc.exited;
    }
    return code;
  }

  private async pump(stream: ReadableStream<Uint8Array>, onLine: (line: string) => void): Promise<void> {
    const decoder = new TextDecoder();
    let pending = "";
    for await (const chunk of stream) {
      pending += decoder.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        if (/^\S+ (WARN|ERROR)/.test(line) || /"level":"(warn|error)"/.test(line)) this.warnings++;
        if ((/^\S+ ERROR/.test(line) || /"level":"error"/.test(line)) && this.errors.length < KEEP_ERRORS) this.errors.push(line);
        this.log?.write(`${line}\n`);
        this.lines.push(line);
        if (this.lines.length > KEEP_LINES) this.lines.shift();
        onLine(line);
      }
    }
  }
}
