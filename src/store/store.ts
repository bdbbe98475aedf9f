/**
 * Store is one cache's memory engine: synchronous, no I/O, no timers, no allocation per operation.
 *
 * It composes the slab allocator (values), the item table (metadata), the hash index (lookup),
 * per-class LRU lists (eviction), the TTL heap (expiry) and LRU-K admission (read fills).
 *
 * Memory bound: `memory` bytes cover BOTH the slab pages and every metadata array (item table, LRU
 * links, index slots, TTL heap reserved at one slot per item id, admission history, page table).
 * Pages are taken from the pool only while `pages * pageSize + metadata <= memory`; metadata grows
 * (item table doubling, index rehash) only within the same bound. So the figure the operator gives
 * is the figure the store holds, not a guess about values alone. A table left mostly free (a burst
 * of small items gone) is shrunk by the active-expiry tick, and pages get its bytes back
 * (table-shrink.ts).
 *
 * Eviction and page moves: a set that finds no free chunk in its class and no page left evicts,
 * by LRU with a second chance for tails read since they were last put at the head (CLOCK: reads
 * only flag their own record; see `touch`), or moves a page to its class from a class whose tail
 * is much older (slab automove). That policy, the item table's growth, and the page limit that
 * the memory bound leaves after metadata are the StoreRoom's (store-room.ts); the store calls it
 * only on a set's slow path. Reads and the access tick stay here; a write is store-write.ts's
 * (`put`, and `rewrite` for an overwrite in place), and an item leaves by `removeItem`
 * (store-removal.ts: index, LRU, heap, chunk and tallies, counted by reason). The store's
 * methods call both directly.
 *
 * TTL: `ttlMs > 0` expires `ttlMs` after the set (alive at ttl-1 ms, gone at ttl); `0` means no
 * expiry; negative or NaN is invalid. Expiry is an absolute ms time from the injected clock held in
 * a float64, so TTLs beyond 2^31 ms and up to 2^63-1 work (no `setTimeout` anywhere). Reads check
 * expiry (lazy); `expire(now, budget)` pops due items from the heap (active) and gives the rest of
 * its budget to the table shrink (store-tick.ts).
 *
 * Item ids and views: `get` returns an item id; it stays valid until the next call that can remove
 * or move items (`set`, `fill`, `delete`, `clear`, `expire`, or a `get` of the same key after it
 * expired). Read the value with `valueLength`/`copyValue` (no allocation) or `valueView` (a view
 * into the slab, same validity: copy it if you keep it). Only `expire` gives items other ids (when
 * it shrinks the table), and between `pinIds` and `unpinIds` only items at ids the walk has passed
 * (store-tick.ts).
 */
import { Admission } from "./admission.ts";
import { copyBytes } from "../bytes/bytes.ts";
import { hashBytes } from "./hash.ts";
import { HashIndex, slotsFor } from "./hash-index.ts";
import {
  CLASS_MASK, F_EXPIRY, F_STRIDE, FLAG_NEGATIVE, FLAG_READ, FLAG_REFERENCED, ItemTable, MAX_ITEM_IDS, NIL, RECORD_BYTES, STRIDE, KEY_SHIFT, W_ATIME, W_CLASS, W_OFF, W_PAGE, W_VALLEN,
  type ItemId,
} from "./item-table.ts";
import { LruList } from "./lru-list.ts";
import { type IdPin, TableShrink } from "./table-shrink.ts";
import { expireDue, pinWalk, unpinWalk } from "./store-tick.ts";
import { StoreRoom } from "./store-room.ts";
import { REMOVE_DELETE, REMOVE_EVICT, REMOVE_EXPIRE_LAZY, REMOVE_EXPIRE_READ, removeItem } from "./store-removal.ts";
import { PUT_FILL, PUT_FILL_COUNTED, PUT_SET, put, rewrite } from "./store-write.ts";
import { SizeClasses } from "./size-classes.ts";
import { CHUNK_HEADER, SlabAllocator } from "./slab-allocator.ts";
import { HEAP_BYTES_PER_ITEM, TtlHeap } from "./ttl-heap.ts";
import { checkStoreInvariants } from "./store-invariants.ts";
import { storeStats } from "./store-stats.ts";
import { monotonicMs } from "./clock.ts";
import {
  MAX_KEY_BYTES, MIB, SET_INVALID_TTL, SET_NO_MEMORY, SET_OK, SET_REJECTED, SET_TOO_LARGE, StoreCounters,
  type SetResult, type StoreOptions, type StoreStats, defaultPageSize,
} from "./store-api.ts";

