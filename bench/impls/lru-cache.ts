/**
 * LruCacheImpl drives lru-cache 11 (isaacs/node-lru-cache) through the benchmark interface.
 *
 * Configured as a user wanting a byte bound would: `maxSize` with a `sizeCalculation` of the
 * value's byteLength, so it evicts by bytes like our store. Keys are strings: the byte-keyed path
 * decodes with `latin1` (Buffer's latin1Slice, the fastest honest decode measured on Bun), while
 * `getString`/`setString` take ready-made strings. `set` copies the value (`slice`), because the
 * caller's buffer is reused; `get` copies the stored value into `out`.
 */
import { LRUCache } from "lru-cache";
import { latin1, type CacheImpl, type StringKeyed } from "./cache-impl.ts";

export class LruCacheImpl implements CacheImpl, StringKeyed {
  readonly name = "lru-cache";
  readonly cache: LRUCache<string, Uint8Array>;

  /** maxSize is the byte bound on values. */
  constructor(maxSize: number) {
    this.cache = new LRUCache<string, Uint8Array>({
      maxSize,
      sizeCalculation: (value) => value.byteLength,
    });
  }

  get(key: Uint8Array, off: number, len: number, out: Uint8Array): number {
    return this.getString(latin1(key, off, len), out);
  }

  set(key: Uint8Array, off: number, len: number, value: Uint8Array, valOff: number, valLen: number): boolean {
    return this.setString(latin1(key, off, len), value, valOff, valLen);
  }

  getString(key: string, out: Uint8Array): number {
    const v = this.cache.get(key);
    if (v === undefined) return -1;
    out.set(v);
    return v.byteLength;
  }

  setString(key: string, value: Uint8Array, valOff: number, valLen: number): boolean {
    this.cache.set(key, value.slice(valOff, valOff + valLen));
    return true;
  }

  get size(): number {
    return this.cache.size;
  }
}
