// ClientConnection: one long-lived, pipelined TCP connection of a CacheClient to a peer.
//
// State: IDLE (no socket) → CONNECTING → OPEN → IDLE again when the socket is lost; CLOSED for
// good after close(). Calls are encoded straight into the connection's one reusable output
// buffer (CallWriter over a BinaryWriter) whatever the state; while OPEN, the first call of a
// tick queues one microtask that writes everything queued in ONE socket.write (with
// `writeAtTurnEnd`, one `setImmediate` for the whole turn of the event loop), and a short write
// keeps the tail for `drain`. While IDLE, a call starts a connect (lazily, after the backoff
// delay if the last attempt failed: the Dialer's, dialer.ts); the queued calls go out once it
// opens. Invariant: every byte in the output buffer belongs to a call in `pending`, so losing the
// connection fails them all and empties the buffer in one step.
//
// Replies come through a FrameReader (framed only: any other transport from the server is a
// protocol fault) and a ReplyReader; the seqid finds the call in PendingCalls (no map, no
// allocation). Outcomes:
//  - reply to a waiting call → its forward callback (value as a view into the receive buffer,
//    valid during the callback) or its promise (result copied out, see results.ts);
//  - reply to an abandoned (timed-out) call → dropped, slot freed;
//  - a ProtocolError (bad frame, garbage, nesting too deep, unknown seqid, …) → the connection
//    is closed, every call on it fails with PEER_UNAVAILABLE, and the next call reconnects.
// Backoff: after a failed connect, a lost connection, or one the peer refused (a node at its
// connection limit answers the first call OVERLOADED "too many connections" and closes) the next
// attempt waits BACKOFF_BASE_MS, doubling per consecutive failure up to BACKOFF_MAX_MS; any other
// reply resets it (a node that refuses our auth token is treated the same way, its calls answered
// UNAUTHORIZED). A refusal is not a failure of the peer (it is up and answering): the calls on
// the connection fail with its OVERLOADED, and the peer is not counted toward down. A connection
// backing off is not `usable` (the client gives its calls to the others) until it has served a
// reply again: once its backoff has passed, the client's next call also sends a PeerPing on it
// (`revive`, CacheClient), so it reconnects without risking a call of the application. A revival
// that fails only backs off more: it is not counted toward marking the peer down, nor as an error
// (down detection is the application's calls' and the down-peer probe's).
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
// longer than a round trip (up to the owner's load timeout). With `lateTicks` (the client's
// `loadWaitMs`), such a call past the timeout is kept waiting while THIS connection had a reply
// within a timeout: else a slow load would be given up at the timeout and loaded again by the
// caller, a load per member instead of one, and counted as a failure of a peer that works. The
// client keeps the connection answering while such calls wait: a PeerPing on it once it has been
// quiet for half a timeout (`needsLiveness`, CacheClient.pingLiveness), which a node answers at
// once, past the PeerGets and the PeerGetMulti it serves out of order while they load. Replies on
// other connections prove nothing about this one: a half-open socket, or a connection the node
// holds behind a stuck call, would keep its calls, and every new one, waiting the whole load wait.
// The exception is a connection the node may itself serve in order (`mayBeHeld`: it has more calls
// that load in flight than a node answers out of order), where the ping waits behind the loads:
// its calls wait while the peer answers on any connection (`peerAlive`).

import { BinaryWriter, KEEP_OUTPUT_BYTES } from "../protocol/binary-writer.ts";
import { CallWriter } from "../protocol/call-writer.ts";
import { hostPort, readI32 } from "../bytes/bytes.ts";
import { CacheError, ERROR_CODE, ProtocolError, TOO_MANY_CONNECTIONS, protocolError } from "../protocol/errors.ts";
import { FrameReader } from "../protocol/frame-reader.ts";
import type { ProtocolLimits } from "../protocol/limits.ts";
import { REPLY_CACHE_ERROR, REPLY_OK, ReplyReader } from "../protocol/reply-reader.ts";
import { INTRO_SEQID, METHOD_AUTH, METHOD_PEER_GET, METHOD_PEER_GET_MULTI, METHOD_PEER_PING } from "../protocol/request.ts";
import { MESSAGE_EXCEPTION, TRANSPORT_FRAMED, TYPE_STRING } from "../protocol/wire.ts";
import { type ForwardCallback, PendingCalls, SLOT_ABANDONED, type Waiter } from "./pending-calls.ts";
import type { PeerHealth } from "./peer-health.ts";
import { buildResult, replyError, strayException, unavailable } from "./results.ts";
import { report, rethrowApart, settleError } from "./callbacks.ts";
import { CONN_CLOSED, CONN_IDLE, CONN_OPEN, Dialer } from "./dialer.ts";

