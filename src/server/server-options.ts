/**
 * ServerOptions are what a CacheServer (the node's Thrift port) is made with: its address, its
 * limits and timeouts, and what it reads from the rest of the node (clock, logger, cluster,
 * figures). CacheNode builds them from the node's config.
 */
import type { Cluster } from "../cluster/cluster.ts";
import type { ProtocolLimits } from "../protocol/limits.ts";
import type { AccessControl } from "./access.ts";
import type { LatencyHistogram } from "./latency.ts";
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
  /**
   * stallMs: an event loop found stalled this long (a timer of its own, ticking STALL_TICKS times
   * as often, late by it: a SIGSTOP, a swapped-out process, a long pause) drops the mirrors of a
   * clustered node (`stalled`). Default: none.
   */
  stallMs?: number;
  /**
   * drainTimeoutMs bounds how long close() waits for connections waiting for a load (the others
   * get DRAIN_MS at most).
   */
  drainTimeoutMs: number;
  clock: () => number;
  logger: Logger;
  /** cluster returns the node's cluster once it exists (it needs the listening port first). */
  cluster?: () => Cluster | undefined;
  /** access, when set, requires every connection to send the auth token first. */
  access?: AccessControl;
  /** tls serves the port over TLS with this certificate and key (PEM). */
  tls?: { cert: string; key: string };
  /** idleTimeoutMs closes a connection idle this long (0 = never). */
  idleTimeoutMs?: number;
  /** seedErrors: errors of the seed's methods go as application exceptions (ReplyWriter.seedErrors). */
  seedErrors?: boolean;
  /** handshakeTimeoutMs: a TLS connection whose handshake is not done this long after it opened is closed (default HANDSHAKE_MS). */
  handshakeTimeoutMs?: number;
  /** authTimeoutMs: on a node with an auth token, a connection not authenticated this long after it opened is closed (default AUTH_MS). */
  authTimeoutMs?: number;
  /** sendStallMs: with an idle timeout, a connection whose replies wait this long untaken is closed (default SEND_STALL_MS). */
  sendStallMs?: number;
  /** lingerMs: a connection the node has ended is cut this long after unless its client closed first (default LINGER_MS). */
  lingerMs?: number;
  /** maxRequestsPerEvent bounds the requests served per turn for one connection (fairness). */
  maxRequestsPerEvent?: number;
  /** maxBufferedBytes caps the bytes all connections together hold (partial input + output). */
  maxBufferedBytes?: number;
  /**
   * checkMemory has the node's memory watch look at its garbage now, in the middle of a turn: once
   * the buffer cap has closed connections (what they held is garbage at once, and a turn may close
   * many), and every MEMORY_CHECK_BYTES of traffic or MEMORY_CHECK_MS served (turn-end.ts).
   */
  checkMemory?: () => void;
  /** figures returns the node's figures for NodeStats. */
  figures?: () => (readonly [string, number])[];
  /** latency records per-method durations and errors (the metrics read it at scrape time). */
  latency?: LatencyHistogram;
}
