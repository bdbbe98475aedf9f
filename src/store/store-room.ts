/**
 * StoreRoom is how a store makes room: the slow paths of a set that finds no free item id or no
 * free chunk, and the memory bound between pages and metadata. Store owns one and calls it only
 * from `put` (store-write.ts: a set or fill of a new key, or one whose size class changed) and
 * when the table changes size; reads and in-place overwrites never reach it.
 *
 * Eviction and page moves: a set that finds no free chunk in its class and no page left evicts,
 * by LRU with a second chance for tails read since they were last put at the head (CLOCK: reads
 * only flag their own record; see Store's `touch` and `settleTail` here). It compares its own
 * class's LRU tail with the oldest tail of the other classes, by the store's logical access tick:
 * when another class's tail is more than twice as old (or the needy class has nothing to evict), a
 * whole page moves from that class to the needy one (memcached's slab automove idea); otherwise its
 * own tail goes. This keeps one class from starving while another sits on stale pages (slab
 * calcification), with hysteresis so pages do not ping-pong; `moveCredit` makes stores pay for
 * moves (`allocChunk`). A full item table grows into bytes no page holds (`growItems`), or takes a
 * page back from the class whose tail is oldest (`allocItem`).
 *
 * Memory: no arrays of its own; two numbers (`moveCredit`, `chunkClass`). Items it evicts are
 * removed through the store (`evict`), so counters and the index stay the store's.
 */
import type { HashIndex } from "./hash-index.ts";
import { MAX_LOAD, SLOT_BYTES, slotsFor } from "./hash-index.ts";
import { FLAG_REFERENCED, type ItemTable, NIL, RECORD_BYTES, STRIDE, W_ATIME, W_CLASS, type ItemId } from "./item-table.ts";
import type { LruList } from "./lru-list.ts";
import type { SizeClasses } from "./size-classes.ts";
import type { SlabAllocator } from "./slab-allocator.ts";
import type { Store } from "./store.ts";
import type { TableShrink } from "./table-shrink.ts";
import { HEAP_BYTES_PER_ITEM } from "./ttl-heap.ts";
import { expireOne } from "./store-tick.ts";

/** SECOND_CHANCES bounds how many referenced tails one eviction moves back to the head. */
const SECOND_CHANCES = 32;
/** RECLAIM_MAX bounds how many expired items one allocation removes before it evicts (reclaimExpired). */
const RECLAIM_MAX = 16;

export class StoreRoom {
  /** chunkClass is the class of the chunk the last `allocChunk` returned. */
  chunkClass = 0;
  /** moveCredit: items stored that page moves have not spent yet, at most the table's size (allocChunk). */
  moveCredit = 0;
  /** chancesGiven is how many second chances the last `settleTail` gave. */
  private chancesGiven = 0;
  /** lastStore[c] is the access tick of class c's last store (`allocChunk`): `oldestTail` settles idle classes' tails. */
  private readonly lastStore: Float64Array;
  private readonly classes: SizeClasses;
  private readonly slab: SlabAllocator;
  private readonly items: ItemTable;
  private readonly lru: LruList;
  private readonly index: HashIndex;

  constructor(
    private readonly store: Store,
    private readonly shrink: TableShrink,
    /** evict removes item `id` from the store as an eviction (counted). */
    private readonly evict: (id: ItemId) => void,
  ) {
    this.classes = store.classes;
    this.slab = store.slab;
    this.items = store.items;
    this.lru = store.lru;
    this.index = store.index;
    this.lastStore = new Float64Array(this.classes.count);
  }

  /**
   * settleTail returns the least recently used item of class `cls` (or -1 when it holds none),
   * first giving tails read since they last reached the head a second chance: each is moved back
   * to the head with its flag cleared. After `most` such moves (SECOND_CHANCES) the tail stands
   * whatever its flag, so one set never walks a long list; `chancesGiven` tells how many it gave.
   */
  private settleTail(cls: number, most = SECOND_CHANCES): ItemId {
    const w = this.items.w;
    for (let chances = 0; ; chances++) {
      const id = this.lru.tail[cls]!;
      this.chancesGiven = chances;
      if (id === NIL || chances >= most) return id;
      const r = id * STRIDE;
      if ((w[r + W_CLASS]! & FLAG_REFERENCED) === 0) return id;
      w[r + W_CLASS] = w[r + W_CLASS]! & ~FLAG_REFERENCED;
      this.lru.bump(cls, id);
    }
  }

