/**
 * removeItem takes item `id` out of a store for one of the REMOVE_* reasons: out of its index slot,
 * its LRU list, the TTL heap and its chunk, its bytes out of the store's tallies, and counted by
 * reason; an item that expired while wanted is kept as an LRU-K ghost.
 *
 * It is the store's one way out for an item, on the hot path (a read that finds it expired, a set
 * that replaces it, a delete, an eviction) as on the expiry tick: Store's methods call it directly,
 * as they called their own `remove`, and the slab and the StoreRoom evict through the callbacks
 * the store made once, at construction. It allocates nothing.
 */
import { hashBytes } from "./hash.ts";
import { CLASS_MASK, F_EXPIRY, F_STRIDE, FLAG_NEGATIVE, FLAG_READ, KEY_SHIFT, STRIDE, W_CLASS, W_OFF, W_PAGE, W_VALLEN, type ItemId } from "./item-table.ts";
import { CHUNK_HEADER } from "./slab-allocator.ts";
import type { Store } from "./store.ts";

export const REMOVE_DELETE = 0;
export const REMOVE_EVICT = 1;
export const REMOVE_EXPIRE_LAZY = 2;
export const REMOVE_EXPIRE_ACTIVE = 3;
export const REMOVE_REPLACE = 4;
/** REMOVE_EXPIRE_READ: expired, found by a read (or the fill its miss loaded): counted as lazy. */
export const REMOVE_EXPIRE_READ = 5;
/** REMOVE_COLLISION: made room for a new key among the most keys one hash may hold (HashIndex.sameHash). */
export const REMOVE_COLLISION = 6;

export function removeItem(store: Store, id: ItemId, why: number): void {
  const w = store.items.w;
  const r = id * STRIDE;
  if (why === REMOVE_EVICT) {
    // An item taken for room (an LRU tail, a moved page's) that had expired is no live item lost:
    // counted as an expiry, as memcached counts it apart from its evictions.
    const exp = store.items.f[id * F_STRIDE + F_EXPIRY]!;
    if (exp !== Infinity && exp <= store.clock()) why = REMOVE_EXPIRE_ACTIVE;
  }
  const cls = w[r + W_CLASS]! & CLASS_MASK;
  const keyLen = w[r + W_CLASS]! >>> KEY_SHIFT;
  const page = store.slab.pages[w[r + W_PAGE]!]!;
  const hash = hashBytes(page, w[r + W_OFF]! + CHUNK_HEADER, keyLen, store.hashSeed);
  store.index.remove(id, hash);
  // An item expiring that was wanted (read as it expired, or read since it was stored) is kept
  // as an LRU-K ghost: its reload is admitted at its first fill, where, as a new key's, it cost
  // K loads at every expiry (Admission.remember).
  if (why === REMOVE_EXPIRE_READ || ((why === REMOVE_EXPIRE_ACTIVE || why === REMOVE_EXPIRE_LAZY) && (w[r + W_CLASS]! & FLAG_READ) !== 0)) {
    store.admission.remember(hash);
  }
  store.lru.unlink(cls, id);
  store.heap.remove(id);
  store.slab.free(w[r + W_PAGE]!, w[r + W_OFF]!);
  store.chunkBytes -= store.classes.sizes[cls]!;
  store.dataBytesUsed -= keyLen + w[r + W_VALLEN]!;
  if ((w[r + W_CLASS]! & FLAG_NEGATIVE) !== 0) store.negativeItems--;
  store.items.release(id);
  switch (why) {
    case REMOVE_EVICT:
      store.counters.evictions++;
      store.classEvictions[cls]!++;
      break;
    case REMOVE_EXPIRE_LAZY:
    case REMOVE_EXPIRE_READ:
      store.counters.expiredLazy++;
      break;
    case REMOVE_EXPIRE_ACTIVE:
      store.counters.expiredActive++;
      break;
    case REMOVE_DELETE:
      store.counters.deletes++;
      break;
    case REMOVE_COLLISION:
      store.counters.collisionEvictions++;
      break;
    default:
      break;
  }
}