/** A connection with this many unanswered timed-out calls is reset (their slots are reclaimed). */
export const MAX_ABANDONED = 1_024;
/** MAY_LOAD are the calls a node may answer only after a load (late waits: see the header). */
const MAY_LOAD: ReadonlySet<number> = new Set([METHOD_PEER_GET, METHOD_PEER_GET_MULTI]);
/**
 * NODE_MAX_DETACHED: a node answers at most this many PeerGets of a connection out of order while
 * they load, and one PeerGetMulti (MAX_DETACHED, LoadWaits.detachable); past that it serves the
 * connection in order until a load ends.
 */
const NODE_MAX_DETACHED = 128;
/** Most bytes queued for one connection before calls are refused with OVERLOADED. */
export const MAX_QUEUED_BYTES = 64 * 1024 * 1024;

/** The socket calls a connection needs (a Bun socket; tests may attach a fake one). */
export interface CallSocket {
  write(data: Uint8Array, byteOffset: number, byteLength: number): number;
  end(): void;
}

export interface Endpoint {
  host: string;
  port: number;
  connectTimeoutMs: number;
  limits: ProtocolLimits;
  /** authToken is sent (Auth) as the first call on every new connection. */
  authToken?: string;
  /** sender is sent in a PeerPing (INTRO_SEQID) right after, on every new connection (ClientOptions). */
  sender?: string;
  /** writeAtTurnEnd writes a turn's calls at its end rather than after each callback (ClientOptions). */
  writeAtTurnEnd?: boolean;
  /** tls dials with TLS (true: system CAs; ca: trust these PEM certificates). */
  tls?: boolean | { ca?: string; serverName?: string };
}

/** AUTH_SEQID marks the Auth call sent when a connection opens (pending seqids are always > 0). */
const AUTH_SEQID = -1;
/** FIRST_AUTH and FIRST_INTRO mark the Auth and intro PeerPing sent on a connection and not yet answered. */
const FIRST_AUTH = 1;
const FIRST_INTRO = 2;

export class ClientConnection {
  readonly calls = new CallWriter(new BinaryWriter(4096));
  readonly pending = new PendingCalls();
  state = CONN_IDLE;
  /** dialer makes the connect attempts and keeps the backoff between them (dialer.ts). */
  readonly dialer: Dialer;
  private readonly replies: ReplyReader;
  private frames: FrameReader;
  private socket: CallSocket | null = null;
  private flushQueued = false;
  private waitingDrain = false;
  private readonly flushNow = (): void => this.flush();
  private opens = 0;
  private closedWaiters: (() => void)[] = [];
  /** replied: a reply came on this connection since the last sweep; quietTicks: sweeps without one. */
  private replied = false;
  private quietTicks = 0;
  /** quiet: set by `sweep` when calls timed out and no reply came for over a timeout (see there). */
  quiet = false;
  /**
   * served: this connection, since it opened, answered a call with something other than
   * OVERLOADED. A close without it (a node at its connection limit answers OVERLOADED and closes)
   * is a failure to back off from, even with no call in flight.
   */
  private served = false;
  /** firstCalls: FIRST_AUTH and FIRST_INTRO, of this connection's first calls waiting for their replies. */
  private firstCalls = 0;
  /** revivalSlot: the slot of this connection's revival ping while it is in flight (`revive`), else -1. */
  private revivalSlot = -1;
  /** livenessSlot: the slot of a liveness ping on this connection while it is in flight (`markLiveness`), else -1. */
  private livenessSlot = -1;
  /**
   * refusal: the connection-limit OVERLOADED, or the UNAUTHORIZED of a wrong token, this
   * connection got before it served anything, if any.
   */
  private refusal: CacheError | null = null;

  constructor(
    private readonly endpoint: Endpoint,
    private readonly health: PeerHealth,
  ) {
    this.replies = new ReplyReader(endpoint.limits);
    this.frames = new FrameReader(endpoint.limits);
    this.dialer = new Dialer(this, endpoint);
  }

