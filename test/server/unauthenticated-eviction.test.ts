/**
 * On a node with an auth token, connections that have not authenticated give way at
 * --max-connections: a newcomer at the cap closes the oldest of them instead of being refused.
 * Review: clients with no token could open --max-connections silent connections and reopen them
 * as the auth deadline closed them (every 10 s), and the node answered every legitimate client,
 * and its peers, OVERLOADED for good. Authenticated connections are never the ones closed; when
 * all of them are, a newcomer is refused OVERLOADED as before, and a node without a token keeps
 * no auth state and refuses past the cap as before.
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
import { ERROR_CODE } from "../../src/protocol/errors.ts";
import { AdminServer } from "../../src/server/admin-server.ts";
import { LatencyHistogram } from "../../src/server/latency.ts";
import { Logger } from "../../src/server/log.ts";
import { Bytes, MSG, T, framed, message } from "../protocol/wire-builder.ts";
import { LogSink, RawSocket, cacheErrorCode, getCall, replyHeader, startNode } from "./support.ts";
import { parsePromText, sampleValue } from "./prom-text.ts";
import { waitUntil } from "../support/gates.ts";
import { freePorts } from "../support/node-process.ts";
import { leasesHeld } from "../support/cluster-members.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import { selfSigned, withTlsDir } from "../support/tls.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const TOKEN = "s3cret-token-0123456789";
const CAP = 8;
const text = (b: Uint8Array): string => new TextDecoder().decode(b);

function authCall(seqid: number, token: string): Uint8Array {
  return framed(message(MSG.CALL, "Auth", seqid, new Bytes().field(T.STRUCT, 1).field(T.STRING, 1).str(token).stop().stop().bytes()));
}

/** authed opens a raw connection that sends the token and waits for its Auth reply. */
async function authed(port: number): Promise<RawSocket> {
  const raw = await RawSocket.connect(port);
  raw.write(authCall(1, TOKEN));
  await raw.waitFor(() => raw.frames().length === 1, "the Auth reply");
  expect(replyHeader(raw.frames()[0]!).type).toBe(MSG.REPLY);
  return raw;
}

/** silent opens `n` raw connections that send nothing, each counted open by the node before the next. */
async function silent(node: CacheNode, n: number): Promise<RawSocket[]> {
  const out: RawSocket[] = [];
  for (let i = 0; i < n; i++) {
    const before = node.server.counters.connectionsTotal;
    out.push(await RawSocket.connect(node.port));
    await waitUntil(() => node.server.counters.connectionsTotal > before, "the node to accept the connection");
  }
  return out;
}

/** getServed sends a Get on an authenticated raw connection and expects NOT_FOUND (served, not refused). */
async function getServed(raw: RawSocket, seqid: number): Promise<void> {
  const had = raw.frames().length;
  raw.write(getCall(seqid, "nothing-here"));
  await raw.waitFor(() => raw.frames().length === had + 1, "the Get's reply");
  expect(cacheErrorCode(raw.frames()[had]!)).toBe(ERROR_CODE.NOT_FOUND);
}

