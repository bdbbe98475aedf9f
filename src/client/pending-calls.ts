// PendingCalls: the pool of in-flight call records of one client connection, keyed by seqid.
//
// Memory layout: a struct of typed arrays indexed by slot (state, method, generation, issue tick,
// message length, load waits, the waits it may hold others and be held, whether the node may
// serve it in order, late deadline, deadline-list links), two object arrays for the completion
// target (a forward callback or a promise's resolvers), a typed-array stack of free slots, and
// the calls in flight by method. Everything grows by doubling, up to MAX_SLOTS, and is reused: a
// steady stream of calls allocates nothing.
//
// Seqid = (generation << SLOT_BITS) | slot, so the slot of a reply is `seqid & SLOT_MASK` with
// no map, and the generation (1..MAX_GENERATION, bumped on each reuse of the slot) makes a seqid
// of a slot's earlier use miss. Seqids are positive and never 0 (0 is what a server sends when it
// could not read the call's header).
//
// A call that times out is NOT freed: its slot turns ABANDONED and stays taken until its late
// reply arrives (then it is dropped) or the connection closes. So a seqid can never be answered
// by a reply meant for an earlier call, however late, and any reply whose seqid is not in flight
// is a protocol violation. WAITING slots are linked in issue order (`prev`/`next`, -1 = nil);
// since every call of a connection has the same timeout, that is also deadline order and the
// sweep stops at the first call that is not yet due. A call the sweep lets wait past the timeout
// (a peer's load, see CallTimeouts.sweep) turns LATE and moves to a second list, in order of its
// own longer deadline (`lateUntil`): a PeerGetMulti may wait for several loads in turn
// (`loadWaits`), a PeerGet for one, and either for the loads of the calls the node may serve
// before it in order (`queuedWaits`), so a call may be due before one issued earlier. Calls turn
// LATE in issue order and mostly with the latest deadline yet, so each is linked from the tail
// in a step or two.

import type { CacheError } from "../protocol/errors.ts";

/** ForwardCallback receives a forwarded Get's outcome; `value` is a view valid only during the call. */
export type ForwardCallback = (
  err: CacheError | null,
  value: Uint8Array | null,
  valueOff: number,
  valueLen: number,
  ttlRemainingMs: number,
) => void;

/** Waiter settles a promise-returning call (Promise.withResolvers' shape). */
export interface Waiter {
  resolve(value: unknown): void;
  reject(reason: CacheError): void;
}

export const SLOT_FREE = 0;
export const SLOT_WAITING = 1;
export const SLOT_ABANDONED = 2;
/** SLOT_LATE: waiting past the timeout (still counted in `waiting`). */
export const SLOT_LATE = 3;

/** The two lists' places in PendingCalls.ends. */
const WAITING_LIST = 0;
const LATE_LIST = 2;

const SLOT_BITS = 16;
const SLOT_MASK = (1 << SLOT_BITS) - 1;
/** Most calls in flight on one connection. */
export const MAX_SLOTS = 1 << SLOT_BITS;
const MAX_GENERATION = (1 << (31 - SLOT_BITS)) - 1;
const INITIAL_SLOTS = 256;

type Slot = number;

/**
 * loadWaitsOf is how many load waits in turn a PeerGetMulti of `keys` keys may take on a node that
 * loads its misses `loadsAtOnce` at a time: with every load as long as the longest, one per window.
 */
export function loadWaitsOf(keys: number, loadsAtOnce: number): number {
  return Math.max(1, Math.ceil(keys / loadsAtOnce));
}

