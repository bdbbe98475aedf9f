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
// Backoff: after a failed connect, a lost connection, or one the node refused (refusals.ts says
// how a refusal is told, and which ends of a socket are which) the next attempt waits, longer per
// failure in a row (the Dialer's); a reply the node serves resets it. A connection backing off is
// not `usable` (the client gives its calls to the others) until it has served a reply again, or
// the node has taken its new socket (answered its Auth or intro PeerPing: `taken`): once its
// backoff has passed, the client's next call also sends a PeerPing on it (`revive`, PeerPings),
// so it reconnects without risking a call of the application. A revival that fails only backs off
// more: it is not counted toward marking the peer down, nor as an error (down detection is the
// application's calls' and the down-peer probe's).
//
// Its parts: the Dialer (dialer.ts) makes the connect attempts and keeps the backoff; FirstCalls
// (first-calls.ts) sends the Auth and intro PeerPing each new socket starts with, and reads their
// replies; CallTimeouts (call-timeouts.ts) times out the calls, and keeps the late waits of
// PeerGets that load, at each of the client's sweeps; refusals.ts tells the node's refusal of the
// connection and judges the end of its socket (back off or not, count the peer down or not);
// failAll (fail-all.ts) fails every call on it at once, when its socket is lost, when the node
// refuses it, and at close().

import { BinaryWriter, KEEP_OUTPUT_BYTES } from "../protocol/binary-writer.ts";
import { CallWriter } from "../protocol/call-writer.ts";
import { hostPort } from "../bytes/bytes.ts";
import { CacheError, ERROR_CODE, ProtocolError, protocolError } from "../protocol/errors.ts";
import { FrameReader } from "../protocol/frame-reader.ts";
import { REPLY_OK, ReplyReader } from "../protocol/reply-reader.ts";
import { METHOD_PEER_PING } from "../protocol/request.ts";
import { MESSAGE_EXCEPTION, TRANSPORT_FRAMED } from "../protocol/wire.ts";
import { type ForwardCallback, PendingCalls, SLOT_ABANDONED, type Waiter } from "./pending-calls.ts";
import type { Endpoint } from "./client-options.ts";
import type { PeerHealth } from "./peer-health.ts";
import { strayException, unavailable } from "./results.ts";
import { report, settleReply } from "./callbacks.ts";
import { failAll } from "./fail-all.ts";
import { callRefused, firstCallFailed, judgeLoss } from "./refusals.ts";
import { CONN_CLOSED, CONN_IDLE, CONN_OPEN, Dialer } from "./dialer.ts";
import { CallTimeouts } from "./call-timeouts.ts";
import { FirstCalls, isFirstCall } from "./first-calls.ts";

/** Most bytes queued for one connection before calls are refused with OVERLOADED. */
export const MAX_QUEUED_BYTES = 64 * 1024 * 1024;

/** The socket calls a connection needs (a Bun socket; tests may attach a fake one). */
export interface CallSocket {
  write(data: Uint8Array, byteOffset: number, byteLength: number): number;
  end(): void;
}

export class ClientConnection {
  readonly calls = new CallWriter(new BinaryWriter(4096));
  readonly pending = new PendingCalls();
  state = CONN_IDLE;
  /** dialer makes the connect attempts and keeps the backoff between them (dialer.ts). */
  readonly dialer: Dialer;
  /** timeouts times out this connection's calls at the client's sweeps, and tells how quiet it is (call-timeouts.ts). */
  readonly timeouts: CallTimeouts;
  /** first sends the Auth and intro PeerPing that open each socket, and reads their replies (first-calls.ts). */
  private readonly first: FirstCalls;
  private readonly replies: ReplyReader;
  private frames: FrameReader;
  private socket: CallSocket | null = null;
  private flushQueued = false;
  private waitingDrain = false;
  private readonly flushNow = (): void => this.flush();
  private opens = 0;
  private closedWaiters: (() => void)[] = [];
  /**
   * served: this connection, since it opened, answered a call other than its Auth and intro
   * PeerPing (a revival ping counts) with something other than the node's refusal of it
   * (`refusal`). A close without it (a node at its connection limit answers OVERLOADED and
   * closes) is a failure to back off from, even with no call in flight (refusals.ts).
   */
  served = false;
  /** revivalSlot: the slot of this connection's revival ping while it is in flight (`revive`; read by CallTimeouts.sweep), else -1. */
  revivalSlot = -1;
  /**
   * refusal: the connection-limit OVERLOADED, or the UNAUTHORIZED of a wrong token, this
   * connection got before it served anything, if any: the node's refusal of it, told by where it
   * stands, not by its text (refusals.ts).
   */
  refusal: CacheError | null = null;
  /**
   * taken: the node answered this socket's Auth or intro PeerPing without refusing it: it took the
   * connection, which is `usable` though no call was served on it yet (a node may hold the first
   * calls behind their loads). It is a reply as any other for the
   * connection's quiet, but not `served`: lost before serving a call, the connection still backs
   * off longer (a node that takes connections and drops them at the first call is not reconnected
   * to at once each time). Before, it was usable again only once a call was answered, and a node's
   * peer client sent its reads over the write connection meanwhile. Nor does it reset the peer's
   * failures in a row (PeerHealth.answered).
   */
  taken = false;
  /** answered: a reply, of any kind (first calls included), came on this socket. */
  private answered = false;

