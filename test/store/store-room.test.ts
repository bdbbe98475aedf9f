/**
 * StoreRoom (store-room.ts): page moves between size classes against slab calcification, judged
 * by the ages of the classes' LRU tails.
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { MIB, SET_OK, Store } from "../../src/store/store.ts";
import { MAX_ITEM_IDS, RECORD_BYTES } from "../../src/store/item-table.ts";
import { bytes, pattern } from "../support/prng.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

describe("StoreRoom page moves", () => {
  test("a read of another class's LRU tail gives it a second chance, not the whole class: its stale pages still move (review: a hot key at the small class's tail kept every page there)", () => {
    let now = 1_000_000;
    const s = new Store({ memory: 16 * MIB, clock: () => now });
    const large = 100_000;
    // Small values fill memory, with a few large ones among them: both classes hold pages.
    for (let i = 0; i < 200_000; i++) {
      expect(s.set(bytes(`s${i}`), 0, bytes(`s${i}`).length, pattern(i, 100), 0, 100, 0)).toBe(SET_OK);
      if (i % 1000 === 0) {
        const k = bytes(`L${(i / 1000) % 8}`);
        expect(s.set(k, 0, k.length, pattern(i, large), 0, large, 0)).toBe(SET_OK);
      }
    }
    const smallClass = s.classes.classFor(4 + 7 + 100);
    const largeClass = s.classes.classFor(4 + 3 + large);
    const pagesBefore = s.slab.classPages[largeClass]!;
    expect(s.slab.classPages[smallClass]!).toBeGreaterThan(5);
    // The small class's LRU tail becomes a hot key: read before every request that follows. Reads
    // only flag an item (CLOCK), so it stays at the tail while its class stores nothing.
    const hot = s.keyView(s.lru.tail[smallClass]!).slice();
    // The workload moves to 40 large values (4 MB), read in turn and set on a miss.
    let hits = 0;
    for (let op = 0; op < 2_000; op++) {
      now++;
      // (Read, and set again on a miss: a page move evicts every item of its page, and the
      // small class's oldest page holds the hot key.)
      if (s.get(hot) < 0) expect(s.set(hot, 0, hot.length, pattern(-1, 100), 0, 100, 0)).toBe(SET_OK);
      const k = bytes(`W${op % 40}`);
      if (s.get(k) >= 0) {
        if (op >= 1_000) hits++;
      } else {
        expect(s.set(k, 0, k.length, pattern(op, large), 0, large, 0)).toBe(SET_OK);
      }
    }
    // The large class took pages from the small one's stale items, and the 40 values fit.
    expect(s.slab.classPages[largeClass]!).toBeGreaterThan(pagesBefore);
    expect(hits).toBe(1_000);
    s.checkInvariants();
  });
});

describe("StoreRoom with expired items held", () => {
  // One class of 100 B values in 64 KiB pages, as in store.test.ts's eviction tests.
  const opts = { memory: 3 * MIB, maxItemSize: 4096, pageSize: 64 * 1024 };

  /** full fills the class until just before its first eviction; keys `k${from}`..`k${to - 1}` get a 100 ms TTL. */
  function full(from: number, to: number): { s: Store; clock: { now: number }; cap: number } {
    const clock = { now: 1_000_000 };
    let cap = 0;
    {
      const probe = new Store({ ...opts, clock: () => clock.now });
      for (let i = 0; probe.stats().evictions === 0; i++) {
        probe.set(bytes(`k${i}`), 0, bytes(`k${i}`).length, pattern(i, 100), 0, 100, 0);
        cap = i;
      }
    }
    const s = new Store({ ...opts, clock: () => clock.now });
    for (let i = 0; i < cap; i++) {
      const k = bytes(`k${i}`);
      expect(s.set(k, 0, k.length, pattern(i, 100), 0, 100, i >= from && i < to ? 100 : 0)).toBe(SET_OK);
    }
    expect(s.stats().evictions).toBe(0);
    return { s, clock, cap };
  }

  test("a set that needs a chunk takes an expired item's before it evicts a live one (review: the live LRU tail went while expired items waited for the timer)", () => {
    const { s, clock } = full(10, 20);
    clock.now += 200; // k10..k19 expired; no expiry tick has run
    const k = bytes("new");
    expect(s.set(k, 0, k.length, pattern(-1, 100), 0, 100, 0)).toBe(SET_OK);
    expect(s.has(bytes("k0"))).toBe(true); // the live tail stays
    const st = s.stats();
    expect(st.evictions).toBe(0);
    expect(st.expiredActive).toBe(1);
    s.checkInvariants();
  });

  test("an expired item removed to make room is counted as expired, not as an eviction (review: evictions_total rose with nothing live lost)", () => {
    const { s, clock, cap } = full(0, 1 << 30); // every item with a TTL
    clock.now += 200;
    // A page move for large values drops a page of expired small ones: no live item is lost.
    const k = bytes("large");
    expect(s.set(k, 0, k.length, pattern(-2, 3000), 0, 3000, 0)).toBe(SET_OK);
    for (let i = 0; i < 50; i++) {
      const n = bytes(`n${i}`);
      expect(s.set(n, 0, n.length, pattern(i, 100), 0, 100, 0)).toBe(SET_OK);
    }
    const st = s.stats();
    expect(st.evictions).toBe(0);
    expect(st.expiredActive + st.items).toBeGreaterThan(cap); // (items removed were all expired ones)
    s.checkInvariants();
  });
});

describe("StoreRoom item table at the engine's largest buffer", () => {
  test("the table stops growing at the most ids one ArrayBuffer holds; sets then evict (review: past ~107M items the growth threw RangeError from every set)", () => {
    // One buffer holds at most 4 GiB in this engine (JavaScriptCore): 107,374,182 records of 40 B.
    expect(MAX_ITEM_IDS).toBe(Math.floor(2 ** 32 / RECORD_BYTES));
    expect(() => new ArrayBuffer((MAX_ITEM_IDS + 1) * RECORD_BYTES)).toThrow(RangeError);
    // The same limit, lowered through the table's test door, in a store that would grow past it.
    const s = new Store({ memory: 64 * MIB, clock: () => 1_000 });
    s.items.maxIds = 5_000;
    for (let i = 0; i < 20; i++) {
      const k = bytes(`L${i}`);
      expect(s.set(k, 0, k.length, pattern(i, 100_000), 0, 100_000, 0)).toBe(SET_OK);
    }
    for (let i = 0; i < 20_000; i++) {
      const k = bytes(`k${i}`);
      expect(s.set(k, 0, k.length, pattern(i, 100), 0, 100, 0)).toBe(SET_OK);
    }
    const st = s.stats();
    expect(st.itemCapacity).toBeLessThanOrEqual(5_000);
    expect(st.items).toBeGreaterThan(4_900);
    expect(st.pageReleases).toBe(0); // no page given up for a growth that cannot come
    expect(s.has(bytes("L0"))).toBe(true); // nor the large values on them
    expect(s.has(bytes("k19999"))).toBe(true);
    s.checkInvariants();
  });
});