  /**
   * allocItem returns a free item id, growing the table within budget or evicting by LRU.
   *
   * The table grows only into bytes no page holds. Once every page belongs to a class, a table
   * that is full would stay that size for good, and new items of one class would evict each other
   * while pages of another class kept values much older (large values written once, then a stream
   * of small ones: 16k items in 256 MiB). So when another class's LRU tail is older than this
   * class's (items are LRU across classes; `allocChunk` moves a page only past twice the age, as
   * the page goes to one class), its page is released to the pool instead (its items evicted) and
   * the table grows into those bytes.
   */
  allocItem(cls: number): ItemId {
    for (;;) {
      const id = this.items.alloc();
      if (id !== NIL) return id;
      if (this.items.shrinkingTo !== 0) {
        // The ids below the size a shrink is taking the table to ran out: the items came back.
        this.shrink.cancel();
        continue;
      }
      // An expired item the expiry tick has not reached yet gives its id first.
      if (this.reclaimExpired(NIL)) continue;
      if (this.growItems()) continue;
      // A page with no item left (its class's items deleted or expired: a burst gone, its table
      // shrunk since) gives the table its bytes before any item is evicted for them.
      if (this.slab.emptyPages > 0) {
        const empty = this.slab.findEmptyPage(NIL);
        if (empty !== NIL) {
          this.slab.releasePage(empty);
          continue;
        }
      }
      const own = this.settleTail(cls);
      let other = this.oldestTail(cls, own);
      if (other !== NIL && own !== NIL && this.age(other) > this.age(own) && this.items.cap + 16 <= this.items.maxIds) {
        // As many pages as the next growth needs (the index may have to double), each of the
        // class whose tail is oldest then, while it is older than this class's. Not for a class
        // with no items yet: its first item then takes another's id (evicted below), and
        // `allocChunk` moves it a page; releasing one could leave no page for it at all.
        do this.slab.releasePage(this.items.page(other));
        while (!this.growItems() && (other = this.oldestTail(cls, own)) !== NIL && this.age(other) > this.age(own));
        continue;
      }
      const victim = own !== NIL ? own : other;
      if (victim === NIL) return NIL;
      this.evict(victim);
    }
  }

  /**
   * growItems grows the item table by half (and the index with it) if the memory budget and
   * `maxIds` allow. Should the next growth double the index, it starts building the doubled
   * index now, while there is room, so inserts do it a step at a time (hash-index.ts); when a
   * growth finds no room and a build holds memory, the build is dropped and the growth tried
   * again (the doubling is then one rehash, as before).
   */
  private growItems(): boolean {
    for (;;) {
      if (this.tryGrowItems()) return true;
      if (!this.index.building) return false;
      this.index.cancelBuild();
      this.updatePageLimit();
    }
  }

  /** freeBytes is the memory neither pages (one at least) nor metadata hold. */
  freeBytes(): number {
    // At least one page stays out of the table's reach, as the constructor requires: with none
    // left (every page released, or none assigned since a clear) nothing could be stored again.
    const usedPages = Math.max(1, this.slab.pagesAssigned) * this.slab.pageSize;
    return this.store.capacity - usedPages - this.store.metaBytes();
  }

