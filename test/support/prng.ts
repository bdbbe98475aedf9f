/**
 * Seeded pseudo-random numbers for tests (mulberry32): the same seed gives the same sequence, so a
 * failing random test can be replayed with `TEST_SEED=<seed> bun test <file>`.
 */
export function testSeed(fallback?: number): number {
  const env = process.env.TEST_SEED;
  if (env !== undefined && env !== "") return Number(env) >>> 0;
  return fallback ?? (Date.now() ^ (Math.random() * 0x100000000)) >>> 0;
}

export class Prng {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  /** next returns a float in [0, 1). */
  next(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) | 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** int returns an integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
}

const enc = new TextEncoder();
export function bytes(s: string): Uint8Array<ArrayBuffer> {
  return enc.encode(s);
}

/** pattern returns `len` bytes derived from `tag`, distinct for distinct tags at every position. */
export function pattern(tag: number, len: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(len);
  let x = (tag * 2654435761) >>> 0;
  for (let i = 0; i < len; i++) {
    x = (Math.imul(x ^ (x >>> 13), 0x5bd1e995) + i) >>> 0;
    out[i] = x & 0xff;
  }
  return out;
}
