/**
 * SlabAllocator hands out fixed-size chunks carved from pages, memcached style.
 *
 * Vocabulary (memcached's `slabs.c`): a *page* is `pageSize` bytes (1 MiB by default) backed by its
 * own `ArrayBuffer`, created lazily the first time it is needed, so untouched memory costs nothing.
 * A page belongs to one *slab class* at a time and is carved into chunks of that class's size.
 * Each class has a *free list* and a *carve cursor* (the page it is still cutting fresh chunks
 * from, so memory is touched only when used). Pages not yet given to a class form the *page pool*;
 * `pageLimit` (set by the owner from its byte budget) bounds how many pages may leave it.
 *
 * Chunk layout: word 0 (Int32, 8-byte aligned) is the *owner*: the item id living in the chunk, or
 * -1 when the chunk is free. A free chunk keeps its free-list link in words 1 and 2 (next page,
 * next offset). The caller's bytes (key then value) start at offset `CHUNK_HEADER`.
 *
 * Page reassignment (the cure for slab calcification): `movePage` evicts every live chunk of a page
 * through the `evict` callback installed at construction, drops the page's chunks from its old
 * class's free list, and hands the page to the new class as its carve page. The owner decides
 * *when* to move (it knows the LRU ages); the allocator only knows *how*.
 */
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
  private readonly freeHeadPage: Int32Array;
  private readonly freeHeadOff: Int32Array;
  private readonly carvePage: Int32Array;
  /** allocOff is the chunk offset of the last successful `alloc`, which returns the page. */
  allocOff = 0;
  private readonly evict: (owner: number) => void;

  constructor(classes: SizeClasses, pageSize: number, maxPages: number, evict: (owner: number) => void) {
    if (classes.maxChunk > pageSize) throw new RangeError("largest chunk exceeds the page size");
    this.classes = classes;
    this.pageSize = pageSize;
    this.maxPages = maxPages;
    this.pageLimit = maxPages;
    this.evict = evict;
    this.pageClass = new Int16Array(maxPages).fill(NIL);
    this.pageUsed = new Int32Array(maxPages);
    this.pageCarved = new Int32Array(maxPages);
    this.pool = new Int32Array(maxPages);
    for (let p = 0; p < maxPages; p++) this.pool[p] = maxPages - 1 - p;
    this.poolTop = maxPages;
    const n = classes.count;
    this.classPages = new Int32Array(n);
    this.classUsed = new Int32Array(n);
    this.freeCount = new Int32Array(n);
    this.freeHeadPage = new Int32Array(n).fill(NIL);
    this.freeHeadOff = new Int32Array(n);
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
    let page = this.freeHeadPage[cls]!;
    let off: number;
    if (page !== NIL) {
      off = this.freeHeadOff[cls]!;
      const w = this.words[page]!;
      this.freeHeadPage[cls] = w[(off >> 2) + 1]!;
      this.freeHeadOff[cls] = w[(off >> 2) + 2]!;
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

  /** free returns the chunk at (page, off) to its class's free list. */
  free(page: number, off: number): void {
    const cls = this.pageClass[page]!;
    const w = this.words[page]!;
    const word = off >> 2;
    w[word] = NIL;
    w[word + 1] = this.freeHeadPage[cls]!;
    w[word + 2] = this.freeHeadOff[cls]!;
    this.freeHeadPage[cls] = page;
    this.freeHeadOff[cls] = off;
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

  /** detach empties `page` (evicting its live chunks) and takes it from its class. */
  private detach(page: number): void {
    const from = this.pageClass[page]!;
    const size = this.classes.sizes[from]!;
    const w = this.words[page]!;
    const carved = this.pageCarved[page]!;
    for (let i = 0; i < carved; i++) {
      const owner = w[(i * size) >> 2]!;
      if (owner !== NIL) this.evict(owner);
    }
    // Unlink the page's chunks from the old class's free list.
    let prevPage = NIL;
    let prevOff = 0;
    let p = this.freeHeadPage[from]!;
    let o = this.freeHeadOff[from]!;
    while (p !== NIL) {
      const pw = this.words[p]!;
      const nextPage = pw[(o >> 2) + 1]!;
      const nextOff = pw[(o >> 2) + 2]!;
      if (p === page) {
        if (prevPage === NIL) {
          this.freeHeadPage[from] = nextPage;
          this.freeHeadOff[from] = nextOff;
        } else {
          const qw = this.words[prevPage]!;
          qw[(prevOff >> 2) + 1] = nextPage;
          qw[(prevOff >> 2) + 2] = nextOff;
        }
        this.freeCount[from]!--;
      } else {
        prevPage = p;
        prevOff = o;
      }
      p = nextPage;
      o = nextOff;
    }
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

  /** forEachFree calls fn for every chunk on class `cls`'s free list (for invariant checks). */
  forEachFree(cls: number, fn: (page: number, off: number) => void): void {
    let p = this.freeHeadPage[cls]!;
    let o = this.freeHeadOff[cls]!;
    let guard = 0;
    while (p !== NIL) {
      if (++guard > this.maxPages * this.pageSize) throw new Error(`free list of class ${cls} has a cycle`);
      fn(p, o);
      const w = this.words[p]!;
      const np = w[(o >> 2) + 1]!;
      o = w[(o >> 2) + 2]!;
      p = np;
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
    this.freeHeadPage.fill(NIL);
    this.carvePage.fill(NIL);
  }

  /** isFullyCarved tells whether no fresh chunk remains to be cut from the page. */
  isFullyCarved(page: number): boolean {
    const cls = this.pageClass[page]!;
    return cls !== NIL && this.carvePage[cls] !== page;
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
    this.carvePage[cls] = page;
    this.classPages[cls]!++;
  }
}
