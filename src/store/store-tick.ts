/**
 * The store's upkeep between requests, and the walks over its item ids that hold part of it back.
 *
 * `expireDue` is the active-expiry tick (Store.expire, from the server's expiry timer): due items
 * popped from the TTL heap, then the rest of the budget to the item table's shrink
 * (table-shrink.ts), which may move items to other ids. `pinWalk` and `unpinWalk` (Store.pinIds,
 * Store.unpinIds) bracket a walk over the ids that spans turns (a snapshot, a ring purge), so that
 * shrink moves no item from an id the walk has not passed.
 *
 * Neither is on a request's path: the store's methods hand them the store, as stats() hands it
 * to storeStats.
 */
import { NIL } from "./item-table.ts";
import { REMOVE_EXPIRE_ACTIVE, removeItem } from "./store-removal.ts";
import type { Store } from "./store.ts";
import { IdPin, MIN_STEP, SHRUNK_TABLE } from "./table-shrink.ts";

/**
 * expireDue (Store.expire) removes up to `budget` items whose expiry is <= now, and returns how
 * many it removed.
 * What is left of the budget, and MIN_STEP at least, goes to shrinking the item table when
 * most of its ids are free (table-shrink.ts: it may move items to other ids).
 */
export function expireDue(store: Store, now: number, budget: number): number {
  let n = 0;
  while (n < budget && expireOne(store, now) !== NIL) n++;
  const shrunk = store.shrink.step(Math.max(budget - n, MIN_STEP));
  if (shrunk === SHRUNK_TABLE) {
    if (store.room.moveCredit > store.items.cap) store.room.moveCredit = store.items.cap;
    store.counters.tableShrinks++;
  }
  // Every tick, not only when a table was cut: a step may also drop an index being built (a
  // shrink beginning drops a doubled one; a smaller one of the wrong size is dropped), and the
  // pages did not get those bytes until some later growth or shrink (4 pages of a 64 MiB store).
  store.room.updatePageLimit();
  return n;
}

/**
 * pinWalk (Store.pinIds) keeps every item at its id until the matching `unpinWalk`, for a walk
 * over the ids in increasing order that spans turns (a snapshot, a ring purge): items are still
 * added and removed, but none moves from an id the walk has not passed (`IdPin.passed`, which
 * the walk moves up as it goes: a shrink of the table moves items only from ids every walk has
 * passed).
 */
export function pinWalk(store: Store): IdPin {
  const pin = new IdPin();
  store.shrink.pins.push(pin);
  return pin;
}

/** unpinWalk (Store.unpinIds) ends the walk `pinWalk` began. */
export function unpinWalk(store: Store, pin: IdPin): void {
  const pins = store.shrink.pins;
  const i = pins.indexOf(pin);
  if (i >= 0) pins.splice(i, 1);
}

/**
 * expireOne removes the item that expires first if it is due by `now`, and returns its size
 * class; -1 when none is due. (The expiry tick, expireDue, and a set that needs room,
 * StoreRoom.reclaimExpired, both take due items this way.)
 */
export function expireOne(store: Store, now: number): number {
  const heap = store.heap;
  if (heap.size === 0 || heap.minExpiry() > now) return NIL;
  const id = heap.minItem();
  const cls = store.items.cls(id);
  removeItem(store, id, REMOVE_EXPIRE_ACTIVE);
  return cls;
}
