import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { hashBytes } from "../../src/store/hash.ts";
import { MAX_SAME_HASH } from "../../src/store/hash-index.ts";
import { Store } from "../../src/store/store.ts";
import { SET_OK } from "../../src/store/store-api.ts";
import { collidingKeys } from "../support/murmur-collisions.ts";
import { bytes, pattern } from "../support/prng.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

function put(s: Store, key: Uint8Array, value: string): number {
  const v = bytes(value);
  return s.set(key, 0, key.length, v, 0, v.length, 0);
}

describe("keys sharing a hash under every seed (hash flooding)", () => {
  test("the generated keys are distinct and collide under random seeds", () => {
    const keys = collidingKeys(10, 1024);
    expect(new Set(keys.map((k) => Buffer.from(k).toString("hex"))).size).toBe(1024);
    for (let t = 0; t < 5; t++) {
      const seed = (Math.random() * 0x100000000) | 0;
      const h = hashBytes(keys[0]!, 0, keys[0]!.length, seed);
      for (const k of keys) expect(hashBytes(k, 0, k.length, seed)).toBe(h);
    }
  });

  test("a store holds at most MAX_SAME_HASH of them: the newest, counted as collision evictions", () => {
    const s = new Store({ memory: 8 * 1024 * 1024 });
    const keys = collidingKeys(8, 200);
    for (const [i, k] of keys.entries()) expect(put(s, k, `v${i}`)).toBe(SET_OK);
    expect(s.size).toBe(MAX_SAME_HASH);
    expect(s.counters.collisionEvictions).toBe(200 - MAX_SAME_HASH);
    expect(s.counters.evictions).toBe(0);
    for (const [i, k] of keys.entries()) expect(s.has(k)).toBe(i >= 200 - MAX_SAME_HASH);
    s.checkInvariants();
    // Other keys are untouched by the flood.
    put(s, bytes("plain"), "value");
    expect(s.has(bytes("plain"))).toBe(true);
  });

  test("the one to go is the least recently used of them, and overwrites add none", () => {
    const s = new Store({ memory: 8 * 1024 * 1024 });
    const keys = collidingKeys(6, MAX_SAME_HASH + 2);
    for (let i = 0; i < MAX_SAME_HASH; i++) put(s, keys[i]!, `v${i}`);
    for (let i = 0; i < MAX_SAME_HASH; i++) put(s, keys[i]!, `w${i}`); // in place
    expect(s.counters.collisionEvictions).toBe(0);
    expect(s.get(keys[0]!)).toBeGreaterThanOrEqual(0); // read: key 1 is now the least recently used
    put(s, keys[MAX_SAME_HASH]!, "new");
    expect(s.has(keys[0]!)).toBe(true);
    expect(s.has(keys[1]!)).toBe(false);
    expect(s.counters.collisionEvictions).toBe(1);
    s.checkInvariants();
  });

  test("an expired one of them goes first, counted as an expiry: no live key is dropped while a dead one stays", () => {
    let now = 1_000;
    const s = new Store({ memory: 8 * 1024 * 1024, clock: () => now });
    const keys = collidingKeys(6, MAX_SAME_HASH + 1);
    for (let i = 0; i < MAX_SAME_HASH; i++) {
      const v = bytes(`v${i}`);
      s.set(keys[i]!, 0, keys[i]!.length, v, 0, v.length, i === MAX_SAME_HASH - 1 ? 10 : 0); // the newest expires
    }
    now += 100;
    put(s, keys[MAX_SAME_HASH]!, "new");
    for (let i = 0; i < MAX_SAME_HASH - 1; i++) expect(s.has(keys[i]!)).toBe(true);
    expect(s.has(keys[MAX_SAME_HASH]!)).toBe(true);
    expect(s.size).toBe(MAX_SAME_HASH);
    expect(s.counters.collisionEvictions).toBe(0);
    expect(s.counters.expiredLazy).toBe(1);
    s.checkInvariants();
  });
  test("in a full store a new colliding key takes the id and chunk of the one it displaces: never refused, no other key evicted", () => {
    // The collision eviction comes before the allocation on purpose: its id and chunk are what the
    // new key needs when the table and the page are full. Allocating first would evict a
    // stranger's key by LRU for every flooding set, then drop the colliding one all the same.
    const s = new Store({ memory: 2 * 1024 * 1024, clock: () => 1_000 });
    for (let i = 0; i < 100_000; i++) put(s, bytes(`s${i}`), "0123456789");
    expect(s.items.live).toBe(s.items.cap); // the table is full, and so is the page
    expect(s.counters.evictions).toBeGreaterThan(0);
    const keys = collidingKeys(5, 2 * MAX_SAME_HASH + 1);
    for (let i = 0; i < MAX_SAME_HASH; i++) expect(put(s, keys[i]!, "v")).toBe(SET_OK);
    const present: Uint8Array[] = [];
    for (let i = 0; i < 100_000; i++) if (s.has(bytes(`s${i}`))) present.push(bytes(`s${i}`));
    const size = s.size;
    const evictions = s.counters.evictions;
    for (let i = MAX_SAME_HASH; i < 2 * MAX_SAME_HASH; i++) {
      expect(put(s, keys[i]!, `w${i}`)).toBe(SET_OK);
      expect(s.has(keys[i - MAX_SAME_HASH]!)).toBe(false);
      s.checkInvariants();
    }
    expect(s.counters.collisionEvictions).toBe(MAX_SAME_HASH);
    expect(s.counters.evictions).toBe(evictions);
    expect(s.counters.noMemory).toBe(0);
    expect(s.size).toBe(size);
    for (const k of present) expect(s.has(k)).toBe(true);
    // A value of another class: stored too (its class takes the page's oldest items).
    const big = pattern(3, 300);
    const last = keys[2 * MAX_SAME_HASH]!;
    expect(s.set(last, 0, last.length, big, 0, big.length, 0)).toBe(SET_OK);
    const id = s.get(last);
    expect(s.valueView(id)).toEqual(big);
    s.checkInvariants();
  });
});
