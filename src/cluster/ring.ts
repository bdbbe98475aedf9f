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
 * Layout (ring-cells.ts): one Uint32Array of cells, each a point's low bits above its member's
 * index in `nodes` (sorted, so index order is id order), sorted by point within 4,096 buckets of
 * the circle whose starts `buckets` holds. `owner()` is a binary search within the key's bucket:
 * O(log V), no allocation; at 10k points a member the search covers the few points of one bucket
 * instead of walking ~15 steps over the whole array. A member list goes through `setMembers()`:
 * kept members' cells are renumbered (not re-derived) and merged with the new members' points,
 * derived and sorted apart. Installed cells are never written, so `clone()` shares them.
 * `add()` and `remove()` (weights, tests) rebuild the ring from its members' points. A ring holds
 * at most 65,536 members.
 *
 * Costs at 1,024 members and 10,000 vnodes (10 M points; bench/ring-build.ts, 2026-11-29, on a
 * shared 2-core machine): a build ~0.27-0.4 s and +49 MB peak RSS (41 MB kept), a member joining
 * ~35 ms, leaving ~25-35 ms, a clone nothing; owner() ~135 ns. Before the cells (points sorted as
 * doubles, an 8-byte point and owner, clones copied): ~0.7-1.05 s and +191-203 MB, ~90 ms, ~70
 * ms, 30 ms and +79 MB; owner() ~270 ns.
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
 * typical 10-member clusters well inside ±5%. The cost is small: 4 bytes a point (40 KB per member), and owner() measured ~60 ns at 2 members and ~87 ns at 10 with the bucket table
 * (114 and 162 ns without it; 10-byte keys, 2026-11-25).
 */
import { buildCells, cellBitsFor, mergeCells } from "./ring-cells.ts";
import { MURMUR, derivePoints, pointCount } from "./ring-points.ts";

/** RingHash hashes a byte range; the result is read as unsigned 32-bit (int32 or uint32 both work). */
export type RingHash = (buf: Uint8Array, off: number, len: number) => number;

export interface RingOptions {
  /** vnodes is the number of points of a member with weight 1 (default DEFAULT_VNODES). */
  vnodes?: number;
  /** hash replaces MurmurHash3 (seed 0) for points and keys; tests inject simple ones. */
  hash?: RingHash;
}

export const DEFAULT_VNODES = 10_000;

const NO_MEMBERS = cellBitsFor(0);

export class Ring {
  readonly vnodes: number;
  private readonly hash: RingHash;
  private members: string[] = [];
  private readonly replicas = new Map<string, number>();
  /** cells: the points (ring-cells.ts), never written once installed (clones share them). */
  private cells: Uint32Array = new Uint32Array(0);
  private count = 0;
  /** bits is B of the cells (ring-cells.ts): the owner's bits and the bucket's. */
  private bits = NO_MEMBERS;
  /** buckets[b] is the index of the first cell of bucket b (count past the last). */
  private buckets: Int32Array = new Int32Array(2 ** NO_MEMBERS + 1);

