/**
 * getmulti-pipeline.ts — a client pipelining large GetMultis of keys that are all present, against
 * a node in a process of its own: keys/s at the client, and the node's CPU time and the buffers it
 * re-makes per request (its key list `Request.items`, its partial-message buffer, its output
 * buffer), to measure what letting go of a connection's large buffers once served costs.
 *
 *   taskset -c 1 bun bench/getmulti-pipeline.ts --keys 10000 [--depth 4 --seconds 3 --warmup 1]
 *   taskset -c 1 bun bench/getmulti-pipeline.ts --keys 100000 --root /path/to/other/tree --probe
 *
 * The node (CacheNode, one "default" group, 100 B values, the keys written into its store before
 * it listens) runs from `--root`'s src/ (default: this tree), pinned with `taskset -c 0`; the
 * client (this process) keeps `--depth` GetMultis of `--keys` keys outstanding on one framed
 * connection and skips the replies' bytes. It checks the first reply holds every key. One line of
 * JSON: keys/s, requests/s, the node's CPU µs per request, and with `--probe` the node's
 * re-allocations per request of the three buffers and their bytes (the probes wrap the methods
 * that grow them, BinaryWriter.ensure included: throughput is lower with them, compare like with
 * like). `--probe` needs a tree whose methods carry the same names.
 *
 * `--local` takes the socket, the client and the other process out: one process serves the same
 * frames, cut into 64 KiB chunks as a socket hands them, from a ProtocolConnection through
 * `dispatch` as the server does (replies dropped each chunk), from `--root` and, with `--against`,
 * another tree's modules (a module graph each), in turn for 10 rounds of `--seconds`; it prints
 * each side's median CPU ns and minor page faults per request and the median of the paired
 * ratios. Caution: in A/A duels (a tree against a copy of itself) the side set up second was
 * 0-7 % slower, so a ratio within that says nothing.
 *
 *   taskset -c 0 bun bench/getmulti-pipeline.ts --local --keys 2000 [--against /path/to/other/tree]
 *
 * `--realloc` times what re-making the key list costs a request, alone (CPU ns per request):
 *
 *   taskset -c 0 bun bench/getmulti-pipeline.ts --realloc --keys 100000
 *
 * Variants compared (bench/RESULTS.md): run each from a worktree, e.g.
 *   for k in 2000 10000 100000; do for r in 1 2 3; do for t in /tmp/a /tmp/b; do
 *     taskset -c 1 bun bench/getmulti-pipeline.ts --keys $k --root $t; done; done; done
 */
import { parseArgs } from "node:util";
import { resolve } from "node:path";
import type { Socket } from "bun";
import { keyName, valueFor } from "./net/frames.ts";

const { values: opt } = parseArgs({
  options: {
    keys: { type: "string", default: "10000" }, depth: { type: "string", default: "4" },
    seconds: { type: "string", default: "3" }, warmup: { type: "string", default: "1" },
    root: { type: "string", default: resolve(import.meta.dir, "..") }, probe: { type: "boolean", default: false },
    serve: { type: "boolean", default: false }, local: { type: "boolean", default: false }, against: { type: "string" },
    realloc: { type: "boolean", default: false }, store: { type: "string", default: "0" },
  },
});
const ROOT = resolve(opt.root!);
const VALUE_BYTES = 100;

/** Probe counts the re-allocations of one kind of buffer (bench only). */
interface Probe { allocs: number; bytes: number }
type Proto = Record<string, unknown>;

/** wrap replaces `proto[name]` by a call that counts a change of `proto[field]` (a new buffer). */
function wrap(proto: Proto, name: string, field: string, p: Probe): void {
  const inner = proto[name];
  if (typeof inner !== "function") throw new Error(`--probe: no method ${name} in this tree`);
  proto[name] = function (this: Proto, ...args: unknown[]): unknown {
    const before = this[field];
    const r: unknown = inner.apply(this, args);
    const after = this[field] as Uint8Array | Int32Array;
    if (after !== before && after.byteLength > 0) {
      p.allocs++;
      p.bytes += after.byteLength;
    }
    return r;
  };
}

/** installProbes counts the re-allocations of the three buffers, when --probe is given. */
async function installProbes(root: string): Promise<Record<string, Probe>> {
  const probes = { items: { allocs: 0, bytes: 0 }, pending: { allocs: 0, bytes: 0 }, output: { allocs: 0, bytes: 0 } };
  if (!opt.probe) return probes;
  const { Request } = await import(`${root}/src/protocol/request.ts`);
  const { FrameReader } = await import(`${root}/src/protocol/frame-reader.ts`);
  const { BinaryWriter } = await import(`${root}/src/protocol/binary-writer.ts`);
  wrap(Request.prototype, "ensureItems", "items", probes.items);
  wrap(Request.prototype, "releaseItems", "items", probes.items);
  for (const m of ["growPending", "releaseServed", "next"]) wrap(FrameReader.prototype, m, "pending", probes.pending);
  for (const m of ["ensure", "shrink", "fit"]) wrap(BinaryWriter.prototype, m, "buffer", probes.output);
  return probes;
}

