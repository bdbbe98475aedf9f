/**
 * AdminServer is a node's HTTP admin port (`Bun.serve`): metrics, health and stats for operators.
 *
 *  - `GET /metrics`: the Prometheus text exposition (metrics.ts), read at scrape time; scrapes
 *    less than a second apart share one reading.
 *  - `GET /healthz`: 200 "ok" while the node is serving; 503 "starting" or "draining" otherwise.
 *    The node owns the state and moves it with `setState`: a new AdminServer is "starting" (unless
 *    told otherwise), so a load balancer never sees ready before the node says so.
 *  - `GET /stats`: the node's figures as JSON (nodeStats below); requests less than a second apart
 *    share one reading too (with 1,000 groups one takes ~20 ms of the node's thread).
 *  - `POST /memory/purge`: a full garbage collection now (Redis's `MEMORY PURGE`), answered with the
 *    process's memory before and after as JSON. Resident memory in a garbage-collected runtime is a
 *    sawtooth; what is left after a full collection is what the node actually retains, the figure
 *    to compare over time when looking for a leak (the soak does). The collection pauses the node
 *    for about 10 ms with a full store, so it is guarded: at most one per PURGE_MIN_INTERVAL_MS
 *    (later calls get 429 with Retry-After), and on a node with an auth token the call must carry
 *    `Authorization: Bearer <token>` (401 otherwise; checked in constant time). It is logged.
 *  - Any other path is 404; a known path with another method is 405. No endpoint takes a body:
 *    one whose Content-Length is over ADMIN_MAX_BODY_BYTES is refused 413 before it is read
 *    (Bun's default is 128 MB); a chunked one is never read.
 *
 * The admin port is off the request path: nothing here touches the Thrift port's connections.
 * One AdminServer per node, never a module-level one, so tests run several in one process.
 */
import type { Server } from "bun";
import { AccessControl } from "./access.ts";
import { AdminGate } from "./admin-gate.ts";
import { listenError } from "./listen-error.ts";
import type { CacheNode } from "./cache-node.ts";
import { VERSION } from "./config.ts";
import type { LatencyHistogram } from "./latency.ts";
import type { Logger } from "./log.ts";
import { createMetrics, type Metrics } from "./metrics.ts";
import { APP_ERROR, ERROR_CODE } from "../protocol/errors.ts";
import { METHOD_NAMES } from "../protocol/request.ts";
import { hostPort } from "../bytes/bytes.ts";

/** ADMIN_MAX_BODY_BYTES: the largest request body the admin port reads (none of its endpoints takes one). */
const ADMIN_MAX_BODY_BYTES = 4096;

export type AdminState = "starting" | "serving" | "draining";

/** PURGE_MIN_INTERVAL_MS spaces forced collections asked for over HTTP. */
export const PURGE_MIN_INTERVAL_MS = 1000;
/** METRICS_MIN_INTERVAL_MS: /metrics scrapes within this time of a rendering share it. */
export const METRICS_MIN_INTERVAL_MS = 1000;

/**
 * pathOf is the path of a request target: absolute ("http://host/p?q"), or origin-form ("/p?q")
 * as Bun gives it for a request without a Host header (HTTP/1.0, load balancers' health checks),
 * which `new URL` alone refuses. Bun builds the absolute form from the Host header, so a Host that
 * is no host ("x:99999", "[::1") made the whole target refused: its path is read alone then (the
 * node answers on its own port whatever the client calls it). undefined for a target that is
 * neither.
 */
