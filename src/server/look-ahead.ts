/**
 * Look-ahead: the Gets queued behind a read a connection waits for, started at once.
 *
 * A connection is served in order: while a Get waits for its load (or for the key's owner), the
 * calls behind it wait too, and their replies keep request order. A client that pipelines Gets
 * of cold keys on one connection would then pay one load after another: our own peer client
 * sends every PeerGet to a member on one read connection, so cold loads between two members
 * would run one at a time, whatever the clients do (bench:cold, bench/RESULTS.md). groupcache
 * over HTTP/1.1 runs them side by side.
 *
 * So when a connection parks on a read (Get, GetMulti or a peer's variant of them), the server
 * looks at the calls behind it, up to the first write, and for each Get or PeerGet of a key the
 * store lacks:
 * - a key this node loads (a lone node's, an owned one, a peer's Get of an owned key), in a group
 *   with a loader: its load starts now, through the group's singleflight (`Prefetches.startLoad`);
 * - a plain Get of a key another member owns and the mirror lacks: it is forwarded now
 *   (`Prefetches.start`, the prefetch of server/prefetch.ts).
 * The outcome is kept for that Get, which takes it at its turn (dispatch and routing) instead of
 * loading or forwarding again: the replies are the ones serving each Get in turn would give, in
 * the same order, and the loads overlap. Reads between them (GetMulti, Stats, pings) are passed
 * over; a write, anything that does not decode, a oneway call or a decode-time refusal ends the
 * look-ahead, as does a full table (prefetch.ts bounds it per connection).
 *
 * What it reads: the rest of the chunk the connection waits in, and, framed, the chunks queued
 * behind it (`backlog`) and those that arrive while it waits (`more`); a frame of up to 4 KiB cut
 * by a chunk's end is kept and completed by the next chunk (a larger one ends the look-ahead).
 * Each frame is read once however many waits come before it (`conn.aheadEnd`). Framed frames are
 * decoded by the server's own decoder (any field order, any method), and so are the frames of the
 * header transports (THeader, Kitex's TTHeader: framed the same way). The buffered transport (no
 * lengths) is read with `peekCalls` in the current chunk only, plain Gets only.
 */
import type { Cluster } from "../cluster/cluster.ts";
import type { Group } from "../cluster/group.ts";
import type { Groups } from "../cluster/groups.ts";
import { readI32 } from "../bytes/bytes.ts";
import { ProtocolError } from "../protocol/errors.ts";
import type { ProtocolLimits } from "../protocol/limits.ts";
import { PEEK_METHOD, PEEK_STRIDE, peekCalls } from "../protocol/peek-calls.ts";
import { RequestDecoder } from "../protocol/request-decoder.ts";
import {
  METHOD_GET, METHOD_GET_MULTI, METHOD_NODE_STATS, METHOD_PEER_GET, METHOD_PEER_GET_MULTI, METHOD_PEER_PING,
  METHOD_PEER_STATS, METHOD_STATS, Request,
} from "../protocol/request.ts";
import { TRANSPORT_BUFFERED } from "../protocol/wire.ts";
import { WARM_MAX } from "../store/warm.ts";
import type { Connection } from "./connection.ts";
import type { Prefetches } from "./prefetch.ts";

/**
 * isRead tells whether a call leaves every key as it was: such calls are passed over by the
 * look-ahead and keep what it started; any other call drops it all (a connection reads its own
 * writes).
 */
export function isRead(method: number): boolean {
  return method === METHOD_GET || method === METHOD_PEER_GET || method === METHOD_GET_MULTI || method === METHOD_PEER_GET_MULTI ||
    method === METHOD_STATS || method === METHOD_PEER_STATS || method === METHOD_PEER_PING || method === METHOD_NODE_STATS;
}

/** What `consider` says of a call: go on past it, or stop there for good, or until the table has room. */
const GO_ON = 0;
const BLOCKED = 1;
const FULL = 2;

/** PLAIN receives what `peekCalls` lists on the buffered transport (scratch: all of it is synchronous). */
const PLAIN = new Int32Array(WARM_MAX * PEEK_STRIDE);
const EMPTY = new Uint8Array(0);
/** CARRY_BYTES bounds a frame cut by a chunk's end that is kept for the next chunk (a Get's is ~60 bytes). */
const CARRY_BYTES = 4096;

export class LookAhead {
  private readonly decoder: RequestDecoder;
  /** scratch receives each decoded call (never the connection's own request, which is waiting). */
  private readonly scratch = new Request();

  constructor(
    private readonly groups: Groups,
    /** clusterOf returns the node's cluster, if it has one (it is made after the port listens). */
    private readonly clusterOf: () => Cluster | undefined,
    private readonly limits: ProtocolLimits,
    /** tableOf returns the connection's table of answers kept ahead, made on first use. */
    private readonly tableOf: (conn: Connection) => Prefetches,
  ) {
    this.decoder = new RequestDecoder(limits);
  }

