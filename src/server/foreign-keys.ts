/**
 * Foreign keys: the keys of a peer's call that this node's member list gives to another member.
 * The two lists disagree for a while when one node has applied a change the other has not yet.
 * A peer's write of such a key is dropped and refused (`foreign`, `refuseForeign`), and a peer's
 * read of one is answered by a load that is not stored (`dropForeignReads`); both are counted in
 * the cluster's counters. A client's call is routed instead (routing.ts) and never checked here.
 *
 * dispatch.ts calls these for each Set, SetMulti entry, Get and GetMulti, with one direct call as
 * before. For a lone node or a client's call, `peerCluster` returns undefined at once.
 */
import type { Cluster } from "../cluster/cluster.ts";
import type { Group } from "../cluster/group.ts";
import { ERROR_CODE } from "../protocol/errors.ts";
import type { ReplyWriter } from "../protocol/reply-writer.ts";
import { METHOD_GET, baseMethod, isPeerMethod, type Request } from "../protocol/request.ts";
import type { DispatchContext } from "./dispatch.ts";
import { replyCacheError } from "./reply-errors.ts";

/**
 * peerCluster is the cluster a peer call's keys are checked against, or undefined when there is
 * nothing to check (no other member, or not a Peer* method). A key it gives to another member
 * means the member lists disagree: one node has applied a change the other has not yet.
 */
function peerCluster(ctx: DispatchContext, method: number): Cluster | undefined {
  const cluster = ctx.cluster;
  return cluster !== undefined && cluster.members.length > 1 && isPeerMethod(method) ? cluster : undefined;
}

/**
 * foreign tells whether a peer's write (Set, Delete, SetMulti entry) of key b[ks, ks+kl) is of a
 * key another member owns (peerCluster), and counts it. Such a write is dropped, with any value
 * the key has here, rather than stored: kept, it would outlast the ring change that made it
 * foreign (the purge has run), and be served again, older than writes the real owner took
 * meanwhile, once the key comes back to this node. A cache may lose a value, never serve an old
 * one. And it is refused (`refuseForeign`), not acknowledged: the real owner may hold an older
 * value of the key, which every member answers next. (Before, it was acknowledged as stored: a
 * Set forwarded by a member with the old list was answered success, and the new owner's older
 * value read back after it, for good in a group without a TTL.)
 */
export function foreign(ctx: DispatchContext, method: number, b: Uint8Array, ks: number, kl: number): boolean {
  const cluster = peerCluster(ctx, method);
  if (cluster === undefined || cluster.owner(b, ks, kl) === cluster.self) return false;
  cluster.counters.foreignWrites++;
  return true;
}

/** FOREIGN_WRITE is the message of a peer's write refused as foreign. */
export const FOREIGN_WRITE = "not stored: this node's member list gives the key to another member (the member lists disagree while a change spreads); try again";

/**
 * refuseForeign answers a peer's write that `foreign` dropped: PEER_UNAVAILABLE, the answer of a
 * write its owner did not take, which the forwarding member passes on to its client (ownerFailed).
 */
export function refuseForeign(reply: ReplyWriter, req: Request): void {
  replyCacheError(reply, req, ERROR_CODE.PEER_UNAVAILABLE, FOREIGN_WRITE);
}

/** ForeignKeys marks a read's keys this node does not own (by request entry; undefined: none). */
export type ForeignKeys = boolean[] | undefined;

/**
 * dropForeignReads finds the keys of a peer's Get or GetMulti that this node's member list gives
 * to another member (peerCluster), drops any value they have in the main store, and counts them
 * (`foreignReads`). They are still answered, by a load that is not stored: the caller asked
 * because its list says this node owns them, and will keep the answer at most in its mirror,
 * which the owner's invalidations reach. Stored here, the value would be out of reach of the real
 * owner's writes and served stale once the key came back to this node (or found by a fallback load).
 */
export function dropForeignReads(ctx: DispatchContext, group: Group, req: Request): ForeignKeys {
  const cluster = peerCluster(ctx, req.method);
  if (cluster === undefined) return undefined;
  const b = req.buffer;
  let marks: ForeignKeys;
  const single = baseMethod(req.method) === METHOD_GET;
  const count = single ? 1 : req.itemCount;
  for (let i = 0; i < count; i++) {
    const ks = single ? req.keyStart : req.items[i * 4]!;
    const kl = single ? req.keyLength : req.items[i * 4 + 1]!;
    if (cluster.owner(b, ks, kl) === cluster.self) continue;
    marks ??= new Array<boolean>(count).fill(false);
    marks[i] = true;
    group.store.delete(b, ks, kl);
    cluster.counters.foreignReads++;
  }
  return marks;
}
