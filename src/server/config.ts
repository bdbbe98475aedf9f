/**
 * Node configuration: what a node is made of (`NodeConfig`, one field per flag of `node.ts`) and
 * its `DEFAULTS`. A config that cannot run is refused with `ConfigError`, whose message names the
 * flag and what it expected.
 *
 * `isClustered` and `longestLoadTimeoutMs` read what a config implies.
 *
 * The flags are parsed by flags.ts (`parseArgs`), their values by flag-values.ts, and checked
 * together by config-checks.ts; `node.ts --help` is usage.ts.
 */
import { DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_KEY_BYTES } from "../protocol/limits.ts";
import type { AdmissionPolicy } from "../cluster/group-options.ts";
import { DEFAULT_MAX_LOADS } from "../cluster/load-bound.ts";
import type { LogLevel } from "./log.ts";

export const VERSION = "0.1.0";

export interface GroupSpec {
  name: string;
  /** memory in bytes; undefined = an equal share of what the other groups leave. */
  memory?: number;
  /** defaultTtlMs; 0 = no expiry. */
  ttlMs: number;
  /** admission of loaded values: "lru-k" (default) or "always". */
  admission?: AdmissionPolicy;
  /** admissionK is LRU-K's K (default 2). */
  admissionK?: number;
  /** negativeTtlMs caches loader "not found" answers; 0 = off (default). */
  negativeTtlMs?: number;
  /** loadTimeoutMs overrides --load-timeout for this group. */
  loadTimeoutMs?: number;
  /** multiLoadWindow: loads one GetMulti runs at once (default: half the loader pool's places, at most 32). */
  multiLoadWindow?: number;
  /**
   * maxItemSize: the group's largest item (at most --max-item-size, the default): a small group
   * whose items are small gets small slab pages with it (store-api.ts defaultPageSize).
   */
  maxItemSize?: number;
}

export interface NodeConfig {
  host: string;
  port: number;
  memory: number;
  groups: GroupSpec[];
  maxItemSize: number;
  maxKeySize: number;
  maxFrameSize: number;
  maxConnections: number;
  maxOutputBytes: number;
  expiryIntervalMs: number;
  expiryBudget: number;
  logLevel: LogLevel;
  logJson: boolean;
  /** loaders is the path of a loaders module (its function exports become read-through groups). */
  loaders?: string;
  loaderThreads: number;
  /** loaderConcurrency is how many loads each loader thread runs at once. */
  loaderConcurrency: number;
  loaderQueue: number;
  /** maxLoads bounds the loads under way on the node, all groups together (load-bound.ts); more are OVERLOADED. */
  maxLoads: number;
  loadTimeoutMs: number;
  /** self is this node's id (host:port) as its peers reach it; default host:port of the listener. */
  self?: string;
  /** peers is a static member list (this node may be in it), as dialled (a name's trailing dot kept: member-id.ts). */
  peers?: string[];
  /** peersFile lists the members, re-read on change and on SIGHUP. */
  peersFile?: string;
  /** peersDns is `name:port`: every A/AAAA record of name is a member on port (the name looked up as written, its trailing dot kept). */
  peersDns?: string;
  peersDnsIntervalMs: number;
  /** vnodes per member on the ring. */
  vnodes?: number;
  /** mirrorShare is the part of each group's memory for hot copies of keys owned elsewhere. */
  mirrorShare: number;
  /** mirrorTtlMs caps how long a mirrored copy lives (0 = only its own TTL), bounding its staleness. */
  mirrorTtlMs: number;
  peerTimeoutMs: number;
  peerConnections: number;
  /** authToken, when set, must be sent (Auth) first on every connection; peers send it too. */
  authToken?: string;
  /** authTokenFile is the file --auth-token-file read the token from (checked at start: secretFileWarning). */
  authTokenFile?: string;
  /** tlsCert/tlsKey: PEM files; the Thrift port (and peer connections) use TLS. */
  tlsCert?: string;
  tlsKey?: string;
  /** tlsCa: PEM certificates peers are checked against (default: this node's own certificate). */
  tlsCa?: string;
  /** insecure allows a non-loopback address without an auth token. */
  insecure: boolean;
  /** idleTimeoutMs closes idle connections (0 = never). */
  idleTimeoutMs: number;
  /**
   * seedErrors answers the errors of the seed's seven methods as the seed did, a Thrift
   * application exception, for clients generated from the seed's IDL (protocol/reply-writer.ts).
   */
  seedErrors: boolean;
  /** maxRequestsPerEvent bounds the requests served per turn for one connection. */
  maxRequestsPerEvent: number;
  /** maxBufferedBytes caps what all connections together hold (partial input + output). */
  maxBufferedBytes: number;
  /** adminPort serves /metrics, /healthz and /stats over HTTP on --host (off when absent). */
  adminPort?: number;
  /** snapshot is the path of the snapshot file (off when absent). */
  snapshot?: string;
  /** snapshotIntervalMs writes the snapshot periodically (0 = only at shutdown). */
  snapshotIntervalMs: number;
  /** gcHeadroomBytes: garbage allowed above the retained RSS before a full collection (0 = off). */
  gcHeadroomBytes: number;
}

export const DEFAULTS: NodeConfig = {
  host: "127.0.0.1",
  port: 8001,
  memory: 64 * 1024 * 1024,
  groups: [],
  maxItemSize: 1024 * 1024,
  maxKeySize: DEFAULT_MAX_KEY_BYTES,
  maxFrameSize: DEFAULT_MAX_FRAME_BYTES,
  maxConnections: 10_000,
  maxOutputBytes: 16 * 1024 * 1024,
  expiryIntervalMs: 100,
  expiryBudget: 2_000,
  logLevel: "info",
  logJson: false,
  loaderThreads: 2,
  loaderConcurrency: 16,
  loaderQueue: 256,
  maxLoads: DEFAULT_MAX_LOADS,
  loadTimeoutMs: 10_000,
  peersDnsIntervalMs: 5_000,
  mirrorShare: 0.125,
  mirrorTtlMs: 10_000,
  peerTimeoutMs: 1_000,
  peerConnections: 2,
  insecure: false,
  idleTimeoutMs: 0,
  seedErrors: false,
  maxRequestsPerEvent: 1024,
  maxBufferedBytes: 1024 * 1024 * 1024,
  snapshotIntervalMs: 0,
  gcHeadroomBytes: 64 * 1024 * 1024,
};

export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

/** isClustered tells whether the node has peers (--peers, --peers-file or --peers-dns). */
export function isClustered(config: Pick<NodeConfig, "peers" | "peersFile" | "peersDns">): boolean {
  return config.peers !== undefined || config.peersFile !== undefined || config.peersDns !== undefined;
}

/** longestLoadTimeoutMs is the longest load timeout of any group (--load-timeout or a group's own). */
export function longestLoadTimeoutMs(config: NodeConfig): number {
  return Math.max(config.loadTimeoutMs, ...config.groups.map((g) => g.loadTimeoutMs ?? 0));
}
