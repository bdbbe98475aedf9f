/**
 * Ring maps key bytes to one owner among the cluster's members: consistent hashing with virtual
 * nodes (points) and per-member weights.
 *
 * The derivation is a contract: a ring-aware client in another language must reproduce it.
 * - H(bytes) is MurmurHash3 x86_32 with seed 0 (`hashBytes` in src/store/hash.ts), read as an
 *   unsigned 32-bit integer.
 * - A member `id` with weight `w` has R = max(1, floor(vnodes × w + 0.5)) points (IEEE doubles).
 *   Point r, for 0 ≤ r < R, is H(utf8(id) ‖ "#" ‖ decimal(r)): the id's UTF-8 bytes, one 0x23
 *   byte, then r in ASCII digits without leading zeros, e.g. H("127.0.0.1:8001#0")
 *   (ring-points.ts).
 * - Points are ordered by value, then by member id (UTF-16 code-unit order, as JS `<`; the same as
 *   byte order for ASCII ids like "host:port"). So equal points go to the smaller id, in whatever
 *   order the members joined.
 * - A key's position is H(key bytes); its owner is the member of the first point ≥ the position
 *   in that order, wrapping from past the last point to the first.
 * Golden vectors in test/cluster/ring.test.ts pin this.
 *
 * Layout: `points` (Uint32Array) holds the points in that order and `owners` (Int32Array) the
 * index of each point's member in `nodes` (sorted, so index order is id order). Both have spare
 * capacity and grow by doubling. `owner()` is a binary search over `points`: O(log V), no
 * allocation, narrowed first by `buckets` (the first point of each 1/4096 of the circle, rebuilt
 * by every change): at 10k points a member the search covers the few points of one bucket, in
 * one or two cache lines, instead of walking ~15 steps over the whole array. `add()` sorts only
 * the new member's R points and merges them in from the back, in place; `remove()` compacts the
 * member's points out; both renumber `owners` in the same O(V) sweep, never re-deriving other
 * members' points. A weight change is a remove and an add: the points a member keeps are the
 * same, so only the difference moves. Each costs O(V), so a whole member list goes through
 * `setMembers()` (one compaction of the kept members' points, one sort of all the new points, one
 * merge): 300 members took ~4 s as adds, ~0.2 s as one list.
 *
 * Default vnodes (DEFAULT_VNODES = 10000), measured. A member's share is a sum of V random arcs,
 * so its spread shrinks only as 1/√V. Worst |share − 1/N| / (1/N), exact (arc lengths, not a
 * sample) for the test's members "127.0.0.1:8001"… at N = 3 / 5 / 10; the chance that a
 * 100k-key sample with a random seed puts some node past ±5% (normal approximation over all
 * three rings); and the worst deviation for 40 random sets of 10 "ip:port" ids (median / p95):
 *       V   exact 3 / 5 / 10     P(sample fails)   random 10-sets
 *    1000   2.5% / 3.7% / 7.9%    ~1                5.2% / 8.0%
 *    2000   2.5% / 2.1% / 3.7%    14%               4.0% / 6.1%
 *    4096   0.8% / 1.6% / 3.4%    4.9%              2.7% / 4.1%
 *    5000   2.3% / 2.6% / 5.0%    49%               2.4% / 3.9%
 *    8192   1.1% / 0.8% / 2.2%    0.24%             2.0% / 3.2%
 *   10000   0.7% / 1.0% / 1.1%    0.008%            1.6% / 2.7%
 * 10000 is the smallest round count whose balance test does not realistically flake (worst
 * sampled deviation over 200 seeds: 2.0% / 2.6% / 4.4%; 8192 reached 4.9%), and it keeps
 * typical 10-member clusters well inside ±5%. The cost is small: 8 bytes a point (80 KB per member), ~1-2 ms to add a
 * member (~0.6 ms each in a whole list), and owner() measured ~60 ns at 2 members and ~87 ns at 10 with the bucket table
 * (114 and 162 ns without it; 10-byte keys, 2026-11-25).
 */
import { hashBytes } from "../store/hash.ts";
import { derivePoints, pointCount, writePoints } from "./ring-points.ts";

