/**
 * Admission is the LRU-K admission filter for read-filled entries (K = 2 by default).
 *
 * It keeps a bounded history of the most recent `capacity` distinct key hashes that were offered
 * but not yet admitted, each with an access count. `offer(hash)` counts one more access and says
 * whether the key has now been seen K times within the history; an admitted hash leaves the
 * history (the cache itself now remembers it). When the history is full the oldest hash is
 * forgotten (FIFO ring), so a key must be seen K times within the last `capacity` distinct misses.
 *
 * Layout: a ring (`Int32Array`) of hashes in arrival order, and an open-addressing table of
 * `2 * capacity` rounded to a power of two: `keys` (hash), `counts` (Uint8) and `ringPos` (the
 * ring slot, so removal knows what it removes); linear probing with backward-shift deletion, so no
 * tombstones accumulate. Hash collisions can only admit early, never lose a value.
 */
const EMPTY = 0;

export class Admission {
  readonly k: number;
  readonly capacity: number;
  private readonly ring: Int32Array;
  private ringHead = 0;
  private size = 0;
  private readonly keys: Int32Array;
  private readonly counts: Uint8Array;
  private readonly ringPos: Int32Array;
  private readonly used: Uint8Array;
  private readonly mask: number;
  /**
   * ghosts holds the hashes of admitted keys whose items expired having been read (`remember`),
   * as ARC keeps ghosts of what left the cache: a FIFO of its own, so they never take the place of
   * new keys in the history (a burst of expiries would push every new key out of it). A quarter
   * of the history's length: a hot key's reload comes within moments of its expiry, and a small
   * store's metadata stays small.
   */
  private readonly ghosts: Admission | null;

  constructor(k: number, capacity: number, ghosts = true) {
    if (!Number.isInteger(k) || k < 1 || k > 255) throw new RangeError(`LRU-K needs 1 <= K <= 255, got ${k}`);
    this.k = k;
    this.capacity = Math.max(1, capacity | 0);
    this.ghosts = ghosts && k > 1 ? new Admission(2, Math.max(1, this.capacity >> 2), false) : null;
    this.ring = new Int32Array(this.capacity);
    let slots = 2;
    while (slots < this.capacity * 2) slots *= 2;
    this.mask = slots - 1;
    this.keys = new Int32Array(slots);
    this.counts = new Uint8Array(slots);
    this.ringPos = new Int32Array(slots);
    this.used = new Uint8Array(slots);
  }

  /** offer records one access of `hash` and returns true when it should be admitted. */
  offer(hash: number): boolean {
    if (this.k === 1) return true;
    const s = this.find(hash);
    if (s < 0) {
      if (this.ghosts !== null && this.ghosts.take(hash)) return true; // wanted before it expired
      this.insert(hash);
      return false;
    }
    if (++this.counts[s]! < this.k) return false;
    this.removeSlot(s);
    return true;
  }

  /**
   * admits decides as `offer` does without counting an access: true (and `hash` leaves the history)
   * when the accesses already counted reach K, or `hash` is a ghost. For a fill whose access was
   * counted before it (`record`), so one read is one access however many fills it takes.
   */
  admits(hash: number): boolean {
    if (this.k === 1) return true;
    const s = this.find(hash);
    if (s >= 0 && this.counts[s]! >= this.k) {
      this.removeSlot(s);
      return true;
    }
    if (this.ghosts === null || !this.ghosts.take(hash)) return false;
    if (s >= 0) this.removeSlot(s); // (its access recorded, then found a ghost: admitted as `offer` admits one)
    return true;
  }

  /**
   * record counts one access of `hash` without deciding anything (a caller that joined a load
   * already under way for the key: the load's own `offer` decides, counting this access too).
   */
  record(hash: number): void {
    if (this.k === 1) return;
    const s = this.find(hash);
    if (s < 0) this.insert(hash);
    else if (this.counts[s]! < 255) this.counts[s]!++;
  }

