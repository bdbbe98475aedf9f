import { describe, expect, test } from "bun:test";
import { TtlHeap } from "../../src/store/ttl-heap.ts";
import { Prng, testSeed } from "../support/prng.ts";

function checkHeap(h: TtlHeap, model: Map<number, number>): void {
  expect(h.size).toBe(model.size);
  for (let i = 0; i < h.size; i++) {
    expect(h.pos[h.item[i]!]).toBe(i);
    if (i > 0) expect(h.exp[(i - 1) >> 1]!).toBeLessThanOrEqual(h.exp[i]!);
    expect(model.get(h.item[i]!)).toBe(h.exp[i]!);
  }
}

describe("TtlHeap", () => {
  test("random push/update/remove/pop agrees with a reference map", () => {
    const seed = testSeed();
    const rnd = new Prng(seed);
    const h = new TtlHeap(512, 4);
    const model = new Map<number, number>();
    try {
      for (let step = 0; step < 20000; step++) {
        const id = rnd.int(512);
        const op = rnd.int(4);
        const exp = rnd.int(1000);
        if (op === 0 || op === 1) {
          if (h.has(id)) h.update(id, exp);
          else {
            if (h.needsRoom()) h.growHeap(h.exp.length * 2);
            h.push(id, exp);
          }
          model.set(id, exp);
        } else if (op === 2) {
          h.remove(id);
          model.delete(id);
        } else if (h.size > 0) {
          const min = Math.min(...model.values());
          expect(h.minExpiry()).toBe(min);
          const top = h.minItem();
          h.remove(top);
          model.delete(top);
        }
        if (step % 97 === 0) checkHeap(h, model);
      }
      checkHeap(h, model);
    } catch (e) {
      console.error(`TtlHeap random test failed with TEST_SEED=${seed}`);
      throw e;
    }
  });

  test("pops in expiry order", () => {
    const h = new TtlHeap(8, 8);
    [50, 10, 40, 20, 30].forEach((e, id) => h.push(id, e));
    const order: number[] = [];
    while (h.size > 0) {
      order.push(h.minExpiry());
      h.remove(h.minItem());
    }
    expect(order).toEqual([10, 20, 30, 40, 50]);
    expect(h.minExpiry()).toBe(Infinity);
  });
});
