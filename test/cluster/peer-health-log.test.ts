/**
 * A node logs a peer marked down, with the failure that did it, and the peer up again: an
 * operator otherwise sees only PEER_UNAVAILABLE answers or fallback loads, and not why (a peer
 * that is not listening, or whose certificate this node refuses, look the same from outside).
 */
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { CacheClient } from "../../src/client/cache-client.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import { freePorts } from "../support/node-process.ts";
import { LogSink } from "../server/support.ts";
import { waitUntil } from "../support/gates.ts";
import { selfSigned } from "../support/tls.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((x) => x.close()));
});

describe("a peer's health in the log", () => {
  test("marked down with the reason, once; up again once it answers", async () => {
    const ports = freePorts(2);
    const ids = ports.map((p) => `127.0.0.1:${p}`);
    const start = (i: number, log: LogSink): CacheNode => {
      const n = CacheNode.start(
        { port: ports[i]!, host: "127.0.0.1", peers: ids, logLevel: "debug", peerTimeoutMs: 500, groups: [{ name: "g", ttlMs: 0 }] },
        { logger: log.logger, loaders: { g: async (k: string) => `loaded ${k}` } },
      );
      open.push(n);
      return n;
    };
    const logA = new LogSink();
    const a = start(0, logA);
    const b = start(1, new LogSink());
    const enc = new TextEncoder();
    const keysOfB: string[] = [];
    for (let i = 0; keysOfB.length < 20; i++) if (a.cluster!.owner(enc.encode(`k${i}`), 0, `k${i}`.length) === ids[1]) keysOfB.push(`k${i}`);
    await b.close();
    const client = new CacheClient({ host: "127.0.0.1", port: a.port, timeoutMs: 5_000 });
    open.push(client);
    const downs = () => logA.lines.filter((l) => l.includes("peer marked down"));
    for (const k of keysOfB) {
      await client.get("g", k).catch(() => {}); // (answered by A's own load, or PEER_UNAVAILABLE)
      if (downs().length > 0) break;
    }
    await waitUntil(() => downs().length > 0, "A to mark B down", 10_000);
    expect(downs()).toHaveLength(1);
    expect(downs()[0]).toMatch(new RegExp(`WARN +peer marked down peer=${ids[1]!.replace(/\./g, "\\.")} reason="?connect to ${ids[1]!.replace(/\./g, "\\.")} failed: `));
    // Something else on B's port, closing every connection: still down, another way (logged once).
    const closer = Bun.listen({ hostname: "127.0.0.1", port: ports[1]!, socket: { open: (s) => void s.end(), data() {} } });
    const stillDown = () => logA.lines.filter((l) => l.includes("peer still down"));
    try {
      await waitUntil(() => stillDown().length > 0, "A's probes to fail another way", 10_000);
      await Bun.sleep(300); // (more probes fail so meanwhile)
    } finally {
      closer.stop(true);
    }
    expect(stillDown()).toHaveLength(1);
    expect(stillDown()[0]).toMatch(new RegExp(`WARN +peer still down, failing another way peer=${ids[1]!.replace(/\./g, "\\.")} reason="?connection to ${ids[1]!.replace(/\./g, "\\.")} closed`));
    start(1, new LogSink());
    await waitUntil(() => logA.lines.some((l) => l.includes("peer up again")), "A's probe to find B back", 10_000);
    expect(logA.lines.filter((l) => l.includes("peer up again"))).toEqual([expect.stringMatching(new RegExp(`INFO +peer up again peer=${ids[1]!.replace(/\./g, "\\.")}$`))]);
    expect(downs()).toHaveLength(1);
  });

  test("a peer reply that breaks the protocol is logged at ERROR and counted; the Get is answered by a fallback load", async () => {
    const ports = freePorts(2);
    const ids = ports.map((p) => `127.0.0.1:${p}`);
    // B's port answers every call with something that is not a Thrift reply.
    const fake = Bun.listen({ hostname: "127.0.0.1", port: ports[1]!, socket: { data: (s) => void s.write("HTTP/1.1 400 Bad Request\r\n\r\n") } });
    try {
      const logA = new LogSink();
      const a = CacheNode.start(
        { port: ports[0]!, host: "127.0.0.1", peers: ids, logLevel: "debug", peerTimeoutMs: 500, groups: [{ name: "g", ttlMs: 0 }] },
        { logger: logA.logger, loaders: { g: async (k: string) => `loaded ${k}` } },
      );
      open.push(a);
      const enc = new TextEncoder();
      let key = "";
      for (let i = 0; key === ""; i++) if (a.cluster!.owner(enc.encode(`k${i}`), 0, `k${i}`.length) === ids[1]) key = `k${i}`;
      const client = new CacheClient({ host: "127.0.0.1", port: a.port, timeoutMs: 5_000 });
      open.push(client);
      expect(new TextDecoder().decode((await client.get("g", key)).value)).toBe(`loaded ${key}`);
      // (Each connection's first reply breaks it: the Get's, and the one to the invalidation of
      // all mirrors A sends a member after it starts, HandOuts.)
      const broke = logA.lines.filter((l) => l.includes("peer reply broke the protocol"));
      expect(broke.length).toBeGreaterThanOrEqual(1);
      for (const line of broke) expect(line).toMatch(new RegExp(`ERROR +peer reply broke the protocol: connection dropped peer=${ids[1]!.replace(/\./g, "\\.")} reason="malformed reply: `));
      expect(a.cluster!.counters.peerProtocolErrors).toBe(broke.length);
      expect(a.cluster!.counters.fallbackLoads).toBe(1);
    } finally {
      fake.stop(true);
    }
  });

  test("a peer whose certificate this node refuses: the TLS cause is in the line", async () => {
    const dir = await mkdtemp("/tmp/mybuncache-peer-tls-");
    try {
      const served = selfSigned(dir, "served");
      const other = selfSigned(dir, "other");
      const ports = freePorts(2);
      const ids = ports.map((p) => `127.0.0.1:${p}`);
      const logA = new LogSink();
      // Both serve the same certificate; A checks its peers against another CA.
      const [a] = ports.map((port, i) => {
        const n = CacheNode.start(
          { port, host: "127.0.0.1", peers: ids, logLevel: "debug", peerTimeoutMs: 500, tlsCert: served.cert, tlsKey: served.key,
            ...(i === 0 ? { tlsCa: other.cert } : {}), groups: [{ name: "g", ttlMs: 0 }] },
          { logger: i === 0 ? logA.logger : new LogSink().logger, loaders: { g: async (k: string) => `loaded ${k}` } },
        );
        open.push(n);
        return n;
      }) as [CacheNode, CacheNode];
      const enc = new TextEncoder();
      const client = new CacheClient({ host: "127.0.0.1", port: a.port, timeoutMs: 5_000, tls: { ca: await Bun.file(served.cert).text() } });
      open.push(client);
      const downs = () => logA.lines.filter((l) => l.includes("peer marked down"));
      for (let i = 0; downs().length === 0 && i < 200; i++) {
        if (a.cluster!.owner(enc.encode(`k${i}`), 0, `k${i}`.length) === ids[1]) await client.get("g", `k${i}`).catch(() => {});
      }
      await waitUntil(() => downs().length > 0, "A to mark B down", 10_000);
      expect(downs()[0]).toContain("TLS handshake failed: self signed certificate (DEPTH_ZERO_SELF_SIGNED_CERT)");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
