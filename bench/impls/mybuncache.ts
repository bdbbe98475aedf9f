/**
 * MyBunCacheImpl drives our `Store` through the benchmark interface.
 *
 * Keys stay bytes end to end: `get` hashes the caller's key range, and `copyValue` copies the value
 * from the slab into the reused `out` buffer, so the adapter itself creates nothing per call. `set`
 * is an explicit set (always admitted, no TTL). `stats()` exposes the store's figures so the
 * benchmarks can prove the working set fits (items, evictions) before timing.
 */
import { SET_OK, Store, type StoreOptions, type StoreStats } from "../../src/store/store.ts";
import type { CacheImpl } from "./cache-impl.ts";

export class MyBunCacheImpl implements CacheImpl {
  readonly name = "mybuncache";
  readonly store: Store;

  constructor(opts: StoreOptions) {
    this.store = new Store(opts);
  }

  get(key: Uint8Array, off: number, len: number, out: Uint8Array): number {
    const id = this.store.get(key, off, len);
    return id < 0 ? -1 : this.store.copyValue(id, out, 0);
  }

  set(key: Uint8Array, off: number, len: number, value: Uint8Array, valOff: number, valLen: number): boolean {
    return this.store.set(key, off, len, value, valOff, valLen, 0) === SET_OK;
  }

  get size(): number {
    return this.store.size;
  }

  stats(): StoreStats {
    return this.store.stats();
  }
}
