// Load generator for the network benchmark: many Bun.connect TCP connections, each keeping `depth`
// requests outstanding, frames copied from a precomputed RequestTable (no encoding while timing).
//
// Per connection (`Conn`): an output buffer of depth × largest frame (outstanding requests bound the
// unsent bytes, so compacting is always enough), a ring of send times (`Float64Array(depth)`;
// replies come back in order on one connection), and a reply scanner that reads only the first
// SAMPLE bytes of each reply byte by byte (length, message type, result field id) and skips the
// rest of the frame in bulk. The clock is read once per socket event. Latencies go to a
// preallocated LatencyHistogram. With `--processes N` the parent prefills, spawns N copies of
// itself (`--child`, connections split), and merges their histograms; each process prints
// `{"event":"start"}` / `{"event":"end"}` around its measured window and one result line.
//
//   bun bench/net/load-client.ts --port 9000 [--connections 50 --depth 16 --value-size 100 ...]
import { parseArgs } from "node:util";
import type { Socket } from "bun";
import { LatencyHistogram } from "./histogram.ts";
import { MC_RESPONSE, RequestTable, THRIFT_REPLY, type Protocol } from "./frames.ts";

const { values: opt } = parseArgs({
  options: {
    host: { type: "string", default: "127.0.0.1" }, port: { type: "string" },
    protocol: { type: "string", default: "thrift" }, connections: { type: "string", default: "50" },
    keys: { type: "string", default: "10000" }, "get-ratio": { type: "string", default: "0.9" },
    "value-size": { type: "string", default: "100" }, depth: { type: "string", default: "16" },
    duration: { type: "string", default: "5" }, warmup: { type: "string", default: "1" },
    processes: { type: "string", default: "1" }, "no-prefill": { type: "boolean", default: false },
    child: { type: "boolean", default: false }, seed: { type: "string", default: "1" },
  },
});
if (!opt.port) throw new Error("--port is required");
const PORT = Number(opt.port), HOST = opt.host!;
const PROTOCOL = opt.protocol as Protocol;
if (PROTOCOL !== "thrift" && PROTOCOL !== "memcache") throw new Error("--protocol thrift|memcache");
const CONNS = Number(opt.connections), KEYS = Number(opt.keys), DEPTH = Number(opt.depth);
const GET_RATIO = Number(opt["get-ratio"]), VALUE_SIZE = Number(opt["value-size"]);
const DURATION_MS = Number(opt.duration) * 1000, WARMUP_MS = Number(opt.warmup) * 1000;
const PROCESSES = Number(opt.processes);
// Reply scanner per protocol: bytes sampled per reply, where the length field ends, total length.
const THRIFT = PROTOCOL === "thrift";
const SAMPLE = THRIFT ? 22 : 24; // thrift: len, version, name "Get"/"Set", seqid, result field
const LEN_END = THRIFT ? 4 : 12;

/** Conn is one connection's state; see the header for the buffer layout. */
class Conn {
  socket: Socket<Conn> | null = null;
  readonly out: Uint8Array;
  outStart = 0;
  outEnd = 0;
  blocked = false; // a partial write is waiting for `drain`
  readonly sentAt = new Float64Array(DEPTH);
  head = 0; // ring index of the oldest outstanding request
  outstanding = 0;
  readonly hdr = new Uint8Array(SAMPLE);
  hdrFill = 0;
  left = 0; // bytes of the current reply after the sample
  constructor(maxFrame: number) { this.out = new Uint8Array(DEPTH * maxFrame); }
}

/** Load drives a set of connections; `pick` returns the next request (key*2 + isSet) or -1. */
class Load {
  readonly hist = new LatencyHistogram();
  ops = 0; errors = 0; misses = 0; closed = 0;
  measuring = false;
  stopping = false;
  private rng: number;
  private prefillNext = 0;
  constructor(readonly table: RequestTable, readonly conns: Conn[], readonly prefill: boolean, seed: number) {
    this.rng = (seed * 0x9e3779b1) | 1;
  }

  pick(): number {
    if (this.prefill) return this.prefillNext < KEYS ? this.prefillNext++ * 2 + 1 : -1;
    let x = this.rng; // xorshift32
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    this.rng = x;
    const key = (x >>> 0) % KEYS;
    const isSet = (Math.imul(x, 0x85ebca6b) >>> 0) / 4294967296 >= GET_RATIO ? 1 : 0; // a second mix
    return key * 2 + isSet;
  }

