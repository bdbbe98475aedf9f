/**
 * Prefetches: the Gets a parked connection will forward next, sent to their owners at once.
 *
 * A connection whose Get is forwarded to the key's owner waits for the answer before it serves
 * the next request (replies keep request order, and the request's bytes stay in place). A client
 * that pipelines Gets of keys owned elsewhere (any client that is not ring-aware, like the seed's
 * Kitex clients) would then pay one round trip to a peer per request, one after another. So when
 * a connection parks on a forwarded Get, the server looks ahead in the same chunk: each plain Get
 * that follows (up to the first call of any other kind) whose key another member owns is
 * forwarded now, and its answer kept here. When the connection reaches that Get, routing answers
 * from the kept answer (or waits for it) instead of forwarding it again: one round trip for the
 * batch. The replies are the same bytes as forwarding each in turn would give.
 *
 * Consistency: only Gets that follow the parked one with no write of this connection between
 * are fetched ahead, and every call other than a plain Get drops what is kept (the server calls
 * `clear`), so a connection always reads its own writes. Another client's write that lands
 * between the fetch and the turn of the Get is a race the client could not have observed anyway:
 * the Get had already been sent.
 *
 * Bounds: at most MAX_PREFETCHES answers per connection (kept answers are copies of the values).
 * An answer never used (the key was found in the mirror by then, or the connection closed) is
 * dropped by the next `clear` or collected with the connection.
 */
import type { Cluster, PeerClient } from "../cluster/cluster.ts";
import type { Group } from "../cluster/group.ts";
import { latin1Key } from "../bytes/bytes.ts";
import type { CacheError } from "../protocol/errors.ts";

/** MAX_PREFETCHES bounds the answers one connection keeps (a pipeline's worth of Gets). */
export const MAX_PREFETCHES = 64;

/** Prefetch is one Get forwarded ahead: its answer once `done`. */
export class Prefetch {
  done = false;
  err: CacheError | null = null;
  /** value is a copy of the owner's value (null with an error). */
  value: Uint8Array | null = null;
  ttlRemainingMs = -1;
  /** waiter is called once when the answer arrives, if routing waits for it. */
  waiter: (() => void) | null = null;
}

export class Prefetches {
  private readonly byKey = new Map<string, Prefetch>();

  get size(): number {
    return this.byKey.size;
  }

  /**
   * start forwards the Get of `key[off, off+len)` in `group` to `client` (its owner's) and keeps
   * the answer; nothing when one is already kept for the key or the table is full.
   */
  start(client: PeerClient, group: Group, key: Uint8Array, off: number, len: number): boolean {
    if (this.byKey.size >= MAX_PREFETCHES) return false;
    const id = prefetchId(group, key, off, len);
    if (this.byKey.has(id)) return false;
    const p = new Prefetch();
    this.byKey.set(id, p);
    client.forwardGet(group.nameBytes, key, off, len, (err, value, valueOff, valueLen, ttl) => {
      p.done = true;
      p.err = err;
      p.value = err === null && value !== null ? value.slice(valueOff, valueOff + valueLen) : null;
      p.ttlRemainingMs = ttl;
      const waiter = p.waiter;
      p.waiter = null;
      waiter?.();
    });
    return true;
  }

  /** take removes and returns the answer kept for the key, if any. */
  take(group: Group, key: Uint8Array, off: number, len: number): Prefetch | undefined {
    if (this.byKey.size === 0) return undefined;
    const id = prefetchId(group, key, off, len);
    const p = this.byKey.get(id);
    if (p !== undefined) this.byKey.delete(id);
    return p;
  }

  /** clear drops every kept answer (the connection sent something other than a plain Get). */
  clear(): void {
    if (this.byKey.size > 0) this.byKey.clear();
  }
}

function prefetchId(group: Group, key: Uint8Array, off: number, len: number): string {
  return `${group.name}\u0000${latin1Key(key.subarray(off, off + len))}`;
}

/** ownerClient returns the client of the member owning the key, or undefined when it is this node. */
export function ownerClient(cluster: Cluster, key: Uint8Array, off: number, len: number): PeerClient | undefined {
  const owner = cluster.owner(key, off, len);
  return owner === cluster.self ? undefined : cluster.peer(owner);
}
