/**
 * Routed GetMulti and SetMulti (routing.ts): a multi-key request whose keys have other owners.
 *
 * Its keys are grouped by owner (keysByOwner; a key asked twice is fetched, counted and answered
 * once), one peer call per owner and PART_BYTES of its keys (routed-parts.ts), in parallel, and this node's own part served here; the results
 * are merged in request order. A GetMulti takes what the mirror holds first, as a Get does, and
 * loads here, within the request's load window (multi-loads.ts), the part of an owner it cannot
 * reach, the values answered and kept nowhere. The reply is written once every part has settled
 * (settleAll): nothing started for a request may still read it once its reply is written.
 */
import type { Cluster } from "../cluster/cluster.ts";
import type { Group } from "../cluster/group.ts";
import { CacheError, ERROR_CODE } from "../protocol/errors.ts";
import { type ReplyWriter, getMultiEntryBytes } from "../protocol/reply-writer.ts";
import type { Request } from "../protocol/request.ts";
import { multiTooLarge, multiTooLargeError, ownerFailed, replyThrown } from "./reply-errors.ts";
import { LoadWindow, loadKeys } from "./multi-loads.ts";
import type { Prefetches } from "./prefetch.ts";
import { repeatedKeys } from "./repeated-keys.ts";
import { forgetCopy } from "./routed-writes.ts";
import { dropLoaded } from "./routed-get.ts";
import { MultiValues, parts } from "./routed-parts.ts";

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

