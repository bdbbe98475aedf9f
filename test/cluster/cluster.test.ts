/**
 * Three nodes in one process on real sockets: one owner per key, loads once cluster-wide,
 * writes through the owner with mirror invalidation, fallback when a node is gone, disagreeing
 * member lists, GetMulti/SetMulti spread over owners, membership from a peers file and DNS.
 */
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { CacheClient } from "../../src/client/cache-client.ts";
import { ClusterClient } from "../../src/client/cluster-client.ts";
import type { Loader } from "../../src/cluster/loader.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import type { NodeConfig } from "../../src/server/config.ts";
import { LogSink } from "../server/support.ts";
import { freePorts } from "../support/node-process.ts";
import { leasesHeld } from "../support/cluster-members.ts";
import { waitUntil } from "../support/gates.ts";
import { selfSigned } from "../support/tls.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const text = (b: Uint8Array): string => new TextDecoder().decode(b);

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((x) => x.close()));
});

function node(config: Partial<NodeConfig>, loaders: Record<string, Loader> = {}): CacheNode {
  const n = CacheNode.start({ logLevel: "silent", peerTimeoutMs: 300, ...config }, { logger: new LogSink().logger, loaders });
  open.push(n);
  return n;
}

function client(port: number): CacheClient {
  const c = new CacheClient({ host: "127.0.0.1", port, timeoutMs: 2000 });
  open.push(c);
  return c;
}

/**
 * cluster3 starts three nodes that all know each other, with the same loader on group "g", once
 * each holds the others' read leases (their mirrors answer only then).
 */
async function cluster3(loader: Loader, extra: Partial<NodeConfig> = {}): Promise<{ nodes: CacheNode[]; ids: string[] }> {
  const ports = freePorts(3);
  const ids = ports.map((p) => `127.0.0.1:${p}`);
  const nodes = ports.map((port) => node({ port, peers: ids, groups: [{ name: "g", ttlMs: 0, admission: "always" }], ...extra }, { g: loader }));
  await leasesHeld(nodes, ids);
  return { nodes, ids };
}

