// Network benchmark driver: for each workload × server it starts the server as a child process on
// a free 127.0.0.1 port (pinned to core 0 with taskset when available), waits until it accepts,
// checks it stores and returns bytes correctly, runs the load client (pinned to core 1) and samples
// the server's CPU from /proc/<pid>/stat (utime+stime of it and its descendants) exactly over the
// client's measured window (the client prints start/end events), plus the machine's busy time from
// /proc/stat so load from unrelated processes shows up as "other CPU%". Prints a side-by-side table.
// A fresh server per case; every child is killed at the end, on error and on SIGINT/SIGTERM.
//
// The load client is loadgen.c (`--client c`, the default when gcc exists), compiled on demand into
// the temp dir and recompiled when the source is newer than the binary; `--client bun` runs
// load-client.ts instead, which saturates its core before a fast server does (see RESULTS.md).
//
//   bun run bench/net/run.ts [--duration 5] [--warmup 1] [--servers ours,apache,canned,memcached]
//                            [--client c|bun] [--threads 1 (c)] [--processes 1 (bun)]
//                            [--connections 50] [--repeat 1] [--json out.json] [--wait-idle 60]
//                            [--workloads d1,d16,4k (default all three)]
// Before each case it waits up to --wait-idle seconds for the machine to go quiet (busy < 15 % of
// one core over a second), since other processes on the same cores skew every figure.
// With --repeat N each case runs N times on a fresh server and the median run (by ops/s) is shown;
// the servers take turns (one round = each server once), and ours / X is also given per round.
// `minimal` (minimal-server.ts, not in the default list) is the least work a server that really
// stores and returns the workload's values does in Bun: a reference between canned and ours;
// `minimal-warm` is the same with the node's warm-up (the cache misses of a chunk's keys overlapped).
import { parseArgs } from "node:util";
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import type { Subprocess } from "bun";
import { checkServer } from "./check.ts";
import type { Protocol } from "./frames.ts";

const { values: opt } = parseArgs({
  options: {
    duration: { type: "string", default: "5" }, warmup: { type: "string", default: "1" },
    servers: { type: "string", default: "ours,apache,canned,memcached" },
    client: { type: "string" }, threads: { type: "string", default: "1" },
    processes: { type: "string", default: "1" }, connections: { type: "string", default: "50" },
    repeat: { type: "string", default: "1" }, json: { type: "string" }, "wait-idle": { type: "string", default: "60" },
    workloads: { type: "string", default: "d1,d16,4k" },
  },
});
const ROOT = new URL("../../", import.meta.url).pathname;
const HERE = new URL("./", import.meta.url).pathname;
const BUN = process.execPath;
const TASKSET = Bun.which("taskset");
const pin = (core: number, argv: string[]) => (TASKSET ? [TASKSET, "-c", String(core), ...argv] : argv);
const CLK_TCK = Number(Bun.spawnSync(["getconf", "CLK_TCK"]).stdout.toString().trim()) || 100;
const DURATION = Number(opt.duration), WARMUP = Number(opt.warmup);

/** loadgen returns the path of the compiled loadgen.c, compiling it if missing or older than the source. */
function loadgen(): string {
  const src = HERE + "loadgen.c", dir = tmpdir() + "/mybuncache-bench", bin = dir + "/loadgen";
  if (existsSync(bin) && statSync(bin).mtimeMs >= statSync(src).mtimeMs) return bin;
  mkdirSync(dir, { recursive: true });
  const tmp = `${bin}.${process.pid}`; // rename, so a concurrent run never sees a half-written binary
  const cc = Bun.spawnSync(["gcc", "-O2", "-o", tmp, src, "-lpthread"], { stdout: "inherit", stderr: "inherit" });
  if (cc.exitCode !== 0) throw new Error("gcc failed on loadgen.c");
  renameSync(tmp, bin);
  return bin;
}
const CLIENT = opt.client ?? (Bun.which("gcc") ? "c" : "bun");
if (CLIENT !== "c" && CLIENT !== "bun") throw new Error("--client c|bun");
const CLIENT_ARGV = CLIENT === "c" ? [loadgen(), "--threads", opt.threads!] : [BUN, HERE + "load-client.ts", "--processes", opt.processes!];

