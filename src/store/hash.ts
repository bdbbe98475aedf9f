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
  let h = seed | 0;
  let i = off;
  const end4 = off + (len & ~3);
  for (; i < end4; i += 4) {
    let k = buf[i]! | (buf[i + 1]! << 8) | (buf[i + 2]! << 16) | (buf[i + 3]! << 24);
    k = Math.imul(k, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
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
  return h | 0;
}
