/**
 * CacheImpl is the one interface every benchmarked cache is driven through, plus the correctness
 * check each one must pass before it is timed.
 *
 * Keys arrive as bytes (key arena, offset, length), as they come off the wire. `get` copies the
 * value into the caller's reused `out` buffer (as a server writes it into its reply buffer) and
 * returns its length, or -1 on a miss. `set` receives the value as (arena, offset, length) too; a
 * cache that keeps references must copy, because a server's receive buffer is reused.
 *
 * StringKeyed is the honesty variant: the same rival given ready-made string keys, so no decode
 * is charged to it. Our store has no string API; in those rows it is still given bytes.
 */
import { KEY_BYTES, type Workload } from "../workload.ts";

export interface CacheImpl {
  readonly name: string;
  /** get copies the value under key[off, off+len) into out and returns its length, or -1. */
  get(key: Uint8Array, off: number, len: number, out: Uint8Array): number;
  /** set stores value[valOff, valOff+valLen) under key[off, off+len) and reports success. */
  set(key: Uint8Array, off: number, len: number, value: Uint8Array, valOff: number, valLen: number): boolean;
  /** size is the number of entries held. */
  readonly size: number;
}

export interface StringKeyed {
  readonly name: string;
  getString(key: string, out: Uint8Array): number;
  setString(key: string, value: Uint8Array, valOff: number, valLen: number): boolean;
}

/** latin1 decodes key bytes the fastest honest way measured on Bun (Buffer's latin1Slice). */
const latin1Slice = Buffer.prototype.latin1Slice as (this: Uint8Array, start: number, end: number) => string;
export function latin1(key: Uint8Array, off: number, len: number): string {
  return latin1Slice.call(key, off, off + len);
}

/**
 * checkRoundTrip sets every workload key in `impl`, reads each back, compares the bytes, and
 * checks that an absent key misses. It throws on the first mismatch; it is slow and never timed.
 */
export function checkRoundTrip(impl: CacheImpl, w: Workload, out: Uint8Array): void {
  for (let i = 0; i < w.count; i++) {
    if (!impl.set(w.keys, i * KEY_BYTES, KEY_BYTES, w.values, w.valOff[i]!, w.valLen[i]!)) {
      throw new Error(`${impl.name}: set of key ${i} failed`);
    }
  }
  for (let i = 0; i < w.count; i++) {
    const n = impl.get(w.keys, i * KEY_BYTES, KEY_BYTES, out);
    expectValue(impl.name, i, n, out, w);
  }
  const absent = new TextEncoder().encode("absent:key:00000");
  if (impl.get(absent, 0, absent.length, out) !== -1) throw new Error(`${impl.name}: absent key hit`);
  if (impl.size !== w.count) throw new Error(`${impl.name}: holds ${impl.size} entries, expected ${w.count}`);
}

/** checkStringRoundTrip is checkRoundTrip for the string-keyed variant. */
export function checkStringRoundTrip(impl: StringKeyed, w: Workload, out: Uint8Array): void {
  for (let i = 0; i < w.count; i++) {
    if (!impl.setString(w.keyStrings[i]!, w.values, w.valOff[i]!, w.valLen[i]!)) {
      throw new Error(`${impl.name}: setString of key ${i} failed`);
    }
  }
  for (let i = 0; i < w.count; i++) expectValue(impl.name, i, impl.getString(w.keyStrings[i]!, out), out, w);
  if (impl.getString("absent:key:00000", out) !== -1) throw new Error(`${impl.name}: absent key hit`);
}

function expectValue(name: string, i: number, n: number, out: Uint8Array, w: Workload): void {
  const len = w.valLen[i]!;
  if (n !== len) throw new Error(`${name}: key ${i} returned ${n} bytes, expected ${len}`);
  const off = w.valOff[i]!;
  for (let b = 0; b < len; b++) {
    if (out[b] !== w.values[off + b]) throw new Error(`${name}: key ${i} differs at byte ${b}`);
  }
}
