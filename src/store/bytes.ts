/**
 * copyBytes copies `len` bytes between two `Uint8Array`s, choosing the cheapest way by length.
 *
 * Short ranges (keys, small values) are copied with a plain loop, which the JIT compiles to tight
 * code and which creates no object. Longer ranges use `TypedArray.prototype.set` on a `subarray`
 * view: one short-lived view object buys a native `memmove`, far cheaper than a byte loop once a
 * range passes a few dozen bytes. The crossover was measured with `bench/copy.bench.ts`.
 */
export const COPY_LOOP_MAX = 64;

export function copyBytes(dst: Uint8Array, dstOff: number, src: Uint8Array, srcOff: number, len: number): void {
  if (len <= COPY_LOOP_MAX) {
    for (let i = 0; i < len; i++) dst[dstOff + i] = src[srcOff + i]!;
  } else {
    dst.set(src.subarray(srcOff, srcOff + len), dstOff);
  }
}

/** bytesEqual compares a[aOff, aOff+len) with b[bOff, bOff+len). */
export function bytesEqual(a: Uint8Array, aOff: number, b: Uint8Array, bOff: number, len: number): boolean {
  for (let i = 0; i < len; i++) {
    if (a[aOff + i] !== b[bOff + i]) return false;
  }
  return true;
}
