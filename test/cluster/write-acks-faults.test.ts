/**
 * Write acknowledgements (HandOuts, Cluster.invalidate) where the owner's record of its copies
 * falls short or its members do not answer: an owner that restarted, copies with no mirror TTL,
 * many peer writes waiting at once, a member that hangs, and a node at its connection limit
 * refusing the PeerPing that names a peer client's member.
 */
import { afterEach, expect, test, setDefaultTimeout } from "bun:test";
import * as net from "node:net";
import { CacheClient } from "../../src/client/cache-client.ts";
import { CacheError, ERROR_CODE } from "../../src/protocol/errors.ts";
import { CacheNode, type NodeDeps } from "../../src/server/cache-node.ts";
import type { NodeConfig } from "../../src/server/config.ts";
import { until } from "../client/support.ts";
import { LogSink } from "../server/support.ts";
import { fetchedBy, keysOf, startMembers } from "../support/cluster-members.ts";
import { freePorts } from "../support/node-process.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const text = (b: Uint8Array): string => new TextDecoder().decode(b);

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).reverse().map((x) => x.close().catch(() => {})));
});

function client(port: number, connections = 2): CacheClient {
  const c = new CacheClient({ host: "127.0.0.1", port, timeoutMs: 5000, connections });
  open.push(c);
  return c;
}

test("an owner that restarted waits for its members' answers: they may hold copies it handed out before", async () => {
  const m = startMembers(2, open, { peerTimeoutMs: 500, groups: [{ name: "g", ttlMs: 0 }] });
  const a = m.nodes[0]!;
  const keys = keysOf(a, m.ids[1]!, "k", 20);
  const viaA = client(a.port);
  const before = client(m.nodes[1]!.port);
  for (const k of keys) await before.set("g", k, "old");
  for (const k of keys) for (let i = 0; i < 2; i++) await viaA.get("g", k); // A keeps copies
  await m.nodes[1]!.close();
  const viaB = client(m.start(1).port); // the same member, started again: it remembers nothing
  for (const k of keys) {
    await viaB.set("g", k, "new");
    expect(text((await viaA.get("g", k)).value)).toBe("new");
  }
});

test("with no mirror TTL (copies live as long as their values) a key once handed out is waited for", async () => {
  const { nodes, ids } = startMembers(2, open, { mirrorTtlMs: 0, peerTimeoutMs: 200, groups: [{ name: "g", ttlMs: 0 }] });
  const [a, b] = nodes as [CacheNode, CacheNode];
  const keys = keysOf(a, ids[1]!, "k", 10);
  const viaA = client(a.port);
  const viaB = client(b.port);
  for (const k of keys) await viaB.set("g", k, "old");
  for (const k of keys) for (let i = 0; i < 2; i++) await viaA.get("g", k);
  await Bun.sleep(1300); // past what a capped copy's record would be with these timeouts
  for (const k of keys) {
    await viaB.set("g", k, "new");
    expect(text((await viaA.get("g", k)).value)).toBe("new");
  }
});

test("more peer writes waiting at once on a connection than it answers out of order for reads do not stall the members", async () => {
  const n = 150; // past MAX_DETACHED (128)
  const { nodes, ids } = startMembers(3, open, { peerTimeoutMs: 1500, groups: [{ name: "g", ttlMs: 0 }] });
  const [a, b, c] = nodes as [CacheNode, CacheNode, CacheNode];
  const ofA = keysOf(a, ids[0]!, "a", n);
  const ofB = keysOf(a, ids[1]!, "b", n);
  const ofC = keysOf(a, ids[2]!, "c", n);
  const [viaA, viaB, viaC] = [client(a.port, 200), client(b.port, 200), client(c.port, 200)];
  const all = [...ofA, ...ofB, ...ofC];
  await Promise.all(all.map((k) => viaA.set("g", k, "0")));
  for (const via of [viaA, viaB, viaC]) await Promise.all(all.map((k) => via.get("g", k))); // handed out to every member
  const failures: string[] = [];
  const failed = (e: unknown): void => void failures.push(e instanceof CacheError ? e.message : String(e));
  await Promise.all([
    ...ofA.map((k) => viaB.set("g", k, "1").catch(failed)),
    ...ofB.map((k) => viaC.set("g", k, "1").catch(failed)),
    ...ofC.map((k) => viaA.set("g", k, "1").catch(failed)),
  ]);
  expect(failures).toEqual([]);
  expect(nodes.map((node) => node.cluster!.counters.peerErrors)).toEqual([0, 0, 0]);
  for (const k of all) expect(text((await viaA.get("g", k)).value)).toBe("1");
}, 30_000);

