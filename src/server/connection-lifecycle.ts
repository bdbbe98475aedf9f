/**
 * ConnectionLifecycle opens, ends and closes the Thrift port's connections, and drains them all
 * when the port closes.
 *
 * A connection is counted open from Bun's `open` event (for TLS, as TCP accepts it: its handshake
 * then has HANDSHAKE_MS to finish) to its `close` event. On a node with an auth token, one that has
 * not authenticated AUTH_MS after it opened is closed (Faults.unauthenticated): without that, silent
 * clients with no token held every slot of --max-connections for good (there is no idle timeout
 * by default), and the node answered everyone else OVERLOADED. The deadline alone did not do:
 * such clients reopened their connections as they were closed, and held the slots again. So a
 * connection arriving at the cap closes the oldest connection that has not authenticated
 * (`evictUnauthenticated`), as the admin port closes its quietest one: a client with the token
 * (or a peer) gets in, and one that has authenticated is never closed for a newcomer.
 * Connections past `maxConnections` with none to close (all authenticated, or a node with no
 * token) are accepted only to be answered: their first request gets `CacheError OVERLOADED`
 * (CacheServer's `serve`), then they close (a silent close looks like a network fault to
 * clients); one that sends nothing is closed after REJECTED_LINGER_MS. A client's FIN ends only
 * its side (`onEnd`): what it sent is still served. At shutdown (`close`) every connection is
 * left to finish what it received: DRAIN_MS at most (or `drainTimeoutMs`, if shorter), and
 * `drainTimeoutMs` for one waiting for a load (in order or detached).
 *
 * Every graceful end is a lingering close (lingering-close.ts): the node half-closes once the
 * replies are written, drops what the client still sends, and closes when the client does, or
 * cuts it LINGER_MS later; a newcomer at --max-connections cuts the oldest lingering connection
 * before any other eviction. A connection the node cuts (`cut`) is counted out at once, not when
 * Bun's close event comes (`onClose` runs once, whichever is first).
 */
import type { Socket, TCPSocketListener } from "bun";
import type { BufferCap } from "./buffer-cap.ts";
import type { ServerOptions } from "./server-options.ts";
import type { CallRuns } from "./call-runs.ts";
import { Connection } from "./connection.ts";
import type { LoadWaits } from "./load-waits.ts";
import { LogBudget } from "./log.ts";
import type { ServerCounters } from "./server-counters.ts";
import type { ServerTimers } from "./server-timers.ts";
import type { Faults } from "./faults.ts";
import type { TurnEnd } from "./turn-end.ts";

/** DRAIN_MS: at shutdown, a connection not waiting for a load is cut if not done after this. */
export const DRAIN_MS = 5_000;
/** HANDSHAKE_MS: a TLS connection that has not finished its handshake this long after it opened is closed. */
export const HANDSHAKE_MS = 10_000;
/** AUTH_MS: on a node with an auth token, a connection not authenticated this long after it opened is closed. */
export const AUTH_MS = 10_000;
/** REJECTED_LINGER_MS: how long a connection past --max-connections has to send the request it is answered OVERLOADED on. */
export const REJECTED_LINGER_MS = 2000;
/**
 * MAX_REJECTED_OPEN: how many connections past --max-connections may be open at once, waiting to
 * be answered OVERLOADED or lingering after it (up to REJECTED_LINGER_MS + LINGER_MS each); a
 * newcomer past them is cut at once, without a reply. They hold descriptors outside
 * --max-connections (fd-limit.ts fits it to the open-file limit, less FD_RESERVE): a flood of
 * connections at the limit must not take the descriptors the node keeps for the rest.
 */
export const MAX_REJECTED_OPEN = 32;

