// CallTimeouts: the timeouts of one ClientConnection's calls, the connection's part of each of
// its client's sweeps (TimeoutSweep). No timer per call: a call remembers the tick it was issued
// at (PendingCalls.issuedAt), and `sweep` fails those more than a timeout old, oldest first, with
// PEER_UNAVAILABLE "timeout". It also keeps how long the connection has gone without a reply
// (`replied`, set by each reply; `quietTicks`, counted at each sweep), which decides the late
// waits below and marks a connection `quiet` for its client to replace.
//
// Timeouts: a call that times out before its connection could send it (the connection is
// connecting or backing off) is taken out of the output and never sent. One written, or queued
// on an open connection behind output the socket has not taken yet (waiting for `drain`), may
// still reach the node after its caller was told it timed out, as with any client: a write that
// timed out may or may not have been applied, and may be applied later than a write sent after
// it on another connection (a retry of it included: a node serves what a connection sent before
// it closed, so a reset does not take it back). Retry a timed-out write only if applying it twice,
// or late, is harmless; or read back first.
//
// Late waits: a node's PeerGet or PeerGetMulti may wait for a load on the owner, which can take
// longer than a round trip (up to the owner's load timeout). With `loadTicks` (the client's
// `loadWaitMs`), such a call past the timeout is kept waiting while THIS connection had a reply
// within a timeout: else a slow load would be given up at the timeout and loaded again by the
// caller, a load per member instead of one, and counted as a failure of a peer that works. A
// PeerGetMulti may wait for as many load waits in turn as its caller said (PendingCalls.loadWaits:
// the node loads its keys a window at a time, so a part of many cold keys takes several loads'
// time; one wait gave it up while the owner was still loading it, and the caller loaded every
// key again). Either may also wait for those of the PeerGetMultis sent before it that the node
// serves in order (`queue`: PendingCalls.holds, queuedWaits), which keep it unread meanwhile:
// counting its own keys only, a part or a PeerGet sent behind other parts ran out of wait. All
// told, no call waits more than MAX_LATE_LOAD_WAITS load waits past its timeout. The
// client keeps the connection answering while such calls wait: a PeerPing on it once it has been
// quiet for half a timeout (`needsLiveness`, PeerPings.pingLiveness), which a node answers at
// once, past the PeerGets and the PeerGetMulti it serves out of order while they load. Replies on
// other connections prove nothing about this one: a half-open socket, or a connection the node
// holds behind a stuck call, would keep its calls, and every new one, waiting the whole load wait.
// The exception is a connection the node may itself serve in order (`mayBeHeld`: it has more calls
// that load in flight than a node answers out of order, or a PeerGetMulti too long to be answered
// out of order), where the ping waits behind the loads:
// its calls wait while the peer answers on any connection (`peerAlive`).

import { hostPort, readI32 } from "../bytes/bytes.ts";
import type { CacheError } from "../protocol/errors.ts";
import { METHOD_PEER_GET, METHOD_PEER_GET_MULTI } from "../protocol/request.ts";
import { settleError } from "./callbacks.ts";
import type { ClientConnection } from "./client-connection.ts";
import type { Endpoint } from "./client-options.ts";
import { CONN_OPEN } from "./dialer.ts";
import type { ForwardCallback, Waiter } from "./pending-calls.ts";
import type { PeerHealth } from "./peer-health.ts";
import { unavailable } from "./results.ts";

/** A connection with this many unanswered timed-out calls is reset (their slots are reclaimed). */
export const MAX_ABANDONED = 1_024;
/**
 * MAX_LATE_LOAD_WAITS caps a late wait: no call waits past its timeout more than this many load
 * waits (`loadTicks`: the longest load timeout) in all, its own and those of the calls queued
 * ahead of it. Counted uncapped, a routed GetMulti's part of 1 MiB of ~10-byte keys took ~2,300
 * (a load wait per 32 keys: hours at the default 10 s load timeout), and a connection the node
 * may be holding keeps its calls waiting while the peer answers on any other: a half-open one held
 * them all that time. Eight is 80 s at the default: a part of up to 8 windows of keys (256 at the
 * default 32) is never cut short, whatever its loads (each ends by the load timeout); a longer
 * one, or one queued behind others, only if its windows' loads average over 8 / (its windows and
 * those ahead) of the load timeout (for a 9,000-key part of over 64 KiB, 282 windows, ~280 ms of
 * the default 10 s). Such a part outlasts its wait and the forwarder loads its keys itself, as
 * when the owner's window is smaller than its own (design.md's limits); it has waited over a
 * minute, which no application's GetMulti is likely to wait for.
 */
