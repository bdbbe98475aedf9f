/**
 * CacheServer is the Thrift TCP port of a node: `Bun.listen` with one shared handler set
 * (thrift-listener.ts).
 *
 * Per `data` event the chunk goes to the connection's frame reader, and the connection joins the
 * turn's ready list; at the end of the turn (`setImmediate`, after all of the poll's socket
 * events) the ready connections are served one after another, so the JavaScript of every event
 * runs back to back with its code and the store's lines warm, instead of each event's serving
 * coming between the kernel's reads of the next sockets (+2.5 % at 100 B, depth 16;
 * bench/RESULTS.md). Runs of plain Gets and Set overwrites are answered straight from the chunk, their memory warmed a batch at a time
 * (call-runs.ts: the same bytes and counters as the general path, less work per request), and
 * every other complete request is decoded and dispatched; all replies produced by the event go
 * out in ONE `socket.write`. While a connection has nothing queued, its replies are written into
 * one output buffer the server shares between connections, and written at the end of the turn
 * with every other connection's (turn-end.ts: the ready list, the shared buffer and the writes).
 *
 * Flow control: when a connection's queued output passes `maxOutputBytes` (a client pipelining
 * faster than it reads), the server stops decoding that connection's input, pauses reading from
 * the socket, and resumes both on `drain` once the output is below the bound. So a client that
 * never reads its replies holds at most the bound plus one reply, and never more input than the
 * kernel buffers. What all connections hold together is capped by `maxBufferedBytes` (buffer-cap.ts).
 *
 * A request whose reply waits for a load (a miss in a read-through group, or a call forwarded to
 * a peer) parks its connection: input that arrives meanwhile queues (reading pauses only past
 * BACKLOG_PAUSE_BYTES or _CHUNKS), and serving resumes in order when the load settles; a peer's
 * reads and writes are answered out of order instead, within bounds (load-waits.ts: `park`, `detach`).
 *
 * Faults are contained to their connection (faults.ts): a protocol error or a bug closes only it.
 *
 * Connections are opened, ended and closed, and drained when the port closes, by connection-lifecycle.ts: at
 * `maxConnections` a new one closes the oldest not authenticated; with none, its first request gets `CacheError
 * OVERLOADED` and it closes. Timers: server-timers.ts; options and counters: server-options.ts, server-counters.ts.
 */
import type { TCPSocketListener } from "bun";
import type { Cluster } from "../cluster/cluster.ts";
import type { Groups } from "../cluster/groups.ts";
import { APP_ERROR, ERROR_CODE, TOO_MANY_CONNECTIONS } from "../protocol/errors.ts";
import { noteMember, type Connection } from "./connection.ts";
import { dispatch, replyFor, type DispatchContext } from "./dispatch.ts";
import { replyCacheError } from "./reply-errors.ts";
import { writeFigures } from "../protocol/figure-replies.ts";
import { INTRO_SEQID, METHOD_AUTH, METHOD_GET, METHOD_NODE_STATS, METHOD_PEER_PING, METHOD_SET, METHOD_UNKNOWN } from "../protocol/request.ts";
import { CallRuns } from "./call-runs.ts";
import { Prefetches } from "./prefetch.ts";
import { LookAhead, isRead } from "./look-ahead.ts";
import { LatencyHistogram } from "./latency.ts";
import type { ServerOptions } from "./server-options.ts";
import { ServerCounters } from "./server-counters.ts";
import { ServerTimers } from "./server-timers.ts";
import { LoadWaits } from "./load-waits.ts";
import { ConnectionLifecycle } from "./connection-lifecycle.ts";
import { Faults } from "./faults.ts";
import { SHARED_FLUSH_BYTES, TurnEnd } from "./turn-end.ts";
import type { BufferCap } from "./buffer-cap.ts";
import { listenThrift } from "./thrift-listener.ts";
import { hostPort } from "../bytes/bytes.ts";

