/**
 * Group is one named read-through cache: its own store (memory share), default TTL, an optional
 * loader, an admission policy for loaded values, and counters.
 *
 * `get` on a hit returns the stored value; on a miss it loads through singleflight (one loader
 * call per key however many callers wait), stores the result with the group's TTL (LRU-K
 * admission applies to loaded values; an explicit `set` is always admitted), and returns it. A
 * group without a loader is a plain key-value store: a miss is NOT_FOUND. Groups belong to a node
 * object (or to the program that embeds them), never to a module-level registry.
 *
 * Two faces: the server uses the allocation-free byte-range methods (`lookup`, and `load` on a
 * miss); programs embedding the cache use `get`/`set`/`delete` with strings or bytes.
 *
 * Loader outcomes: a value → cached and returned; null/undefined → NOT_FOUND, cached as a
 * negative entry for `negativeTtlMs` when that is > 0 (never for errors); a value larger than
 * the store's max item size → VALUE_TOO_LARGE, not stored, and that refusal remembered for
 * `negativeTtlMs` the same way (the loader is not called again for the key meanwhile, unless
 * the key is written or the group cleared); a throw → LOAD_FAILED
 * with its message, nothing cached; no answer within `loadTimeoutMs` → LOAD_FAILED (timeout) for
 * each caller that waited that long, while the load goes on: callers that come later join it (the
 * loader is not called again), and its late value still fills the cache when it comes. A load
 * still unanswered after four timeouts may be replaced by a new one (a stuck loader call).
 *
 * Group keeps the hit path (`lookup`, `held`), the writes, the mirror's copy decisions and the
 * ring purges; the miss path is load-path.ts (LoadPath: singleflight, the loads under way, their
 * timeouts and outcomes, the remembered too-large refusals of too-large-keys.ts), the write
 * tracking behind copy tickets write-stamps.ts, the options group-options.ts and the counters
 * group-counters.ts.
 */
import { CacheError, ERROR_CODE, setError } from "../protocol/errors.ts";
import { MIB, SET_OK, Store } from "../store/store.ts";
import { sixtyFourthOf } from "../store/store-api.ts";
import { GroupCounters } from "./group-counters.ts";
import type { AdmissionPolicy, GroupOptions } from "./group-options.ts";
import { DEFAULT_MAX_LOADS, LoadBound } from "./load-bound.ts";
import { LOAD_IN_TURN, LoadPath, type LoadKind, type Loaded } from "./load-path.ts";
import type { Loader } from "./loader.ts";
import { WriteStamps } from "./write-stamps.ts";

const utf8 = new TextEncoder();
const DEFAULT_LOAD_TIMEOUT_MS = 10_000;
/** DEFAULT_MULTI_LOAD_WINDOW: loads one GetMulti runs at once, unless the group says otherwise. */
export const DEFAULT_MULTI_LOAD_WINDOW = 32;

export class Group {
  readonly name: string;
  readonly nameBytes: Uint8Array;
  readonly store: Store;
  /** mirror holds hot copies of keys owned by other nodes (cluster only). */
  readonly mirror: Store | undefined;
  /** mirrorTtlMs caps a mirrored copy's life (0: its own TTL only; see GroupOptions). */
  readonly mirrorTtlMs: number;
  readonly defaultTtlMs: number;
  readonly loader: Loader | undefined;
  readonly admission: AdmissionPolicy;
  readonly negativeTtlMs: number;
  readonly loadTimeoutMs: number;
  readonly multiLoadWindow: number;
  readonly loadsAhead: LoadBound;
  readonly loads: LoadBound;
  readonly counters = new GroupCounters();
  /** lastNegative is true when the last `lookup` found a cached "not found". */
  lastNegative = false;
  /**
   * purging holds the ring purges still running (dropNotOwned): each one's ownership test and the
   * first item id it has not passed yet. A key one of them gives to another member had that owner
   * since the purge began, which may have taken a write of it, while the item here has not been
   * reached yet; should the key come back to this node before it is (a member that joins and
   * leaves again), the item would be served stale. So reads (`held`) drop such an item at once
   * instead of returning it, as the purge will.
   */
  readonly purging: { owns: (key: Uint8Array, off: number, len: number) => boolean; next: number }[] = [];
  /**
   * stamps do what the load path's tickets do for loads (load-path.ts: a write makes what was
   * read before it stale) for the mirror, whose copies come from forwarded Gets rather than loads,
   * and for the answers kept ahead of their Get's turn: the writes this group has heard of
   * (`written`: its own, those forwarded through this node, the owners' PeerInvalidate). A
   * forwarded Get takes `copyTicket()` when it is sent; its answer may fill the mirror only if
   * `mayCopy` says no write of its key came since (write-stamps.ts).
   */
  private readonly stamps = new WriteStamps();
  /** loadPath is the miss path: singleflight, the loads under way, their timeouts and outcomes (load-path.ts). */
  private readonly loadPath: LoadPath;

