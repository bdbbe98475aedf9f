/**
 * LoadPath is a group's miss path (Group.load): a key the store does not hold is fetched through
 * singleflight and the group's loader, and the outcome is stored and answered (Group's header
 * lists the outcomes). The hit path (Group.lookup) never comes here.
 *
 * What it owns, each keyed by flight key (the key's bytes spelled latin1, lossless), so none holds
 * more keys than the group's `loads` bound lets loads run at once (load-bound.ts):
 *  - `flights`, a Singleflight: one loader call per key however many callers wait;
 *  - `loading`, a ticket ({ stale }) per loader call under way: a write of the key or a clear of
 *    the group makes it stale (`written`, `allWritten`), and its outcome is answered, not stored;
 *  - `tooLarge`, the refusals of values too large to store (too-large-keys.ts).
 *
 * Timeouts are each caller's (`withTimeout`): the loader call goes on past them, later callers
 * join it, and its late value still fills the cache. A flight still unanswered after
 * STALE_FLIGHT_TIMEOUTS timeouts may be replaced by a new call (`bound`), which makes the older
 * one's outcome stale. The group's store, counters, loader, TTLs and bounds are read through
 * `group` at each call.
 */
import { latin1Key } from "../bytes/bytes.ts";
import { CacheError, ERROR_CODE, errorText } from "../protocol/errors.ts";
import { SET_REJECTED } from "../store/store.ts";
import type { Group } from "./group.ts";
import { MAX_TIMER_MS, toChecked, type Checked, type Loader } from "./loader.ts";
import { Singleflight } from "./singleflight.ts";
import { TooLargeKeys, tooLargeError } from "./too-large-keys.ts";

/** Loaded is the outcome of a load: the value, and how long it lives in the cache (-1 = no expiry). */
export interface Loaded {
  value: Uint8Array;
  ttlRemainingMs: number;
  /** stale: the key was written while the loader ran; the value must not be kept anywhere. */
  stale?: boolean;
}

const utf8 = new TextEncoder();
/**
 * KEY_DECODER gives loaders the key as sent: `ignoreBOM` keeps a leading byte-order mark, and
 * `fatal` refuses bytes that are not UTF-8 instead of turning them into U+FFFD, which would hand
 * the loader another key's name (two such keys would load, and cache, the same value).
 */
const KEY_DECODER = new TextDecoder("utf-8", { ignoreBOM: true, fatal: true });
/** NOT_UTF8 is the answer to a load of a key that is not UTF-8 (a Thrift string must be). */
const NOT_UTF8 = "key is not valid UTF-8: a loader takes the key as text";
/**
 * How a Get's load counts (`Group.load`): LOAD_IN_TURN, at its turn: one `loads`, and its fill is
 * the Get's LRU-K access of the key (a caller joining a load under way notes its own). LOAD_AHEAD,
 * started before its turn (server/look-ahead.ts): one `loadsAhead`, and the access noted when it
 * starts, so that its fill can weigh it; its `loads` is counted when its Get takes it
 * (server/prefetch.ts's `take`), and a load ahead no Get uses (started under another member
 * list: the key's Get is forwarded now, or served in turn as a new Get) counts in no `loads` and
 * has its access taken back (`Store.forgetAccess`); it runs within the group's `loadsAhead`
 * bound. LOAD_AGAIN, done at its turn because the load ahead's answer could not be used (a write
 * heard of since, a load made stale or refused OVERLOADED, a value run out): no `loads`, no
 * access; both were counted for the load ahead. The fills of the last two only check the count,
 * so one Get is one access: a key is not admitted after one Get because its load was done twice.
 */
export const LOAD_IN_TURN = 0;
export const LOAD_AHEAD = 1;
export const LOAD_AGAIN = 2;
export type LoadKind = typeof LOAD_IN_TURN | typeof LOAD_AHEAD | typeof LOAD_AGAIN;

/** STALE_FLIGHT_TIMEOUTS: after this many load timeouts an unanswered flight may be replaced. */
const STALE_FLIGHT_TIMEOUTS = 4;

export class LoadPath {
  private readonly flights = new Singleflight<Loaded>();
  /**
   * tooLarge remembers, by flight key, the keys whose loaded value was refused as larger than the
   * max item size, for `negativeTtlMs` after the refusal (too-large-keys.ts).
   */
  private readonly tooLarge: TooLargeKeys;
  /**
   * loading holds a ticket per load under way, by flight key. A write of the key (or a clear of the
   * group) while the loader runs makes its ticket stale: what the loader read is then older than
   * the cache's state, so its outcome goes to the callers that asked before the write but is not
   * stored, and later callers start a new load (see `written`).
   */
  private readonly loading = new Map<string, { stale: boolean }>();

  constructor(private readonly group: Group) {
    this.tooLarge = new TooLargeKeys(group.store);
  }

