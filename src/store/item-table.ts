/**
 * ItemTable is the item metadata: one record of typed-array words per item id.
 *
 * Layout: one `ArrayBuffer` of `cap * RECORD_BYTES`, viewed as `Int32Array` (`w`) and
 * `Float64Array` (`f`). Item `id`'s record is words `[id * STRIDE, id * STRIDE + STRIDE)`:
 *
 *   word 0 page      slab page of its chunk; -1 while the id is free
 *   word 1 off       chunk offset in the page
 *   word 2 valLen    value length
 *   word 3 prev      LRU link (-1 = nil)
 *   word 4 next      LRU link; for a free id, the next free id
 *   word 5 heapPos   slot in the TTL heap, or -1
 *   word 6 atime     logical tick of the last LRU bump (compared as uint32)
 *   word 7 cls       size class of its chunk (bits 0-7), flags (bit 8: NEGATIVE, a cached "not
 *                    found"; bit 9: REFERENCED, read since it was last put at the head of its LRU
 *                    list; bit 10: READ, read since its value was stored) and the key length
 *                    (bits 16-31: keys are at most 65,535 bytes)
 *   words 8-9        expiry: absolute ms as a float64 (`f[id * F_STRIDE + F_EXPIRY]`), Infinity = none
 *
 * The key's hash is not here: the index keeps it in the item's slot (hash-index.ts), and removal
 * hashes the key bytes in the chunk again (removal is off the hot path).
 *
 * Why a record and not one array per field (struct of arrays): a Get hit reads key length, chunk
 * location, expiry and class of one item. In one 40-byte record that is one or two cache lines;
 * spread over ten arrays it was ten cache misses once the table outgrows the CPU cache
 * (measured: 1.4 µs per hit at 100k keys with separate arrays). The LRU links and the heap
 * position live here too, so a move in the LRU touches only the records involved.
 *
 * Growth past RESERVE_FROM ids copies nothing: the growth that reaches it reserves the buffer
 * once at the most ids the store's memory bound could ever pay for (`reserveFor`): `new
 * ArrayBuffer(n)` is backed lazily, so a page of it costs memory only once a record on it is
 * written. Below it the buffer is the table's size, and a growth copies it (20 MiB at most). `cap` is the logical size (what the memory bound
 * is charged for); a growth only raises it. Ids from `top` up have never been handed out since
 * the last growth or reset: they are free without being written, and `alloc` takes the next one
 * once the chain of released ids is empty. (Growth used to copy the whole buffer into a larger
 * one and write every new record: 1.2 s of one set at 11.7 M items, 3.5 s at 23.5 M.) Free ids
 * below `top` are chained through word 4 (no separate stack). Past the reservation (a table made
 * without one), a growth copies into a larger buffer as before. The table shrinks in three steps
 * (the store drives them: table-shrink.ts):
 * `beginShrink(n)` makes ids from n up no longer handed out, nor chained when released, and
 * leaves the free ids below n to be chained a budget at a time (`scanFree`; in one go it stopped
 * a tick 50 ms for 8 M ids): new items get those; the store then moves the items left above n
 * to free ids below it; `truncate()` copies the first n records into a fresh reserved buffer
 * (so the pages the table's upper part had touched go back to the OS with the old one).
 * `cancelShrink()` leaves the free ids from n up (and any the scan has not reached) to the scan
 * instead (in one go: 160 ms for 15.5 M ids). Ids move only then. The ids left to the scan are
 * one range, [scanAt, scanTo): those below it are chained, and a cancel only moves its end.
 */
export type ItemId = number;
export const NIL = -1;

export const STRIDE = 10;
export const RECORD_BYTES = STRIDE * 4;
export const F_STRIDE = STRIDE / 2;
export const W_PAGE = 0;
export const W_OFF = 1;
export const W_VALLEN = 2;
export const W_PREV = 3;
export const W_NEXT = 4;
export const W_HEAP = 5;
export const W_ATIME = 6;
export const W_CLASS = 7;
export const F_EXPIRY = 4;
/** CLASS_MASK takes the size class out of word 7; bits 8 to 10 are flags. */
export const CLASS_MASK = 0xff;
export const FLAG_NEGATIVE = 0x100;
export const FLAG_REFERENCED = 0x200;
export const FLAG_READ = 0x400;
/** KEY_SHIFT: the key length is word 7 shifted right by this (`>>> KEY_SHIFT`). */
export const KEY_SHIFT = 16;

