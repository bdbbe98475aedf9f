/**
 * --peers-dns on a dual-stack name (a Kubernetes headless service with ipFamilyPolicy
 * PreferDualStack): each node is answered twice, an A and an AAAA record. Taken as two members,
 * every node owned the keys of its other address too, under an id that is never its --self: the
 * others forwarded those keys to it, it served them as foreign (writes refused, loads never
 * stored), or, when it did not listen on that address, they could not be reached at all (review:
 * half of a one-node cluster's keys answered PEER_UNAVAILABLE). The members are the addresses of
 * --self's family when the answer holds both.
 */
import { afterEach, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
import { DnsMembers } from "../../src/cluster/membership.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import { LogSink } from "../server/support.ts";
import { waitUntil } from "../support/gates.ts";
import { freePorts } from "../support/node-process.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const open: { close(): unknown }[] = [];
afterEach(async () => {
  for (const x of open.splice(0)) await x.close();
});

const quiet = { info() {}, warn() {} };

/** listed returns the member list a DnsMembers of `family` applies first for the answer `addresses`. */
async function listed(addresses: string[], family?: 4 | 6): Promise<string[]> {
  let got: string[] = [];
  const dns = new DnsMembers("svc.test", 8001, 60_000, quiet, async () => addresses, family);
  open.push(dns);
  dns.start((members) => void (got = members));
  await dns.settled();
  return got;
}

test("a dual-stack answer gives each node once: the addresses of --self's family", async () => {
  const answer = ["fd00::2", "10.0.0.2", "10.0.0.1", "fd00::1"];
  expect(await listed(answer, 4)).toEqual(["10.0.0.1:8001", "10.0.0.2:8001"]);
  expect(await listed(answer, 6)).toEqual(["[fd00::1]:8001", "[fd00::2]:8001"]);
  // One family only (whatever --self's), or --self not an address: every address, as before.
  expect(await listed(["fd00::2", "fd00::1"], 4)).toEqual(["[fd00::1]:8001", "[fd00::2]:8001"]);
  expect(await listed(answer)).toEqual(["10.0.0.1:8001", "10.0.0.2:8001", "[fd00::1]:8001", "[fd00::2]:8001"]);
});

test("a node whose name answers its IPv4 and IPv6 loopback is alone: every key is its own", async () => {
  const port = freePorts(1)[0]!;
  const n = CacheNode.start(
    { port, host: "127.0.0.1", logLevel: "silent", self: `127.0.0.1:${port}`, peersDns: `cache.test:${port}`, peerTimeoutMs: 300, groups: [{ name: "g", ttlMs: 0 }] },
    { logger: new LogSink().logger, resolve: async () => ["127.0.0.1", "::1"] },
  );
  open.push(n);
  await waitUntil(() => n.cluster!.listedSelf === true, "the first answer applied", 5_000);
  const c = new CacheClient({ host: "127.0.0.1", port, timeoutMs: 3_000 });
  open.push(c);
  const failed: string[] = [];
  for (let i = 0; i < 20; i++) await c.set("g", `k${i}`, `v${i}`).catch(() => failed.push(`k${i}`));
  expect(failed).toEqual([]);
  expect([...n.cluster!.members]).toEqual([`127.0.0.1:${port}`]);
  expect(n.groups.byName("g")!.store.size).toBe(20);
});
