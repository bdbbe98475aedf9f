// CacheClient: the public TypeScript client of a MyBunCache node, and what nodes call peers with.
//
// A client talks to ONE node over `connections` long-lived framed strict-binary connections
// (ClientConnection), opened lazily on the first call and reopened with backoff. A call goes on
// the usable connection with the fewest calls waiting, looked at round-robin from after the last
// one picked (when every one backs off, the one whose backoff ends first); with `writeConnection`
// (a node's clients of its peers) writes (Set, Delete, Clear, SetMulti, PeerInvalidate, and their
// Peer forms) go on the first connection and the other calls over the rest (`pick`). Calls are
// pipelined (many in flight per connection, matched by seqid), and a tick's calls leave in one
// socket.write per connection.
//
// Timeouts without a timer per call: one interval per client, running only while calls are in
// flight, times them out and replaces a connection that answers nothing (TimeoutSweep,
// timeout-sweep.ts).
//
// Health (PeerHealth): `maxFailures` consecutive failures of the application's calls (connect
// errors, lost connections, timeouts; not a node's refusal of a connection over its limit, nor a
// failed revival ping of a connection backing off: ClientConnection) mark the peer down: calls then
// reject at once with PEER_UNAVAILABLE "peer is down" (nothing is queued) until a reply marks it
// up; meanwhile a probe asks (PeerPings, peer-pings.ts).
//
// Hot path: `forwardGet` writes a PeerGet for key bytes in place and hands the raw value bytes to
// a callback. Per call it takes a slot from the connection's PendingCalls pool and appends to the
// connection's reused output buffer: no object, closure, string or promise (see the allocation
// test in test/client). Its callback is never called before forwardGet returns.

import { CacheError, ERROR_CODE, errorText } from "../protocol/errors.ts";
import { resolveLimits } from "../protocol/limits.ts";
import {
  METHOD_CLEAR,
  METHOD_DELETE,
  METHOD_GET,
  METHOD_GET_MULTI,
  METHOD_PEER_GET,
  METHOD_PEER_INVALIDATE,
  METHOD_PEER_PING,
  METHOD_SET,
  METHOD_SET_MULTI,
  METHOD_STATS,
  peerMethod,
} from "../protocol/request.ts";
import type { CallWriter, EntryRanges } from "../protocol/call-writer.ts";
import { ClientConnection } from "./client-connection.ts";
import { type ClientOptions, type PeerOption, WRITES, delay, positive } from "./client-options.ts";
import { type ForwardCallback, loadWaitsOf } from "./pending-calls.ts";
import { type ClientCounters, PeerHealth } from "./peer-health.ts";
import { type FoundEntries, type GetResult, type PingResult, type RawEntries, type StatsResult, foundOf, unavailable, valuesFor } from "./results.ts";
import { TimeoutSweep } from "./timeout-sweep.ts";
import { PeerPings } from "./peer-pings.ts";

export type { ClientOptions, PeerOption } from "./client-options.ts";
export type { ForwardCallback } from "./pending-calls.ts";
export type { ClientCounters } from "./peer-health.ts";
export type { GetResult, PingResult, StatsResult } from "./results.ts";
export { isUnknownMethod } from "./results.ts";

const UTF8_OUT = new TextEncoder();
const UTF8_STRICT = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** textOf is `bytes` as UTF-8 text, or undefined when they are not UTF-8. */
function textOf(bytes: Uint8Array): string | undefined {
  try {
    return UTF8_STRICT.decode(bytes);
  } catch {
    return undefined;
  }
}

/** Test-only door to a client's connections (attach fake sockets, feed replies). */
export const TEST_DOOR: unique symbol = Symbol("CacheClient test door");