/**
 * MAX_ITEM_IDS is the most records one buffer holds: JavaScriptCore makes no ArrayBuffer over
 * 4 GiB (`new ArrayBuffer(2 ** 32 + 8)` throws RangeError), so 107,374,182 ids. A store of 100 B
 * values reaches it at about 21 GB; the table then stops growing (StoreRoom.growItems) and sets
 * evict, where its growth threw from every set.
 */
export const MAX_ITEM_IDS = Math.floor(2 ** 32 / RECORD_BYTES);
/** RESERVE_FROM: a growth to this many ids or more takes the whole reservation (ItemTable.reserveFor). */
export const RESERVE_FROM = 1 << 19;
/**
 * ALLOC_SCAN, ALLOC_SCANS: an `alloc` that finds no id chained while a shrink's scan is under way
 * (`scanFree`) scans ALLOC_SCAN ids at a time, ALLOC_SCANS times at most (4,096 ids: tens of µs),
 * before it takes a fresh one. With no fresh one it scans on until it finds a free id or the scan
 * ends: giving up there, a set behind a run of 4,096 live ids cancelled the shrink, then grew the
 * table or evicted while free ids waited (100k-id store, 20k live: table 137,625 -> 183,500 ids).
 */
const ALLOC_SCAN = 256;
const ALLOC_SCANS = 16;
/** TOUCH_STRIDE: one write per memory page the OS backs a buffer by (4 KiB) touches it all. */
const TOUCH_STRIDE = 4096;

export class ItemTable {
  cap = 0;
  /** maxIds bounds `cap` (MAX_ITEM_IDS; a test lowers it to reach the bound). */
  maxIds = MAX_ITEM_IDS;
  live = 0;
  /** w views every record as int32 words. */
  w = new Int32Array(0);
  /** f views every record as float64s (the expiry). */
  f = new Float64Array(0);
  private freeHead = NIL;
  /**
   * limit bounds the ids handed out and chained when free: `cap`, or while a shrink is under way
   * the size the table is shrinking to.
   */
  private limit = 0;
  // (Declared after the fields a Get reads, which keep their places in the object.)
  /** top: ids from it up (below `cap`) have never been handed out since the last growth or reset. */
  top = 0;
  /** reserved is how many records the buffer holds: growth up to it copies nothing. */
  reserved = 0;
  /** mostIds: the reservation taken once the table passes RESERVE_FROM ids (the constructor's `reserve`). */
  private readonly mostIds: number;
  /** reserveFrom: RESERVE_FROM (a test's smaller one). */
  private readonly reserveFrom: number;
  /**
   * scanAt, scanTo: the free ids in [scanAt, scanTo) are not chained yet, `scanFree` has not
   * reached them (both 0 when no scan is under way); a release there leaves the id to the scan.
   */
  scanAt = 0;
  scanTo = 0;
  /** spare is the buffer `truncate` will copy into, touched ahead by `prepareTruncate` (null: none yet). */
  private spare: ArrayBuffer | null = null;
  /** spareTouched: bytes of `spare` touched so far. */
  private spareTouched = 0;

  /**
   * The buffer holds `initialCap` ids; the growth to `reserveFrom` ids or more reserves it for
   * `reserve` (reserveFor).
   */
  constructor(initialCap: number, reserve = initialCap, reserveFrom = RESERVE_FROM) {
    this.mostIds = Math.max(initialCap, Math.min(reserve, MAX_ITEM_IDS));
    this.reserveFrom = reserveFrom;
    this.reserve(initialCap, 0);
    this.grow(initialCap);
  }

  /** alloc returns a free item id, or -1 when the table is full (the caller may grow it). */
  alloc(): ItemId {
    for (let n = 0; this.freeHead === NIL && this.scanAt < this.scanTo && (n < ALLOC_SCANS || this.top >= this.limit); n++) {
      this.scanFree(ALLOC_SCAN);
    }
    let id = this.freeHead;
    if (id !== NIL) {
      this.freeHead = this.w[id * STRIDE + W_NEXT]!;
    } else {
      id = this.top;
      if (id >= this.limit) return NIL;
      this.top = id + 1;
      const r = id * STRIDE;
      this.w[r + W_PREV] = NIL;
      this.w[r + W_HEAP] = NIL;
    }
    this.live++;
    return id;
  }