export {
  MAX_KEY_BYTES, MIB, SET_INVALID_TTL, SET_NO_MEMORY, SET_OK, SET_REJECTED, SET_TOO_LARGE, StoreCounters,
  type SetResult, type StoreOptions, type StoreStats,
};

export class Store {
  readonly capacity: number;
  readonly classes: SizeClasses;
  readonly slab: SlabAllocator;
  readonly items: ItemTable;
  readonly lru: LruList;
  readonly heap: TtlHeap;
  readonly index: HashIndex;
  readonly admission: Admission;
  readonly shrink: TableShrink;
  /** negativeItems counts the live items flagged FLAG_NEGATIVE (`negatives`; store-write.ts and store-removal.ts keep it). */
  negativeItems = 0;
  readonly counters = new StoreCounters();
  readonly clock: () => number;
  readonly hashSeed: number;
  /** classEvictions[c] counts evictions from class c. */
  readonly classEvictions: Float64Array;
  /** tick is the logical access tick (`accessTick`; store-write.ts raises it too). */
  tick = 0;
  /** room makes room for a set: eviction, page moves and releases, table growth (store-room.ts). */
  readonly room: StoreRoom;
  /** chunkBytes and dataBytesUsed: the bytes of the chunks held, and of their keys and values (store-write.ts and store-removal.ts keep them). */
  chunkBytes = 0;
  dataBytesUsed = 0;
  private readonly fixedMetaBytes: number;

  constructor(opts: StoreOptions) {
    const maxItem = opts.maxItemSize ?? MIB;
    const pageSize = Math.max(opts.pageSize ?? defaultPageSize(opts.memory), maxItem + 7) & ~7;
    this.capacity = Math.floor(opts.memory);
    this.clock = opts.clock ?? monotonicMs;
    // Drawn per store: with a known seed, a client could choose keys that share index slots, and
    // every Get of them would walk one long probe chain (hash flooding).
    this.hashSeed = opts.hashSeed ?? crypto.getRandomValues(new Int32Array(1))[0]!;
    this.classes = new SizeClasses(opts.minChunk ?? 48, opts.growthFactor ?? 1.25, maxItem, pageSize);
    const maxPages = Math.floor(this.capacity / pageSize);
    this.slab = new SlabAllocator(
      this.classes, pageSize, maxPages, (owner) => removeItem(this, owner, REMOVE_EVICT),
      (owner) => this.items.expiry(owner) === Infinity || this.items.expiry(owner) > this.clock(),
      (owner, page, off) => this.items.place(owner, page, off),
    );
    const cap = Math.min(MAX_ITEM_IDS, Math.max(16, opts.initialItems ?? 1024));
    // Reserved (backed lazily: growth copies nothing) for memory / (44 + m / 4) ids, m the smallest chunk: items
    // hold chunks too, so tables stay below it (a margin for growths that release pages; past it, one copies).
    this.items = new ItemTable(cap, Math.floor(this.capacity / (RECORD_BYTES + HEAP_BYTES_PER_ITEM + this.classes.sizes[0]! / 4)));
    this.lru = new LruList(this.classes.count, this.items);
    this.heap = new TtlHeap(this.items, Math.min(cap, 256));
    this.index = new HashIndex(this.items, this.slab, slotsFor(cap));
    this.admission = new Admission(opts.admissionK ?? 2, opts.admissionHistory ?? 4096);
    this.shrink = new TableShrink(this.items, this.index, this.lru, this.heap, this.slab, this.hashSeed, cap, () => this.room.freeBytes());
    this.room = new StoreRoom(this, this.shrink, (id) => removeItem(this, id, REMOVE_EVICT));
    this.classEvictions = new Float64Array(this.classes.count);
    // Per page 26 B (slab: used, carved, pool, class, free list head and links); per class 48 B
    // (slab 20, LRU 12, evictions 8, last store 8) besides the class table itself (its lookup was
    // left out: up to 8 KiB a store over its bound).
    this.fixedMetaBytes = maxPages * 26 + this.classes.count * 48 + this.classes.byteSize() + this.admission.byteSize();
    this.room.updatePageLimit();
    if (this.slab.pageLimit < 1) {
      throw new RangeError(
        `memory ${this.capacity} B is too small: one ${pageSize} B page plus ${this.metaBytes()} B of metadata are needed`,
      );
    }
  }