  constructor(opts: GroupOptions) {
    if (opts.name.length === 0) throw new RangeError("a group needs a name");
    this.name = opts.name;
    this.nameBytes = utf8.encode(opts.name);
    this.defaultTtlMs = opts.defaultTtlMs ?? 0;
    if (!(this.defaultTtlMs >= 0)) throw new RangeError(`group ${opts.name}: default TTL must be >= 0`);
    this.loader = opts.loader;
    this.admission = opts.admission ?? "lru-k";
    this.negativeTtlMs = opts.negativeTtlMs ?? 0;
    this.loadTimeoutMs = opts.loadTimeoutMs ?? DEFAULT_LOAD_TIMEOUT_MS;
    this.loadsAhead = opts.loadsAhead ?? new LoadBound(Infinity);
    this.loads = opts.loads ?? new LoadBound(DEFAULT_MAX_LOADS);
    this.multiLoadWindow = opts.multiLoadWindow ?? DEFAULT_MULTI_LOAD_WINDOW;
    if (!Number.isSafeInteger(this.multiLoadWindow) || this.multiLoadWindow < 1) {
      throw new RangeError(`group ${opts.name}: multiLoadWindow must be an integer >= 1`);
    }
    const mirrorMemory = opts.mirrorMemory ?? 0;
    if (mirrorMemory < 0 || mirrorMemory >= opts.memory) throw new RangeError(`group ${opts.name}: the mirror must be a part of the memory`);
    const admissionK = opts.admissionK ?? 2;
    this.store = new Store({ ...opts.store, memory: opts.memory - mirrorMemory, admissionK });
    // The mirror is small (an eighth of the group by default): its items are capped at a 64th of
    // it (at least 64 KiB), so it gets pages enough for values of many sizes; a larger value is not
    // mirrored (keepInMirror), only served by its owner.
    const mirrorItem = Math.min(opts.store?.maxItemSize ?? MIB, sixtyFourthOf(mirrorMemory));
    this.mirror = mirrorMemory > 0 ? new Store({ ...opts.store, memory: mirrorMemory, admissionK, maxItemSize: mirrorItem }) : undefined;
    this.mirrorTtlMs = opts.mirrorTtlMs ?? 0;
    this.loadPath = new LoadPath(this);
  }

  /** nameIs tells whether buf[start, start+len) is this group's name (bytes compared, no string). */
  nameIs(buf: Uint8Array, start: number, len: number): boolean {
    const name = this.nameBytes;
    if (name.length !== len) return false;
    let i = 0;
    while (i < len && name[i] === buf[start + i]) i++;
    return i === len;
  }

  /** ttlFor maps a requested TTL (0 = group default) to the TTL given to the store. */
  ttlFor(requestedMs: number): number {
    return requestedMs === 0 ? this.defaultTtlMs : requestedMs;
  }

  /**
   * lookup returns the item id of a live value under key[off, off+len) (counting a get, hit or
   * miss, unless `count` is false: a key already counted when it was forwarded), or -1. A cached
   * negative entry counts as a negative hit and returns -1 with `lastNegative` set, so the caller
   * answers NOT_FOUND without loading.
   */
  lookup(key: Uint8Array, off: number, len: number, count = true): number {
    const c = this.counters;
    if (count) c.gets++;
    this.lastNegative = false;
    const id = this.held(key, off, len);
    if (id >= 0) {
      if (!this.store.isNegative(id)) {
        if (count) c.hits++;
        return id;
      }
      if (count) c.negativeHits++;
      this.lastNegative = true;
    }
    if (count) c.misses++;
    return -1;
  }

  /**
   * held returns the id of the item (a value or a cached "not found") the main store holds for
   * key[off, off+len), or -1; what a ring purge still running is to drop is dropped now and not
   * returned (see `purging`).
   */
  held(key: Uint8Array, off: number, len: number): number {
    const id = this.store.get(key, off, len);
    if (id < 0 || this.purging.length === 0 || !this.purgeWillDrop(id, key, off, len)) return id;
    this.store.delete(key, off, len);
    return -1;
  }

