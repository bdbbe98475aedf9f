/**
 * CacheNode is one running MyBunCache node: its groups, its loaders and its Thrift port.
 *
 * `CacheNode.open(config)` opens the loaders module's worker pool when `config.loaders` names one,
 * then starts the node; `CacheNode.start(config, deps)` starts it synchronously with in-process
 * loaders (`deps.loaders`, for a program embedding the cache) or an already opened pool. Every
 * loader becomes a read-through group of its name; a `--group` spec of the same name sets its
 * memory, TTL and options. The node owns no process-wide state (signals and exit belong to
 * `node.ts`), so tests start several nodes in one process on port 0 and close them with
 * `await using`.
 *
 * Here is the wiring of a start and a close; the parts are beside it: the groups are built by
 * node-groups.ts, the clients of peers and the member list made by node-peers.ts, the TLS files
 * read by tls-files.ts, --max-connections fitted to the open-file limit by fd-limit.ts, and the
 * final snapshot written (or abandoned) by final-snapshot.ts.
 */
import { RingPurges } from "../cluster/ring-purge.ts";
import { Cluster, type PeerClient } from "../cluster/cluster.ts";
import { writeWaitMs } from "../cluster/write-waits.ts";
import type { Groups } from "../cluster/groups.ts";
import type { Loader } from "../cluster/loader.ts";
import type { MembershipSource, Resolver } from "../cluster/membership.ts";
import { LoaderPool } from "../loaders/loader-pool.ts";
import { resolveLimits } from "../protocol/limits.ts";
import { CacheServer } from "./cache-server.ts";
import { ConfigError, DEFAULTS, isClustered, longestLoadTimeoutMs, type NodeConfig } from "./config.ts";
import { checkSnapshotMembership, secretFileWarning } from "./config-checks.ts";
import { Logger } from "./log.ts";
import { AccessControl } from "./access.ts";
import { fitConnections, openFilesLimit } from "./fd-limit.ts";
import { readPem, readTls } from "./tls-files.ts";
import { membershipSource, peerClient } from "./node-peers.ts";
import { buildGroups } from "./node-groups.ts";
import { nodeFigures } from "./figures.ts";
import { AdminServer } from "./admin-server.ts";
import { MemoryWatch } from "./memory-watch.ts";
import { Snapshotter } from "./snapshot.ts";
import { SnapshotLock } from "./snapshot-lock.ts";
import { FinalSnapshot } from "./final-snapshot.ts";
import type { LatencyHistogram } from "./latency.ts";
import { monotonicMs } from "../store/clock.ts";
import { hostPort } from "../bytes/bytes.ts";
import { canonicalMember } from "../cluster/member-id.ts";

export interface NodeDeps {
  clock?: () => number;
  logger?: Logger;
  /** loaders are in-process loader functions by group name. */
  loaders?: Record<string, Loader>;
  /** pool is an opened loader pool whose loaders serve the groups of their names. */
  pool?: LoaderPool;
  /** connect makes the client of a peer (default: a CacheClient); tests inject their own. */
  connect?: (nodeId: string) => PeerClient;
  /** resolve looks up --peers-dns names (default: the system resolver). */
  resolve?: Resolver;
  /** groups are built already (open() builds them first to load the snapshot before listening). */
  groups?: Groups;
  /** snapshotter writes the node's snapshot at close (and periodically). */
  snapshotter?: Snapshotter;
  /** handshakeTimeoutMs: how long a TLS connection may take to finish its handshake (default HANDSHAKE_MS). */
  handshakeTimeoutMs?: number;
  /** authTimeoutMs: how long a connection to a node with a token may take to authenticate (default AUTH_MS). */
  authTimeoutMs?: number;
  /** sendStallMs: with --idle-timeout, how long replies may wait untaken before the connection is closed (default SEND_STALL_MS). */
  sendStallMs?: number;
  /** lingerMs: how long a connection the node has ended may wait for its client to close (default LINGER_MS). */
  lingerMs?: number;
}

/**
 * drainTimeoutMs is how long shutdown waits for connections that wait for a load before it cuts
 * them: long enough for the request to get its answer (or its LOAD_FAILED) by the longest load
 * timeout, at least 5 s, at most 30 s (Kubernetes' default grace period).
 */
export function drainTimeoutMs(config: NodeConfig): number {
  return Math.min(30_000, Math.max(5_000, longestLoadTimeoutMs(config) + 1_000));
}

