/**
 * The Get hit path allocates nothing: frame reader → decoder → group lookup by name bytes → store
 * probe by key bytes → value copied from the slab into the output buffer → reply patched. Measured
 * with the WeakRef-canary probe (test/support/alloc-probe.ts) over 2M requests, with a control
 * that allocates one two-field object (~32 bytes) per request and must be detected. (A single
 * 16-byte object per request is near the probe's floor: JSC's young generation can absorb 1M of
 * them without a collection, so the control uses 2M requests and a slightly larger object.)
 */
import { expect, test } from "bun:test";
import { Group, Groups } from "../../src/cluster/group.ts";
import { DEFAULT_LIMITS } from "../../src/protocol/limits.ts";
import { ProtocolConnection } from "../../src/protocol/protocol-connection.ts";
import { dispatch, type DispatchContext } from "../../src/server/dispatch.ts";
import { MIB } from "../../src/store/store.ts";
import { collectedDuring } from "../support/alloc-probe.ts";
import { getCall, replyHeader, setCall } from "./support.ts";

function setup(valueBytes: number): { ctx: DispatchContext; conn: ProtocolConnection; get: Uint8Array; set: Uint8Array } {
  const groups = new Groups();
  const group = groups.add(new Group({ name: "default", memory: 16 * MIB }));
  const key = new TextEncoder().encode("user:12345");
  const value = new Uint8Array(valueBytes).fill(3);
  group.store.set(key, 0, key.length, value, 0, value.length, 60_000); // with a TTL: the reply carries ttlRemainingMs
  const ctx: DispatchContext = { groups, clock: Date.now };
  return { ctx, conn: new ProtocolConnection(DEFAULT_LIMITS), get: getCall(1, "user:12345"), set: setCall(2, "user:12345", value) };
}

function serve(ctx: DispatchContext, conn: ProtocolConnection, chunk: Uint8Array): void {
  conn.push(chunk);
  while (conn.nextRequest()) dispatch(ctx, conn.request, conn.reply);
  conn.reply.out.reset(); // "sent"
}

const OPS = 2_000_000;
let sink: unknown;

test("the probe detects one small object per request", async () => {
  const { ctx, conn, get } = setup(100);
  expect(await collectedDuring((i) => {
    serve(ctx, conn, get);
    sink = { i, j: i };
  }, OPS)).toBe(true);
}, 60_000);

for (const size of [100, 4096]) {
  test(`a Get hit with a ${size} B value allocates nothing over 2M requests`, async () => {
    const { ctx, conn, get } = setup(size);
    // It really is a hit: the reply is a REPLY carrying the value.
    conn.push(get);
    expect(conn.nextRequest()).toBe(true);
    dispatch(ctx, conn.request, conn.reply);
    const frame = conn.reply.out.buffer.subarray(4, conn.reply.out.length);
    expect(replyHeader(frame).type).toBe(2);
    expect(frame.length).toBeGreaterThan(size);
    conn.reply.out.reset();
    expect(conn.nextRequest()).toBe(false);
    expect(await collectedDuring(() => serve(ctx, conn, get), OPS)).toBe(false);
    expect(ctx.groups.byName("default")!.counters.misses).toBe(0);
  }, 60_000);
}

test("a Set overwrite allocates nothing over 2M requests", async () => {
  const { ctx, conn, set } = setup(100);
  expect(await collectedDuring(() => serve(ctx, conn, set), OPS)).toBe(false);
  void sink;
}, 60_000);
