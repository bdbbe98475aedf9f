/**
 * WriteStamps tells whether a key was written since a moment (a ticket), for the answers a group
 * gets for a key after asking: a forwarded Get's answer that would fill the mirror, an answer
 * fetched or loaded ahead of its Get's turn (server/prefetch.ts). A write heard of meanwhile (a
 * Set or Delete here, one forwarded through this node, the owner's PeerInvalidate) makes such an
 * answer older than what it replaced: kept, a cache-aside Delete that reached this node while the
 * answer travelled would be undone by the answer, for as long as the copy lives.
 *
 * No map of keys, nothing allocated: `writes` counts the writes heard of, and a ticket is that
 * count when the question was asked. Per bucket b of store hashes (BUCKETS of them, a power of
 * two; 320 KiB in all): `at[b]`, the count at the bucket's last write; `last[b]`, the hash of that
 * write's key; `otherAt[b]`, the count at the bucket's last write of a key with another hash than
 * `last[b]`. A key is written since a ticket when its bucket was, and either the last write was of
 * its hash or one of another hash came since: so a write of another key of its bucket since, or
 * several of one other key, leaves its answer in use; writes of two other keys, or of another key
 * with its 32-bit hash, cost it (a skipped mirror fill, a Get forwarded or loaded again), never
 * make a stale one used. `allAt` is the count at the last write that covered every key (a clear,
 * a dropped mirror, a member change).
 */

/**
 * BUCKETS is how many hash buckets the stamps have. When a write of any key of a bucket counted
 * for all of them, a review estimated that 10k writes/s of other keys redid ~60 % of 100 ms loads
 * ahead with 1,024 buckets (~6 % with 16,384); it now takes writes of two other keys of the
 * bucket within the load (~0.2 %).
 */
export const BUCKETS = 16_384;

export class WriteStamps {
  private writes = 0;
  private allAt = 0;
  private readonly at = new Float64Array(BUCKETS);
  private readonly last = new Int32Array(BUCKETS);
  private readonly otherAt = new Float64Array(BUCKETS);

  /** ticket is the moment now, to ask `writtenSince` about later. */
  ticket(): number {
    return this.writes;
  }

  /** written stamps the write of a key whose store hash is `hash`. */
  written(hash: number): void {
    const b = hash & (BUCKETS - 1);
    if (this.last[b] !== (hash | 0)) {
      this.otherAt[b] = this.at[b]!; // (every write of the bucket before this one came by then)
      this.last[b] = hash;
    }
    this.at[b] = ++this.writes;
  }

  /** allWritten stamps a write of every key. */
  allWritten(): void {
    this.allAt = ++this.writes;
  }

  /** writtenSince tells whether the key whose store hash is `hash` may have been written since `ticket`. */
  writtenSince(hash: number, ticket: number): boolean {
    if (this.allAt > ticket) return true;
    const b = hash & (BUCKETS - 1);
    if (this.at[b]! <= ticket) return false;
    return this.last[b] === (hash | 0) || this.otherAt[b]! > ticket;
  }
}
