/**
 * writePoints with MurmurHash3 resumes the hash after the id's whole 4-byte blocks and counts k
 * up in place; it must give exactly hashBytes over the whole string `${id}#${k}`.
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { MURMUR, writePoints } from "../../src/cluster/ring-points.ts";
import { hashBytes } from "../../src/store/hash.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const enc = new TextEncoder();

describe("writePoints", () => {
  // Ids of every length mod 4 (so each tail length with "#" and 1..6 digits), non-ASCII included.
  const ids = ["a", "ab", "abc", "abcd", "a:1", "127.0.0.1:8001", "[::1]:8001", "cache-a.example:65535", "é:1", "😀x:2"];
  for (const r of [1, 10, 11, 101, 1_000, 12_345, 100_001]) {
    test(`${r} points: each as hashBytes over "id#k"`, () => {
      const out = new Uint32Array(r + 2);
      let bad = 0;
      for (const id of ids) {
        out.fill(7);
        writePoints(MURMUR, id, r, out, 1);
        expect([out[0], out[r + 1]]).toEqual([7, 7]); // only [at, at + r) written
        for (let k = 0; k < r; k++) {
          const b = enc.encode(`${id}#${k}`);
          if (out[1 + k] !== hashBytes(b, 0, b.length) >>> 0) bad++;
        }
      }
      expect(bad).toBe(0);
    });
  }

  test("another hash gets the whole string", () => {
    const seen: string[] = [];
    const dec = new TextDecoder();
    writePoints((b, o, l) => (seen.push(dec.decode(b.subarray(o, o + l))), seen.length), "n:1", 12, new Uint32Array(12), 0);
    expect(seen).toEqual(Array.from({ length: 12 }, (_, k) => `n:1#${k}`));
  });
});
