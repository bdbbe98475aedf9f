/**
 * RecencyOrder puts a snapshot's items in recency order, coldest first, so that a load, which
 * sets them in file order, rebuilds the LRU order: what was coldest before a restart is evicted
 * first after it, and a node restarted with less memory keeps the hottest items (later items
 * evict earlier ones as the load fills the store). Redis's RDB keeps each key's idle time for the
 * same reason. The file format and the reader are unchanged, so files written before load as
 * they did (in item id order).
 *
 * How, with a writer that runs in slices while the node serves (no sort of the whole table in one
 * turn, no array of items): a first walk over the ids counts the items by age, the store's access
 * tick at the write's start less the item's (`W_ATIME`, one per read, write and store), in a
 * log-linear histogram (BINS: 64 bins per power of two, so each bin's ages are within 1/64 of one
 * another). `split` cuts the ages into at most MAX_BANDS bands of about equal item counts, oldest
 * first; the writer then walks the ids once per band, writing the items of that band. Within a
 * band the order is the id order: the order is kept to within a band, about an eighth of the items.
 *
 * The first band's walk notes each live item's band in `bandOfId` (one byte per item id, the
 * table's size at the start: 1 MiB per million ids, given back when the write ends), so the later
 * walks read a byte per id rather than its record (a walk over the records of 1M items took
 * ~30 ms, which eight walks would have paid again). An item keeps the band it had then: the order is the recency as the
 * write began, and each item is written once, as a single walk wrote it. An id free then (and
 * one past the table's size then) is the last band's: an item set there meanwhile is among the
 * hottest. An id handed to another item after its band's walk is not walked again: like an item
 * set behind a single walk, that item may be missing.
 *
 * Ages are compared as 32-bit differences, as the store's own LRU comparisons are: an item not
 * touched for 2^31 accesses counts as just touched.
 */
import { STRIDE, W_ATIME } from "../store/item-table.ts";

/** MAX_BANDS: the most passes a write makes over a group's ids after the counting one. */
export const MAX_BANDS = 8;
/** BINS: 128 bins for ages 0-127, then 64 for each power of two up to 2^31. */
const BINS = 1664;

/** binOf gives the histogram bin of age `d` (0 <= d < 2^31): higher bins hold older items. */
function binOf(d: number): number {
  if (d < 128) return d;
  const e = 31 - Math.clz32(d);
  return (e - 6) * 64 + (d >>> (e - 6));
}

export class RecencyOrder {
  /** bands is how many walks `split` made of the ages (1 to MAX_BANDS). */
  bands = 1;
  private readonly counts = new Float64Array(BINS);
  /** bandOf[bin] is the band (walk) of the items of that age bin: 0 for the oldest. */
  private readonly bandOf = new Uint8Array(BINS);
  /** bandOfId[id] is 1 + the band of the item at `id` as the first band's walk found it; 0: none then. */
  private bandOfId = new Uint8Array(0);
  private tick = 0;

  /** begin starts the order of a store whose access tick is `tick` now and whose table has `cap` ids. */
  begin(tick: number, cap: number): void {
    this.tick = tick;
    this.counts.fill(0);
    this.bandOfId = new Uint8Array(cap);
    this.bands = 1;
  }

  /** end gives back the bytes of the ids' bands. */
  end(): void {
    this.bandOfId = new Uint8Array(0);
  }

  /** count adds item `id` (records in `w`) to the histogram of ages. */
  count(w: Int32Array, id: number): void {
    const d = (this.tick - w[id * STRIDE + W_ATIME]!) | 0;
    if (d >= 0) this.counts[binOf(d)]!++;
  }

  /** split cuts the counted ages into bands of about equal counts, oldest first, and sets `bands`. */
  split(): void {
    let total = 0;
    for (let b = 0; b < BINS; b++) total += this.counts[b]!;
    let cum = 0;
    let bands = 0;
    let last = -1;
    for (let b = BINS - 1; b >= 0; b--) {
      const c = this.counts[b]!;
      // The band of the bin's middle item, so a bin larger than a band is not cut off early.
      const band = total === 0 ? 0 : Math.min(MAX_BANDS - 1, Math.floor(((cum + c / 2) * MAX_BANDS) / total));
      cum += c;
      if (c > 0 && band !== last) {
        last = band;
        bands++;
      }
      this.bandOf[b] = Math.max(0, bands - 1);
    }
    this.bands = Math.max(1, bands);
  }

  /**
   * first is for the first band's walk, for each live item: it notes the item's band and tells
   * whether it is the first (items touched since the write began are the last band's).
   */
  first(w: Int32Array, id: number): boolean {
    const d = (this.tick - w[id * STRIDE + W_ATIME]!) | 0;
    const band = d < 0 ? this.bands - 1 : this.bandOf[binOf(d)]!;
    if (id < this.bandOfId.length) this.bandOfId[id] = band + 1;
    return band === 0;
  }

  /** due tells whether the walk of `band` (after the first) takes the item at `id`, by the band `first` noted. */
  due(id: number, band: number): boolean {
    const b = id < this.bandOfId.length ? this.bandOfId[id]! : 0;
    return b === 0 ? band === this.bands - 1 : b - 1 === band;
  }
}