export class CacheClient {
  readonly counters: ClientCounters;
  private readonly health: PeerHealth;
  private readonly conns: ClientConnection[] = [];
  /** next is the next connection of `pick`'s round. */
  private next = 0;
  /** firstRead is the first connection of `pick`'s round: 1 with a write connection, else 0. */
  private readonly firstRead: number;
  /** timeouts: the sweep that times calls out, on every connection (timeout-sweep.ts). */
  private readonly timeouts: TimeoutSweep;
  /** pings: the client's own PeerPings (the down-peer probe, revivals, liveness) and its health reports (peer-pings.ts). */
  private readonly pings: PeerPings;
  private closed = false;

  constructor(opts: ClientOptions) {
    if (!(Number.isInteger(opts.port) && opts.port > 0 && opts.port <= 65535)) throw new RangeError(`CacheClient: port must be 1..65535, got ${opts.port}`);
    const connections = positive("connections", opts.connections ?? 2);
    const timeoutMs = delay("timeoutMs", opts.timeoutMs ?? 1000);
    const endpoint = {
      host: opts.host,
      port: opts.port,
      connectTimeoutMs: delay("connectTimeoutMs", opts.connectTimeoutMs ?? 1000),
      limits: resolveLimits(opts.limits),
      authToken: opts.authToken,
      sender: opts.sender,
      tls: opts.tls,
      writeAtTurnEnd: opts.writeAtTurnEnd,
    };
    const probeIntervalMs = delay("probeIntervalMs", opts.probeIntervalMs ?? 500);
    const loadWaitMs = opts.loadWaitMs ?? 0;
    if (!(Number.isSafeInteger(loadWaitMs) && loadWaitMs >= 0)) throw new RangeError(`ClientOptions.loadWaitMs must be an integer >= 0, got ${loadWaitMs}`);
    this.health = new PeerHealth(positive("maxFailures", opts.maxFailures ?? 3), () => this.pings.onDown(), () => this.pings.onUp(), () => this.pings.onStillDown());
    this.counters = this.health.counters;
    this.health.onProtocolError = opts.onProtocolError;
    for (let i = 0; i < connections; i++) this.conns.push(new ClientConnection(endpoint, this.health));
    this.firstRead = opts.writeConnection === true && connections > 1 ? 1 : 0;
    this.next = this.firstRead;
    this.timeouts = new TimeoutSweep(this.conns, endpoint, this.health, this.firstRead, timeoutMs, loadWaitMs, (conn) => this.pings.pingLiveness(conn));
    this.pings = new PeerPings(this.conns, this.health, this.timeouts, probeIntervalMs, opts.onHealth, (conn, method, encode) => this.issue(conn, method, encode), () => this.closed);
  }

  /** isDown is true while the peer is marked down (calls reject at once). */
  get isDown(): boolean {
    return this.health.down;
  }

  /**
   * backingOff is true while every connection backs off after a failure (a connect refused or a
   * connection lost): a call made now waits for a reconnect, which its failure would count toward
   * marking the peer down. A caller's background calls (a cluster's lease renewals) wait for it
   * to pass; the calls that must go revive a connection first (`pick`).
   */
  get backingOff(): boolean {
    for (const conn of this.conns) if (conn.usable) return false;
    return this.conns.length > 0;
  }

  /** get returns a key's value and remaining TTL; a miss rejects with NOT_FOUND. */
  get(group: string, key: string | Uint8Array, opts?: PeerOption): Promise<GetResult> {
    return this.call(this.method(METHOD_GET, opts), (w) => {
      w.text(1, group);
      w.bytesOrText(2, key);
    }) as Promise<GetResult>;
  }

  /** set stores a value; ttlMs undefined or 0 = the group's default TTL (a fraction of a ms is rounded up; sent as ttlMs and as ttl seconds). */
  set(group: string, key: string | Uint8Array, value: string | Uint8Array, ttlMs?: number, opts?: PeerOption): Promise<void> {
    return this.call(this.method(METHOD_SET, opts), (w) => {
      w.text(1, group);
      w.bytesOrText(2, key);
      w.bytesOrText(3, value);
      w.ttl(4, ttlMs);
    }) as Promise<void>;
  }

