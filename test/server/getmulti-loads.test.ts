/**
 * A GetMulti's loads over real sockets: a few at a time (so a cold GetMulti larger than the
 * loader pool completes, and leaves the pool room for other clients), what the loaded values
 * take held against the reply limit and the server's buffer cap as they come, and no more loads
 * started once the request is lost.
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { connect } from "node:net";
import { join } from "node:path";
import { DEFAULT_MULTI_LOAD_WINDOW } from "../../src/cluster/group.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import { LogSink, OverlapLoader, RawSocket, apacheClient, cacheErrorCode, getMultiCall, types } from "./support.ts";
import { waitUntil } from "../support/gates.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const FIXTURES = join(import.meta.dir, "../loaders/fixtures/loaders.ts");

/** keyRange is the keys from..to-1 as strings. */
function keyRange(from: number, to: number): string[] {
  return Array.from({ length: to - from }, (_, i) => `${from + i}`);
}

describe("GetMulti loads", () => {
  test("a cold GetMulti of more keys than the loader pool holds completes, and other clients' loads still get in", async () => {
    // One thread and a queue of 2: three loads at most. Before, each missing key took a place at
    // once, and a GetMulti of more than three cold keys was refused OVERLOADED.
    await using node = await CacheNode.open({ port: 0, loaders: FIXTURES, loaderThreads: 1, loaderConcurrency: 1, loaderQueue: 2 }, { logger: new LogSink().logger });
    const a = await apacheClient(node.port);
    const b = await apacheClient(node.port);
    try {
      const keys = keyRange(20, 32); // `slow` sleeps its key in ms: 12 loads of 20-31 ms, ~300 ms one at a time
      const multi = a.client.GetMulti(new types.GetMultiRequest({ group: "slow", keys }));
      await waitUntil(() => node.pool!.counters.submitted > 0, "the GetMulti's loads to be under way");
      const other = await b.client.Get(new types.Request({ group: "slow", key: "5" }));
      expect(other.value.toString()).toBe("slept 5");
      const got = (await multi).values as Map<string, Buffer> | Record<string, Buffer>;
      const entries = got instanceof Map ? [...got.entries()] : Object.entries(got);
      expect(entries.map(([k, v]) => [k, v.toString()]).sort()).toEqual(keys.map((k) => [k, `slept ${k}`]).sort());
      expect(node.pool!.counters.rejected).toBe(0); // nothing was refused
    } finally {
      a.close();
      b.close();
    }
  });

  test("a GetMulti on a pool full of other clients' loads waits for a place instead of failing OVERLOADED", async () => {
    // One thread and a queue of 5: six places, a window of three for one GetMulti.
    await using node = await CacheNode.open({ port: 0, loaders: FIXTURES, loaderThreads: 1, loaderConcurrency: 1, loaderQueue: 5 }, { logger: new LogSink().logger });
    const others = await Promise.all(Array.from({ length: 4 }, () => apacheClient(node.port)));
    const a = await apacheClient(node.port);
    try {
      // Four other clients' loads take four places (100 ms each, one after another).
      const busy = others.map((c, n) => c.client.Get(new types.Request({ group: "slow", key: `${100 + n}` })));
      await waitUntil(() => node.pool!.counters.submitted === 4, "the four other loads to take their places");
      // The GetMulti's first two loads take the last two places; its third is refused, and it is
      // tried again once one of the first two ends (before, the whole GetMulti failed at once).
      const keys = keyRange(30, 35);
      const got = (await a.client.GetMulti(new types.GetMultiRequest({ group: "slow", keys }))).values as Map<string, Buffer> | Record<string, Buffer>;
      const entries = got instanceof Map ? [...got.entries()] : Object.entries(got);
      expect(entries.map(([k, v]) => [k, v.toString()]).sort()).toEqual(keys.map((k) => [k, `slept ${k}`]).sort());
      expect(node.pool!.counters.rejected).toBeGreaterThan(0); // a refusal happened, and was waited out
      for (const r of await Promise.all(busy)) expect(r.value.toString()).toStartWith("slept 10");
    } finally {
      for (const c of [...others, a]) c.close();
    }
  });

  test("a group's multi= option sets how many loads one GetMulti runs at once", async () => {
    const loader = new OverlapLoader(5);
    await using node = CacheNode.start({ port: 0, groups: [{ name: "g", ttlMs: 0, multiLoadWindow: 3 }] }, {
      logger: new LogSink().logger,
      loaders: { g: loader.load },
    });
    expect(node.groups.all().find((g) => g.name === "g")!.multiLoadWindow).toBe(3);
    const { client, close } = await apacheClient(node.port);
    try {
      const keys = keyRange(0, 20);
      const got = (await client.GetMulti(new types.GetMultiRequest({ group: "g", keys }))).values as Map<string, Buffer> | Record<string, Buffer>;
      expect((got instanceof Map ? got.size : Object.keys(got).length)).toBe(20);
      expect(loader.most).toBe(3);
    } finally {
      close();
    }
  });

  test("loaded values are held against the reply limit as they come: past it, no more loads start", async () => {
    let calls = 0;
    const valueBytes = 64 * 1024;
    // A 1 MiB frame limit: 15 values of 64 KiB fit a reply (16 entries take 1,048,752 B); 100 are asked for.
    await using node = CacheNode.start({ port: 0, maxFrameSize: 1024 * 1024, groups: [{ name: "big", ttlMs: 0, admission: "always" }] }, {
      logger: new LogSink().logger,
      loaders: {
        big: async (key) => {
          calls++;
          await Bun.sleep(2);
          return new Uint8Array(valueBytes).fill(key.charCodeAt(0));
        },
      },
    });
    const { client, close } = await apacheClient(node.port);
    try {
      await expect(client.GetMulti(new types.GetMultiRequest({ group: "big", keys: keyRange(100, 200) }))).rejects.toMatchObject({ code: 4 });
      // Loads stop once the values passed the limit: the 16th fails the request, and each value
      // before it started one more load (a window was under way): 15 + 32 = 47 calls. Before, all
      // 100 ran and were held until the last came.
      expect(calls).toBeGreaterThan(16);
      expect(calls).toBeLessThanOrEqual(16 + DEFAULT_MULTI_LOAD_WINDOW);
      // The connection goes on, and what the failed GetMulti held is counted out.
      expect((await client.Get(new types.Request({ group: "big", key: "100" }))).value.length).toBe(valueBytes);
      expect(node.server.counters.bufferedBytes).toBe(0);
    } finally {
      close();
    }
  });

  test("what a waiting GetMulti holds counts toward --max-buffered: past it, the connection closes and its loads stop", async () => {
    let calls = 0;
    const valueBytes = 64 * 1024;
    const sink = new LogSink();
    await using node = CacheNode.start({ port: 0, maxBufferedBytes: 512 * 1024, groups: [{ name: "big", ttlMs: 0, admission: "always" }] }, {
      logger: sink.logger,
      loaders: {
        big: async (key) => {
          calls++;
          await Bun.sleep(5);
          return new Uint8Array(valueBytes).fill(key.charCodeAt(0));
        },
      },
    });
    const greedy = await RawSocket.connect(node.port);
    const other = await apacheClient(node.port);
    try {
      // 200 values of 64 KiB (12.8 MiB, within the 16 MB frame limit) against a 512 KiB cap.
      greedy.write(getMultiCall(1, "big", keyRange(1000, 1200).map((k) => new TextEncoder().encode(k))));
      await greedy.waitFor(() => greedy.isClosed, "the cap to close the greedy connection");
      // What it got, if anything, is the refusal of its GetMulti (OVERLOADED), never values.
      for (const f of greedy.frames()) expect(cacheErrorCode(f)).toBe(8);
      expect(node.server.counters.bufferCapClosed).toBe(1);
      expect(sink.lines.some((l) => l.includes("connection buffers over the cap"))).toBe(true);
      // It was closed while it loaded, not once all 200 values were in, and its loads stopped:
      // the 8th value puts it over the cap (8 x 65,548 B > 512 KiB), and each before it started
      // one more load: 7 + 32 = 39 calls.
      await Bun.sleep(100);
      expect(calls).toBeLessThanOrEqual(8 + DEFAULT_MULTI_LOAD_WINDOW);
      // Everyone else is served, and nothing stays counted.
      expect((await other.client.Get(new types.Request({ group: "big", key: "1000" }))).value.length).toBe(valueBytes);
      expect(node.server.counters.bufferedBytes).toBe(0);
    } finally {
      greedy.close();
      other.close();
    }
  });

  test("a client that resets its connection stops its GetMulti's loads, also when they find nothing", async () => {
    let calls = 0;
    await using node = CacheNode.start({ port: 0, groups: [{ name: "none", ttlMs: 0 }] }, {
      logger: new LogSink().logger,
      loaders: {
        none: async () => {
          calls++;
          await Bun.sleep(20);
          return null; // not found: nothing is held, so only the question before each load can tell
        },
      },
    });
    // (a FIN would only half-close: what was sent is still answered; a reset ends the connection)
    const socket = connect({ port: node.port, host: "127.0.0.1" });
    await new Promise<void>((resolve) => socket.on("connect", () => resolve()));
    socket.write(getMultiCall(1, "none", keyRange(0, 400).map((k) => new TextEncoder().encode(k))));
    await Bun.sleep(30); // the first window of loads is under way, the second starting
    socket.resetAndDestroy();
    for (const end = Date.now() + 3000; node.server.connectionCount > 0 && Date.now() < end;) await Bun.sleep(2);
    expect(node.server.connectionCount).toBe(0);
    await Bun.sleep(150); // long enough for several more windows, had it gone on
    const after = calls;
    expect(after).toBeLessThanOrEqual(3 * DEFAULT_MULTI_LOAD_WINDOW);
    await Bun.sleep(60);
    expect(calls).toBe(after); // and none start later
  });
});
