/**
 * SlabAllocator hands out fixed-size chunks carved from pages, memcached style.
 *
 * Vocabulary (memcached's `slabs.c`): a *page* is `pageSize` bytes (1 MiB by default) backed by its
 * own `ArrayBuffer`, created lazily the first time it is needed, so untouched memory costs nothing.
 * A page belongs to one *slab class* at a time and is carved into chunks of that class's size.
 * Each class has *free lists* and a *carve cursor* (the page it is still cutting fresh chunks
 * from, so memory is touched only when used). Pages not yet given to a class form the *page pool*;
 * `pageLimit` (set by the owner from its byte budget) bounds how many pages may leave it.
 *
 * Free lists are per page: each page chains its own free chunks (`pageFreeOff`, the first one's
 * offset), and each class links the pages that have any (`freePages`, a doubly linked list through
 * `pageNextFree`/`pagePrevFree`). A page then leaves its class with its free chunks in O(1). With
 * one list per class running through every page, a move walked the class's whole free list to
 * unlink the page's chunks: 8 ns a free chunk, so 0.8 s a move with 100M of them (a large node
 * after a burst of small items went), and as many such moves as the pages that change class.
 *
 * Chunk layout: word 0 (Int32, 8-byte aligned) is the *owner*: the item id living in the chunk, or
 * -1 when the chunk is free. A free chunk keeps its link in word 1: the offset of the next free
 * chunk of its page, or -1. The caller's bytes (key then value) start at offset `CHUNK_HEADER`.
 *
 * Page reassignment (the cure for slab calcification): `movePage` empties a page, takes it (and its
 * free chunks) from its old class, and hands it to the new class as its carve page. Each live
 * chunk whose owner the `keep` callback wants kept (an unexpired item) is copied to a free chunk
 * of its class on another page while there is one (memcached's slab_reassign "rescues"), its owner
 * told through `moved`; the others go through `evict`. Without rescues a move evicted the page's
 * items while its class had free chunks for them elsewhere (after deletes or expiries). The owner
 * decides *when* to move (it knows the LRU ages); the allocator only knows *how*.
 */
import { copyBytes } from "../bytes/bytes.ts";
import { SizeClasses } from "./size-classes.ts";

/** CHUNK_HEADER is the number of bytes at the start of every chunk used by the allocator. */
export const CHUNK_HEADER = 4;
const NIL = -1;

export class SlabAllocator {
  readonly pageSize: number;
  readonly classes: SizeClasses;
  readonly maxPages: number;
  /** pageLimit is how many pages may be assigned to classes now; the owner lowers it as metadata grows. */
  pageLimit: number;
  /**
   * pages[p] is page p's bytes (created when the page leaves the pool, dropped when it is
   * released to it); words[p] views the same memory as Int32. Only pool pages lack them.
   */
  readonly pages: (Uint8Array | undefined)[] = [];
  private readonly words: (Int32Array | undefined)[] = [];
  /** pageClass[p] is the class page p is carved for, or -1 while it sits in the pool. */
  readonly pageClass: Int16Array;
  /** pageUsed[p] counts live chunks in page p; pageCarved[p] counts chunks cut so far. */
  readonly pageUsed: Int32Array;
  readonly pageCarved: Int32Array;
  /** pageFreeOff[p] is the offset of page p's first free chunk, or -1 (its chunks chain on through word 1). */
  private readonly pageFreeOff: Int32Array;
  /** pageNextFree, pagePrevFree link the pages of a class that have free chunks (`freePages`). */
  private readonly pageNextFree: Int32Array;
  private readonly pagePrevFree: Int32Array;
  private readonly pool: Int32Array;
  private poolTop = 0;
  /** pagesAssigned counts pages currently given to classes. */
  pagesAssigned = 0;
  /** emptyPages counts assigned, fully carved pages with no live chunk (free to move at no cost). */
  emptyPages = 0;
  pageMoves = 0;
  /** pageReleases counts pages given back to the pool (`releasePage`). */
  pageReleases = 0;
  // Per class state.
  readonly classPages: Int32Array;
  readonly classUsed: Int32Array;
  readonly freeCount: Int32Array;
  /** freePages[c] is the first page of class c with a free chunk, or -1. */
  private readonly freePages: Int32Array;
  private readonly carvePage: Int32Array;
  /** allocOff is the chunk offset of the last successful `alloc`, which returns the page. */
  allocOff = 0;
  private readonly evict: (owner: number) => void;
  private readonly keep: (owner: number) => boolean;
  private readonly moved: (owner: number, page: number, off: number) => void;
  /** rescues counts live chunks a page move or release copied to another page of their class instead of evicting. */
  rescues = 0;

