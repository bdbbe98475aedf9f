/**
 * Look-ahead (src/server/look-ahead.ts): while a connection waits for a read's load, the Gets
 * queued behind it start their loads at once, so cold keys pipelined on one connection (our peer
 * client's PeerGets among them) load side by side instead of one after another. The replies must
 * be exactly those of serving each Get in turn, in order; the loader is called once per key; a
 * write of the connection is seen by its later reads; another client's write is not undone.
 *
 * The loader here counts its calls per key and holds every call at a gate the test opens: with
 * the look-ahead, all the keys' calls are made while the first Get still waits.
 */
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { join } from "node:path";
import { CacheClient } from "../../src/client/cache-client.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import type { NodeConfig } from "../../src/server/config.ts";
import { Prng, testSeed } from "../support/prng.ts";
import { LogSink, RawSocket, deleteCall, getCall, getMultiCall, replyHeader, setCall } from "./support.ts";
import { RequestDecoder } from "../../src/protocol/request-decoder.ts";
import { T, type TransportName, concat, theader, ttheader } from "../protocol/wire-builder.ts";
import { field, outcome, readReplies } from "./wire-reader.ts";
import { GatedLoader, waitUntil } from "../support/gates.ts";
import { keysOwnedBy, startMembers } from "../support/cluster-members.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((x) => x.close()));
});

const utf8 = new TextEncoder();
const FIXTURES = join(import.meta.dir, "../loaders/fixtures/loaders.ts");
const text = (b: Uint8Array): string => new TextDecoder().decode(b);

function gatedNode(loader: GatedLoader, config: Partial<NodeConfig> = {}): CacheNode {
  const node = CacheNode.start(
    { port: 0, logLevel: "silent", groups: [{ name: "default", ttlMs: 0 }], ...config },
    { logger: new LogSink().logger, loaders: { default: loader.load } },
  );
  open.push(node);
  return node;
}

/** values lists each reply's Get value (or its outcome kind, for anything else). */
function values(received: Uint8Array, transport: TransportName = "framed"): string[] {
  return readReplies(received, transport).replies.map((r) => {
    const o = outcome(r);
    if (o.kind !== "success") return o.kind;
    return o.value.get(1)?.[0] === T.STRING ? text(field(o.value, 1, T.STRING) as Uint8Array) : "ok"; // a Set's reply: a bool
  });
}

/** waitingOnK0 starts a gatedNode and a connection whose Get of k0 waits at the gate. */
async function waitingOnK0(loader: GatedLoader): Promise<{ node: CacheNode; raw: RawSocket }> {
  const node = gatedNode(loader);
  const raw = await RawSocket.connect(node.port);
  raw.write(getCall(1, "k0"));
  await waitUntil(() => loader.calls.size === 1, "the first load");
  return { node, raw };
}

/** expectLoadedOnce opens the gate and checks `raw` gets k0…k(n-1), each loaded once, in order. */
async function expectLoadedOnce(loader: GatedLoader, raw: RawSocket, n: number): Promise<void> {
  loader.open();
  await raw.waitFor(() => raw.frames().length === n, "every reply");
  expect(values(raw.received)).toEqual(keys(n).map((k) => `loaded ${k} #1`));
  raw.close();
}

/** slowLoaderNode starts a node whose loader answers `loaded <key>` after 0 to `maxMs` - 1 ms. */
function slowLoaderNode(rng: Prng, maxMs: number, admission: "lru-k" | "always"): CacheNode {
  const loader = async (key: string): Promise<string> => {
    await Bun.sleep(rng.int(maxMs));
    return `loaded ${key}`;
  };
  const node = CacheNode.start(
    { port: 0, logLevel: "silent", groups: [{ name: "default", ttlMs: 0, admission }] },
    { logger: new LogSink().logger, loaders: { default: loader } },
  );
  open.push(node);
  return node;
}

const keys = (n: number, prefix = "k"): string[] => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

