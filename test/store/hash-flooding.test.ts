import { describe, expect, test } from "bun:test";
import { hashBytes } from "../../src/store/hash.ts";
import { MAX_SAME_HASH } from "../../src/store/hash-index.ts";
import { Store } from "../../src/store/store.ts";
import { SET_OK } from "../../src/store/store-api.ts";
import { collidingKeys } from "../support/murmur-collisions.ts";
import { bytes } from "../support/prng.ts";

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
});
