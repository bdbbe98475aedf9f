/**
 * Connection is the typed per-socket state of the Thrift port.
 *
 * It owns the connection's protocol state (frame reader, decoder, the reusable request, the reply
 * writer and its output buffer; `detach` hands the request and writer of a reply that waits out of
 * order to that reply and gives the connection new ones) and the flow-control flags the server drives:
 * - `held`: the reader still holds unprocessed input because the output passed its bound; the
 *   socket is paused and processing resumes on `drain`.
 * - `backlog`: chunks that arrived while input was held or the connection waited, to be served
 *   in order after it (`backlogBytes` in all).
 * - `waiting`: a request's reply waits for a load; nothing more is served on this connection (so
 *   replies keep request order and the request's byte ranges stay valid). Reading goes on into
 *   `backlog` until it holds BACKLOG_PAUSE_BYTES or _CHUNKS (cache-server.ts), then pauses.
 * - `detached`: how many replies of this connection wait for their loads out of request order
 *   (PeerGet, and one PeerGetMulti at a time: load-waits.ts `detach`); it is served meanwhile,
 *   and does not end before they are written (unless the buffer cap closes it).
 * - `queued`: input arrived this turn and waits in the server's ready list to be served at the end
 *   of the turn; later chunks queue in `backlog` behind it.
 * - `paused`: reading from the socket is paused.
 * - `closing`: the connection ends once its output is flushed (a lingering close: lingering-close.ts);
 *   input that arrives meanwhile is dropped.
 * - `inputEnded`: the client sent FIN, or the node is closing; the connection closes once what it
 *   received is served.
 * - `rejected`: accepted past the connection limit; its first request is answered OVERLOADED and
 *   the connection closed.
 * - `authed`: the connection sent the node's auth token (always true on a node without one).
 * - `buffered`: bytes this connection holds in the server (partial input, queued output, answers
 *   kept by the look-ahead, what its detached requests hold, what its requests waiting for loads
 *   hold: `heldBytes`), as last counted toward the server-wide cap.
 * - `sharedStart`/`sharedEnd`: replies of this connection waiting in the server's shared output
 *   buffer for the end of the event loop's turn (`sharedStart` is -1 when there are none). They
 *   go out before anything in the connection's own output buffer.
 *
 * `noteMember` names the cluster member a connection comes from, from its intro PeerPing.
 */
import type { Socket } from "bun";
import { canonicalMember } from "../cluster/member-id.ts";
import type { ProtocolLimits } from "../protocol/limits.ts";
import { BinaryWriter } from "../protocol/binary-writer.ts";
import { ProtocolConnection } from "../protocol/protocol-connection.ts";
import { ReplyWriter } from "../protocol/reply-writer.ts";
import type { Request } from "../protocol/request.ts";
import type { Prefetches } from "./prefetch.ts";

/** CONNECTION_OUTPUT_BYTES: a new connection's output buffer is made by its first reply. */
const CONNECTION_OUTPUT_BYTES = 0;