export class ConnectionLifecycle {
  private readonly connections: Set<Connection>;
  private readonly counters: ServerCounters;
  private readonly opts: ServerOptions;
  private readonly clock: () => number;
  private readonly runs: CallRuns;
  private readonly turnEnd: TurnEnd;
  private readonly cap: BufferCap;
  private readonly waits: LoadWaits;
  private readonly timers: ServerTimers;
  private readonly faults: Faults;
  private nextId = 1;
  /** rejectLog: connections past the limit are logged once a second at most; evictLog, those closed for a newcomer. */
  private readonly rejectLog = new LogBudget(1);
  private readonly evictLog = new LogBudget(1);
  /**
   * unauthed: on a node with an auth token, the open connections that had not authenticated as
   * they opened, oldest first (a Set iterates in the order it was added to). A connection joins
   * as it opens (unless refused) and leaves as it closes; one that authenticates stays until an
   * eviction passes it over (Faults.authenticate need not know of it): each is added and deleted
   * once, nothing per request.
   */
  private readonly unauthed = new Set<Connection>();
  /** rejectedOpen: connections past the limit still open (waiting to be answered OVERLOADED, or closing). */
  private rejectedOpen = 0;
  private closed: Promise<void> | null = null;
  private allClosed: (() => void) | null = null;

  constructor(
    connections: Set<Connection>, counters: ServerCounters, opts: ServerOptions, runs: CallRuns, turnEnd: TurnEnd, cap: BufferCap,
    waits: LoadWaits, timers: ServerTimers, faults: Faults,
  ) {
    this.connections = connections;
    this.counters = counters;
    this.opts = opts;
    this.clock = opts.clock;
    this.runs = runs;
    this.turnEnd = turnEnd;
    this.cap = cap;
    this.waits = waits;
    this.timers = timers;
    this.faults = faults;
    turnEnd.lingering.cut = (conn) => this.cut(conn);
  }

  /**
   * close stops accepting and reading, lets every connection finish the requests it has received
   * and flush their replies, then closes them (forcibly after `drainTimeoutMs`). An idle
   * connection ends at once. One that waits for a load or holds input (its turn, or output the
   * client has not read yet) is treated as if the client had half-closed it: what it received is
   * served in order, then it ends; nothing it sends later is read. The port's timers and its
   * `listener` stop first.
   */
  close(listener: TCPSocketListener<Connection>): Promise<void> {
    if (this.closed) return this.closed;
    this.timers.close();
    listener.stop(false);
    this.closed = new Promise<void>((resolve) => {
      this.allClosed = resolve;
      if (this.connections.size === 0) return resolve();
      for (const conn of this.connections) {
        if (conn.waiting || conn.held || conn.queued) {
          conn.inputEnded = true; // `process` ends it once all it holds is served
          continue;
        }
        conn.closing = true;
        if (conn.queuedOutput === 0 && conn.detached === 0) this.turnEnd.lingering.end(conn);
      }
      // Waiting for a reader does not help: what is not waiting for a load is cut after
      // DRAIN_MS; a load's answer is waited for up to `drainTimeoutMs`.
      const cut = (all: boolean): void => {
        for (const conn of this.connections) if (all || (!conn.waiting && conn.detached === 0)) this.cut(conn);
      };
      setTimeout(() => cut(false), Math.min(DRAIN_MS, this.opts.drainTimeoutMs)).unref();
      setTimeout(() => cut(true), this.opts.drainTimeoutMs).unref();
    });
    return this.closed;
  }