test("a write whose owner waits for a member that hangs is acknowledged before the forwarder's call times out", async () => {
  const [pa, pb, ps] = freePorts(3) as [number, number, number];
  const silent = Bun.listen({ hostname: "127.0.0.1", port: ps, socket: { data() {} } });
  open.push({ close: async () => silent.stop(true) });
  const ids = [`127.0.0.1:${pa}`, `127.0.0.1:${pb}`, `127.0.0.1:${ps}`];
  const start = (port: number): CacheNode => {
    const n = CacheNode.start(
      { port, host: "127.0.0.1", peers: ids, logLevel: "silent", peerTimeoutMs: 1000, groups: [{ name: "g", ttlMs: 0 }] },
      { logger: new LogSink().logger },
    );
    open.push(n);
    return n;
  };
  const a = start(pa);
  const b = start(pb);
  const keys = keysOf(b, ids[1]!, "k", 4);
  const viaA = client(a.port);
  const viaB = client(b.port);
  // The hanging member's own client of B, which names it, fetched the keys (it may hold copies).
  const s = new CacheClient({ host: "127.0.0.1", port: b.port, timeoutMs: 5000, sender: ids[2] });
  open.push(s);
  for (const k of keys) {
    await viaB.set("g", k, "v0");
    await fetchedBy(s, k);
  }
  for (const k of keys) {
    const t = performance.now();
    await viaA.set("g", k, "v1"); // forwarded to B, which waits for the hanging member, then for no longer
    expect(performance.now() - t).toBeLessThan(900);
    expect(text((await viaB.get("g", k)).value)).toBe("v1");
  }
  expect(a.cluster!.counters.peerErrors).toBe(0);
}, 20_000);

test("a node at its connection limit refuses a peer client's first call (the PeerPing naming its member) as it refuses any: not a failure", async () => {
  const node = CacheNode.start({ port: 0, host: "127.0.0.1", logLevel: "silent", maxConnections: 1, groups: [{ name: "g", ttlMs: 0 }] }, { logger: new LogSink().logger });
  open.push(node);
  const holder = client(node.port, 1);
  await holder.set("g", "k", "v"); // takes the one connection allowed
  const peer = new CacheClient({ host: "127.0.0.1", port: node.port, connections: 1, timeoutMs: 1000, sender: "127.0.0.1:9" });
  open.push(peer);
  for (let i = 0; i < 4; i++) {
    await expect(peer.get("g", "k")).rejects.toMatchObject({ code: ERROR_CODE.OVERLOADED, message: expect.stringContaining("too many connections") });
    await Bun.sleep(100);
  }
  expect(peer.isDown).toBe(false);
});

/** proxy forwards 127.0.0.1:`listen` to `target`; `cut` drops every connection and refuses new ones until `heal`. */
function proxy(listen: number, target: number): { cut(): void; heal(): void; close(): Promise<void> } {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((c) => {
    const u = net.connect(target, "127.0.0.1");
    sockets.add(c).add(u);
    c.pipe(u);
    u.pipe(c);
    const end = (): void => {
      c.destroy();
      u.destroy();
      sockets.delete(c);
      sockets.delete(u);
    };
    for (const s of [c, u]) s.on("error", end).on("close", end);
  });
  server.listen(listen, "127.0.0.1");
  const drop = (): void => {
    for (const s of sockets) s.destroy();
    sockets.clear();
  };
  return {
    cut: () => {
      server.close();
      drop();
    },
    heal: () => void server.listen(listen, "127.0.0.1"),
    close: async () => {
      drop();
      await new Promise((r) => server.close(r));
    },
  };
}