  /** delete removes a key; resolves to whether it was there. */
  delete(group: string, key: string | Uint8Array, opts?: PeerOption): Promise<boolean> {
    return this.call(this.method(METHOD_DELETE, opts), (w) => {
      w.text(1, group);
      w.bytesOrText(2, key);
    }) as Promise<boolean>;
  }

  clear(group: string, opts?: PeerOption): Promise<void> {
    return this.call(this.method(METHOD_CLEAR, opts), (w) => w.text(1, group)) as Promise<void>;
  }

  stats(group: string): Promise<StatsResult> {
    return this.call(METHOD_STATS, (w) => w.text(1, group)) as Promise<StatsResult>;
  }

  /**
   * getMulti returns the values found, by key as asked (a string key as given, a byte key by its
   * UTF-8 text); missing keys are absent. The map is made from the keys asked, matched to the
   * reply's by their bytes: a server cannot name a key not asked. A byte key that is not UTF-8
   * would share its text with others (each bad byte reads U+FFFD), so it is refused
   * INVALID_ARGUMENT: peerGetMulti answers keys as bytes.
   */
  getMulti(group: string, keys: readonly (string | Uint8Array)[]): Promise<Map<string, Uint8Array>> {
    const asked: Uint8Array[] = [];
    const names: string[] = [];
    for (const key of keys) {
      const bytes = typeof key === "string" ? UTF8_OUT.encode(key) : key;
      const name = typeof key === "string" ? key : textOf(bytes);
      if (name === undefined) {
        return Promise.reject(new CacheError(ERROR_CODE.INVALID_ARGUMENT, `GetMulti key ${names.length} is not UTF-8; its result is keyed by text (peerGetMulti answers bytes)`));
      }
      asked.push(bytes);
      names.push(name);
    }
    return this.multiGet(METHOD_GET_MULTI, group, asked).then((found) => {
      const values = new Map<string, Uint8Array>();
      valuesFor(asked, found as FoundEntries).forEach((v, i) => {
        if (v !== undefined) values.set(names[i]!, v);
      });
      return values;
    });
  }

  /** peerGetMulti is getMulti's peer call (PeerGetMulti): the entries found, keys as bytes. */
  peerGetMulti(group: string, keys: readonly (string | Uint8Array)[]): Promise<FoundEntries> {
    return (this.multiGet(this.method(METHOD_GET_MULTI, { peer: true }), group, keys) as Promise<RawEntries>).then(foundOf);
  }

  /** peerGetMultiOf is peerGetMulti of `part`'s keys (EntryRanges), a routed GetMulti's part; the node loads its misses `loadsAtOnce` at a time (loadWaitsOf). */
  peerGetMultiOf(group: string, part: EntryRanges, loadsAtOnce = Infinity): Promise<RawEntries> {
    const encode = (w: CallWriter): void => { w.text(1, group); w.keyList(2, part); };
    return this.call(this.method(METHOD_GET_MULTI, { peer: true }), encode, loadWaitsOf(part.to - part.from, loadsAtOnce)) as Promise<RawEntries>;
  }

  /** peerSetMultiOf is a PeerSetMulti of `part`'s entries (EntryRanges): a node's part of a routed SetMulti. */
  peerSetMultiOf(group: string, part: EntryRanges, ttlMs: number): Promise<void> {
    return this.call(this.method(METHOD_SET_MULTI, { peer: true }), (w) => { w.text(1, group); w.entryMap(2, part); w.ttl(3, ttlMs); }) as Promise<void>;
  }

