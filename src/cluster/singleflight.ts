/**
 * Singleflight runs one call per key at a time: concurrent callers of the same key share the one
 * in-flight promise (groupcache's `singleflight`).
 *
 * Each flight is a record in a Map keyed by the key string. A flight removes its own entry when it
 * settles, and only if the entry is still that same flight: a caller that forgot a flight (`forget`)
 * and started a newer one must never see the newer flight removed by the older one finishing.
 * The miss path allocates (a string key, a promise); the hit path never comes here. Keys chosen
 * to share a string hash make each Map operation compare against every entry: the caller bounds
 * how many calls are under way (Group.loads, load-bound.ts).
 */
export class Singleflight<T> {
  private readonly flights = new Map<string, Promise<T>>();

  /** inFlight is the number of keys with a call under way. */
  get inFlight(): number {
    return this.flights.size;
  }

  /** has tells whether a call for `key` is under way (its callers would be deduplicated). */
  has(key: string): boolean {
    return this.flights.has(key);
  }

  /**
   * do returns the promise of the call under way for `key`, or starts `fn` as that call.
   * `joined` is true when the caller shares a call somebody else started.
   */
  do(key: string, fn: () => Promise<T>): { promise: Promise<T>; joined: boolean } {
    const existing = this.flights.get(key);
    if (existing !== undefined) return { promise: existing, joined: true };
    const flight: Promise<T> = Promise.resolve()
      .then(fn)
      .finally(() => {
        if (this.flights.get(key) === flight) this.flights.delete(key);
      });
    this.flights.set(key, flight);
    return { promise: flight, joined: false };
  }

  /** forget drops the entry for `key`, so the next caller starts a new call. */
  forget(key: string): void {
    this.flights.delete(key);
  }

  /** clear drops every entry (the calls under way go on; their callers keep their promises). */
  clear(): void {
    this.flights.clear();
  }

  /** forgetIf drops the entry for `key` only if it is still `flight` (not a newer call). */
  forgetIf(key: string, flight: Promise<T>): void {
    if (this.flights.get(key) === flight) this.flights.delete(key);
  }
}
