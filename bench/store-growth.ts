/**
 * How long one set stops the event loop while a store fills: a store of `--memory` filled with
 * `items` keys of 16 bytes and 20-byte values (every other one with a TTL), each set timed. Prints
 * the worst set and every set over 5 ms. A growth of the store's tables used to copy them whole
 * (5.2 s of one set at 23.5 M items); see docs/design.md, "Growth without a pause".
 *
 *   bun bench/store-growth.ts [items 24000000] [memory GiB 4]
 */
import { Store } from "../src/store/store.ts";

const items = Number(process.argv[2] ?? 24_000_000);
const store = new Store({ memory: Number(process.argv[3] ?? 4) * 1024 ** 3 });
const key = new Uint8Array(16);
const value = new Uint8Array(20);
const view = new DataView(key.buffer);
let worst = 0;
let worstAt = 0;
const pauses: string[] = [];
const start = performance.now();
for (let i = 0; i < items; i++) {
  view.setUint32(0, i);
  view.setUint32(4, Math.imul(i, 0x9e3779b1));
  const t = performance.now();
  store.set(key, 0, 16, value, 0, 20, i % 2 === 0 ? 3_600_000 : 0);
  const ms = performance.now() - t;
  if (ms > 5) pauses.push(`${i}: ${ms.toFixed(1)} ms`);
  if (ms > worst) {
    worst = ms;
    worstAt = i;
  }
}
console.log(`${items} sets in ${((performance.now() - start) / 1000).toFixed(1)} s, ${store.size} items held; worst set ${worst.toFixed(1)} ms at item ${worstAt}`);
console.log(`sets over 5 ms: ${pauses.length === 0 ? "none" : pauses.join(", ")}`);
