/**
 * A write acknowledged by a key's owner is what every member answers next: when another member
 * may hold a copy of the key in its mirror (the owner answered its Get of the key within a copy's
 * life: HandOuts), the owner acknowledges only once the members have answered its invalidation.
 * A write of a key no member can hold a copy of is acknowledged at once, without waiting for
 * them (a member that does not answer then costs nothing). Peer writes that wait so are answered
 * out of order, so two members writing each other's keys do not wait on each other.
 */
import { afterEach, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
import { CacheError, ERROR_CODE } from "../../src/protocol/errors.ts";
import { HandOuts } from "../../src/cluster/hand-outs.ts";
import type { Loader } from "../../src/cluster/loader.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import { METHOD_PEER_INVALIDATE } from "../../src/protocol/request.ts";
import { StubServer, serve, until } from "../client/support.ts";
import { LogSink } from "../server/support.ts";
import { fetchedBy, keysOf, leasesHeld, startMembers } from "../support/cluster-members.ts";
import { GatedLoader, waitUntil } from "../support/gates.ts";
import { freePorts } from "../support/node-process.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const text = (b: Uint8Array): string => new TextDecoder().decode(b);

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((x) => x.close()));
});

function client(port: number): CacheClient {
  const c = new CacheClient({ host: "127.0.0.1", port, timeoutMs: 5000 });
  open.push(c);
  return c;
}

test("a write acknowledged by the owner is read back through a member that held a copy", async () => {
  const { nodes, ids } = startMembers(2, open, { groups: [{ name: "g", ttlMs: 0 }] });
  const [a, b] = nodes as [CacheNode, CacheNode];
  const keys = keysOf(a, ids[1]!, "k", 10);
  const viaA = client(a.port);
  const viaB = client(b.port);
  await leasesHeld(nodes, ids); // (A's mirror answers under B's lease)
  for (let round = 0; round < 5; round++) {
    for (const key of keys) {
      await viaB.set("g", key, `v${round}`);
      for (let i = 0; i < 2; i++) await viaA.get("g", key); // twice: A's mirror (LRU-K) admits a copy
    }
    for (const key of keys) {
      await viaB.set("g", key, `w${round}`); // acknowledged by the owner...
      expect(text((await viaA.get("g", key)).value)).toBe(`w${round}`); // ...then read through A
    }
  }
  expect(a.cluster!.counters.mirrorHits).toBeGreaterThan(20); // A did answer from copies
});

test("written through a third member, deleted, or in a SetMulti: the same", async () => {
  const { nodes, ids } = startMembers(3, open, { groups: [{ name: "g", ttlMs: 0 }] });
  const [a, b, c] = nodes as [CacheNode, CacheNode, CacheNode];
  const keys = keysOf(a, ids[1]!, "k", 6);
  const [viaA, viaB, viaC] = [client(a.port), client(b.port), client(c.port)];
  const copied = async (): Promise<void> => {
    for (const key of keys) for (let i = 0; i < 2; i++) await viaA.get("g", key);
  };
  for (const key of keys) await viaB.set("g", key, "old");
  await copied();
  for (const key of keys) {
    await viaC.set("g", key, `new-${key}`); // forwarded to the owner B, which tells A
    expect(text((await viaA.get("g", key)).value)).toBe(`new-${key}`);
  }
  await copied();
  await viaC.setMulti("g", keys.map((k) => [k, `multi-${k}`]));
  for (const key of keys) expect(text((await viaA.get("g", key)).value)).toBe(`multi-${key}`);
  await copied();
  for (const key of keys) {
    expect(await viaB.delete("g", key)).toBe(true);
    await expect(viaA.get("g", key)).rejects.toMatchObject({ code: ERROR_CODE.NOT_FOUND });
  }
});

/**
 * A slow member: a stub that answers every call at once but a PeerInvalidate of keys, which it
 * answers SLOW_MS later (the invalidation of all its mirrors a node sends after it starts, it
 * answers at once: the node is then past its start, HandOuts). A write waiting for it waits about
 * SLOW_MS; one that does not is acknowledged at once.
 */
const SLOW_MS = 600;
const TIMES = { peerTimeoutMs: 4000, mirrorTtlMs: 2000 };

function slowMember(): StubServer {
  const stub = new StubServer();
  open.push({ close: async () => stub.close() });
  stub.handler = (c, st) => {
    if (c.method !== METHOD_PEER_INVALIDATE || c.all) return serve(c, st);
    setTimeout(() => st.write(c.conn, serve(c, st)), SLOW_MS);
    return null;
  };
  return stub;
}

/**
 * withSlowMember starts node N (and, with `withA`, a real node A) whose other member is a slow
 * one (S), once each node knows S dropped its copies of their previous runs. The keys listed are N's.
 */
