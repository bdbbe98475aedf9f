/**
 * Prefetches: the answers of Gets a parked connection serves later, started ahead of their turn.
 *
 * A connection whose Get waits (for its load, or for the key's owner) serves nothing else
 * meanwhile: replies keep request order, and the request's bytes stay in place. A client that
 * pipelines Gets of cold keys, or of keys owned elsewhere (any client that is not ring-aware, like
 * the seed's Kitex clients, and our own peer client's PeerGets), would then pay one load or one
 * round trip per Get, one after another. So when a connection parks on a read, the look-ahead
 * (server/look-ahead.ts) starts the Gets queued behind it: a key another member owns is forwarded
 * now (`start`), a key this node loads is loaded now through its group's singleflight
 * (`startLoad`), and the answer is kept here. When the connection reaches that Get, it takes the
 * answer (or waits for it) instead of forwarding or loading again: the replies are the same bytes
 * as serving each in turn would give.
 *
 * An answer is only for the Get it was started for, the first Get of its key after the one the
 * connection waited on, and never outlives it:
 * - every Get of the key takes it, whichever way that Get is answered (forwarded, from the
 *   mirror, from the store, or loaded): `take` in routing and dispatch, `drop` in runs; a
 *   GetMulti of the key served first drops a forwarded one (routing's `dropFetchedAhead`);
 * - the look-ahead stops at a write, and every write served drops them all (`clear`), so a
 *   connection always reads its own writes; so does a chunk that arrives while the connection is
 *   idle (anything left then is of no use);
 * - an answer started under another member list is not used, nor one whose TTL ran out while it
 *   waited (the remaining TTL it reports is aged by the wait).
 * Another client's write of the key heard of between the start and the Get's turn (a Set or
 * Delete served here, a write forwarded through this node, the owner's invalidation) makes the
 * answer unused: each answer keeps the copy ticket taken when it started, and a Get whose key
 * was written since (`Group.mayCopy`) is forwarded or loaded again at its turn. The write may
 * have been acknowledged before that turn and read by an earlier request of this connection (a
 * GetMulti of the key, which the look-ahead passes over): the kept answer would take that read
 * back (review: v2, then v1). The owner waits for this node's answer to its invalidation before
 * it acknowledges a write of a key it handed out, so an acknowledged write is heard of in time;
 * or, past that wait, for this node's read lease on its keys to run out (cluster/leases.ts): a
 * kept answer, like the mirror, answers only under the owner's lease (checked when the reply is
 * written: routing's answerAhead forwards the Get again otherwise), so a member the owner counts
 * lagging, which hears of writes late, gets no lease and forwards instead. A GetMulti of the key
 * served before the Get drops the answer, lagging or not: its own answer from the owner may come
 * before the invalidation, and the connection would read v2, then v1.
 * A forwarded answer that is used fills the mirror as a Get forwarded in turn does.
 *
 * Bounds: at most MAX_PREFETCHES answers per connection, and none started once the values kept
 * reach MAX_PREFETCH_BYTES. Answers under way are all kept when they come, even past it: dropped,
 * a Get would be loaded (or forwarded) twice. The bytes count toward the server's cap on what
 * connections hold (`bytes`; `onBytes` tells the server when they grow).
 */
import type { Cluster, PeerClient } from "../cluster/cluster.ts";
import type { Group } from "../cluster/group.ts";
import { LOAD_AHEAD } from "../cluster/load-path.ts";
import { latin1Key } from "../bytes/bytes.ts";
import { CacheError, ERROR_CODE, errorText } from "../protocol/errors.ts";

/** MAX_PREFETCHES bounds the answers one connection keeps (a pipeline's worth of Gets). */
export const MAX_PREFETCHES = 64;
/** MAX_PREFETCH_BYTES: once the values one connection keeps reach it, nothing more is started ahead. */
export const MAX_PREFETCH_BYTES = 1024 * 1024;

