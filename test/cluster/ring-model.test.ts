/**
 * A seeded model of the ring under churn: members join and leave through setMembers (its merge
 * of renumbered cells with new members' points, and its rebuilds), weights change through add,
 * and after every step every probe's owner is compared with a ring built from scratch of the same
 * members and with a plain reference: every point derived from the documented strings, sorted by
 * point then id, searched. Probes are every point, one before and one after it, and both ends of
 * every bucket, so ties, bucket edges and the wrap are all looked at.
 */
import { expect, test, setDefaultTimeout } from "bun:test";
import { Ring, type RingHash } from "../../src/cluster/ring.ts";
import { cellBitsFor } from "../../src/cluster/ring-cells.ts";
import { pointCount } from "../../src/cluster/ring-points.ts";
import { hashBytes } from "../../src/store/hash.ts";
import { Prng, testSeed } from "../support/prng.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const enc = new TextEncoder();
/** PROBE marks a 5-byte key whose position is its last 4 bytes (big-endian), whatever the hash. */
const PROBE = 0xfe;

/** exact wraps a point hash so that a probe key lands where the test puts it. */
function exact(pointHash: RingHash): RingHash {
  return (b, o, l) => (l === 5 && b[o] === PROBE ? ((b[o + 1]! << 24) | (b[o + 2]! << 16) | (b[o + 3]! << 8) | b[o + 4]!) >>> 0 : pointHash(b, o, l));
}

const probeKey = (pos: number): Uint8Array => new Uint8Array([PROBE, pos >>> 24, (pos >>> 16) & 0xff, (pos >>> 8) & 0xff, pos & 0xff]);

/** Reference is the ring as ring.ts's header states it, with nothing clever: sorted (point, id) pairs. */
class Reference {
  readonly points: number[] = [];
  readonly ids: string[] = [];
  constructor(members: Map<string, number>, hash: RingHash, vnodes: number) {
    const pairs: [number, string][] = [];
    for (const [id, weight] of members) {
      const r = Math.max(1, Math.floor(vnodes * weight + 0.5));
      for (let k = 0; k < r; k++) {
        const b = enc.encode(`${id}#${k}`);
        pairs.push([hash(b, 0, b.length) >>> 0, id]);
      }
    }
    pairs.sort((a, b) => a[0] - b[0] || (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
    for (const [p, id] of pairs) {
      this.points.push(p);
      this.ids.push(id);
    }
  }

  owner(pos: number): string | undefined {
    const n = this.points.length;
    if (n === 0) return undefined;
    let lo = 0;
    let hi = n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.points[mid]! < pos) lo = mid + 1;
      else hi = mid;
    }
    return this.ids[lo === n ? 0 : lo];
  }
}

/** probes are the positions worth looking at for `ref`: each point and its neighbours, bucket ends, the circle's ends. */
function probes(ref: Reference, bits: number): number[] {
  const out = new Set<number>([0, 0xffffffff]);
  for (const p of ref.points) for (const d of [-1, 0, 1]) out.add((p + d) >>> 0);
  const step = 2 ** (32 - bits);
  for (let b = 0; b < 2 ** bits; b++) {
    out.add(b * step);
    out.add((b * step + step - 1) >>> 0);
  }
  return [...out];
}

/** compare checks every probe of `ring` against a fresh build of `members` and the reference. */
function compare(ring: Ring, members: Map<string, number>, hash: RingHash, vnodes: number, where: string): string[] {
  ring.checkInvariants();
  const fresh = new Ring({ vnodes, hash });
  // One build when every weight is 1 (add rebuilds at each member: 4,000 of them took minutes).
  if ([...members.values()].every((w) => w === 1)) fresh.setMembers(members.keys());
  else for (const [id, w] of members) fresh.add(id, w);
  const ref = new Reference(members, hash, vnodes);
  const wrong: string[] = [];
  if (ring.nodes.join() !== [...members.keys()].sort().join()) wrong.push(`${where}: members ${ring.nodes.join()}`);
  for (const pos of probes(ref, cellBitsFor(members.size))) {
    const key = probeKey(pos);
    const got = ring.owner(key);
    const want = ref.owner(pos);
    if (got !== want || fresh.owner(key) !== want || (got !== undefined && ring.nodes[ring.ownerIndex(key)] !== got)) {
      wrong.push(`${where}: 0x${pos.toString(16)} got ${got}, fresh ${fresh.owner(key)}, reference ${want}`);
      if (wrong.length > 5) break;
    }
  }
  return wrong;
}