describe("at --max-connections, with an auth token", () => {
  test("silent clients with no token holding every slot do not keep out a client with the token: it connects, authenticates, sets and gets", async () => {
    const sink = new LogSink();
    // (The auth deadline is the default 10 s: nothing frees a slot during the test but the eviction.)
    await using node = startNode({ authToken: TOKEN, maxConnections: CAP, logLevel: "info" }, { logger: sink.logger });
    const hogs = await silent(node, CAP);
    expect(node.server.connectionCount).toBe(CAP);
    await using client = new CacheClient({ host: "127.0.0.1", port: node.port, connections: 1, timeoutMs: 2000, authToken: TOKEN });
    await client.set("default", "k", "v");
    expect(text((await client.get("default", "k")).value)).toBe("v");
    // The oldest silent one made room; the others are still open (the cap is not lowered).
    await waitUntil(() => hogs[0]!.isClosed, "the oldest silent connection closed");
    expect(hogs.slice(1).every((h) => !h.isClosed)).toBe(true);
    expect(node.server.counters.evictedUnauthenticated).toBe(1);
    expect(node.server.counters.connectionsRejected).toBe(0);
    expect(node.server.connectionCount).toBe(CAP);
    expect(sink.lines.filter((l) => l.includes("not authenticated, evicted at the connection limit")).length).toBe(1);
    for (const h of hogs) h.close();
  });

  test("newcomers close the unauthenticated connections oldest first, never an authenticated one; once every slot is authenticated a newcomer is refused OVERLOADED as before", async () => {
    await using node = startNode({ authToken: TOKEN, maxConnections: CAP });
    const good: RawSocket[] = [];
    for (let i = 0; i < CAP / 2; i++) good.push(await authed(node.port));
    const partial = await RawSocket.connect(node.port);
    partial.write(authCall(1, TOKEN).subarray(0, 10)); // half an Auth call: not authenticated either
    await waitUntil(() => node.server.connectionCount === CAP / 2 + 1, "the partial one counted");
    const old = [partial, ...(await silent(node, CAP / 2 - 1))];
    expect(node.server.connectionCount).toBe(CAP);
    // Each newcomer closes the oldest connection that has not authenticated, in the order they opened.
    const newcomers: RawSocket[] = [];
    for (let i = 0; i < old.length; i++) {
      newcomers.push(...(await silent(node, 1)));
      await waitUntil(() => old[i]!.isClosed, `unauthenticated connection ${i} closed`);
      expect(old.slice(i + 1).some((o) => o.isClosed)).toBe(false);
    }
    // Then the newcomers themselves, oldest first.
    const last = await silent(node, 1);
    await waitUntil(() => newcomers[0]!.isClosed, "the oldest newcomer closed");
    expect([...newcomers.slice(1), ...last].some((n) => n.isClosed)).toBe(false);
    expect(node.server.counters.evictedUnauthenticated).toBe(CAP / 2 + 1);
    expect(node.server.counters.connectionsRejected).toBe(0);
    // The authenticated ones were never closed, and are served.
    for (const [i, g] of good.entries()) {
      expect(g.isClosed).toBe(false);
      await getServed(g, 10 + i);
    }
    // A newcomer that authenticates takes a slot for good.
    const rest = [...newcomers.slice(1), ...last];
    for (let i = 0; i < rest.length; i++) good.push(await authed(node.port));
    await waitUntil(() => rest.every((r) => r.isClosed), "the unauthenticated ones closed");
    expect(node.server.counters.evictedUnauthenticated).toBe(CAP / 2 + 1 + rest.length);
    // Every slot authenticated: genuine overload, answered OVERLOADED on the first call and closed.
    const refused = await RawSocket.connect(node.port);
    refused.write(authCall(1, TOKEN));
    await refused.closed;
    expect(cacheErrorCode(refused.frames()[0]!)).toBe(ERROR_CODE.OVERLOADED);
    expect(text(refused.frames()[0]!)).toContain("too many connections");
    expect(node.server.counters.connectionsRejected).toBe(1);
    expect(node.server.counters.evictedUnauthenticated).toBe(CAP / 2 + 1 + rest.length);
    for (const [i, g] of good.entries()) {
      expect(g.isClosed).toBe(false);
      await getServed(g, 20 + i);
      g.close();
    }
  });

  test("the eviction is counted in /metrics (connections_evicted_unauthenticated_total) and /stats", async () => {
    const silentLog = new Logger("silent");
    await using node = startNode({ authToken: TOKEN, maxConnections: 2 });
    const admin = AdminServer.start({ host: "127.0.0.1", port: 0, node, latency: new LatencyHistogram(), logger: silentLog, metricsShareMs: 0, state: "serving" });
    try {
      const hogs = await silent(node, 3);
      await waitUntil(() => hogs[0]!.isClosed, "the oldest closed");
      const families = parsePromText(await (await fetch(`http://127.0.0.1:${admin.port}/metrics`)).text());
      const name = "mybuncache_connections_evicted_unauthenticated_total";
      expect(families.get(name)?.type).toBe("counter");
      expect(sampleValue(families, name, name, {})).toBe(1);
      expect(sampleValue(families, "mybuncache_connections_rejected_total", "mybuncache_connections_rejected_total", {})).toBe(0);
      const stats = (await (await fetch(`http://127.0.0.1:${admin.port}/stats`)).json()) as { node: { counters: Record<string, number> } };
      expect(stats.node.counters.evictedUnauthenticated).toBe(1);
      for (const h of hogs) h.close();
    } finally {
      await admin.close();
    }
  });

  test("a peer's connections, authenticated, are not closed for silent clients flooding the node, and forwarding goes on", async () => {
    const ports = freePorts(2);
    const ids = ports.map((p) => `127.0.0.1:${p}`);
    const nodes = ports.map((port) => CacheNode.start(
      { port, logLevel: "silent", peers: ids, authToken: TOKEN, maxConnections: CAP, peerTimeoutMs: 1000, groups: [{ name: "g", ttlMs: 0, admission: "always" }] },
      { logger: new LogSink().logger, loaders: { g: async (key: string) => `v:${key}` } },
    ));
    try {
      await leasesHeld(nodes, ids);
      const [a, b] = nodes as [CacheNode, CacheNode];
      await using client = new CacheClient({ host: "127.0.0.1", port: a.port, connections: 1, timeoutMs: 2000, authToken: TOKEN });
      for (let i = 0; i < 20; i++) expect(text((await client.get("g", `w${i}`)).value)).toBe(`v:w${i}`);
      const peerConns = b.server.connectionCount;
      expect(peerConns).toBeGreaterThan(0);
      // Fill b's free slots with silent clients, then keep opening more: each closes an older silent one.
      const hogs = await silent(b, CAP - peerConns + 4);
      // (>= 4: a's peer client may open a connection meanwhile, which makes room for itself the same way)
      await waitUntil(() => b.server.counters.evictedUnauthenticated >= 4, "four evictions");
      expect(b.server.counters.connectionsRejected).toBe(0);
      const forwardedBefore = a.cluster!.counters.peerLoads;
      for (let i = 0; i < 40; i++) expect(text((await client.get("g", `x${i}`)).value)).toBe(`v:x${i}`);
      expect(a.cluster!.counters.peerLoads).toBeGreaterThan(forwardedBefore); // keys b owns went to b
      expect(a.cluster!.counters.peerErrors).toBe(0);
      expect(b.server.connectionCount).toBe(CAP);
      for (const h of hogs) h.close();
    } finally {
      await Promise.all(nodes.map((n) => n.close()));
    }
  });
});

