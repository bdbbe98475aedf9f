/**
 * LoadBound counts loads under way against a maximum: a node's groups share one for all their
 * loads (`--max-loads`), and one for the loads started ahead of their Get's turn (the
 * look-ahead: half the places), so a load past it is refused OVERLOADED at once, as the worker
 * pool refuses one past its queue.
 *
 * Why a bound on all loads, and not only the pool's: a load under way is an entry of its group's
 * singleflight and `loading` Maps (its LoadPath, load-path.ts), keyed by the key's string, and JavaScriptCore hashes strings
 * with fixed secrets, so a client can choose keys that share one hash (test/support/
 * jsc-collisions.ts): each Map operation then compares against every entry. A loader that runs
 * in the node's thread (the cache embedded in a program) had no bound but the connections: 300
 * connections pipelining 65 such Gets each held the event loop 9.9 s (bench/flight-floods.ts).
 * Bounded, an operation costs at most `max` comparisons.
 *
 * A load counts from its start until its flight settles, even after its callers timed out or a
 * write made it stale, so the Maps never hold more than `max` keys. A loader call that never
 * settles keeps its place for good (as it keeps its worker pool place without
 * --loader-stop-after): an in-process loader should bound its own calls' time.
 */
export class LoadBound {
  running = 0;
  constructor(
    readonly max: number,
    /** within, if given, is a wider bound this one's loads count against too (the pool's loads ahead within the node's). */
    readonly within?: LoadBound,
  ) {}

  /** room tells whether one more may start (here and within the wider bound). */
  get room(): boolean {
    return this.running < this.max && (this.within?.room ?? true);
  }

  /** track counts `flight` as running until it settles (in the wider bound too). */
  track(flight: Promise<unknown>): void {
    this.running++;
    const done = (): void => void this.running--;
    flight.then(done, done);
    this.within?.track(flight);
  }
}

/** DEFAULT_MAX_LOADS bounds the loads under way on a node (`--max-loads`), or in a group made alone. */
export const DEFAULT_MAX_LOADS = 1024;