// coarse: 12 bits of the hash kept, so points tie between members and sit on bucket starts;
// low: points only in the circle's first 2^20 (one bucket at B = 12); murmur: as nodes do.
const hashes: [string, RingHash][] = [
  ["murmur", (b, o, l) => hashBytes(b, o, l)],
  ["coarse", (b, o, l) => hashBytes(b, o, l) & 0xfff00000],
  ["low", (b, o, l) => hashBytes(b, o, l) & 0xfffff],
  ["top-and-bottom", (b, o, l) => (hashBytes(b, o, l) & 1 ? 0xffffffff - (hashBytes(b, o, l) & 7) : hashBytes(b, o, l) & 7)],
];

const seed = testSeed();

for (const [name, pointHash] of hashes) {
  test(`setMembers joins and leaves, and add's weights, give the ring a fresh build and the reference give, at every point, its neighbours and every bucket's ends (${name} hash, TEST_SEED=${seed})`, () => {
    const rnd = new Prng(seed);
    const hash = exact(pointHash);
    const vnodes = 1 + rnd.int(12);
    const ring = new Ring({ vnodes, hash });
    const model = new Map<string, number>();
    const pool = Array.from({ length: 24 }, (_, i) => (i % 3 === 0 ? `10.0.${i}.1:8001` : i % 3 === 1 ? `cache-${i}:${8000 + i}` : `[fd00::${i.toString(16)}]:9000`));
    const wrong: string[] = [];
    for (let step = 0; step < 200 && wrong.length === 0; step++) {
      const op = rnd.int(10);
      if (op < 7) {
        // a new list: most of the members kept, a few joining and a few leaving (the merge), or mostly new (a rebuild)
        const next = new Set([...model.keys()].filter(() => rnd.int(6) !== 0));
        for (let j = rnd.int(op === 0 ? 12 : 3); j > 0; j--) next.add(pool[rnd.int(pool.length)]!);
        const changed = ring.setMembers(rnd.int(2) === 0 ? [...next] : [...next, ...next].reverse());
        const before = [...model.entries()];
        model.clear();
        for (const id of next) model.set(id, 1);
        // Unchanged: the same members, each with weight 1's points (a weight of 0.5 at 1 vnode
        // has them too: the ring holds points, not weights; TEST_SEED=3130238679 met it).
        const same = before.length === model.size && before.every(([id, w]) => pointCount(vnodes, w) === pointCount(vnodes, 1) && model.has(id));
        if (changed === same) wrong.push(`step ${step}: setMembers said ${changed} for an unchanged=${same} list`);
      } else if (op < 9) {
        const id = pool[rnd.int(pool.length)]!;
        const w = [0.5, 1, 1, 2, 3][rnd.int(5)]!;
        ring.add(id, w);
        model.set(id, w);
      } else {
        const id = [...model.keys()][rnd.int(Math.max(1, model.size))];
        if (id !== undefined) {
          ring.remove(id);
          model.delete(id);
        }
      }
      wrong.push(...compare(ring, model, hash, vnodes, `step ${step}`));
      // A clone taken now must not see later changes (it shares the cells).
      if (step % 50 === 49) {
        const c = ring.clone();
        const was = new Map(model);
        ring.setMembers([...model.keys()].slice(1));
        wrong.push(...compare(c, was, hash, vnodes, `clone at step ${step}`));
        model.clear();
        for (const id of ring.nodes) model.set(id, 1);
        wrong.push(...compare(ring, model, hash, vnodes, `after the clone at step ${step}`));
      }
    }
    expect({ seed, vnodes, wrong }).toEqual({ seed, vnodes, wrong: [] });
  });
}

test(`past 4,096 members (13-bit cells) and back, joins and leaves merge as a fresh build places them (TEST_SEED=${seed})`, () => {
  const rnd = new Prng(seed);
  const hash = exact((b, o, l) => hashBytes(b, o, l) & 0xfffffff0);
  const vnodes = 2;
  const ids = Array.from({ length: 4_200 }, (_, i) => `10.${(i >> 8) & 255}.${i & 255}.9:8001`);
  const ring = new Ring({ vnodes, hash });
  let current = ids.slice(0, 4_090);
  const wrong: string[] = [];
  for (let step = 0; step < 8 && wrong.length === 0; step++) {
    const next = new Set(current.filter(() => rnd.int(40) !== 0));
    for (let j = 0; j < 40; j++) next.add(ids[rnd.int(ids.length)]!);
    current = [...next];
    ring.setMembers(current);
    wrong.push(...compare(ring, new Map(current.map((id) => [id, 1])), hash, vnodes, `step ${step} (${current.length} members)`));
  }
  expect({ seed, wrong }).toEqual({ seed, wrong: [] });
});