export class PendingCalls {
  state = new Uint8Array(INITIAL_SLOTS);
  method = new Uint8Array(INITIAL_SLOTS);
  private generation = new Uint16Array(INITIAL_SLOTS);
  /** Sweep tick at which the call was issued. */
  issuedAt = new Float64Array(INITIAL_SLOTS);
  /** entries: the most map entries the call's reply may hold (a GetMulti's keys; else -1: no map). */
  entries = new Int32Array(INITIAL_SLOTS);
  /** bytes: the length of the call's message (a node serves a long PeerGetMulti in order: CallTimeouts.mayBeHeld). */
  bytes = new Int32Array(INITIAL_SLOTS);
  /**
   * loadWaits: how many of the node's load waits in turn the call may wait past its timeout, if
   * it may load (CallTimeouts): 1, more for a PeerGetMulti of many keys (loadWaitsOf; its caller's).
   */
  loadWaits = new Int32Array(INITIAL_SLOTS);
  /**
   * holds: how many load waits in turn the node may keep the calls sent after this one on the
   * connection unread, serving this one in order (`queue`: a PeerGetMulti that came while another
   * waited, or a long one; 0 for most). heldWaits sums it over the calls in flight (waiting, late or
   * abandoned: the node serves a timed-out call all the same).
   */
  holds = new Int32Array(INITIAL_SLOTS);
  heldWaits = 0;
  /**
   * inOrder: 1 for a call the node may serve in order, holding the connection until it is answered
   * (`queue`: one that holds others, or a PeerGet sent past the node's out-of-order bound, which
   * holds none longer); inOrderCalls counts them in flight, abandoned ones included.
   */
  private inOrder = new Uint8Array(INITIAL_SLOTS);
  inOrderCalls = 0;
  /**
   * queuedWaits: `heldWaits` when the call was sent: the load waits the node may keep it unread
   * behind the calls before it, on top of its own (`loadWaits`). Before, a call waited for its own
   * keys only, and one sent behind PeerGetMultis the node served in order ran out of wait.
   */
  queuedWaits = new Int32Array(INITIAL_SLOTS);
  /** lateUntil: the last sweep tick a LATE call may wait to (set by `lateWait`). */
  lateUntil = new Float64Array(INITIAL_SLOTS);
  private prev = new Int32Array(INITIAL_SLOTS).fill(-1);
  private next = new Int32Array(INITIAL_SLOTS).fill(-1);
  readonly forward: (ForwardCallback | null)[] = [];
  readonly waiter: (Waiter | null)[] = [];
  private free = new Int32Array(INITIAL_SLOTS);
  private freeTop = 0;
  private capacity = 0;
  /** ends holds the oldest and newest slot of each list, -1 when empty: WAITING at 0, LATE at 2. */
  private readonly ends = Int32Array.of(-1, -1, -1, -1);
  /**
   * calls: the calls in flight (waiting, late or abandoned: the node serves a timed-out call all
   * the same) by method (`inFlightOf`).
   */
  private readonly calls = new Int32Array(256);
  /** Slots WAITING or LATE / of them LATE / ABANDONED. */
  waiting = 0;
  late = 0;
  abandoned = 0;

  constructor() {
    this.grow(INITIAL_SLOTS);
  }

  /** acquire takes a slot for a call of `method` issued at `tick`; -1 when MAX_SLOTS are in flight. */
  acquire(method: number, tick: number): Slot {
    if (this.freeTop === 0) {
      if (this.capacity >= MAX_SLOTS) return -1;
      this.grow(this.capacity * 2);
    }
    const slot = this.free[--this.freeTop]!;
    const gen = this.generation[slot]! >= MAX_GENERATION ? 1 : this.generation[slot]! + 1;
    this.generation[slot] = gen;
    this.state[slot] = SLOT_WAITING;
    this.method[slot] = method;
    this.calls[method]!++;
    this.issuedAt[slot] = tick;
    this.append(slot, WAITING_LIST);
    this.waiting++;
    return slot;
  }

  /** head and tail are the oldest and newest WAITING slot; lateHead and lateTail, LATE; -1 when none. */
  get head(): Slot {
    return this.ends[WAITING_LIST]!;
  }

  get tail(): Slot {
    return this.ends[WAITING_LIST + 1]!;
  }

  get lateHead(): Slot {
    return this.ends[LATE_LIST]!;
  }

  get lateTail(): Slot {
    return this.ends[LATE_LIST + 1]!;
  }

  seqidOf(slot: Slot): number {
    return (this.generation[slot]! << SLOT_BITS) | slot;
  }

  /** find returns the slot `seqid` names if it is in flight (WAITING, LATE or ABANDONED), else -1. */
  find(seqid: number): Slot {
    const slot = seqid & SLOT_MASK;
    if (seqid <= 0 || slot >= this.capacity || this.state[slot] === SLOT_FREE) return -1;
    return this.generation[slot] === seqid >>> SLOT_BITS ? slot : -1;
  }