export class CacheNode {
  readonly config: NodeConfig;
  readonly groups: Groups;
  readonly server: CacheServer;
  readonly logger: Logger;
  readonly pool: LoaderPool | undefined;
  /** cluster is set when the node was given peers. */
  readonly cluster: Cluster | undefined;
  /** latency holds the per-method request figures (the admin port exports them). */
  readonly latency: LatencyHistogram;
  /** admin is the HTTP admin port, when --admin-port is set. */
  admin: AdminServer | undefined;
  /** snapshotter persists the groups, when --snapshot is set. */
  snapshotter: Snapshotter | undefined;
  /** memoryWatch bounds the garbage the process carries (--gc-headroom; off at 0). */
  memoryWatch: MemoryWatch | undefined;
  /** finalSnapshot writes the snapshot at close, or abandons it (final-snapshot.ts). */
  private readonly finalSnapshot: FinalSnapshot;
  private readonly membership: MembershipSource | undefined;

  private constructor(
    config: NodeConfig, groups: Groups, server: CacheServer, logger: Logger, pool: LoaderPool | undefined,
    cluster: Cluster | undefined, membership: MembershipSource | undefined,
  ) {
    this.config = config;
    this.groups = groups;
    this.server = server;
    this.logger = logger;
    this.pool = pool;
    this.cluster = cluster;
    this.membership = membership;
    this.latency = server.latency;
    this.finalSnapshot = new FinalSnapshot(logger);
  }

  /** reloadPeers re-reads the membership source now (SIGHUP). */
  reloadPeers(): void {
    this.membership?.reload();
  }

  get port(): number {
    return this.server.port;
  }

  get address(): string {
    return hostPort(this.server.host, this.server.port);
  }

  /** finalSnapshotFailed: `close` could not write the snapshot (the old one is moved aside). */
  get finalSnapshotFailed(): boolean {
    return this.finalSnapshot.failed;
  }