for (const memberSawItDown of [true, false]) {
  test(`a copy whose invalidation failed while the members were cut off is dropped once they reach each other again (${memberSawItDown ? "the member found the owner down" : "only the owner saw the failure"})`, async () => {
    const [pa, pb, xa, xb] = freePorts(4) as [number, number, number, number];
    const ids = [`127.0.0.1:${xa}`, `127.0.0.1:${xb}`]; // the members reach each other through proxies
    const proxies = [proxy(xa, pa), proxy(xb, pb)];
    open.push(...proxies);
    const start = (port: number, self: string): CacheNode => {
      const n = CacheNode.start(
        { port, host: "127.0.0.1", self, peers: ids, logLevel: "silent", peerTimeoutMs: 400, mirrorTtlMs: 0, groups: [{ name: "g", ttlMs: 0 }] },
        { logger: new LogSink().logger, loaders: { g: (k: string) => `loaded ${k}` } },
      );
      open.push(n);
      return n;
    };
    const owner = start(pa, ids[0]!);
    const member = start(pb, ids[1]!);
    const viaOwner = client(pa);
    const viaMember = client(pb);
    await until(() => owner.cluster!.startConfirmed && member.cluster!.startConfirmed, 5_000);
    const [k, other, ...more] = keysOf(owner, ids[0]!, "k", 60) as [string, string, ...string[]];
    await viaOwner.set("g", k, "v1");
    for (let i = 0; i < 3; i++) expect(text((await viaMember.get("g", k)).value)).toBe("v1"); // the member keeps a copy
    for (const p of proxies) p.cut();
    if (memberSawItDown) {
      for (let i = 0; i < 50 && !member.cluster!.peer(ids[0]!)!.isDown; i++) {
        await viaMember.get("g", more[i]!).catch(() => undefined); // fallback loads
        await Bun.sleep(20);
      }
      expect(member.cluster!.peer(ids[0]!)!.isDown).toBe(true);
    }
    await viaOwner.set("g", k, "v2"); // its invalidation cannot reach the member: acknowledged anyway
    for (const p of proxies) p.heal();
    for (let i = 0; i < 50 && member.cluster!.peer(ids[0]!)!.isDown; i++) {
      await viaMember.get("g", other).catch(() => undefined); // the member finds the owner up again
      await Bun.sleep(100);
    }
    let seen = "";
    for (const end = Date.now() + 3_000; seen !== "v2" && Date.now() < end; await Bun.sleep(50)) seen = text((await viaMember.get("g", k)).value);
    expect(seen).toBe("v2"); // (with no mirror TTL, the old copy would stay for good)
  }, 30_000);
}

test("a member without one of a started node's groups holds no copies of it: it is confirmed, and asked no more", async () => {
  const ports = freePorts(2);
  const ids = ports.map((p) => `127.0.0.1:${p}`);
  const [a, b] = ports.map((port, i) => {
    const n = CacheNode.start(
      { port, host: "127.0.0.1", peers: ids, logLevel: "silent", groups: i === 0 ? [{ name: "g", ttlMs: 0 }, { name: "h", ttlMs: 0 }] : [{ name: "g", ttlMs: 0 }] },
      { logger: new LogSink().logger },
    );
    open.push(n);
    return n;
  }) as [CacheNode, CacheNode];
  await until(() => a.cluster!.startConfirmed, 3_000);
  const received = b.cluster!.counters.invalidationsReceived;
  // Writes of the group it lacks: their invalidations are refused (UNKNOWN_GROUP), which owes nothing.
  const viaA = client(a.port);
  for (const k of keysOf(a, ids[0]!, "k", 5)) { // (A's own: one of B's would be refused by B)
    await viaA.set("h", k, "v");
    await Bun.sleep(240);
  }
  expect(b.cluster!.counters.invalidationsReceived).toBe(received); // no drop asked of it since
});

