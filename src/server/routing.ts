/**
 * Routing: how a node serves a client's call for keys it does not own.
 *
 * Every key has one owner on the ring. A client's Get/Set/Delete of a key owned elsewhere goes to
 * the owner with the peer variant (PeerGet/PeerSet/PeerDelete), which the owner serves locally and
 * never forwards again; so a key is loaded once cluster-wide, and nodes whose member lists
 * disagree cannot loop (the owner they picked answers from its own store, whatever it thinks).
 *
 * - Get: this node's mirror first (a bounded store of hot keys owned elsewhere, filled through
 *   LRU-K admission, each copy living no longer than the owner's remaining TTL); else PeerGet to
 *   the owner. If the owner cannot be reached (timeout, down, connection lost) the node loads the
 *   key itself when its group has a loader (groupcache's behaviour) and counts a peer error;
 *   without a loader the answer is PEER_UNAVAILABLE. Answers of the owner (NOT_FOUND,
 *   LOAD_FAILED, ...) pass through unchanged.
 * - Set/Delete: PeerSet/PeerDelete to the owner, who then tells every other member to drop its
 *   mirrored copy (PeerInvalidate); this node drops its own copy at once. An unreachable owner is
 *   PEER_UNAVAILABLE: a write is never kept on a node that does not own the key; so is an owner
 *   that answers success=false, with no error (a seed server's way to refuse), said as a refusal.
 * - Clear: this node and every other member (PeerClear), mirrors included.
 * - GetMulti/SetMulti: keys grouped by owner, one peer call per owner, in parallel; results merged
 *   in request order. GetMulti takes what the mirror holds first, as Get does.
 * - Counters: a Get (or GetMulti key) of a key owned elsewhere counts in this node's group as a
 *   hit when the mirror answers it and as a miss when it is forwarded (groupcache counts its hot
 *   cache's hits so), so hits + misses = total on every node; the owner counts it again.
 * Returns a promise that writes the reply, `true` when the reply was written at once (a mirror
 * hit), or `false` when the call is local after all.
 */
import type { Cluster } from "../cluster/cluster.ts";
import type { Group } from "../cluster/group.ts";
import { CacheError, ERROR_CODE } from "../protocol/errors.ts";
import { type ReplyWriter, getMultiEntryBytes } from "../protocol/reply-writer.ts";
import {
  METHOD_CLEAR, METHOD_DELETE, METHOD_GET, METHOD_GET_MULTI, METHOD_SET, METHOD_SET_MULTI, type Request,
} from "../protocol/request.ts";
import { SET_OK, type Store } from "../store/store.ts";
import { valuesFor } from "../client/results.ts";
import { multiTooLarge, multiTooLargeError, replyCacheError, replyThrown } from "./reply-errors.ts";
import { writeHit } from "./hit-reply.ts";
import { LoadWindow, loadKeys } from "./multi-loads.ts";
import { type Prefetch, type Prefetches, agedTtl, forwardedTtl } from "./prefetch.ts";
import { repeatedKeys } from "./repeated-keys.ts";
import { clearEverywhere, forgetCopy, ownerFailed, routeWrite } from "./routed-writes.ts";

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