  setMulti(
    group: string,
    entries: Iterable<[string | Uint8Array, string | Uint8Array]>,
    ttlMs?: number,
    opts?: PeerOption,
  ): Promise<void> {
    const list = Array.isArray(entries) ? (entries as [string | Uint8Array, string | Uint8Array][]) : [...entries];
    return this.call(this.method(METHOD_SET_MULTI, opts), (w) => {
      w.text(1, group);
      w.mapBegin(2, list.length);
      for (const [key, value] of list) {
        w.element(key);
        w.element(value);
      }
      w.ttl(3, ttlMs);
    }) as Promise<void>;
  }

  /** invalidate asks the node to drop its mirrored copies (PeerInvalidate); resolves to how many. */
  invalidate(group: string, keys: readonly (string | Uint8Array)[], all?: boolean): Promise<number> {
    return this.call(METHOD_PEER_INVALIDATE, (w) => {
      w.text(1, group);
      w.listBegin(2, keys.length);
      for (const key of keys) w.element(key);
      if (all !== undefined) w.bool(3, all);
    }) as Promise<number>;
  }

  /**
   * ping checks the node is alive (PeerPing); `sender` is our node id, for its logs; `lease` asks
   * the node to vouch for this one (a cluster member's read lease: PingResult.leaseMs).
   */
  ping(sender?: string, lease?: boolean): Promise<PingResult> {
    return this.call(METHOD_PEER_PING, (w) => {
      if (sender !== undefined) w.text(1, sender);
      if (lease !== undefined) w.bool(2, lease);
    }) as Promise<PingResult>;
  }

  /**
   * forwardGet sends a PeerGet for `key[keyOff, keyOff+keyLen)` in group `group` (name bytes) and
   * calls `done` with the value as a view into the receive buffer, valid only during the call
   * (copy it to keep it), and its remaining TTL (-1 = none); or with a CacheError. Allocates
   * nothing per call; `done` is never called before forwardGet returns.
   */
  forwardGet(group: Uint8Array, key: Uint8Array, keyOff: number, keyLen: number, done: ForwardCallback): void {
    const refusal = this.refusal();
    if (refusal !== null) return this.deferError(done, refusal);
    const conn = this.pick(false);
    const refused = conn.refusedNow;
    if (refused !== null) return this.deferError(done, refused);
    const slot = conn.beginCall(METHOD_PEER_GET, this.timeouts.tick);
    if (slot < 0) return this.deferError(done, overloaded());
    const w = conn.calls;
    w.binary(1, group, 0, group.length);
    w.binary(2, key, keyOff, keyLen);
    const error = conn.endCall(slot, done, null);
    if (error !== null) return this.deferError(done, error);
    this.counters.calls++;
    if (!this.timeouts.running) this.timeouts.start();
  }

  /** close fails every pending call with PEER_UNAVAILABLE "client closed", stops timers and ends the connections. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.timeouts.close();
    this.pings.stop();
    await Promise.all([...this.conns, ...this.timeouts.retired.splice(0)].map((c) => c.close()));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** (`tick`: the sweeps so far, the client's own clock for timeouts: a test times a stub's replies by it, as a loaded machine slows both alike.) */
  get [TEST_DOOR](): { connections: readonly ClientConnection[]; sweep(): void; tick: number } {
    return { connections: this.conns, sweep: () => this.timeouts.sweep(), tick: this.timeouts.tick };
  }

  private deferError(done: ForwardCallback, error: CacheError): void {
    this.counters.errors++;
    queueMicrotask(() => done(error, null, 0, 0, -1));
  }

  private method(seed: number, opts: PeerOption | undefined): number {
    return opts?.peer ? peerMethod(seed) : seed;
  }

  /** multiGet calls GetMulti or PeerGetMulti (`method`) for `keys`: the entries found (FoundEntries). */
  private multiGet(method: number, group: string, keys: readonly (string | Uint8Array)[]): Promise<unknown> {
    return this.call(method, (w) => {
      w.text(1, group);
      w.listBegin(2, keys.length);
      for (const key of keys) w.element(key);
    });
  }

