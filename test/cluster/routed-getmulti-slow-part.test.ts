/**
 * A routed GetMulti whose part for another owner is many cold keys of slow loads: the owner loads
 * a PeerGetMulti's misses a window at a time (32 by default), so the part takes several loads'
 * time, longer than one load's wait. The forwarder must wait for it while the owner answers, as it
 * waits for a single slow PeerGet: each key loaded once, by its owner, the client given every
 * value, no peer error counted. Before, the forwarder gave up on the owner at the timeout plus
 * one load's wait (0.7 s here, against ~1 s of loads), counted a peer error and loaded the whole
 * part itself: each key loaded twice. A part of over 64 KiB, which the owner serves in order, holds
 * the liveness ping sent behind it: its wait is judged by a ping on another connection (before,
 * it failed at the timeout). An owner that answers nothing still fails the part at the timeout,
 * however many keys it has, and the forwarder loads them.
 */
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
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

/** startNode starts a member with group "g" of `loader`: peer timeout 200 ms, load timeout 500 ms (slowLoadingMember). */
function startNode(port: number, ids: string[], loader: Loader, extra: Partial<NodeConfig> = {}): CacheNode {
  return slowLoadingMember(open, port, ids, loader, extra);
}

function client(port: number): CacheClient {
  const c = new CacheClient({ host: "127.0.0.1", port, timeoutMs: 10_000 });
  open.push(c);
  return c;
}

describe("a routed GetMulti part of many slow cold keys", () => {
  test("waits for the owner's loads, a window at a time: each key loaded once, every value answered, no peer error", async () => {
    const [pa, pb] = freePorts(2) as [number, number];
    const ids = [`127.0.0.1:${pa}`, `127.0.0.1:${pb}`];
    const calls = new Map<string, string[]>();
    // 300 keys of 100 ms loads, 32 at a time: ~1 s on the owner, against 200 ms of peer timeout
    // and 500 ms of load timeout (one load's wait: 0.7 s in all).
    const a = startNode(pa, ids, countingLoader("A", 100, calls));
    startNode(pb, ids, countingLoader("B", 100, calls));
    const keys = keysOwnedBy(a, ids[1]!, 300, "cold");
    const found = await client(pa).getMulti("g", keys);
    const loadedTwice = [...calls].filter(([, by]) => by.length !== 1).length;
    expect(loadedTwice).toBe(0);
    expect(found.size).toBe(keys.length);
    for (const k of keys) expect(text(found.get(k) ?? new Uint8Array())).toBe(`B:${k}`);
    expect([...calls].filter(([, by]) => by[0] !== "B")).toEqual([]);
    expect([...calls.keys()].sort()).toEqual(keys.slice().sort());
    expect(a.cluster!.counters.peerErrors).toBe(0);
    expect(a.cluster!.counters.fallbackLoads).toBe(0);
    const peer = a.cluster!.peer(ids[1]!) as CacheClient;
    expect(peer.isDown).toBe(false);
    expect(peer.counters.timeouts).toBe(0);
  });

  test("so does a part of over 64 KiB, which the owner serves in order (its pings wait behind it)", async () => {
    const [pa, pb] = freePorts(2) as [number, number];
    const ids = [`127.0.0.1:${pa}`, `127.0.0.1:${pb}`];
    const calls = new Map<string, string[]>();
    const a = startNode(pa, ids, countingLoader("A", 100, calls));
    startNode(pb, ids, countingLoader("B", 100, calls));
    // 330 keys of 200 bytes: a PeerGetMulti of over 64 KiB (DETACH_MAX_MULTI_MESSAGE_BYTES), ~1.1 s of loads.
    const keys = keysOwnedBy(a, ids[1]!, 330, `${"x".repeat(195)}-`);
    const found = await client(pa).getMulti("g", keys);
    expect([...calls].filter(([, by]) => by.length !== 1).length).toBe(0);
    expect(found.size).toBe(keys.length);
    for (const k of keys) expect(text(found.get(k) ?? new Uint8Array())).toBe(`B:${k}`);
    expect(a.cluster!.counters.peerErrors).toBe(0);
    expect((a.cluster!.peer(ids[1]!) as CacheClient).counters.timeouts).toBe(0);
  });

  test("three at once, on one peer connection (the owner answers one out of order and serves the others in turn): each key loaded once", async () => {
    const [pa, pb] = freePorts(2) as [number, number];
    const ids = [`127.0.0.1:${pa}`, `127.0.0.1:${pb}`];
    const calls = new Map<string, string[]>();
    const a = startNode(pa, ids, countingLoader("A", 100, calls));
    startNode(pb, ids, countingLoader("B", 100, calls));
    const sets = ["p", "q", "r"].map((prefix) => keysOwnedBy(a, ids[1]!, 300, prefix));
    const c = client(pa);
    const founds = await Promise.all(sets.map((keys) => c.getMulti("g", keys)));
    expect([...calls].filter(([, by]) => by.length !== 1).length).toBe(0);
    sets.forEach((keys, n) => {
      expect(founds[n]!.size).toBe(keys.length);
      for (const k of keys) expect(text(founds[n]!.get(k) ?? new Uint8Array())).toBe(`B:${k}`);
    });
    expect(a.cluster!.counters.peerErrors).toBe(0);
    expect((a.cluster!.peer(ids[1]!) as CacheClient).counters.timeouts).toBe(0);
  });

  for (const { what, prefix } of [
    { what: "a part of 330 short keys", prefix: "hung" },
    { what: "a part of over 64 KiB (its pings go on another connection)", prefix: `${"h".repeat(195)}-` },
  ]) {
    test(`an owner that answers nothing still fails ${what} at the timeout, not the part's longer wait`, async () => {
      // The silent member reads what it is sent and never answers (a hung process). With a load
      // timeout of 30 s, a part of 330 keys may wait minutes for a live owner: waited out here,
      // it would outlast this test's timeout.
      const [pa] = freePorts(1) as [number];
      const silent = silentMember(open); // (reads what it is sent, answers nothing: a hung process)
      const ids = [`127.0.0.1:${pa}`, `127.0.0.1:${silent.port}`];
      const calls = new Map<string, string[]>();
      const a = startNode(pa, ids, countingLoader("A", 1, calls), { loadTimeoutMs: 30_000 });
      const keys = keysOwnedBy(a, ids[1]!, 330, prefix);
      const t0 = performance.now();
      const found = await client(pa).getMulti("g", keys);
      expect(performance.now() - t0).toBeLessThan(5_000);
      expect(found.size).toBe(keys.length);
      for (const k of keys) expect(text(found.get(k) ?? new Uint8Array())).toBe(`A:${k}`);
      expect([...calls].filter(([, by]) => by.length !== 1 || by[0] !== "A")).toEqual([]);
      expect(calls.size).toBe(keys.length);
      expect(a.cluster!.counters.peerErrors).toBe(1);
      expect(a.cluster!.counters.fallbackLoads).toBe(keys.length);
    });
  }
});
