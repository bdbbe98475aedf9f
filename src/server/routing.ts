/**
 * Routing: how a node serves a client's call for keys it does not own.
 *
 * Every key has one owner on the ring. A client's Get/Set/Delete of a key owned elsewhere goes to
 * the owner with the peer variant (PeerGet/PeerSet/PeerDelete), which the owner serves locally and
 * never forwards again; so a key is loaded once cluster-wide, and nodes whose member lists
 * disagree cannot loop (the owner they picked answers from its own store, whatever it thinks).
 *
 * - Get: this node's mirror first (a bounded store of hot keys owned elsewhere, filled through
 *   LRU-K admission, each copy living no longer than the owner's remaining TTL), while this node
 *   holds the owner's read lease (cluster/leases.ts; without one, a copy is a lease miss); else
 *   PeerGet to the owner. If the owner cannot be reached (timeout, down, connection lost) or
 *   fails the call (answers PEER_UNAVAILABLE or a Thrift exception) the node loads the key itself
 *   when its group has a loader (groupcache's behaviour) and counts a peer error; without a
 *   loader the answer is PEER_UNAVAILABLE, saying which (reply-errors.ts, ownerFailed). Answers
 *   of the owner (NOT_FOUND, LOAD_FAILED, ...) pass through unchanged.
 * - Set/Delete: PeerSet/PeerDelete to the owner, who then tells every other member to drop its
 *   mirrored copy (PeerInvalidate); this node drops its own copy at once. An unreachable owner is
 *   PEER_UNAVAILABLE: a write is never kept on a node that does not own the key; so is an owner
 *   that fails it (answers PEER_UNAVAILABLE, a Thrift exception, or success=false with no error:
 *   a seed server's way to refuse), said as such, not as unreachable (ownerFailed).
 * - Clear: this node and every other member (PeerClear), mirrors included.
 * - GetMulti/SetMulti: keys grouped by owner, one peer call per owner, in parallel; results merged
 *   in request order. GetMulti takes what the mirror holds first, as Get does.
 * - Counters: a Get (or GetMulti key) of a key owned elsewhere counts in this node's group as a
 *   hit when the mirror answers it and as a miss when it is forwarded (groupcache counts its hot
 *   cache's hits so), so hits + misses = total on every node; the owner counts it again.
 * `route` returns a promise that writes the reply, `true` when the reply was written at once (a
 * mirror hit), or `false` when the call is local after all.
 *
 * `route` picks the path; the paths are beside it: the Get in routed-get.ts, Set, Delete and Clear
 * in routed-writes.ts, GetMulti and SetMulti in routed-multi.ts.
 */
import type { Cluster } from "../cluster/cluster.ts";
import type { Group } from "../cluster/group.ts";
import type { ReplyWriter } from "../protocol/reply-writer.ts";
import {
  METHOD_CLEAR, METHOD_DELETE, METHOD_GET, METHOD_GET_MULTI, METHOD_SET, METHOD_SET_MULTI, type Request,
} from "../protocol/request.ts";
import type { Prefetches } from "./prefetch.ts";
import { clearEverywhere, routeWrite } from "./routed-writes.ts";
import { routeGet } from "./routed-get.ts";
import { getMultiRouted, setMultiRouted } from "./routed-multi.ts";

/**
 * route serves `req` (seed method `base`) across the cluster, or returns false to serve it here;
 * `prefetches` are the connection's Gets forwarded ahead (prefetch.ts), if any.
 */
export function route(
  cluster: Cluster, group: Group, base: number, req: Request, reply: ReplyWriter, prefetches?: Prefetches,
): Promise<void> | boolean {
  switch (base) {
    case METHOD_GET:
      return routeGet(cluster, group, req, reply, prefetches);
    case METHOD_SET:
    case METHOD_DELETE:
      return routeWrite(cluster, group, base, req, reply);
    case METHOD_CLEAR:
      return clearEverywhere(cluster, group, req, reply);
    case METHOD_GET_MULTI:
      return getMultiRouted(cluster, group, req, reply, prefetches);
    case METHOD_SET_MULTI:
      return setMultiRouted(cluster, group, req, reply);
    default:
      return false;
  }
}