describe("at --max-connections, with an auth token and TLS", () => {
  test("connections that never finish their handshake make room for a client with the token, which is served over TLS", async () => {
    await withTlsDir(async (dir) => {
      const { cert, key } = selfSigned(dir);
      await using node = startNode({ authToken: TOKEN, tlsCert: cert, tlsKey: key, maxConnections: CAP });
      const hogs = await silent(node, CAP);
      hogs[1]!.write(new Uint8Array([0x16, 3, 1, 2, 0, 1])); // (half a ClientHello)
      await using client = new CacheClient({ host: "127.0.0.1", port: node.port, connections: 1, timeoutMs: 5_000, authToken: TOKEN, tls: { ca: await Bun.file(cert).text() } });
      await client.set("default", "k", "v");
      expect(text((await client.get("default", "k")).value)).toBe("v");
      await waitUntil(() => hogs[0]!.isClosed, "the oldest silent connection closed");
      expect(hogs.slice(1).some((h) => h.isClosed)).toBe(false);
      expect([node.server.counters.evictedUnauthenticated, node.server.counters.connectionsRejected]).toEqual([1, 0]);
      for (const h of hogs) h.close();
    });
  });

  test("a connection evicted (or timed out) in its handshake is not logged as a failed handshake (review: Bun reports the cut it makes as one, a line each taken from the refusal budget)", async () => {
    await withTlsDir(async (dir) => {
      const { cert, key } = selfSigned(dir);
      const sink = new LogSink();
      await using node = startNode({ authToken: TOKEN, tlsCert: cert, tlsKey: key, maxConnections: 2, logLevel: "info" }, { logger: sink.logger, handshakeTimeoutMs: 300 });
      const hogs = await silent(node, 5); // three evictions
      await waitUntil(() => hogs.slice(0, 3).every((h) => h.isClosed), "the three oldest evicted");
      await waitUntil(() => hogs.every((h) => h.isClosed), "the last two cut at the handshake deadline", 5_000);
      expect([node.server.counters.evictedUnauthenticated, node.server.counters.handshakeTimeouts]).toEqual([3, 2]);
      expect(sink.lines.filter((l) => l.includes("TLS handshake failed"))).toEqual([]);
      // A handshake that does fail on its own is still logged.
      const plain = await RawSocket.connect(node.port);
      plain.write(getCall(1, "k"));
      await plain.closed;
      await waitUntil(() => sink.lines.some((l) => l.includes("TLS handshake failed")), "the plaintext client's refusal logged", 5_000);
    });
  });
});

describe("without an auth token", () => {
  test("nothing changes: past the cap a newcomer is refused OVERLOADED and no connection is closed for it", async () => {
    await using node = startNode({ maxConnections: 2 });
    const held = await silent(node, 2);
    const refused = await RawSocket.connect(node.port);
    refused.write(getCall(1, "k"));
    await refused.closed;
    expect(cacheErrorCode(refused.frames()[0]!)).toBe(ERROR_CODE.OVERLOADED);
    expect(held.some((h) => h.isClosed)).toBe(false);
    expect([node.server.counters.connectionsRejected, node.server.counters.evictedUnauthenticated]).toEqual([1, 0]);
    for (const h of held) h.close();
  });
});
