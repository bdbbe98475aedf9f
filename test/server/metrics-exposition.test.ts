/**
 * /metrics as the node writes it (exposition.ts) against prom-client's rendering of the same
 * metrics (prom-client-metrics.ts, the implementation it replaced): byte for byte, family by
 * family, with many groups whose names need escaping, values of every shape, a mirror, a loader
 * pool and a snapshot; scrapes at the same time, sharing a rendering or not, each get it whole;
 * and a rendering that throws is not shared.
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AdminServer } from "../../src/server/admin-server.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import type { NodeConfig } from "../../src/server/config.ts";
import { LatencyHistogram } from "../../src/server/latency.ts";
import { Logger } from "../../src/server/log.ts";
import { createMetrics } from "../../src/server/metrics.ts";
import { APP_ERROR, ERROR_CODE } from "../../src/protocol/errors.ts";
import { METHOD_DELETE, METHOD_GET, METHOD_PEER_GET, METHOD_SET } from "../../src/protocol/request.ts";
import { parsePromText, sampleValue } from "./prom-text.ts";
import { promClientMetrics } from "./prom-client-metrics.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const silent = new Logger("silent");
const decode = (b: Uint8Array): string => new TextDecoder().decode(b);
const ADMIN = { open: 3, refused: 1, stalled: 0, evicted: 2 };

/** NAMES: 1,000 groups, among them names the format must escape, and one in UTF-8 beyond ASCII. */
const NAMES = ["quo\"te", "back\\slash", "new\nline", "grüße", "__proto__", ...Array.from({ length: 995 }, (_, i) => `g${i}`)];

/** ODD: values of every shape the writer formats (digits, past 2^53, exponents, fractions, negative). */
const ODD = [0, 1, Number.MAX_SAFE_INTEGER, 2 ** 53 + 2, 1e21, 0.5, 1.5e-7, 123456.789];

/** startNode: the first five groups get 8 MiB (a mirror in a cluster), the others 256 KiB. */
function startNode(config: Partial<NodeConfig>): Promise<CacheNode> {
  const groups = NAMES.map((name, i) => ({ name, ttlMs: 0, memory: (i < 5 ? 8192 : 256) * 1024, maxItemSize: 16 * 1024 }));
  return CacheNode.open({ port: 0, logLevel: "silent", memory: 512 * 1024 * 1024, groups, ...config }, { logger: silent });
}

/** vary gives every group's counters values of their own, and its store items of a few sizes. */
function vary(node: CacheNode, latency: LatencyHistogram): void {
  node.groups.all().forEach((g, i) => {
    const counters = g.counters as unknown as Record<string, number>;
    Object.keys(counters).forEach((k, j) => (counters[k] = i < ODD.length ? ODD[(i + j) % ODD.length]! : i * 31 + j * 7));
    for (let n = 0; n < i % 4; n++) {
      const key = new TextEncoder().encode(`k${n}`);
      const value = new Uint8Array(100 * (n + 1) ** 3);
      g.store.set(key, 0, key.length, value, 0, value.length, 0);
    }
  });
  latency.record(METHOD_GET, 7_000);
  latency.record(METHOD_GET, 3_000_000);
  latency.record(METHOD_SET, 2e9);
  latency.record(METHOD_PEER_GET, 123_456);
  latency.recordError(METHOD_GET, ERROR_CODE.NOT_FOUND);
  latency.recordError(METHOD_DELETE, ERROR_CODE.UNKNOWN_GROUP);
  latency.recordProtocolError(APP_ERROR.PROTOCOL_ERROR);
}

