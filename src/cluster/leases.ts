/**
 * Read leases: how a member knows it may still answer a Get of another member's key from its
 * copies (the mirror, an answer fetched ahead), and how that owner knows when it may acknowledge
 * a write without the member's answer to the write's invalidation.
 *
 * Why: an owner waits for a member's answer to its PeerInvalidate before it acknowledges a write
 * of a key the member may hold (HandOuts), but not for ever: past its longest wait (writeWaitMs)
 * it acknowledges without it, and a member whose answers come that late (`lagging`: a slow link,
 * an overloaded node) is not waited for at all. Such a member cannot tell it is behind: it kept
 * answering from its copies values older than writes already acknowledged, until the
 * invalidation or the owner's ask to drop its mirrors reached it.
 *
 * The protocol (both sides read `performance.now()`, each its own: only the clocks' rates must
 * agree, not their readings; a lease is a few hundred ms, so drift is of no account):
 * - A member M asks each other member O to vouch for it every quarter of O's lease (`Leases.renew`:
 *   a PeerPing with `lease`, one in flight per owner), noting `sentAt` before it sends. O answers
 *   `leaseMs` when it vouches, 0 when not; M then holds a lease on O's keys until `sentAt +
 *   leaseMs` (`Leases.granted`), and answers Gets of them from its copies only before that
 *   (`Leases.holds`, the clock read at each such Get); after, it forwards them as it would a
 *   mirror miss. The length is O's to say: members need not agree on it (nor on --peer-timeout).
 *   So M renews O's lease a quarter of O's last granted lease after its last ask (`every`, M's
 *   own lease until O granted one; `next`, when due): one timer per member (Cluster.renewLeases),
 *   armed for the earliest renewal due (`renewDue`, which asks with it every owner due within a
 *   quarter of its period, so owners due close together share a tick) and armed again sooner
 *   only when a reply or a wake brings one forward, never per renewal; none armed while every
 *   lease is idle. Before, M renewed every quarter of its OWN lease: an owner with a much shorter
 *   --peer-timeout granted leases that ran out between renewals, and most mirror hits became
 *   lease misses. A tiny lease (misconfigured, hostile) is asked for at most every MIN_RENEW_MS,
 *   one ask in flight, and the timer ticks no faster: no flood; M just holds it less of the time.
 * - M renews O's lease only while it is used: a Get that tried M's copies of O's keys (`holds`,
 *   whatever it answered) or a copy made of one (`use`: a mirror fill, a Get forwarded ahead)
 *   notes when (`usedAt`, one number stored: the clock is read there already). Once none came for IDLE_LEASES of O's leases (`renew` finds it
 *   so), M stops asking (`idle`); the next use asks at once (`wake`). That Get, its lease run
 *   out, is forwarded as any lease miss, and the Gets after the reply hold it again. Stopping
 *   only asks less: a copy still answers only before `until`, which only a vouch moves; copies
 *   kept with no lease are misses. O's side needs nothing: a member that stopped asking holds
 *   no lease past the last one given (`at`), so a write waits for it less, not more (`cutoff`),
 *   and one acknowledged without its answer gets it no lease until that answer (`abandon`). (A
 *   member whose connection introduced itself again while idle is waited for as one that never
 *   asked until it asks again, as after any intro: up to the longest wait, for an answer a
 *   healthy member gives in a millisecond.) An owner not checked (an older node) goes idle too: it is
 *   asked again, and found to give leases once upgraded, only while its keys' copies are used.
 * - O's lease is half its longest wait for a member's answer (`Vouches`: writeWaitMs / 2, 250 ms
 *   with the default --peer-timeout). It vouches for M (`Vouches.vouch`, noting when: `at`) while
 *   M is neither lagging nor owed a drop of its mirrors (Cluster.pinged), no ask to drop them is in
 *   flight, no write was acknowledged without M's answer to an invalidation still unanswered, and
 *   the oldest invalidation M has not answered is under a lease old: so a lease given while an
 *   invalidation is on its way ends within that invalidation's longest wait (a member that answers
 *   in a millisecond keeps its leases under a steady stream of writes).
 * - O acknowledges a write without M's answer only once M's lease has run out (`Vouches.cutoff`:
 *   the last `at` + leaseMs, looked at again when reached, as a lease given meanwhile moves it;
 *   never past the longest wait): M's lease began before O's reply, so it has run out by then;
 *   and O gives none again until that invalidation is settled (`abandon`). A write never waits
 *   longer than before; a member whose lease has run out (a lagging one gets none) is not waited
 *   for at all. A member still unanswered after the longest wait is marked lagging, as before.
 *
 * Mixed versions: a member that never asks (an older node) is waited for as before leases (up to
 * writeWaitMs, then lagging). An owner whose reply has no `leaseMs` (an older node, or a client
 * with no `ping`: a test's stub) gets no lease check for its keys: its members answer from their
 * copies as before (`Leases.granted` with undefined, `add` unchecked), with the staleness a
 * lagging member had before. An owner forgets what a member asked once that member's connection
 * introduces itself again (`Vouches.introduced`, on the intro PeerPing: it may have restarted as
 * an older node); waiting for it as before is never shorter than its lease.
 */