const ALL_WORKLOADS = [
  { id: "d1", name: "100 B, depth 1", valueSize: 100, depth: 1 },
  { id: "d16", name: "100 B, depth 16", valueSize: 100, depth: 16 },
  { id: "4k", name: "4 KiB, depth 16", valueSize: 4096, depth: 16 },
];
const WORKLOADS = opt.workloads!.split(",").map((id) => {
  const w = ALL_WORKLOADS.find((x) => x.id === id);
  if (w === undefined) throw new Error(`unknown workload ${id} (d1, d16, 4k)`);
  return w;
});
interface ServerSpec { argv(port: number, valueSize: number): string[]; protocol: Protocol; echo: boolean; ready: string | null; cwd: string }
const SERVERS: Record<string, ServerSpec> = {
  ours: { argv: (p) => [BUN, "run", "node.ts", "--port", String(p), "--memory", "256mb"], protocol: "thrift", echo: true, ready: "listening", cwd: ROOT },
  apache: { argv: (p) => [BUN, HERE + "apache-server.ts", "--port", String(p)], protocol: "thrift", echo: true, ready: "listening", cwd: ROOT },
  canned: { argv: (p, v) => [BUN, HERE + "canned-server.ts", "--port", String(p), "--value-size", String(v)], protocol: "thrift", echo: false, ready: "listening", cwd: ROOT },
  minimal: { argv: (p, v) => [BUN, HERE + "minimal-server.ts", "--port", String(p), "--value-size", String(v)], protocol: "thrift", echo: true, ready: "listening", cwd: ROOT },
  "minimal-warm": { argv: (p, v) => [BUN, HERE + "minimal-server.ts", "--port", String(p), "--value-size", String(v), "--warm"], protocol: "thrift", echo: true, ready: "listening", cwd: ROOT },
  memcached: { argv: (p) => ["memcached", "-p", String(p), "-l", "127.0.0.1", "-U", "0", "-t", "1", "-m", "256", "-u", "nobody"], protocol: "memcache", echo: true, ready: null, cwd: ROOT },
};

const children = new Set<Subprocess>();
function killAll(): void { for (const c of children) c.kill("SIGKILL"); children.clear(); }
for (const sig of ["SIGINT", "SIGTERM"] as const) process.on(sig, () => { killAll(); process.exit(130); });

async function freePort(): Promise<number> {
  const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = l.port;
  l.stop(true);
  return port;
}

/** cpuSeconds sums utime+stime of `pid` and all its descendants (a `bun run` may fork). */
function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" "); // f[0] is field 3 (state)
    let ticks = Number(f[11]) + Number(f[12]);
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const kids = readFileSync(`/proc/${pid}/task/${tid}/children`, "utf8").trim();
      for (const k of kids ? kids.split(" ") : []) ticks += cpuSeconds(Number(k)) * CLK_TCK;
    }
    return ticks / CLK_TCK;
  } catch { return 0; }
}

/** busySeconds is the machine's busy CPU time (user+nice+system+irq+softirq+steal, all cores). */
function busySeconds(): number {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  return ((f[0] ?? 0) + (f[1] ?? 0) + (f[2] ?? 0) + (f[5] ?? 0) + (f[6] ?? 0) + (f[7] ?? 0)) / CLK_TCK;
}

/** waitIdle waits up to `seconds` for a second in which the machine is busy < 15 % of one core. */
async function waitIdle(seconds: number): Promise<void> {
  for (const end = performance.now() + seconds * 1000; performance.now() < end;) {
    const b0 = busySeconds();
    await Bun.sleep(1000);
    if (busySeconds() - b0 < 0.15) return;
  }
}

