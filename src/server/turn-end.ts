/**
 * TurnEnd is the end of the event loop's turn on the Thrift port: the connections that received
 * input during the turn, served once all of the poll's socket events have run, and the writes of
 * every reply the turn produced.
 *
 * `onTurnEnd` (one `setImmediate` per turn: `queueTurnEnd`) serves the ready connections one after
 * another (CacheServer.process), then writes the turn's replies (`writeShared`). While a
 * connection has nothing queued, its replies are written into one output buffer shared between
 * connections (`sharedOut`: CacheServer's `serve` lends it, `endLend` takes it back), so the lines
 * written by every event stay in the CPU cache instead of each connection's own buffer being
 * pulled in (+2 % at 100 B, depth 16, 50 connections; bench/RESULTS.md). The connections served in
 * one turn append to it one after another, and their writes wait for the end of the turn: a
 * client then finds all its replies at once instead of being woken for each write in turn. Past
 * SHARED_FLUSH_BYTES, the waiting replies are written before another connection adds to it. A
 * short write moves the unsent tail into the connection's own output buffer, where later replies
 * queue behind it, and `drain` sends it (`flush`). Replies written out of request order join the
 * connection's own output as they settle, and go out with the turn's replies (`flushAtTurnEnd`).
 *
 * It holds the cap on what the connections hold (BufferCap), which picks its victims at the end of
 * the turn, once all the queued input is served.
 *
 * The lists (`ready`, `deferred`) are arrays with a count, reused from turn to turn; a slot is
 * set to null once used, so no closed connection is kept alive.
 */
import { BinaryWriter, KEEP_OUTPUT_BYTES } from "../protocol/binary-writer.ts";
import { IDLE_KEEP_BYTES } from "../protocol/limits.ts";
import type { CacheServer } from "./cache-server.ts";
import type { ServerOptions } from "./server-options.ts";
import { BufferCap } from "./buffer-cap.ts";
import type { Connection } from "./connection.ts";
import type { Faults } from "./faults.ts";
import { LingeringClose } from "./lingering-close.ts";
import type { ServerCounters } from "./server-counters.ts";

/** SHARED_OUTPUT_BYTES is the shared output buffer's first size (it grows like any writer). */
const SHARED_OUTPUT_BYTES = 64 * 1024;
/**
 * SHARED_FLUSH_BYTES: once the replies waiting in the shared buffer reach this, they are written
 * before another connection adds to it, so the buffer stays small enough to stay in the CPU cache.
 */
export const SHARED_FLUSH_BYTES = 256 * 1024;

/**
 * MEMORY_CHECK_BYTES, MEMORY_CHECK_MS: the memory watch looks at the garbage after a connection is
 * served once this much traffic (in and out) or time went by since it last did (`meterMemory`):
 * its timer does not run while the loop is busy, and a busy second can make far more garbage than
 * its headroom. 30 GetMultis of 4M keys (16 MB frames, ~100 MB of scratch each while served)
 * took the node to 990 MB resident with --max-buffered 256mb, --memory 64mb, with a gap of 1.1 s
 * between collections. One clock read per METER_CLOCK_EVERY connections served; one RSS read (~5 µs) per check.
 */
const MEMORY_CHECK_BYTES = 16 * 1024 * 1024;
const MEMORY_CHECK_MS = 25;
/** METER_CLOCK_EVERY: `meterMemory` reads the clock once in this many calls (a power of two). */
const METER_CLOCK_EVERY = 64;

export class TurnEnd {
  private readonly server: CacheServer;
  private readonly connections: ReadonlySet<Connection>;
  private readonly counters: ServerCounters;
  private readonly faults: Faults;
  private readonly opts: ServerOptions;
  /** cap: the cap on what the connections hold (buffer-cap.ts), applied once the turn's input is served. */
  readonly cap: BufferCap;
  /** lingering ends the connections that close gracefully (lingering-close.ts), once `flush` has written their replies. */
  readonly lingering: LingeringClose;
  /** ready: connections with input received this turn, served at its end (`onTurnEnd`); `readyCount` of them. */
  readonly ready: (Connection | null)[] = [];
  readyCount = 0;
  /** sharedOut receives the replies of a connection with nothing queued (see the header). */
  readonly sharedOut = new BinaryWriter(SHARED_OUTPUT_BYTES);
  /** sharedLent: `sharedOut` is a connection's output now (lent by CacheServer's `serve`, to one connection at a time). */
  sharedLent = false;
  /**
   * deferred[0, deferredCount) lists the connections with replies in the shared buffer, written by
   * `writeShared` (a count, so the array keeps its size from turn to turn and never reallocates).
   */
  private readonly deferred: (Connection | null)[] = [];
  /** flushLater: connections whose own output gets detached replies, written with the turn's replies. */
  private readonly flushLater: Connection[] = [];
  private deferredCount = 0;
  /** writeQueued: the turn's end is queued (`queueTurnEnd`). */
  private writeQueued = false;
  /** checkedAt, checkedAtMs: the traffic (bytes in and out) and the time when the memory watch last looked (`meterMemory`). */
  private checkedAt = 0;
  private checkedAtMs = 0;

