/**
 * Prefetches: the Gets a parked connection will forward next, sent to their owners at once.
 *
 * A connection whose Get is forwarded to the key's owner waits for the answer before it serves
 * the next request (replies keep request order, and the request's bytes stay in place). A client
 * that pipelines Gets of keys owned elsewhere (any client that is not ring-aware, like the seed's
 * Kitex clients) would then pay one round trip to a peer per request, one after another. So when
 * a connection parks on a forwarded Get, the server looks ahead in the same chunk: each plain Get
 * that follows (up to the first call of any other kind) whose key another member owns and the
 * mirror lacks is forwarded now, and its answer kept here. When the connection reaches that Get,
 * routing answers from the kept answer (or waits for it) instead of forwarding it again: one
 * round trip for the batch. The replies are the same bytes as forwarding each in turn would give.
 *
 * An answer is only for the Get it was fetched for, the first Get of its key after the one the
 * connection waited on, and never outlives it:
 * - every Get of the key takes it, whichever way that Get is answered (forwarded, from the
 *   mirror, or locally after a ring change): `take` in routing, `drop` in runs;
 * - every call other than a Get drops them all (`clear`), so a connection always reads its own
 *   writes, and so does every new chunk (what the last one fetched ahead is of no use after it);
 * - an answer fetched under another member list is not used, nor one whose TTL ran out while it
 *   waited (the remaining TTL it reports is aged by the wait).
 * Another client's write that lands between the fetch and the Get's turn is a race that client
 * could not have observed anyway (the Get had already been sent); but such an answer is not put
 * in the mirror, where an invalidation that came meanwhile would no longer reach it.
 *
 * Bounds: at most MAX_PREFETCHES answers and MAX_PREFETCH_BYTES of copied values per connection:
 * an answer that would pass the bytes is not kept (its Get is forwarded again when its turn
 * comes), since the fetches under way may together bring far more. The bytes count toward the
 * server's cap on what connections hold (`bytes`; `onBytes` tells the server when they grow).
 */
import type { Cluster, PeerClient } from "../cluster/cluster.ts";
import type { Group } from "../cluster/group.ts";
import { latin1Key } from "../bytes/bytes.ts";
import type { CacheError } from "../protocol/errors.ts";

/** MAX_PREFETCHES bounds the answers one connection keeps (a pipeline's worth of Gets). */
export const MAX_PREFETCHES = 64;
/** MAX_PREFETCH_BYTES bounds the value bytes one connection keeps; past it nothing more is fetched ahead. */
export const MAX_PREFETCH_BYTES = 1024 * 1024;

/** Prefetch is one Get forwarded ahead: its answer once `done`. */
export class Prefetch {
  done = false;
  err: CacheError | null = null;
  /** value is a copy of the owner's value (null with an error). */
  value: Uint8Array | null = null;
  ttlRemainingMs = -1;
  /** fetchedAt is when the answer came (the group store's clock), to age its TTL. */
  fetchedAt = 0;
  /** waiter is called once when the answer arrives, if routing waits for it. */
  waiter: (() => void) | null = null;
  /** kept: still in its table (an answer that arrives after it was dropped is not counted). */
  kept = true;
  constructor(
    /** generation is the cluster's member-list generation it was fetched under. */
    readonly generation: number,
    private readonly owner: Prefetches,
    /** id is its key in the owner's table. */
    readonly id: string,
  ) {}

  /** settle records the answer (the value copied) and wakes a waiting Get. */
  settle(err: CacheError | null, value: Uint8Array | null, off: number, len: number, ttl: number, now: number): void {
    if (this.kept && err === null && value !== null && this.owner.bytes + len > MAX_PREFETCH_BYTES) {
      this.owner.discard(this); // no Get waits for it yet (taking it unkeeps it): its Get forwards again
      return;
    }
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

  /**
   * start forwards the Get of `key[off, off+len)` in `group` to `client` (its owner's) and keeps
   * the answer; false when one is already kept for the key or a bound is reached.
   */
  start(cluster: Cluster, client: PeerClient, group: Group, key: Uint8Array, off: number, len: number): boolean {
    if (this.byKey.size >= MAX_PREFETCHES || this.bytes >= MAX_PREFETCH_BYTES) return false;
    const id = prefetchId(group, key, off, len);
    if (this.byKey.has(id)) return false;
    const p = new Prefetch(cluster.generation, this, id);
    this.byKey.set(id, p);
    const clock = group.store.clock;
    client.forwardGet(group.nameBytes, key, off, len, (err, value, valueOff, valueLen, ttl) => {
      p.settle(err, value, valueOff, valueLen, ttl, clock());
    });
    return true;
  }

  /**
   * take removes the answer kept for the key and returns it if it may answer the Get now (fetched
   * under the current member list, its TTL not run out: see `agedTtl`), else undefined.
   */
  take(cluster: Cluster, group: Group, key: Uint8Array, off: number, len: number): Prefetch | undefined {
    const p = this.remove(group, key, off, len);
    if (p === undefined || p.generation !== cluster.generation) return undefined;
    if (p.done && p.err === null && agedTtl(p, group.store.clock()) === 0) return undefined;
    return p;
  }

  /** drop throws away the answer kept for the key, if any (its Get was answered another way). */
  drop(group: Group, key: Uint8Array, off: number, len: number): void {
    if (this.byKey.size > 0) this.remove(group, key, off, len);
  }

  /** discard forgets a kept answer that came too large to keep. */
  discard(p: Prefetch): void {
    if (this.byKey.get(p.id) === p) this.byKey.delete(p.id);
    p.kept = false;
  }

  /** clear drops every kept answer (a call other than a Get, or a new chunk). */
  clear(): void {
    if (this.byKey.size === 0) return;
    for (const p of this.byKey.values()) p.kept = false;
    this.byKey.clear();
    this.bytes = 0;
  }

  private remove(group: Group, key: Uint8Array, off: number, len: number): Prefetch | undefined {
    if (this.byKey.size === 0) return undefined;
    const id = prefetchId(group, key, off, len);
    const p = this.byKey.get(id);
    if (p === undefined) return undefined;
    this.byKey.delete(id);
    p.kept = false;
    if (p.value !== null) this.bytes -= p.value.length;
    return p;
  }
}

/**
 * agedTtl is the remaining TTL a kept answer reports now: -1 (none) as it came, else what is left
 * after the time it was kept, 0 when that ran out.
 */
export function agedTtl(p: Prefetch, now: number): number {
  if (p.ttlRemainingMs < 0) return -1;
  const left = p.ttlRemainingMs - Math.max(0, now - p.fetchedAt);
  return left > 0 ? left : 0;
}

function prefetchId(group: Group, key: Uint8Array, off: number, len: number): string {
  return `${group.name}\u0000${latin1Key(key.subarray(off, off + len))}`;
}

/** ownerClient returns the client of the member owning the key, or undefined when it is this node. */
export function ownerClient(cluster: Cluster, key: Uint8Array, off: number, len: number): PeerClient | undefined {
  const owner = cluster.owner(key, off, len);
  return owner === cluster.self ? undefined : cluster.peer(owner);
}
