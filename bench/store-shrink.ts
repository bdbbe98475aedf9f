/**
 * How long one operation stops the event loop when a big store is mostly emptied and its item
 * table shrinks (table-shrink.ts): a store of `--memory` filled with `items` keys of 16 bytes and
 * 20-byte values, then all but `keep` of them removed, by
 *   - delete: one delete per key (each timed), then expiry ticks until the table has shrunk;
 *   - expire: the removed ones carried a TTL; the clock moves past it, and expiry ticks (budget
 *     2,000, the server's default) remove them and shrink the table;
 *   - clear: one `clear()` (timed; `keep` is ignored), then the ticks;
 *   - cancel: as delete, then after 300 ticks (the shrink under way) 3 M sets of new keys, a
 *     tick every 20,000, each timed: the items come back and the shrink is cancelled.
 * Every tick is timed (the server runs one every 100 ms) until the table and its index are cut
 * down; prints the worst operation of each kind and the ticks over 5 ms. store-growth.ts measures the other way (a store filling).
 *
 *   bun bench/store-shrink.ts [delete|expire|clear|cancel] [items 20000000] [keep 0.2] [memory GiB 4]
 */
import { Store } from "../src/store/store.ts";

const mode = process.argv[2] ?? "delete";
const items = Number(process.argv[3] ?? 20_000_000);
const keep = Number(process.argv[4] ?? 0.2);
let now = 1_000;
const store = new Store({ memory: Number(process.argv[5] ?? 4) * 1024 ** 3, clock: () => now });
const key = new Uint8Array(16);
const value = new Uint8Array(20);
const view = new DataView(key.buffer);
const kept = (i: number): boolean => i % 1000 < keep * 1000;
const keyOf = (i: number): void => {
  view.setUint32(0, i);
  view.setUint32(4, Math.imul(i, 0x9e3779b1));
};

let t0 = performance.now();
for (let i = 0; i < items; i++) {
  keyOf(i);
  store.set(key, 0, 16, value, 0, 20, mode === "expire" && !kept(i) ? 3_600_000 : 0);
}
console.log(`${mode}: ${items} sets in ${((performance.now() - t0) / 1000).toFixed(1)} s; ${store.size} items, table ${store.items.cap} ids`);

let worstOp = 0;
t0 = performance.now();
if (mode === "delete" || mode === "cancel") {
  for (let i = 0; i < items; i++) {
    if (kept(i)) continue;
    keyOf(i);
    const t = performance.now();
    store.delete(key, 0, 16);
    worstOp = Math.max(worstOp, performance.now() - t);
  }
  console.log(`deletes: worst ${worstOp.toFixed(2)} ms; ${store.size} items left`);
} else if (mode === "clear") {
  store.clear();
  worstOp = performance.now() - t0;
  console.log(`clear: ${worstOp.toFixed(1)} ms`);
} else {
  now += 7_200_000;
}

if (mode === "cancel") {
  for (let t = 0; t < 300; t++) store.expire(now, 2_000);
  console.log(`shrinking to ${store.items.shrinkingTo} ids, ${store.size} items`);
  let worstSet = 0;
  let worstTick = 0;
  for (let i = items; i < items + 3_000_000; i++) {
    keyOf(i);
    let t = performance.now();
    store.set(key, 0, 16, value, 0, 20, 0);
    worstSet = Math.max(worstSet, performance.now() - t);
    if (i % 20_000 !== 0) continue;
    t = performance.now();
    store.expire(now, 2_000);
    worstTick = Math.max(worstTick, performance.now() - t);
  }
  console.log(`3 M sets: shrinking to ${store.items.shrinkingTo} (0: cancelled), table ${store.items.cap} ids; worst set ${worstSet.toFixed(1)} ms, worst tick ${worstTick.toFixed(1)} ms`);
  process.exit(0);
}

const shrinks = store.counters.tableShrinks;
let ticks = 0;
let worst = 0;
let worstAt = 0;
let total = 0;
const slow: string[] = [];
let cutAt = 0;
let cutMs = 0;
let worstAfterCut = 0;
const shrinking = (): boolean =>
  store.items.shrinkingTo !== 0 || store.index.buildingSmaller ||
  (store.counters.tableShrinks === shrinks && (mode !== "clear" || (store.items.cap > store.shrink.floor && store.items.live * 4 < store.items.cap)));
while (shrinking() && ticks < 1_000_000) {
  const t = performance.now();
  store.expire(now, 2_000);
  const ms = performance.now() - t;
  ticks++;
  if (cutAt !== 0) worstAfterCut = Math.max(worstAfterCut, ms);
  if (cutAt === 0 && store.counters.tableShrinks !== shrinks) {
    cutAt = ticks;
    cutMs = ms;
  }
  total += ms;
  if (ms > 5) slow.push(`tick ${ticks}: ${ms.toFixed(1)} ms`);
  if (ms > worst) {
    worst = ms;
    worstAt = ticks;
  }
}
console.log(`${ticks} ticks (${total.toFixed(0)} ms in all; the table cut at tick ${cutAt}) to a table of ${store.items.cap} ids and an index of ${store.index.slotCount} slots, ${store.size} items; worst tick ${worst.toFixed(1)} ms (tick ${worstAt})`);
console.log(`the tick that cut the table: ${cutMs.toFixed(1)} ms; worst tick after it (the index built smaller): ${worstAfterCut.toFixed(1)} ms`);
console.log(`ticks over 5 ms: ${slow.length === 0 ? "none" : slow.slice(0, 20).join(", ")}${slow.length > 20 ? ` (+${slow.length - 20})` : ""}`);
