/**
 * collidingKeys makes keys that share one MurmurHash3 x86_32 hash under EVERY seed: the hash
 * flooding a random seed does not stop.
 *
 * A block k enters the state as T(k) = rotl(k * C1, 15) * C2, and the state then becomes
 * F(h) = rotl(h ^ T(k), 13) * 5 + N. Flipping bit 18 of T(k1) flips bit 31 after the rotation, and
 * bit 31 survives the multiply by 5 (odd) and the add; flipping bit 31 of the next block's T(k2)
 * cancels it. So each 8-byte pair has two forms with the same effect on any state, and `pairs`
 * pairs give 2^pairs keys of `pairs * 8` bytes with equal hashes. Key i takes the second form of
 * pair p when bit p of i is set.
 */
const C1 = 0xcc9e2d51;
const C2 = 0x1b873593;

function inverse(c: number): number {
  let x = c; // Newton's iteration for the inverse of an odd number mod 2^32
  for (let i = 0; i < 5; i++) x = Math.imul(x, 2 - Math.imul(c, x));
  return x;
}
const C1_INV = inverse(C1);
const C2_INV = inverse(C2);

const mix = (k: number): number => Math.imul((Math.imul(k, C1) << 15) | (Math.imul(k, C1) >>> 17), C2);
function unmix(t: number): number {
  const k = Math.imul(t, C2_INV);
  return Math.imul((k >>> 15) | (k << 17), C1_INV);
}

export function collidingKeys(pairs: number, count: number): Uint8Array<ArrayBuffer>[] {
  if (count > 2 ** pairs) throw new RangeError(`${pairs} pairs make at most ${2 ** pairs} keys`);
  const out: Uint8Array<ArrayBuffer>[] = [];
  for (let i = 0; i < count; i++) {
    const key = new Uint8Array(pairs * 8);
    const view = new DataView(key.buffer);
    for (let p = 0; p < pairs; p++) {
      let k1 = 0x6b657931 + p; // "key1" + p: any first form works
      let k2 = 0x6b657932 + p;
      if (((i >>> p) & 1) === 1) {
        k1 = unmix(mix(k1) ^ (1 << 18));
        k2 = unmix(mix(k2) ^ (1 << 31));
      }
      view.setInt32(p * 8, k1, true);
      view.setInt32(p * 8 + 4, k2, true);
    }
    out.push(key);
  }
  return out;
}
