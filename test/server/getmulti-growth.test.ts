/**
 * A GetMulti reply is written into an output buffer grown once, to the size the reply needs
 * (get-multi.ts looks the keys left up first once the buffer is full, and ReplyWriter.makeRoom
 * grows it for all of them), not doubled entry by entry (each doubling copies what was written
 * before it: a reply of 1.2 MB made 7 buffers from 16 KiB). A reply past the frame limit is
 * refused before the buffer grows at all.
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { Group } from "../../src/cluster/group.ts";
import { Groups } from "../../src/cluster/groups.ts";
import type { BinaryWriter } from "../../src/protocol/binary-writer.ts";
import { DEFAULT_LIMITS } from "../../src/protocol/limits.ts";
import { ProtocolConnection } from "../../src/protocol/protocol-connection.ts";
import { dispatch } from "../../src/server/dispatch.ts";
import { getMultiCall } from "./support.ts";
import { type Struct, field, outcome, readReplies } from "./wire-reader.ts";
import { T } from "../protocol/wire-builder.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const MIB = 1024 * 1024;
const enc = new TextEncoder();
const key = (i: number): Uint8Array => enc.encode(`key:${String(i).padStart(6, "0")}`);
const value = (i: number): Uint8Array => new Uint8Array(100).fill(i & 255);

/** growths counts the times `w`'s buffer is replaced by a larger one (test-only: wraps the instance's `ensure`). */
function growths(w: BinaryWriter): { n: number } {
  const count = { n: 0 };
  const ensure = w.ensure.bind(w);
  w.ensure = (n: number): void => {
    const before = w.buffer;
    ensure(n);
    if (w.buffer !== before) count.n++;
  };
  return count;
}

/** serveGetMulti serves one GetMulti of `keys` of group "g" from `group`, and returns its writer's growths and the reply's outcome. */
async function serveGetMulti(group: Group, keys: Uint8Array[], maxMultiBytes = Infinity) {
  const groups = new Groups();
  groups.add(group);
  const conn = new ProtocolConnection(DEFAULT_LIMITS);
  conn.reply.maxMultiBytes = maxMultiBytes;
  const out = conn.reply.out;
  const initialBytes = out.buffer.length;
  const count = growths(out);
  conn.push(getMultiCall(1, "g", keys));
  expect(conn.nextRequest()).toBe(true);
  await dispatch({ groups, clock: Date.now }, conn.request, conn.reply);
  const [reply] = readReplies(out.buffer.slice(0, out.length), "framed").replies;
  return { growths: count.n, initialBytes, bufferBytes: out.buffer.length, replyBytes: out.length, outcome: outcome(reply!) };
}

/** entriesOf maps a GetMulti success outcome's keys to its values (as text: key → first byte). */
function entriesOf(o: ReturnType<typeof outcome>): Map<string, number> {
  if (o.kind !== "success") throw new Error(`not a success: ${JSON.stringify(o)}`);
  const map = field(o.value as Struct, 1, T.MAP) as [Uint8Array, Uint8Array][];
  return new Map(map.map(([k, v]) => [new TextDecoder().decode(k), v[0]!]));
}

describe("a GetMulti reply's output buffer", () => {
  test("grows once, to about the reply's size, for 2,000 hits among 2,200 keys", async () => {
    const group = new Group({ name: "g", memory: 16 * MIB });
    for (let i = 0; i < 2200; i++) if (i % 11 !== 5) group.store.set(key(i), 0, key(i).length, value(i), 0, 100, 0);
    const keys = Array.from({ length: 2200 }, (_, i) => key(i));
    const r = await serveGetMulti(group, keys);
    expect(r.replyBytes).toBeGreaterThan(2000 * 100);
    expect(r.growths).toBe(1); // (before: 4, 16 KiB doubled to 256 KiB)
    expect(r.bufferBytes).toBeLessThan(r.replyBytes + 2048); // sized to the reply, not to a doubling past it
    const got = entriesOf(r.outcome);
    expect(got.size).toBe(2000);
    for (const i of [0, 1, 999, 2199]) expect(got.get(`key:${String(i).padStart(6, "0")}`)).toBe(i & 255);
    expect([got.has("key:000005"), got.has("key:002194")]).toEqual([false, false]); // (absent keys are left out)
    expect(group.counters.gets).toBe(2200);
  });

  test("does not grow for a reply that fits the buffer", async () => {
    const group = new Group({ name: "g", memory: 16 * MIB });
    for (let i = 0; i < 100; i++) group.store.set(key(i), 0, key(i).length, value(i), 0, 100, 0);
    const r = await serveGetMulti(group, Array.from({ length: 100 }, (_, i) => key(i)));
    expect(r.growths).toBe(0);
    expect(entriesOf(r.outcome).size).toBe(100);
  });

  test("with a loader: the hits and the loaded misses together, one growth; a key asked twice is answered once", async () => {
    const group = new Group({ name: "g", memory: 16 * MIB, admission: "always", loader: () => new Uint8Array(100).fill(7) });
    for (let i = 0; i < 1000; i++) group.store.set(key(i), 0, key(i).length, value(i), 0, 100, 0);
    const keys = Array.from({ length: 2000 }, (_, i) => key(i)); // 1,000 hits, 1,000 loads
    keys.push(key(5), key(1500));
    const r = await serveGetMulti(group, keys);
    expect(r.growths).toBe(1); // (before: 4)
    const got = entriesOf(r.outcome);
    expect(got.size).toBe(2000);
    expect([got.get("key:000005"), got.get("key:001500")]).toEqual([5, 7]);
  });

  test("does not grow for a reply past the frame limit: VALUE_TOO_LARGE, refused before it is written", async () => {
    const group = new Group({ name: "g", memory: 16 * MIB });
    for (let i = 0; i < 2000; i++) group.store.set(key(i), 0, key(i).length, value(i), 0, 100, 0);
    const keys = Array.from({ length: 2000 }, (_, i) => key(i)); // ~230 KB of entries
    const r = await serveGetMulti(group, keys, 64 * 1024);
    expect(r.outcome).toMatchObject({ kind: "cacheError", code: 4 });
    expect(r.growths).toBe(0); // (before: 3, doubled to 128 KiB on the way to the limit)
    expect(r.bufferBytes).toBe(r.initialBytes);
    expect(group.counters.gets).toBe(2000); // every key looked up and counted, as with a loader
  });
});
