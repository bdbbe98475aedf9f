/**
 * ItemTable is the item metadata: a struct of typed arrays indexed by item id.
 *
 * Layout per item id (bytes): key hash (Int32, 4), chunk page (Int32, 4), chunk offset (Int32, 4),
 * key length (Uint16, 2), value length (Int32, 4), absolute expiry in ms (Float64, 8; `Infinity`
 * for none), last access as a logical tick (Uint32, 4) — 30 bytes. The LRU links and the heap
 * position live with their own structures (`LruList`, `TtlHeap`), sized to the same capacity. The
 * item's class is its page's class, so it is not stored twice.
 *
 * Free ids are a typed-array stack. The table grows by reallocating every array (outside the
 * steady state: growth happens only while the cache is filling); ids never move.
 */
export type ItemId = number;
export const NIL = -1;

export const ITEM_TABLE_BYTES_PER_ITEM = 4 + 4 + 4 + 2 + 4 + 8 + 4 + 4; // + 4 for the free-id stack

export class ItemTable {
  cap = 0;
  live = 0;
  hash = new Int32Array(0);
  page = new Int32Array(0);
  off = new Int32Array(0);
  keyLen = new Uint16Array(0);
  valLen = new Int32Array(0);
  expiry = new Float64Array(0);
  atime = new Uint32Array(0);
  private freeIds = new Int32Array(0);
  private freeTop = 0;

  constructor(initialCap: number) {
    this.grow(initialCap);
  }

  /** alloc returns a free item id, or -1 when the table is full (the caller may grow it). */
  alloc(): ItemId {
    if (this.freeTop === 0) return NIL;
    this.live++;
    return this.freeIds[--this.freeTop]!;
  }

  /** release returns an id to the free stack; its page is set to -1 to mark it dead. */
  release(id: ItemId): void {
    this.page[id] = NIL;
    this.freeIds[this.freeTop++] = id;
    this.live--;
  }

  /** isLive tells whether `id` currently names an item. */
  isLive(id: ItemId): boolean {
    return id >= 0 && id < this.cap && this.page[id]! !== NIL;
  }

  /** grow reallocates every array to `newCap` ids, keeping existing items. */
  grow(newCap: number): void {
    const old = this.cap;
    this.hash = copyInto(new Int32Array(newCap), this.hash);
    this.page = copyInto(new Int32Array(newCap).fill(NIL), this.page);
    this.off = copyInto(new Int32Array(newCap), this.off);
    this.keyLen = copyInto(new Uint16Array(newCap), this.keyLen);
    this.valLen = copyInto(new Int32Array(newCap), this.valLen);
    this.expiry = copyInto(new Float64Array(newCap), this.expiry);
    this.atime = copyInto(new Uint32Array(newCap), this.atime);
    const ids = new Int32Array(newCap);
    ids.set(this.freeIds.subarray(0, this.freeTop));
    let top = this.freeTop;
    // New ids are pushed highest first so the lowest new id is handed out next.
    for (let id = newCap - 1; id >= old; id--) ids[top++] = id;
    this.freeIds = ids;
    this.freeTop = top;
    this.cap = newCap;
  }

  /** reset marks every id free. */
  reset(): void {
    this.page.fill(NIL);
    this.freeTop = 0;
    for (let id = this.cap - 1; id >= 0; id--) this.freeIds[this.freeTop++] = id;
    this.live = 0;
  }

  /** byteSize is the memory held by the table's arrays. */
  byteSize(): number {
    return this.cap * ITEM_TABLE_BYTES_PER_ITEM;
  }
}

function copyInto<T extends Int32Array | Uint16Array | Float64Array | Uint32Array>(dst: T, src: T): T {
  dst.set(src as never);
  return dst;
}