function pathOf(target: string): string | undefined {
  const path = urlPath(target);
  if (path !== undefined) return path;
  const authority = /^[a-z][a-z\d+.-]*:\/\/[^/?#]*/i.exec(target);
  return authority === null ? undefined : urlPath(target.slice(authority[0].length) || "/");
}

function urlPath(target: string): string | undefined {
  try {
    return new URL(target, "http://admin.invalid").pathname;
  } catch {
    return undefined;
  }
}

export interface AdminOptions {
  host: string;
  /** port to listen on; 0 picks a free one (read it back from `port`). */
  port: number;
  node: CacheNode;
  latency: LatencyHistogram;
  logger: Logger;
  /** state to start in (default "starting"). */
  state?: AdminState;
  /** maxConnections: the admin connections open at once (default ADMIN_MAX_CONNECTIONS). */
  maxConnections?: number;
  /** clientStallMs: a client taking nothing of its reply this long is closed (default CLIENT_STALL_MS). */
  clientStallMs?: number;
  /** evictQuietMs: at the cap, a connection without reply bytes this long makes room (default EVICT_QUIET_MS). */
  evictQuietMs?: number;
  /** metricsShareMs: /metrics and /stats requests within this time of a reading share it (default METRICS_MIN_INTERVAL_MS). */
  metricsShareMs?: number;
}

/** PROMETHEUS_CONTENT_TYPE is the media type of the text exposition format 0.0.4. */
export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

export class AdminServer {
  readonly host: string;
  readonly port: number;
  readonly metrics: Metrics;
  private readonly node: CacheNode;
  private readonly latency: LatencyHistogram;
  private readonly logger: Logger;
  private readonly server: Server<undefined>;
  private readonly gate: AdminGate;
  private current: AdminState;
  private closing: Promise<void> | null = null;
  /** access checks purge calls on a node with an auth token. */
  private readonly access: AccessControl | undefined;
  private lastPurgeAt = -Infinity;
  /** metricsText and statsJson: the last /metrics and /stats replies, shared by requests within metricsShareMs. */
  private readonly metricsText: SharedReading;
  private readonly statsJson: SharedReading;

  private constructor(opts: AdminOptions) {
    this.node = opts.node;
    this.latency = opts.latency;
    this.logger = opts.logger;
    this.current = opts.state ?? "starting";
    const shareMs = opts.metricsShareMs ?? METRICS_MIN_INTERVAL_MS;
    const token = opts.node.config.authToken;
    this.access = token === undefined ? undefined : new AccessControl(token);
    this.metrics = createMetrics(opts.node, opts.latency, () => this.connections); // (read at scrape time: the gate is open by then)
    this.metricsText = new SharedReading(shareMs, () => this.metrics.render());
    this.statsJson = new SharedReading(shareMs, () => JSON_TEXT.encode(JSON.stringify({ ...nodeStats(this.node, this.latency, this.current), admin: this.connections })));
    // The HTTP server listens on a loopback port of its own; the admin port itself is the gate's,
    // which caps the connections (admin-gate.ts).
    this.server = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      maxRequestBodySize: ADMIN_MAX_BODY_BYTES,
      fetch: (req) => this.handle(req),
      error: (e) => {
        this.logger.error("admin request failed", { error: e.message, stack: e.stack });
        return new Response("internal error\n", { status: 500, headers: { "content-type": "text/plain; charset=utf-8" } });
      },
    });
    try {
      this.gate = new AdminGate(opts.host, opts.port, this.server.port!, opts.logger, opts.maxConnections, opts.clientStallMs, opts.evictQuietMs);
    } catch (e) {
      void this.server.stop(true);
      throw listenError("the admin port (--admin-port)", opts.host, opts.port, e);
    }
    this.host = opts.host;
    this.port = this.gate.port;
  }

  /** start listens on `opts.host:opts.port` and serves the admin endpoints of `opts.node`. */
  static start(opts: AdminOptions): AdminServer {
    const admin = new AdminServer(opts);
    opts.logger.info("admin port listening", { address: hostPort(admin.host, admin.port) });
    return admin;
  }

  /** state is what `/healthz` reports. */
  get state(): AdminState {
    return this.current;
  }

  /** setState moves the health state: "serving" answers 200, "starting" and "draining" 503. */
  setState(state: AdminState): void {
    if (state === this.current) return;
    this.current = state;
    this.logger.info("admin state changed", { state });
  }

  /** close stops listening and ends open admin connections (scrapes are short). */
  close(): Promise<void> {
    if (this.closing === null) {
      this.gate.close();
      this.closing = this.server.stop(true);
    }
    return this.closing;
  }

  /**
   * connections is the admin connections open now; `refused`, those answered 503 past the cap;
   * `stalled`, those closed for not reading; `evicted`, quiet ones closed at the cap for a new one.
   */
  get connections(): { open: number; refused: number; stalled: number; evicted: number } {
    return { open: this.gate.connections, refused: this.gate.refused, stalled: this.gate.stalled, evicted: this.gate.evicted };
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private async handle(req: Request): Promise<Response> {
    // Only through the gate: a local process connecting to the server's own port would pass its cap.
    const from = this.server.requestIP(req);
    if (from === null || !this.gate.passedBy(from.address, from.port)) return text(403, "forbidden: connect to the admin port\n");
    const path = pathOf(req.url);
    if (path === undefined) return text(400, "bad request target\n");
    if (path === "/memory/purge") {
      if (req.method !== "POST") return text(405, "method not allowed\n", { allow: "POST" });
      if (this.access !== undefined && !this.authorized(req)) {
        return text(401, "unauthorized: send Authorization: Bearer <the node's auth token>\n", { "www-authenticate": "Bearer" });
      }
      const wait = this.lastPurgeAt + PURGE_MIN_INTERVAL_MS - performance.now();
      if (wait > 0) return text(429, "a purge ran less than a second ago\n", { "retry-after": String(Math.ceil(wait / 1000)) });
      return Response.json(this.purge(), { headers: { "cache-control": "no-store" } });
    }
    if (path !== "/metrics" && path !== "/healthz" && path !== "/stats") return text(404, "not found\n");
    if (req.method !== "GET" && req.method !== "HEAD") return text(405, "method not allowed\n", { allow: "GET, HEAD" });
    switch (path) {
      case "/metrics":
        return new Response(this.metricsText.read(), { headers: { "content-type": PROMETHEUS_CONTENT_TYPE } });
      case "/healthz":
        return this.current === "serving" ? text(200, "ok\n") : text(503, `${this.current}\n`);
      default:
        return new Response(this.statsJson.read(), { headers: { "content-type": "application/json;charset=utf-8", "cache-control": "no-store" } });
    }
  }

  /** authorized checks a purge's bearer token against the node's, in constant time. */
  private authorized(req: Request): boolean {
    const m = /^Bearer\s+(.+)$/i.exec(req.headers.get("authorization") ?? "");
    if (m === null) return false;
    const token = new TextEncoder().encode(m[1]!.trim());
    return this.access!.accepts(token, 0, token.length);
  }

  /** purge runs a full collection and reports memory before and after (bytes) and its duration. */
  private purge(): { before: MemoryFigures; after: MemoryFigures; ms: number } {
    this.lastPurgeAt = performance.now();
    const before = memoryFigures();
    const t0 = performance.now();
    Bun.gc(true);
    const ms = performance.now() - t0;
    const after = memoryFigures();
    this.logger.info("memory purge: full collection", { ms: Math.round(ms * 10) / 10, rssBefore: before.rss, rssAfter: after.rss });
    return { before, after, ms };
  }
}

