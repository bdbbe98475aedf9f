/**
 * Clear through a cluster (review of the write path): acknowledged, no member serves a value from
 * before it, and a member without the group counts as cleared.
 */
import { afterEach, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import { LogSink } from "../server/support.ts";
import { delayingProxy } from "../support/delay-proxy.ts";
import { freePorts } from "../support/node-process.ts";
import { closedPort } from "../client/support.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const open: { close(): unknown }[] = [];
afterEach(async () => {
  for (const x of open.splice(0)) await x.close();
});

const text = (b: Uint8Array): string => new TextDecoder().decode(b);
function client(port: number): CacheClient {
  const c = new CacheClient({ host: "127.0.0.1", port, timeoutMs: 5000 });
  open.push(c);
  return c;
}

test("a Clear acknowledged: no member serves a value from before it, though a member's forwarded Get reached the owner before the owner's clear (review: its mirror kept the old value)", async () => {
  const [pa, pb, pc, proxied] = freePorts(4) as [number, number, number, number];
  // C, the key's owner, is reached through a proxy that holds back its PeerClear 400 ms.
  const ids = [`127.0.0.1:${pa}`, `127.0.0.1:${pb}`, `127.0.0.1:${proxied}`];
  const config = { host: "127.0.0.1", peers: ids, logLevel: "silent" as const, peerTimeoutMs: 3000, groups: [{ name: "g", ttlMs: 0 }] };
  const a = CacheNode.start({ ...config, port: pa }, { logger: new LogSink().logger });
  const b = CacheNode.start({ ...config, port: pb }, { logger: new LogSink().logger });
  const c = CacheNode.start({ ...config, port: pc, self: ids[2] }, { logger: new LogSink().logger });
  open.push(a, b, c, delayingProxy(proxied, pc, "PeerClear", 400));
  const enc = new TextEncoder();
  let key = "";
  for (let i = 0; key === ""; i++) if (a.cluster!.owner(enc.encode(`k${i}`), 0, `k${i}`.length) === ids[2]) key = `k${i}`;
  const [viaA, viaB, viaC] = [client(pa), client(pb), client(pc)];
  await viaC.set("g", key, "old");
  const cleared = viaA.clear("g");
  await Bun.sleep(100); // A and B have cleared; C's PeerClear is on its way
  // B forwards to C, which has not cleared: the value comes back, and into B's mirror.
  for (let i = 0; i < 2; i++) expect(text((await viaB.get("g", key)).value)).toBe("old");
  await cleared;
  for (const via of [viaB, viaA, viaC]) await expect(via.get("g", key)).rejects.toMatchObject({ code: 1 }); // NOT_FOUND
}, 20_000);

test("a Clear of a group a member does not have is acknowledged, and that member's answers count no peer errors (review: PEER_UNAVAILABLE, and every write counted one)", async () => {
  const [pa, pb] = freePorts(2) as [number, number];
  const ids = [`127.0.0.1:${pa}`, `127.0.0.1:${pb}`];
  const base = { host: "127.0.0.1", peers: ids, logLevel: "silent" as const };
  const a = CacheNode.start({ ...base, port: pa, groups: [{ name: "g", ttlMs: 0 }, { name: "h", ttlMs: 0 }] }, { logger: new LogSink().logger });
  const b = CacheNode.start({ ...base, port: pb, groups: [{ name: "g", ttlMs: 0 }] }, { logger: new LogSink().logger });
  open.push(a, b);
  const viaA = client(pa);
  // Keys A owns: their writes are A's, and B is only told to drop copies (it answers UNKNOWN_GROUP).
  const enc = new TextEncoder();
  const owned = Array.from({ length: 200 }, (_, i) => `k${i}`).filter((k) => a.cluster!.owner(enc.encode(k), 0, k.length) === ids[0]).slice(0, 20);
  await viaA.set("h", owned[0]!, "v");
  await viaA.clear("h");
  await expect(viaA.get("h", owned[0]!)).rejects.toMatchObject({ code: 1 });
  for (const k of owned) await viaA.set("h", k, "v");
  expect(a.cluster!.counters.invalidationsSent).toBeGreaterThan(20);
  expect(a.cluster!.counters.peerErrors).toBe(0);
});

test("a Clear with a member that refuses connections answers at once that it could not reach it, counted once (review: the drop ask after it counted it again)", async () => {
  const [pa] = freePorts(1) as [number];
  const gone = closedPort();
  const ids = [`127.0.0.1:${pa}`, `127.0.0.1:${gone}`];
  const a = CacheNode.start({ host: "127.0.0.1", port: pa, peers: ids, logLevel: "silent", groups: [{ name: "g", ttlMs: 0 }] }, { logger: new LogSink().logger });
  open.push(a);
  const viaA = client(pa);
  const before = a.cluster!.counters.peerErrors;
  await expect(viaA.clear("g")).rejects.toMatchObject({ code: 7, message: "cleared here, but 1 of 1 peers could not be reached" });
  expect(a.cluster!.counters.peerErrors - before).toBe(1);
  expect(a.cluster!.owedMembers).toEqual([ids[1]!]);
});

