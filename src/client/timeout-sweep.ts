// TimeoutSweep: the one timer of a CacheClient that times its calls out, on every connection.
//
// Timeouts without a timer per call: one interval per client (running only while calls are in
// flight) advances an integer tick every `timeoutMs / 10` ms (1 ms at least); a call remembers the
// tick it was issued at and fails with PEER_UNAVAILABLE "timeout" once `timeoutTicks` ticks (the
// timeout in whole ticks, 10 from 10 ms) have passed, i.e. between timeoutMs and timeoutMs + a
// tick after it was issued. Its late reply is dropped.
//
// Each sweep runs every connection's part (CallTimeouts), the connections `retired` included,
// then counts one failure of the peer if calls of the application timed out (however many: calls
// sent together time out together). Late waits (CallTimeouts' header) make it ask a connection
// whose late calls wait unanswered for half a timeout with a liveness ping (the client's
// `pingLiveness`; for a retired one, only one the node may be holding, asked elsewhere); a connection that answered nothing for a whole timeout while its calls timed
// out is `quiet`, and `replace`d. The timer stops once no call waits anywhere, and a call starts
// it again (`running`, `start`): an idle client has no timer.

import { hostPort } from "../bytes/bytes.ts";
import { ClientConnection } from "./client-connection.ts";
import { type Endpoint, WRITES } from "./client-options.ts";
import type { PeerHealth } from "./peer-health.ts";

/** Sweep ticks per timeout (fewer when a tick would be under 1 ms); a call fails at the sweep timeoutTicks + 1 ticks after the one it was issued in. */
const TIMEOUT_TICKS = 10;

export class TimeoutSweep {
  /** tick: the sweeps so far; a call remembers the one it was issued at (ClientConnection.beginCall). */
  tick = 0;
  readonly tickMs: number;
  /** timeoutTicks: the timeout in whole ticks (TIMEOUT_TICKS, or fewer: a timeout of 11 ms is 6 ticks of 2 ms, not 10). */
  readonly timeoutTicks: number;
  /**
   * loadTicks: how much older than the timeout (in ticks) a late PeerGet may grow, a PeerGetMulti
   * that many per load wait it may take (0: none waits late; see loadWaitMs).
   */
  readonly loadTicks: number;
  /** retired: connections replaced while calls were on them (`replace`), closed once those settle. */
  readonly retired: ClientConnection[] = [];
  private timer: ReturnType<typeof setInterval> | null = null;
  /** closed: the client closed (`close`), maybe from a callback of the sweep running now. */
  private closed = false;

  /**
   * `conns` are the client's connections (`replace` swaps one in place), `firstRead` the first of
   * them that is not the write connection; `pingLiveness` sends a liveness ping (PeerPings').
   */
  constructor(
    private readonly conns: ClientConnection[],
    private readonly endpoint: Endpoint,
    private readonly health: PeerHealth,
    private readonly firstRead: number,
    timeoutMs: number,
    loadWaitMs: number,
    private readonly pingLiveness: (conn: ClientConnection) => void,
  ) {
    this.tickMs = Math.max(1, Math.ceil(timeoutMs / TIMEOUT_TICKS));
    this.timeoutTicks = Math.ceil(timeoutMs / this.tickMs);
    this.loadTicks = Math.ceil(loadWaitMs / this.tickMs);
  }

  /** running tells whether the sweep timer runs (a call in flight needs it for its timeout). */
  get running(): boolean {
    return this.timer !== null;
  }

  /** start runs the sweep timer (the caller checks it is not `running`). */
  start(): void {
    // The ticks stood still while nothing waited: what was last heard is at least half a timeout
    // old now, so calls that wait unanswered get a liveness ping at the first sweep (else a node
    // that stopped while the client was idle would have its late calls wait half a timeout more).
    if (this.loadTicks > 0) for (const conn of this.conns) conn.timeouts.assumeQuiet(this.timeoutTicks / 2);
    this.timer = setInterval(() => this.sweep(), this.tickMs);
  }

  /** stop stops the sweep timer (until a call starts it again). */
  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  /** close stops the sweep for good (the client closed): a sweep under way stops at its next step. */
  close(): void {
    this.closed = true;
    this.stop();
  }