  constructor(
    classes: SizeClasses, pageSize: number, maxPages: number, evict: (owner: number) => void,
    keep: (owner: number) => boolean = () => false, moved: (owner: number, page: number, off: number) => void = () => {},
  ) {
    if (classes.maxChunk > pageSize) throw new RangeError("largest chunk exceeds the page size");
    this.classes = classes;
    this.pageSize = pageSize;
    this.maxPages = maxPages;
    this.pageLimit = maxPages;
    this.evict = evict;
    this.keep = keep;
    this.moved = moved;
    this.pageClass = new Int16Array(maxPages).fill(NIL);
    this.pageUsed = new Int32Array(maxPages);
    this.pageCarved = new Int32Array(maxPages);
    this.pageFreeOff = new Int32Array(maxPages).fill(NIL);
    this.pageNextFree = new Int32Array(maxPages).fill(NIL);
    this.pagePrevFree = new Int32Array(maxPages).fill(NIL);
    this.pool = new Int32Array(maxPages);
    for (let p = 0; p < maxPages; p++) this.pool[p] = maxPages - 1 - p;
    this.poolTop = maxPages;
    const n = classes.count;
    this.classPages = new Int32Array(n);
    this.classUsed = new Int32Array(n);
    this.freeCount = new Int32Array(n);
    this.freePages = new Int32Array(n).fill(NIL);
    this.carvePage = new Int32Array(n).fill(NIL);
  }

  /** chunksPerPage is how many chunks of class `cls` one page holds. */
  chunksPerPage(cls: number): number {
    return Math.floor(this.pageSize / this.classes.sizes[cls]!);
  }

  /**
   * alloc returns the page of a chunk of class `cls` (its offset in `allocOff`) and marks it owned
   * by `owner`, or -1 when the class has no free chunk and no page can be taken from the pool.
   */
  alloc(cls: number, owner: number): number {
    let page = this.freePages[cls]!;
    let off: number;
    if (page !== NIL) {
      off = this.pageFreeOff[page]!;
      const next = this.words[page]![(off >> 2) + 1]!;
      this.pageFreeOff[page] = next;
      if (next === NIL) this.unlinkFreePage(cls, page);
      this.freeCount[cls]!--;
    } else {
      page = this.carvePage[cls]!;
      if (page === NIL || this.pageCarved[page]! >= this.chunksPerPage(cls)) {
        page = this.takePage(cls);
        if (page === NIL) return NIL;
      }
      off = this.pageCarved[page]! * this.classes.sizes[cls]!;
      this.pageCarved[page]!++;
    }
    if (this.pageUsed[page]! === 0 && this.isFullyCarved(page)) this.emptyPages--;
    this.pageUsed[page]!++;
    this.classUsed[cls]!++;
    this.words[page]![off >> 2] = owner;
    this.allocOff = off;
    return page;
  }

  /** free returns the chunk at (page, off) to its page's free list (the page to its class's, if it had none). */
  free(page: number, off: number): void {
    const cls = this.pageClass[page]!;
    const w = this.words[page]!;
    const word = off >> 2;
    w[word] = NIL;
    const head = this.pageFreeOff[page]!;
    w[word + 1] = head;
    this.pageFreeOff[page] = off;
    if (head === NIL) this.linkFreePage(cls, page);
    this.freeCount[cls]!++;
    this.classUsed[cls]!--;
    if (--this.pageUsed[page]! === 0 && this.isFullyCarved(page)) this.emptyPages++;
  }

