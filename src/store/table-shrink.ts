/**
 * TableShrink gives the item table's and the index's memory back to the pages once most ids are
 * free: after a burst of small items that were then deleted, expired or evicted.
 *
 * Why: the store's memory bound covers pages and metadata together, and the table grows only into
 * bytes no page holds. A table that stayed at its peak kept those bytes from the pages for good:
 * a 64 MiB store after a burst of a million 100 B values (all expired since) held an empty table
 * of 367k ids and its index, 20 MB, and large values then had 44 pages instead of 63.
 *
 * Policy (Redis decides the same from its cron, shrinking a dict once it is under a tenth full;
 * memcached's hash table never shrinks, but its items live in their chunks, so no table holds
 * their memory):
 * - when: the store's active-expiry tick (`Store.expire`), with what its budget left, and at
 *   least MIN_STEP units whatever expiry took (with `--expiry-budget 1`, or expiry taking the
 *   whole budget tick after tick, it went a unit a tick or not at all: a table of 40k ids took
 *   over a thousand ticks, or never shrank); never on a read or a write;
 * - whether: fewer live items than a quarter of the table's ids, and the table above its first
 *   size (the floor); the table is then made twice the live count (at least the floor). It
 *   grows by half when full, so after a shrink the live count must double before it grows
 *   again, and halve before it shrinks again: a count that wanders about a threshold moves
 *   nothing (hysteresis);
 * - how: incrementally, in three phases a tick's budget at a time. (1) `beginShrink` makes new
 *   items take only ids below the new size (ItemTable); ticks chain the free ids below it,
 *   SCAN_PER_MOVE ids a unit (`scanFree`), then move up to `budget` of the items left above it
 *   to free ids below it, looking at up to SCAN_PER_MOVE ids per move.
 *   (2) Once no item is left above, each tick touches TOUCH_PER_UNIT bytes a unit of the buffer
 *   the records will be copied into (`prepareTruncate`), then one tick copies them (`truncate`:
 *   the old buffer, with every page the larger table touched, goes back to the OS) and the
 *   store may take pages for the bytes freed. (3) The index is then built at the smaller size as
 *   a growth builds the doubled one (HashIndex.beginBuild, INDEX_SLOTS_PER_UNIT slots a unit), its
 *   bytes taken from those the table just gave back, and swapped in once complete. Should the
 *   live count come back to three quarters of the new size during (1) or (2) (or new items run
 *   out of ids below it), the shrink is cancelled (the free ids above the size are chained by
 *   the same scan, ticks and allocs carrying it on: in one go a cancel stopped a tick 160 ms for
 *   15.5 M ids); a growth of the table drops (3)'s build, and a
 *   later tick builds again for the size the table then has.
 *   In one go, the last tick copied the records into an untouched buffer and rehashed the index:
 *   1.5 s in a store of 20 M items cut to 4 M (8 M ids: 677 ms the copy, 579 ms the rehash; 2.0 s
 *   when expiry removed them), and the first tick chained the free ids below the new size, 50-68
 *   ms for 8-12 M. Now only the copy is done in one tick: 36 ms for 8 M records into the
 *   touched buffer (`bun bench/store-shrink.ts`).
 *   The touched buffer is memory the store does not count until it holds the table: as the
 *   copy in one go held it for a moment, it is held for the ticks of phase (2).
 *
 * Moving an item changes its id: its record is copied, and its LRU neighbours (or the list's
 * head or tail), its heap slot, its index slot and its chunk's owner word are made to name the
 * new id. A caller walking the ids across turns in increasing order (a snapshot, a ring purge)
 * must see each item held throughout once: it pins the ids (`IdPin`) and tells how far it has
 * walked (`passed`). A move takes an item from an id at or above the new size down to one below
 * it, so it is safe once every walk has passed the id it moves from: both ids are then behind
 * each walk (neither missed nor seen twice). The shrink moves only those, and waits at the
 * first id a walk has not passed; starting a shrink or cancelling one moves nothing, so neither
 * waits (a snapshot running back to back held its pin for good, and no shrink ever began). The
 * table is cut down once every item above the new size has moved: every walk has passed all of
 * it then, and ends at the smaller size.
 */
