/**
 * Routed writes (routing.ts): a client's Set or Delete of a key owned elsewhere, and a Clear.
 *
 * A Set/Delete goes to the owner as PeerSet/PeerDelete, who then tells every other member to drop
 * its mirrored copy; this node drops its own when the write is sent and again when it is answered
 * (forgetCopy), and counts the write for the copy tickets. An owner that cannot be reached is
 * PEER_UNAVAILABLE (a write is never kept on a node that does not own the key); so is one that
 * answers PEER_UNAVAILABLE, a Thrift exception, or success=false with no error, each said so and
 * not as unreachable (ownerFailed). A Clear clears this node and every
 * other member (PeerClear), then has every member drop its mirrored copies.
 */
import { type Cluster, type PeerClient } from "../cluster/cluster.ts";
import { noSuchGroup } from "../cluster/write-waits.ts";
import type { Group } from "../cluster/group.ts";
import { CacheError, ERROR_CODE, ERROR_ORIGIN } from "../protocol/errors.ts";
import type { ReplyWriter } from "../protocol/reply-writer.ts";
import { METHOD_SET, type Request } from "../protocol/request.ts";
import { isRefusedWithoutReason } from "../client/results.ts";
import { ownerFailed, replyCacheError, replyThrown } from "./reply-errors.ts";

export function routeWrite(cluster: Cluster, group: Group, base: number, req: Request, reply: ReplyWriter): Promise<void> | false {
  const owner = cluster.owner(req.buffer, req.keyStart, req.keyLength);
  if (owner === cluster.self) return false;
  const client = cluster.peer(owner);
  if (client === undefined) return false;
  cluster.counters.forwarded++;
  const key = req.buffer.slice(req.keyStart, req.keyStart + req.keyLength);
  forgetCopy(group, key);
  const call = base === METHOD_SET
    ? client.set(group.name, key, req.buffer.slice(req.valueStart, req.valueStart + req.valueLength), req.effectiveTtlMs(), { peer: true }).then(() => true)
    : client.delete(group.name, key, { peer: true });
  return call.then(
    (ok) => {
      forgetCopy(group, key);
      if (base === METHOD_SET) group.counters.sets++;
      else if (ok) group.counters.deletes++;
      reply.writeSuccess(req, ok);
    },
    (e: unknown) => {
      forgetCopy(group, key); // it may have been applied
      if (e instanceof CacheError && e.code === ERROR_CODE.PEER_UNAVAILABLE) {
        cluster.counters.peerErrors++;
        return replyCacheError(reply, req, ERROR_CODE.PEER_UNAVAILABLE, ownerFailed(owner, e)); // (named, as for a Get)
      }
      replyThrown(reply, req, e);
    },
  );
}

/**
 * forgetCopy drops this node's mirrored copy of a key it forwards a write of, and counts the
 * write for the copy tickets (Group.written: no answer read before it fills the mirror, and a
 * fallback load of it under way is stale). Done when the write is sent and again when it is
 * answered: a Get sent on another peer connection after the write may reach the owner before it
 * and bring the old value, which must be gone before the write's reply lets the client read.
 */
export function forgetCopy(group: Group, key: Uint8Array, start = 0, length = key.length): void {
  group.mirror?.delete(key, start, length);
  group.written(key, start, length);
}

export function clearEverywhere(cluster: Cluster, group: Group, req: Request, reply: ReplyWriter): Promise<void> {
  group.clear();
  const others = cluster.others();
  const calls = others.map((c) => c.clear(group.name, { peer: true }));
  return Promise.allSettled(calls).then(async (results) => {
    const failed = new Set<PeerClient>();
    let refused = 0;
    let answered = 0;
    let firstAnswer = "";
    results.forEach((r, i) => {
      if (r.status === "fulfilled" || noSuchGroup(r.reason)) return; // (a member without the group holds nothing of it: cleared)
      failed.add(others[i]!);
      if (isRefusedWithoutReason(r.reason)) refused++;
      else if (r.reason instanceof CacheError && r.reason.origin !== ERROR_ORIGIN.UNANSWERED) {
        if (answered++ === 0) firstAnswer = r.reason.message;
      }
    });
    // A member that cleared may have forwarded a Get to an owner that had not yet, and taken its
    // old value into its mirror: once every member cleared, every member drops its copies (as
    // this node drops its own: what forwarded Gets brought back meanwhile, forgetCopy). One whose
    // PeerClear failed (not reached, refused, or answered an error) is not waited for again: it drops them once it
    // can (owed).
    await cluster.dropAll(group.name, failed);
    group.dropCopies();
    cluster.counters.peerErrors += failed.size;
    if (failed.size === 0) return reply.writeSuccess(req, true);
    const unreached = failed.size - refused - answered;
    replyCacheError(reply, req, ERROR_CODE.PEER_UNAVAILABLE, clearFailed(calls.length, unreached, refused, answered, firstAnswer));
  });
}

/**
 * clearFailed is the message of a Clear that `unreached` of the `peers` other members did not get,
 * `refused` answered success=false, with no error (isRefusedWithoutReason), and `answered`
 * answered with another error, the first saying `firstAnswer`: those were up, not unreachable.
 */
function clearFailed(peers: number, unreached: number, refused: number, answered: number, firstAnswer: string): string {
  const parts: string[] = [];
  if (unreached > 0) parts.push(`${unreached} of ${peers} peers could not be reached`);
  if (refused > 0) parts.push(`${refused} of ${peers}${parts.length > 0 ? "" : " peers"} refused it without a reason (answered success=false)`);
  if (answered > 0) parts.push(`${answered} of ${peers}${parts.length > 0 ? "" : " peers"} answered an error (${answered > 1 ? "the first: " : ""}${firstAnswer})`);
  return `cleared here, but ${parts.join(", and ")}`;
}
