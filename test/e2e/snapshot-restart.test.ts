/**
 * Snapshot persistence over a real process restart: items set through the wire come back
 * byte-exact after SIGTERM and a restart with the same --snapshot; expired ones do not.
 */
import { expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { join } from "node:path";
import { CacheClient } from "../../src/client/cache-client.ts";
import { spawnNode, type NodeProcess } from "../support/node-process.ts";

function start(args: string[]): Promise<NodeProcess> {
  return spawnNode(["--port", "0", ...args]);
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
