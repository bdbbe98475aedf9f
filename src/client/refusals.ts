// Refusals: how a ClientConnection tells the node's refusal of it from the node's other answers
// and from a failure of the peer, and what the end of its socket means: whether the next connect
// backs off (the Dialer's backOff: BACKOFF_BASE_MS, doubling per failure in a row up to
// BACKOFF_MAX_MS), whether the peer is counted toward down, and what the calls on it fail with.
//
// A refusal: a node refuses a connection over its --max-connections by answering the first
// request on it OVERLOADED (before it looks whether that is an Auth) and closing it: one reply, to
// the first request, then the close (so since the limit came, f98fbe2). A node that refuses our
// auth token is treated the same way, its calls answered UNAUTHORIZED. A refusal is not a failure
// of the peer (it is up and answering): the calls on the connection fail with its answer, the
// peer is not counted toward down, and the next connect backs off all the same (a wrong token
// stays wrong; the calls meanwhile are answered with it at once: ClientConnection.refusedNow).
// Any other reply is the node serving the connection, and ends a backoff (`served`); its Auth or
// intro PeerPing answered otherwise is the node taking it, which makes it usable again without
// forgetting the failures in a row before (ClientConnection.taken).
//
// The refusal is told by where it stands, not by its text:
//  - an OVERLOADED that is the connection's first reply and answers our Auth or intro PeerPing
//    (calls a node refuses OVERLOADED for no other reason) is one, whatever it says
//    (`firstCallFailed`);
//  - an OVERLOADED after any reply is not, whatever it says: the node took the connection. (A
//    forwarding node passes on its owner's refusal of its own connection, "too many
//    connections" and all: that was taken for the node refusing ours.)
// A client that sends neither first call (no token, no sender) has only the application's
// calls, which a node also refuses OVERLOADED for load (--max-loads, a full loader queue): there
// the first reply must also say TOO_MANY_CONNECTIONS (`callRefused`). A refusal relayed as the
// very first reply of such a connection still reads as one; it costs a backoff only if the node
// then closes the connection before answering anything else.
//
// Speed: ClientConnection.onReply calls `callRefused` only for the connection's first reply (its
// `answered` flag, read on every reply anyway); every other reply marks the connection served
// inline, with no call here.

import { CacheError, ERROR_CODE, TOO_MANY_CONNECTIONS } from "../protocol/errors.ts";
import { REPLY_CACHE_ERROR, type ReplyReader } from "../protocol/reply-reader.ts";
import type { ClientConnection } from "./client-connection.ts";
import { failAll } from "./fail-all.ts";
import { replyError, unavailable } from "./results.ts";

/**
 * firstCallFailed acts on `e`, the node's answer to our Auth or intro PeerPing other than taking
 * it (FirstCalls.onReply); `first`: it is the connection's first reply. The node refused the
 * token, or answered the Auth with something else (OVERLOADED at its connection limit, whatever
 * its words): the calls waiting on the connection get that answer. As the first reply, either is
 * the node's refusal of the connection, kept in `refusal`.
 */
export function firstCallFailed(conn: ClientConnection, e: CacheError, first: boolean): void {
  if (first && (e.code === ERROR_CODE.OVERLOADED || e.code === ERROR_CODE.UNAUTHORIZED)) conn.refusal = e;
  conn.health.succeeded(); // the node is up and answering (as for the same refusal of a call)
  failAll(conn, e);
}

/**
 * callRefused tells whether the reply in `r` to an application's call of `method`, the
 * connection's first reply, is the node's refusal of the connection (OVERLOADED, saying
 * TOO_MANY_CONNECTIONS), and keeps it in `refusal`. The node refusing the connection (at its
 * connection limit) has not served it: that neither ends a backoff nor makes the close that
 * follows an idle one (the late reply of a timed-out call included).
 */
export function callRefused(conn: ClientConnection, method: number, r: ReplyReader): boolean {
  if (r.outcome !== REPLY_CACHE_ERROR || r.errorCode !== ERROR_CODE.OVERLOADED) return false;
  const refusal = replyError(method, r);
  if (refusal.message !== TOO_MANY_CONNECTIONS) return false;
  conn.refusal = refusal;
  return true;
}

/**
 * judgeLoss acts on the end of `conn`'s socket or connect attempt (ClientConnection.lost; `open`:
 * it was OPEN), backing off or not and counting the peer's failure, and returns the error the
 * calls on it fail with. A failure of the peer: a connect that did not succeed, or a connection
 * lost with calls on it. A connection closed before it served anything is not one, but the next
 * connect backs off all the same; when the peer said why (a node at its connection limit answers
 * the first call OVERLOADED and closes), the calls still on it get that answer. An open
 * connection that served calls and that the peer then closed while idle (its idle timeout) is
 * neither: the next call reconnects at once. A revival that fails alone, or a loss the caller
 * says does not count (`countsTowardDown`), backs off without counting toward marking the peer
 * down.
 */
export function judgeLoss(conn: ClientConnection, open: boolean, reason: string, failure: boolean, countsTowardDown: boolean): CacheError {
  const refused = failure && open && !conn.served;
  const refusal = refused ? conn.refusal : null;
  conn.refusal = refusal; // kept while backing off (refusedNow); gone once a failure replaces it
  const failed = failure && refusal === null && (!open || conn.pending.inFlight > 0);
  if (failed || refused) {
    conn.dialer.backOff();
    if (failed && countsTowardDown && !revivalOnly(conn)) conn.health.failed(reason);
  } else {
    // Not a failure: the next call reconnects at once.
    conn.dialer.clearBackoff();
  }
  return refusal ?? unavailable(reason);
}

/** revivalOnly tells whether the revival ping is the only call on `conn`. */
function revivalOnly(conn: ClientConnection): boolean {
  return conn.revivalSlot >= 0 && conn.pending.inFlight === 1;
}