  constructor(server: CacheServer, connections: ReadonlySet<Connection>, counters: ServerCounters, faults: Faults, opts: ServerOptions) {
    this.server = server;
    this.connections = connections;
    this.counters = counters;
    this.faults = faults;
    this.opts = opts;
    this.cap = new BufferCap(this, connections, counters, faults, opts);
    this.lingering = new LingeringClose(counters, opts.lingerMs);
  }

  /**
   * endLend points the connection's replies at its own buffer again. Those it wrote into the
   * shared buffer from `base` on either stay there, as its `sharedStart`/`sharedEnd`, to be
   * written at the end of the turn, or (`spill`: it is about to write more than the shared
   * buffer should hold) move into its own buffer, which is empty while it is lent.
   */
  endLend(conn: Connection, own: BinaryWriter, base: number, spill: boolean): void {
    const shared = this.sharedOut;
    const end = shared.length;
    if (end > base) {
      if (spill) {
        own.prepend(shared.buffer, base, end - base);
        shared.truncate(base);
      } else {
        conn.sharedStart = base;
        conn.sharedEnd = end;
      }
    }
    conn.proto.reply.out = own;
    this.sharedLent = false;
  }

  /**
   * flushAtTurnEnd queues a connection's own output for `writeShared`: detached replies settle in
   * bursts (a peer's answers to the invalidations of many writes come in one chunk), and a write
   * each would be a send per reply.
   */
  flushAtTurnEnd(conn: Connection): void {
    if (conn.flushQueued) return;
    conn.flushQueued = true;
    this.flushLater.push(conn);
    this.queueTurnEnd();
  }

  /** deferWrite queues a connection's shared-buffer replies for `writeShared` at the end of the turn. */
  deferWrite(conn: Connection): void {
    this.deferred[this.deferredCount++] = conn;
    this.queueTurnEnd();
  }

  queueTurnEnd(): void {
    if (this.writeQueued) return;
    this.writeQueued = true;
    setImmediate(this.onTurnEnd); // one Immediate per turn: the only allocation of this path
  }

  /**
   * onTurnEnd serves the connections that received input this turn, in the order their events
   * came, then writes every reply of the turn (`writeShared`). A connection serving adds to the
   * same turn's writes (`writeQueued` stays set until they are made). The cap on buffered bytes
   * picks its victims once all the queued input is served (`account` waits for it meanwhile), so
   * no connection is judged by bytes its own input of this turn would have used up.
   */
  private readonly onTurnEnd = (): void => {
    const list = this.ready;
    const cap = this.opts.maxBufferedBytes;
    const bufferCap = this.cap;
    for (let i = 0; i < this.readyCount; i++) { // (one added meanwhile is served too)
      const conn = list[i]!;
      list[i] = null; // keep no closed connection alive
      bufferCap.unqueue(conn);
      if (!conn.open || conn.waiting || conn.held) continue; // its load / drain / resume serves the reader
      try {
        this.server.process(conn);
      } catch (e) {
        this.faults.internalError(conn, e); // a bug outside `process`'s own guard, contained to its connection
      }
      // The connections served are held to the cap now, not once all are: each may queue
      // --max-output of replies its client does not read, and 100 of them in one turn held 1.6 GB
      // over a 256 MiB cap (review). Those still queued are neither judged nor counted against
      // the others: their input is not served yet, and may use up what they hold. Their total is
      // kept as their counts change (`queuedBytes`): one taken once went stale when a queued
      // connection's shared-buffer replies were written early to a client that did not read, and
      // what stayed of them closed the connections served.
      if (cap !== undefined && this.counters.bufferedBytes > cap) {
        const queued = bufferCap.queuedBytes;
        if (this.counters.bufferedBytes - queued > cap) bufferCap.enforceCap(cap + queued, true);
      }
    }
    this.readyCount = 0;
    this.writeQueued = false; // before anything that may throw: a bug must not stop every later turn
    try {
      if (cap !== undefined) this.cap.enforceCap(cap);
    } finally {
      this.writeShared();
    }
  };

  /**
   * meterMemory has the memory watch look at the garbage once MEMORY_CHECK_BYTES of traffic or
   * MEMORY_CHECK_MS went by since it last did (CacheServer.process calls it after serving a
   * connection, however called). The clock is read every METER_CLOCK_EVERY calls only: at depth 1
   * a call per request, and the time matters only while the loop is too busy for the watch's timer.
   */
  meterMemory(): void {
    if (this.opts.checkMemory === undefined) return;
    const moved = this.counters.bytesIn + this.counters.bytesOut;
    if (moved - this.checkedAt < MEMORY_CHECK_BYTES) {
      if ((++this.meterCalls & (METER_CLOCK_EVERY - 1)) !== 0) return;
      if (performance.now() - this.checkedAtMs < MEMORY_CHECK_MS) return;
    }
    this.checkMemory();
  }

  /** meterCalls counts `meterMemory` calls (its clock read every METER_CLOCK_EVERY). */
  private meterCalls = 0;

