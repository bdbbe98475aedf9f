// Dialer: how a ClientConnection gets its socket: the connect attempts, their timeout and TLS
// handshake, and the backoff between them.
//
// A connection's `state` (CONN_*): IDLE (no socket) → CONNECTING → OPEN → IDLE again when the
// socket is lost; CLOSED for good after close(). The states are named here, beside the attempts
// that take a connection from IDLE to OPEN, so the connection's parts read them without
// importing the connection.
//
// Attempts: `dial` connects an IDLE connection at once, or once its backoff is over (`retryAt`,
// one unref'd timer, which connects if calls still wait then). Each attempt has an id, carried
// by its Bun socket (Attempt): an event of an attempt that is no longer the current one (it timed
// out or failed, or the connection closed) is stale, and its socket is ended. An attempt fails,
// with its reason, when Bun.connect rejects or throws, when `connectTimeoutMs` passes first
// (it covers a TLS handshake), when the socket closes during the TLS handshake, or when the
// handshake fails (the certificate's fault named); the connection then handles it as a lost
// socket (ClientConnection.lost). A TLS connection opens only once its handshake is done.
//
// Backoff: `backOff` counts one more failure in a row and puts the next attempt off by
// BACKOFF_BASE_MS, doubling per failure up to BACKOFF_MAX_MS; `clearBackoff` forgets them. Which
// events back off is refusals.ts' (judgeLoss); what a connection backing off does, the
// connection's (its header).

import type { Socket, SocketHandler } from "bun";
import { hostPort } from "../bytes/bytes.ts";
import { errorText } from "../protocol/errors.ts";
import type { ClientConnection } from "./client-connection.ts";
import type { Endpoint } from "./client-options.ts";

export const BACKOFF_BASE_MS = 20;
export const BACKOFF_MAX_MS = 1_000;

export const CONN_IDLE = 0;
export const CONN_CONNECTING = 1;
export const CONN_OPEN = 2;
export const CONN_CLOSED = 3;

/** Attempt ties a Bun socket to the connect attempt that made it (stale attempts are ignored). */
interface Attempt {
  conn: ClientConnection;
  id: number;
}

const HANDLERS: SocketHandler<Attempt> = {
  binaryType: "uint8array",
  open(socket) {
    socket.data.conn.dialer.onOpen(socket.data.id, socket);
  },
  data(socket, chunk: Uint8Array) {
    socket.data.conn.onData(socket, chunk);
  },
  drain(socket) {
    socket.data.conn.onDrain(socket);
  },
  close(socket) {
    socket.data.conn.onClose(socket, socket.data.id);
  },
  error() {
    // the close handler follows
  },
  handshake(socket, success, authorizationError) {
    socket.data.conn.dialer.onHandshake(socket.data.id, socket, success, authorizationError);
  },
};