  /** reserve replaces the buffer by one of `ids` records holding the first `keep` of the old one (into `spare` if one is ready). */
  private reserve(ids: number, keep: number): void {
    const buf = this.spare !== null && this.spare.byteLength === ids * RECORD_BYTES ? this.spare : new ArrayBuffer(ids * RECORD_BYTES);
    this.spare = null;
    const w = new Int32Array(buf);
    if (keep > 0) w.set(this.w.subarray(0, keep * STRIDE));
    this.w = w;
    this.f = new Float64Array(buf);
    this.reserved = ids;
  }

  /** release marks `id` dead (page -1) and returns it to the free chain (unless a shrink drops it). */
  release(id: ItemId): void {
    const r = id * STRIDE;
    this.w[r + W_PAGE] = NIL;
    if (id < this.limit && (id < this.scanAt || id >= this.scanTo)) {
      this.w[r + W_NEXT] = this.freeHead;
      this.freeHead = id;
    }
    this.live--;
  }

  /** shrinkingTo is the size a shrink under way is taking the table to, or 0 when none is. */
  get shrinkingTo(): number {
    return this.limit < this.cap ? this.limit : 0;
  }

  /**
   * beginShrink starts shrinking the table to `n` ids: `alloc` hands out nothing from n up, and
   * the free ids below n are to be chained (`scanFree`), none yet. O(1).
   */
  beginShrink(n: number): void {
    this.freeHead = NIL;
    this.limit = n;
    this.scanAt = 0;
    this.scanTo = n; // (ids from `top` up are skipped: handed out later, they chain when released)
  }

  /** unscanned is how many ids the scan has left to look at (`scanFree`). */
  get unscanned(): number {
    return this.scanTo - this.scanAt;
  }

  /**
   * scanFree chains the free ids among the next `ids` of the scan (each batch lowest first on the
   * chain), and tells whether it is done.
   */
  scanFree(ids: number): boolean {
    const to = Math.min(this.scanTo, this.scanAt + ids);
    this.chainFree(this.scanAt, to);
    this.scanAt = to;
    if (to < this.scanTo) return false;
    this.scanAt = this.scanTo = 0;
    return true;
  }

  /**
   * cancelShrink ends a shrink under way with the table at its size: the free ids from its size
   * up join the scan (see the header), which ticks and allocs carry on.
   */
  cancelShrink(): void {
    this.spare = null;
    if (this.scanAt === this.scanTo) this.scanAt = this.limit;
    this.scanTo = this.cap;
    this.limit = this.cap;
  }

  /**
   * prepareTruncate touches up to `bytes` more of the buffer `truncate` will copy the records
   * into (the first `shrinkingTo` records' worth), and tells whether all of it is touched. A
   * fresh buffer is backed lazily, and the copy into it was mostly the first touch of its pages:
   * 677 ms for 8 M records (320 MB), 80 ms into one touched before.
   */
  prepareTruncate(bytes: number): boolean {
    if (this.spare === null) {
      this.spare = new ArrayBuffer(this.reserved * RECORD_BYTES);
      this.spareTouched = 0;
    }
    const u8 = new Uint8Array(this.spare);
    const want = this.limit * RECORD_BYTES;
    const end = Math.min(want, this.spareTouched + bytes);
    for (let at = this.spareTouched; at < end; at += TOUCH_STRIDE) u8[at] = 0;
    this.spareTouched = end;
    return end >= want;
  }

  /**
   * truncate ends a shrink under way: the table becomes the size it was shrinking to, its records
   * copied into a fresh buffer of the same reservation (the old one, with every page the larger
   * table touched, is dropped). No id from that size up may be live.
   */
  truncate(): void {
    const n = this.limit;
    if (this.top > n) this.top = n;
    this.reserve(this.reserved, this.top);
    this.cap = n;
  }

  /** forEachFree calls fn for every id on the free chain, in chain order (for invariant checks). */
  forEachFree(fn: (id: ItemId) => void): void {
    let guard = 0;
    for (let id = this.freeHead; id !== NIL; id = this.w[id * STRIDE + W_NEXT]!) {
      if (++guard > this.cap) throw new Error("the free id chain has a cycle");
      fn(id);
    }
  }

