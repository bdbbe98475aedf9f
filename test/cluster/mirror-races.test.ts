/**
 * A node's mirror (its copies of hot keys owned elsewhere) must not keep a value older than a
 * write it has been told of: a forwarded Get whose answer was read before a write, but arrives
 * after this node heard of that write (the owner's PeerInvalidate, or a write forwarded through
 * this node), answers its own caller but does not fill the mirror. Otherwise the copy would be
 * served, stale, until its TTL (for good without one).
 */
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
import type { Loader } from "../../src/cluster/loader.ts";
import { Cluster, type ForwardCallback, type PeerClient } from "../../src/cluster/cluster.ts";
import type { EntryRanges } from "../../src/protocol/call-writer.ts";
import { Group } from "../../src/cluster/group.ts";
import { DEFAULT_LIMITS } from "../../src/protocol/limits.ts";
import { ProtocolConnection } from "../../src/protocol/protocol-connection.ts";
import { METHOD_CLEAR, METHOD_DELETE, METHOD_GET, METHOD_SET, METHOD_SET_MULTI } from "../../src/protocol/request.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import { Prefetches, agedTtl } from "../../src/server/prefetch.ts";
import { route } from "../../src/server/routing.ts";
import { Bytes, MSG, T, framed, message } from "../protocol/wire-builder.ts";
import { LogSink, deleteCall, getCall, setCall } from "../server/support.ts";
import { field, outcome, readReplies } from "../server/wire-reader.ts";
import { freePorts } from "../support/node-process.ts";
import { waitUntil } from "../support/gates.ts";
import { leasesHeld } from "../support/cluster-members.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const text = (b: Uint8Array): string => new TextDecoder().decode(b);

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((x) => x.close()));
});

function client(port: number): CacheClient {
  const c = new CacheClient({ host: "127.0.0.1", port, timeoutMs: 3000 });
  open.push(c);
  return c;
}

/** pair starts two members with `loader` on group "g" (no TTL, LRU-K mirror) and finds a key node 1 owns. */
function pair(loader: Loader): { a: CacheNode; b: CacheNode; ids: string[]; key: string } {
  const ports = freePorts(2);
  const ids = ports.map((p) => `127.0.0.1:${p}`);
  const [a, b] = ports.map((port) => {
    const n = CacheNode.start(
      { port, host: "127.0.0.1", peers: ids, logLevel: "silent", peerTimeoutMs: 3000, groups: [{ name: "g", ttlMs: 0, admission: "always" }] },
      { logger: new LogSink().logger, loaders: { g: loader } },
    );
    open.push(n);
    return n;
  }) as [CacheNode, CacheNode];
  const ring = a.cluster!.ring;
  let key = "";
  for (let i = 0; key === ""; i++) if (ring.owner(new TextEncoder().encode(`k${i}`)) === ids[1]) key = `k${i}`;
  return { a, b, ids, key };
}

/**
 * The cache-aside invalidation race: a read loads the row, the application then updates the row
 * and deletes the cached key while that load is still out. The load's (old) row answers the read
 * that asked before the delete; it must not be kept anywhere, the mirror included.
 */
describe("mirror fills that race a delete", () => {
  test("an answer that arrives after the owner's invalidation does not fill the mirror", async () => {
    let row = "v1";
    let gate: Promise<void> = Promise.resolve();
    let loads = 0;
    const { a, b, ids, key } = pair(async () => {
      const read = row;
      loads++;
      await gate;
      return read;
    });
    await leasesHeld([a, b], ids); // (A's mirror answers only under B's lease: without it a stale copy would go unseen)
    const viaA = client(a.port);
    const viaB = client(b.port);
    expect(text((await viaA.get("g", key)).value)).toBe("v1"); // B loads; A's mirror has seen the key once
    await viaB.delete("g", key);
    let release!: () => void;
    gate = new Promise<void>((r) => (release = r));
    const racing = viaA.get("g", key); // forwarded to B, whose load reads v1, then waits
    await waitUntil(() => loads === 2, "B's load to read the row");
    row = "v2";
    await viaB.delete("g", key); // B drops the key and tells A (PeerInvalidate) while the load waits
    await Bun.sleep(30);
    release();
    expect(text((await racing).value)).toBe("v1"); // it asked before the delete
    for (let i = 0; i < 3; i++) expect(text((await viaA.get("g", key)).value)).toBe("v2");
    expect(text((await viaB.get("g", key)).value)).toBe("v2");
  });

  test("an answer that arrives after a delete forwarded through this node does not fill the mirror", async () => {
    let row = "v1";
    let gate: Promise<void> = Promise.resolve();
    let loads = 0;
    const { a, b, ids, key } = pair(async () => {
      const read = row;
      loads++;
      await gate;
      return read;
    });
    await leasesHeld([a, b], ids); // (A's mirror answers only under B's lease: without it a stale copy would go unseen)
    const reader = client(a.port);
    const writer = client(a.port);
    expect(text((await reader.get("g", key)).value)).toBe("v1");
    await writer.delete("g", key);
    let release!: () => void;
    gate = new Promise<void>((r) => (release = r));
    const racing = reader.get("g", key);
    await waitUntil(() => loads === 2, "the owner's load to read the row");
    row = "v2";
    await writer.delete("g", key); // forwarded through A to B, acknowledged before the Get's answer
    release();
    expect(text((await racing).value)).toBe("v1");
    // The writer has its acknowledgement: a read through the same node must not see the old row.
    for (let i = 0; i < 3; i++) expect(text((await writer.get("g", key)).value)).toBe("v2");
  });
});