  /**
   * beginCall takes a pending slot and writes the call header; the caller writes the request
   * fields with `calls` and finishes with endCall (or abortCall). Returns -1 when the
   * connection has MAX_SLOTS calls in flight or MAX_QUEUED_BYTES queued.
   */
  beginCall(method: number, tick: number): number {
    if (this.calls.out.length > MAX_QUEUED_BYTES) return -1;
    const slot = this.pending.acquire(method, tick);
    if (slot >= 0) this.calls.begin(method, this.pending.seqidOf(slot));
    return slot;
  }

  /**
   * endCall finishes the call of `slot`, records where its outcome goes, and gets it sent.
   * Returns null, or the error when the call is larger than the frame limit (it is dropped).
   */
  endCall(slot: number, forward: ForwardCallback | null, waiter: Waiter | null): CacheError | null {
    if (this.calls.end(this.endpoint.limits.maxFrameBytes) < 0) { // dropped: not sent
      this.pending.release(slot);
      return new CacheError(ERROR_CODE.VALUE_TOO_LARGE, "call larger than the frame limit");
    }
    this.pending.forward[slot] = forward;
    this.pending.waiter[slot] = waiter;
    this.pending.entries[slot] = this.calls.listed;
    this.kick();
    return null;
  }

  /** abortCall drops a call whose encoding failed. */
  abortCall(slot: number): void {
    this.calls.abort();
    this.pending.release(slot);
  }

  /** attach adopts an already connected socket (tests; the connect path uses onOpen). */
  attach(socket: CallSocket): void {
    this.socket = socket;
    this.state = CONN_OPEN;
    this.served = false;
    this.refusal = null;
    this.firstCalls = 0;
    this.frames = new FrameReader(this.endpoint.limits);
    if (this.opens++ > 0) this.health.counters.reconnects++;
    if (this.endpoint.authToken !== undefined) this.sendAuth(socket, this.endpoint.authToken);
    if (this.endpoint.sender !== undefined && this.state === CONN_OPEN) this.sendFirst(socket, METHOD_PEER_PING, INTRO_SEQID, this.endpoint.sender, "could not send our member id");
    this.flush();
  }

  /**
   * sendAuth writes the Auth call ahead of everything queued, with the reserved AUTH_SEQID so its
   * reply needs no pending slot. A refusal closes the connection (the server closes it too).
   */
  private sendAuth(socket: CallSocket, token: string): void {
    this.sendFirst(socket, METHOD_AUTH, AUTH_SEQID, token, "could not send the auth token");
  }

  /**
   * sendFirst writes a call of one string field (id 1: Auth's token, PeerPing's sender) ahead of
   * everything queued, with a reserved seqid so its reply needs no pending slot. A fresh socket
   * takes a few dozen bytes at once; if it ever does not, the connection is dropped (`failure`)
   * rather than sending calls behind half a frame.
   */
  private sendFirst(socket: CallSocket, method: number, seqid: number, text: string, failure: string): void {
    this.firstCalls |= seqid === AUTH_SEQID ? FIRST_AUTH : FIRST_INTRO;
    const call = new CallWriter(new BinaryWriter(64 + text.length * 3));
    call.begin(method, seqid);
    call.out.fieldBegin(TYPE_STRING, 1);
    call.out.utf8(text);
    call.end();
    if (socket.write(call.out.buffer, 0, call.out.length) !== call.out.length) this.drop(failure);
  }

  /**
   * usable is false while the connection is backing off after a failure or a refusal: pick
   * another one. It is usable again once it has served a reply (see the header: `revive`).
   */
  get usable(): boolean {
    return this.dialer.backoffFailures === 0;
  }

  /** backoffEndsAt is when a connection backing off may try again (`performance.now()` time; past: it may now). */
  get backoffEndsAt(): number {
    return this.dialer.retryAt;
  }

  /**
   * refusedNow is the node's refusal of this connection while it backs off from it (see the
   * header), else null: a call that can go nowhere else is answered with it at once rather than
   * queued for a connection the node refuses.
   */
  get refusedNow(): CacheError | null {
    return this.state === CONN_IDLE && this.dialer.backoffFailures > 0 ? this.refusal : null;
  }

