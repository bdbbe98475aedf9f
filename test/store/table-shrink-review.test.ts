/**
 * Review cases for the shrink's budgeted steps (table-shrink.ts, item-table.ts): free ids left to
 * the scan, the records' buffer touched ahead, the smaller index being built, against live ids
 * laid out densely (the other shrink tests spread them evenly, so any scan finds a free id at once).
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { MIB, SET_OK, Store, type StoreOptions } from "../../src/store/store.ts";
import { MIN_STEP } from "../../src/store/table-shrink.ts";
import { bytes, pattern } from "../support/prng.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

class FakeClock {
  now = 1_000_000;
  read = (): number => this.now;
}

function mk(opts: Partial<StoreOptions> = {}, clock = new FakeClock()): Store {
  return new Store({ memory: 64 * MIB, clock: clock.read, ...opts });
}

function put(s: Store, key: string, value: Uint8Array, ttlMs = 0): number {
  const k = bytes(key);
  return s.set(k, 0, k.length, value, 0, value.length, ttlMs);
}

function read(s: Store, key: string): Uint8Array | undefined {
  const id = s.get(bytes(key));
  return id < 0 ? undefined : s.valueView(id).slice();
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
});
