/**
 * AdminGate is the admin port's TCP listener: it caps the admin connections open at once, and
 * passes the bytes of each one it lets in to the admin HTTP server (`Bun.serve`, which has no
 * connection cap of its own) on a loopback port of its own. (Not a Unix socket: Bun.serve on one
 * dropped pipelined replies once the socket's buffer filled, and a file for it failed the start
 * on a read-only /tmp.) A process on this host can connect to that port too, past the cap: the
 * server answers only connections the gate opened, by their local port (`passedBy`), and any other
 * gets 403.
 *
 * Why: idle admin connections cost a file descriptor each and nothing bounded them. A review
 * held 4,500 under `ulimit -n 4000`: the Thrift port could not accept, the node spun on EMFILE,
 * and the final snapshot failed. Past `maxConnections` a connection is answered
 * `503 Service Unavailable` and closed: at once when MAX_LINGERING refused ones are closing
 * already, else once the client closes or after REFUSED_LINGER_MS, its input read and dropped
 * meanwhile (closed with unread input, the client would get a reset, which may drop the 503).
 * Each connection let in takes three descriptors (the client's, and both ends of the loopback
 * connection to the server): FD_RESERVE counts them.
 *
 * Bytes go through as they come, both ways. What one side has not taken yet waits in a bounded
 * buffer. A client sending far more than any admin request (past MAX_PENDING_BYTES) is closed; a
 * reply waiting for a slow client past PAUSE_BYTES pauses reading from the server until it is
 * down to half (a 15 MB /metrics of 10,000 groups reaches a reader who falls behind). A client's
 * FIN is passed on once its bytes are (`nc -N`, a request then a half-close, gets its reply); the
 * server closing ends the client's connection once the reply is written, and the gate's own
 * socket to the server is always closed with the client's. A client that takes none of a reply
 * waiting for it for CLIENT_STALL_MS is closed: paused, the server's socket would never see the
 * server close it, and 16 clients that never read held every slot for good.
 *
 * At the cap, a connection that has had no reply bytes for EVICT_QUIET_MS, nor a new request begun
 * in that time, and has none waiting (an idle keep-alive connection, or a client that trickles a
 * request it never finishes), or whose client has taken none of a reply waiting for it in that time
 * (one that pipelined scrapes and stopped reading), is closed to let the new one in, the longest
 * quiet first, as nginx reuses idle keep-alive connections when it runs out. Every endpoint answers
 * at once, and a client being served takes its reply as it comes, so it is never that quiet. Without it, 16 connections that sent nothing (or a byte now and then) made
 * `/healthz` answer 503 to every probe, and an orchestrator would restart a healthy node.
 */
import type { Socket, TCPSocketListener } from "bun";
import type { Logger } from "./log.ts";

/** ADMIN_MAX_CONNECTIONS: the admin connections open at once (scrapes and probes are short). */
export const ADMIN_MAX_CONNECTIONS = 16;
/** REFUSAL_LOG_MS: refusals past the cap are logged at most this often. */
const REFUSAL_LOG_MS = 10_000;
/** MAX_PENDING_BYTES bounds what a client's requests may queue for the server. */
const MAX_PENDING_BYTES = 1024 * 1024;
/** PAUSE_BYTES: a reply queued for the client past this pauses reading from the server. */
const PAUSE_BYTES = 1024 * 1024;
const BUSY_TEXT = "too many admin connections\n";
const BUSY = new TextEncoder().encode(
  `HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${BUSY_TEXT.length}\r\nconnection: close\r\n\r\n${BUSY_TEXT}`,
);
/** CLIENT_STALL_MS: a client that takes nothing of what waits for it for this long is closed (Bun.serve's idle timeout). */
export const CLIENT_STALL_MS = 10_000;
/** MAX_LINGERING bounds the refused connections waiting for their client to close. */
const MAX_LINGERING = 64;
/** REFUSED_LINGER_MS: the longest a refused connection waits for its client to close. */
const REFUSED_LINGER_MS = 1000;
/** UPSTREAM_HOST: the HTTP server's loopback address, and the one the gate's connections to it come from. */
const UPSTREAM_HOST = "127.0.0.1";
/** EVICT_QUIET_MS: at the cap, a connection with no reply bytes (nor a request begun since), or whose client took none of its waiting reply, for this long makes room for a new one. */
export const EVICT_QUIET_MS = 1000;

