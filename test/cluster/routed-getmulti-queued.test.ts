/**
 * Routed GetMultis' parts queued on one peer connection. The owner answers one PeerGetMulti of a
 * connection out of order while it loads; the next one it serves in order, and what comes behind
 * that one on the connection (more parts, a PeerGet) is not even read until its loads end. So a
 * call sent behind other parts waits for their loads before its own: with loads a good part of
 * the load timeout, the calls at the back of the queue outlast a wait counted from their own keys
 * only (review: the forwarder gave up on them, counted a peer error and loaded their keys again).
 * The forwarder must wait for them while the owner answers: each key loaded once, by the owner,
 * every value answered. An owner that answers nothing still fails every one at the timeout.
 */
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient, TEST_DOOR } from "../../src/client/cache-client.ts";
import type { Loader } from "../../src/cluster/loader.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import type { NodeConfig } from "../../src/server/config.ts";
import { freePorts } from "../support/node-process.ts";
import { countingLoader, keysOwnedBy, silentMember, slowLoadingMember } from "../support/cluster-members.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const text = (b: Uint8Array): string => new TextDecoder().decode(b);

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((x) => x.close()));
});

/** LOAD_MS: each load takes 300 ms, 3/5 of the load timeout; the peer timeout is 200 ms. */
const LOAD_MS = 300;

/** startNode starts a member with group "g" of `loader`: peer timeout 200 ms, load timeout 500 ms (slowLoadingMember). */
function startNode(port: number, ids: string[], loader: Loader, extra: Partial<NodeConfig> = {}): CacheNode {
  return slowLoadingMember(open, port, ids, loader, extra);
}

/** client is an application's client of one connection: each its own, so the node gets the requests of several at once. */
function client(port: number): CacheClient {
  const c = new CacheClient({ host: "127.0.0.1", port, timeoutMs: 10_000, connections: 1 });
  open.push(c);
  return c;
}

/**
 * twoNodes starts A and B, each loading after LOAD_MS (`calls` notes who loaded what), and has A
 * forward a Get to B first, so that A's connections to B are up (none backing off from A's start,
 * when B did not listen yet): the parts then all go on A's one read connection to B.
 */
async function twoNodes(calls: Map<string, string[]>): Promise<{ a: CacheNode; ids: string[] }> {
  const [pa, pb] = freePorts(2) as [number, number];
  const ids = [`127.0.0.1:${pa}`, `127.0.0.1:${pb}`];
  const a = startNode(pa, ids, countingLoader("A", LOAD_MS, calls));
  startNode(pb, ids, countingLoader("B", LOAD_MS, calls));
  const [warm] = keysOwnedBy(a, ids[1]!, 1, "warm") as [string];
  const peer = a.cluster!.peer(ids[1]!) as CacheClient;
  while (!peer[TEST_DOOR].connections.every((c) => c.usable)) await client(pa).get("g", warm).catch(() => {});
  expect(text((await client(pa).get("g", warm)).value)).toBe(`B:${warm}`);
  calls.delete(warm);
  return { a, ids };
}

function expectLoadedOnceByB(calls: Map<string, string[]>, keys: string[]): void {
  expect([...calls].filter(([, by]) => by.length !== 1 || by[0] !== "B")).toEqual([]);
  expect([...calls.keys()].sort()).toEqual(keys.slice().sort());
}

describe("routed GetMultis whose parts queue on one peer connection", () => {
  test("six at once, 64 cold keys each (two windows of loads): each key loaded once, by the owner, every value answered", async () => {
    // The owner answers them in pairs (one out of order, the next in order beside it): at ~0.6 s,
    // ~1.2 s and ~1.8 s. A part's own wait is the timeout and two load waits: 1.2 s.
    const calls = new Map<string, string[]>();
    const { a, ids } = await twoNodes(calls);
    const sets = ["p", "q", "r", "s", "t", "u"].map((prefix) => keysOwnedBy(a, ids[1]!, 64, prefix));
    const founds = await Promise.all(sets.map((keys) => client(a.port).getMulti("g", keys)));
    expectLoadedOnceByB(calls, sets.flat());
    sets.forEach((keys, n) => {
      expect(founds[n]!.size).toBe(keys.length);
      for (const k of keys) expect(text(founds[n]!.get(k) ?? new Uint8Array())).toBe(`B:${k}`);
    });
    expect(a.cluster!.counters.peerErrors).toBe(0);
    expect(a.cluster!.counters.fallbackLoads).toBe(0);
    const peer = a.cluster!.peer(ids[1]!) as CacheClient;
    expect(peer.counters.timeouts).toBe(0);
    expect(peer.isDown).toBe(false);
  });

  test("a routed Get sent behind two of them: its key loaded once, by the owner", async () => {
    // The owner answers the PeerGet only once the second part's loads end (~0.9 s: 96 keys, three
    // windows; the owner loads the Get's key meanwhile, looking ahead), past its own wait of the
    // timeout and one load wait (0.7 s).
    const calls = new Map<string, string[]>();
    const { a, ids } = await twoNodes(calls);
    const sets = ["p", "q"].map((prefix) => keysOwnedBy(a, ids[1]!, 96, prefix));
    const [getKey] = keysOwnedBy(a, ids[1]!, 1, "single") as [string];
    const multis = sets.map((keys) => client(a.port).getMulti("g", keys));
    // Both parts are on the owner, loading, before the Get is sent behind them.
    const started = (prefix: string) => [...calls.keys()].some((k) => k.startsWith(prefix));
    while (!(started("p") && started("q"))) await Bun.sleep(5);
    const got = await client(a.port).get("g", getKey);
    expect(text(got.value)).toBe(`B:${getKey}`);
    await Promise.all(multis);
    expectLoadedOnceByB(calls, [...sets.flat(), getKey]);
    expect(a.cluster!.counters.peerErrors).toBe(0);
    expect((a.cluster!.peer(ids[1]!) as CacheClient).counters.timeouts).toBe(0);
  });

  test("an owner that answers nothing still fails every one at the timeout, and the forwarder loads their keys", async () => {
    const [pa] = freePorts(1) as [number];
    const silent = silentMember(open); // (reads what it is sent, answers nothing: a hung process)
    const ids = [`127.0.0.1:${pa}`, `127.0.0.1:${silent.port}`];
    const calls = new Map<string, string[]>();
    const a = startNode(pa, ids, countingLoader("A", 1, calls), { loadTimeoutMs: 30_000 });
    const sets = ["p", "q", "r", "s"].map((prefix) => keysOwnedBy(a, ids[1]!, 64, prefix));
    const t0 = performance.now();
    const founds = await Promise.all(sets.map((keys) => client(pa).getMulti("g", keys)));
    expect(performance.now() - t0).toBeLessThan(5_000); // (the timeout and slack; the longer waits would be minutes)
    sets.forEach((keys, n) => {
      expect(founds[n]!.size).toBe(keys.length);
      for (const k of keys) expect(text(founds[n]!.get(k) ?? new Uint8Array())).toBe(`A:${k}`);
    });
    expect(a.cluster!.counters.fallbackLoads).toBe(sets.flat().length);
  });
});
