/**
 * The item table (and its index) shrink once most of their ids are free, a tick's budget at a
 * time, and give their bytes back to the pages. Replay a random case with
 * `TEST_SEED=<seed> bun test test/store/table-shrink.test.ts` (both seeded cases take it).
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { MIB, SET_OK, Store, type StoreOptions } from "../../src/store/store.ts";
import { slotsFor } from "../../src/store/hash-index.ts";
import { type IdPin, MIN_STEP } from "../../src/store/table-shrink.ts";
import { Prng, bytes, pattern, testSeed } from "../support/prng.ts";
import { FakeClock, putValue as put, readValue as read } from "./support.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

function mk(opts: Partial<StoreOptions> = {}, clock = new FakeClock()): { s: Store; clock: FakeClock } {
  return { s: new Store({ memory: 16 * MIB, clock: clock.read, ...opts }), clock };
}

/** settle runs expiry ticks until nothing is due and the table and its index stop changing size, checking invariants after each; returns how many ran. */
function settle(s: Store, now: number, budget: number, check = true): number {
  let ticks = 0;
  let idle = 0;
  while (idle < 3) {
    const cap = s.items.cap;
    const shrinking = s.items.shrinkingTo;
    const expired = s.expire(now, budget);
    ticks++;
    if (check) s.checkInvariants();
    idle = expired === 0 && s.items.cap === cap && s.items.shrinkingTo === 0 && shrinking === 0 && !s.index.buildingSmaller ? idle + 1 : 0;
    if (ticks > 10_000) throw new Error("the table never settled");
  }
  return ticks;
}

