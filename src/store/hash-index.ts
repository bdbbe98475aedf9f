/**
 * HashIndex maps key bytes to item ids: open addressing over one `Int32Array`.
 *
 * Each slot holds an item id or -1. A key's home slot is its 32-bit hash masked to the table size
 * (a power of two); collisions probe linearly. A probe compares the stored hash first (in the
 * item table) and only then the key bytes stored in the item's slab chunk, so a lookup builds no
 * string and allocates nothing. Deletion shifts later entries of the probe chain back (no
 * tombstones), so probe lengths do not degrade under churn. The table doubles (a full rehash)
 * when it passes `MAX_LOAD`; that happens while the cache fills, not in the steady state.
 */
import { NIL, STRIDE, W_HASH, W_KEYLEN, W_OFF, W_PAGE, type ItemId, type ItemTable } from "./item-table.ts";
import { bytesEqual } from "../bytes/bytes.ts";
import { CHUNK_HEADER, type SlabAllocator } from "./slab-allocator.ts";

/** MAX_LOAD is the load factor past which the table doubles. */
export const MAX_LOAD = 0.7;

export class HashIndex {
  slots: Int32Array;
  mask: number;
  count = 0;
  private readonly items: ItemTable;
  private readonly slab: SlabAllocator;

  constructor(items: ItemTable, slab: SlabAllocator, initialSlots: number) {
    this.items = items;
    this.slab = slab;
    let n = 16;
    while (n < initialSlots) n *= 2;
    this.slots = new Int32Array(n).fill(NIL);
    this.mask = n - 1;
  }

  /** find returns the id of the item whose key equals key[off, off+len), or -1. */
  find(key: Uint8Array, off: number, len: number, hash: number): ItemId {
    const slots = this.slots;
    const w = this.items.w;
    let s = hash & this.mask;
    for (;;) {
      const id = slots[s]!;
      if (id === NIL) return NIL;
      const r = id * STRIDE;
      if (w[r + W_HASH] === hash && w[r + W_KEYLEN] === len && this.keyEquals(id, key, off, len)) return id;
      s = (s + 1) & this.mask;
    }
  }

  /** insert adds `id` (whose hash is in the item table); the key must not be present. */
  insert(id: ItemId): void {
    const slots = this.slots;
    let s = this.items.hash(id) & this.mask;
    while (slots[s] !== NIL) s = (s + 1) & this.mask;
    slots[s] = id;
    this.count++;
  }

  /** remove deletes `id` from the index; it must be present. */
  remove(id: ItemId): void {
    const slots = this.slots;
    const w = this.items.w;
    const mask = this.mask;
    let s = w[id * STRIDE + W_HASH]! & mask;
    while (slots[s] !== id) {
      if (slots[s] === NIL) throw new Error(`index corrupt: item ${id} not found`);
      s = (s + 1) & mask;
    }
    let hole = s;
    s = (s + 1) & mask;
    for (;;) {
      const other = slots[s]!;
      if (other === NIL) break;
      const home = w[other * STRIDE + W_HASH]! & mask;
      if (((s - home) & mask) >= ((s - hole) & mask)) {
        slots[hole] = other;
        hole = s;
      }
      s = (s + 1) & mask;
    }
    slots[hole] = NIL;
    this.count--;
  }

  /** needsGrowth tells whether one more insert would pass the maximum load. */
  needsGrowth(): boolean {
    return this.count + 1 > this.slots.length * MAX_LOAD;
  }

  /** growthBytes is how many bytes doubling the table would add. */
  growthBytes(): number {
    return this.slots.byteLength;
  }

  /** grow doubles the table and reinserts every entry. */
  grow(): void {
    const old = this.slots;
    this.slots = new Int32Array(old.length * 2).fill(NIL);
    this.mask = this.slots.length - 1;
    this.count = 0;
    for (let i = 0; i < old.length; i++) {
      const id = old[i]!;
      if (id !== NIL) this.insert(id);
    }
  }

  reset(): void {
    this.slots.fill(NIL);
    this.count = 0;
  }

  byteSize(): number {
    return this.slots.byteLength;
  }

  /** keyEquals compares key[off, off+len) with the key bytes stored in item `id`'s chunk. */
  keyEquals(id: ItemId, key: Uint8Array, off: number, len: number): boolean {
    const w = this.items.w;
    const r = id * STRIDE;
    return bytesEqual(this.slab.pages[w[r + W_PAGE]!]!, w[r + W_OFF]! + CHUNK_HEADER, key, off, len);
  }
}