  /**
   * purgeWillDrop tells whether a ring purge still running will drop item `id` of key[off,
   * off+len) (see `purging`): it has not reached the item yet, and its ring gives the key to
   * another member. An item stored since in a slot it has passed (a write of the key after the
   * change) is not its to drop.
   */
  purgeWillDrop(id: number, key: Uint8Array, off: number, len: number): boolean {
    for (const p of this.purging) if (id >= p.next && !p.owns(key, off, len)) return true;
    return false;
  }

  /**
   * lookupLoadedAhead is `lookup` for a Get whose key was loaded for it ahead of its turn
   * (server/look-ahead.ts): it missed when it came, so it counts as a miss, whatever it finds now
   * (the load counted in `loads` as the Get takes it, and a load done again at its turn does not: LOAD_AGAIN; so
   * loads = gets − hits holds, with a loader).
   */
  lookupLoadedAhead(key: Uint8Array, off: number, len: number): number {
    const id = this.lookup(key, off, len, false);
    this.counters.gets++;
    this.counters.misses++;
    return id;
  }

  /**
   * countRouted counts `n` Gets of keys owned by another member that this node answered: from
   * its mirror (`hit`: hits, as groupcache counts its hot cache) or by forwarding them (misses,
   * whatever the owner answers; the owner counts them again as its own lookups).
   */
  countRouted(n: number, hit: boolean): void {
    const c = this.counters;
    c.gets += n;
    if (hit) c.hits += n;
    else c.misses += n;
  }

  /**
   * load fetches a missing key through singleflight and the loader. The key bytes are copied, so
   * the caller's buffer may change while the load runs. Rejects with CacheError (NOT_FOUND,
   * LOAD_FAILED, OVERLOADED). Only call it on a miss, for a group with a loader. With `cache`
   * false (a key this node loads for an unreachable owner) the outcome is not stored in the
   * group, unless a caller that does store joined the flight first. A key that is not UTF-8 is
   * INVALID_ARGUMENT, and the loader is not called. A value larger than the max item size is
   * VALUE_TOO_LARGE (remembered for the negative TTL: too-large-keys.ts). A load of a key not under
   * way while `loads` has no room is OVERLOADED (joining one under way never is). `kind` says how the load is
   * counted (LOAD_IN_TURN and the others); a load ahead (LOAD_AHEAD) counts against the group's
   * `loadsAhead` until its flight settles, if it started one: the flight keeps its loader place
   * past this caller's timeout (a flight joined takes none).
   */
  load(key: Uint8Array, off: number, len: number, cache = true, kind: LoadKind = LOAD_IN_TURN): Promise<Loaded> {
    return this.loadPath.load(key, off, len, cache, kind);
  }

  /**
   * written tells the group that key[off, off+len) was just set or deleted: a load of it under way
   * read something older, so its outcome is not stored, and the next caller starts a new load;
   * a refusal of the key as too large is forgotten. Costs nothing when no load is under way and
   * no refusal is remembered (expired ones are dropped here first).
   */
  written(key: Uint8Array, off: number, len: number): void {
    this.writtenHash(this.store.hashOf(key, off, len));
    this.loadPath.written(key, off, len);
  }

  // ---- The embeddable API (strings or bytes; allocates) ----

  /** get returns the value of `key`, loading it on a miss. Rejects with CacheError. */
  async get(key: string | Uint8Array): Promise<Uint8Array> {
    const k = typeof key === "string" ? utf8.encode(key) : key;
    const id = this.lookup(k, 0, k.length);
    if (id >= 0) return this.store.valueView(id).slice();
    if (this.lastNegative || this.loader === undefined) throw new CacheError(ERROR_CODE.NOT_FOUND, "key not found");
    return (await this.load(k, 0, k.length)).value;
  }

  /** set stores `value` under `key` for `ttlMs` (0 = the group's default TTL). Throws CacheError. */
  set(key: string | Uint8Array, value: string | Uint8Array, ttlMs = 0): void {
    const k = typeof key === "string" ? utf8.encode(key) : key;
    const v = typeof value === "string" ? utf8.encode(value) : value;
    const r = this.store.set(k, 0, k.length, v, 0, v.length, this.ttlFor(ttlMs));
    this.written(k, 0, k.length);
    if (r === SET_OK) {
      this.counters.sets++;
      return;
    }
    this.counters.setErrors++;
    throw setError(r); // (as a client's Set is answered: a routed SetMulti's part here reads as a local one)
  }

