/**
 * The ring's memory layout, and the two ways it is built: from members' points (`buildCells`)
 * and from a ring and the cells of a few new members (`mergeCells`). Ring (ring.ts) only reads it.
 *
 * With B bits (`cellBits`), the circle is cut into 2^B equal arcs (buckets) and a point is a
 * cell of one Uint32: the point shifted up by B (its top B bits are the bucket's, and fall out)
 * above its owner's index in the low B bits: `(point << B | owner) >>> 0`. Cells are sorted by
 * bucket, then by value, which is the order by point, then by owner: the ring's order (ring.ts).
 * `buckets[b]` is the index of bucket b's first cell, `buckets[2^B]` the count. A key at `pos`
 * looks in bucket pos >>> (32 − B) for the first cell ≥ pos << B. 4 bytes a point, where a Uint32
 * point and an Int32 owner took 8: 41 MB at 1,024 members and 10,000 vnodes, and a lookup's
 * binary search ends in the array it searched.
 *
 * B is 12 (4,096 buckets, 16 KB) up to 4,096 members, then the owner's bits: at most 16, so a
 * ring holds at most 65,536 members.
 */
import type { RingHash } from "./ring.ts";
import { writePoints } from "./ring-points.ts";

/** MIN_CELL_BITS: 4,096 buckets unless the owners need more bits. */
const MIN_CELL_BITS = 12;
/** MAX_CELL_BITS bounds the members of a ring to 65,536. */
const MAX_CELL_BITS = 16;

/** cellBitsFor returns B for a ring of `members` members; RangeError past 65,536. */
export function cellBitsFor(members: number): number {
  const ownerBits = members <= 1 ? 0 : 32 - Math.clz32(members - 1);
  if (ownerBits > MAX_CELL_BITS) throw new RangeError(`ring: at most ${2 ** MAX_CELL_BITS} members, got ${members}`);
  return Math.max(MIN_CELL_BITS, ownerBits);
}

/**
 * buildCells derives the points of `ids` (ids[j] has counts[j] points, and is owner owners[j] <
 * 2^`bits`) and returns them as sorted cells of B = `bits`, with the bucket starts.
 *
 * The points are derived twice: once to count them by region (their top R bits), once to write
 * each straight to its region's next free cell, as a cell of R bits; no array of raw points is
 * ever held (41 MB for 10 M points): the cells are the only big array. Each region is sorted as
 * Uint32s, then its cells are rewritten as B-bit cells in one sequential pass. R ≤ B leaves a
 * region ~REGION_CELLS cells: Bun sorts a typed array of a few hundred ~5x slower per element
 * than one of thousands (4,096 buckets of 312 cells at 128 members: ~35 ms to sort). R must still
 * leave room for the owner. (Sorting doubles took ~0.5 s and 82 MB for 10 M points; moving points
 * in place along permutation cycles ~0.4 s, each step waiting for the last one's load.)
 */
export function buildCells(
  hash: RingHash, ids: readonly string[], counts: Int32Array, owners: Int32Array, bits: number,
): { cells: Uint32Array; buckets: Int32Array } {
  let n = 0;
  let most = 0;
  let ownerBits = 0;
  for (let j = 0; j < ids.length; j++) {
    n += counts[j]!;
    most = Math.max(most, counts[j]!);
    ownerBits = Math.max(ownerBits, 32 - Math.clz32(owners[j]!));
  }
  const rBits = Math.min(bits, Math.max(1, ownerBits, Math.floor(Math.log2(Math.max(1, n / REGION_CELLS)))));
  const shift = 32 - rBits;
  const regions = new Int32Array(2 ** rBits + 1);
  const scratch = new Uint32Array(most);
  for (let j = 0; j < ids.length; j++) {
    const r = counts[j]!;
    writePoints(hash, ids[j]!, r, scratch, 0);
    for (let k = 0; k < r; k++) regions[(scratch[k]! >>> shift) + 1]!++;
  }
  for (let t = 1; t < regions.length; t++) regions[t]! += regions[t - 1]!;
  const next = regions.slice(0, regions.length - 1);
  const cells = new Uint32Array(n);
  for (let j = 0; j < ids.length; j++) {
    const r = counts[j]!;
    const o = owners[j]!;
    writePoints(hash, ids[j]!, r, scratch, 0);
    for (let k = 0; k < r; k++) {
      const v = scratch[k]!;
      cells[next[v >>> shift]!++] = ((v << rBits) | o) >>> 0;
    }
  }
  sortRuns(cells, regions);
  return { cells, buckets: rBits === bits ? regions : toBuckets(cells, regions, rBits, bits) };
}

