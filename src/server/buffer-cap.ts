/**
 * BufferCap holds the Thrift port's connections together to `--max-buffered` bytes: what each
 * holds in the server (input not served yet, queued output, answers kept by the look-ahead, what
 * its requests waiting for loads hold, in order or detached) is counted as it changes (`account`),
 * and past the cap the connections holding the most are closed until the total is under it again
 * (`capClose`).
 *
 * The cap is applied once the turn's queued input is served (TurnEnd, which holds it): in the
 * middle of the turn, a connection would be judged by bytes its own input of the turn would have
 * used up, or by an old count while another is served. Meanwhile it holds the connections served
 * so far to it, leaving out what those still `queued` hold: `queuedBytes`, their total, kept as
 * each count changes (a sum taken once went stale as a queued connection's count changed, e.g.
 * its replies in the shared buffer written early, and its growth closed others).
 */
import type { ServerOptions } from "./server-options.ts";
import type { Connection } from "./connection.ts";
import type { Faults } from "./faults.ts";
import type { ServerCounters } from "./server-counters.ts";
import type { TurnEnd } from "./turn-end.ts";

export class BufferCap {
  private readonly turnEnd: TurnEnd;
  private readonly connections: ReadonlySet<Connection>;
  private readonly counters: ServerCounters;
  private readonly faults: Faults;
  private readonly opts: ServerOptions;
  /**
   * queuedBytes is what the connections `queued` for the end of the turn hold: the sum of their
   * `buffered`, kept by `queue`, `unqueue`, `account` and `countOut` (checkInvariants).
   */
  queuedBytes = 0;

  constructor(turnEnd: TurnEnd, connections: ReadonlySet<Connection>, counters: ServerCounters, faults: Faults, opts: ServerOptions) {
    this.turnEnd = turnEnd;
    this.connections = connections;
    this.counters = counters;
    this.faults = faults;
    this.opts = opts;
  }

  /**
   * account tracks the bytes this connection holds against the server-wide cap (`--max-buffered`),
   * so many slow clients together cannot exhaust memory. Past the cap, the connections holding the
   * most are closed until the total is under it again: usually the one that just grew, but with
   * clients that stopped reading, theirs (Redis's client output limits pick the same way), not
   * whichever connection next holds a byte.
   */
  account(conn: Connection): void {
    if (!conn.open || conn.capClosed) return; // closed (`socket.end` may run the close handler at once): counted out
    // Replies waiting in the shared buffer are not counted: the end of this turn writes them, and
    // only what the socket does not take then stays (in the connection's own buffer).
    const now = conn.proto.reader.bufferedBytes() + conn.backlogBytes + conn.proto.reply.out.length + (conn.prefetches?.bytes ?? 0) +
      conn.detachedBytes + conn.heldBytes + conn.waitingBytes;
    const delta = now - conn.buffered;
    this.counters.bufferedBytes += delta;
    if (conn.queued) this.queuedBytes += delta;
    conn.buffered = now;
    const cap = this.opts.maxBufferedBytes;
    if (cap === undefined || now === 0) return;
    if (this.turnEnd.readyCount > 0) return; // enforced once all the turn's queued input is served (onTurnEnd)
    this.enforceCap(cap);
  }

  /** queue marks a connection `queued` for the end of the turn (its input waits in the ready list). */
  queue(conn: Connection): void {
    if (conn.queued) return;
    conn.queued = true;
    this.queuedBytes += conn.buffered;
  }

  /** unqueue marks it served (or to be served now): what it holds counts with the connections served. */
  unqueue(conn: Connection): void {
    if (!conn.queued) return;
    conn.queued = false;
    this.queuedBytes -= conn.buffered;
  }

  /** countOut takes what a connection holds out of the counts (closed, or closed for the cap). */
  countOut(conn: Connection): void {
    this.counters.bufferedBytes -= conn.buffered;
    if (conn.queued) this.queuedBytes -= conn.buffered;
    conn.buffered = 0;
  }

  /**
   * enforceCap closes the connections holding the most until all together hold at most `cap`
   * bytes. A bug closing one closes it as an internal error and the cap goes on: thrown from
   * here, it would leave the turn's handler (`onTurnEnd`), and an exception there ends the process.
   * `servedOnly` (in the middle of a turn) passes over the connections whose input waits to be
   * served in it (`queued`): they would be judged by bytes their input will use up.
   */
  enforceCap(cap: number, servedOnly = false): void {
    let closed = false;
    while (this.counters.bufferedBytes > cap) {
      const victim = this.largestHolder(servedOnly);
      if (victim === undefined) break;
      closed = true;
      try {
        this.capClose(victim, cap);
      } catch (e) {
        this.faults.internalError(victim, e); // (counted out of the total already: capClose does that first)
      }
    }
    if (closed) this.turnEnd.checkMemory(); // (what they held is garbage now)
  }

  /** largestHolder is the open connection, not yet closed by the cap (nor queued, with `servedOnly`), that holds the most bytes. */
  private largestHolder(servedOnly: boolean): Connection | undefined {
    let best: Connection | undefined;
    for (const c of this.connections) if (!c.capClosed && !(servedOnly && c.queued) && c.buffered > (best?.buffered ?? 0)) best = c;
    return best;
  }

  /**
   * capClose closes a connection for the buffer cap: its queued input is dropped, the replies the
   * socket takes now are sent, and if some are left (a client that does not read them) the
   * connection is reset, or they would hold their bytes for good; one that waits for a load is
   * treated so once that reply is written (`flush`). Its bytes leave the count now: what it still
   * holds (a partial frame, the reply it waits for) goes when it closes.
   */
  private capClose(conn: Connection, cap: number): void {
    const held = conn.buffered;
    const total = this.counters.bufferedBytes;
    this.counters.bufferCapClosed++;
    conn.capClosed = true;
    conn.closing = true;
    this.countOut(conn);
    this.opts.logger.warn("closing connection: connection buffers over the cap", { conn: conn.id, remote: conn.remote, held, total, cap });
    conn.dropBacklog();
    this.turnEnd.flush(conn); // (one that waits is flushed, so reset if need be, once its reply is written)
  }

  /** checkInvariants throws unless the totals are the sums of the open connections' counts (all, and those `queued`). Tests only. */
  checkInvariants(): void {
    let all = 0;
    let queued = 0;
    for (const c of this.connections) {
      all += c.buffered;
      if (c.queued) queued += c.buffered;
    }
    if (all !== this.counters.bufferedBytes) throw new Error(`bufferedBytes ${this.counters.bufferedBytes}, connections hold ${all}`);
    if (queued !== this.queuedBytes) throw new Error(`queuedBytes ${this.queuedBytes}, queued connections hold ${queued}`);
  }
}
