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
 * The table also keeps which members were answered (a bit each, by hash of the member's id: the
 * member a peer connection belongs to is told by the PeerPing its client sends first, `sender`),
 * so a write waits only for the members that may hold a copy, and never for the member that
 * forwarded it: that one drops its own copy when the write is sent and again when it is answered.
 * A Get on a connection not known to be a member's marks every member. Members sharing a bit
 * only make a write wait when it need not.
 *
 * A member that cannot be reached keeps its copies until they expire (its invalidation failed);
 * the write is acknowledged once that call fails (at once when the member is marked down, else at
 * the peer timeout).
 */
import { hashBytes } from "../store/hash.ts";

/** SLOTS is the size of the table (times of the last answer, and who got it, by hash). */
export const SLOTS = 1 << 16;
/** SLACK_MS is added to a copy's life for the time between the answer and its fill, and clocks. */
export const SLACK_MS = 1000;
/** EVERY_MEMBER is the mark of a Get whose member is not known. */
export const EVERY_MEMBER = 0xffffffff;

const utf8 = new TextEncoder();

export class HandOuts {
  private readonly at = new Float64Array(SLOTS).fill(-Infinity);
  private readonly who = new Uint32Array(SLOTS);
  private readonly bits = new Map<string, number>();
  /** lifeMs is how long after an answer a member may still hold a copy from it. */
  readonly lifeMs: number;

  constructor(mirrorTtlMs: number, peerTimeoutMs: number, private readonly clock: () => number = () => performance.now()) {
    this.lifeMs = mirrorTtlMs + peerTimeoutMs + SLACK_MS;
  }

  /**
   * note records that the key `key[off, off+len)` of the group named `group` is being handed to
   * `member` (undefined: a connection not known to be a member's) now.
   */
  note(group: Uint8Array, key: Uint8Array, off: number, len: number, member: string | undefined): void {
    const s = slot(group, key, off, len);
    const now = this.clock();
    const bit = member === undefined ? EVERY_MEMBER : this.bitOf(member);
    this.who[s] = now - this.at[s]! < this.lifeMs ? (this.who[s]! | bit) >>> 0 : bit;
    this.at[s] = now;
  }

  /** holders is the marks of the members that may hold a copy of the key (answered within `lifeMs`), 0 for none. */
  holders(group: Uint8Array, key: Uint8Array, off: number, len: number): number {
    const s = slot(group, key, off, len);
    return this.clock() - this.at[s]! < this.lifeMs ? this.who[s]! : 0;
  }

  /** bitOf is member `id`'s mark. */
  bitOf(id: string): number {
    let bit = this.bits.get(id);
    if (bit === undefined) {
      const b = utf8.encode(id);
      bit = (1 << (hashBytes(b, 0, b.length) & 31)) >>> 0;
      if (this.bits.size < 4096) this.bits.set(id, bit);
    }
    return bit;
  }
}

function slot(group: Uint8Array, key: Uint8Array, off: number, len: number): number {
  return hashBytes(key, off, len, hashBytes(group, 0, group.length)) & (SLOTS - 1);
}