  /** call issues a promise-returning call whose request fields `encode` writes (`loadWaits`: PendingCalls'). */
  private call(method: number, encode: (w: CallWriter) => void, loadWaits = 1): Promise<unknown> {
    const refusal = this.refusal();
    if (refusal !== null) {
      this.counters.errors++;
      return Promise.reject(refusal);
    }
    const conn = method === METHOD_PEER_PING ? this.pings.aroundHeld(this.pick(false)) : this.pick(WRITES.has(method));
    const refused = conn.refusedNow; // (every connection refused by a full node: answered at once)
    if (refused !== null) {
      this.counters.errors++;
      return Promise.reject(refused);
    }
    const slot = this.issue(conn, method, encode);
    if (slot instanceof CacheError) {
      this.counters.errors++;
      return Promise.reject(slot);
    }
    const waiter = Promise.withResolvers<unknown>();
    const error = conn.endCall(slot, null, waiter, loadWaits);
    if (error !== null) {
      this.counters.errors++;
      return Promise.reject(error);
    }
    this.counters.calls++;
    if (!this.timeouts.running) this.timeouts.start();
    return waiter.promise;
  }

  /** issue begins a call on `conn` and encodes it; returns the slot or the refusal. */
  private issue(conn: ClientConnection, method: number, encode: (w: CallWriter) => void): number | CacheError {
    const slot = conn.beginCall(method, this.timeouts.tick);
    if (slot < 0) return overloaded();
    try {
      encode(conn.calls);
    } catch (e) {
      conn.abortCall(slot);
      return new CacheError(ERROR_CODE.INVALID_ARGUMENT, `cannot encode the call: ${errorText(e)}`);
    }
    return slot;
  }

  private refusal(): CacheError | null {
    if (this.closed) return unavailable("client closed");
    if (this.health.down) return unavailable("peer is down");
    return null;
  }

  /**
   * pick returns the usable connection with the fewest calls waiting, round-robin among equals,
   * skipping ones backing off after a failure (it revives those whose backoff is over:
   * PeerPings.revive). A node serves each connection in order, so a call that waits long there (a
   * PeerGet that loads, up to --load-timeout) holds up the calls behind it on its connection:
   * fewest-waiting sends the next calls around it. With a write connection (`writeConnection`), a
   * write gets the first and the reads go to the others: that is for a node's calls to its peers,
   * where a PeerSet behind a loading PeerGet timed out here and was still applied there seconds
   * later, over newer writes.
   */
  private pick(write: boolean): ClientConnection {
    const conns = this.conns;
    for (let i = 0; i < conns.length; i++) if (conns[i]!.revivable) this.pings.revive(conns[i]!);
    const n = conns.length;
    const from = this.firstRead;
    if (write && from === 1 && conns[0]!.usable) return conns[0]!;
    const start = this.next;
    let best: ClientConnection | null = null;
    let fewest = Infinity;
    for (let k = from, i = start; k < n; k++) {
      const conn = conns[i]!;
      i = i + 1 === n ? from : i + 1;
      if (!conn.usable) continue;
      const waiting = conn.pending.waiting;
      if (waiting < fewest) {
        best = conn;
        fewest = waiting;
        this.next = i; // the round goes on after it
        if (waiting === 0) break;
      }
    }
    if (best !== null) return best;
    if (from === 1 && conns[0]!.usable) return conns[0]!;
    // Every one backs off: the one whose backoff ends first (or that is connecting again now), so
    // the call waits least. (Always the same one piled every call on a connection whose backoff
    // kept doubling, while another's had ended: they timed out unsent.)
    let soonest = conns[start]!;
    for (let i = from; i < n; i++) if (conns[i]!.backoffEndsAt < soonest.backoffEndsAt) soonest = conns[i]!;
    return soonest;
  }
}

function overloaded(): CacheError {
  return new CacheError(ERROR_CODE.OVERLOADED, "too many calls in flight on the connection");
}