  constructor(
    private readonly endpoint: Endpoint,
    readonly health: PeerHealth,
  ) {
    this.replies = new ReplyReader(endpoint.limits);
    this.frames = new FrameReader(endpoint.limits);
    this.dialer = new Dialer(this, endpoint);
    this.timeouts = new CallTimeouts(this, endpoint, health);
    this.first = new FirstCalls(this, endpoint);
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
   * endCall finishes the call of `slot`, records where its outcome goes (and its length and
   * `loadWaits`: PendingCalls'), and gets it sent.
   * Returns null, or the error when the call is larger than the frame limit (it is dropped).
   */
  endCall(slot: number, forward: ForwardCallback | null, waiter: Waiter | null, loadWaits = 1): CacheError | null {
    const bytes = this.calls.end(this.endpoint.limits.maxFrameBytes);
    if (bytes < 0) { // dropped: not sent
      this.pending.release(slot);
      return new CacheError(ERROR_CODE.VALUE_TOO_LARGE, "call larger than the frame limit");
    }
    this.pending.bytes[slot] = bytes;
    this.pending.forward[slot] = forward;
    this.pending.waiter[slot] = waiter;
    this.pending.entries[slot] = this.calls.listed;
    this.pending.loadWaits[slot] = loadWaits;
    this.timeouts.queue(slot); // (behind the calls the node may serve in order: call-timeouts.ts)
    this.kick();
    return null;
  }

  /** abortCall drops a call whose encoding failed. */
  abortCall(slot: number): void {
    this.calls.abort();
    this.pending.release(slot);
  }

  /** attach adopts an already connected socket (tests; a connect attempt's comes from Dialer.onOpen). */
  attach(socket: CallSocket): void {
    this.socket = socket;
    this.state = CONN_OPEN;
    this.served = false;
    this.taken = false;
    this.answered = false;
    this.refusal = null;
    this.frames = new FrameReader(this.endpoint.limits);
    if (this.opens++ > 0) this.health.counters.reconnects++;
    this.first.send(socket);
    this.flush();
  }

  /**
   * usable is false while the connection is backing off after a failure or a refusal: pick
   * another one. It is usable again once it has served a reply (see the header: `revive`), or the
   * node has taken its new socket (`taken`).
   */
  get usable(): boolean {
    return this.dialer.backoffFailures === 0 || this.taken;
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
    const first = !this.answered; // (the node's refusal of the connection is its first reply: `refusal`)
    this.answered = true;
    if (isFirstCall(r.seqid)) {
      const e = this.first.onReply(r); // (the Auth or intro PeerPing: first-calls.ts)
      if (e !== null) firstCallFailed(this, e, first); // (the node's refusal of the connection, or another error: refusals.ts)
      else this.tookConnection();
      return;
    }
    const slot = p.find(r.seqid);
    if (slot < 0) {
      if (r.messageType === MESSAGE_EXCEPTION && r.nameLength === 0) {
        r.readResult(METHOD_PEER_PING); // (an exception without a name reads alike for any method)
        throw protocolError(strayException(r));
      }
      throw protocolError(`reply to seqid ${r.seqid}, which is not in flight`);
    }
    this.timeouts.replied = true;
    const method = p.method[slot]!;
    r.readResult(method, p.entries[slot]!);
    // With no first call sent, the node's refusal of the connection is its first reply, with its
    // text (`callRefused`, refusals.ts); any other reply is the node serving the connection.
    if (!first || !callRefused(this, method, r)) this.markServed();
    if (p.state[slot] === SLOT_ABANDONED) {
      p.release(slot); // the late reply of a timed-out call
      this.health.succeeded();
      return;
    }
    const forward = p.forward[slot]!;
    const waiter = p.waiter[slot]!;
    const ping = this.settledPing(slot); // (cleared whatever the outcome: the slot is reused)
    p.release(slot);
    if (ping) this.health.answered(); // (a call of the client's own serves nothing: PeerHealth)
    else this.health.succeeded();
    const ok = r.outcome === REPLY_OK;
    if (!ok && !ping) this.health.counters.errors++;
    settleReply(forward, waiter, method, r, ok);
  }

  /**
   * settledPing tells whether `slot` is the revival or a liveness ping's (now settled: its mark
   * cleared): neither is a call of the application's.
   */
  settledPing(slot: number): boolean {
    if (slot === this.revivalSlot) this.revivalSlot = -1;
    else if (slot === this.timeouts.livenessSlot) this.timeouts.livenessSlot = -1;
    else return false;
    return true;
  }

  /**
   * tookConnection: the node answered a first call of this socket, taking it (`taken`). A reply
   * for the connection's quiet, but not a call served: the failures in a row stand (PeerHealth).
   */
  private tookConnection(): void {
    this.taken = true;
    this.timeouts.replied = true;
    this.health.answered();
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

  /** lost handles the end of a socket or connect attempt (Dialer.connectFailed): fail every call, back off, go IDLE. */
  lost(reason: string, failure = true, countsTowardDown = true): void {
    this.socket = null;
    this.waitingDrain = false;
    this.taken = false;
    for (const w of this.closedWaiters.splice(0)) w();
    if (this.state === CONN_CLOSED) return;
    // A failure of the peer, the node's refusal, or neither: what that means for the backoff,
    // the peer's health and the calls' error is refusals.ts' (judgeLoss).
    const open = this.state === CONN_OPEN;
    this.state = CONN_IDLE;
    failAll(this, judgeLoss(this, open, reason, failure, countsTowardDown));
    // Calls issued by the callbacks above are queued for a new connection.
    if (this.pending.inFlight > 0) this.kick();
  }

  /** close fails every call with PEER_UNAVAILABLE "client closed" and ends the socket. */
  close(): Promise<void> {
    const socket = this.socket;
    this.state = CONN_CLOSED;
    this.dialer.close();
    failAll(this, unavailable("client closed"));
    if (socket === null) return Promise.resolve();
    const closed = new Promise<void>((resolve) => {
      this.closedWaiters.push(resolve);
      setTimeout(resolve, 250).unref(); // a peer that never acknowledges the close
    });
    socket.end();
    return closed;
  }
}
