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
import { valuesFor } from "../client/results.ts";
import { multiTooLarge, multiTooLargeError, replyThrown } from "./reply-errors.ts";
import { LoadWindow, loadKeys } from "./multi-loads.ts";
import type { Prefetches } from "./prefetch.ts";
import { repeatedKeys } from "./repeated-keys.ts";
import { clearEverywhere, forgetCopy, ownerFailed, routeWrite } from "./routed-writes.ts";
import { dropLoaded, routeGet } from "./routed-get.ts";

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

