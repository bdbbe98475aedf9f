/**
 * Mirrored copies, from the side of the calls dispatch serves: a member keeps copies of other
 * members' keys in its mirror (Group.mirror), and these keep a copy from outliving a write of its
 * key. As a key's owner, a node notes the keys of a peer's Get or GetMulti it hands out
 * (`handedOut`: HandOuts), and after it stores or deletes keys it drops its own copies and tells
 * the other members to drop theirs (`forgetCopies`). As a member told so, it drops them
 * (`invalidate`, serving PeerInvalidate).
 *
 * dispatch.ts calls each of these directly, as before. A lone node's Gets and writes reach none of
 * them: `handedOut` runs for a peer's Get only, and `forgetCopies` only with a cluster.
 */
import type { Cluster } from "../cluster/cluster.ts";
import type { Group } from "../cluster/group.ts";
import type { ReplyWriter } from "../protocol/reply-writer.ts";
import { writeInvalidate } from "../protocol/figure-replies.ts";
import { METHOD_GET, baseMethod, type Request } from "../protocol/request.ts";
import type { DispatchContext } from "./dispatch.ts";

/** invalidate serves PeerInvalidate: drop this node's mirrored copies of the keys (or all). */
export function invalidate(ctx: DispatchContext, group: Group, req: Request, reply: ReplyWriter): void {
  if (ctx.cluster !== undefined) ctx.cluster.counters.invalidationsReceived++;
  const mirror = group.mirror;
  if (req.all) {
    // (A member that started asks so: HandOuts.) The mirror goes, and no forwarded answer under
    // way may refill it; this node's own loads are not the sender's business.
    const dropped = mirror?.size ?? 0;
    group.dropCopies();
    return writeInvalidate(reply, req, dropped);
  }
  let dropped = 0;
  if (mirror !== undefined) {
    for (let i = 0; i < req.itemCount; i++) if (mirror.delete(req.buffer, req.items[i * 4]!, req.items[i * 4 + 1]!)) dropped++;
  }
  // A forwarded answer or a load of such a key under way read what the owner has just
  // overwritten: it must not fill the mirror (copy tickets), nor the store.
  for (let i = 0; i < req.itemCount; i++) group.written(req.buffer, req.items[i * 4]!, req.items[i * 4 + 1]!);
  writeInvalidate(reply, req, dropped);
}

/**
 * forgetCopies runs after this node stored or deleted keys it owns: it drops its own mirrored
 * copies and tells the other members to drop theirs. The keys are the `count` ranges
 * (start, length) at `ranges[i * stride]` into buf, copied for Cluster.invalidate (also when this
 * node is alone in its list: a member just taken out of it may still answer from copies under a
 * lease it gave: WriteWaits.removed). It returns what the write's acknowledgement must wait for:
 * the answers of the members that may hold a copy of a key (HandOuts: a client that then reads
 * the key through one must get what it wrote), but `origin`'s, the member that forwarded the
 * write; else undefined (acknowledged at once). Callers check for a cluster first, so a lone
 * node's write path allocates nothing.
 */
export function forgetCopies(
  cluster: Cluster, group: Group, buf: Uint8Array, ranges: ArrayLike<number>, stride: number, count: number, origin: string | undefined,
): Promise<void> | undefined {
  const keys: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    const start = ranges[i * stride]!;
    const length = ranges[i * stride + 1]!;
    group.mirror?.delete(buf, start, length);
    keys.push(buf.slice(start, start + length));
  }
  return cluster.invalidate(group, keys, origin);
}

/**
 * handedOut notes the keys of a peer's Get or GetMulti as handed out (HandOuts: the peer may keep
 * copies): answered at once, those answered with values; one that waits for loads, all its keys
 * now, before it is answered. A write of a key meanwhile then waits for the peer to drop its copy,
 * which also keeps it from keeping the value under way (Group.written): told of the write after
 * that value came, it would serve it until it heard. (A copy's life counts from when its Get was
 * sent, so a note made on its arrival outlasts it.) `answered` is what serving it returned.
 */
export function handedOut(
  cluster: Cluster, group: Group, req: Request, reply: ReplyWriter, member: string | undefined, answered: Promise<void> | void,
): Promise<void> | void {
  // (An answer made at once with an error, NOT_FOUND among them, gives no copy.)
  if (answered instanceof Promise || reply.errorCode === 0) noteHandOut(cluster, group, req, member);
  return answered;
}

function noteHandOut(cluster: Cluster, group: Group, req: Request, member: string | undefined): void {
  const name = group.nameBytes;
  const life = group.mirrorTtlMs;
  if (baseMethod(req.method) === METHOD_GET) return cluster.handOuts.note(name, req.buffer, req.keyStart, req.keyLength, member, life);
  for (let i = 0; i < req.itemCount; i++) cluster.handOuts.note(name, req.buffer, req.items[i * 4]!, req.items[i * 4 + 1]!, member, life);
}
