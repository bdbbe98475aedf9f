/**
 * Key placement must not change between versions: in a rolling upgrade every node has to agree
 * on each key's owner. ring-placement.json holds digests computed by the ring before it was
 * packed (see ring-placement-cases.ts); a ring built now must give the same ones.
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import fixture from "./ring-placement.json";
import { CASES, arcsDigest, keysDigest, probe, ringOf } from "./ring-placement-cases.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const frozen = fixture as Record<string, { keys: number; arcs?: number }>;

describe("key placement as frozen before the packed ring", () => {
  test("the fixture has every case", () => {
    expect(Object.keys(frozen).sort()).toEqual(CASES.map((c) => c.name).sort());
  });
  for (const c of CASES) {
    test(`${c.name}: owners of seeded keys, and at every point and past it`, () => {
      expect(keysDigest(ringOf(c))).toBe(frozen[c.name]!.keys);
      if (c.arcs) expect(arcsDigest(c, ringOf(c, probe))).toBe(frozen[c.name]!.arcs!);
    });
  }
});
