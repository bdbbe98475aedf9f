/**
 * Cluster is a node's view of its peers: the member list, the consistent-hash ring over it, one
 * client per peer, and the cluster counters.
 *
 * Every key has one owner: `owner(key)` is the ring's answer, or this node when it is alone. The
 * node forwards a client's call for a key it does not own to the owner with the Peer* methods
 * (served there locally, never forwarded again), so a key is loaded once cluster-wide. Members
 * come from a MembershipSource; `setMembers` diffs the new list against the ring, opens clients
 * for new peers, closes clients of departed ones and applies the list to the ring in one pass
 * (`Ring.setMembers`: adding members one at a time redoes O(V) work per member, seconds for a
 * few hundred). This node is always a member of its own ring.
 *
 * Peer clients are made by an injected `connect` function (the node passes one that builds a
 * `CacheClient`), so the routing can be tested without sockets.
 *
 * What a write waits for from each member (its invalidations, the members that lag, those owed a
 * drop of their mirrors and the asks to drop them) is WriteWaits' (write-waits.ts), which shares
 * this Cluster's clients; Cluster's invalidate, dropAll and askDrops hand the calls to it. Read
 * leases are leases.ts': this node's own (`leases`) and its side of its members' (`vouches`).
 */
import type { PingResult, RawEntries } from "../client/results.ts";
import type { EntryRanges } from "../protocol/call-writer.ts";
import { type CacheError, errorText } from "../protocol/errors.ts";
import { ClusterCounters } from "./cluster-counters.ts";
import { HandOuts } from "./hand-outs.ts";
import { Leases, MIN_RENEW_MS, Vouches } from "./leases.ts";
import { MAX_MEMBERS } from "./membership.ts";
import { Ring } from "./ring.ts";
import { WriteWaits, writeWaitMs } from "./write-waits.ts";

/** ForwardCallback receives a PeerGet reply: the value bytes are valid during the call only. */
export type ForwardCallback = (err: CacheError | null, value: Uint8Array | null, valueOff: number, valueLen: number, ttlRemainingMs: number) => void;

/** PeerClient is what routing needs from a client of one peer (CacheClient implements it). */
export interface PeerClient {
  readonly isDown: boolean;
  /** backingOff: every connection backs off after a failure (CacheClient.backingOff); absent: never. */
  readonly backingOff?: boolean;
  forwardGet(group: Uint8Array, key: Uint8Array, keyOff: number, keyLen: number, done: ForwardCallback): void;
  set(group: string, key: Uint8Array, value: Uint8Array, ttlMs: number, opts: { peer: boolean }): Promise<void>;
  delete(group: string, key: Uint8Array, opts: { peer: boolean }): Promise<boolean>;
  clear(group: string, opts: { peer: boolean }): Promise<void>;
  peerGetMultiOf(group: string, part: EntryRanges, loadsAtOnce?: number): Promise<RawEntries>; // (loadsAtOnce: CacheClient's)
  peerSetMultiOf(group: string, part: EntryRanges, ttlMs: number): Promise<void>;
  invalidate(group: string, keys: readonly Uint8Array[], all?: boolean): Promise<number>;
  /** ping, with `lease`, asks the peer to vouch for this node (leases.ts); a client without it gets no lease checks. */
  ping?(sender?: string, lease?: boolean): Promise<PingResult>;
  close(): Promise<void>;
}

/** GroupName names a group as a string (for calls) and as bytes (for HandOuts). */
export interface GroupName {
  readonly name: string;
  readonly nameBytes: Uint8Array;
}

export interface ClusterLogger {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
}

export interface ClusterOptions {
  /** self is this node's id as its peers know it: `host:port`. */
  self: string;
  vnodes?: number;
  connect: (nodeId: string) => PeerClient;
  logger: ClusterLogger;
  /** mirrorTtlMs is how long a member may keep a copy (HandOuts; default the node's, 10 s). */
  mirrorTtlMs?: number;
  /** peerTimeoutMs: a write waits for a member's answer to its invalidation at most half of it (default 1 s). */
  peerTimeoutMs?: number;
}

