// LatencyHistogram: a preallocated log-linear histogram of latencies in nanoseconds, so the load
// client records a request with a few integer operations and no allocation.
//
// Layout: one `Float64Array` of BUCKETS counters. Values below 2^SUB_BITS+1 (64 ns) get one bucket
// each; above that, each power of two [2^e, 2^(e+1)) is split into 2^SUB_BITS (32) equal buckets,
// so a bucket is at most 1/32 (~3%) wide relative to its value. Index of v (e = floor(log2 v)):
//   v < 64:  v
//   v >= 64: (e - 5) * 32 + (v >>> (e - 5))        // the shifted value lies in [32, 64)
// Values are clamped to 2^32 - 1 ns (~4.3 s). Child processes ship `sparse()` pairs to the parent,
// which `merge()`s them, so percentiles over several processes are exact to the bucket.

const SUB_BITS = 5;
const LINEAR = 2 << SUB_BITS; // 64
export const BUCKETS = (32 - SUB_BITS) * (1 << SUB_BITS) + LINEAR / 2; // 896
const MAX_NS = 0xffffffff;

/** bucketOf maps a latency in ns to its bucket index (see header). */
export function bucketOf(ns: number): number {
  const v = ns >= MAX_NS ? MAX_NS : ns > 0 ? ns >>> 0 : 0;
  if (v < LINEAR) return v;
  const shift = 31 - Math.clz32(v) - SUB_BITS;
  return (shift << SUB_BITS) + (v >>> shift);
}

/** bucketLow is the smallest latency (ns) that falls into bucket `i`. */
export function bucketLow(i: number): number {
  if (i < LINEAR) return i;
  const shift = (i >>> SUB_BITS) - 1;
  return ((i & ((1 << SUB_BITS) - 1)) + (1 << SUB_BITS)) * 2 ** shift;
}

export class LatencyHistogram {
  readonly counts = new Float64Array(BUCKETS);
  total = 0;

  /** record adds one latency in nanoseconds. */
  record(ns: number): void {
    this.counts[bucketOf(ns)]!++;
    this.total++;
  }

  /** percentile returns the midpoint (ns) of the bucket holding quantile `q` (0..1), or 0 if empty. */
  percentile(q: number): number {
    if (this.total === 0) return 0;
    const rank = Math.max(1, Math.ceil(q * this.total));
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i]!;
      if (seen >= rank) return (bucketLow(i) + (i + 1 < BUCKETS ? bucketLow(i + 1) : MAX_NS)) / 2;
    }
    return MAX_NS;
  }

  /** sparse returns [index, count, index, count, …] for the non-empty buckets. */
  sparse(): number[] {
    const out: number[] = [];
    for (let i = 0; i < BUCKETS; i++) if (this.counts[i]! > 0) out.push(i, this.counts[i]!);
    return out;
  }

  /** merge adds the counts of a `sparse()` list from another histogram. */
  merge(pairs: readonly number[]): void {
    for (let k = 0; k + 1 < pairs.length; k += 2) {
      this.counts[pairs[k]!]! += pairs[k + 1]!;
      this.total += pairs[k + 1]!;
    }
  }
}
