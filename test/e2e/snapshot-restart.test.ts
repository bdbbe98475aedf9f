/**
 * Snapshot persistence over a real process restart: items set through the wire come back
 * byte-exact after SIGTERM and a restart with the same --snapshot; expired ones do not.
 */
import { afterEach, expect, test, setDefaultTimeout } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { join } from "node:path";
import { CacheClient } from "../../src/client/cache-client.ts";
import { freePorts, spawnNode, type NodeProcess } from "../support/node-process.ts";
import { connect, type Socket } from "node:net";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

function start(args: string[]): Promise<NodeProcess> {
  return spawnNode(["--port", "0", ...args]);
}

/** cleanup holds every node started, so a failing test still ends its processes. */
const cleanup: NodeProcess[] = [];
afterEach(() => {
  for (const n of cleanup.splice(0)) n.proc.kill("SIGKILL");
});

function value(i: number): Uint8Array {
  const v = new Uint8Array(1 + ((i * 7919) % 3000));
  for (let j = 0; j < v.length; j++) v[j] = (i + j * 31) & 0xff;
  return v;
}

test("100k items survive SIGTERM and a restart byte-exact; expired items do not", async () => {
  const dir = await mkdtemp("/tmp/mybuncache-snap-");
  const snap = join(dir, "cache.snap");
  try {
    const first = await start(["--snapshot", snap, "--memory", "512mb"]);
    cleanup.push(first);
    const c1 = new CacheClient({ host: "127.0.0.1", port: first.port });
    const N = 100_000;
    for (let start = 0; start < N; start += 5000) {
      const writes: Promise<void>[] = [];
      for (let i = start; i < start + 5000; i++) writes.push(c1.set("default", `k${i}`, value(i), i % 10 === 0 ? 300 : 0));
      await Promise.all(writes);
    }
    await c1.close();
    await Bun.sleep(350); // the 300 ms items expire
    first.proc.kill("SIGTERM");
    expect(await first.proc.exited).toBe(0);
    expect(first.log()).toContain("snapshot written");

    const second = await start(["--snapshot", snap, "--memory", "512mb"]);
    cleanup.push(second);
    try {
      expect(second.log()).toContain("status=loaded");
      const c2 = new CacheClient({ host: "127.0.0.1", port: second.port });
      let found = 0;
      let wrong = 0;
      for (let start = 0; start < N; start += 5000) {
        const reads = Array.from({ length: 5000 }, (_, j) => c2.get("default", `k${start + j}`).catch(() => undefined));
        (await Promise.all(reads)).forEach((r, j) => {
          const i = start + j;
          if (i % 10 === 0) {
            if (r !== undefined) wrong++;
            return;
          }
          if (r === undefined || Buffer.compare(r.value, value(i)) !== 0) wrong++;
          else found++;
        });
      }
      expect(wrong).toBe(0);
      expect(found).toBe(N - N / 10);
      await c2.close();
    } finally {
      second.proc.kill("SIGTERM");
      await second.proc.exited;
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}, 90_000);

test("graceful shutdown under load loses no acknowledged write", async () => {
  const dir = await mkdtemp("/tmp/mybuncache-drain-");
  const snap = join(dir, "cache.snap");
  try {
    const first = await start(["--snapshot", snap]);
    cleanup.push(first);
    const clients = Array.from({ length: 4 }, () => new CacheClient({ host: "127.0.0.1", port: first.port, timeoutMs: 5000 }));
    const acknowledged: string[] = [];
    let stop = false;
    const writers = clients.map(async (c, w) => {
      for (let i = 0; !stop; i++) {
        const batch = Array.from({ length: 32 }, (_, j) => `w${w}-${i}-${j}`);
        const results = await Promise.allSettled(batch.map((k) => c.set("default", k, k)));
        results.forEach((r, j) => r.status === "fulfilled" && acknowledged.push(batch[j]!));
        if (results.some((r) => r.status === "rejected")) return; // the node is gone
      }
    });
    await Bun.sleep(300);
    first.proc.kill("SIGTERM");
    expect(await first.proc.exited).toBe(0);
    stop = true;
    await Promise.all(writers);
    for (const c of clients) await c.close();
    expect(acknowledged.length).toBeGreaterThan(1000);

    const second = await start(["--snapshot", snap]);
    cleanup.push(second);
    try {
      const c = new CacheClient({ host: "127.0.0.1", port: second.port });
      // Read back in windows: a client holds at most 131,072 calls in flight on a connection (it
      // refuses more OVERLOADED), and a fast machine acknowledges more writes than that in 300 ms.
      const missing: string[] = [];
      const errors = new Set<string>();
      for (let at = 0; at < acknowledged.length; at += 10_000) {
        await Promise.all(acknowledged.slice(at, at + 10_000).map((k) => c.get("default", k).then((r) => {
          if (new TextDecoder().decode(r.value) !== k) missing.push(k);
        }, (e) => {
          errors.add(String(e));
          missing.push(k);
        })));
      }
      expect([...errors]).toEqual([]);
      expect(missing).toEqual([]);
      await c.close();
    } finally {
      second.proc.kill("SIGTERM");
      await second.proc.exited;
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}, 60_000);

test("the final snapshot is written though idle admin connections held the last file descriptors (the admin port closes first)", async () => {
  const dir = await mkdtemp("/tmp/mybuncache-snap-");
  const snap = join(dir, "cache.snap");
  const [adminPort] = freePorts(1);
  const sockets: Socket[] = [];
  try {
    const first = await spawnNode(["--port", "0", "--admin-port", String(adminPort), "--snapshot", snap], {}, 256);
    cleanup.push(first);
    const c1 = new CacheClient({ host: "127.0.0.1", port: first.port });
    await c1.set("default", "kept", "through the shutdown");
    await c1.close();
    // More idle admin connections than the node has descriptors left. Before the admin port had a
    // cap they took every one; now those past it are answered 503 and closed.
    await Promise.all(Array.from({ length: 600 }, () => new Promise<void>((resolve) => {
      const s = connect(adminPort!, "127.0.0.1", () => resolve());
      s.on("error", () => resolve());
      sockets.push(s);
    })));
    await Bun.sleep(1000);
    first.proc.kill("SIGTERM");
    // Before: "snapshot write failed … EMFILE", the previous snapshot moved aside, exit 1.
    expect(await first.proc.exited).toBe(0);
    expect(first.log()).toContain("snapshot written");
    for (const s of sockets) s.destroy();

    const second = await start(["--snapshot", snap]);
    cleanup.push(second);
    const c2 = new CacheClient({ host: "127.0.0.1", port: second.port });
    expect(new TextDecoder().decode((await c2.get("default", "kept")).value!)).toBe("through the shutdown");
    await c2.close();
    second.proc.kill("SIGTERM");
    expect(await second.proc.exited).toBe(0);
  } finally {
    for (const s of sockets) s.destroy();
    await rm(dir, { recursive: true, force: true });
  }
}, 60_000);