export class Cluster {
  readonly self: string;
  readonly ring: Ring;
  readonly counters = new ClusterCounters();
  /** generation counts member-list changes (what was fetched under an older list is not used). */
  generation = 0;
  /** handOuts: which members may hold copies of a key this node owns (a write of it then waits for their invalidations). */
  readonly handOuts: HandOuts;
  /** mirrorTtlMs: how long a member may keep a copy of this node's keys (HandOuts remembers a hand-out as long, and 1 s). */
  readonly mirrorTtlMs: number;
  /** leftOut: members of the last list applied that no client could be made for (not in the ring). */
  leftOut = 0;
  /** leftOutErrors: why each member left out was (its warning is not repeated while it stays so). */
  private readonly leftOutErrors = new Map<string, string>();
  /** warnedSelfFor: the list last warned about for not naming this node. */
  private warnedSelfFor = "";
  /**
   * listedSelf: whether the last member list named this node (or was empty); undefined before
   * the first. A node left out of the list keeps itself in its ring (a node listed under another
   * name than its --self would otherwise drop every write), but the others write its keys
   * elsewhere meanwhile: cache-node.ts drops what it holds when this changes.
   */
  listedSelf: boolean | undefined;
  private readonly peers = new Map<string, PeerClient>();
  /**
   * leases: this node's read leases on the other members' keys (leases.ts); checked once
   * `startRenewingLeases` ran, renewed while this node's copies of the member's keys are used.
   */
  readonly leases: Leases;
  /** vouches: this node's side of its members' leases (leases.ts): a lease is half of writeWaitMs. */
  private readonly vouches: Vouches;
  /** renewingLeases: `startRenewingLeases` ran (and the cluster is not closed). */
  private renewingLeases = false;
  /** leaseTimer: the next renewal tick (`renewLeases`), armed for `leaseTimerAt` (Infinity: none armed). */
  private leaseTimer: ReturnType<typeof setTimeout> | null = null;
  private leaseTimerAt = Infinity;
  /** writeWaits: what a write waits for from each member, the lagging ones and those owed a drop (write-waits.ts). */
  private readonly writeWaits: WriteWaits;
  private readonly connect: (nodeId: string) => PeerClient;
  private readonly logger: ClusterLogger;

  constructor(opts: ClusterOptions) {
    this.self = opts.self;
    this.ring = new Ring(opts.vnodes === undefined ? {} : { vnodes: opts.vnodes });
    this.ring.add(this.self);
    this.connect = opts.connect;
    this.logger = opts.logger;
    this.mirrorTtlMs = opts.mirrorTtlMs ?? 10_000;
    this.handOuts = new HandOuts(this.mirrorTtlMs);
    const maxWaitMs = writeWaitMs(opts.peerTimeoutMs ?? 1_000);
    this.vouches = new Vouches(maxWaitMs);
    // An idle lease used again is asked for at once, not at the next renewal; after the Get that
    // woke it has been served (a microtask: it may be in the middle of a run of Gets). Until an
    // owner grants a lease, its length is taken to be this node's own.
    this.leases = new Leases(
      undefined,
      this.vouches.leaseMs,
      (owner) => queueMicrotask(() => {
        this.renewLease(owner);
        this.scheduleRenewals(this.leases.dueAt(owner));
      }),
      (at) => this.scheduleRenewals(at),
    );
    this.writeWaits = new WriteWaits(this.peers, this.handOuts, this.vouches, this.counters, this.logger, maxWaitMs);
  }

  /** leaseMs is how long this node vouches for a member (leases.ts): half its longest wait for a member's answer. */
  get leaseMs(): number {
    return this.vouches.leaseMs;
  }

