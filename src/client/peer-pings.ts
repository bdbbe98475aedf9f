// PeerPings: the PeerPings a CacheClient sends of its own accord, never counted in `calls`, and
// what it does as its peer goes down and up.
//
// - The probe: while the peer is marked down (PeerHealth: `maxFailures` failures of the
//   application's calls in a row), connections holding timed-out calls are reset, and an
//   unref'd timer sends a PeerPing after `probeIntervalMs` / 10, then at twice the last wait, up
//   to every `probeIntervalMs`. Any reply (normally the probe's; even an error reply or an
//   UNKNOWN_METHOD exception from an older server — the peer answered) marks it up; the other
//   connections then reconnect too. `onHealth` hears "down", "up", and "still down" for a new
//   reason (at most every STILL_DOWN_REPORT_MS).
// - The revival of a connection backing off, its backoff over (ClientConnection's header): a
//   PeerPing that reconnects it without risking a call of the application (`revive`).
// - The liveness ping of a connection whose late calls wait unanswered (CallTimeouts' header,
//   Late waits), at the sweep's asking (`pingLiveness`).
// Each goes through the client's `issue` (the tick, the connection's output), as its calls do.

import { CacheError } from "../protocol/errors.ts";
import type { CallWriter } from "../protocol/call-writer.ts";
import { METHOD_PEER_PING } from "../protocol/request.ts";
import { report } from "./callbacks.ts";
import type { ClientConnection } from "./client-connection.ts";
import type { ClientOptions } from "./client-options.ts";
import type { Waiter } from "./pending-calls.ts";
import type { PeerHealth } from "./peer-health.ts";
import type { TimeoutSweep } from "./timeout-sweep.ts";

function noFields(): void {}

/** STILL_DOWN_REPORT_MS: a peer's new reason for failing while down is passed on at most this often. */
const STILL_DOWN_REPORT_MS = 30_000;
/** PROBE_SPEEDUP: the first probe of a peer marked down comes after probeIntervalMs / PROBE_SPEEDUP. */
const PROBE_SPEEDUP = 10;

/**
 * SILENT_SHARE: a connection whose liveness ping has gone unanswered this share of a timeout is
 * not waited on for a held connection's liveness (PeerPings.silent). Under half: the held calls
 * wait while a reply came anywhere within a timeout, and the ping is sent at half a timeout of
 * quiet, so the new socket must answer within the other half.
 */
const SILENT_SHARE = 0.25;

/** IGNORE takes the outcome of a revival ping: its effect is on the connection (usable again, or backing off more). */
const IGNORE: Waiter = { resolve() {}, reject() {} };

export class PeerPings {
  private probeTimer: ReturnType<typeof setTimeout> | null = null;
  /** probeDelay is the wait before the next probe: it starts at a tenth of probeIntervalMs and doubles up to it. */
  private probeDelay = 0;
  private probing = false;
  // A probe that times out needs no reset of its own: a probe goes out only while the peer is
  // down, so its connection is otherwise quiet, and the sweep replaces (or resets) a connection
  // that got no reply for over a whole timeout (TimeoutSweep.replace); the next probe then
  // connects anew.
  private readonly probeWaiter: Waiter = {
    resolve: () => (this.probing = false),
    reject: () => (this.probing = false),
  };
  private healthReportedAt = -Infinity;

  /**
   * `conns` are the client's connections, `issue` begins and encodes a call on one (CacheClient's),
   * and `isClosed` tells whether the client is closed.
   */
  constructor(
    private readonly conns: ClientConnection[],
    private readonly health: PeerHealth,
    private readonly timeouts: TimeoutSweep,
    private readonly probeIntervalMs: number,
    private readonly onHealth: ClientOptions["onHealth"],
    private readonly issue: (conn: ClientConnection, method: number, encode: (w: CallWriter) => void) => number | CacheError,
    private readonly isClosed: () => boolean,
  ) {}