/** Prefetch is one Get forwarded or loaded ahead: its answer once `done`. */
export class Prefetch {
  done = false;
  err: CacheError | null = null;
  /** value is a copy of the owner's value, or the loaded one (null with an error, or "load again"). */
  value: Uint8Array | null = null;
  ttlRemainingMs = -1;
  /**
   * fetchedAt is when its TTL was read (the group store's clock), to age it: when the load ended,
   * or when the forwarded Get was sent (forwardedTtl).
   */
  fetchedAt = 0;
  /** waiter is called once when the answer arrives, if routing waits for it. */
  waiter: (() => void) | null = null;
  /** kept: still in its table (an answer that arrives after it was dropped is not counted). */
  kept = true;
  /**
   * isLoad: a load the loader path took as one (not refused before it: a key not UTF-8, or one
   * remembered too large), its LRU-K access noted when it started. Its Get counts it in `loads`
   * when it takes it (`take`); one no Get takes is in no `loads` (load-path.ts's LOAD_AHEAD).
   */
  isLoad = false;
  /** ticket is the group's copy ticket when it started: its answer is used (and may fill the mirror) only if no write of its key came since (Group.mayCopy). */
  ticket = 0;
  constructor(
    /** generation is the cluster's member-list generation it was fetched under. */
    readonly generation: number,
    readonly owner: Prefetches,
    /** local: loaded here (`startLoad`), else forwarded to the key's owner (`start`). */
    readonly local: boolean,
  ) {}

  /** settle records the answer (the value copied) and wakes a waiting Get. */
  settle(err: CacheError | null, value: Uint8Array | null, off: number, len: number, ttl: number, now: number): void {
    this.done = true;
    this.err = err;
    this.value = err === null && value !== null ? value.slice(off, off + len) : null;
    if (this.value !== null && this.kept) {
      this.owner.bytes += this.value.length;
      this.owner.onBytes?.();
    }
    this.ttlRemainingMs = ttl;
    this.fetchedAt = now;
    const waiter = this.waiter;
    this.waiter = null;
    waiter?.();
  }
}

export class Prefetches {
  /** bytes is the value bytes kept (counted toward the server's buffer cap). */
  bytes = 0;
  private readonly byKey = new Map<string, Prefetch>();

  /** onBytes, if given, is called when an answer adds to `bytes` (the server recounts the connection). */
  constructor(readonly onBytes?: () => void) {}

  get size(): number {
    return this.byKey.size;
  }

  /** full: no more answers may be started (MAX_PREFETCHES kept, or MAX_PREFETCH_BYTES of values). */
  get full(): boolean {
    return this.byKey.size >= MAX_PREFETCHES || this.bytes >= MAX_PREFETCH_BYTES;
  }

  /**
   * start forwards the Get of `key[off, off+len)` in `group` to `client` (its owner's) and keeps
   * the answer; false when one is already kept for the key or a bound is reached.
   */
  start(cluster: Cluster, client: PeerClient, group: Group, key: Uint8Array, off: number, len: number): boolean {
    const p = this.open(cluster, group, key, off, len, false);
    if (p === undefined) return false;
    p.ticket = group.copyTicket(); // a write heard of after this keeps the answer out of the mirror
    // The owner's remaining TTL is aged from when the Get was sent (see forwardedTtl).
    const sentAt = group.store.clock();
    p.fetchedAt = sentAt; // (settle sets it again: routing ages a kept answer from it)
    client.forwardGet(group.nameBytes, key, off, len, (err, value, valueOff, valueLen, ttl) => {
      p.settle(err, value, valueOff, valueLen, ttl, sentAt);
    });
    return true;
  }

  /**
   * startLoad loads the missing key `key[off, off+len)` of `group` (a key this node owns; the
   * group has a loader) through the group's singleflight now, and keeps the outcome for its Get
   * (`local`); false when one is already kept for the key or a bound is reached. A value the
   * group's store does not admit is still kept here, so the Get does not call the loader again.
   * A load the key's write made stale is kept as "load again" (done, no value, no error), and so
   * is one refused OVERLOADED (a full loader pool): started ahead, it was not refused at its turn.
   */
  startLoad(cluster: Cluster | undefined, group: Group, key: Uint8Array, off: number, len: number): boolean {
    const p = this.open(cluster, group, key, off, len, true);
    if (p === undefined) return false;
    const clock = group.store.clock;
    const counters = group.counters;
    const ahead = counters.loadsAhead;
    p.ticket = group.copyTicket(); // a write of the key heard of after this: the answer is not used (dispatch)
    const loading = group.load(key, off, len, true, LOAD_AHEAD);
    p.isLoad = counters.loadsAhead > ahead; // (one refused before loading is not a load)
    loading.then(
      (loaded) => {
        const value = loaded.stale === true ? null : loaded.value;
        p.settle(null, value, 0, value?.length ?? 0, loaded.ttlRemainingMs, clock());
      },
      (e: unknown) => {
        const err = e instanceof CacheError ? e : new CacheError(ERROR_CODE.LOAD_FAILED, errorText(e));
        p.settle(err.code === ERROR_CODE.OVERLOADED ? null : err, null, 0, 0, -1, clock());
      },
    );
    return true;
  }

