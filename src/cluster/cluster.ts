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
 */
import type { FoundEntries, PingResult } from "../client/results.ts";
import { CacheError, ERROR_CODE, errorText } from "../protocol/errors.ts";
import { HandOuts } from "./hand-outs.ts";
import { Leases, RENEWALS_PER_LEASE, Vouches } from "./leases.ts";
import { MAX_MEMBERS } from "./membership.ts";
import { Ring } from "./ring.ts";

/** ForwardCallback receives a PeerGet reply: the value bytes are valid during the call only. */
export type ForwardCallback = (
  err: CacheError | null, value: Uint8Array | null, valueOff: number, valueLen: number, ttlRemainingMs: number,
) => void;

/** PeerClient is what routing needs from a client of one peer (CacheClient implements it). */
export interface PeerClient {
  readonly isDown: boolean;
  /** backingOff: every connection backs off after a failure (CacheClient.backingOff); absent: never. */
  readonly backingOff?: boolean;
  forwardGet(group: Uint8Array, key: Uint8Array, keyOff: number, keyLen: number, done: ForwardCallback): void;
  set(group: string, key: Uint8Array, value: Uint8Array, ttlMs: number, opts: { peer: boolean }): Promise<void>;
  delete(group: string, key: Uint8Array, opts: { peer: boolean }): Promise<boolean>;
  clear(group: string, opts: { peer: boolean }): Promise<void>;
  peerGetMulti(group: string, keys: readonly Uint8Array[]): Promise<FoundEntries>;
  setMulti(group: string, entries: Iterable<[Uint8Array, Uint8Array]>, ttlMs: number, opts: { peer: boolean }): Promise<void>;
  invalidate(group: string, keys: readonly Uint8Array[], all?: boolean): Promise<number>;
  /** ping, with `lease`, asks the peer to vouch for this node (leases.ts); a client without it gets no lease checks. */
  ping?(sender?: string, lease?: boolean): Promise<PingResult>;
  close(): Promise<void>;
}

/**
 * writeWaitMs is how long a write waits at most for a member's answer to its invalidation: half
 * the peer timeout, so that a write forwarded here is answered before the forwarder's call times
 * out.
 */
export function writeWaitMs(peerTimeoutMs: number): number {
  return peerTimeoutMs / 2;
}

/** GroupName names a group as a string (for calls) and as bytes (for HandOuts). */
export interface GroupName {
  readonly name: string;
  readonly nameBytes: Uint8Array;
}

/** ASK_DROPS_MS: how often members that may hold copies nobody vouches for are asked to drop them (askDrops). */
const ASK_DROPS_MS = 500;

