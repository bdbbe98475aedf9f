import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { DEFAULT_VNODES, Ring, type RingHash } from "../../src/cluster/ring.ts";
import { hashBytes } from "../../src/store/hash.ts";
import { Prng, bytes, testSeed } from "../support/prng.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const seed = testSeed();
const KEYS = 100_000;
const KEY_LEN = 16;

// Golden vectors (MurmurHash3 x86_32 seed 0; vnodes 100; members 127.0.0.1:8001..8003): another
// implementation of the ring checks itself against these.
const GOLDEN_POINT_0 = 3491760952; // H("127.0.0.1:8001#0")
const GOLDEN_USER_1 = 3416794175; // H("user:1")
const GOLDEN_OWNERS: Record<string, string> = {
  "": "127.0.0.1:8003",
  a: "127.0.0.1:8002",
  "user:1": "127.0.0.1:8001",
  "user:2": "127.0.0.1:8003",
  "user:3": "127.0.0.1:8003",
  hello: "127.0.0.1:8002",
  "session:42": "127.0.0.1:8003",
  "key:0": "127.0.0.1:8003",
  "key:1": "127.0.0.1:8002",
  "key:2": "127.0.0.1:8001",
};
const GOLDEN_KEYS = Object.keys(GOLDEN_OWNERS);

const ids = (n: number): string[] => Array.from({ length: n }, (_, i) => `127.0.0.1:${8001 + i}`);

function ring(members: readonly string[], opts?: ConstructorParameters<typeof Ring>[0]): Ring {
  const r = new Ring(opts);
  for (const id of members) r.add(id);
  r.checkInvariants();
  return r;
}

/** randomKeys returns `n` random 16-byte keys packed in one buffer: key i is at i * KEY_LEN. */
function randomKeys(n: number, s: number): Uint8Array {
  const rnd = new Prng(s);
  const buf = new Uint8Array(n * KEY_LEN);
  for (let i = 0; i < buf.length; i++) buf[i] = rnd.int(256);
  return buf;
}

function owners(r: Ring, keys: Uint8Array): (string | undefined)[] {
  const out: (string | undefined)[] = [];
  for (let i = 0; i * KEY_LEN < keys.length; i++) out.push(r.owner(keys, i * KEY_LEN, KEY_LEN));
  return out;
}

/** shares counts each member's keys and returns them as fractions of all keys, by member id. */
function shares(r: Ring, keys: Uint8Array): Map<string, number> {
  const counts = new Float64Array(r.size);
  const n = keys.length / KEY_LEN;
  for (let i = 0; i < n; i++) counts[r.ownerIndex(keys, i * KEY_LEN, KEY_LEN)]!++;
  return new Map(r.nodes.map((id, k) => [id, counts[k]! / n]));
}

/** moves compares owners before and after a change: how many keys moved, and from/to whom. */
function moves(before: (string | undefined)[], after: (string | undefined)[]): { moved: number; from: Set<string>; to: Set<string> } {
  let moved = 0;
  const from = new Set<string>();
  const to = new Set<string>();
  for (let i = 0; i < before.length; i++) {
    if (before[i] === after[i]) continue;
    moved++;
    from.add(before[i]!);
    to.add(after[i]!);
  }
  return { moved, from, to };
}