  /** abandon turns a WAITING or LATE call into one whose reply will be dropped (timed out). */
  abandon(slot: Slot): void {
    this.unlink(slot);
    this.state[slot] = SLOT_ABANDONED;
    this.forward[slot] = null;
    this.waiter[slot] = null;
    this.waiting--;
    this.abandoned++;
  }

  /**
   * lateWait moves the WAITING call `slot` to the LATE list (it waits past the timeout) until tick
   * `until`, linked after the LATE calls due no later, before those due after it.
   */
  lateWait(slot: Slot, until: number): void {
    this.unlink(slot);
    this.state[slot] = SLOT_LATE;
    this.lateUntil[slot] = until;
    let after = this.ends[LATE_LIST + 1]!;
    while (after >= 0 && this.lateUntil[after]! > until) after = this.prev[after]!;
    if (after === this.ends[LATE_LIST + 1]) this.append(slot, LATE_LIST);
    else this.linkAfter(slot, after);
    this.late++;
  }

  /**
   * queue notes the call in `slot`, being sent, behind the calls in flight (`queuedWaits`), and
   * that it `holds` the calls sent after it for that many load waits; `inOrder`, that the node may
   * serve it in order (as every call that holds others).
   */
  queue(slot: Slot, holds: number, inOrder = holds > 0): void {
    this.queuedWaits[slot] = this.heldWaits;
    this.holds[slot] = holds;
    this.heldWaits += holds;
    this.inOrder[slot] = inOrder ? 1 : 0;
    if (inOrder) this.inOrderCalls++;
  }

  /** release frees a slot (its reply arrived, or the connection is gone). */
  release(slot: Slot): void {
    this.heldWaits -= this.holds[slot]!;
    this.holds[slot] = 0;
    this.inOrderCalls -= this.inOrder[slot]!;
    this.inOrder[slot] = 0;
    if (this.state[slot] === SLOT_WAITING || this.state[slot] === SLOT_LATE) {
      this.unlink(slot);
      this.waiting--;
    } else {
      this.abandoned--;
    }
    this.state[slot] = SLOT_FREE;
    this.calls[this.method[slot]!]!--;
    this.forward[slot] = null;
    this.waiter[slot] = null;
    this.free[this.freeTop++] = slot;
  }

  /** inFlight is the number of slots taken (waiting or abandoned). */
  get inFlight(): number {
    return this.waiting + this.abandoned;
  }

  /** slotCount is the pool's current capacity (for tests and the takeAll walk). */
  get slotCount(): number {
    return this.capacity;
  }

  /** waitingAny tells whether a WAITING or LATE call is of one of `methods`. */
  waitingAny(methods: ReadonlySet<number>): boolean {
    for (let slot = this.head; slot >= 0; slot = this.next[slot]!) if (methods.has(this.method[slot]!)) return true;
    for (let slot = this.lateHead; slot >= 0; slot = this.next[slot]!) if (methods.has(this.method[slot]!)) return true;
    return false;
  }

  /** inFlightOf is how many calls of `method` are in flight (waiting, late or abandoned). */
  inFlightOf(method: number): number {
    return this.calls[method]!;
  }

  /** append links `slot` as the newest of `list` (WAITING_LIST or LATE_LIST). */
  private append(slot: Slot, list: number): void {
    const tail = this.ends[list + 1]!;
    this.prev[slot] = tail;
    this.next[slot] = -1;
    if (tail >= 0) this.next[tail] = slot;
    else this.ends[list] = slot;
    this.ends[list + 1] = slot;
  }

  /** linkAfter links `slot` into the LATE list after `after` (-1: as its oldest), which is not its newest. */
  private linkAfter(slot: Slot, after: Slot): void {
    const next = after >= 0 ? this.next[after]! : this.ends[LATE_LIST]!;
    this.prev[slot] = after;
    this.next[slot] = next;
    this.prev[next] = slot;
    if (after >= 0) this.next[after] = slot;
    else this.ends[LATE_LIST] = slot;
  }

  /** unlink takes a WAITING or LATE slot out of its list (a LATE one stops counting as late). */
  private unlink(slot: Slot): void {
    const list = this.state[slot] === SLOT_LATE ? LATE_LIST : WAITING_LIST;
    if (list === LATE_LIST) this.late--;
    const p = this.prev[slot]!;
    const n = this.next[slot]!;
    if (p >= 0) this.next[p] = n;
    else this.ends[list] = n;
    if (n >= 0) this.prev[n] = p;
    else this.ends[list + 1] = p;
    this.prev[slot] = this.next[slot] = -1;
  }

