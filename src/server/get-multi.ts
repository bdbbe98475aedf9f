/**
 * getMulti serves a GetMulti (or a peer's) of keys this node answers for: a map of every key that
 * has a value, built straight into the reply from the store's slabs. In a group with a loader,
 * the misses are loaded first, a few at a time (multi-loads.ts). The hits' values are copied out
 * before any load starts, so the loads cannot evict them. Keys not found are left out of the map,
 * and a load failure fails the whole call with its CacheError. A reply past the connection's frame
 * limit fails VALUE_TOO_LARGE (multiTooLarge).
 *
 * dispatch.ts calls getMulti directly, as before. A key asked twice is looked up, counted, loaded
 * and answered once (repeated-keys.ts).
 */
import type { Group } from "../cluster/group.ts";
import type { Loaded } from "../cluster/load-path.ts";
import { GET_MULTI_FULL, type ReplyWriter, getMultiEntryBytes } from "../protocol/reply-writer.ts";
import type { Request } from "../protocol/request.ts";
import { multiTooLarge, replyThrown } from "./reply-errors.ts";
import { LoadWindow, loadKeys } from "./multi-loads.ts";
import { repeatedKeys } from "./repeated-keys.ts";
import type { ForeignKeys } from "./foreign-keys.ts";

export function getMulti(group: Group, req: Request, reply: ReplyWriter, foreign: ForeignKeys): Promise<void> | void {
  if (group.loader === undefined) return writeGetMulti(group, req, reply, undefined, true);
  // loadMisses looks every key up (and counts it); the reply below then reads without counting.
  const loads = loadMisses(group, req, reply.maxMultiBytes, foreign);
  if (loads === undefined) return writeGetMulti(group, req, reply, undefined, false);
  if (loads === TOO_LARGE) return multiTooLarge(reply, req, false);
  return loads.then((loaded) => writeGetMulti(group, req, reply, loaded, false), (e: unknown) => replyThrown(reply, req, e));
}

const TOO_LARGE = "too large";

/**
 * loadMisses loads the keys of a GetMulti not in the store (multi-loads.ts); undefined if none, or
 * TOO_LARGE (nothing started) when its hits alone would pass `maxBytes` of reply. Loads of the
 * keys `foreign` marks are not stored (dropForeignReads).
 */
function loadMisses(group: Group, req: Request, maxBytes: number, foreign: ForeignKeys): Promise<(Loaded | null)[]> | undefined | typeof TOO_LARGE {
  const hits: number[] = []; // (index, item id) pairs
  const misses: number[] = [];
  let hitBytes = 0;
  const repeated = repeatedKeys(req); // (a key asked twice is looked up, counted, loaded and answered once)
  for (let i = 0; i < req.itemCount; i++) {
    if (repeated !== null && repeated[i] === 1) continue;
    const id = group.lookup(req.buffer, req.items[i * 4]!, req.items[i * 4 + 1]!);
    if (id >= 0) {
      hits.push(i, id);
      hitBytes += getMultiEntryBytes(req.items[i * 4 + 1]!, group.store.valueLength(id));
    } else if (!group.lastNegative) misses.push(i);
  }
  if (misses.length === 0) return undefined;
  if (hitBytes > maxBytes) return TOO_LARGE; // (the copies below would come to that)
  // The hits' values are copied before any load starts: while the loads run, the loads' fills or
  // other connections' writes may evict them, and a hit must stay in the reply.
  const loaded = new Array<Loaded | null>(req.itemCount).fill(null);
  const store = group.store;
  for (let h = 0; h < hits.length; h += 2) {
    const id = hits[h + 1]!;
    loaded[hits[h]!] = { value: store.valueView(id).slice(), ttlRemainingMs: store.ttlRemaining(id) };
  }
  req.hold(hitBytes);
  const cache = (i: number): boolean => foreign?.[i] !== true;
  const window = new LoadWindow(group.multiLoadWindow);
  return loadKeys(group, req, misses, window, cache, maxBytes, (i, value) => (loaded[i] = value)).then(() => loaded);
}