describe("Gets pipelined behind a load", () => {
  test("load side by side: every key's loader call is made while the first still waits; replies in order, one call per key", async () => {
    const loader = new GatedLoader();
    const node = gatedNode(loader); // LRU-K admission: a first load is not stored, so a second call would show
    const raw = await RawSocket.connect(node.port);
    const ks = keys(10);
    raw.write(concat(...ks.map((k, i) => getCall(i + 1, k))));
    await waitUntil(() => loader.calls.size === 10, "every key's load to start before the first is answered");
    expect(raw.frames().length).toBe(0);
    loader.open();
    await raw.waitFor(() => raw.frames().length === 10, "every reply");
    expect(raw.frames().map((f) => replyHeader(f).seqid)).toEqual(ks.map((_, i) => i + 1));
    expect(values(raw.received)).toEqual(ks.map((k) => `loaded ${k} #1`));
    expect([...loader.calls.values()]).toEqual(ks.map(() => 1));
    expect(node.groups.byName("default")!.counters.loadsAhead).toBe(9);
    raw.close();
  });

  test("Gets that arrive in later chunks while the first waits start too", async () => {
    const loader = new GatedLoader();
    const { raw } = await waitingOnK0(loader);
    for (let i = 1; i < 6; i++) {
      raw.write(getCall(i + 1, `k${i}`));
      await waitUntil(() => loader.calls.size === i + 1, `the load of k${i}, sent on its own`);
    }
    await expectLoadedOnce(loader, raw, 6);
  });

  test("Gets cut anywhere by the chunks that bring them start too (a frame cut by a chunk's end is completed by the next)", async () => {
    const loader = new GatedLoader();
    const { node, raw } = await waitingOnK0(loader);
    const rest = concat(...keys(6).slice(1).map((k, i) => getCall(i + 2, k)));
    for (let at = 0; at < rest.length; at += 23) { // (at most 16 chunks: more would pause reading)
      const before = node.server.counters.bytesIn;
      raw.write(rest.subarray(at, Math.min(rest.length, at + 23)));
      await waitUntil(() => node.server.counters.bytesIn > before, "the piece to arrive on its own");
    }
    await waitUntil(() => loader.calls.size === 6, "every load, while the first still waits");
    expect(raw.frames().length).toBe(0);
    await expectLoadedOnce(loader, raw, 6);
  });

  test("the buffered transport: the plain Gets after the waiting one in its chunk start", async () => {
    const loader = new GatedLoader();
    const node = gatedNode(loader);
    const raw = await RawSocket.connect(node.port);
    const ks = keys(5);
    raw.write(concat(...ks.map((k, i) => getCall(i + 1, k).subarray(4)))); // unframed: the messages alone
    await waitUntil(() => loader.calls.size === 5, "every key's load");
    loader.open();
    await raw.waitFor(() => readReplies(raw.received, "buffered").replies.length === 5, "every reply");
    expect(values(raw.received, "buffered")).toEqual(ks.map((k) => `loaded ${k} #1`));
    raw.close();
  });

  for (const [name, wrap] of [["theader", theader], ["ttheader", ttheader]] as const) {
    test(`the ${name} transport (Apache's THeader, Kitex's TTHeader): the Gets behind the waiting one start, replies in the same transport`, async () => {
      const loader = new GatedLoader();
      const node = gatedNode(loader);
      const raw = await RawSocket.connect(node.port);
      const ks = keys(5);
      const frames = ks.map((k, i) => wrap(getCall(i + 1, k).subarray(4))); // the message, in a header frame
      raw.write(frames[0]!);
      await waitUntil(() => loader.calls.size === 1, "the first load");
      raw.write(concat(...frames.slice(1)));
      await waitUntil(() => loader.calls.size === 5, "every key's load while the first waits");
      loader.open();
      await raw.waitFor(() => readReplies(raw.received, name).replies.length === 5, "every reply");
      expect(values(raw.received, name)).toEqual(ks.map((k) => `loaded ${k} #1`));
      raw.close();
    });
  }

  test("a write of the connection ends it: the Gets after the write read the write, and are not started before it", async () => {
    const loader = new GatedLoader();
    const node = gatedNode(loader);
    const raw = await RawSocket.connect(node.port);
    raw.write(concat(getCall(1, "a"), getCall(2, "b"), setCall(3, "b", utf8.encode("written b")), getCall(4, "b"), getCall(5, "c")));
    await waitUntil(() => loader.calls.size === 2, "the loads of a and b");
    await Bun.sleep(20);
    expect([...loader.calls.keys()].sort()).toEqual(["a", "b"]); // c comes after the write
    loader.open();
    await raw.waitFor(() => raw.frames().length === 5, "every reply");
    expect(values(raw.received)).toEqual(["loaded a #1", "loaded b #1", "ok", "written b", "loaded c #1"]);
    raw.close();
  });

  test("another client's write during a load started ahead wins; a delete makes the Get load again", async () => {
    const loader = new GatedLoader();
    const node = gatedNode(loader);
    const raw = await RawSocket.connect(node.port);
    raw.write(concat(getCall(1, "a"), getCall(2, "b"), getCall(3, "c")));
    await waitUntil(() => loader.calls.size === 3, "the loads of a, b and c");
    const other = await RawSocket.connect(node.port);
    other.write(concat(setCall(1, "b", utf8.encode("fresh b")), deleteCall(2, "c")));
    await other.waitFor(() => other.frames().length === 2, "the other client's replies");
    loader.open();
    await raw.waitFor(() => raw.frames().length === 3, "every reply");
    // b: the value written while its load ran; c: deleted while its load ran, so loaded again.
    expect(values(raw.received)).toEqual(["loaded a #1", "fresh b", "loaded c #2"]);
    expect(loader.calls.get("c")).toBe(2);
    raw.close();
    other.close();
  });

  test("a Get answered from the store in a run takes what was started for it: a later Get of the key after a delete loads again", async () => {
    const loader = new GatedLoader();
    const node = gatedNode(loader, { groups: [{ name: "default", ttlMs: 0, admission: "always" }] });
    const raw = await RawSocket.connect(node.port);
    // a waits; b is loaded ahead (and stored: admission "always"), so its Get is a hit served in
    // a run; "later" waits at the second gate while another client deletes b; then b again.
    raw.write(concat(getCall(1, "a"), getCall(2, "b"), getCall(3, "later"), getCall(4, "b")));
    await waitUntil(() => loader.calls.size === 3, "the loads of a, b and later");
    loader.open();
    await raw.waitFor(() => raw.frames().length === 2, "the replies of a and b");
    const other = await RawSocket.connect(node.port);
    other.write(deleteCall(1, "b"));
    await other.waitFor(() => other.frames().length === 1, "the delete");
    loader.openLater();
    await raw.waitFor(() => raw.frames().length === 4, "every reply");
    expect(values(raw.received)).toEqual(["loaded a #1", "loaded b #1", "loaded later #1", "loaded b #2"]);
    raw.close();
    other.close();
  });

  test("large values loaded ahead together (past the 1 MiB a connection keeps) are all kept: one loader call per key", async () => {
    const calls = new Map<string, number>();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const loader = async (key: string): Promise<string> => {
      calls.set(key, (calls.get(key) ?? 0) + 1);
      await gate;
      return key.repeat(400_000 / key.length);
    };
    const node = CacheNode.start({ port: 0, logLevel: "silent", groups: [{ name: "default", ttlMs: 0 }] }, { logger: new LogSink().logger, loaders: { default: loader } });
    open.push(node);
    const raw = await RawSocket.connect(node.port);
    raw.write(concat(getCall(1, "a"), getCall(2, "b"), getCall(3, "c"), getCall(4, "d")));
    await waitUntil(() => calls.size === 4, "every load");
    release();
    await raw.waitFor(() => raw.frames().length === 4, "every reply");
    expect(values(raw.received).map((v) => [v.length, v[0]])).toEqual(["a", "b", "c", "d"].map((k) => [400_000, k]));
    expect([...calls.values()]).toEqual([1, 1, 1, 1]);
    raw.close();
  });

  test("errors and NOT_FOUND loaded ahead are answered as in turn", async () => {
    const loader = async (key: string): Promise<string | null> => {
      await Bun.sleep(key === "first" ? 30 : 0);
      if (key === "missing") return null;
      if (key === "broken") throw new Error("loader broke");
      return `loaded ${key}`;
    };
    const node = CacheNode.start({ port: 0, logLevel: "silent", groups: [{ name: "default", ttlMs: 0 }] }, { logger: new LogSink().logger, loaders: { default: loader } });
    open.push(node);
    const raw = await RawSocket.connect(node.port);
    raw.write(concat(getCall(1, "first"), getCall(2, "missing"), getCall(3, "broken"), getCall(4, "ok")));
    await raw.waitFor(() => raw.frames().length === 4, "every reply");
    const replies = readReplies(raw.received, "framed").replies.map(outcome);
    expect(replies.map((o) => o.kind)).toEqual(["success", "cacheError", "cacheError", "success"]);
    expect(replies.slice(1, 3).map((o) => (o.kind === "cacheError" ? [o.code, o.message] : []))).toEqual([[1, "key not found"], [6, "loader broke"]]);
    expect(node.groups.byName("default")!.counters.loadsAhead).toBe(3);
    raw.close();
  });

  // Framed Gets are answered by the runs (call-runs.ts), header-framed ones by dispatch's get.
  for (const [name, wrap] of [["framed", (f: Uint8Array) => f], ["theader", (f: Uint8Array) => theader(f.subarray(4))]] as const) {
    test(`${name}: a Get whose load started ahead counts as a miss, though its value is stored by its turn (review: counted as a hit)`, async () => {
      const loader = async (key: string): Promise<string> => {
        await Bun.sleep(key === "first" ? 30 : 0);
        return `loaded ${key}`;
      };
      const node = CacheNode.start(
        { port: 0, logLevel: "silent", groups: [{ name: "default", ttlMs: 0, admission: "always" }] },
        { logger: new LogSink().logger, loaders: { default: loader } },
      );
      open.push(node);
      const raw = await RawSocket.connect(node.port);
      raw.write(concat(wrap(getCall(1, "first")), wrap(getCall(2, "k")), wrap(getCall(3, "l"))));
      await raw.waitFor(() => raw.frames().length === 3, "every reply");
      raw.write(wrap(getCall(4, "k"))); // stored: a hit
      await raw.waitFor(() => raw.frames().length === 4, "the fourth reply");
      const c = node.groups.byName("default")!.counters;
      expect({ gets: c.gets, hits: c.hits, misses: c.misses, loads: c.loads, loadsAhead: c.loadsAhead }).toEqual({ gets: 4, hits: 1, misses: 3, loads: 3, loadsAhead: 2 });
      raw.close();
    });
  }

  test("loads ahead take at most half the loader pool: another client's Get still finds a place (review: one client's pipelined cold Gets had the other's refused OVERLOADED)", async () => {
    // 4 places and 4 queued: 8 loads at once, of which loads ahead may take 4.
    await using node = await CacheNode.open({ port: 0, loaders: FIXTURES, loaderThreads: 1, loaderConcurrency: 4, loaderQueue: 4 }, { logger: new LogSink().logger });
    const group = node.groups.byName("slow")!;
    const a = await RawSocket.connect(node.port);
    a.write(concat(...Array.from({ length: 16 }, (_, i) => getCall(i + 1, String(200 + i), "slow"))));
    await waitUntil(() => group.counters.loads + group.counters.loadsAhead >= 5, "A's first load and its loads ahead");
    expect(group.counters.loadsAhead).toBe(4);
    const b = await RawSocket.connect(node.port);
    b.write(getCall(1, "50", "slow"));
    await b.waitFor(() => b.frames().length === 1, "B's reply");
    expect(values(b.received)).toEqual(["slept 50"]);
    await a.waitFor(() => a.frames().length === 16, "A's replies");
    expect(values(a.received)).toEqual(Array.from({ length: 16 }, (_, i) => `slept ${200 + i}`));
    a.close();
    b.close();
  });

  test("a load ahead whose Get timed out still counts against the half-pool bound until its load ends (review: the count dropped at the caller's timeout)", async () => {
    // 8 places, no queue: loads ahead may take 4. The loader (1.5 s) is far slower than the group's timeout.
    await using node = await CacheNode.open(
      { port: 0, loaders: FIXTURES, loaderThreads: 1, loaderConcurrency: 8, loaderQueue: 0, groups: [{ name: "slow", ttlMs: 0, loadTimeoutMs: 100 }] },
      { logger: new LogSink().logger },
    );
    const group = node.groups.byName("slow")!;
    const a = await RawSocket.connect(node.port);
    a.write(concat(...Array.from({ length: 12 }, (_, i) => getCall(i + 1, String(1500 + i), "slow"))));
    await a.waitFor(() => a.frames().length === 12, "A's replies (each timed out)");
    expect(values(a.received)).toEqual(Array.from({ length: 12 }, () => "cacheError"));
    // Every Get timed out, but the loads started ahead still hold their places: no more were started.
    expect(group.counters.loadsAhead).toBe(4);
    expect(group.loadsAhead.running).toBe(4);
    await waitUntil(() => group.loadsAhead.running === 0, "the loads ahead to end", 5_000);
    a.close();
  });

  test("a load started ahead that a full loader pool refuses is loaded again at its turn, not answered OVERLOADED", async () => {
    // One thread and no queue: one load at a time. In turn, each Get's load runs after the one before.
    await using node = await CacheNode.open({ port: 0, loaders: FIXTURES, loaderThreads: 1, loaderConcurrency: 1, loaderQueue: 0 }, { logger: new LogSink().logger });
    const raw = await RawSocket.connect(node.port);
    raw.write(concat(getCall(1, "60", "slow"), getCall(2, "10", "slow"), getCall(3, "20", "slow")));
    await raw.waitFor(() => raw.frames().length === 3, "every reply");
    expect(values(raw.received)).toEqual(["slept 60", "slept 10", "slept 20"]);
    // (A pool of one place keeps it for loads at their turn: none is started ahead.)
    expect(node.groups.byName("slow")!.counters.loadsAhead).toBe(0);
    raw.close();
  });
});

