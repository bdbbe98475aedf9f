// PeerHealth: whether a peer is up, from the outcomes of its calls, and the client's counters.
//
// Every connection of a client reports here. A reply of any kind (a value, a CacheError, even a
// TApplicationException) to a call proves the peer alive: `succeeded` resets the
// consecutive-failure count and marks a down peer up again. A connect error, a connection closed
// under us, or a timed-out call is a failure; `maxFailures` in a row mark the peer down. While
// down the client rejects calls at once and probes; the first reply to anything (normally the
// probe) marks it up. A reply to what the client sends of its own accord beside the calls (a
// connection's Auth and intro PeerPing, a liveness or revival PeerPing) is only `answered`: it
// marks a down peer up but, while up, keeps the failures in a row (review: a peer that took each
// new connection, or answered pings, but let every call time out was never marked down, since
// each quiet connection replaced came back taken and reset the count).

/** ClientCounters are a client's running totals, a plain struct of numbers. */
export interface ClientCounters {
  calls: number; // calls issued (probes not counted)
  errors: number; // calls that settled with an error, of any kind (incl. timeouts, refusals while down)
  timeouts: number; // calls abandoned at their deadline
  reconnects: number; // connections opened after the first on the same slot
  downs: number; // transitions from up to down
  protocolErrors: number; // replies that broke the protocol (malformed, or a seqid not in flight): the connection was dropped
}

export class PeerHealth {
  readonly counters: ClientCounters = { calls: 0, errors: 0, timeouts: 0, reconnects: 0, downs: 0, protocolErrors: 0 };
  /** onProtocolError hears each reply that broke the protocol (the client's option of that name). */
  onProtocolError: ((reason: string) => void) | undefined;
  /** Consecutive failures since the last reply. */
  failures = 0;
  down = false;
  /** lastFailure is the reason of the latest failure (what marked the peer down, when it is). */
  lastFailure = "";
  /** reportedFailure is the reason last passed on (onDown, or the client's onStillDown). */
  reportedFailure = "";
  private readonly maxFailures: number;
  private readonly onDown: () => void;
  private readonly onUp: () => void;
  private readonly onStillDown: (() => void) | undefined;

  /** onStillDown hears each failure while down whose reason differs from the one last reported. */
  constructor(maxFailures: number, onDown: () => void, onUp: () => void, onStillDown?: () => void) {
    this.maxFailures = maxFailures;
    this.onDown = onDown;
    this.onUp = onUp;
    this.onStillDown = onStillDown;
  }

  /** succeeded records a reply to a call (the application's, or the down-peer probe). */
  succeeded(): void {
    this.failures = 0;
    if (this.down) {
      this.down = false;
      this.onUp();
    }
  }

  /**
   * answered records a reply to the client's own Auth, intro, liveness or revival PeerPing: the
   * peer is there (a down one is up again), but it served no call, so the failures in a row stand.
   */
  answered(): void {
    if (this.down) this.succeeded();
  }

  /** failed records a connect error, a lost connection or a timeout, and why. */
  failed(reason: string): void {
    this.failures++;
    this.lastFailure = reason;
    if (this.down) {
      if (reason !== this.reportedFailure) this.onStillDown?.();
    } else if (this.failures >= this.maxFailures) {
      this.reportedFailure = reason;
      this.down = true;
      this.counters.downs++;
      this.onDown();
    }
  }
}