  private tryGrowItems(): boolean {
    // A shrink's smaller index being built (table-shrink.ts) would not hold the ids: a later tick builds again.
    if (this.index.buildingSmaller) this.index.cancelBuild();
    const cap = this.items.cap;
    const perItem = RECORD_BYTES + HEAP_BYTES_PER_ITEM;
    const room = this.freeBytes();
    let add = Math.max(16, cap >> 1);
    // Up to what the index holds first: a step past it doubles the index too, and with the
    // table's spare ids that took memory pages would have used (64 MiB of 100 B values: the
    // table grew to 384k ids, just past the 367k a 512k-slot index holds, and the store kept
    // 308k items; memcached 348k).
    const indexHolds = Math.floor(this.index.slotCount * MAX_LOAD) - cap;
    if (indexHolds >= 16 && add > indexHolds) add = indexHolds;
    // No further than one buffer holds (MAX_ITEM_IDS): past it the growth threw from the set.
    if (add > this.items.maxIds - cap) add = this.items.maxIds - cap;
    for (; add >= 16; add >>= 1) {
      const indexAdd = Math.max(0, slotsFor(cap + add) * SLOT_BYTES - this.index.byteSize());
      if (add * perItem + indexAdd <= room) break;
    }
    if (add < 16) return false;
    const newCap = cap + add;
    this.items.grow(newCap);
    while (this.index.slotCount < slotsFor(newCap)) this.index.grow();
    // The growth after this one (by half) will double the index: the doubled table is built from
    // now on, inserts copying a few slots each, if its bytes are free now (it is counted from now).
    const after = Math.min(this.items.maxIds, newCap + (newCap >> 1));
    if (!this.index.building && slotsFor(after) > this.index.slotCount && 2 * this.index.byteSize() <= this.freeBytes()) this.index.beginBuild();
    this.updatePageLimit();
    return true;
  }

  /**
   * allocChunk finds a chunk of class `cls` for item `id`, evicting or moving a page if needed,
   * and leaves the class it used in `chunkClass`: `cls`, or, with `mayUseLarger`, a larger one.
   *
   * With no free chunk, the class takes the page of the oldest item of another class (evicting
   * every item on it) when it has no items itself, or when that item is more than twice as old as
   * its own least recent one; else it evicts its own least recent item. When more classes are in
   * use than there are pages (a small group, values of many sizes), pages went from class to
   * class at almost every set, each move evicting a page of items to store one (an 8 MiB store
   * held 13 items after 30,000 sets of 100–1024 B). So a move is paid for by stores: a page of
   * N chunks (at most the table's size) moves only after N items were stored beyond what earlier
   * moves used (`moveCredit`), so moves evict at most about one item per store. Without the
   * credit a class with items evicts its own; a class with none puts the item in a chunk of the
   * next larger class that has pages, as an item of that class. Only when no larger class has
   * any does the page move anyway: the set could not be stored otherwise.
   */
  allocChunk(cls: number, id: ItemId, mayUseLarger: boolean): number {
    this.chunkClass = cls;
    this.lastStore[cls] = this.store.accessTick;
    for (;;) {
      const page = this.slab.alloc(cls, id);
      if (page !== NIL) return page;
      if (this.index.building && !this.index.buildingSmaller) {
        // Pages come first: the doubled index being built holds memory for a growth that may
        // never come (the store is full), and a page it kept out would stay out for good. (A
        // shrink's smaller one gives back more than it holds once built.)
        this.index.cancelBuild();
        this.updatePageLimit();
        continue;
      }
      if (this.slab.emptyPages > 0) {
        const empty = this.slab.findEmptyPage(cls);
        if (empty !== NIL) {
          this.slab.movePage(empty, cls);
          continue;
        }
      }
      // Expired items the expiry tick has not reached yet go before any live one: one of this
      // class frees a chunk here.
      if (this.reclaimExpired(cls)) continue;
      const own = this.settleTail(cls);
      const other = this.oldestTail(cls, own);
      if (other !== NIL && (own === NIL || this.age(other) > 2 * this.age(own))) {
        const victim = this.items.page(other);
        // The price of a move is the page's chunks, not only the items on it now: a page that
        // was just moved holds few, and cheap moves kept pages moving. At most the table's size,
        // which bounds the credit: a page of more small chunks than the table has ids must still
        // be able to move, else memory calcifies for good behind it.
        const price = Math.min(this.items.cap, Math.floor(this.slab.pageSize / this.classes.sizes[this.slab.pageClass[victim]!]!));
        if (price <= this.moveCredit || own === NIL) {
          if (price > this.moveCredit && mayUseLarger) {
            const larger = this.largerClassWithPages(cls);
            const at = larger === NIL ? NIL : this.allocChunk(larger, id, false);
            if (at !== NIL) return at;
            this.chunkClass = cls;
          }
          this.moveCredit = Math.max(0, this.moveCredit - price);
          this.slab.movePage(victim, cls);
          continue;
        }
      }
      if (own === NIL) {
        // Nothing to evict anywhere: the last idle memory may be another class's carve page.
        const idle = this.slab.findEmptyPage(cls, true);
        if (idle === NIL) return NIL;
        this.slab.movePage(idle, cls);
        continue;
      }
      this.evict(own);
    }
  }

