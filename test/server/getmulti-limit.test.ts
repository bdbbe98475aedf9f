/**
 * One GetMulti reply is bounded by the connection's frame limit: a short request that names a
 * large value many times is answered VALUE_TOO_LARGE instead of building a reply of any size
 * (400 copies of a 1 MB value used to make a 400 MB reply from a 2 KB request). Under the limit,
 * repeats are answered as before. The same holds with a loader and through a cluster.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { CacheNode } from "../../src/server/cache-node.ts";
import { startMembers } from "../support/cluster-members.ts";
import { LogSink, RawSocket, getCall, getMultiCall, setCall } from "./support.ts";
import { outcome, readReplies } from "./wire-reader.ts";

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

describe("a GetMulti reply past the frame limit", () => {
  test("is VALUE_TOO_LARGE; under the limit repeats are answered; the connection goes on", async () => {
    const node = CacheNode.start({ port: 0, logLevel: "silent", ...LIMITS }, { logger: new LogSink().logger });
    open.push(node);
    const big = enc.encode("big");
    const [set, twice, many, after] = await ask(
      node.port, 4,
      setCall(1, "big", VALUE), getMultiCall(2, "default", [big, big]), getMultiCall(3, "default", Array(10).fill(big)), getCall(4, "big"),
    );
    expect(set!.kind).toBe("success");
    expect(twice!.kind).toBe("success");
    expect(many).toMatchObject({ kind: "cacheError", code: 4 });
    expect((many as { message: string }).message).toContain("GetMulti reply over 262144 bytes");
    expect(after!.kind).toBe("success");
  });

  test("with a loader: refused before any load starts when the hits alone pass it", async () => {
    let loads = 0;
    const node = CacheNode.start({ port: 0, logLevel: "silent", ...LIMITS, groups: [{ name: "g", ttlMs: 0, admission: "always" }] }, {
      logger: new LogSink().logger,
      loaders: { g: () => (loads++, "loaded") },
    });
    open.push(node);
    const big = enc.encode("big");
    const [, many] = await ask(node.port, 2, setCall(1, "big", VALUE, "g"), getMultiCall(2, "g", [...Array(10).fill(big), enc.encode("miss")]));
    expect(many).toMatchObject({ kind: "cacheError", code: 4 });
    expect(loads).toBe(0);
    const [few] = await ask(node.port, 1, getMultiCall(3, "g", [big, enc.encode("miss")]));
    expect(few!.kind).toBe("success");
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
  });
});
