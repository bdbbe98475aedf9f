/**
 * A promise rejected with no handler in the node's thread (here, by a module preloaded into the
 * node's process) is logged as an internal error and counted; the node keeps serving (Bun's
 * default would exit it).
 */
import { afterEach, expect, test, setDefaultTimeout } from "bun:test";
import { join } from "node:path";
import { CacheClient } from "../../src/client/cache-client.ts";
import { until } from "../client/support.ts";
import { ROOT, spawnNode, type NodeProcess } from "../support/node-process.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const FIXTURE = join(ROOT, "test/e2e/fixtures/stray-rejection.ts");
const procs: NodeProcess[] = [];
afterEach(() => {
  for (const p of procs.splice(0)) p.proc.kill("SIGKILL");
});

test("an unhandled rejection is logged and counted, and the node goes on serving", async () => {
  const node = await spawnNode(["--port", "0", "--admin-port", "0", "--loaders", FIXTURE, "--group", "g:8mb"], { BUN_OPTIONS: `--preload=${FIXTURE}` });
  procs.push(node);
  await until(() => node.log().includes("unhandled rejection") || node.proc.exitCode !== null, 10_000);
  expect(node.log()).toContain("internal error: unhandled rejection; the node goes on");
  expect(node.log()).toContain("stray rejection from the loaders module");
  const c = new CacheClient({ host: "127.0.0.1", port: node.port });
  expect(new TextDecoder().decode((await c.get("g", "k")).value)).toBe("v:k");
  await c.set("g", "w", "written");
  expect(new TextDecoder().decode((await c.get("g", "w")).value)).toBe("written");
  c.close();
  const admin = /admin port listening address=([^\s]+)/.exec(node.log())![1];
  const metrics = await (await fetch(`http://${admin}/metrics`)).text();
  expect(metrics).toMatch(/^mybuncache_internal_errors_total 1$/m);
  expect(node.proc.exitCode).toBeNull();
  node.proc.kill("SIGTERM");
  expect(await node.proc.exited).toBe(0);
}, 20_000);
