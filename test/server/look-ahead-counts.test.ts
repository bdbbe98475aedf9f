/**
 * A Get whose load ahead cannot answer it is one Get however its load is done again: one `loads`,
 * one LRU-K access (load-path.ts's LOAD_AGAIN). Here the answer kept ahead ran out (its TTL ended
 * while the connection waited): the Get was loaded again as a new Get, counted twice and admitted
 * after one Get (review). And a load ahead its Get does not use (the key moved to another member
 * before the Get's turn) counts in no `loads` and takes back its LRU-K access.
 */
import { afterEach, expect, test, setDefaultTimeout } from "bun:test";
import { CacheNode } from "../../src/server/cache-node.ts";
import { LogSink, RawSocket, getCall } from "./support.ts";
import { getValues } from "./wire-reader.ts";
import { waitUntil } from "../support/gates.ts";
import { keysOwnedBy, startMembers } from "../support/cluster-members.ts";
import { createMetrics } from "../../src/server/metrics.ts";
import { LatencyHistogram } from "../../src/server/latency.ts";
import { parsePromText } from "./prom-text.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  for (const x of open.splice(0)) await x.close();
});
const utf8 = new TextEncoder();

/** values reads each reply's Get value (or its outcome's kind). */
const values = (raw: RawSocket): string[] => getValues(raw.received);

test("a load ahead whose TTL ran out by its Get's turn is loaded again as the same Get: one `loads`, one LRU-K access (review: counted twice, admitted after one Get)", async () => {
  let now = 1_000_000;
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let calls = 0;
  const n = CacheNode.start({ port: 0, host: "127.0.0.1", logLevel: "silent", groups: [{ name: "default", ttlMs: 1000 }] }, {
    logger: new LogSink().logger,
    clock: () => now,
    loaders: { default: async (k: string) => { calls++; if (k === "slow") await gate; return `L:${k}`; } },
  });
  open.push(n);
  const group = n.groups.byName("default")!;
  const raw = await RawSocket.connect(n.port);
  raw.write(new Uint8Array([...getCall(1, "slow"), ...getCall(2, "K")]));
  await waitUntil(() => group.counters.admissionsRejected === 1, "K loaded ahead (one access: not admitted)");
  now += 5_000; // its TTL runs out while the connection waits for "slow"
  release();
  await raw.waitFor(() => raw.frames().length === 2, "replies");
  expect(values(raw)).toEqual(["L:slow", "L:K"]);
  expect(calls).toBe(3); // slow, K ahead, K again
  const c = group.counters;
  expect({ gets: c.gets, hits: c.hits, misses: c.misses, loads: c.loads, loadsAhead: c.loadsAhead }).toEqual({ gets: 2, hits: 0, misses: 2, loads: 2, loadsAhead: 1 });
  expect(group.store.has(utf8.encode("K"), 0, 1)).toBe(false); // one Get of K: not admitted (LRU-K, K = 2)
  raw.close();
}, 20_000);

test("loads ahead take at most half of --max-loads on a node with in-process loaders and a loaders module both: another client's Get still finds a place (review: each kind's loads ahead took half, together all of it)", async () => {
  const { join } = await import("node:path");
  const FIXTURES = join(import.meta.dir, "../loaders/fixtures/loaders.ts");
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  // --max-loads 8; the pool's 8 places: loads ahead may take 4 of the node's 8, whatever their group.
  await using n = await CacheNode.open(
    { port: 0, host: "127.0.0.1", logLevel: "silent", maxLoads: 8, loaders: FIXTURES, loaderThreads: 1, loaderConcurrency: 8, loaderQueue: 0 },
    { logger: new LogSink().logger, loaders: { own: async (k: string) => { if (k.startsWith("g")) await gate; return `L:${k}`; } } },
  );
  const a = await RawSocket.connect(n.port);
  const calls = [getCall(1, "g0", "own")];
  for (let i = 0; i < 4; i++) calls.push(getCall(2 + i, String(400 + i), "slow"));
  for (let i = 1; i <= 4; i++) calls.push(getCall(5 + i, `g${i}`, "own"));
  a.write(new Uint8Array(calls.flatMap((c) => [...c])));
  const own = n.groups.byName("own")!;
  const slow = n.groups.byName("slow")!;
  try {
    // (A's Gets come in one chunk: the look-ahead starts all it will at once, when A parks.)
    await waitUntil(() => own.counters.loads + slow.counters.loads + own.counters.loadsAhead + slow.counters.loadsAhead >= 5, "A's first load and its loads ahead");
    expect(own.counters.loadsAhead + slow.counters.loadsAhead).toBe(4);
    const b = await RawSocket.connect(n.port);
    b.write(getCall(1, "x", "own"));
    await b.waitFor(() => b.frames().length === 1, "B's reply");
    expect(values(b)).toEqual(["L:x"]);
    b.close();
  } finally {
    release();
  }
  await a.waitFor(() => a.frames().length === 9, "A's replies");
  a.close();
}, 20_000);