async function serve(): Promise<void> {
  const { CacheNode } = await import(`${ROOT}/src/server/cache-node.ts`);
  const probes = await installProbes(ROOT);
  const node = await CacheNode.open({ port: 0, memory: 512 * 1024 * 1024, logLevel: "warn" });
  const group = node.groups.find(new TextEncoder().encode("default"), 0, 7);
  const enc = new TextEncoder();
  for (let i = 0; i < Number(opt.store); i++) {
    const k = enc.encode(keyName(i));
    const v = valueFor(i, VALUE_BYTES);
    group.store.set(k, 0, k.length, v, 0, v.length, 0);
  }
  console.log(JSON.stringify({ port: node.port }));
  // Each line on stdin asks for the figures so far (the client takes differences).
  for await (const _ of console) {
    const cpu = process.cpuUsage();
    const m = node.memoryWatch?.counters;
    console.log(JSON.stringify({ cpuUs: cpu.user + cpu.system, rss: process.memoryUsage.rss(), forcedGCs: m?.forcedCollections ?? 0, forcedGCMs: m?.forcedCollectionMs ?? 0, probes }));
  }
}

/** getMultiFrame is a framed strict GetMulti call of keys [from, from+n) mod `store`. */
function getMultiFrame(from: number, n: number, store: number, seqid: number): Uint8Array {
  const enc = new TextEncoder();
  const keys = Array.from({ length: n }, (_, i) => enc.encode(keyName((from + i) % store)));
  const size = 4 + 4 + 4 + 8 + 4 + 3 + 3 + 4 + 7 + 3 + 5 + keys.reduce((s, k) => s + 4 + k.length, 0) + 2;
  const b = new Uint8Array(size);
  const v = new DataView(b.buffer);
  let p = 4;
  const u8 = (x: number): void => void (b[p++] = x);
  const i16 = (x: number): void => (v.setInt16(p, x), void (p += 2));
  const i32 = (x: number): void => (v.setInt32(p, x), void (p += 4));
  const str = (s: Uint8Array): void => (i32(s.length), b.set(s, p), void (p += s.length));
  i32(0x80010001);
  str(enc.encode("GetMulti"));
  i32(seqid);
  u8(12), i16(1); // args.req
  u8(11), i16(1), str(enc.encode("default"));
  u8(15), i16(2), u8(11), i32(n);
  for (const k of keys) str(k);
  u8(0), u8(0);
  v.setInt32(0, p - 4);
  return b.subarray(0, p);
}

/** mapCount reads the entry count of a GetMulti reply's map (framed: result 0 → field 1). */
function mapCount(f: Uint8Array): number {
  const v = new DataView(f.buffer, f.byteOffset);
  const at = 4 + 4 + 4 + v.getInt32(8) + 4; // length, version, name, seqid
  if (f[at] !== 12 || v.getInt16(at + 1) !== 0 || f[at + 3] !== 13) return -1;
  return v.getInt32(at + 8);
}