  /**
   * reclaimExpired removes due items from the TTL heap, earliest first, until it removes one of
   * class `cls` (any class with -1: an id is what is wanted) or RECLAIM_MAX of them; it tells
   * whether it removed one of `cls`. The expiry tick removes at most its budget a tick, so under
   * a stream of short TTLs expired items wait in their chunks; a set that found no free chunk
   * evicted a live LRU tail meanwhile (memcached takes an expired tail first, and its LRU
   * crawler the rest). Items of other classes it removes were the tick's work, done early.
   */
  private reclaimExpired(cls: number): boolean {
    if (this.store.heap.size === 0) return false;
    const now = this.store.clock();
    for (let n = 0; n < RECLAIM_MAX; n++) {
      const of = expireOne(this.store, now);
      if (of === NIL) return false;
      if (cls === NIL || of === cls) return true;
    }
    return false;
  }

  /** largerClassWithPages returns the smallest class above `cls` that has a page, or -1. */
  private largerClassWithPages(cls: number): number {
    for (let c = cls + 1; c < this.classes.count; c++) if (this.slab.classPages[c]! > 0) return c;
    return NIL;
  }

  /**
   * oldestTail returns the least recently used tail among classes other than `except`, or -1;
   * `own` is the tail of `except` (settled), or -1.
   *
   * A class that has stored nothing for over twice `own`'s age has its tail settled first
   * (`settleTail`): a read only flags an item, and only a class's own stores settle its tail, so
   * an idle class kept a tail that is read often where it was, and its age, that of its last
   * read, made the whole class look young: a hot key at the tail of the small values' class kept
   * every page there once the workload moved to large values, which evicted each other. Classes
   * that store are left as they are: settling every tail at every eviction moved pages more often
   * in a steady mix of sizes (a 16 MiB store of 100 B-1 KiB values, 256 KiB pages: 70.3 % hits,
   * 74.0 % without; store.test.ts).
   */
  private oldestTail(except: number, own: ItemId): ItemId {
    let best = NIL;
    let bestAge = -1;
    let chances = SECOND_CHANCES; // for all the classes together: one set's work stays bounded
    const tick = this.store.accessTick;
    const idle = own === NIL ? Infinity : 2 * this.age(own);
    for (let c = 0; c < this.classes.count; c++) {
      if (c === except || this.lru.tail[c] === NIL) continue;
      let t = this.lru.tail[c]!;
      if (tick - this.lastStore[c]! > idle && chances > 0) {
        t = this.settleTail(c, chances);
        chances -= this.chancesGiven;
      }
      const age = this.age(t);
      if (age > bestAge) {
        bestAge = age;
        best = t;
      }
    }
    return best;
  }

  private age(id: ItemId): number {
    return (this.store.accessTick - this.items.w[id * STRIDE + W_ATIME]!) >>> 0;
  }

  /** updatePageLimit lets the slab take pages up to what the memory bound leaves after metadata. */
  updatePageLimit(): void {
    this.slab.pageLimit = Math.min(this.slab.maxPages, Math.floor((this.store.capacity - this.store.metaBytes()) / this.slab.pageSize));
  }
}