  /** revivable tells whether the connection is idle after a failure, its backoff over, with no call on it: `revive` it. */
  get revivable(): boolean {
    return this.dialer.backoffFailures > 0 && this.state === CONN_IDLE && this.pending.inFlight === 0 && this.dialer.retryAt <= performance.now();
  }

  /**
   * revive marks the call begun in `slot` (a PeerPing the client encoded) as this connection's
   * revival: its outcome counts neither as an error nor, when it fails alone, toward marking the
   * peer down. The caller ends it with endCall, which reconnects.
   */
  revive(slot: number): void {
    this.revivalSlot = slot;
  }

  /**
   * markLiveness marks the call begun in `slot` (a PeerPing the client encoded) as a liveness ping
   * (CacheClient.pingLiveness): like the revival ping, its outcome counts neither as an error nor,
   * when it times out, as a failure (the calls it asks for count theirs).
   */
  markLiveness(slot: number): void {
    this.livenessSlot = slot;
  }

  /** livenessPinging tells whether a liveness ping is in flight on this connection. */
  get livenessPinging(): boolean {
    return this.livenessSlot >= 0;
  }

  /**
   * needsLiveness tells whether a call that may wait late (PeerGet, PeerGetMulti) waits on this
   * connection, which has had no reply for `quietTicks` sweeps: it is asked with a liveness ping,
   * so the call finds the connection known to answer when it reaches its timeout.
   */
  needsLiveness(quietTicks: number): boolean {
    return this.quietTicks >= quietTicks && this.pending.waiting > 0 && this.pending.waitingAny(MAY_LOAD);
  }

  /**
   * mayBeHeld tells whether the node may be serving this connection in order behind a load, so
   * that nothing on it, a ping included, is answered before that load ends: more calls in flight
   * than it answers out of order, or two PeerGetMultis (NODE_MAX_DETACHED). (A PeerGetMulti of over
   * 64 KiB, which a node also serves in order, is not told apart.)
   */
  mayBeHeld(): boolean {
    const p = this.pending;
    return p.waiting > NODE_MAX_DETACHED || p.count(METHOD_PEER_GET_MULTI, 2) === 2;
  }

  /** resetBackoff lets the next call connect at once (the down-peer probe paces itself). */
  resetBackoff(): void {
    this.dialer.retryAt = 0;
  }

  private kick(): void {
    if (this.state === CONN_OPEN) {
      if (!this.flushQueued) {
        this.flushQueued = true;
        if (this.endpoint.writeAtTurnEnd === true) setImmediate(this.flushNow);
        else queueMicrotask(this.flushNow);
      }
    } else if (this.state === CONN_IDLE) this.dialer.dial();
  }

  /** flush writes everything queued in one socket.write; a short write waits for drain. */
  flush(): void {
    this.flushQueued = false;
    const socket = this.socket;
    const out = this.calls.out;
    if (socket === null || this.waitingDrain || out.length === 0) return;
    const n = socket.write(out.buffer, 0, out.length);
    if (n > 0) out.consume(n);
    if (out.length > 0) this.waitingDrain = true;
    else out.shrink(KEEP_OUTPUT_BYTES); // a burst's big buffer is not kept for the connection's life
  }

  onData(socket: CallSocket, chunk: Uint8Array): void {
    if (socket !== this.socket) return;
    const frames = this.frames;
    try {
      frames.push(chunk);
      while (frames.next()) {
        if (frames.transport !== TRANSPORT_FRAMED) throw protocolError("reply is not in framed transport");
        this.onReply(frames.buffer, frames.start, frames.end);
        if (this.socket !== socket) return; // a callback closed the client
      }
      // An idle connection keeps no large reply: 4 idle clients held 61 MB after 15 MB replies.
      if (frames.releaseServed()) this.replies.release();
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      const reason = `malformed reply: ${e.message}`;
      this.health.counters.protocolErrors++;
      this.drop(reason);
      report(this.health.onProtocolError, reason); // (after the drop: a throw there must not keep a desynced connection)
    }
  }

