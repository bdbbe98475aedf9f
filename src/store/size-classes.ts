/**
 * SizeClasses is the table of slab chunk sizes, memcached style.
 *
 * Chunk sizes start at `minChunk` and grow by `factor`, each rounded up to 8 bytes so every chunk
 * starts 8-byte aligned inside its page (the chunk header is read through an `Int32Array`). The
 * last class is `maxChunk`, the largest item the store accepts (`maxItem`) rounded up to 8, which
 * is also at most the page size. With the page size given, a class of half a page (rounded down
 * to 8) is added when the largest item is more than that: as memcached's largest chunk class
 * (`slab_chunk_max`) is. Without it an item just under half a page took the ×1.25 class above
 * it, over half a page, and so a page of its own: 1 MiB pages held one item of 0.45 MiB each
 * (63 in 64 MiB, memcached 128; `bun bench/large-items.ts`). `classFor(n)` answers in O(1) for items up to 64 KiB through a
 * byte lookup table and by binary search above that; -1 means larger than `maxItem` (not the
 * rounded chunk: a store told 1001 bytes took items of up to 1008).
 */
const LOOKUP_LIMIT = 64 * 1024;

export class SizeClasses {
  /** sizes holds each class's chunk size in bytes, ascending. */
  readonly sizes: Int32Array;
  readonly count: number;
  readonly maxChunk: number;
  /** maxItem is the largest item accepted (header + key + value): the `maxChunk` asked for, before rounding. */
  readonly maxItem: number;
  private readonly lookup: Uint8Array;

  /** `pageSize` 0: no half-page class (see the header). */
  constructor(minChunk: number, factor: number, maxChunk: number, pageSize = 0) {
    if (!(factor > 1)) throw new RangeError(`size class factor must be > 1, got ${factor}`);
    const min = align8(Math.max(16, minChunk));
    const max = align8(maxChunk);
    if (min > max) throw new RangeError(`smallest chunk ${min} exceeds largest ${max}`);
    const sizes: number[] = [];
    let size = min;
    while (size < max) {
      sizes.push(size);
      size = Math.max(size + 8, align8(Math.ceil(size * factor)));
    }
    sizes.push(max);
    const half = Math.floor(pageSize / 2) & ~7;
    if (half >= min && half < max && !sizes.includes(half)) {
      sizes.push(half);
      sizes.sort((a, b) => a - b);
    }
    if (sizes.length > 255) throw new RangeError(`too many size classes (${sizes.length}); raise the factor`);
    this.sizes = Int32Array.from(sizes);
    this.count = sizes.length;
    this.maxChunk = max;
    this.maxItem = maxChunk;
    const limit = Math.min(LOOKUP_LIMIT, max);
    this.lookup = new Uint8Array((limit >> 3) + 1);
    let cls = 0;
    for (let slot = 0; slot < this.lookup.length; slot++) {
      while (this.sizes[cls]! < slot << 3) cls++;
      this.lookup[slot] = cls;
    }
  }

  /** byteSize is what the class table takes: its sizes and its lookup table (8 KiB for items of 64 KiB and over). */
  byteSize(): number {
    return this.sizes.byteLength + this.lookup.byteLength;
  }

  /** classFor returns the smallest class whose chunk holds `bytes`, or -1 if none does. */
  classFor(bytes: number): number {
    if (bytes > this.maxItem) return -1;
    if (bytes < LOOKUP_LIMIT) return this.lookup[(bytes + 7) >> 3]!;
    let lo = 0;
    let hi = this.count - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.sizes[mid]! >= bytes) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }
}

export function align8(n: number): number {
  return (n + 7) & ~7;
}