  /** owner returns the item id stored in the chunk at (page, off), or -1 if the chunk is free. */
  owner(page: number, off: number): number {
    return this.words[page]![off >> 2]!;
  }

  /** setOwner names item `id` as the owner of the live chunk at (page, off) (the item changed id). */
  setOwner(page: number, off: number, id: number): void {
    this.words[page]![off >> 2] = id;
  }

  /**
   * movePage evicts every live chunk of `page`, removes its free chunks from its class, and gives
   * the page to class `to` as its carve page.
   */
  movePage(page: number, to: number): void {
    this.detach(page);
    this.assign(page, to);
    this.pageMoves++;
  }

  /**
   * releasePage evicts every live chunk of `page`, removes its free chunks from its class, and
   * puts the page back in the pool without its memory (dropped for the collector; a page taken
   * from the pool later gets new memory): the owner needs the bytes for something else.
   */
  releasePage(page: number): void {
    this.detach(page);
    this.pageClass[page] = NIL;
    this.pageUsed[page] = 0;
    this.pageCarved[page] = 0;
    this.pages[page] = undefined;
    this.words[page] = undefined;
    this.pool[this.poolTop++] = page;
    this.pagesAssigned--;
    this.pageReleases++;
  }

  /**
   * detach empties `page` (its live chunks rescued to other pages of its class or evicted) and
   * takes it, with its free chunks, from its class.
   */
  private detach(page: number): void {
    const from = this.pageClass[page]!;
    const size = this.classes.sizes[from]!;
    const bytes = this.pages[page]!;
    const w = this.words[page]!;
    const carved = this.pageCarved[page]!;
    for (let i = 0; i < carved; i++) {
      const off = i * size;
      const owner = w[off >> 2]!;
      if (owner === NIL) continue;
      const to = this.keep(owner) ? this.allocElsewhere(from, page) : NIL;
      if (to === NIL) {
        this.evict(owner);
        continue;
      }
      const at = this.allocOff;
      copyBytes(this.pages[to]!, at, bytes, off, size);
      this.words[to]![at >> 2] = owner;
      this.moved(owner, to, at);
      this.free(page, off);
      this.rescues++;
    }
    // Every chunk carved is free now, all on the page's own list: it leaves the class's in one step.
    if (this.pageFreeOff[page] !== NIL) {
      this.unlinkFreePage(from, page);
      this.pageFreeOff[page] = NIL;
    }
    this.freeCount[from]! -= carved;
    if (this.isFullyCarved(page)) this.emptyPages--;
    if (this.carvePage[from] === page) this.carvePage[from] = NIL;
    this.classPages[from]!--;
  }

  /**
   * findEmptyPage returns a page of another class than `exceptClass` with no live chunk, or -1.
   * With `includeCarving` a class's partly carved page counts too. O(pages): call it only when
   * `emptyPages > 0` or as the last resort before failing an allocation.
   */
  findEmptyPage(exceptClass: number, includeCarving = false): number {
    for (let p = 0; p < this.maxPages; p++) {
      const cls = this.pageClass[p]!;
      if (cls === NIL || cls === exceptClass || this.pageUsed[p] !== 0) continue;
      if (includeCarving || this.isFullyCarved(p)) return p;
    }
    return NIL;
  }

  /**
   * forEachFree calls fn for every chunk on the free lists of class `cls`'s pages (for invariant
   * checks); it throws if the class's list of pages is broken or lists a page with no free chunk.
   */
  forEachFree(cls: number, fn: (page: number, off: number) => void): void {
    let pages = 0;
    let prev = NIL;
    for (let p = this.freePages[cls]!; p !== NIL; prev = p, p = this.pageNextFree[p]!) {
      if (++pages > this.maxPages) throw new Error(`free pages of class ${cls} have a cycle`);
      if (this.pagePrevFree[p] !== prev) throw new Error(`free page ${p} of class ${cls}: back link ${this.pagePrevFree[p]} != ${prev}`);
      if (this.pageFreeOff[p] === NIL) throw new Error(`page ${p} is on class ${cls}'s free pages with no free chunk`);
      let chunks = 0;
      for (let o = this.pageFreeOff[p]!; o !== NIL; o = this.words[p]![(o >> 2) + 1]!) {
        if (++chunks > this.pageSize) throw new Error(`free list of page ${p} has a cycle`);
        fn(p, o);
      }
    }
  }