/** RENEWALS_PER_LEASE: a member asks each owner to vouch for it this many times per lease (that owner's). */
export const RENEWALS_PER_LEASE = 4;

/**
 * IDLE_LEASES: a member stops renewing an owner's lease once its copies of the owner's keys were
 * not used for this many of that owner's leases (1 s with the default --peer-timeout). Shorter,
 * and copies read a few times a second would pay a forward (the lease miss) after each pause
 * between reads; longer buys little: an idle span costs RENEWALS_PER_LEASE × IDLE_LEASES pings
 * (16) per owner after the last use, against one forwarded Get when the owner's keys are read
 * again. In the owner's leases, not the member's: the 16 pings hold whatever lease it grants.
 */
export const IDLE_LEASES = 4;

/**
 * MIN_RENEW_MS: a member asks an owner to vouch at most this often, whatever lease it grants (a
 * tiny one, from a misconfigured or hostile owner, is no flood of pings; the member just holds
 * it for less of the time), and its renewal timer ticks no faster.
 */
export const MIN_RENEW_MS = 5;

/** renewalPeriod is how often a lease of `leaseMs` is renewed: RENEWALS_PER_LEASE times a lease, never under MIN_RENEW_MS. */
export function renewalPeriod(leaseMs: number): number {
  return Math.max(MIN_RENEW_MS, leaseMs / RENEWALS_PER_LEASE);
}

/** Lease is a member's lease on one owner's keys. */
class Lease {
  /** asking: an ask to vouch is in flight (one at a time). */
  asking = false;
  /** idle: renewals stopped, as the copies went unused for the idle span; the next use asks at once. */
  idle = false;

  constructor(
    /** until: by the clock, when the lease runs out (Infinity: the owner's keys are not checked; 0: none held). */
    public until: number,
    /** usedAt: when a Get last tried copies of the owner's keys, or a copy was made (from `add`: when listed). */
    public usedAt: number,
    /** every: how often it is renewed: renewalPeriod of the owner's last lease granted (before one: of the member's own). */
    public every: number,
    /** next: by the clock, when it is next renewed (`renewDue`; Infinity: never, as not checked, or idle). */
    public next: number,
  ) {}
}

/** Leases is a member's side: per owner, until when it may answer Gets of the owner's keys from its copies. */
export class Leases {
  private readonly owners = new Map<string, Lease>();
  /** every: the renewal period of an owner that has granted no lease yet (or answers as an older node). */
  private readonly every: number;

  /**
   * `leaseMs`: the member's own lease length, taken for an owner's until it grants one
   * (Infinity: never renewed by `renewDue`, never idle); `wake` hears that an owner's idle lease
   * is used again, to ask for it now (`renew`); `sooner` hears that an owner's renewal is due
   * earlier than `renewDue` last said (a reply: a shorter lease, or a slow reply), at `at`.
   */
  constructor(
    private readonly clock: () => number = () => performance.now(),
    leaseMs = Infinity,
    private readonly wake: (owner: string) => void = () => {},
    private readonly sooner: (at: number) => void = () => {},
  ) {
    this.every = renewalPeriod(leaseMs);
  }

  /**
   * add starts tracking `owner`: `checked`, with no lease until one is granted (due for renewal
   * now); else never checked (nor renewed). Counted as used now: it is renewed for an idle span,
   * so the first copies made of its keys find a lease.
   */
  add(owner: string, checked: boolean): void {
    const now = this.clock();
    this.owners.set(owner, new Lease(checked ? 0 : Infinity, now, this.every, checked ? now : Infinity));
  }
  /** forget drops `owner` (it left the member list). */
  forget(owner: string): void {
    this.owners.delete(owner);
  }

  /**
   * holds tells whether copies of `owner`'s keys may answer a Get now (an unknown owner: no), and
   * notes the use (asked only when a copy could answer: a Get with none needs no lease).
   */
  holds(owner: string): boolean {
    const lease = this.owners.get(owner);
    if (lease === undefined) return false;
    const now = this.clock();
    this.used(owner, lease, now);
    return lease.until > now; // (Infinity: not checked)
  }