/** families splits an exposition into its family blocks by name (HELP text has no raw newline). */
function families(text: string): Map<string, string> {
  expect(text).toEndWith("\n");
  return new Map(text.slice(0, -1).split("\n\n").map((block) => [/^# HELP (\S+)/.exec(block)![1]!, block]));
}

/** expectSameAsPromClient checks every family prom-client wrote is in `ours`, the same to the byte, in the same order. */
function expectSameAsPromClient(ours: string, theirs: string): void {
  const [a, b] = [families(ours), families(theirs)];
  expect(b.size).toBeGreaterThan(60);
  for (const [name, block] of b) expect([name, a.get(name)]).toEqual([name, block]);
  expect([...a.keys()].filter((name) => b.has(name))).toEqual([...b.keys()]);
  expect(ours).toBe(theirs); // (no family added since: the whole text too)
}

describe("/metrics is what prom-client wrote", () => {
  test("1,000 groups, names to escape, values of every shape: the same bytes from the admin port as from prom-client", async () => {
    const node = await startNode({ gcHeadroomBytes: 0 }); // (no memory watch: its figures could move between the two readings)
    const latency = new LatencyHistogram();
    const admin = AdminServer.start({ host: "127.0.0.1", port: 0, node, latency, logger: silent, metricsShareMs: 0 });
    try {
      vary(node, latency);
      const connections = () => admin.connections;
      const theirs = await promClientMetrics(node, latency, connections).registry.metrics();
      const res = await fetch(`http://127.0.0.1:${admin.port}/metrics`);
      const ours = await res.text();
      // (the admin port's own connections: this scrape's is open while it renders, not while prom-client's did)
      const open = (t: string) => t.replace(/^mybuncache_admin_connections \d+$/m, "mybuncache_admin_connections N");
      expectSameAsPromClient(open(ours), open(theirs));
      const f = parsePromText(ours);
      expect(sampleValue(f, "mybuncache_gets_total", "mybuncache_gets_total", { group: "quo\"te" })).toBe(0);
      expect(sampleValue(f, "mybuncache_gets_total", "mybuncache_gets_total", { group: "new\nline" })).toBe(Number.MAX_SAFE_INTEGER);
      expect(sampleValue(f, "mybuncache_gets_total", "mybuncache_gets_total", { group: "__proto__" })).toBe(1e21);
      expect(ours).toContain('mybuncache_gets_total{group="new\\nline"} 9007199254740991\n');
      expect(ours).toContain('mybuncache_gets_total{group="__proto__"} 1e+21\n');
      expect(sampleValue(f, "mybuncache_hits_total", "mybuncache_hits_total", { group: "g994" })).toBe(999 * 31 + 7);
      expect(f.get("mybuncache_slab_items")!.samples.length).toBeGreaterThan(1000);
    } finally {
      await admin.close();
      await node.close();
    }
  });

  test("a node with peers (mirrors), a loader pool, a snapshot and a memory watch: the same bytes", async () => {
    const dir = mkdtempSync(join(tmpdir(), "mbc-exposition-"));
    try {
      const node = await startNode({
        peers: [], mirrorShare: 0.5, snapshot: join(dir, "cache.snap"), gcHeadroomBytes: 1 << 30,
        loaders: `${import.meta.dir}/../loaders/fixtures/loaders.ts`, loaderThreads: 1,
      });
      try {
        const latency = new LatencyHistogram();
        vary(node, latency);
        expect([node.cluster, node.pool, node.snapshotter, node.memoryWatch].map((x) => x !== undefined)).toEqual([true, true, true, true]);
        // (both read in this turn: the memory watch's figures cannot move between them)
        const theirs = promClientMetrics(node, latency, () => ADMIN).registry.metrics();
        const ours = decode(createMetrics(node, latency, () => ADMIN).render());
        expectSameAsPromClient(ours, await theirs);
        expect(ours).toContain('mybuncache_items{group="back\\\\slash",store="mirror"} 0\n');
        expect(ours).toContain('mybuncache_items{group="grüße",store="mirror"} 0\n');
      } finally {
        await node.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("scrapes", () => {
  test("scrapes at the same time each get a whole exposition: shared within a second, and each its own without sharing", async () => {
    const node = await startNode({ gcHeadroomBytes: 0 });
    try {
      vary(node, new LatencyHistogram());
      for (const metricsShareMs of [1000, 0]) {
        const admin = AdminServer.start({ host: "127.0.0.1", port: 0, node, latency: new LatencyHistogram(), logger: silent, metricsShareMs });
        try {
          const bodies = await Promise.all(Array.from({ length: 6 }, async () => (await fetch(`http://127.0.0.1:${admin.port}/metrics`)).text()));
          for (const body of bodies) {
            const f = parsePromText(body);
            expect(f.get("mybuncache_gets_total")!.samples.length).toBe(NAMES.length);
            expect(sampleValue(f, "mybuncache_hits_total", "mybuncache_hits_total", { group: "g994" })).toBe(999 * 31 + 7);
          }
          if (metricsShareMs > 0) expect(new Set(bodies).size).toBe(1);
        } finally {
          await admin.close();
        }
      }
    } finally {
      await node.close();
    }
  });

  test("a rendering that throws is answered 500 and not shared: the next scrape within the second renders again", async () => {
    const node = CacheNode.start({ port: 0, logLevel: "silent", gcHeadroomBytes: 0 }, { logger: silent });
    const admin = AdminServer.start({ host: "127.0.0.1", port: 0, node, latency: new LatencyHistogram(), logger: silent, metricsShareMs: 60_000 });
    try {
      const metrics = admin.metrics as { render(): Uint8Array };
      const render = metrics.render;
      metrics.render = () => {
        metrics.render = render;
        throw new Error("a fill failed");
      };
      const url = `http://127.0.0.1:${admin.port}/metrics`;
      expect((await fetch(url)).status).toBe(500);
      const res = await fetch(url);
      expect(res.status).toBe(200);
      expect(sampleValue(parsePromText(await res.text()), "mybuncache_gets_total", "mybuncache_gets_total", { group: "default" })).toBe(0);
    } finally {
      await admin.close();
      await node.close();
    }
  });
});
