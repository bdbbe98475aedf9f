/**
 * CallRuns (src/server/call-runs.ts) must answer exactly as the general path does: the same reply
 * bytes, the same counters, the same store state, whatever the chunk holds. Each case serves one
 * byte stream twice, in two identically built nodes' worth of groups: once as the server does
 * (runs of hits first, the general path for whatever stops a run) and once through the general
 * path alone, then compares everything.
 */
import { expect, test, setDefaultTimeout } from "bun:test";
import { Cluster, type ForwardCallback, type PeerClient } from "../../src/cluster/cluster.ts";
import { Group } from "../../src/cluster/group.ts";
import { Groups } from "../../src/cluster/groups.ts";
import { DEFAULT_LIMITS, type ProtocolLimits } from "../../src/protocol/limits.ts";
import { ProtocolConnection } from "../../src/protocol/protocol-connection.ts";
import { dispatch, type DispatchContext } from "../../src/server/dispatch.ts";
import { CallRuns } from "../../src/server/call-runs.ts";
import { Prefetches } from "../../src/server/prefetch.ts";
import { LatencyHistogram } from "../../src/server/latency.ts";
import { MIB, SET_OK } from "../../src/store/store.ts";
import { Bytes, MSG, T, framed, message, theader, ttheader } from "../protocol/wire-builder.ts";
import { ProtocolError } from "../../src/protocol/errors.ts";
import { Prng, testSeed } from "../support/prng.ts";
import { mutate, validRequest } from "../protocol/fuzz.ts";
import { deleteCall, getCall, setCall } from "./support.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const utf8 = new TextEncoder();

/** LIMITS: small key and value limits, so that both can be crossed by items already stored. */
const LIMITS: ProtocolLimits = { ...DEFAULT_LIMITS, maxKeyBytes: 40, maxValueBytes: 2_000 };
const LONG_KEY = "L".repeat(45);

interface World {
  ctx: DispatchContext;
  now: { ms: number; step: number };
}

/**
 * world builds the same groups with the same contents every time, on a fake clock: "a" and "b",
 * "t" with a default TTL of 60 s, and "m" with a mirror (a cluster's hot copies). The clock moves
 * `now.step` ms at every read (0: it stands still).
 */
function world(): World {
  const now = { ms: 1_000_000, step: 0 };
  const clock = () => (now.ms += now.step);
  const groups = new Groups();
  for (const name of ["a", "b", "t", "m"]) {
    const g = groups.add(new Group({
      name, memory: 32 * MIB, store: { clock, hashSeed: 0 }, // (one seed for both worlds: their index slots are compared)
      defaultTtlMs: name === "t" ? 60_000 : 0, mirrorMemory: name === "m" ? 4 * MIB : 0,
    }));
    for (let i = 0; i < 40; i++) {
      const key = utf8.encode(`k${i}`);
      const value = utf8.encode(`${name}-value-${i}-`.repeat(1 + (i % 7) * 30));
      g.store.set(key, 0, key.length, value, 0, value.length, i % 4 === 0 ? 5_000 : 0);
    }
    const neg = utf8.encode("negative");
    g.store.setNegative(neg, 0, neg.length, 60_000);
    const soon = utf8.encode("soon");
    g.store.set(soon, 0, soon.length, utf8.encode("gone by then"), 0, 12, 10);
    // Stored past today's limits (an older configuration, a snapshot): a key of 45 bytes, a value of 2,500.
    const long = utf8.encode(LONG_KEY);
    g.store.set(long, 0, long.length, utf8.encode("long key"), 0, 8, 0);
    const big = utf8.encode("big");
    g.store.set(big, 0, big.length, new Uint8Array(2_500).fill(9), 0, 2_500, 0);
    expect(g.store.size).toBe(44); // nothing evicted: every Get of k0..k39 below is a hit
  }
  now.ms += 100; // "soon" has expired; the 5 s TTLs have 4.9 s left
  return { ctx: { groups, clock }, now };
}

interface Served {
  out: Uint8Array;
  inRuns: number;
  setsInRuns: number;
  requests: number;
  warmed: number;
}

/**
 * serve feeds `chunks` to one connection: with runs (as the server does) or the general path only.
 * A protocol error ends the connection, as in the server: the output then ends with "ERROR <message>".
 */
