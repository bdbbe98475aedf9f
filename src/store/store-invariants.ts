/**
 * checkStoreInvariants verifies that every structure of a Store agrees with every other one.
 *
 * O(items + pages + chunks): for tests only (the store exposes it as `checkInvariants()`). It
 * throws an Error naming the first violated invariant:
 * - memory: page bytes + metadata <= capacity; only assigned pages hold memory; at least one page
 *   may be assigned; chunk bytes of live items == the running total;
 * - items: each live item sits in a chunk of its page's class that names it as owner, inside the
 *   carved part of the page; its stored key hashes to its hash; the index finds it by its key;
 * - index: counts exactly the live items, each once; the negative count is that of the flagged ones;
 *   it has the slots the table's size calls for; a doubled table being built holds exactly the
 *   entries of the old table's slots below its cursor (and those it copied early), each reachable
 *   (checkIndexBuild);
 * - free ids: the chain holds every dead id once, and no live one (while a shrink is under way,
 *   only those below the size it is taking the table to);
 * - LRU: each class list is a consistent doubly-linked list of live items of that class, and the
 *   lists together hold every live item;
 * - heap: the heap property holds, positions agree, and exactly the items with a finite expiry are
 *   in it with that expiry; its slot array is no longer than the table or its reservation;
 * - slab: free lists hold only chunks marked free, of their class; no chunk is both free and live;
 *   per-page and per-class used counts and the empty-page count match.
 */
import { hashBytes } from "./hash.ts";
import { type HashIndex, MAX_LOAD, MAX_SAME_HASH, slotsFor } from "./hash-index.ts";
import { NIL, STRIDE, W_HEAP } from "./item-table.ts";
import { CHUNK_HEADER } from "./slab-allocator.ts";
import type { Store } from "./store.ts";