/** REGION_CELLS: the cells of a region buildCells aims at (see there). */
const REGION_CELLS = 1024;

/**
 * toBuckets rewrites sorted cells of `rBits` (regions) as cells of `bits`, in place, and returns
 * the bucket starts: a region's low bits hold the bucket's, so a bucket lies within one region.
 */
function toBuckets(cells: Uint32Array, regions: Int32Array, rBits: number, bits: number): Int32Array {
  const ownerMask = 2 ** rBits - 1;
  const shift = 32 - bits;
  const perRegion = 2 ** (bits - rBits);
  const nb = 2 ** bits;
  const buckets = new Int32Array(nb + 1);
  for (let t = 0, i = 0; t < regions.length - 1; t++) {
    const first = t * perRegion + 1;
    for (const end = regions[t + 1]!; i < end; i++) {
      const c = cells[i]!;
      const low = c >>> rBits; // the point's low 32 − rBits bits
      buckets[first + (low >>> shift)]!++;
      cells[i] = ((low << bits) | (c & ownerMask)) >>> 0;
    }
  }
  for (let b = 0; b < nb; b++) buckets[b + 1]! += buckets[b]!;
  return buckets;
}

/** sortRuns sorts cells[starts[t], starts[t + 1]) for each t (insertion sort for a few, the native sort past that). */
function sortRuns(cells: Uint32Array, starts: Int32Array): void {
  for (let b = 0; b < starts.length - 1; b++) {
    const lo = starts[b]!;
    const hi = starts[b + 1]!;
    if (hi - lo > 16) {
      cells.subarray(lo, hi).sort();
      continue;
    }
    for (let i = lo + 1; i < hi; i++) {
      const c = cells[i]!;
      let j = i - 1;
      for (; j >= lo && cells[j]! > c; j--) cells[j + 1] = cells[j]!;
      cells[j + 1] = c;
    }
  }
}

/**
 * mergeCells writes to `out` the kept cells of `cells` (bucket starts `buckets`), their owners
 * renumbered by `remap` (−1: dropped; increasing over the kept, so their order holds), merged
 * with the sorted `fresh` cells (starts `freshBuckets`), all of B = `bits`. Returns the new
 * bucket starts.
 */
export function mergeCells(
  cells: Uint32Array, buckets: Int32Array, remap: Int32Array, fresh: Uint32Array, freshBuckets: Int32Array, bits: number, out: Uint32Array,
): Int32Array {
  const nb = 2 ** bits;
  const ownerMask = nb - 1;
  const starts = new Int32Array(nb + 1);
  let w = 0;
  for (let b = 0; b < nb; b++) {
    starts[b] = w;
    let f = freshBuckets[b]!;
    const fEnd = freshBuckets[b + 1]!;
    for (let i = buckets[b]!, end = buckets[b + 1]!; i < end; i++) {
      const c = cells[i]!;
      const o = remap[c & ownerMask]!;
      if (o < 0) continue;
      const kept = c - (c & ownerMask) + o;
      for (; f < fEnd && fresh[f]! < kept; f++) out[w++] = fresh[f]!;
      out[w++] = kept;
    }
    for (; f < fEnd; f++) out[w++] = fresh[f]!;
  }
  starts[nb] = w;
  return starts;
}
