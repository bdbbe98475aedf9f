/**
 * ServerTimers are the Thrift port's three interval timers, started with its listener and
 * cleared by its `close`:
 * - active expiry: each tick removes at most `expiryBudget` due items per group (store and mirror);
 * - the stall watch (a clustered node with `stallMs`): a loop found late by more than `stallMs`
 *   drops the node's mirrors (`stalled`); the data handler checks it too (`checkStall`), before
 *   any input of the event is served;
 * - the idle sweep (`--idle-timeout`): connections with no traffic for the timeout, or whose
 *   replies the client has left untaken for SEND_STALL_MS, are closed (`closeIdle`, a lingering
 *   close: lingering-close.ts); a request answered counts as traffic (`servedNow`).
 */
import type { Groups } from "../cluster/groups.ts";
import type { Connection } from "./connection.ts";
import type { LingeringClose } from "./lingering-close.ts";
import type { ServerOptions } from "./server-options.ts";
import type { ServerCounters } from "./server-counters.ts";

/**
 * SEND_STALL_MS: with --idle-timeout, a connection whose replies wait is closed once the client
 * has taken none of them this long (or the idle timeout, if longer).
 */
export const SEND_STALL_MS = 10_000;

/**
 * STALL_TICKS: the stall timer runs this many times per `stallMs`, so a loop late by a fraction
 * of it (a busy turn, a collection) is no stall, and one stopped for `stallMs` is always one.
 */
const STALL_TICKS = 4;

export class ServerTimers {
  private readonly groups: Groups;
  private readonly connections: ReadonlySet<Connection>;
  private readonly counters: ServerCounters;
  private readonly opts: ServerOptions;
  private readonly clock: () => number;
  private readonly lingering: LingeringClose;
  private readonly idleTimer: ReturnType<typeof setInterval> | undefined;
  private readonly expiryTimer: ReturnType<typeof setInterval>;
  /**
   * tickedAt is when the stall timer last ran (`stalled`), in `performance.now()` (a wall clock
   * set forward would look like a stall); stallMs, see ServerOptions. The timer is its own: the
   * expiry timer's interval is the operator's, and may be longer than a stall.
   */
  private tickedAt: number;
  readonly stallMs: number;
  private readonly stallTimer: ReturnType<typeof setInterval> | undefined;
  /** stallLoggedAt: when the last stall line was logged; stallsLogged: the stalls counted then. */
  private stallLoggedAt = -Infinity;
  private stallsLogged = 0;

  /** The timers start now: make them once the port listens (a failed listen leaves none running). */
  constructor(groups: Groups, connections: ReadonlySet<Connection>, counters: ServerCounters, opts: ServerOptions, lingering: LingeringClose) {
    this.groups = groups;
    this.lingering = lingering;
    this.connections = connections;
    this.counters = counters;
    this.opts = opts;
    this.clock = opts.clock;
    this.tickedAt = performance.now();
    this.stallMs = opts.stallMs ?? Infinity;
    if (this.stallMs < Infinity) this.stallTimer = setInterval(() => this.stallTick(), Math.max(1, this.stallMs / STALL_TICKS));
    this.expiryTimer = setInterval(() => this.expireTick(), opts.expiryIntervalMs);
    const idle = opts.idleTimeoutMs ?? 0;
    if (idle > 0) this.idleTimer = setInterval(() => this.closeIdle(idle), Math.min(1000, Math.max(50, idle / 4)));
  }

  /** close stops the three timers. */
  close(): void {
    clearInterval(this.expiryTimer);
    if (this.stallTimer !== undefined) clearInterval(this.stallTimer);
    if (this.idleTimer !== undefined) clearInterval(this.idleTimer);
  }

  /**
   * servedNow notes that a request of the connection was just answered: the idle timeout counts
   * from then (a Get answered after a load longer than the timeout leaves its client the whole of it).
   */
  servedNow(conn: Connection): void {
    if (this.idleTimer !== undefined) conn.lastActive = this.clock();
  }

  /**
   * closeIdle closes connections with no traffic for `idleMs`: no bytes from the client, no request
   * answered and no reply bytes taken by the socket; not those waiting for a load (the server's
   * delay, not the client's idleness). A pipeline served over many turns answers requests every
   * turn; a client that stops reading its replies takes none, and is closed like a silent one
   * (held with its output queued, it used to be spared for good, holding its slot and buffers).
   */
  private closeIdle(idleMs: number): void {
    const now = this.clock();
    const sendMs = Math.max(idleMs, this.opts.sendStallMs ?? SEND_STALL_MS);
    for (const conn of this.connections) {
      if (conn.active) {
        conn.active = false;
        conn.lastActive = now; // (within a sweep of when)
        continue;
      }
      // With replies waiting, what counts is whether the client takes them, which the node sees
      // only as the kernel's buffer drains (by a megabyte or more): a steady slow reader may show
      // nothing for a while. It gets `sendMs`, as nginx's send_timeout; so does one whose last
      // writes filled the kernel's buffer (`backedUp`), which may hold megabytes still to read.
      const limit = conn.queuedOutput > 0 || conn.backedUp ? sendMs : idleMs;
      if (now - conn.lastActive < limit || conn.waiting || conn.detached > 0 || conn.queued || conn.closing) continue;
      this.counters.idleClosed++;
      this.lingering.end(conn); // (a lingering close: replies its client has not read yet are not reset away)
    }
  }

  /**
   * stalled: the event loop did not run for `now - tickedAt` ms, longer than `stallMs` (the
   * stall timer ticks STALL_TICKS times as often). Meanwhile an owner may have acknowledged a write
   * without this node's answer to its invalidation (it waits half a peer timeout at most), or
   * marked the node down and stopped telling it of its writes: every copy in its mirrors may be
   * older than a write acknowledged since, so they all go before anything is served from them.
   */
  private stalled(now: number): void {
    const ms = now - this.tickedAt;
    this.tickedAt = now;
    const cluster = this.opts.cluster?.();
    if (cluster === undefined || cluster.members.length < 2) return;
    this.groups.dropCopies();
    this.counters.stalls++;
    if (now - this.stallLoggedAt < 1000) return; // one line a second at most, with the stalls since the last
    this.opts.logger.warn("event loop stalled: mirrors dropped (members may have acknowledged writes without this node's answer)", {
      ms: Math.round(ms), stallsSinceLastLine: this.counters.stalls - this.stallsLogged,
    });
    this.stallLoggedAt = now;
    this.stallsLogged = this.counters.stalls;
  }

  /** checkStall runs `stalled` if the loop has not ticked for longer than `stallMs` at `now`. */
  checkStall(now: number): void {
    if (now - this.tickedAt > this.stallMs) this.stalled(now);
  }

  private stallTick(): void {
    const at = performance.now();
    this.checkStall(at);
    this.tickedAt = at;
  }

  private expireTick(): void {
    const now = this.clock();
    for (const group of this.groups.all()) {
      group.store.expire(now, this.opts.expiryBudget);
      group.mirror?.expire(now, this.opts.expiryBudget); // copies carry the owner's TTL
    }
  }
}