  /** members is the current member list (this node included), sorted. */
  get members(): readonly string[] {
    return this.ring.nodes;
  }

  /**
   * setMembers applies a new member list; this node stays a member whatever the list says. It
   * returns whether the ring changed (the node then drops its mirrors: a copy made under the old
   * ring may miss the invalidations of a key's new owner). What was noted of a removed member
   * (owed a drop ask, lagging, confirmed: HandOuts) is forgotten but its lease's end (WriteWaits.removed);
   * one that comes back starts anew, owed a drop of its mirrors (writes made while it was out told it nothing).
   */
  setMembers(ids: readonly string[]): boolean {
    const next = new Set(ids);
    if (next.size > MAX_MEMBERS) throw new RangeError(`${next.size} members: more than ${MAX_MEMBERS}`);
    // (Each warning once per list or error: a source retries a list with a member left out.)
    const listed = [...next].join(",");
    this.listedSelf = next.size === 0 || next.has(this.self);
    if (next.size > 0 && !next.has(this.self)) {
      if (this.warnedSelfFor !== listed) {
        this.logger.warn("the member list does not name this node: members with the same list send it none of its keys; if it is listed under another name, set --self to it", { self: this.self });
      }
      this.warnedSelfFor = listed;
    } else this.warnedSelfFor = "";
    next.add(this.self);
    const removed = this.ring.nodes.filter((id) => !next.has(id));
    const clients = new Map<string, PeerClient>();
    this.leftOut = 0;
    for (const id of next) {
      if (id === this.self || this.ring.has(id)) continue;
      try {
        clients.set(id, this.connect(id)); // first: a member without a client never enters the ring
        this.leftOutErrors.delete(id);
      } catch (e) {
        this.leftOut++;
        const error = errorText(e);
        if (this.leftOutErrors.get(id) !== error) this.logger.warn("cluster member left out: no client can be made for it", { member: id, error });
        this.leftOutErrors.set(id, error);
      }
    }
    for (const id of this.leftOutErrors.keys()) if (!next.has(id)) this.leftOutErrors.delete(id);
    const added = [...next].filter((id) => !this.ring.has(id) && (id === this.self || clients.has(id)));
    if (removed.length === 0 && added.length === 0) return false;
    // The ring's next members: the kept ones and the added ones (a member without a client stays out).
    const gone = new Set(removed);
    try {
      this.ring.setMembers([...this.ring.nodes.filter((id) => !gone.has(id)), ...added]);
    } catch (e) {
      for (const client of clients.values()) void client.close(); // the ring is as it was: they are nobody's
      throw e;
    }
    for (const id of removed) {
      const client = this.peers.get(id);
      this.peers.delete(id); // first: the calls the close fails then owe it nothing (owe)
      void client?.close();
      this.writeWaits.owed.delete(id);
      this.writeWaits.lagging.delete(id);
      this.handOuts.forget(id);
      this.leases.forget(id);
      this.writeWaits.removed(id, this.vouches.leaseEnd(id));
      this.vouches.remove(id);
    }
    for (const id of added) {
      const client = clients.get(id);
      if (client === undefined) continue;
      this.peers.set(id, client);
      this.leases.add(id, this.renewingLeases && client.ping !== undefined);
      // Not the start's list (HandOuts.startHeldBy asks those): a member listed again may keep copies
      // of keys written while it was out of the list; it gets no lease until it dropped them (askDrops).
      if (this.generation > 0) this.writeWaits.owed.add(id);
    }
    if (this.renewingLeases) this.renewLeases();
    this.counters.membershipChanges++;
    // Keys new to this node were handed out by their last owner (the first list is the start's: HandOuts).
    if (this.generation > 0) this.handOuts.assumeAll();
    this.generation++;
    this.logger.info("cluster members changed", { members: this.ring.nodes.join(","), added: added.join(","), removed: removed.join(",") });
    return true;
  }

