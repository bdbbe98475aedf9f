/**
 * routed-parts.ts: an owner's entries of a routed GetMulti or SetMulti split into parts of bounded
 * bytes, and an owner's answer matched back to a part's keys, in request order or not.
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import type { Request } from "../../src/protocol/request.ts";
import { PART_BYTES, matchFound, parts } from "../../src/server/routed-parts.ts";
import { Prng } from "../support/prng.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const utf8 = new TextEncoder();

/** requestOf lays `entries` out as a decoded multi-key request does (buffer and 4 int32 an entry). */
function requestOf(entries: [string, number][]): Request {
  const chunks: number[] = [];
  const items = new Int32Array(entries.length * 4);
  entries.forEach(([k, vl], i) => {
    items[i * 4] = chunks.length;
    items[i * 4 + 1] = k.length;
    chunks.push(...utf8.encode(k));
    items[i * 4 + 2] = chunks.length;
    items[i * 4 + 3] = vl;
    for (let b = 0; b < vl; b++) chunks.push(i & 0xff);
  });
  return { buffer: Uint8Array.from(chunks), items, itemCount: entries.length } as unknown as Request;
}

describe("parts", () => {
  test.each([
    ["keys alone", false, 16_000_000],
    ["keys and values", true, 16_000_000],
    ["a small frame limit", true, 8192],
  ])("%s: every entry once, in order, each part within its bound", (_name, withValues, frame) => {
    const entries: [string, number][] = [];
    for (let i = 0; i < 3000; i++) entries.push([`key-${i}`, withValues ? (i * 37) % 900 : 0]);
    const req = requestOf(entries);
    const indexes = entries.map((_, i) => i).filter((i) => i % 3 !== 0);
    const out = parts(req, indexes, withValues, frame);
    const bound = Math.min(PART_BYTES, frame / 2);
    let next = 0;
    for (const p of out) {
      expect(p.from).toBe(next);
      expect(p.to).toBeGreaterThan(p.from);
      let bytes = 0;
      for (let n = p.from; n < p.to; n++) bytes += 4 + req.items[indexes[n]! * 4 + 1]! + (withValues ? 4 + req.items[indexes[n]! * 4 + 3]! : 0);
      expect(bytes <= bound || p.to - p.from === 1).toBe(true);
      next = p.to;
    }
    expect(next).toBe(indexes.length);
    if (frame === 8192) expect(out.length).toBeGreaterThan(1);
  });

  test("an entry larger than the bound goes alone", () => {
    const req = requestOf([["a", 10], ["big", 6000], ["c", 10]]);
    expect(parts(req, [0, 1, 2], true, 8192).map((p) => [p.from, p.to])).toEqual([[0, 1], [1, 2], [2, 3]]);
  });
});

describe("matchFound", () => {
  test("matches an answer in request order, and one in any other order, by the keys' bytes", () => {
    const seed = Date.now();
    const rng = new Prng(seed);
    for (let trial = 0; trial < 50; trial++) {
      const entries: [string, number][] = [];
      for (let i = 0; i < 40; i++) entries.push([`k${trial}-${i}`, 0]);
      const req = requestOf(entries);
      const indexes = entries.map((_, i) => i).filter(() => rng.next() < 0.7);
      const [part] = parts(req, indexes, false, 16_000_000);
      const found = { keys: [] as Uint8Array[], values: [] as Uint8Array[] };
      const expected = new Map<number, string>();
      for (const i of indexes) {
        if (rng.next() < 0.5) continue;
        found.keys.push(utf8.encode(entries[i]![0]));
        found.values.push(utf8.encode(`v${i}`));
        expected.set(i, `v${i}`);
      }
      if (trial % 2 === 1) { // another order than the request's
        const order = found.keys.map((_, n) => n).sort(() => rng.next() - 0.5);
        found.keys = order.map((n) => found.keys[n]!);
        found.values = order.map((n) => found.values[n]!);
      }
      const values: (Uint8Array | undefined)[] = new Array(entries.length);
      const got = new Map<number, string>();
      matchFound(part!, found, values, (i, v) => got.set(i, new TextDecoder().decode(v)));
      expect({ seed, trial, got: [...got].sort((x, y) => x[0] - y[0]) }).toEqual({ seed, trial, got: [...expected].sort((x, y) => x[0] - y[0]) });
      for (let i = 0; i < entries.length; i++) expect(values[i] === undefined ? undefined : new TextDecoder().decode(values[i])).toBe(expected.get(i));
    }
  });
});