  /**
   * onDown hears the peer marked down (PeerHealth): report it, reset what is not to be trusted, start
   * probing; nothing once the client is closed (a timed-out call's callback may close it in the
   * sweep that then counts the timeout: before, the closed client's onHealth heard "down").
   */
  onDown(): void {
    if (this.isClosed()) return; // (its connections are closed, their calls failed)
    report(this.onHealth, "down", this.health.lastFailure);
    // Connections holding unanswered calls are not to be trusted: reset them (the probe
    // reconnects). Not failures of the peer: it is down already, for the reason just reported.
    for (const conn of this.conns) if (conn.pending.abandoned > 0) conn.drop("peer marked down", true, false);
    for (const conn of this.timeouts.retired.splice(0)) {
      conn.drop("peer marked down", true, false); // its calls fail as the others' do
      void conn.close();
    }
    if (this.probeTimer === null && !this.isClosed()) {
      // A node that restarts is back within a fraction of a second: the first probes come sooner
      // than the interval, then back off to it.
      this.probeDelay = this.probeIntervalMs / PROBE_SPEEDUP;
      this.scheduleProbe();
    }
  }

  private scheduleProbe(): void {
    this.probeTimer = setTimeout(() => {
      this.probeTimer = null;
      if (this.isClosed() || !this.health.down) return;
      this.probeDelay = Math.min(this.probeDelay * 2, this.probeIntervalMs);
      try {
        this.probe();
      } finally {
        // (the probe may have ended it: a reply at once marks the peer up)
        if (!this.isClosed() && this.health.down && this.probeTimer === null) this.scheduleProbe();
      }
    }, this.probeDelay);
    this.probeTimer.unref();
  }

  /**
   * onStillDown passes on a new reason the peer fails while down (a node refusing connections,
   * then back with a certificate this client refuses), at most once per STILL_DOWN_REPORT_MS.
   */
  onStillDown(): void {
    const now = performance.now();
    if (now - this.healthReportedAt < STILL_DOWN_REPORT_MS) return; // (a later failure tries again)
    this.healthReportedAt = now;
    this.health.reportedFailure = this.health.lastFailure;
    report(this.onHealth, "still down", this.health.lastFailure);
  }

  /** onUp hears the peer marked up again (PeerHealth): report it, stop probing, reconnect the connections. */
  onUp(): void {
    report(this.onHealth, "up", "");
    this.stop();
    // The probe reconnected one connection; the others reconnect now too.
    for (const conn of this.conns) {
      conn.resetBackoff();
      if (conn.revivable) this.revive(conn);
    }
  }

  /**
   * revive reconnects a connection backing off, its backoff over, with a PeerPing
   * (ClientConnection.revive): its reply (any but a refusal of the connection) makes the
   * connection usable again, so no call of the application is risked on a node that still
   * refuses connections. `pick` calls it, so an idle client does not knock on a full node.
   */
  revive(conn: ClientConnection): void {
    if (this.isClosed() || this.health.down) return;
    if (!this.sendPeerPing(conn, IGNORE, "revival")) return;
    if (!this.timeouts.running) this.timeouts.start();
  }

  /**
   * sendPeerPing sends a PeerPing on `conn` (not counted in `calls`), its outcome to `waiter`; a
   * "revival" or "liveness" ping is marked so on the connection (ClientConnection.revive,
   * CallTimeouts.markLiveness). False when it could not be sent.
   */
  private sendPeerPing(conn: ClientConnection, waiter: Waiter, role: "probe" | "revival" | "liveness" = "probe"): boolean {
    const slot = this.issue(conn, METHOD_PEER_PING, noFields);
    if (slot instanceof CacheError) return false;
    if (role === "revival") conn.revive(slot);
    else if (role === "liveness") conn.timeouts.markLiveness(slot);
    return conn.endCall(slot, null, waiter) === null;
  }

  /** stop stops probing (the peer is up, or the client closed). */
  stop(): void {
    if (this.probeTimer !== null) clearTimeout(this.probeTimer);
    this.probeTimer = null;
  }

