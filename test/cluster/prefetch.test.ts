/**
 * A connection that waits for a forwarded Get has the plain Gets that follow it in the same chunk
 * forwarded at once (server/prefetch.ts): one round trip to the owner for the batch. The replies
 * must be exactly what forwarding each in turn gives, in order; a write of the connection is seen
 * by its later reads; and nothing kept outlives a call of another kind.
 */
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import { freePorts } from "../support/node-process.ts";
import { leasesHeld } from "../support/cluster-members.ts";
import { waitUntil } from "../support/gates.ts";
import { LogSink, RawSocket, getCall, setCall } from "../server/support.ts";
import { Prefetches } from "../../src/server/prefetch.ts";
import { T } from "../protocol/wire-builder.ts";
import { field, outcome, readReplies } from "../server/wire-reader.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((x) => x.close()));
});

const utf8 = new TextEncoder();
const text = (b: Uint8Array): string => new TextDecoder().decode(b);

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((at, p) => (out.set(p, at), at + p.length), 0);
  return out;
}

/**
 * twoNodes starts nodes A and B that know each other, once each holds the other's read lease (its
 * mirror and answers fetched ahead are used only then); `remote` lists keys B owns, `local` keys A owns.
 */
async function twoNodes(loader?: (key: string) => Promise<string>): Promise<{ a: CacheNode; b: CacheNode; remote: string[]; local: string[] }> {
  const ports = freePorts(2);
  const ids = ports.map((p) => `127.0.0.1:${p}`);
  const [a, b] = ports.map((port) => {
    const deps = { logger: new LogSink().logger, ...(loader === undefined ? {} : { loaders: { default: loader } }) };
    const n = CacheNode.start({ port, host: "127.0.0.1", peers: ids, logLevel: "silent", peerTimeoutMs: 2000 }, deps);
    open.push(n);
    return n;
  }) as [CacheNode, CacheNode];
  const remote: string[] = [];
  const local: string[] = [];
  for (let i = 0; remote.length < 40 || local.length < 10; i++) {
    const key = `key-${i}`;
    (a.cluster!.owner(utf8.encode(key), 0, key.length) === ids[1] ? remote : local).push(key);
  }
  await leasesHeld([a, b], ids);
  return { a, b, remote: remote.slice(0, 40), local: local.slice(0, 10) };
}

/** remoteKeyHolding is twoNodes with B's first key set to `value` through `setter`, a client of A. */
async function remoteKeyHolding(value: string) {
  const { a, remote } = await twoNodes();
  const key = remote[0]!;
  const setter = client(a.port);
  await setter.set("default", key, value);
  return { a, remote, key, setter };
}

/** client is a CacheClient of the node at `port`, closed after the test. */
function client(port: number): CacheClient {
  const c = new CacheClient({ host: "127.0.0.1", port, timeoutMs: 2000 });
  open.push(c);
  return c;
}

/** send writes `calls` to the node at `port` in one write on a new connection and waits for every reply. */
async function send(port: number, calls: Uint8Array[], ms = 10_000): Promise<RawSocket> {
  const raw = await RawSocket.connect(port);
  raw.write(concat(calls));
  await raw.waitFor(() => raw.frames().length === calls.length, "all replies", ms);
  return raw;
}

/** values reads every reply of `raw` as [seqid, value text or "error <code>"]. */
function values(raw: RawSocket): [number, string][] {
  const { replies, rest } = readReplies(raw.received, "framed");
  expect(rest).toBe(raw.received.length);
  return replies.map((r) => {
    const o = outcome(r);
    if (o.kind === "success" && r.name === "Set") return [r.seqid, field(o.value, 1, T.BOOL) === true ? "stored" : "not stored"];
    if (o.kind === "success") return [r.seqid, text(field(o.value, 1, T.STRING) as Uint8Array)];
    return [r.seqid, o.kind === "cacheError" ? `error ${o.code}` : `exception ${o.type}`];
  });
}