function serve(w: World, chunks: Uint8Array[], runs: boolean, limits = LIMITS): Served {
  const conn = new ProtocolConnection(limits);
  const counters = { warmedRequests: 0 };
  const callRuns = new CallRuns(w.ctx.groups, limits, counters);
  const parts: Uint8Array[] = [];
  let inRuns = 0;
  let setsInRuns = 0;
  let requests = 0;
  chunks: for (const chunk of chunks) {
    conn.push(chunk);
    for (;;) {
      if (runs) {
        const n = callRuns.serve(conn.reader, conn.reply, 1024, 1 << 30);
        inRuns += n;
        setsInRuns += callRuns.sets;
        expect(callRuns.gets + callRuns.sets).toBe(n);
        requests += n;
        if (n > 0) continue;
      }
      try {
        if (!conn.nextRequest()) break;
      } catch (e) {
        if (!(e instanceof ProtocolError)) throw e;
        parts.push(conn.reply.out.buffer.slice(0, conn.reply.out.length), utf8.encode(`ERROR ${e.message}`));
        break chunks;
      }
      requests++;
      expect(dispatch(w.ctx, conn.request, conn.reply)).toBeUndefined();
    }
    parts.push(conn.reply.out.buffer.slice(0, conn.reply.out.length));
    conn.reply.out.reset();
  }
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((at, p) => (out.set(p, at), at + p.length), 0);
  return { out, inRuns, setsInRuns, requests, warmed: counters.warmedRequests };
}

/**
 * state is everything a request can change: counters of groups and stores, item records (lengths,
 * LRU links and ticks, flags, expiry times), the TTL heap, the index and the slab bytes. Each
 * store's invariants are checked on the way.
 */
function state(w: World): unknown {
  return w.ctx.groups.all().map((g) => {
    g.store.checkInvariants();
    return {
      group: { ...g.counters },
      store: { ...g.store.counters },
      items: g.store.size,
      records: Array.from(g.store.items.w),
      expiry: Array.from(g.store.items.f),
      heap: Array.from(g.store.heap.slots.subarray(0, g.store.heap.size)),
      index: Array.from(g.store.index.slots),
      slab: g.store.slab.pages.map((page) => (page === undefined ? -1 : Bun.hash(page))),
      clock: w.now.ms,
    };
  });
}

function concatAll(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((at, p) => (out.set(p, at), at + p.length), 0);
  return out;
}

/** setFrame is a framed Set with a ttl in seconds, and ttlMs when given (then not the plain layout). */
function setFrame(seqid: number, key: string, value: Uint8Array, group: string, ttl: number, ttlMs?: number): Uint8Array {
  const b = new Bytes().field(T.STRUCT, 1).field(T.STRING, 1).str(group).field(T.STRING, 2).str(key)
    .field(T.STRING, 3).str(value).field(T.I64, 4).i64(ttl);
  if (ttlMs !== undefined) b.field(T.I64, 5).i64(ttlMs);
  return framed(message(MSG.CALL, "Set", seqid, b.stop().stop().bytes()));
}

/** kitexSetFrame is a Set laid out as Kitex's FastWrite writes it: the fixed-size ttl field first. */
function kitexSetFrame(seqid: number, key: string, value: Uint8Array, group: string, ttl: number): Uint8Array {
  const b = new Bytes().field(T.STRUCT, 1).field(T.I64, 4).i64(ttl).field(T.STRING, 1).str(group).field(T.STRING, 2).str(key)
    .field(T.STRING, 3).str(value);
  return framed(message(MSG.CALL, "Set", seqid, b.stop().stop().bytes()));
}

/** getWithExtraField is a Get the decoder reads fine but not in the plain layout (an unknown field first). */
function getWithExtraField(seqid: number, key: string, group: string): Uint8Array {
  const body = new Bytes().field(T.STRUCT, 1).field(T.I32, 9).i32(7).field(T.STRING, 1).str(group).field(T.STRING, 2).str(key).stop().stop().bytes();
  return framed(message(MSG.CALL, "Get", seqid, body));
}

function compare(calls: Uint8Array[], split: (all: Uint8Array) => Uint8Array[]): Served {
  const all = concatAll(calls);
  const fast = world();
  const slow = world();
  const a = serve(fast, split(all), true);
  const b = serve(slow, split(all), false);
  expect(a.requests).toBe(calls.length);
  expect(b.requests).toBe(calls.length);
  expect(Buffer.from(a.out).equals(Buffer.from(b.out))).toBe(true);
  expect(state(fast)).toEqual(state(slow));
  return a;
}

