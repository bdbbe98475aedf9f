/**
 * Runs the hot-path allocation probes in a process of their own (spawned by hot-path.test.ts):
 * the probe's sensitivity depends on the heap's size, which the rest of a test run inflates.
 * Prints one JSON line: for each case, whether a collection happened during the loop.
 */
import { Group } from "../../src/cluster/group.ts";
import { Groups } from "../../src/cluster/groups.ts";
import { DEFAULT_LIMITS } from "../../src/protocol/limits.ts";
import { ProtocolConnection } from "../../src/protocol/protocol-connection.ts";
import { dispatch, type DispatchContext } from "../../src/server/dispatch.ts";
import { MIB } from "../../src/store/store.ts";
import { collectedDuring } from "../support/alloc-probe.ts";
import { PEEK_STRIDE, peekCalls } from "../../src/protocol/peek-calls.ts";
import { WARM_MAX, warmKeys } from "../../src/store/warm.ts";
import { getCall, replyHeader, setCall } from "./support.ts";
import { CallRuns } from "../../src/server/call-runs.ts";
import { LatencyHistogram, METHOD_COUNT } from "../../src/server/latency.ts";

function concatCalls(calls: Uint8Array[]): Uint8Array {
  const chunk = new Uint8Array(calls.reduce((n, c) => n + c.length, 0));
  calls.reduce((at, c) => (chunk.set(c, at), at + c.length), 0);
  return chunk;
}

const OPS = 2_000_000;

function setup(valueBytes: number): { ctx: DispatchContext; conn: ProtocolConnection; get: Uint8Array; set: Uint8Array; group: Group } {
  const groups = new Groups();
  const group = groups.add(new Group({ name: "default", memory: 16 * MIB }));
  const key = new TextEncoder().encode("user:12345");
  const value = new Uint8Array(valueBytes).fill(3);
  group.store.set(key, 0, key.length, value, 0, value.length, 60_000); // with a TTL: the reply carries ttlRemainingMs
  const ctx: DispatchContext = { groups, clock: Date.now };
  return { ctx, group, conn: new ProtocolConnection(DEFAULT_LIMITS), get: getCall(1, "user:12345"), set: setCall(2, "user:12345", value) };
}

function serve(ctx: DispatchContext, conn: ProtocolConnection, chunk: Uint8Array): void {
  conn.push(chunk);
  while (conn.nextRequest()) dispatch(ctx, conn.request, conn.reply);
  conn.reply.out.reset(); // "sent"
}

/** replyOf serves one request and returns its reply frame's type and length, to prove a hit. */
function replyOf(ctx: DispatchContext, conn: ProtocolConnection, chunk: Uint8Array): { type: number; length: number } {
  conn.push(chunk);
  conn.nextRequest();
  dispatch(ctx, conn.request, conn.reply);
  const frame = conn.reply.out.buffer.subarray(4, conn.reply.out.length);
  const r = { type: replyHeader(frame).type, length: frame.length };
  conn.reply.out.reset();
  conn.nextRequest();
  return r;
}

let sink: unknown;
const result: Record<string, unknown> = {};
{
  const { ctx, conn, get } = setup(100);
  result.control = await collectedDuring((i) => {
    serve(ctx, conn, get);
    sink = { i, j: i };
  }, OPS);
}
for (const size of [100, 4096]) {
  const { ctx, conn, get, group } = setup(size);
  result[`reply${size}`] = replyOf(ctx, conn, get);
  result[`get${size}`] = await collectedDuring(() => serve(ctx, conn, get), OPS);
  result[`misses${size}`] = group.counters.misses;
}
{
  const { ctx, conn, set } = setup(100);
  result.set = await collectedDuring(() => serve(ctx, conn, set), OPS);
}
{
  // The server's warm-up of a pipelined batch (16 Gets in one chunk) before serving it.
  const { group } = setup(100);
  const chunk = concatCalls(Array.from({ length: 16 }, (_, i) => getCall(i, "user:12345")));
  const peeked = new Int32Array(WARM_MAX * PEEK_STRIDE);
  result.warmListed = peekCalls(chunk, 0, chunk.length, peeked);
  let sum = 0;
  result.warm = await collectedDuring(() => {
    sum ^= warmKeys(group.store, chunk, peeked, 0, peekCalls(chunk, 0, chunk.length, peeked), PEEK_STRIDE, 2);
  }, OPS);
  result.warmSum = sum;
}
/**
 * probeRuns serves a chunk of 16 pipelined calls: the first request through the general path (it
 * fixes the transport), the rest by a run; then probes runs over the same bytes in two chunk
 * objects pushed in turn (like the server's data events, each push is a new chunk, so every run
 * lists and warms afresh: a listing is kept per chunk). Returns how many the first run served,
 * how many the probed runs served, and whether a collection happened meanwhile.
 */
