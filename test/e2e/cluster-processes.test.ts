/**
 * Three real `bun run node.ts` processes forming a cluster over loopback, with loaders from a
 * module in each node's worker pool. Kill one: the others keep answering every key; restart it on
 * the same port: it rejoins and owns its keys again.
 */
import { afterAll, expect, test, setDefaultTimeout } from "bun:test";
import { join } from "node:path";
import { CacheClient } from "../../src/client/cache-client.ts";
import { Ring } from "../../src/cluster/ring.ts";
import { ROOT, freePorts, spawnNode } from "../support/node-process.ts";
import { nodeStats } from "../server/support.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const LOADERS = join(ROOT, "test/loaders/fixtures/loaders.ts");
const text = (b: Uint8Array): string => new TextDecoder().decode(b);

const procs: ReturnType<typeof Bun.spawn>[] = [];

const clients: CacheClient[] = [];
afterAll(async () => {
  for (const c of clients) await c.close();
  for (const p of procs) p.kill("SIGKILL");
});

async function startNode(port: number, peers: string[]): Promise<ReturnType<typeof Bun.spawn>> {
  const node = await spawnNode(["--port", String(port), "--peers", peers.join(","), "--loaders", LOADERS, "--loader-threads", "1",
    "--peer-timeout", "2s", "--log-level", "info"]);
  procs.push(node.proc);
  return node.proc;
}

test("three processes: every key from every node; a killed node's keys still served; it rejoins", async () => {
  const ports = freePorts(3);
  const ids = ports.map((p) => `127.0.0.1:${p}`);
  const nodes = await Promise.all(ports.map((p) => startNode(p, ids)));
  for (const p of ports) clients.push(new CacheClient({ host: "127.0.0.1", port: p, timeoutMs: 3000 }));
  // 1,000 concurrent gets of one cold key spread over the three processes: one loader call in all.
  const cold = await Promise.all(Array.from({ length: 1000 }, (_, i) => clients[i % 3]!.get("slow", "40")));
  expect(new Set(cold.map((r) => text(r.value)))).toEqual(new Set(["slept 40"]));
  let loaderCalls = 0;
  for (const p of ports) loaderCalls += (await nodeStats(p)).get("loaders.submitted") ?? 0;
  expect(loaderCalls).toBe(1);

  // A set on one process is read on the others; a delete on a third removes it everywhere.
  await clients[0]!.set("text", "shared", "written on A");
  for (const c of clients) expect(text((await c.get("text", "shared")).value)).toBe("written on A");
  // No wait: a write is acknowledged once the members holding a copy have answered its
  // invalidation (cluster/write-waits.ts).
  await clients[2]!.delete("text", "shared");
  for (const c of clients) expect(text((await c.get("text", "shared")).value)).toBe("value of shared"); // loaded again

  const keys = Array.from({ length: 90 }, (_, i) => `key-${i}`);
  for (const k of keys) for (const c of clients) expect(text((await c.get("text", k)).value)).toBe(`value of ${k}`);

  // Kill the third node: the other two keep answering all keys, within the peer timeout.
  nodes[2]!.kill("SIGKILL");
  await nodes[2]!.exited;
  for (const k of keys) for (const c of clients.slice(0, 2)) expect(text((await c.get("text", k)).value)).toBe(`value of ${k}`);

  // Restart it on the same port: it rejoins, and keys it owns are loaded and held there again.
  await startNode(ports[2]!, ids);
  const ring = new Ring();
  for (const id of ids) ring.add(id);
  const owned = keys.filter((k) => ring.owner(new TextEncoder().encode(k)) === ids[2]);
  expect(owned.length).toBeGreaterThan(5);
  const deadline = Date.now() + 5000;
  let stats = { itemCount: 0 };
  while (Date.now() < deadline) {
    for (const k of owned) await clients[0]!.get("text", `fresh-${k}`).catch(() => undefined);
    for (const k of owned) await clients[0]!.get("text", k);
    stats = await clients[2]!.stats("text").catch(() => ({ itemCount: 0 }));
    if (stats.itemCount > 0) break;
    await Bun.sleep(100);
  }
  expect(stats.itemCount).toBeGreaterThan(0);
}, 60_000);