export class Connection {
  readonly proto: ProtocolConnection;
  readonly socket: Socket<Connection>;
  readonly id: number;
  readonly remote: string;
  held = false;
  waiting = false;
  detached = 0;
  detachedBytes = 0; // what the detached requests hold (copies of their messages, their arrays, a multi's hits)
  detachedMulti = false; // one of them is a PeerGetMulti (at most one at a time)
  /** heldBytes: what its requests waiting for loads hold (a GetMulti's hits and loaded values: Request.hold). */
  heldBytes = 0;
  /**
   * waitingBytes: what the request it waits on holds besides that (its message and arrays:
   * requestHolds), counted while it waits. Kept apart from the request's `heldBytes`, which
   * GetMulti also holds against its reply's frame limit.
   */
  waitingBytes = 0;
  /** serving: `process` is serving it (nested calls counted); the buffer cap then waits for its end. */
  serving = 0;
  queued = false;
  paused = false;
  closing = false;
  inputEnded = false;
  /** capClosed: closed for the server's buffer cap; its bytes are no longer counted. */
  capClosed = false;
  rejected = false;
  authed = false;
  /**
   * member is the cluster member whose peer client this connection is, as its intro PeerPing's
   * sender said (INTRO_SEQID: a node's peer client pings first on every connection): HandOuts,
   * dispatch's `member` while it is in the member list (Cluster.memberOf).
   */
  member: string | undefined = undefined;
  buffered = 0;
  backlog: Uint8Array[] | null = null;
  /** backlogBytes is the length of the chunks in `backlog`. */
  backlogBytes = 0;
  bytesIn = 0;
  /**
   * lastActive is when the client last sent bytes or had a request answered (the server clock),
   * for the idle timeout; `active`: the client sent bytes, or the socket took reply bytes, since
   * the idle sweep last looked (the sweep counts that as activity at its own time, so neither a
   * read nor a write reads the clock: a clock read per data event was ~1 % of a node's time
   * under pipelined Gets).
   */
  lastActive = 0;
  active = false;
  /**
   * backedUp: a write since the client last sent anything was short (the kernel's buffer filled):
   * when the node's queue empties, up to a kernel buffer of replies may still wait for the client.
   */
  backedUp = false;
  /** handshakeTimer runs from a TLS connection's open until its handshake is done (ConnectionLifecycle.onOpen). */
  handshakeTimer: ReturnType<typeof setTimeout> | undefined = undefined;
  /** authTimer runs, on a node with an auth token, from the connection's open until it authenticates (AUTH_MS). */
  authTimer: ReturnType<typeof setTimeout> | undefined = undefined;
  bytesOut = 0;
  requests = 0;
  /** prefetches are the Gets loaded or forwarded ahead while the connection waited (prefetch.ts); made on first use. */
  prefetches: Prefetches | null = null;
  /** lookingAhead: chunks queued while it waits are read for Gets to start ahead (look-ahead.ts). */
  lookingAhead = false;
  /** aheadEnd: where in the input the look-ahead stopped (a frame boundary: look-ahead.ts). */
  aheadEnd = 0;
  /** aheadBlocked: the frame at aheadEnd ends the look-ahead until it is served (not a full table). */
  aheadBlocked = false;
  /** aheadCarry[0, aheadCarried): the start of the frame at aheadEnd, cut by its chunk's end. */
  aheadCarry: Uint8Array | null = null;
  aheadCarried = 0;
  /** readerBytes is how many bytes of input were handed to the reader (the backlog's follow). */
  readerBytes = 0;
  sharedStart = -1;
  sharedEnd = 0;
  /** flushQueued: detached replies joined its own output, to be written at the end of the turn. */
  flushQueued = false;
  /** open is false once the server saw the socket close, or refuse a write (TurnEnd.lost). */
  open = true;

  constructor(socket: Socket<Connection>, id: number, limits: ProtocolLimits) {
    this.socket = socket;
    this.id = id;
    this.remote = `${socket.remoteAddress}`;
    // Small first buffers: most connections of a churning or hostile client never need more, and
    // the writer doubles to its steady size after a few replies (then shrinks back after bursts).
    this.proto = new ProtocolConnection(limits, new ReplyWriter(new BinaryWriter(CONNECTION_OUTPUT_BYTES)));
  }

  /** dropBacklog forgets the queued input (the connection is closing). */
  dropBacklog(): void {
    this.backlog = null;
    this.backlogBytes = 0;
  }

  /** queuedOutput is how many reply bytes wait to be written (own buffer and shared buffer). */
  get queuedOutput(): number {
    return this.proto.reply.out.length + (this.sharedStart < 0 ? 0 : this.sharedEnd - this.sharedStart);
  }
}

/** MEMBER_ID decodes a PeerPing's sender as the peer client encoded it (UTF-8: member ids are strings of --peers). */
const MEMBER_ID = new TextDecoder();
/** MAX_MEMBER_ID_BYTES: a PeerPing sender longer than this (no host:port is) does not name the connection's member. */
const MAX_MEMBER_ID_BYTES = 512;

/**
 * noteMember takes the sender of the intro PeerPing (INTRO_SEQID; PingRequest field 1, decoded
 * into the group range) as the member the connection belongs to: a node's peer client pings so
 * first on each connection. Later pings (liveness checks, anyone's) name nothing. The id is read
 * into the canonical spelling, as the member lists are (member-id.ts): a node of a version that
 * sent its --self as written (`127.0.0.1:08001`, `Cache-A.:8001`) was otherwise no member here,
 * and every member counted as a holder of what it fetched. One that is no id stays as written.
 */
export function noteMember(conn: Connection, req: Request): void {
  const length = req.groupLength;
  if (length <= 0 || length > MAX_MEMBER_ID_BYTES) return;
  const id = MEMBER_ID.decode(req.buffer.subarray(req.groupStart, req.groupStart + length));
  conn.member = canonicalMember(id) ?? id;
}