/** lines yields the text lines a child writes to stdout. */
async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const dec = new TextDecoder();
  let rest = "";
  for await (const chunk of stream) {
    const parts = (rest + dec.decode(chunk, { stream: true })).split("\n");
    rest = parts.pop()!;
    yield* parts.filter((l) => l !== "");
  }
  if (rest) yield rest;
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: Timer | undefined;
  return Promise.race([p, new Promise<never>((_, rej) => { t = setTimeout(() => rej(new Error(`${what}: timed out after ${ms} ms`)), ms); })])
    .finally(() => clearTimeout(t));
}

/** startServer launches a server pinned to core 0 and resolves once it accepts connections. */
async function startServer(spec: ServerSpec, port: number, valueSize: number): Promise<Subprocess> {
  const proc = Bun.spawn(pin(0, spec.argv(port, valueSize)), { cwd: spec.cwd, stdout: "pipe", stderr: "pipe" });
  children.add(proc);
  // The ready line may come on stdout or stderr (a logger); both are read to the end so the child
  // never blocks on a full pipe, and its stderr is echoed to ours.
  let onReady = () => {};
  const ready = new Promise<void>((resolve) => { onReady = resolve; });
  const scan = async (stream: ReadableStream<Uint8Array>, echo: boolean) => {
    for await (const line of lines(stream)) {
      if (echo) console.error(line);
      if (spec.ready && line.includes(spec.ready)) onReady();
    }
  };
  const done = Promise.all([scan(proc.stdout, false), scan(proc.stderr, true)]);
  if (spec.ready) {
    await withTimeout(Promise.race([ready, done.then(() => { throw new Error(`exited before printing '${spec.ready}'`); })]), 10_000, "start");
  }
  for (let i = 0; ; i++) {
    try { (await Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {} } })).end(); return proc; }
    catch (e) { if (i >= 100 || proc.exitCode !== null) throw e; await Bun.sleep(100); }
  }
}

interface Row { workload: string; server: string; ops_per_s?: number; p50_us?: number; p99_us?: number; server_cpu_pct?: number; client_cpu_pct?: number; other_cpu_pct?: number; errors?: number; note?: string }

/** runCase measures one server on one workload. */
async function runCase(name: string, w: (typeof WORKLOADS)[number]): Promise<Row> {
  const spec = SERVERS[name]!, port = await freePort();
  const row: Row = { workload: w.name, server: name };
  let server: Subprocess | null = null;
  try {
    await waitIdle(Number(opt["wait-idle"]));
    try { server = await startServer(spec, port, w.valueSize); }
    catch (e) { row.note = "not available: " + (e as Error).message; return row; } // e.g. node.ts not written yet
    await checkServer(port, spec.protocol, w.valueSize, spec.echo);
    const client = Bun.spawn(pin(1, [...CLIENT_ARGV, "--port", String(port), "--protocol", spec.protocol,
      "--connections", opt.connections!, "--depth", String(w.depth), "--value-size", String(w.valueSize),
      "--duration", String(DURATION), "--warmup", String(WARMUP)]), { stdout: "pipe", stderr: "inherit" });
    children.add(client);
    let cpu0 = 0, t0 = 0, cpuPct = 0, busy0 = 0, busyPct = 0, result: Record<string, number> | null = null;
    await withTimeout((async () => {
      for await (const line of lines(client.stdout)) {
        const msg = JSON.parse(line);
        if (msg.event === "start") { cpu0 = cpuSeconds(server!.pid); t0 = performance.now(); busy0 = busySeconds(); }
        else if (msg.event === "end") {
          const secs = (performance.now() - t0) / 1000;
          cpuPct = ((cpuSeconds(server!.pid) - cpu0) / secs) * 100;
          busyPct = ((busySeconds() - busy0) / secs) * 100;
        }
        else if (msg.ops_per_s !== undefined) result = msg;
      }
      if ((await client.exited) !== 0 || !result) throw new Error("load client failed");
    })(), (DURATION + WARMUP) * 1000 + 60_000, "load client");
    const r = result as unknown as Record<string, number>;
    Object.assign(row, { ops_per_s: r.ops_per_s, p50_us: r.p50_us, p99_us: r.p99_us, server_cpu_pct: Math.round(cpuPct),
      client_cpu_pct: r.client_cpu_pct, other_cpu_pct: Math.max(0, Math.round(busyPct - cpuPct - r.client_cpu_pct!)), errors: r.errors! + r.misses! });
  } catch (e) {
    row.note = "failed: " + (e as Error).message;
  } finally {
    killAll();
    await server?.exited;
  }
  return row;
}

