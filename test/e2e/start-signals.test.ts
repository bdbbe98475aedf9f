/**
 * Signals while a node starts (its snapshot or loaders module can take a while): SIGHUP, the
 * peers' reload signal, must not end it (its default action would); SIGTERM ends it at once with
 * exit 0. The loaders module of the fixture takes 1.5 s to import and says when it began.
 */
import { afterEach, expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CacheClient } from "../../src/client/cache-client.ts";
import { until } from "../client/support.ts";
import { ROOT } from "../support/node-process.ts";

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
  expect(log()).toContain("SIGHUP while starting");
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