/** pair starts two members with group "g" (`config` added; `deps(i)`: node i's), once both confirmed their start. */
async function pair(config: Partial<NodeConfig>, deps: (i: number) => NodeDeps): Promise<{ nodes: [CacheNode, CacheNode]; ids: string[] }> {
  const ports = freePorts(2);
  const ids = ports.map((p) => `127.0.0.1:${p}`);
  const nodes = ports.map((port, i) => {
    const n = CacheNode.start({ port, host: "127.0.0.1", peers: ids, logLevel: "silent", groups: [{ name: "g", ttlMs: 0 }], ...config }, deps(i));
    open.push(n);
    return n;
  }) as [CacheNode, CacheNode];
  await until(() => nodes[0].cluster!.startConfirmed && nodes[1].cluster!.startConfirmed, 3_000);
  return { nodes, ids };
}

/** mirroredPair is `pair` with 20 keys of the first node's written through it and copied into the second's mirror. */
async function mirroredPair(config: Partial<NodeConfig>, deps: (i: number) => NodeDeps) {
  const { nodes, ids } = await pair(config, deps);
  const [viaA, viaB] = [client(nodes[0].port), client(nodes[1].port)];
  const keys = keysOf(nodes[0], ids[0]!, "k", 20);
  for (const k of keys) await viaA.set("g", k, "v");
  for (const k of keys) for (let i = 0; i < 2; i++) await viaB.get("g", k);
  const mirror = nodes[1].groups.byName("g")!.mirror!;
  expect(mirror.size).toBe(keys.length);
  return { mirror, keys };
}

test("a wall clock set forward is no stall: mirrors stay", async () => {
  let offset = 0;
  const { mirror, keys } = await mirroredPair({}, (i) => ({ logger: new LogSink().logger, clock: i === 1 ? () => Date.now() + offset : Date.now }));
  offset = 5_000; // an NTP step on B
  await Bun.sleep(250);
  expect(mirror.size).toBe(keys.length);
});

test("an expiry interval longer than a stall is no stall: mirrors stay, nothing is logged (review: every expiry tick dropped them)", async () => {
  const sinks = [new LogSink(), new LogSink()];
  const { mirror, keys } = await mirroredPair({ logLevel: "warn", expiryIntervalMs: 1_000 }, (i) => ({ logger: sinks[i]!.logger }));
  await Bun.sleep(2_600); // two expiry ticks and more
  expect(mirror.size).toBe(keys.length);
  for (const sink of sinks) expect(sink.lines.filter((l) => l.includes("stalled"))).toEqual([]);
});

test("a tiny peer timeout does not make every late tick a stall, and stalls are logged once a second at most (review: 1,710 lines in 2 s at --peer-timeout 2ms)", async () => {
  const sinks = [new LogSink(), new LogSink()];
  const ports = freePorts(2);
  const ids = ports.map((p) => `127.0.0.1:${p}`);
  const nodes = ports.map((port, i) => {
    const n = CacheNode.start(
      { port, host: "127.0.0.1", peers: ids, logLevel: "warn", peerTimeoutMs: 2, groups: [{ name: "g", ttlMs: 0 }] },
      { logger: sinks[i]!.logger },
    );
    open.push(n);
    return n;
  });
  const started = performance.now();
  // A loop kept busy for 80 ms at a time: each is a stall (50 ms at least counts).
  for (let i = 0; i < 6; i++) {
    const until = performance.now() + 80;
    while (performance.now() < until) { /* busy */ }
    await Bun.sleep(20);
  }
  await Bun.sleep(300);
  const seconds = (performance.now() - started) / 1000;
  for (const [i, sink] of sinks.entries()) {
    const lines = sink.lines.filter((l) => l.includes("event loop stalled"));
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.length).toBeLessThanOrEqual(Math.ceil(seconds) + 1);
    expect(nodes[i]!.server.counters.stalls).toBeGreaterThanOrEqual(6);
    expect(nodes[i]!.server.counters.stalls).toBeLessThan(30); // not every tick a few ms late (each 12.5 ms)
  }
});
