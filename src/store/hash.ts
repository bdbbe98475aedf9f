/**
 * hashBytes hashes a byte range to a signed 32-bit integer without allocating.
 *
 * The function is MurmurHash3's x86 32-bit variant (Austin Appleby, public domain): four bytes per
 * step with `Math.imul`, then the fmix32 finalizer, so every input bit affects every output bit.
 * It is the documented hash for keys everywhere in MyBunCache (store index, admission history,
 * and the cluster ring), and it is seedable so independent tables can use independent hashes.
 * The result is `| 0` so it can be stored in an `Int32Array` as is.
 */
export function hashBytes(buf: Uint8Array, off: number, len: number, seed = 0): number {
  const end4 = off + (len & ~3);
  return murmurFinish(murmurBlocks(seed | 0, buf, off, end4), buf, end4, len) | 0;
}

/**
 * murmurBlocks runs MurmurHash3's block step over buf[i, end) (a multiple of 4 bytes) from state
 * `h`. It and murmurFinish are apart so a caller can hash a shared prefix once and resume from its
 * state (the ring's points, ring-points.ts); hashBytes is the two in a row.
 */
export function murmurBlocks(h: number, buf: Uint8Array, i: number, end: number): number {
  for (; i < end; i += 4) {
    let k = buf[i]! | (buf[i + 1]! << 8) | (buf[i + 2]! << 16) | (buf[i + 3]! << 24);
    k = Math.imul(k, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  return h;
}

/**
 * murmurFinish takes state `h` after the whole blocks of a `len`-byte input whose tail (len & 3
 * bytes) starts at buf[i]: the tail, then the fmix32 finalizer.
 */
export function murmurFinish(h: number, buf: Uint8Array, i: number, len: number): number {
  const rest = len & 3;
  if (rest !== 0) {
    let k = buf[i]!;
    if (rest > 1) k |= buf[i + 1]! << 8;
    if (rest > 2) k |= buf[i + 2]! << 16;
    k = Math.imul(k, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
  }
  h ^= len;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h;
}