import { hashBytes } from "./hash.ts";
import { type HashIndex, SLOT_BYTES, slotsFor } from "./hash-index.ts";
import { CLASS_MASK, KEY_SHIFT, NIL, STRIDE, W_CLASS, W_HEAP, W_NEXT, W_OFF, W_PAGE, W_PREV, type ItemId, type ItemTable } from "./item-table.ts";
import type { LruList } from "./lru-list.ts";
import { CHUNK_HEADER, type SlabAllocator } from "./slab-allocator.ts";
import type { TtlHeap } from "./ttl-heap.ts";

/** SCAN_PER_MOVE is how many ids one unit of budget may look at when most of them are free. */
const SCAN_PER_MOVE = 32;
/**
 * TOUCH_PER_UNIT is how many bytes of the records' next buffer one unit of budget touches. The
 * first touch costs about 3 µs a KiB here (2,000 units of 1 KiB: 5.8 ms a tick), so 256 B.
 */
const TOUCH_PER_UNIT = 256;
/**
 * INDEX_SLOTS_PER_UNIT is how many slots of the smaller index one unit of budget builds (marked
 * empty or copied): each copy lands at a random place of the new table, ~20 ns (2,000 units of
 * 256 slots: 11.7 ms a tick), so 32, as many as a move looks at.
 */
const INDEX_SLOTS_PER_UNIT = 32;
/** SHRUNK_TABLE and SHRUNK_INDEX are what `step` returns when it made the table, or the index, smaller. */
export const SHRUNK_TABLE = 1;
export const SHRUNK_INDEX = 2;
/**
 * MIN_STEP is the units of work (moves) a tick gives the shrink at least, whatever expiry left of
 * its budget: 64 moves, 2,048 ids looked at, tens of microseconds.
 */
export const MIN_STEP = 64;

/**
 * IdPin is one walk over the item ids under way (`Store.pinIds`), in increasing order: no item
 * moves from an id at or above `passed` until `Store.unpinIds`.
 */
export class IdPin {
  /** passed: the walk has done with every id below it (it only grows). */
  passed = 0;
}

export class TableShrink {
  /** pins are the walks over item ids under way (`Store.pinIds`). */
  readonly pins: IdPin[] = [];
  /** cursor is the next id above the new size to look at. */
  private cursor = 0;
  private readonly items: ItemTable;
  private readonly index: HashIndex;
  private readonly lru: LruList;
  private readonly heap: TtlHeap;
  private readonly slab: SlabAllocator;
  private readonly hashSeed: number;
  /** floor is the table's first size: it shrinks no further (a clear takes it back there at once). */
  readonly floor: number;
  /** freeBytes is the memory the store's bound leaves free of pages and metadata (StoreRoom.freeBytes). */
  private readonly freeBytes: () => number;

  constructor(
    items: ItemTable, index: HashIndex, lru: LruList, heap: TtlHeap, slab: SlabAllocator, hashSeed: number, floor: number,
    freeBytes: () => number,
  ) {
    this.freeBytes = freeBytes;
    this.items = items;
    this.index = index;
    this.lru = lru;
    this.heap = heap;
    this.slab = slab;
    this.hashSeed = hashSeed;
    this.floor = floor;
  }