describe("mirror expiry", () => {
  test("active expiry removes mirrored copies whose TTL ran out, without a read", async () => {
    const { a, b, key } = pair(() => null);
    const viaA = client(a.port);
    await client(b.port).set("g", key, "short-lived", 150);
    for (let i = 0; i < 2; i++) expect(text((await viaA.get("g", key)).value)).toBe("short-lived"); // admitted on the 2nd
    const mirror = a.groups.byName("g")!.mirror!;
    expect(mirror.size).toBe(1);
    const deadline = Date.now() + 3000;
    while (mirror.size > 0 && Date.now() < deadline) await Bun.sleep(20);
    expect(mirror.size).toBe(0);
    expect(mirror.stats().expiredActive).toBe(1);
  });
});

describe("every write forwarded through this node counts for the mirror's tickets", () => {
  // Routing driven directly, with a peer whose answers the test hands over when it chooses: a Get
  // of k is forwarded, a write of k goes through this node and is acknowledged, then the Get's
  // answer (read before the write) arrives. It must not fill the mirror, whichever the write.
  async function trial(write: "Set" | "Delete" | "SetMulti" | "none"): Promise<boolean> {
    const group = new Group({ name: "default", memory: 8 * 1024 * 1024, mirrorMemory: 2 * 1024 * 1024, admissionK: 1 });
    let answer: ForwardCallback | undefined;
    const peer = {
      isDown: false,
      forwardGet: (_g: Uint8Array, _k: Uint8Array, _o: number, _l: number, done: ForwardCallback) => void (answer = done),
      set: async () => {},
      peerSetMultiOf: async () => {},
      delete: async () => true,
    } as unknown as PeerClient;
    const cluster = new Cluster({ self: "me:1", connect: () => peer, logger: { info() {}, warn() {} } });
    cluster.setMembers(["me:1", "owner:2"]);
    let key = "";
    for (let i = 0; key === ""; i++) if (cluster.owner(new TextEncoder().encode(`k${i}`), 0, `k${i}`.length) === "owner:2") key = `k${i}`;
    const decode = (bytes: Uint8Array): ProtocolConnection => {
      const pc = new ProtocolConnection(DEFAULT_LIMITS);
      pc.push(bytes);
      if (!pc.nextRequest()) throw new Error("no request");
      return pc;
    };
    const get = decode(getCall(1, key));
    const pending = route(cluster, group, METHOD_GET, get.request, get.reply) as Promise<void>;
    const value = new TextEncoder().encode("new");
    if (write !== "none") await writeThrough(write, key, value, cluster, group, decode);
    const old = new TextEncoder().encode("old");
    answer!(null, old, 0, old.length, 60_000);
    await pending;
    const k = new TextEncoder().encode(key);
    return group.mirror!.has(k, 0, k.length);
  }

  async function writeThrough(
    write: "Set" | "Delete" | "SetMulti", key: string, value: Uint8Array, cluster: Cluster, group: Group, decode: (b: Uint8Array) => ProtocolConnection,
  ): Promise<void> {
    const w = write === "Set" ? decode(setCall(2, key, value)) : write === "Delete" ? decode(deleteCall(2, key))
      : decode(framed(message(MSG.CALL, "SetMulti", 2, new Bytes().field(T.STRUCT, 1).field(T.STRING, 1).str("default")
        .field(T.MAP, 2).u8(T.STRING).u8(T.STRING).i32(1).str(key).str(value).stop().stop().bytes())));
    const base = write === "Set" ? METHOD_SET : write === "Delete" ? METHOD_DELETE : METHOD_SET_MULTI;
    await route(cluster, group, base, w.request, w.reply);
  }

  test("control: with no write between, the answer fills the mirror", async () => {
    expect(await trial("none")).toBe(true);
  });

  for (const write of ["Set", "Delete", "SetMulti"] as const) {
    test(`${write}: the earlier answer is not kept`, async () => {
      expect(await trial(write)).toBe(false);
    });
  }
});

