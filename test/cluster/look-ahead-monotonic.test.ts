/**
 * Reads on one pipelined connection never go back in time: a Get whose answer was fetched or
 * loaded ahead of its turn (the look-ahead, while an earlier request waited) is not answered with
 * it when a write of its key was heard of since it was sent; the answer is fetched or loaded
 * again (review: a GetMulti of K read v2, then the Get of K behind it v1, the value an
 * acknowledged write had replaced; and on a lone node, a cache-aside Delete acknowledged before
 * the Get's turn did not keep the old value from being served).
 */
import { afterEach, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import { keysOf, leasesHeld, startMembers } from "../support/cluster-members.ts";
import { waitUntil } from "../support/gates.ts";
import { freePorts } from "../support/node-process.ts";
import { LogSink, RawSocket, getCall, getMultiCall } from "../server/support.ts";
import { delayingProxy } from "../support/delay-proxy.ts";
import { T } from "../protocol/wire-builder.ts";
import { field, outcome, readReplies } from "../server/wire-reader.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const open: { close(): Promise<void> }[] = [];
afterEach(async () => { await Promise.all(open.splice(0).map((x) => x.close())); });
const utf8 = new TextEncoder();
const dec = new TextDecoder();

test("GetMulti K then Get K on one connection: the Get must not be older than the GetMulti", async () => {
  const loader = async (key: string): Promise<string | null> => {
    if (key.startsWith("slow")) await Bun.sleep(300);
    return `L:${key}`;
  };
  const m = startMembers(2, open, { peerTimeoutMs: 2000 }, () => ({ default: loader }));
  const [a, b] = m.nodes as [CacheNode, CacheNode];
  await leasesHeld(m.nodes, m.ids); // (an answer fetched ahead is used only under the owner's lease)
  const slow = keysOf(a, m.ids[0]!, "slow", 1)[0]!; // owned by A: its load parks the connection
  const k = keysOf(a, m.ids[1]!, "k", 1)[0]!; // owned by B
  const writer = new CacheClient({ host: "127.0.0.1", port: b.port, timeoutMs: 2000 });
  open.push(writer);
  await writer.set("default", k, "v1");

  const raw = await RawSocket.connect(a.port);
  const servedByB = b.groups.byName("default")!.counters.gets;
  raw.write(new Uint8Array([...getCall(1, slow), ...getMultiCall(2, "default", [utf8.encode(k)]), ...getCall(3, k)]));
  // Get 3 is forwarded ahead now, while Get 1 loads, and B has answered it (v1).
  await waitUntil(() => a.cluster!.counters.prefetchesSent > 0 && b.groups.byName("default")!.counters.gets > servedByB, "Get 3 forwarded ahead and answered");
  await writer.set("default", k, "v2"); // acknowledged before Get 2 and Get 3 are served
  await raw.waitFor(() => raw.frames().length === 3, "replies");
  const { replies } = readReplies(raw.received, "framed");
  const got = replies.map((r) => {
    const o = outcome(r);
    if (o.kind !== "success") return `error`;
    if (r.name === "GetMulti") return ((field(o.value, 1, T.MAP) as [Uint8Array, Uint8Array][]) ?? []).map(([, v]) => dec.decode(v)).join();
    return dec.decode(field(o.value, 1, T.STRING) as Uint8Array);
  });
  expect(a.cluster!.counters.prefetchesSent).toBeGreaterThan(0); // Get 3 was forwarded ahead
  expect(got).toEqual([`L:${slow}`, "v2", "v2"]);
  raw.close();
}, 20_000);

test("Get J (new) then Get K (old) though K was written before J", async () => {
  const loader = async (key: string): Promise<string | null> => {
    if (key.startsWith("slow")) await Bun.sleep(300);
    return `L:${key}`;
  };
  const m = startMembers(2, open, { peerTimeoutMs: 2000 }, () => ({ default: loader }));
  const [a, b] = m.nodes as [CacheNode, CacheNode];
  await leasesHeld(m.nodes, m.ids); // (an answer fetched ahead is used only under the owner's lease)
  const slow = keysOf(a, m.ids[0]!, "slow", 1)[0]!;
  const j = keysOf(a, m.ids[0]!, "j", 1)[0]!; // owned by A, held: not started ahead, read at its turn
  const k = keysOf(a, m.ids[1]!, "k", 1)[0]!; // owned by B: forwarded ahead
  const w = new CacheClient({ host: "127.0.0.1", port: a.port, timeoutMs: 2000 });
  open.push(w);
  await w.set("default", k, "v1");
  await w.set("default", j, "v1");
  const raw = await RawSocket.connect(a.port);
  const servedByB = b.groups.byName("default")!.counters.gets;
  raw.write(new Uint8Array([...getCall(1, slow), ...getCall(2, j), ...getCall(3, k)]));
  await waitUntil(() => a.cluster!.counters.prefetchesSent > 0 && b.groups.byName("default")!.counters.gets > servedByB, "Get 3 forwarded ahead and answered");
  await w.set("default", k, "v2"); // K first...
  await w.set("default", j, "v2"); // ...then J
  await raw.waitFor(() => raw.frames().length === 3, "replies");
  const { replies } = readReplies(raw.received, "framed");
  const got = replies.map((r) => { const o = outcome(r); return o.kind === "success" ? dec.decode(field(o.value, 1, T.STRING) as Uint8Array) : "error"; });
  expect(got).toEqual([`L:${slow}`, "v2", "v2"]);
  raw.close();
}, 20_000);

test("an answer fetched ahead and kept past the owner's note of its hand-out (the mirror TTL and 1 s) is not used: the owner acknowledged a write without this node's answer", async () => {
  const [pa, pb, proxied] = freePorts(3) as [number, number, number];
  const ids = [`127.0.0.1:${proxied}`, `127.0.0.1:${pb}`]; // B reaches A through a proxy
  const loader = async (key: string): Promise<string | null> => { if (key.startsWith("slow")) await Bun.sleep(2500); return `L:${key}`; };
  const cfg = { host: "127.0.0.1", peers: ids, logLevel: "silent" as const, peerTimeoutMs: 5000, mirrorTtlMs: 100 };
  const a = CacheNode.start({ ...cfg, port: pa, self: ids[0] }, { logger: new LogSink().logger, loaders: { default: loader } });
  const b = CacheNode.start({ ...cfg, port: pb }, { logger: new LogSink().logger, loaders: { default: loader } });
  open.push(a, b);
  let slow = "", k = "";
  for (let i = 0; slow === "" || k === ""; i++) {
    const s = `slow${i}`, kk = `kq${i}`;
    if (slow === "" && a.cluster!.owner(utf8.encode(s), 0, s.length) === ids[0]) slow = s;
    if (k === "" && a.cluster!.owner(utf8.encode(kk), 0, kk.length) === ids[1]) k = kk;
  }
  open.push(delayingProxy(proxied, pa, k, 3000)); // B's calls to A that name K (its invalidation) come 3 s late
  await Bun.sleep(1500);
  const writer = new CacheClient({ host: "127.0.0.1", port: pb, timeoutMs: 5000 });
  open.push(writer);
  const raw = await RawSocket.connect(pa);
  raw.write(new Uint8Array([...getCall(1, slow), ...getMultiCall(2, "default", [utf8.encode(k)]), ...getCall(3, k)]));
  await Bun.sleep(1400); // K forwarded ahead at ~0 (B loads L:K); B's note of it ends at ~1.1 s
  await writer.set("default", k, "v2");
  await raw.waitFor(() => raw.frames().length === 3, "replies");
  const got = readReplies(raw.received, "framed").replies.map((r) => {
    const o = outcome(r);
    if (o.kind !== "success") return o.kind;
    if (r.name === "GetMulti") return ((field(o.value, 1, T.MAP) as [Uint8Array, Uint8Array][]) ?? []).map(([, v]) => dec.decode(v)).join();
    return dec.decode(field(o.value, 1, T.STRING) as Uint8Array);
  });
  expect(a.cluster!.counters.prefetchesSent).toBeGreaterThan(0);
  expect(got).toEqual([`L:${slow}`, "v2", "v2"]);
  raw.close();
}, 20_000);
