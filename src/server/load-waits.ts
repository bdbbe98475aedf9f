/**
 * LoadWaits is what a Thrift connection does while a reply waits for a load (a miss in a
 * read-through group, or a call forwarded to a peer).
 *
 * Such a request parks its connection (`park`): the replies before it go out at the end of the
 * turn, input that arrives meanwhile queues (reading pauses only past BACKLOG_PAUSE_BYTES or
 * _CHUNKS: CacheServer's `onData`), and serving resumes in order when the load settles. Other
 * connections are not held up. A peer's PeerGet and PeerGetMulti are the exception: the reply is
 * written when its loads settle, out of request order, and the connection goes on serving
 * (`detach`). A member sends all its reads of another member's keys on one connection, and its
 * client matches replies by seqid; in order, every hit behind one slow load would wait for it.
 * One PeerGetMulti at a time: it holds its hits' values (up to the frame size) until its loads
 * settle and starts a load per key, so a second one parks. Peer writes waiting for their
 * invalidations are detached too (`detachable`). What a waiting request holds counts toward
 * --max-buffered (`held`, BufferCap).
 */
import { BinaryWriter } from "../protocol/binary-writer.ts";
import { requestHolds } from "../protocol/protocol-connection.ts";
import {
  METHOD_PEER_DELETE, METHOD_PEER_GET, METHOD_PEER_GET_MULTI, METHOD_PEER_SET, METHOD_PEER_SET_MULTI, type Request,
} from "../protocol/request.ts";
import type { BufferCap } from "./buffer-cap.ts";
import type { CacheServer } from "./cache-server.ts";
import type { Connection } from "./connection.ts";
import type { Faults } from "./faults.ts";
import type { ServerCounters } from "./server-counters.ts";
import type { ServerTimers } from "./server-timers.ts";
import type { TurnEnd } from "./turn-end.ts";

/**
 * MAX_DETACHED bounds the replies of one connection written out of order (`detach`) at once;
 * past it, a PeerGet that waits parks the connection as any read does.
 */
export const MAX_DETACHED = 128;
/**
 * MAX_DETACHED_WRITES bounds the replies of one connection written out of order at once that
 * peer writes may reach; past it, a peer write that waits parks the connection (for its owner's
 * wait at most: Cluster.invalidate's maxWaitMs), so a member cannot pile up waiting writes without
 * end. MAX_DETACHED still bounds the PeerGets among them.
 */
export const MAX_DETACHED_WRITES = 4096;
/**
 * DETACH_OVERHEAD_BYTES: what a reply written out of order holds besides its message's copy and
 * its request's arrays (its output buffer, the promises and closures waiting for it, a write's
 * invalidation calls), counted toward --max-buffered; measured at about 3 KB a peer write.
 */
const DETACH_OVERHEAD_BYTES = 2048;
/**
 * DETACH_MAX_MESSAGE_BYTES: a longer PeerGet (a key is at most --max-key-size; the rest would be
 * header info) parks instead of being copied; DETACH_MAX_MULTI_MESSAGE_BYTES, a longer PeerGetMulti.
 */
export const DETACH_MAX_MESSAGE_BYTES = 8 * 1024;
export const DETACH_MAX_MULTI_MESSAGE_BYTES = 64 * 1024;
/** DETACHED_OUTPUT_BYTES is the first size of a detached reply's own buffer (it grows as needed). */
const DETACHED_OUTPUT_BYTES = 256;

export class LoadWaits {
  private readonly server: CacheServer;
  private readonly connections: ReadonlySet<Connection>;
  private readonly counters: ServerCounters;
  private readonly faults: Faults;
  private readonly turnEnd: TurnEnd;
  private readonly cap: BufferCap;
  private readonly timers: ServerTimers;

  constructor(
    server: CacheServer, connections: ReadonlySet<Connection>, counters: ServerCounters, faults: Faults, turnEnd: TurnEnd, cap: BufferCap,
    timers: ServerTimers,
  ) {
    this.server = server;
    this.connections = connections;
    this.counters = counters;
    this.faults = faults;
    this.turnEnd = turnEnd;
    this.cap = cap;
    this.timers = timers;
  }

  /** release: `req`'s reply is written (or dropped), so it holds nothing now. */
  private release(conn: Connection, req: Request): void {
    if (req.heldBytes === 0) return;
    try {
      req.hold(-req.heldBytes);
    } catch (e) {
      this.faults.internalError(conn, e); // (a bug in counting, kept to this connection)
    }
  }

  /**
   * held counts a change of what a request of `conn` waiting for its loads holds (Request.hold)
   * toward the buffer cap, at once unless `process` is serving the connection (it counts at its
   * end: the cap must not close a connection in the middle of its replies). Returns whether the
   * request is still wanted.
   */
  held(conn: Connection, delta: number): boolean {
    conn.heldBytes += delta;
    if (conn.serving === 0 && delta !== 0) this.cap.account(conn);
    return conn.open && !conn.capClosed;
  }

