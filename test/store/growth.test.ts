/**
 * A store that fills grows its item table and its index without stopping for a copy of either:
 * the work one set does for growth stays bounded whatever the store holds. Measured as work
 * (buffers replaced, entries moved), never as time.
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { MIB, SET_OK, Store } from "../../src/store/store.ts";
import { ItemTable } from "../../src/store/item-table.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

/** keyOf writes key number i into `key` (16 bytes) without allocating. */
function keyOf(key: Uint8Array, i: number): void {
  for (let j = 0; j < 16; j++) key[j] = 0x61 + ((i >>> (j & 15)) & 15) + (j & 1);
  key[0] = i & 0xff;
  key[1] = (i >>> 8) & 0xff;
  key[2] = (i >>> 16) & 0xff;
  key[3] = (i >>> 24) & 0xff;
}

describe("item table growth", () => {
  test("a fill of 1.5M items grows the table in its one reserved buffer: no record is copied", () => {
    const s = new Store({ memory: 256 * MIB, hashSeed: 1 });
    const key = new Uint8Array(16);
    const value = new Uint8Array(20);
    const first = s.items.w.buffer;
    let growths = 0;
    let cap = s.items.cap;
    for (let i = 0; i < 1_500_000; i++) {
      keyOf(key, i);
      expect(s.set(key, 0, 16, value, 0, 20)).toBe(SET_OK);
      if (s.items.cap !== cap) {
        growths++;
        cap = s.items.cap;
        // Before: every growth copied the records into a new buffer (1.2 s of one set at 11.7 M items).
        if (s.items.w.buffer !== first) throw new Error(`growth ${growths} to ${cap} ids replaced the records' buffer`);
      }
    }
    expect(growths).toBeGreaterThan(5);
    expect(s.size).toBe(1_500_000);
    s.checkInvariants();
  });

  test("ids are handed out lowest first, fresh ones once the released ones are taken; a table past its reservation copies", () => {
    const t = new ItemTable(16, 64);
    const ids: number[] = [];
    for (let i = 0; i < 16; i++) ids.push(t.alloc());
    expect(ids).toEqual([...Array(16).keys()]);
    expect(t.alloc()).toBe(-1);
    t.release(3);
    t.grow(32);
    expect(t.top).toBe(16);
    expect(t.alloc()).toBe(3); // a released id first
    expect(t.alloc()).toBe(16); // then the fresh ones
    expect(t.isLive(17)).toBe(false);
    const reserved = t.w.buffer;
    t.grow(64);
    expect(t.w.buffer).toBe(reserved);
    t.grow(100); // past the reservation: the records move to a larger buffer
    expect(t.w.buffer).not.toBe(reserved);
    expect(t.reserved).toBeGreaterThanOrEqual(100);
    expect(t.top).toBe(17);
    t.reset();
    expect(t.top).toBe(0);
    expect(t.isLive(0)).toBe(false);
    expect(t.alloc()).toBe(0);
  });
});
