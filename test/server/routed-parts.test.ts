/**
 * routed-parts.ts: an owner's entries of a routed GetMulti or SetMulti split into parts of bounded
 * bytes, and an owner's answer matched back to a part's keys, in request order or not.
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import type { Request } from "../../src/protocol/request.ts";
import type { RawEntries } from "../../src/client/results.ts";
import { MultiValues, PART_BYTES, parts } from "../../src/server/routed-parts.ts";
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

/** rawOf lays out an owner's answer as CacheClient.peerGetMultiOf gives it (RawEntries). */
function rawOf(found: [string, string][]): RawEntries {
  const bytes: number[] = [];
  const items = new Int32Array(found.length * 4);
  found.forEach(([k, v], f) => {
    items[f * 4] = bytes.length;
    bytes.push(...utf8.encode(k));
    items[f * 4 + 1] = bytes.length - items[f * 4]!;
    items[f * 4 + 2] = bytes.length;
    bytes.push(...utf8.encode(v));
    items[f * 4 + 3] = bytes.length - items[f * 4 + 2]!;
  });
  return { buffer: Uint8Array.from(bytes), items, count: found.length };
}

describe("MultiValues", () => {
  test("matches an answer in request order, and one in any other order, by the keys' bytes", () => {
    const seed = Date.now();
    const rng = new Prng(seed);
    for (let trial = 0; trial < 50; trial++) {
      const entries: [string, number][] = [];
      for (let i = 0; i < 40; i++) entries.push([`k${trial}-${i}`, 0]);
      const req = requestOf(entries);
      const indexes = entries.map((_, i) => i).filter(() => rng.next() < 0.7);
      const [part] = parts(req, indexes, false, 16_000_000);
      let found: [string, string][] = [];
      const expected = new Map<number, string>();
      for (const i of indexes) {
        if (rng.next() < 0.5) continue;
        found.push([entries[i]![0], `v${i}`]);
        expected.set(i, `v${i}`);
      }
      if (trial % 2 === 1) found = found.map((f) => [rng.next(), f] as const).sort((x, y) => x[0] - y[0]).map(([, f]) => f); // another order
      const values = new MultiValues(entries.length, 16_000_000);
      const bytes = values.take(part!, rawOf(found));
      let want = 0;
      for (const [k, v] of found) want += 8 + k.length + v.length;
      expect({ seed, trial, bytes }).toEqual({ seed, trial, bytes: want });
      for (let i = 0; i < entries.length; i++) {
        const length = values.valueLength(i);
        const out = new Uint8Array(Math.max(length, 0));
        if (length >= 0) values.copyTo(i, out, 0);
        expect({ seed, trial, i, v: length < 0 ? undefined : new TextDecoder().decode(out) }).toEqual({ seed, trial, i, v: expected.get(i) });
      }
    }
  });

  test("keeps no answer once the answers pass the reply's limit, and refuses any to come", () => {
    const entries: [string, number][] = [];
    for (let i = 0; i < 30; i++) entries.push([`key-${i}`, 0]);
    const req = requestOf(entries);
    const indexes = entries.map((_, i) => i);
    const split = (from: number, to: number) => ({ ...parts(req, indexes, false, 16_000_000)[0]!, from, to });
    const answerOf = (from: number, to: number): RawEntries => rawOf(entries.slice(from, to).map(([k]) => [k, "v".repeat(100)]));
    const values = new MultiValues(entries.length, 1000); // (each answer of 10 keys: 10 * (8 + 5 or 6 + 100) bytes)
    expect(values.take(split(0, 8), answerOf(0, 8))).toBeGreaterThan(800);
    expect(values.valueLength(3)).toBe(100);
    expect(() => values.take(split(8, 16), answerOf(8, 16))).toThrow("GetMulti reply over 1000 bytes");
    for (let i = 0; i < 16; i++) expect(values.valueLength(i)).toBe(-1);
    expect(() => values.take(split(16, 18), answerOf(16, 18))).toThrow("GetMulti reply over 1000 bytes");
    expect(values.valueLength(17)).toBe(-1);
  });
});
