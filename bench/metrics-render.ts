/**
 * metrics-render.ts — how long one /metrics scrape holds the node's thread, with many groups.
 *
 *   bun bench/metrics-render.ts [GROUPS=1000] [SCRAPES=5]
 *
 * A node in this process with GROUPS groups, each holding a few items (so every group has a slab
 * class in the scrape), and its admin port with no sharing of renderings (each scrape renders).
 * While one scrape runs, a chain of setImmediate callbacks notes the longest gap between two of
 * them: the longest single span the event loop (the Thrift port's too) was held. Printed per
 * scrape (curl, in a process of its own): that span, the scrape's wall time, and its size; then
 * the same for the rendering alone (`metrics.render()`, no HTTP), and for scrapes of an admin port
 * whose scrapes share one rendering (the sending alone).
 */
import { AdminServer } from "../src/server/admin-server.ts";
import { CacheNode } from "../src/server/cache-node.ts";
import { LatencyHistogram } from "../src/server/latency.ts";
import { Logger } from "../src/server/log.ts";

const GROUPS = Number(process.argv[2] ?? 1000);
const SCRAPES = Number(process.argv[3] ?? 5);

/** held runs `work` while a setImmediate chain measures the longest span between two turns. */
async function held<T>(work: () => Promise<T>): Promise<{ out: T; ms: number; longest: number }> {
  let longest = 0;
  let last = performance.now();
  let running = true;
  const tick = (): void => {
    const now = performance.now();
    longest = Math.max(longest, now - last);
    last = now;
    if (running) setImmediate(tick);
  };
  setImmediate(tick);
  await Bun.sleep(5);
  longest = 0;
  const t0 = performance.now();
  const out = await work();
  const ms = performance.now() - t0;
  await new Promise((r) => setImmediate(r)); // the turn after the work ends its span
  running = false;
  return { out, ms, longest };
}

const logger = new Logger("silent");
const groups = Array.from({ length: GROUPS }, (_, i) => ({ name: `g${i}`, ttlMs: 0, memory: 256 * 1024, maxItemSize: 16 * 1024 }));
const node = CacheNode.start({ port: 0, logLevel: "silent", memory: Math.max(512 * 1024 * 1024, GROUPS * 512 * 1024), groups }, { logger });
const value = new Uint8Array(100);
for (const g of node.groups.all()) {
  for (let i = 0; i < 10; i++) {
    const key = new TextEncoder().encode(`key-${i}`);
    g.store.set(key, 0, key.length, value, 0, value.length, 0);
  }
}
const latency = new LatencyHistogram();
const admin = AdminServer.start({ host: "127.0.0.1", port: 0, node, latency, logger, metricsShareMs: 0, state: "serving" });
const url = `http://127.0.0.1:${admin.port}/metrics`;

/** curl scrapes from another process, so the client's own work is not counted as the node's. */
async function curl(at = url): Promise<number> {
  const p = Bun.spawn(["curl", "-s", "-o", "/dev/null", "-w", "%{size_download}", at], { stdout: "pipe" });
  const size = Number(await new Response(p.stdout).text());
  await p.exited;
  return size;
}
await curl(); // warm up
for (let i = 0; i < SCRAPES; i++) {
  const { out, ms, longest } = await held(curl);
  console.log(`scrape ${i + 1}, ${GROUPS} groups: loop held at most ${longest.toFixed(1)} ms, scrape ${ms.toFixed(1)} ms, ${(out / 1e6).toFixed(2)} MB`);
}
for (let i = 0; i < SCRAPES; i++) {
  const { ms, longest } = await held(async () => admin.metrics.render());
  console.log(`render ${i + 1}, ${GROUPS} groups: loop held at most ${longest.toFixed(1)} ms, rendering ${ms.toFixed(1)} ms`);
}
// The sending alone: an admin port whose scrapes share one rendering for a minute.
const shared = AdminServer.start({ host: "127.0.0.1", port: 0, node, latency, logger, metricsShareMs: 60_000, state: "serving" });
const sharedUrl = `http://127.0.0.1:${shared.port}/metrics`;
await curl(sharedUrl); // (the one rendering)
for (let i = 0; i < SCRAPES; i++) {
  const { ms, longest } = await held(() => curl(sharedUrl));
  console.log(`shared scrape ${i + 1}, ${GROUPS} groups: loop held at most ${longest.toFixed(1)} ms, scrape ${ms.toFixed(1)} ms (sending only)`);
}
await shared.close();
await admin.close();
await node.close();
