/**
 * MapImpl is the baseline a user reaches for first: a plain `Map<string, Uint8Array>`, unbounded,
 * no recency, no eviction.
 *
 * Same conventions as the lru-cache adapter: byte keys are decoded with `latin1` (Buffer's
 * latin1Slice), string keys are used as given, `set` copies the value, `get` copies into `out`.
 */
import { latin1, type CacheImpl, type StringKeyed } from "./cache-impl.ts";

export class MapImpl implements CacheImpl, StringKeyed {
  readonly name = "map";
  readonly map = new Map<string, Uint8Array>();

  get(key: Uint8Array, off: number, len: number, out: Uint8Array): number {
    return this.getString(latin1(key, off, len), out);
  }

  set(key: Uint8Array, off: number, len: number, value: Uint8Array, valOff: number, valLen: number): boolean {
    return this.setString(latin1(key, off, len), value, valOff, valLen);
  }

  getString(key: string, out: Uint8Array): number {
    const v = this.map.get(key);
    if (v === undefined) return -1;
    out.set(v);
    return v.byteLength;
  }

  setString(key: string, value: Uint8Array, valOff: number, valLen: number): boolean {
    this.map.set(key, value.slice(valOff, valOff + valLen));
    return true;
  }

  get size(): number {
    return this.map.size;
  }
}
