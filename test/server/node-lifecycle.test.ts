/**
 * A node's life around its snapshot: `open` loads it before listening, `close` writes it once
 * (not twice), and `start`, which cannot load it first, refuses a snapshot or a loaders module
 * instead of silently running without them.
 */
import { afterEach, beforeEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CacheClient } from "../../src/client/cache-client.ts";
import { CacheNode, drainTimeoutMs } from "../../src/server/cache-node.ts";
import { ConfigError, DEFAULTS, type NodeConfig } from "../../src/server/config.ts";
import { LogSink } from "./support.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

let dir = "";
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "mbc-lifecycle-"));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe("node lifecycle with a snapshot", () => {
  test("close writes the snapshot once; the next open serves what it held", async () => {
    const snapshot = join(dir, "cache.snap");
    const log = new LogSink();
    const first = await CacheNode.open({ port: 0, snapshot, snapshotIntervalMs: 0 }, { logger: log.logger });
    const c1 = new CacheClient({ host: "127.0.0.1", port: first.port });
    for (let i = 0; i < 100; i++) await c1.set("default", `k${i}`, `v${i}`);
    c1.close();
    await first.close();
    expect(log.lines.filter((l) => l.includes("snapshot written")).length).toBe(1);
    await using second = await CacheNode.open({ port: 0, snapshot }, { logger: new LogSink().logger });
    const c2 = new CacheClient({ host: "127.0.0.1", port: second.port });
    expect(new TextDecoder().decode((await c2.get("default", "k42")).value)).toBe("v42");
    c2.close();
  });

  test("a final snapshot that fails moves the previous one aside, and the log says so once: the next start is empty, not stale (review: it also said the previous one was kept)", async () => {
    const snapshot = join(dir, "cache.snap");
    const log = new LogSink();
    const first = await CacheNode.open({ port: 0, snapshot }, { logger: log.logger });
    const c1 = new CacheClient({ host: "127.0.0.1", port: first.port });
    await c1.set("default", "k", "v1");
    await first.snapshotter!.write(); // a periodic write, then a newer value
    await c1.set("default", "k", "v2");
    c1.close();
    mkdirSync(`${snapshot}.tmp-${process.pid}`); // the final write cannot open its temporary file
    await first.close();
    expect(first.finalSnapshotFailed).toBe(true);
    const stale = readdirSync(dir).filter((f) => f.startsWith("cache.snap.stale-"));
    expect(stale.length).toBe(1);
    // One line tells the failure, with the write's error and where the previous snapshot went.
    const errors = log.lines.filter((l) => l.includes(" ERROR "));
    expect(errors.length).toBe(1);
    expect(errors[0]).toContain("the final snapshot failed: the previous one lacks the writes taken since, so it is moved aside");
    expect(errors[0]).toContain(`movedTo=${join(dir, stale[0]!)}`);
    expect(errors[0]).toContain("EEXIST"); // (the temporary file is made exclusively: the directory holds its name)
    expect(log.lines.filter((l) => l.includes("kept"))).toEqual([]);
    rmSync(`${snapshot}.tmp-${process.pid}`, { recursive: true });
    await using second = await CacheNode.open({ port: 0, snapshot }, { logger: new LogSink().logger });
    const c2 = new CacheClient({ host: "127.0.0.1", port: second.port });
    await expect(c2.get("default", "k")).rejects.toMatchObject({ code: 1 }); // not v1, which v2 replaced
    c2.close();
    expect(second.finalSnapshotFailed).toBe(false);
  });

  test("a final snapshot that fails with no previous one says so, once", async () => {
    const snapshot = join(dir, "cache.snap");
    const log = new LogSink();
    const node = await CacheNode.open({ port: 0, snapshot }, { logger: log.logger });
    mkdirSync(`${snapshot}.tmp-${process.pid}`); // the final write cannot open its temporary file
    await node.close();
    expect(node.finalSnapshotFailed).toBe(true);
    const errors = log.lines.filter((l) => l.includes(" ERROR "));
    expect(errors.length).toBe(1);
    expect(errors[0]).toContain("the final snapshot failed; there is no previous one: the next start is empty");
    expect(errors[0]).toContain("EEXIST"); // (the temporary file is made exclusively: the directory holds its name)
  });

  test("abandonSnapshot (a second signal) moves aside a snapshot the node has taken writes since, never a final one in place", async () => {
    const snapshot = join(dir, "cache.snap");
    const first = await CacheNode.open({ port: 0, snapshot }, { logger: new LogSink().logger });
    await first.snapshotter!.write();
    const stale = first.abandonSnapshot();
    expect(stale).toStartWith(`${snapshot}.stale-`);
    expect(readdirSync(dir).sort()).toEqual([stale!.slice(dir.length + 1)]);
    await first.close(); // its final write puts a current snapshot in place …
    expect(first.abandonSnapshot()).toBeUndefined(); // … which a late second signal leaves there
    expect(readdirSync(dir).filter((f) => f === "cache.snap")).toEqual(["cache.snap"]);
  });

  test("open refuses a snapshot when the members can change (a peers file or DNS)", async () => {
    const logger = new LogSink().logger;
    const snapshot = join(dir, "x.snap");
    await expect(CacheNode.open({ port: 0, snapshot, peersFile: join(dir, "peers") }, { logger })).rejects.toThrow("--snapshot cannot be used with --peers-file");
    await expect(CacheNode.open({ port: 0, snapshot, peersDns: "cache:8001" }, { logger })).rejects.toThrow("--snapshot cannot be used with --peers-dns");
  });

  test("start refuses a snapshot or a loaders module, which only open can set up", () => {
    const logger = new LogSink().logger;
    expect(() => CacheNode.start({ port: 0, snapshot: join(dir, "x.snap") }, { logger })).toThrow(ConfigError);
    expect(() => CacheNode.start({ port: 0, loaders: join(dir, "loaders.ts") }, { logger })).toThrow(ConfigError);
  });

  test("loader options on a group with no loader are refused, naming the loaders (review: a misspelt --group took them, and the loader's group ran with the defaults)", () => {
    const logger = new LogSink().logger;
    const loaders = { users: (key: string) => key, products: (key: string) => key };
    const start = (group: Partial<NodeConfig["groups"][number]>, peers?: string[]) => () =>
      CacheNode.start({ port: 0, groups: [{ name: "usres", ttlMs: 0, ...group }], ...(peers ? { peers } : {}) }, { logger, loaders }).close();
    for (const [group, option] of [[{ negativeTtlMs: 10_000 }, "negttl="], [{ loadTimeoutMs: 2000 }, "timeout="], [{ multiLoadWindow: 4 }, "multi="], [{ admission: "always" }, "admit="]] as const) {
      expect(start(group)).toThrow(`--group usres: ${option} apply to a group with a loader, and none is named 'usres' (the loaders are users, products)`);
    }
    expect(() => CacheNode.start({ port: 0, groups: [{ name: "g", ttlMs: 0, negativeTtlMs: 1 }] }, { logger })).toThrow("no loaders are given (--loaders)");
  });

  test("a group without a loader beside loaders is started with a warning; admit=lru-k=K is the mirror's in a cluster", async () => {
    const log = new LogSink();
    const loaders = { users: (key: string) => key };
    const node = CacheNode.start({ port: 0, groups: [{ name: "plain", ttlMs: 0 }, { name: "users", ttlMs: 0, negativeTtlMs: 1000 }] }, { logger: log.logger, loaders });
    await node.close();
    expect(log.lines.filter((l) => l.includes("group without a loader"))).toHaveLength(1);
    expect(log.lines.find((l) => l.includes("group without a loader"))).toContain("plain");
    const clustered = CacheNode.start({ port: 0, peers: ["127.0.0.1:1"], groups: [{ name: "g", ttlMs: 0, admission: "lru-k", admissionK: 3 }] }, { logger: log.logger });
    await clustered.close();
  });

  test("groups whose explicit sizes leave part of --memory to none start with one warning saying how much (review: 48 MiB of --memory 64mb went unused, unsaid)", async () => {
    const MIB = 1024 * 1024;
    const warnings = async (config: Partial<NodeConfig>, loaders?: Record<string, (key: string) => string>): Promise<string[]> => {
      const log = new LogSink();
      await CacheNode.start({ port: 0, ...config }, { logger: log.logger, loaders }).close();
      return log.lines.filter((l) => l.includes("part of --memory is in no group"));
    };
    const unused = await warnings({ memory: 64 * MIB, groups: [{ name: "users", memory: 16 * MIB, ttlMs: 0 }] });
    expect(unused).toHaveLength(1);
    expect(unused[0]).toContain("WARN");
    expect(unused[0]).toContain("memory=64.0MiB groups=16.0MiB unused=48.0MiB");
    expect(unused[0]).toContain("give one group no size to have it take the rest, or lower --memory");
    // Nothing is left over: sizes that sum to --memory, a group with no size, a loader's group with no --group.
    expect(await warnings({ memory: 32 * MIB, groups: [{ name: "a", memory: 16 * MIB, ttlMs: 0 }, { name: "b", memory: 16 * MIB, ttlMs: 0 }] })).toEqual([]);
    expect(await warnings({ memory: 64 * MIB, groups: [{ name: "a", memory: 16 * MIB, ttlMs: 0 }, { name: "b", ttlMs: 0 }] })).toEqual([]);
    expect(await warnings({ memory: 64 * MIB, groups: [{ name: "a", memory: 16 * MIB, ttlMs: 0 }] }, { users: (key) => key })).toEqual([]);
    expect(await warnings({ memory: 64 * MIB })).toEqual([]);
  });

  test("a port in use is named, with its flag and the cause (review: 'Failed to listen at 127.0.0.1' for either port)", async () => {
    const busy = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    try {
      const logger = new LogSink().logger;
      expect(() => CacheNode.start({ port: busy.port }, { logger })).toThrow(
        `cannot listen on 127.0.0.1:${busy.port} for the Thrift port (--port): the address is in use (another process listens on it)`,
      );
      await expect(CacheNode.open({ port: 0, adminPort: busy.port }, { logger })).rejects.toThrow(
        `cannot listen on 127.0.0.1:${busy.port} for the admin port (--admin-port): the address is in use (another process listens on it)`,
      );
    } finally {
      busy.stop(true);
    }
  });

  test("a --host name that does not resolve is told as such (review: 'Failed to listen at no-such-host.invalid', which did not say why)", () => {
    const logger = new LogSink().logger;
    expect(() => CacheNode.start({ port: 0, host: "no-such-host.invalid", insecure: true }, { logger })).toThrow(
      "cannot listen on no-such-host.invalid:0 for the Thrift port (--port): the host name could not be resolved",
    );
    // A name that resolves keeps the bind's cause: 3405803781 is 203.0.113.5 (TEST-NET-3) to getaddrinfo.
    expect(() => CacheNode.start({ port: 0, host: "3405803781", insecure: true }, { logger })).toThrow("no interface of this host has that address");
  });

  test("shutdown waits for loads up to the longest load timeout + 1 s, within 5-30 s", () => {
    const with_ = (loadTimeoutMs: number, groupTimeouts: number[] = []) =>
      drainTimeoutMs({ ...DEFAULTS, loadTimeoutMs, groups: groupTimeouts.map((t, i) => ({ name: `g${i}`, ttlMs: 0, loadTimeoutMs: t })) });
    expect(with_(10_000)).toBe(11_000); // the default: a load's LOAD_FAILED still reaches its caller
    expect(with_(1_000)).toBe(5_000);
    expect(with_(10_000, [20_000, 2_000])).toBe(21_000);
    expect(with_(120_000)).toBe(30_000);
  });
});
