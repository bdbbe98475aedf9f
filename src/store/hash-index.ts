/**
 * HashIndex maps key bytes to item ids: open addressing over one `Int32Array`.
 *
 * Layout: slot `s` is the pair of words `[2s, 2s+1]` = (the key's 32-bit hash, the item id), or
 * (0, -1) when empty. A key's home slot is its hash masked to the table size (a power of two);
 * collisions probe linearly. A probe compares the hash kept IN the slot first, so passing over
 * another key's slot reads nothing but the index line it is on; only a slot whose hash matches
 * leads to the item's record and the key bytes in its slab chunk (compared byte by byte: no
 * string, no allocation). Keeping the hash beside the id costs 4 bytes per slot and saves a
 * dependent cache miss per collision: at this table's loads (up to MAX_LOAD) about a third of
 * the keys sit past their home slot, and each of their lookups used to read a stranger's record
 * first. It also lets Store warm-up (warm.ts) find the right item from the index alone.
 *
 * Keys sharing a full 32-bit hash are bounded to MAX_SAME_HASH (the store makes room among them:
 * `sameHash`). A lookup compares key bytes only at slots carrying its hash, so this bounds what
 * one lookup compares, whatever the keys. MurmurHash3 has seed-independent multicollisions (two
 * 4-byte blocks whose differences cancel), so a client can make any number of keys share a hash
 * under every seed: unbounded, 16,384 of them took 3.7 s to set, each later lookup of one walking
 * all of them (hash flooding, as Redis and Python met it; they moved to SipHash, which costs a
 * hit more than this bound does).
 *
 * Deletion shifts later entries of the probe chain back (no tombstones), so probe lengths do not
 * degrade under churn. The table doubles (a full rehash from the kept hashes, no record reads)
 * when it passes `MAX_LOAD`; that happens while the cache fills, not in the steady state. It is
 * rehashed smaller the same way when the item table shrinks (table-shrink.ts).
 */
import { F_EXPIRY, F_STRIDE, KEY_SHIFT, NIL, STRIDE, W_ATIME, W_CLASS, W_OFF, W_PAGE, type ItemId, type ItemTable } from "./item-table.ts";
import { bytesEqual } from "../bytes/bytes.ts";
import { CHUNK_HEADER, type SlabAllocator } from "./slab-allocator.ts";

/** MAX_LOAD is the load factor past which the table doubles. */
export const MAX_LOAD = 0.7;
/** SLOT_BYTES is the size of one slot: hash and id. */
export const SLOT_BYTES = 8;
/**
 * MAX_SAME_HASH is the most keys the index holds under one 32-bit hash. Among n random keys,
 * about n^9 / (9! * 2^256) sets of nine share one: 2 * 10^-11 for a hundred million keys, 0.02
 * for a billion; and a ninth costs one early eviction. Only chosen keys reach it in practice.
 */
export const MAX_SAME_HASH = 8;

export class HashIndex {
  /** slots holds (hash, id) pairs: slot s is words 2s and 2s+1. */
  slots: Int32Array;
  /** mask is the slot count minus one (the slot count is a power of two). */
  mask: number;
  count = 0;
  private readonly items: ItemTable;
  private readonly slab: SlabAllocator;

  constructor(items: ItemTable, slab: SlabAllocator, initialSlots: number) {
    this.items = items;
    this.slab = slab;
    let n = 16;
    while (n < initialSlots) n *= 2;
    this.slots = emptySlots(n);
    this.mask = n - 1;
  }

  /** slotCount is the number of slots. */
  get slotCount(): number {
    return this.mask + 1;
  }

  /** find returns the id of the item whose key equals key[off, off+len), or -1. */
  find(key: Uint8Array, off: number, len: number, hash: number): ItemId {
    const slots = this.slots;
    const w = this.items.w;
    const mask = this.mask;
    let s = hash & mask;
    for (;;) {
      const id = slots[2 * s + 1]!;
      if (id === NIL) return NIL;
      if (slots[2 * s] === hash && w[id * STRIDE + W_CLASS]! >>> KEY_SHIFT === len && this.keyEquals(id, key, off, len)) return id;
      s = (s + 1) & mask;
    }
  }