/** noSuchGroup tells whether a member refused a call for not having its group: it holds no copies of it. */
export function noSuchGroup(e: unknown): boolean {
  return e instanceof CacheError && e.code === ERROR_CODE.UNKNOWN_GROUP;
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

/** ClusterCounters are the node's cluster totals, a plain struct of numbers. */
export class ClusterCounters {
  forwarded = 0; // client calls sent on to the owner of their key(s)
  peerLoads = 0; // gets answered by the owner peer
  peerErrors = 0; // forwarded calls that failed (timeout, peer down, connection lost; a write the member refused without a reason)
  fallbackLoads = 0; // gets loaded locally because the owner could not be reached
  prefetchesSent = 0; // gets of a waiting connection forwarded ahead of their turn (server/prefetch.ts)
  prefetchesUsed = 0; // forwarded gets answered from such a prefetch
  mirrorHits = 0; // gets answered from this node's mirror of a key owned elsewhere
  mirrorLeaseMisses = 0; // gets of keys owned elsewhere that a copy here (mirror, answer fetched ahead) held but did not answer: no lease from the owner (leases.ts), forwarded
  mirrorFills = 0; // values copied into the mirror
  invalidationsSent = 0; // PeerInvalidate calls sent
  invalidationsReceived = 0; // PeerInvalidate calls served
  membershipChanges = 0; // member lists applied
  foreignWrites = 0; // peer writes of keys this node's member list gives to another member: dropped, not stored
  foreignReads = 0; // keys of peer Gets this node's member list gives to another member: answered, not stored
  peerProtocolErrors = 0; // peer replies that broke the protocol (malformed, or to a seqid not in flight): their connections dropped
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
  /**
   * maxWaitMs bounds a write's wait for the members' answers to its invalidation (writeWaitMs).
   * A member whose answer it waited for that long in vain is `lagging` (see invalidate).
   */
  private readonly maxWaitMs: number;
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
  /** asking: members asked to drop their mirrors (askDrops), not answered yet; owed: members to ask. */
  private readonly asking = new Set<string>();
  private readonly owed = new Set<string>();
  /**
   * lagging: members that let a write's wait for their answer run out (maxWaitMs) and have not
   * answered a call within that time since: writes still tell them, but do not wait for them
   * (see invalidate).
   */
  private readonly lagging = new Set<string>();
  private askTimer: ReturnType<typeof setInterval> | null = null;
  /** leases: this node's read leases on the other members' keys (leases.ts); checked once `startRenewingLeases` ran. */
  readonly leases = new Leases();
  /** vouches: this node's side of its members' leases (leases.ts): a lease is half of writeWaitMs. */
  private readonly vouches: Vouches;
  private leaseTimer: ReturnType<typeof setInterval> | null = null;
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
    this.maxWaitMs = writeWaitMs(opts.peerTimeoutMs ?? 1_000);
    this.vouches = new Vouches(this.maxWaitMs);
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
   * (owed a drop ask, lagging, confirmed: HandOuts) is forgotten; one that comes back starts anew,
   * owed a drop of its mirrors (writes made while it was out of the list did not tell it).
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
      this.owed.delete(id);
      this.lagging.delete(id);
      this.handOuts.forget(id);
      this.leases.forget(id);
      this.vouches.remove(id);
    }
    for (const id of added) {
      const client = clients.get(id);
      if (client === undefined) continue;
      this.peers.set(id, client);
      this.leases.add(id, this.leaseTimer !== null && client.ping !== undefined);
      // Not the start's list (HandOuts.startHeldBy asks those): a member listed again may keep
      // copies of keys written while it was out of the list, which told it nothing; it gets no
      // lease until it has dropped them (askDrops).
      if (this.generation > 0) this.owed.add(id);
    }
    if (this.leaseTimer !== null) this.renewLeases();
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

  /**
   * dropAll asks every other member to drop all its mirrored copies of `group` (PeerInvalidate
   * `all`), and settles as a write's wait for invalidations does (`awaitAnswers`): once each
   * answered or failed (a failure is owed: askDrops), or after maxWaitMs (the silent ones lag).
   * The members `failed` (their clients; a call to them just failed) are not asked, only owed.
   */
  dropAll(group: string, failed: ReadonlySet<PeerClient> = new Set()): Promise<void> {
    const waits = new Map<string, [PeerClient, Promise<boolean>]>();
    const sentAt = performance.now();
    let ackBy = -Infinity;
    for (const [id, client] of this.peers) {
      if (failed.has(client)) {
        this.owe(id);
        continue;
      }
      const told = this.tell(id, sentAt, client.invalidate(group, [], true));
      if (this.lagging.has(id)) {
        this.vouches.abandon(id); // (acknowledged without its answer: leases.ts)
        continue;
      }
      waits.set(id, [client, told]);
      ackBy = Math.max(ackBy, this.cutoff(id, sentAt));
    }
    return waits.size === 0 ? Promise.resolve() : this.awaitAnswers(waits, sentAt, ackBy);
  }

  /**
   * tell counts an invalidation sent to member `id` at `sentAt` and settles (never rejecting)
   * with its answer: answered (true); a member without the group holds no copies of it, and
   * answers; another failure is counted, and owed (the member drops its mirrors when it can:
   * askDrops), and settles false.
   */
  private tell(id: string, sentAt: number, call: Promise<unknown>): Promise<boolean> {
    this.counters.invalidationsSent++;
    const token = this.vouches.sent(id); // (leases given it while this is unanswered are bounded: leases.ts)
    return call.then(() => {
      this.answered(id, sentAt);
      this.vouches.settled(id, token);
      return true;
    }, (e: unknown) => {
      const answered = noSuchGroup(e);
      if (answered) this.answered(id, sentAt);
      else {
        this.counters.peerErrors++;
        this.owe(id); // (first: owed, it gets no lease)
      }
      this.vouches.settled(id, token);
      return answered;
    });
  }

  /**
   * cutoff is until when a write whose invalidation was sent at `sentAt` waits for member `id`'s
   * answer: its lease's end (leases.ts), or maxWaitMs for a member that asks for none.
   */
  private cutoff(id: string, sentAt: number): number {
    return this.vouches.cutoff(id, sentAt + this.maxWaitMs);
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

  /**
   * invalidate tells every other member to drop its mirrored copy of `keys` of `group`. It
   * returns what a write must wait for before it is acknowledged: the answers of the members
   * that may hold a copy of one of the keys (HandOuts) other than `origin`, the member that
   * forwarded the write (it drops its own copy), and other than the lagging ones; settling (never
   * rejecting) once each answered or its call failed (counted in peerErrors), or once each of
   * the others is past its cutoff: the end of the read lease this node gave it (leases.ts), or
   * `maxWaitMs` for a member that asks for none; undefined when there are none (or none holds a
   * lease).
   *
   * A member whose answer was still missing after `maxWaitMs` is marked lagging: a member that
   * hangs (its connection alive, no answers) would otherwise make every write of a key it was
   * handed wait that long until it is marked down, and the writes pipelined on one client
   * connection, served in order, would add up their waits past the client's timeout. A lagging
   * member is told of later writes but not waited for, until it answers a call again in less
   * than that wait. Since it may keep copies that writes acknowledged without its answer
   * replaced, it is asked to drop its mirrors, as is a member whose invalidation failed, and then
   * probed every ASK_DROPS_MS while it lags (askDrops: what finds it prompt again when no write
   * comes); it also drops its mirrors itself when its event loop stalled (cache-node.ts), or when
   * it finds this node up again; and a mirror never outlives its TTL nor the owner's.
   */
  invalidate(group: GroupName, keys: readonly Uint8Array[], origin?: string): Promise<void> | undefined {
    let holders = 0;
    for (const k of keys) holders |= this.handOuts.holders(group.nameBytes, k, 0, k.length);
    let waits: Map<string, [PeerClient, Promise<boolean>]> | undefined;
    const sentAt = performance.now();
    let ackBy = -Infinity;
    for (const [id, client] of this.peers) {
      const told = this.tell(id, sentAt, client.invalidate(group.name, keys, false));
      if (id === origin || !this.mayHold(id, holders)) continue;
      if (this.lagging.has(id)) {
        this.vouches.abandon(id); // acknowledged without its answer: no lease until it answers (leases.ts)
        continue;
      }
      (waits ??= new Map()).set(id, [client, told]);
      ackBy = Math.max(ackBy, this.cutoff(id, sentAt));
    }
    if (waits === undefined) return undefined;
    const acked = this.awaitAnswers(waits, sentAt, ackBy);
    // None holds a lease (leases.ts): acknowledged at once (awaitAnswers has abandoned them); a
    // late answer still marks its member lagging.
    return ackBy <= sentAt ? undefined : acked;
  }

  /** mayHold tells whether member `id` may hold a copy of a key with HandOuts' marks `holders` (see invalidate). */
  private mayHold(id: string, holders: number): boolean {
    return (holders & this.handOuts.bitOf(id)) !== 0 || this.handOuts.startHeldBy(id);
  }

  /**
   * awaitAnswers settles once each call of `waits` (by member id, with the client it went by;
   * settling, never rejecting), sent at `sentAt`, has settled, or once the members whose calls
   * have not are past their cutoffs (`ackBy` the latest when sent: a lease's end, which a lease
   * given meanwhile moves, or maxWaitMs after `sentAt`: leases.ts); those are then abandoned (no
   * lease until they answer). Any call not settled maxWaitMs after `sentAt` marks its member
   * lagging, while its client is still the member's (a member removed and listed again has a new
   * client, which owes nothing); a write acknowledged sooner, at a lease's end, does not (a member
   * whose lease was about to end when the write came is not slow). A call that failed is no
   * answer: its member, owed a drop of its mirrors now, is waited for until the last lease given it
   * ends (Vouches.leaseEnd), whether or not it asks now (a reconnect's intro forgets that it
   * asked, not the lease it holds: the copy the call did not drop may still answer), as before
   * leases not at all.
   */
  private awaitAnswers(waits: Map<string, [PeerClient, Promise<boolean>]>, sentAt: number, ackBy: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const waitEnd = sentAt + this.maxWaitMs;
      let ack: ReturnType<typeof setTimeout> | undefined;
      let acked = false;
      const acknowledge = (): void => {
        if (acked) return;
        acked = true;
        clearTimeout(ack);
        for (const id of waits.keys()) this.vouches.abandon(id);
        resolve();
      };
      // At the latest cutoff, unless a lease given since moved it; read on the clock, not trusted
      // to the timer (which may fire a little early). Past already: at once (invalidate).
      const ackAt = (at: number): void => {
        if (at >= waitEnd) return; // (the maxWaitMs timer's)
        const now = performance.now();
        if (now >= at) return acknowledge();
        ack = setTimeout(() => {
          let latest = -Infinity;
          for (const id of waits.keys()) latest = Math.max(latest, until(id));
          ackAt(latest);
        }, Math.ceil(at - now));
      };
      const failed = new Set<string>(); // (of `waits`: failed calls, waited for until their leases' ends)
      // A failed call's member is waited for until the last lease given it ends, asking or not
      // (a reconnect's intro forgets that it asked, not the lease it holds); the others until their cutoffs.
      const until = (id: string): number => failed.has(id) ? Math.min(waitEnd, this.vouches.leaseEnd(id)) : this.cutoff(id, sentAt);
      const timer = setTimeout(() => {
        for (const [id, [client]] of waits) if (!failed.has(id) && this.peers.get(id) === client) this.lag(id);
        acknowledge();
      }, this.maxWaitMs);
      for (const [id, [, told]] of waits) {
        void told.then((answered) => {
          if (!answered) failed.add(id);
          if (answered || until(id) <= performance.now()) {
            waits.delete(id);
            failed.delete(id);
          }
          if (waits.size > failed.size) return;
          if (waits.size === 0) {
            clearTimeout(timer);
            return acknowledge();
          }
          // Only failed ones left: at the latest of their cutoffs. The maxWaitMs timer stays: a
          // cutoff can still move to the longest wait (a new connection's intro forgets that its
          // member asked; a member that dropped its mirrors is vouched for again), and ackAt
          // leaves that end to the timer (cleared, the write was never acknowledged).
          clearTimeout(ack);
          let latest = -Infinity;
          for (const left of waits.keys()) latest = Math.max(latest, until(left));
          ackAt(latest);
        });
      }
      ackAt(ackBy);
    });
  }

  /**
   * answered records that member `id` answered a call made at `sentAt` (performance.now): in
   * less than a write waits, writes wait for its answers again. A slower answer (the late one of
   * the call that made it lag, or a member that is slow all along) leaves it lagging: waiting for
   * it would cost each write the whole wait and still miss its answer.
   */
  private answered(id: string, sentAt: number): void {
    if (!this.lagging.has(id) || performance.now() - sentAt >= this.maxWaitMs) return;
    this.lagging.delete(id);
    this.logger.info("cluster member answers again: writes wait for its invalidations", { member: id });
  }

  /** lag marks member `id` lagging: a write was acknowledged without its answer (askDrops asks it to drop its mirrors, then probes it). */
  private lag(id: string): void {
    if (this.lagging.has(id)) return;
    this.lagging.add(id);
    this.owed.add(id); // its mirror may keep what such a write replaced
    this.logger.warn("cluster member lagging: a write was acknowledged without its answer to the invalidation; writes do not wait for it until it answers in time", { member: id, waitedMs: this.maxWaitMs });
  }

  /** owe records that member `id` may keep copies whose invalidation it missed: askDrops asks it to drop them all. */
  private owe(id: string): void {
    if (this.peers.has(id)) this.owed.add(id); // (a removed member's calls fail as its client closes)
  }

  /** laggingMembers lists the members writes do not wait for now (see invalidate). */
  get laggingMembers(): string[] {
    return [...this.lagging];
  }

  /** owedMembers lists the members to be asked to drop their mirrors (askDrops). */
  get owedMembers(): string[] {
    return [...this.owed];
  }

  /**
   * askDrops asks each member that may hold copies nobody can vouch for to drop its mirrors of
   * `groups` (a PeerInvalidate of all), one ask in flight per member, none while it is down:
   * copies of this node's previous run (HandOuts.startHeldBy: confirmed once it answered), and
   * copies of keys whose invalidation it missed (`owed`: a call that failed, as while it was cut
   * off, and one that lagged: writes were acknowledged without its answer). An ask that fails
   * owes again (a member that hangs fails it when it times out), so the member is asked again
   * once it is not down. A member without one of the groups holds no copies of it.
   *
   * A lagging member asked once is then only probed (an invalidation of no keys, on the same
   * connection as the writes' invalidations, which it handles in order: another drop would only
   * empty a mirror they keep right): a probe or ask answered in time ends its lagging, and is
   * what finds it prompt again when no write comes.
   */
  askDrops(groups: readonly string[]): void {
    for (const [id, client] of this.peers) {
      const drop = this.handOuts.startHeldBy(id) || this.owed.has(id);
      if (!(drop || this.lagging.has(id)) || this.asking.has(id) || client.isDown) continue;
      this.asking.add(id);
      this.owed.delete(id); // (an invalidation that fails from now on owes again)
      const sentAt = performance.now();
      const ask = (g: string): Promise<unknown> => client.invalidate(g, [], drop).catch((e: unknown) => {
        if (!noSuchGroup(e)) throw e;
      });
      const asks = drop ? groups.map(ask) : [ask(groups[0]!)];
      this.counters.invalidationsSent += asks.length;
      if (drop) this.vouches.block(id); // (no lease is given it until it has dropped them: leases.ts)
      // All settled before the next: one in flight per member, whatever each group's ask came to.
      void Promise.allSettled(asks).then((outcomes) => {
        this.asking.delete(id);
        if (drop) this.vouches.unblock(id); // (one that failed owes again just below: still no lease)
        if (outcomes.some((o) => o.status === "rejected")) return this.owe(id);
        this.answered(id, sentAt);
        if (drop && this.peers.has(id)) this.handOuts.confirm(id); // (not a member removed meanwhile)
      });
    }
  }

  /**
   * startAskingDrops runs `askDrops` now and every `everyMs` until the cluster closes (a member
   * not reachable now is asked again when it may be).
   */
  startAskingDrops(groups: readonly string[], everyMs = ASK_DROPS_MS): void {
    if (groups.length === 0 || this.askTimer !== null) return;
    this.askDrops(groups);
    const timer = setInterval(() => this.askDrops(groups), everyMs);
    timer.unref?.();
    this.askTimer = timer;
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
    return this.vouches.vouch(member, !this.lagging.has(member) && !this.owed.has(member));
  }

  /**
   * leaseHeld tells whether this node may answer a Get of a key `owner` owns from its copies now
   * (leases.ts): always until `startRenewingLeases` ran, and for an owner that gives no leases.
   */
  leaseHeld(owner: string): boolean {
    return this.leases.holds(owner);
  }

  /**
   * startRenewingLeases asks every other member to vouch for this node now and every quarter of
   * a lease until the cluster closes; from now on a Get of a member's key is answered from this
   * node's copies only under a lease from that member (a member whose client cannot ask, or that
   * answers as an older node, excepted: leases.ts).
   */
  startRenewingLeases(everyMs = this.leaseMs / RENEWALS_PER_LEASE): void {
    if (this.leaseTimer !== null) return;
    const timer = setInterval(() => this.renewLeases(), everyMs);
    timer.unref?.();
    this.leaseTimer = timer;
    for (const [id, client] of this.peers) this.leases.add(id, client.ping !== undefined);
    this.renewLeases();
  }

  /**
   * renewLeases asks each member not down to vouch for this node (one ask in flight per member).
   * Not a member whose connections back off after a failure: renewals every quarter of a lease
   * would each retry the connect as its backoff ends, marking a member that is still starting
   * down within a few of them, and Gets of its keys would be refused "peer is down" until a probe
   * found it up (a two-node start: test/e2e/stalled-member.test.ts). The calls that must go
   * reconnect it, and the renewals go on then.
   */
  private renewLeases(): void {
    for (const [id, client] of this.peers) {
      const ping = client.ping;
      if (ping === undefined || client.isDown || client.backingOff === true) continue;
      this.leases.renew(id, () => ping.call(client, this.self, true).then((r) => r.leaseMs));
    }
  }

  /** startConfirmed: no member can hold copies of this node's previous run any more. */
  get startConfirmed(): boolean {
    if (!this.handOuts.starting) return true;
    if (this.generation === 0) return false; // no member list yet (a DNS source's first read)
    for (const id of this.peers.keys()) if (this.handOuts.startHeldBy(id)) return false;
    return true;
  }

  async close(): Promise<void> {
    if (this.askTimer !== null) clearInterval(this.askTimer);
    this.askTimer = null;
    if (this.leaseTimer !== null) clearInterval(this.leaseTimer);
    this.leaseTimer = null;
    const clients = [...this.peers.values()];
    this.peers.clear();
    await Promise.all(clients.map((c) => c.close()));
  }
}