test("runs of hits answer byte for byte as the general path, among misses, expired, negative, unknown groups and writes", () => {
  const calls: Uint8Array[] = [];
  let seqid = 1;
  for (let i = 0; i < 40; i++) calls.push(getCall(seqid++, `k${i}`, i % 3 === 0 ? "b" : "a")); // 40 hits, some with a TTL
  const hits = calls.length;
  calls.push(getCall(seqid++, "absent", "a"));
  calls.push(getCall(seqid++, "soon", "a")); // expired: the general path removes it
  calls.push(getCall(seqid++, "negative", "b"));
  calls.push(getCall(seqid++, "k1", "nope"));
  calls.push(getWithExtraField(seqid++, "k2", "a"));
  calls.push(setCall(seqid++, "k3", utf8.encode("rewritten"), "a"));
  calls.push(getCall(seqid++, "k3", "a"), getCall(seqid++, "k3", "a")); // hits of the rewritten value
  calls.push(getCall(seqid++, "soon", "a")); // now absent
  const { inRuns, warmed, setsInRuns } = compare(calls, (all) => [all]);
  expect(setsInRuns).toBe(0); // "rewritten" needs a smaller chunk: not in place
  // Every Get of a known group in the plain layout went through a run, misses too (no group here
  // has a loader: a miss is answered NOT_FOUND), but the first request, which the general path
  // reads to detect the transport: 39 hits, absent, expired, negative, the two hits of k3, and
  // the second "soon".
  expect(inRuns).toBe(hits - 1 + 3 + 2 + 1);
  // Counted once each as served from a warmed batch: every request the runs served here (the
  // first run's 39 + 3, then the three Gets after the Set, which goes the general way).
  expect(warmed).toBe(inRuns);
});

test("runs of Sets replace values in place exactly as the general path; every other Set goes the general way", () => {
  const calls: Uint8Array[] = [];
  let seqid = 1;
  const valueOf = (i: number, tag: string) => utf8.encode(`${tag}-value-${i}-`.repeat(1 + (i % 7) * 30)); // the size of k${i}'s value
  calls.push(getCall(seqid++, "k0", "a"));
  // Three in-place overwrites in a row (one run), one with a ttl in seconds.
  calls.push(setFrame(seqid++, "k5", valueOf(5, "A"), "a", 0));
  calls.push(setFrame(seqid++, "k6", valueOf(6, "A"), "a", 30));
  calls.push(setFrame(seqid++, "k7", valueOf(7, "A"), "b", 0));
  calls.push(getCall(seqid++, "k5", "a"), getCall(seqid++, "k6", "a"), getCall(seqid++, "k7", "b"));
  // Sets that cannot be done in place or are not the plain layout: the general path.
  calls.push(setFrame(seqid++, "k8", utf8.encode("tiny"), "a", 0)); // another size class
  calls.push(setFrame(seqid++, "fresh", utf8.encode("new key"), "a", 0)); // absent: inserted
  calls.push(setFrame(seqid++, "soon", utf8.encode("gone by then"), "a", 0)); // expired
  calls.push(setFrame(seqid++, "k9", valueOf(9, "A"), "a", -5)); // negative ttl: INVALID_ARGUMENT
  calls.push(setFrame(seqid++, "k10", valueOf(10, "A"), "a", 2 ** 31)); // ttl past int32 seconds
  calls.push(setFrame(seqid++, "k11", valueOf(11, "A"), "a", 0, 1_500)); // with ttlMs
  calls.push(setFrame(seqid++, "k12", valueOf(12, "A"), "nope", 0)); // unknown group
  calls.push(setFrame(seqid++, LONG_KEY, utf8.encode("long key"), "a", 0)); // key past the limit
  calls.push(setFrame(seqid++, "big", new Uint8Array(2_500).fill(1), "a", 0)); // value past the limit
  calls.push(getCall(seqid++, LONG_KEY, "a"), getCall(seqid++, "big", "a")); // the long key: refused; big: a hit
  for (const k of ["k8", "fresh", "soon", "k9", "k10", "k11"]) calls.push(getCall(seqid++, k, "a"));
  // A group with a default TTL: a Set with ttl 0 gets it (then Gets report it); a group with a
  // mirror: its Sets take the general path.
  calls.push(setFrame(seqid++, "k13", valueOf(13, "t"), "t", 0), setFrame(seqid++, "k14", valueOf(14, "t"), "t", 0));
  calls.push(getCall(seqid++, "k13", "t"), getCall(seqid++, "k14", "t"));
  calls.push(setFrame(seqid++, "k15", valueOf(15, "m"), "m", 0), setFrame(seqid++, "k16", valueOf(16, "m"), "m", 0));
  // Kitex's layout (the ttl field first): runs too.
  calls.push(kitexSetFrame(seqid++, "k17", valueOf(17, "A"), "a", 0), kitexSetFrame(seqid++, "k18", valueOf(18, "A"), "a", 45));
  calls.push(getCall(seqid++, "k17", "a"), getCall(seqid++, "k18", "a"));
  const served = compare(calls, (all) => [all]);
  expect(served.setsInRuns).toBe(3 + 2 + 2);
});

