/**
 * Read-through over real sockets: a node whose groups have loaders (in-process, or a loaders
 * module in the worker pool), driven by the stock Apache client and raw pipelined frames.
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { join } from "node:path";
import { CacheNode } from "../../src/server/cache-node.ts";
import { MSG, concat } from "../protocol/wire-builder.ts";
import { LogSink, RawSocket, apacheClient, cacheErrorCode, deleteCall, getCall, getMultiCall, replyHeader, setCall, types } from "./support.ts";
import { waitUntil } from "../support/gates.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const FIXTURES = join(import.meta.dir, "../loaders/fixtures/loaders.ts");
const EXAMPLE = join(import.meta.dir, "../../examples/sqlite-loaders.ts");

describe("read-through over the wire", () => {
  test("a miss loads once for many concurrent clients; misses, GetMulti and errors map to CacheError", async () => {
    let calls = 0;
    // negativeTtlMs: the "not found" answers are cached too, and Stats does not count them as items.
    await using node = CacheNode.start({ port: 0, groups: [{ name: "users", ttlMs: 0, admission: "always", negativeTtlMs: 60_000 }] }, {
      logger: new LogSink().logger,
      loaders: {
        users: async (key) => {
          calls++;
          await Bun.sleep(20);
          if (key.startsWith("missing")) return null;
          if (key === "broken") throw new Error("row is corrupt");
          return `user ${key}`;
        },
      },
    });
    const clients = await Promise.all(Array.from({ length: 8 }, () => apacheClient(node.port)));
    try {
      const replies = await Promise.all(
        clients.flatMap((c) => Array.from({ length: 25 }, () => c.client.Get(new types.Request({ group: "users", key: "42" })))),
      );
      expect(new Set(replies.map((r) => r.value.toString()))).toEqual(new Set(["user 42"]));
      expect(calls).toBe(1);
      const c0 = clients[0]!.client;
      await expect(c0.Get(new types.Request({ group: "users", key: "missing-1" }))).rejects.toMatchObject({ code: 1 });
      await expect(c0.Get(new types.Request({ group: "users", key: "broken" }))).rejects.toMatchObject({ code: 6, message: "row is corrupt" });
      const gm = await c0.GetMulti(new types.GetMultiRequest({ group: "users", keys: ["42", "7", "missing-2", "8"] }));
      expect(Object.fromEntries(Object.entries(gm.values as Record<string, Buffer>).map(([k, v]) => [k, v.toString()])))
        .toEqual({ "42": "user 42", "7": "user 7", "8": "user 8" });
      await expect(c0.GetMulti(new types.GetMultiRequest({ group: "users", keys: ["9", "broken"] }))).rejects.toMatchObject({ code: 6 });
      const stats = await c0.Stats(new types.StatsRequest({ group: "users" }));
      expect(Number(stats.itemCount)).toBe(4); // 42, 7, 8, 9 (review: missing-1 and missing-2 counted too)
      expect(node.groups.byName("users")!.store.size).toBe(6);
    } finally {
      for (const c of clients) c.close();
    }
  });

  test("a loader's own TTL ({ value, ttlMs }) is what a Get answers as ttlRemainingMs, over the group's", async () => {
    await using node = CacheNode.start({ port: 0, groups: [{ name: "tokens", ttlMs: 3_600_000, admission: "always" }] }, {
      logger: new LogSink().logger,
      loaders: { tokens: (key) => (key === "plain" ? "p" : { value: `token ${key}`, ttlMs: key === "forever" ? Infinity : 90_000 }) },
    });
    const { client, close } = await apacheClient(node.port);
    try {
      const get = (key: string) => client.Get(new types.Request({ group: "tokens", key }));
      const own = await get("t1");
      expect(own.value.toString()).toBe("token t1");
      expect(Number(own.ttlRemainingMs)).toBeGreaterThan(80_000);
      expect(Number(own.ttlRemainingMs)).toBeLessThanOrEqual(90_000);
      const again = await get("t1"); // a hit now, with the TTL the item was stored with
      expect(Number(again.ttlRemainingMs)).toBeLessThanOrEqual(90_000);
      expect(Number((await get("plain")).ttlRemainingMs)).toBeGreaterThan(3_500_000);
      expect((await get("forever")).ttlRemainingMs ?? null).toBeNull(); // absent: no expiry
      expect((await get("forever")).ttlRemainingMs ?? null).toBeNull();
    } finally {
      close();
    }
  });

  test("pipelined requests behind a slow load are answered in order", async () => {
    await using node = CacheNode.start({ port: 0, groups: [{ name: "default", ttlMs: 0 }, { name: "slow", ttlMs: 0 }] }, {
      logger: new LogSink().logger,
      loaders: { slow: async (key) => {
        await Bun.sleep(30);
        return `slow ${key}`;
      } },
    });
    const raw = await RawSocket.connect(node.port);
    const frames = [getCall(1, "a", "slow"), getCall(2, "x", "default"), getCall(3, "b", "slow"), getCall(4, "y", "default")];
    raw.write(Uint8Array.from(frames.flatMap((f) => [...f])));
    await raw.waitFor(() => raw.frames().length === 4, "four replies");
    expect(raw.frames().map((f) => replyHeader(f).seqid)).toEqual([1, 2, 3, 4]);
    expect(raw.frames().map((f) => replyHeader(f).type)).toEqual([MSG.REPLY, MSG.REPLY, MSG.REPLY, MSG.REPLY]);
    expect(new TextDecoder().decode(raw.frames()[2]!)).toContain("slow b");
    raw.close();
  });

  test("a Delete over the wire while a load of the key runs: the load's value is not cached, the next Get loads anew", async () => {
    let calls = 0;
    const gates: (() => void)[] = [];
    await using node = CacheNode.start({ port: 0, groups: [{ name: "v", ttlMs: 0, admission: "always" }] }, {
      logger: new LogSink().logger,
      loaders: { v: async () => {
        const n = ++calls;
        await new Promise<void>((r) => gates.push(r));
        return `v${n}`;
      } },
    });
    const reader = await RawSocket.connect(node.port);
    const writer = await RawSocket.connect(node.port);
    reader.write(getCall(1, "k", "v"));
    while (calls === 0) await Bun.sleep(2);
    writer.write(deleteCall(2, "k", "v"));
    await writer.waitFor(() => writer.frames().length === 1, "delete reply");
    gates[0]!();
    await reader.waitFor(() => reader.frames().length === 1, "first Get");
    reader.write(getCall(3, "k", "v"));
    for (let i = 0; calls === 1 && i < 500; i++) await Bun.sleep(2);
    expect(calls).toBe(2); // not answered from a cached v1
    gates[1]!();
    await reader.waitFor(() => reader.frames().length === 2, "second Get");
    expect(new TextDecoder().decode(reader.frames()[0]!)).toContain("v1");
    expect(new TextDecoder().decode(reader.frames()[1]!)).toContain("v2");
    reader.close();
    writer.close();
  });

  test("a GetMulti that loads answers the keys it found as of its lookup, even if they are gone by the time the loads end", async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const loading: string[] = [];
    await using node = CacheNode.start({ port: 0, groups: [{ name: "v", ttlMs: 0, admission: "always" }] }, {
      logger: new LogSink().logger,
      loaders: { v: async (key) => (loading.push(key), await gate, `loaded ${key}`) },
    });
    const raw = await RawSocket.connect(node.port);
    raw.write(setCall(1, "hit", new TextEncoder().encode("stored"), "v"));
    await raw.waitFor(() => raw.frames().length === 1, "set reply");
    raw.write(getMultiCall(2, "v", [new TextEncoder().encode("hit"), new TextEncoder().encode("miss")]));
    await waitUntil(() => loading.length === 1, "the load of \"miss\""); // the lookup is done, the load of "miss" waits at the gate
    expect(loading).toEqual(["miss"]);
    const other = await RawSocket.connect(node.port);
    other.write(deleteCall(3, "hit", "v")); // gone before the GetMulti answers (as an eviction would be)
    await other.waitFor(() => other.frames().length === 1, "delete reply");
    release();
    await raw.waitFor(() => raw.frames().length === 2, "GetMulti reply");
    const text = new TextDecoder().decode(raw.frames()[1]!);
    expect(text).toContain("stored");
    expect(text).toContain("loaded miss");
    raw.close();
    other.close();
  });

  test("a key that is not UTF-8 is INVALID_ARGUMENT in a loader group; Set and Get of it still work", async () => {
    const seen: string[] = [];
    await using node = CacheNode.start({ port: 0, groups: [{ name: "v", ttlMs: 0, admission: "always" }] }, {
      logger: new LogSink().logger,
      loaders: { v: (key) => (seen.push(key), `row of ${key}`) },
    });
    const raw = await RawSocket.connect(node.port);
    const a = Uint8Array.of(0xff);
    const b = Uint8Array.of(0xfe);
    raw.write(concat(getCall(1, a, "v"), getCall(2, b, "v"), getMultiCall(3, "v", [a]), setCall(4, b, new TextEncoder().encode("stored"), "v"), getCall(5, b, "v")));
    await raw.waitFor(() => raw.frames().length === 5, "five replies");
    const [ga, gb, gm, set, hit] = raw.frames();
    for (const f of [ga!, gb!, gm!]) expect(cacheErrorCode(f)).toBe(3); // INVALID_ARGUMENT
    expect(new TextDecoder().decode(ga!)).toContain("key is not valid UTF-8");
    expect(cacheErrorCode(set!)).toBe(-1);
    expect(cacheErrorCode(hit!)).toBe(-1);
    expect(new TextDecoder().decode(hit!)).toContain("stored");
    expect(seen).toEqual([]);
    raw.close();
  });

  test("a string with lone surrogates is stored as its UTF-8 with each lone half as U+FFFD, the same bytes from the pool and in-process", async () => {
    // a, U+FFFD, b, U+FFFD, c, U+1F600: what TextEncoder writes (docs/design.md).
    const expected = "61" + "efbfbd" + "62" + "efbfbd" + "63" + "f09f9880";
    await using pooled = await CacheNode.open({ port: 0, loaders: FIXTURES, loaderThreads: 1 }, { logger: new LogSink().logger });
    await using inProcess = CacheNode.start({ port: 0, groups: [{ name: "surrogates", ttlMs: 0, admission: "always" }] }, {
      logger: new LogSink().logger,
      loaders: { surrogates: () => "a\uD800b\uDC00c\uD83D\uDE00" }, // (as the fixture's)
    });
    for (const node of [pooled, inProcess]) {
      const c = await apacheClient(node.port);
      try {
        for (let i = 0; i < 2; i++) { // loaded, then served from the store
          const r = (await c.client.Get(new types.Request({ group: "surrogates", key: "k" }))) as { value: Buffer };
          expect(r.value.toString("hex")).toBe(expected);
        }
      } finally {
        c.close();
      }
    }
  });

  test("worker pool saturation: with 1 thread and a queue of 2, the excess answers OVERLOADED at once, the rest complete", async () => {
    await using node = await CacheNode.open({ port: 0, loaders: FIXTURES, loaderThreads: 1, loaderConcurrency: 1, loaderQueue: 2 }, { logger: new LogSink().logger });
    const clients = await Promise.all(Array.from({ length: 8 }, () => apacheClient(node.port)));
    try {
      const order: string[] = [];
      const calls = clients.map((c, i) => c.client.Get(new types.Request({ group: "slow", key: `${200 + i}` })).then(
        (r: { value: Buffer }) => order.push(`ok ${r.value.toString()}`),
        (e: { code: number }) => order.push(`err ${e.code}`),
      ));
      await Promise.all(calls);
      const ok = order.filter((o) => o.startsWith("ok"));
      const overloaded = order.filter((o) => o === "err 8");
      expect(ok.length).toBe(3);
      expect(overloaded.length).toBe(5);
      // Refusals come at once: every OVERLOADED arrived before the first slow load finished.
      expect(order.slice(0, 5)).toEqual(Array(5).fill("err 8"));
    } finally {
      for (const c of clients) c.close();
    }
  });

  test("--max-loads bounds the pool's loads too: past it a Get is OVERLOADED at once, counted in loads_refused, not by the pool", async () => {
    await using node = await CacheNode.open({ port: 0, loaders: FIXTURES, loaderThreads: 1, maxLoads: 3 }, { logger: new LogSink().logger });
    const clients = await Promise.all(Array.from({ length: 8 }, () => apacheClient(node.port)));
    try {
      const order: string[] = [];
      await Promise.all(clients.map((c, i) => c.client.Get(new types.Request({ group: "slow", key: `${200 + i}` })).then(
        () => order.push("ok"),
        (e: { code: number }) => order.push(`err ${e.code}`),
      )));
      expect(order).toEqual([...Array(5).fill("err 8"), ...Array(3).fill("ok")]);
      expect(node.groups.byName("slow")!.counters.loadsRefused).toBe(5);
      expect(node.pool!.counters.rejected).toBe(0);
    } finally {
      for (const c of clients) c.close();
    }
  });

  test("a loader thread runs the loads of several clients at once (--loader-concurrency, default 16)", async () => {
    // `together 4:x` answers only when four of its loads wait in its thread at once: run one at a
    // time (as every thread did before), the first would hold the thread until its load timeout.
    await using node = await CacheNode.open({ port: 0, loaders: FIXTURES, loaderThreads: 1 }, { logger: new LogSink().logger });
    const clients = await Promise.all(Array.from({ length: 4 }, () => apacheClient(node.port)));
    try {
      const values = await Promise.all(clients.map((c, i) =>
        c.client.Get(new types.Request({ group: "together", key: `4:${i}` })).then((r: { value: Buffer }) => r.value.toString()),
      ));
      expect(values).toEqual(["together 4:0", "together 4:1", "together 4:2", "together 4:3"]);
    } finally {
      for (const c of clients) c.close();
    }
  });

  test("the bun:sqlite example module serves rows through a stock Thrift client", async () => {
    const dir = await import("node:fs/promises").then((fs) => fs.mkdtemp("/tmp/mybuncache-example-"));
    process.env.EXAMPLE_DB = join(dir, "example.sqlite");
    try {
      await using node = await CacheNode.open({ port: 0, loaders: EXAMPLE, loaderThreads: 1 }, { logger: new LogSink().logger });
      expect(node.groups.all().map((g) => g.name).sort()).toEqual(["products", "users"]);
      const { client, close } = await apacheClient(node.port);
      try {
        const row = JSON.parse((await client.Get(new types.Request({ group: "users", key: "7" }))).value.toString());
        expect(row.id).toBe(7);
        await expect(client.Get(new types.Request({ group: "users", key: "999999" }))).rejects.toMatchObject({ code: 1 });
        const product = JSON.parse((await client.Get(new types.Request({ group: "products", key: "3" }))).value.toString());
        expect(product.id).toBe(3);
      } finally {
        close();
      }
    } finally {
      delete process.env.EXAMPLE_DB;
      await import("node:fs/promises").then((fs) => fs.rm(dir, { recursive: true, force: true }));
    }
  });
});


describe("read-through: what loaders return and throw", () => {
  test("a loaded value over the max item size is VALUE_TOO_LARGE for Get and GetMulti, not served unbounded", async () => {
    let calls = 0;
    await using node = CacheNode.start({ port: 0, maxItemSize: 64 * 1024, groups: [{ name: "big", ttlMs: 0, admission: "always" }] }, {
      logger: new LogSink().logger,
      loaders: { big: (key) => (calls++, key === "small" ? "fits" : "x".repeat(100_000)) },
    });
    const { client, close } = await apacheClient(node.port);
    try {
      await expect(client.Get(new types.Request({ group: "big", key: "k" }))).rejects.toMatchObject({ code: 4 });
      await expect(client.GetMulti(new types.GetMultiRequest({ group: "big", keys: ["small", "k"] }))).rejects.toMatchObject({ code: 4 });
      expect((await client.Get(new types.Request({ group: "big", key: "small" }))).value.toString()).toBe("fits");
      const group = node.groups.byName("big")!;
      expect(group.counters.localLoadErrs).toBe(2);
      expect(group.store.stats().items).toBe(1); // "small"
      expect(calls).toBe(3);
    } finally {
      close();
    }
  });

  test("with a negative TTL, a refused oversized value is remembered: the loader is not called again until it expires or the key is written", async () => {
    let calls = 0;
    let now = 1_000_000;
    let size = 100_000;
    await using node = CacheNode.start({ port: 0, maxItemSize: 64 * 1024, groups: [{ name: "big", ttlMs: 0, admission: "always", negativeTtlMs: 5_000 }] }, {
      logger: new LogSink().logger,
      clock: () => now,
      loaders: { big: () => (calls++, "x".repeat(size)) },
    });
    const { client, close } = await apacheClient(node.port);
    const get = () => client.Get(new types.Request({ group: "big", key: "k" }));
    try {
      await expect(get()).rejects.toMatchObject({ code: 4 });
      await expect(get()).rejects.toMatchObject({ code: 4 });
      await expect(client.GetMulti(new types.GetMultiRequest({ group: "big", keys: ["k"] }))).rejects.toMatchObject({ code: 4 });
      expect(calls).toBe(1);
      now += 5_000; // the refusal expires: loaded again, refused again
      await expect(get()).rejects.toMatchObject({ code: 4 });
      expect(calls).toBe(2);
      // A write forgets the refusal: after a Delete, the next Get loads (now a value that fits).
      size = 10;
      await client.Delete(new types.Request({ group: "big", key: "k" }));
      expect((await get()).value.toString()).toBe("x".repeat(10));
      expect(calls).toBe(3);
    } finally {
      close();
    }
  });

  test("a loader answering bytes whose buffer it transferred away is LOAD_FAILED, and nothing is stored (they read as empty: an empty value was stored and served)", async () => {
    await using node = CacheNode.start({ port: 0, groups: [{ name: "g", ttlMs: 0, admission: "always" }] }, {
      logger: new LogSink().logger,
      loaders: {
        g: (key) => {
          const bytes = new TextEncoder().encode(`value of ${key}`);
          structuredClone(bytes.buffer, { transfer: [bytes.buffer] });
          return bytes;
        },
      },
    });
    const { client, close } = await apacheClient(node.port);
    try {
      for (let i = 0; i < 2; i++) {
        await expect(client.Get(new types.Request({ group: "g", key: "k" }))).rejects.toMatchObject({
          code: 6, message: "a loader returned a Uint8Array whose buffer was transferred (detached): its bytes are gone",
        });
      }
      expect(node.groups.byName("g")!.store.stats().items).toBe(0);
    } finally {
      close();
    }
  });

  test("a loader throwing a value String() cannot convert is LOAD_FAILED", async () => {
    await using node = CacheNode.start({ port: 0, groups: [{ name: "odd", ttlMs: 0 }] }, {
      logger: new LogSink().logger,
      loaders: { odd: () => { throw Object.create(null); } },
    });
    const { client, close } = await apacheClient(node.port);
    try {
      await expect(client.Get(new types.Request({ group: "odd", key: "k" }))).rejects.toMatchObject({ code: 6, message: "a value that cannot be printed" });
    } finally {
      close();
    }
  });

  test("a key named twice in one GetMulti is loaded once and counts as one access for LRU-K", async () => {
    let calls = 0;
    await using node = CacheNode.start({ port: 0, groups: [{ name: "users", ttlMs: 0 }] }, {
      logger: new LogSink().logger,
      loaders: { users: (key) => (calls++, `user ${key}`) },
    });
    const { client, close } = await apacheClient(node.port);
    try {
      const gm = await client.GetMulti(new types.GetMultiRequest({ group: "users", keys: ["dup", "dup"] }));
      expect((gm.values as Record<string, Buffer>).dup!.toString()).toBe("user dup");
      expect(calls).toBe(1);
      // Seen once: not admitted by LRU-K (K = 2), as for a single Get.
      expect(node.groups.byName("users")!.store.stats().items).toBe(0);
    } finally {
      close();
    }
  });
});
