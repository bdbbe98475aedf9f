/**
 * The loads of a multi-key request's missing keys: a GetMulti on a lone node or of keys this node
 * owns (get-multi.ts), and a cluster node's own part of one, or its fallback for an unreachable
 * owner (routed-multi.ts).
 *
 * - At most `group.multiLoadWindow` of one request's loads run at once (LoadWindow: a routed
 *   GetMulti's parts share it); the next starts as one settles. A
 *   GetMulti of more cold keys than the loader pool holds then completes (taking a place in the
 *   pool for every key at once, it was refused OVERLOADED past the pool's queue even on an idle
 *   node), and it leaves the pool room for other clients' loads.
 * - A key named twice is loaded once (`earlierSameKey`) and given to each of its entries.
 * - What each loaded value will take in the reply is held on the request as it comes
 *   (`Request.hold`: the server counts it toward --max-buffered), with what the caller held
 *   before (its hits' copies). Past `maxBytes`, the reply's limit, the request fails
 *   VALUE_TOO_LARGE, and no more loads start; nor once the request is no longer wanted (its
 *   connection closed, by the buffer cap say): its values are then dropped as they come.
 * - A load the loader pool refuses (full of other clients' loads) is tried again once one of the
 *   call's own loads ends, freeing a place (one retry per end, not a window's worth the full pool
 *   would mostly refuse again); it fails the request OVERLOADED only when none of the call's own
 *   loads runs (a routed GetMulti's parts count apart), so a GetMulti on a busy pool slows down
 *   rather than failing.
 * - A key the loader does not find is left out; any other failure fails the request (the first),
 *   and stops the window (`LoadWindow.stop`): no load of the request starts after it, in this
 *   part or another (a routed GetMulti's own part and fallbacks, or an owner's part answered an
 *   error), since the request's answer is that failure whatever they find. Each part then ends
 *   with the loads it has under way. (Before, a routed GetMulti whose own key failed went on to
 *   load every key of a down owner's part, hundreds of loads on a backend that may be failing,
 *   before answering the same error; a lone node stops at once.)
 *
 * It settles once every load it started has, so nothing it started reads the request after its
 * reply is written (the connection then decodes its next call into the same Request).
 */
import type { Group } from "../cluster/group.ts";
import type { Loaded } from "../cluster/load-path.ts";
import { compareBytes, sortedByBytes } from "../bytes/bytes.ts";
import { CacheError, ERROR_CODE } from "../protocol/errors.ts";
import { getMultiEntryBytes } from "../protocol/reply-writer.ts";
import type { Request } from "../protocol/request.ts";
import { multiTooLargeError } from "./reply-errors.ts";

const ABANDONED = "its connection closed while its loads ran";

/**
 * LoadWindow is the places one request's loads share (`Group.multiLoadWindow` of them): a routed
 * GetMulti's own part and its fallbacks for unreachable owners take them from one window, so the
 * request as a whole never runs more than that many loads at once.
 */
export class LoadWindow {
  private running = 0;
  /** waiting: the pumps of `loadKeys` calls that found no free place, woken in turn as places free. */
  private readonly waiting: (() => void)[] = [];
  /** stopped: a part of the request failed (`stop`); its parts start no more loads. */
  stopped = false;

  constructor(private readonly size: number) {}

  /** take takes a place, or registers `wake` to be called when one frees and returns false. */
  take(wake: () => void): boolean {
    if (this.running < this.size) {
      this.running++;
      return true;
    }
    if (!this.waiting.includes(wake)) this.waiting.push(wake);
    return false;
  }

  /**
   * give frees a place and wakes waiting callers while places are free (one woken that no longer
   * needs a place, having failed meanwhile, must not keep it from the next).
   */
  give(): void {
    this.running--;
    while (this.running < this.size && this.waiting.length > 0) this.waiting.shift()!();
  }

  /**
   * stop ends the request's loads: it has failed, so what they would find is not answered. The
   * pumps waiting for a place are woken to settle (those with no load under way at once).
   */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    for (const wake of this.waiting.splice(0)) wake();
  }
}

/**
 * loadKeys loads the entries `misses` (indexes into `req.items`) of a multi-key request through
 * `group` (see above), within `window` (one per request); `cache(i)` tells whether entry i's load
 * is stored in the group (Group.load), and `found(i, loaded)` takes each entry's value.
 */
