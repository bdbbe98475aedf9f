/**
 * storeStats reports a store's figures (Store.stats): its counters, bytes and items, and, by
 * classStats, the slab figures of each size class that holds or has held memory.
 *
 * Read at scrape time from the engine's own arrays; it allocates, so it is for stats calls only.
 */
import type { StoreStats } from "./store-api.ts";
import type { Store } from "./store.ts";

export interface ClassStats {
  /** cls is the class number; chunkSize its chunk size in bytes. */
  cls: number;
  chunkSize: number;
  pages: number;
  usedChunks: number;
  freeChunks: number;
  items: number;
  evictions: number;
}

export function classStats(store: Store): ClassStats[] {
  const out: ClassStats[] = [];
  const slab = store.slab;
  for (let c = 0; c < store.classes.count; c++) {
    const pages = slab.classPages[c]!;
    const evictions = store.classEvictions[c]!;
    if (pages === 0 && evictions === 0) continue;
    out.push({
      cls: c,
      chunkSize: store.classes.sizes[c]!,
      pages,
      usedChunks: slab.classUsed[c]!,
      freeChunks: slab.freeCount[c]!,
      items: store.lru.length[c]!,
      evictions,
    });
  }
  return out;
}

/** storeStats is `store.stats()`: `chunkBytes` and `dataBytes` are the store's own tallies. */
export function storeStats(store: Store, chunkBytes: number, dataBytes: number): StoreStats {
  return {
    ...store.counters,
    items: store.items.live,
    bytesUsed: chunkBytes,
    dataBytes,
    pageBytes: store.slab.pagesAssigned * store.slab.pageSize,
    metaBytes: store.metaBytes(),
    capacity: store.capacity,
    pageSize: store.slab.pageSize,
    maxItemSize: store.classes.maxItem,
    pageMoves: store.slab.pageMoves,
    pageReleases: store.slab.pageReleases,
    pageRescues: store.slab.rescues,
    heapSize: store.heap.size,
    itemCapacity: store.items.cap,
    classes: classStats(store),
  };
}
