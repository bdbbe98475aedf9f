// failAll: a ClientConnection's calls failed all at once: when its socket is lost (`lost`), when
// the node answers its Auth or intro PeerPing with an error (firstCallFailed, refusals.ts), and
// at close(). Every call in flight settles with the one error, through its forward callback or
// waiter (callbacks.ts); the abandoned slots (timed-out calls still owed a late reply) are freed;
// and the output buffer is emptied, as every byte in it belongs to a call in `pending` (the
// connection's invariant). The calls a callback makes meanwhile are not failed: they stay queued,
// for a new connection.

import type { CacheError } from "../protocol/errors.ts";
import type { ClientConnection } from "./client-connection.ts";
import { SLOT_ABANDONED } from "./pending-calls.ts";
import { settleError } from "./callbacks.ts";

/**
 * failAll fails every call in flight on `conn` with `error` and empties the output buffer. Calls
 * issued by the callbacks it runs are kept (they are queued after the snapshot).
 */
export function failAll(conn: ClientConnection, error: CacheError): void {
  const p = conn.pending;
  conn.calls.out.reset();
  if (p.abandoned > 0) {
    for (let s = 0; s < p.slotCount; s++) if (p.state[s] === SLOT_ABANDONED) p.release(s);
  }
  // The calls in flight now: the WAITING ones up to `last`, and every LATE one (a callback never
  // adds to those). Calls the callbacks make are queued after them, for a new connection.
  const last = p.tail;
  while (p.lateHead >= 0) {
    const slot = p.lateHead;
    const forward = p.forward[slot]!;
    const waiter = p.waiter[slot]!;
    p.release(slot);
    conn.health.counters.errors++;
    settleError(forward, waiter, error);
  }
  while (last >= 0 && p.head >= 0) {
    const slot = p.head;
    const forward = p.forward[slot]!;
    const waiter = p.waiter[slot]!;
    p.release(slot);
    if (!conn.settledPing(slot)) conn.health.counters.errors++;
    settleError(forward, waiter, error);
    if (slot === last) break;
  }
}