export function loadKeys(
  group: Group, req: Request, misses: readonly number[], window: LoadWindow, cache: (i: number) => boolean, maxBytes: number,
  found: (i: number, loaded: Loaded) => void,
): Promise<void> {
  const earlier = earlierSameKey(req, misses);
  const copies = new Map<number, number[]>(); // a key's first entry → its later ones
  for (let m = 0; m < misses.length; m++) {
    const e = earlier[m]!;
    if (e < 0) continue;
    const list = copies.get(e);
    if (list === undefined) copies.set(e, [misses[m]!]);
    else list.push(misses[m]!);
  }
  return new Promise<void>((resolve, reject) => {
    let next = 0;
    let running = 0;
    let failure: unknown;
    let failed = false;
    // Entries whose load the loader pool refused (full of other clients' loads): tried again once
    // one of ours that ran settles, freeing a place; nothing starts meanwhile (`blocked`).
    const again: number[] = [];
    let blocked = false;
    const fail = (e: unknown): void => {
      if (failed) return;
      failed = true;
      failure = e;
      window.stop();
    };
    const take = (i: number, loaded: Loaded): void => {
      if (failed) return; // dropped: the request fails anyway
      const same = copies.get(i);
      const bytes = (1 + (same?.length ?? 0)) * getMultiEntryBytes(req.items[i * 4 + 1]!, loaded.value.length);
      if (!req.hold(bytes)) return fail(new CacheError(ERROR_CODE.OVERLOADED, ABANDONED));
      if (req.heldBytes > maxBytes) return fail(multiTooLargeError(maxBytes));
      found(i, loaded);
      if (same !== undefined) for (const c of same) found(c, loaded);
    };
    const settled = (): void => {
      running--;
      window.give();
      pump(again.length > 0 ? 1 : Infinity); // (after a refusal: one place in the pool came free)
    };
    const pump = (limit = Infinity): void => {
      for (let started = 0; !failed && !window.stopped && !blocked && started < limit && (again.length > 0 || next < misses.length);) {
        if (again.length === 0 && earlier[next]! >= 0) {
          next++; // loaded with its first entry
          continue;
        }
        // (asked before each load, not only when a value comes: keys that are not found hold nothing)
        if (!req.hold(0)) {
          fail(new CacheError(ERROR_CODE.OVERLOADED, ABANDONED));
          break;
        }
        if (!window.take(pump)) return; // called again when a place frees (one of ours, or another part's)
        const i = again.length > 0 ? again.shift()! : misses[next++]!;
        let load: Promise<Loaded>;
        try {
          load = group.load(req.buffer, req.items[i * 4]!, req.items[i * 4 + 1]!, cache(i));
        } catch (e) {
          fail(e); // (it rejects rather than throws: a bug, kept to this request)
          window.give();
          break;
        }
        running++;
        started++;
        load.then(
          (loaded) => {
            try {
              take(i, loaded);
            } catch (e) {
              fail(e);
            }
            blocked = false;
            settled();
          },
          (e: unknown) => {
            if (e instanceof CacheError && e.code === ERROR_CODE.OVERLOADED && running > 1 && !failed) {
              // Refused, with another of ours still running: its end frees a place to try again in.
              again.push(i);
              blocked = true;
              running--;
              window.give();
              return;
            }
            if (!(e instanceof CacheError && e.code === ERROR_CODE.NOT_FOUND)) fail(e);
            blocked = false;
            settled();
          },
        );
      }
      // (Stopped by another part's failure, this one resolves: the request answers that failure.)
      if (running > 0 || (!failed && !window.stopped && (again.length > 0 || next < misses.length))) return;
      if (failed) reject(failure);
      else resolve();
    };
    pump();
  });
}

/**
 * earlierSameKey maps each of a multi-key request's entries `indexes` to the entry, among those
 * before it in `indexes`, that names the same key (its index in the request), or -1 for a key's
 * first entry. A key named twice is loaded once: a second load would join the first and count
 * as another caller's access for LRU-K, so one request could get a key admitted.
 */
export function earlierSameKey(req: Request, indexes: readonly number[]): number[] {
  const out = new Array<number>(indexes.length).fill(-1);
  if (indexes.length < 2) return out;
  // Grouped by sorting, not in a Map keyed by the key strings: see sortedByBytes.
  const keys = indexes.map((i) => req.buffer.subarray(req.items[i * 4]!, req.items[i * 4]! + req.items[i * 4 + 1]!));
  const order = sortedByBytes(keys);
  for (let k = 1; k < order.length; k++) {
    const m = order[k]!;
    const prev = order[k - 1]!;
    if (compareBytes(keys[m]!, keys[prev]!) === 0) out[m] = out[prev]! >= 0 ? out[prev]! : indexes[prev]!;
  }
  return out;
}
