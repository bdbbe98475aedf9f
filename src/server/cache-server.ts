/**
 * CacheServer is the Thrift TCP port of a node: `Bun.listen` with one shared handler set.
 *
 * Per `data` event: the chunk goes to the connection's frame reader; every complete request in it
 * is decoded and dispatched; all replies produced by the event go out in ONE `socket.write`. A
 * short write keeps the unsent tail in the connection's output buffer and `drain` sends it.
 *
 * Flow control: when a connection's queued output passes `maxOutputBytes` (a client pipelining
 * faster than it reads), the server stops decoding that connection's input, pauses reading from
 * the socket, and resumes both on `drain` once the output is below the bound. So a client that
 * never reads its replies holds at most the bound plus one reply, and never more input than the
 * kernel buffers.
 *
 * A request whose reply waits for a loader (a miss in a read-through group) parks its connection:
 * the replies before it are flushed, reading pauses, and serving resumes in order when the load
 * settles. Other connections are not held up.
 *
 * Faults are contained to their connection: a protocol error gets a TApplicationException reply
 * where one can be addressed, then the connection closes with a logged reason; an unexpected
 * exception (a bug) is logged, answered INTERNAL_ERROR and closes only that connection.
 *
 * Connections past `maxConnections` are accepted only to be answered: their first request gets
 * `CacheError OVERLOADED`, then they close (a silent close looks like a network fault to clients).
 * Active expiry runs on a timer: each tick removes at most `expiryBudget` due items per group.
 */
import type { Socket, TCPSocketListener } from "bun";
import type { Cluster } from "../cluster/cluster.ts";
import type { Groups } from "../cluster/group.ts";
import { APP_ERROR, ERROR_CODE, ProtocolError } from "../protocol/errors.ts";
import type { ProtocolLimits } from "../protocol/limits.ts";
import { Connection } from "./connection.ts";
import { dispatch, type DispatchContext } from "./dispatch.ts";
import { replyCacheError } from "./reply-errors.ts";
import type { Logger } from "./log.ts";

export interface ServerOptions {
  host: string;
  port: number;
  maxConnections: number;
  /** maxOutputBytes bounds one connection's queued replies before its input is paused. */
  maxOutputBytes: number;
  limits: ProtocolLimits;
  expiryIntervalMs: number;
  expiryBudget: number;
  /** drainTimeoutMs bounds how long close() waits for connections to flush. */
  drainTimeoutMs: number;
  clock: () => number;
  logger: Logger;
  /** cluster returns the node's cluster once it exists (it needs the listening port first). */
  cluster?: () => Cluster | undefined;
}

/** ServerCounters are the port's running totals, a plain struct of numbers. */
export class ServerCounters {
  connectionsCurrent = 0; // open connections
  connectionsTotal = 0; // connections accepted since start
  connectionsRejected = 0; // connections past maxConnections
  requests = 0; // requests decoded (all methods)
  protocolErrors = 0; // connections closed for malformed input
  internalErrors = 0; // unexpected exceptions contained to a connection
  bytesIn = 0; // bytes received
  bytesOut = 0; // bytes written
  pauses = 0; // times a connection's input was paused for output backpressure
}

export class CacheServer implements DispatchContext {
  readonly groups: Groups;
  readonly clock: () => number;
  readonly startedAt: number;
  readonly counters = new ServerCounters();
  readonly host: string;
  readonly port: number;
  private readonly opts: ServerOptions;
  private readonly listener: TCPSocketListener<Connection>;
  private readonly connections = new Set<Connection>();
  private readonly expiryTimer: ReturnType<typeof setInterval>;
  private nextId = 1;
  private closed: Promise<void> | null = null;
  private allClosed: (() => void) | null = null;

  constructor(groups: Groups, opts: ServerOptions) {
    this.groups = groups;
    this.opts = opts;
    this.clock = opts.clock;
    this.startedAt = opts.clock();
    const server = this;
    this.listener = Bun.listen<Connection>({
      hostname: opts.host,
      port: opts.port,
      socket: {
        binaryType: "uint8array",
        open(socket) {
          server.onOpen(socket);
        },
        data(socket, chunk) {
          server.onData(socket.data, chunk);
        },
        drain(socket) {
          server.onDrain(socket.data);
        },
        close(socket) {
          server.onClose(socket.data);
        },
        error(socket, error) {
          opts.logger.debug("socket error", { conn: socket.data?.id, error: error.message });
        },
        timeout(socket) {
          socket.end();
        },
      },
    });
    this.host = opts.host;
    this.port = this.listener.port;
    this.expiryTimer = setInterval(() => this.expireTick(), opts.expiryIntervalMs);
  }

  /** cluster is the node's cluster, if it has peers. */
  get cluster(): Cluster | undefined {
    return this.opts.cluster?.();
  }

  /** nodeId is this node's id in its cluster, or host:port. */
  get nodeId(): string {
    return this.cluster?.self ?? `${this.host}:${this.port}`;
  }

  /** connectionCount is the number of open connections. */
  get connectionCount(): number {
    return this.connections.size;
  }