describe("cost", () => {
  test("each frame is read once by the look-ahead, however many waits come before it", async () => {
    // 2,000 pipelined GetMultis of cold keys, then a Delete: each GetMulti waits for its load, and
    // each wait used to read everything queued behind it again (a GetMulti is passed over, so the
    // table never fills), and then the write it stops at again at every wait.
    let decodes = 0;
    const decode = RequestDecoder.prototype.decode;
    RequestDecoder.prototype.decode = function (this: RequestDecoder, ...args: Parameters<typeof decode>) {
      decodes++;
      return decode.apply(this, args);
    };
    try {
      const node = CacheNode.start(
        { port: 0, logLevel: "silent", groups: [{ name: "default", ttlMs: 0 }] },
        { logger: new LogSink().logger, loaders: { default: async (key) => `v ${key}` } },
      );
      open.push(node);
      const raw = await RawSocket.connect(node.port);
      const n = 2_000;
      const calls = Array.from({ length: n }, (_, i) => getMultiCall(i + 1, "default", [utf8.encode(`cold${i}`)]));
      raw.write(concat(...calls, deleteCall(n + 1, "cold0")));
      await raw.waitFor(() => raw.frames().length === n + 1, "every reply", 30_000);
      // Once at its turn, once by the look-ahead (the Delete it stops at: read again only when it is next).
      expect(decodes).toBeLessThanOrEqual(2 * (n + 1) + 2);
      raw.close();
    } finally {
      RequestDecoder.prototype.decode = decode;
    }
  });
});