  /**
   * pingLiveness asks whether `conn`, where calls that may wait late wait unanswered, still answers:
   * a PeerPing on it (counted neither in `calls` nor, if it times out, as a failure: the calls
   * count theirs), unless one is in flight there. Its answer lets them wait past the timeout;
   * none within a timeout fails them and gets the connection replaced (CallTimeouts.sweep).
   * A connection the node may be holding in order (`mayBeHeld`) cannot answer before its loads
   * end: the ping goes on another connection the node does not hold, which tells that the node is
   * there (`peerAlive`); with none usable, one backing off whose backoff is over is revived, its
   * ping telling as much (after a connect failed, say while the node was starting, only the calls'
   * connection was connected again, and a long PeerGetMulti held it: nothing asked, it failed at
   * the timeout). A held one is no target (before, two read connections each holding a long part
   * were pinged behind each other's part while the write connection could have been revived, and
   * both failed at the timeout).
   */
  pingLiveness(conn: ClientConnection): void {
    if (this.isClosed() || this.health.down) return;
    let target: ClientConnection | null = conn;
    if (conn.timeouts.mayBeHeld()) {
      target = this.unheldBeside(conn, false, true);
      if (target === null) {
        const revivable = this.conns.find((other) => other !== conn && other.revivable);
        if (revivable !== undefined) return this.revive(revivable);
        target = this.resetSilent(conn);
        if (target === null) return;
      }
      if (target.timeouts.quietFor < this.timeouts.timeoutTicks / 2) return; // (the node answered there lately)
    }
    if (!target.timeouts.livenessPinging) this.sendPeerPing(target, IGNORE, "liveness");
  }

  /**
   * silent tells whether `conn` has left a liveness ping unanswered for SILENT_SHARE of a timeout:
   * a node answers one on a connection it does not hold at once, so its socket may be dead
   * (half-open). Asked for a held connection, the liveness check must not hang on it: the held
   * calls wait only while the peer answers somewhere (`peerAlive`), and a ping left to time out
   * there took a whole timeout, by which they had failed.
   */
  private silent(conn: ClientConnection): boolean {
    return conn.timeouts.livenessAge(this.timeouts.tick) >= this.timeouts.timeoutTicks * SILENT_SHARE;
  }

  /**
   * resetSilent resets a connection beside `conn` the node does not hold whose liveness ping went
   * unanswered (`silent`) and that carries nothing else, so the next ping goes out on a new socket,
   * and returns it; null when there is none. Before, the dead write connection beside a read one
   * held by a long part was the only one asked: nothing else was tried, and the part failed at
   * the timeout though the node was loading it. One with calls of the application waiting is
   * left alone: it may be held behind a write the node waits on, and a reset would fail them.
   */
  private resetSilent(conn: ClientConnection): ClientConnection | null {
    const silent = this.unheldBeside(conn, false, false);
    if (silent === null || !this.silent(silent) || silent.pending.waiting !== 1) return null;
    silent.drop("no reply to a liveness ping", false, false); // (its ping fails unseen: IGNORE)
    return silent;
  }

  /**
   * aroundHeld is the connection a PeerPing of the application's (a cluster's lease renewal) goes
   * on, `conn` being the one picked: a node answers it at once, but not behind the calls it serves
   * in order, so on a connection it may be holding (`mayBeHeld`: a routed GetMulti's long part) it
   * goes on another one it does not hold that is usable, or being revived (beside the revival
   * ping), the write connection included; else on `conn`. Sent behind such a part, it timed out,
   * counted toward marking the peer down.
   */
  aroundHeld(conn: ClientConnection): ClientConnection {
    if (!conn.timeouts.mayBeHeld()) return conn;
    return this.unheldBeside(conn, true, true) ?? this.unheldBeside(conn, true, false) ?? conn;
  }

  /**
   * unheldBeside is the connection other than `conn` with the fewest calls waiting among those
   * usable (or, with `reviving`, being revived) that the node is not holding (`mayBeHeld`), or null;
   * with `answering`, not one `silent`.
   */
  private unheldBeside(conn: ClientConnection, reviving: boolean, answering: boolean): ClientConnection | null {
    let best: ClientConnection | null = null;
    for (const other of this.conns) {
      if (other === conn || !(other.usable || (reviving && other.revivalSlot >= 0)) || other.timeouts.mayBeHeld()) continue;
      if (answering && this.silent(other)) continue;
      if (best === null || other.pending.waiting < best.pending.waiting) best = other;
    }
    return best;
  }

  /** probe sends one PeerPing (not counted as a call) unless one is in flight. */
  private probe(): void {
    if (this.probing || this.isClosed()) return;
    const conn = this.conns[0]!;
    conn.resetBackoff();
    if (!this.sendPeerPing(conn, this.probeWaiter)) return;
    this.probing = true;
    if (!this.timeouts.running) this.timeouts.start();
  }
}