  /**
   * detachable tells whether the reply `pending` for the request just decoded may be written out
   * of order: a PeerGet, or a PeerGetMulti while no other waits so, of a short message, on a
   * connection with fewer than MAX_DETACHED such replies waiting; and every peer write waiting for
   * the members' answers to its invalidations (mirror-copies.ts `forgetCopies`). Only a member's client
   * sends those, and it matches replies by seqid. A peer write must never hold up its connection:
   * the invalidations its owner waits for may be queued behind it on this one (members writing
   * keys of each other's would each wait for the other's answer until the wait's bound), unless
   * MAX_DETACHED_WRITES wait so already: the one that parks the connection then holds up what
   * comes behind it, a member's invalidations included, for the wait's bound at most (the owner
   * of those may count the member lagging meanwhile, and have it drop its mirrors). What they
   * hold counts toward --max-buffered.
   */
  detachable(conn: Connection, method: number): boolean {
    const reader = conn.proto.reader;
    const length = reader.end - reader.start;
    if (method === METHOD_PEER_SET || method === METHOD_PEER_DELETE || method === METHOD_PEER_SET_MULTI) return conn.detached < MAX_DETACHED_WRITES;
    if (method === METHOD_PEER_GET) return conn.detached < MAX_DETACHED && length <= DETACH_MAX_MESSAGE_BYTES;
    if (method !== METHOD_PEER_GET_MULTI || conn.detachedMulti) return false;
    return conn.detached < MAX_DETACHED && length <= DETACH_MAX_MULTI_MESSAGE_BYTES;
  }

  /**
   * detach lets the connection go on serving while `pending` waits for its load: the request and
   * its reply writer are handed to the promise (ProtocolConnection.detach: a copy of the message,
   * an output buffer of its own), and the reply joins the connection's output when it is written.
   * A connection with such replies waiting does not end until they are written (`flush`), unless
   * the buffer cap closes it (their replies are then dropped); what they hold (the message's copy,
   * the request's arrays, and as they come a PeerGetMulti's copies of its hits and loaded values:
   * `held`) counts toward `--max-buffered` meanwhile.
   */
  detach(conn: Connection, pending: Promise<void>, method: number, t0: number): void {
    const out = new BinaryWriter(DETACHED_OUTPUT_BYTES);
    const { request, reply, bytes: copied } = conn.proto.detach(out); // (what it loads is counted as it comes: `held`)
    const bytes = copied + DETACH_OVERHEAD_BYTES;
    const multi = method === METHOD_PEER_GET_MULTI;
    conn.detached++;
    conn.detachedBytes += bytes;
    if (multi) conn.detachedMulti = true;
    this.counters.detachedReplies++;
    pending
      .catch((e: unknown) => this.faults.fault(conn, e, request, reply))
      .finally(() => {
        conn.detached--;
        conn.detachedBytes -= bytes;
        this.release(conn, request);
        if (multi) conn.detachedMulti = false;
        this.server.timed(conn, method, t0, reply);
        // Closed meanwhile, or closed by the cap (it ends without waiting): nowhere to go.
        if (!this.connections.has(conn) || conn.capClosed) return;
        this.timers.servedNow(conn);
        try {
          if (out.length > 0) {
            const own = conn.proto.reply.out; // (never the shared buffer: that is lent only within `process`)
            own.ensure(out.length);
            own.bytes(out.buffer, 0, out.length);
          }
          this.turnEnd.flushAtTurnEnd(conn);
          this.cap.account(conn);
        } catch (e) {
          this.faults.internalError(conn, e);
        }
      });
  }

  /**
   * park holds the connection until `pending` has written its reply, then serves on in order.
   * What the request holds meanwhile (its message, its arrays: `requestHolds`) counts toward
   * --max-buffered until then, with what its loads add (`held`); uncounted, a few connections
   * each waiting on a 15 MB Get or a GetMulti of a million keys held hundreds of MB past the cap.
   */
  park(conn: Connection, pending: Promise<void>, method: number, t0: number): void {
    conn.waiting = true;
    const reader = conn.proto.reader;
    conn.waitingBytes = requestHolds(conn.proto.request, reader.end - reader.start); // (counted by `process`'s account)
    pending
      .catch((e: unknown) => this.faults.fault(conn, e))
      .finally(() => {
        this.server.timed(conn, method, t0);
        conn.waiting = false;
        conn.waitingBytes = 0;
        conn.lookingAhead = false;
        this.release(conn, conn.proto.request); // (the one it waited for: nothing is decoded meanwhile)
        if (!this.connections.has(conn)) return;
        this.timers.servedNow(conn);
        try {
          this.server.process(conn);
        } catch (e) {
          // A bug outside `process`'s own guard: thrown here it would reject a promise nobody
          // awaits (node.ts only logs that), and the connection, served no more, would hang.
          this.faults.internalError(conn, e);
        }
      });
  }
}
