// ClientOptions: what a CacheClient is made with, and the checks of its numbers. A client turns
// them into one Endpoint, shared by its connections: where they dial and how (ClientConnection,
// Dialer, FirstCalls); the timing options go to its sweep and its down-peer probe. A number out
// of range throws RangeError naming the option, when the client is made: `positive` for a count,
// `delay` for what a timer waits (at most MAX_TIMER_MS).

import type { ProtocolLimits } from "../protocol/limits.ts";
import { METHOD_CLEAR, METHOD_DELETE, METHOD_PEER_INVALIDATE, METHOD_SET, METHOD_SET_MULTI, peerMethod } from "../protocol/request.ts";
import { MAX_TIMER_MS } from "../cluster/loader.ts";

export interface ClientOptions {
  host: string;
  port: number;
  /** Long-lived connections; requests spread round-robin (default 2). */
  connections?: number;
  /**
   * writeConnection: writes go on the first connection, other calls round-robin over the rest
   * (with 2 or more connections; a node's clients of its peers set it: see `pick`). Default false.
   */
  writeConnection?: boolean;
  /** Per call (default 1000); expiry → PEER_UNAVAILABLE "timeout", the late reply is dropped. */
  timeoutMs?: number;
  /**
   * loadWaitMs: how much longer than timeoutMs a PeerGet or PeerGetMulti (`peer: true`) may wait
   * while the node answers something within each timeout: the node may be loading the key, which
   * takes as long as its loader (a node's peer clients set its longest load timeout); a
   * PeerGetMulti, that once per `loadsAtOnce` of its keys (CacheClient.peerGetMultiOf); 8 times
   * in all at most (CallTimeouts' MAX_LATE_LOAD_WAITS). While such
   * calls wait and nothing else is answered on their connection, a PeerPing on it asks whether it
   * still answers; a connection that answers nothing for a timeout fails them at once, and is
   * replaced. Default 0: every call fails at timeoutMs.
   */
  loadWaitMs?: number;
  /** Default 1000. */
  connectTimeoutMs?: number;
  /** Consecutive failures before the peer is marked down (default 3). */
  maxFailures?: number;
  /**
   * While down, a PeerPing probe at this interval (default 500); the first comes after a tenth of
   * it, and the waits double up to it. A reply marks the peer up.
   */
  probeIntervalMs?: number;
  /** Reply decoding obeys the same limits as the server (a hostile peer = a hostile client). */
  limits?: Partial<ProtocolLimits>;
  /** authToken is sent (Auth) first on every connection, for nodes started with a token. */
  authToken?: string;
  /**
   * sender is a cluster node's own member id, for its peer clients: a PeerPing carrying it goes
   * first (after Auth) on every connection, so the peer knows which member the connection is
   * (its HandOuts: which members may hold copies of its keys, and who forwarded a write).
   */
  sender?: string;
  /** tls dials with TLS: true trusts the system CAs; `ca` trusts the given PEM certificates. */
  tls?: boolean | { ca?: string; serverName?: string };
  /**
   * writeAtTurnEnd: the calls made during one turn of the event loop go out together at its end
   * (`setImmediate`), not after each callback that made them (a microtask; the default, which
   * writes a lone call soonest). A node's peer clients use it, so the forwards of every connection
   * served in a turn reach a peer in one write and wake it once.
   */
  writeAtTurnEnd?: boolean;
  /**
   * onHealth hears the peer marked "down" (with the reason of the failure that did it), "still
   * down" for another reason (at most every 30 s), and "up" again (a node's peer clients log them).
   */
  onHealth?: (state: "down" | "still down" | "up", reason: string) => void;
  /**
   * onProtocolError hears each reply that broke the protocol: a malformed frame, a reply to a
   * seqid not in flight, a reply named for another method. The connection is dropped (its calls
   * fail PEER_UNAVAILABLE); `counters.protocolErrors` counts them. Never expected of a node: it
   * means a reply went astray or a peer is not what it claims (a node's peer clients log them).
   */
  onProtocolError?: (reason: string) => void;
}

/**
 * WRITES are the calls `pick` sends on the write connection (`writeConnection`), in their client
 * and peer forms; a connection with one waiting is reset, not replaced (TimeoutSweep.replace).
 */
export const WRITES: ReadonlySet<number> = new Set(
  [METHOD_SET, METHOD_DELETE, METHOD_CLEAR, METHOD_SET_MULTI].flatMap((m) => [m, peerMethod(m)]).concat(METHOD_PEER_INVALIDATE),
);

export interface PeerOption {
  /** Use the peer variant of the method (PeerGet, …): served by that node only, never forwarded. */
  peer?: boolean;
}

/** Endpoint is the part of a client's options its connections use, checked (CacheClient's constructor). */
export interface Endpoint {
  host: string;
  port: number;
  connectTimeoutMs: number;
  limits: ProtocolLimits;
  /** authToken is sent (Auth) as the first call on every new connection. */
  authToken?: string;
  /** sender is sent in a PeerPing (INTRO_SEQID) right after, on every new connection (ClientOptions). */
  sender?: string;
  /** writeAtTurnEnd writes a turn's calls at its end rather than after each callback (ClientOptions). */
  writeAtTurnEnd?: boolean;
  /** tls dials with TLS (true: system CAs; ca: trust these PEM certificates). */
  tls?: boolean | { ca?: string; serverName?: string };
}

/** positive checks a count option: a whole number, at least 1. */
export function positive(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 1) throw new RangeError(`ClientOptions.${name} must be a positive integer, got ${value}`);
  return value;
}

/**
 * delay checks an option a timer waits for: positive, and at most MAX_TIMER_MS (a longer delay
 * fires after 1 ms: a "practically infinite" timeout failed every call at once, and a down peer
 * was probed every millisecond).
 */
export function delay(name: string, value: number): number {
  if (positive(name, value) > MAX_TIMER_MS) throw new RangeError(`ClientOptions.${name} must be at most ${MAX_TIMER_MS} ms (about 24.8 days), got ${value}`);
  return value;
}
