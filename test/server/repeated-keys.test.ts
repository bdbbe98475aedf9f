/**
 * repeatedKeys (src/server/repeated-keys.ts): which entries of a multi-key request repeat an
 * earlier key, in time linear in the request whatever its keys (review: keys chosen to collide
 * under the fixed seed made one GetMulti of 50,000 keys hold the loop 6 s).
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { markRepeated } from "../../src/server/repeated-keys.ts";
import { hashBytes } from "../../src/store/hash.ts";
import { multiKeyRequest } from "../support/multi-request.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

/** request lays `keys` out as a decoded multi-key request does. */
const request = (keys: Uint8Array[]) => multiKeyRequest(keys) as never;

const enc = new TextEncoder();

describe("repeatedKeys", () => {
  test("marks each entry whose key an earlier one names; null when none repeats", () => {
    const keys = ["a", "b", "a", "", "b", "c", "", "a"].map((k) => enc.encode(k));
    expect(Array.from(markRepeated(request(keys), 7)!.subarray(0, keys.length))).toEqual([0, 0, 1, 0, 1, 0, 1, 1]);
    expect(markRepeated(request(["x", "y", "xy"].map((k) => enc.encode(k))), 7)).toBeNull();
    expect(markRepeated(request([enc.encode("only")]), 7)).toBeNull();
  });

  test("keys chosen to share a slot under the seed make it give up (answered as asked) instead of probing quadratically", () => {
    const seed = 0x2545f491;
    const n = 20_000;
    let size = 64;
    while (size < n * 2) size *= 2;
    const keys: Uint8Array[] = [];
    for (let c = 0; keys.length < n; c++) {
      const k = new Uint8Array(8);
      new DataView(k.buffer).setFloat64(0, c);
      if ((hashBytes(k, 0, 8, seed) & (size - 1)) < size / 16) keys.push(k);
    }
    keys.push(keys[0]!); // (one repeat: found only if it probed on)
    expect(markRepeated(request(keys), seed)).toBeNull();
    // The same keys under another seed are spread: the repeat is found.
    const flags = markRepeated(request(keys), seed ^ 0x5bd1e995)!;
    expect(flags[n]).toBe(1);
  });
});