export const MAX_LATE_LOAD_WAITS = 8;
/** MAY_LOAD are the calls a node may answer only after a load (late waits: see the header). */
const MAY_LOAD: ReadonlySet<number> = new Set([METHOD_PEER_GET, METHOD_PEER_GET_MULTI]);
/**
 * NODE_MAX_DETACHED: a node answers at most this many PeerGets of a connection out of order while
 * they load, and one PeerGetMulti (MAX_DETACHED, LoadWaits.detachable); past that it serves the
 * connection in order until a load ends.
 */
const NODE_MAX_DETACHED = 128;
/** NODE_DETACH_MAX_MULTI_BYTES: a node serves a PeerGetMulti of a longer message in order (LoadWaits' DETACH_MAX_MULTI_MESSAGE_BYTES). */
const NODE_DETACH_MAX_MULTI_BYTES = 64 * 1024;

export class CallTimeouts {
  /** replied: a reply came on this connection since the last sweep (ClientConnection.onReply); quietTicks: sweeps without one. */
  replied = false;
  private quietTicks = 0;
  /** quiet: set by `sweep` when calls timed out and no reply came for over a timeout (see there). */
  quiet = false;
  /**
   * livenessSlot: the slot of a liveness ping on this connection while it is in flight
   * (`markLiveness`; its outcome clears it: ClientConnection.settledPing), else -1.
   */
  livenessSlot = -1;

  constructor(
    private readonly conn: ClientConnection,
    private readonly endpoint: Endpoint,
    private readonly health: PeerHealth,
  ) {}

  /** quietFor is how many sweeps in a row passed without a reply on this connection. */
  get quietFor(): number {
    return this.quietTicks;
  }

  /** assumeQuiet makes it at least `ticks` sweeps since the last reply on this connection. */
  assumeQuiet(ticks: number): void {
    if (!this.replied) this.quietTicks = Math.max(this.quietTicks, ticks);
  }

  /**
   * noteSweep starts this connection's part of a sweep: it returns how many sweeps in a row passed
   * without a reply on it (0: one came since the last sweep).
   */
  noteSweep(): number {
    if (this.replied) this.quietTicks = 0;
    else this.quietTicks++;
    this.replied = false;
    return this.quietTicks;
  }