  /** load is Group.load (its comment gives the contract), for a group that may have a loader. */
  load(key: Uint8Array, off: number, len: number, cache: boolean, kind: LoadKind): Promise<Loaded> {
    const loader = this.group.loader;
    if (loader === undefined) return Promise.reject(new CacheError(ERROR_CODE.NOT_FOUND, "key not found"));
    const keyBytes = key.slice(off, off + len);
    let keyString: string;
    try {
      keyString = KEY_DECODER.decode(keyBytes); // a leading U+FEFF is part of the key
    } catch {
      return Promise.reject(new CacheError(ERROR_CODE.INVALID_ARGUMENT, NOT_UTF8));
    }
    // Flights are keyed by the bytes (latin1 spelling, lossless, as everywhere keys are named).
    const flightKey = latin1Key(keyBytes);
    if (this.tooLarge.remembers(flightKey)) {
      this.group.counters.negativeHits++;
      return Promise.reject(tooLargeError());
    }
    if (kind === LOAD_IN_TURN) this.group.counters.loads++;
    else if (kind === LOAD_AHEAD) {
      this.group.counters.loadsAhead++; // (its `loads` when its Get takes it: LoadKind)
      this.group.store.noteAccess(keyBytes, 0, keyBytes.length);
    }
    // A load of a key not under way takes a place of the node's bound, or is refused: the Maps
    // keyed by flight key hold no more keys than it (load-bound.ts). Joining one costs nothing.
    if (!this.group.loads.room && !this.flights.has(flightKey)) {
      this.group.counters.loadsRefused++;
      return Promise.reject(new CacheError(ERROR_CODE.OVERLOADED, `${this.group.loads.max} loads under way: try again later`));
    }
    const flight = this.flights.do(flightKey, () => this.loadOnce(loader, keyString, keyBytes, flightKey, cache, kind === LOAD_IN_TURN));
    // A caller joining a load under way is an access too: LRU-K must see that the key is wanted
    // by more than one caller, or a key read by a thousand callers at once would not be admitted.
    if (flight.joined) {
      if (kind === LOAD_IN_TURN) this.group.store.noteAccess(keyBytes, 0, keyBytes.length);
    } else {
      this.group.loads.track(flight.promise);
      this.bound(flightKey, flight.promise);
      if (kind === LOAD_AHEAD) this.group.loadsAhead.track(flight.promise);
    }
    // The timeout is each caller's, not the flight's: a slow loader keeps its one flight (callers
    // that come later join it, and its value fills the cache when it comes) instead of being
    // called again by every caller that timed out before it answered.
    return withTimeout(flight.promise, this.group.loadTimeoutMs, () => {
      this.group.counters.loadTimeouts++;
      return new CacheError(ERROR_CODE.LOAD_FAILED, `loader timed out after ${this.group.loadTimeoutMs} ms`);
    });
  }

  /**
   * bound lets a new call replace a flight still unanswered after STALE_FLIGHT_TIMEOUTS load
   * timeouts (a loader stuck on a lost connection would otherwise hold its key forever); the old
   * call may still answer, and its value is stored as any late value is.
   */
  private bound(flightKey: string, flight: Promise<Loaded>): void {
    const ms = this.group.loadTimeoutMs * STALE_FLIGHT_TIMEOUTS;
    if (!(ms > 0) || ms === Infinity) return;
    const timer = setTimeout(() => this.flights.forgetIf(flightKey, flight), Math.min(ms, MAX_TIMER_MS));
    timer.unref?.();
    flight.then(() => clearTimeout(timer), () => clearTimeout(timer));
  }

  // loadOnce runs inside the flight. It looks at the store again first: between a caller's miss
  // and its flight starting, an earlier flight for the same key may have finished, filled the
  // store and left the flight table:
  //   1. caller A misses the store;
  //   2. flight F (started by caller B) stores the value and removes itself;
  //   3. caller A finds no flight and starts a new one.
  // Without this check step 3 would call the loader a second time for a value the cache holds.
  // `counts`: its fill is its caller's LRU-K access (LoadKind).
  private async loadOnce(loader: Loader, keyString: string, key: Uint8Array, flightKey: string, cache: boolean, counts: boolean): Promise<Loaded> {
    const id = this.group.held(key, 0, key.length);
    if (id >= 0) {
      if (this.group.store.isNegative(id)) throw new CacheError(ERROR_CODE.NOT_FOUND, "key not found");
      return { value: this.group.store.valueView(id).slice(), ttlRemainingMs: this.group.store.ttlRemaining(id) };
    }
    this.group.counters.loadsDeduped++;
    const ticket = { stale: false };
    // An older load of the key still running (its flight was replaced as stuck, or a Clear came
    // between) is superseded by this one: whatever it brings back is older.
    const older = this.loading.get(flightKey);
    if (older !== undefined) older.stale = true;
    this.loading.set(flightKey, ticket);
    const done = (): void => {
      if (this.loading.get(flightKey) === ticket) this.loading.delete(flightKey);
    };
    const call = Promise.resolve().then(() => loader(keyString)).then(toChecked);
    const settled = call.then(
      (value) => {
        done();
        const loaded = this.store1(key, value, ticket.stale || !cache, counts);
        if (ticket.stale) loaded.stale = true;
        return loaded;
      },
      (e: unknown) => {
        done();
        this.group.counters.localLoadErrs++;
        throw e instanceof CacheError ? e : new CacheError(ERROR_CODE.LOAD_FAILED, errorText(e));
      },
    );
    return settled;
  }