describe("Gets forwarded ahead while a connection waits", () => {
  test("pipelined Gets of keys another node owns: one batch to the owner, the same replies in order", async () => {
    const { a, b, remote, local } = await twoNodes();
    const setter = client(b.port);
    for (const key of [...remote, ...local]) await setter.set("default", key, `v:${key}`);
    // 40 Gets of B's keys with A's keys between them and one absent key, in one write to A.
    const keys = [...remote.slice(0, 20), local[0]!, "absent-key", ...remote.slice(20), ...local.slice(1, 4)];
    const raw = await send(a.port, keys.map((key, i) => getCall(i, key)));
    expect(values(raw)).toEqual(keys.map((key, i) => [i, key === "absent-key" ? "error 1" : `v:${key}`]));
    const c = a.cluster!.counters;
    // The first Gets of B's keys wait; those after them are fetched ahead and answered from that.
    expect(c.prefetchesSent).toBeGreaterThan(20);
    expect(c.prefetchesUsed).toBe(c.prefetchesSent);
    raw.close();
  });

  test("a connection reads its own write: the Gets after its Set are fetched after it", async () => {
    const { a, remote, key, setter } = await remoteKeyHolding("old");
    for (const other of remote.slice(1, 6)) await setter.set("default", other, `v:${other}`);
    // Get (waits) · Gets of other keys and of `key` (fetched ahead) · Set key · Get key.
    const raw = await send(a.port, [getCall(1, remote[1]!), getCall(2, remote[2]!), getCall(3, key), getCall(4, remote[3]!),
      setCall(5, key, utf8.encode("new")), getCall(6, key), getCall(7, remote[4]!)]);
    const got = values(raw);
    expect(got).toEqual([[1, `v:${remote[1]}`], [2, `v:${remote[2]}`], [3, "old"], [4, `v:${remote[3]}`], [5, "stored"], [6, "new"], [7, `v:${remote[4]}`]]);
    expect(a.cluster!.counters.prefetchesSent).toBeGreaterThan(0);
    raw.close();
  });

  test("a Get fetched ahead but answered from the mirror is not kept past a write", async () => {
    const { a, key, setter } = await remoteKeyHolding("old");
    // One forwarded read: LRU-K (K = 2) admits `key` into A's mirror on the next one.
    expect(text((await setter.get("default", key)).value)).toBe("old");
    expect(a.cluster!.counters.mirrorFills).toBe(0);
    // Get key (forwarded: waits; its answer fills the mirror) · Get key (fetched ahead while the
    // first waits, then answered from the mirror at its turn: the fetched answer is left over) ·
    // Set key · Get key: must read "new", not the answer fetched before the Set.
    const raw = await send(a.port, [getCall(1, key), getCall(2, key), setCall(3, key, utf8.encode("new")), getCall(4, key)]);
    expect(values(raw)).toEqual([[1, "old"], [2, "old"], [3, "stored"], [4, "new"]]);
    const c = a.cluster!.counters;
    expect([c.prefetchesSent, c.prefetchesUsed, c.mirrorFills, c.mirrorHits]).toEqual([1, 0, 1, 1]);
    raw.close();
  });

  test("the owner gone: Gets fetched ahead answer PEER_UNAVAILABLE as forwarding in turn does", async () => {
    const { a, b, remote } = await twoNodes();
    await b.close();
    const keys = remote.slice(0, 12);
    const raw = await send(a.port, keys.map((key, i) => getCall(i, key)), 15_000);
    expect(values(raw)).toEqual(keys.map((_, i) => [i, "error 7"]));
    expect(a.cluster!.counters.prefetchesSent).toBeGreaterThan(0);
    raw.close();
  }, 20_000);

  test("an answer fetched ahead for a Get the mirror answered is not served to a later Get after another client's write", async () => {
    const { a, b, remote } = await twoNodes();
    const key = remote[0]!;
    const viaA = client(a.port);
    const viaB = client(b.port);
    await viaB.set("default", key, "v1");
    expect(text((await viaA.get("default", key)).value)).toBe("v1"); // LRU-K: the next read fills A's mirror
    const raw = await send(a.port, [getCall(1, key), getCall(2, key)]); // the 2nd is fetched ahead, then answered from the mirror
    expect(values(raw)).toEqual([[1, "v1"], [2, "v1"]]);
    expect([a.cluster!.counters.prefetchesSent, a.cluster!.counters.mirrorHits]).toEqual([1, 1]);
    const heard = a.cluster!.counters.invalidationsReceived; // (v1's own invalidation may be among them)
    await viaB.set("default", key, "v2"); // on the owner: A's mirror copy is dropped by its invalidation
    const deadline = Date.now() + 2000;
    while (a.cluster!.counters.invalidationsReceived === heard && Date.now() < deadline) await Bun.sleep(5);
    raw.write(getCall(3, key));
    await raw.waitFor(() => raw.frames().length === 3, "the third reply");
    expect(values(raw)[2]).toEqual([3, "v2"]);
    raw.close();
  });
});

