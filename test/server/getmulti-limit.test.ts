/**
 * One GetMulti reply is bounded by the connection's frame limit: a short request that names a
 * large value many times is answered VALUE_TOO_LARGE instead of building a reply of any size
 * (400 copies of a 1 MB value used to make a 400 MB reply from a 2 KB request). A key asked more
 * than once is answered once (a map's keys are unique). The same holds with a loader and through
 * a cluster.
 */
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { CacheNode } from "../../src/server/cache-node.ts";
import { startMembers } from "../support/cluster-members.ts";
import { LogSink, RawSocket, getCall, getMultiCall, setCall } from "./support.ts";
import { field, outcome, readReplies } from "./wire-reader.ts";
import { T } from "../protocol/wire-builder.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const LIMITS = { maxItemSize: 128 * 1024, maxFrameSize: 256 * 1024 };
const VALUE = new Uint8Array(100_000).fill(7);
const enc = new TextEncoder();

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((x) => x.close()));
});

/** ask sends `calls` on a fresh connection and returns the outcome of each of `n` replies. */
async function ask(port: number, n: number, ...calls: Uint8Array[]) {
  const raw = await RawSocket.connect(port);
  for (const c of calls) raw.write(c);
  await raw.waitFor(() => raw.frames().length === n || raw.isClosed, `${n} replies`);
  raw.close();
  return readReplies(raw.received, "framed").replies.map((r) => outcome(r));
}

/** entries is the number of map entries of a GetMulti's success outcome. */
function entries(o: ReturnType<typeof outcome> | undefined): number {
  if (o?.kind !== "success") throw new Error(`not a success: ${JSON.stringify(o)}`);
  return (field(o.value, 1, T.MAP) as unknown[]).length;
}

describe("a GetMulti reply past the frame limit", () => {
  test("is VALUE_TOO_LARGE; a key asked many times is answered once (a map's keys are unique), under the limit; the connection goes on", async () => {
    const node = CacheNode.start({ port: 0, logLevel: "silent", ...LIMITS }, { logger: new LogSink().logger });
    open.push(node);
    const bigs = Array.from({ length: 10 }, (_, i) => enc.encode(`big${i}`));
    const replies = await ask(
      node.port, 14,
      ...bigs.map((_, i) => setCall(i + 1, `big${i}`, VALUE)),
      getMultiCall(20, "default", [bigs[0]!, bigs[0]!]), getMultiCall(21, "default", Array(10).fill(bigs[0]!)), getMultiCall(22, "default", bigs), getCall(23, "big0"),
    );
    const [twice, repeated, many, after] = replies.slice(10);
    expect(replies.slice(0, 10).every((r) => r.kind === "success")).toBe(true);
    expect([entries(twice), entries(repeated)]).toEqual([1, 1]); // (before: ten copies, a reply over the limit)
    expect(many).toMatchObject({ kind: "cacheError", code: 4 });
    expect((many as { message: string }).message).toContain("GetMulti reply over 262144 bytes");
    expect(after!.kind).toBe("success");
  });

  test("with a loader: refused before any load starts when the hits alone pass it; a repeated key is loaded and answered once", async () => {
    let loads = 0;
    const node = CacheNode.start({ port: 0, logLevel: "silent", ...LIMITS, groups: [{ name: "g", ttlMs: 0, admission: "always" }] }, {
      logger: new LogSink().logger,
      loaders: { g: () => (loads++, "loaded") },
    });
    open.push(node);
    const bigs = Array.from({ length: 10 }, (_, i) => enc.encode(`big${i}`));
    const replies = await ask(node.port, 11, ...bigs.map((_, i) => setCall(i + 1, `big${i}`, VALUE, "g")), getMultiCall(20, "g", [...bigs, enc.encode("miss")]));
    expect(replies[10]).toMatchObject({ kind: "cacheError", code: 4 });
    expect(loads).toBe(0);
    const miss = enc.encode("miss");
    const [few] = await ask(node.port, 1, getMultiCall(21, "g", [bigs[0]!, bigs[0]!, miss, bigs[0]!, miss]));
    expect(entries(few)).toBe(2);
    expect(loads).toBe(1);
  });

  test("through a cluster: each node's part under the limit, the merged reply over it", async () => {
    const members = startMembers(2, open, LIMITS);
    const node = members.nodes[0]!;
    const byOwner = new Map<string, Uint8Array[]>();
    for (let i = 0; [...byOwner.values()].filter((l) => l.length >= 2).length < 2; i++) {
      const k = enc.encode(`k${i}`);
      const owner = node.cluster!.ring.owner(k) ?? "";
      const list = byOwner.get(owner) ?? [];
      if (list.length < 2) list.push(k);
      byOwner.set(owner, list);
    }
    const keys = [...byOwner.values()].flat(); // two per node: 200 KB from each, 400 KB merged
    await ask(node.port, keys.length, ...keys.map((k, i) => setCall(i, new TextDecoder().decode(k), VALUE)));
    const [merged] = await ask(node.port, 1, getMultiCall(9, "default", keys));
    expect(merged).toMatchObject({ kind: "cacheError", code: 4 });
    const [two] = await ask(node.port, 1, getMultiCall(10, "default", [keys[0]!, keys[2]!]));
    expect(two!.kind).toBe("success");
    // A key asked five times, with one of the other member's: each fetched and answered once
    // (review: routed, every repeat counted toward the limit).
    const [repeated] = await ask(node.port, 1, getMultiCall(11, "default", [...Array(5).fill(keys[0]!), keys[2]!]));
    expect(entries(repeated)).toBe(2);
  });
});