describe("random pipelines on one connection give a serial server's replies", () => {
  // The loader's value depends on the key only, so the serial answer to each call is known: a Get
  // answers the last value this connection wrote, or the loaded one when none (or deleted).
  for (const admission of ["lru-k", "always"] as const) {
    test(`admission ${admission}`, async () => {
      const seed = testSeed();
      const rng = new Prng(seed);
      const node = slowLoaderNode(rng, 3, admission);
      const raw = await RawSocket.connect(node.port);
      const written = new Map<string, string>();
      const expected: string[] = [];
      let seqid = 0;
      for (let batch = 0; batch < 60; batch++) {
        const calls: Uint8Array[] = [];
        for (let n = 1 + rng.int(24); n > 0; n--) {
          const key = `r${batch % 7 === 0 ? rng.int(40) + 100 * batch : rng.int(6)}`; // some batches of cold keys
          const r = rng.int(10);
          if (r < 7) {
            calls.push(getCall(++seqid, key));
            expected.push(written.get(key) ?? `loaded ${key}`);
          } else if (r < 9) {
            const value = `v${seqid}`;
            calls.push(setCall(++seqid, key, utf8.encode(value)));
            written.set(key, value);
            expected.push("ok");
          } else {
            calls.push(deleteCall(++seqid, key));
            written.delete(key);
            expected.push("ok");
          }
        }
        const bytes = concat(...calls);
        // Sent whole, or cut at random places (the look-ahead reads queued chunks, framed only whole).
        if (rng.int(2) === 0) raw.write(bytes);
        else for (let at = 0; at < bytes.length; ) {
          const end = Math.min(bytes.length, at + 1 + rng.int(200));
          raw.write(bytes.subarray(at, end));
          at = end;
          if (rng.int(3) === 0) await Bun.sleep(1);
        }
        await raw.waitFor(() => raw.frames().length === seqid, `the replies of batch ${batch} (seed ${seed})`);
      }
      const got = values(raw.received).map((v) => (v === "success" ? "ok" : v));
      expect({ seed, got }).toEqual({ seed, got: expected });
      expect(node.groups.byName("default")!.counters.loadsAhead).toBeGreaterThan(0); // it was exercised
      raw.close();
    });
  }
});