  /** get returns the id of the live item under key[off, off+len), or -1; it counts a hit or miss. */
  get(key: Uint8Array, off = 0, len = key.length - off): ItemId {
    const id = this.index.find(key, off, len, hashBytes(key, off, len, this.hashSeed));
    if (id === NIL) {
      this.counters.misses++;
      return NIL;
    }
    const exp = this.items.f[id * F_STRIDE + F_EXPIRY]!;
    if (exp !== Infinity && exp <= this.clock()) {
      removeItem(this, id, REMOVE_EXPIRE_READ);
      this.counters.misses++;
      return NIL;
    }
    this.touch(id);
    this.counters.hits++;
    return id;
  }

  /**
   * getHit is `get` for a caller with a slower path to fall back on: a live, non-negative item
   * is counted as a hit, bumped and returned exactly as `get` would; anything else (absent,
   * expired, a cached "not found") returns -1 and changes nothing, not even the miss count, so
   * the caller's fallback (`get`, through its group) counts and handles it once. `hash` is the
   * key's hash for this store (`hashOf`, or what warm-up computed).
   */
  getHit(key: Uint8Array, off: number, len: number, hash: number): ItemId {
    // (Kept this short, the checks in `servable`: so the JIT inlines it into a run's loop.)
    const id = this.index.find(key, off, len, hash);
    if (id === NIL || !this.servable(id)) return NIL;
    this.touch(id);
    this.counters.hits++;
    return id;
  }

  /** servable tells whether item `id` is unexpired and not a cached "not found" (`getHit`). */
  private servable(id: ItemId): boolean {
    const it = this.items;
    const exp = it.f[id * F_STRIDE + F_EXPIRY]!;
    return !((exp !== Infinity && exp <= this.clock()) || (it.w[id * STRIDE + W_CLASS]! & FLAG_NEGATIVE) !== 0);
  }

  /**
   * overwrite is `set` for a caller with a slower path to fall back on: when a live item holds
   * the key and the new value fits the same chunk (same size class), the value is replaced in
   * place exactly as `set` would do it, and true is returned. Otherwise (absent, expired, another
   * class, an invalid ttl) nothing changes, no counter moves, and the caller's `set` does it all.
   * `hash` is the key's hash for this store (`hashOf`).
   */
  overwrite(
    key: Uint8Array, keyOff: number, keyLen: number, hash: number,
    value: Uint8Array, valOff: number, valLen: number, ttlMs: number,
  ): boolean {
    if (!(ttlMs >= 0) || keyLen > MAX_KEY_BYTES) return false;
    const id = this.index.find(key, keyOff, keyLen, hash);
    if (id === NIL) return false;
    const now = this.clock();
    if (this.items.f[id * F_STRIDE + F_EXPIRY]! <= now) return false;
    const cls = this.classes.classFor(CHUNK_HEADER + keyLen + valLen);
    if (cls < 0 || (this.items.w[id * STRIDE + W_CLASS]! & CLASS_MASK) !== cls) return false;
    rewrite(this, id, cls, keyLen, value, valOff, valLen, ttlMs === 0 ? Infinity : now + ttlMs);
    return true;
  }

  /** fits tells whether an item of these key and value lengths fits a chunk (else `set` is SET_TOO_LARGE). */
  fits(keyLen: number, valLen: number): boolean {
    return keyLen <= MAX_KEY_BYTES && this.classes.classFor(CHUNK_HEADER + keyLen + valLen) >= 0;
  }

  /** hashOf is the key's hash in this store (its index and `getHit` use it). */
  hashOf(key: Uint8Array, off: number, len: number): number {
    return hashBytes(key, off, len, this.hashSeed);
  }