/** MemoryFigures is the process's memory as `process.memoryUsage()` reports it, in bytes. */
export interface MemoryFigures {
  rss: number;
  heapUsed: number;
  heapTotal: number;
  arrayBuffers: number;
  external: number;
}

function memoryFigures(): MemoryFigures {
  const m = process.memoryUsage();
  return { rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, arrayBuffers: m.arrayBuffers, external: m.external };
}

const JSON_TEXT = new TextEncoder();

/**
 * SharedReading is a costly admin reply (the /metrics exposition, the /stats JSON) made at most
 * once per `shareMs` (1 s): requests within that time (several Prometheus servers, or a client
 * reading in a loop) share one. A reading holds the node's one thread, Thrift port included, for
 * its whole length (about 5-10 ms for /metrics with 1,000 groups: bench/metrics-render.ts; ~20 ms
 * for /stats), in one piece: not in slices, which Bun's HTTP server does not allow a pipelining
 * client (exposition.ts). A reading that throws is not kept: the next request reads again.
 */
class SharedReading {
  private bytes: Uint8Array | null = null;
  private readAt = -Infinity;

  constructor(private readonly shareMs: number, private readonly render: () => Uint8Array) {}

  read(): Uint8Array {
    const now = performance.now();
    if (this.bytes === null || now - this.readAt >= this.shareMs) {
      this.bytes = null;
      this.bytes = this.render();
      this.readAt = now;
    }
    return this.bytes;
  }
}

