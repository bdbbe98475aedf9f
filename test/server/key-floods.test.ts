/**
 * Keys chosen to share JavaScriptCore's string hash: where a multi-key request's keys are grouped
 * or matched, they are sorted by their bytes, not put in a Map keyed by their strings (one
 * GetMulti of 40,000 such keys held the node's loop 7.1 s; a routed one of 20,000, 2.1 s). These
 * tests check the answers; bench/hash-flooding.ts measures the time. Loads under way are keyed
 * by their key strings: they are bounded instead (--max-loads, load-bound.ts: 19,500 loads of
 * such keys under way held the loop 9.9 s; bench/flight-floods.ts).
 */
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { compareBytes, sortedByBytes } from "../../src/bytes/bytes.ts";
import { CacheClient } from "../../src/client/cache-client.ts";
import { type FoundEntries, buildResult, valuesFor } from "../../src/client/results.ts";
import { DEFAULT_LIMITS } from "../../src/protocol/limits.ts";
import { ReplyReader } from "../../src/protocol/reply-reader.ts";
import { METHOD_GET_MULTI } from "../../src/protocol/request.ts";
import { ERROR_CODE } from "../../src/protocol/errors.ts";
import { RawSocket, cacheErrorCode, getCall, getMultiCall, setCall, startNode } from "./support.ts";
import type { Request } from "../../src/protocol/request.ts";
import { earlierSameKey } from "../../src/server/multi-loads.ts";
import { startMembers } from "../support/cluster-members.ts";
import { GatedLoader, waitUntil } from "../support/gates.ts";
import { jscCollidingKeys, jscCollidingTextKeys } from "../support/jsc-collisions.ts";
import { multiKeyRequest } from "../support/multi-request.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((x) => x.close()));
});

const enc = new TextEncoder();
const b = (s: string): Uint8Array => enc.encode(s);


describe("grouping and matching keys by their bytes", () => {
  test("compareBytes orders by bytes, a prefix first; sortedByBytes keeps equal keys in index order", () => {
    expect(compareBytes(b("a"), b("ab"))).toBeLessThan(0);
    expect(compareBytes(b("b"), b("ab"))).toBeGreaterThan(0);
    expect(compareBytes(b("ab"), b("ab"))).toBe(0);
    expect(compareBytes(new Uint8Array([0xff]), b("a"))).toBeGreaterThan(0);
    expect(sortedByBytes([b("b"), b("a"), b("b"), b(""), b("a")])).toEqual([3, 1, 4, 0, 2]);
  });

  test("earlierSameKey maps every later entry of a key to its first, colliding keys included", () => {
    const flood = jscCollidingKeys(300);
    // Entries: the flood, then every third key of it again, twice, and a key and its prefix.
    const keys = [...flood, ...flood.filter((_, i) => i % 3 === 0), ...flood.filter((_, i) => i % 3 === 0), b("k"), b("k\u0000")];
    const req = multiKeyRequest(keys) as Request;
    const indexes = keys.map((_, i) => i).reverse(); // any order: "first" is first in `indexes`
    const earlier = earlierSameKey(req, indexes);
    const firstAt = new Map<string, number>();
    indexes.forEach((i, m) => {
      const name = Buffer.from(keys[i]!).toString("latin1");
      const first = firstAt.get(name);
      expect(earlier[m]).toBe(first ?? -1);
      if (first === undefined) firstAt.set(name, i);
    });
    expect(earlier.filter((e) => e >= 0).length).toBe(200);
  });

  test("valuesFor gives each asked key its entry's value whatever the entries' order; absent ones undefined", () => {
    const asked = [...jscCollidingKeys(200), b("ab"), b("a"), b("missing")];
    asked.push(asked[5]!); // asked twice: both get it
    const entries = asked.map((k, i) => [k, b(`v${i}`)] as const).filter(([k]) => compareBytes(k, b("missing")) !== 0).slice(0, -1);
    for (let i = entries.length - 1; i > 0; i--) {
      const j = (i * 7919) % (i + 1);
      [entries[i], entries[j]] = [entries[j]!, entries[i]!];
    }
    const got = valuesFor(asked, { keys: entries.map(([k]) => k), values: entries.map(([, v]) => v) });
    asked.forEach((k, i) => {
      const want = compareBytes(k, b("missing")) === 0 ? undefined : `v${i === asked.length - 1 ? 5 : i}`;
      expect(got[i] === undefined ? undefined : new TextDecoder().decode(got[i])).toBe(want);
    });
  });

  test("a routed GetMulti of colliding keys another member holds answers each its own value", async () => {
    const m = startMembers(2, open);
    const [a, owner] = [m.nodes[0]!, m.nodes[1]!];
    const keys = jscCollidingKeys(3000).filter((k) => a.cluster!.owner(k, 0, k.length) === m.ids[1]).slice(0, 1000);
    expect(keys.length).toBe(1000);
    const viaOwner = new CacheClient({ host: "127.0.0.1", port: owner.port, timeoutMs: 10_000 });
    open.push(viaOwner);
    await viaOwner.setMulti("default", keys.map((k, i) => [k, `value ${i}`] as [Uint8Array, string]));
    // Asked of the other member over a socket (CacheClient.getMulti keys its map by text, and
    // these keys are not UTF-8): its reply's entries, read as a peer's are.
    const raw = await RawSocket.connect(a.port);
    open.push({ close: async () => raw.close() });
    raw.write(getMultiCall(1, "default", [...keys, b("absent")]));
    await raw.waitFor(() => raw.frames().length > 0, "the GetMulti reply");
    const r = new ReplyReader(DEFAULT_LIMITS);
    const frame = raw.frames()[0]!;
    r.begin(frame, 0, frame.length);
    r.readResult(METHOD_GET_MULTI);
    const found = buildResult(METHOD_GET_MULTI, r) as FoundEntries;
    expect(found.keys.length).toBe(1000);
    const byKey = new Map(found.keys.map((k, j) => [Buffer.from(k).toString("hex"), new TextDecoder().decode(found.values[j])]));
    keys.forEach((k, i) => expect(byKey.get(Buffer.from(k).toString("hex"))).toBe(`value ${i}`));
    expect(a.cluster!.counters.forwarded).toBeGreaterThan(0);
  });
});