  /**
   * step does up to `budget` units of the shrink's work (see the header), starting one when the
   * table is mostly free. It returns SHRUNK_TABLE or SHRUNK_INDEX when it made the table, or
   * the index, smaller (the store may then take pages for the bytes), else 0.
   */
  step(budget: number): number {
    const items = this.items;
    const target = items.shrinkingTo;
    if (target === 0) {
      // A cancelled shrink left free ids to the scan (ItemTable.cancelShrink): chained first.
      if (items.unscanned > 0) {
        items.scanFree(budget * SCAN_PER_MOVE);
        return 0;
      }
      if (this.index.slotCount > slotsFor(items.cap)) {
        const shrunk = this.shrinkIndex(budget);
        // Waiting for free bytes, it let the table's own shrink wait too: a full store (pages
        // holding every free byte) never shrank its table again, and the bytes that would free
        // were the ones the index waited for. The smaller index is begun again at its truncate.
        if (shrunk !== 0 || this.index.building) return shrunk;
      }
      if (items.live * 4 >= items.cap) return 0;
      const n = Math.max(this.floor, 2 * items.live);
      if (n >= items.cap) return 0;
      items.beginShrink(n);
      this.index.cancelBuild(); // (a doubled index is not wanted now)
      this.cursor = n;
      return 0;
    }
    if (items.live * 4 > target * 3) {
      items.cancelShrink();
      return 0;
    }
    if (!items.scanFree(budget * SCAN_PER_MOVE)) return 0;
    const top = items.top; // no id from it up was handed out: none to move
    const end = Math.min(top, this.passed());
    const w = items.w;
    let id = this.cursor;
    for (let moves = 0, scanned = 0; id < end && moves < budget && scanned < budget * SCAN_PER_MOVE; id++, scanned++) {
      if (w[id * STRIDE + W_PAGE] === NIL) continue;
      this.move(id);
      moves++;
    }
    this.cursor = id;
    if (id < top || !items.prepareTruncate(budget * TOUCH_PER_UNIT)) return 0;
    items.truncate();
    this.heap.fit(target);
    if (this.index.slotCount > slotsFor(target)) this.shrinkIndex(0); // (begun: the store counts its bytes before pages take the rest)
    return SHRUNK_TABLE;
  }

  /**
   * shrinkIndex builds the index at the size the table calls for, `budget` units of it, and
   * swaps it in once built (SHRUNK_INDEX). The tick that cuts the table begins it: the bytes the
   * table gave back hold it (its records were at least twice the new size, 44 B an id; the new
   * index is at most 23 B an id). A build begun again later (a growth dropped the first) waits
   * for free bytes: a rehash in one go, as before, stopped a tick 579 ms for 32 M slots, and a
   * larger index than needed is only bytes the pages do not get (counted).
   */
  private shrinkIndex(budget: number): number {
    const index = this.index;
    const slots = slotsFor(this.items.cap);
    if (!index.buildingSmaller || index.nextMask + 1 !== slots) {
      index.cancelBuild();
      if (slots * SLOT_BYTES > this.freeBytes()) return 0;
      index.beginBuild(slots);
    }
    if (!index.advance(budget * INDEX_SLOTS_PER_UNIT)) return 0;
    index.finishBuild();
    return SHRUNK_INDEX;
  }

  /** passed is the id below which every walk under way has passed (no walk: any id). */
  private passed(): number {
    let passed = Infinity;
    for (const pin of this.pins) if (pin.passed < passed) passed = pin.passed;
    return passed;
  }

  /** cancel ends a shrink under way, if any, with the table at its size (a growth is needed). */
  cancel(): void {
    if (this.items.shrinkingTo !== 0) this.items.cancelShrink();
  }

  /** move gives live item `from` (above the new size) a free id below it. */
  private move(from: ItemId): void {
    const items = this.items;
    const to = items.alloc();
    // Never: a quarter of the ids below the new size at least are free (`step` cancels first).
    if (to === NIL) throw new Error("no free id below the size the item table is shrinking to");
    const w = items.w;
    const rf = from * STRIDE;
    const rt = to * STRIDE;
    w.copyWithin(rt, rf, rf + STRIDE);
    const cls = w[rt + W_CLASS]! & CLASS_MASK;
    const prev = w[rt + W_PREV]!;
    const next = w[rt + W_NEXT]!;
    if (prev !== NIL) w[prev * STRIDE + W_NEXT] = to;
    else this.lru.head[cls] = to;
    if (next !== NIL) w[next * STRIDE + W_PREV] = to;
    else this.lru.tail[cls] = to;
    const pos = w[rt + W_HEAP]!;
    if (pos !== NIL) this.heap.slots[pos] = to;
    const page = w[rt + W_PAGE]!;
    const off = w[rt + W_OFF]!;
    const bytes = this.slab.pages[page]!;
    this.index.replaceId(hashBytes(bytes, off + CHUNK_HEADER, w[rt + W_CLASS]! >>> KEY_SHIFT, this.hashSeed), from, to);
    this.slab.setOwner(page, off, to);
    w[rf + W_PREV] = NIL;
    w[rf + W_NEXT] = NIL;
    w[rf + W_HEAP] = NIL;
    items.release(from); // not chained: it is above the new size
  }
}