  onOpen(socket: Socket<Connection>): void {
    const conn = new Connection(socket, this.nextId++, this.opts.limits);
    if (this.opts.seedErrors === true) conn.proto.reply.seedErrors = true;
    socket.data = conn;
    this.counters.connectionsTotal++;
    if (this.opts.tls !== undefined) {
      // (Its handshake is not done yet: a client that never finishes it is closed.)
      conn.handshakeTimer = setTimeout(() => {
        conn.handshakeTimer = undefined;
        if (!conn.open) return;
        this.counters.handshakeTimeouts++;
        conn.closing = true; // (the cut is counted here, not logged as a failed handshake: onHandshake)
        socket.terminate();
      }, this.opts.handshakeTimeoutMs ?? HANDSHAKE_MS);
    }
    if (this.closed) {
      // A guard: Bun (1.4.5) delivers no open after `close` stopped the listener, its first step,
      // not even for a connection accepted in the poll that closed it (a flood of 3,000 connects
      // during close, TCP and TLS: none). Ended here, before its handshake, a TLS socket closes
      // at once (its handshake deadline goes with it, onClose); Bun's ~12 s close is for one
      // ended after it.
      conn.closing = true; // (never in `connections`: input of the same poll must not be served, nor counted)
      socket.end();
      return;
    }
    this.connections.add(conn);
    this.counters.connectionsCurrent = this.connections.size;
    conn.proto.request.holder = (delta) => this.waits.held(conn, delta);
    conn.authed = this.opts.access === undefined;
    if (!conn.authed) {
      // (Cleared once it authenticates, Faults.authenticate, or closes: onClose.)
      conn.authTimer = setTimeout(() => {
        conn.authTimer = undefined;
        if (!conn.open || conn.authed) return;
        // (One refused already, answered and ended, whose client keeps its side open: cut.)
        if (conn.closing) this.cut(conn);
        else this.faults.unauthenticated(conn, "no Auth in time", true);
      }, this.opts.authTimeoutMs ?? AUTH_MS);
    }
    // Bun closes a socket 120 s after it opened unless told otherwise, busy or not, and its
    // timeout cannot be re-armed by traffic: switch it off and sweep idle connections ourselves.
    socket.timeout(0);
    conn.lastActive = this.clock();
    // Connections refused already do not count: while they linger (REJECTED_LINGER_MS at most),
    // a client arriving under the limit is served. At the limit, the oldest connection that has not
    // authenticated makes room (none on a node without a token); with none, the newcomer is refused.
    if (this.connections.size - this.rejectedOpen > this.opts.maxConnections && !this.turnEnd.lingering.cutOldest() && !this.evictUnauthenticated()) {
      conn.rejected = true;
      this.rejectedOpen++;
      this.counters.connectionsRejected++;
      const cutNow = this.rejectedOpen > MAX_REJECTED_OPEN;
      // One line a second at most: a flood of connections must not flood the log too.
      const held = this.rejectLog.take(performance.now());
      if (held >= 0) {
        this.opts.logger.warn(cutNow ? "connection over the limit, with too many refused already open: cut without a reply" : "connection over the limit: will answer OVERLOADED and close", {
          conn: conn.id, remote: conn.remote, max: this.opts.maxConnections, rejectedSinceLastLine: held + 1,
        });
      }
      if (cutNow) {
        this.counters.connectionsRejectedCut++;
        return this.cut(conn);
      }
      // One that sends no request is closed after REJECTED_LINGER_MS. (Bun's own socket timeout
      // ticks in 4 s steps: it closed them after 4-8 s.)
      setTimeout(() => {
        if (conn.open && !conn.closing) this.turnEnd.lingering.end(conn);
      }, REJECTED_LINGER_MS);
    } else if (!conn.authed) {
      this.unauthed.add(conn); // (after the eviction: a newcomer never makes room by closing itself)
    }
  }

  /**
   * evictUnauthenticated closes the oldest open connection that has not authenticated, to make
   * room for one arriving at --max-connections, and tells whether there was one. Oldest first: a
   * client with the token authenticates within a round trip of opening, so it is closed only if
   * more connections than there are unauthenticated slots arrive within that round trip; clients
   * without it are the ones that linger. One refused already (UNAUTHORIZED, its client keeping its
   * side open) goes as well. Its close is done here (`onClose`): its slot is the newcomer's now,
   * whenever Bun's close event comes; nothing it sent meanwhile is read (`closing`).
   */
  private evictUnauthenticated(): boolean {
    for (const conn of this.unauthed) {
      this.unauthed.delete(conn);
      if (conn.authed || !conn.open) continue; // (authenticated since it joined)
      conn.closing = true;
      conn.dropBacklog();
      this.counters.evictedUnauthenticated++;
      const held = this.evictLog.take(performance.now());
      if (held >= 0) {
        this.opts.logger.warn("closing connection: not authenticated, evicted at the connection limit for a new one", {
          conn: conn.id, remote: conn.remote, max: this.opts.maxConnections, evictedSinceLastLine: held + 1,
        });
      }
      this.cut(conn);
      return true;
    }
    return false;
  }