  /**
   * close stops the port (letting connections flush what they owe; /healthz answers 503
   * meanwhile), then the admin port, then writes the final snapshot and stops the loader pool.
   * The admin port closes before the snapshot is written: its connections could hold the last
   * file descriptors, and a final write failing EMFILE moves the previous snapshot aside (review:
   * 4,500 idle admin connections under `ulimit -n 4000`, and the next start was empty).
   */
  async close(): Promise<void> {
    this.admin?.setState("draining");
    this.memoryWatch?.stop();
    this.membership?.close();
    await this.server.close();
    await this.admin?.close();
    await this.finalSnapshot.write(this.snapshotter);
    await this.cluster?.close();
    await this.pool?.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /**
   * open starts a node the way node.ts does: it opens the worker pool of `config.loaders`, builds
   * the groups and loads the snapshot into them, and only then starts listening.
   */
  static async open(partial: Partial<NodeConfig> = {}, deps: NodeDeps = {}): Promise<CacheNode> {
    const config: NodeConfig = { ...DEFAULTS, ...partial };
    checkSnapshotMembership(config);
    const logger = deps.logger ?? new Logger(config.logLevel, config.logJson);
    let pool = deps.pool;
    if (config.loaders !== undefined && pool === undefined) {
      // A load still running four load timeouts on is stopped (its callers had their LOAD_FAILED
      // long before; a group may start a new flight for the key then, see STALE_FLIGHT_TIMEOUTS).
      pool = await LoaderPool.open({
        module: config.loaders, threads: config.loaderThreads, concurrency: config.loaderConcurrency, queue: config.loaderQueue, logger,
        // Of the longest load timeout: a group may allow its loads longer than --load-timeout.
        stopAfterMs: 4 * longestLoadTimeoutMs(config),
      });
    }
    let lock: SnapshotLock | undefined;
    try {
      const full: NodeDeps = { ...deps, logger, pool };
      const groups = buildGroups(config, full);
      let snapshotter: Snapshotter | undefined;
      if (config.snapshot !== undefined) {
        snapshotter = new Snapshotter({ path: config.snapshot, groups, logger, maxKeyBytes: config.maxKeySize });
        lock = new SnapshotLock(config.snapshot, logger);
        lock.acquire(); // (before reading it: another node's snapshot is not this one's to load)
        snapshotter.lock = lock;
        const loaded = await snapshotter.load();
        if (lock.unavailable !== undefined) logger.warn("running without a snapshot lock: two nodes on this path would not be stopped", { lock: lock.file, error: lock.unavailable });
        logger.info("snapshot load", { status: loaded.status, items: loaded.items, skippedExpired: loaded.skippedExpired, ms: Math.round(loaded.ms) });
      }
      return CacheNode.start(config, { ...full, groups, snapshotter });
    } catch (e) {
      lock?.release();
      if (pool !== deps.pool) await pool?.close();
      throw e;
    }
  }

  /**
   * abandonSnapshot is for a process that exits before `close` has written the final snapshot (a
   * second signal): the snapshot on disk, which lacks the writes taken since it, is moved aside
   * (FinalSnapshot.abandon). Returns where it went, or undefined.
   */
  abandonSnapshot(): string | undefined {
    return this.finalSnapshot.abandon(this.snapshotter);
  }

  /**
   * start starts a node at once, with in-process loaders (`deps.loaders`). A snapshot or a loaders
   * module needs `open`, which loads or opens them before the port listens: given here without
   * what `open` makes of them (`deps.snapshotter`, `deps.pool`), they are refused, not ignored.
   */
  static start(partial: Partial<NodeConfig> = {}, deps: NodeDeps = {}): CacheNode {
    const config: NodeConfig = { ...DEFAULTS, ...partial };
    if (config.snapshot !== undefined && deps.snapshotter === undefined) {
      throw new ConfigError("a snapshot is loaded before the node listens: use CacheNode.open for `snapshot`");
    }
    if (config.loaders !== undefined && deps.pool === undefined) {
      throw new ConfigError("a loaders module runs in a worker pool opened first: use CacheNode.open for `loaders`");
    }
    const clock = deps.clock ?? monotonicMs;
    const logger = deps.logger ?? new Logger(config.logLevel, config.logJson);
    // The node's own connections to its peers need descriptors too (known here for --peers; a
    // peers file or DNS may list more later: FD_RESERVE covers a few), up to twice
    // --peer-connections each while quiet ones are replaced (TimeoutSweep.replace).
    const peerFds = Math.max(0, (config.peers?.length ?? 1) - 1) * config.peerConnections * 2;
    config.maxConnections = fitConnections(config.maxConnections, openFilesLimit(), logger, peerFds);
    const clustered = isClustered(config);
    // An owner acknowledges a write without a member's answer to its invalidation after
    // writeWaitMs (Cluster.invalidate): a member stopped that long may find it unread behind a
    // client's read of the key. A stall shorter than that wait (STALL_SHARE of it) drops its
    // mirrors, so a member that was stopped serves no copy older than such a write. (One that
    // runs but answers late, a slow link, is not stopped: its owner counts it lagging.)
    const stallMs = writeWaitMs(config.peerTimeoutMs) * STALL_SHARE;
    if (clustered && stallMs < MIN_STALL_MS) {
      logger.warn("--peer-timeout is too short for a member's stall to be seen before an owner stops waiting for it: a member stopped briefly may serve a value older than an acknowledged write", {
        peerTimeoutMs: config.peerTimeoutMs, atLeastMs: (2 * MIN_STALL_MS) / STALL_SHARE,
      });
    }
    for (const [what, file] of [["auth token file", config.authTokenFile], ["TLS key", config.tlsKey]] as const) {
      const exposed = file === undefined ? undefined : secretFileWarning(file);
      if (exposed !== undefined) logger.warn(`the ${what} can be read by other users: chmod 600 it`, exposed);
    }
    const groups = deps.groups ?? buildGroups(config, { ...deps, logger });
    const limits = resolveLimits({
      maxFrameBytes: config.maxFrameSize,
      maxKeyBytes: config.maxKeySize,
      maxValueBytes: config.maxItemSize,
    });
    let node: CacheNode | undefined;
    const server = new CacheServer(groups, {
      host: config.host,
      port: config.port,
      maxConnections: config.maxConnections,
      maxOutputBytes: config.maxOutputBytes,
      limits,
      expiryIntervalMs: config.expiryIntervalMs,
      expiryBudget: config.expiryBudget,
      stallMs: clustered ? Math.max(MIN_STALL_MS, stallMs) : undefined,
      drainTimeoutMs: drainTimeoutMs(config),
      clock,
      logger,
      cluster: () => node?.cluster,
      access: config.authToken === undefined ? undefined : new AccessControl(config.authToken),
      tls: config.tlsCert === undefined || config.tlsKey === undefined ? undefined : readTls(config.tlsCert, config.tlsKey),
      idleTimeoutMs: config.idleTimeoutMs,
      seedErrors: config.seedErrors,
      handshakeTimeoutMs: deps.handshakeTimeoutMs,
      authTimeoutMs: deps.authTimeoutMs,
      sendStallMs: deps.sendStallMs,
      lingerMs: deps.lingerMs,
      maxRequestsPerEvent: config.maxRequestsPerEvent,
      maxBufferedBytes: config.maxBufferedBytes,
      checkMemory: config.gcHeadroomBytes > 0 ? () => node?.memoryWatch?.check() : undefined,
      figures: () => (node === undefined ? [] : nodeFigures(node)),
    });
    try {
      node = CacheNode.finishStart(config, deps, groups, server, logger, clustered);
      return node;
    } catch (e) {
      void server.close(); // nothing may keep running after a failed start: the port, the timers
      throw e;
    }
  }

  /** finishStart joins the cluster and starts the admin port and the snapshot timer. */
  private static finishStart(
    config: NodeConfig, deps: NodeDeps, groups: Groups, server: CacheServer, logger: Logger, clustered: boolean,
  ): CacheNode {
    let cluster: Cluster | undefined;
    let membership: MembershipSource | undefined;
    try {
      if (clustered) {
        // Canonical (member-id.ts), as the member lists' ids are: else a node written otherwise in
        // its list than in --self (or --host) does not find itself.
        const written = config.self ?? hostPort(config.host, server.port);
        const self = canonicalMember(written) ?? written;
        // Read once, here, so a CA file that cannot be read stops the node: read per peer, it
        // left every peer out of the ring (each node then alone, owning every key).
        const peerTls = config.tlsCert === undefined ? undefined : { ca: readPem(config.tlsCa ?? config.tlsCert, "the TLS CA peers are checked against") };
        // A peer found up again may have written keys this node holds copies of while their
        // invalidations could not reach it (their owner asks it to drop them too: askDrops).
        // Each member is dialled as its list spells it (dialAs: a name's trailing dot), the ring keeping the canonical id.
        let dialAs: ReadonlyMap<string, string> = new Map();
        const connect = deps.connect ?? ((id: string) => peerClient(id, dialAs.get(id) ?? id, self, config, peerTls, logger, () => cluster!.counters.peerProtocolErrors++, () => groups.dropCopies()));
        cluster = new Cluster({ self, vnodes: config.vnodes, connect, logger, mirrorTtlMs: config.mirrorTtlMs, peerTimeoutMs: config.peerTimeoutMs });
        membership = membershipSource(config, logger, deps.resolve);
        const c = cluster;
        const purges = new RingPurges(logger);
        let wasListed = false;
        membership.start((members, spellings) => {
          dialAs = spellings ?? new Map(); // (read by connect, which setMembers calls)
          const listed = c.listedSelf;
          const changed = c.setMembers(members);
          // Left out of the list after being in it, or listed again after that: the others
          // wrote this node's keys elsewhere meanwhile (and it may have taken writes they did not
          // see), so it keeps none of them. (A node not listed yet when it starts, as under
          // --peers-dns until it is ready, keeps what it loaded: a join, as any start.)
          if (wasListed && c.listedSelf !== listed) void purges.changed(() => false, groups.all());
          else if (changed) void purges.changed(c.ownedHere(), groups.all());
          if (c.listedSelf === true) wasListed = true;
          return c.leftOut === 0; // a member left out is tried again at the source's next read
        });
        // Members may keep copies this node handed out before it (re)started, or whose
        // invalidations they missed: they are asked to drop them (and until each has dropped a
        // previous run's, writes wait for its answers: HandOuts).
        c.startAskingDrops(groups.all().map((g) => g.name));
        // Copies of the other members' keys answer Gets only under their leases (cluster/leases.ts).
        c.startRenewingLeases();
      }
      const node = new CacheNode(config, groups, server, logger, deps.pool, cluster, membership);
      node.snapshotter = deps.snapshotter; // before the admin port, whose metrics include its figures
      if (config.adminPort !== undefined) {
        node.admin = AdminServer.start({ host: config.host, port: config.adminPort, node, latency: node.latency, logger, state: "serving" });
      }
      if (deps.snapshotter !== undefined && config.snapshotIntervalMs > 0) deps.snapshotter.startInterval(config.snapshotIntervalMs);
      // Last, so nothing after it can fail and leave its timer running.
      if (config.gcHeadroomBytes > 0) {
        node.memoryWatch = new MemoryWatch({
          headroomBytes: config.gcHeadroomBytes, intervalMs: MEMORY_WATCH_INTERVAL_MS, logger, heldBytes: () => server.counters.bufferedBytes,
        }).start();
      }
      return node;
    } catch (e) {
      membership?.close(); // and the peer clients, if the cluster was made
      void cluster?.close();
      throw e;
    }
  }
}

/**
 * STALL_SHARE: a clustered node whose loop stalled for this share of an owner's longest wait for
 * its answer drops its mirrors. The rest is slack for the owner's timer firing early and the
 * stall timer's own tick (server-timers.ts STALL_TICKS).
 */
const STALL_SHARE = 0.8;
/**
 * MIN_STALL_MS: no shorter stall counts, whatever the peer timeout: a loop is late by tens of
 * milliseconds under load (a 100 ms peer timeout made one "stall" every 60 ms under 32 pipelining
 * clients). It is STALL_SHARE of an owner's wait with a 125 ms peer timeout; with a shorter
 * one a stall the owner's wait does not outlast can go unseen (a warning at start).
 */
const MIN_STALL_MS = 50;
/** MEMORY_WATCH_INTERVAL_MS: how often the memory watch reads RSS (one read; nothing per request). */
const MEMORY_WATCH_INTERVAL_MS = 250;