describe("answers fetched ahead and the mirror", () => {
  test("an answer fetched ahead fills the mirror as a Get forwarded in turn does", async () => {
    const { a, b, remote } = await twoNodes();
    const [first, key] = [remote[0]!, remote[1]!];
    const viaA = client(a.port);
    const viaB = client(b.port);
    await viaB.set("default", first, "one");
    await viaB.set("default", key, "v1");
    expect(text((await viaA.get("default", key)).value)).toBe("v1"); // LRU-K: the next read of key fills A's mirror
    const c = a.cluster!.counters;
    const [fills, used] = [c.mirrorFills, c.prefetchesUsed];
    const raw = await send(a.port, [getCall(1, first), getCall(2, key)]); // key: fetched ahead while the first waits
    expect(values(raw)).toEqual([[1, "one"], [2, "v1"]]);
    expect([c.prefetchesUsed - used, c.mirrorFills - fills]).toEqual([1, 1]);
    const hits = c.mirrorHits;
    expect(text((await viaA.get("default", key)).value)).toBe("v1");
    expect(c.mirrorHits).toBe(hits + 1);
    raw.close();
  });

  test("an answer fetched ahead whose key is written while it is kept is not used: the Get is forwarded again, and the old value fills no mirror", async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const { a, b, remote, local } = await twoNodes(async (k) => {
      await gate;
      return `loaded ${k}`;
    });
    const [cold, key] = [local[0]!, remote[0]!]; // cold: A's own, loaded on A
    const viaA = client(a.port);
    const viaB = client(b.port);
    await viaB.set("default", key, "v1");
    expect(text((await viaA.get("default", key)).value)).toBe("v1"); // LRU-K: the next read of key would fill A's mirror
    const c = a.cluster!.counters;
    const [fills, used] = [c.mirrorFills, c.prefetchesUsed];
    // cold waits for A's loader; key is fetched ahead from B and its answer kept meanwhile.
    const raw = await RawSocket.connect(a.port);
    const servedByB = b.groups.byName("default")!.counters.gets;
    raw.write(concat([getCall(1, cold), getCall(2, key)]));
    // (B's answer comes at once: B has key.) Had nothing been fetched ahead, the checks below
    // would pass all the same: they would not test a kept answer.
    await waitUntil(() => c.prefetchesSent === 1 && b.groups.byName("default")!.counters.gets > servedByB, "key fetched ahead from B and answered");
    const heard = c.invalidationsReceived;
    await viaB.set("default", key, "v2"); // B tells A: the kept v1 must not become A's mirror copy
    await waitUntil(() => c.invalidationsReceived > heard, "B's invalidation of key");
    release();
    await raw.waitFor(() => raw.frames().length === 2, "both replies");
    // The write was acknowledged before the Get's turn, and an earlier request on the connection
    // may have read v2 already: v1 would take that read back (look-ahead-monotonic.test.ts).
    expect(values(raw)).toEqual([[1, `loaded ${cold}`], [2, "v2"]]);
    // Not used (forwarded again); the mirror is filled by that new answer, v2.
    expect([c.prefetchesUsed - used, c.mirrorFills - fills]).toEqual([0, 1]);
    expect(text((await viaA.get("default", key)).value)).toBe("v2");
    raw.close();
  });
});

describe("bounds on what is fetched ahead", () => {
  test("answers under way are all kept, past MAX_PREFETCH_BYTES too, counted toward the server's cap; nothing more starts then", async () => {
    // Up to 64 Gets may be under way at once, checked only when each started. Their answers are
    // all kept (dropped, a Get would be fetched or loaded twice), and the server is told of each,
    // so they count toward --max-buffered.
    const sent: ((err: null, value: Uint8Array, off: number, len: number, ttl: number) => void)[] = [];
    const peer = { forwardGet: (_g: Uint8Array, _k: Uint8Array, _o: number, _l: number, done: (typeof sent)[number]) => sent.push(done) };
    const group = { name: "g", store: { clock: () => 0 }, copyTicket: () => 0 };
    const cluster = { generation: 1 };
    let told = 0;
    const ahead = new Prefetches(() => told++);
    const keys = ["a", "b", "c", "d"].map((k) => utf8.encode(k));
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    for (const k of keys) expect(ahead.start(cluster as any, peer as any, group as any, k, 0, k.length)).toBe(true);
    const value = new Uint8Array(400_000).fill(7);
    for (const done of sent) done(null, value, 0, value.length, -1);
    expect([ahead.bytes, ahead.size, told, ahead.full]).toEqual([1_600_000, 4, 4, true]);
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    expect(ahead.start(cluster as any, peer as any, group as any, utf8.encode("e"), 0, 1)).toBe(false);
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    expect(ahead.take(cluster as any, group as any, keys[2]!, 0, 1, false)?.value?.length).toBe(400_000);
    expect(ahead.bytes).toBe(1_200_000);
  });

  test("large values fetched ahead: every Get still gets its own value, in order", async () => {
    const { a, remote } = await twoNodes();
    const keys = remote.slice(0, 12);
    const setter = client(a.port);
    const valueOf = (i: number) => String.fromCharCode(65 + i).repeat(300_000);
    for (let i = 0; i < keys.length; i++) await setter.set("default", keys[i]!, valueOf(i));
    const raw = await send(a.port, keys.map((key, i) => getCall(i, key)));
    expect(values(raw)).toEqual(keys.map((_, i) => [i, valueOf(i)]));
    expect(a.cluster!.counters.prefetchesSent).toBeGreaterThan(0);
    raw.close();
  });
});