  /**
   * onEnd: the client sent FIN (half-closed, as `nc -N` does after its last request). It sends
   * nothing more, but what it sent is still served in order; the connection ends once every
   * reply is written. One that waits or holds input ends when `process` has served it all. Every
   * wait is bounded (load and peer timeouts); a client that then never reads its replies is held
   * to --max-output and --max-buffered like any client that does not read.
   */
  onEnd(conn: Connection | undefined): void {
    if (conn === undefined || !this.connections.has(conn)) return;
    conn.inputEnded = true;
    if (conn.waiting || conn.held || conn.queued || conn.closing) return;
    conn.closing = true;
    this.turnEnd.flush(conn);
    this.cap.account(conn);
  }

  /**
   * onHandshake: the TLS handshake of the connection is done, its deadline goes; `failed` says why
   * it failed (the socket then closes), logged within the refusal budget (Faults.handshakeFailed):
   * a client that speaks plaintext to a TLS port was refused without a word in the log. Not one
   * the node is closing itself (`closing`: evicted, past its handshake or idle deadline): Bun
   * reports its own cut as a failed handshake ("disconnected before secure TLS connection"), and
   * a flood of evictions filled the refusal budget with such lines.
   */
  onHandshake(conn: Connection | undefined, failed: Error | null = null): void {
    if (conn !== undefined && failed !== null && conn.open && !conn.closing) this.faults.handshakeFailed(conn, failed);
    if (conn === undefined || conn.handshakeTimer === undefined) return;
    clearTimeout(conn.handshakeTimer);
    conn.handshakeTimer = undefined;
  }

  /**
   * cut closes a connection at once, and does its close's bookkeeping now (`onClose`), whenever
   * Bun's close event comes: after `end()` on a TLS socket, Bun reports the close only once the
   * client closes its side, or ~12 s later, and `terminate()` then does nothing. Such a connection
   * kept counting toward --max-connections, and held shutdown past its drain bound (its forced
   * cut closed nothing: node.close() took 11–12 s). The later close event finds it counted out.
   */
  cut(conn: Connection): void {
    conn.closing = true;
    conn.socket.terminate();
    this.onClose(conn);
  }

  /** onClose counts a connection out (Bun's close event, or `cut`): once, whichever comes first. */
  onClose(conn: Connection | undefined): void {
    this.onHandshake(conn); // (closed before its handshake was done: its deadline goes too)
    if (conn === undefined || !this.connections.delete(conn)) return;
    this.unauthed.delete(conn);
    this.turnEnd.lingering.forget(conn);
    if (conn.authTimer !== undefined) clearTimeout(conn.authTimer);
    conn.authTimer = undefined;
    conn.open = false;
    if (conn.rejected) this.rejectedOpen--;
    conn.sharedStart = -1; // its replies in the shared buffer have nowhere to go
    this.runs.forget(conn.proto.reader);
    this.cap.countOut(conn);
    this.counters.connectionsCurrent = this.connections.size;
    if (this.allClosed !== null && this.connections.size === 0) this.allClosed();
  }

  /** checkInvariants throws unless the counts agree with the open connections (and what they hold). Tests only. */
  checkInvariants(): void {
    if (this.counters.connectionsCurrent !== this.connections.size) throw new Error(`connectionsCurrent ${this.counters.connectionsCurrent}, ${this.connections.size} open`);
    let rejected = 0;
    for (const conn of this.connections) if (conn.rejected) rejected++;
    if (rejected !== this.rejectedOpen) throw new Error(`rejectedOpen ${this.rejectedOpen}, ${rejected} refused connections open`);
    this.turnEnd.lingering.checkInvariants(this.connections);
    this.cap.checkInvariants();
  }
}
