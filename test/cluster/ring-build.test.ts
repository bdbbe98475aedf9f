/**
 * Ring.setMembers builds a whole member list in one pass; it must give exactly the ring that
 * adding the members one at a time gives (the only way before it), ties included.
 *
 * `probe` is MurmurHash3 for point strings (always longer than 4 bytes here) and reads a 4-byte
 * key as a big-endian position, so a test can ask for the owner at any position: at every point
 * and one past it, which pins every arc of the ring. `coarse` keeps 12 bits of each point, so
 * about one point in three shares its value with another member's.
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { Cluster, type PeerClient } from "../../src/cluster/cluster.ts";
import { DEFAULT_VNODES, Ring, type RingHash } from "../../src/cluster/ring.ts";
import { hashBytes } from "../../src/store/hash.ts";
import { Prng, bytes, testSeed } from "../support/prng.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const seed = testSeed();
const enc = new TextEncoder();
const position = (b: Uint8Array, o: number): number => ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;
const probe: RingHash = (b, o, l) => (l === 4 ? position(b, o) : hashBytes(b, o, l));
const coarse: RingHash = (b, o, l) => (l === 4 ? position(b, o) : hashBytes(b, o, l) & 0xfff00000);
const hashes = { probe, coarse };

const ids = (n: number): string[] => Array.from({ length: n }, (_, i) => `127.0.0.1:${8001 + i}`);

/** pointsOf returns every point of `members` (weight 1) by the documented derivation. */
function pointsOf(members: readonly string[], vnodes: number, hash: RingHash): Uint32Array {
  const out = new Uint32Array(members.length * vnodes);
  const buf = new Uint8Array(64);
  let i = 0;
  for (const id of members) {
    for (let k = 0; k < vnodes; k++) {
      const { written } = enc.encodeInto(`${id}#${k}`, buf);
      out[i++] = hash(buf, 0, written) >>> 0;
    }
  }
  return out;
}

/**
 * digest is FNV-1a over ownerIndex at each point and one past it, in member then k order: equal
 * digests mean the same owner on both sides of every point, so the same owner for every key.
 */
function digest(r: Ring, points: Uint32Array): number {
  const key = new Uint8Array(4);
  const dv = new DataView(key.buffer);
  let h = 0x811c9dc5;
  const mix = (x: number): void => {
    h = Math.imul(h ^ (x & 0xffff), 0x01000193);
    h = Math.imul(h ^ (x >>> 16), 0x01000193);
  };
  for (const p of points) {
    dv.setUint32(0, p);
    mix(r.ownerIndex(key, 0, 4));
    dv.setUint32(0, (p + 1) >>> 0);
    mix(r.ownerIndex(key, 0, 4));
  }
  return h >>> 0;
}

/** owners lists ownerIndex at each point and one past it (a readable digest). */
function owners(r: Ring, points: Uint32Array): Int32Array {
  const key = new Uint8Array(4);
  const dv = new DataView(key.buffer);
  const out = new Int32Array(points.length * 2);
  points.forEach((p, i) => {
    dv.setUint32(0, p);
    out[2 * i] = r.ownerIndex(key, 0, 4);
    dv.setUint32(0, (p + 1) >>> 0);
    out[2 * i + 1] = r.ownerIndex(key, 0, 4);
  });
  return out;
}

/** incremental builds the ring the way every member list was applied before setMembers. */
function incremental(members: readonly string[], vnodes: number, hash: RingHash): Ring {
  const r = new Ring({ vnodes, hash });
  for (const id of members) r.add(id);
  return r;
}

