/**
 * A write acknowledged by a key's owner is what every member answers next: when another member
 * may hold a copy of the key in its mirror (the owner answered its Get of the key within a copy's
 * life: HandOuts), the owner acknowledges only once the members have answered its invalidation.
 * A write of a key no member can hold a copy of is acknowledged at once, without waiting for
 * them (a member that does not answer then costs nothing). Peer writes that wait so are answered
 * out of order, so two members writing each other's keys do not wait on each other.
 */
import { afterEach, expect, test } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
import { CacheError, ERROR_CODE } from "../../src/protocol/errors.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import { LogSink } from "../server/support.ts";
import { startMembers } from "../support/cluster-members.ts";
import { freePorts } from "../support/node-process.ts";

const text = (b: Uint8Array): string => new TextDecoder().decode(b);
const utf8 = new TextEncoder();

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((x) => x.close()));
});

function client(port: number): CacheClient {
  const c = new CacheClient({ host: "127.0.0.1", port, timeoutMs: 5000 });
  open.push(c);
  return c;
}

/** keysOf lists `n` keys (`prefix` + i) that `node`'s ring gives to member `id`. */
function keysOf(node: CacheNode, id: string, prefix: string, n: number): string[] {
  const keys: string[] = [];
  for (let i = 0; keys.length < n; i++) {
    const k = utf8.encode(`${prefix}${i}`);
    if (node.cluster!.owner(k, 0, k.length) === id) keys.push(`${prefix}${i}`);
  }
  return keys;
}