test("a clock that moves at every read: runs read it when and as often as the general path does", () => {
  const calls: Uint8Array[] = [getCall(0, "k1", "a")];
  // Hits with and without TTLs, and in-place Sets with and without them (k0, k4, k8... carry 5 s).
  for (let i = 0; i < 24; i++) calls.push(getCall(1 + i, `k${i}`, i % 2 === 0 ? "a" : "b"));
  for (let i = 0; i < 8; i++) calls.push(setFrame(100 + i, `k${i * 4}`, utf8.encode(`a-value-${i * 4}-`.repeat(1 + ((i * 4) % 7) * 30)), "a", i % 2));
  for (let i = 0; i < 24; i++) calls.push(getCall(200 + i, `k${i}`, "a"));
  const all = concatAll(calls);
  const fast = world();
  const slow = world();
  fast.now.step = slow.now.step = 1;
  const a = serve(fast, [all], true);
  const b = serve(slow, [all], false);
  expect(a.inRuns).toBe(calls.length - 1);
  expect(Buffer.from(a.out).equals(Buffer.from(b.out))).toBe(true);
  expect(state(fast)).toEqual(state(slow));
  expect(fast.now.ms).toBeGreaterThan(1_000_100 + 10); // it moved
});

test("a frame over the frame limit is refused as the reader refuses it, even where a run could serve it", () => {
  const limits: ProtocolLimits = { ...LIMITS, maxFrameBytes: 256 };
  const calls = [getCall(1, "k1", "a"), getCall(2, "k2", "a"), setFrame(3, "k1", utf8.encode("a-value-1-".repeat(31)), "a", 0), getCall(4, "k3", "a")];
  expect(calls[2]!.length).toBeGreaterThan(260); // the Set is in place (same size), but too long a frame
  const all = concatAll(calls);
  const fast = world();
  const slow = world();
  const a = serve(fast, [all], true, limits);
  const b = serve(slow, [all], false, limits);
  expect(new TextDecoder().decode(a.out.subarray(a.out.length - 40))).toContain("exceeds the limit 256");
  expect(Buffer.from(a.out).equals(Buffer.from(b.out))).toBe(true);
  expect(state(fast)).toEqual(state(slow));
  expect(a.setsInRuns).toBe(0);
});

test("fuzz: random pipelines of Gets, Sets and other calls, some mutated, cut anywhere, framed and buffered: the same bytes and state either way", () => {
  const seed = testSeed();
  const rand = new Prng(seed);
  const groups = ["a", "b", "t", "m", "nope", ""];
  const keys = (): string => (rand.next() < 0.8 ? `k${rand.int(44)}` : pickOf(["absent", "soon", "negative", "big", LONG_KEY, ""]));
  function pickOf<T>(list: T[]): T {
    return list[rand.int(list.length)]!;
  }
  const value = (key: string, group: string): Uint8Array => {
    const i = Number(key.slice(1));
    if (rand.next() < 0.6 && Number.isInteger(i)) return utf8.encode(`${group}-value-${i}-`.repeat(1 + (i % 7) * 30)); // same size: in place
    return new Uint8Array(rand.int(3000)).fill(rand.int(256));
  };
  const inRuns = [0, 0]; // framed, buffered
  for (let round = 0; round < 150; round++) {
    const calls: Uint8Array[] = [];
    const n = 5 + rand.int(50);
    for (let i = 0; i < n; i++) {
      const r = rand.next();
      const group = pickOf(groups);
      const key = keys();
      let frame: Uint8Array;
      if (r < 0.55) frame = getCall(i, key, group);
      else if (r < 0.8) frame = (rand.next() < 0.5 ? setFrame : kitexSetFrame)(i, key, value(key, group), group, pickOf([0, 0, 0, 1, 30, -1, 2 ** 31]));
      else if (r < 0.85) frame = setFrame(i, key, value(key, group), group, 0, rand.int(5000));
      else if (r < 0.9) frame = getWithExtraField(i, key, group);
      else if (r < 0.99) frame = deleteCall(i, key, group);
      else frame = framed(validRequest(() => rand.next()).subarray(0)); // any method; may not parse as framed
      if (rand.next() < 0.01) frame = mutate(() => rand.next(), frame, getCall(0, "k1", "a"));
      calls.push(round % 2 === 0 ? frame : unframed(frame)); // odd rounds: the buffered transport
    }
    const all = concatAll(calls);
    const cuts = [0, ...Array.from({ length: rand.int(4) }, () => rand.int(all.length)).sort((x, y) => x - y), all.length];
    const split = (bytes: Uint8Array) => cuts.slice(1).map((end, i) => bytes.slice(cuts[i], end));
    const fast = world();
    const slow = world();
    const a = serve(fast, split(all), true);
    const b = serve(slow, split(all), false);
    if (!Buffer.from(a.out).equals(Buffer.from(b.out))) throw new Error(`seed ${seed}, round ${round}: the replies differ`);
    expect(state(fast)).toEqual(state(slow));
    inRuns[round % 2]! += a.inRuns;
  }
  // Runs really served a good share of it, on both transports.
  // (Seen: 536–705 framed, 300–432 buffered, of ~2,000 calls each.)
  expect(inRuns[0]).toBeGreaterThan(300);
  expect(inRuns[1]).toBeGreaterThan(150);
}, 60_000); // ~4 s alone; slower inside the whole suite