  /** carvePageOf returns the page class `cls` is carving fresh chunks from, or -1. */
  carvePageOf(cls: number): number {
    return this.carvePage[cls]!;
  }

  /** reset returns every page to the pool, its memory dropped (as `releasePage` does). */
  reset(): void {
    this.pageClass.fill(NIL);
    this.pageUsed.fill(0);
    this.pageCarved.fill(0);
    for (let p = 0; p < this.maxPages; p++) this.pool[p] = this.maxPages - 1 - p;
    this.poolTop = this.maxPages;
    // Pool pages hold no memory (as after `releasePage`): the store may grow its tables into them.
    this.pages.length = 0;
    this.words.length = 0;
    this.pagesAssigned = 0;
    this.emptyPages = 0;
    this.classPages.fill(0);
    this.classUsed.fill(0);
    this.freeCount.fill(0);
    this.freePages.fill(NIL);
    this.pageFreeOff.fill(NIL);
    this.carvePage.fill(NIL);
  }

  /** isFullyCarved tells whether no fresh chunk remains to be cut from the page. */
  isFullyCarved(page: number): boolean {
    const cls = this.pageClass[page]!;
    return cls !== NIL && this.carvePage[cls] !== page;
  }

  /**
   * allocElsewhere takes a free chunk of class `cls` on a page other than `page` (its offset in
   * `allocOff`) and returns its page, or -1 when the class has none. The chunk's owner word is the
   * caller's to write.
   */
  private allocElsewhere(cls: number, page: number): number {
    let p = this.freePages[cls]!;
    if (p === page) p = this.pageNextFree[p]!;
    if (p === NIL) return NIL;
    const off = this.pageFreeOff[p]!;
    const next = this.words[p]![(off >> 2) + 1]!;
    this.pageFreeOff[p] = next;
    if (next === NIL) this.unlinkFreePage(cls, p);
    this.freeCount[cls]!--;
    if (this.pageUsed[p]! === 0 && this.isFullyCarved(p)) this.emptyPages--;
    this.pageUsed[p]!++;
    this.classUsed[cls]!++;
    this.allocOff = off;
    return p;
  }

  /** linkFreePage puts `page` (its first chunk just freed) first among class `cls`'s pages with free chunks. */
  private linkFreePage(cls: number, page: number): void {
    const head = this.freePages[cls]!;
    this.pagePrevFree[page] = NIL;
    this.pageNextFree[page] = head;
    if (head !== NIL) this.pagePrevFree[head] = page;
    this.freePages[cls] = page;
  }

  /** unlinkFreePage takes `page` out of class `cls`'s pages with free chunks. */
  private unlinkFreePage(cls: number, page: number): void {
    const prev = this.pagePrevFree[page]!;
    const next = this.pageNextFree[page]!;
    if (prev !== NIL) this.pageNextFree[prev] = next;
    else this.freePages[cls] = next;
    if (next !== NIL) this.pagePrevFree[next] = prev;
  }

  private takePage(cls: number): number {
    if (this.poolTop === 0 || this.pagesAssigned >= this.pageLimit) return NIL;
    const page = this.pool[--this.poolTop]!;
    if (this.pages[page] === undefined) {
      const buf = new ArrayBuffer(this.pageSize);
      this.pages[page] = new Uint8Array(buf);
      this.words[page] = new Int32Array(buf);
    }
    this.pagesAssigned++;
    this.assign(page, cls);
    return page;
  }

  private assign(page: number, cls: number): void {
    // The class's previous carve page is now fully carved; if it holds nothing it is movable for free.
    const old = this.carvePage[cls]!;
    if (old !== NIL && this.pageUsed[old] === 0) this.emptyPages++;
    this.pageClass[page] = cls;
    this.pageUsed[page] = 0;
    this.pageCarved[page] = 0;
    this.pageFreeOff[page] = NIL;
    this.carvePage[cls] = page;
    this.classPages[cls]!++;
  }
}