async function client(): Promise<void> {
  const KEYS = Number(opt.keys), DEPTH = Number(opt.depth);
  const STORE = Math.max(KEYS, 100_000);
  const args = [process.execPath, import.meta.path, "--serve", "--store", String(STORE), "--root", ROOT];
  if (opt.probe) args.push("--probe");
  const child = Bun.spawn(["taskset", "-c", "0", "timeout", "300", ...args], { stdin: "pipe", stdout: "pipe", stderr: "inherit" });
  const lines = (async function* () {
    let text = "";
    for await (const part of child.stdout) {
      text += new TextDecoder().decode(part);
      for (let nl = text.indexOf("\n"); nl >= 0; nl = text.indexOf("\n")) {
        yield text.slice(0, nl);
        text = text.slice(nl + 1);
      }
    }
  })();
  const ask = async (): Promise<{ cpuUs: number; rss: number; forcedGCs: number; forcedGCMs: number; probes: Record<string, Probe> }> => {
    child.stdin.write("\n");
    child.stdin.flush();
    return JSON.parse((await lines.next()).value as string);
  };
  const { port } = JSON.parse((await lines.next()).value as string) as { port: number };
  const frames = Array.from({ length: 4 }, (_, j) => getMultiFrame((j * 7919) % STORE, KEYS, STORE, j));

  let replies = 0, sent = 0, need = -1, have = 0, first: Uint8Array | null = null;
  const head = new Uint8Array(4);
  let headFill = 0;
  let done: () => void = () => {};
  const finished = new Promise<void>((r) => (done = r));
  let stopping = false;
  const send = (s: Socket<undefined>): void => {
    const f = frames[sent++ % frames.length]!;
    if (s.write(f) !== f.length) throw new Error("short write: raise the socket buffer or lower --depth");
  };
  // (Bun took every frame whole here, 1.4 MB ones included; a short write stops the bench rather
  // than send the rest of a frame after another.)
  const socket = await Bun.connect<undefined>({
    hostname: "127.0.0.1", port,
    socket: {
      data(s, chunk) {
        let p = 0;
        while (p < chunk.length) {
          if (need < 0) {
            while (headFill < 4 && p < chunk.length) head[headFill++] = chunk[p++]!;
            if (headFill < 4) return;
            need = new DataView(head.buffer).getInt32(0);
            have = 0;
            if (replies === 0) (first = new Uint8Array(4 + need)).set(head);
          }
          const take = Math.min(need - have, chunk.length - p);
          if (first !== null && replies === 0) first.set(chunk.subarray(p, p + take), 4 + have);
          have += take;
          p += take;
          if (have < need) return;
          replies++;
          need = -1;
          headFill = 0;
          if (stopping) { if (replies === sent) done(); } else send(s);
        }
      },
    },
  });
  for (let i = 0; i < DEPTH; i++) send(socket);
  await Bun.sleep(Number(opt.warmup) * 1000);
  if (first === null || mapCount(first) !== KEYS) throw new Error(`first reply holds ${first === null ? "nothing" : mapCount(first)} of ${KEYS} keys`);
  const r0 = replies, t0 = performance.now(), n0 = await ask();
  await Bun.sleep(Number(opt.seconds) * 1000);
  const r1 = replies, t1 = performance.now(), n1 = await ask();
  stopping = true;
  await finished;
  socket.end();
  child.kill();
  const reqs = r1 - r0, s = (t1 - t0) / 1000;
  const per = (a: number, b: number): number => Math.round(((a - b) / reqs) * 100) / 100;
  const out: Record<string, number | string> = {
    keys: KEYS, depth: DEPTH, root: ROOT, requestsPerS: Math.round(reqs / s), keysPerS: Math.round((reqs * KEYS) / s),
    nodeCpuUsPerRequest: Math.round((n1.cpuUs - n0.cpuUs) / reqs), nodeRssMB: Math.round(n1.rss / 1048576), forcedGCs: n1.forcedGCs - n0.forcedGCs,
    forcedGCMs: Math.round(n1.forcedGCMs - n0.forcedGCMs),
  };
  if (opt.probe) {
    for (const k of ["items", "pending", "output"]) {
      out[`${k}AllocsPerRequest`] = per(n1.probes[k]!.allocs, n0.probes[k]!.allocs);
      out[`${k}KBPerRequest`] = Math.round((n1.probes[k]!.bytes - n0.probes[k]!.bytes) / reqs / 1024);
    }
  }
  console.log(JSON.stringify(out));
}

/** Local is one tree's serving of the frames in this process: `pass` serves them all once. */
interface Local { pass: () => void; served: () => number; probes: Record<string, Probe> }

/** makeLocal loads `root`'s modules (a module graph of its own) and readies its connection. */
async function makeLocal(root: string, frames: Uint8Array[], store: number): Promise<Local> {
  const { Groups } = await import(`${root}/src/cluster/groups.ts`);
  const { Group } = await import(`${root}/src/cluster/group.ts`);
  const { DEFAULT_LIMITS } = await import(`${root}/src/protocol/limits.ts`);
  const { ProtocolConnection } = await import(`${root}/src/protocol/protocol-connection.ts`);
  const { dispatch } = await import(`${root}/src/server/dispatch.ts`);
  const clock = (): number => Date.now();
  const groups = new Groups();
  const group = groups.add(new Group({ name: "default", memory: 512 * 1024 * 1024, store: { clock } }));
  const enc = new TextEncoder();
  for (let i = 0; i < store; i++) {
    const k = enc.encode(keyName(i));
    const v = valueFor(i, VALUE_BYTES);
    group.store.set(k, 0, k.length, v, 0, v.length, 0);
  }
  const CHUNK = 64 * 1024;
  const stream = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
  let at = 0;
  for (const f of frames) (stream.set(f, at), (at += f.length));
  const chunks: Uint8Array[] = [];
  for (let p = 0; p < stream.length; p += CHUNK) chunks.push(stream.slice(p, p + CHUNK));
  const probes = await installProbes(root);
  const conn = new ProtocolConnection(DEFAULT_LIMITS);
  const ctx = { groups, clock };
  let served = 0;
  const pass = (): void => {
    for (const chunk of chunks) {
      conn.push(chunk);
      while (conn.nextRequest()) {
        served++;
        if (dispatch(ctx, conn.request, conn.reply) !== undefined) throw new Error("a request waited");
      }
      conn.reply.out.reset();
    }
  };
  return { pass, served: () => served, probes };
}