test("a chunk split anywhere: runs stop at an incomplete frame and resume after it", () => {
  const calls = Array.from({ length: 12 }, (_, i) => getCall(i, `k${i}`, "a"));
  const all = concatAll(calls);
  const rand = new Prng(testSeed());
  for (let trial = 0; trial < 50; trial++) {
    const cuts = [0, ...Array.from({ length: 1 + (trial % 5) }, () => rand.int(all.length)).sort((x, y) => x - y), all.length];
    compare(calls, (bytes) => cuts.slice(1).map((end, i) => bytes.slice(cuts[i], end)));
  }
  // One request per byte: nothing is whole at a chunk start, so no run ever serves one.
  expect(compare(calls, (bytes) => Array.from(bytes, (b) => Uint8Array.of(b))).inRuns).toBe(0);
});

test("a run stops at its budget and when the output passes its bound, at a frame boundary", () => {
  const w = world();
  const runs = new CallRuns(w.ctx.groups, DEFAULT_LIMITS, { warmedRequests: 0 });
  const calls = concatAll(Array.from({ length: 10 }, (_, i) => getCall(i, `k${i}`, "a")));
  const conn = new ProtocolConnection(DEFAULT_LIMITS);
  conn.push(calls);
  expect(conn.nextRequest()).toBe(true); // the first frame: the connection is now known to be framed
  dispatch(w.ctx, conn.request, conn.reply);
  expect(runs.serve(conn.reader, conn.reply, 3, 1 << 30)).toBe(3);
  const replies = conn.reply.out.length;
  // The output is already past a bound of 1 byte: nothing is served.
  expect(runs.serve(conn.reader, conn.reply, 100, 1)).toBe(0);
  // A bound just above what is queued lets exactly one more through.
  expect(runs.serve(conn.reader, conn.reply, 100, replies + 1)).toBe(1);
  // The rest continues where the run stopped: seqids 5..9.
  let seen = 0;
  while (conn.nextRequest()) {
    expect(conn.request.seqid).toBe(5 + seen++);
    dispatch(w.ctx, conn.request, conn.reply);
  }
  expect(seen).toBe(5);
});

test("forget: the listing of a closed connection no longer holds its reader (and its buffers)", async () => {
  const w = world();
  const runs = new CallRuns(w.ctx.groups, DEFAULT_LIMITS, { warmedRequests: 0 });
  const held = (forget: boolean): WeakRef<object> => {
    const conn = new ProtocolConnection(DEFAULT_LIMITS);
    conn.push(concatAll([getCall(1, "k1", "a"), getCall(2, "k2", "a"), getCall(3, "k3", "a")]));
    conn.nextRequest();
    dispatch(w.ctx, conn.request, conn.reply);
    expect(runs.serve(conn.reader, conn.reply, 100, 1 << 30)).toBe(2);
    if (forget) runs.forget(conn.reader);
    return new WeakRef(conn.reader);
  };
  const collected = async (ref: WeakRef<object>) => {
    for (let i = 0; i < 20 && ref.deref() !== undefined; i++) {
      Bun.gc(true);
      await Bun.sleep(1);
    }
    return ref.deref() === undefined;
  };
  expect(await collected(held(false))).toBe(false); // kept by the listing: what forget is for
  expect(await collected(held(true))).toBe(true);
});

/** unused is a PeerClient call these tests never make: it fails loudly if one is made. */
const unused = (): Promise<never> => Promise.reject(new Error("PeerClient call not expected in this test"));

/**
 * clusterWorld is `world()` on a node "A" of a two-member cluster with "B", whose (fake) client
 * answers every forwarded Get at once with "B:<key>" and takes every write and invalidation;
 * `forwarded` lists what it was asked. With `unleased`, A checks read leases and B never grants
 * one (its lease pings go unanswered): A's mirror answers no Get of B's keys.
 */