describe("Store item table shrinking", () => {
  test("after most items are deleted, the table shrinks to twice the live count, tick by tick; every item reads back", () => {
    const { s, clock } = mk();
    for (let i = 0; i < 60_000; i++) put(s, `k${i}`, pattern(i, 20), i % 3 === 0 ? 500_000 : 0);
    const peak = s.items.cap;
    const metaBefore = s.metaBytes();
    const pagesBefore = s.slab.pageLimit;
    expect(peak).toBeGreaterThanOrEqual(60_000);
    // Keep every 97th item, scattered over the whole table: most of them must move down.
    for (let i = 0; i < 60_000; i++) if (i % 97 !== 0) s.delete(bytes(`k${i}`));
    const live = s.size;
    expect(live * 4).toBeLessThan(peak);
    const ticks = settle(s, clock.now, 64);
    expect(ticks).toBeGreaterThan(10); // incremental: 64 moves (or 2,048 ids looked at) a tick
    expect(s.items.cap).toBe(2 * live);
    expect(s.index.slotCount).toBe(slotsFor(2 * live));
    expect(s.counters.tableShrinks).toBe(1);
    const st = s.stats();
    expect(st.itemCapacity).toBe(2 * live);
    expect(st.tableShrinks).toBe(1);
    expect(s.metaBytes()).toBeLessThan(metaBefore / 10);
    expect(s.slab.pageLimit).toBeGreaterThan(pagesBefore);
    expect(s.size).toBe(live);
    for (let i = 0; i < 60_000; i++) expect(read(s, `k${i}`)).toEqual(i % 97 === 0 ? pattern(i, 20) : undefined);
    // Moved items kept their TTLs and LRU order: active expiry still finds them, eviction still works.
    clock.now += 500_000;
    expect(s.expire(clock.now, 100_000)).toBe(Math.ceil(60_000 / 291));
    s.checkInvariants();
    for (let i = 0; i < 200_000; i++) expect(put(s, `again${i}`, pattern(i, 20))).toBe(SET_OK);
    expect(s.counters.evictions).toBeGreaterThan(0);
    s.checkInvariants();
  });

  test("after a burst of small values expires, large values get as many pages as in a fresh store", () => {
    // The table stayed at its peak: 16 MiB held 25% fewer 100 KB values after 250k small ones.
    const { s, clock } = mk();
    for (let i = 0; i < 250_000; i++) put(s, `small${i}`, pattern(i, 30), 10_000);
    clock.now += 10_000;
    settle(s, clock.now, 2_000, false);
    expect(s.size).toBe(0);
    const big = pattern(1, 100_000);
    for (let i = 0; i < 400; i++) expect(put(s, `big${i}`, big)).toBe(SET_OK);
    const { s: fresh } = mk();
    for (let i = 0; i < 400; i++) put(fresh, `big${i}`, big);
    expect(s.size).toBeGreaterThanOrEqual(fresh.size - 10); // the small class may keep a page
    expect(s.stats().pageBytes).toBe(fresh.stats().pageBytes);
    s.checkInvariants();
  });

  test("no flapping: a live count wandering about a quarter of the table shrinks it once, and never grows it", () => {
    const { s, clock } = mk({ initialItems: 16 });
    for (let i = 0; i < 8_000; i++) put(s, `k${i}`, pattern(i, 10));
    const cap = s.items.cap;
    let n = 8_000;
    const setLive = (want: number): void => {
      for (; n > want; n--) s.delete(bytes(`k${n - 1}`));
      for (; n < want; n++) put(s, `k${n}`, pattern(n, 10));
    };
    setLive(Math.floor(cap / 4) + 8);
    settle(s, clock.now, 500);
    expect(s.items.cap).toBe(cap); // not below a quarter: nothing
    const caps = new Set<number>();
    for (let round = 0; round < 30; round++) {
      setLive(Math.floor(cap / 4) - 8);
      settle(s, clock.now, 500);
      caps.add(s.items.cap);
      setLive(Math.floor(cap / 4) + 8);
      settle(s, clock.now, 500);
      caps.add(s.items.cap);
    }
    expect(s.counters.tableShrinks).toBe(1);
    expect([...caps]).toEqual([2 * (Math.floor(cap / 4) - 8)]);
    // Back to the peak: it grows again, and shrinks again only when the count falls a long way.
    setLive(8_000);
    expect(s.items.cap).toBeGreaterThanOrEqual(8_000);
    settle(s, clock.now, 500);
    expect(s.counters.tableShrinks).toBe(1);
    for (let i = 0; i < 8_000; i++) expect(read(s, `k${i}`)).toEqual(pattern(i, 10));
  });

  test("items added during a shrink take ids below the new size; when they run out the shrink is cancelled", () => {
    const { s, clock } = mk();
    for (let i = 0; i < 40_000; i++) put(s, `k${i}`, pattern(i, 20));
    for (let i = 0; i < 40_000; i++) if (i % 10 !== 0) s.delete(bytes(`k${i}`));
    const cap = s.items.cap;
    s.expire(clock.now, 16); // begins: the table is to be 8,000 ids
    const target = s.items.shrinkingTo;
    expect(target).toBe(8_000);
    for (let i = 0; i < 1_000; i++) {
      put(s, `n${i}`, pattern(i, 20));
      expect(s.get(bytes(`n${i}`))).toBeLessThan(target);
    }
    s.checkInvariants();
    // More new items than ids left below the new size: the shrink ends, the table keeps its size.
    for (let i = 1_000; i < 10_000; i++) put(s, `n${i}`, pattern(i, 20));
    expect(s.items.shrinkingTo).toBe(0);
    expect(s.items.cap).toBe(cap);
    s.checkInvariants();
    settle(s, clock.now, 64);
    expect(s.counters.tableShrinks).toBe(0);
    for (let i = 0; i < 40_000; i++) expect(read(s, `k${i}`)).toEqual(i % 10 === 0 ? pattern(i, 20) : undefined);
    for (let i = 0; i < 10_000; i++) expect(read(s, `n${i}`)).toEqual(pattern(i, 20));
  });

  test("no item moves while ids are pinned (a snapshot or ring purge walks them); the shrink goes on after", () => {
    const { s, clock } = mk();
    for (let i = 0; i < 40_000; i++) put(s, `k${i}`, pattern(i, 20));
    for (let i = 0; i < 40_000; i++) if (i % 50 !== 0) s.delete(bytes(`k${i}`));
    const idOf = (i: number): number => s.index.find(bytes(`k${i}`), 0, `k${i}`.length, s.hashOf(bytes(`k${i}`), 0, `k${i}`.length));
    const before = Array.from({ length: 800 }, (_, j) => idOf(j * 50));
    const pin = s.pinIds(); // a walk that has passed no id yet
    for (let t = 0; t < 200; t++) s.expire(clock.now, 2_000);
    expect(Array.from({ length: 800 }, (_, j) => idOf(j * 50))).toEqual(before);
    expect(s.counters.tableShrinks).toBe(0);
    s.checkInvariants();
    s.unpinIds(pin);
    settle(s, clock.now, 2_000);
    expect(s.counters.tableShrinks).toBe(1);
    expect(s.items.cap).toBe(1_600);
    for (let j = 0; j < 800; j++) expect(read(s, `k${j * 50}`)).toEqual(pattern(j * 50, 20));
  });

  test("with a budget of 1 the shrink still goes MIN_STEP moves a tick: done in tens of ticks (review: a move or 32 ids a tick, over a thousand ticks)", () => {
    const { s, clock } = mk();
    for (let i = 0; i < 40_000; i++) put(s, `k${i}`, pattern(i, 20));
    for (let i = 0; i < 40_000; i++) if (i % 50 !== 0) s.delete(bytes(`k${i}`));
    const cap = s.items.cap;
    let ticks = 0;
    while (s.counters.tableShrinks === 0 && ticks < 100) {
      s.expire(clock.now, 1);
      s.checkInvariants();
      ticks++;
    }
    // (cap - 1,600) ids to look at, 2,048 a tick, and one tick to begin.
    expect(s.counters.tableShrinks).toBe(1);
    expect(ticks).toBeLessThanOrEqual(Math.ceil((cap - 1_600) / (MIN_STEP * 32)) + 2);
    expect(s.items.cap).toBe(1_600);
    for (let j = 0; j < 800; j++) expect(read(s, `k${j * 50}`)).toEqual(pattern(j * 50, 20));
  });

  test("expiry taking the whole budget on every tick leaves the shrink its MIN_STEP (review: it never got a step while items kept expiring)", () => {
    const { s, clock } = mk();
    for (let i = 0; i < 40_000; i++) put(s, `k${i}`, pattern(i, 20));
    for (let i = 0; i < 40_000; i++) if (i % 50 !== 0) s.delete(bytes(`k${i}`));
    for (let i = 0; i < 2_000; i++) put(s, `due${i}`, pattern(i, 20), 1_000 + i);
    clock.now += 10_000; // all 2,000 due: 10 a tick takes the whole budget for 200 ticks
    for (let t = 0; t < 100; t++) {
      expect(s.expire(clock.now, 10)).toBe(10);
      s.checkInvariants();
    }
    expect(s.counters.tableShrinks).toBe(1);
    expect(s.items.cap).toBeLessThan(8_000);
    for (let j = 0; j < 800; j++) expect(read(s, `k${j * 50}`)).toEqual(pattern(j * 50, 20));
  });

  test("walks back to back, each pinned throughout (a snapshot on a short interval): the shrink moves what they passed, and each walk sees every item held throughout once (review: the pin blocked it for good)", () => {
    const { s, clock } = mk();
    for (let i = 0; i < 40_000; i++) put(s, `k${i}`, pattern(i, 20));
    for (let i = 0; i < 40_000; i++) if (i % 50 !== 0) s.delete(bytes(`k${i}`));
    const held = new Set(Array.from({ length: 800 }, (_, j) => `k${j * 50}`));
    const dec = new TextDecoder();
    let walks = 0;
    while (s.counters.tableShrinks === 0 && walks < 10) {
      // One walk as a snapshot makes it: slices of ids in increasing order, a tick between slices,
      // and the next walk pinned in the same turn as this one ends.
      const pin = s.pinIds();
      const seen = new Map<string, number>();
      let n = 0;
      for (let id = 0; id < s.items.cap;) {
        const end = Math.min(s.items.cap, id + 1_000);
        for (; id < end; id++) {
          if (!s.items.isLive(id)) continue;
          const key = dec.decode(s.keyView(id));
          seen.set(key, (seen.get(key) ?? 0) + 1);
        }
        pin.passed = id;
        // Between slices: a tick, and now and then a new item (it may or may not be in the walk).
        s.expire(clock.now, 1);
        s.checkInvariants();
        put(s, `new${walks}:${n++}`, pattern(n, 20));
      }
      s.unpinIds(pin);
      for (const key of held) expect(seen.get(key)).toBe(1);
      for (const times of seen.values()) expect(times).toBe(1);
      walks++;
    }
    expect(s.counters.tableShrinks).toBe(1);
    expect(walks).toBeLessThanOrEqual(3);
    for (const key of held) expect(read(s, key)).toEqual(pattern(Number(key.slice(1)), 20));
  });

  test("clear, then ticks: the table goes back to its first size", () => {
    const { s, clock } = mk();
    for (let i = 0; i < 30_000; i++) put(s, `k${i}`, pattern(i, 20));
    s.clear();
    settle(s, clock.now, 2_000);
    expect(s.items.cap).toBe(1024);
    expect(put(s, "after", pattern(1, 20))).toBe(SET_OK);
    expect(read(s, "after")).toEqual(pattern(1, 20));
  });

  test("a table full again after a shrink takes the bytes of an empty page before it evicts an item for them", () => {
    // A burst of small values expired, the table shrank, and large values took the bytes freed.
    // The next burst of small values filled the table: it released pages of large values (their
    // items evicted) while a page of the burst's class held no item, and one stayed empty after.
    const { s, clock } = mk();
    for (let i = 0; i < 150_000; i++) put(s, `burst${i}`, pattern(i, 30), 1_000);
    clock.now += 2_000;
    settle(s, clock.now, 2_000, false);
    expect(s.counters.tableShrinks).toBeGreaterThanOrEqual(1); // (maybe in stages: it goes on while the burst expires, MIN_STEP)
    const big = pattern(1, 100_000);
    for (let i = 0; i < 40; i++) expect(put(s, `big${i}`, big)).toBe(SET_OK);
    expect(s.slab.emptyPages).toBeGreaterThan(0);
    const slab = s.slab;
    const release = slab.releasePage.bind(slab);
    const costly: number[] = []; // items on each page released while an empty one was left
    slab.releasePage = (page: number): void => {
      if (slab.pageUsed[page]! > 0 && slab.emptyPages > 0) costly.push(slab.pageUsed[page]!);
      release(page);
    };
    for (let i = 0; i < 100_000; i++) expect(put(s, `second${i}`, pattern(i, 30))).toBe(SET_OK);
    expect(costly).toEqual([]);
    expect(s.slab.pageReleases).toBeGreaterThan(0);
    s.checkInvariants();
    for (let i = 0; i < 100_000; i++) expect(read(s, `second${i}`)).toEqual(pattern(i, 30));
  });

  test("seeded walks over the ids (pins whose `passed` moves up) among sets, deletes, ticks and clears: nothing moves from an id a walk has not passed, and each walk sees every item held throughout it once", () => {
    const seed = testSeed();
    const rnd = new Prng(seed);
    const clock = new FakeClock();
    const { s } = mk({ memory: 32 * MIB, initialItems: 16 }, clock);
    const dec = new TextDecoder();
    /** model: key → its version (bumped by every write or removal of the key) and expiry. */
    const model = new Map<string, { version: number; expiry: number }>();
    let version = 0;
    interface Walk { pin: IdPin; next: number; seen: Map<string, number>; start: Map<string, number> }
    const walks: Walk[] = [];
    const write = (key: string, ttl: number): void => {
      expect(put(s, key, pattern(++version, rnd.int(5) === 0 ? 200 : 12), ttl)).toBe(SET_OK);
      model.set(key, { version, expiry: ttl === 0 ? Infinity : clock.now + ttl });
    };
    const remove = (key: string): void => {
      s.delete(bytes(key));
      model.delete(key);
    };
    const idsAt = (from: number): Map<number, string> => {
      const at = new Map<number, string>();
      for (let id = from; id < s.items.cap; id++) if (s.items.isLive(id)) at.set(id, dec.decode(s.keyView(id)));
      return at;
    };
    let keys = 0;
    let walksDone = 0;
    try {
      for (let step = 0; step < 3_000; step++) {
        const op = rnd.int(100);
        if (op < 8) {
          // A burst: the table grows (a shrink under way is cancelled when ids below it run out).
          const n = rnd.int(4_000);
          for (let i = 0; i < n; i++) write(`k${keys++}`, rnd.int(4) === 0 ? 1 + rnd.int(5_000) : 0);
        } else if (op < 16) {
          // A drain: most keys go, so the table comes under a quarter live.
          for (const key of [...model.keys()]) if (rnd.int(10) !== 0) remove(key);
        } else if (op < 30) {
          for (let i = rnd.int(50); i > 0; i--) write(`k${keys++}`, 0);
          const all = [...model.keys()];
          for (let i = rnd.int(20); i > 0 && all.length > 0; i--) remove(all[rnd.int(all.length)]!);
        } else if (op < 60) {
          // A tick: no item at an id some walk has not passed may move.
          clock.now += rnd.int(200);
          const from = walks.reduce((m, w) => Math.min(m, w.pin.passed), Infinity);
          const before = from === Infinity ? undefined : idsAt(from);
          s.expire(clock.now, 1 + rnd.int(300));
          for (const [key, e] of model) if (e.expiry <= clock.now) model.delete(key);
          if (before !== undefined) {
            for (const [id, key] of before) {
              if (!model.has(key)) continue; // removed since (expired): nothing to keep
              expect(s.items.isLive(id) && dec.decode(s.keyView(id)) === key).toBe(true);
            }
          }
        } else if (op < 66) {
          if (walks.length < 3) {
            const start = new Map<string, number>();
            for (const [key, e] of model) if (e.expiry > clock.now) start.set(key, e.version);
            walks.push({ pin: s.pinIds(), next: 0, seen: new Map(), start });
          }
        } else if (op < 99) {
          // A walk's slice, in increasing id order, as snapshot.ts and the ring purge walk.
          const w = walks[rnd.int(walks.length)];
          if (w !== undefined) {
            const end = Math.min(s.items.cap, w.next + 1 + rnd.int(3_000));
            for (; w.next < end; w.next++) {
              if (!s.items.isLive(w.next)) continue;
              const key = dec.decode(s.keyView(w.next));
              w.seen.set(key, (w.seen.get(key) ?? 0) + 1);
            }
            w.pin.passed = w.next;
            // Done once past the table's end at a slice's end; or, as a snapshot awaiting its last
            // block's write, a turn later (the table may be cut, or grow, meanwhile).
            if (w.next >= s.items.cap && rnd.int(2) === 0) {
              s.unpinIds(w.pin);
              walks.splice(walks.indexOf(w), 1);
              walksDone++;
              for (const times of w.seen.values()) expect(times).toBe(1);
              for (const [key, v] of w.start) {
                const e = model.get(key);
                if (e !== undefined && e.version === v && e.expiry > clock.now) expect(w.seen.get(key)).toBe(1); // held throughout
              }
            }
          }
        } else {
          s.clear();
          model.clear();
        }
        if (op < 66 || op >= 99) s.checkInvariants(); // (a slice changes nothing)
      }
      expect(s.counters.evictions).toBe(0);
      for (const key of model.keys()) expect(s.has(bytes(key))).toBe(true);
      expect(walksDone).toBeGreaterThan(10);
      expect(s.counters.tableShrinks).toBeGreaterThan(0);
    } catch (e) {
      throw new Error(`TEST_SEED=${seed}: ${String(e)}`);
    }
  }, 60_000); // (checks the store's invariants after every step: seconds, more on a busy machine)

  test("seeded bursts and drains against a model: invariants after every tick", () => {
    const seed = testSeed();
    const rnd = new Prng(seed);
    const clock = new FakeClock();
    const { s } = mk({ memory: 8 * MIB, initialItems: 16 }, clock);
    const model = new Map<string, { value: Uint8Array; expiry: number }>();
    try {
      for (let round = 0; round < 12; round++) {
        const burst = rnd.int(20_000);
        for (let i = 0; i < burst; i++) {
          const key = `r${round}:${i}`;
          const value = pattern(round * 100_000 + i, rnd.int(3) === 0 ? 300 : 12);
          const ttl = rnd.int(4) === 0 ? 1 + rnd.int(5_000) : 0;
          expect(put(s, key, value, ttl)).toBe(SET_OK);
          model.set(key, { value, expiry: ttl === 0 ? Infinity : clock.now + ttl });
        }
        for (const key of model.keys()) if (rnd.int(10) !== 0) {
          s.delete(bytes(key));
          model.delete(key);
        }
        for (let t = 0; t < 40; t++) {
          clock.now += rnd.int(300);
          s.expire(clock.now, 1 + rnd.int(300));
          s.checkInvariants();
          if (rnd.int(4) === 0) {
            const key = `t${round}:${t}`;
            const value = pattern(t, 12);
            put(s, key, value);
            model.set(key, { value, expiry: Infinity });
          }
        }
        for (const [key, e] of model) {
          const got = read(s, key);
          if (got === undefined) {
            // Only expiry or an eviction may take an item away.
            if (e.expiry > clock.now) expect(s.counters.evictions).toBeGreaterThan(0);
            model.delete(key);
          } else {
            expect(e.expiry > clock.now).toBe(true);
            expect(got).toEqual(e.value);
          }
        }
      }
      expect(s.counters.tableShrinks).toBeGreaterThan(0);
    } catch (e) {
      throw new Error(`TEST_SEED=${seed}: ${String(e)}`);
    }
  });
});