/** RingHash hashes a byte range; the result is read as unsigned 32-bit (int32 or uint32 both work). */
export type RingHash = (buf: Uint8Array, off: number, len: number) => number;

export interface RingOptions {
  /** vnodes is the number of points of a member with weight 1 (default DEFAULT_VNODES). */
  vnodes?: number;
  /** hash replaces MurmurHash3 (seed 0) for points and keys; tests inject simple ones. */
  hash?: RingHash;
}

export const DEFAULT_VNODES = 10_000;
/** The circle is cut into BUCKETS equal arcs for `ownerIndex`'s first step (16 KB a ring). */
const BUCKET_SHIFT = 20;
const BUCKETS = 2 ** (32 - BUCKET_SHIFT);
const BUCKET_SPAN = 2 ** BUCKET_SHIFT;

/**
 * setMembers sorts new points as doubles `point × OWNER_SPAN + owner index`: exact below 2^53, so
 * one numeric sort orders them by point, then by member, and a list holds at most OWNER_SPAN ids.
 */
const OWNER_SPAN = 2 ** 21;

const murmur: RingHash = (buf, off, len) => hashBytes(buf, off, len, 0);

export class Ring {
  readonly vnodes: number;
  private readonly hash: RingHash;
  private members: string[] = [];
  private readonly replicas = new Map<string, number>();
  private points = new Uint32Array(64);
  private owners = new Int32Array(64);
  private count = 0;
  /** buckets[b] is the index of the first point at or past position b << BUCKET_SHIFT (count past the last). */
  private readonly buckets = new Int32Array(BUCKETS + 1);

  constructor(opts: RingOptions = {}) {
    const vnodes = opts.vnodes ?? DEFAULT_VNODES;
    if (!Number.isInteger(vnodes) || vnodes < 1) throw new RangeError(`ring: vnodes must be a positive integer, got ${vnodes}`);
    this.vnodes = vnodes;
    this.hash = opts.hash ?? murmur;
  }

  /** nodes are the current members sorted by id; a new array after every change (a snapshot). */
  get nodes(): readonly string[] {
    return this.members;
  }

  /** size is the number of members. */
  get size(): number {
    return this.members.length;
  }

  /** has tells whether `node` is a member. */
  has(node: string): boolean {
    return this.replicas.has(node);
  }

  /**
   * add makes `node` a member with `weight` (default 1) times `vnodes` points. Adding a member
   * again sets its weight; keys move only between it and the others.
   */
  add(node: string, weight = 1): void {
    const r = pointCount(this.vnodes, weight);
    const current = this.replicas.get(node);
    if (current === r) return;
    if (current !== undefined) this.remove(node);

    const fresh = derivePoints(this.hash, node, r);
    const p = this.insertionIndex(node);
    const members = this.members.slice();
    members.splice(p, 0, node);

    const n = this.count;
    this.reserve(n + r);
    const points = this.points;
    const owners = this.owners;
    for (let i = 0; i < n; i++) if (owners[i]! >= p) owners[i]!++;
    // Merge from the back so nothing is overwritten before it is moved. On equal points the one
    // whose member sorts later is placed later (owners are already renumbered around p).
    let i = n - 1;
    let j = r - 1;
    for (let w = n + r - 1; j >= 0; w--) {
      const a = i >= 0 ? points[i]! : -1;
      const b = fresh[j]!;
      if (a > b || (a === b && owners[i]! > p)) {
        points[w] = a;
        owners[w] = owners[i]!;
        i--;
      } else {
        points[w] = b;
        owners[w] = p;
        j--;
      }
    }
    this.count = n + r;
    this.members = members;
    this.replicas.set(node, r);
    this.rebuildBuckets();
  }