  /**
   * sweep abandons the calls issued more than `timeoutTicks` ticks before `tick` (a call issued
   * late in its tick has then waited at least `timeoutTicks` whole ticks): each fails with
   * PEER_UNAVAILABLE "timeout"; their late replies will be dropped. A sent PeerGet or PeerGetMulti
   * is kept instead (LATE) while this connection had a reply within `timeoutTicks` (or, when the
   * node may be holding it, `peerAlive`: some connection of the client did) and it is not
   * `timeoutTicks` + its load waits (PendingCalls.loadWaits, queuedWaits; MAX_LATE_LOAD_WAITS at
   * most) times `loadTicks` old (see the header). Returns whether
   * it abandoned any: the client counts one failure per sweep that did, however many calls and
   * connections (calls sent together time out together, and a burst of slow calls must not mark
   * down a peer that answered others in between).
   */
  sweep(tick: number, timeoutTicks: number, loadTicks = 0, peerAlive = false): boolean {
    const p = this.conn.pending;
    let error: CacheError | null = null;
    let counted = false; // a call of the application that was sent timed out (not only a ping of the client's)
    let revival = false; // the revival ping timed out
    // Not open: nothing queued on this connection has been written (a lost connection failed
    // what it had sent), so its output holds one frame per call in flight, in issue order. A call
    // timing out there is taken out, never to be sent: told it failed, it must not be applied later.
    const unsent = this.conn.state !== CONN_OPEN;
    let timedOut: TimedOut | null = null;
    const alive = loadTicks > 0 && (this.quietTicks <= timeoutTicks || (peerAlive && this.mayBeHeld()));
    const mayWait = !unsent && alive;
    while (p.head >= 0 && tick - p.issuedAt[p.head]! > timeoutTicks) {
      const slot = p.head;
      if (mayWait && MAY_LOAD.has(p.method[slot]!)) {
        const waits = Math.min(p.loadWaits[slot]! + p.queuedWaits[slot]!, MAX_LATE_LOAD_WAITS);
        const until = p.issuedAt[slot]! + timeoutTicks + waits * loadTicks;
        if (tick <= until) {
          p.lateWait(slot, until);
          continue;
        }
      }
      error ??= unavailable(`timeout calling ${hostPort(this.endpoint.host, this.endpoint.port)}`);
      if (slot === this.conn.revivalSlot) revival = true;
      if (this.timeOut(slot, unsent, (timedOut ??= newTimedOut()))) counted = true;
    }
    while (p.lateHead >= 0 && (!alive || tick > p.lateUntil[p.lateHead]!)) {
      error ??= unavailable(`timeout calling ${hostPort(this.endpoint.host, this.endpoint.port)}`);
      if (this.timeOut(p.lateHead, false, (timedOut ??= newTimedOut()))) counted = true;
    }
    // The unsent frames of the calls timed out, all at the head of the output, go in one cut (one
    // at a time, each cut moved everything queued behind it: 40,000 calls queued on a connecting
    // peer stalled the loop 2.6 s). Then their callers are told, once nothing is left half done.
    if (timedOut !== null) {
      if (timedOut.cut > 0) this.conn.calls.out.consume(timedOut.cut);
      for (let i = 0; i < timedOut.forwards.length; i++) settleError(timedOut.forwards[i]!, timedOut.waiters[i]!, error!);
    }
    const sentOut = error !== null && !unsent; // calls sent on this connection timed out
    // (Reset for its unanswered calls, the connection counts toward down only if the client's
    // sweep does not count this one already: before, a burst timing out together counted twice.)
    if (p.abandoned >= MAX_ABANDONED) this.conn.drop("too many unanswered calls", true, !counted);
    else if (sentOut && revival && !counted) this.conn.drop("no reply to the revival ping within the timeout", true, false); // backs off more
    // Calls (or a liveness ping) timed out and nothing at all came back on this connection for a
    // whole timeout: it is dead, or held by a slow call at its head (a node answers in order all
    // but PeerGet and PeerGetMulti; other connections to the peer may be fine, so the peer need
    // not be marked down). The client replaces it (`quiet`: TimeoutSweep.replace). Not a failure of
    // its own: the client's sweep counts one already when calls of the application timed out.
    else if (sentOut && this.quietTicks > timeoutTicks) this.quiet = true;
    return counted;
  }

  /**
   * timeOut times out the waiting or late call `slot`: its frame is added to `t.cut` when
   * `unsent` (the output is cut once the sweep has them all), else it is abandoned (its late reply
   * will be dropped); its caller goes to `t`, to be told after. Returns whether it counts as a
   * timeout of a sent call of the application's (not a ping of the client's own:
   * ClientConnection.settledPing).
   */
  private timeOut(slot: number, unsent: boolean, t: TimedOut): boolean {
    const p = this.conn.pending;
    t.forwards.push(p.forward[slot]!);
    t.waiters.push(p.waiter[slot]!);
    if (unsent) {
      t.cut += 4 + readI32(this.conn.calls.out.buffer, t.cut);
      p.release(slot);
    } else p.abandon(slot);
    const counted = !this.conn.settledPing(slot);
    if (counted) {
      this.health.counters.timeouts++;
      this.health.counters.errors++;
    }
    return counted && !unsent;
  }

