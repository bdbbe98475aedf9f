/**
 * WriteWaits is how long a write waits for each member before it is acknowledged: the write
 * path's invalidations (`invalidate`, and `dropAll` for a Clear), the wait for their answers
 * (`awaitAnswers`: each member until its cutoff, the end of the read lease this node gave it, or
 * maxWaitMs), the members that let such a wait run out (`lagging`: not waited for until they
 * answer in time again), and the members owed a drop of their mirrors (`owed`, asked by
 * `askDrops` every ASK_DROPS_MS, one ask in flight per member: `asking`), and the members taken
 * out of the list whose read leases may still hold (`departed`: writes of keys they may hold are
 * acknowledged no sooner than those end).
 *
 * Owned by Cluster, which hands it its member clients (the same Map, kept by Cluster's
 * setMembers, which also clears what is noted of a removed member and owes an added one a drop),
 * its HandOuts (which members may hold a key), its Vouches (leases.ts: the cutoffs, and no lease
 * while a member is abandoned or asked to drop) and its counters. Memory: three sets of member
 * ids, and per write waited for, a Map of the members' pending calls (by id: client, answer).
 */
import type { ClusterLogger, GroupName, PeerClient } from "./cluster.ts";
import type { ClusterCounters } from "./cluster-counters.ts";
import { CacheError, ERROR_CODE } from "../protocol/errors.ts";
import { EVERY_MEMBER, type HandOuts } from "./hand-outs.ts";
import type { Vouches } from "./leases.ts";

/**
 * writeWaitMs is how long a write waits at most for a member's answer to its invalidation: half
 * the peer timeout, so that a write forwarded here is answered before the forwarder's call times
 * out.
 */
export function writeWaitMs(peerTimeoutMs: number): number {
  return peerTimeoutMs / 2;
}

/** ASK_DROPS_MS: how often members that may hold copies nobody vouches for are asked to drop them (askDrops). */
const ASK_DROPS_MS = 500;

/** noSuchGroup tells whether a member refused a call for not having its group: it holds no copies of it. */
export function noSuchGroup(e: unknown): boolean {
  return e instanceof CacheError && e.code === ERROR_CODE.UNKNOWN_GROUP;
}

/**
 * notBefore is `acked` (undefined: at once), settling no sooner than `at` (performance.now; past:
 * as `acked`).
 */
function notBefore(acked: Promise<void> | undefined, at: number): Promise<void> | undefined {
  const ms = at - performance.now();
  if (!(ms > 0)) return acked;
  const end = new Promise<void>((resolve) => setTimeout(resolve, Math.ceil(ms)));
  return acked === undefined ? end : Promise.all([acked, end]).then(() => undefined);
}

/** WriteWaits: see the header. */
export class WriteWaits {
  /**
   * maxWaitMs bounds a write's wait for the members' answers to its invalidation (writeWaitMs).
   * A member whose answer it waited for that long in vain is `lagging` (see invalidate).
   */
  private readonly maxWaitMs: number;
  /** asking: members asked to drop their mirrors (askDrops), not answered yet; owed: members to ask. */
  private readonly asking = new Set<string>();
  readonly owed = new Set<string>();
  /**
   * lagging: members that let a write's wait for their answer run out (maxWaitMs) and have not
   * answered a call within that time since: writes still tell them, but do not wait for them
   * (see invalidate).
   */
  readonly lagging = new Set<string>();
  /**
   * departed: members taken out of the list (`removed`) while a read lease this node gave them
   * may still hold, with when the last one ends. Such a member may not have applied the change
   * yet and answers Gets of this node's keys from its copies until then, but is no longer told of
   * writes: a write of a key it may hold is acknowledged no sooner than that end (`leasesOut`).
   */
  private readonly departed = new Map<string, number>();
  private askTimer: ReturnType<typeof setInterval> | null = null;

  constructor(
    private readonly peers: ReadonlyMap<string, PeerClient>,
    private readonly handOuts: HandOuts,
    private readonly vouches: Vouches,
    private readonly counters: ClusterCounters,
    private readonly logger: ClusterLogger,
    maxWaitMs: number,
  ) {
    this.maxWaitMs = maxWaitMs;
  }

  /**
   * removed notes that member `id` left the list, the last lease this node gave it ending at
   * `leaseEnd` (Vouches.leaseEnd): writes of keys it may hold wait for that end (`departed`).
   */
  removed(id: string, leaseEnd: number): void {
    if (leaseEnd > performance.now()) this.departed.set(id, leaseEnd);
  }

  /**
   * leasesOut is when the last lease given a departed member that may hold a copy of a key with
   * HandOuts' marks `holders` ends (-Infinity: none holds one now); ended ones are forgotten, and
   * so are members listed again (told of writes, and waited for, as any member).
   */
  private leasesOut(holders: number, now: number): number {
    let end = -Infinity;
    for (const [id, until] of this.departed) {
      if (until <= now || this.peers.has(id)) this.departed.delete(id);
      else if (this.mayHold(id, holders)) end = Math.max(end, until);
    }
    return end;
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
    const answers = waits.size === 0 ? undefined : this.awaitAnswers(waits, sentAt, ackBy);
    return notBefore(answers, this.leasesOut(EVERY_MEMBER, sentAt)) ?? Promise.resolve();
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
    // None holds a lease (leases.ts): acknowledged at once (awaitAnswers has abandoned them); a
    // late answer still marks its member lagging.
    const acked = waits === undefined ? undefined : this.awaitAnswers(waits, sentAt, ackBy);
    // And no sooner than the leases of members taken out of the list end (`departed`).
    return notBefore(ackBy <= sentAt ? undefined : acked, this.leasesOut(holders, sentAt));
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

  /** close stops asking for drops (startAskingDrops). */
  close(): void {
    if (this.askTimer !== null) clearInterval(this.askTimer);
    this.askTimer = null;
  }
}