  /**
   * begin: `conn` now waits for the reply of a read; start what follows it (see the file header).
   * Framed, each frame is read once: a look-ahead goes on from where the last one stopped
   * (`conn.aheadEnd`), when that is still ahead of the connection (what was started for the
   * frames between is still kept, since no write came between), so a pipeline of reads that
   * each wait costs one decode per frame, not one per frame per wait.
   */
  begin(conn: Connection): void {
    conn.lookingAhead = false;
    this.dropCarry(conn); // (a frame cut by a chunk's end is read again from its chunks below)
    const reader = conn.proto.reader;
    const start = reader.readPosition();
    if (start < 0) return;
    const chunk = reader.chunkBytes;
    if (reader.transport === TRANSPORT_BUFFERED) return this.plainGets(conn, chunk, start);
    // Offsets in the connection's input stream: `chunk` ends where the reader's input ends, and
    // the queued chunks follow it.
    let at = conn.readerBytes - chunk.length;
    // Stopped ahead of the connection at a frame that ends it for good (a write, say): nothing to
    // do until the connection has served it (only a full table is worth another look).
    if (conn.aheadEnd >= at + start && conn.aheadBlocked) return;
    const from = Math.max(at + start, conn.aheadEnd);
    conn.aheadEnd = from;
    conn.aheadBlocked = false;
    if (from < at + chunk.length && !this.frames(conn, chunk, from - at, at)) return;
    at += chunk.length;
    const backlog = conn.backlog;
    if (backlog !== null) {
      for (let i = 0; i < backlog.length; i++) {
        const b = backlog[i]!;
        if (from < at + b.length && !this.frames(conn, b, Math.max(0, from - at), at)) return;
        at += b.length;
      }
    }
    conn.lookingAhead = true; // it read all that came: the chunks that come while it waits are next
  }

  /** more: a chunk queued behind the read the connection waits for (the last in its backlog). */
  more(conn: Connection, chunk: Uint8Array): void {
    if (!conn.lookingAhead) return;
    const at = conn.readerBytes + conn.backlogBytes - chunk.length;
    if (at === conn.aheadEnd + conn.aheadCarried) this.frames(conn, chunk, 0, at);
    else conn.lookingAhead = false; // (not where the last one ended: a chunk it did not see)
  }

  /**
   * frames starts the Gets of the whole frames in buf[p, end) (framed or header transports; buf[0] is at
   * `base` in the input stream), and moves `conn.aheadEnd` past each frame it has done with;
   * false, and the look-ahead ended at the frame that ends it (file header), left for the next.
   * A frame of at most CARRY_BYTES cut by the chunk's end is kept (`conn.aheadCarry`) and read
   * when the next chunk completes it: TCP cuts a pipeline anywhere.
   */
  private frames(conn: Connection, buf: Uint8Array, p: number, base: number): boolean {
    const end = buf.length;
    const max = this.limits.maxFrameBytes;
    const req = this.scratch;
    const transport = conn.proto.reader.transport; // framed, or a header transport (framed the same way)
    try {
      if (conn.aheadCarried > 0) {
        // The rest of the frame the last chunk cut (p is 0: this chunk follows it).
        const carry = conn.aheadCarry!;
        let have = conn.aheadCarried;
        const prefix = Math.min(Math.max(0, 4 - have), end - p);
        carry.set(buf.subarray(p, p + prefix), have);
        have += prefix;
        p += prefix;
        if (have < 4) return this.carried(conn, have);
        const len = readI32(carry, 0);
        if (len <= 0 || len > max || len > CARRY_BYTES - 4) return this.stop(conn, true);
        const body = Math.min(len + 4 - have, end - p);
        carry.set(buf.subarray(p, p + body), have);
        have += body;
        p += body;
        if (have < len + 4) return this.carried(conn, have);
        this.decoder.decode(carry, 4, 4 + len, transport, req);
        this.dropCarry(conn);
        const next = this.consider(conn, req);
        if (next !== GO_ON) return this.stop(conn, next === BLOCKED);
      }
      while (p < end) {
        conn.aheadEnd = base + p;
        const len = end - p < 4 ? -1 : readI32(buf, p);
        if (end - p >= 4 && (len <= 0 || len > max)) return this.stop(conn, true);
        if (len < 0 || len > end - p - 4) {
          // Cut by the chunk's end: kept for the next chunk if small (a larger one ends it).
          if (len > CARRY_BYTES - 4) return this.stop(conn, true);
          const carry = (conn.aheadCarry ??= new Uint8Array(CARRY_BYTES));
          carry.set(buf.subarray(p, end), 0);
          return this.carried(conn, end - p);
        }
        this.decoder.decode(buf, p + 4, p + 4 + len, transport, req);
        const next = this.consider(conn, req);
        if (next !== GO_ON) return this.stop(conn, next === BLOCKED);
        p += 4 + len;
      }
      conn.aheadEnd = base + end;
      return true;
    } catch (e) {
      if (e instanceof ProtocolError) return this.stop(conn, true); // its turn answers it
      throw e;
    } finally {
      req.releaseItems();
      req.buffer = EMPTY; // keep no chunk alive
      req.header.cursor.reset(EMPTY, 0, 0, false);
    }
  }