  /** fill tops the connection up to `depth` outstanding requests and writes them in one call. */
  fill(c: Conn, now: number): void {
    const t = this.table;
    while (!this.stopping && c.outstanding < DEPTH) {
      const code = this.pick();
      if (code < 0) break;
      const isSet = code & 1, key = code >>> 1;
      const len = isSet ? t.setLen : t.getLen;
      if (c.outEnd + len > c.out.length) {
        c.out.copyWithin(0, c.outStart, c.outEnd);
        c.outEnd -= c.outStart;
        c.outStart = 0;
      }
      if (len <= 64) { // a JIT byte loop beats TypedArray.set's call overhead for Get-sized frames
        const src = isSet ? t.sets : t.gets, out = c.out, o = key * len, d = c.outEnd;
        for (let j = 0; j < len; j++) out[d + j] = src[o + j]!;
      } else c.out.set((isSet ? t.setFrames : t.getFrames)[key]!, c.outEnd);
      c.outEnd += len;
      c.sentAt[(c.head + c.outstanding) % DEPTH] = now;
      c.outstanding++;
    }
    this.flush(c);
  }

  flush(c: Conn): void {
    if (c.blocked || c.outEnd === c.outStart || !c.socket) return;
    const n = c.socket.write(c.out, c.outStart, c.outEnd - c.outStart);
    c.outStart += n > 0 ? n : 0;
    if (c.outStart === c.outEnd) c.outStart = c.outEnd = 0;
    else c.blocked = true;
  }

  /** onData counts complete replies in `b`, records their latencies, and sends as many new ones. */
  onData(c: Conn, b: Uint8Array): void {
    const now = performance.now();
    let p = 0;
    const n = b.length;
    while (p < n) {
      if (c.hdrFill < SAMPLE) {
        c.hdr[c.hdrFill++] = b[p++]!;
        if (c.hdrFill === LEN_END) {
          const h = c.hdr;
          const total = THRIFT ? 4 + ((h[0]! << 24) | (h[1]! << 16) | (h[2]! << 8) | h[3]!)
            : 24 + ((h[8]! << 24) | (h[9]! << 16) | (h[10]! << 8) | h[11]!);
          if (total < SAMPLE) { this.errors++; c.socket?.terminate(); return; } // cannot resync
          c.left = total - SAMPLE;
        }
        if (c.hdrFill < SAMPLE || c.left > 0) continue;
      } else {
        const take = c.left < n - p ? c.left : n - p;
        p += take;
        c.left -= take;
        if (c.left > 0) continue;
      }
      this.complete(c, now);
    }
    this.fill(c, now);
  }

  private complete(c: Conn, now: number): void {
    const h = c.hdr;
    if (THRIFT ? h[7] !== THRIFT_REPLY : h[0] !== MC_RESPONSE) this.errors++;
    else if (THRIFT ? h[20] !== 0 || h[21] !== 0 : h[6] !== 0 || h[7] !== 0) this.misses++; // CacheError / status
    c.hdrFill = 0;
    if (c.outstanding === 0) { this.errors++; return; } // a reply nobody asked for
    if (this.measuring) {
      this.hist.record((now - c.sentAt[c.head]!) * 1e6);
      this.ops++;
    }
    c.head = c.head + 1 === DEPTH ? 0 : c.head + 1;
    c.outstanding--;
  }
}

/** connect opens every connection of `load` and resolves once all are open. */
async function connect(load: Load): Promise<void> {
  await Promise.all(load.conns.map((c) => Bun.connect<Conn>({
    hostname: HOST, port: PORT, data: c,
    socket: {
      data: (s, b) => load.onData(s.data, b),
      drain: (s) => { s.data.blocked = false; load.flush(s.data); },
      close: (s) => { s.data.socket = null; if (!load.stopping) load.closed++; },
      error: () => { load.errors++; },
    },
  }).then((s) => { c.socket = s; s.setNoDelay(true); })));
}

function closeAll(load: Load): void { for (const c of load.conns) c.socket?.end(); }

const newConns = (n: number, t: RequestTable) => Array.from({ length: n }, () => new Conn(Math.max(t.getLen, t.setLen)));