  /**
   * unrecord takes back one access `record` counted, while the history still holds it (the access
   * of a load started ahead of its Get's turn that the Get did not use: server/prefetch.ts). One
   * admitted since, or forgotten by the history, is left as it is.
   */
  unrecord(hash: number): void {
    if (this.k === 1) return;
    const s = this.find(hash);
    if (s < 0) return;
    if (this.counts[s]! > 1) this.counts[s]!--;
    else this.removeSlot(s); // (its ring entry is skipped when it comes up: evictOldest)
  }

  /**
   * remember keeps `hash` among the ghosts: a key that was in the cache and was read before its
   * item expired has proved it is wanted, and its reload's offer admits it at once. (Its admission
   * had taken it out of the history: the reload looked like a new key's, and was refused until it
   * had been loaded K times again, at every expiry.)
   */
  remember(hash: number): void {
    if (this.ghosts === null || this.ghosts.find(hash) >= 0) return;
    this.ghosts.insert(hash);
  }

  /** take removes `hash` if the history holds it, and tells whether it did. */
  private take(hash: number): boolean {
    const s = this.find(hash);
    if (s < 0) return false;
    this.removeSlot(s);
    return true;
  }

  /** insert adds `hash` with one access, forgetting the oldest hash when the history is full; returns its slot. */
  private insert(hash: number): number {
    if (this.size === this.capacity) this.evictOldest();
    // Probe after the eviction: it may have shifted entries.
    let s = hash & this.mask;
    while (this.used[s] !== EMPTY) s = (s + 1) & this.mask;
    this.used[s] = 1;
    this.keys[s] = hash;
    this.counts[s] = 1;
    const at = (this.ringHead + this.size) % this.capacity;
    this.ring[at] = hash;
    this.ringPos[s] = at;
    this.size++;
    return s;
  }

  /** seen returns how many accesses of `hash` the history holds (0 if none). */
  seen(hash: number): number {
    const s = this.find(hash);
    return s < 0 ? 0 : this.counts[s]!;
  }

  reset(): void {
    this.used.fill(EMPTY);
    this.size = 0;
    this.ringHead = 0;
    this.ghosts?.reset();
  }

  byteSize(): number {
    const own = this.ring.byteLength + this.keys.byteLength + this.counts.byteLength + this.ringPos.byteLength + this.used.byteLength;
    return own + (this.ghosts?.byteSize() ?? 0);
  }

  /** historySize is how many hashes the history holds now. */
  historySize(): number {
    return this.size;
  }

  private find(hash: number): number {
    let s = hash & this.mask;
    while (this.used[s] !== EMPTY) {
      if (this.keys[s] === hash) return s;
      s = (s + 1) & this.mask;
    }
    return -1;
  }

  // The ring may still list hashes that were admitted (removed from the table) earlier; those are
  // skipped lazily here, so admission stays O(1) and the ring never needs compaction. A hash
  // admitted and then offered again has a newer ring entry: the table's `ringPos` tells which of
  // the two is its live one, so the old entry does not forget the new one.
  private evictOldest(): void {
    while (this.size > 0) {
      const at = this.ringHead;
      const hash = this.ring[at]!;
      this.ringHead = (this.ringHead + 1) % this.capacity;
      this.size--;
      const s = this.find(hash);
      if (s >= 0 && this.ringPos[s] === at) {
        this.removeSlot(s);
        return;
      }
    }
  }

  private removeSlot(slot: number): void {
    // Backward-shift deletion keeps every probe chain unbroken without tombstones.
    let hole = slot;
    let s = (slot + 1) & this.mask;
    while (this.used[s] !== EMPTY) {
      const ideal = this.keys[s]! & this.mask;
      // Move s into the hole if its ideal slot is not in (hole, s] cyclically.
      if (((s - ideal) & this.mask) >= ((s - hole) & this.mask)) {
        this.keys[hole] = this.keys[s]!;
        this.counts[hole] = this.counts[s]!;
        this.ringPos[hole] = this.ringPos[s]!;
        this.used[hole] = 1;
        hole = s;
      }
      s = (s + 1) & this.mask;
    }
    this.used[hole] = EMPTY;
  }
}