/** Pipe is one admin connection: the client's socket and the one to the HTTP server. */
interface Pipe {
  client: Socket<Pipe>;
  upstream: Socket<Pipe> | undefined;
  /** localPort is the upstream's local port once it is open (0 before, and once it closed). */
  localPort: number;
  /** toUpstream / toClient: bytes waiting for that side (the upstream while it connects, or a short write). */
  toUpstream: Uint8Array[];
  toClient: Uint8Array[];
  toUpstreamBytes: number;
  toClientBytes: number;
  /** upstreamGone: the HTTP server closed its side; the client's connection ends once `toClient` is written. */
  upstreamGone: boolean;
  /** clientEnded: the client sent FIN; it goes to the server once `toUpstream` is written. */
  clientEnded: boolean;
  /** upstreamPaused: reading from the server waits for the client to take what is queued. */
  upstreamPaused: boolean;
  /** stallTimer runs while `toClient` holds bytes; `progressAt` is when the client last took some. */
  stallTimer: ReturnType<typeof setTimeout> | undefined;
  progressAt: number;
  /**
   * quietSince is when the connection last showed life, for eviction: the server's last reply bytes
   * (its opening, before any), or the client's first bytes after them (a new request on a
   * keep-alive connection is in flight, not quiet); `asked` is set once those bytes came.
   */
  quietSince: number;
  asked: boolean;
  closed: boolean;
}

export class AdminGate {
  readonly port: number;
  /**
   * refused counts connections answered 503 past the cap; `stalled`, those closed for taking
   * nothing of a reply; `evicted`, quiet ones closed at the cap to let a new one in.
   */
  refused = 0;
  stalled = 0;
  evicted = 0;
  private lingering = 0;
  private refusedLoggedAt = -Infinity;
  private readonly listener: TCPSocketListener<Pipe>;
  private readonly pipes = new Set<Pipe>();
  /** upstreamPorts: the local ports of the gate's open connections to the HTTP server (`passedBy`). */
  private readonly upstreamPorts = new Set<number>();

