/**
 * A Get answered from a load started ahead of its turn (the look-ahead, while the connection
 * waited) after writes of its key that were acknowledged before that turn: the answer is not used,
 * the key is loaded again (review of the look-ahead's staleness fix: an in-place Set of
 * call-runs.ts was not heard of, and a load that ended in "not found" was used anyway).
 */
import { afterEach, expect, test } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import { BUCKETS } from "../../src/cluster/write-stamps.ts";
import { LogSink, RawSocket, getCall } from "./support.ts";
import { until } from "../client/support.ts";
import { Bytes, MSG, T, framed, message } from "../protocol/wire-builder.ts";
import { field, outcome, readReplies } from "./wire-reader.ts";

const open: { close(): unknown }[] = [];
afterEach(async () => {
  for (const x of open.splice(0)) await x.close();
});
const dec = new TextDecoder();
const utf8 = new TextEncoder();

/** values reads each reply's Get value (or its outcome's kind). */
function values(raw: RawSocket): string[] {
  return readReplies(raw.received, "framed").replies.map((r) => {
    const o = outcome(r);
    return o.kind === "success" ? dec.decode(field(o.value, 1, T.STRING) as Uint8Array) : o.kind;
  });
}

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
    await Bun.sleep(100); // K loaded ahead (v1) and stored
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
  await Bun.sleep(80); // K loaded ahead, kept
  db.set("K", "v2");
  await w.delete("default", "K"); // cache-aside: K updated and invalidated first...
  db.set("J", "v2");
  await w.delete("default", "J"); // ...then J
  await raw.waitFor(() => raw.frames().length === 3, "replies");
  expect(values(raw)).toEqual(["cacheError", "v2", "v2"]); // ("slow" is not in the source: NOT_FOUND)
  expect(loads).toBe(4); // slow, K ahead, J again, K again
  raw.close();
}, 20_000);

// Write tracking is by hash bucket (Group.mayCopy): a write of another key of K's bucket also makes
// K's load ahead unused, and K is loaded again at its turn. That redo is the same Get: one miss,
// one `loads`, one LRU-K access (review: it counted a second load and a second access, and K was
// admitted after one client Get).
test("a load ahead done again at its turn (a write of another key of its bucket) counts as one load and one LRU-K access", async () => {
  let loaderCalls = 0;
  const n = CacheNode.start({ port: 0, host: "127.0.0.1", logLevel: "silent" },
    { logger: new LogSink().logger, loaders: { default: async (k: string) => { loaderCalls++; if (k === "slow") await Bun.sleep(300); return `L:${k}`; } } });
  open.push(n);
  const group = n.groups.byName("default")!;
  const store = group.store;
  const bucket = (k: string): number => store.hashOf(utf8.encode(k), 0, utf8.encode(k).length) & (BUCKETS - 1);
  let j = "";
  for (let i = 0; j === ""; i++) if (bucket(`j${i}`) === bucket("K")) j = `j${i}`;
  const w = new CacheClient({ host: "127.0.0.1", port: n.port, timeoutMs: 2000 });
  open.push(w);
  const raw = await RawSocket.connect(n.port);
  raw.write(new Uint8Array([...getCall(1, "slow"), ...getCall(2, "K")]));
  await until(() => group.counters.admissionsRejected === 1); // K loaded ahead: one access, not admitted (LRU-K, K = 2)
  await w.set("default", j, "x"); // another key of K's bucket
  await raw.waitFor(() => raw.frames().length === 2, "replies");
  expect(values(raw)).toEqual(["L:slow", "L:K"]);
  expect(loaderCalls).toBe(3); // slow, K ahead, K again
  const c = group.counters;
  expect({ gets: c.gets, misses: c.misses, loads: c.loads, loadsAhead: c.loadsAhead }).toEqual({ gets: 2, misses: 2, loads: 2, loadsAhead: 1 });
  expect(store.has(utf8.encode("K"), 0, 1)).toBe(false); // one Get of K: not admitted
  // The second Get of K is its second access: admitted.
  expect(dec.decode((await w.get("default", "K")).value)).toBe("L:K");
  expect(store.has(utf8.encode("K"), 0, 1)).toBe(true);
  raw.close();
}, 20_000);