test("a load ahead started under another member list, its key still this node's, is loaded again as the same Get: one `loads`, one LRU-K access (review: counted twice, admitted after one Get)", async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let calls = 0;
  const loader = async (k: string): Promise<string> => {
    calls++;
    if (k.startsWith("slow")) await gate;
    return `L:${k}`;
  };
  const m = startMembers(2, open, {}, () => ({ default: loader }));
  const node = m.nodes[0]!;
  await waitUntil(() => node.cluster!.members.length === 2, "the member list");
  const [slow] = keysOwnedBy(node, m.ids[0]!, 1, "slow");
  const [k] = keysOwnedBy(node, m.ids[0]!, 1, "K");
  const group = node.groups.byName("default")!;
  const raw = await RawSocket.connect(node.port);
  raw.write(new Uint8Array([...getCall(1, slow!), ...getCall(2, k!)]));
  await waitUntil(() => group.counters.admissionsRejected === 1, "K loaded ahead (one access: not admitted)");
  node.cluster!.setMembers([m.ids[0]!]); // the other member leaves: every key is this node's, K still
  release();
  await raw.waitFor(() => raw.frames().length === 2, "replies");
  expect(values(raw)).toEqual([`L:${slow}`, `L:${k}`]);
  expect(calls).toBe(3); // slow, K ahead, K again
  const c = group.counters;
  expect({ gets: c.gets, hits: c.hits, misses: c.misses, loads: c.loads, loadsAhead: c.loadsAhead }).toEqual({ gets: 2, hits: 0, misses: 2, loads: 2, loadsAhead: 1 });
  expect(group.store.has(utf8.encode(k!), 0, k!.length)).toBe(false); // one Get of K: not admitted (LRU-K, K = 2)
  raw.close();
}, 20_000);

test("a load ahead whose key moved to another member by its Get's turn counts in no `loads` and takes back its LRU-K access: the Get is forwarded (review: one `loads` too many)", async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const calls = [0, 0, 0];
  const m = startMembers(3, open, {}, (i) => ({
    default: async (k: string): Promise<string> => {
      calls[i]!++;
      if (k.startsWith("slow")) await gate;
      return `L${i}:${k}`;
    },
  }));
  const node = m.nodes[0]!;
  const [id0, id1, id2] = m.ids as [string, string, string];
  await waitUntil(() => node.cluster!.members.length === 3, "the member list");
  const movers = keysOwnedBy(node, id2, 40, "K"); // the third member's keys under all three
  node.cluster!.setMembers([id0, id1]); // the third member is out of this node's list for now
  const [slow] = keysOwnedBy(node, id0, 1, "slow");
  const k = movers.find((x) => node.cluster!.owner(utf8.encode(x), 0, x.length) === id0)!; // this node's now, the third's once listed
  expect(k).toBeDefined();
  const group = node.groups.byName("default")!;
  const raw = await RawSocket.connect(node.port);
  raw.write(new Uint8Array([...getCall(1, slow!), ...getCall(2, k)]));
  await waitUntil(() => group.counters.admissionsRejected === 1, "K loaded ahead (one access: not admitted)");
  node.cluster!.setMembers([id0, id1, id2]); // the third member is listed again: K is its key
  release();
  await raw.waitFor(() => raw.frames().length === 2, "replies");
  expect(values(raw)).toEqual([`L0:${slow}`, `L2:${k}`]); // K forwarded to its owner at its turn
  expect(calls).toEqual([2, 0, 1]); // this node: slow, K ahead; the third member: K
  const c = group.counters;
  // Two Gets, both misses; one went to this node's loader (slow), the other was forwarded.
  expect({ gets: c.gets, hits: c.hits, misses: c.misses, loads: c.loads, loadsAhead: c.loadsAhead }).toEqual({ gets: 2, hits: 0, misses: 2, loads: 1, loadsAhead: 1 });
  // So the metrics: loads_ahead_total counts one load loads_total does not; its help must not call
  // loads ahead a part of loads_total (review: "Of those, ...").
  const fams = parsePromText(new TextDecoder().decode(createMetrics(node, new LatencyHistogram()).render()));
  const sample = (name: string): number => fams.get(name)!.samples.find((x) => x.labels.group === "default")!.value;
  expect({ loads: sample("mybuncache_loads_total"), ahead: sample("mybuncache_loads_ahead_total") }).toEqual({ loads: 1, ahead: 1 });
  expect(fams.get("mybuncache_loads_ahead_total")!.help).not.toStartWith("Of those");
  expect(fams.get("mybuncache_loads_ahead_total")!.help).toContain("in loads_total once its Get takes it");
  // K's access was taken back: K owned here again, one Get of it is one access (not admitted).
  node.cluster!.setMembers([id0, id1]);
  raw.write(getCall(3, k));
  await raw.waitFor(() => raw.frames().length === 3, "the third reply");
  expect(values(raw)[2]).toBe(`L0:${k}`);
  expect(group.store.has(utf8.encode(k), 0, k.length)).toBe(false); // (admitted after one Get: the load ahead's access left)
  raw.close();
}, 20_000);