  /** onReply settles the call a complete reply frame answers. Throws ProtocolError. */
  onReply(buf: Uint8Array, start: number, end: number): void {
    const r = this.replies;
    const p = this.pending;
    r.begin(buf, start, end);
    if (r.seqid === AUTH_SEQID || r.seqid === INTRO_SEQID) {
      // The first call on the connection (Auth, else the PeerPing naming our member): a node at
      // its connection limit answers it with OVERLOADED and closes, as below.
      const auth = r.seqid === AUTH_SEQID;
      const bit = auth ? FIRST_AUTH : FIRST_INTRO;
      // Only once, and only if sent: else a server could fail every call with an error of its choosing.
      if ((this.firstCalls & bit) === 0) throw protocolError(`reply to seqid ${r.seqid}, which is not in flight`);
      this.firstCalls &= ~bit;
      r.readResult(auth ? METHOD_AUTH : METHOD_PEER_PING);
      if (r.outcome === REPLY_OK && (!auth || r.success)) return;
      if (!auth && r.outcome !== REPLY_CACHE_ERROR) return; // (what the node makes of our name is its own)
      if (r.outcome === REPLY_CACHE_ERROR) {
        // The node refused the token, or answered the Auth with something else (OVERLOADED at its
        // connection limit): the calls waiting on this connection get that answer. Either is a
        // refusal of the connection by a node that is up: not counted toward marking it down,
        // and the connection backs off before it tries again (a wrong token stays wrong; the
        // calls meanwhile are answered with it at once: `refusedNow`).
        const e = r.errorCode === ERROR_CODE.UNAUTHORIZED
          ? new CacheError(ERROR_CODE.UNAUTHORIZED, "the node refused our auth token")
          : replyError(auth ? METHOD_AUTH : METHOD_PEER_PING, r);
        if ((isConnectionRefusal(e) || e.code === ERROR_CODE.UNAUTHORIZED) && !this.served) this.refusal = e;
        this.health.succeeded(); // the node is up and answering (as for the same refusal of a call)
        this.failAll(e);
        return;
      }
      throw protocolError(`the peer answered our ${auth ? "Auth" : "PeerPing"} with neither success nor an error`);
    }
    const slot = p.find(r.seqid);
    if (slot < 0) {
      if (r.messageType === MESSAGE_EXCEPTION && r.nameLength === 0) {
        r.readResult(METHOD_PEER_PING); // (an exception without a name reads alike for any method)
        throw protocolError(strayException(r));
      }
      throw protocolError(`reply to seqid ${r.seqid}, which is not in flight`);
    }
    this.replied = true;
    const method = p.method[slot]!;
    r.readResult(method, p.entries[slot]!);
    // The node refusing the connection (at its connection limit) has not served it: that neither
    // ends a backoff nor makes the close that follows an idle one (the late reply of a timed-out
    // call included).
    const refusal = r.outcome === REPLY_CACHE_ERROR && r.errorCode === ERROR_CODE.OVERLOADED ? replyError(method, r) : null;
    if (refusal === null || !isConnectionRefusal(refusal)) this.markServed();
    else if (!this.served) this.refusal ??= refusal;
    if (p.state[slot] === SLOT_ABANDONED) {
      p.release(slot); // the late reply of a timed-out call
      this.health.succeeded();
      return;
    }
    const forward = p.forward[slot]!;
    const waiter = p.waiter[slot]!;
    p.release(slot);
    this.health.succeeded();
    const ok = r.outcome === REPLY_OK;
    const ping = this.settledPing(slot); // (cleared whatever the outcome: the slot is reused)
    if (!ok && !ping) this.health.counters.errors++;
    try {
      if (forward !== null) {
        if (ok) forward(null, r.buffer, r.valueStart, r.valueLength, r.ttlRemainingMs);
        else forward(replyError(method, r), null, 0, 0, -1);
      } else if (waiter !== null) {
        if (ok) waiter.resolve(buildResult(method, r));
        else waiter.reject(replyError(method, r));
      }
    } catch (e) {
      rethrowApart(e); // a callback's own bug: report it, but keep serving this connection
    }
  }

  /**
   * settledPing tells whether `slot` is the revival or a liveness ping's (now settled: its mark
   * cleared): neither is a call of the application's.
   */
  private settledPing(slot: number): boolean {
    if (slot === this.revivalSlot) this.revivalSlot = -1;
    else if (slot === this.livenessSlot) this.livenessSlot = -1;
    else return false;
    return true;
  }

  /** revivalOnly tells whether the revival ping is the only call on this connection. */
  private revivalOnly(): boolean {
    return this.revivalSlot >= 0 && this.pending.inFlight === 1;
  }