test("a write acknowledged by the owner is read back through a member that held a copy", async () => {
  const { nodes, ids } = startMembers(2, open, { groups: [{ name: "g", ttlMs: 0 }] });
  const [a, b] = nodes as [CacheNode, CacheNode];
  const keys = keysOf(a, ids[1]!, "k", 10);
  const viaA = client(a.port);
  const viaB = client(b.port);
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
 * SILENT_TIMES: with a member that hangs, a write waits for it half the peer timeout (1 s here);
 * copies live 300 ms, so a node's first 1.3 s, when it counts every key as held by every member
 * (it may have handed them out before a restart), pass soon (`pastStart`).
 */
const SILENT_TIMES = { peerTimeoutMs: 2000, mirrorTtlMs: 300 };
const WAITED_MS = 900;
const pastStart = (): Promise<void> => Bun.sleep(1400);

/**
 * withSilentPeer starts node A whose only other member is a socket that accepts connections and
 * never answers (a peer that hangs); the keys listed are A's.
 */
function withSilentPeer(): { a: CacheNode; keys: string[] } {
  const [port, silentPort] = freePorts(2) as [number, number];
  const silent = Bun.listen({ hostname: "127.0.0.1", port: silentPort, socket: { data() {} } });
  open.push({ close: async () => silent.stop(true) });
  const ids = [`127.0.0.1:${port}`, `127.0.0.1:${silentPort}`];
  const a = CacheNode.start(
    { port, host: "127.0.0.1", peers: ids, logLevel: "silent", ...SILENT_TIMES, groups: [{ name: "g", ttlMs: 0 }] },
    { logger: new LogSink().logger },
  );
  open.push(a);
  return { a, keys: keysOf(a, ids[0]!, "k", 2) };
}

test("a write of a key no member can hold is acknowledged without waiting for them; one handed out waits for their answers", async () => {
  const { a, keys } = withSilentPeer();
  const [cold, hot] = keys as [string, string];
  const viaA = client(a.port);
  let t = performance.now();
  await viaA.set("g", cold, "v0"); // just started: every key counts as held
  expect(performance.now() - t).toBeGreaterThanOrEqual(WAITED_MS);
  await pastStart();
  t = performance.now();
  await viaA.set("g", cold, "v");
  expect(performance.now() - t).toBeLessThan(500); // the silent member's invalidation is not waited for
  // A member's Get of `hot` (PeerGet, what a member's mirror is filled from): `hot` is handed out.
  const member = client(a.port);
  await viaA.set("g", hot, "v1");
  const answered = Promise.withResolvers<string>();
  member.forwardGet(utf8.encode("g"), utf8.encode(hot), 0, hot.length, (err, value, off, len) => {
    if (err !== null) answered.reject(err);
    else answered.resolve(text(value!.subarray(off, off + len)));
  });
  expect(await answered.promise).toBe("v1");
  t = performance.now();
  await viaA.set("g", hot, "v2"); // waits for the silent member's answer as long as it may (half the peer timeout)
  expect(performance.now() - t).toBeGreaterThanOrEqual(WAITED_MS);
  expect(text((await viaA.get("g", hot)).value)).toBe("v2");
  t = performance.now();
  await viaA.set("g", cold, "v3"); // still not handed out
  expect(performance.now() - t).toBeLessThan(500);
}, 15_000);

/**
 * ownerWithSilentMember starts node B whose other members are a socket that accepts connections
 * and never answers (member S: a peer that hangs) and, with `withA`, a real node A (SILENT_TIMES),
 * and waits out their start. The keys listed are B's.
 */
async function ownerWithSilentMember(withA: boolean): Promise<{ b: CacheNode; a?: CacheNode; silentId: string; keys: string[] }> {
  const [pb, ps, pa] = freePorts(3) as [number, number, number];
  const silent = Bun.listen({ hostname: "127.0.0.1", port: ps, socket: { data() {} } });
  open.push({ close: async () => silent.stop(true) });
  const ids = [`127.0.0.1:${pb}`, `127.0.0.1:${ps}`, ...(withA ? [`127.0.0.1:${pa}`] : [])];
  const start = (port: number): CacheNode => {
    const n = CacheNode.start(
      { port, host: "127.0.0.1", peers: ids, logLevel: "silent", ...SILENT_TIMES, groups: [{ name: "g", ttlMs: 0 }] },
      { logger: new LogSink().logger },
    );
    open.push(n);
    return n;
  };
  const b = start(pb);
  const a = withA ? start(pa) : undefined;
  await pastStart();
  return { b, a, silentId: ids[1]!, keys: keysOf(b, ids[0]!, "k", 2) };
}

/** fetched has `member` (a client naming itself `sender`, or none) fetch `key` from the node as a member does (PeerGet). */
async function fetched(member: CacheClient, key: string): Promise<string> {
  const answered = Promise.withResolvers<string>();
  member.forwardGet(utf8.encode("g"), utf8.encode(key), 0, key.length, (err, value, off, len) => {
    if (err !== null) answered.reject(err);
    else answered.resolve(text(value!.subarray(off, off + len)));
  });
  return answered.promise;
}

test("a write waits only for the members that fetched the key, and never for the member that forwarded it", async () => {
  const { b, silentId, keys } = await ownerWithSilentMember(false);
  const [k] = keys as [string];
  const viaB = client(b.port);
  // The silent member's own client: it names itself (a node's peer clients do), fetches k, and
  // forwards a write of k, which B acknowledges without waiting for that member's answer.
  const s = new CacheClient({ host: "127.0.0.1", port: b.port, timeoutMs: 5000, sender: silentId });
  open.push(s);
  await viaB.set("g", k, "v1");
  expect(await fetched(s, k)).toBe("v1");
  let t = performance.now();
  await s.set("g", k, "v2", undefined, { peer: true });
  expect(performance.now() - t).toBeLessThan(500);
  // Written by anyone else, the silent member may hold a copy: B waits for it (its peer timeout).
  expect(await fetched(s, k)).toBe("v2");
  t = performance.now();
  await viaB.set("g", k, "v3");
  expect(performance.now() - t).toBeGreaterThanOrEqual(WAITED_MS);
}, 15_000);

test("a key fetched by one member: a write does not wait for another that did not fetch it", async () => {
  const { b, a, keys } = await ownerWithSilentMember(true);
  const [k] = keys as [string];
  const viaA = client(a!.port);
  const viaB = client(b.port);
  await viaB.set("g", k, "v1");
  for (let i = 0; i < 2; i++) expect(text((await viaA.get("g", k)).value)).toBe("v1"); // A fetches it, and keeps a copy
  const t = performance.now();
  await viaB.set("g", k, "v2"); // waits for A's answer, not for the silent member's
  expect(performance.now() - t).toBeLessThan(500);
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
