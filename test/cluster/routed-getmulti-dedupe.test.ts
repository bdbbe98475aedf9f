/**
 * A key named twice in one GetMulti is loaded once and counts as one access for LRU-K, also when
 * the GetMulti is routed (its keys owned by several members): the node's own part used to start a
 * load per entry, the second joined the first as another caller, and LRU-K (K = 2) admitted a key
 * one request had asked for.
 */
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import { freePorts } from "../support/node-process.ts";
import { LogSink } from "../server/support.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((x) => x.close()));
});

const utf8 = new TextEncoder();

describe("routed GetMulti naming a key twice", () => {
  test("the node's own key is loaded once, not admitted, and answered", async () => {
    const ports = freePorts(2);
    const ids = ports.map((p) => `127.0.0.1:${p}`);
    const calls = new Map<string, number>();
    const nodes = ports.map((port) => {
      const n = CacheNode.start({ port, host: "127.0.0.1", peers: ids, logLevel: "silent", groups: [{ name: "users", ttlMs: 0 }] }, {
        logger: new LogSink().logger,
        loaders: { users: (key) => (calls.set(key, (calls.get(key) ?? 0) + 1), `user ${key}`) },
      });
      open.push(n);
      return n;
    });
    const a = nodes[0]!;
    const owned = (prefix: string, owner: string): string => {
      for (let i = 0; ; i++) if (a.cluster!.owner(utf8.encode(`${prefix}${i}`), 0, `${prefix}${i}`.length) === owner) return `${prefix}${i}`;
    };
    const self = owned("self-", ids[0]!);
    const peer = owned("peer-", ids[1]!);
    const client = new CacheClient({ host: "127.0.0.1", port: a.port, connections: 1, timeoutMs: 3000 });
    open.push(client);
    const got = await client.getMulti("users", [self, peer, self]);
    expect([...got.keys()].sort()).toEqual([peer, self].sort());
    expect(new TextDecoder().decode(got.get(self)!)).toBe(`user ${self}`);
    expect(new TextDecoder().decode(got.get(peer)!)).toBe(`user ${peer}`);
    expect(calls.get(self)).toBe(1);
    // Seen once: not admitted (as for a single Get of a new key).
    const key = utf8.encode(self);
    expect(a.groups.byName("users")!.store.has(key)).toBe(false);
    // A second request is the second access: now it is admitted.
    await client.getMulti("users", [self, peer]);
    expect(a.groups.byName("users")!.store.has(key)).toBe(true);
  });
});