  /** has tells whether a live item exists under the key, without counting or bumping it. */
  has(key: Uint8Array, off = 0, len = key.length - off): boolean {
    const id = this.index.find(key, off, len, hashBytes(key, off, len, this.hashSeed));
    return id !== NIL && !(this.items.expiry(id) <= this.clock());
  }

  valueLength(id: ItemId): number {
    return this.items.w[id * STRIDE + W_VALLEN]!;
  }

  /** ttlRemaining is item `id`'s time left in ms by the store's clock, or -1 when it has no expiry. */
  ttlRemaining(id: ItemId): number {
    const exp = this.expiresAt(id);
    return exp === Infinity ? -1 : Math.max(0, exp - this.clock());
  }

  /** valuePage is the slab page holding item `id`'s value, at `valueStart(id)` (valid as `get`'s id is). */
  valuePage(id: ItemId): Uint8Array {
    return this.slab.pages[this.items.w[id * STRIDE + W_PAGE]!]!;
  }

  /** valueStart is where item `id`'s value starts in `valuePage(id)`. */
  valueStart(id: ItemId): number {
    const w = this.items.w;
    const r = id * STRIDE;
    return w[r + W_OFF]! + CHUNK_HEADER + (w[r + W_CLASS]! >>> KEY_SHIFT);
  }

  /** copyValue copies item `id`'s value into dst at dstOff and returns its length. */
  copyValue(id: ItemId, dst: Uint8Array, dstOff: number): number {
    const w = this.items.w;
    const r = id * STRIDE;
    const len = w[r + W_VALLEN]!;
    copyBytes(dst, dstOff, this.slab.pages[w[r + W_PAGE]!]!, w[r + W_OFF]! + CHUNK_HEADER + (w[r + W_CLASS]! >>> KEY_SHIFT), len);
    return len;
  }

  /** valueView returns a view of item `id`'s value inside the slab (valid as `get`'s id is). */
  valueView(id: ItemId): Uint8Array {
    const it = this.items;
    const start = it.off(id) + CHUNK_HEADER + it.keyLen(id);
    return this.slab.pages[it.page(id)]!.subarray(start, start + it.valLen(id));
  }

  /** keyView returns a view of item `id`'s key inside the slab (valid as `get`'s id is). */
  keyView(id: ItemId): Uint8Array {
    const it = this.items;
    const start = it.off(id) + CHUNK_HEADER;
    return this.slab.pages[it.page(id)]!.subarray(start, start + it.keyLen(id));
  }

  /** expiresAt is item `id`'s absolute expiry in ms, or Infinity. */
  expiresAt(id: ItemId): number {
    return this.items.f[id * F_STRIDE + F_EXPIRY]!;
  }

  /** set stores a value; an explicit set is always admitted. */
  set(
    key: Uint8Array, keyOff: number, keyLen: number,
    value: Uint8Array, valOff: number, valLen: number, ttlMs = 0,
  ): SetResult {
    return put(this, key, keyOff, keyLen, value, valOff, valLen, ttlMs, PUT_SET, 0);
  }

  /**
   * setNegative caches "not found" for the key for `ttlMs` (> 0): `get` then finds an item with
   * `isNegative(id)` true and no value. It replaces any value under the key and skips admission
   * (a negative entry is a few bytes, and it exists to spare the loader).
   */
  setNegative(key: Uint8Array, keyOff: number, keyLen: number, ttlMs: number): SetResult {
    if (!(ttlMs > 0)) return SET_INVALID_TTL;
    return put(this, key, keyOff, keyLen, key, 0, 0, ttlMs, PUT_SET, FLAG_NEGATIVE);
  }

  /** isNegative tells whether item `id` is a cached "not found". */
  isNegative(id: ItemId): boolean {
    return this.items.isNegative(id);
  }

  /**
   * fill stores a read-filled value (loader result, mirror): new keys pass LRU-K admission first,
   * the fill counting as an access of the key; with `counts` false the access was counted already
   * (`noteAccess`), and the fill only checks the count (a Get's load started ahead, or done again:
   * group.ts).
   */
  fill(
    key: Uint8Array, keyOff: number, keyLen: number,
    value: Uint8Array, valOff: number, valLen: number, ttlMs = 0, counts = true,
  ): SetResult {
    return put(this, key, keyOff, keyLen, value, valOff, valLen, ttlMs, counts ? PUT_FILL : PUT_FILL_COUNTED, 0);
  }

