/**
 * HandOuts remembers, for the keys this node owns, when it last answered a peer's Get of them:
 * the only way another member comes to hold a copy of such a key (a member's mirror is filled
 * from the answers of the PeerGets and PeerGetMulti it sends the owner).
 *
 * Why: a write of a key tells every other member to drop its copy (PeerInvalidate). Acknowledged
 * before those calls are answered, the write could be followed by the client's read of the key
 * through another member, answered from that member's mirror with the value the write replaced:
 * the invalidation had not even left this node (it goes at the end of the turn). A write of a key
 * that may be copied somewhere therefore waits for the members' answers before it is acknowledged
 * (dispatch.ts `forgetCopies`); one whose key no member can hold is acknowledged at once, as
 * before, so writes of keys nobody reads through another member cost nothing more.
 *
 * A copy lives at most the mirror TTL after it was filled (--mirror-ttl, the same on every
 * member), and is filled within the peer timeout of the answer it came from: a key answered less
 * than `lifeMs` = mirror TTL + peer timeout + 1 s ago may be held. The table is fixed (SLOTS
 * times, by hash of group and key), so keys that share a slot only make a write wait when it need
 * not; it never forgets a key early. Times are `performance.now()`: a wall clock set back would
 * otherwise end a copy's life early.
 *
 * A member that cannot be reached keeps its copies until they expire (its invalidation failed);
 * the write is acknowledged once that call fails (at once when the member is marked down, else at
 * the peer timeout).
 */
import { hashBytes } from "../store/hash.ts";

/** SLOTS is the size of the table (times of the last answer, by hash). */
export const SLOTS = 1 << 16;
/** SLACK_MS is added to a copy's life for the time between the answer and its fill, and clocks. */
export const SLACK_MS = 1000;

export class HandOuts {
  private readonly at = new Float64Array(SLOTS).fill(-Infinity);
  /** lifeMs is how long after an answer a member may still hold a copy from it. */
  readonly lifeMs: number;

  constructor(mirrorTtlMs: number, peerTimeoutMs: number, private readonly clock: () => number = () => performance.now()) {
    this.lifeMs = mirrorTtlMs + peerTimeoutMs + SLACK_MS;
  }

  /** note records that the key `key[off, off+len)` of the group named `group` is being handed to a peer now. */
  note(group: Uint8Array, key: Uint8Array, off: number, len: number): void {
    this.at[slot(group, key, off, len)] = this.clock();
  }

  /** mayBeHeld tells whether another member may hold a copy of the key (answered within `lifeMs`). */
  mayBeHeld(group: Uint8Array, key: Uint8Array, off: number, len: number): boolean {
    return this.clock() - this.at[slot(group, key, off, len)]! < this.lifeMs;
  }
}

function slot(group: Uint8Array, key: Uint8Array, off: number, len: number): number {
  return hashBytes(key, off, len, hashBytes(group, 0, group.length)) & (SLOTS - 1);
}