/**
 * writeGetMulti writes the map of every requested key that has a value: from the store (looked up
 * now: after a wait, earlier item ids may be stale) or, for keys the store does not hold now (a
 * loaded value it did not admit, a hit evicted during the loads), from `loaded`.
 *
 * Entries are written as their keys are looked up while the buffer has room. At the first that
 * does not fit, the keys left are looked up first (`lookUpRest`), so the buffer grows once, to
 * hold them all, and a reply past the frame limit is refused before it grows. A refused reply has
 * every key looked up and counted, as with a loader, also one refused at the entry that passes the
 * limit in a buffer with room. A reply that fits is written in one pass, as before.
 */
function writeGetMulti(group: Group, req: Request, reply: ReplyWriter, loaded: (Loaded | null)[] | undefined, counted: boolean): void {
  const store = group.store;
  const items = req.items;
  const repeated = repeatedKeys(req);
  reply.beginGetMulti(req);
  let ahead = req.itemCount; // the entries from `ahead` on are written from the item ids noted (lookUpRest)
  for (let i = 0; i < req.itemCount; i++) {
    if (repeated !== null && repeated[i] === 1) continue; // (a key asked twice is looked up, counted and answered once)
    const ks = items[i * 4]!;
    const kl = items[i * 4 + 1]!;
    let id: number;
    if (i < ahead) { // (`find`, inline: called here, a reply that fits looked ~3 % slower in-process)
      id = counted ? group.lookup(req.buffer, ks, kl) : group.held(req.buffer, ks, kl);
      if (id >= 0 && store.isNegative(id)) id = -1;
    } else id = noted(group, req, i);
    const value = id >= 0 ? undefined : loaded?.[i]?.value;
    if (id < 0 && value === undefined) continue; // absent keys are left out of the map, as in the seed
    const length = value === undefined ? store.valueLength(id) : value.length;
    const at = reply.addGetMultiEntry(req.buffer, ks, kl, length, i >= ahead);
    if (at === GET_MULTI_FULL) {
      // This entry is then written as a noted one (its id noted, the loop back on it): its key may
      // come again among the rest (repeatedKeys gave up) and be found expired there, its item freed.
      items[i * 4 + 2] = id;
      ahead = i;
      if (!reply.makeRoom(getMultiEntryBytes(kl, length) + lookUpRest(group, req, loaded, counted, i + 1, repeated))) return multiTooLarge(reply, req, true);
      i--;
      continue;
    }
    if (at < 0) {
      if (i < ahead) lookUpRest(group, req, loaded, counted, i + 1, repeated); // (counted as when refused by makeRoom)
      return multiTooLarge(reply, req, true);
    }
    if (value === undefined) store.copyValue(id, reply.out.buffer, at);
    else reply.out.buffer.set(value, at);
  }
  reply.endGetMulti();
}

/** find looks entry `i`'s key up: the id of its value in the store, or -1 (none, or a cached "not found"). */
function find(group: Group, req: Request, i: number, counted: boolean): number {
  const ks = req.items[i * 4]!;
  const kl = req.items[i * 4 + 1]!;
  const id = counted ? group.lookup(req.buffer, ks, kl) : group.held(req.buffer, ks, kl);
  return id >= 0 && !group.store.isNegative(id) ? id : -1;
}

/**
 * lookUpRest looks up the entries from `from` on (`find`) and returns the reply bytes they come
 * to, noting each one's item id in its valueStart word of `req.items` (0 for a GetMulti's keys,
 * read by nothing else) for `noted`.
 */
function lookUpRest(group: Group, req: Request, loaded: (Loaded | null)[] | undefined, counted: boolean, from: number, repeated: Uint8Array | null): number {
  const items = req.items;
  let bytes = 0;
  for (let i = from; i < req.itemCount; i++) {
    if (repeated !== null && repeated[i] === 1) continue;
    const id = find(group, req, i, counted);
    items[i * 4 + 2] = id;
    const length = id >= 0 ? group.store.valueLength(id) : loaded?.[i]?.value.length;
    if (length !== undefined) bytes += getMultiEntryBytes(items[i * 4 + 1]!, length);
  }
  return bytes;
}

/**
 * noted is the item id noted for entry `i` (by `lookUpRest`, or before it for the entry that did
 * not fit). Still good: nothing ran since, and a lookup drops no item but its own key's; except
 * one whose key came again and was found expired then (only when `repeatedKeys` gave up on a
 * flood of colliding keys, answered as asked): -1.
 */
function noted(group: Group, req: Request, i: number): number {
  const id = req.items[i * 4 + 2]!;
  return id >= 0 && group.store.items.isLive(id) ? id : -1;
}
