/**
 * The admin port as the node runs it: `--admin-port` starts it, the server's per-request hooks
 * feed the latency histogram and error counts, and /healthz turns 503 while the node drains.
 */
import { expect, test, setDefaultTimeout } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CacheNode } from "../../src/server/cache-node.ts";
import { LogSink, apacheClient, startNode, types } from "./support.ts";
import { waitUntil } from "../support/gates.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

function sample(text: string, name: string, labels: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${name}{${labels}}`) || (labels === "" && l.startsWith(`${name} `)));
  return line === undefined ? Number.NaN : Number(line.slice(line.lastIndexOf(" ") + 1));
}

test("requests, errors and durations reach /metrics", async () => {
  await using node = startNode({ adminPort: 0 });
  const admin = `http://127.0.0.1:${node.admin!.port}`;
  const { client, close } = await apacheClient(node.port);
  try {
    await client.Set(new types.SetRequest({ group: "default", key: "k", value: Buffer.from("v"), ttl: 0 }));
    await client.Get(new types.Request({ group: "default", key: "k" }));
    await client.Get(new types.Request({ group: "default", key: "missing" })).catch(() => undefined);
  } finally {
    close();
  }
  const text = await (await fetch(`${admin}/metrics`)).text();
  expect(sample(text, "mybuncache_requests_total", 'method="Get"')).toBe(2);
  expect(sample(text, "mybuncache_request_errors_total", 'method="Get",code="not_found"')).toBe(1);
  expect(sample(text, "mybuncache_request_duration_seconds_count", 'method="Get"')).toBe(2);
  expect(sample(text, "mybuncache_request_duration_seconds_sum", 'method="Get"')).toBeGreaterThan(0);
  expect((await fetch(`${admin}/healthz`)).status).toBe(200);
  const stats = (await (await fetch(`${admin}/stats`)).json()) as { node: { limits: Record<string, unknown> } };
  expect(stats.node.limits).toMatchObject({ maxConnections: 10_000, maxOutputBytes: 16 * 1024 * 1024, auth: false, tls: false });
});

test("graceful shutdown: /healthz answers 503 while an in-flight request finishes, and it is answered", async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let parked = false;
  const node = startNode({ adminPort: 0, groups: [{ name: "slow", ttlMs: 0 }] }, {
    loaders: { slow: async (key) => {
      parked = true;
      await gate;
      return `late ${key}`;
    } },
  });
  const admin = `http://127.0.0.1:${node.admin!.port}`;
  const { client, close } = await apacheClient(node.port);
  const inFlight = client.Get(new types.Request({ group: "slow", key: "k" }));
  await waitUntil(() => parked, "the request to be parked on its load");
  const closing = node.close();
  expect((await fetch(`${admin}/healthz`)).status).toBe(503);
  release();
  expect((await inFlight).value.toString()).toBe("late k"); // the acknowledged request is answered
  await closing;
  close();
});

test("snapshot writes, failures and the last success reach /metrics (a failing periodic write showed only in the log)", async () => {
  const dir = mkdtempSync(join(tmpdir(), "mbc-admin-snap-"));
  const snapshot = join(dir, "cache.snap");
  try {
    await using node = await CacheNode.open({ port: 0, adminPort: 0, snapshot }, { logger: new LogSink().logger });
    // (one scrape: the node shares a rendering with the scrapes of the next second)
    const before = Date.now() / 1000;
    await node.snapshotter!.write();
    mkdirSync(`${snapshot}.tmp-${process.pid}`); // the next write cannot open its temporary file
    await expect(node.snapshotter!.write()).rejects.toThrow();
    rmSync(`${snapshot}.tmp-${process.pid}`, { recursive: true });
    const text = await (await fetch(`http://127.0.0.1:${node.admin!.port}/metrics`)).text();
    expect(sample(text, "mybuncache_snapshot_writes_total", "")).toBe(1);
    expect(sample(text, "mybuncache_snapshot_write_failures_total", "")).toBe(1);
    expect(sample(text, "mybuncache_snapshot_last_success_timestamp_seconds", "")).toBeGreaterThanOrEqual(Math.floor(before));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
