/**
 * warmKeys is a cache hint: it must change nothing in the store (metadata, index, slab bytes,
 * counters, LRU order), whatever the keys (present, absent, expired, colliding, in a store that
 * evicts), and must not fail on ranges of any length. Its speed is shown by the network
 * benchmark, not here.
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { MIB, Store } from "../../src/store/store.ts";
import { WARM_MAX, warmKeys } from "../../src/store/warm.ts";
import { bytes, pattern } from "../support/prng.ts";
import { FakeClock } from "./support.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

/** state copies everything a read could disturb. */
function state(s: Store): unknown {
  return {
    w: Array.from(s.items.w),
    slots: Array.from(s.index.slots),
    pages: s.slab.pages.map((p) => (p === undefined ? null : Buffer.from(p).toString("base64"))),
    counters: { ...s.counters },
    stats: s.stats(),
  };
}

/** batch lays keys out back to back in one buffer with (start, length) pairs, as the server does. */
function batch(keys: string[]): { buf: Uint8Array; ranges: Int32Array } {
  const encoded = keys.map((k) => bytes(k));
  const buf = new Uint8Array(encoded.reduce((n, k) => n + k.length, 0) + 3);
  const ranges = new Int32Array(keys.length * 2);
  let at = 3; // not at 0: ranges are offsets into a larger buffer
  encoded.forEach((k, i) => {
    buf.set(k, at);
    ranges[i * 2] = at;
    ranges[i * 2 + 1] = k.length;
    at += k.length;
  });
  return { buf, ranges };
}

describe("warmKeys", () => {
  test("changes nothing: present, absent, expired, empty and long keys, values small and large", () => {
    const clock = new FakeClock();
    const s = new Store({ memory: 16 * MIB, clock: clock.read });
    const keys: string[] = [];
    for (let i = 0; i < 500; i++) {
      const k = `key:${i}`;
      keys.push(k);
      const v = pattern(i, i % 7 === 0 ? 20_000 : 10 + (i % 300));
      s.set(bytes(k), 0, k.length, v, 0, v.length, i % 5 === 0 ? 1_000 : 0);
    }
    s.get(bytes("key:3")); // a referenced item, so a flag is set somewhere
    clock.now += 5_000; // every fifth key is now expired but still stored
    const asked = [...keys.slice(0, 200), "absent", "", "x".repeat(250), "key:499"];
    const before = state(s);
    for (let first = 0; first < asked.length; first += WARM_MAX) {
      const { buf, ranges } = batch(asked);
      const sum = warmKeys(s, buf, ranges, first, Math.min(WARM_MAX, asked.length - first), 2, 0);
      expect(Number.isInteger(sum)).toBe(true);
    }
    expect(state(s)).toEqual(before);
    s.checkInvariants();
    // The expired keys are still found expired by the real lookup afterwards.
    expect(s.get(bytes("key:5"))).toBe(-1);
    expect(s.get(bytes("key:4"))).toBeGreaterThanOrEqual(0);
  });

  test("more keys than WARM_MAX warms the first WARM_MAX; stride and offset select the key words", () => {
    const s = new Store({ memory: 8 * MIB });
    const k = bytes("k");
    s.set(k, 0, 1, bytes("value"), 0, 5, 0);
    const buf = bytes("xk");
    // stride 4, key at word 2: [junk, junk, start, length]
    const ranges = new Int32Array((WARM_MAX + 10) * 4);
    for (let i = 0; i < WARM_MAX + 10; i++) ranges.set([-7, 99, 1, 1], i * 4);
    const before = state(s);
    expect(Number.isInteger(warmKeys(s, buf, ranges, 0, WARM_MAX + 10, 4, 2))).toBe(true);
    expect(state(s)).toEqual(before);
  });

  test("in a full store that keeps evicting, warming between writes never disturbs them", () => {
    const s = new Store({ memory: 4 * MIB });
    const names = Array.from({ length: 3000 }, (_, i) => `item:${i}`);
    const { buf, ranges } = batch(names);
    for (let round = 0; round < 5; round++) {
      for (let i = 0; i < names.length; i++) {
        const v = pattern(round * 10_000 + i, 1500);
        s.set(buf, ranges[i * 2]!, ranges[i * 2 + 1]!, v, 0, v.length, 0);
        if (i % 97 === 0) {
          const before = state(s);
          warmKeys(s, buf, ranges, Math.max(0, i - 40), 40, 2, 0);
          expect(state(s)).toEqual(before);
        }
      }
    }
    expect(s.counters.evictions).toBeGreaterThan(0);
    s.checkInvariants();
  });
});
