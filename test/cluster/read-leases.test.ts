/**
 * Read leases between members (src/cluster/leases.ts), on sockets: a member the owner counts
 * lagging (its answers to invalidations come late) used to answer from its mirror, after the
 * owner acknowledged a write without its answer, the value that write replaced, until the
 * invalidation reached it. Under leases the owner acknowledges such a write only once the
 * member's lease has run out, and gives it no other until it answers: the member forwards the
 * Get instead, and counts it (`cluster_mirror_lease_misses_total`). A healthy pair keeps
 * answering from its mirror; an idle one stops asking for leases (`cluster_lease_pings_sent_total`
 * stays still) until a Get tries a copy again.
 *
 * B owns the key; B reaches A through a proxy that holds back its calls from the first one naming
 * the key on (B's invalidation of it, and all that follow on that connection), 1.5 s each.
 */
import { afterEach, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
import type { PeerClient } from "../../src/cluster/cluster.ts";
import { memberAddressOf } from "../../src/cluster/member-id.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import { until } from "../client/support.ts";
import { delayingProxy } from "../support/delay-proxy.ts";
import { freePorts } from "../support/node-process.ts";
import { LogSink } from "../server/support.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const open: { close(): Promise<void> }[] = [];
afterEach(async () => { await Promise.all(open.splice(0).reverse().map((x) => x.close().catch(() => {}))); });
const utf8 = new TextEncoder();
const text = (b: Uint8Array): string => new TextDecoder().decode(b);

/**
 * twoMembers starts A and B with a 2 s peer timeout (a write waits 1 s at most for a member;
 * leases of 500 ms); with `delayMs`, B reaches A through the delaying proxy, whose needle is the
 * key B owns that the test reads (`key`).
 */
async function twoMembers(delayMs: number, older = false, loadMs = 0) {
  const [pa, pb, proxied] = freePorts(3) as [number, number, number];
  const ids = [`127.0.0.1:${delayMs > 0 ? proxied : pa}`, `127.0.0.1:${pb}`];
  const cfg = { host: "127.0.0.1", peers: ids, logLevel: "silent" as const, peerTimeoutMs: 2_000 };
  const loaders = { default: async (k: string): Promise<string> => (loadMs > 0 && (await Bun.sleep(loadMs)), `L:${k}`) };
  const deps = (self: string) => ({ logger: new LogSink().logger, loaders, ...(older ? { connect: olderPeers(self) } : {}) });
  const a = CacheNode.start({ ...cfg, port: pa, self: ids[0] }, deps(ids[0]!));
  const b = CacheNode.start({ ...cfg, port: pb }, deps(ids[1]!));
  open.push(a, b);
  let key = "";
  for (let i = 0; key === ""; i++) if (a.cluster!.owner(utf8.encode(`lq${i}`), 0, `lq${i}`.length) === ids[1]) key = `lq${i}`;
  if (delayMs > 0) open.push(delayingProxy(proxied, pa, key, delayMs));
  await until(() => a.cluster!.startConfirmed && b.cluster!.startConfirmed, 5_000);
  const writer = new CacheClient({ host: "127.0.0.1", port: pb, timeoutMs: 5_000 }); // writes at B, the owner
  const reader = new CacheClient({ host: "127.0.0.1", port: pa, timeoutMs: 5_000 }); // reads through A
  open.push(writer, reader);
  return { a, b, aId: ids[0]!, key, writer, reader };
}

/**
 * olderPeers makes a node's peer clients ping as a node without leases does: never asking for
 * one, so the owner answers no `leaseMs` (as an older owner) and is never asked (as by an older member).
 */
function olderPeers(self: string): (id: string) => PeerClient {
  return (id) => {
    const at = memberAddressOf(id);
    const client = new CacheClient({ host: at.host, port: at.port, sender: self, connections: 2, writeConnection: true, timeoutMs: 2_000 });
    const ping = client.ping.bind(client);
    client.ping = (sender?: string) => ping(sender);
    return client;
  };
}

/** mirrored reads `key` through A until A's mirror answers it (LRU-K admits a copy; A holds B's lease). */
async function mirrored(a: CacheNode, reader: CacheClient, key: string): Promise<string> {
  const hits = a.cluster!.counters.mirrorHits;
  let value = "";
  for (let i = 0; a.cluster!.counters.mirrorHits === hits; i++) {
    if (i > 400) throw new Error("A's mirror never answered");
    value = text((await reader.get("default", key)).value);
    await Bun.sleep(5);
  }
  return value;
}

test("a member whose answers to invalidations are late: after the owner acknowledged a write, a Get through it reads the new value, not its mirror's copy", async () => {
  const { a, key, writer, reader } = await twoMembers(1_500);
  expect(await mirrored(a, reader, key)).toBe(`L:${key}`);
  await writer.set("default", key, "v2"); // B waits for A's answer, held back by the proxy, until A's lease ends
  const misses = a.cluster!.counters.mirrorLeaseMisses;
  expect(text((await reader.get("default", key)).value)).toBe("v2"); // (before leases: L:key, from A's mirror)
  expect(a.cluster!.counters.mirrorLeaseMisses).toBe(misses + 1); // the copy was there, with no lease: forwarded
  expect([...(await reader.getMulti("default", [key])).values()].map(text)).toEqual(["v2"]); // a GetMulti's part too
  expect(a.cluster!.counters.mirrorLeaseMisses).toBe(misses + 2);
  expect(a.groups.byName("default")!.mirror!.has(utf8.encode(key), 0, key.length)).toBe(true); // (the invalidation has not come)
}, 20_000);

test("a healthy pair: the mirror answers, no lease is missed, and a write is read back through the member", async () => {
  const { a, b, key, writer, reader } = await twoMembers(0);
  expect(await mirrored(a, reader, key)).toBe(`L:${key}`);
  const misses = a.cluster!.counters.mirrorLeaseMisses; // (a copy read before A's first lease counts one)
  for (let i = 0; i < 20; i++) expect(text((await reader.get("default", key)).value)).toBe(`L:${key}`);
  await writer.set("default", key, "v2");
  expect(text((await reader.get("default", key)).value)).toBe("v2");
  expect(a.cluster!.counters.mirrorHits).toBeGreaterThanOrEqual(21);
  expect(a.cluster!.counters.mirrorLeaseMisses).toBe(misses);
  expect(b.cluster!.laggingMembers).toEqual([]);
}, 20_000);

test("an idle pair sends no lease pings; a Get of a mirrored key then is a lease miss that asks again, and the Gets after it are mirror hits", async () => {
  const { a, b, aId, key, reader } = await twoMembers(0);
  const bId = b.cluster!.self;
  expect(await mirrored(a, reader, key)).toBe(`L:${key}`);
  // Unused for 4 leases (2 s): each stops asking the other (B holds no copies of A's keys at all).
  await until(() => !a.cluster!.leases.renewing(bId) && !b.cluster!.leases.renewing(aId), 5_000);
  const [aPings, bPings] = [a.cluster!.counters.leasePingsSent, b.cluster!.counters.leasePingsSent];
  await Bun.sleep(1_500); // (before: 8 a second from each, a lease of 500 ms renewed every 125 ms)
  expect([a.cluster!.counters.leasePingsSent, b.cluster!.counters.leasePingsSent]).toEqual([aPings, bPings]);
  const { mirrorHits: hits, mirrorLeaseMisses: misses } = a.cluster!.counters;
  expect(text((await reader.get("default", key)).value)).toBe(`L:${key}`);
  expect([a.cluster!.counters.mirrorHits, a.cluster!.counters.mirrorLeaseMisses]).toEqual([hits, misses + 1]); // forwarded: its lease ran out
  await until(() => a.cluster!.counters.leasePingsSent > aPings); // asked again at once
  expect(b.cluster!.leases.renewing(aId)).toBe(false); // (B's own, unused, stays idle)
  await until(() => a.cluster!.leaseHeld(bId));
  for (let i = 0; i < 5; i++) expect(text((await reader.get("default", key)).value)).toBe(`L:${key}`);
  expect([a.cluster!.counters.mirrorHits, a.cluster!.counters.mirrorLeaseMisses]).toEqual([hits + 5, misses + 1]);
  expect(a.cluster!.leases.renewing(bId)).toBe(true);
}, 20_000);

test("an idle member: cold Gets pipelined through it use every answer fetched ahead (the lease is asked for as they are sent, not first at the second Get)", async () => {
  // B's loads take 50 ms: A's lease ask, sent with the Gets forwarded ahead, is answered before
  // the first Get's load ends and the second Get takes what was fetched for it.
  const { a, aId } = await twoMembers(0, false, 50);
  const bId = a.cluster!.members.find((id) => id !== aId)!;
  const keys: string[] = [];
  for (let i = 0; keys.length < 6; i++) if (a.cluster!.owner(utf8.encode(`ck${i}`), 0, `ck${i}`.length) === bId) keys.push(`ck${i}`);
  const pipelined = new CacheClient({ host: "127.0.0.1", port: memberAddressOf(aId).port, timeoutMs: 5_000, connections: 1 });
  open.push(pipelined);
  await until(() => !a.cluster!.leases.renewing(bId), 5_000);
  await Bun.sleep(600); // (its last lease, 500 ms, has run out)
  const c = a.cluster!.counters;
  const [misses, used, sent] = [c.mirrorLeaseMisses, c.prefetchesUsed, c.prefetchesSent];
  const values = await Promise.all(keys.map((k) => pipelined.get("default", k)));
  expect(values.map((v) => text(v.value))).toEqual(keys.map((k) => `L:${k}`));
  // (Before: the second Get found no lease, counted a lease miss, and was forwarded again.)
  expect([c.prefetchesSent - sent, c.prefetchesUsed - used, c.mirrorLeaseMisses - misses]).toEqual([5, 5, 0]);
}, 20_000);

test("members that ask for no lease (older nodes): the mirror answers as before leases, and the owner waits for their answers as before", async () => {
  const { a, b, key, writer, reader } = await twoMembers(0, true);
  await until(() => a.cluster!.leaseHeld(b.cluster!.self)); // (its owner answered no leaseMs: not checked)
  expect(await mirrored(a, reader, key)).toBe(`L:${key}`);
  await writer.set("default", key, "v2");
  expect(text((await reader.get("default", key)).value)).toBe("v2");
  expect(a.cluster!.counters.mirrorLeaseMisses).toBe(0);
  expect(b.cluster!.laggingMembers).toEqual([]);
}, 20_000);

test("members with different --peer-timeout: A (4 s: its own lease 1 s) holds B's short lease (B at 400 ms: 100 ms) throughout, so its mirror answers B's key (before: renewed every 250 ms, most reads were lease misses)", async () => {
  const [pa, pb] = freePorts(2) as [number, number];
  const ids = [`127.0.0.1:${pa}`, `127.0.0.1:${pb}`];
  const cfg = { host: "127.0.0.1", peers: ids, logLevel: "silent" as const };
  const loaders = { default: async (k: string): Promise<string> => `L:${k}` };
  const a = CacheNode.start({ ...cfg, port: pa, self: ids[0], peerTimeoutMs: 4_000 }, { logger: new LogSink().logger, loaders });
  const b = CacheNode.start({ ...cfg, port: pb, self: ids[1], peerTimeoutMs: 400 }, { logger: new LogSink().logger, loaders });
  open.push(a, b);
  expect([a.cluster!.leaseMs, b.cluster!.leaseMs]).toEqual([1_000, 100]);
  let key = "";
  for (let i = 0; key === ""; i++) if (a.cluster!.owner(utf8.encode(`pt${i}`), 0, `pt${i}`.length) === ids[1]) key = `pt${i}`;
  await until(() => a.cluster!.startConfirmed && b.cluster!.startConfirmed, 5_000);
  const reader = new CacheClient({ host: "127.0.0.1", port: pa, timeoutMs: 5_000 });
  open.push(reader);
  expect(await mirrored(a, reader, key)).toBe(`L:${key}`);
  const { mirrorHits: hits, mirrorLeaseMisses: misses } = a.cluster!.counters;
  for (let i = 0; i < 40; i++) {
    expect(text((await reader.get("default", key)).value)).toBe(`L:${key}`);
    await Bun.sleep(10); // (400 ms of reads: four of B's leases)
  }
  const c = a.cluster!.counters;
  // (Before: a lease of 100 ms asked for every 250 ms: over half the reads forwarded. A margin of
  // a few for a busy machine's late timers.)
  expect(c.mirrorLeaseMisses - misses).toBeLessThanOrEqual(4);
  expect(c.mirrorHits - hits).toBeGreaterThanOrEqual(36);
}, 20_000);