  /** use notes a copy of `owner`'s key made now: Gets are to be answered from it. */
  use(owner: string): void {
    const lease = this.owners.get(owner);
    if (lease !== undefined) this.used(owner, lease, this.clock());
  }

  private used(owner: string, lease: Lease, now: number): void {
    lease.usedAt = now;
    if (!lease.idle) return;
    lease.idle = false;
    lease.next = now; // (due: asked at once, or at the next renewal should the owner not be asked now)
    this.wake(owner);
  }

  /**
   * granted records `owner`'s answer to a lease ping sent at `sentAt`: `leaseMs` > 0 extends the
   * lease to `sentAt + leaseMs`, and it is renewed a renewal period of that lease after `sentAt`;
   * 0 leaves it as it is (what was granted before still holds); undefined (an owner that does not
   * give leases) stops checking its keys.
   */
  granted(owner: string, sentAt: number, leaseMs: number | undefined): void {
    const lease = this.owners.get(owner);
    if (lease === undefined) return; // left the list meanwhile
    if (leaseMs === undefined) {
      lease.until = Infinity;
      return this.pace(lease, sentAt, this.every);
    }
    const held = lease.until === Infinity ? 0 : lease.until; // (it gives leases now: an older node upgraded)
    lease.until = leaseMs > 0 ? Math.max(held, sentAt + leaseMs) : held;
    if (leaseMs > 0) this.pace(lease, sentAt, renewalPeriod(leaseMs));
  }

  /** pace renews `lease` every `every` from an ask sent at `sentAt` (telling `sooner` when that is earlier than planned). */
  private pace(lease: Lease, sentAt: number, every: number): void {
    lease.every = every;
    if (lease.idle) return;
    const next = sentAt + every;
    const planned = lease.next;
    lease.next = next;
    if (next < planned) this.sooner(next);
  }

  /**
   * renew asks `owner` to vouch (`ask`, sent now; it resolves to the reply's leaseMs), unless an
   * ask is in flight, or its copies went unused for IDLE_LEASES of its leases (it is idle then:
   * the next use wakes it); a failed ask grants nothing, nor does a reply once the owner left the
   * list (even if listed again since). Returns whether it asked.
   */
  renew(owner: string, ask: () => Promise<number | undefined>): boolean {
    const lease = this.owners.get(owner);
    if (lease === undefined || lease.asking) return false;
    const sentAt = this.clock();
    if (sentAt - lease.usedAt >= IDLE_LEASES * RENEWALS_PER_LEASE * lease.every) {
      lease.idle = true;
      lease.next = Infinity;
      return false;
    }
    lease.asking = true;
    lease.next = sentAt + lease.every;
    ask().then((leaseMs) => {
      if (this.owners.get(owner) === lease) this.granted(owner, sentAt, leaseMs);
    }, () => {}).finally(() => (lease.asking = false));
    return true;
  }

  /**
   * renewDue hands `renewOne` each owner whose renewal is due now, or within a quarter of its
   * period (so owners due close together are asked in one tick, not one tick each), and returns
   * when the next one is due (Infinity: none). `renewOne` asks it (`renew`) when it can: whether
   * it does or not (the owner is down, an ask is in flight), it is due again a period later.
   */
  renewDue(renewOne: (owner: string) => void): number {
    const now = this.clock();
    let next = Infinity;
    for (const [owner, lease] of this.owners) {
      if (lease.next - lease.every / RENEWALS_PER_LEASE <= now) {
        lease.next = now + lease.every; // (`renew` sets it again: the same, or Infinity once idle)
        renewOne(owner);
      }
      if (lease.next < next) next = lease.next;
    }
    return next;
  }

  /** dueAt is when `owner`'s lease is next renewed (Infinity: not tracked, not checked, or idle). */
  dueAt(owner: string): number {
    return this.owners.get(owner)?.next ?? Infinity;
  }

  /** renewing tells whether `owner`'s lease is renewed now (tracked, and not idle). */
  renewing(owner: string): boolean {
    const lease = this.owners.get(owner);
    return lease !== undefined && !lease.idle;
  }
}

/**
 * Vouches is an owner's side: when it last vouched for each member, and what it sent them that
 * they have not answered. `maxWaitMs` is the owner's longest wait for a member's answer; a lease
 * is half of it, so that a lease given while an invalidation is on its way (under a lease old:
 * `vouch`) still ends within that invalidation's longest wait.
 */
