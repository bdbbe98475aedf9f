/**
 * classStats reports the slab figures of each size class that holds or has held memory.
 *
 * Read at scrape time from the engine's own arrays; it allocates, so it is for stats calls only.
 */
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
