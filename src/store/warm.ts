/**
 * warmKeys brings the memory that `Store.get` of a batch of keys will read into the CPU cache,
 * with the loads of the whole batch in flight together.
 *
 * A hit reads three things that depend on each other: the index slot (→ item id; the slot keeps
 * the key's hash, so the right slot of a probe chain is found in the index alone), the item's
 * record (→ slab page, offset, lengths, expiry), then the chunk (key bytes to compare, value to copy). When
 * the working set is larger than the CPU cache, each is a miss, and one `get` waits for them in
 * turn: the three misses cost more than the rest of serving the request. Served one request at a
 * time, the CPU cannot overlap the misses of two keys: the decode and reply code between two gets
 * is far longer than it can run ahead over. Here each step is done for all keys of the batch in
 * its own short loop (all hashes, then all slots, then all records, then all chunks), so the
 * misses of one step overlap across keys, and the gets that follow hit in cache.
 *
 * It only reads: no counter, LRU position, flag or expiry changes, and a key that is absent,
 * shares its hash with another key, or was replaced in between costs a wasted load, never a wrong answer (the
 * get that follows does the real lookup). The scratch arrays are shared by every store: warming is
 * synchronous, and nothing allocates. Values are warmed up to WARM_VALUE_BYTES; a longer value's
 * copy streams, which the CPU's own prefetcher handles. The sum of the bytes read is returned, so
 * the caller can keep it and the loads cannot be optimised away.
 */
import { CHUNK_HEADER } from "./slab-allocator.ts";
import { hashBytes } from "./hash.ts";
import { F_EXPIRY, KEY_SHIFT, NIL, STRIDE, W_CLASS, W_OFF, W_PAGE, W_VALLEN } from "./item-table.ts";
import type { Store } from "./store.ts";

/** WARM_MAX is the most keys warmed per call; a longer batch warms its first WARM_MAX. */
export const WARM_MAX = 64;
/** WARM_VALUE_BYTES bounds how much of each chunk is touched (one load per 64-byte line). */
const WARM_VALUE_BYTES = 512;
const LINE = 64;
/** EXPIRY_WORD is the first 32-bit word of a record's float64 expiry. */
const EXPIRY_WORD = F_EXPIRY * 2;

const pageOf = new Int32Array(WARM_MAX);
const offOf = new Int32Array(WARM_MAX);
const lenOf = new Int32Array(WARM_MAX);
const hashOf = new Int32Array(WARM_MAX);

/**
 * warmKeys warms `store` for the keys `ranges[(first + i) * stride + keyAt]` (start) and `+ 1`
 * (length) into `buf`, for i < count. Each key's hash (the store's, for `Store.getHit`) goes to
 * `hashes[first + i]` when `hashes` is given. Returns the sum of the bytes it read.
 */
export function warmKeys(
  store: Store, buf: Uint8Array, ranges: Int32Array, first: number, count: number, stride: number, keyAt: number,
  hashes: Int32Array | null = null,
): number {
  const n = count < WARM_MAX ? count : WARM_MAX;
  const index = store.index;
  const mask = index.mask;
  const seed = store.hashSeed;
  for (let i = 0; i < n; i++) {
    const o = (first + i) * stride + keyAt;
    hashOf[i] = hashBytes(buf, ranges[o]!, ranges[o + 1]!, seed);
    offOf[i] = hashOf[i]! & mask; // the home slot
  }
  if (hashes !== null) for (let i = 0; i < n; i++) hashes[first + i] = hashOf[i]!;
  const slots = index.slots;
  for (let i = 0; i < n; i++) {
    // The id of the first slot of the key's probe chain that carries its hash (the index keeps
    // the hashes), or NIL: slots are adjacent, so this walks index lines only.
    const hash = hashOf[i]!;
    let s = offOf[i]!;
    let id = slots[2 * s + 1]!;
    while (id !== NIL && slots[2 * s] !== hash) {
      s = (s + 1) & mask;
      id = slots[2 * s + 1]!;
    }
    pageOf[i] = id;
  }
  const w = store.items.w;
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const id = pageOf[i]!;
    if (id === NIL) continue;
    const r = id * STRIDE;
    pageOf[i] = w[r + W_PAGE]!;
    offOf[i] = w[r + W_OFF]!;
    lenOf[i] = CHUNK_HEADER + (w[r + W_CLASS]! >>> KEY_SHIFT) + w[r + W_VALLEN]!;
    // The expiry, which the get reads next: a 40-byte record starting past byte 24 of a line
    // has it on the next line (half of them).
    sum += w[r + EXPIRY_WORD]!;
  }
  const pages = store.slab.pages;
  for (let i = 0; i < n; i++) {
    const page = pageOf[i]! >= 0 ? pages[pageOf[i]!] : undefined;
    if (page === undefined) continue;
    const start = offOf[i]!;
    const len = lenOf[i]! < WARM_VALUE_BYTES ? lenOf[i]! : WARM_VALUE_BYTES;
    const end = Math.min(start + len, page.length);
    for (let p = start; p < end; p += LINE) sum += page[p]!;
    if (end > start) sum += page[end - 1]!;
  }
  return sum;
}
