/**
 * A group's `maxitem=`: its largest item, and with it its slab pages (a small group of small
 * items gets small pages: store-api.ts defaultPageSize). Over the wire, a larger value in that group is
 * VALUE_TOO_LARGE while other groups take it.
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
import { ERROR_CODE } from "../../src/protocol/errors.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import { parseArgs } from "../../src/server/flags.ts";
import { LogSink } from "./support.ts";
import { freePorts } from "../support/node-process.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

describe("--group NAME:SIZE::maxitem=SIZE", () => {
  test("caps that group's items and shrinks its pages; other groups keep --max-item-size", async () => {
    const parsed = parseArgs(["--port", "0", "--memory", "64mb", "--group", "small:16mb::maxitem=64k", "--group", "big:32mb"]);
    if (parsed.kind !== "run") throw new Error(parsed.kind);
    await using node = CacheNode.start({ ...parsed.config, logLevel: "silent" }, { logger: new LogSink().logger });
    expect(node.groups.byName("small")!.store.stats()).toMatchObject({ pageSize: 256 * 1024, maxItemSize: 64 * 1024 });
    expect(node.groups.byName("big")!.store.stats()).toMatchObject({ pageSize: 1024 * 1024, maxItemSize: 1024 * 1024 });
    const c = new CacheClient({ host: "127.0.0.1", port: node.port });
    try {
      const value = new Uint8Array(100 * 1024).fill(7);
      await c.set("big", "k", value);
      expect((await c.get("big", "k")).value).toEqual(value);
      const err = await c.set("small", "k", value).then(() => null, (e: { code: number }) => e);
      expect(err?.code).toBe(ERROR_CODE.VALUE_TOO_LARGE);
      await c.set("small", "k", value.subarray(0, 60 * 1024));
      expect((await c.get("small", "k")).value.length).toBe(60 * 1024);
    } finally {
      await c.close();
    }
  });
});

describe("a mirror's cap", () => {
  test("a value over it is served through the member that forwards it, not kept in its mirror, and not counted as refused", async () => {
    const [pa, pb] = freePorts(2) as [number, number];
    const ids = [`127.0.0.1:${pa}`, `127.0.0.1:${pb}`];
    // 32 MiB groups: a 4 MiB mirror each, which keeps values up to 64 KiB.
    const start = (port: number) => CacheNode.start(
      { port, host: "127.0.0.1", peers: ids, logLevel: "silent", memory: 32 * 1024 * 1024, groups: [{ name: "g", ttlMs: 0 }] },
      { logger: new LogSink().logger },
    );
    await using a = start(pa);
    await using b = start(pb);
    const owned = (prefix: string): string => {
      for (let i = 0; ; i++) if (a.cluster!.owner(new TextEncoder().encode(`${prefix}${i}`), 0, `${prefix}${i}`.length) === ids[1]) return `${prefix}${i}`;
    };
    const [big, small] = [owned("big"), owned("small")];
    const c = new CacheClient({ host: "127.0.0.1", port: pa });
    try {
      const bigValue = new Uint8Array(100 * 1024).fill(1);
      await c.set("g", big, bigValue);
      await c.set("g", small, "small value");
      for (let i = 0; i < 3; i++) {
        expect((await c.get("g", big)).value).toEqual(bigValue);
        expect(new TextDecoder().decode((await c.get("g", small)).value)).toBe("small value");
      }
      const mirror = a.groups.byName("g")!.mirror!;
      expect(mirror.stats().maxItemSize).toBe(64 * 1024);
      expect(mirror.has(new TextEncoder().encode(small))).toBe(true); // mirrored after two reads (LRU-K)
      expect(mirror.has(new TextEncoder().encode(big))).toBe(false);
      expect(mirror.stats().tooLarge).toBe(0);
      expect(b.groups.byName("g")!.store.has(new TextEncoder().encode(big))).toBe(true);
    } finally {
      await c.close();
    }
  });
});
