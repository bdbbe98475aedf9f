/**
 * A routed Get (routing.ts): a client's Get of a key owned elsewhere.
 *
 * This node's mirror answers it first (a bounded store of hot keys owned elsewhere, filled through
 * LRU-K admission, each copy living no longer than the owner's remaining TTL, nor than the mirror
 * TTL from when its Get was sent); else the answer fetched ahead for it (prefetch.ts), unless a
 * write of the key was heard of since it was sent or it is a mirror TTL old; either only while
 * this node holds the owner's read lease (cluster/leases.ts; without one, a copy is a lease miss);
 * else a PeerGet to the owner. If the owner cannot be reached, or fails the call (answers
 * PEER_UNAVAILABLE or a Thrift exception), the node loads the key itself when its group has a
 * loader (groupcache's fallback) and keeps the value nowhere (dropLoaded); without a loader the
 * answer is PEER_UNAVAILABLE, saying how the owner failed it (ownerFailed). The owner's other
 * answers (NOT_FOUND, LOAD_FAILED, ...) pass through unchanged.
 */
import type { Cluster, PeerClient } from "../cluster/cluster.ts";
import type { Group } from "../cluster/group.ts";
import { CacheError, ERROR_CODE, ERROR_ORIGIN } from "../protocol/errors.ts";
import type { ReplyWriter } from "../protocol/reply-writer.ts";
import type { Request } from "../protocol/request.ts";
import { SET_OK, type Store } from "../store/store.ts";
import { ownerFailed, replyCacheError, replyThrown } from "./reply-errors.ts";
import { writeHit } from "./hit-reply.ts";
import { type Prefetch, type Prefetches, agedTtl, forwardedTtl } from "./prefetch.ts";

export function routeGet(
  cluster: Cluster, group: Group, req: Request, reply: ReplyWriter, prefetches: Prefetches | undefined,
): Promise<void> | boolean {
  const owner = cluster.owner(req.buffer, req.keyStart, req.keyLength);
  if (owner === cluster.self) return false; // served here: dispatch's get takes what was loaded ahead
  // What was fetched ahead for this key (prefetch.ts) is this Get's, however it is answered.
  let ahead = prefetches?.take(cluster, group, req.buffer, req.keyStart, req.keyLength, false);
  // A write or invalidation of the key heard of since it was sent: its answer may be older than
  // what this connection's earlier requests read (the owner waits for this node before it acks).
  // Nor one sent a mirror TTL ago or more: the owner remembers what it handed out that long (and
  // 1 s), then acknowledges writes of the key without waiting for this node.
  if (ahead !== undefined && (!group.mayCopy(req.buffer, req.keyStart, req.keyLength, ahead.ticket) ||
    (cluster.mirrorTtlMs > 0 && group.store.clock() - ahead.fetchedAt >= cluster.mirrorTtlMs))) ahead = undefined;
  const client = cluster.peer(owner);
  if (client === undefined) return false;
  // Copies of the owner's keys (the mirror, an answer fetched ahead) answer only under its lease
  // (cluster/leases.ts): without one, the owner may have acknowledged a write this node has not
  // heard of yet, and the Get is forwarded as a miss is. Asked only when there is a copy: the
  // ask is what keeps the lease renewed.
  const mirror = group.mirror;
  const id = mirror === undefined ? -1 : mirror.get(req.buffer, req.keyStart, req.keyLength);
  if (id >= 0 || ahead !== undefined) {
    if (!cluster.leaseHeld(owner)) {
      cluster.counters.mirrorLeaseMisses++;
      ahead = undefined;
    } else if (mirror !== undefined && id >= 0) {
      group.countRouted(1, true);
      cluster.counters.mirrorHits++;
      writeHit(reply, req, mirror, id);
      return true;
    }
  }
  group.countRouted(1, false);
  cluster.counters.forwarded++;
  // Forwarded ahead while the connection waited for an earlier Get: answer from it.
  if (ahead !== undefined) {
    const kept = ahead;
    return answerWhenDone(req, reply, kept, () => answerAhead(cluster, group, req, reply, owner, client, kept));
  }
  return forwardNow(cluster, group, req, reply, owner, client);
}