  private open(cluster: Cluster | undefined, group: Group, key: Uint8Array, off: number, len: number, local: boolean): Prefetch | undefined {
    if (this.full) return undefined;
    const id = prefetchId(group, key, off, len);
    if (this.byKey.has(id)) return undefined;
    const p = new Prefetch(cluster?.generation ?? 0, this, local);
    this.byKey.set(id, p);
    return p;
  }

  /**
   * take removes the answer kept for the key and returns it if it may answer the Get now (fetched
   * under the current member list, its TTL not run out: see `agedTtl`), else undefined; a load's
   * value run out is returned as "load again" (no value, no error). `local` says which kind the
   * Get would use: one of the other kind is left for the Get it was started for (a peer's Get of a
   * key this node does not own, say, before a plain Get of that key).
   *
   * A load is counted here, when its Get takes it: one `loads` (that Get missed and went to the
   * loader, ahead of its turn). One of another member list is of no use to any Get: dropped, it
   * counts in no `loads`, and its LRU-K access is taken back, so its Get, forwarded now that
   * another member owns the key, or served in turn as a new Get, is counted once, as such.
   */
  take(cluster: Cluster | undefined, group: Group, key: Uint8Array, off: number, len: number, local: boolean): Prefetch | undefined {
    if (this.byKey.size === 0) return undefined;
    const id = prefetchId(group, key, off, len);
    const p = this.byKey.get(id);
    if (p === undefined) return undefined;
    if (p.generation !== (cluster?.generation ?? 0)) {
      this.remove(id, p); // of another member list: of no use to any Get
      if (p.isLoad) group.store.forgetAccess(key, off, len);
      return undefined;
    }
    if (p.local !== local) return undefined;
    this.remove(id, p);
    if (p.isLoad) group.counters.loads++;
    if (p.done && p.err === null && agedTtl(p, group.store.clock()) === 0) {
      if (!p.local) return undefined;
      // A load's value run out: its Get loads again, as the same Get (LOAD_AGAIN: counted as
      // this load, its LRU-K access noted when it started), not as a new one.
      p.value = null;
    }
    return p;
  }

  /**
   * drop throws away what `take` would hand the Get of the key (its Get was answered another way:
   * from the store or the mirror, call-runs.ts) and tells whether that was a load started ahead
   * here, counted in `loads` by `take`: that Get missed when it came (a miss for the counters, as `Group.lookupLoadedAhead`
   * counts it on the general path, though the load's value is stored by its turn). What `take`
   * would not hand it (of another member list, run out, of the other kind) goes or stays as there,
   * so both paths count the same Get alike.
   */
  drop(cluster: Cluster | undefined, group: Group, key: Uint8Array, off: number, len: number, local: boolean): boolean {
    const p = this.take(cluster, group, key, off, len, local);
    return p !== undefined && p.local;
  }

  /** clear drops every kept answer (a write, or a chunk that comes to an idle connection). */
  clear(): void {
    if (this.byKey.size === 0) return;
    for (const p of this.byKey.values()) p.kept = false;
    this.byKey.clear();
    this.bytes = 0;
  }

  private remove(id: string, p: Prefetch): void {
    this.byKey.delete(id);
    p.kept = false;
    if (p.value !== null) this.bytes -= p.value.length;
  }
}

/**
 * agedTtl is the remaining TTL a kept answer reports now: -1 (none) as it came, else what is left
 * after the time since it was read, 0 when that ran out.
 */
export function agedTtl(p: Prefetch, now: number): number {
  return forwardedTtl(p.ttlRemainingMs, p.fetchedAt, now);
}

/**
 * forwardedTtl is what is left now of `ttl` (ms; -1: none), a remaining TTL read at `since`: 0
 * when it ran out. An owner's answer is aged from when its Get was sent, the earliest the owner
 * can have read it: counted from when the answer was read, a copy outlived the owner's item by
 * however long this node took to read the reply (a stall, a long turn), up to --mirror-ttl.
 */
export function forwardedTtl(ttl: number, since: number, now: number): number {
  if (ttl < 0) return -1;
  const left = ttl - Math.max(0, now - since);
  return left > 0 ? left : 0;
}

function prefetchId(group: Group, key: Uint8Array, off: number, len: number): string {
  return `${group.name}\u0000${latin1Key(key.subarray(off, off + len))}`;
}
