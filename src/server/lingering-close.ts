/**
 * LingeringClose ends the Thrift port's connections gracefully, as nginx's lingering_close does:
 * once a connection's owed replies are written, its write side is half-closed (`shutdown()`: the
 * client reads them, then EOF), what the client still sends is read and dropped (CacheServer's
 * `onData` serves and keeps nothing of a `closing` connection), and the socket closes when the
 * client closes its side, or is cut LINGER_MS after the node's end, whichever comes first.
 *
 * Why not `end()`: on TCP, Bun's `end()` closes the socket at once, and a request the client had
 * pipelined meanwhile (or input unread in the node's receive buffer) had the node's kernel answer
 * RST, which throws away the replies still unread in the client's receive buffer: the client read
 * 0 bytes and EPIPE (review: one Get served, its reply unread, the node closing, the next Get sent
 * 20 ms later). An OVERLOADED or UNAUTHORIZED refusal, meant to say why, became a silent reset
 * for a pipelining client. On TLS, `end()` did linger, but Bun then ignored `terminate()` and
 * reported the close only ~12 s later; after `shutdown()`, `terminate()` closes it at once, on
 * TLS as on TCP (checked with Bun 1.4.5).
 *
 * Bounds: a lingering connection counts toward --max-connections until it closes, but a
 * newcomer at the limit cuts the oldest one (`cutOldest`, before any other eviction), and each is
 * cut after LINGER_MS, shorter than shutdown's drain bound (DRAIN_MS), so close() still ends in
 * time. Refused connections (past the limit) linger too; they never counted toward it.
 *
 * `lingering` maps each lingering connection to its cut timer, oldest first (a Map iterates in
 * insertion order): a timer per connection ended, nothing per request.
 */
import type { Connection } from "./connection.ts";
import type { ServerCounters } from "./server-counters.ts";

/** LINGER_MS: a connection the node has ended is cut this long after, unless its client has closed its side by then. */
export const LINGER_MS = 2_000;

export class LingeringClose {
  private readonly lingering = new Map<Connection, ReturnType<typeof setTimeout>>();
  private readonly counters: ServerCounters;
  private readonly lingerMs: number;
  /**
   * cut closes a connection at once and counts it out (ConnectionLifecycle.cut, which sets it as
   * it is made: the lifecycle is made after the turn's end, which holds this).
   */
  cut: (conn: Connection) => void = (conn) => conn.socket.terminate();

  constructor(counters: ServerCounters, lingerMs = LINGER_MS) {
    this.counters = counters;
    this.lingerMs = lingerMs;
  }

  /**
   * end half-closes a connection whose owed replies are written (or handed to the kernel), and
   * cuts it LINGER_MS later unless its client closes first. Reading goes on (resumed if paused),
   * so the client's FIN is seen and its late input is not left for the kernel to reset.
   */
  end(conn: Connection): void {
    if (!conn.open || this.lingering.has(conn)) return;
    conn.closing = true;
    if (conn.paused) {
      conn.paused = false;
      conn.socket.resume();
    }
    conn.socket.shutdown(); // (its client's FIN came already: Bun closes it now)
    if (!conn.open) return;
    const timer = setTimeout(() => {
      if (!this.lingering.delete(conn)) return;
      this.counters.lingerCut++;
      this.cut(conn);
    }, this.lingerMs);
    timer.unref();
    this.lingering.set(conn, timer);
  }

  /**
   * cutOldest cuts the oldest lingering connection that counts toward --max-connections (not one
   * refused past it), to make room for a newcomer, and tells whether there was one.
   */
  cutOldest(): boolean {
    for (const conn of this.lingering.keys()) {
      if (conn.rejected) continue;
      this.forget(conn);
      this.counters.lingerCut++;
      this.cut(conn);
      return true;
    }
    return false;
  }

  /** forget drops a connection that closed (ConnectionLifecycle.onClose) and its timer. */
  forget(conn: Connection): void {
    const timer = this.lingering.get(conn);
    if (timer === undefined) return;
    clearTimeout(timer);
    this.lingering.delete(conn);
  }

  /** checkInvariants throws unless every lingering connection is among `connections` and closing. Tests only. */
  checkInvariants(connections: ReadonlySet<Connection>): void {
    for (const conn of this.lingering.keys()) {
      if (!connections.has(conn) || !conn.closing) throw new Error(`lingering connection ${conn.id} is closed, or not closing`);
    }
  }
}