async function probeRuns(setupFor: ReturnType<typeof setup>, calls: Uint8Array[]): Promise<{ first: number; served: number; collected: boolean }> {
  const { ctx, conn } = setupFor;
  const chunk = concatCalls(calls);
  conn.push(chunk);
  conn.nextRequest();
  dispatch(ctx, conn.request, conn.reply);
  const runs = new CallRuns(ctx.groups, DEFAULT_LIMITS, { warmedRequests: 0 });
  const first = runs.serve(conn.reader, conn.reply, 1024, 1 << 30);
  conn.reply.out.reset();
  let served = 0;
  const chunks = [chunk, chunk.slice()];
  const collected = await collectedDuring((i) => {
    conn.push(chunks[i & 1]!);
    served += runs.serve(conn.reader, conn.reply, 1024, 1 << 30);
    conn.reply.out.reset();
  }, OPS / 16);
  return { first, served, collected };
}
{
  // A run of 16 pipelined Get hits served straight from the chunk (server/call-runs.ts), with TTLs.
  const s = setup(100);
  const r = await probeRuns(s, Array.from({ length: 16 }, (_, i) => getCall(i, "user:12345")));
  result.runServed = r.first;
  result.run = r.collected;
  // Every Get of every chunk was served by a run, and each was a hit.
  const c = s.group.counters;
  result.runAllHits = r.served % 16 === 0 && c.hits === 1 + 15 + r.served && c.misses === 0;
}
{
  // The same run of Get hits on the buffered transport (each message without its i32 length).
  const s = setup(100);
  const r = await probeRuns(s, Array.from({ length: 16 }, (_, i) => getCall(i, "user:12345").subarray(4)));
  result.bufferedRunServed = r.first;
  result.bufferedRun = r.collected;
  const c = s.group.counters;
  result.bufferedRunAllHits = r.served % 16 === 0 && c.hits === 1 + 15 + r.served && c.misses === 0;
}
{
  // A run of 16 pipelined Sets that replace a value in place.
  const s = setup(100);
  const r = await probeRuns(s, Array.from({ length: 16 }, (_, i) => setCall(i, "user:12345", new Uint8Array(100).fill(i))));
  result.setRunServed = r.first;
  result.setRun = r.collected;
  result.setRunAll = r.served % 16 === 0 && s.group.counters.sets === 1 + 15 + r.served && s.group.store.size === 1;
}
{
  // A run of 16 pipelined Get misses in a group without a loader (answered NOT_FOUND).
  const s = setup(100);
  const r = await probeRuns(s, Array.from({ length: 16 }, (_, i) => getCall(i, `absent:${i}`)));
  result.missRunServed = r.first;
  result.missRun = r.collected;
  result.missRunAll = r.served % 16 === 0 && s.group.counters.misses === 1 + 15 + r.served;
}
{
  // The latency histogram the server records every request in (record, recordRun, errors).
  const h = new LatencyHistogram();
  result.latency = await collectedDuring((i) => {
    h.record(i % METHOD_COUNT, (i * 7919) % 2e9);
    if ((i & 7) === 0) h.recordRun(i % METHOD_COUNT, (i * 104729) % 2e7, 1 + (i & 31));
    if ((i & 15) === 0) h.recordError(i % METHOD_COUNT, 1 + (i % 9));
    if ((i & 1023) === 0) h.recordProtocolError(i % 11);
  }, OPS);
  h.checkInvariants();
}
void sink;
console.log(JSON.stringify(result));