  constructor(opts: RingOptions = {}) {
    const vnodes = opts.vnodes ?? DEFAULT_VNODES;
    if (!Number.isInteger(vnodes) || vnodes < 1) throw new RangeError(`ring: vnodes must be a positive integer, got ${vnodes}`);
    this.vnodes = vnodes;
    this.hash = opts.hash ?? MURMUR;
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
   * again sets its weight; keys move only between it and the others. O(V): the ring is rebuilt.
   */
  add(node: string, weight = 1): void {
    const r = pointCount(this.vnodes, weight);
    if (this.replicas.get(node) === r) return;
    const next = new Map(this.replicas);
    next.set(node, r);
    this.rebuild(next);
  }

  /** remove takes `node` out of the ring; its keys go to the members after its points. Unknown: no-op. */
  remove(node: string): void {
    if (!this.replicas.has(node)) return;
    const next = new Map(this.replicas);
    next.delete(node);
    this.rebuild(next);
  }

  /**
   * setMembers makes exactly `nodes` the members, each with weight 1 (a repeated id counts once),
   * and returns whether that changed anything. The ring is the one adding the members one by one
   * gives. Kept members' cells are renumbered in one pass (not re-derived) and the new members'
   * points, derived and sorted apart, merged in: O(V + F log F) for F new points. A kept member
   * of another weight is re-derived as a new one.
   */
  setMembers(nodes: Iterable<string>): boolean {
    const next = [...new Set(nodes)].sort(); // UTF-16 code-unit order, as `<`
    const bits = cellBitsFor(next.length); // first: it throws for too many
    const r = pointCount(this.vnodes, 1);
    const old = this.members;
    // remap[i] is old member i's index in `next`, or -1 when its points go; freshIds lists the
    // indexes in `next` of the members whose points are to be derived.
    const remap = new Int32Array(old.length);
    const isNew = new Uint8Array(next.length).fill(1);
    for (let i = 0, j = 0; i < old.length; i++) {
      const id = old[i]!;
      while (j < next.length && next[j]! < id) j++;
      const keep = j < next.length && next[j] === id && this.replicas.get(id) === r;
      remap[i] = keep ? j : -1;
      if (keep) isNew[j] = 0;
    }
    const freshIds = Int32Array.from(next.keys()).filter((j) => isNew[j] === 1);
    if (freshIds.length === 0 && next.length === old.length) return false;
    // Mostly new members (a node's start: itself, then the list): derive all, into one array,
    // rather than new ones into one and a merge into another (+41 MB at 1,024 members).
    if (bits !== this.bits || 2 * freshIds.length > next.length) {
      this.rebuild(new Map(next.map((id) => [id, r])));
      return true;
    }

    // Everything that allocates comes first, so a failure leaves the ring as it was.
    const { cells: fresh, buckets: freshBuckets } = buildCells(this.hash, [...freshIds].map((j) => next[j]!), new Int32Array(freshIds.length).fill(r), freshIds, bits);
    const n = next.length * r; // every member ends with r points
    const out = new Uint32Array(n); // not in place: a clone may share the cells
    const buckets = mergeCells(this.cells, this.buckets, remap, fresh, freshBuckets, bits, out);
    this.install(next, new Map(next.map((id) => [id, r])), out, bits, buckets);
    return true;
  }

  /** rebuild derives the ring of `replicas` (member → point count) from scratch. */
  private rebuild(replicas: Map<string, number>): void {
    const next = [...replicas.keys()].sort();
    const bits = cellBitsFor(next.length);
    const counts = Int32Array.from(next, (id) => replicas.get(id)!);
    const { cells, buckets } = buildCells(this.hash, next, counts, Int32Array.from(next.keys()), bits);
    this.install(next, replicas, cells, bits, buckets);
  }

  private install(members: string[], replicas: Map<string, number>, cells: Uint32Array, bits: number, buckets: Int32Array): void {
    this.members = members;
    this.replicas.clear();
    for (const [id, r] of replicas) this.replicas.set(id, r);
    this.cells = cells;
    this.count = cells.length;
    this.bits = bits;
    this.buckets = buckets;
  }

  /**
   * clone returns an independent copy of the ring in O(members): it shares the cells and bucket
   * starts, which no change writes to once installed (a change makes new ones). Cluster.ownedHere
   * clones at every change: a copy of the cells was 40 MB and ~30 ms at 1,024 members.
   */
  clone(): Ring {
    const c = new Ring({ vnodes: this.vnodes, hash: this.hash });
    c.install(this.members, this.replicas, this.cells, this.bits, this.buckets);
    return c;
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
    const cells = this.cells;
    const bits = this.bits;
    // The first point at or past `pos` is in its bucket, or is the next bucket's first. Within a
    // bucket, the first cell at or past `want` is the first point at or past `pos`, of the smallest id.
    const b = pos >>> (32 - bits);
    const want = (pos << bits) >>> 0;
    let lo = this.buckets[b]!;
    let hi = this.buckets[b + 1]!;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (cells[mid]! < want) lo = mid + 1;
      else hi = mid;
    }
    return cells[lo === n ? 0 : lo]! & ((1 << bits) - 1);
  }

  /** pointAt returns the point (a position on the circle) of cell i, in bucket b. */
  private pointAt(i: number, b: number): number {
    return b * 2 ** (32 - this.bits) + (this.cells[i]! >>> this.bits);
  }

  /** share is the fraction of all 2^32 key positions that `node` owns (0 for a non-member). O(V). */
  share(node: string): number {
    const p = this.replicas.has(node) ? this.insertionIndex(node) : -1;
    const n = this.count;
    if (p < 0 || n === 0) return 0;
    const mask = (1 << this.bits) - 1;
    // Point i owns the positions after the previous point up to itself; the first point also owns
    // the positions past the last point (the wrap).
    let owned = 0;
    let prev = -1;
    let first = -1;
    for (let b = 0, i = 0; i < n; b++) {
      for (const end = this.buckets[b + 1]!; i < end; i++) {
        const point = this.pointAt(i, b);
        if ((this.cells[i]! & mask) === p) owned += prev < 0 ? 0 : point - prev;
        if (prev < 0) first = point;
        prev = point;
      }
    }
    if ((this.cells[0]! & mask) === p) owned += first + 0x100000000 - prev;
    return owned / 0x100000000;
  }

  /** checkInvariants throws when the cells disagree with the documented derivation (tests only: O(V log V)). */
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
    if (this.bits !== cellBitsFor(m.length)) fail(`cells of ${this.bits} bits for ${m.length} members`);
    const nb = 2 ** this.bits;
    if (this.buckets.length !== nb + 1 || this.buckets[0] !== 0 || this.buckets[nb] !== this.count) fail("bucket table ends");
    const mask = nb - 1;
    const seen = m.map(() => [] as number[]);
    for (let b = 0; b < nb; b++) {
      const lo = this.buckets[b]!;
      const hi = this.buckets[b + 1]!;
      if (lo > hi) fail(`bucket ${b} ends before it starts`);
      for (let i = lo; i < hi; i++) {
        if (i > lo && this.cells[i - 1]! > this.cells[i]!) fail(`cells out of order at ${i}`);
        const o = this.cells[i]! & mask;
        if (o >= m.length) fail(`owner ${o} out of range at ${i}`);
        seen[o]!.push(this.pointAt(i, b));
      }
    }
    for (let k = 0; k < m.length; k++) {
      // Derived through the hash as given, byte strings whole (not ring-points.ts's resumed MurmurHash3).
      const ref = derivePoints((buf, off, len) => this.hash(buf, off, len), m[k]!, this.replicas.get(m[k]!)!);
      const got = seen[k]!;
      if (got.length !== ref.length) fail(`${m[k]} has ${got.length} points, want ${ref.length}`);
      for (let i = 0; i < got.length; i++) if (got[i] !== ref[i]) fail(`${m[k]} point ${i} is ${got[i]}, want ${ref[i]}`);
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
}