  /**
   * setMembers makes exactly `nodes` the members, each with weight 1 (a repeated id counts once),
   * and returns whether that changed anything. The ring is the one adding the members one by one
   * gives, built in one pass: kept members' points are compacted in place (not re-derived), the
   * new members' points are derived, sorted together once and merged in from the back. O(V + F
   * log F) for F new points, where F adds would cost O(F·V). A kept member of another weight is
   * re-derived as a new one.
   */
  setMembers(nodes: Iterable<string>): boolean {
    const next = [...new Set(nodes)].sort(); // UTF-16 code-unit order, as `<`
    if (next.length > OWNER_SPAN) throw new RangeError(`ring: at most ${OWNER_SPAN} members, got ${next.length}`);
    const r = pointCount(this.vnodes, 1);
    const old = this.members;
    // remap[i] is old member i's index in `next`, or -1 when its points go; fresh[j] marks the
    // members of `next` whose points are to be derived.
    const remap = new Int32Array(old.length);
    const fresh = new Uint8Array(next.length).fill(1);
    let freshCount = next.length;
    for (let i = 0, j = 0; i < old.length; i++) {
      const id = old[i]!;
      while (j < next.length && next[j]! < id) j++;
      const keep = j < next.length && next[j] === id && this.replicas.get(id) === r;
      remap[i] = keep ? j : -1;
      if (keep) {
        fresh[j] = 0;
        freshCount--;
      }
    }
    if (freshCount === 0 && next.length === old.length) return false;

    // Everything that allocates comes first, so a failure leaves the ring as it was.
    const incoming = new Float64Array(freshCount * r);
    const scratch = new Uint32Array(r);
    for (let j = 0, f = 0; j < next.length; j++) {
      if (fresh[j] === 0) continue;
      writePoints(this.hash, next[j]!, r, scratch);
      for (let k = 0; k < r; k++) incoming[f++] = scratch[k]! * OWNER_SPAN + j;
    }
    incoming.sort();
    const n = next.length * r; // every member ends with r points
    this.reserve(n);

    // Kept points, in place: remap is increasing, so equal points stay in member order.
    const points = this.points;
    const owners = this.owners;
    let kept = 0;
    for (let i = 0; i < this.count; i++) {
      const o = remap[owners[i]!]!;
      if (o < 0) continue;
      points[kept] = points[i]!;
      owners[kept++] = o;
    }

    // Merge from the back, as `add()` does: before each new point go the kept points that sort
    // after it (a kept and a new point never have the same member).
    let i = kept - 1;
    let w = n - 1;
    for (let f = incoming.length - 1; f >= 0; f--, w--) {
      const v = incoming[f]!;
      const p = Math.floor(v / OWNER_SPAN);
      const o = v - p * OWNER_SPAN;
      for (; i >= 0 && (points[i]! > p || (points[i] === p && owners[i]! > o)); i--, w--) {
        points[w] = points[i]!;
        owners[w] = owners[i]!;
      }
      points[w] = p;
      owners[w] = o;
    }
    this.count = n;
    this.members = next;
    this.replicas.clear();
    for (const id of next) this.replicas.set(id, r);
    this.rebuildBuckets();
    return true;
  }

  /** clone returns an independent copy of the ring (O(V) copies, nothing re-derived). */
  clone(): Ring {
    const c = new Ring({ vnodes: this.vnodes, hash: this.hash });
    c.points = this.points.slice(0, this.count);
    c.owners = this.owners.slice(0, this.count);
    c.count = this.count;
    c.members = this.members; // a snapshot: never changed in place
    for (const [id, r] of this.replicas) c.replicas.set(id, r);
    c.buckets.set(this.buckets);
    return c;
  }

  /** rebuildBuckets recomputes `buckets` from `points` (O(V + BUCKETS)). */
  private rebuildBuckets(): void {
    const points = this.points;
    const n = this.count;
    let i = 0;
    for (let b = 0; b <= BUCKETS; b++) {
      const start = b * BUCKET_SPAN; // as a double: 2^32 for the end
      while (i < n && points[i]! < start) i++;
      this.buckets[b] = i;
    }
  }

  /** remove takes `node` out of the ring; its keys go to the members after its points. Unknown: no-op. */
  remove(node: string): void {
    if (!this.replicas.has(node)) return;
    const p = this.insertionIndex(node);
    const points = this.points;
    const owners = this.owners;
    let w = 0;
    for (let i = 0; i < this.count; i++) {
      const o = owners[i]!;
      if (o === p) continue;
      points[w] = points[i]!;
      owners[w] = o > p ? o - 1 : o;
      w++;
    }
    this.count = w;
    const members = this.members.slice();
    members.splice(p, 1);
    this.members = members;
    this.replicas.delete(node);
    this.rebuildBuckets();
  }

