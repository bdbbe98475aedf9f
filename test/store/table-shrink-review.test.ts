/**
 * Review cases for the shrink's budgeted steps (table-shrink.ts, item-table.ts): free ids left to
 * the scan, the records' buffer touched ahead, the smaller index being built, against live ids
 * laid out densely (the other shrink tests spread them evenly, so any scan finds a free id at once).
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

describe("Store table shrink, review", () => {
  test("a set while free ids wait for the scan behind a run of live ones takes one of them: it neither cancels the shrink, nor grows the table, nor evicts", () => {
    const clock = new FakeClock();
    const s = mk({}, clock);
    for (let i = 0; i < 100_000; i++) put(s, `k${i}`, pattern(i, 8));
    // The live items hold ids 0..19,999 (handed out in order), the rest free: more than a scan's 4,096 a set looks at.
    for (let i = 20_000; i < 100_000; i++) s.delete(bytes(`k${i}`));
    s.expire(clock.now, MIN_STEP);
    const target = s.items.shrinkingTo;
    expect(target).toBe(40_000);
    expect(s.items.unscanned).toBe(target);
    const cap = s.items.cap;
    expect(put(s, "new", pattern(1, 8))).toBe(SET_OK);
    expect(s.items.shrinkingTo).toBe(target);
    expect(s.items.cap).toBe(cap);
    expect(s.counters.evictions).toBe(0);
    s.checkInvariants();
    expect(read(s, "new")).toEqual(pattern(1, 8));
  });

  test("after a cancelled shrink, a set behind a run of live ids left to the scan takes a free id: the table does not grow while ids are free", () => {
    const clock = new FakeClock();
    const s = mk({}, clock);
    let n = 0;
    while (n < 100_000 || s.items.top < s.items.cap) expect(put(s, `k${n++}`, pattern(n, 8))).toBe(SET_OK);
    expect(s.items.top).toBe(s.items.cap); // (every id handed out: a set past them grows the table)
    for (let i = 20_000; i < n; i++) s.delete(bytes(`k${i}`));
    s.expire(clock.now, MIN_STEP);
    expect(s.items.shrinkingTo).toBe(40_000);
    s.shrink.cancel(); // (as a set that found no id below the new size does)
    expect(s.items.unscanned).toBeGreaterThan(8_192);
    const cap = s.items.cap;
    for (let i = 0; i < 100; i++) expect(put(s, `new${i}`, pattern(i, 8))).toBe(SET_OK);
    expect(s.items.cap).toBe(cap);
    expect(s.counters.evictions).toBe(0);
    s.checkInvariants();
    for (let i = 0; i < 100; i++) expect(read(s, `new${i}`)).toEqual(pattern(i, 8));
  });

  test("while the smaller index waits for free bytes, the item table still shrinks when it is mostly free again (its bytes are what the index waits for)", () => {
    const clock = new FakeClock();
    const s = mk({}, clock);
    for (let i = 0; i < 300_000; i++) put(s, `k${i}`, pattern(i, 8));
    for (let i = 0; i < 300_000; i++) if (i % 8 !== 0) s.delete(bytes(`k${i}`));
    while (s.counters.tableShrinks === 0) s.expire(clock.now, MIN_STEP);
    expect(s.index.buildingSmaller).toBe(true);
    // As a growth drops the build (StoreRoom.tryGrowItems), and pages take the bytes meanwhile.
    s.index.cancelBuild();
    const door = s.shrink as unknown as { freeBytes: () => number };
    door.freeBytes = () => 0;
    const cap = s.items.cap;
    // Most of the items go again: under a quarter of the table's ids live.
    for (let i = 0; i < 300_000; i += 8) if (i % 64 !== 0) s.delete(bytes(`k${i}`));
    expect(s.size * 4).toBeLessThan(cap);
    for (let t = 0; t < 2_000 && s.counters.tableShrinks < 2; t++) s.expire(clock.now, MIN_STEP);
    expect(s.counters.tableShrinks).toBe(2);
    expect(s.items.cap).toBeLessThan(cap);
    s.checkInvariants();
    for (let i = 0; i < 300_000; i += 8) expect(read(s, `k${i}`)).toEqual(i % 64 === 0 ? pattern(i, 8) : undefined);
  });

  test("a shrink that drops a doubled index being built gives its bytes back to the pages in the same tick", () => {
    const clock = new FakeClock();
    const s = mk({}, clock);
    let n = 0;
    while (n < 1_000_000 && !(s.index.building && !s.index.buildingSmaller && n > 100_000)) put(s, `k${n++}`, pattern(n, 8));
    expect(s.index.building).toBe(true);
    for (let i = 0; i < n; i++) if (i % 8 !== 0) s.delete(bytes(`k${i}`));
    s.expire(clock.now, MIN_STEP);
    expect(s.items.shrinkingTo).toBeGreaterThan(0);
    expect(s.index.building).toBe(false); // (dropped: a doubled index is not wanted now)
    // The page limit counted the dropped table's bytes as metadata until some later growth or shrink.
    expect(s.slab.pageLimit).toBe(Math.min(s.slab.maxPages, Math.floor((s.capacity - s.metaBytes()) / s.slab.pageSize)));
    s.checkInvariants();
  });
});

describe("Store table shrink, review model", () => {
  // Deletes leave the survivors spread, in one dense run of ids, or at the front: a scan meets
  // free ids at once, or after thousands of live ones.
  const LAYOUTS = ["spread", "run", "front"] as const;

  test("seeded bursts with spread or dense survivors, overwrites, expiry, clears, pins and growths between the ticks of shrinks and smaller-index builds agree with a Map; invariants after every tick", () => {
    const seed = testSeed();
    const rnd = new Prng(seed);
    const clock = new FakeClock();
    const s = mk({ memory: 32 * MIB, initialItems: 64 }, clock);
    const model = new Map<string, { value: Uint8Array; expiry: number }>();
    const order: string[] = []; // keys in the order they were first set (their ids, near enough)
    const seen = { moving: 0, movingLargeIndex: 0, scanning: 0, building: 0, clearsMid: 0, growthsMid: 0, pinned: 0 };
    let next = 0;
    let pin: ReturnType<Store["pinIds"]> | undefined;
    // Some rounds see no free bytes (pages holding them all): smaller indexes wait meanwhile.
    const door = s.shrink as unknown as { freeBytes: () => number };
    const freeBytes = door.freeBytes;
    const setKey = (key: string, value: Uint8Array, ttl: number): void => {
      const cap = s.items.cap;
      const held = s.size;
      expect(put(s, key, value, ttl)).toBe(SET_OK);
      // A growth only when no id was free (an overwrite may free its own first).
      if (s.items.cap > cap && held < cap - 1) throw new Error(`the table grew from ${cap} ids with ${held} held`);
      if (!model.has(key)) order.push(key);
      model.set(key, { value, expiry: ttl === 0 ? Infinity : clock.now + ttl });
    };
    const check = (key: string): void => {
      const e = model.get(key);
      const got = read(s, key);
      if (e === undefined || e.expiry <= clock.now) {
        expect(got).toBeUndefined();
        model.delete(key);
      } else {
        if (got === undefined) throw new Error(`${key} lost (evictions ${s.counters.evictions}, cap ${s.items.cap}, live ${s.size}, ${JSON.stringify(seen)})`);
        expect(got).toEqual(e.value);
      }
    };
    try {
      for (let round = 0; round < 12; round++) {
        const burst = 2_000 + rnd.int(30_000);
        for (let i = 0; i < burst; i++) setKey(`b${next++}`, pattern(next, 4 + rnd.int(40)), rnd.int(4) === 0 ? 1 + rnd.int(20_000) : 0);
        door.freeBytes = rnd.int(3) === 0 ? () => 0 : freeBytes;
        const layout = LAYOUTS[rnd.int(LAYOUTS.length)]!;
        const live = order.filter((k) => model.has(k));
        const from = rnd.int(live.length);
        const keep = Math.max(1, Math.floor(live.length / (6 + rnd.int(10))));
        live.forEach((key, i) => {
          const kept = layout === "spread" ? rnd.int(12) === 0 : layout === "run" ? i >= from && i < from + keep : i < keep;
          if (kept) return;
          s.delete(bytes(key));
          model.delete(key);
        });
        order.length = 0;
        order.push(...model.keys());
        for (let t = 0; t < 600 && (t < 20 || s.items.shrinkingTo !== 0 || s.index.buildingSmaller || s.items.unscanned > 0 || (t < 200 && s.index.slotCount > slotsFor(s.items.cap))); t++) {
          const mid = s.items.shrinkingTo !== 0 || s.index.buildingSmaller || s.items.unscanned > 0;
          if (s.items.shrinkingTo !== 0) seen.moving++;
          if (s.items.shrinkingTo !== 0 && s.index.slotCount > slotsFor(s.items.cap)) seen.movingLargeIndex++;
          if (s.items.unscanned > 0) seen.scanning++;
          if (s.index.buildingSmaller) seen.building++;
          if (pin !== undefined) {
            seen.pinned++;
            pin.passed = Math.min(s.items.cap, pin.passed + rnd.int(4_000));
            if (rnd.int(6) === 0) {
              s.unpinIds(pin);
              pin = undefined;
            }
          } else if (mid && rnd.int(40) === 0) pin = s.pinIds();
          for (let op = rnd.int(40); op > 0; op--) {
            const r = rnd.int(10);
            const keys = r < 6 ? [...model.keys()] : [];
            if (r < 3 && keys.length > 0) check(keys[rnd.int(keys.length)]!);
            else if (r < 5 && keys.length > 0) {
              const key = keys[rnd.int(keys.length)]!;
              const e = model.get(key)!;
              expect(s.delete(bytes(key))).toBe(e.expiry > clock.now);
              model.delete(key);
            } else if (r < 6 && keys.length > 0) {
              setKey(keys[rnd.int(keys.length)]!, pattern(next++, 4 + rnd.int(300)), rnd.int(3) === 0 ? 1 + rnd.int(2_000) : 0);
            } else setKey(`n${next++}`, pattern(next, 4 + rnd.int(40)), rnd.int(2) === 0 ? 1 + rnd.int(3_000) : 0);
          }
          if (mid && s.items.cap < 60_000 && rnd.int(60) === 0) {
            // The items come back at once: the table grows mid-shrink or mid-build.
            seen.growthsMid++;
            for (let i = s.items.cap - s.size + 1 + rnd.int(1_000); i > 0; i--) setKey(`g${next++}`, pattern(next, 8), 0);
          }
          if (rnd.int(80) === 0) {
            // Most of the items go at once, whatever phase the last shrink is in.
            for (const key of [...model.keys()]) if (rnd.int(10) !== 0) {
              s.delete(bytes(key));
              model.delete(key);
            }
          }
          if (mid && rnd.int(150) === 0) {
            seen.clearsMid++;
            if (pin !== undefined) s.unpinIds(pin);
            pin = undefined;
            s.clear();
            model.clear();
            s.checkInvariants();
          }
          clock.now += rnd.int(300);
          s.expire(clock.now, 1 + rnd.int(rnd.int(2) === 0 ? 4 : 300));
          s.checkInvariants();
        }
        if (pin !== undefined) s.unpinIds(pin);
        pin = undefined;
        for (const key of [...model.keys()]) check(key);
        s.checkInvariants();
      }
      if (process.env.SHOW_SEEN) console.log(JSON.stringify({ ...seen, shrinks: s.counters.tableShrinks, cap: s.items.cap }));
      expect(s.counters.evictions).toBe(0); // (32 MiB holds it all: every difference is a bug)
      expect(s.counters.tableShrinks).toBeGreaterThan(2);
      expect(seen.moving).toBeGreaterThan(0);
      expect(seen.building).toBeGreaterThan(0);
    } catch (e) {
      throw new Error(`TEST_SEED=${seed} ${JSON.stringify(seen)}: ${String(e)}`);
    }
  }, 120_000);
});
