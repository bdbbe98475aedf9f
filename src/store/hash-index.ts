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
 * degrade under churn. The table doubles as the item table grows (the store asks, at MAX_LOAD of
 * the ids it may hold); that happens while the cache fills, not in the steady state. It is
 * built smaller, the same way, when the item table shrinks (table-shrink.ts drives that build a
 * tick at a time: `advance`, then `finishBuild`): rehashed in one go, a 20 M-item store's index
 * cut from 32 M slots to 16 M stopped the loop 579 ms.
 *
 * Doubling is incremental, as Redis rehashes. A full rehash stopped the event loop for the whole
 * table: 737 ms of one set at 11.7 M items. So the store starts building the doubled table
 * (`beginBuild`) a growth of the item table ahead, and each insert then does a bounded step of it:
 * it marks FILL_STEP slots of the new table empty (a fresh buffer is backed lazily: filled at
 * once, the first touch of every page was a pause of its own), then, once all are, copies the
 * entries of the next MIGRATE_STEP slots of the old table in slot order (`cursor`). Lookups read
 * the old table alone until the swap. The rule that keeps the two in step: every entry of the
 * old table at a slot below `cursor` is in the new one, and the new one holds nothing else. So
 * while the new table is filled, an insert goes to both (the new one by id), a removal or
 * `replaceId` to both when the new one holds the entry, and an entry a removal shifts back to a
 * slot below `cursor` (from above it, or round the end) is copied then; a copy finds and skips
 * an entry the new table has already. `grow` (and `finishBuild`) finishes what is left and
 * swaps; `resize`, `reset` and `cancelBuild` drop a build. Nothing in this depends on the new
 * table's size, so a shrink builds its smaller one so too. While one runs, `byteSize` counts both tables.
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
/** FILL_STEP is how many slots of the table being built one insert marks empty. */
export const FILL_STEP = 256;
/** MIGRATE_STEP is how many slots of the old table one insert copies into the table being built. */
export const MIGRATE_STEP = 16;
const NONE = new Int32Array(0);

