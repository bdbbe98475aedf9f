/**
 * Prefetches (src/server/prefetch.ts) keep the answers of Gets forwarded ahead. An answer is used
 * only under the member list it was fetched under, only while its TTL has not run out (and then
 * reports what is left of it), and the bytes kept are counted and bounded.
 */
import { expect, test, setDefaultTimeout } from "bun:test";
import { Cluster, type ForwardCallback, type PeerClient } from "../../src/cluster/cluster.ts";
import { Group } from "../../src/cluster/group.ts";
import { MAX_PREFETCH_BYTES, Prefetches, agedTtl } from "../../src/server/prefetch.ts";
import { MIB } from "../../src/store/store.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const utf8 = new TextEncoder();
const unused = (): Promise<never> => Promise.reject(new Error("not expected"));

/** setup: a cluster "A" + "B" whose B client holds every forwarded Get's callback until answered. */
function setup() {
  const now = { ms: 1_000 };
  const group = new Group({ name: "g", memory: 4 * MIB, store: { clock: () => now.ms } });
  const calls: ForwardCallback[] = [];
  const client = {
    isDown: false,
    forwardGet(_g: Uint8Array, _k: Uint8Array, _o: number, _l: number, done: ForwardCallback) {
      calls.push(done);
    },
    set: unused, delete: unused, clear: unused, peerGetMultiOf: unused, peerSetMultiOf: unused, invalidate: unused,
    close: () => Promise.resolve(),
  } satisfies PeerClient;
  const cluster = new Cluster({ self: "A", vnodes: 16, connect: () => client, logger: { info() {}, warn() {} } });
  cluster.setMembers(["A", "B"]);
  return { now, group, calls, client, cluster, prefetches: new Prefetches() };
}

test("an answer is used once, for its key; a TTL is aged by the wait, and one that ran out is not used", () => {
  const { now, group, calls, client, cluster, prefetches } = setup();
  const k1 = utf8.encode("k1");
  const k2 = utf8.encode("k2");
  expect(prefetches.start(cluster, client, group, k1, 0, 2)).toBe(true);
  expect(prefetches.start(cluster, client, group, k1, 0, 2)).toBe(false); // one per key
  expect(prefetches.start(cluster, client, group, k2, 0, 2)).toBe(true);
  const value = utf8.encode("xxvalue-1xx");
  calls[0]!(null, value, 2, 7, 500);
  calls[1]!(null, value, 2, 7, 100);
  expect(prefetches.bytes).toBe(14);
  now.ms += 60;
  const p1 = prefetches.take(cluster, group, k1, 0, 2, false)!;
  expect(new TextDecoder().decode(p1.value!)).toBe("value-1");
  expect(agedTtl(p1, now.ms)).toBe(440);
  expect(prefetches.take(cluster, group, k1, 0, 2, false)).toBeUndefined(); // used once
  now.ms += 50; // k2's 100 ms ran out while it was kept
  expect(prefetches.take(cluster, group, k2, 0, 2, false)).toBeUndefined();
  expect([prefetches.size, prefetches.bytes]).toEqual([0, 0]);
});

test("an answer of another member list is not used: any Get of its key drops it, whatever kind of answer it would use", () => {
  const { group, calls, client, cluster, prefetches } = setup();
  const [k1, k2] = [utf8.encode("k1"), utf8.encode("k2")];
  prefetches.start(cluster, client, group, k1, 0, 2);
  prefetches.start(cluster, client, group, k2, 0, 2);
  calls[0]!(null, utf8.encode("v"), 0, 1, -1);
  calls[1]!(null, utf8.encode("v"), 0, 1, -1);
  cluster.setMembers(["A", "B", "C"]); // a key may be this node's now: its Get loads it here
  expect(prefetches.take(cluster, group, k1, 0, 2, false)).toBeUndefined();
  expect(prefetches.take(cluster, group, k2, 0, 2, true)).toBeUndefined();
  expect([prefetches.size, prefetches.bytes]).toEqual([0, 0]);
});

test("answers started together are all kept, even past MAX_PREFETCH_BYTES (dropped, one would be fetched or loaded twice); nothing more starts then", () => {
  const { group, calls, client, cluster, prefetches } = setup();
  const big = new Uint8Array(MAX_PREFETCH_BYTES - 10);
  expect(prefetches.start(cluster, client, group, utf8.encode("a"), 0, 1)).toBe(true);
  expect(prefetches.start(cluster, client, group, utf8.encode("b"), 0, 1)).toBe(true);
  calls[0]!(null, big, 0, big.length, -1);
  calls[1]!(null, big, 0, big.length, -1);
  expect([prefetches.size, prefetches.bytes, prefetches.full]).toEqual([2, 2 * big.length, true]);
  expect(prefetches.start(cluster, client, group, utf8.encode("c"), 0, 1)).toBe(false);
  expect(prefetches.take(cluster, group, utf8.encode("b"), 0, 1, false)!.value!.length).toBe(big.length);
});

test("a Get takes only the kind of answer it would use: a load's for a Get served here, a forward's for one forwarded", () => {
  const { group, calls, client, cluster, prefetches } = setup();
  const k = utf8.encode("k");
  prefetches.start(cluster, client, group, k, 0, 1);
  calls[0]!(null, utf8.encode("v"), 0, 1, -1);
  expect(prefetches.take(cluster, group, k, 0, 1, true)).toBeUndefined(); // left for its Get
  expect(prefetches.size).toBe(1);
  expect(new TextDecoder().decode(prefetches.take(cluster, group, k, 0, 1, false)!.value!)).toBe("v");
  expect(prefetches.size).toBe(0);
});

test("drop and clear discard answers; past MAX_PREFETCH_BYTES nothing more is fetched ahead", () => {
  const { group, calls, client, cluster, prefetches } = setup();
  const big = new Uint8Array(MAX_PREFETCH_BYTES);
  prefetches.start(cluster, client, group, utf8.encode("a"), 0, 1);
  calls[0]!(null, big, 0, big.length, -1);
  expect(prefetches.start(cluster, client, group, utf8.encode("b"), 0, 1)).toBe(false);
  prefetches.drop(cluster, group, utf8.encode("a"), 0, 1, false);
  expect([prefetches.size, prefetches.bytes]).toEqual([0, 0]);
  expect(prefetches.start(cluster, client, group, utf8.encode("b"), 0, 1)).toBe(true);
  calls[1]!(null, utf8.encode("vv"), 0, 2, -1);
  prefetches.clear();
  expect([prefetches.size, prefetches.bytes]).toEqual([0, 0]);
  expect(prefetches.take(cluster, group, utf8.encode("b"), 0, 1, false)).toBeUndefined();
  // An answer that arrives after its entry was dropped is not counted.
  prefetches.start(cluster, client, group, utf8.encode("c"), 0, 1);
  prefetches.clear();
  calls[2]!(null, utf8.encode("late"), 0, 4, -1);
  expect(prefetches.bytes).toBe(0);
  prefetches.start(cluster, client, group, utf8.encode("d"), 0, 1);
  prefetches.drop(cluster, group, utf8.encode("d"), 0, 1, false);
  calls[3]!(null, utf8.encode("late"), 0, 4, -1);
  expect(prefetches.bytes).toBe(0);
});
