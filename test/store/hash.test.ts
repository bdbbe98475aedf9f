import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { hashBytes } from "../../src/store/hash.ts";
import { bytes } from "../support/prng.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

// Published MurmurHash3 x86_32 vectors (as signed int32).
const VECTORS: [string, number, number][] = [
  ["", 0, 0],
  ["", 1, 0x514e28b7 | 0],
  ["hello", 0, 0x248bfa47 | 0],
  ["Hello, world!", 1234, 0xfaf6cdb3 | 0],
  ["The quick brown fox jumps over the lazy dog", 0x9747b28c, 0x2fa826cd | 0],
  ["aaaa", 0x9747b28c, 0x5a97808a | 0],
  ["abc", 0, 0xb3dd93fa | 0],
];

describe("hashBytes", () => {
  test.each(VECTORS)("murmur3(%p, seed %p)", (s, seed, want) => {
    expect(hashBytes(bytes(s), 0, bytes(s).length, seed)).toBe(want);
  });

  test("hashes a range in place, independent of surrounding bytes", () => {
    const whole = bytes("xxhelloyy");
    expect(hashBytes(whole, 2, 5)).toBe(hashBytes(bytes("hello"), 0, 5));
  });
});