export class HashIndex {
  /** slots holds (hash, id) pairs: slot s is words 2s and 2s+1. */
  slots: Int32Array;
  /** mask is the slot count minus one (the slot count is a power of two). */
  mask: number;
  count = 0;
  private readonly items: ItemTable;
  private readonly slab: SlabAllocator;
  // The build's fields come after those a lookup reads, which keep their places in the object.
  /** next is the table being built (empty when none is): doubled, or smaller for a shrink; see the header. */
  next = NONE;
  nextMask = 0;
  /** filled: words of `next` marked empty so far; copying starts once all are. */
  filled = 0;
  /** cursor: the old table's slots below it are copied into `next`. */
  cursor = 0;
  /** moved counts the entries ever placed in a new table by a rehash, a build or its finish (work, for tests). */
  moved = 0;

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
    placeIn(this.slots, this.mask, hash, id);
    this.count++;
    if (this.next.length !== 0) {
      if (this.filled === this.next.length) placeIn(this.next, this.nextMask, hash, id);
      this.step();
    }
  }

  /** remove deletes `id`, whose key has hash `hash`, from the index; it must be present. */
  remove(id: ItemId, hash: number): void {
    const copying = this.next.length !== 0 && this.filled === this.next.length;
    // An entry shifted back behind the build's cursor is copied then, or the build would never reach it.
    this.shiftOut(this.slots, this.mask, this.slotOf(id, hash), copying ? this.cursor : 0);
    this.count--;
    if (copying) {
      const at = slotIn(this.next, this.nextMask, hash, id);
      if (at !== NIL) this.shiftOut(this.next, this.nextMask, at, 0);
    }
  }

  /**
   * shiftOut empties slot `hole` of `t`, shifting the later entries of its probe chain back
   * (backward-shift deletion: no tombstones); an entry shifted to a slot below `copyBelow` is
   * copied into the table being built (`copy`).
   */
  private shiftOut(t: Int32Array, mask: number, hole: number, copyBelow: number): void {
    for (let s = (hole + 1) & mask; t[2 * s + 1] !== NIL; s = (s + 1) & mask) {
      if (((s - (t[2 * s]! & mask)) & mask) >= ((s - hole) & mask)) {
        t[2 * hole] = t[2 * s]!;
        t[2 * hole + 1] = t[2 * s + 1]!;
        if (hole < copyBelow) this.copy(t[2 * hole]!, t[2 * hole + 1]!);
        hole = s;
      }
    }
    t[2 * hole] = 0;
    t[2 * hole + 1] = NIL;
  }

  /** beginBuild starts building a table of `n` slots, doubled by default (see the header); nothing if one is under way. */
  beginBuild(n = 2 * (this.mask + 1)): void {
    if (this.next.length !== 0) return;
    this.next = new Int32Array(2 * n); // hash words 0 already; the ids are marked NIL step by step
    this.nextMask = n - 1;
    this.filled = 0;
    this.cursor = 0;
  }

  /** cancelBuild drops the table being built, if any. */
  cancelBuild(): void {
    this.next = NONE;
  }

  /** building tells whether a table is being built. */
  get building(): boolean {
    return this.next.length !== 0;
  }

  /** buildingSmaller tells whether the table being built is smaller (a shrink's). */
  get buildingSmaller(): boolean {
    return this.next.length !== 0 && this.nextMask < this.mask;
  }

  /**
   * advance does build steps (`step`) until about `slots` slots were marked empty or copied, and
   * tells whether the build is complete (`finishBuild` then only swaps).
   */
  advance(slots: number): boolean {
    for (let done = 0; done < slots && !this.built(); ) done += this.step();
    return this.built();
  }

  private built(): boolean {
    return this.filled === this.next.length && this.cursor > this.mask;
  }

  /**
   * step does one insert's share of the build: FILL_STEP slots marked empty, or MIGRATE_STEP old
   * slots copied; it returns that count.
   */
  private step(): number {
    const next = this.next;
    if (this.filled < next.length) {
      const end = Math.min(next.length, this.filled + 2 * FILL_STEP);
      for (let i = this.filled + 1; i < end; i += 2) next[i] = NIL;
      this.filled = end;
      return FILL_STEP;
    }
    const slots = this.slots;
    const end = Math.min(this.mask + 1, this.cursor + MIGRATE_STEP);
    for (let s = this.cursor; s < end; s++) {
      const id = slots[2 * s + 1]!;
      if (id !== NIL) this.copy(slots[2 * s]!, id);
    }
    this.cursor = end;
    return MIGRATE_STEP;
  }

  /** copy puts (hash, id) in the table being built unless it holds it already. */
  private copy(hash: number, id: ItemId): void {
    const next = this.next;
    const mask = this.nextMask;
    let s = hash & mask;
    for (let at = next[2 * s + 1]!; at !== NIL; at = next[2 * s + 1]!) {
      if (at === id) return;
      s = (s + 1) & mask;
    }
    next[2 * s] = hash;
    next[2 * s + 1] = id;
    this.moved++;
  }

  /** needsGrowth tells whether one more insert would pass the maximum load. */
  needsGrowth(): boolean {
    return this.count + 1 > this.slotCount * MAX_LOAD;
  }

  /**
   * grow doubles the table: it finishes the doubling under way (what the inserts since
   * `beginBuild` left of it: `finishBuild`), or with none reinserts every entry (from the hashes
   * kept in the slots).
   */
  grow(): void {
    // (A shrink's smaller table being built is dropped: the items came back.)
    if (this.next.length === 0 || this.nextMask < this.mask) this.resize(2 * (this.mask + 1));
    else this.finishBuild();
  }

  /** finishBuild does what is left of the build under way and makes its table the index's. */
  finishBuild(): void {
    const next = this.next;
    for (let i = this.filled + 1; i < next.length; i += 2) next[i] = NIL;
    this.filled = next.length;
    const slots = this.slots;
    for (let s = this.cursor; s <= this.mask; s++) {
      const id = slots[2 * s + 1]!;
      if (id !== NIL) this.copy(slots[2 * s]!, id);
    }
    this.slots = next;
    this.mask = this.nextMask;
    this.next = NONE;
  }

  /**
   * resize makes the table `n` slots (a power of two that holds every entry below MAX_LOAD) and
   * reinserts every entry from the hashes kept in the slots.
   */
  resize(n: number): void {
    this.next = NONE;
    const old = this.slots;
    this.slots = emptySlots(n);
    this.mask = n - 1;
    for (let i = 1; i < old.length; i += 2) {
      const id = old[i]!;
      if (id !== NIL) placeIn(this.slots, this.mask, old[i - 1]!, id);
    }
    this.moved += this.count;
  }

  /** replaceId makes the slot of item `from`, whose key has hash `hash`, name item `to` (the item moved). */
  replaceId(hash: number, from: ItemId, to: ItemId): void {
    this.slots[2 * this.slotOf(from, hash) + 1] = to;
    if (this.next.length !== 0 && this.filled === this.next.length) {
      const at = slotIn(this.next, this.nextMask, hash, from);
      if (at !== NIL) this.next[2 * at + 1] = to;
    }
  }

  /** slotOf finds the slot of `id`, whose key has hash `hash`; it must be present. */
  private slotOf(id: ItemId, hash: number): number {
    const s = slotIn(this.slots, this.mask, hash, id);
    if (s === NIL) throw new Error(`index corrupt: item ${id} not found`);
    return s;
  }

  /**
   * reset empties the index, made the size the item table's ids call for when that is smaller (a
   * clear empties the item table too): a fresh small table, where marking 32 M slots empty took
   * a clear 46 ms.
   */
  reset(): void {
    this.next = NONE;
    const n = slotsFor(this.items.cap);
    if (n < this.slotCount) {
      this.slots = emptySlots(n);
      this.mask = n - 1;
    } else fillEmpty(this.slots);
    this.count = 0;
  }

  /** byteSize is the memory the index holds: its table, and the one being built while one is. */
  byteSize(): number {
    return this.slots.byteLength + this.next.byteLength;
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

/** placeIn puts (hash, id) in the first free slot of hash's probe chain in `t`. */
function placeIn(t: Int32Array, mask: number, hash: number, id: ItemId): void {
  let s = hash & mask;
  while (t[2 * s + 1] !== NIL) s = (s + 1) & mask;
  t[2 * s] = hash;
  t[2 * s + 1] = id;
}

/** slotIn is the slot of `id`, whose key has hash `hash`, in `t`, or -1. */
function slotIn(t: Int32Array, mask: number, hash: number, id: ItemId): number {
  let s = hash & mask;
  for (let at = t[2 * s + 1]!; at !== id; at = t[2 * s + 1]!) {
    if (at === NIL) return NIL;
    s = (s + 1) & mask;
  }
  return s;
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