/** The reference model: every point derived from the documented strings, sorted, scanned linearly. */
function modelOwner(members: Map<string, number>, hash: RingHash, vnodes: number, key: Uint8Array): string | undefined {
  const pts: [number, string][] = [];
  for (const [id, weight] of members) {
    const r = Math.max(1, Math.floor(vnodes * weight + 0.5));
    for (let k = 0; k < r; k++) {
      const b = bytes(`${id}#${k}`);
      pts.push([hash(b, 0, b.length) >>> 0, id]);
    }
  }
  if (pts.length === 0) return undefined;
  pts.sort((a, b) => a[0] - b[0] || (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  const pos = hash(key, 0, key.length) >>> 0;
  return (pts.find((p) => p[0] >= pos) ?? pts[0]!)[1];
}

const murmur: RingHash = (b, o, l) => hashBytes(b, o, l);
/** identity reads the first 4 bytes big-endian (missing bytes are 0): positions are readable. */
const identity: RingHash = (b, o, l) => ((b[o] ?? 0) << 24) | ((l > 1 ? b[o + 1]! : 0) << 16) | ((l > 2 ? b[o + 2]! : 0) << 8) | (l > 3 ? b[o + 3]! : 0);
const be = (x: number): Uint8Array => new Uint8Array([x >>> 24, (x >>> 16) & 0xff, (x >>> 8) & 0xff, x & 0xff]);

describe("Ring", () => {
  test("the documented derivation: golden points and owners", () => {
    const point = (s: string): number => hashBytes(bytes(s), 0, s.length) >>> 0;
    expect(point("127.0.0.1:8001#0")).toBe(GOLDEN_POINT_0);
    expect(point("user:1")).toBe(GOLDEN_USER_1);
    const r = ring(ids(3), { vnodes: 100 }); // checkInvariants re-derives every point
    expect(Object.fromEntries(GOLDEN_KEYS.map((k) => [k, r.owner(bytes(k))]))).toEqual(GOLDEN_OWNERS);
  });

  test("an empty ring owns nothing; unknown removes are no-ops", () => {
    const r = new Ring();
    expect(r.vnodes).toBe(DEFAULT_VNODES);
    expect([r.size, r.nodes, r.owner(bytes("k")), r.ownerIndex(bytes("k")), r.has("a")]).toEqual([0, [], undefined, -1, false]);
    r.remove("a");
    r.add("a");
    r.add("b", 0.5);
    expect([r.size, r.nodes, r.has("a")]).toEqual([2, ["a", "b"], true]);
    r.remove("zzz");
    r.remove("a");
    r.remove("b");
    r.checkInvariants();
    expect([r.size, r.nodes, r.owner(bytes("k")), r.ownerIndex(bytes("k"))]).toEqual([0, [], undefined, -1]);
    expect(() => new Ring({ vnodes: 0 })).toThrow(RangeError);
    expect(() => new Ring({ vnodes: 1.5 })).toThrow(RangeError);
    for (const w of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) expect(() => r.add("a", w)).toThrow(RangeError);
  });

  // "B#0" hashes to 0x42233000 and "B#1" to 0x42233100 (bytes 'B' '#' '0'|'1', then a 0 pad).
  const P = (id: string, k: number): number => ((id.charCodeAt(0) << 24) | (0x23 << 16) | ((0x30 + k) << 8)) >>> 0;
  const exact: [string, number, string][] = [
    ["position 0 goes to the first point", 0, "B"],
    ["just before a point", P("B", 0) - 1, "B"],
    ["exactly on a point", P("B", 0), "B"],
    ["between a member's two points", P("B", 0) + 1, "B"],
    ["exactly on the second point", P("B", 1), "B"],
    ["just past it, to the next member", P("B", 1) + 1, "D"],
    ["on the last point", P("F", 1), "F"],
    ["past the last point wraps to the first", P("F", 1) + 1, "B"],
    ["the top position wraps too", 0xffffffff, "B"],
  ];
  for (const [name, pos, want] of exact) {
    test(`identity hash, 2 vnodes: ${name} (0x${pos.toString(16)} → ${want})`, () => {
      const r = ring(["F", "B", "D"], { vnodes: 2, hash: identity });
      expect(r.owner(be(pos))).toBe(want);
      expect(r.nodes[r.ownerIndex(be(pos))]).toBe(want);
      // off/len select the key inside a bigger buffer
      const framed = new Uint8Array([9, 9, ...be(pos), 9]);
      expect(r.owner(framed, 2, 4)).toBe(want);
    });
  }

  test("equal points go to the smaller id, whatever the order members joined", () => {
    // identity hash sees only "same" in every point of both members: all points tie
    for (const order of [["same-b", "same-a"], ["same-a", "same-b"]]) {
      const r = ring(order, { vnodes: 3, hash: identity });
      expect([r.owner(be(0)), r.owner(be(0x73616d65)), r.owner(be(0xffffffff))]).toEqual(["same-a", "same-a", "same-a"]);
      expect(r.share("same-a")).toBe(1);
      r.remove("same-a");
      expect(r.owner(be(0))).toBe("same-b");
    }
  });

  for (const n of [3, 5, 10]) {
    test(`${n} members, default vnodes: every share of ${KEYS} keys within ±5% of fair (TEST_SEED=${seed})`, () => {
      const r = ring(ids(n));
      const fair = 1 / n;
      const sampled = shares(r, randomKeys(KEYS, seed + n));
      for (const id of r.nodes) {
        expect(Math.abs(sampled.get(id)! - fair)).toBeLessThanOrEqual(0.05 * fair);
        expect(Math.abs(r.share(id) - fair)).toBeLessThanOrEqual(0.05 * fair); // exact, no sampling noise
      }
      expect(r.nodes.reduce((s, id) => s + r.share(id), 0)).toBeCloseTo(1, 12);
    });
  }

  for (const n of [3, 10]) {
    test(`adding member ${n + 1} to ${n} moves about 1/${n + 1} of keys, all to it (TEST_SEED=${seed})`, () => {
      const keys = randomKeys(KEYS, seed);
      const r = ring(ids(n));
      const before = owners(r, keys);
      const newcomer = `127.0.0.1:${8001 + n}`;
      r.add(newcomer);
      r.checkInvariants();
      const { moved, to } = moves(before, owners(r, keys));
      expect(Math.abs(moved / KEYS - 1 / (n + 1))).toBeLessThanOrEqual(0.25 / (n + 1));
      expect([...to]).toEqual([newcomer]);
      // and removing it again puts every key back
      r.remove(newcomer);
      r.checkInvariants();
      expect(owners(r, keys)).toEqual(before);
    });
  }

  test(`removing a member moves exactly its keys (TEST_SEED=${seed})`, () => {
    const keys = randomKeys(KEYS, seed);
    const r = ring(ids(5));
    const before = owners(r, keys);
    const gone = "127.0.0.1:8003";
    r.remove(gone);
    r.checkInvariants();
    const after = owners(r, keys);
    const { moved, from } = moves(before, after);
    expect([...from]).toEqual([gone]);
    expect(moved).toBe(before.filter((o) => o === gone).length);
    expect(after.includes(gone)).toBe(false);
  });

  test(`weights: a member with weight 2 gets twice the share; a weight change moves only its keys (TEST_SEED=${seed})`, () => {
    const keys = randomKeys(KEYS, seed);
    const heavy = "127.0.0.1:8002";
    const r = ring(ids(4));
    const before = owners(r, keys);
    r.add(heavy, 2);
    r.checkInvariants();
    const sampled = shares(r, keys);
    for (const id of r.nodes) {
      const fair = (id === heavy ? 2 : 1) / 5;
      expect(Math.abs(sampled.get(id)! - fair)).toBeLessThanOrEqual(0.05 * fair);
    }
    const doubled = owners(r, keys);
    expect([...moves(before, doubled).to]).toEqual([heavy]);
    r.add(heavy, 2); // same weight: nothing changes
    expect(owners(r, keys)).toEqual(doubled);
    r.add(heavy, 0.5);
    r.checkInvariants();
    const halved = owners(r, keys);
    expect([...moves(doubled, halved).from]).toEqual([heavy]);
    // history does not matter: a ring built with the final weights agrees
    const fresh = new Ring();
    for (const id of ids(4)) fresh.add(id, id === heavy ? 0.5 : 1);
    expect(owners(fresh, keys)).toEqual(halved);
  });

  test(`the same members in any order, with churn on the way, give the same owners (TEST_SEED=${seed})`, () => {
    const rnd = new Prng(seed);
    const keys = randomKeys(20_000, seed);
    const members = ids(10);
    const want = owners(ring(members), keys);
    for (let round = 0; round < 3; round++) {
      const shuffled = members.slice();
      for (let i = shuffled.length - 1; i > 0; i--) {
        const j = rnd.int(i + 1);
        [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
      }
      const r = new Ring();
      for (const id of shuffled) {
        r.add(id);
        if (rnd.int(3) === 0) r.add("127.0.0.1:9999", 1 + rnd.int(3)); // a passer-by
      }
      r.remove("127.0.0.1:9999");
      r.checkInvariants();
      expect(r.nodes).toEqual(members);
      expect(owners(r, keys)).toEqual(want);
    }
  });

  // coarse keeps 8 bits of the hash: points tie often and keys land exactly on points.
  const hashes: [string, RingHash][] = [
    ["murmur", murmur],
    ["coarse", (b, o, l) => hashBytes(b, o, l) & 0xff000000],
  ];
  for (const [name, hash] of hashes) {
    test(`random add/re-weight/remove agrees with a from-scratch reference (${name} hash, TEST_SEED=${seed})`, () => {
      const rnd = new Prng(seed);
      const vnodes = 8;
      const r = new Ring({ vnodes, hash });
      const model = new Map<string, number>();
      const probes = Array.from({ length: 64 }, (_, i) => bytes(`probe:${i}:${rnd.int(1e9)}`));
      for (let step = 0; step < 300; step++) {
        const id = `10.0.0.${rnd.int(12)}:8001`;
        if (rnd.int(3) === 0) {
          r.remove(id);
          model.delete(id);
        } else {
          const weight = [0.25, 0.5, 1, 1, 2, 3][rnd.int(6)]!;
          r.add(id, weight);
          model.set(id, weight);
        }
        r.checkInvariants();
        expect(r.nodes).toEqual([...model.keys()].sort());
        for (const key of probes) expect(r.owner(key)).toBe(modelOwner(model, hash, vnodes, key));
      }
    });
  }

  test("owner() allocates nothing (control: one object per call is detected)", async () => {
    // In a child process (ring-alloc-child.ts): a fresh heap keeps the probe sensitive.
    const proc = Bun.spawn(["bun", `${import.meta.dir}/ring-alloc-child.ts`], { stdout: "pipe", stderr: "inherit" });
    const text = await new Response(proc.stdout).text();
    expect(await proc.exited).toBe(0);
    const r = JSON.parse(text.trim().split("\n").pop()!) as { control: boolean; owner: boolean; ownerIndex: boolean };
    expect(r.control).toBe(true); // the probe works
    expect(r.owner).toBe(false);
    expect(r.ownerIndex).toBe(false);
  }, 30_000);
});
