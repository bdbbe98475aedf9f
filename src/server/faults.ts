/**
 * Faults is how the Thrift port ends a connection that fails: a protocol error, a bug, a missing
 * or wrong auth token.
 *
 * Faults are contained to their connection: a protocol error gets a TApplicationException reply
 * where one can be addressed, then the connection closes with a logged reason; an unexpected
 * exception (a bug) is logged, answered INTERNAL_ERROR and closes only that connection. On a node
 * with an auth token, a connection's first call must be Auth with that token (`authenticate`);
 * anything else is answered UNAUTHORIZED and closes it, and one that has sent no Auth AUTH_MS after
 * it opened is closed (`unauthenticated`), as is one whose first call is already larger than any
 * Auth call. Refusals, and failed TLS handshakes, are logged REFUSAL_LOG_LINES a second at most,
 * so a flood of garbage connections does not flood the log too.
 */
import { APP_ERROR, ERROR_CODE, ProtocolError, errorText } from "../protocol/errors.ts";
import { METHOD_AUTH } from "../protocol/request.ts";
import type { Connection } from "./connection.ts";
import type { ServerOptions } from "./server-options.ts";
import type { ServerCounters } from "./server-counters.ts";
import type { LatencyHistogram } from "./latency.ts";
import { replyFor } from "./dispatch.ts";
import { replyCacheError } from "./reply-errors.ts";
import { LogBudget, linesLeftOut } from "./log.ts";

/** REFUSAL_LOG_LINES: connections closed for bad input or a wrong token, logged per second at most. */
const REFUSAL_LOG_LINES = 10;

export class Faults {
  private readonly counters: ServerCounters;
  private readonly latency: LatencyHistogram;
  private readonly opts: ServerOptions;
  /**
   * refusalLog: connections closed for bad input or a wrong token are logged REFUSAL_LOG_LINES a
   * second at most (300 garbage connections made 300 lines), the next line saying how many were not.
   */
  private readonly refusalLog = new LogBudget(REFUSAL_LOG_LINES);

  constructor(counters: ServerCounters, latency: LatencyHistogram, opts: ServerOptions) {
    this.counters = counters;
    this.latency = latency;
    this.opts = opts;
  }

  /** internalError closes a connection after a bug outside `process` (as `fault` does inside it). */
  internalError(conn: Connection, e: unknown): void {
    conn.sharedStart = -1;
    this.counters.internalErrors++;
    this.opts.logger.error("closing connection: internal error", {
      conn: conn.id, remote: conn.remote, error: errorText(e),
    });
    conn.socket.terminate();
  }

  /**
   * authenticate answers an Auth call (or any call on a connection not yet authenticated): the
   * right token opens the connection; anything else is UNAUTHORIZED and closes it.
   */
  authenticate(conn: Connection): boolean {
    const proto = conn.proto;
    const req = proto.request;
    const reply = replyFor(req, proto.reply);
    const access = this.opts.access;
    if (req.method === METHOD_AUTH && (access === undefined || access.accepts(req.buffer, req.valueStart, req.valueLength))) {
      conn.authed = true;
      if (conn.authTimer !== undefined) clearTimeout(conn.authTimer);
      conn.authTimer = undefined;
      reply.writeSuccess(req, true);
      return true;
    }
    this.counters.unauthorized++;
    const why = req.method === METHOD_AUTH ? "wrong auth token" : "authenticate first (Auth)";
    replyCacheError(reply, req, ERROR_CODE.UNAUTHORIZED, why);
    conn.closing = true;
    const held = this.refusalLog.take(performance.now());
    if (held >= 0) this.opts.logger.warn("closing connection: unauthorized", { conn: conn.id, remote: conn.remote, reason: why, ...linesLeftOut(held) });
    return false;
  }

  /**
   * unauthenticated closes a connection that has not authenticated and sent nothing to answer:
   * no Auth in time (AUTH_MS after it opened: ConnectionLifecycle.onOpen), or a first call already
   * larger than any Auth call (PRE_AUTH_BYTES: CacheServer). It is counted and logged as a
   * connection refused for a missing token. `now` ends it at once (outside `process`); else it
   * ends as `process` flushes it.
   */
  unauthenticated(conn: Connection, reason: string, now: boolean): void {
    this.counters.unauthorized++;
    conn.closing = true;
    conn.dropBacklog();
    const held = this.refusalLog.take(performance.now());
    if (held >= 0) this.opts.logger.warn("closing connection: unauthorized", { conn: conn.id, remote: conn.remote, reason, ...linesLeftOut(held) });
    if (now) conn.socket.terminate();
  }

  /**
   * handshakeFailed logs a TLS handshake that failed (the socket closes by itself): OpenSSL's
   * reason, with a hint when it is what a client without TLS gets (WRONG_VERSION_NUMBER,
   * HTTP_REQUEST).
   */
  handshakeFailed(conn: Connection, error: Error): void {
    const held = this.refusalLog.take(performance.now());
    if (held < 0) return;
    const reason = error.message.replace(/^error:[0-9a-f]+:SSL routines:[A-Za-z_]*:/, "");
    const plaintext = /WRONG_VERSION_NUMBER|HTTP_REQUEST|PACKET_LENGTH_TOO_LONG/.test(reason);
    this.opts.logger.info("closing connection: TLS handshake failed", {
      conn: conn.id, remote: conn.remote, reason, ...(plaintext ? { hint: "a client without TLS?" } : {}), ...linesLeftOut(held),
    });
  }

  /** fault ends a connection after an error serving `req` (its reply, if one can go, to `reply`). */
  fault(conn: Connection, e: unknown, req = conn.proto.request, reply = conn.proto.reply): void {
    conn.closing = true;
    reply.dropUnfinished(); // (a reply thrown out of half-written: what follows must not join it)
    conn.dropBacklog();
    if (e instanceof ProtocolError) {
      this.counters.protocolErrors++;
      this.latency.recordProtocolError(e.type);
      // (addressed to the call when its seqid, or its header's, could be read; else to seqid 0)
      if (req.transport !== 0) reply.writeApplicationException(req, e.type, e.message);
      const held = this.refusalLog.take(performance.now());
      if (held >= 0) this.opts.logger.info("closing connection: protocol error", { conn: conn.id, remote: conn.remote, error: e.message, ...linesLeftOut(held) });
      return;
    }
    this.counters.internalErrors++;
    const message = errorText(e);
    if (req.transport !== 0) reply.writeApplicationException(req, APP_ERROR.INTERNAL_ERROR, "internal error");
    this.opts.logger.error("closing connection: internal error", {
      conn: conn.id, remote: conn.remote, error: message, stack: e instanceof Error ? e.stack : undefined,
    });
  }
}