function table(rows: Row[]): string {
  const head = ["workload", "server", "ops/s", "p50 µs", "p99 µs", "server CPU%", "client CPU%", "other CPU%", "errors", "note"];
  const cells = rows.map((r) => [r.workload, r.server, r.ops_per_s?.toLocaleString("en-US") ?? "—", String(r.p50_us ?? "—"),
    String(r.p99_us ?? "—"), String(r.server_cpu_pct ?? "—"), String(r.client_cpu_pct ?? "—"), String(r.other_cpu_pct ?? "—"), String(r.errors ?? "—"), r.note ?? ""]);
  const out = [head, head.map(() => "---"), ...cells].map((c) => "| " + c.join(" | ") + " |");
  return out.join("\n");
}

if (!existsSync(ROOT + "test/gen/cache/GroupCache.js")) Bun.spawnSync(["bash", ROOT + "thrift/gen.sh"], { stdout: "inherit", stderr: "inherit" });
const names = opt.servers!.split(",").filter((n) => {
  if (!SERVERS[n]) throw new Error(`unknown server ${n} (ours, apache, canned, minimal, minimal-warm, memcached)`);
  return n !== "memcached" || Bun.which("memcached") !== null;
});
const rows: Row[] = [];
// Paired ratios: in each round every server runs once, back to back, so ours / X within a round
// compares servers under the same machine conditions (this shared VM drifts by a third over
// minutes; medians of unpaired runs mix those states).
const pairs: string[] = [];
try {
  for (const w of WORKLOADS) {
    const runs = new Map<string, Row[]>(names.map((n) => [n, []]));
    const ratios = new Map<string, number[]>(names.filter((n) => n !== "ours").map((n) => [n, []]));
    for (let i = 0; i < Number(opt.repeat); i++) {
      const round = new Map<string, number>();
      for (const n of names) {
        const done = runs.get(n)!;
        if (done.length > 0 && done[done.length - 1]!.ops_per_s === undefined) continue; // it failed: not again
        const r = await runCase(n, w);
        done.push(r);
        console.error(`${r.workload} ${r.server}: ${r.ops_per_s ?? r.note}`);
        if (r.ops_per_s !== undefined) round.set(n, r.ops_per_s);
      }
      const ours = round.get("ours");
      for (const [n, list] of ratios) if (ours !== undefined && round.has(n)) list.push(ours / round.get(n)!);
    }
    for (const n of names) {
      const done = runs.get(n)!.sort((a, b) => (a.ops_per_s ?? 0) - (b.ops_per_s ?? 0));
      rows.push(done[(done.length - 1) >> 1]!); // the median run by ops/s
    }
    for (const [n, list] of ratios) {
      if (list.length === 0) continue;
      const sorted = [...list].sort((a, b) => a - b);
      pairs.push(`${w.name}: ours / ${n} per round ${list.map((x) => x.toFixed(2)).join(", ")} (median ${sorted[(sorted.length - 1) >> 1]!.toFixed(2)})`);
    }
  }
} finally {
  killAll();
}
console.log(`taskset: ${TASKSET ? "server core 0, client core 1" : "unavailable (unpinned)"}; ${opt.connections} connections, ` +
  `10k keys, 90% get, client ${CLIENT === "c" ? `loadgen.c, ${opt.threads} thread(s)` : `load-client.ts, ${opt.processes} process(es)`}, ${DURATION} s (+${WARMUP} s warmup) per case, ` +
  `median of ${opt.repeat}; CPU% = % of one core; other CPU% ~ machine busy time minus server and client (load from other processes)\n`);
console.log(table(rows));
if (pairs.length > 0) console.log("\n" + pairs.join("\n"));
if (opt.json) writeFileSync(opt.json, JSON.stringify(rows, null, 2));
process.exit(0);