function shuffled<T>(xs: readonly T[], rnd: Prng): T[] {
  const out = xs.slice();
  for (let i = out.length - 1; i > 0; i--) {
    const j = rnd.int(i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/** ties counts points whose value another member's point also has. */
function ties(points: Uint32Array): number {
  const sorted = points.slice().sort();
  let n = 0;
  for (let i = 1; i < sorted.length; i++) if (sorted[i] === sorted[i - 1]) n++;
  return n;
}

describe("Ring.setMembers", () => {
  // Digests computed with the code before setMembers existed (members added one by one, in
  // reverse order): the key → owner mapping of a member list must never change.
  const golden: [keyof typeof hashes, number, number, number][] = [
    ["probe", DEFAULT_VNODES, 1, 73013957],
    ["probe", DEFAULT_VNODES, 2, 263111093],
    ["probe", DEFAULT_VNODES, 3, 2499511845],
    ["probe", DEFAULT_VNODES, 17, 3086064212],
    ["probe", DEFAULT_VNODES, 300, 3254663595],
    ["coarse", 50, 2, 2410496053],
    ["coarse", 50, 17, 426155756],
    ["coarse", 50, 300, 3882766373],
  ];
  for (const [name, vnodes, n, want] of golden) {
    test(`${n} members, ${name} hash, ${vnodes} vnodes: owners as before, at every point and past it`, () => {
      const members = ids(n).reverse();
      const r = new Ring({ vnodes, hash: hashes[name] });
      expect(r.setMembers(members)).toBe(true);
      expect(r.nodes).toEqual(ids(n));
      expect(digest(r, pointsOf(members, vnodes, hashes[name]))).toBe(want);
      if (vnodes <= 100) r.checkInvariants(); // O(V log V) in plain arrays
    });
  }

  test("the golden lists do have tied points (else ties would go unchecked)", () => {
    expect(ties(pointsOf(ids(300), DEFAULT_VNODES, probe))).toBeGreaterThan(100);
    expect(ties(pointsOf(ids(300), 50, coarse))).toBeGreaterThan(1000);
  });

  for (const n of [1, 2, 3, 17, 300]) {
    for (const name of ["probe", "coarse"] as const) {
      test(`${n} members, ${name} hash: the same ring as adding them one by one, in any order (TEST_SEED=${seed})`, () => {
        const rnd = new Prng(seed + n);
        const vnodes = 64;
        const hash = hashes[name];
        const points = pointsOf(ids(n), vnodes, hash);
        const want = owners(incremental(shuffled(ids(n), rnd), vnodes, hash), points);
        const r = new Ring({ vnodes, hash });
        r.setMembers([...shuffled(ids(n), rnd), ...ids(n).slice(0, 3)]); // repeats count once
        r.checkInvariants();
        expect(r.nodes).toEqual(ids(n));
        expect(owners(r, points)).toEqual(want);
      });
    }
  }

  for (const name of ["probe", "coarse"] as const) {
    test(`random lists applied to a live ring agree with a ring built from scratch (${name} hash, TEST_SEED=${seed})`, () => {
      const rnd = new Prng(seed);
      const vnodes = 16;
      const hash = hashes[name];
      const pool = Array.from({ length: 24 }, (_, i) => `10.0.${i % 3}.${i}:7000`);
      const r = new Ring({ vnodes, hash });
      const weights = new Map<string, number>(); // the model: member → weight
      for (let step = 0; step < 200; step++) {
        // now and then the ring is also changed the incremental way, weights included
        if (rnd.int(4) === 0) {
          const id = pool[rnd.int(pool.length)]!;
          const w = [0.5, 1, 2][rnd.int(3)]!;
          r.add(id, w);
          weights.set(id, w);
        }
        if (rnd.int(4) === 0) {
          const id = pool[rnd.int(pool.length)]!;
          r.remove(id);
          weights.delete(id);
        }
        const list = rnd.int(8) === 0 ? [...weights.keys()].sort() : pool.filter(() => rnd.int(3) !== 0).sort();
        const same = list.length === weights.size && list.every((id) => weights.get(id) === 1);
        expect(r.setMembers(shuffled(list, rnd))).toBe(!same);
        weights.clear();
        for (const id of list) weights.set(id, 1);
        r.checkInvariants();
        expect(r.nodes).toEqual(list);
        const points = pointsOf(list, vnodes, hash);
        expect(owners(r, points)).toEqual(owners(incremental(list, vnodes, hash), points));
      }
    });
  }

  test("a kept member of another weight is re-derived at weight 1", () => {
    const r = new Ring({ vnodes: 32, hash: coarse });
    r.add("a:1");
    r.add("b:1", 3);
    expect(r.setMembers(["a:1", "b:1"])).toBe(true);
    r.checkInvariants();
    const points = pointsOf(["a:1", "b:1"], 32, coarse);
    expect(owners(r, points)).toEqual(owners(incremental(["a:1", "b:1"], 32, coarse), points));
    expect(r.setMembers([])).toBe(true);
    expect([r.size, r.ownerIndex(bytes("k"))]).toEqual([0, -1]);
  });

  test("1,000 members build: every member present, points as derived, each owns its own points", () => {
    const vnodes = 1000; // 1M points: checkInvariants re-derives every one of them
    const members = ids(1000);
    const r = new Ring({ vnodes, hash: probe });
    r.setMembers(shuffled(members, new Prng(seed)));
    r.checkInvariants();
    expect(r.nodes).toEqual(members);
    const points = pointsOf(members, vnodes, probe);
    const at = owners(r, points);
    let total = 0;
    for (let m = 0; m < members.length; m++) {
      expect(r.share(members[m]!)).toBeGreaterThan(0);
      total += r.share(members[m]!);
      // A member owns the position of each of its points, unless a smaller id has a point there too.
      for (let k = 0; k < vnodes; k++) {
        const o = at[2 * (m * vnodes + k)]!;
        if (o !== m) expect(o).toBeLessThan(m);
      }
    }
    expect(total).toBeCloseTo(1, 9);
  });

  test("clone is an independent copy with the same owners", () => {
    const r = new Ring({ vnodes: 64, hash: coarse });
    r.setMembers(ids(17));
    const points = pointsOf(ids(17), 64, coarse);
    const want = owners(r, points);
    const c = r.clone();
    c.checkInvariants();
    expect(owners(c, points)).toEqual(want);
    r.setMembers(ids(3));
    r.add("zzz:1");
    expect(owners(c, points)).toEqual(want);
    expect(c.nodes).toEqual(ids(17));
    c.add("aaa:1");
    c.checkInvariants();
    expect(r.nodes).toEqual([...ids(3), "zzz:1"]);
  });
});

test("the largest ring (1,024 members, 10,000 vnodes) builds within 70 MB, from empty or from a node's own, and its copy for a purge takes none", async () => {
  // In a child process (ring-memory-child.ts; Linux's /proc): its peak RSS is the ring's alone. The 10 M points
  // were sorted as doubles beside 8-byte points (+191 MB), and a copy copied them (+79 MB); cells
  // of 4 bytes are 41 MB, and a copy shares them. A node's first list (itself, then the list)
  // also derived the new members apart and merged them into another array (+88 MB).
  const proc = Bun.spawn(["bun", `${import.meta.dir}/ring-memory-child.ts`], { stdout: "pipe", stderr: "inherit" });
  const text = await new Response(proc.stdout).text();
  expect(await proc.exited).toBe(0);
  const r = JSON.parse(text.trim().split("\n").pop()!) as { build: number; clone: number; start: number; size: number };
  expect(r.size).toBe(3072);
  expect(r.build).toBeLessThan(70);
  expect(r.start).toBeLessThan(70);
  expect(r.clone).toBeLessThan(8);
});

describe("Cluster.setMembers", () => {
  const peer = (): PeerClient => ({ isDown: false, close: async () => {} }) as unknown as PeerClient;
  const quiet = { info() {}, warn() {} };

  test(`300 members, then churn: owners as a ring built one by one; ownedHere agrees (TEST_SEED=${seed})`, () => {
    const rnd = new Prng(seed);
    const self = "127.0.0.1:8001";
    const cluster = new Cluster({ self, vnodes: 64, connect: peer, logger: quiet });
    const keys = Array.from({ length: 2000 }, (_, i) => bytes(`user:${i}:${rnd.int(1e9)}`));
    for (const list of [ids(300), ids(300).slice(150), [...ids(40), "10.9.9.9:1"], []]) {
      expect(cluster.setMembers(list)).toBe(true);
      const want = new Ring({ vnodes: 64 });
      for (const id of new Set([...list, self])) want.add(id);
      expect(cluster.members).toEqual(want.nodes);
      cluster.ring.checkInvariants();
      const here = cluster.ownedHere();
      for (const k of keys) {
        expect(cluster.owner(k, 0, k.length)).toBe(want.owner(k)!);
        expect(here(k, 0, k.length)).toBe(want.owner(k) === self);
      }
      expect(cluster.setMembers(list)).toBe(false);
    }
  });
});
