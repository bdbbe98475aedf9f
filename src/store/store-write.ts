/**
 * put and rewrite store an item in a store: its set, setNegative, fill and overwrite call them
 * directly, as they called their own private methods.
 *
 * `put` is the whole write: the ttl and the size class checked, the key looked up (an expired
 * item there removed), LRU-K admission for a fill of a new key, then the value rewritten in place
 * when its class is the same, or else a new item: the one it replaces or one among the most keys
 * of its hash removed, an id and a chunk from the StoreRoom (store-room.ts), the record, key and
 * value written, the index, LRU and TTL heap told, the tallies raised. `rewrite` is the in-place
 * case, and `setExpiry` keeps the TTL heap in step with an item's expiry.
 *
 * They allocate nothing: no object or closure per call, the store's arrays read through the same
 * fields as before.
 */
import { copyBytes } from "../bytes/bytes.ts";
import { hashBytes } from "./hash.ts";
import { CLASS_MASK, F_EXPIRY, F_STRIDE, FLAG_NEGATIVE, FLAG_REFERENCED, KEY_SHIFT, NIL, STRIDE, W_ATIME, W_CLASS, W_OFF, W_PAGE, W_VALLEN, type ItemId } from "./item-table.ts";
import { CHUNK_HEADER } from "./slab-allocator.ts";
import { MAX_KEY_BYTES, SET_INVALID_TTL, SET_NO_MEMORY, SET_OK, SET_REJECTED, SET_TOO_LARGE, type SetResult } from "./store-api.ts";
import { REMOVE_COLLISION, REMOVE_EXPIRE_LAZY, REMOVE_EXPIRE_READ, REMOVE_REPLACE, removeItem } from "./store-removal.ts";
import type { Store } from "./store.ts";

/** What `put` does: a set (always stored), a fill that counts as an access (LRU-K), a fill whose access was counted. */
export const PUT_SET = 0;
export const PUT_FILL = 1;
export const PUT_FILL_COUNTED = 2;

export function put(
  store: Store, key: Uint8Array, keyOff: number, keyLen: number,
  value: Uint8Array, valOff: number, valLen: number, ttlMs: number, how: number, flags: number,
): SetResult {
  const isFill = how !== PUT_SET;
  if (!(ttlMs >= 0)) return SET_INVALID_TTL;
  let cls = keyLen > MAX_KEY_BYTES ? -1 : store.classes.classFor(CHUNK_HEADER + keyLen + valLen);
  if (cls < 0) {
    // Refused as invalid before anything changes, like the protocol's own VALUE_TOO_LARGE: the
    // key keeps its value (unlike a set that fails for memory, below).
    store.counters.tooLarge++;
    return SET_TOO_LARGE;
  }
  const hash = hashBytes(key, keyOff, keyLen, store.hashSeed);
  const now = store.clock();
  const expiry = ttlMs === 0 ? Infinity : now + ttlMs;
  let id = store.index.find(key, keyOff, keyLen, hash);
  if (id !== NIL && store.items.expiry(id) <= now) {
    removeItem(store, id, isFill ? REMOVE_EXPIRE_READ : REMOVE_EXPIRE_LAZY);
    id = NIL;
  }
  if (id === NIL && isFill && !(how === PUT_FILL ? store.admission.offer(hash) : store.admission.admits(hash))) {
    store.counters.admissionsRejected++;
    return SET_REJECTED;
  }
  if (id !== NIL) {
    if ((store.items.w[id * STRIDE + W_CLASS]! & CLASS_MASK) === cls) {
      rewrite(store, id, cls | flags, keyLen, value, valOff, valLen, expiry);
      return SET_OK;
    }
    // A failed set below leaves the key absent, never stale (memcached's rule).
    removeItem(store, id, REMOVE_REPLACE);
  } else {
    // A new key: past MAX_SAME_HASH keys under its hash, one of them goes (an expired one first).
    // Before the allocation, on purpose. In a full store its id and chunk are what the new item
    // takes; allocating first would evict a stranger by LRU, then this one all the same. And it
    // cannot be for a set refused below: allocItem and allocChunk fail only when no item is left
    // to evict anywhere, and the MAX_SAME_HASH - 1 others of this hash are still here.
    const crowded = store.index.sameHash(hash, store.tick, now);
    if (crowded !== NIL) removeItem(store, crowded, store.items.expiry(crowded) <= now ? REMOVE_EXPIRE_LAZY : REMOVE_COLLISION);
  }
  id = store.room.allocItem(cls);
  const page = id === NIL ? NIL : store.room.allocChunk(cls, id, true);
  if (page === NIL) {
    if (id !== NIL) store.items.release(id);
    store.counters.noMemory++;
    return SET_NO_MEMORY;
  }
  cls = store.room.chunkClass; // a larger class than the value's own while its own has no page (allocChunk)
  if (store.room.moveCredit < store.items.cap) store.room.moveCredit++;
  const off = store.slab.allocOff;
  const w = store.items.w;
  const r = id * STRIDE;
  w[r + W_PAGE] = page;
  w[r + W_OFF] = off;
  w[r + W_VALLEN] = valLen;
  w[r + W_CLASS] = cls | flags | (keyLen << KEY_SHIFT);
  w[r + W_ATIME] = ++store.tick;
  store.items.f[id * F_STRIDE + F_EXPIRY] = Infinity;
  const bytes = store.slab.pages[page]!;
  copyBytes(bytes, off + CHUNK_HEADER, key, keyOff, keyLen);
  copyBytes(bytes, off + CHUNK_HEADER + keyLen, value, valOff, valLen);
  store.index.insert(id, hash);
  store.lru.pushHead(cls, id);
  setExpiry(store, id, expiry);
  store.chunkBytes += store.classes.sizes[cls]!;
  store.dataBytesUsed += keyLen + valLen;
  if ((flags & FLAG_NEGATIVE) !== 0) store.negativeItems++;
  store.counters.sets++;
  return SET_OK;
}

/**
 * rewrite overwrites live item `id`'s value in place (the new size is in its chunk's class).
 * The write counts as a use the way a read does (`touch`: flagged, not moved; `settleTail`
 * in store-room.ts gives it its second chance), so an overwrite touches no other item's record.
 */
export function rewrite(store: Store, id: ItemId, clsAndFlags: number, keyLen: number, value: Uint8Array, valOff: number, valLen: number, expiry: number): void {
  const w = store.items.w;
  const r = id * STRIDE;
  const negative = clsAndFlags & FLAG_NEGATIVE;
  if ((w[r + W_CLASS]! & FLAG_NEGATIVE) !== negative) store.negativeItems += negative !== 0 ? 1 : -1;
  w[r + W_CLASS] = clsAndFlags | FLAG_REFERENCED | (keyLen << KEY_SHIFT);
  copyBytes(store.slab.pages[w[r + W_PAGE]!]!, w[r + W_OFF]! + CHUNK_HEADER + keyLen, value, valOff, valLen);
  store.dataBytesUsed += valLen - w[r + W_VALLEN]!;
  w[r + W_VALLEN] = valLen;
  setExpiry(store, id, expiry);
  w[r + W_ATIME] = ++store.tick;
  store.counters.sets++;
}

function setExpiry(store: Store, id: ItemId, expiry: number): void {
  const f = store.items.f;
  const at = id * F_STRIDE + F_EXPIRY;
  const old = f[at]!;
  f[at] = expiry;
  const inHeap = store.heap.has(id);
  if (expiry === Infinity) {
    if (inHeap) store.heap.remove(id);
  } else if (inHeap) {
    store.heap.update(id, old);
  } else {
    store.heap.push(id);
  }
}
