/**
 * A GetMulti refused past the frame limit counts every key's lookup, whether it is refused as its
 * reply outgrows the buffer (lookUpRest looks the rest up first: getmulti-growth.test.ts) or at
 * the entry that passes the limit in a buffer with room (the turn's shared buffer, here alone in
 * it or after other replies): before, the keys after that entry were neither looked up nor
 * counted, so the group's gets and hits depended on the buffer's size.
 */
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import type { CacheNode } from "../../src/server/cache-node.ts";
import { concat } from "../protocol/wire-builder.ts";
import { RawSocket, getMultiCall, setCall, startNode } from "./support.ts";
import { outcome, readReplies } from "./wire-reader.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const enc = new TextEncoder();
const open: CacheNode[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((n) => n.close()));
});

/** ask sends `calls` in one write on a fresh connection and returns the outcomes of its `n` replies. */
async function ask(port: number, n: number, calls: Uint8Array[]) {
  const raw = await RawSocket.connect(port);
  raw.write(concat(...calls));
  await raw.waitFor(() => raw.frames().length === n || raw.isClosed, `${n} replies`);
  raw.close();
  return readReplies(raw.received, "framed").replies.map((r) => outcome(r));
}

describe("a GetMulti refused past the frame limit", () => {
  test("counts every key, whatever room its buffer had", async () => {
    const node = startNode({ maxItemSize: 8 * 1024, maxFrameSize: 64 * 1024 });
    open.push(node);
    const keys = Array.from({ length: 40 }, (_, i) => enc.encode(`k${i}`));
    await ask(node.port, keys.length, keys.map((k, i) => setCall(i + 1, k, new Uint8Array(4000).fill(i))));
    const counters = node.groups.byName("default")!.counters;
    const under = keys.slice(0, 14); // (a reply of ~56 KB)
    for (const before of [[], [under, under]] as Uint8Array[][][]) {
      const gets = counters.gets;
      const replies = await ask(node.port, before.length + 1, [...before.map((k, i) => getMultiCall(i + 1, "default", k)), getMultiCall(9, "default", keys)]);
      expect(replies.map((r) => r.kind)).toEqual([...before.map(() => "success" as const), "cacheError" as const]);
      expect(replies.at(-1)).toMatchObject({ code: 4 });
      expect(counters.gets - gets, `after ${before.length} GetMultis in its turn`).toBe(before.length * under.length + keys.length);
    }
  });
});