export function checkStoreInvariants(s: Store, chunkBytes: number, dataBytes: number): void {
  const fail = (msg: string): never => {
    throw new Error(`store invariant violated: ${msg}`);
  };
  const { items, slab, lru, heap, index, classes } = s;
  const pageBytes = slab.pagesAssigned * slab.pageSize;
  if (pageBytes + s.metaBytes() > s.capacity) fail(`pages ${pageBytes} + meta ${s.metaBytes()} > capacity ${s.capacity}`);
  // Memory really held: only assigned pages have bytes (pool pages were never made or were dropped).
  let held = 0;
  for (let p = 0; p < slab.maxPages; p++) if (slab.pages[p] !== undefined) held++;
  if (held !== slab.pagesAssigned) fail(`${held} pages hold memory, ${slab.pagesAssigned} are assigned`);
  if (slab.pageLimit < 1) fail(`page limit ${slab.pageLimit}: no page could ever be assigned`);

  let live = 0;
  let negatives = 0;
  let sumChunk = 0;
  let sumData = 0;
  const pageUsed = new Int32Array(slab.maxPages);
  const keyHash = new Int32Array(items.cap); // each live item's key hash, from its bytes
  const classUsed = new Int32Array(classes.count);
  for (let id = 0; id < items.cap; id++) {
    if (!items.isLive(id)) continue;
    live++;
    if (items.isNegative(id)) negatives++;
    const page = items.page(id);
    const off = items.off(id);
    const cls = slab.pageClass[page]!;
    if (cls < 0) fail(`item ${id} on unassigned page ${page}`);
    if (items.cls(id) !== cls) fail(`item ${id} class ${items.cls(id)} != its page's class ${cls}`);
    const size = classes.sizes[cls]!;
    if (off % size !== 0 || off / size >= slab.pageCarved[page]!) fail(`item ${id} at bad offset ${off} of page ${page}`);
    if (slab.owner(page, off) !== id) fail(`chunk ${page}:${off} owner ${slab.owner(page, off)} != item ${id}`);
    const klen = items.keyLen(id);
    const vlen = items.valLen(id);
    if (CHUNK_HEADER + klen + vlen > size) fail(`item ${id} overflows its chunk`);
    const bytes = slab.pages[page]!;
    keyHash[id] = hashBytes(bytes, off + CHUNK_HEADER, klen, s.hashSeed);
    if (index.find(bytes, off + CHUNK_HEADER, klen, keyHash[id]!) !== id) fail(`index does not find item ${id}`);
    const exp = items.expiry(id);
    const pos = items.w[id * STRIDE + W_HEAP]!;
    if (exp === Infinity) {
      if (pos !== NIL) fail(`item ${id} without expiry is in the heap`);
    } else if (pos < 0 || pos >= heap.size || heap.slots[pos] !== id) {
      fail(`item ${id} expiry ${exp} not in heap`);
    }
    pageUsed[page]!++;
    classUsed[cls]!++;
    sumChunk += size;
    sumData += klen + vlen;
  }
  if (live !== items.live) fail(`live count ${items.live} != ${live}`);
  if (negatives !== s.negatives) fail(`negative count ${s.negatives} != ${negatives}`);
  if (sumChunk !== chunkBytes) fail(`chunk bytes ${chunkBytes} != sum ${sumChunk}`);
  if (sumData !== dataBytes) fail(`data bytes ${dataBytes} != sum ${sumData}`);
  if (sumChunk > pageBytes) fail(`chunk bytes ${sumChunk} exceed page bytes ${pageBytes}`);

  let indexed = 0;
  const seen = new Uint8Array(items.cap);
  const perHash = new Map<number, number>();
  for (let i = 0; i < index.slotCount; i++) {
    const id = index.slots[2 * i + 1]!;
    if (id === NIL) continue;
    if (!items.isLive(id)) fail(`index slot ${i} holds dead item ${id}`);
    if (index.slots[2 * i] !== keyHash[id]) fail(`index slot ${i} keeps a hash that is not item ${id}'s key's`);
    // Reachable: no empty slot between the item's home slot and its own (a probe stops at one).
    for (let s = keyHash[id]! & index.mask; s !== i; s = (s + 1) & index.mask) {
      if (index.slots[2 * s + 1] === NIL) fail(`item ${id} in slot ${i} cannot be reached: slot ${s} before it is empty`);
    }
    if (seen[id]) fail(`item ${id} indexed twice`);
    seen[id] = 1;
    const sharing = (perHash.get(keyHash[id]!) ?? 0) + 1;
    if (sharing > MAX_SAME_HASH) fail(`${sharing} items share hash ${keyHash[id]}, past MAX_SAME_HASH`);
    perHash.set(keyHash[id]!, sharing);
    indexed++;
  }
  if (indexed !== live || index.count !== live) fail(`index holds ${indexed} (count ${index.count}), live ${live}`);
  // Larger only until a shrink's smaller index is built (table-shrink.ts).
  if (index.slotCount < slotsFor(items.cap)) fail(`index has ${index.slotCount} slots, a table of ${items.cap} ids calls for ${slotsFor(items.cap)}`);
  checkIndexBuild(index);

  const chainEnd = items.shrinkingTo !== 0 ? items.shrinkingTo : items.cap;
  // Free ids in [scanAt, scanTo) wait for the scan (ItemTable.scanFree), unchained.
  const { scanAt, scanTo } = items;
  const chainable = (id: number): boolean => id < chainEnd && (id < scanAt || id >= scanTo);
  if (scanAt > scanTo || scanTo > items.cap) fail(`scan range [${scanAt}, ${scanTo}) in a table of ${items.cap}`);
  if (items.shrinkingTo !== 0) {
    // The scan would chain (and hand out) an id at or above the new size; a smaller index is
    // built only between shrinks of the table (TableShrink.step), never while items move.
    if (scanTo > items.shrinkingTo) fail(`ids up to ${scanTo} wait for the scan, the table shrinks to ${items.shrinkingTo}`);
    if (index.buildingSmaller) fail("a shrink under way while a smaller index is being built");
  }
  const chained = new Uint8Array(items.cap);
  let free = 0;
  items.forEachFree((id) => {
    if (id < 0 || !chainable(id)) fail(`free id ${id} is outside [0, ${chainEnd}) or in the scan's [${scanAt}, ${scanTo})`);
    if (items.isLive(id)) fail(`live item ${id} is on the free chain`);
    if (chained[id]) fail(`free id ${id} chained twice`);
    chained[id] = 1;
    free++;
  });
  let dead = 0;
  if (items.top > items.cap) fail(`ids up to ${items.top} handed out, the table has ${items.cap}`);
  // Ids from `top` up are free without being chained (none was handed out since a growth or reset).
  for (let id = 0; id < Math.min(chainEnd, items.top); id++) if (chainable(id) && !items.isLive(id)) dead++;
  if (free !== dead) fail(`the free chain holds ${free} ids, ${dead} below ${chainEnd} are dead`);

  let listed = 0;
  for (let c = 0; c < classes.count; c++) {
    let prev = NIL;
    let n = 0;
    for (let id = lru.head[c]!; id !== NIL; id = lru.next(id)) {
      if (!items.isLive(id)) fail(`LRU ${c} holds dead item ${id}`);
      if (items.cls(id) !== c) fail(`item ${id} in LRU ${c} but its class differs`);
      if (lru.prev(id) !== prev) fail(`LRU ${c} prev link of ${id} broken`);
      prev = id;
      if (++n > live) fail(`LRU ${c} has a cycle`);
    }
    if (lru.tail[c] !== prev) fail(`LRU ${c} tail ${lru.tail[c]} != ${prev}`);
    if (lru.length[c] !== n) fail(`LRU ${c} length ${lru.length[c]} != ${n}`);
    listed += n;
  }
  if (listed !== live) fail(`LRU lists hold ${listed}, live ${live}`);

  if (heap.size > items.cap) fail(`heap holds ${heap.size} items, more than the table's ${items.cap} ids`);
  if (heap.slots.length > Math.max(items.cap, items.reserved)) fail(`heap slot array ${heap.slots.length} longer than the table's ${items.cap} ids and its reservation`);
  for (let i = 0; i < heap.size; i++) {
    const id = heap.slots[i]!;
    if (!items.isLive(id)) fail(`heap holds dead item ${id}`);
    const pos = items.w[id * STRIDE + W_HEAP]!;
    if (pos !== i) fail(`heap pos of ${id} is ${pos}, not ${i}`);
    if (i > 0 && items.expiry(heap.slots[(i - 1) >> 1]!) > items.expiry(id)) fail(`heap order broken at ${i}`);
  }

  let empty = 0;
  for (let p = 0; p < slab.maxPages; p++) {
    const cls = slab.pageClass[p]!;
    if (cls === NIL) {
      if (slab.pageUsed[p] !== 0) fail(`pool page ${p} has used chunks`);
      continue;
    }
    if (slab.pageUsed[p] !== pageUsed[p]) fail(`page ${p} used ${slab.pageUsed[p]} != ${pageUsed[p]}`);
    if (slab.pageCarved[p]! > slab.chunksPerPage(cls)) fail(`page ${p} over-carved`);
    if (pageUsed[p] === 0 && slab.isFullyCarved(p)) empty++;
  }
  if (empty !== slab.emptyPages) fail(`empty pages ${slab.emptyPages} != ${empty}`);

  for (let c = 0; c < classes.count; c++) {
    if (slab.classUsed[c] !== classUsed[c]) fail(`class ${c} used ${slab.classUsed[c]} != ${classUsed[c]}`);
    let free = 0;
    slab.forEachFree(c, (page, off) => {
      if (slab.pageClass[page] !== c) fail(`free chunk ${page}:${off} of class ${c} on a page of class ${slab.pageClass[page]}`);
      if (slab.owner(page, off) !== NIL) fail(`chunk ${page}:${off} is both free and owned by ${slab.owner(page, off)}`);
      free++;
    });
    if (free !== slab.freeCount[c]) fail(`class ${c} free count ${slab.freeCount[c]} != ${free}`);
    let chunks = 0;
    for (let p = 0; p < slab.maxPages; p++) if (slab.pageClass[p] === c) chunks += slab.pageCarved[p]!;
    if (chunks !== classUsed[c]! + free) fail(`class ${c}: carved ${chunks} != used ${classUsed[c]} + free ${free}`);
  }
}

