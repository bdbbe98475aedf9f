/**
 * The points of a ring member: how many a member of a given weight has (`pointCount`), and what
 * they are (`writePoints`). Point k of a member is the hash of its id's UTF-8 bytes, "#", and k in
 * decimal. This derivation is part of the contract that ring.ts's header states, which a
 * ring-aware client in another language must reproduce. It runs only when the members change,
 * never for a key's owner, and it is apart from ring.ts for that reason.
 *
 * With MurmurHash3 (MURMUR, every node's hash) the points of one member share their prefix: the
 * id and "#" are hashed once, up to their last whole 4-byte block, and each point resumes from
 * that state with the few bytes left and k's digits, which are counted up in place rather than
 * written anew (a 1,024-member list is 10 M points: 196 ms through hashBytes, 4-byte blocks of
 * "10.3.255.4:8002#" hashed again for every point). Any other hash gets the bytes whole.
 */
import { hashBytes, murmurBlocks, murmurFinish } from "../store/hash.ts";
import type { RingHash } from "./ring.ts";

const HASH_SEP = 0x23; // "#"
const DIGIT_0 = 0x30; // "0"
const DIGIT_9 = 0x39; // "9"
const utf8 = new TextEncoder();

/** MURMUR is MurmurHash3 x86_32 with seed 0: the ring's hash unless a test injects another. */
export const MURMUR: RingHash = (buf, off, len) => hashBytes(buf, off, len, 0);

/** pointCount is R for `weight` (see ring.ts's header); it throws RangeError for a bad weight. */
export function pointCount(vnodes: number, weight: number): number {
  if (!(weight > 0) || !Number.isFinite(weight)) throw new RangeError(`ring: weight must be positive and finite, got ${weight}`);
  return Math.max(1, Math.floor(vnodes * weight + 0.5));
}

/** derivePoints returns the `r` points of `node`, sorted. */
export function derivePoints(hash: RingHash, node: string, r: number): Uint32Array {
  const out = new Uint32Array(r);
  writePoints(hash, node, r, out, 0);
  return out.sort();
}

/** writePoints writes point k of `node` to out[at + k] for 0 ≤ k < r, in k order. */
export function writePoints(hash: RingHash, node: string, r: number, out: Uint32Array, at: number): void {
  const id = utf8.encode(node);
  const base = id.length + 1;
  // k's digits, and room for the widest k (r - 1)
  const buf = new Uint8Array(base + String(Math.max(0, r - 1)).length);
  buf.set(id);
  buf[id.length] = HASH_SEP;
  buf[base] = DIGIT_0;
  if (hash === MURMUR) {
    murmurPoints(buf, base, r, new Int32Array(out.buffer, out.byteOffset + at * 4, r));
    return;
  }
  let end = base + 1;
  for (let k = 0; k < r; k++) {
    if (k > 0) end = countUp(buf, base, end);
    out[at + k] = hash(buf, 0, end) >>> 0;
  }
}

/**
 * murmurPoints writes the r MurmurHash3 points of the prefix buf[0, base) to `out` (an Int32Array
 * view: the same bits as the Uint32 points, stored without a conversion of those past 2^31).
 */
function murmurPoints(buf: Uint8Array, base: number, r: number, out: Int32Array): void {
  const resume = base & ~3;
  const h0 = murmurBlocks(0, buf, 0, resume);
  let end = base + 1;
  for (let k = 0; k < r; k++) {
    if (k > 0) end = countUp(buf, base, end);
    const end4 = end & ~3; // (the blocks of "#" and k's digits past the prefix's, then the tail)
    out[k] = murmurFinish(murmurBlocks(h0, buf, resume, end4), buf, end4, end);
  }
}

/** countUp adds one to the decimal number in buf[base, end) and returns its new end (one more digit after all nines). */
function countUp(buf: Uint8Array, base: number, end: number): number {
  let d = end - 1;
  while (d >= base && buf[d] === DIGIT_9) buf[d--] = DIGIT_0;
  if (d >= base) {
    buf[d]!++;
    return end;
  }
  buf[base] = DIGIT_0 + 1;
  buf[end] = DIGIT_0;
  return end + 1;
}