export function getMultiRouted(cluster: Cluster, group: Group, req: Request, reply: ReplyWriter, prefetches: Prefetches | undefined): Promise<void> | false {
  if (prefetches !== undefined && prefetches.size > 0) dropFetchedAhead(cluster, group, req, prefetches);
  // A key asked twice is fetched, counted and answered once (its bytes count once toward the limits).
  const byOwner = keysByOwner(cluster, req, repeatedKeys(req));
  if (byOwner.size === 1 && byOwner.has(cluster.self)) return false;
  const found = new MultiValues(req.itemCount, reply.maxMultiBytes);
  const values = found.values;
  const work: Promise<void>[] = [];
  const window = new LoadWindow(group.multiLoadWindow); // (this node's part and every fallback share it)
  for (const [owner, indexes] of byOwner) {
    const client = owner === cluster.self ? undefined : cluster.peer(owner);
    if (client === undefined) {
      work.push(localValues(group, req, indexes, window, values, true, reply.maxMultiBytes));
      continue;
    }
    const forward = fromMirror(cluster, group, req, owner, indexes, values);
    if (forward.length === 0) continue;
    group.countRouted(forward.length, false);
    cluster.counters.forwarded++;
    // In parts of at most PART_BYTES, read from the request (routed-parts.ts). The owner loads a
    // part's misses its group's window at a time (members share a group's config): its client
    // waits for the part while the owner answers, a load wait per window of keys.
    for (const part of parts(req, forward, false, reply.maxMultiBytes)) {
      work.push(client.peerGetMultiOf(group.name, part, group.multiLoadWindow).then(
        (raw) => {
          req.hold(found.take(part, raw)); // (held until the reply is written, like the local part's)
        },
        (e: unknown) => {
          if (!(e instanceof CacheError && e.code === ERROR_CODE.PEER_UNAVAILABLE)) throw e;
          cluster.counters.peerErrors++;
          if (group.loader === undefined) throw new CacheError(ERROR_CODE.PEER_UNAVAILABLE, ownerFailed(owner, e));
          const keys = part.indexes.slice(part.from, part.to);
          cluster.counters.fallbackLoads += keys.length;
          return localValues(group, req, keys, window, values, false, reply.maxMultiBytes).then(() => {
            // As for Get: values loaded here for keys owned elsewhere are answered, not kept (nor a
            // cached "not found").
            for (const i of keys) dropLoaded(cluster, group, req.buffer, req.items[i * 4]!, req.items[i * 4 + 1]!);
          });
        },
      ));
    }
  }
  // A part that failed first must not answer while another still loads, or is yet to fall back
  // to a local load (settleAll); its failure is the answer, so the other parts start no more
  // loads (LoadWindow.stop: an owner's error, or a fallback's or this node's own load failing).
  for (let w = 0; w < work.length; w++) {
    work[w] = work[w]!.catch((e: unknown) => {
      window.stop();
      throw e;
    });
  }
  return settleAll(work).then(
    () => {
      const repeated = repeatedKeys(req);
      let entryBytes = 0; // (the reply's buffer grows once: ReplyWriter.makeRoom)
      for (let i = 0; i < req.itemCount; i++) {
        const length = found.valueLength(i);
        if (length >= 0 && (repeated === null || repeated[i] !== 1)) entryBytes += getMultiEntryBytes(req.items[i * 4 + 1]!, length);
      }
      reply.beginGetMulti(req);
      if (!reply.makeRoom(entryBytes)) return multiTooLarge(reply, req, true);
      for (let i = 0; i < req.itemCount; i++) {
        const length = found.valueLength(i);
        if (length < 0 || (repeated !== null && repeated[i] === 1)) continue; // (a key asked twice is answered once)
        const at = reply.addGetMultiEntry(req.buffer, req.items[i * 4]!, req.items[i * 4 + 1]!, length);
        if (at < 0) return multiTooLarge(reply, req, true);
        found.copyTo(i, reply.out.buffer, at);
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
 * fromMirror takes, of a multi-key request's entries `indexes` (keys `owner` owns), the values
 * this node's mirror holds into `values`, counted as hits, as a Get's (routeGet), under the
 * owner's lease (cluster/leases.ts; else each copy is a lease miss: the lease is asked at the
 * first copy, not for entries with none); returns the entries left to forward.
 */
function fromMirror(
  cluster: Cluster, group: Group, req: Request, owner: string, indexes: number[], values: (Uint8Array | undefined)[],
): number[] {
  const mirror = group.mirror;
  if (mirror === undefined) return indexes;
  const forward: number[] = [];
  let leased: boolean | undefined;
  for (const i of indexes) {
    const id = mirror.get(req.buffer, req.items[i * 4]!, req.items[i * 4 + 1]!);
    if (id >= 0) leased ??= cluster.leaseHeld(owner);
    if (id < 0 || leased !== true) {
      if (id >= 0) cluster.counters.mirrorLeaseMisses++;
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

export function setMultiRouted(cluster: Cluster, group: Group, req: Request, reply: ReplyWriter): Promise<void> | false {
  const byOwner = keysByOwner(cluster, req);
  if (byOwner.size === 1 && byOwner.has(cluster.self)) return false;
  const ttl = req.effectiveTtlMs();
  const work: Promise<void>[] = [];
  for (const [owner, indexes] of byOwner) {
    const client = owner === cluster.self ? undefined : cluster.peer(owner);
    if (client === undefined) {
      const entries = indexes.map((i): [Uint8Array, Uint8Array] => [
        keyAt(req, i),
        req.buffer.slice(req.items[i * 4 + 2]!, req.items[i * 4 + 2]! + req.items[i * 4 + 3]!),
      ]);
      work.push(Promise.resolve().then(async () => {
        // As dispatch's SetMulti: every entry that can be is stored, a refused one is left absent,
        // the others are told about all of them (and answer before the write is acknowledged when
        // one may hold a copy: mirror-copies.ts's forgetCopies), and the first refusal is the part's answer.
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
    // In parts of at most PART_BYTES, read from the request (routed-parts.ts), all on the peer's
    // write connection, in order.
    for (const part of parts(req, indexes, true, reply.maxMultiBytes)) {
      const forget = (): void => {
        for (let n = part.from; n < part.to; n++) forgetCopy(group, req.buffer, req.items[indexes[n]! * 4]!, req.items[indexes[n]! * 4 + 1]!);
      };
      forget();
      work.push(client.peerSetMultiOf(group.name, part, ttl).then(() => {
        forget();
        group.counters.sets += part.to - part.from;
      }, (e: unknown) => {
        forget();
        // Named, as a Set's is (ownerFailed).
        if (e instanceof CacheError && e.code === ERROR_CODE.PEER_UNAVAILABLE) throw new CacheError(ERROR_CODE.PEER_UNAVAILABLE, ownerFailed(owner, e));
        throw e;
      }));
    }
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
