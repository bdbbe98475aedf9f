/**
 * Review: a PeerGetMulti's answer (a node's part of a routed GetMulti) became two buffers a key
 * found, key and value (FoundEntries): a GetMulti of millions of keys routed through a node made
 * millions of objects there. Now it is read as RawEntries: one copy of the entries' bytes and a
 * table of their ranges, whatever the count; CacheClient.peerGetMulti still answers FoundEntries.
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { fullGC, heapStats } from "bun:jsc";
import { type RawEntries, buildResult, foundOf } from "../../src/client/results.ts";
import { resolveLimits } from "../../src/protocol/limits.ts";
import { ReplyReader } from "../../src/protocol/reply-reader.ts";
import { METHOD_GET_MULTI, METHOD_PEER_GET_MULTI } from "../../src/protocol/request.ts";
import { multiReply } from "./support.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const COUNT = 10_000;

function read(name: string, method: number): unknown {
  const entries: [string, Uint8Array][] = [];
  for (let i = 0; i < COUNT; i++) entries.push([`key-${i}`, Uint8Array.of(i & 0xff, 7)]);
  const frame = multiReply(name, 1, entries);
  const r = new ReplyReader(resolveLimits());
  r.begin(frame, 4, frame.length);
  r.readResult(method, COUNT);
  return buildResult(method, r);
}

function typedArraysHeldBy(make: () => unknown): { held: unknown; count: number } {
  fullGC();
  const before = heapStats().objectTypeCounts.Uint8Array ?? 0;
  const held = make();
  fullGC();
  return { held, count: (heapStats().objectTypeCounts.Uint8Array ?? 0) - before };
}

describe("a PeerGetMulti's answer", () => {
  test("is a few objects however many entries it has, and reads as the entries sent", () => {
    const { held, count } = typedArraysHeldBy(() => read("PeerGetMulti", METHOD_PEER_GET_MULTI));
    expect(count).toBeLessThan(10);
    const found = foundOf(held as RawEntries);
    expect(found.keys.length).toBe(COUNT);
    expect(new TextDecoder().decode(found.keys[1234])).toBe("key-1234");
    expect([...found.values[1234]!]).toEqual([1234 & 0xff, 7]);
  });

  test("a client's GetMulti still reads as a buffer a key and a value (control)", () => {
    const { count } = typedArraysHeldBy(() => read("GetMulti", METHOD_GET_MULTI));
    expect(count).toBeGreaterThanOrEqual(2 * COUNT);
  });
});