  /** isLive tells whether `id` currently names an item. */
  isLive(id: ItemId): boolean {
    return id >= 0 && id < this.top && this.w[id * STRIDE + W_PAGE]! !== NIL;
  }

  /** place records that item `id`'s chunk is now at (page, off) (a page move rescued it). */
  place(id: ItemId, page: number, off: number): void {
    this.w[id * STRIDE + W_PAGE] = page;
    this.w[id * STRIDE + W_OFF] = off;
  }

  page(id: ItemId): number {
    return this.w[id * STRIDE + W_PAGE]!;
  }
  off(id: ItemId): number {
    return this.w[id * STRIDE + W_OFF]!;
  }
  keyLen(id: ItemId): number {
    return this.w[id * STRIDE + W_CLASS]! >>> KEY_SHIFT;
  }
  valLen(id: ItemId): number {
    return this.w[id * STRIDE + W_VALLEN]!;
  }
  cls(id: ItemId): number {
    return this.w[id * STRIDE + W_CLASS]! & CLASS_MASK;
  }
  /** isNegative tells whether the item is a cached "not found" (no value). */
  isNegative(id: ItemId): boolean {
    return (this.w[id * STRIDE + W_CLASS]! & FLAG_NEGATIVE) !== 0;
  }
  expiry(id: ItemId): number {
    return this.f[id * F_STRIDE + F_EXPIRY]!;
  }

  /**
   * grow makes the table `newCap` ids, keeping existing items (no shrink may be under way). Within
   * the reservation it writes nothing: the new ids are above `top`.
   */
  grow(newCap: number): void {
    if (this.limit < this.cap) throw new Error("item table grown while shrinking");
    if (newCap > this.reserved) this.reserveFor(newCap);
    this.cap = newCap;
    this.limit = newCap;
  }

  /**
   * reserveFor takes the buffer a growth to `newCap` ids past the reservation needs: `newCap`
   * while the table is small (the copy is short: RESERVE_FROM ids are 20 MiB), then `mostIds` at
   * once, so later growths copy nothing; twice the old size past `mostIds`, or where so large a
   * buffer cannot be had. A small store keeps a buffer its size: reserved from the start, a
   * 256 MiB store's 244 MB reservation made its Get hits ~4 % dearer under network load
   * (`bench/net/duel.sh 100 5`: 0.947–0.978 in 5 rounds), though not in process.
   */
  private reserveFor(newCap: number): void {
    if (newCap < this.reserveFrom) return this.reserve(newCap, this.top);
    if (newCap <= this.mostIds) {
      try {
        return this.reserve(this.mostIds, this.top);
      } catch {
        // (refused: doubling, copying, as below)
      }
    }
    this.reserve(Math.min(MAX_ITEM_IDS, Math.max(newCap, 2 * this.reserved)), this.top);
  }

  /**
   * reset marks every id free (none is handed out yet: `top` 0) and makes the table `cap` ids,
   * no more than it is, in a fresh buffer (the old one, and every page it touched, is dropped).
   */
  reset(cap = this.cap): void {
    this.freeHead = NIL;
    this.top = 0;
    this.live = 0;
    this.scanAt = this.scanTo = 0;
    if (cap < this.cap) {
      this.reserve(cap < this.reserveFrom ? cap : this.reserved, 0);
      this.cap = cap;
    }
    this.limit = this.cap;
  }

  /** chainFree puts the dead ids in [from, to) below `top` on the free chain, lowest first, out of the heap and LRU. */
  private chainFree(from: number, to: number): void {
    const w = this.w;
    for (let id = Math.min(to, this.top) - 1; id >= from; id--) {
      const r = id * STRIDE;
      if (w[r + W_PAGE] !== NIL) continue;
      w[r + W_PREV] = NIL;
      w[r + W_HEAP] = NIL;
      w[r + W_NEXT] = this.freeHead;
      this.freeHead = id;
    }
  }

  /** byteSize is the memory charged for the records: `cap` of them, whatever the reservation. */
  byteSize(): number {
    return this.cap * RECORD_BYTES;
  }
}
