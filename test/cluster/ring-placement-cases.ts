/**
 * The member lists and keys of the placement fixture (ring-placement.json), and the digest of a
 * ring's owners over them. Key placement is a contract between nodes of different versions (a
 * rolling upgrade): ring-placement.test.ts compares a ring built by the current code with the
 * digests the fixture froze, which were computed by the code before the packed ring (commit
 * 6aac2d3). Run this file to print the fixture again: `bun test/cluster/ring-placement-cases.ts`.
 *
 * Two digests a case:
 * - `keys`: FNV-1a over the owner id of KEY_COUNT seeded keys of 0..48 random bytes (MurmurHash3,
 *   the hash nodes use): what a client sees.
 * - `arcs` (with the `probe` hash, as in ring-build.test.ts: MurmurHash3 for point strings, a
 *   4-byte key read as a position): the owner at every point of the ring and one past it, which
 *   pins every arc, ties included.
 */
import { Ring, type RingHash } from "../../src/cluster/ring.ts";
import { hashBytes } from "../../src/store/hash.ts";
import { Prng } from "../support/prng.ts";

export interface PlacementCase {
  name: string;
  vnodes: number;
  /** members with their weight: a list of weight-1 members goes through setMembers, any other weight through add. */
  members: [string, number][];
  /** arcs: also digest the owner at every point (the probe hash). */
  arcs: boolean;
}

const KEY_COUNT = 50_000;
const enc = new TextEncoder();

const range = (n: number, f: (i: number) => string): string[] => Array.from({ length: n }, (_, i) => f(i));
const weight1 = (ids: string[]): [string, number][] => ids.map((id) => [id, 1]);

function randomIps(n: number, seed: number): string[] {
  const rnd = new Prng(seed);
  const out = new Set<string>();
  while (out.size < n) out.add(`${10 + rnd.int(200)}.${rnd.int(256)}.${rnd.int(256)}.${1 + rnd.int(254)}:${1024 + rnd.int(64000)}`);
  return [...out];
}

export const CASES: PlacementCase[] = [
  { name: "one member", vnodes: 10_000, members: weight1(["127.0.0.1:8001"]), arcs: true },
  { name: "three loopback ports", vnodes: 10_000, members: weight1(range(3, (i) => `127.0.0.1:${8001 + i}`)), arcs: true },
  {
    name: "canonical ids of every kind",
    vnodes: 10_000,
    members: weight1(["[::1]:8001", "[::1]:8002", "[fe80::1%eth0]:8003", "cache-a:8001", "cache-b.example.com:9000", "10.0.0.7:65535", "[2001:db8::8:800:200c:417a]:7000", "[::ffff:10.0.0.1]:8001"]),
    arcs: true,
  },
  { name: "17 members, 50 vnodes", vnodes: 50, members: weight1(range(17, (i) => `127.0.0.1:${8001 + i}`)), arcs: true },
  { name: "17 members, 1 vnode", vnodes: 1, members: weight1(range(17, (i) => `node-${i}.svc:7000`)), arcs: true },
  { name: "weights 0.5, 1, 2, 3", vnodes: 100, members: [["a:1", 0.5], ["b:1", 1], ["c:1", 2], ["d:1", 3]], arcs: true },
  { name: "128 random members", vnodes: 10_000, members: weight1(randomIps(128, 128)), arcs: true },
  { name: "1,024 random members (the largest list)", vnodes: 10_000, members: weight1(randomIps(1024, 1024)), arcs: true },
];

/** ringOf builds a case's ring (`hash` for points and keys; MurmurHash3 when absent). */
export function ringOf(c: PlacementCase, hash?: RingHash): Ring {
  const r = new Ring(hash === undefined ? { vnodes: c.vnodes } : { vnodes: c.vnodes, hash });
  if (c.members.every(([, w]) => w === 1)) r.setMembers(c.members.map(([id]) => id));
  else for (const [id, w] of c.members) r.add(id, w);
  return r;
}

const position = (b: Uint8Array, o: number): number => ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;
export const probe: RingHash = (b, o, l) => (l === 4 ? position(b, o) : hashBytes(b, o, l));

function fnv(h: number, bytes: Uint8Array): number {
  for (const x of bytes) h = Math.imul(h ^ x, 0x01000193);
  return Math.imul(h ^ 0x0a, 0x01000193); // a separator: owners "ab","c" differ from "a","bc"
}

/** keysDigest digests the owner of each seeded key. */
export function keysDigest(r: Ring): number {
  const rnd = new Prng(0x5eed);
  const key = new Uint8Array(48);
  let h = 0x811c9dc5;
  for (let i = 0; i < KEY_COUNT; i++) {
    const len = rnd.int(49);
    for (let j = 0; j < len; j++) key[j] = rnd.int(256);
    h = fnv(h, enc.encode(r.owner(key, 0, len) ?? ""));
  }
  return h >>> 0;
}

/** arcsDigest digests the owner index at every point of the case (by the documented derivation) and one past it; `r` uses `probe`. */
export function arcsDigest(c: PlacementCase, r: Ring): number {
  const buf = new Uint8Array(600);
  const key = new Uint8Array(4);
  const dv = new DataView(key.buffer);
  let h = 0x811c9dc5;
  for (const [id, w] of c.members) {
    const count = Math.max(1, Math.floor(c.vnodes * w + 0.5));
    for (let k = 0; k < count; k++) {
      const { written } = enc.encodeInto(`${id}#${k}`, buf);
      const p = hashBytes(buf, 0, written) >>> 0;
      for (const at of [p, (p + 1) >>> 0]) {
        dv.setUint32(0, at);
        const o = r.ownerIndex(key, 0, 4);
        h = Math.imul(h ^ (o & 0xffff), 0x01000193);
        h = Math.imul(h ^ (o >>> 16), 0x01000193);
      }
    }
  }
  return h >>> 0;
}

if (import.meta.main) {
  const out: Record<string, { keys: number; arcs?: number }> = {};
  for (const c of CASES) {
    out[c.name] = { keys: keysDigest(ringOf(c)), ...(c.arcs ? { arcs: arcsDigest(c, ringOf(c, probe)) } : {}) };
  }
  console.log(JSON.stringify(out, null, 2));
}