  private markServed(): void {
    this.served = true;
    this.dialer.backoffFailures = 0;
  }

  onDrain(socket: CallSocket): void {
    if (socket !== this.socket) return;
    this.waitingDrain = false;
    this.flush();
  }

  onClose(socket: CallSocket, id: number): void {
    if (socket === this.socket) this.lost(`connection to ${hostPort(this.endpoint.host, this.endpoint.port)} closed`);
    else if (this.socket === null) this.dialer.connectFailed(id, "closed during the TLS handshake"); // (ignored unless the current attempt)
  }

  /** drop closes the connection after a fault; its calls fail and the next call reconnects. */
  drop(reason: string, failure = true, countsTowardDown = true): void {
    const socket = this.socket;
    if (socket !== null) this.lost(reason, failure, countsTowardDown);
    socket?.end();
  }

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
   * `lateTicks` old (see the header). Returns whether
   * it abandoned any: the client counts one failure per sweep that did, however many calls and
   * connections (calls sent together time out together, and a burst of slow calls must not mark
   * down a peer that answered others in between).
   */
  sweep(tick: number, timeoutTicks: number, lateTicks = 0, peerAlive = false): boolean {
    const p = this.pending;
    let error: CacheError | null = null;
    let counted = false; // a call of the application that was sent timed out (not only a ping of the client's)
    let revival = false; // the revival ping timed out
    // Not open: nothing queued on this connection has been written (a lost connection failed
    // what it had sent), so its output holds one frame per call in flight, in issue order. A call
    // timing out there is taken out, never to be sent: told it failed, it must not be applied later.
    const unsent = this.state !== CONN_OPEN;
    let timedOut: TimedOut | null = null;
    const alive = lateTicks > timeoutTicks && (this.quietTicks <= timeoutTicks || (peerAlive && this.mayBeHeld()));
    const mayWait = !unsent && alive;
    while (p.head >= 0 && tick - p.issuedAt[p.head]! > timeoutTicks) {
      const slot = p.head;
      if (mayWait && MAY_LOAD.has(p.method[slot]!) && tick - p.issuedAt[slot]! <= lateTicks) {
        p.lateWait(slot);
        continue;
      }
      error ??= unavailable(`timeout calling ${hostPort(this.endpoint.host, this.endpoint.port)}`);
      if (slot === this.revivalSlot) revival = true;
      if (this.timeOut(slot, unsent, (timedOut ??= newTimedOut()))) counted = true;
    }
    while (p.lateHead >= 0 && (!alive || tick - p.issuedAt[p.lateHead]! > lateTicks)) {
      error ??= unavailable(`timeout calling ${hostPort(this.endpoint.host, this.endpoint.port)}`);
      if (this.timeOut(p.lateHead, false, (timedOut ??= newTimedOut()))) counted = true;
    }
    // The unsent frames of the calls timed out, all at the head of the output, go in one cut (one
    // at a time, each cut moved everything queued behind it: 40,000 calls queued on a connecting
    // peer stalled the loop 2.6 s). Then their callers are told, once nothing is left half done.
    if (timedOut !== null) {
      if (timedOut.cut > 0) this.calls.out.consume(timedOut.cut);
      for (let i = 0; i < timedOut.forwards.length; i++) settleError(timedOut.forwards[i]!, timedOut.waiters[i]!, error!);
    }
    const sentOut = error !== null && !unsent; // calls sent on this connection timed out
    if (p.abandoned >= MAX_ABANDONED) this.drop("too many unanswered calls");
    else if (sentOut && revival && !counted) this.drop("no reply to the revival ping within the timeout", true, false); // backs off more
    // Calls (or a liveness ping) timed out and nothing at all came back on this connection for a
    // whole timeout: it is dead, or held by a slow call at its head (a node answers in order all
    // but PeerGet and PeerGetMulti; other connections to the peer may be fine, so the peer need
    // not be marked down). The client replaces it (`quiet`: CacheClient.replace). Not a failure of
    // its own: the client's sweep counts one already when calls of the application timed out.
    else if (sentOut && this.quietTicks > timeoutTicks) this.quiet = true;
    return counted;
  }