  /**
   * markLiveness marks the call begun in `slot` (a PeerPing the client encoded) as a liveness ping
   * (PeerPings.pingLiveness): like the revival ping, its outcome counts neither as an error nor,
   * when it times out, as a failure (the calls it asks for count theirs).
   */
  markLiveness(slot: number): void {
    this.livenessSlot = slot;
  }

  /** livenessPinging tells whether a liveness ping is in flight on this connection. */
  get livenessPinging(): boolean {
    return this.livenessSlot >= 0;
  }

  /** livenessAge is how many ticks before `tick` the liveness ping in flight on this connection was issued, or -1 with none. */
  livenessAge(tick: number): number {
    return this.livenessSlot >= 0 ? tick - this.conn.pending.issuedAt[this.livenessSlot]! : -1;
  }

  /**
   * needsLiveness tells whether a call that may wait late (PeerGet, PeerGetMulti) waits on this
   * connection, which has had no reply for `quietTicks` sweeps: it is asked with a liveness ping,
   * so the call finds the connection known to answer when it reaches its timeout.
   */
  needsLiveness(quietTicks: number): boolean {
    return this.quietTicks >= quietTicks && this.conn.pending.waiting > 0 && this.conn.pending.waitingAny(MAY_LOAD);
  }

  /**
   * queue notes the call in `slot`, being sent, behind those in flight on this connection
   * (PendingCalls.queue). A PeerGetMulti the node will serve in order, holding what comes after it
   * for its own load waits, is one sent while another is in flight (the node answers one out of
   * order at a time), a timed-out one included (the node serves it all the same: counting only
   * those still waiting, one sent while a timed-out one still loaded there was taken for one
   * answered out of order, its ping held behind it, and it failed at the timeout), or one of over
   * 64 KiB (NODE_DETACH_MAX_MULTI_BYTES). A PeerGet sent behind NODE_MAX_DETACHED calls in flight
   * (timed-out ones included) may be served in order too: it holds none of the calls behind it
   * longer, but holds its connection until answered (`mayBeHeld`; before, once the calls answered
   * out of order ahead of it were answered, the connection no longer counted as held though the
   * node still served it in order behind that PeerGet's load: its ping waited there, and it failed
   * at the timeout).
   */
  queue(slot: number): void {
    const p = this.conn.pending;
    const method = p.method[slot]!;
    const holds = method === METHOD_PEER_GET_MULTI && (p.bytes[slot]! > NODE_DETACH_MAX_MULTI_BYTES || p.inFlightOf(METHOD_PEER_GET_MULTI) >= 2);
    p.queue(slot, holds ? p.loadWaits[slot]! : 0, holds || (MAY_LOAD.has(method) && p.inFlight > NODE_MAX_DETACHED)); // (inFlight: itself included)
  }

  /**
   * mayBeHeld tells whether the node may be serving this connection in order behind a load, so
   * that nothing on it, a ping included, is answered before that load ends: more calls in flight
   * than it answers out of order (NODE_MAX_DETACHED; timed-out ones included, which the node serves
   * all the same), or a call in flight that it may serve in order (`queue`: a PeerGetMulti sent
   * while another was in flight, or one of over 64 KiB, a routed GetMulti's part of a few thousand
   * keys; a PeerGet sent behind NODE_MAX_DETACHED; before, the long one was not told apart, so its
   * ping, held behind it, went unanswered and it failed at the timeout; and a second one was told
   * apart only while the first was in flight too).
   */
  mayBeHeld(): boolean {
    const p = this.conn.pending;
    return p.inFlight > NODE_MAX_DETACHED || p.inOrderCalls > 0;
  }
}

/** TimedOut is what one sweep timed out: the bytes of unsent frames to cut, and the callers to tell. */
interface TimedOut {
  cut: number;
  forwards: (ForwardCallback | null)[];
  waiters: (Waiter | null)[];
}

function newTimedOut(): TimedOut {
  return { cut: 0, forwards: [], waiters: [] };
}
