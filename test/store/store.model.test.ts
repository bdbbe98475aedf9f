/**
 * Seeded random operation sequences against a trivial reference model (a Map of key → value and
 * expiry). Replay a failure with `TEST_SEED=<seed> bun test test/store/store.model.test.ts`.
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { MIB, SET_OK, SET_REJECTED, SET_TOO_LARGE, Store } from "../../src/store/store.ts";
import { Prng, bytes, pattern, testSeed } from "../support/prng.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

interface Entry {
  value: Uint8Array<ArrayBuffer>;
  expiry: number;
  /** evictions is the store's eviction count when the value was written. */
  evictions: number;
}

const SIZES = [0, 1, 7, 40, 100, 300, 1000, 3000, 9000, 40_000, 120_000];

function run(seed: number, steps: number, memory: number, checkEvery: number): void {
  const rnd = new Prng(seed);
  let now = 5_000;
  const s = new Store({ memory, clock: () => now, maxItemSize: 128 * 1024, admissionK: 2 });
  const model = new Map<string, Entry>();
  const keys = Array.from({ length: 400 }, (_, i) => `key:${i}:${"x".repeat(i % 37)}`);
  const frame = new Uint8Array(512);
  let tag = 0;
  const live = (e: Entry | undefined): e is Entry => e !== undefined && e.expiry > now;

  for (let step = 0; step < steps; step++) {
    const key = keys[rnd.int(keys.length)]!;
    // Keys sometimes arrive inside a larger buffer at an offset, as off the wire.
    const kb = bytes(key);
    const koff = rnd.int(4) === 0 ? 3 + rnd.int(50) : 0;
    frame.fill(0xee);
    frame.set(kb, koff);
    const op = rnd.int(100);
    if (op < 40) {
      const id = s.get(frame, koff, kb.length);
      const want = model.get(key);
      if (id >= 0) {
        expect(live(want)).toBe(true);
        const out = new Uint8Array(s.valueLength(id));
        s.copyValue(id, out, 0);
        expect(out).toEqual(want!.value);
      } else if (live(want)) {
        // Only an eviction since the value was written may take it away.
        expect(s.stats().evictions).toBeGreaterThan(want!.evictions);
        model.delete(key);
      } else {
        model.delete(key);
      }
    } else if (op < 75) {
      const size = SIZES[rnd.int(SIZES.length)]! + rnd.int(5);
      const value = pattern(++tag, size);
      const ttl = rnd.int(3) === 0 ? 1 + rnd.int(2000) : 0;
      const isFill = rnd.int(4) === 0;
      const had = s.has(frame, koff, kb.length);
      const r = isFill
        ? s.fill(frame, koff, kb.length, value, 0, value.length, ttl)
        : s.set(frame, koff, kb.length, value, 0, value.length, ttl);
      if (r === SET_OK) model.set(key, { value, expiry: ttl === 0 ? Infinity : now + ttl, evictions: s.stats().evictions });
      else if (r === SET_REJECTED) expect(isFill && !had).toBe(true);
      else expect(r).toBe(SET_TOO_LARGE);
    } else if (op < 85) {
      const removed = s.delete(frame, koff, kb.length);
      if (removed) expect(live(model.get(key))).toBe(true);
      model.delete(key);
    } else if (op < 93) {
      now += rnd.int(400);
    } else if (op < 99) {
      s.expire(now, 1 + rnd.int(20));
    } else if (rnd.int(10) === 0) {
      s.clear();
      model.clear();
    }
    if (step % checkEvery === 0) s.checkInvariants();
    if (memory >= 64 * MIB) expect(s.stats().evictions).toBe(0);
  }
  s.checkInvariants();
  // Final sweep: every live item in the store matches the model.
  for (const key of keys) {
    const id = s.get(bytes(key));
    if (id >= 0) {
      const out = new Uint8Array(s.valueLength(id));
      s.copyValue(id, out, 0);
      expect(out).toEqual(model.get(key)!.value);
    }
  }
}

describe("Store against a reference model", () => {
  const cases: [string, number, number, number][] = [
    ["no eviction, invariants every step", 3_000, 64 * MIB, 1],
    ["no eviction, long run", 40_000, 64 * MIB, 500],
    ["under eviction pressure, invariants every step", 3_000, 4 * MIB, 1],
    ["under eviction pressure, long run", 60_000, 4 * MIB, 500],
  ];
  const seed = testSeed();
  test.each(cases)(`%s (TEST_SEED=${seed})`, (_name, steps, memory, every) => {
    run(seed, steps, memory, every);
  });
});
