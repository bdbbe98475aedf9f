/**
 * Items at the edges: values that fill a size class's chunk exactly or by one byte over, the
 * largest item, empty values and keys, keys at the key cap; each stored, read back, rewritten in
 * place or moved to its next class, and deleted, with the store's invariants after each step.
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { MAX_KEY_BYTES, MIB, SET_OK, SET_TOO_LARGE, Store } from "../../src/store/store.ts";
import { CHUNK_HEADER } from "../../src/store/slab-allocator.ts";
import { pattern } from "../support/prng.ts";
import { readValue } from "./support.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

describe("Store at the edges of its sizes", () => {
  const s = new Store({ memory: 32 * MIB, clock: () => 1_000 });
  const max = s.classes.maxItem;
  const cases: [name: string, keyLen: number, valLen: number, stored: boolean][] = [
    ["empty key, empty value", 0, 0, true],
    ["empty key, largest value", 0, max - CHUNK_HEADER, true],
    ["empty key, one byte over", 0, max - CHUNK_HEADER + 1, false],
    ["key at the cap, empty value", MAX_KEY_BYTES, 0, true],
    ["key at the cap, largest value", MAX_KEY_BYTES, max - CHUNK_HEADER - MAX_KEY_BYTES, true],
    ["key at the cap, one byte over", MAX_KEY_BYTES, max - CHUNK_HEADER - MAX_KEY_BYTES + 1, false],
    ["key one byte over the cap", MAX_KEY_BYTES + 1, 0, false],
  ];
  // Every class's chunk filled exactly, and by one byte over (the next class's smallest item).
  for (let c = 0; c < s.classes.count; c++) {
    const size = s.classes.sizes[c]!;
    if (size - CHUNK_HEADER - 8 >= 0) cases.push([`class ${c} (${size} B) exactly`, 8, size - CHUNK_HEADER - 8, true]);
    if (c + 1 < s.classes.count) cases.push([`class ${c} (${size} B) one over`, 8, size - CHUNK_HEADER - 8 + 1, true]);
  }
  test.each(cases)("%s", (_name, keyLen, valLen, stored) => {
    const key = pattern(keyLen * 31 + valLen, keyLen);
    const value = pattern(valLen, valLen);
    const r = s.set(key, 0, key.length, value, 0, value.length, 0);
    if (!stored) {
      expect(r).toBe(SET_TOO_LARGE);
      expect(s.fits(keyLen, valLen)).toBe(false);
      expect(readValue(s, key)).toBeUndefined();
      s.checkInvariants();
      return;
    }
    expect(r).toBe(SET_OK);
    expect(s.fits(keyLen, valLen)).toBe(true);
    const id = s.get(key);
    expect(s.classes.sizes[s.items.cls(id)]!).toBeGreaterThanOrEqual(CHUNK_HEADER + keyLen + valLen);
    expect(s.classes.sizes[s.items.cls(id)]!).toBe(s.classes.sizes[s.classes.classFor(CHUNK_HEADER + keyLen + valLen)]!);
    expect(readValue(s, key)).toEqual(value);
    expect(s.keyView(s.get(key))).toEqual(key);
    s.checkInvariants();
    // Rewritten in place (same class), then one byte longer (the next class when it was full).
    const again = pattern(valLen + 1, valLen);
    expect(s.overwrite(key, 0, key.length, s.hashOf(key, 0, key.length), again, 0, again.length, 0)).toBe(true);
    expect(readValue(s, key)).toEqual(again);
    const longer = pattern(valLen + 2, valLen + 1);
    const r2 = s.set(key, 0, key.length, longer, 0, longer.length, 0);
    if (CHUNK_HEADER + keyLen + valLen + 1 > max) {
      expect(r2).toBe(SET_TOO_LARGE);
      expect(readValue(s, key)).toEqual(again); // refused: the key keeps its value
    } else {
      expect(r2).toBe(SET_OK);
      expect(readValue(s, key)).toEqual(longer);
    }
    s.checkInvariants();
    expect(s.delete(key)).toBe(true);
    expect(readValue(s, key)).toBeUndefined();
    s.checkInvariants();
  });
});
