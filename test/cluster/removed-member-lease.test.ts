/**
 * A member taken out of an owner's list may still hold the owner's read lease (leases.ts: given
 * before the change, it runs to its end), and answer Gets of the owner's keys from its mirror
 * until then: it has not applied the change yet (a peers file or DNS answer read a moment later
 * there), and clients connected to it still read through it. The owner no longer tells it of
 * its writes, so a write acknowledged meanwhile must wait for that lease to end (review: a Set
 * acknowledged right after the owner dropped B from its list was read back through B as the
 * value it replaced, from B's mirror, under the lease given before the change).
 */
import { afterEach, expect, test, setDefaultTimeout } from "bun:test";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { CacheClient } from "../../src/client/cache-client.ts";
import { Ring } from "../../src/cluster/ring.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import { LogSink } from "../server/support.ts";
import { leasesHeld } from "../support/cluster-members.ts";
import { waitUntil } from "../support/gates.ts";
import { freePorts } from "../support/node-process.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const text = (b: Uint8Array): string => new TextDecoder().decode(b);

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((x) => x.close()));
});

/**
 * listed starts `count` nodes reading their own peers file (`file(i)`, all listing every node),
 * with 2 s peer timeouts (leases of 500 ms: a read right after a change comes well within one),
 * and waits for every list and lease; a client for each node is `via[i]`.
 */
async function listed(count: number): Promise<{ ids: string[]; nodes: CacheNode[]; via: CacheClient[]; file: (i: number) => string }> {
  const dir = await mkdtemp("/tmp/mybuncache-removed-");
  open.push({ close: () => rm(dir, { recursive: true, force: true }) });
  const ports = freePorts(count);
  const ids = ports.map((p) => `127.0.0.1:${p}`);
  const file = (i: number): string => join(dir, `peers-${i}`);
  for (let i = 0; i < count; i++) await writeFile(file(i), ids.join("\n") + "\n");
  const nodes = ports.map((port, i) => {
    const n = CacheNode.start(
      { port, host: "127.0.0.1", peersFile: file(i), logLevel: "silent", peerTimeoutMs: 2_000, groups: [{ name: "g", ttlMs: 0 }] },
      { logger: new LogSink().logger },
    );
    open.push(n);
    return n;
  });
  await waitUntil(() => nodes.every((n) => n.cluster!.members.length === count), "every list read", 5_000);
  await leasesHeld(nodes, ids);
  const via = ports.map((port) => {
    const c = new CacheClient({ host: "127.0.0.1", port, timeoutMs: 5_000 });
    open.push(c);
    return c;
  });
  return { ids, nodes, via, file };
}

/** mirrored sets each key to "v1" through `viaA` and reads it back through `viaB`, whose mirror then keeps a copy. */
async function mirrored(viaA: CacheClient, viaB: CacheClient, keys: string[]): Promise<void> {
  for (const k of keys) {
    await viaA.set("g", k, "v1");
    for (let i = 0; i < 3; i++) expect(text((await viaB.get("g", k)).value)).toBe("v1");
  }
}

for (const count of [3, 2]) test(`a write acknowledged after the owner took a member out of its list is not read back older through that member (${count} members; then ${count - 1})`, async () => {
  const { ids, nodes, via, file } = await listed(count);
  const [A] = ids as [string];
  const others = ids.slice(2); // (C, or none: A alone after the change)
  const [a, b] = nodes as [CacheNode, CacheNode];
  // Keys A owns with or without B.
  const with3 = new Ring();
  with3.setMembers(ids);
  const with2 = new Ring();
  with2.setMembers([A, ...others]);
  const enc = new TextEncoder();
  const keys: string[] = [];
  for (let i = 0; keys.length < 5; i++) if (with3.owner(enc.encode(`k${i}`)) === A && with2.owner(enc.encode(`k${i}`)) === A) keys.push(`k${i}`);
  const [viaA, viaB] = via as [CacheClient, CacheClient];
  await mirrored(viaA, viaB, keys); // B's mirror keeps a copy
  expect(b.cluster!.counters.mirrorHits).toBeGreaterThan(0);

  // A reads its peers file first: B is out of A's list, not of its own yet.
  await writeFile(file(0), [A, ...others].join("\n") + "\n");
  a.reloadPeers();
  await waitUntil(() => a.cluster!.members.length === count - 1, "A's list without B", 2_000);
  const reads: string[] = [];
  for (const k of keys) {
    await viaA.set("g", k, "v2"); // acknowledged by the owner...
    reads.push(text((await viaB.get("g", k)).value)); // ...then read through B
  }
  expect(b.cluster!.members.length).toBe(count); // (B had not applied the change)
  expect(reads).toEqual(keys.map(() => "v2"));
});

test("a Clear on an owner left alone in its list is not read back uncleared through the member just taken out", async () => {
  const { ids, nodes, via, file } = await listed(2);
  const [a, b] = nodes as [CacheNode, CacheNode];
  const enc = new TextEncoder();
  const keys: string[] = [];
  for (let i = 0; keys.length < 5; i++) if (a.cluster!.owner(enc.encode(`k${i}`), 0, `k${i}`.length) === ids[0]) keys.push(`k${i}`);
  const [viaA, viaB] = via as [CacheClient, CacheClient];
  await mirrored(viaA, viaB, keys);
  await writeFile(file(0), ids[0]! + "\n");
  a.reloadPeers();
  await waitUntil(() => a.cluster!.members.length === 1, "A alone in its list", 2_000);
  await viaA.clear("g"); // acknowledged by A, alone now...
  const reads: string[] = [];
  for (const k of keys) reads.push(await viaB.get("g", k).then((r) => text(r.value), (e: { code: number }) => `error ${e.code}`)); // ...then read through B
  expect(b.cluster!.members.length).toBe(2); // (B had not applied the change)
  expect(reads).toEqual(keys.map(() => "error 1")); // NOT_FOUND
});