describe("loads of colliding keys under way", () => {
  test("a node runs at most --max-loads of them at once; past it a Get is OVERLOADED, and hits are served meanwhile", async () => {
    const loader = new GatedLoader();
    const node = startNode({ maxLoads: 64 }, { loaders: { text: loader.load } });
    open.push(node);
    const probe = await RawSocket.connect(node.port);
    open.push({ close: async () => probe.close() });
    probe.write(setCall(1, "hot", b("served"), "text"));
    await probe.waitFor(() => probe.frames().length === 1, "the Set");
    // One Get a connection (no look-ahead): 100 loads asked, 64 run, the rest refused at once.
    const keys = jscCollidingTextKeys(100);
    const sockets = await Promise.all(keys.map(() => RawSocket.connect(node.port)));
    open.push({ close: async () => sockets.forEach((s) => s.close()) });
    sockets.forEach((s, i) => s.write(getCall(1, keys[i]!, "text")));
    const answered = (): number => sockets.filter((s) => s.frames().length > 0).length;
    await waitUntil(() => answered() === 36 || loader.total > 64, "the refusals");
    expect(loader.total).toBe(64);
    expect(sockets.filter((s) => s.frames().length > 0).map((s) => cacheErrorCode(s.frames()[0]!))).toEqual(new Array(36).fill(ERROR_CODE.OVERLOADED));
    expect(node.groups.byName("text")!.counters.loadsRefused).toBe(36);
    probe.write(getCall(2, "hot", "text"));
    await probe.waitFor(() => probe.frames().length === 2, "the hit");
    expect(cacheErrorCode(probe.frames()[1]!)).toBe(-1);
    loader.open();
    await Promise.all(sockets.map((s) => s.waitFor(() => s.frames().length === 1, "every reply")));
    expect(sockets.filter((s) => cacheErrorCode(s.frames()[0]!) === -1).length).toBe(64);
  });

  test("loads started ahead of their Get's turn take at most half of --max-loads", async () => {
    const loader = new GatedLoader();
    const node = startNode({ maxLoads: 64 }, { loaders: { text: loader.load } });
    open.push(node);
    const s = await RawSocket.connect(node.port);
    open.push({ close: async () => s.close() });
    const keys = jscCollidingTextKeys(60);
    // The first Get waits for its load; the look-ahead starts the loads of those behind it (as
    // many as its table holds, 64, without the bound), all in the turn the first one parks.
    s.write(Buffer.concat(keys.map((k, i) => getCall(i + 1, k, "text"))));
    await waitUntil(() => loader.total >= 33, "the loads");
    expect(loader.total).toBe(1 + 32);
    loader.open();
    await s.waitFor(() => s.frames().length === keys.length, "every reply");
    expect(s.frames().every((f) => cacheErrorCode(f) === -1)).toBe(true);
  });
});