/**
 * BACKLOG_PAUSE_BYTES is how much input a connection waiting for a load may queue before reading
 * pauses. A wait is usually one round trip to a peer or a loader, and a pipelining client sends
 * on meanwhile: pausing at once cost two `epoll_ctl` calls per wait and a wake-up more, which a
 * cluster forwarding 10 % writes paid several times per pipeline (bench/RESULTS.md).
 */
const BACKLOG_PAUSE_BYTES = 64 * 1024;
/**
 * PRE_AUTH_BYTES: on a node with an auth token, a connection that has not authenticated holds at
 * most this much of its first call (which must be Auth, its token at most MAX_TOKEN_BYTES);
 * past it, it is closed. Else a client with no token could have the node hold a frame of up to
 * --max-frame-size per connection, and push the node to its --max-buffered cap, which closes
 * the connections that hold the most (a legitimate client's large Set among them).
 */
export const PRE_AUTH_BYTES = 64 * 1024;
/** BACKLOG_PAUSE_CHUNKS also pauses it after this many chunks (a client dripping tiny segments). */
const BACKLOG_PAUSE_CHUNKS = 16;

export class CacheServer implements DispatchContext {
  readonly groups: Groups;
  readonly clock: () => number;
  readonly startedAt: number;
  readonly counters = new ServerCounters();
  readonly latency: LatencyHistogram;
  readonly host: string;
  readonly port: number;
  private readonly opts: ServerOptions;
  private readonly listener: TCPSocketListener<Connection>;
  private readonly connections = new Set<Connection>();
  /** timers: expiry, stall watch and idle sweep (server-timers.ts), started once the port listens. */
  private readonly timers: ServerTimers;
  private readonly runs: CallRuns;
  /** lookAhead starts the Gets queued behind a read a connection waits for (look-ahead.ts). */
  private readonly lookAhead: LookAhead;
  /** turnEnd: the connections to serve at the end of the turn, the shared output buffer and the turn's writes (turn-end.ts). */
  private readonly turnEnd: TurnEnd;
  /** cap: the cap on what all connections hold (buffer-cap.ts), applied at the turn's end (turnEnd holds it). */
  private readonly cap: BufferCap;
  /** waits: what a connection does while a reply waits for a load (load-waits.ts), made with the timers. */
  private readonly waits: LoadWaits;
  /** faults: what ends a connection that fails (faults.ts). */
  private readonly faults: Faults;
  /** lifecycle: opens, ends and closes connections, and drains them at close (connection-lifecycle.ts), made with the timers. */
  readonly lifecycle: ConnectionLifecycle;

  constructor(groups: Groups, opts: ServerOptions) {
    this.groups = groups;
    this.opts = opts;
    this.clock = opts.clock;
    this.startedAt = opts.clock();

    this.latency = opts.latency ?? new LatencyHistogram();
    this.faults = new Faults(this.counters, this.latency, opts);
    this.turnEnd = new TurnEnd(this, this.connections, this.counters, this.faults, opts);
    this.cap = this.turnEnd.cap;
    this.runs = new CallRuns(groups, opts.limits, this.counters);
    this.lookAhead = new LookAhead(groups, () => this.cluster, opts.limits, (conn) => (conn.prefetches ??= new Prefetches(() => this.cap.account(conn))));
    this.listener = listenThrift(this, opts);
    this.host = opts.host;
    this.port = this.listener.port;
    this.timers = new ServerTimers(groups, this.connections, this.counters, opts, this.turnEnd.lingering);
    this.waits = new LoadWaits(this, this.connections, this.counters, this.faults, this.turnEnd, this.cap, this.timers);
    this.lifecycle = new ConnectionLifecycle(this.connections, this.counters, opts, this.runs, this.turnEnd, this.cap, this.waits, this.timers, this.faults);
  }

  /** cluster is the node's cluster, if it has peers. */
  get cluster(): Cluster | undefined {
    return this.opts.cluster?.();
  }