/**
 * checkIndexBuild verifies the table an index is building (doubled, or smaller for a shrink), if any (hash-index.ts): each of
 * its entries is in the old table with the same hash, once, and reachable from its home slot;
 * every entry of the old table at a slot below the cursor is in it; before it is filled, it is
 * used for nothing (cursor 0). Throws naming the first violation.
 */
export function checkIndexBuild(index: HashIndex): void {
  const fail = (msg: string): never => {
    throw new Error(`index build invariant violated: ${msg}`);
  };
  const next = index.next;
  if (next.length === 0) return;
  const nextSlots = next.length / 2;
  if (nextSlots !== 2 * index.slotCount && (nextSlots >= index.slotCount || (nextSlots & (nextSlots - 1)) !== 0)) {
    fail(`the table being built has ${nextSlots} slots: neither twice ${index.slotCount} nor a smaller power of two`);
  }
  if (nextSlots < index.slotCount && index.count > nextSlots * MAX_LOAD) fail(`the smaller table being built cannot hold ${index.count} entries`);
  if (index.filled < next.length) {
    if (index.cursor !== 0) fail(`cursor ${index.cursor} before the table being built is filled`);
    for (let i = 1; i < index.filled; i += 2) if (next[i] !== NIL) fail(`slot ${(i - 1) / 2} holds an entry before the copy began`);
    return;
  }
  const old = new Map<number, number>(); // id -> hash in the old table
  const oldSlot = new Map<number, number>();
  for (let s = 0; s < index.slotCount; s++) {
    const id = index.slots[2 * s + 1]!;
    if (id === NIL) continue;
    old.set(id, index.slots[2 * s]!);
    oldSlot.set(id, s);
  }
  const mask = index.nextMask;
  const inNext = new Set<number>();
  for (let s = 0; s <= mask; s++) {
    const id = next[2 * s + 1]!;
    if (id === NIL) continue;
    const hash = next[2 * s]!;
    if (old.get(id) !== hash) fail(`the table being built holds item ${id} (hash ${hash}) that the old one does not`);
    if (inNext.has(id)) fail(`the table being built holds item ${id} twice`);
    inNext.add(id);
    for (let h = hash & mask; h !== s; h = (h + 1) & mask) {
      if (next[2 * h + 1] === NIL) fail(`item ${id} in slot ${s} of the table being built cannot be reached`);
    }
  }
  for (const [id, s] of oldSlot) {
    if (s < index.cursor && !inNext.has(id)) fail(`item ${id} at old slot ${s}, below the cursor ${index.cursor}, is not in the table being built`);
  }
}
