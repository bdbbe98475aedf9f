/**
 * LatencyHistogram holds a node's per-method request figures: a latency histogram, requests,
 * CacheError replies by code, and protocol errors by kind.
 *
 * It is written on the request path, so every figure lives in a typed array allocated in the
 * constructor and `record`, `recordError` and `recordProtocolError` only add to a slot: no
 * object, closure or string per call. The exporter (metrics.ts) reads the arrays at scrape time.
 *
 * Layout. Methods are the ids of protocol/request.ts (0 = unknown, 1..16 = METHOD_NAMES).
 *  - `buckets`: Float64Array of METHOD_COUNT rows × BUCKET_COUNT slots. Slot b < BOUND_COUNT
 *    counts durations in (BOUNDS_NS[b-1], BOUNDS_NS[b]]; the last slot counts the overflow
 *    (> 1 s). Counts are not cumulative here; the exporter accumulates them for `le`.
 *  - `sums`: total nanoseconds per method (Float64: exact up to 2^53 ns, about 104 days).
 *  - `errors`: METHOD_COUNT rows × ERROR_SLOTS, indexed by the IDL ErrorCode (slot 0 unused).
 *  - `protocolErrors`: one slot per TApplicationException type (APP_ERROR).
 * Float64Array rather than Uint32Array: a busy node passes 2^32 requests in a day.
 *
 * Bounds are the 1-2.5-5 series from 10 µs to 1 s (16 bounds): a served hit takes microseconds,
 * a read-through load milliseconds. A duration falls in the first bound it does not exceed,
 * found by a linear scan from the bottom (the common case exits at once).
 */
import { APP_ERROR, ERROR_CODE } from "../protocol/errors.ts";
import { METHOD_NAMES } from "../protocol/request.ts";

/** BOUNDS_SECONDS are the histogram's upper bounds (`le`) in seconds, ascending. */
export const BOUNDS_SECONDS: readonly number[] = Object.freeze([
  0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
]);
export const BOUND_COUNT = BOUNDS_SECONDS.length;
/** BUCKET_COUNT is the bounds plus the overflow slot. */
export const BUCKET_COUNT = BOUND_COUNT + 1;
/** METHOD_COUNT is the number of method ids (unknown included). */
export const METHOD_COUNT = METHOD_NAMES.length;
/** ERROR_SLOTS covers every ErrorCode as an index. */
export const ERROR_SLOTS = Math.max(...Object.values(ERROR_CODE)) + 1;
/** APP_ERROR_SLOTS covers every TApplicationException type as an index. */
export const APP_ERROR_SLOTS = Math.max(...Object.values(APP_ERROR)) + 1;

const BOUNDS_NS = Float64Array.from(BOUNDS_SECONDS, (s) => Math.round(s * 1e9));

export class LatencyHistogram {
  /** buckets[method * BUCKET_COUNT + b] counts requests of `method` in bucket b (not cumulative). */
  readonly buckets = new Float64Array(METHOD_COUNT * BUCKET_COUNT);
  /** sums[method] is the total duration of `method`'s requests, in nanoseconds. */
  readonly sums = new Float64Array(METHOD_COUNT);
  /** counts[method] is the number of `method`'s requests recorded. */
  readonly counts = new Float64Array(METHOD_COUNT);
  /** errors[method * ERROR_SLOTS + code] counts CacheError replies of `method` with `code`. */
  readonly errors = new Float64Array(METHOD_COUNT * ERROR_SLOTS);
  /** protocolErrors[type] counts protocol faults of TApplicationException type `type`. */
  readonly protocolErrors = new Float64Array(APP_ERROR_SLOTS);

  /**
   * record counts one request of `method` that took `nanos` nanoseconds. An id outside 0..16
   * counts as unknown (0); a negative or NaN duration counts as 0.
   */
  record(method: number, nanos: number): void {
    const m = method >= 0 && method < METHOD_COUNT ? method | 0 : 0;
    const d = nanos > 0 ? nanos : 0;
    let b = 0;
    while (b < BOUND_COUNT && d > BOUNDS_NS[b]!) b++;
    this.buckets[m * BUCKET_COUNT + b]!++;
    this.sums[m]! += d;
    this.counts[m]!++;
  }

  /**
   * recordRun counts `count` requests of `method` served back to back in `nanos` together (a run
   * of pipelined calls timed once: call-runs.ts). The sum is exact. Each request took at most the
   * whole run, so when the run fits the first bound (10 µs) every bucket count is exact too;
   * a longer run puts its requests in the bucket of their mean.
   */
  recordRun(method: number, nanos: number, count: number): void {
    const m = method >= 0 && method < METHOD_COUNT ? method | 0 : 0;
    const d = nanos > 0 ? nanos : 0;
    const mean = d / count;
    let b = 0;
    while (b < BOUND_COUNT && mean > BOUNDS_NS[b]!) b++;
    this.buckets[m * BUCKET_COUNT + b]! += count;
    this.sums[m]! += d;
    this.counts[m]! += count;
  }

  /** recordError counts one CacheError reply with IDL code `code` to a request of `method`. */
  recordError(method: number, code: number): void {
    const m = method >= 0 && method < METHOD_COUNT ? method | 0 : 0;
    if (code > 0 && code < ERROR_SLOTS) this.errors[m * ERROR_SLOTS + (code | 0)]!++;
  }

  /** recordProtocolError counts one protocol fault of TApplicationException type `type`. */
  recordProtocolError(type: number): void {
    this.protocolErrors[type >= 0 && type < APP_ERROR_SLOTS ? type | 0 : APP_ERROR.UNKNOWN]!++;
  }

  /** bucket returns the (non-cumulative) count of `method` in slot `b` (BOUND_COUNT = overflow). */
  bucket(method: number, b: number): number {
    return this.buckets[method * BUCKET_COUNT + b]!;
  }

  /** errorCount returns how many CacheError replies with `code` answered `method`. */
  errorCount(method: number, code: number): number {
    return this.errors[method * ERROR_SLOTS + code]!;
  }

  /** checkInvariants throws if a method's buckets do not add up to its count (test use). */
  checkInvariants(): void {
    for (let m = 0; m < METHOD_COUNT; m++) {
      let n = 0;
      for (let b = 0; b < BUCKET_COUNT; b++) n += this.bucket(m, b);
      if (n !== this.counts[m]) throw new Error(`method ${m}: buckets hold ${n}, count is ${this.counts[m]}`);
      if (n === 0 && this.sums[m] !== 0) throw new Error(`method ${m}: a sum without requests`);
    }
  }
}