function clusterWorld(unleased = false): { w: World; cluster: Cluster; forwarded: string[] } {
  const w = world();
  const forwarded: string[] = [];
  const name = (key: Uint8Array) => new TextDecoder().decode(key);
  const peerB = {
    isDown: false,
    forwardGet(_group: Uint8Array, key: Uint8Array, off: number, len: number, done: ForwardCallback): void {
      const name = new TextDecoder().decode(key.subarray(off, off + len));
      forwarded.push(name);
      const value = utf8.encode(`B:${name}`);
      done(null, value, 0, value.length, -1);
    },
    set(group: string, key: Uint8Array, value: Uint8Array, ttlMs: number): Promise<void> {
      forwarded.push(`set ${group} ${name(key)} ${name(value)} ${ttlMs}`);
      return Promise.resolve();
    },
    invalidate(group: string, keys: readonly Uint8Array[], all?: boolean): Promise<number> {
      forwarded.push(`invalidate ${group} ${keys.map(name).join(",")} ${all}`);
      return Promise.resolve(0);
    },
    delete: unused,
    clear: unused,
    peerGetMultiOf: unused,
    peerSetMultiOf: unused,
    close: () => Promise.resolve(),
    ping: () => new Promise<never>(() => {}),
  } satisfies PeerClient;
  const cluster = new Cluster({ self: "A", vnodes: 64, connect: () => peerB, logger: { info() {}, warn() {} } });
  cluster.setMembers(["A", "B"]);
  if (unleased) cluster.startRenewingLeases();
  // Group "m" mirrors the keys k0..k9 that B owns: their Gets are answered from the mirror.
  const mirror = w.ctx.groups.find(utf8.encode("m"), 0, 1)!.mirror!;
  for (let i = 0; i < 10; i++) {
    const key = utf8.encode(`k${i}`);
    if (cluster.owner(key, 0, key.length) === "A") continue;
    mirror.noteAccess(key, 0, key.length);
    const value = utf8.encode(`mirrored-${i}`);
    expect(mirror.fill(key, 0, key.length, value, 0, value.length, 0)).toBe(SET_OK);
  }
  return { w: { ...w, ctx: { ...w.ctx, cluster } }, cluster, forwarded };
}

/** serveRouted is `serve` for a node in a cluster: a forwarded Get's reply is awaited, in order. */
async function serveRouted(w: World, cluster: Cluster, chunk: Uint8Array, runs: boolean): Promise<{ out: Uint8Array; inRuns: number }> {
  const conn = new ProtocolConnection(LIMITS);
  const callRuns = new CallRuns(w.ctx.groups, LIMITS, { warmedRequests: 0 });
  let inRuns = 0;
  conn.push(chunk);
  for (;;) {
    if (runs) {
      const n = callRuns.serve(conn.reader, conn.reply, 1024, 1 << 30, cluster);
      inRuns += n;
      if (n > 0) continue;
    }
    if (!conn.nextRequest()) break;
    const pending = dispatch(w.ctx, conn.request, conn.reply);
    if (pending !== undefined) await pending;
  }
  return { out: conn.reply.out.buffer.slice(0, conn.reply.out.length), inRuns };
}

test("in a cluster, runs serve the Gets of keys this node owns and of mirrored keys; other keys owned elsewhere and all Sets go through routing", async () => {
  const { cluster } = clusterWorld();
  const owned = (key: string) => cluster.owner(utf8.encode(key), 0, key.length) === "A";
  const keys = Array.from({ length: 40 }, (_, i) => `k${i}`);
  expect(keys.filter(owned).length).toBeGreaterThan(5);
  expect(keys.filter((k) => !owned(k)).length).toBeGreaterThan(5);
  const calls: Uint8Array[] = [];
  let seqid = 1;
  for (const key of keys) calls.push(getCall(seqid++, key, "a"));
  calls.push(getCall(seqid++, "absent-here", "b")); // a miss (owned here or forwarded)
  // The same size as the stored value, so a lone node would run them (in place); one key owned
  // here, one elsewhere.
  const setKeys = [keys.find(owned)!, keys.find((k) => !owned(k))!];
  for (const key of setKeys) calls.push(setCall(seqid++, key, utf8.encode(`A-VALUE-${key.slice(1)}-`.repeat(1 + (Number(key.slice(1)) % 7) * 30)), "a"));
  for (const key of keys.slice(0, 10)) calls.push(getCall(seqid++, key, "m")); // the group with a mirror
  const notMirrored = keys.slice(10).filter((k) => !owned(k)).slice(0, 3); // owned elsewhere, not in the mirror
  for (const key of notMirrored) calls.push(getCall(seqid++, keys[0]!, "m"), getCall(seqid++, key, "m"));
  const all = concatAll(calls);
  const fast = clusterWorld();
  const slow = clusterWorld();
  const a = await serveRouted(fast.w, fast.cluster, all, true);
  const b = await serveRouted(slow.w, slow.cluster, all, false);
  expect(Buffer.from(a.out).equals(Buffer.from(b.out))).toBe(true);
  expect(state(fast.w)).toEqual(state(slow.w));
  expect(fast.cluster.counters).toEqual(slow.cluster.counters);
  const mirrors = (w: World) => w.ctx.groups.all().filter((g) => g.mirror !== undefined).map((g) => ({
    counters: { ...g.mirror!.counters }, records: Array.from(g.mirror!.items.w), expiry: Array.from(g.mirror!.items.f),
  }));
  expect(mirrors(fast.w)).toEqual(mirrors(slow.w));
  expect(fast.forwarded).toEqual(slow.forwarded);
  expect(fast.forwarded.length).toBeGreaterThan(5);
  // Every Get of an owned key ran, and every Get of group "m" (the owned keys from its store, the
  // others from its mirror), but the first frame (the general path reads it to detect the
  // transport); no Set did.
  const ownedGets = keys.filter(owned).length + (owned("absent-here") ? 1 : 0) + 10 + notMirrored.length;
  expect(a.inRuns).toBe(ownedGets - (owned(keys[0]!) ? 1 : 0));
  expect(fast.cluster.counters.mirrorHits).toBe(keys.slice(0, 10).filter((k) => !owned(k)).length + (owned(keys[0]!) ? 0 : notMirrored.length));
  expect(notMirrored.length).toBe(3);
});

