/**
 * Review: a PeerGetMulti's answer (a node's part of a routed GetMulti) became two buffers a key
 * found, key and value (FoundEntries): a GetMulti of millions of keys routed through a node made
 * millions of objects there. Now it is read as RawEntries: one copy of the entries' bytes and a
 * table of their ranges, whatever the count; CacheClient.peerGetMulti still answers FoundEntries.
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
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

/**
 * shape lists what `value` holds, one level down: a typed array or a number by its kind, an array
 * by its length (FoundEntries held an array of a buffer a key, and one of a buffer a value).
 * (Counting the heap's Uint8Arrays around a fullGC proved it too, but not reliably inside a full
 * `bun test` run, where the control once saw none of 20,000: a structural check cannot miss.)
 */
function shape(value: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(value as object)) {
    out[k] = Array.isArray(v) ? `array of ${v.length}` : ArrayBuffer.isView(v) ? v.constructor.name : typeof v;
  }
  return out;
}

describe("a PeerGetMulti's answer", () => {
  test("is one buffer and one table of ranges however many entries it has, and reads as the entries sent", () => {
    const held = read("PeerGetMulti", METHOD_PEER_GET_MULTI) as RawEntries;
    expect(shape(held)).toEqual({ buffer: "Uint8Array", items: "Int32Array", count: "number" });
    expect(held.count).toBe(COUNT);
    const found = foundOf(held);
    expect(found.keys.length).toBe(COUNT);
    expect(new TextDecoder().decode(found.keys[1234])).toBe("key-1234");
    expect([...found.values[1234]!]).toEqual([1234 & 0xff, 7]);
  });

  test("a client's GetMulti still reads as a buffer a key and a value (control)", () => {
    const held = read("GetMulti", METHOD_GET_MULTI);
    expect(Object.values(shape(held))).toContain(`array of ${COUNT}`);
  });
});
