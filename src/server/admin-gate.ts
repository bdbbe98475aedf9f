/**
 * AdminGate is the admin port's TCP listener: it caps the admin connections open at once, and
 * passes the bytes of each one it lets in to the admin HTTP server (`Bun.serve`, which has no
 * connection cap of its own) on a Unix socket in a directory only this user can enter.
 *
 * Why: idle admin connections cost a file descriptor each and nothing bounded them. A review
 * held 4,500 under `ulimit -n 4000`: the Thrift port could not accept, the node spun on EMFILE,
 * and the final snapshot failed. Past `maxConnections` a connection is answered
 * `503 Service Unavailable` and closed at once, so it holds nothing. Each connection let in takes
 * three descriptors (the client's, and both ends of the Unix socket): FD_RESERVE counts them.
 *
 * Bytes go through as they come, both ways. What one side has not taken yet waits in a bounded
 * buffer: past MAX_PENDING_BYTES (a client sending far more than any admin request, or not reading
 * a reply) the connection is closed. Either side closing closes the other.
 */
import type { Socket, TCPSocketListener } from "bun";
import type { Logger } from "./log.ts";

/** ADMIN_MAX_CONNECTIONS: the admin connections open at once (scrapes and probes are short). */
export const ADMIN_MAX_CONNECTIONS = 16;
/** REFUSAL_LOG_MS: refusals past the cap are logged at most this often. */
const REFUSAL_LOG_MS = 10_000;
/** MAX_PENDING_BYTES bounds what waits for one side of a connection to take it. */
const MAX_PENDING_BYTES = 8 * 1024 * 1024;
const BUSY = new TextEncoder().encode(
  "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 29\r\nconnection: close\r\n\r\ntoo many admin connections\r\n\r\n",
);

/** Pipe is one admin connection: the client's socket and the one to the HTTP server. */
interface Pipe {
  client: Socket<Pipe>;
  upstream: Socket<Pipe> | undefined;
  /** toUpstream / toClient: bytes waiting for that side (the upstream while it connects, or a short write). */
  toUpstream: Uint8Array[];
  toClient: Uint8Array[];
  toUpstreamBytes: number;
  toClientBytes: number;
  /** upstreamGone: the HTTP server closed its side; the client's connection ends once `toClient` is written. */
  upstreamGone: boolean;
  closed: boolean;
}

export class AdminGate {
  readonly port: number;
  /** refused counts connections answered 503 past the cap. */
  refused = 0;
  private open = 0;
  private refusedLoggedAt = -Infinity;
  private readonly listener: TCPSocketListener<Pipe>;
  private readonly pipes = new Set<Pipe>();

  constructor(host: string, port: number, private readonly upstreamPath: string, private readonly logger: Logger, private readonly maxConnections = ADMIN_MAX_CONNECTIONS) {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const gate = this;
    this.listener = Bun.listen<Pipe>({
      hostname: host,
      port,
      socket: {
        open(socket) {
          gate.accept(socket);
        },
        data(socket, chunk) {
          const p = socket.data;
          if (p !== undefined && !p.closed) gate.send(p, "up", chunk);
        },
        drain(socket) {
          const p = socket.data;
          if (p !== undefined && !p.closed) gate.flush(p, "down");
        },
        close(socket) {
          if (socket.data !== undefined) gate.end(socket.data);
        },
        error() {
          // (the close handler follows)
        },
      },
    });
    this.port = this.listener.port;
  }

  /** connections is the admin connections open now. */
  get connections(): number {
    return this.open;
  }

  /** close stops listening and closes every connection. */
  close(): void {
    this.listener.stop(true);
    for (const p of [...this.pipes]) this.end(p);
  }

  private accept(client: Socket<Pipe>): void {
    if (this.open >= this.maxConnections) {
      this.refused++;
      const now = Date.now();
      if (now - this.refusedLoggedAt >= REFUSAL_LOG_MS) {
        this.refusedLoggedAt = now;
        this.logger.warn("admin connections at the cap: refusing more with 503", { maxConnections: this.maxConnections, refused: this.refused });
      }
      client.data = undefined as unknown as Pipe; // (not counted: nothing to end)
      client.end(BUSY);
      return;
    }
    this.open++;
    const p: Pipe = { client, upstream: undefined, toUpstream: [], toClient: [], toUpstreamBytes: 0, toClientBytes: 0, upstreamGone: false, closed: false };
    client.data = p;
    this.pipes.add(p);
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const gate = this;
    Bun.connect<Pipe>({
      unix: this.upstreamPath,
      socket: {
        open(socket) {
          socket.data = p;
          if (p.closed) return void socket.end();
          p.upstream = socket;
          gate.flush(p, "up");
        },
        data(socket, chunk) {
          if (!p.closed) gate.send(p, "down", chunk);
        },
        drain() {
          if (!p.closed) gate.flush(p, "up");
        },
        close() {
          // The reply may still be on its way to the client: the connection ends once it is written.
          p.upstreamGone = true;
          if (p.toClient.length === 0) gate.end(p);
        },
        error() {
          // (the close handler follows)
        },
      },
    }).catch((e: unknown) => {
      this.logger.warn("admin connection could not reach the admin server", { error: String(e) });
      this.end(p);
    });
  }

  /** send passes `chunk` toward the upstream ("up") or the client ("down"), queueing what it does not take. */
  private send(p: Pipe, way: "up" | "down", chunk: Uint8Array): void {
    const queue = way === "up" ? p.toUpstream : p.toClient;
    const to = way === "up" ? p.upstream : p.client;
    if (queue.length === 0 && to !== undefined) {
      const n = to.write(chunk);
      if (n === chunk.length) return;
      chunk = chunk.subarray(Math.max(0, n));
    }
    queue.push(chunk.slice()); // (the chunk's buffer is the runtime's to reuse)
    const bytes = (way === "up" ? (p.toUpstreamBytes += chunk.length) : (p.toClientBytes += chunk.length));
    if (bytes > MAX_PENDING_BYTES) this.end(p);
  }

  /** flush writes what waits for one side, as far as it takes it. */
  private flush(p: Pipe, way: "up" | "down"): void {
    const queue = way === "up" ? p.toUpstream : p.toClient;
    const to = way === "up" ? p.upstream : p.client;
    if (to === undefined) return;
    while (queue.length > 0) {
      const chunk = queue[0]!;
      const n = Math.max(0, to.write(chunk));
      if (way === "up") p.toUpstreamBytes -= n;
      else p.toClientBytes -= n;
      if (n < chunk.length) {
        queue[0] = chunk.subarray(n);
        return;
      }
      queue.shift();
    }
    if (way === "down" && p.upstreamGone) this.end(p);
  }

  private end(p: Pipe): void {
    if (p.closed) return;
    p.closed = true;
    this.open--;
    this.pipes.delete(p);
    p.toUpstream.length = 0;
    p.toClient.length = 0;
    p.client.end();
    if (!p.upstreamGone) p.upstream?.end();
  }
}