  private grow(capacity: number): void {
    const old = this.capacity;
    if (old > 0) {
      this.state = resize(this.state, capacity);
      this.method = resize(this.method, capacity);
      this.generation = resize(this.generation, capacity);
      this.issuedAt = resize(this.issuedAt, capacity);
      this.entries = resize(this.entries, capacity);
      this.bytes = resize(this.bytes, capacity);
      this.loadWaits = resize(this.loadWaits, capacity);
      this.holds = resize(this.holds, capacity);
      this.inOrder = resize(this.inOrder, capacity);
      this.queuedWaits = resize(this.queuedWaits, capacity);
      this.lateUntil = resize(this.lateUntil, capacity);
      this.prev = resize(this.prev, capacity);
      this.next = resize(this.next, capacity);
      this.free = resize(this.free, capacity);
    }
    for (let s = old; s < capacity; s++) {
      this.prev[s] = this.next[s] = -1;
      this.forward.push(null);
      this.waiter.push(null);
    }
    // Free slots are handed out lowest first (pushed highest first).
    for (let s = capacity - 1; s >= old; s--) this.free[this.freeTop++] = s;
    this.capacity = capacity;
  }

  /** checkInvariants throws when the pool's counts, free stack and links disagree (tests). */
  checkInvariants(): void {
    let waiting = 0;
    let late = 0;
    let abandoned = 0;
    for (let s = 0; s < this.capacity; s++) {
      if (this.state[s] === SLOT_WAITING) waiting++;
      else if (this.state[s] === SLOT_LATE) late++;
      else if (this.state[s] === SLOT_ABANDONED) abandoned++;
    }
    if (waiting + late !== this.waiting || late !== this.late || abandoned !== this.abandoned) throw new Error("PendingCalls: counts disagree with states");
    if (this.freeTop + waiting + late + abandoned !== this.capacity) throw new Error("PendingCalls: free stack size wrong");
    let held = 0;
    for (let s = 0; s < this.capacity; s++) held += this.holds[s]!;
    if (held !== this.heldWaits) throw new Error("PendingCalls: heldWaits disagrees with the calls' holds");
    let inOrder = 0;
    for (let s = 0; s < this.capacity; s++) {
      if (this.holds[s]! > 0 && this.inOrder[s] !== 1) throw new Error("PendingCalls: a call that holds others is not in order");
      inOrder += this.inOrder[s]!;
    }
    if (inOrder !== this.inOrderCalls) throw new Error("PendingCalls: inOrderCalls disagrees with the calls");
    const calls = new Int32Array(256);
    for (let s = 0; s < this.capacity; s++) if (this.state[s] !== SLOT_FREE) calls[this.method[s]!]!++;
    if (calls.some((n, m) => n !== this.calls[m])) throw new Error("PendingCalls: calls by method disagree with the slots");
    this.checkList(this.head, this.tail, SLOT_WAITING, waiting, this.issuedAt);
    this.checkList(this.lateHead, this.lateTail, SLOT_LATE, late, this.lateUntil);
  }

  /** checkList checks a list's links, that it holds every slot of `state`, and its order by `order` (issue tick, or deadline). */
  private checkList(head: Slot, tail: Slot, state: number, count: number, order: Float64Array): void {
    let linked = 0;
    let last = -1;
    for (let s = head; s >= 0; s = this.next[s]!) {
      if (this.state[s] !== state) throw new Error("PendingCalls: a linked slot is in another state");
      if (this.prev[s] !== last) throw new Error("PendingCalls: broken prev link");
      if (last >= 0 && order[s]! < order[last]!) throw new Error("PendingCalls: list out of order");
      last = s;
      if (++linked > this.capacity) throw new Error("PendingCalls: cycle");
    }
    if (linked !== count || last !== tail) throw new Error("PendingCalls: list does not hold every slot of its state");
  }
}

function resize<T extends Uint8Array | Uint16Array | Int32Array | Float64Array>(a: T, capacity: number): T {
  const grown = new (a.constructor as new (n: number) => T)(capacity);
  grown.set(a);
  return grown;
}