  /**
   * sameHash returns, when MAX_SAME_HASH items under `hash` are held already, the one an insert
   * under `hash` must remove first: one expired by `now` if any, else the least recently used
   * (the oldest access tick against `tick`, the store's current one). Else NIL.
   */
  sameHash(hash: number, tick: number, now: number): ItemId {
    const slots = this.slots;
    const w = this.items.w;
    const mask = this.mask;
    let s = hash & mask;
    const f = this.items.f;
    let n = 0;
    let oldest = NIL;
    let oldestAge = -1;
    let expired = NIL;
    for (;;) {
      const id = slots[2 * s + 1]!;
      if (id === NIL) return n < MAX_SAME_HASH ? NIL : expired !== NIL ? expired : oldest;
      if (slots[2 * s] === hash) {
        n++;
        if (f[id * F_STRIDE + F_EXPIRY]! <= now) expired = id;
        const a = (tick - w[id * STRIDE + W_ATIME]!) >>> 0;
        if (a > oldestAge) {
          oldestAge = a;
          oldest = id;
        }
      }
      s = (s + 1) & mask;
    }
  }

  /** insert adds `id`, whose key has hash `hash`; the key must not be present. */
  insert(id: ItemId, hash: number): void {
    this.place(hash, id);
    this.count++;
  }

  /** place puts (hash, id) in the first free slot of hash's probe chain. */
  private place(hash: number, id: ItemId): void {
    const slots = this.slots;
    const mask = this.mask;
    let s = hash & mask;
    while (slots[2 * s + 1] !== NIL) s = (s + 1) & mask;
    slots[2 * s] = hash;
    slots[2 * s + 1] = id;
  }

  /** remove deletes `id`, whose key has hash `hash`, from the index; it must be present. */
  remove(id: ItemId, hash: number): void {
    const slots = this.slots;
    const mask = this.mask;
    let s = this.slotOf(id, hash);
    let hole = s;
    s = (s + 1) & mask;
    for (;;) {
      const other = slots[2 * s + 1]!;
      if (other === NIL) break;
      const home = slots[2 * s]! & mask;
      if (((s - home) & mask) >= ((s - hole) & mask)) {
        slots[2 * hole] = slots[2 * s]!;
        slots[2 * hole + 1] = other;
        hole = s;
      }
      s = (s + 1) & mask;
    }
    slots[2 * hole] = 0;
    slots[2 * hole + 1] = NIL;
    this.count--;
  }

  /** needsGrowth tells whether one more insert would pass the maximum load. */
  needsGrowth(): boolean {
    return this.count + 1 > this.slotCount * MAX_LOAD;
  }

  /** growthBytes is how many bytes doubling the table would add. */
  growthBytes(): number {
    return this.slots.byteLength;
  }

  /** grow doubles the table and reinserts every entry (from the hashes kept in the slots). */
  grow(): void {
    this.resize(2 * (this.mask + 1));
  }

  /**
   * resize makes the table `n` slots (a power of two that holds every entry below MAX_LOAD) and
   * reinserts every entry from the hashes kept in the slots.
   */
  resize(n: number): void {
    const old = this.slots;
    this.slots = emptySlots(n);
    this.mask = n - 1;
    for (let i = 1; i < old.length; i += 2) {
      const id = old[i]!;
      if (id !== NIL) this.place(old[i - 1]!, id);
    }
  }

  /** replaceId makes the slot of item `from`, whose key has hash `hash`, name item `to` (the item moved). */
  replaceId(hash: number, from: ItemId, to: ItemId): void {
    this.slots[2 * this.slotOf(from, hash) + 1] = to;
  }

  /** slotOf finds the slot of `id`, whose key has hash `hash`; it must be present. */
  private slotOf(id: ItemId, hash: number): number {
    const slots = this.slots;
    const mask = this.mask;
    let s = hash & mask;
    while (slots[2 * s + 1] !== id) {
      if (slots[2 * s + 1] === NIL) throw new Error(`index corrupt: item ${id} not found`);
      s = (s + 1) & mask;
    }
    return s;
  }

  reset(): void {
    fillEmpty(this.slots);
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

/** slotsFor is the index size (a power of two) that holds `items` below the maximum load. */
export function slotsFor(items: number): number {
  let n = 16;
  while (n * MAX_LOAD < items) n *= 2;
  return n;
}

/** emptySlots makes a table of `n` empty slots. */
function emptySlots(n: number): Int32Array {
  return fillEmpty(new Int32Array(2 * n));
}

/** fillEmpty marks every slot empty: hash 0, id NIL. */
function fillEmpty(slots: Int32Array): Int32Array {
  for (let i = 1; i < slots.length; i += 2) {
    slots[i - 1] = 0;
    slots[i] = NIL;
  }
  return slots;
}