describe("another client writing the same keys meanwhile", () => {
  // One connection pipelines Gets (loads start ahead behind each wait); another writes the same
  // keys one call at a time. Each Get's answer must be linearizable: the value the key held when
  // the Get was sent, or one written during it, or the loaded value if the key may have been
  // absent at some point while the Get was out (never written, or deleted, before or during it).
  test("every Get answers a value the key held while it was out", async () => {
    const seed = testSeed();
    const rng = new Prng(seed);
    const node = slowLoaderNode(rng, 4, "lru-k"); // LRU-K: loads are often not stored
    const ABSENT = null;
    /** writes[key]: every write in order, with when it was sent and when it was acknowledged. */
    const writes = new Map<string, { value: string | null; sent: number; acked: number }[]>();
    const ks = keys(12, "w");
    const writer = new CacheClient({ host: "127.0.0.1", port: node.port, connections: 1, timeoutMs: 10_000 });
    open.push(writer);
    let writing = true;
    const writerDone = (async () => {
      for (let n = 0; writing; n++) {
        const key = ks[rng.int(ks.length)]!;
        const value = rng.int(2) === 0 ? ABSENT : `v${n}`;
        const w = { value, sent: performance.now(), acked: Infinity };
        writes.set(key, [...(writes.get(key) ?? []), w]);
        if (value === ABSENT) await writer.delete("default", key);
        else await writer.set("default", key, value);
        w.acked = performance.now();
        if (rng.int(4) === 0) await Bun.sleep(1);
      }
    })();
    /** allowed lists what a Get of `key` out during [sent, received] may answer. */
    const allowed = (key: string, sent: number, received: number): Set<string | null> => {
      const all = writes.get(key) ?? [];
      const before = all.filter((w) => w.acked < sent);
      const held = before.length === 0 ? ABSENT : before[before.length - 1]!.value;
      const during = all.filter((w) => w.acked >= sent && w.sent <= received).map((w) => w.value);
      const out = new Set<string | null>([held, ...during]);
      if (out.has(ABSENT)) out.add(`loaded ${key}`);
      return out;
    };
    const raw = await RawSocket.connect(node.port);
    let seqid = 0;
    const problems: string[] = [];
    for (let batch = 0; batch < 60; batch++) {
      const asked = Array.from({ length: 1 + rng.int(30) }, () => ks[rng.int(ks.length)]!);
      const first = seqid;
      const sent = performance.now();
      raw.write(concat(...asked.map((k) => getCall(++seqid, `${k}`))));
      await raw.waitFor(() => raw.frames().length === seqid, `batch ${batch} (seed ${seed})`);
      const received = performance.now();
      const got = values(raw.received).slice(first);
      asked.forEach((key, i) => {
        const answer = got[i] === "cacheError" ? ABSENT : got[i]!;
        if (!allowed(key, sent, received).has(answer)) problems.push(`batch ${batch}, ${key}: ${answer}, allowed ${[...allowed(key, sent, received)].join(" | ")}`);
      });
    }
    writing = false;
    await writerDone;
    raw.close();
    expect({ seed, problems: problems.slice(0, 5) }).toEqual({ seed, problems: [] });
    expect(node.groups.byName("default")!.counters.loadsAhead).toBeGreaterThan(0);
  });
});

describe("PeerGets between two members", () => {
  test("cold loads a member asks of another on its one read connection run side by side", async () => {
    const loaders = [new GatedLoader(), new GatedLoader()];
    const { nodes, ids } = startMembers(2, open, { peerTimeoutMs: 10_000, groups: [{ name: "default", ttlMs: 0 }] }, (i) => ({ default: loaders[i]!.load }));
    const [a, b] = nodes as [CacheNode, CacheNode];
    const owned = keysOwnedBy(b, ids[1]!, 8, "p");
    const client = new CacheClient({ host: "127.0.0.1", port: a.port, connections: 8, timeoutMs: 10_000 });
    open.push(client);
    const gets = owned.map((k) => client.get("default", k));
    await waitUntil(() => loaders[1]!.calls.size === owned.length, "B to load every key while the first still waits");
    loaders[1]!.open();
    expect((await Promise.all(gets)).map((r) => text(r.value))).toEqual(owned.map((k) => `loaded ${k} #1`));
    expect(loaders[0]!.total).toBe(0);
    expect([...loaders[1]!.calls.values()]).toEqual(owned.map(() => 1));
  });
});