/** prefill sets every key once over 8 connections, so the gets of the run hit. */
async function prefill(table: RequestTable): Promise<void> {
  const load = new Load(table, newConns(8, table), true, 1);
  await connect(load);
  const t0 = performance.now();
  await new Promise<void>((resolve, reject) => {
    const tick = setInterval(() => {
      if (load.conns.every((c) => c.outstanding === 0)) { clearInterval(tick); resolve(); }
      else if (performance.now() - t0 > 30_000) { clearInterval(tick); reject(new Error("prefill timed out")); }
    }, 5);
    for (const c of load.conns) load.fill(c, t0);
  });
  load.stopping = true;
  closeAll(load);
  if (load.errors + load.misses + load.closed > 0) throw new Error(`prefill failed: ${load.errors} errors, ${load.misses} misses`);
}

/** run drives the load for warmup + duration and returns this process's result. */
async function run(table: RequestTable, conns: number, seed: number) {
  const load = new Load(table, newConns(conns, table), false, seed);
  await connect(load);
  for (const c of load.conns) load.fill(c, performance.now());
  await Bun.sleep(WARMUP_MS);
  const cpu0 = process.cpuUsage(), t0 = performance.now();
  load.measuring = true;
  console.log(JSON.stringify({ event: "start" }));
  await Bun.sleep(DURATION_MS);
  load.measuring = false;
  const seconds = (performance.now() - t0) / 1000, cpu = process.cpuUsage(cpu0);
  console.log(JSON.stringify({ event: "end" }));
  load.stopping = true;
  for (let i = 0; i < 200 && load.conns.some((c) => c.outstanding > 0 && c.socket); i++) await Bun.sleep(10);
  closeAll(load);
  return { ops: load.ops, errors: load.errors, misses: load.misses, closed: load.closed, seconds,
    cpuUs: cpu.user + cpu.system, hist: load.hist.sparse() };
}
type Part = Awaited<ReturnType<typeof run>>;

/** spawnChildren runs PROCESSES copies of this script and relays their start/end events. */
async function spawnChildren(): Promise<Part[]> {
  const args = process.argv.slice(2).filter((a) => a !== "--child");
  let started = 0, ended = 0;
  return Promise.all(Array.from({ length: PROCESSES }, async (_, i) => {
    const share = Math.floor(CONNS / PROCESSES) + (i < CONNS % PROCESSES ? 1 : 0);
    const child = Bun.spawn([process.execPath, import.meta.path, ...args, "--child", "--no-prefill",
      "--connections", String(share), "--seed", String(i + 2)], { stdout: "pipe", stderr: "inherit" });
    let part: Part | null = null;
    for await (const line of lines(child.stdout)) {
      const msg = JSON.parse(line);
      if (msg.event === "start" && ++started === PROCESSES) console.log(line); // all are loading
      else if (msg.event === "end" && ++ended === 1) console.log(line); // one has stopped
      else if (msg.result) part = msg.result;
    }
    if ((await child.exited) !== 0 || !part) throw new Error(`client process ${i} failed`);
    return part;
  }));
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

const table = new RequestTable(PROTOCOL, KEYS, VALUE_SIZE);
if (!opt["no-prefill"]) await prefill(table);
if (opt.child) {
  console.log(JSON.stringify({ result: await run(table, CONNS, Number(opt.seed)) }));
} else {
  const cpu0 = process.cpuUsage();
  const parts = PROCESSES > 1 ? await spawnChildren() : [await run(table, CONNS, Number(opt.seed))];
  const hist = new LatencyHistogram();
  for (const p of parts) hist.merge(p.hist);
  const seconds = Math.max(...parts.map((p) => p.seconds));
  const cpuS = parts.reduce((s, p) => s + p.cpuUs, PROCESSES > 1 ? process.cpuUsage(cpu0).user : 0) / 1e6;
  const sum = (f: (p: Part) => number) => parts.reduce((s, p) => s + f(p), 0);
  console.log(JSON.stringify({
    ops_per_s: Math.round(sum((p) => p.ops / p.seconds)), p50_us: +(hist.percentile(0.5) / 1e3).toFixed(1),
    p99_us: +(hist.percentile(0.99) / 1e3).toFixed(1), errors: sum((p) => p.errors + p.closed),
    misses: sum((p) => p.misses), client_cpu_s: +cpuS.toFixed(3), client_cpu_pct: Math.round((cpuS / seconds) * 100),
    processes: PROCESSES, connections: CONNS, depth: DEPTH, value_size: VALUE_SIZE, get_ratio: GET_RATIO, seconds: +seconds.toFixed(2),
  }));
}
process.exit(0);