  /**
   * close stops accepting, lets every connection flush the replies it owes, then closes them
   * (forcibly after `drainTimeoutMs`). Requests are served synchronously per data event, so once
   * output is flushed nothing is in flight.
   */
  close(): Promise<void> {
    if (this.closed) return this.closed;
    clearInterval(this.expiryTimer);
    this.listener.stop(false);
    this.closed = new Promise<void>((resolve) => {
      this.allClosed = resolve;
      if (this.connections.size === 0) return resolve();
      for (const conn of this.connections) {
        conn.closing = true;
        if (conn.queuedOutput === 0 && !conn.waiting) conn.socket.end();
      }
      setTimeout(() => {
        for (const conn of this.connections) conn.socket.terminate();
      }, this.opts.drainTimeoutMs).unref();
    });
    return this.closed;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private onOpen(socket: Socket<Connection>): void {
    const conn = new Connection(socket, this.nextId++, this.opts.limits);
    socket.data = conn;
    this.counters.connectionsTotal++;
    if (this.closed) {
      socket.end();
      return;
    }
    this.connections.add(conn);
    this.counters.connectionsCurrent = this.connections.size;
    if (this.connections.size > this.opts.maxConnections) {
      conn.rejected = true;
      this.counters.connectionsRejected++;
      socket.timeout(2);
      this.opts.logger.warn("connection over the limit: will answer OVERLOADED and close", {
        conn: conn.id, remote: conn.remote, max: this.opts.maxConnections,
      });
    }
  }

  private onData(conn: Connection, chunk: Uint8Array): void {
    conn.bytesIn += chunk.length;
    this.counters.bytesIn += chunk.length;
    if (conn.closing) return;
    if (conn.held || conn.waiting) {
      (conn.backlog ??= []).push(chunk);
      return;
    }
    conn.proto.push(chunk);
    this.process(conn);
  }

  private onDrain(conn: Connection): void {
    this.flush(conn);
    if (conn.held && !conn.waiting && conn.queuedOutput < this.opts.maxOutputBytes) this.process(conn);
  }

  private onClose(conn: Connection | undefined): void {
    if (conn === undefined || !this.connections.delete(conn)) return;
    this.counters.connectionsCurrent = this.connections.size;
    if (this.allClosed !== null && this.connections.size === 0) this.allClosed();
  }

  /** process decodes and serves requests until the input is used up or the output is full. */
  private process(conn: Connection): void {
    if (conn.closing) return this.flush(conn);
    const proto = conn.proto;
    const out = proto.reply.out;
    const max = this.opts.maxOutputBytes;
    let held = false;
    try {
      for (;;) {
        if (out.length >= max) {
          held = true;
          break;
        }
        if (!proto.nextRequest()) {
          const next = conn.backlog?.shift();
          if (next === undefined) break;
          proto.push(next);
          continue;
        }
        this.counters.requests++;
        conn.requests++;
        if (conn.rejected) {
          replyCacheError(proto.reply, proto.request, ERROR_CODE.OVERLOADED, "too many connections");
          conn.closing = true;
          break;
        }
        const pending = dispatch(this, proto.request, proto.reply);
        if (pending !== undefined) {
          this.park(conn, pending);
          held = true;
          break;
        }
      }
    } catch (e) {
      this.fault(conn, e);
    }
    this.setHeld(conn, held && !conn.closing);
    this.flush(conn);
  }

  /** park holds the connection until `pending` has written its reply, then serves on in order. */
  private park(conn: Connection, pending: Promise<void>): void {
    conn.waiting = true;
    pending
      .catch((e: unknown) => this.fault(conn, e))
      .finally(() => {
        conn.waiting = false;
        if (this.connections.has(conn)) this.process(conn);
      });
  }

  private fault(conn: Connection, e: unknown): void {
    const proto = conn.proto;
    const req = proto.request;
    conn.closing = true;
    conn.backlog = null;
    if (e instanceof ProtocolError) {
      this.counters.protocolErrors++;
      if (req.transport !== 0) proto.reply.writeApplicationException(req, e.type, e.message);
      this.opts.logger.info("closing connection: protocol error", { conn: conn.id, remote: conn.remote, error: e.message });
      return;
    }
    this.counters.internalErrors++;
    const message = e instanceof Error ? e.message : String(e);
    if (req.transport !== 0) proto.reply.writeApplicationException(req, APP_ERROR.INTERNAL_ERROR, "internal error");
    this.opts.logger.error("closing connection: internal error", {
      conn: conn.id, remote: conn.remote, error: message, stack: e instanceof Error ? e.stack : undefined,
    });
  }

  private setHeld(conn: Connection, held: boolean): void {
    conn.held = held;
    if (held && !conn.paused) {
      conn.paused = true;
      this.counters.pauses++;
      conn.socket.pause();
    } else if (!held && conn.paused) {
      conn.paused = false;
      conn.socket.resume();
    }
  }

  /** flush writes queued output once; the rest waits for `drain`. */
  private flush(conn: Connection): void {
    const out = conn.proto.reply.out;
    if (out.length > 0) {
      const n = conn.socket.write(out.buffer, 0, out.length);
      if (n > 0) {
        conn.bytesOut += n;
        this.counters.bytesOut += n;
        out.consume(n);
      }
    }
    if (out.length === 0 && conn.closing) conn.socket.end();
  }

  private expireTick(): void {
    const now = this.clock();
    for (const group of this.groups.all()) group.store.expire(now, this.opts.expiryBudget);
  }
}
