/**
 * A Get answered from a load started ahead of its turn (the look-ahead, while the connection
 * waited) after writes of its key that were acknowledged before that turn: the answer is not used,
 * the key is loaded again (review of the look-ahead's staleness fix: an in-place Set of
 * call-runs.ts was not heard of, and a load that ended in "not found" was used anyway).
 */
import { afterEach, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import { BUCKETS } from "../../src/cluster/write-stamps.ts";
import { LogSink, RawSocket, getCall } from "./support.ts";
import { until } from "../client/support.ts";
import { Bytes, MSG, T, framed, message } from "../protocol/wire-builder.ts";
import { getValues } from "./wire-reader.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const open: { close(): unknown }[] = [];
afterEach(async () => {
  for (const x of open.splice(0)) await x.close();
});
const dec = new TextDecoder();
const utf8 = new TextEncoder();

/** values reads each reply's Get value (or its outcome's kind). */
const values = (raw: RawSocket): string[] => getValues(raw.received);

/** Apache layout Set (field 4: ttl seconds): what CallRuns' fast path serves. */
function setCallTtl(seqid: number, key: string, value: string, ttlSec: number): Uint8Array {
  const body = new Bytes().field(T.STRUCT, 1).field(T.STRING, 1).str("default").field(T.STRING, 2).str(key)
    .field(T.STRING, 3).str(utf8.encode(value)).field(T.I64, 4).i64(ttlSec).stop().stop().bytes();
  return framed(message(MSG.CALL, "Set", seqid, body));
}

for (const how of ["fast-path raw Set ttl=1s", "general-path CacheClient Set ttlMs=1000"] as const) {
  test(`a Set of K (${how}), acknowledged and read before the Get's turn, then expired: the Get is not answered the value loaded ahead`, async () => {
    const db = new Map([["K", "v1"]]);
    const n = CacheNode.start({ port: 0, host: "127.0.0.1", logLevel: "silent", groups: [{ name: "default", ttlMs: 0, admission: "always" }] },
      { logger: new LogSink().logger, loaders: { default: async (k: string) => { if (k === "slow") await Bun.sleep(1600); return db.get(k) ?? `L:${k}`; } } });
    open.push(n);
    const raw = await RawSocket.connect(n.port);
    raw.write(new Uint8Array([...getCall(1, "slow"), ...getCall(2, "K")]));
    await until(() => n.groups.byName("default")!.store.has(utf8.encode("K"))); // K loaded ahead (v1) and stored
    db.set("K", "v2");
    if (how.startsWith("fast")) {
      const w = await RawSocket.connect(n.port);
      w.write(getCall(9, "K"));
      await w.waitFor(() => w.frames().length === 1, "get");
      w.write(setCallTtl(1, "K", "v2", 1));
      await w.waitFor(() => w.frames().length === 2, "set ack");
      w.close();
    } else {
      const w = new CacheClient({ host: "127.0.0.1", port: n.port, timeoutMs: 2000 });
      open.push(w);
      await w.set("default", "K", "v2", 1000);
    }
    const c = new CacheClient({ host: "127.0.0.1", port: n.port, timeoutMs: 2000 });
    open.push(c);
    expect(dec.decode((await c.get("default", "K")).value)).toBe("v2"); // acknowledged, and read so

    await raw.waitFor(() => raw.frames().length === 2, "replies");
    expect(values(raw)).toEqual(["L:slow", "v2"]);
    raw.close();
  }, 20_000);
}

// Cache-aside: K and then J are updated in the source and deleted from the cache, each
// acknowledged, while K's load ahead (of v1, or of "not found") is kept; J reads v2 at its turn.
test.each([["v1", "v1"], ["not found", undefined]] as const)("a key loaded ahead as %s, then written and invalidated before another key the connection reads new: loaded again at its turn", async (_, before) => {
  const db = new Map<string, string>([["J", "v1"]]);
  if (before !== undefined) db.set("K", before);
  let loads = 0;
  const n = CacheNode.start({ port: 0, host: "127.0.0.1", logLevel: "silent" },
    { logger: new LogSink().logger, loaders: { default: async (k: string) => { loads++; if (k === "slow") await Bun.sleep(300); return db.get(k) ?? null; } } });
  open.push(n);
  const w = new CacheClient({ host: "127.0.0.1", port: n.port, timeoutMs: 2000 });
  open.push(w);
  await w.set("default", "J", "v1"); // J cached: not loaded ahead
  const raw = await RawSocket.connect(n.port);
  raw.write(new Uint8Array([...getCall(1, "slow"), ...getCall(2, "J"), ...getCall(3, "K")]));
  await until(() => loads === 2); // K loaded ahead (after "slow"; J is cached), kept
  db.set("K", "v2");
  await w.delete("default", "K"); // cache-aside: K updated and invalidated first...
  db.set("J", "v2");
  await w.delete("default", "J"); // ...then J
  await raw.waitFor(() => raw.frames().length === 3, "replies");
  expect(values(raw)).toEqual(["cacheError", "v2", "v2"]); // ("slow" is not in the source: NOT_FOUND)
  expect(loads).toBe(4); // slow, K ahead, J again, K again
  raw.close();
}, 20_000);

// Write tracking is by hash bucket (WriteStamps): writes of other keys of K's bucket may make K's
// load ahead unused, and K is loaded again at its turn. That redo is the same Get: one miss, one
// `loads`, one LRU-K access (review: it counted a second load and a second access, and K was
// admitted after one client Get). One other key's write does not cost it any more.

/** bucketNode starts a lone node whose loader counts its calls, with the keys `j<i>` that share K's write bucket. */
function bucketNode(): { n: CacheNode; calls: () => number; sharing: (count: number) => string[] } {
  let calls = 0;
  const n = CacheNode.start({ port: 0, host: "127.0.0.1", logLevel: "silent" },
    { logger: new LogSink().logger, loaders: { default: async (k: string) => { calls++; if (k === "slow") await Bun.sleep(300); return `L:${k}`; } } });
  open.push(n);
  const store = n.groups.byName("default")!.store;
  const bucket = (k: string): number => store.hashOf(utf8.encode(k), 0, utf8.encode(k).length) & (BUCKETS - 1);
  const sharing = (count: number): string[] => {
    const keys: string[] = [];
    for (let i = 0; keys.length < count; i++) if (bucket(`j${i}`) === bucket("K")) keys.push(`j${i}`);
    return keys;
  };
  return { n, calls: () => calls, sharing };
}

for (const others of [1, 2]) {
  test(`a load ahead, then writes of ${others} other key(s) of its write bucket: ${others === 1 ? "used" : "done again at its turn, as one load and one LRU-K access"}`, async () => {
    const { n, calls, sharing } = bucketNode();
    const group = n.groups.byName("default")!;
    const w = new CacheClient({ host: "127.0.0.1", port: n.port, timeoutMs: 2000 });
    open.push(w);
    const raw = await RawSocket.connect(n.port);
    raw.write(new Uint8Array([...getCall(1, "slow"), ...getCall(2, "K")]));
    await until(() => group.counters.admissionsRejected === 1); // K loaded ahead: one access, not admitted (LRU-K, K = 2)
    for (const j of sharing(others)) await w.set("default", j, "x");
    await raw.waitFor(() => raw.frames().length === 2, "replies");
    expect(values(raw)).toEqual(["L:slow", "L:K"]);
    expect(calls()).toBe(others === 1 ? 2 : 3); // slow, K ahead (and K again)
    const c = group.counters;
    expect({ gets: c.gets, misses: c.misses, loads: c.loads, loadsAhead: c.loadsAhead }).toEqual({ gets: 2, misses: 2, loads: 2, loadsAhead: 1 });
    const k = utf8.encode("K");
    expect(group.store.has(k, 0, 1)).toBe(false); // one Get of K: not admitted
    expect(dec.decode((await w.get("default", "K")).value)).toBe("L:K"); // the second Get of K, its second access:
    expect(group.store.has(k, 0, 1)).toBe(true); // admitted
    raw.close();
  }, 20_000);
}