  /** delete removes `key`; it returns whether a live value was removed. */
  delete(key: string | Uint8Array): boolean {
    const k = typeof key === "string" ? utf8.encode(key) : key;
    const removed = this.store.delete(k, 0, k.length);
    this.written(k, 0, k.length);
    if (removed) this.counters.deletes++;
    return removed;
  }

  /** clear removes every item of the group, mirrored copies included. */
  clear(): void {
    this.store.clear();
    this.mirror?.clear();
    this.allWritten();
  }

  /**
   * copyTicket is taken when a Get of a key owned elsewhere is forwarded; `mayCopy` then tells
   * whether its answer may fill the mirror.
   */
  copyTicket(): number {
    return this.stamps.ticket();
  }

  /** mayCopy tells whether no write of key[off, off+len) (or of every key) was heard of since `ticket`. */
  mayCopy(key: Uint8Array, off: number, len: number, ticket: number): boolean {
    return !this.stamps.writtenSince(this.store.hashOf(key, off, len), ticket);
  }

  /**
   * dropNotOwned removes from the main store, a slice of `sliceItems` ids at a time, every item
   * whose key `owns` says this node does not own (the ring changed): the new owner takes the
   * key's writes, so a copy kept here would be served stale should the key come back to this
   * node, or be found by a fallback load. Resolves with how many it removed. The store's ids are
   * pinned meanwhile: an item moved to an id the purge had passed (a shrink of the item table)
   * would escape it, and `held` would serve it; a shrink moves only items the purge has passed
   * (to ids it has passed too: kept by it, or stored since).
   */
  async dropNotOwned(owns: (key: Uint8Array, off: number, len: number) => boolean, sliceItems = 4096): Promise<number> {
    const store = this.store;
    const items = store.items;
    let removed = 0;
    const purge = { owns, next: 0 }; // until it has passed every item, reads check against it (`held`)
    this.purging.push(purge);
    const pin = store.pinIds();
    try {
      for (let id = 0; id < items.cap;) {
        const end = Math.min(items.cap, id + sliceItems);
        for (; id < end; id++) {
          if (!items.isLive(id)) continue;
          const key = store.keyView(id);
          if (!owns(key, 0, key.length) && store.delete(key, 0, key.length)) removed++;
        }
        purge.next = end;
        pin.passed = end;
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    } finally {
      store.unpinIds(pin);
      this.purging.splice(this.purging.indexOf(purge), 1);
    }
    return removed;
  }

  /**
   * copyTtl is the store TTL (0 = none) of a mirrored copy whose value has `ttlMs` left (-1 = no
   * expiry): its own, capped at `mirrorTtlMs` less `ageMs`, the time since its Get was sent (the
   * owner counts a copy's life from its answer, which came after: HandOuts); -1 when that cap has
   * run out (not to be kept).
   */
  copyTtl(ttlMs: number, ageMs = 0): number {
    const own = ttlMs < 0 ? 0 : ttlMs;
    if (this.mirrorTtlMs <= 0) return own;
    const cap = this.mirrorTtlMs - Math.max(0, ageMs);
    if (cap <= 0) return -1;
    return own === 0 || own > cap ? cap : own;
  }

  /**
   * dropCopies empties the mirror (its copies cannot be vouched for: the member list changed, a
   * member asked, the node stalled or found a peer up again): no answer under way may refill it.
   */
  dropCopies(): void {
    this.mirror?.clear();
    this.stamps.allWritten();
  }

  /**
   * writtenHash stamps the write of a key whose store hash is `hash` (`written` does it; the
   * in-place Set of call-runs.ts, which has the hash, does only this: the key is live, so no
   * load of it is under way nor refusal kept).
   */
  writtenHash(hash: number): void {
    this.stamps.written(hash);
  }

  /** allWritten makes every load under way stale (none may fill the group or its mirror). */
  allWritten(): void {
    this.stamps.allWritten();
    this.loadPath.allWritten();
  }

  /** stats returns the group's counters and its store's figures. */
  stats(): GroupCounters & { items: number; bytesUsed: number; capacity: number; evictions: number } {
    const s = this.store.stats();
    return {
      ...this.counters,
      items: s.items,
      bytesUsed: s.bytesUsed,
      capacity: s.capacity,
      evictions: s.evictions,
    };
  }
}
