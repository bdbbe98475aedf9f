/**
 * A routed GetMulti whose answer is already a failure starts no more loads. Its parts (this
 * node's own keys, the fallback for an owner that cannot be reached, an owner's answer) each ran
 * on: one key of this node's failing to load, the fallback still loaded every key of the down
 * owner's part, hundreds of loads on a backend that may be the one failing, and the request then
 * answered the same error (a lone node stops at the first failure: a window of loads at most).
 * Likewise an owner answering LOAD_FAILED left this node loading all of its own part.
 */
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import { ERROR_CODE } from "../../src/protocol/errors.ts";
import { METHOD_PEER_GET_MULTI } from "../../src/protocol/request.ts";
import { StubServer, cacheErrorReply, closedPort, serve } from "../client/support.ts";
import { keysOwnedBy } from "../support/cluster-members.ts";
import { freePorts } from "../support/node-process.ts";
import { LogSink } from "../server/support.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((x) => x.close()));
});

const KEYS = 300;

/** startA starts node A listing `others`, its group "default" loading through `loader`; returns it and a client of it. */
function startA(others: (pa: number) => string[], loader: (key: string) => Promise<string>): { a: CacheNode; ids: string[]; c: CacheClient } {
  const [pa] = freePorts(1) as [number];
  const ids = [`127.0.0.1:${pa}`, ...others(pa)];
  const a = CacheNode.start({ host: "127.0.0.1", port: pa, peers: ids, logLevel: "silent", peerTimeoutMs: 1000 }, {
    logger: new LogSink().logger,
    loaders: { default: loader },
  });
  open.push(a);
  const c = new CacheClient({ host: "127.0.0.1", port: a.port, timeoutMs: 10_000 });
  open.push(c);
  return { a, ids, c };
}

describe("a routed GetMulti that has failed", () => {
  test("a key of this node failing to load: the fallback for a down owner's keys stops too", async () => {
    const loaded: string[] = [];
    const { a, ids, c } = startA(() => [`127.0.0.1:${closedPort()}`], async (key) => {
      loaded.push(key);
      if (key.startsWith("bad")) throw new Error("backend down");
      await Bun.sleep(2);
      return `v:${key}`;
    });
    const [bad] = keysOwnedBy(a, ids[0]!, 1, "bad") as [string];
    const down = keysOwnedBy(a, ids[1]!, KEYS, "d");
    await expect(c.getMulti("default", [bad, ...down])).rejects.toMatchObject({ code: ERROR_CODE.LOAD_FAILED });
    const window = a.groups.byName("default")!.multiLoadWindow;
    // (The fallback starts once the connect to the down owner failed: by then the failure is known.)
    expect(loaded.filter((k) => k.startsWith("d")).length).toBeLessThanOrEqual(window);
    expect(loaded.length).toBeLessThan(KEYS);
  });

  test("an owner answering LOAD_FAILED: this node's own part stops loading", async () => {
    const m = new StubServer();
    open.push({ close: async () => m.close() });
    m.handler = (call, stub) => (call.method === METHOD_PEER_GET_MULTI ? cacheErrorReply(call.name, call.seqid, ERROR_CODE.LOAD_FAILED, "backend down") : serve(call, stub));
    const loaded: string[] = [];
    const { a, ids, c } = startA(() => [`127.0.0.1:${m.port}`], async (key) => {
      loaded.push(key);
      await Bun.sleep(5);
      return `v:${key}`;
    });
    const [theirs] = keysOwnedBy(a, ids[1]!, 1, "m") as [string];
    const mine = keysOwnedBy(a, ids[0]!, KEYS, "a");
    await expect(c.getMulti("default", [theirs, ...mine])).rejects.toMatchObject({ code: ERROR_CODE.LOAD_FAILED, message: "backend down" });
    // A window of loads started before the owner's answer came, a second at most while it travelled.
    expect(loaded.length).toBeLessThanOrEqual(2 * a.groups.byName("default")!.multiLoadWindow);
  });
});