  /** noteAccess counts an access of the key in the LRU-K history, for a later `fill` to weigh. */
  noteAccess(key: Uint8Array, off: number, len: number): void {
    this.admission.record(hashBytes(key, off, len, this.hashSeed));
  }

  /**
   * forgetAccess takes back an access `noteAccess` counted, if the LRU-K history still holds the
   * key (Admission.unrecord): a load started ahead that its Get did not use.
   */
  forgetAccess(key: Uint8Array, off: number, len: number): void {
    this.admission.unrecord(hashBytes(key, off, len, this.hashSeed));
  }

  /** delete removes the key; it returns whether a live item was removed. */
  delete(key: Uint8Array, off = 0, len = key.length - off): boolean {
    const id = this.index.find(key, off, len, hashBytes(key, off, len, this.hashSeed));
    if (id === NIL) return false;
    const live = !(this.items.expiry(id) <= this.clock());
    removeItem(this, id, live ? REMOVE_DELETE : REMOVE_EXPIRE_LAZY);
    return live;
  }

  /** clear removes every item; pages go back to the pool, counters keep running. */
  clear(): void {
    this.slab.reset();
    this.items.reset(this.shrink.floor); // (first: the heap and index fit the table it leaves)
    this.lru.reset();
    this.heap.reset();
    this.index.reset();
    this.admission.reset();
    this.chunkBytes = 0;
    this.dataBytesUsed = 0;
    this.negativeItems = 0;
    this.room.moveCredit = 0;
    this.room.updatePageLimit(); // (a doubled index being built was dropped)
    this.counters.clears++;
  }

  /**
   * expire removes up to `budget` items whose expiry is <= now, and returns how many it removed;
   * the rest of the budget goes to shrinking the item table (expireDue, store-tick.ts).
   */
  expire(now: number, budget: number): number {
    return expireDue(this, now, budget);
  }

  /** pinIds keeps every item at its id until the matching `unpinIds`, for a walk over the ids (pinWalk, store-tick.ts). */
  pinIds(): IdPin {
    return pinWalk(this);
  }

  /** unpinIds ends the walk `pinIds` began. */
  unpinIds(pin: IdPin): void {
    unpinWalk(this, pin);
  }

  /** size is the number of items held (expired ones not yet removed included). */
  get size(): number {
    return this.items.live;
  }

  /** negatives is how many of them are cached "not found" entries (setNegative). */
  get negatives(): number {
    return this.negativeItems;
  }

  /** metaBytes is the memory charged to metadata. */
  metaBytes(): number {
    // The TTL heap is charged at one slot per item id even while its array is smaller, so a
    // later burst of TTL sets can never push the total past the budget.
    return this.fixedMetaBytes + this.items.cap * (RECORD_BYTES + HEAP_BYTES_PER_ITEM) + this.index.byteSize();
  }

  /** stats reads the store's figures (store-stats.ts: it allocates, for stats calls only). */
  stats(): StoreStats {
    return storeStats(this, this.chunkBytes, this.dataBytesUsed);
  }

  /** accessTick is the logical access tick: one more at each read, write and store of an item. */
  get accessTick(): number {
    return this.tick;
  }

  /** checkInvariants throws if any internal structure disagrees with another (test-only, O(n)). */
  checkInvariants(): void {
    checkStoreInvariants(this, this.chunkBytes, this.dataBytesUsed);
  }

  /**
   * touch records a read of `id` in its own record only: a logical access tick (for comparing
   * LRU tails across classes) and the REFERENCED flag. It does not move the item in its LRU list:
   * a move writes the records of both neighbours and of the old head, three cache misses per hit
   * on a large table (measured: 15% of a loaded server's CPU). Instead eviction gives referenced
   * tails a second chance (CLOCK, as memcached's segmented LRU does with its ACTIVE bit): see
   * `settleTail` (store-room.ts).
   */
  private touch(id: ItemId): void {
    const w = this.items.w;
    const r = id * STRIDE;
    w[r + W_CLASS] = w[r + W_CLASS]! | FLAG_REFERENCED | FLAG_READ;
    w[r + W_ATIME] = ++this.tick;
  }
}
