/**
 * Churn workload run in its own process by churn.test.ts, so its heap figures are not disturbed by
 * the test runner. Prints one JSON line: heap sizes after warm-up and after 1M more operations.
 * All keys and values are made before measuring, so the only allocation that could show is the
 * store's own.
 */
import { heapStats } from "bun:jsc";
import { MIB, Store } from "../../src/store/store.ts";
import { Prng, pattern } from "../support/prng.ts";

const OPS = Number(process.argv[2] ?? 1_000_000);
let now = 1_000;
const store = new Store({ memory: 16 * MIB, clock: () => now });
const rnd = new Prng(12345);
// ~2x capacity: 16 MiB holds roughly 60k of these items; the key space is 120k.
const KEYS = 120_000;
const keys = Array.from({ length: KEYS }, (_, i) => new TextEncoder().encode(`churn-key-${i}`));
const values = [16, 100, 180, 700, 2000].map((n, i) => pattern(i, n));
const plan = new Uint32Array(OPS * 2);
for (let i = 0; i < plan.length; i++) plan[i] = rnd.int(0x7fffffff);
const out = new Uint8Array(4096);

function churn(n: number): number {
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const r = plan[(i * 2) % plan.length]!;
    const k = keys[r % KEYS]!;
    const op = plan[(i * 2 + 1) % plan.length]! % 100;
    if (op < 60) {
      const id = store.get(k, 0, k.length);
      if (id >= 0) sum += store.copyValue(id, out, 0);
    } else if (op < 92) {
      const v = values[r % values.length]!;
      store.set(k, 0, k.length, v, 0, v.length, op & 1 ? 500 : 0);
    } else if (op < 97) {
      store.delete(k, 0, k.length);
    } else {
      now += 7;
      store.expire(now, 50);
    }
  }
  return sum;
}

function heap(): number {
  Bun.gc(true);
  Bun.gc(true);
  return heapStats().heapSize;
}

churn(OPS); // warm-up: fill, grow tables, JIT
const before = heap();
const checksum = churn(OPS);
const after = heap();
store.checkInvariants();
const st = store.stats();
console.log(JSON.stringify({ before, after, ops: OPS, checksum, evictions: st.evictions, items: st.items, rss: process.memoryUsage().rss }));
