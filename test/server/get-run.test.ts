/**
 * serveGetRun (src/server/get-run.ts) must answer exactly as the general path does: the same reply
 * bytes, the same counters, the same store state, whatever the chunk holds. Each case serves one
 * byte stream twice, in two identically built nodes' worth of groups: once as the server does
 * (runs of hits first, the general path for whatever stops a run) and once through the general
 * path alone, then compares everything.
 */
import { expect, test } from "bun:test";
import { Group, Groups } from "../../src/cluster/group.ts";
import { DEFAULT_LIMITS } from "../../src/protocol/limits.ts";
import { ProtocolConnection } from "../../src/protocol/protocol-connection.ts";
import { dispatch, type DispatchContext } from "../../src/server/dispatch.ts";
import { serveGetRun } from "../../src/server/get-run.ts";
import { LatencyHistogram } from "../../src/server/latency.ts";
import { MIB } from "../../src/store/store.ts";
import { Bytes, MSG, T, framed, message } from "../protocol/wire-builder.ts";
import { Prng, testSeed } from "../support/prng.ts";
import { getCall, setCall } from "./support.ts";

const utf8 = new TextEncoder();

interface World {
  ctx: DispatchContext;
  now: { ms: number };
}

/** world builds groups "a" and "b" with the same contents every time (a fake clock for TTLs). */
function world(): World {
  const now = { ms: 1_000_000 };
  const clock = () => now.ms;
  const groups = new Groups();
  for (const name of ["a", "b"]) {
    const g = groups.add(new Group({ name, memory: 8 * MIB, store: { clock } }));
    for (let i = 0; i < 40; i++) {
      const key = utf8.encode(`k${i}`);
      const value = utf8.encode(`${name}-value-${i}-`.repeat(1 + (i % 7) * 30));
      g.store.set(key, 0, key.length, value, 0, value.length, i % 4 === 0 ? 5_000 : 0);
    }
    const neg = utf8.encode("negative");
    g.store.setNegative(neg, 0, neg.length, 60_000);
    const soon = utf8.encode("soon");
    g.store.set(soon, 0, soon.length, utf8.encode("gone by then"), 0, 12, 10);
  }
  now.ms += 100; // "soon" has expired; the 5 s TTLs have 4.9 s left
  return { ctx: { groups, clock }, now };
}

/** serve feeds `chunks` to one connection: with runs (as the server does) or the general path only. */
function serve(w: World, chunks: Uint8Array[], runs: boolean, budget = 1024): { out: Uint8Array; inRuns: number; requests: number; warmed: number } {
  const conn = new ProtocolConnection(DEFAULT_LIMITS);
  const counters = { warmedGets: 0 };
  const parts: Uint8Array[] = [];
  let inRuns = 0;
  let requests = 0;
  for (const chunk of chunks) {
    conn.push(chunk);
    for (;;) {
      if (runs) {
        const n = serveGetRun(conn.reader, w.ctx.groups, conn.reply, w.ctx.clock, budget, 1 << 30, counters);
        inRuns += n;
        requests += n;
        if (n > 0) continue;
      }
      if (!conn.nextRequest()) break;
      requests++;
      expect(dispatch(w.ctx, conn.request, conn.reply)).toBeUndefined();
    }
    parts.push(conn.reply.out.buffer.slice(0, conn.reply.out.length));
    conn.reply.out.reset();
  }
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((at, p) => (out.set(p, at), at + p.length), 0);
  return { out, inRuns, requests, warmed: counters.warmedGets };
}

/** state is everything a request can change: counters of groups and stores, and LRU ticks. */
function state(w: World): unknown {
  return w.ctx.groups.all().map((g) => ({
    group: { ...g.counters },
    store: { ...g.store.counters },
    items: g.store.size,
    records: Array.from(g.store.items.w),
  }));
}

function concatAll(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((at, p) => (out.set(p, at), at + p.length), 0);
  return out;
}

/** getWithExtraField is a Get the decoder reads fine but not in the plain layout (an unknown field first). */
function getWithExtraField(seqid: number, key: string, group: string): Uint8Array {
  const body = new Bytes().field(T.STRUCT, 1).field(T.I32, 9).i32(7).field(T.STRING, 1).str(group).field(T.STRING, 2).str(key).stop().stop().bytes();
  return framed(message(MSG.CALL, "Get", seqid, body));
}

function compare(calls: Uint8Array[], split: (all: Uint8Array) => Uint8Array[]): { inRuns: number; warmed: number } {
  const all = concatAll(calls);
  const fast = world();
  const slow = world();
  const a = serve(fast, split(all), true);
  const b = serve(slow, split(all), false);
  expect(a.requests).toBe(calls.length);
  expect(b.requests).toBe(calls.length);
  expect(Buffer.from(a.out).equals(Buffer.from(b.out))).toBe(true);
  expect(state(fast)).toEqual(state(slow));
  return { inRuns: a.inRuns, warmed: a.warmed };
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
  const { inRuns, warmed } = compare(calls, (all) => [all]);
  // Every hit but the first went through a run, and no other request did: a connection's first
  // request is read by the general path, which detects the transport.
  expect(inRuns).toBe(hits + 2 - 1);
  // Warmed once each, by the first run: every plain Get after the first frame whose group exists
  // (not the one of group "nope", not the one with an extra field), 39 + 6.
  expect(warmed).toBe(hits - 1 + 6);
});

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
  const counters = { warmedGets: 0 };
  const calls = concatAll(Array.from({ length: 10 }, (_, i) => getCall(i, `k${i}`, "a")));
  const conn = new ProtocolConnection(DEFAULT_LIMITS);
  conn.push(calls);
  expect(conn.nextRequest()).toBe(true); // the first frame: the connection is now known to be framed
  dispatch(w.ctx, conn.request, conn.reply);
  expect(serveGetRun(conn.reader, w.ctx.groups, conn.reply, w.ctx.clock, 3, 1 << 30, counters)).toBe(3);
  const replies = conn.reply.out.length;
  // The output is already past a bound of 1 byte: nothing is served.
  expect(serveGetRun(conn.reader, w.ctx.groups, conn.reply, w.ctx.clock, 100, 1, counters)).toBe(0);
  // A bound just above what is queued lets exactly one more through.
  expect(serveGetRun(conn.reader, w.ctx.groups, conn.reply, w.ctx.clock, 100, replies + 1, counters)).toBe(1);
  // The rest continues where the run stopped: seqids 5..9.
  let seen = 0;
  while (conn.nextRequest()) {
    expect(conn.request.seqid).toBe(5 + seen++);
    dispatch(w.ctx, conn.request, conn.reply);
  }
  expect(seen).toBe(5);
});

test("no run on a connection that is not framed", () => {
  const w = world();
  const counters = { warmedGets: 0 };
  const conn = new ProtocolConnection(DEFAULT_LIMITS);
  const unframed = getCall(1, "k1", "a").subarray(4); // the same call, buffered transport
  conn.push(concatAll([unframed, unframed]));
  expect(conn.nextRequest()).toBe(true);
  expect(serveGetRun(conn.reader, w.ctx.groups, conn.reply, w.ctx.clock, 100, 1 << 30, counters)).toBe(0);
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