  /** owner returns the id of the node that owns key[off, off+len) (this node when alone). */
  owner(key: Uint8Array, off: number, len: number): string {
    return this.ring.owner(key, off, len) ?? this.self;
  }

  /**
   * ownedHere returns a test of whether this node owns a key under the ring as it is now: a copy,
   * which later membership changes do not move.
   */
  ownedHere(): (key: Uint8Array, off: number, len: number) => boolean {
    const ring = this.ring.clone();
    const self = this.self;
    return (key, off, len) => (ring.owner(key, off, len) ?? self) === self;
  }

  /** peer returns the client of member `id`, or undefined for this node or a non-member. */
  peer(id: string): PeerClient | undefined {
    return this.peers.get(id);
  }

  /**
   * memberOf is `id` (a connection's claim to be that member: its intro PeerPing) while it names a
   * member of the list, else undefined (HandOuts then counts every member as a holder). A name
   * is only a claim, and a node listed under another id than its --self would mark the wrong one.
   */
  memberOf(id: string | undefined): string | undefined {
    return id !== undefined && this.peers.has(id) ? id : undefined;
  }

  /** others returns the clients of every member but this node. */
  others(): PeerClient[] {
    return [...this.peers.values()];
  }

  /** peersDown is how many other members' clients mark them down now. */
  get peersDown(): number {
    let n = 0;
    for (const p of this.peers.values()) if (p.isDown) n++;
    return n;
  }

  /** invalidate tells the other members to drop their copies of `keys`: what a write waits for (WriteWaits.invalidate). */
  invalidate(group: GroupName, keys: readonly Uint8Array[], origin?: string): Promise<void> | undefined {
    return this.writeWaits.invalidate(group, keys, origin);
  }

  /** dropAll asks every other member to drop all its copies of `group` (WriteWaits.dropAll). */
  dropAll(group: string, failed: ReadonlySet<PeerClient> = new Set()): Promise<void> {
    return this.writeWaits.dropAll(group, failed);
  }

  /** laggingMembers lists the members writes do not wait for now (WriteWaits.invalidate). */
  get laggingMembers(): string[] {
    return this.writeWaits.laggingMembers;
  }

  /** owedMembers lists the members to be asked to drop their mirrors (WriteWaits.askDrops). */
  get owedMembers(): string[] {
    return this.writeWaits.owedMembers;
  }

  /** askDrops asks the members that may hold copies nobody vouches for to drop them (WriteWaits.askDrops). */
  askDrops(groups: readonly string[]): void {
    this.writeWaits.askDrops(groups);
  }

  /** startAskingDrops runs `askDrops` now and every `everyMs` until the cluster closes (WriteWaits). */
  startAskingDrops(groups: readonly string[], everyMs?: number): void {
    this.writeWaits.startAskingDrops(groups, everyMs);
  }

  /**
   * pinged answers a PeerPing from `member` (the connection's, undefined when unknown): `intro`,
   * its connection's first; `lease`, it asks this node to vouch for it. Returns the PingResponse's
   * leaseMs: -1 (none) when not asked, else the lease when this node vouches for the member now
   * (neither lagging nor owed a drop of its mirrors, and what `Vouches.vouch` asks besides), else 0.
   */
  pinged(member: string | undefined, intro: boolean, lease: boolean): number {
    if (member !== undefined && intro) this.vouches.introduced(member);
    if (!lease) return -1;
    if (member === undefined || !this.peers.has(member)) return 0;
    return this.vouches.vouch(member, !this.writeWaits.lagging.has(member) && !this.writeWaits.owed.has(member));
  }

  /**
   * leaseHeld tells whether this node may answer a Get of a key `owner` owns from its copies now
   * (leases.ts): always until `startRenewingLeases` ran, and for an owner that gives no leases.
   * Asked only when a copy could answer: it counts as a use, which keeps the lease renewed (or
   * starts renewing it again: Leases.holds).
   */
  leaseHeld(owner: string): boolean {
    return this.leases.holds(owner);
  }

