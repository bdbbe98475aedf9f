/**
 * The points of a ring member: how many a member of a given weight has (`pointCount`), and what
 * they are (`derivePoints`, `writePoints`). Point k of a member is the hash of its id's UTF-8
 * bytes, "#", and k in decimal. This derivation is part of the contract that ring.ts's header
 * states, which a ring-aware client in another language must reproduce. It runs only when the
 * members change, never for a key's owner, and it is apart from ring.ts for that reason.
 */
import type { RingHash } from "./ring.ts";

const HASH_SEP = 0x23; // "#"
const DIGIT_0 = 0x30; // "0"
const utf8 = new TextEncoder();

/** pointCount is R for `weight` (see ring.ts's header); it throws RangeError for a bad weight. */
export function pointCount(vnodes: number, weight: number): number {
  if (!(weight > 0) || !Number.isFinite(weight)) throw new RangeError(`ring: weight must be positive and finite, got ${weight}`);
  return Math.max(1, Math.floor(vnodes * weight + 0.5));
}

/** derivePoints returns the `r` points of `node`, sorted. */
export function derivePoints(hash: RingHash, node: string, r: number): Uint32Array {
  const out = new Uint32Array(r);
  writePoints(hash, node, r, out);
  return out.sort();
}

/** writePoints writes point k of `node` to out[k] for 0 ≤ k < r, in k order. */
export function writePoints(hash: RingHash, node: string, r: number, out: Uint32Array): void {
  const id = utf8.encode(node);
  const base = id.length + 1;
  const buf = new Uint8Array(base + String(r - 1).length);
  buf.set(id);
  buf[id.length] = HASH_SEP;
  let width = 1;
  let tenth = 10; // the first k with width + 1 digits
  for (let k = 0; k < r; k++) {
    if (k === tenth) {
      width++;
      tenth *= 10;
    }
    for (let d = base + width - 1, x = k; d >= base; d--, x = (x / 10) | 0) buf[d] = DIGIT_0 + (x % 10);
    out[k] = hash(buf, 0, base + width) >>> 0;
  }
}