describe("an owner's TTL, read late", () => {
  // The owner reports the TTL its item had left when it served the Get; this node read the answer
  // 700 ms after it sent the Get (a stall, a long turn). Counted from the read, the copy outlived
  // the owner's item by those 700 ms (the cluster soak saw one served 1.9 s past its TTL).
  test("a forwarded answer's copy and a prefetched answer are aged from when the Get was sent", async () => {
    let now = 1_000_000;
    const group = new Group({
      name: "default", memory: 8 * 1024 * 1024, mirrorMemory: 2 * 1024 * 1024, admissionK: 1, admission: "always", store: { clock: () => now },
    });
    const gets: ForwardCallback[] = [];
    const peer = {
      isDown: false,
      forwardGet: (_g: Uint8Array, _k: Uint8Array, _o: number, _l: number, done: ForwardCallback) => void gets.push(done),
    } as unknown as PeerClient;
    const cluster = new Cluster({ self: "me:1", connect: () => peer, logger: { info() {}, warn() {} } });
    cluster.setMembers(["me:1", "owner:2"]);
    const enc = new TextEncoder();
    let key = "";
    for (let i = 0; key === ""; i++) if (cluster.owner(enc.encode(`k${i}`), 0, `k${i}`.length) === "owner:2") key = `k${i}`;
    const k = enc.encode(key);
    const value = enc.encode("from the owner");
    const pc = new ProtocolConnection(DEFAULT_LIMITS);
    pc.push(getCall(1, key));
    if (!pc.nextRequest()) throw new Error("no request");
    const pending = route(cluster, group, METHOD_GET, pc.request, pc.reply) as Promise<void>;
    now += 700;
    gets[0]!(null, value, 0, value.length, 1_000);
    await pending;
    const o = outcome(readReplies(pc.reply.out.buffer.subarray(0, pc.reply.out.length), "framed").replies[0]!);
    if (o.kind !== "success") throw new Error(JSON.stringify(o));
    const ttl = field(o.value, 2, T.I64);
    expect(ttl).toBe(300n); // the reply says what is left, too
    expect(group.mirror!.has(k, 0, k.length)).toBe(true);
    now += 301;
    expect(group.mirror!.has(k, 0, k.length)).toBe(false); // gone with the owner's item

    const table = new Prefetches();
    expect(table.start(cluster, peer, group, k, 0, k.length)).toBe(true);
    now += 700;
    gets[1]!(null, value, 0, value.length, 1_000);
    expect(agedTtl(table.take(cluster, group, k, 0, k.length, false)!, now)).toBe(300);
  });
});

/**
 * world is routing driven directly against one fake peer ("owner:2") whose answers the test
 * hands over when it chooses: `gets` holds the callbacks of forwarded Gets, `writes` the
 * resolvers of forwarded writes and clears, `invalidated` the keys the peer was told to drop.
 */