async function withSlowMember(withA = false, loaders: Record<string, Loader> = {}): Promise<{ n: CacheNode; a?: CacheNode; slowId: string; keys: string[] }> {
  const stub = slowMember();
  // Members are marked by a bit of a hash of their id (HandOuts): A and the slow member must not
  // share one, or a write that waits for A alone would wait for both.
  const bits = new HandOuts(0);
  const [pn, first] = freePorts(2) as [number, number];
  let pa = first;
  while (bits.bitOf(`127.0.0.1:${pa}`) === bits.bitOf(`127.0.0.1:${stub.port}`)) pa = freePorts(1)[0]!;
  const ids = [`127.0.0.1:${pn}`, `127.0.0.1:${stub.port}`, ...(withA ? [`127.0.0.1:${pa}`] : [])];
  const start = (port: number): CacheNode => {
    const node = CacheNode.start(
      { port, host: "127.0.0.1", peers: ids, logLevel: "silent", ...TIMES, groups: [{ name: "g", ttlMs: 0 }] },
      { logger: new LogSink().logger, loaders },
    );
    open.push(node);
    return node;
  };
  const n = start(pn);
  const a = withA ? start(pa) : undefined;
  await until(() => n.cluster!.startConfirmed && (a === undefined || a.cluster!.startConfirmed), 5_000);
  return { n, a, slowId: ids[1]!, keys: keysOf(n, ids[0]!, "k", 2) };
}

test("a write of a key no member can hold is acknowledged without waiting for them; one handed out waits for their answers", async () => {
  const { n, keys } = await withSlowMember();
  const [cold, hot] = keys as [string, string];
  const viaN = client(n.port);
  let t = performance.now();
  await viaN.set("g", cold, "v");
  expect(performance.now() - t).toBeLessThan(SLOW_MS / 2); // the slow member's answer is not waited for
  // A Get of `hot` as a member sends it (PeerGet, what a mirror is filled from), on a connection
  // that does not name its member: every member may hold `hot` now.
  await viaN.set("g", hot, "v1");
  expect(await fetchedBy(client(n.port), hot)).toBe("v1");
  t = performance.now();
  await viaN.set("g", hot, "v2"); // waits for the slow member's answer
  expect(performance.now() - t).toBeGreaterThanOrEqual(SLOW_MS - 100);
  expect(text((await viaN.get("g", hot)).value)).toBe("v2");
  t = performance.now();
  await viaN.set("g", cold, "v3"); // still not handed out
  expect(performance.now() - t).toBeLessThan(SLOW_MS / 2);
}, 15_000);

test("a write waits only for the members that fetched the key, and never for the member that forwarded it", async () => {
  const { n, slowId, keys } = await withSlowMember();
  const [k] = keys as [string];
  const viaN = client(n.port);
  // The slow member's own client: it names itself (a node's peer clients do), fetches k, and
  // forwards a write of k, which N acknowledges without waiting for that member's answer.
  const s = new CacheClient({ host: "127.0.0.1", port: n.port, timeoutMs: 5000, sender: slowId });
  open.push(s);
  await viaN.set("g", k, "v1");
  expect(await fetchedBy(s, k)).toBe("v1");
  let t = performance.now();
  await s.set("g", k, "v2", undefined, { peer: true });
  expect(performance.now() - t).toBeLessThan(SLOW_MS / 2);
  // Written by anyone else, the slow member may hold a copy: N waits for its answer.
  expect(await fetchedBy(s, k)).toBe("v2");
  t = performance.now();
  await viaN.set("g", k, "v3");
  expect(performance.now() - t).toBeGreaterThanOrEqual(SLOW_MS - 100);
}, 15_000);

test("a key a member asked for while it loads counts as handed out from the ask: a write meanwhile waits for that member (review: its answer, old, could land after the write's invalidation)", async () => {
  const gated = new GatedLoader();
  const { n, slowId, keys } = await withSlowMember(false, { g: gated.load });
  const [k] = keys as [string];
  const s = new CacheClient({ host: "127.0.0.1", port: n.port, timeoutMs: 5000, sender: slowId });
  open.push(s);
  const asked = fetchedBy(s, k); // the owner loads k (held at the gate)
  await waitUntil(() => gated.calls.get(k) === 1, "the load");
  const t = performance.now();
  try {
    await client(n.port).delete("g", k); // the member may keep what its Get brings back: it must drop it first
    expect(performance.now() - t).toBeGreaterThanOrEqual(SLOW_MS - 100);
  } finally {
    gated.open();
  }
  expect(await asked).toBe(`loaded ${k} #1`); // (asked before the write: either answer is right)
}, 15_000);