describe("a three-node cluster in one process", () => {
  test("1,000 concurrent gets of one cold key spread over all nodes → one loader call cluster-wide", async () => {
    let calls = 0;
    const { nodes } = await cluster3(async (key) => {
      calls++;
      await Bun.sleep(30);
      return `v:${key}`;
    });
    const clients = nodes.map((n) => client(n.port));
    const gets = Array.from({ length: 1000 }, (_, i) => clients[i % 3]!.get("g", "cold"));
    const values = await Promise.all(gets);
    expect(new Set(values.map((v) => text(v.value)))).toEqual(new Set(["v:cold"]));
    expect(calls).toBe(1);
    const forwarded = nodes.reduce((n, x) => n + x.cluster!.counters.forwarded, 0);
    expect(forwarded).toBeGreaterThan(0);
  });

  test("a set on A is read on B and C; a delete on C removes it everywhere, mirrors included", async () => {
    const { nodes } = await cluster3(() => null);
    const [a, b, c] = nodes.map((n) => client(n.port));
    await a!.set("g", "k", "v1");
    // Read twice on every node: the second read may come from a mirror (LRU-K admits on the 2nd fill).
    for (const x of [a!, b!, c!]) for (let i = 0; i < 3; i++) expect(text((await x.get("g", "k")).value)).toBe("v1");
    // No wait after either write: a write is acknowledged once every member holding a copy has
    // answered its invalidation (cluster/write-waits.ts), so the next read anywhere sees it.
    await c!.delete("g", "k");
    for (const x of [a!, b!, c!]) await expect(x.get("g", "k")).rejects.toMatchObject({ code: 1 });
    // A new value written through B is seen everywhere (no stale mirror).
    await b!.set("g", "k", "v2");
    for (const x of [a!, b!, c!]) expect(text((await x.get("g", "k")).value)).toBe("v2");
  });

  test("when a node dies the others still answer every key (fallback loads)", async () => {
    const { nodes } = await cluster3((key) => `v:${key}`);
    const survivors = [client(nodes[0]!.port), client(nodes[1]!.port)];
    await nodes[2]!.close();
    const keys = Array.from({ length: 60 }, (_, i) => `key-${i}`);
    for (const k of keys) for (const c of survivors) expect(text((await c.get("g", k)).value)).toBe(`v:${k}`);
    const fallback = nodes[0]!.cluster!.counters.fallbackLoads + nodes[1]!.cluster!.counters.fallbackLoads;
    expect(fallback).toBeGreaterThan(0);
  });

  test("hot keys are mirrored on non-owners, and a mirror never outlives the owner's TTL", async () => {
    const { nodes, ids } = await cluster3(() => null);
    const ring = nodes[0]!.cluster!.ring;
    // A key owned by node 0, read through node 1.
    let key = "";
    for (let i = 0; key === ""; i++) if (ring.owner(new TextEncoder().encode(`hot${i}`)) === ids[0]) key = `hot${i}`;
    const owner = client(nodes[0]!.port);
    const reader = client(nodes[1]!.port);
    await owner.set("g", key, "hot value", 400);
    for (let i = 0; i < 5; i++) expect(text((await reader.get("g", key)).value)).toBe("hot value");
    const c1 = nodes[1]!.cluster!.counters;
    expect(c1.mirrorFills).toBe(1); // LRU-K (K = 2): admitted on the second forwarded read
    expect(c1.mirrorHits).toBe(3);
    const remaining = (await reader.get("g", key)).ttlRemainingMs;
    expect(remaining).toBeGreaterThan(0);
    expect(remaining).toBeLessThanOrEqual(400);
    await Bun.sleep(450);
    await expect(reader.get("g", key)).rejects.toMatchObject({ code: 1 });
  });

  test("Stats on a non-owner: mirror answers (Get and GetMulti) are hits, forwarded keys misses; hits + misses = total", async () => {
    const { nodes, ids } = await cluster3(() => null);
    const ring = nodes[0]!.cluster!.ring;
    const ownedBy0 = (prefix: string): string => {
      for (let i = 0; ; i++) if (ring.owner(new TextEncoder().encode(`${prefix}${i}`)) === ids[0]) return `${prefix}${i}`;
    };
    const key = ownedBy0("hot");
    const absent = ownedBy0("absent");
    const owner = client(nodes[0]!.port);
    const reader = client(nodes[1]!.port);
    await owner.set("g", key, "hot value");
    for (let i = 0; i < 5; i++) expect(text((await reader.get("g", key)).value)).toBe("hot value"); // 2 forwarded, 3 from the mirror
    await expect(reader.get("g", absent)).rejects.toMatchObject({ code: 1 }); // forwarded: the owner's NOT_FOUND
    const fills = nodes[1]!.cluster!.counters.forwarded;
    const found = await reader.getMulti("g", [key, absent]); // key from the mirror, absent forwarded
    expect([...found.keys()]).toEqual([key]);
    expect(text(found.get(key)!)).toBe("hot value");
    const c1 = nodes[1]!.cluster!.counters;
    expect([c1.mirrorHits, c1.forwarded - fills]).toEqual([4, 1]);
    const s1 = await reader.stats("g");
    expect([s1.totalCount, s1.hitCount, s1.missCount]).toEqual([8, 4, 4]);
    // The owner counts the forwarded keys again as its own lookups: 2 hits, 2 misses.
    const s0 = await owner.stats("g");
    expect([s0.totalCount, s0.hitCount, s0.missCount]).toEqual([4, 2, 2]);
  });

  test("a write forwarded while a forwarded Get loads on the owner is not held behind it", async () => {
    // The owner serves each peer connection in order: a PeerSet behind a PeerGet that loads for
    // longer than --peer-timeout timed out here (the client told it failed) and was applied there
    // afterwards, over a newer write the client was told succeeded.
    const ports = freePorts(2);
    const ids = ports.map((p) => `127.0.0.1:${p}`);
    let slowLoads = 0;
    const loader: Loader = async (k) => {
      if (k.startsWith("slow")) {
        slowLoads++;
        await Bun.sleep(1200);
      }
      return `loaded ${k}`;
    };
    const [a, b] = ports.map((port) => node({ port, peers: ids, peerTimeoutMs: 500, groups: [{ name: "g", ttlMs: 0 }] }, { g: loader })) as [CacheNode, CacheNode];
    const ring = a.cluster!.ring;
    const ownedByB = (prefix: string): string => {
      for (let i = 0; ; i++) if (ring.owner(new TextEncoder().encode(`${prefix}${i}`)) === ids[1]) return `${prefix}${i}`;
    };
    const viaA = client(a.port);
    const viaB = client(b.port);
    // (its own client: a node answers each client connection in order too)
    const slow = client(a.port).get("g", ownedByB("slow")).then(() => "ok", (e: { code: number }) => `error ${e.code}`);
    await waitUntil(() => slowLoads === 1, "the slow Get to load on B");
    await viaA.get("g", ownedByB("fill")); // (the next round-robin connection is the loading one)
    const x = ownedByB("x");
    await viaA.set("g", x, "v1"); // answered: not queued behind the load
    await viaB.set("g", x, "v2");
    await slow;
    await Bun.sleep(100);
    expect(text((await viaB.get("g", x)).value)).toBe("v2");
    expect(text((await viaA.get("g", x)).value)).toBe("v2");
  });

  test("a mirrored copy whose invalidation was lost is stale for at most --mirror-ttl", async () => {
    // The owner's invalidations are sent once; one lost left the copy stale until evicted.
    const { nodes, ids } = await cluster3(() => null, { mirrorTtlMs: 300 });
    const ring = nodes[0]!.cluster!.ring;
    let key = "";
    for (let i = 0; key === ""; i++) if (ring.owner(new TextEncoder().encode(`hot${i}`)) === ids[0]) key = `hot${i}`;
    const reader = client(nodes[1]!.port);
    await client(nodes[0]!.port).set("g", key, "v1");
    for (let i = 0; i < 3; i++) expect(text((await reader.get("g", key)).value)).toBe("v1");
    expect(nodes[1]!.cluster!.counters.mirrorHits).toBeGreaterThan(0);
    expect((await reader.get("g", key)).ttlRemainingMs).toBeLessThanOrEqual(300); // the copy's, not "no expiry"
    // A write on the owner whose invalidation never reaches node 1 (written to its store directly).
    const k = new TextEncoder().encode(key);
    const v2 = new TextEncoder().encode("v2");
    nodes[0]!.groups.byName("g")!.store.set(k, 0, k.length, v2, 0, v2.length, 0);
    expect(text((await reader.get("g", key)).value)).toBe("v1"); // the stale copy, for now
    await Bun.sleep(350);
    expect(text((await reader.get("g", key)).value)).toBe("v2");
  });

  test("nodes whose rings disagree (different vnode counts) complete without loops", async () => {
    const ports = freePorts(2);
    const ids = ports.map((p) => `127.0.0.1:${p}`);
    const loader: Loader = (k) => `v:${k}`;
    // A and B know each other but build their rings with different vnode counts, so for some keys
    // A names B the owner while B names A: a node that forwarded a peer's call again would send
    // those back and forth for ever. The owner a peer picked answers from its own store.
    const a = node({ port: ports[0], peers: ids, groups: [{ name: "g", ttlMs: 0, admission: "always" }] }, { g: loader });
    const b = node({ port: ports[1], peers: ids, vnodes: 3, groups: [{ name: "g", ttlMs: 0, admission: "always" }] }, { g: loader });
    const crossed: string[] = [];
    for (let i = 0; crossed.length < 10 && i < 10_000; i++) {
      const k = new TextEncoder().encode(`k${i}`);
      if (a.cluster!.owner(k, 0, k.length) === ids[1] && b.cluster!.owner(k, 0, k.length) === ids[0]) crossed.push(`k${i}`);
    }
    expect(crossed.length).toBe(10);
    const ca = client(a.port);
    const cb = client(b.port);
    for (const k of crossed) {
      expect(text((await ca.get("g", k)).value)).toBe(`v:${k}`); // A → B (PeerGet), which B serves
      expect(text((await cb.get("g", k)).value)).toBe(`v:${k}`); // B → A (PeerGet), which A serves
    }
    // Each node forwarded only its own clients' Gets, never a peer's.
    expect([a.cluster!.counters.forwarded, b.cluster!.counters.forwarded]).toEqual([10, 10]);
  });

  test("GetMulti of 1,000 keys spread over the cluster returns all of them in one call; SetMulti spreads", async () => {
    const { nodes } = await cluster3((key) => `loaded:${key}`);
    const c = client(nodes[0]!.port);
    const keys = Array.from({ length: 1000 }, (_, i) => `m${i}`);
    await c.setMulti("g", keys.slice(0, 500).map((k): [string, string] => [k, `set:${k}`]));
    const got = await c.getMulti("g", keys);
    expect(got.size).toBe(1000);
    expect(text(got.get("m7")!)).toBe("set:m7");
    expect(text(got.get("m700")!)).toBe("loaded:m700");
    // The SetMulti entries landed on their owners: each node holds only part of them.
    const held = nodes.map((n) => n.groups.byName("g")!.store.size);
    expect(held.every((h) => h > 0 && h < 1000)).toBe(true);
  });

  test("membership from a peers file: a node joins while clients keep reading", async () => {
    const dir = await mkdtemp("/tmp/mybuncache-peers-");
    try {
      const file = join(dir, "peers.txt");
      const ports = freePorts(3);
      const ids = ports.map((p) => `127.0.0.1:${p}`);
      await writeFile(file, `${ids[0]}\n${ids[1]}\n`);
      const loader: Loader = (k) => `v:${k}`;
      const nodes = ports.map((port) => node({ port, peersFile: file, groups: [{ name: "g", ttlMs: 0, admission: "always" }] }, { g: loader }));
      const c = client(nodes[0]!.port);
      const reads = (async () => {
        for (let i = 0; i < 300; i++) expect(text((await c.get("g", `r${i % 50}`)).value)).toBe(`v:r${i % 50}`);
      })();
      await Bun.sleep(20);
      await writeFile(file, ids.join("\n") + "\n");
      await reads;
      const deadline = Date.now() + 3000;
      while (nodes.some((n) => n.cluster!.members.length !== 3) && Date.now() < deadline) await Bun.sleep(20);
      expect(nodes.map((n) => n.cluster!.members.length)).toEqual([3, 3, 3]);
      // Keys now owned by the new node move to it: read through node 0, they are loaded there.
      const ring = nodes[0]!.cluster!.ring;
      const moved = Array.from({ length: 50 }, (_, i) => `r${i}`).filter((k) => ring.owner(new TextEncoder().encode(k)) === ids[2]);
      expect(moved.length).toBeGreaterThan(0);
      for (const k of moved) expect(text((await c.get("g", k)).value)).toBe(`v:${k}`);
      expect(nodes[2]!.groups.byName("g")!.store.size).toBe(moved.length);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test("a ring-aware client sends each call straight to the key's owner", async () => {
    let calls = 0;
    const { nodes, ids } = await cluster3((key) => {
      calls++;
      return `v:${key}`;
    });
    const cc = new ClusterClient({ members: ids });
    open.push(cc);
    const keys = Array.from({ length: 100 }, (_, i) => `direct-${i}`);
    for (const k of keys) expect(text((await cc.get("g", k)).value)).toBe(`v:${k}`);
    await cc.set("g", "written", "w");
    expect(text((await cc.get("g", "written")).value)).toBe("w");
    const all = await cc.getMulti("g", [...keys, "written"]);
    expect(all.size).toBe(101);
    expect(calls).toBe(100);
    // No node had to forward anything: every call went to its owner.
    expect(nodes.reduce((n, x) => n + x.cluster!.counters.forwarded, 0)).toBe(0);
  });

  test("with an auth token, peers authenticate with it; a client without it is refused", async () => {
    const token = "cluster-token-0123456789";
    const { nodes } = await cluster3((key) => `v:${key}`, { authToken: token });
    const good = new CacheClient({ host: "127.0.0.1", port: nodes[0]!.port, authToken: token });
    open.push(good);
    for (let i = 0; i < 30; i++) expect(text((await good.get("g", `a${i}`)).value)).toBe(`v:a${i}`);
    expect(nodes[0]!.cluster!.counters.peerLoads).toBeGreaterThan(0); // forwarded with the token
    expect(nodes[0]!.cluster!.counters.peerErrors).toBe(0);
    const bad = client(nodes[1]!.port);
    await expect(bad.get("g", "a1")).rejects.toMatchObject({ code: 9 });
  });

  test("over TLS, peers dial each other with TLS and check the certificate", async () => {
    const dir = await mkdtemp("/tmp/mybuncache-cluster-tls-");
    try {
      const { cert, key } = selfSigned(dir);
      const { nodes } = await cluster3((k) => `v:${k}`, { tlsCert: cert, tlsKey: key });
      const c = new CacheClient({ host: "127.0.0.1", port: nodes[0]!.port, tls: { ca: await Bun.file(cert).text() } });
      open.push(c);
      for (let i = 0; i < 30; i++) expect(text((await c.get("g", `t${i}`)).value)).toBe(`v:t${i}`);
      expect(nodes[0]!.cluster!.counters.peerLoads).toBeGreaterThan(0);
      expect(nodes[0]!.cluster!.counters.peerErrors).toBe(0);
      // With an auth token as well: each peer connection sends it once its handshake is done.
      const token = "cluster-token-0123456789";
      const secured = (await cluster3((k) => `v:${k}`, { tlsCert: cert, tlsKey: key, authToken: token })).nodes;
      const both = new CacheClient({ host: "127.0.0.1", port: secured[0]!.port, tls: { ca: await Bun.file(cert).text() }, authToken: token });
      open.push(both);
      for (let i = 0; i < 30; i++) expect(text((await both.get("g", `s${i}`)).value)).toBe(`v:s${i}`);
      expect(secured[0]!.cluster!.counters.peerLoads).toBeGreaterThan(0);
      expect(secured[0]!.cluster!.counters.peerErrors).toBe(0);
      // A CA file that cannot be read stops the node (review: every peer was left out of its
      // ring, each node alone owning every key, with one warning).
      const [port] = freePorts(1);
      expect(() => node({ port, peers: [`127.0.0.1:${port}`, "127.0.0.1:1"], tlsCert: cert, tlsKey: key, tlsCa: join(dir, "missing-ca.pem") }))
        .toThrow("cannot read the TLS CA peers are checked against");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test("membership from DNS: every address of one name is a member", async () => {
    const port = freePorts(1)[0]!;
    const n = CacheNode.start(
      { port, logLevel: "silent", self: `127.0.0.1:${port}`, peersDns: `cache.test:${port}` },
      { logger: new LogSink().logger, resolve: async () => ["127.0.0.3", "127.0.0.1", "127.0.0.2"] },
    );
    open.push(n);
    const deadline = Date.now() + 2000;
    while (n.cluster!.members.length < 3 && Date.now() < deadline) await Bun.sleep(10);
    expect([...n.cluster!.members]).toEqual([`127.0.0.1:${port}`, `127.0.0.2:${port}`, `127.0.0.3:${port}`]);
  });

  test("a DNS name that does not resolve is logged once, not at every lookup, and once more when it resolves again (review: a line every interval)", async () => {
    const port = freePorts(1)[0]!;
    const sink = new LogSink();
    let failing = true;
    let lookups = 0;
    const n = CacheNode.start(
      { port, logLevel: "silent", self: `127.0.0.1:${port}`, peersDns: `cache.test:${port}`, peersDnsIntervalMs: 100 },
      { logger: sink.logger, resolve: async () => {
        lookups++;
        if (failing) throw new Error("queryA ENOTFOUND cache.test");
        return ["127.0.0.1", "127.0.0.2"];
      } },
    );
    open.push(n);
    await waitUntil(() => lookups >= 6, "six lookups");
    const failed = () => sink.lines.filter((l) => l.includes("peers DNS lookup failed"));
    expect(failed().length).toBe(1);
    expect(failed()[0]).toContain("no member list yet: this node serves alone");
    failing = false;
    await waitUntil(() => n.cluster!.members.length === 2, "the name to resolve");
    expect(sink.lines.filter((l) => l.includes("peers DNS lookup works again")).length).toBe(1);
    failing = true;
    const at = lookups;
    await waitUntil(() => lookups >= at + 4, "four more lookups");
    expect(failed().length).toBe(2);
    expect(failed()[1]).toContain("keeping the last good member list");
  });
});