function world(opts: { loader?: (key: string) => string; maxItemSize?: number } = {}) {
  const group = new Group({
    name: "default", memory: 8 * 1024 * 1024, mirrorMemory: 2 * 1024 * 1024, admissionK: 1, admission: "always",
    loader: opts.loader, store: opts.maxItemSize === undefined ? undefined : { maxItemSize: opts.maxItemSize },
  });
  const gets: ForwardCallback[] = [];
  const writes: (() => void)[] = [];
  const invalidated: string[] = [];
  const setMultis: string[][] = [];
  const held = <T>(value: T) => new Promise<T>((resolve) => writes.push(() => resolve(value)));
  const peer = {
    isDown: false,
    forwardGet: (_g: Uint8Array, _k: Uint8Array, _o: number, _l: number, done: ForwardCallback) => void gets.push(done),
    set: () => held(undefined),
    delete: () => held(true),
    clear: () => held(undefined),
    peerSetMultiOf: (_g: string, part: EntryRanges) => {
      const keys: string[] = [];
      for (let n = part.from; n < part.to; n++) {
        const at = part.indexes[n]! * 4;
        keys.push(new TextDecoder().decode(part.src.subarray(part.items[at]!, part.items[at]! + part.items[at + 1]!)));
      }
      setMultis.push(keys);
      return held(undefined);
    },
    invalidate: async (_g: string, keys: readonly Uint8Array[]) => {
      for (const k of keys) invalidated.push(new TextDecoder().decode(k));
      return keys.length;
    },
  } as unknown as PeerClient;
  const cluster = new Cluster({ self: "me:1", connect: () => peer, logger: { info() {}, warn() {} } });
  cluster.setMembers(["me:1", "owner:2"]);
  const keyOf = (owner: string, from = 0): string => {
    for (let i = from; ; i++) if (cluster.owner(new TextEncoder().encode(`k${i}`), 0, `k${i}`.length) === owner) return `k${i}`;
  };
  const call = (bytes: Uint8Array, base: number) => {
    const pc = new ProtocolConnection(DEFAULT_LIMITS);
    pc.push(bytes);
    if (!pc.nextRequest()) throw new Error("no request");
    const r = route(cluster, group, base, pc.request, pc.reply);
    return { done: r instanceof Promise ? r : Promise.resolve(), replies: () => readReplies(pc.reply.out.buffer.subarray(0, pc.reply.out.length), "framed").replies };
  };
  return { group, cluster, gets, writes, invalidated, setMultis, keyOf, call };
}

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

function setMultiCall(seqid: number, entries: [string, Uint8Array][]): Uint8Array {
  const b = new Bytes().field(T.STRUCT, 1).field(T.STRING, 1).str("default").field(T.MAP, 2).u8(T.STRING).u8(T.STRING).i32(entries.length);
  for (const [k, v] of entries) b.str(k).str(v);
  return framed(message(MSG.CALL, "SetMulti", seqid, b.stop().stop().bytes()));
}

describe("a forwarded write is answered only once copies that raced it are gone", () => {
  // A Get of k sent after the write (so its copy ticket is newer) but on another peer connection
  // can reach the owner first and bring the old value back, filling the mirror. The client must
  // not read that copy once it has the write's reply: the copy goes when the write is answered.
  for (const kind of ["Set", "Delete", "SetMulti", "Clear"] as const) {
    test(kind, async () => {
      const w = world();
      const k = w.keyOf("owner:2");
      const write = kind === "Set" ? w.call(setCall(1, k, bytes("new")), METHOD_SET)
        : kind === "Delete" ? w.call(deleteCall(1, k), METHOD_DELETE)
        : kind === "SetMulti" ? w.call(setMultiCall(1, [[k, bytes("new")]]), METHOD_SET_MULTI)
        : w.call(framed(message(MSG.CALL, "Clear", 1, new Bytes().field(T.STRUCT, 1).field(T.STRING, 1).str("default").stop().stop().bytes())), METHOD_CLEAR);
      const get = w.call(getCall(2, k), METHOD_GET);
      w.gets[0]!(null, bytes("old"), 0, 3, -1); // the owner answered the Get before the write
      await get.done;
      expect(w.group.mirror!.has(bytes(k), 0, k.length)).toBe(true); // the race happened
      for (const resolve of w.writes) resolve();
      await write.done;
      expect(w.group.mirror!.has(bytes(k), 0, k.length)).toBe(false);
    });
  }
});

describe("a routed SetMulti whose own part has a refused entry", () => {
  test("stores the others, tells the other members about all of its keys, and answers the refusal", async () => {
    const w = world({ maxItemSize: 1024 });
    const a = w.keyOf("me:1");
    const big = w.keyOf("me:1", Number(a.slice(1)) + 1);
    const c = w.keyOf("me:1", Number(big.slice(1)) + 1);
    const r = w.keyOf("owner:2");
    w.group.store.set(bytes(a), 0, a.length, bytes("old"), 0, 3, 0);
    const sm = w.call(setMultiCall(1, [[a, bytes("new a")], [big, new Uint8Array(4000)], [c, bytes("new c")], [r, bytes("new r")]]), METHOD_SET_MULTI);
    await Bun.sleep(0);
    for (const resolve of w.writes) resolve();
    await sm.done;
    const [reply] = sm.replies();
    expect(outcome(reply!)).toMatchObject({ kind: "cacheError", code: 4 });
    expect(new TextDecoder().decode(w.group.store.valueView(w.group.store.get(bytes(a), 0, a.length)))).toBe("new a");
    expect(w.group.store.has(bytes(c))).toBe(true);
    expect(w.invalidated.sort()).toEqual([a, big, c].sort());
    expect(w.setMultis).toEqual([[r]]);
  });
});
