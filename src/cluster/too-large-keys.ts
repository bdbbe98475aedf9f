/**
 * TooLargeKeys remembers a group's keys whose loaded value was refused as larger than the store's
 * max item size, for the group's negative TTL: a hot key whose loader returns too much would
 * otherwise call the loader on every Get. The store cannot hold such an outcome (a negative item
 * would answer NOT_FOUND), so the group's load path (Group.load) keeps it here, asks `remembers`
 * before calling the loader, and forgets a key when it is written or the group cleared.
 *
 * Layout: one Map from flight key (the key's bytes spelled latin1, as the load path names keys) to
 * the time (store clock, ms) the refusal lasts until. Entries are kept in expiry order (one TTL
 * for the group, a refreshed entry re-inserted last), so the expired ones are at the front and
 * `prune` stops at the first live one. At most MAX_TOO_LARGE keys, the oldest forgotten first.
 */
import { CacheError, ERROR_CODE } from "../protocol/errors.ts";
import type { Store } from "../store/store.ts";

/** MAX_TOO_LARGE bounds how many refused oversized keys a group remembers (TooLargeKeys). */
const MAX_TOO_LARGE = 1024;

/** tooLargeError is the answer to a load whose value the store cannot hold (`bytes`: its size, when known). */
export function tooLargeError(bytes?: number): CacheError {
  return new CacheError(
    ERROR_CODE.VALUE_TOO_LARGE,
    bytes === undefined ? "the loader's value is larger than the max item size" : `the loader returned ${bytes} bytes, more than the max item size`,
  );
}

export class TooLargeKeys {
  /** until maps a flight key to the time (store clock, ms) its refusal lasts until. */
  private readonly until = new Map<string, number>();

  /** store is the group's main store, whose clock the times are read by. */
  constructor(private readonly store: Store) {}

  /** size is how many refusals are remembered (some may have expired: see `prune`). */
  get size(): number {
    return this.until.size;
  }

  /** remembers tells whether a refusal of `flightKey` is remembered and not expired (pruning first). */
  remembers(flightKey: string): boolean {
    if (this.until.size === 0 || this.prune() === 0) return false;
    const until = this.until.get(flightKey);
    // (its own time checked too: the prune relies on the order, which a clock stepped back breaks)
    return until !== undefined && until > this.store.clock();
  }

  /** remember keeps the refusal of `flightKey` for `ttlMs` from now, the newest entry. */
  remember(flightKey: string, ttlMs: number): void {
    if (this.until.size >= MAX_TOO_LARGE && !this.until.has(flightKey)) this.until.delete(this.until.keys().next().value!);
    this.until.delete(flightKey); // re-inserted last: the newest
    this.until.set(flightKey, this.store.clock() + ttlMs);
  }

  /** forget drops the refusal of `flightKey` (the key was written). */
  forget(flightKey: string): void {
    this.until.delete(flightKey);
  }

  /** clear drops every refusal (the group was cleared, or every key written). */
  clear(): void {
    this.until.clear();
  }

  /**
   * prune forgets the refusals whose time is up and returns how many are left. Entries
   * are kept in expiry order (one TTL for the group, a refreshed entry re-inserted last), so the
   * expired ones are at the front.
   */
  prune(): number {
    const now = this.store.clock();
    for (const [key, until] of this.until) {
      if (until > now) break;
      this.until.delete(key);
    }
    return this.until.size;
  }
}