  /** wantLease notes a copy made of a key `owner` owns (a mirror fill, a Get forwarded ahead): Gets are to be answered from it (Leases.use). */
  wantLease(owner: string): void {
    this.leases.use(owner);
  }

  /**
   * startRenewingLeases asks every other member to vouch for this node now, and again each time a
   * quarter of the lease that member last granted has passed (leases.ts: the length is the
   * owner's; this node's own until it granted one), until the cluster closes (while this node's
   * copies of its keys are used: IDLE_LEASES); from now on a Get of a member's key is answered
   * from this node's copies only under a lease from that member (a member whose client cannot
   * ask, or that answers as an older node, excepted: leases.ts).
   */
  startRenewingLeases(): void {
    if (this.renewingLeases) return;
    this.renewingLeases = true;
    for (const [id, client] of this.peers) this.leases.add(id, client.ping !== undefined);
    this.renewLeases();
  }

  /**
   * renewLeases asks each member whose renewal is due (Leases.renewDue) and not down to vouch for
   * this node (one ask in flight per member), then arms one timer for the next one due: none
   * while every lease is idle, and never sooner than MIN_RENEW_MS. Not a member whose connections
   * back off after a failure: renewals every quarter of a lease would each retry the connect as
   * its backoff ends, marking a member that is still starting down within a few of them, and Gets
   * of its keys would be refused "peer is down" until a probe found it up (a two-node start:
   * test/e2e/stalled-member.test.ts). The calls that must go reconnect it, and the renewals go on
   * then.
   */
  private renewLeases(): void {
    if (this.leaseTimer !== null) clearTimeout(this.leaseTimer);
    this.leaseTimer = null;
    this.leaseTimerAt = Infinity;
    this.scheduleRenewals(this.leases.renewDue((id) => this.renewLease(id)));
  }

  /**
   * scheduleRenewals makes sure `renewLeases` runs by `at` (a renewal due then), or MIN_RENEW_MS
   * from now if sooner: the timer is armed again only when that is earlier than it was armed for
   * (an owner woken from idle, a shorter lease granted), not at each renewal.
   */
  private scheduleRenewals(at: number): void {
    if (!this.renewingLeases || at === Infinity) return;
    const now = performance.now(); // (the Leases' clock)
    const fireAt = Math.max(at, now + MIN_RENEW_MS);
    if (fireAt >= this.leaseTimerAt) return;
    if (this.leaseTimer !== null) clearTimeout(this.leaseTimer);
    this.leaseTimerAt = fireAt;
    const timer = setTimeout(() => this.renewLeases(), fireAt - now);
    timer.unref?.();
    this.leaseTimer = timer;
  }

  /** renewLease asks member `id` to vouch for this node, as renewLeases does (counted: leasePingsSent). */
  private renewLease(id: string): void {
    const client = this.peers.get(id);
    const ping = client?.ping;
    if (client === undefined || ping === undefined || client.isDown || client.backingOff === true) return;
    if (this.leases.renew(id, () => ping.call(client, this.self, true).then((r) => r.leaseMs))) this.counters.leasePingsSent++;
  }

  /** startConfirmed: no member can hold copies of this node's previous run any more. */
  get startConfirmed(): boolean {
    if (!this.handOuts.starting) return true;
    if (this.generation === 0) return false; // no member list yet (a DNS source's first read)
    for (const id of this.peers.keys()) if (this.handOuts.startHeldBy(id)) return false;
    return true;
  }

  async close(): Promise<void> {
    this.writeWaits.close();
    this.renewingLeases = false;
    if (this.leaseTimer !== null) clearTimeout(this.leaseTimer);
    this.leaseTimer = null;
    this.leaseTimerAt = Infinity;
    const clients = [...this.peers.values()];
    this.peers.clear();
    await Promise.all(clients.map((c) => c.close()));
  }
}