  /**
   * sweep advances the tick, times out overdue calls, and stops the timer when nothing waits.
   * Late PeerGets wait on while their connection had a reply within a timeout; when such calls
   * wait on a connection and half a timeout passes without a reply on it, a PeerPing asks
   * (CallTimeouts' header, Late waits).
   */
  sweep(): void {
    const tick = ++this.tick;
    let timedOut = false;
    const conns = this.conns;
    const retired = this.retired;
    let quietest = Infinity;
    for (const conn of conns) quietest = Math.min(quietest, conn.timeouts.noteSweep());
    for (const old of retired) quietest = Math.min(quietest, old.timeouts.noteSweep());
    const peerAlive = quietest <= this.timeoutTicks;
    if (this.loadTicks > 0) {
      for (const conn of conns) if (conn.timeouts.needsLiveness(this.timeoutTicks / 2)) this.pingLiveness(conn);
      // A retired connection's calls wait past the timeout only if the node may be holding it, and
      // while it answers elsewhere (`peerAlive`): ask there for them too. (Before, nothing asked:
      // a part queued behind one that outlasted its wait, its connection replaced for that, failed
      // once the others went quiet, though its owner answered it within its own wait.)
      for (const old of retired) if (old.timeouts.mayBeHeld() && old.timeouts.needsLiveness(this.timeoutTicks / 2)) this.pingLiveness(old);
    }
    for (let i = 0; i < conns.length; i++) {
      if (conns[i]!.timeouts.sweep(tick, this.timeoutTicks, this.loadTicks, peerAlive)) timedOut = true;
      // A callback of the calls failed above may have closed the client (a node shutting down):
      // nothing more is done. Before, the sweep went on to swap a new, idle connection in for
      // the quiet one it had just closed, and to count the timeout, marking the closed client's
      // peer down (`isDown` read true after close).
      if (this.closed) return;
      if (conns[i]!.timeouts.quiet) this.replace(i);
    }
    if (retired.length > 0) {
      // (A sweep may mark the peer down, and onDown empties `retired`: sweep a copy.)
      for (const old of retired.slice()) if (old.timeouts.sweep(tick, this.timeoutTicks, this.loadTicks, peerAlive)) timedOut = true;
      for (let i = retired.length - 1; i >= 0; i--) {
        const old = retired[i]!;
        if (old.pending.waiting > 0) continue;
        retired.splice(i, 1);
        void old.close(); // its calls have all settled
      }
    }
    if (this.closed) return; // (closed by a retired connection's callback)
    if (timedOut) this.health.failed(`calls to ${hostPort(this.endpoint.host, this.endpoint.port)} timed out`); // one failure per sweep (see CallTimeouts.sweep)
    // Counted last: the callbacks of the calls failed above may have made new calls, on any
    // connection (one swept already included), and each needs the timer for its timeout.
    if (!this.waitingAnywhere()) this.stop();
  }

  /** waitingAnywhere tells whether a call waits on any connection, retired ones included. */
  private waitingAnywhere(): boolean {
    for (const conn of this.conns) if (conn.pending.waiting > 0) return true;
    for (const old of this.retired) if (old.pending.waiting > 0) return true;
    return false;
  }

  /**
   * replace handles connection `i`, which took no reply for over a whole timeout while its calls
   * timed out (CallTimeouts.sweep: dead, or held by a slow call at the head of a node that
   * answers each connection in order, a PeerGet that loads say). A fresh connection takes its
   * place for new calls; the calls on it keep their own deadlines (their replies may still come)
   * and it is closed once they have all settled. The write connection, and any connection with a
   * write waiting on it, is reset instead, failing its calls: a write left waiting here would be
   * answered, and applied, after writes sent later on the fresh connection, so pipelined writes
   * would no longer apply in the order sent. (A write that fails so, like one that timed out, may
   * still be applied by the node: CallTimeouts' header.) So is a connection while as many
   * are retired already as the client has: a peer that answers nothing does not get more sockets
   * than twice its share.
   */
  private replace(i: number): void {
    const conn = this.conns[i]!;
    conn.timeouts.quiet = false;
    if (i < this.firstRead || conn.pending.waitingAny(WRITES) || this.retired.length >= this.conns.length) {
      conn.drop("no reply on this connection within the timeout", false);
      return;
    }
    this.retired.push(conn);
    this.conns[i] = new ClientConnection(this.endpoint, this.health);
    // It has heard nothing yet: no sign the node is there (`peerAlive`); a call that may wait late
    // on it gets a liveness ping at the next sweep.
    this.conns[i]!.timeouts.assumeQuiet(conn.timeouts.quietFor);
  }
}
