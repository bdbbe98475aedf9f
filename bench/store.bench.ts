/**
 * Store engine benchmark (issue 2): our Store vs lru-cache vs a plain Map, in mitata.
 *
 * Three operations over one workload (bench/workload.ts: 100k 16-byte keys, values log-uniform
 * 32 B–2 KiB, Zipf s = 0.99 key draws, seeded): get-hit, set-overwrite (a key rewritten with a
 * value of its own size) and a 90/10 get/set mix. Each runs twice: "bytes" rows give every cache
 * the key as bytes (the string-keyed rivals decode it with latin1), "strings" rows give the rivals
 * ready-made strings for honesty while ours still gets bytes.
 *
 * Before timing, every rival passes a set/get round trip of the full working set (bytes compared)
 * and stays loaded with it; our store is sized so nothing is evicted (checked), and lru-cache's
 * `maxSize` is twice the value bytes. Inputs are computed before the timed part; the timed closure
 * reads precomputed key ids and calls one adapter method, its result kept by `do_not_optimize`.
 *
 * Run: `bun run bench:store` (or `bun run bench/store.bench.ts`); `BENCH_FORMAT=markdown` for a
 * markdown table. It ends with the ratio that the target names (mix from bytes, ours/lru-cache).
 */
import { loadavg } from "node:os";
import { bench, do_not_optimize, group, run, summary } from "mitata";
import { checkRoundTrip, checkStringRoundTrip } from "./impls/cache-impl.ts";
import { LruCacheImpl } from "./impls/lru-cache.ts";
import { MapImpl } from "./impls/map.ts";
import { MyBunCacheImpl } from "./impls/mybuncache.ts";
import { byteOp, OP_NAMES, stringOp, type Op } from "./ops.ts";
import { buildWorkload } from "./workload.ts";

const MIB = 1024 * 1024;
const w = buildWorkload();
const out = new Uint8Array(64 * 1024);
const seqMask = w.seqMask;

// Our budget covers chunk rounding (< 25 %), a partly used page per class and the metadata.
const dataBytes = w.totalValueBytes + w.totalKeyBytes;
const ours = new MyBunCacheImpl({ memory: Math.ceil(dataBytes * 1.5 + w.count * 128 + 64 * MIB) });
const lru = new LruCacheImpl(2 * w.totalValueBytes);
const map = new MapImpl();

for (const impl of [ours, lru, map]) checkRoundTrip(impl, w, out);
for (const impl of [lru, map]) checkStringRoundTrip(impl, w, out);
const before = ours.stats();
if (before.evictions !== 0 || before.items !== w.count) {
  throw new Error(`store too small for the working set: ${before.items} items, ${before.evictions} evictions`);
}
console.log(
  `workload: ${w.count} keys, ${(w.totalValueBytes / MIB).toFixed(1)} MiB of values, seed ${w.seed}; ` +
    `store: ${(before.capacity / MIB).toFixed(0)} MiB budget, ${(before.pageBytes / MIB).toFixed(0)} MiB pages, ` +
    `${(before.metaBytes / MIB).toFixed(1)} MiB metadata; lru-cache maxSize ${((2 * w.totalValueBytes) / MIB).toFixed(0)} MiB`,
);

/** timed registers a generator bench: setup (cursor) outside, one operation per iteration. */
function timed(name: string, op: Op, baseline = false): void {
  const b = bench(name, function* () {
    let j = 0;
    yield () => {
      do_not_optimize(op(j));
      j = (j + 1) & seqMask;
    };
  });
  if (baseline) b.baseline(true);
}

for (const label of OP_NAMES) {
  group(`${label} · bytes`, () => {
    summary(() => {
      timed(`${label} bytes mybuncache`, byteOp(label, ours, w, out), true);
      timed(`${label} bytes lru-cache`, byteOp(label, lru, w, out));
      timed(`${label} bytes map`, byteOp(label, map, w, out));
    });
  });
  group(`${label} · strings (ours still bytes)`, () => {
    summary(() => {
      timed(`${label} str mybuncache(bytes)`, byteOp(label, ours, w, out), true);
      timed(`${label} str lru-cache`, stringOp(label, lru, w, out));
      timed(`${label} str map`, stringOp(label, map, w, out));
    });
  });
}

// Other processes on a small machine skew every row; print the load so a run can be judged.
const load = (): string => loadavg().map((l) => l.toFixed(2)).join(" ");
console.log(`load average before timing: ${load()}`);
const format = process.env.BENCH_FORMAT === "markdown" ? "markdown" : "mitata";
const { benchmarks } = await run({ format });

const avg = new Map<string, number>();
for (const t of benchmarks) for (const r of t.runs) if (r.stats) avg.set(r.name, r.stats.avg);
console.log(`load average after timing: ${load()}`);
const after = ours.stats();
console.log(`\nstore after timing: ${after.items} items, ${after.evictions} evictions, hits ${after.hits}, misses ${after.misses}`);
for (const label of OP_NAMES) {
  for (const mode of ["bytes", "str"]) {
    const o = avg.get(`${label} ${mode} ${mode === "str" ? "mybuncache(bytes)" : "mybuncache"}`);
    const l = avg.get(`${label} ${mode} lru-cache`);
    const m = avg.get(`${label} ${mode} map`);
    if (o === undefined || l === undefined || m === undefined) continue;
    console.log(
      `${label.padEnd(14)} ${mode.padEnd(5)} ours ${o.toFixed(1)} ns/op · ` +
        `${(l / o).toFixed(2)}× lru-cache · ${(m / o).toFixed(2)}× map`,
    );
  }
}
const mixO = avg.get("mix 90/10 bytes mybuncache");
const mixL = avg.get("mix 90/10 bytes lru-cache");
if (mixO !== undefined && mixL !== undefined) {
  const ratio = mixL / mixO;
  console.log(`target: mix 90/10 from bytes ≥ 1.5× lru-cache → ${ratio.toFixed(2)}× (${ratio >= 1.5 ? "met" : "NOT met"})`);
}