export class Vouches {
  readonly leaseMs: number;
  /** at: per member, when this node last vouched for it (kept while it is a member: its lease may outlive an intro). */
  private readonly at = new Map<string, number>();
  /** asking: the members that asked for a lease since their connection last introduced itself. */
  private readonly asking = new Set<string>();
  /** unanswered: per member, the invalidations sent it that have not settled, by token, with when each was sent (oldest first). */
  private readonly unanswered = new Map<string, Map<number, number>>();
  /** blocked: per member, the asks to drop its mirrors in flight (no vouch until they settle). */
  private readonly blocked = new Map<string, number>();
  /** abandoned: per member, the last token a write was acknowledged without an answer to (no vouch until all up to it settle). */
  private readonly abandoned = new Map<string, number>();
  private tokens = 0;
  /**
   * startedAt: when this node started. A member's lease from its previous run (a restart quicker
   * than a lease) began before it: a member it has not vouched for counts as vouched for then.
   */
  private readonly startedAt: number;

  constructor(readonly maxWaitMs: number, private readonly clock: () => number = () => performance.now()) {
    this.leaseMs = maxWaitMs / 2;
    this.startedAt = clock();
  }

  /** sent notes an invalidation sent to `id` now; its token goes to `settled` when it is answered or fails. */
  sent(id: string): number {
    const token = ++this.tokens;
    let waiting = this.unanswered.get(id);
    if (waiting === undefined) this.unanswered.set(id, (waiting = new Map()));
    waiting.set(token, this.clock());
    return token;
  }

  settled(id: string, token: number): void {
    const waiting = this.unanswered.get(id);
    if (waiting === undefined) return;
    waiting.delete(token);
    if (waiting.size === 0) this.unanswered.delete(id);
  }

  /** block notes an ask to drop all of `id`'s mirrors sent (no vouch until `unblock`: it may hold copies of writes acknowledged without it). */
  block(id: string): void {
    this.blocked.set(id, (this.blocked.get(id) ?? 0) + 1);
  }

  unblock(id: string): void {
    const n = (this.blocked.get(id) ?? 1) - 1;
    if (n > 0) this.blocked.set(id, n);
    else this.blocked.delete(id);
  }

  /**
   * abandon notes that a write was acknowledged without `id`'s answer to its invalidation (its
   * lease had run out, or it lags): no vouch until every invalidation sent it so far has settled.
   */
  abandon(id: string): void {
    if (this.unanswered.has(id)) this.abandoned.set(id, this.tokens);
  }

  /**
   * vouch answers `id`'s lease ask: the lease (ms) when this node vouches for it now (noted), 0
   * when not: `mayVouch` is false (lagging, owed a drop), an ask to drop its mirrors is in
   * flight, a write was acknowledged without its answer to an invalidation still unanswered, or
   * the oldest invalidation it has not answered was sent a lease ago or more (a lease given now
   * would outlast that invalidation's longest wait, maxWaitMs).
   */
  vouch(id: string, mayVouch: boolean): number {
    this.asking.add(id);
    if (!mayVouch || this.blocked.has(id)) return 0;
    const now = this.clock();
    const waiting = this.unanswered.get(id);
    if (waiting !== undefined) {
      for (const [token, sentAt] of waiting) {
        if (token <= (this.abandoned.get(id) ?? 0) || now + this.leaseMs > sentAt + this.maxWaitMs) return 0;
        break; // (the oldest)
      }
    }
    this.at.set(id, now);
    return this.leaseMs;
  }

  /**
   * cutoff is until when a write whose invalidation `id` has not answered waits for it, when the
   * longest wait would end at `waitEnd`: when the last lease this node gave it runs out (one it
   * never vouched for: a lease after this node started, `startedAt`), or `waitEnd` for a member
   * that does not ask for leases. A lease given while the write waits moves it (never past
   * `waitEnd`: `vouch`).
   */
  cutoff(id: string, waitEnd: number): number {
    if (!this.asking.has(id)) return waitEnd;
    return Math.min(waitEnd, this.leaseEnd(id));
  }

  /**
   * leaseEnd is when the last lease this node gave `id` runs out (one it never vouched for: a
   * lease after this node started, `startedAt`), whether or not it asks now: a member whose new
   * connection introduced itself may still hold what it was given before.
   */
  leaseEnd(id: string): number {
    return (this.at.get(id) ?? this.startedAt) + this.leaseMs;
  }

  /**
   * introduced: a new connection of `id` introduced itself (it may have restarted as a node that
   * does not ask for leases): it is waited for as such until it asks again. (Never shorter than a
   * lease: `at` stays.)
   */
  introduced(id: string): void {
    this.asking.delete(id);
  }

  /**
   * remove drops what is known of `id` (it left the member list) but its last vouch: a lease it
   * holds may outlive the change, should it come back.
   */
  remove(id: string): void {
    this.asking.delete(id);
    this.unanswered.delete(id);
    this.blocked.delete(id);
    this.abandoned.delete(id);
  }
}
