/**
 * Signals while a node starts (its snapshot or loaders module can take a while): SIGHUP, the
 * peers' reload signal, must not end it (its default action would); SIGTERM ends it at once with
 * exit 0. The loaders module of the fixture takes 1.5 s to import and says when it began. And a
 * second SIGTERM while it shuts down, before the final snapshot: exit 1, the old snapshot moved
 * aside. And SIGHUP on a running node: it re-reads the peers, or says there are none.
 */
import { afterEach, expect, test, setDefaultTimeout } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CacheClient } from "../../src/client/cache-client.ts";
import { until } from "../client/support.ts";
import { ROOT, freePorts, spawnNode } from "../support/node-process.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const FIXTURE = join(ROOT, "test/loaders/fixtures/slow-import.ts");
const procs: ReturnType<typeof Bun.spawn>[] = [];
let dir = "";
afterEach(() => {
  for (const p of procs.splice(0)) p.kill("SIGKILL");
  if (dir !== "") rmSync(dir, { recursive: true, force: true });
});

/** starting spawns a node whose loaders module is importing once this resolves; its stderr is kept. */
async function starting(): Promise<{ proc: ReturnType<typeof Bun.spawn>; log: () => string }> {
  dir = mkdtempSync(join(tmpdir(), "mbc-start-"));
  const marker = join(dir, "importing");
  const proc = Bun.spawn(["bun", "run", "node.ts", "--port", "0", "--loaders", FIXTURE, "--group", "g:8mb"], {
    cwd: ROOT, stdout: "ignore", stderr: "pipe", env: { ...process.env, SLOW_IMPORT_MARKER: marker },
  });
  procs.push(proc);
  let log = "";
  void (async () => {
    for await (const chunk of proc.stderr as ReadableStream<Uint8Array>) log += new TextDecoder().decode(chunk);
  })();
  await until(() => existsSync(marker), 10_000);
  return { proc, log: () => log };
}

test("SIGHUP while starting is noted, and the node comes up and serves", async () => {
  const { proc, log } = await starting();
  proc.kill("SIGHUP");
  const ended = (): boolean => proc.exitCode !== null || proc.signalCode !== null;
  await until(() => /listening on [^\s]+:\d+/.test(log()) || ended(), 10_000);
  expect([proc.exitCode, proc.signalCode]).toEqual([null, null]);
  expect(log()).toContain("SIGHUP while starting: no peers to re-read");
  const port = Number(/listening on [^\s]+:(\d+)/.exec(log())![1]);
  const c = new CacheClient({ host: "127.0.0.1", port });
  expect(new TextDecoder().decode((await c.get("g", "k")).value)).toBe("v:k");
  c.close();
  proc.kill("SIGTERM");
  expect(await proc.exited).toBe(0);
}, 20_000);

test("SIGTERM while starting exits 0 at once", async () => {
  const { proc, log } = await starting();
  proc.kill("SIGTERM");
  expect(await proc.exited).toBe(0);
  await until(() => log().includes("SIGTERM while starting"), 2_000); // the last of stderr may still be read
  expect(log()).not.toContain("listening on");
}, 20_000);

test("a second SIGTERM before the final snapshot exits 1 and moves the old snapshot aside (review: it was left, and loaded values the node had replaced)", async () => {
  dir = mkdtempSync(join(tmpdir(), "mbc-start-"));
  const snapshot = join(dir, "cache.snap");
  const loaders = join(ROOT, "test/loaders/fixtures/loaders.ts");
  const node = await spawnNode(["--port", "0", "--snapshot", snapshot, "--snapshot-interval", "1s", "--group", "default:8mb", "--loaders", loaders, "--group", "slow:8mb"]);
  procs.push(node.proc);
  const c = new CacheClient({ host: "127.0.0.1", port: node.port, timeoutMs: 10_000 });
  await c.set("default", "k", "v1");
  await until(() => existsSync(snapshot), 5_000); // a periodic snapshot holds v1
  await c.set("default", "k", "v2");
  const slow = c.get("slow", "3000").catch(() => undefined); // the shutdown waits for this load
  await Bun.sleep(50);
  node.proc.kill("SIGTERM");
  await until(() => node.log().includes("shutting down"), 5_000);
  node.proc.kill("SIGTERM");
  expect(await node.proc.exited).toBe(1);
  await slow;
  c.close();
  const files = readdirSync(dir);
  expect(files.filter((f) => f === "cache.snap")).toEqual([]);
  expect(files.filter((f) => f.startsWith("cache.snap.stale-")).length).toBe(1);
}, 20_000);

test("SIGHUP on a running node re-reads its peers, or says it has none (review: a node without peers logged 're-reading the peers')", async () => {
  const [port] = freePorts(1);
  const alone = await spawnNode(["--port", "0"]);
  procs.push(alone.proc);
  const peered = await spawnNode(["--port", String(port), "--peers", `127.0.0.1:${port}`]);
  procs.push(peered.proc);
  for (const n of [alone, peered]) n.proc.kill("SIGHUP");
  await until(() => alone.log().includes("SIGHUP:") && peered.log().includes("SIGHUP:"), 5_000);
  expect(alone.log()).toContain("SIGHUP: no peers to re-read (the node has no --peers, --peers-file or --peers-dns); ignored");
  expect(alone.log()).not.toContain("re-reading the peers");
  expect(peered.log()).toContain("SIGHUP: re-reading the peers");
  for (const n of [alone, peered]) {
    expect([n.proc.exitCode, n.proc.signalCode]).toEqual([null, null]); // SIGHUP ends neither
    n.proc.kill("SIGTERM");
    expect(await n.proc.exited).toBe(0);
  }
}, 20_000);

test("a second SIGTERM while the final snapshot is written exits 1 at once and leaves no temporary file (review: PATH.tmp-<pid> stayed until the next start)", async () => {
  dir = mkdtempSync(join(tmpdir(), "mbc-start-"));
  const snapshot = join(dir, "cache.snap");
  const node = await spawnNode(["--port", "0", "--snapshot", snapshot, "--memory", "256mb"]);
  procs.push(node.proc);
  // ~180 MB: the final write takes a few hundred milliseconds at least, in slices of 10 ms.
  const c = new CacheClient({ host: "127.0.0.1", port: node.port, timeoutMs: 10_000 });
  const value = new Uint8Array(60_000).fill(7);
  for (let i = 0; i < 3000; i += 100) await Promise.all(Array.from({ length: 100 }, (_, j) => c.set("default", `k${i + j}`, value)));
  c.close();
  const temps = (): string[] => readdirSync(dir).filter((f) => f.includes(".tmp-"));
  node.proc.kill("SIGTERM");
  await until(() => temps().some((f) => (statSync(join(dir, f), { throwIfNoEntry: false })?.size ?? 0) > 0), 10_000);
  node.proc.kill("SIGTERM");
  expect(await node.proc.exited).toBe(1);
  expect(node.log()).not.toContain("snapshot written"); // cut short mid-write
  expect(temps()).toEqual([]);
  expect(readdirSync(dir)).toEqual([]); // nor a snapshot, nor its lock
}, 30_000);