  /**
   * timeOut times out the waiting or late call `slot`: its frame is added to `t.cut` when
   * `unsent` (the output is cut once the sweep has them all), else it is abandoned (its late reply
   * will be dropped); its caller goes to `t`, to be told after. Returns whether it counts as a
   * timeout of a sent call of the application's (not a ping of the client's own: `settledPing`).
   */
  private timeOut(slot: number, unsent: boolean, t: TimedOut): boolean {
    const p = this.pending;
    t.forwards.push(p.forward[slot]!);
    t.waiters.push(p.waiter[slot]!);
    if (unsent) {
      t.cut += 4 + readI32(this.calls.out.buffer, t.cut);
      p.release(slot);
    } else p.abandon(slot);
    const counted = !this.settledPing(slot);
    if (counted) {
      this.health.counters.timeouts++;
      this.health.counters.errors++;
    }
    return counted && !unsent;
  }

  /** lost handles the end of a socket or connect attempt (Dialer.connectFailed): fail every call, back off, go IDLE. */
  lost(reason: string, failure = true, countsTowardDown = true): void {
    this.socket = null;
    this.waitingDrain = false;
    for (const w of this.closedWaiters.splice(0)) w();
    if (this.state === CONN_CLOSED) return;
    // A failure of the peer: a connect that did not succeed, or a connection lost with calls on
    // it. A connection closed before it served anything is not one, but the next connect backs
    // off all the same; when the peer said why (a node at its connection limit answers the first
    // call OVERLOADED and closes), the calls still on it get that answer. An open connection that
    // served calls and that the peer then closed while idle (its idle timeout) is neither: the
    // next call reconnects at once.
    const open = this.state === CONN_OPEN;
    const refused = failure && open && !this.served;
    const refusal = refused ? this.refusal : null;
    this.refusal = refusal; // kept while backing off (refusedNow); gone once a failure replaces it
    const failed = failure && refusal === null && (!open || this.pending.inFlight > 0);
    this.state = CONN_IDLE;
    if (failed || refused) {
      this.dialer.backOff();
      if (failed && countsTowardDown && !this.revivalOnly()) this.health.failed(reason);
    } else {
      // Not a failure: the next call reconnects at once.
      this.dialer.clearBackoff();
    }
    this.failAll(refusal ?? unavailable(reason));
    // Calls issued by the callbacks above are queued for a new connection.
    if (this.pending.inFlight > 0) this.kick();
  }

  /**
   * failAll fails every call in flight with `error` and empties the output buffer. Calls issued
   * by the callbacks it runs are kept (they are queued after the snapshot).
   */
  private failAll(error: CacheError): void {
    const p = this.pending;
    this.calls.out.reset();
    if (p.abandoned > 0) {
      for (let s = 0; s < p.slotCount; s++) if (p.state[s] === SLOT_ABANDONED) p.release(s);
    }
    // The calls in flight now: the WAITING ones up to `last`, and every LATE one (a callback never
    // adds to those). Calls the callbacks make are queued after them, for a new connection.
    const last = p.tail;
    while (p.lateHead >= 0) {
      const slot = p.lateHead;
      const forward = p.forward[slot]!;
      const waiter = p.waiter[slot]!;
      p.release(slot);
      this.health.counters.errors++;
      settleError(forward, waiter, error);
    }
    while (last >= 0 && p.head >= 0) {
      const slot = p.head;
      const forward = p.forward[slot]!;
      const waiter = p.waiter[slot]!;
      p.release(slot);
      if (!this.settledPing(slot)) this.health.counters.errors++;
      settleError(forward, waiter, error);
      if (slot === last) break;
    }
  }

  /** close fails every call with PEER_UNAVAILABLE "client closed" and ends the socket. */
  close(): Promise<void> {
    const socket = this.socket;
    this.state = CONN_CLOSED;
    this.dialer.close();
    this.failAll(unavailable("client closed"));
    if (socket === null) return Promise.resolve();
    const closed = new Promise<void>((resolve) => {
      this.closedWaiters.push(resolve);
      setTimeout(resolve, 250).unref(); // a peer that never acknowledges the close
    });
    socket.end();
    return closed;
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

/** isConnectionRefusal tells whether `e` is a node's refusal of a connection over its limit. */
function isConnectionRefusal(e: CacheError): boolean {
  return e.code === ERROR_CODE.OVERLOADED && e.message === TOO_MANY_CONNECTIONS;
}