  /** nodeId is this node's id in its cluster, or host:port. */
  get nodeId(): string {
    return this.cluster?.self ?? hostPort(this.host, this.port);
  }

  /** connectionCount is the number of open connections. */
  get connectionCount(): number {
    return this.connections.size;
  }

  /**
   * close stops accepting and reading, lets every connection finish the requests it has received
   * and flush their replies, then closes them (forcibly after `drainTimeoutMs`): ConnectionLifecycle.close.
   */
  close(): Promise<void> {
    return this.lifecycle.close(this.listener);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** onData takes a chunk read from a connection's socket (the `data` handler of thrift-listener.ts). */
  onData(conn: Connection, chunk: Uint8Array): void {
    conn.active = true; // (the idle sweep reads the clock for it)
    conn.backedUp = false;
    if (this.timers.stallMs < Infinity) this.timers.checkStall(performance.now()); // (a clustered node's: a lone node reads no clock here)
    conn.bytesIn += chunk.length;
    this.counters.bytesIn += chunk.length;
    if (conn.closing || conn.inputEnded) return; // (input ended: the node is closing)
    // A second chunk in one poll (Bun reads 512 KiB at a time): the first is served now (its own turn budget, nothing unserved
    // counted toward the cap); its entry in the turn's list serves this one: listed twice, the cap within the turn counted it twice.
    const listed = conn.queued && !conn.held && !conn.waiting;
    if (listed) {
      this.cap.unqueue(conn);
      this.process(conn);
      if (conn.closing || conn.inputEnded) return;
    }
    if (conn.held || conn.waiting || conn.queued) {
      // Queued in order behind what it waits for (or a chunk of this turn not served yet);
      // counted toward the buffer cap like any input.
      (conn.backlog ??= []).push(chunk);
      conn.backlogBytes += chunk.length;
      if (conn.waiting) this.lookAhead.more(conn, chunk);
      if (!conn.paused && (conn.backlogBytes >= BACKLOG_PAUSE_BYTES || conn.backlog.length >= BACKLOG_PAUSE_CHUNKS)) this.pause(conn);
      this.cap.account(conn);
      return;
    }
    conn.prefetches?.clear(); // all input before it is served: anything started ahead and left is of no use
    conn.proto.push(chunk);
    conn.readerBytes += chunk.length;
    this.cap.queue(conn);
    if (listed) return;
    this.turnEnd.ready[this.turnEnd.readyCount++] = conn;
    this.turnEnd.queueTurnEnd();
  }

  /** onDrain writes a connection's queued output once its socket takes more, and serves it on if its output held it (the `drain` handler). */
  onDrain(conn: Connection): void {
    this.turnEnd.flush(conn);
    if (conn.held && !conn.waiting && conn.queuedOutput < this.opts.maxOutputBytes) this.process(conn);
    else this.cap.account(conn);
  }

  /**
   * process decodes and serves requests until the input is used up, the output is full, a reply
   * waits for a load, or the connection has had its turn (maxRequestsPerEvent requests: the rest
   * is served on a later turn, so one client pipelining 100k requests cannot starve another).
   * (Also called by the turn's end, turn-end.ts, and when a load a connection waits for settles, load-waits.ts.)
   */
  process(conn: Connection): void {
    conn.serving++;
    try {
      this.serve(conn);
    } finally {
      conn.serving--;
    }
    this.cap.account(conn);
    this.turnEnd.meterMemory();
  }

  /** serve is `process` without the final count toward the buffer cap. */
  private serve(conn: Connection): void {
    const turnEnd = this.turnEnd;
    if (conn.closing) return turnEnd.flush(conn);
    if (conn.sharedStart >= 0) turnEnd.flush(conn); // its earlier replies go out before new ones
    if (conn.closing) return; // (its socket refused them, TurnEnd.lost: it closes, and what it sent since is not served)
    const proto = conn.proto;
    const own = proto.reply.out;
    const shared = turnEnd.sharedOut;
    // Nothing queued: this turn's replies go to the shared buffer, after those of the connections
    // served before it in this turn, unless it is lent already (a callback that re-entered: its
    // replies then stay behind the lender's). A full shared buffer is written out first.
    let lent = own.length === 0 && turnEnd.sharedLent === false;
    if (lent && shared.length >= SHARED_FLUSH_BYTES) {
      this.counters.earlyFlushes++;
      turnEnd.writeShared();
      // Writing the others' replies accounts them, and the buffer cap may have closed this one.
      if (conn.closing) return turnEnd.flush(conn);
    }
    if (lent) {
      turnEnd.sharedLent = true;
      proto.reply.out = shared;
    }
    const base = lent ? shared.length : 0; // where this connection's replies start
    let out = proto.reply.out;
    const max = this.opts.maxOutputBytes;
    const turn = this.opts.maxRequestsPerEvent ?? 1024;
    const latency = this.latency;
    let served = 0;
    let held = false;
    const fast = conn.authed && !conn.rejected;
    const cluster = this.cluster;
    const runs = this.runs;
    let t0 = Bun.nanoseconds();
    try {
      for (;;) {
        if (out.length - (lent ? base : 0) >= max) {
          // Past the bound: try to hand the replies to the socket now. Only what the kernel does
          // not take holds the connection, and a short write always ends with `drain`.
          if (lent) {
            turnEnd.endLend(conn, own, base, true);
            lent = false;
            out = own;
          }
          turnEnd.flush(conn);
          if (out.length >= max) {
            held = true;
            break;
          }
        }
        if (served === turn) {
          // Its turn is over: the rest of its input waits for a later turn. Nothing left (its
          // pipeline was exactly a turn long): nothing to yield, and no reading to pause.
          if (proto.reader.bufferedBytes() === 0 && (conn.backlog === null || conn.backlog.length === 0)) break;
          held = true;
          this.counters.yields++;
          setImmediate(() => this.resume(conn));
          break;
        }
        if (fast) {
          const n = runs.serve(proto.reader, proto.reply, turn - served, (lent ? base : 0) + max, cluster, conn.prefetches);
          if (n > 0) {
            served += n;
            this.counters.requests += n;
            conn.requests += n;
            const t1 = Bun.nanoseconds();
            // One clock read per run; a run of Gets and Sets shares its time between them by count.
            const gets = runs.gets;
            const sets = runs.sets;
            if (gets > 0) latency.recordRun(METHOD_GET, sets === 0 ? t1 - t0 : ((t1 - t0) * gets) / n, gets);
            if (sets > 0) latency.recordRun(METHOD_SET, gets === 0 ? t1 - t0 : ((t1 - t0) * sets) / n, sets);
            for (let e = runs.notFound; e > 0; e--) latency.recordError(METHOD_GET, ERROR_CODE.NOT_FOUND);
            t0 = t1;
            continue;
          }
        }
        if (!proto.nextRequest()) {
          const next = conn.backlog?.shift();
          if (next === undefined) break;
          conn.backlogBytes -= next.length;
          proto.push(next); // (what was started ahead for its Gets stays: look-ahead.ts)
          conn.readerBytes += next.length;
          continue;
        }
        this.counters.requests++;
        conn.requests++;
        served++;
        const req = proto.request;
        proto.reply.errorCode = 0;
        if (conn.rejected) {
          replyCacheError(replyFor(req, proto.reply), req, ERROR_CODE.OVERLOADED, TOO_MANY_CONNECTIONS);
          conn.closing = true;
          t0 = this.timed(conn, req.method, t0);
          break;
        }
        if (!conn.authed || req.method === METHOD_AUTH) {
          const ok = this.faults.authenticate(conn);
          t0 = this.timed(conn, req.method, t0);
          if (!ok) break;
          continue;
        }
        if (req.method === METHOD_NODE_STATS) {
          writeFigures(replyFor(req, proto.reply), req, this.opts.figures?.() ?? []);
          t0 = this.timed(conn, req.method, t0);
          continue;
        }
        if (req.method === METHOD_UNKNOWN) latency.recordProtocolError(APP_ERROR.UNKNOWN_METHOD);
        const prefetches = conn.prefetches;
        // What was started ahead is for the Gets that follow with no write between (a write of
        // this connection must be seen by its later reads): a write drops it all.
        if (prefetches !== null && !isRead(req.method)) prefetches.clear();
        if (req.method === METHOD_PEER_PING && req.seqid === INTRO_SEQID) noteMember(conn, req);
        const pending = dispatch(this, req, proto.reply, prefetches ?? undefined, conn.member === undefined ? undefined : this.cluster?.memberOf(conn.member));
        if (pending !== undefined && this.waits.detachable(conn, req.method)) {
          this.waits.detach(conn, pending, req.method, t0);
          t0 = Bun.nanoseconds();
          continue;
        }
        if (pending !== undefined) {
          if (isRead(req.method)) this.lookAhead.begin(conn);
          this.waits.park(conn, pending, req.method, t0);
          held = true;
          break;
        }
        t0 = this.timed(conn, req.method, t0);
      }
    } catch (e) {
      this.faults.fault(conn, e);
    }
    // Not authenticated, not refused: all it holds is the start of its first call (a whole one
    // was served: Auth, or refused), which must be a small Auth call.
    if (!conn.authed && !conn.closing && proto.reader.bufferedBytes() > PRE_AUTH_BYTES) {
      this.faults.unauthenticated(conn, `first call over ${PRE_AUTH_BYTES} bytes before Auth`, false);
    }
    if (lent) turnEnd.endLend(conn, own, base, false);
    // Idle is counted from the last request served, as memcached counts it from the last command:
    // a long pipeline served over many turns leaves its client the whole timeout after it.
    if (served > 0) this.timers.servedNow(conn);
    if (conn.inputEnded && !held) conn.closing = true; // all the client sent is served: end after the replies
    this.setHeld(conn, held && !conn.closing);
    // Replies in the shared buffer wait for the end of the turn, also those of a connection that
    // now waits for a load or yielded its turn (it writes them first when it goes on, should that
    // come sooner); anything else (a connection that closes, or has output queued already) is
    // written now.
    if (conn.sharedStart >= 0 && !conn.closing) turnEnd.deferWrite(conn);
    else turnEnd.flush(conn);
  }

  /**
   * resume serves a connection that yielded its turn, unless something else holds it. Output past
   * the bound is handed to the socket first: replies written out of order may have joined it
   * since, queued for the end of the turn, and a write that takes them all ends with no `drain`
   * to serve the connection on (only a short one does).
   */
  private resume(conn: Connection): void {
    if (!this.connections.has(conn) || !conn.held || conn.queued || conn.waiting) return;
    if (conn.queuedOutput >= this.opts.maxOutputBytes) {
      this.turnEnd.flushCounted(conn);
      if (conn.queuedOutput >= this.opts.maxOutputBytes) return; // (a short write: `drain` serves it on)
    }
    this.process(conn);
  }

  /**
   * timed records a request served since `t0` (decode, serve, reply written; a load it waited for
   * included), with its CacheError code if it got one, and returns the time now.
   */
  timed(conn: Connection, method: number, t0: number, reply = conn.proto.reply): number {
    const t1 = Bun.nanoseconds();
    this.latency.record(method, t1 - t0);
    const code = reply.errorCode;
    if (code !== 0) this.latency.recordError(method, code);
    return t1;
  }

  /** pause stops reading from the connection's socket (`setHeld(conn, false)` resumes it). */
  private pause(conn: Connection): void {
    conn.paused = true;
    this.counters.pauses++;
    conn.socket.pause();
  }

  private setHeld(conn: Connection, held: boolean): void {
    conn.held = held;
    if (held && !conn.paused && !conn.waiting) this.pause(conn);
    else if (!held && conn.paused) {
      conn.paused = false;
      conn.socket.resume();
    }
  }
}
