import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { F_EXPIRY, F_STRIDE, ItemTable, NIL, STRIDE, W_HEAP } from "../../src/store/item-table.ts";
import { TtlHeap } from "../../src/store/ttl-heap.ts";
import { Prng, testSeed } from "../support/prng.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

/** A heap over a bare item table; expiries are written into the records as the store does. */
function mk(cap: number): { items: ItemTable; heap: TtlHeap; setExp: (id: number, e: number) => number } {
  const items = new ItemTable(cap);
  for (let i = 0; i < cap; i++) items.alloc(); // an id's record is set up (out of the heap) when it is handed out
  const heap = new TtlHeap(items, 4);
  const setExp = (id: number, e: number): number => {
    const old = items.f[id * F_STRIDE + F_EXPIRY]!;
    items.f[id * F_STRIDE + F_EXPIRY] = e;
    return old;
  };
  return { items, heap, setExp };
}

function checkHeap(items: ItemTable, h: TtlHeap, model: Map<number, number>): void {
  expect(h.size).toBe(model.size);
  for (let i = 0; i < h.size; i++) {
    const id = h.slots[i]!;
    expect(items.w[id * STRIDE + W_HEAP]).toBe(i);
    if (i > 0) expect(items.expiry(h.slots[(i - 1) >> 1]!)).toBeLessThanOrEqual(items.expiry(id));
    expect(model.get(id)).toBe(items.expiry(id));
  }
  for (const id of model.keys()) expect(h.has(id)).toBe(true);
}

describe("TtlHeap", () => {
  const seed = testSeed();
  test(`random push/update/remove/pop agrees with a reference map (TEST_SEED=${seed})`, () => {
    const rnd = new Prng(seed);
    const { items, heap: h, setExp } = mk(512);
    const model = new Map<number, number>();
    for (let step = 0; step < 20000; step++) {
      const id = rnd.int(512);
      const op = rnd.int(4);
      const exp = rnd.int(1000);
      if (op === 0 || op === 1) {
        const old = setExp(id, exp);
        if (h.has(id)) h.update(id, old);
        else h.push(id);
        model.set(id, exp);
      } else if (op === 2) {
        h.remove(id);
        model.delete(id);
      } else if (h.size > 0) {
        expect(h.minExpiry()).toBe(Math.min(...model.values()));
        const top = h.minItem();
        h.remove(top);
        model.delete(top);
      }
      if (step % 97 === 0) checkHeap(items, h, model);
    }
    checkHeap(items, h, model);
  });

  test("pops in expiry order; empty heap answers Infinity and -1", () => {
    const { heap: h, setExp } = mk(8);
    [50, 10, 40, 20, 30].forEach((e, id) => {
      setExp(id, e);
      h.push(id);
    });
    const order: number[] = [];
    while (h.size > 0) {
      order.push(h.minExpiry());
      h.remove(h.minItem());
    }
    expect(order).toEqual([10, 20, 30, 40, 50]);
    expect(h.minExpiry()).toBe(Infinity);
    expect(h.minItem()).toBe(NIL);
  });
});