test("a peer's Get whose load the look-ahead started counts as handed out from then: a write before its turn waits for that member (review: noted only at its turn)", async () => {
  const gate = Promise.withResolvers<void>();
  const calls: string[] = [];
  const loader: Loader = async (key) => {
    calls.push(key);
    if (key.startsWith("gm")) await gate.promise;
    return `loaded ${key}`;
  };
  const { n, slowId, keys } = await withSlowMember(false, { g: loader });
  const [k] = keys as [string];
  const [gm0, gm1] = keysOf(n, n.cluster!.self, "gm", 2) as [string, string];
  const s = new CacheClient({ host: "127.0.0.1", port: n.port, timeoutMs: 5000, sender: slowId, connections: 1 });
  open.push(s);
  // One PeerGetMulti waits out of order; the next parks the connection, and the look-ahead starts
  // the load of the PeerGet behind it.
  const multis = [s.peerGetMulti("g", [gm0]), s.peerGetMulti("g", [gm1])];
  const asked = fetchedBy(s, k);
  try {
    await waitUntil(() => calls.includes(k), "the look-ahead's load of k");
    const t = performance.now();
    await client(n.port).delete("g", k);
    expect(performance.now() - t).toBeGreaterThanOrEqual(SLOW_MS - 100); // the member's answer was waited for
  } finally {
    gate.resolve();
  }
  await Promise.all(multis);
  expect(await asked).toBe(`loaded ${k}`); // (asked before the write: either answer is right)
}, 15_000);

for (const how of ["names no member", "names a member first, then another in a later PeerPing"] as const) {
  test(`a connection that ${how} counts as its intro's member or none: a key it fetched waits for the member that may hold it (review: a claimed name was trusted)`, async () => {
    const { n, slowId, keys } = await withSlowMember();
    const [k] = keys as [string];
    const viaN = client(n.port);
    // A name no member has, marked by another bit than the slow member's (HandOuts).
    const bits = new HandOuts(0);
    let stranger = 1;
    while (bits.bitOf(`127.0.0.2:${stranger}`) === bits.bitOf(slowId)) stranger++;
    const strangerId = `127.0.0.2:${stranger}`;
    const s = new CacheClient({ host: "127.0.0.1", port: n.port, timeoutMs: 5000, connections: 1, sender: how === "names no member" ? strangerId : slowId });
    open.push(s);
    if (how !== "names no member") await s.ping(strangerId); // names nothing: only the intro does
    await viaN.set("g", k, "v1");
    expect(await fetchedBy(s, k)).toBe("v1"); // by no member: every member may hold k; by the slow one: it may
    const t = performance.now();
    await viaN.set("g", k, "v2");
    expect(performance.now() - t).toBeGreaterThanOrEqual(SLOW_MS - 100); // the slow member's answer was waited for
  }, 15_000);
}

test("a key fetched by one member: a write does not wait for another that did not fetch it", async () => {
  const { n, a, keys } = await withSlowMember(true);
  const [k] = keys as [string];
  const viaA = client(a!.port);
  const viaN = client(n.port);
  await viaN.set("g", k, "v1");
  for (let i = 0; i < 2; i++) expect(text((await viaA.get("g", k)).value)).toBe("v1"); // A fetches it, and keeps a copy
  const t = performance.now();
  await viaN.set("g", k, "v2"); // waits for A's answer, not for the slow member's
  expect(performance.now() - t).toBeLessThan(SLOW_MS / 2);
  expect(text((await viaA.get("g", k)).value)).toBe("v2");
}, 15_000);

test("two members writing each other's handed-out keys through each other do not wait on each other", async () => {
  const { nodes, ids } = startMembers(2, open, { peerTimeoutMs: 2000, groups: [{ name: "g", ttlMs: 0 }] });
  const [a, b] = nodes as [CacheNode, CacheNode];
  const ofA = keysOf(a, ids[0]!, "a", 8);
  const ofB = keysOf(a, ids[1]!, "b", 8);
  const viaA = client(a.port);
  const viaB = client(b.port);
  for (const key of ofA) { await viaA.set("g", key, "0"); await viaB.get("g", key); }
  for (const key of ofB) { await viaB.set("g", key, "0"); await viaA.get("g", key); }
  const failures: string[] = [];
  const t = performance.now();
  for (let round = 1; round <= 20; round++) {
    // Each write forwarded to the other member, whose acknowledgement waits for the invalidation
    // it sends back on the connection the other write came on.
    await Promise.all([
      ...ofA.map((k) => viaB.set("g", k, `${round}`).catch((e: unknown) => void failures.push(e instanceof CacheError ? e.message : String(e)))),
      ...ofB.map((k) => viaA.set("g", k, `${round}`).catch((e: unknown) => void failures.push(e instanceof CacheError ? e.message : String(e)))),
    ]);
  }
  expect(failures).toEqual([]);
  expect(performance.now() - t).toBeLessThan(2000); // nothing waited for a peer timeout
  for (const key of [...ofA, ...ofB]) {
    expect(text((await viaA.get("g", key)).value)).toBe("20");
    expect(text((await viaB.get("g", key)).value)).toBe("20");
  }
}, 30_000);