  /** owner returns the member that owns the key bytes, or undefined when the ring is empty. */
  owner(key: Uint8Array, off = 0, len = key.length - off): string | undefined {
    const i = this.ownerIndex(key, off, len);
    return i < 0 ? undefined : this.members[i];
  }

  /** ownerIndex returns the owner's index in `nodes`, or -1 when the ring is empty. */
  ownerIndex(key: Uint8Array, off = 0, len = key.length - off): number {
    const n = this.count;
    if (n === 0) return -1;
    const pos = this.hash(key, off, len) >>> 0;
    const points = this.points;
    // The first point at or past `pos` is in its bucket, or is the next bucket's first.
    const b = pos >>> BUCKET_SHIFT;
    let lo = this.buckets[b]!;
    let hi = this.buckets[b + 1]!;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (points[mid]! < pos) lo = mid + 1;
      else hi = mid;
    }
    return this.owners[lo === n ? 0 : lo]!;
  }

  /** share is the fraction of all 2^32 key positions that `node` owns (0 for a non-member). O(V). */
  share(node: string): number {
    const p = this.replicas.has(node) ? this.insertionIndex(node) : -1;
    const n = this.count;
    if (p < 0 || n === 0) return 0;
    const points = this.points;
    const owners = this.owners;
    // Point i owns the positions after the previous point up to itself; point 0 also owns the
    // positions past the last point (the wrap).
    let owned = owners[0] === p ? points[0]! + 0x100000000 - points[n - 1]! : 0;
    for (let i = 1; i < n; i++) if (owners[i] === p) owned += points[i]! - points[i - 1]!;
    return owned / 0x100000000;
  }

  /** checkInvariants throws when the arrays disagree with the documented derivation (tests only: O(V log V)). */
  checkInvariants(): void {
    const fail = (why: string): never => {
      throw new Error(`ring invariant: ${why}`);
    };
    const m = this.members;
    if (m.length !== this.replicas.size) fail("members and replica counts differ in size");
    for (let k = 0; k < m.length; k++) {
      if (!this.replicas.has(m[k]!)) fail(`member ${m[k]} has no replica count`);
      if (k > 0 && !(m[k - 1]! < m[k]!)) fail("members not strictly sorted");
    }
    for (let b = 0, i = 0; b <= BUCKETS; b++) {
      while (i < this.count && this.points[i]! < b * BUCKET_SPAN) i++;
      if (this.buckets[b] !== i) fail(`bucket ${b} starts at ${this.buckets[b]}, want ${i}`);
    }
    const seen = m.map(() => [] as number[]);
    for (let i = 0; i < this.count; i++) {
      const o = this.owners[i]!;
      if (o < 0 || o >= m.length) fail(`owner ${o} out of range at ${i}`);
      if (i > 0) {
        const prev = this.points[i - 1]!;
        const cur = this.points[i]!;
        if (prev > cur || (prev === cur && this.owners[i - 1]! > o)) fail(`points out of order at ${i}`);
      }
      seen[o]!.push(this.points[i]!);
    }
    for (let k = 0; k < m.length; k++) {
      const want = derivePoints(this.hash, m[k]!, this.replicas.get(m[k]!)!);
      const got = seen[k]!;
      if (got.length !== want.length) fail(`${m[k]} has ${got.length} points, want ${want.length}`);
      for (let i = 0; i < got.length; i++) if (got[i] !== want[i]) fail(`${m[k]} point ${i} is ${got[i]}, want ${want[i]}`);
    }
  }

  /** insertionIndex is where `node` is (or would go) in the sorted members. */
  private insertionIndex(node: string): number {
    const m = this.members;
    let lo = 0;
    let hi = m.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (m[mid]! < node) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** reserve grows the point arrays to hold `n` points: to n, but at least doubled (amortized adds). */
  private reserve(n: number): void {
    if (n <= this.points.length) return;
    const cap = Math.max(n, this.points.length * 2);
    const points = new Uint32Array(cap);
    const owners = new Int32Array(cap);
    points.set(this.points.subarray(0, this.count));
    owners.set(this.owners.subarray(0, this.count));
    this.points = points;
    this.owners = owners;
  }
}
