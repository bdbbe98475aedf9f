/**
 * serve-loop.ts — the JavaScript cost of serving a request, without sockets.
 *
 *   bun run bench:serve                 # 10k keys, 100 B values, 90 % Gets, depth 16
 *   KEYS=1000 SIZE=4096 GETS=1 bun run bench:serve
 *
 * What the node does per socket event, minus the socket: 50 connections take turns, each is handed
 * a prebuilt chunk of 16 pipelined framed calls of the network benchmark's workload (bench/net:
 * the same key names, values and Get/Set mix), served by CallRuns and the general path exactly as
 * CacheServer.process does, and the replies are dropped. It prints the nanoseconds per request of
 * five rounds. With warm caches and nothing between two chunks, this is the floor of the node's
 * JavaScript per request; the difference to what a profile of the node shows under load is what
 * the kernel's work between events costs the CPU caches (bench/RESULTS.md, session 7).
 */
import { Group } from "../src/cluster/group.ts";
import { Groups } from "../src/cluster/groups.ts";
import { DEFAULT_LIMITS } from "../src/protocol/limits.ts";
import { ProtocolConnection } from "../src/protocol/protocol-connection.ts";
import { CallRuns } from "../src/server/call-runs.ts";
import { dispatch } from "../src/server/dispatch.ts";
import { MIB } from "../src/store/store.ts";
import { keyName, thriftGet, thriftSet, valueFor } from "./net/frames.ts";

const KEYS = Number(process.env.KEYS ?? 10_000);
const SIZE = Number(process.env.SIZE ?? 100);
const GETS = Number(process.env.GETS ?? 0.9);
const DEPTH = 16;
const CONNECTIONS = 50;
const CHUNKS = 500;

const clock = (): number => Date.now();
const groups = new Groups();
const group = groups.add(new Group({ name: "default", memory: 256 * MIB, store: { clock } }));
const enc = new TextEncoder();
for (let i = 0; i < KEYS; i++) {
  const k = enc.encode(keyName(i));
  const v = valueFor(i, SIZE);
  group.store.set(k, 0, k.length, v, 0, v.length, 0);
}

let seed = 12345;
const random = (): number => (seed = (seed * 1103515245 + 12345) >>> 0) / 4294967296;
const chunks: Uint8Array[] = [];
for (let c = 0; c < CHUNKS; c++) {
  const calls: Uint8Array[] = [];
  for (let d = 0; d < DEPTH; d++) {
    const i = Math.floor(random() * KEYS);
    calls.push(random() < GETS ? thriftGet("default", keyName(i), d) : thriftSet("default", keyName(i), valueFor(i, SIZE), d));
  }
  const chunk = new Uint8Array(calls.reduce((n, call) => n + call.length, 0));
  let at = 0;
  for (const call of calls) {
    chunk.set(call, at);
    at += call.length;
  }
  chunks.push(chunk);
}

const connections = Array.from({ length: CONNECTIONS }, () => new ProtocolConnection(DEFAULT_LIMITS));
const runs = new CallRuns(groups, DEFAULT_LIMITS, { warmedRequests: 0 });
const ctx = { groups, clock };
let served = 0;

/** round serves `events` chunks, one per connection in turn, and drops the replies. */
function round(events: number): void {
  for (let e = 0; e < events; e++) {
    const conn = connections[e % CONNECTIONS]!;
    conn.push(chunks[e % CHUNKS]!);
    for (;;) {
      const n = runs.serve(conn.reader, conn.reply, 1024, 1 << 22);
      if (n > 0) {
        served += n;
        continue;
      }
      if (!conn.nextRequest()) break;
      served++;
      if (dispatch(ctx, conn.request, conn.reply) !== undefined) throw new Error("a request waited: the workload has no loads");
    }
    conn.reply.out.reset();
  }
}

for (let w = 0; w < 5; w++) round(20_000);
console.log(`serve-loop: ${KEYS} keys, ${SIZE} B values, ${Math.round(GETS * 100)} % Gets, depth ${DEPTH}, ${CONNECTIONS} connections`);
for (let r = 0; r < 5; r++) {
  const before = served;
  const t0 = Bun.nanoseconds();
  round(100_000);
  const t1 = Bun.nanoseconds();
  console.log(`round ${r + 1}: ${((t1 - t0) / (served - before)).toFixed(1)} ns/request`);
}