test("in a cluster, a mirrored key of an owner whose lease is not held: the run stops at it, and routing forwards it and counts a lease miss, as the general path does", async () => {
  const { cluster } = clusterWorld(true);
  const elsewhere = Array.from({ length: 10 }, (_, i) => `k${i}`).filter((k) => cluster.owner(utf8.encode(k), 0, k.length) !== "A");
  expect(elsewhere.length).toBeGreaterThan(2);
  const calls = elsewhere.map((key, i) => getCall(i + 1, key, "m")); // all in A's mirror
  const all = concatAll(calls);
  const fast = clusterWorld(true);
  const slow = clusterWorld(true);
  const a = await serveRouted(fast.w, fast.cluster, all, true);
  const b = await serveRouted(slow.w, slow.cluster, all, false);
  expect(Buffer.from(a.out).equals(Buffer.from(b.out))).toBe(true);
  expect(fast.cluster.counters).toEqual(slow.cluster.counters);
  expect(a.inRuns).toBe(0);
  expect(fast.forwarded).toEqual(elsewhere); // each forwarded: B's value, not the mirror's copy
  expect([fast.cluster.counters.mirrorHits, fast.cluster.counters.mirrorLeaseMisses]).toEqual([0, elsewhere.length]);
});

/**
 * loadedAheadThenServed loads key `k` ahead (the look-ahead's startLoad) on node "A" of members A
 * and B, lets the load fill the store, optionally adds member C (a new member list: the answer
 * kept is of no use), then serves a Get of `k` in a run (`runs`) or on the general path, and
 * returns how group "g" counted it and what was served in runs.
 */
async function loadedAheadThenServed(runs: boolean, newMembers: boolean) {
  const groups = new Groups();
  const g = groups.add(new Group({ name: "g", memory: 8 * MIB, admission: "always", loader: (key: string) => `loaded-${key}` }));
  const peer = (): PeerClient => ({
    isDown: false, forwardGet() {}, set: unused, delete: unused, clear: unused, peerGetMultiOf: unused, peerSetMultiOf: unused,
    invalidate: () => Promise.resolve(0), close: () => Promise.resolve(),
  });
  const cluster = new Cluster({ self: "A", vnodes: 64, connect: peer, logger: { info() {}, warn() {} } });
  cluster.setMembers(["A", "B"]);
  const grown = new Cluster({ self: "A", vnodes: 64, connect: peer, logger: { info() {}, warn() {} } });
  grown.setMembers(["A", "B", "C"]);
  let key = "";
  for (let i = 0; key === ""; i++) {
    const k = utf8.encode(`k${i}`);
    if (cluster.owner(k, 0, k.length) === "A" && grown.owner(k, 0, k.length) === "A") key = `k${i}`;
  }
  const ctx: DispatchContext = { groups, clock: Date.now, cluster };
  const conn = new ProtocolConnection(DEFAULT_LIMITS);
  conn.push(getCall(1, "x", "no-such-group")); // the general path reads the first frame (the transport)
  conn.nextRequest();
  dispatch(ctx, conn.request, conn.reply);
  const table = new Prefetches();
  const kb = utf8.encode(key);
  expect(table.startLoad(cluster, g, kb, 0, kb.length)).toBe(true);
  for (let i = 0; i < 50 && !g.store.has(kb); i++) await Bun.sleep(2);
  expect(g.store.has(kb)).toBe(true);
  if (newMembers) cluster.setMembers(["A", "B", "C"]);
  const before = { ...g.counters };
  conn.push(getCall(7, key, "g"));
  const inRuns = runs ? new CallRuns(groups, DEFAULT_LIMITS, { warmedRequests: 0 }).serve(conn.reader, conn.reply, 1024, 1 << 30, cluster, table) : 0;
  if (inRuns === 0) {
    expect(conn.nextRequest()).toBe(true);
    await dispatch(ctx, conn.request, conn.reply, table);
  }
  return { inRuns, gets: g.counters.gets - before.gets, hits: g.counters.hits - before.hits, misses: g.counters.misses - before.misses, kept: table.size };
}