/** forwardNow forwards the Get to `owner` (by `client`) and answers it when the owner does (answerForward). */
function forwardNow(cluster: Cluster, group: Group, req: Request, reply: ReplyWriter, owner: string, client: PeerClient): Promise<void> {
  const ticket = group.copyTicket(); // a write heard of before the answer comes keeps it out of the mirror
  const sentAt = group.store.clock(); // the owner's TTL is aged from here (forwardedTtl)
  return new Promise<void>((resolve) => {
    client.forwardGet(group.nameBytes, req.buffer, req.keyStart, req.keyLength, (err, value, off, len, ttl) => {
      let answered: Promise<void> | true;
      try {
        answered = answerForward(cluster, group, req, reply, owner, err, value, off, len, forwardedTtl(ttl, sentAt, group.store.clock()), ticket, sentAt);
      } catch (e) {
        replyThrown(reply, req, e);
        answered = true; // never leave the connection parked
      }
      settle(answered, resolve);
    });
  });
}

/** settle resolves `resolve` once `answered` (true: at once) has written the reply. */
function settle(answered: Promise<void> | true, resolve: () => void): void {
  if (answered === true) resolve();
  else void answered.finally(resolve);
}

/**
 * answerWhenDone answers a Get from `ahead`, its answer started ahead of its turn (prefetch.ts),
 * with `answer`: at once if it has come, else when it comes. Returns true when the reply is
 * written, else the promise of it. A throw is answered as the Get's error: the connection is
 * never left waiting.
 */
export function answerWhenDone(req: Request, reply: ReplyWriter, ahead: Prefetch, answer: () => Promise<void> | true): Promise<void> | true {
  const guarded = (): Promise<void> | true => {
    try {
      return answer();
    } catch (e) {
      replyThrown(reply, req, e);
      return true;
    }
  };
  if (ahead.done) return guarded();
  return new Promise<void>((resolve) => {
    ahead.waiter = () => settle(guarded(), resolve);
  });
}

/**
 * answerAhead answers a Get from its prefetched answer (see answerForward), its TTL aged by the
 * wait; it fills the mirror under the copy ticket taken when it was forwarded (a write or an
 * invalidation of the key heard of since, while it travelled or was kept, keeps it out). The
 * owner's lease ran out while it was awaited: forwarded again (`client`), as a copy is not used.
 */
function answerAhead(
  cluster: Cluster, group: Group, req: Request, reply: ReplyWriter, owner: string, client: PeerClient, ahead: Prefetch,
): Promise<void> | true {
  if (!cluster.leaseHeld(owner)) {
    cluster.counters.mirrorLeaseMisses++;
    return forwardNow(cluster, group, req, reply, owner, client);
  }
  cluster.counters.prefetchesUsed++;
  const v = ahead.value;
  const ttl = agedTtl(ahead, group.store.clock());
  return answerForward(cluster, group, req, reply, owner, ahead.err, v, 0, v === null ? 0 : v.length, ttl, ahead.ticket, ahead.fetchedAt);
}

/**
 * answerForward writes the reply of a Get the owner answered: its value (kept in the mirror too,
 * if `ticket`, taken when the Get was sent, shows no write of the key since: Group.copyTicket),
 * its CacheError, or, when the owner was unreachable, a local load (groupcache's fallback) or
 * PEER_UNAVAILABLE. Returns true when the reply is written, or the fallback load's promise.
 */