/** local serves the frames in this process, from `--root` and `--against` in turn (see the header). */
async function local(): Promise<void> {
  const KEYS = Number(opt.keys), STORE = Math.max(KEYS, 100_000), ROUNDS = 10;
  const frames = Array.from({ length: 4 }, (_, j) => getMultiFrame((j * 7919) % STORE, KEYS, STORE, j));
  const roots = opt.against === undefined ? [ROOT] : [ROOT, resolve(opt.against)];
  const sides: Local[] = [];
  for (const root of roots) sides.push(await makeLocal(root, frames, STORE));
  /** round serves for `ms` of wall time on one side; CPU ns per request (the machine is shared). */
  const faults: number[][] = sides.map(() => []);
  const round = (side: Local, ms: number): number => {
    const s0 = side.served(), c0 = process.cpuUsage(), f0 = process.resourceUsage().minorPageFault;
    for (const end = performance.now() + ms; performance.now() < end;) side.pass();
    const c = process.cpuUsage(c0);
    faults[sides.indexOf(side)]!.push((process.resourceUsage().minorPageFault - f0) / (side.served() - s0));
    return ((c.user + c.system) * 1000) / (side.served() - s0);
  };
  for (const side of sides) round(side, 1000);
  const ns: number[][] = sides.map(() => []);
  // Each round runs the sides in turn, in the other order every other round (the one run second
  // in a pair was 2-5 % slower in A/A duels of one tree against a copy of itself).
  for (let r = 0; r < ROUNDS; r++) {
    const order = r % 2 === 0 ? sides.map((_, i) => i) : sides.map((_, i) => sides.length - 1 - i);
    for (const i of order) ns[i]!.push(round(sides[i]!, Number(opt.seconds) * 1000));
  }
  const med = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
  const out: Record<string, unknown> = { keys: KEYS };
  roots.forEach((root, i) => {
    const p = sides[i]!.probes, n = sides[i]!.served();
    out[root] = { medianNsPerRequest: Math.round(med(ns[i]!)), pageFaultsPerRequest: Math.round(med(faults[i]!.slice(1)) * 10) / 10, minNs: Math.round(Math.min(...ns[i]!)), maxNs: Math.round(Math.max(...ns[i]!)),
      ...(opt.probe ? Object.fromEntries(Object.entries(p).map(([k, x]) => [k, `${(x.allocs / n).toFixed(2)} allocs, ${Math.round(x.bytes / n / 1024)} KB per request`])) : {}) };
  });
  // Paired: each round of the second side against the first's of the same round.
  if (sides.length === 2) out.medianRatio = Math.round(med(ns[1]!.map((b, r) => b / ns[0]![r]!)) * 1000) / 1000;
  console.log(JSON.stringify(out));
}

/**
 * realloc times the key list's re-allocation alone: a Request making room for `--keys` entries and
 * filling them as the decoder does, then `releaseItems` (which lets a list past 1,024 keys go, so
 * the next request allocates it again), against the same without `releaseItems`.
 */
async function realloc(): Promise<void> {
  const { Request } = await import(`${ROOT}/src/protocol/request.ts`);
  const n = Number(opt.keys);
  const cycle = (req: InstanceType<typeof Request>, release: boolean): void => {
    req.ensureItems(n);
    const items: Int32Array = req.items;
    for (let i = 0; i < n * 4; i += 4) (items[i] = i), (items[i + 1] = 10), (items[i + 2] = 0), (items[i + 3] = 0);
    req.itemCount = n;
    if (release) req.releaseItems();
  };
  const round = (release: boolean, ms: number): number => {
    const req = new Request();
    let k = 0;
    const c0 = process.cpuUsage();
    for (const end = performance.now() + ms; performance.now() < end; k += 10) for (let j = 0; j < 10; j++) cycle(req, release);
    const c = process.cpuUsage(c0);
    return ((c.user + c.system) * 1000) / k;
  };
  round(true, 500), round(false, 500);
  const a: number[] = [], b: number[] = [];
  for (let r = 0; r < 7; r++) a.push(round(true, 300)), b.push(round(false, 300));
  const med = (xs: number[]): number => [...xs].sort((x, y) => x - y)[xs.length >> 1]!;
  console.log(JSON.stringify({ keys: n, releasedNs: Math.round(med(a)), keptNs: Math.round(med(b)), extraNsPerRequest: Math.round(med(a) - med(b)) }));
}

await (opt.realloc ? realloc() : opt.local ? local() : opt.serve ? serve() : client());