  /** stop ends the look-ahead at `conn.aheadEnd`; `blocked`: that frame ends it for good (see `begin`). */
  private stop(conn: Connection, blocked: boolean): false {
    conn.lookingAhead = false;
    conn.aheadBlocked = blocked;
    this.dropCarry(conn);
    return false;
  }

  /** dropCarry forgets a cut frame's start (its buffer too: a connection keeps none while it need not). */
  private dropCarry(conn: Connection): void {
    conn.aheadCarried = 0;
    conn.aheadCarry = null;
  }

  /** carried: the chunk ended inside the frame at `conn.aheadEnd`, `have` bytes of it kept. */
  private carried(conn: Connection, have: number): true {
    conn.aheadCarried = have;
    return true;
  }

  /**
   * consider starts the call's load or forward if it is a Get to start: GO_ON, or what ends the
   * look-ahead there: BLOCKED (a write, a oneway call, a decode-time refusal) or FULL (the table).
   */
  private consider(conn: Connection, req: Request): number {
    if (req.errorCode !== 0 || req.oneway) return BLOCKED;
    const method = req.method;
    if (method !== METHOD_GET && method !== METHOD_PEER_GET) return isRead(method) ? GO_ON : BLOCKED;
    const group = this.groups.find(req.buffer, req.groupStart, req.groupLength);
    if (group === undefined) return GO_ON; // answered UNKNOWN_GROUP at its turn
    return this.start(conn, group, method, req.buffer, req.keyStart, req.keyLength) ? GO_ON : FULL;
  }

  /** plainGets starts the plain Gets at the head of a buffered chunk (up to the first other call). */
  private plainGets(conn: Connection, buf: Uint8Array, start: number): void {
    const limits = this.limits;
    const listed = peekCalls(buf, start, buf.length, PLAIN, true, limits.maxFrameBytes, false);
    for (let i = 0; i < listed; i++) {
      const o = i * PEEK_STRIDE;
      const keyLength = PLAIN[o + 3]!;
      if (PLAIN[o + PEEK_METHOD] !== METHOD_GET || keyLength > limits.maxKeyBytes) return;
      const group = this.groups.find(buf, PLAIN[o]!, PLAIN[o + 1]!);
      if (group !== undefined && !this.start(conn, group, METHOD_GET, buf, PLAIN[o + 2]!, keyLength)) return;
    }
  }

  /**
   * start loads or forwards the Get (`method`: Get or PeerGet) of buf[ks, ks+kl) in `group` ahead
   * of its turn, if its turn would load or forward it; false when the table is full, or the
   * loader has no place to spare for loads ahead (`Group.loadsAhead`, `Group.loads`).
   */
  private start(conn: Connection, group: Group, method: number, buf: Uint8Array, ks: number, kl: number): boolean {
    const cluster = this.clusterOf();
    if (cluster !== undefined && cluster.members.length > 1) {
      const owner = cluster.owner(buf, ks, kl);
      if (owner !== cluster.self) {
        // A peer's Get of a key another member owns is answered by a load not stored (dispatch):
        // not started ahead. A Get the mirror answers (under the owner's lease) needs nothing.
        if (method !== METHOD_GET || (group.mirror?.has(buf, ks, kl) === true && cluster.leaseHeld(owner))) return true;
        const client = cluster.peer(owner);
        if (client === undefined) return true;
        const table = this.tableOf(conn);
        if (table.full) return false;
        if (table.start(cluster, client, group, buf, ks, kl)) {
          cluster.counters.prefetchesSent++;
          // A copy on its way, which its Get answers from only under the owner's lease: asked for
          // now if it went idle (cluster/leases.ts), not first at that Get, which would find none
          // and forward it again.
          cluster.wantLease(owner);
        }
        return true;
      }
    }
    // Owned here: a hit or a cached "not found" needs nothing, nor does a group without a loader.
    if (group.loader === undefined || group.store.has(buf, ks, kl)) return true;
    const table = this.tableOf(conn);
    // (No room ahead in the loader, or none at all on the node (--max-loads): looked at again
    // when the connection next waits.)
    if (table.full || !group.loadsAhead.room || !group.loads.room) return false;
    table.startLoad(cluster, group, buf, ks, kl);
    // A peer's Get is answered from this load at its turn, however a write meanwhile went: its
    // member may keep what it brings, so the key counts as handed out from now (mirror-copies.ts's handedOut).
    if (method === METHOD_PEER_GET && cluster !== undefined) {
      cluster.handOuts.note(group.nameBytes, buf, ks, kl, cluster.memberOf(conn.member), group.mirrorTtlMs);
    }
    return true;
  }
}
