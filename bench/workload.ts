/**
 * Workload builds the computed inputs every store benchmark shares: keys as bytes, values as bytes,
 * a Zipf-distributed key sequence and a 90/10 get/set operation sequence, all from a seeded PRNG.
 *
 * Layout: all keys live in one `Uint8Array` arena (`keys`), key i at `i * KEY_BYTES`, so a bench
 * passes (arena, offset, length) exactly as the server passes a slice of its receive buffer. Values
 * live in one random-byte arena; key i's value is `values[valOff[i], valOff[i] + valLen[i])`, with
 * sizes log-uniform between `minValue` and `maxValue` (32 B–2 KiB by default), fixed per key so an
 * overwrite stays in its size class. `keyStrings[i]` is the same key as a latin1 string, built
 * outside the timed part, for the string-keyed rival variants.
 *
 * Zipf: rank r (1-based) has weight r^-s (s = 0.99, as in YCSB); ranks map to key ids through a
 * seeded permutation so hot keys are spread over the arena. Draws are precomputed by binary search
 * over the CDF into `seq` (a power-of-two length, indexed with `& seqMask`), so the timed loop only
 * reads an `Int32Array`.
 */

/** KEY_BYTES is the length of every benchmark key, e.g. `key:000000012345`. */
export const KEY_BYTES = 16;

/** mulberry32 returns a seeded PRNG yielding floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** writeKey writes key `i` as `KEY_BYTES` ASCII bytes into dst at off. */
export function writeKey(dst: Uint8Array, off: number, i: number): void {
  dst[off] = 0x6b; // k
  dst[off + 1] = 0x65; // e
  dst[off + 2] = 0x79; // y
  dst[off + 3] = 0x3a; // :
  let n = i;
  for (let p = off + KEY_BYTES - 1; p >= off + 4; p--) {
    dst[p] = 0x30 + (n % 10);
    n = Math.floor(n / 10);
  }
}

export interface WorkloadOptions {
  keys?: number; // distinct keys (default 100_000)
  zipfS?: number; // Zipf exponent (default 0.99)
  minValue?: number; // smallest value in bytes (default 32)
  maxValue?: number; // largest value in bytes (default 2048)
  seqLength?: number; // precomputed draws, a power of two (default 2^20)
  setRatio?: number; // share of sets in the mix (default 0.1)
  seed?: number; // PRNG seed (default 42)
}

export interface Workload {
  readonly count: number;
  readonly keys: Uint8Array;
  readonly keyStrings: string[];
  readonly values: Uint8Array;
  readonly valOff: Int32Array;
  readonly valLen: Int32Array;
  /** seq[j] is the key id of draw j (Zipf); isSet[j] is 1 when draw j is a set in the mix. */
  readonly seq: Int32Array;
  readonly isSet: Uint8Array;
  readonly seqMask: number;
  /** totalValueBytes is the sum of every key's value length; totalKeyBytes likewise for keys. */
  readonly totalValueBytes: number;
  readonly totalKeyBytes: number;
  readonly seed: number;
}

export function buildWorkload(opts: WorkloadOptions = {}): Workload {
  const count = opts.keys ?? 100_000;
  const s = opts.zipfS ?? 0.99;
  const minV = opts.minValue ?? 32;
  const maxV = opts.maxValue ?? 2048;
  const seqLength = opts.seqLength ?? 1 << 20;
  const setRatio = opts.setRatio ?? 0.1;
  const seed = opts.seed ?? 42;
  if ((seqLength & (seqLength - 1)) !== 0) throw new RangeError("seqLength must be a power of two");
  const rand = mulberry32(seed);

  const keys = new Uint8Array(count * KEY_BYTES);
  const keyStrings: string[] = new Array(count);
  const latin1 = new TextDecoder("latin1");
  for (let i = 0; i < count; i++) {
    writeKey(keys, i * KEY_BYTES, i);
    keyStrings[i] = latin1.decode(keys.subarray(i * KEY_BYTES, (i + 1) * KEY_BYTES));
  }

  const valLen = new Int32Array(count);
  const valOff = new Int32Array(count);
  const logRange = Math.log(maxV / minV);
  let total = 0;
  for (let i = 0; i < count; i++) {
    valLen[i] = Math.round(minV * Math.exp(rand() * logRange));
    total += valLen[i]!;
  }
  // Values share one random arena of maxValue * 64 bytes; offsets are random, so distinct keys
  // usually carry distinct bytes and a wrong-key read fails the correctness check.
  const arena = new Uint8Array(maxV * 64);
  for (let i = 0; i < arena.length; i++) arena[i] = (rand() * 256) | 0;
  for (let i = 0; i < count; i++) valOff[i] = Math.floor(rand() * (arena.length - valLen[i]!));

  // Zipf CDF over ranks, then a seeded permutation rank -> key id.
  const cdf = new Float64Array(count);
  let acc = 0;
  for (let r = 0; r < count; r++) cdf[r] = acc += 1 / Math.pow(r + 1, s);
  const perm = new Int32Array(count);
  for (let i = 0; i < count; i++) perm[i] = i;
  for (let i = count - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    const t = perm[i]!;
    perm[i] = perm[j]!;
    perm[j] = t;
  }
  const seq = new Int32Array(seqLength);
  const isSet = new Uint8Array(seqLength);
  for (let j = 0; j < seqLength; j++) {
    const u = rand() * acc;
    let lo = 0;
    let hi = count - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cdf[mid]! >= u) hi = mid;
      else lo = mid + 1;
    }
    seq[j] = perm[lo]!;
    isSet[j] = rand() < setRatio ? 1 : 0;
  }
  return {
    count, keys, keyStrings, values: arena, valOff, valLen, seq, isSet, seqMask: seqLength - 1,
    totalValueBytes: total, totalKeyBytes: count * KEY_BYTES, seed,
  };
}
