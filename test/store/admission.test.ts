import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { Admission } from "../../src/store/admission.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

describe("Admission (LRU-K)", () => {
  test("K=2 admits on the second offer and forgets the admitted key", () => {
    const a = new Admission(2, 8);
    expect(a.offer(42)).toBe(false);
    expect(a.seen(42)).toBe(1);
    expect(a.offer(42)).toBe(true);
    expect(a.seen(42)).toBe(0);
    expect(a.offer(42)).toBe(false);
  });

  test("unrecord takes back one recorded access while the history holds the key, and leaves an admitted one alone", () => {
    const a = new Admission(3, 8);
    a.record(5);
    a.record(5);
    a.unrecord(5);
    expect(a.seen(5)).toBe(1);
    a.unrecord(5); // its last access: the key leaves the history
    expect(a.seen(5)).toBe(0);
    expect(a.historySize()).toBe(1); // (its ring entry stays until it comes up, then is skipped)
    a.unrecord(5); // not held: nothing
    expect(a.seen(5)).toBe(0);
    for (let i = 0; i < 3; i++) a.offer(9); // admitted: out of the history
    a.unrecord(9);
    expect(a.seen(9)).toBe(0);
    expect(a.offer(9)).toBe(false); // a new key's first access again
    for (let i = 10; i < 20; i++) a.offer(i); // the stale entries come up and are skipped
    expect(a.seen(9)).toBe(0);
    expect(a.seen(19)).toBe(1);
  });

  test.each([1, 3, 5])("K=%p needs exactly K offers", (k) => {
    const a = new Admission(k, 16);
    for (let i = 1; i < k; i++) expect(a.offer(7)).toBe(false);
    expect(a.offer(7)).toBe(true);
  });

  test("a key admitted and offered again is forgotten by its new place in the history, not its old one", () => {
    // The admitted key's old ring entry, reaching the head, used to forget the key's new entry
    // while older keys stayed.
    const a = new Admission(3, 4);
    for (let i = 0; i < 3; i++) a.offer(1); // admitted; its ring entry stays, stale
    a.offer(2);
    a.offer(3);
    a.offer(1); // history again: 1 (stale), 2, 3, 1
    a.offer(4); // full: the oldest live entry goes, which is 2
    expect(a.seen(1)).toBe(1);
    expect(a.seen(2)).toBe(0);
    expect(a.seen(3)).toBe(1);
    expect(a.seen(4)).toBe(1);
  });

  test("history is bounded: the oldest key is forgotten when full", () => {
    const a = new Admission(2, 4);
    for (const h of [1, 2, 3, 4]) a.offer(h);
    a.offer(5); // forgets 1
    expect(a.seen(1)).toBe(0);
    expect(a.offer(1)).toBe(false); // seen once again, not twice
    expect(a.seen(3)).toBe(1);
    expect(a.offer(3)).toBe(true);
    expect(a.historySize()).toBeLessThanOrEqual(4);
  });

  test("heavy churn keeps the table consistent with colliding hashes", () => {
    const a = new Admission(2, 64);
    // Hashes that all share their low bits collide in the table.
    for (let round = 0; round < 50; round++) {
      for (let i = 0; i < 100; i++) a.offer((i << 8) | 3);
    }
    expect(a.historySize()).toBeLessThanOrEqual(64);
    // A fresh key is never admitted on first sight.
    expect(a.offer(0x7fff0003)).toBe(false);
    expect(a.offer(0x7fff0003)).toBe(true);
  });

  test("admits decides without counting: an access recorded once is one access however many fills check it", () => {
    const a = new Admission(2, 8);
    a.record(9);
    expect([a.admits(9), a.admits(9), a.seen(9)]).toEqual([false, false, 1]);
    expect(a.admits(10)).toBe(false); // never seen: not counted either
    expect(a.seen(10)).toBe(0);
    a.record(9); // a second read
    expect(a.admits(9)).toBe(true);
    expect(a.seen(9)).toBe(0); // admitted: it left the history
  });

  test("admits admits a ghost, its access recorded or not, as offer does", () => {
    const a = new Admission(2, 8);
    a.remember(5);
    a.remember(6);
    a.record(5);
    expect([a.admits(5), a.seen(5)]).toEqual([true, 0]);
    expect(a.admits(6)).toBe(true);
    expect(a.admits(6)).toBe(false); // (a ghost admits once)
  });

  test("rejects an invalid K", () => {
    expect(() => new Admission(0, 8)).toThrow(RangeError);
  });
});

describe("Admission.record", () => {
  test("records accesses without admitting; the next offer weighs them", () => {
    const a = new Admission(3, 8);
    a.record(5);
    a.record(5);
    expect(a.seen(5)).toBe(2);
    expect(a.offer(5)).toBe(true); // third access
    a.record(6);
    expect(a.offer(6)).toBe(false); // only two accesses
  });
});