export class Dialer {
  /** backoffFailures: the failures in a row the connection backs off from (0: it does not). */
  backoffFailures = 0;
  /** retryAt: when the next attempt may start (`performance.now()` time). */
  retryAt = 0;
  private attemptId = 0;
  /** handshaking is the TLS socket of the current attempt, open, its handshake not yet done. */
  private handshaking: Socket<Attempt> | null = null;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private connectTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    private readonly conn: ClientConnection,
    private readonly endpoint: Endpoint,
  ) {}

  /** dial connects the IDLE connection now, or once its backoff is over (if calls still wait then). */
  dial(): void {
    const wait = this.retryAt - performance.now();
    if (wait <= 0) this.connect();
    else if (this.retryTimer === null) {
      this.retryTimer = setTimeout(() => {
        this.retryTimer = null;
        if (this.conn.state === CONN_IDLE && this.conn.pending.inFlight > 0) this.connect();
      }, wait);
      this.retryTimer.unref();
    }
  }

  /** backOff counts a failure in a row and puts the next attempt off (see the header). */
  backOff(): void {
    this.backoffFailures++;
    this.retryAt = performance.now() + Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** (this.backoffFailures - 1));
  }

  /** clearBackoff forgets the failures: the next attempt starts at once. */
  clearBackoff(): void {
    this.backoffFailures = 0;
    this.retryAt = 0;
  }

  private connect(): void {
    if (this.retryTimer !== null) clearTimeout(this.retryTimer); // (armed for an earlier backoff)
    this.retryTimer = null;
    this.conn.state = CONN_CONNECTING;
    const attempt: Attempt = { conn: this.conn, id: ++this.attemptId };
    const { host, port, connectTimeoutMs } = this.endpoint;
    this.connectTimer = setTimeout(() => this.connectFailed(attempt.id, "connect timeout"), connectTimeoutMs);
    this.connectTimer.unref();
    const tls = this.endpoint.tls;
    const options = { hostname: host, port, data: attempt, socket: HANDLERS };
    const failed = (e: unknown): void => this.connectFailed(attempt.id, errorText(e));
    try {
      (tls === undefined || tls === false ? Bun.connect<Attempt>(options) : Bun.connect<Attempt>({ ...options, tls })).catch(failed);
    } catch (e) {
      // Bun.connect throws at once for some addresses (a port out of range, say): fail like a
      // refused connection, after the call that asked for it has its promise.
      queueMicrotask(() => failed(e));
    }
  }

  onOpen(id: number, socket: Socket<Attempt>): void {
    if (!this.isCurrentAttempt(id)) {
      socket.end(); // a stale attempt (timed out, or the client closed)
      return;
    }
    const tls = this.endpoint.tls;
    if (tls !== undefined && tls !== false) {
      this.handshaking = socket; // open once the TLS handshake is done (onHandshake)
      return;
    }
    this.clearConnectTimer();
    this.conn.attach(socket);
  }

  /**
   * onHandshake opens a TLS connection once its handshake is done (the connect timeout covers it):
   * until then the socket takes no bytes, and the Auth call must go whole. A certificate the
   * client refuses (an unknown CA, a name it does not cover, expired) fails the attempt with the
   * reason, as a refused connect does; the close that follows would only say "closed".
   */
  onHandshake(id: number, socket: Socket<Attempt>, success: boolean, err: Error | null): void {
    if (!this.isCurrentAttempt(id)) {
      socket.end(); // stale: timed out, or the client closed, during the handshake
      return;
    }
    if (success) {
      this.handshaking = null;
      this.clearConnectTimer();
      this.conn.attach(socket);
      return;
    }
    const code = (err as { code?: unknown } | null)?.code;
    const why = err === null ? "certificate not authorized" : typeof code === "string" ? `${err.message} (${code})` : err.message;
    this.connectFailed(id, `TLS handshake failed: ${why}`); // (ends the socket: endHandshake)
  }

  /** isCurrentAttempt tells whether `id` is the connect attempt the connection still waits for. */
  private isCurrentAttempt(id: number): boolean {
    return id === this.attemptId && this.conn.state === CONN_CONNECTING;
  }

  /** connectFailed ends the attempt `id`, if still the current one, as a lost socket with `reason`. */
  connectFailed(id: number, reason: string): void {
    if (!this.isCurrentAttempt(id)) return;
    this.clearConnectTimer();
    this.attemptId++; // a late open of this attempt is stale
    this.endHandshake();
    this.conn.lost(`connect to ${hostPort(this.endpoint.host, this.endpoint.port)} failed: ${reason}`);
  }

  /** close stops dialing for good: no timer left, the current attempt stale, a TLS handshake ended. */
  close(): void {
    this.clearConnectTimer();
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.attemptId++;
    this.endHandshake();
  }

  private clearConnectTimer(): void {
    if (this.connectTimer !== null) clearTimeout(this.connectTimer);
    this.connectTimer = null;
  }

  /** endHandshake ends the socket of an attempt given up during its TLS handshake. */
  private endHandshake(): void {
    const socket = this.handshaking;
    this.handshaking = null;
    socket?.end();
  }
}