function routeGet(
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
  const mirror = group.mirror;
  if (mirror !== undefined) {
    const id = mirror.get(req.buffer, req.keyStart, req.keyLength);
    if (id >= 0) {
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
    cluster.counters.prefetchesUsed++;
    return answerWhenDone(req, reply, ahead, () => answerAhead(cluster, group, req, reply, owner, ahead));
  }
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
 * invalidation of the key heard of since, while it travelled or was kept, keeps it out).
 */
function answerAhead(cluster: Cluster, group: Group, req: Request, reply: ReplyWriter, owner: string, ahead: Prefetch): Promise<void> | true {
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
      if (keepInMirror(mirror, req.buffer, req.keyStart, req.keyLength, value, off, len, copyTtl, true)) cluster.counters.mirrorFills++;
    }
    return true;
  }
  const e = err ?? new CacheError(ERROR_CODE.PEER_UNAVAILABLE, "empty reply from the owner");
  if (e.code !== ERROR_CODE.PEER_UNAVAILABLE) {
    replyCacheError(reply, req, e.code, e.message);
    return true;
  }
  cluster.counters.peerErrors++;
  if (group.loader === undefined) {
    replyCacheError(reply, req, ERROR_CODE.PEER_UNAVAILABLE, `owner ${owner} unreachable: ${e.message}`);
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
function dropLoaded(cluster: Cluster, group: Group, buf: Uint8Array, ks: number, kl: number): void {
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

/**
 * settleAll waits for every promise of `work` to settle, then rejects with the first failure if
 * any: nothing started for a request may still run (and read it) once its reply is written, since
 * the connection then decodes its next call into the same Request.
 */
async function settleAll(work: Promise<unknown>[]): Promise<void> {
  const failed = (await Promise.allSettled(work)).find((r) => r.status === "rejected");
  if (failed !== undefined) throw failed.reason;
}

/**
 * keysByOwner splits a multi-key request's entries (indexes) by owner; local ones under self. With
 * `skip` (repeatedKeys' flags), the entries it marks are left out.
 */
function keysByOwner(cluster: Cluster, req: Request, skip: Uint8Array | null = null): Map<string, number[]> {
  const byOwner = new Map<string, number[]>();
  for (let i = 0; i < req.itemCount; i++) {
    if (skip !== null && skip[i] === 1) continue;
    const owner = cluster.owner(req.buffer, req.items[i * 4]!, req.items[i * 4 + 1]!);
    const list = byOwner.get(owner);
    if (list === undefined) byOwner.set(owner, [i]);
    else list.push(i);
  }
  return byOwner;
}

function keyAt(req: Request, i: number): Uint8Array {
  return req.buffer.slice(req.items[i * 4]!, req.items[i * 4]! + req.items[i * 4 + 1]!);
}

function getMultiRouted(cluster: Cluster, group: Group, req: Request, reply: ReplyWriter, prefetches: Prefetches | undefined): Promise<void> | false {
  if (prefetches !== undefined && prefetches.size > 0) dropFetchedAhead(cluster, group, req, prefetches);
  // A key asked twice is fetched, counted and answered once (its bytes count once toward the limits).
  const byOwner = keysByOwner(cluster, req, repeatedKeys(req));
  if (byOwner.size === 1 && byOwner.has(cluster.self)) return false;
  const values: (Uint8Array | undefined)[] = new Array(req.itemCount);
  const work: Promise<void>[] = [];
  const window = new LoadWindow(group.multiLoadWindow); // (this node's part and every fallback share it)
  for (const [owner, indexes] of byOwner) {
    const client = owner === cluster.self ? undefined : cluster.peer(owner);
    if (client === undefined) {
      work.push(localValues(group, req, indexes, window, values, true, reply.maxMultiBytes));
      continue;
    }
    const forward = fromMirror(cluster, group, req, indexes, values);
    if (forward.length === 0) continue;
    group.countRouted(forward.length, false);
    cluster.counters.forwarded++;
    const keys = forward.map((i) => keyAt(req, i));
    work.push(client.peerGetMulti(group.name, keys).then(
      (found) => {
        let bytes = 0;
        const got = valuesFor(keys, found);
        forward.forEach((i, n) => {
          const v = got[n];
          values[i] = v;
          if (v !== undefined) bytes += getMultiEntryBytes(keys[n]!.length, v.length);
        });
        req.hold(bytes); // (held until the reply is written, like the local part's)
      },
      (e: unknown) => {
        if (!(e instanceof CacheError && e.code === ERROR_CODE.PEER_UNAVAILABLE)) throw e;
        cluster.counters.peerErrors++;
        if (group.loader === undefined) throw new CacheError(ERROR_CODE.PEER_UNAVAILABLE, `owner ${owner} unreachable: ${e.message}`);
        cluster.counters.fallbackLoads += forward.length;
        return localValues(group, req, forward, window, values, false, reply.maxMultiBytes).then(() => {
          // As for Get: values loaded here for keys owned elsewhere are answered, not kept (nor a
          // cached "not found").
          for (const i of forward) dropLoaded(cluster, group, req.buffer, req.items[i * 4]!, req.items[i * 4 + 1]!);
        });
      },
    ));
  }
  // A part that failed first must not answer while another still loads, or is yet to fall back
  // to a local load (settleAll).
  return settleAll(work).then(
    () => {
      const repeated = repeatedKeys(req);
      reply.beginGetMulti(req);
      for (let i = 0; i < req.itemCount; i++) {
        const v = values[i];
        if (v === undefined || (repeated !== null && repeated[i] === 1)) continue; // (a key asked twice is answered once)
        const at = reply.addGetMultiEntry(req.buffer, req.items[i * 4]!, req.items[i * 4 + 1]!, v.length);
        if (at < 0) return multiTooLarge(reply, req, true);
        reply.out.buffer.set(v, at);
      }
      reply.endGetMulti();
    },
    (e: unknown) => replyThrown(reply, req, e),
  );
}

/**
 * dropFetchedAhead drops the answers fetched ahead (prefetch.ts) for the keys of a GetMulti now
 * served: each was read from the owner before this GetMulti, which reads the key now, and the
 * Get it was kept for comes after it on the connection. Used, it could answer that Get with a
 * value older than the GetMulti's: the owner's invalidation, which would keep it unused, may
 * reach this node after the GetMulti's answer (it travels on another connection, the owner need
 * not wait for it while the member lags, and it waits for it only to acknowledge the write,
 * not to answer the GetMulti). Without it, the Get is answered as in turn: from the mirror or
 * forwarded. (Loads ahead stay: this node takes every write of its own keys.)
 */
function dropFetchedAhead(cluster: Cluster, group: Group, req: Request, prefetches: Prefetches): void {
  for (let i = 0; i < req.itemCount; i++) prefetches.drop(cluster, group, req.buffer, req.items[i * 4]!, req.items[i * 4 + 1]!, false);
}

/**
 * fromMirror takes, of a multi-key request's entries `indexes` (keys one other member owns), the
 * values this node's mirror holds into `values`, counted as hits, as a Get's (routeGet); returns
 * the entries left to forward.
 */
function fromMirror(cluster: Cluster, group: Group, req: Request, indexes: number[], values: (Uint8Array | undefined)[]): number[] {
  const mirror = group.mirror;
  if (mirror === undefined) return indexes;
  const forward: number[] = [];
  for (const i of indexes) {
    const id = mirror.get(req.buffer, req.items[i * 4]!, req.items[i * 4 + 1]!);
    if (id < 0) {
      forward.push(i);
      continue;
    }
    const v = mirror.valueView(id).slice();
    values[i] = v;
    req.hold(getMultiEntryBytes(req.items[i * 4 + 1]!, v.length));
    group.countRouted(1, true);
    cluster.counters.mirrorHits++;
  }
  return forward;
}

/**
 * localValues reads (or loads) the entries `indexes` of a multi-key request from this node into
 * `values`; loads are cached in the group only with `cache` (keys this node owns), and run within the
 * request's `window` (multi-loads.ts). It settles once
 * every load has (the first failure then rejects it), so nothing it started reads the request later.
 * Hits whose copies would pass `maxBytes` reject it VALUE_TOO_LARGE before any load starts.
 */
async function localValues(
  group: Group, req: Request, indexes: number[], window: LoadWindow, values: (Uint8Array | undefined)[], cache: boolean,
  maxBytes: number,
): Promise<void> {
  const misses: number[] = [];
  let hitBytes = 0;
  for (const i of indexes) {
    const kl = req.items[i * 4 + 1]!;
    const id = group.lookup(req.buffer, req.items[i * 4]!, kl, cache); // keys owned elsewhere were counted when forwarded
    if (id >= 0) {
      hitBytes += getMultiEntryBytes(kl, group.store.valueLength(id));
      if (hitBytes > maxBytes) throw multiTooLargeError(maxBytes);
      values[i] = group.store.valueView(id).slice();
    } else if (group.loader !== undefined && !group.lastNegative) misses.push(i);
  }
  req.hold(hitBytes);
  await loadKeys(group, req, misses, window, () => cache, maxBytes, (i, loaded) => {
    values[i] = loaded.value;
  });
}

function setMultiRouted(cluster: Cluster, group: Group, req: Request, reply: ReplyWriter): Promise<void> | false {
  const byOwner = keysByOwner(cluster, req);
  if (byOwner.size === 1 && byOwner.has(cluster.self)) return false;
  const ttl = req.effectiveTtlMs();
  const work: Promise<void>[] = [];
  for (const [owner, indexes] of byOwner) {
    const client = owner === cluster.self ? undefined : cluster.peer(owner);
    const entries = indexes.map((i): [Uint8Array, Uint8Array] => [
      keyAt(req, i),
      req.buffer.slice(req.items[i * 4 + 2]!, req.items[i * 4 + 2]! + req.items[i * 4 + 3]!),
    ]);
    if (client === undefined) {
      work.push(Promise.resolve().then(async () => {
        // As dispatch's SetMulti: every entry that can be is stored, a refused one is left absent,
        // the others are told about all of them (and answer before the write is acknowledged when
        // one may hold a copy: dispatch's forgetCopies), and the first refusal is the part's answer.
        let refused: unknown;
        for (const [k, v] of entries) {
          try {
            group.set(k, v, ttl);
          } catch (e) {
            refused ??= e;
          }
        }
        await cluster.invalidate(group, entries.map(([k]) => k));
        if (refused !== undefined) throw refused;
      }));
      continue;
    }
    cluster.counters.forwarded++;
    for (const [k] of entries) forgetCopy(group, k);
    const forget = (): void => {
      for (const [k] of entries) forgetCopy(group, k);
    };
    work.push(client.setMulti(group.name, entries, ttl, { peer: true }).then(() => {
      forget();
      group.counters.sets += entries.length;
    }, (e: unknown) => {
      forget();
      // Named, as a Set's is (ownerFailed).
      if (e instanceof CacheError && e.code === ERROR_CODE.PEER_UNAVAILABLE) throw new CacheError(ERROR_CODE.PEER_UNAVAILABLE, ownerFailed(owner, e));
      throw e;
    }));
  }
  // Answered once every part has ended, as getMultiRouted is: a failure answered while another
  // owner's part is still on its way would let the client's next write of one of its keys be
  // overwritten by that part when it lands.
  return settleAll(work).then(
    () => reply.writeSuccess(req, true),
    (e: unknown) => {
      if (e instanceof CacheError && e.code === ERROR_CODE.PEER_UNAVAILABLE) cluster.counters.peerErrors++;
      replyThrown(reply, req, e);
    },
  );
}