  /**
   * written makes a load of key[off, off+len) under way stale, and forgets a refusal of the key as
   * too large (Group.written).
   */
  written(key: Uint8Array, off: number, len: number): void {
    if (this.tooLarge.size > 0) this.tooLarge.prune();
    if (this.loading.size === 0 && this.tooLarge.size === 0) return;
    const flightKey = latin1Key(key.subarray(off, off + len));
    this.tooLarge.forget(flightKey);
    const ticket = this.loading.get(flightKey);
    if (ticket === undefined) return;
    ticket.stale = true;
    this.loading.delete(flightKey);
    this.flights.forget(flightKey);
  }

  /**
   * store1 caches one loader outcome and turns it into the callers' answer; with `skip` (the key
   * was written or the group cleared while the loader ran, or the load is not to be cached) it is
   * answered but not cached. `counts`: the fill is an LRU-K access of the key (LoadKind). The
   * loader's own TTL (Fresh) wins over the group's.
   */
  private store1(key: Uint8Array, checked: Checked, skip: boolean, counts: boolean): Loaded {
    const loaded = checked.value;
    // A key present now was written while the loader ran (a load starts only on a miss): that
    // write is newer than what the loader read, so it wins and the loaded value is not stored.
    const written = this.group.held(key, 0, key.length);
    if (written >= 0 && !this.group.store.isNegative(written)) {
      return { value: this.group.store.valueView(written).slice(), ttlRemainingMs: this.group.store.ttlRemaining(written) };
    }
    if (loaded === null) {
      this.group.counters.notFound++;
      const negativeTtl = checked.ttlMs > 0 ? checked.ttlMs : this.group.negativeTtlMs;
      if (negativeTtl > 0 && !skip) this.group.store.setNegative(key, 0, key.length, negativeTtl);
      throw new CacheError(ERROR_CODE.NOT_FOUND, "key not found");
    }
    // A string takes 1 to 3 bytes of UTF-8 per UTF-16 unit, so one longer than the store takes is
    // refused without being encoded, only measured (a loader's 100 MB string was encoded, up to
    // 300 MB, to be refused): `value` is then null.
    const value = typeof loaded !== "string" ? loaded : this.group.store.fits(key.length, loaded.length) ? utf8.encode(loaded) : null;
    const size = value !== null ? value.length : Buffer.byteLength(loaded as string, "utf8");
    if (value === null || !this.group.store.fits(key.length, size)) {
      // Served, it would pass the limits every other path keeps (a Get's reply past the frame
      // limit, a peer's answer its caller refuses). Not storable either: the refusal is kept
      // for the negative TTL instead, so a hot key does not call the loader on every Get.
      this.group.counters.localLoadErrs++;
      if (this.group.negativeTtlMs > 0 && !skip) this.tooLarge.remember(latin1Key(key), this.group.negativeTtlMs);
      throw tooLargeError(size);
    }
    this.group.counters.localLoads++;
    // (the store's TTL: 0 = none)
    const ttl = checked.ttlMs === 0 ? this.group.defaultTtlMs : checked.ttlMs === Infinity ? 0 : checked.ttlMs;
    if (skip) return { value, ttlRemainingMs: ttl === 0 ? -1 : ttl };
    const r = this.group.admission === "always"
      ? this.group.store.set(key, 0, key.length, value, 0, value.length, ttl)
      : this.group.store.fill(key, 0, key.length, value, 0, value.length, ttl, counts);
    if (r === SET_REJECTED) this.group.counters.admissionsRejected++;
    return { value, ttlRemainingMs: ttl === 0 ? -1 : ttl };
  }

  /** allWritten makes every load under way stale, and forgets every refusal (Group.allWritten). */
  allWritten(): void {
    for (const ticket of this.loading.values()) ticket.stale = true;
    this.loading.clear();
    this.flights.clear();
    this.tooLarge.clear();
  }
}

/** withTimeout settles like `p`, or rejects with `onTimeout()` after `ms` (p keeps running). */
function withTimeout<T>(p: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  if (!(ms > 0) || ms === Infinity) return p;
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(onTimeout()), Math.min(ms, MAX_TIMER_MS));
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}