function text(status: number, body: string, headers: Record<string, string> = {}): Response {
  return new Response(body, { status, headers: { "content-type": "text/plain; charset=utf-8", ...headers } });
}

/**
 * nodeStats gathers the node's figures for `/stats`: the server's counters, requests and errors
 * by method, every group with its counters and store statistics (slab classes included), and
 * the cluster and loader pool when the node has them (null otherwise). Allocates; admin use only.
 */
/** limitsOf lists the node's resource limits, so operators see the bounds beside the counters. */
function limitsOf(node: CacheNode): Record<string, number | boolean | string> {
  const c = node.config;
  return {
    maxConnections: c.maxConnections,
    maxOutputBytes: c.maxOutputBytes,
    maxBufferedBytes: c.maxBufferedBytes,
    maxRequestsPerEvent: c.maxRequestsPerEvent,
    idleTimeoutMs: c.idleTimeoutMs,
    maxFrameBytes: c.maxFrameSize,
    maxKeyBytes: c.maxKeySize,
    maxItemBytes: c.maxItemSize,
    loaderThreads: c.loaderThreads,
    loaderConcurrency: c.loaderConcurrency,
    loaderQueue: c.loaderQueue,
    maxLoads: c.maxLoads,
    auth: c.authToken !== undefined,
    tls: c.tlsCert !== undefined,
  };
}

export function nodeStats(node: CacheNode, latency: LatencyHistogram, state: AdminState): Record<string, unknown> {
  const server = node.server;
  const requests: Record<string, number> = {};
  const errors: Record<string, Record<string, number>> = {};
  for (let m = 0; m < METHOD_NAMES.length; m++) {
    const name = m === 0 ? "unknown" : METHOD_NAMES[m]!;
    if (latency.counts[m]! > 0) requests[name] = latency.counts[m]!;
    for (const [code, n] of Object.entries(ERROR_CODE)) {
      const count = latency.errorCount(m, n);
      if (count > 0) (errors[name] ??= {})[code.toLowerCase()] = count;
    }
  }
  const protocolErrors: Record<string, number> = {};
  for (const [kind, t] of Object.entries(APP_ERROR)) if (latency.protocolErrors[t]! > 0) protocolErrors[kind.toLowerCase()] = latency.protocolErrors[t]!;
  // (fromEntries defines each key: `groups[name] = ...` on a plain object set the prototype of a group named __proto__, which `--group` takes, and it vanished)
  const groups = Object.fromEntries(node.groups.all().map((g) => [g.name, {
    counters: { ...g.counters },
    store: g.store.stats(),
    mirror: g.mirror === undefined ? null : g.mirror.stats(),
  }]));
  const cluster = node.cluster;
  const pool = node.pool;
  return {
    node: {
      id: server.nodeId,
      version: VERSION,
      state,
      startedAt: server.startedAt,
      uptimeMs: server.clock() - server.startedAt,
      connections: server.connectionCount,
      counters: { ...server.counters },
      limits: limitsOf(node),
    },
    requests,
    errors,
    protocolErrors,
    groups,
    cluster: cluster === undefined ? null : {
      self: cluster.self, members: cluster.members, counters: { ...cluster.counters },
      peersDown: cluster.peersDown, peersLagging: cluster.laggingMembers.length,
    },
    pool: pool === undefined ? null : {
      groups: pool.groups, counters: { ...pool.counters },
      inFlight: pool.counters.submitted - pool.counters.completed - pool.counters.failed, // (as mybuncache_loader_pool_in_flight)
    },
    memory: node.memoryWatch === undefined ? null : { headroomBytes: node.config.gcHeadroomBytes, ...node.memoryWatch.counters },
    snapshot: node.snapshotter === undefined ? null : { ...node.snapshotter.counters },
  };
}