function answerForward(
  cluster: Cluster, group: Group, req: Request, reply: ReplyWriter, owner: string,
  err: CacheError | null, value: Uint8Array | null, off: number, len: number, ttl: number, ticket: number, sentAt: number,
): Promise<void> | true {
  if (err === null && value !== null) {
    cluster.counters.peerLoads++;
    reply.writeGet(req, value, off, len, ttl);
    const mirror = group.mirror;
    // The copy lives the mirror TTL from when the Get was sent, at most: what the owner, which
    // counts it from its answer, waits out before it acknowledges writes without asking (HandOuts).
    const copyTtl = group.copyTtl(ttl, group.store.clock() - sentAt);
    if (mirror !== undefined && ttl !== 0 && copyTtl >= 0 && group.mayCopy(req.buffer, req.keyStart, req.keyLength, ticket)) {
      if (keepInMirror(mirror, req.buffer, req.keyStart, req.keyLength, value, off, len, copyTtl, true)) {
        cluster.counters.mirrorFills++;
        cluster.wantLease(owner); // (its lease renewed, or asked for again: the next Get of it may hold it)
      }
    }
    return true;
  }
  const e = err ?? new CacheError(ERROR_CODE.PEER_UNAVAILABLE, "empty reply from the owner", ERROR_ORIGIN.NO_RESULT);
  if (e.code !== ERROR_CODE.PEER_UNAVAILABLE) {
    replyCacheError(reply, req, e.code, e.message);
    return true;
  }
  cluster.counters.peerErrors++;
  if (group.loader === undefined) {
    replyCacheError(reply, req, ERROR_CODE.PEER_UNAVAILABLE, ownerFailed(owner, e));
    return true;
  }
  cluster.counters.fallbackLoads++;
  return group.load(req.buffer, req.keyStart, req.keyLength, false).then(
    (loaded) => {
      reply.writeGet(req, loaded.value, 0, loaded.value.length, loaded.ttlRemainingMs);
      dropLoaded(cluster, group, req.buffer, req.keyStart, req.keyLength);
    },
    (failure: unknown) => {
      // Nothing of a key owned elsewhere stays in the main store, not a cached "not found" either:
      // the owner's later writes could not reach it.
      if (ownedElsewhere(cluster, req.buffer, req.keyStart, req.keyLength)) group.store.delete(req.buffer, req.keyStart, req.keyLength);
      replyThrown(reply, req, failure);
    },
  );
}

/**
 * dropLoaded drops what a load here left in the main store for key buf[ks, ks+kl) owned elsewhere
 * (the owner was unreachable): the value is answered, and kept nowhere. Not in the main store,
 * where the owner's later writes could not reach it; nor in the mirror, since the owner never
 * handed it out, so it would acknowledge a write of the key without waiting for this node to
 * drop the copy (HandOuts), and this node may not even have found it down (one lost PeerGet).
 * Unless this node owns the key by now (the member list changed while it loaded): then what its
 * main store holds is the key's, maybe a write it took since, and stays.
 */
export function dropLoaded(cluster: Cluster, group: Group, buf: Uint8Array, ks: number, kl: number): void {
  if (ownedElsewhere(cluster, buf, ks, kl)) group.store.delete(buf, ks, kl);
}

/**
 * keepInMirror copies a value into the mirror (`admit`: through LRU-K admission, as a read fill)
 * and tells whether it is kept. A value over the mirror's largest item (a 64th of the mirror:
 * Group) is not (nor counted as a refusal: the mirror only skips it), and drops any copy of the
 * key the mirror may still hold, which is older.
 */
function keepInMirror(
  mirror: Store, buf: Uint8Array, ks: number, kl: number, value: Uint8Array, off: number, len: number, ttl: number, admit: boolean,
): boolean {
  if (!mirror.fits(kl, len)) {
    mirror.delete(buf, ks, kl);
    return false;
  }
  return (admit ? mirror.fill(buf, ks, kl, value, off, len, ttl) : mirror.set(buf, ks, kl, value, off, len, ttl)) === SET_OK;
}

/** ownedElsewhere: another member owns the key under the member list as it is now. */
function ownedElsewhere(cluster: Cluster, buf: Uint8Array, ks: number, kl: number): boolean {
  return cluster.owner(buf, ks, kl) !== cluster.self;
}
