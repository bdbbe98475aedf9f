/**
 * Snapshot persistence over a real process restart: items set through the wire come back
 * byte-exact after SIGTERM and a restart with the same --snapshot; expired ones do not.
 */
import { expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { join } from "node:path";
import { CacheClient } from "../../src/client/cache-client.ts";

const ROOT = join(import.meta.dir, "../..");

async function start(args: string[]): Promise<{ proc: ReturnType<typeof Bun.spawn>; port: number; log: () => string }> {
  const proc = Bun.spawn(["bun", "run", "node.ts", "--port", "0", ...args], { cwd: ROOT, stdout: "ignore", stderr: "pipe" });
  const reader = proc.stderr.getReader();
  let log = "";
  let port = 0;
  while (port === 0) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`node exited: ${log}`);
    log += new TextDecoder().decode(value);
    const m = /listening on 127\.0\.0\.1:(\d+)/.exec(log);
    if (m) port = Number(m[1]);
  }
  void (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      log += new TextDecoder().decode(value);
    }
  })();
  return { proc, port, log: () => log };
}

function value(i: number): Uint8Array {
  const v = new Uint8Array(1 + ((i * 7919) % 3000));
  for (let j = 0; j < v.length; j++) v[j] = (i + j * 31) & 0xff;
  return v;
}

test("20k items survive SIGTERM and a restart byte-exact; expired items do not", async () => {
  const dir = await mkdtemp("/tmp/mybuncache-snap-");
  const snap = join(dir, "cache.snap");
  try {
    const first = await start(["--snapshot", snap, "--memory", "256mb"]);
    const c1 = new CacheClient({ host: "127.0.0.1", port: first.port });
    const N = 20_000;
    const writes: Promise<void>[] = [];
    for (let i = 0; i < N; i++) writes.push(c1.set("default", `k${i}`, value(i), i % 10 === 0 ? 300 : 0));
    await Promise.all(writes);
    await c1.close();
    await Bun.sleep(350); // the 300 ms items expire
    first.proc.kill("SIGTERM");
    expect(await first.proc.exited).toBe(0);
    expect(first.log()).toContain("snapshot written");

    const second = await start(["--snapshot", snap, "--memory", "256mb"]);
    try {
      expect(second.log()).toContain("status=loaded");
      const c2 = new CacheClient({ host: "127.0.0.1", port: second.port });
      let found = 0;
      for (let i = 0; i < N; i++) {
        const r = await c2.get("default", `k${i}`).catch(() => undefined);
        if (i % 10 === 0) {
          expect(r).toBeUndefined();
          continue;
        }
        expect(r?.value).toEqual(value(i));
        found++;
      }
      expect(found).toBe(N - N / 10);
      await c2.close();
    } finally {
      second.proc.kill("SIGTERM");
      await second.proc.exited;
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}, 60_000);