  constructor(
    host: string, port: number, private readonly upstreamPort: number, private readonly logger: Logger,
    private readonly maxConnections = ADMIN_MAX_CONNECTIONS, private readonly clientStallMs = CLIENT_STALL_MS,
    private readonly evictQuietMs = EVICT_QUIET_MS,
  ) {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const gate = this;
    this.listener = Bun.listen<Pipe>({
      hostname: host,
      port,
      allowHalfOpen: true,
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
        end(socket) {
          const p = socket.data;
          if (p === undefined) return void socket.end(); // (refused: its client is done)
          if (p.closed) return;
          p.clientEnded = true;
          gate.flush(p, "up");
        },
        close(socket) {
          if (socket.data !== undefined) gate.end(socket.data);
          else gate.lingering--;
        },
        error() {
          // (the close handler follows)
        },
      },
    });
    this.port = this.listener.port;
  }

  /**
   * passedBy tells whether a connection to the HTTP server from `address`:`port` is one the gate
   * opened and still holds. Its request bytes go out only once it is open, and it is let go
   * (`end`) before its port can be another socket's. The address counts too: a local process
   * could bind another loopback address (127.0.0.2) to the port of one of the gate's connections,
   * which it can read off /proc/net/tcp, and was served past the cap.
   */
  passedBy(address: string, port: number): boolean {
    return (address === UPSTREAM_HOST || address === `::ffff:${UPSTREAM_HOST}`) && this.upstreamPorts.has(port);
  }

  /** connections is the admin connections open now. */
  get connections(): number {
    return this.pipes.size;
  }

  /** close stops listening and closes every connection. */
  close(): void {
    this.listener.stop(true);
    for (const p of [...this.pipes]) this.end(p);
  }

  private accept(client: Socket<Pipe>): void {
    const now = performance.now();
    if (this.pipes.size >= this.maxConnections) this.evictQuiet(now);
    if (this.pipes.size >= this.maxConnections) {
      this.refused++;
      if (now - this.refusedLoggedAt >= REFUSAL_LOG_MS) {
        this.refusedLoggedAt = now;
        this.logger.warn("admin connections at the cap: refusing more with 503", { maxConnections: this.maxConnections, refused: this.refused });
      }
      client.data = undefined as unknown as Pipe; // (not counted: nothing to end)
      this.lingering++;
      if (this.lingering > MAX_LINGERING) return void client.end(BUSY);
      client.write(BUSY);
      client.shutdown(); // FIN after the 503; what it sends meanwhile is dropped
      setTimeout(() => client.end(), REFUSED_LINGER_MS);
      return;
    }
    const p: Pipe = {
      client, upstream: undefined, localPort: 0, toUpstream: [], toClient: [], toUpstreamBytes: 0, toClientBytes: 0, upstreamGone: false, clientEnded: false, upstreamPaused: false,
      stallTimer: undefined, progressAt: 0, quietSince: now, asked: false, closed: false,
    };
    client.data = p;
    this.pipes.add(p);
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const gate = this;
    Bun.connect<Pipe>({
      hostname: UPSTREAM_HOST, // (so its connections come from this address: passedBy)
      port: this.upstreamPort,
      allowHalfOpen: true,
      socket: {
        open(socket) {
          socket.data = p;
          if (p.closed) return void socket.end();
          p.upstream = socket;
          p.localPort = socket.localPort;
          gate.upstreamPorts.add(p.localPort);
          gate.flush(p, "up");
        },
        data(socket, chunk) {
          if (!p.closed) gate.send(p, "down", chunk);
        },
        drain() {
          if (!p.closed) gate.flush(p, "up");
        },
        end() {
          gate.upstreamDone(p);
        },
        close() {
          gate.letPortGo(p);
          gate.upstreamDone(p);
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

  /** letPortGo forgets the upstream's local port: its socket is closing, and the port may be another's next. */
  private letPortGo(p: Pipe): void {
    if (p.localPort !== 0) this.upstreamPorts.delete(p.localPort);
    p.localPort = 0;
  }

  /** upstreamDone: the server is done with the connection; the client's ends once the reply is written. */
  private upstreamDone(p: Pipe): void {
    if (p.closed) return;
    p.upstreamGone = true;
    if (p.toClient.length === 0) this.end(p);
  }

  /**
   * evictQuiet closes the connection quiet longest, if one has been for evictQuietMs: with nothing
   * waiting for its client, since its last reply bytes or request; with a reply waiting, since its
   * client last took some (`progressAt`). A client being served takes its reply at once; one that
   * pipelined scrapes and stopped reading held its slot for clientStallMs (10 s), unevictable,
   * and 16 of them reconnecting kept every probe out.
   */
  private evictQuiet(now: number): void {
    let quietest: Pipe | undefined;
    let quietestSince = Infinity;
    for (const p of this.pipes) {
      const since = p.toClientBytes > 0 ? p.progressAt : p.quietSince;
      if (now - since < this.evictQuietMs || since >= quietestSince) continue;
      quietest = p;
      quietestSince = since;
    }
    if (quietest === undefined) return;
    this.evicted++;
    this.end(quietest);
  }

  /** send passes `chunk` toward the upstream ("up") or the client ("down"), queueing what it does not take. */
  private send(p: Pipe, way: "up" | "down", chunk: Uint8Array): void {
    if (way === "down") {
      p.quietSince = performance.now();
      p.asked = false;
    } else if (!p.asked) {
      p.quietSince = performance.now();
      p.asked = true;
    }
    const queue = way === "up" ? p.toUpstream : p.toClient;
    const to = way === "up" ? p.upstream : p.client;
    if (queue.length === 0 && to !== undefined) {
      const n = to.write(chunk);
      if (n === chunk.length) return;
      chunk = chunk.subarray(Math.max(0, n));
    }
    queue.push(chunk.slice()); // (the chunk's buffer is the runtime's to reuse)
    if (way === "up") {
      p.toUpstreamBytes += chunk.length;
      if (p.toUpstreamBytes > MAX_PENDING_BYTES) this.end(p);
    } else {
      p.toClientBytes += chunk.length;
      if (p.stallTimer === undefined) {
        p.progressAt = performance.now();
        p.stallTimer = setTimeout(() => this.checkStall(p), this.clientStallMs);
      }
      if (p.toClientBytes > PAUSE_BYTES && !p.upstreamPaused && p.upstream !== undefined) {
        p.upstreamPaused = true;
        p.upstream.pause();
      }
    }
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
      else {
        p.toClientBytes -= n;
        if (n > 0) p.progressAt = performance.now();
      }
      if (n < chunk.length) {
        queue[0] = chunk.subarray(n);
        return;
      }
      queue.shift();
    }
    if (way === "down") {
      clearTimeout(p.stallTimer);
      p.stallTimer = undefined;
    }
    if (way === "down" && p.upstreamGone) this.end(p);
    else if (way === "up" && p.clientEnded) to.shutdown(); // (the client's FIN, after its bytes)
    else if (way === "down" && p.upstreamPaused && p.toClientBytes <= PAUSE_BYTES / 2) {
      p.upstreamPaused = false;
      p.upstream?.resume();
    }
  }

  /** checkStall closes a client that took nothing of its reply for clientStallMs. */
  private checkStall(p: Pipe): void {
    p.stallTimer = undefined;
    if (p.closed || p.toClient.length === 0) return;
    const idle = performance.now() - p.progressAt;
    if (idle >= this.clientStallMs) {
      this.stalled++;
      this.end(p);
      return;
    }
    p.stallTimer = setTimeout(() => this.checkStall(p), this.clientStallMs - idle);
  }

  private end(p: Pipe): void {
    if (p.closed) return;
    p.closed = true;
    clearTimeout(p.stallTimer);
    this.pipes.delete(p);
    p.toUpstream.length = 0;
    p.toClient.length = 0;
    p.client.end();
    this.letPortGo(p);
    p.upstream?.end(); // (also after the server closed first: its half-closed socket is ours to close)
  }
}