test("a Get of a key loaded ahead counts as the general path counts it: a miss, or a hit once the member list changed", async () => {
  for (const newMembers of [false, true]) {
    const run = await loadedAheadThenServed(true, newMembers);
    const general = await loadedAheadThenServed(false, newMembers);
    expect(run.inRuns).toBe(1);
    expect({ ...run, inRuns: 0 }).toEqual(general);
    expect(general).toEqual({ inRuns: 0, gets: 1, hits: newMembers ? 1 : 0, misses: newMembers ? 0 : 1, kept: 0 });
  }
});

/** unframed is a framed call without its length: the same call on the buffered transport. */
const unframed = (frame: Uint8Array): Uint8Array => frame.subarray(4);

test("buffered transport: runs answer byte for byte as the general path, cut anywhere", () => {
  const calls: Uint8Array[] = [];
  let seqid = 1;
  for (let i = 0; i < 30; i++) calls.push(getCall(seqid++, `k${i}`, i % 3 === 0 ? "b" : "a"));
  calls.push(getCall(seqid++, "absent", "a"), getCall(seqid++, "soon", "a"), getCall(seqid++, "negative", "b"));
  calls.push(setCall(seqid++, "k3", utf8.encode("a-value-3-".repeat(1 + 3 * 30)), "a")); // in place
  calls.push(setCall(seqid++, "k4", utf8.encode("short"), "a")); // a new chunk: the general path
  calls.push(getWithExtraField(seqid++, "k5", "a"), deleteCall(seqid++, "k6", "a"));
  for (let i = 0; i < 10; i++) calls.push(getCall(seqid++, `k${i}`, "a"));
  const buffered = calls.map(unframed);
  const whole = compare(buffered, (all) => [all]);
  // Every plain Get and the in-place Set ran, but the first message (read to detect the transport).
  expect(whole.inRuns).toBe(30 - 1 + 3 + 1 + 10);
  expect(whole.setsInRuns).toBe(1);
  const rand = new Prng(testSeed());
  for (let trial = 0; trial < 30; trial++) {
    const cuts = [0, ...Array.from({ length: 1 + (trial % 5) }, () => rand.int(concatAll(buffered).length)).sort((x, y) => x - y)];
    compare(buffered, (bytes) => [...cuts, bytes.length].slice(1).map((end, i) => bytes.slice(cuts[i], end)));
  }
});

test("no run on the header transports (THeader, TTHeader): they take the general path", () => {
  for (const wrapIt of [theader, ttheader]) {
    const w = world();
    const runs = new CallRuns(w.ctx.groups, DEFAULT_LIMITS, { warmedRequests: 0 });
    const conn = new ProtocolConnection(DEFAULT_LIMITS);
    const call = wrapIt(unframed(getCall(1, "k1", "a")));
    conn.push(concatAll([call, call]));
    expect(conn.nextRequest()).toBe(true);
    expect(runs.serve(conn.reader, conn.reply, 100, 1 << 30)).toBe(0);
    expect(compare([call, call, call], (all) => [all]).inRuns).toBe(0);
  }
});

test("recordRun: the sum is exact, and a run within the first bound counts every request in it", () => {
  const h = new LatencyHistogram();
  h.recordRun(1, 8_000, 16); // 16 requests in 8 µs
  h.recordRun(1, 400_000, 2); // 2 requests in 400 µs: each in the bucket of the mean, 200 µs
  const one = new LatencyHistogram();
  for (let i = 0; i < 16; i++) one.record(1, 500);
  one.record(1, 200_000);
  one.record(1, 200_000);
  expect(Array.from(h.buckets)).toEqual(Array.from(one.buckets));
  expect(Array.from(h.sums)).toEqual(Array.from(one.sums));
  expect(Array.from(h.counts)).toEqual(Array.from(one.counts));
});
