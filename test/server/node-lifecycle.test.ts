/**
 * A node's life around its snapshot: `open` loads it before listening, `close` writes it once
 * (not twice), and `start`, which cannot load it first, refuses a snapshot or a loaders module
 * instead of silently running without them.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CacheClient } from "../../src/client/cache-client.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import { ConfigError } from "../../src/server/config.ts";
import { LogSink } from "./support.ts";

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

  test("start refuses a snapshot or a loaders module, which only open can set up", () => {
    const logger = new LogSink().logger;
    expect(() => CacheNode.start({ port: 0, snapshot: join(dir, "x.snap") }, { logger })).toThrow(ConfigError);
    expect(() => CacheNode.start({ port: 0, loaders: join(dir, "loaders.ts") }, { logger })).toThrow(ConfigError);
  });
});
