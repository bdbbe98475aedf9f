/**
 * Allocation benchmark (issue 2): JS heap growth per operation in steady state, our Store vs
 * lru-cache vs a plain Map, for get-hit, set-overwrite and the 90/10 mix (keys as bytes).
 *
 * For each cache: build it, load the workload's 100k keys (bench/workload.ts) through the
 * correctness round trip, warm up with 200k operations, `Bun.gc(true)`, read JSC `heapStats()`,
 * run 1M operations, collect again and read again. Retained growth per op is the difference in
 * `heapSize` (GC cells plus extra memory such as ArrayBuffers) over 1M; the target is 0.
 *
 * Retained growth misses short-lived garbage, so a second figure estimates what is allocated per
 * op: right after a full collection the heap's capacity is trimmed, and new cells must take new
 * blocks, so `heapCapacity` growth over a 10k-op window (no collection in between, median of 5
 * windows) approximates the bytes of GC cells created per op (16 KiB block granularity, so below
 * ~2 B/op it reads as 0). Storage malloc'd outside the GC heap (string bodies) is not in it.
 * The probe runs in a child per cache and op, on a 1000-key workload (a small heap, so freed holes
 * do not absorb new cells), after 2M warm-up ops: whether the JIT sinks a short-lived object (our
 * `copyBytes` makes a `subarray` view for ranges over 64 B) depends on the tier reached.
 *
 * Run: `bun run bench:alloc` (or `bun run bench/alloc.ts`).
 */
import { heapStats } from "bun:jsc";
import { checkRoundTrip, type CacheImpl } from "./impls/cache-impl.ts";
import { LruCacheImpl } from "./impls/lru-cache.ts";
import { MapImpl } from "./impls/map.ts";
import { MyBunCacheImpl } from "./impls/mybuncache.ts";
import { byteOp, OP_NAMES, type Op, type OpName } from "./ops.ts";
import { buildWorkload, type Workload } from "./workload.ts";

const MIB = 1024 * 1024;
const WARMUP = 200_000;
const OPS = 1_000_000;
const WINDOW = 10_000;
const WINDOWS = 5;
const PROBE_KEYS = 1000;
/** PROBE_WARMUP lets the optimizing JIT finish: whether a short-lived view is sunk depends on the tier. */
const PROBE_WARMUP = 2_000_000;

const makers: Record<string, (w: Workload) => CacheImpl> = {
  mybuncache: (w) =>
    new MyBunCacheImpl({ memory: Math.ceil((w.totalValueBytes + w.totalKeyBytes) * 1.5 + w.count * 128 + 64 * MIB) }),
  "lru-cache": (w) => new LruCacheImpl(2 * w.totalValueBytes),
  map: () => new MapImpl(),
};
const NOOP: Op = () => true;

/** loop runs `n` operations starting at draw `j` and returns the next draw. */
function loop(op: Op, j: number, n: number, mask: number): number {
  let ok = 0;
  for (let i = 0; i < n; i++) {
    if (op(j) !== false) ok++;
    j = (j + 1) & mask;
  }
  if (ok !== n) throw new Error("an operation failed");
  return j;
}

function gc(): void {
  Bun.gc(true);
  Bun.gc(true);
}

/** retainedPerOp is the heapSize growth per op over OPS ops, between two full collections. */
function retainedPerOp(op: Op, mask: number): number {
  let j = loop(op, 0, WARMUP, mask);
  gc();
  const before = heapStats().heapSize;
  j = loop(op, j, OPS, mask);
  gc();
  return (heapStats().heapSize - before) / OPS;
}

/** probe runs in a child: allocated ≈ bytes/op of one cache and op, on a small fresh heap. */
function probe(implName: string, opName: OpName): number {
  const w = buildWorkload({ keys: PROBE_KEYS, seqLength: 1 << 14 });
  const out = new Uint8Array(64 * 1024);
  const impl = makers[implName]!(w);
  checkRoundTrip(impl, w, out);
  const op = byteOp(opName, impl, w, out);
  let j = loop(op, 0, PROBE_WARMUP, w.seqMask);
  const windows: number[] = [];
  for (let k = 0; k < WINDOWS; k++) {
    gc();
    const cap0 = heapStats().heapCapacity;
    j = loop(op, j, WINDOW, w.seqMask);
    windows.push((heapStats().heapCapacity - cap0) / WINDOW);
  }
  return windows.sort((a, b) => a - b)[WINDOWS >> 1]!;
}

function spawnProbe(implName: string, opName: OpName): number {
  const proc = Bun.spawnSync([process.execPath, import.meta.path, "--probe", implName, opName], { stderr: "inherit" });
  if (proc.exitCode !== 0) throw new Error(`probe ${implName} ${opName} exited with ${proc.exitCode}`);
  return Number(proc.stdout.toString());
}

function main(): void {
  const w = buildWorkload();
  const out = new Uint8Array(64 * 1024);
  const control = retainedPerOp(NOOP, w.seqMask);
  const rows: { impl: string; op: string; retained: number; allocated: number }[] = [];
  for (const [name, make] of Object.entries(makers)) {
    const impl = make(w);
    checkRoundTrip(impl, w, out);
    for (const opName of OP_NAMES) {
      const retained = retainedPerOp(byteOp(opName, impl, w, out), w.seqMask);
      rows.push({ impl: name, op: opName, retained, allocated: spawnProbe(name, opName) });
    }
    if (impl instanceof MyBunCacheImpl) {
      const s = impl.stats();
      console.log(`mybuncache stats after the runs: ${s.items} items, ${s.evictions} evictions, ${s.hits} hits, ${s.misses} misses`);
    }
  }
  console.log(`heap growth per op: ${OPS} ops after ${WARMUP} warm-up ops, ${w.count} keys, seed ${w.seed};`);
  console.log(`control (a no-op body measured the same way): ${control.toFixed(3)} B/op`);
  console.log("| impl | op | retained B/op (heapSize after gc) | minus control | allocated ≈ B/op (probe) |");
  console.log("|---|---|---:|---:|---:|");
  for (const r of rows) {
    const net = r.retained - control;
    console.log(`| ${r.impl} | ${r.op} | ${r.retained.toFixed(3)} | ${net.toFixed(3)} | ${r.allocated.toFixed(1)} |`);
  }
  const worst = Math.max(...rows.filter((r) => r.impl === "mybuncache").map((r) => r.retained - control));
  // Under 0.01 B/op is under 10 KB over 1M ops: JIT and bookkeeping noise. A leak of one object
  // per op would read >= 16 B/op, and one per 1000 ops still >= 0.016 B/op.
  const met = worst < 0.01;
  console.log(`target: 0 B heap growth per op → mybuncache worst ${worst.toFixed(3)} B/op above control (${met ? "met" : "NOT met"})`);
}

const at = process.argv.indexOf("--probe");
if (at >= 0) console.log(String(probe(process.argv[at + 1]!, process.argv[at + 2] as OpName)));
else main();