  /**
   * checkMemory has the memory watch look at the garbage now (`ServerOptions.checkMemory`): the
   * cap closed connections (100 closed in one turn left 1.6 GB of garbage resident over a 256 MiB
   * cap, 460 MB with the check; review), or traffic went by (`meterMemory`). A failure to read the
   * figures is the watch's timer's to report.
   */
  checkMemory(): void {
    this.checkedAt = this.counters.bytesIn + this.counters.bytesOut;
    this.checkedAtMs = performance.now();
    try {
      this.opts.checkMemory?.();
    } catch {
      // (the watch's next tick warns)
    }
  }

  /**
   * writeShared writes every connection's replies waiting in the shared buffer, then empties it,
   * and the detached replies queued by `flushAtTurnEnd`.
   * Bun runs it after all of a turn's socket events, so the replies to one poll's requests reach
   * the kernel together: a client is woken once for them, not once per reply write spread over
   * the turn (6× fewer client wake-ups at 50 connections, depth 16; bench/RESULTS.md).
   */
  writeShared(): void {
    const list = this.deferred;
    let wrote = 0;
    for (let i = 0; i < this.deferredCount; i++) { // (one added meanwhile is written too)
      const conn = list[i]!;
      list[i] = null; // keep no closed connection alive
      if (conn.sharedStart < 0) continue; // written already (drain, a later event, close)
      wrote++;
      this.flushCounted(conn);
    }
    this.deferredCount = 0;
    const later = this.flushLater;
    for (let i = 0; i < later.length; i++) { // (one added meanwhile is written too)
      const conn = later[i]!;
      conn.flushQueued = false;
      if (this.connections.has(conn) && !conn.capClosed) this.flushCounted(conn);
    }
    later.length = 0;
    this.counters.turnWrites += wrote;
    if (wrote > 0) this.counters.turnFlushes++;
    const shared = this.sharedOut;
    shared.reset();
    shared.shrink(KEEP_OUTPUT_BYTES);
  }

  /** flushCounted writes what a connection has queued and counts what stays toward the cap; a fault closes it. */
  flushCounted(conn: Connection): void {
    try {
      this.flush(conn);
      this.cap.account(conn);
    } catch (e) {
      this.faults.internalError(conn, e);
    }
  }

  /**
   * flush writes queued output once, the connection's replies in the shared buffer first; the
   * rest waits for `drain` (an unsent tail of the shared part moves to the front of its own).
   */
  flush(conn: Connection): void {
    this.writeOut(conn);
    // A connection that waits ends after the reply it waits for (its `process` flushes again), and
    // after every reply written out of order (`detach` flushes again) unless the cap closed it.
    if (!conn.closing || conn.waiting || (conn.detached > 0 && !conn.capClosed)) return;
    if (conn.proto.reply.out.length === 0) this.lingering.end(conn); // (half-closed: replies unread by its client are kept)
    else if (conn.capClosed) conn.socket.terminate(); // closed for the cap: what the socket does not take now is not kept
  }

  /**
   * lost closes a connection whose socket refused a write (-1: Bun's socket is closed, reset by
   * its client, or shut down): nothing queued can go now, and no `drain` comes. Its reading may be
   * paused (its output past --max-output), and a paused socket never reported the reset: the node
   * kept the connection, its slot and what it held for good. Closed after the caller is done
   * (a microtask: `process` may be serving it; `serve` serves no more of its input once it is
   * `closing`). What it holds is counted out now, and no more (not `open`: `account`): replies
   * that can never go, counted until then, had the cap close another connection holding more.
   */
  private lost(conn: Connection): void {
    conn.closing = true;
    conn.open = false;
    this.cap.countOut(conn);
    queueMicrotask(() => conn.socket.terminate());
  }

  /** writeOut hands the socket the connection's replies (shared-buffer part first); the rest waits for `drain`. */
  private writeOut(conn: Connection): void {
    const out = conn.proto.reply.out;
    const start = conn.sharedStart;
    if (start >= 0) {
      conn.sharedStart = -1;
      const len = conn.sharedEnd - start;
      const shared = this.sharedOut;
      const n = conn.socket.write(shared.buffer, start, len);
      if (n < 0) this.lost(conn);
      const sent = n > 0 ? n : 0;
      conn.bytesOut += sent;
      this.counters.bytesOut += sent;
      conn.active = true;
      if (sent < len) {
        conn.backedUp = true;
        out.prepend(shared.buffer, start + sent, len - sent);
        return; // the socket is full: the rest goes on `drain`
      }
    }
    if (out.length > 0) {
      const n = conn.socket.write(out.buffer, 0, out.length);
      if (n < 0) this.lost(conn);
      if (n > 0) {
        conn.bytesOut += n;
        this.counters.bytesOut += n;
        conn.active = true;
        out.consume(n);
      }
      // (An idle connection keeps a small one: what it keeps is counted nowhere, so 1 MiB a connection was 10 GB at --max-connections.)
      if (out.length === 0) out.shrink(IDLE_KEEP_BYTES);
      else {
        conn.backedUp = true;
        out.fit(IDLE_KEEP_BYTES); // (a backlog the client takes slowly: what is left is what counts)
      }
    }
  }
}
