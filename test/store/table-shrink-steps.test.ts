/**
 * A shrink of the item table costs each expiry tick a bounded share (table-shrink.ts): the
 * smaller index is built a budget at a time while the store serves, and a clear takes the tables
 * back to their first size at once. Replay the model test with
 * `TEST_SEED=<seed> bun test test/store/table-shrink-steps.test.ts`.
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { MIB, SET_OK, Store, type StoreOptions } from "../../src/store/store.ts";
import { slotsFor } from "../../src/store/hash-index.ts";
import { MIN_STEP } from "../../src/store/table-shrink.ts";
import { Prng, bytes, pattern, testSeed } from "../support/prng.ts";
import { FakeClock, putValue as put, readValue as read } from "./support.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

function mk(opts: Partial<StoreOptions> = {}, clock = new FakeClock()): Store {
  return new Store({ memory: 64 * MIB, clock: clock.read, ...opts });
}

describe("Store table shrink, a tick's share at a time", () => {
  test("no tick of a shrink puts more index entries in a new table than its budget builds: the smaller index is built over ticks, not rehashed in one", () => {
    const clock = new FakeClock();
    const s = mk({}, clock);
    for (let i = 0; i < 300_000; i++) put(s, `k${i}`, pattern(i, 8));
    for (let i = 0; i < 300_000; i++) if (i % 8 !== 0) s.delete(bytes(`k${i}`));
    const live = s.size;
    const slotsBefore = s.index.slotCount;
    let worst = 0;
    let ticks = 0;
    let sawBuild = false;
    while ((s.items.shrinkingTo !== 0 || s.counters.tableShrinks === 0 || s.index.buildingSmaller) && ticks < 100_000) {
      const moved = s.index.moved;
      s.expire(clock.now, MIN_STEP);
      worst = Math.max(worst, s.index.moved - moved);
      sawBuild ||= s.index.buildingSmaller;
      ticks++;
    }
    expect(s.counters.tableShrinks).toBe(1);
    expect(s.items.cap).toBe(2 * live);
    expect(s.index.slotCount).toBe(slotsFor(2 * live));
    expect(s.index.slotCount).toBeLessThan(slotsBefore);
    // One rehash put all 37,500 entries in the new table in one tick; a tick's budget now builds
    // 64 x 32 slots (and a build step of 16 past it at most).
    expect(worst).toBeLessThanOrEqual(MIN_STEP * 32 + 16);
    expect(worst).toBeLessThan(live);
    expect(sawBuild).toBe(true);
    s.checkInvariants();
    for (let i = 0; i < 300_000; i += 7) expect(read(s, `k${i}`)).toEqual(i % 8 === 0 ? pattern(i, 8) : undefined);
  });

  test("the tick that starts a shrink chains no free id: they are chained a budget a tick (scanFree), and sets during the scan take ids below the new size", () => {
    const clock = new FakeClock();
    const s = mk({}, clock);
    for (let i = 0; i < 300_000; i++) put(s, `k${i}`, pattern(i, 8));
    for (let i = 0; i < 300_000; i++) if (i % 8 !== 0) s.delete(bytes(`k${i}`));
    s.expire(clock.now, MIN_STEP);
    const target = s.items.shrinkingTo;
    expect(target).toBe(2 * s.size);
    // In one go, this tick chained every free id below the new size (about 37,500 of them).
    let chained = 0;
    s.items.forEachFree(() => chained++);
    expect(chained).toBe(0);
    expect(s.items.unscanned).toBe(target);
    s.checkInvariants();
    let ticks = 0;
    for (; s.items.unscanned > 0; ticks++) {
      for (let j = 0; j < 10; j++) {
        const id = s.items.alloc(); // (as a set's would: straight from the table)
        expect(id).toBeGreaterThanOrEqual(0);
        expect(id).toBeLessThan(target);
        s.items.release(id);
      }
      s.expire(clock.now, MIN_STEP);
      s.checkInvariants();
    }
    expect(ticks).toBeGreaterThan(10);
    expect(put(s, "during", pattern(1, 8))).toBe(SET_OK);
    while (s.items.shrinkingTo !== 0 || s.index.buildingSmaller) s.expire(clock.now, MIN_STEP);
    expect(s.counters.tableShrinks).toBe(1);
    s.checkInvariants();
    expect(read(s, "during")).toEqual(pattern(1, 8));
    for (let i = 0; i < 300_000; i += 8) expect(read(s, `k${i}`)).toEqual(pattern(i, 8));
  });

  test("a cancelled shrink chains no free id at once: the ids above its size join the scan, which ticks and sets carry on", () => {
    const clock = new FakeClock();
    const s = mk({}, clock);
    for (let i = 0; i < 300_000; i++) put(s, `k${i}`, pattern(i, 8));
    for (let i = 0; i < 300_000; i++) if (i % 8 !== 0) s.delete(bytes(`k${i}`));
    for (let t = 0; t < 40 && s.items.unscanned + (s.items.shrinkingTo === 0 ? 1 : 0) > 0; t++) s.expire(clock.now, MIN_STEP);
    const target = s.items.shrinkingTo;
    expect(target).toBeGreaterThan(0);
    expect(s.items.unscanned).toBe(0); // the scan below the new size done, the moves under way
    let n = 0;
    while (s.size * 4 <= target * 3) expect(put(s, `back${n++}`, pattern(n, 8))).toBe(SET_OK);
    let chainedBefore = 0;
    s.items.forEachFree(() => chainedBefore++);
    s.expire(clock.now, MIN_STEP); // the items came back: cancelled
    expect(s.items.shrinkingTo).toBe(0);
    let chained = 0;
    s.items.forEachFree(() => chained++);
    // In one go, the cancel chained every free id above the size (about 200,000 here).
    expect(chained - chainedBefore).toBeLessThan(10_000);
    expect(s.items.unscanned).toBeGreaterThan(100_000);
    s.checkInvariants();
    let ticks = 0;
    for (; s.items.unscanned > 0; ticks++) {
      expect(put(s, `more${ticks}`, pattern(ticks, 8))).toBe(SET_OK);
      s.expire(clock.now, MIN_STEP);
      s.checkInvariants();
    }
    expect(ticks).toBeGreaterThan(10);
    const cap = s.items.cap;
    for (let i = 0; i < 50_000; i++) expect(put(s, `fill${i}`, pattern(i, 8))).toBe(SET_OK);
    expect(s.items.cap).toBe(cap); // the free ids were all found again: no growth for these
    s.checkInvariants();
    for (let i = 0; i < 300_000; i += 8) expect(read(s, `k${i}`)).toEqual(pattern(i, 8));
    for (let i = 0; i < n; i += 97) expect(read(s, `back${i}`)).toEqual(pattern(i + 1, 8));
  });

  test("a smaller index begun again without free bytes for it waits (the index stays larger), not a rehash in one tick", () => {
    const clock = new FakeClock();
    const s = mk({}, clock);
    for (let i = 0; i < 300_000; i++) put(s, `k${i}`, pattern(i, 8));
    for (let i = 0; i < 300_000; i++) if (i % 8 !== 0) s.delete(bytes(`k${i}`));
    while (s.counters.tableShrinks === 0) s.expire(clock.now, MIN_STEP);
    expect(s.index.buildingSmaller).toBe(true);
    const slots = s.index.slotCount;
    // As a growth drops the build (StoreRoom.tryGrowItems), and pages take the bytes meanwhile.
    s.index.cancelBuild();
    const door = s.shrink as unknown as { freeBytes: () => number };
    const freeBytes = door.freeBytes;
    door.freeBytes = () => 0;
    for (let t = 0; t < 5; t++) {
      const moved = s.index.moved;
      s.expire(clock.now, MIN_STEP);
      expect(s.index.moved - moved).toBe(0); // (a rehash in one go: 37,500)
      s.checkInvariants();
    }
    expect(s.index.slotCount).toBe(slots);
    door.freeBytes = freeBytes;
    let worst = 0;
    while (s.index.slotCount > slotsFor(s.items.cap)) {
      const moved = s.index.moved;
      s.expire(clock.now, MIN_STEP);
      worst = Math.max(worst, s.index.moved - moved);
    }
    expect(worst).toBeLessThanOrEqual(MIN_STEP * 32 + 16);
    s.checkInvariants();
    for (let i = 0; i < 300_000; i += 8) expect(read(s, `k${i}`)).toEqual(pattern(i, 8));
  });

  test("clear takes the item table, its index and the TTL heap back to their first size at once, without a tick", () => {
    const s = mk({ initialItems: 1024 });
    for (let i = 0; i < 200_000; i++) put(s, `k${i}`, pattern(i, 8), i % 2 === 0 ? 60_000 : 0);
    expect(s.items.cap).toBeGreaterThan(200_000);
    const pagesBefore = s.slab.pageLimit;
    s.clear();
    expect(s.items.cap).toBe(1024);
    expect(s.index.slotCount).toBe(slotsFor(1024));
    expect(s.heap.slots.length).toBeLessThanOrEqual(1024);
    expect(s.slab.pageLimit).toBeGreaterThan(pagesBefore);
    s.checkInvariants();
    for (let i = 0; i < 5_000; i++) expect(put(s, `again${i}`, pattern(i, 8), i % 3 === 0 ? 1_000 : 0)).toBe(SET_OK);
    s.checkInvariants();
    for (let i = 0; i < 5_000; i++) expect(read(s, `again${i}`)).toEqual(pattern(i, 8));
    expect(read(s, "k0")).toBeUndefined();
  });

  test("seeded sets, gets, deletes, expiry and clears between the ticks of shrinks agree with a Map; invariants after every tick", () => {
    const seed = testSeed();
    const rnd = new Prng(seed);
    const clock = new FakeClock();
    const s = mk({ memory: 32 * MIB, initialItems: 64 }, clock);
    const model = new Map<string, { value: Uint8Array; expiry: number }>();
    const phases = { moving: 0, building: 0 };
    let next = 0;
    const check = (key: string): void => {
      const e = model.get(key);
      const got = read(s, key);
      if (e === undefined || e.expiry <= clock.now) {
        expect(got).toBeUndefined();
        model.delete(key);
      } else expect(got).toEqual(e.value);
    };
    try {
      for (let round = 0; round < 10; round++) {
        // A burst, then most of it gone: the table is mostly free and a shrink begins.
        const burst = 5_000 + rnd.int(25_000);
        for (let i = 0; i < burst; i++) {
          const key = `b${next++}`;
          const value = pattern(next, 4 + rnd.int(40));
          const ttl = rnd.int(3) === 0 ? 1 + rnd.int(20_000) : 0;
          expect(put(s, key, value, ttl)).toBe(SET_OK);
          model.set(key, { value, expiry: ttl === 0 ? Infinity : clock.now + ttl });
        }
        for (const key of model.keys()) if (rnd.int(12) !== 0) {
          s.delete(bytes(key));
          model.delete(key);
        }
        for (let t = 0; t < 400 && (t < 20 || s.items.shrinkingTo !== 0 || s.index.buildingSmaller); t++) {
          if (s.items.shrinkingTo !== 0) phases.moving++;
          if (s.index.buildingSmaller) phases.building++;
          for (let op = rnd.int(30); op > 0; op--) {
            const r = rnd.int(10);
            const keys = r < 6 ? [...model.keys()] : [];
            if (r < 3 && keys.length > 0) check(keys[rnd.int(keys.length)]!);
            else if (r < 5 && keys.length > 0) {
              const key = keys[rnd.int(keys.length)]!;
              const e = model.get(key)!;
              expect(s.delete(bytes(key))).toBe(e.expiry > clock.now);
              model.delete(key);
            } else if (r < 6 && keys.length > 0) {
              const key = keys[rnd.int(keys.length)]!; // overwritten, maybe in another class
              const value = pattern(next++, 4 + rnd.int(200));
              expect(put(s, key, value)).toBe(SET_OK);
              model.set(key, { value, expiry: Infinity });
            } else {
              const key = `n${next++}`;
              const value = pattern(next, 4 + rnd.int(40));
              const ttl = rnd.int(2) === 0 ? 1 + rnd.int(3_000) : 0;
              expect(put(s, key, value, ttl)).toBe(SET_OK);
              model.set(key, { value, expiry: ttl === 0 ? Infinity : clock.now + ttl });
            }
          }
          clock.now += rnd.int(200);
          s.expire(clock.now, 1 + rnd.int(200));
          s.checkInvariants();
        }
        if (rnd.int(8) === 0) {
          s.clear();
          model.clear();
          s.checkInvariants();
        }
        for (const key of [...model.keys()]) check(key);
      }
      expect(s.counters.evictions).toBe(0); // (32 MiB holds it all: every difference is a bug)
      expect(s.counters.tableShrinks).toBeGreaterThan(2);
      expect(phases.moving).toBeGreaterThan(0);
      expect(phases.building).toBeGreaterThan(0);
    } catch (e) {
      throw new Error(`TEST_SEED=${seed}: ${String(e)}`);
    }
  }, 120_000);
});
