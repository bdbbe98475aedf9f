/**
 * HandOuts remembers, for the keys this node owns, until when another member may hold a copy of
 * them, and which members: a member's mirror is filled from the answers of the PeerGets and
 * PeerGetMulti it sends the owner, and each answer with a value is noted here (`note`), or the
 * call itself when it waits for a load (mirror-copies.ts `handedOut`, the look-ahead).
 *
 * Why: a write of a key tells every other member to drop its copy (PeerInvalidate). Acknowledged
 * before those calls are answered, the write could be followed by the client's read of the key
 * through another member, answered from that member's mirror with the value the write replaced:
 * the invalidation had not even left this node (it goes at the end of the turn). A write of a key
 * that may be copied somewhere therefore waits for those members' answers before it is
 * acknowledged (mirror-copies.ts `forgetCopies`, Cluster.invalidate); one whose key no member can
 * hold is acknowledged at once, so writes of keys nobody reads through another member cost nothing
 * more.
 *
 * How long: a member keeps a copy at most its group's mirror TTL from when it sent the Get
 * (routed-get.ts ages the cap so), which is before the answer: so until the answer + the mirror
 * TTL, plus SLACK_MS for clocks read once per tick. With no mirror TTL (0: a copy lives as long as
 * its value) a key once handed out may be held for good. The mirror TTL is the node's for each
 * group: the same on every member, as --mirror-ttl is. The table is fixed (SLOTS entries by hash
 * of group and key), so keys that share an entry only make a write wait when it need not; it
 * never forgets a key early. Times are `performance.now()`: a wall clock set back would otherwise
 * end a copy's life early.
 *
 * Which members: a bit each, by hash of the member's id (a node's peer client names its member in
 * the PeerPing it sends first on every connection: the server's `noteMember`). A write waits only
 * for the members marked, and never for the one that forwarded it: that one drops its own copy
 * when the write is sent and again when it is answered. A Get on a connection not known to be a
 * member's marks every member; members sharing a bit only make a write wait when it need not.
 *
 * What the table cannot know: copies handed out before this node started (a restart: its members
 * may still hold copies from its last run), or by another owner (a member list change gives it
 * keys others answered for). For a copy's life after a change of the member list (`assumeAll`),
 * every key counts as held by every member; after a start, by every member that has not yet
 * answered the invalidation of all its mirrors the node sends each (`startHeldBy`, `confirm`:
 * Cluster.askDrops), so a restarted node's writes wait for a member only until it has dropped
 * whatever it kept from the node's last run. A member that loads a key itself while this node is
 * unreachable (groupcache's fallback) answers the value and keeps it nowhere (routed-get.ts
 * `dropLoaded`): it was never handed out.
 *
 * A member that cannot be reached keeps its copies while it cannot (its invalidation failed): a
 * write waits for its answer at most `maxWaitMs` (Cluster.invalidate), less than the peer
 * timeout, so that a forwarded write is answered to its forwarder before its own call times
 * out; once it can be reached it is asked to drop its mirrors (Cluster.askDrops, `owed`), and it
 * drops them itself when it finds this node up again (cache-node.ts). A member whose answer a
 * write waited for that long in vain is lagging: later writes do not wait for it until it answers
 * again within that time (a member that hangs would cost every write that long); it is asked to
 * drop its mirrors as one whose invalidation failed is, then probed until it answers in time. A
 * member that asks for read leases is waited for only until its lease runs out (leases.ts): past
 * that its copies answer nothing until it holds a new one, which it gets once it answered.
 */
import { hashBytes } from "../store/hash.ts";

/** SLOTS is the size of the table (until when, and by whom, keys may be held, by hash). */
export const SLOTS = 1 << 16;
/** SLACK_MS is added to a copy's life for clocks read once per tick. */
export const SLACK_MS = 1000;
/** EVERY_MEMBER is the mark of a Get whose member is not known. */
export const EVERY_MEMBER = 0xffffffff;

const utf8 = new TextEncoder();

export class HandOuts {
  private readonly until = new Float64Array(SLOTS);
  private readonly who = new Uint32Array(SLOTS);
  private readonly bits = new Map<string, number>();
  /** allUntil: until then every key counts as held by every member (`assumeAll`). */
  private allUntil = 0;
  /** startUntil: until then a member that has not `confirm`ed may hold copies of a previous run. */
  private readonly startUntil: number;
  private readonly confirmed = new Set<string>();

  /** `mirrorTtlMs` is the node's mirror TTL (0: none): how long copies of a previous run may live. */
  constructor(private readonly mirrorTtlMs: number, private readonly clock: () => number = () => performance.now()) {
    this.startUntil = lifeEnd(clock(), mirrorTtlMs);
  }

  /** starting: members may still hold copies of this node's previous run (see the header). */
  get starting(): boolean {
    return this.clock() < this.startUntil;
  }

  /** startHeldBy tells whether member `id` may still hold copies of this node's previous run. */
  startHeldBy(id: string): boolean {
    return !this.confirmed.has(id) && this.clock() < this.startUntil;
  }

  /** confirm records that member `id` dropped every copy it held (it answered the invalidation of all its mirrors). */
  confirm(id: string): void {
    this.confirmed.add(id);
  }

  /** forget drops what is known of member `id`, which left the member list: back, it has to confirm anew. */
  forget(id: string): void {
    this.confirmed.delete(id);
    this.bits.delete(id);
  }

  /**
   * note records that the key `key[off, off+len)` of the group named `group`, whose copies live
   * `mirrorTtlMs` at most (0: no cap), is being handed to `member` (undefined: a connection not
   * known to be a member's) now.
   */
  note(group: Uint8Array, key: Uint8Array, off: number, len: number, member: string | undefined, mirrorTtlMs: number): void {
    const s = slot(group, key, off, len);
    const now = this.clock();
    const bit = member === undefined ? EVERY_MEMBER : this.bitOf(member);
    this.who[s] = this.until[s]! > now ? (this.who[s]! | bit) >>> 0 : bit;
    this.until[s] = Math.max(this.until[s]!, lifeEnd(now, mirrorTtlMs));
  }

  /** holders is the marks of the members that may hold a copy of the key now, 0 for none. */
  holders(group: Uint8Array, key: Uint8Array, off: number, len: number): number {
    const now = this.clock();
    if (now < this.allUntil) return EVERY_MEMBER;
    const s = slot(group, key, off, len);
    return this.until[s]! > now ? this.who[s]! : 0;
  }

  /** assumeAll counts every key as held by every member for a copy's life from now (see the header). */
  assumeAll(): void {
    this.allUntil = Math.max(this.allUntil, lifeEnd(this.clock(), this.mirrorTtlMs));
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

/** lifeEnd is until when a copy of an answer given at `now` may live, with `mirrorTtlMs` (0: for good). */
function lifeEnd(now: number, mirrorTtlMs: number): number {
  return mirrorTtlMs > 0 ? now + mirrorTtlMs + SLACK_MS : Infinity;
}

function slot(group: Uint8Array, key: Uint8Array, off: number, len: number): number {
  return hashBytes(key, off, len, hashBytes(group, 0, group.length)) & (SLOTS - 1);
}
