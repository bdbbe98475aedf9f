/**
 * Membership and client faults: a member id whose port is out of range, a member no client can be
 * made for, a node's handler that throws on a new list, a ring-aware client whose owner is down
 * or which was closed, and a loader slower than four global load timeouts in a group that
 * allows it.
 */
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { CacheClient } from "../../src/client/cache-client.ts";
import { ClusterClient } from "../../src/client/cluster-client.ts";
import { Cluster, type PeerClient } from "../../src/cluster/cluster.ts";
import { FileMembers, MAX_MEMBERS, parseMembers } from "../../src/cluster/membership.ts";
import { memberAddress } from "../../src/cluster/member-id.ts";
import { ConfigError } from "../../src/server/config.ts";
import { parseArgs } from "../../src/server/flags.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import { LogSink } from "../server/support.ts";
import { freePorts } from "../support/node-process.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const text = (b: Uint8Array): string => new TextDecoder().decode(b);
const FIXTURES = join(import.meta.dir, "../loaders/fixtures/loaders.ts");

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((x) => x.close()));
});

function quiet() {
  const warnings: string[] = [];
  return { warnings, logger: { info() {}, warn: (msg: string) => void warnings.push(msg) } };
}

describe("member ids", () => {
  test("a port out of range is refused in a peers file and by a client", () => {
    expect(() => parseMembers("127.0.0.1:70000")).toThrow("port 1..65535");
    expect(() => parseMembers("127.0.0.1:0")).toThrow("port 1..65535");
    expect(parseMembers("a:1\n# comment\nb:65535, a:1")).toEqual(["a:1", "b:65535"]);
    expect(() => new CacheClient({ host: "127.0.0.1", port: 70000 })).toThrow(RangeError);
  });

  test("an IPv6 member is in brackets, a link-local one with its zone, as --peers takes it", () => {
    expect(parseMembers("[::1]:1\n[fe80::1%eth0]:8001")).toEqual(["[::1]:1", "[fe80::1%eth0]:8001"]);
    expect(() => parseMembers("[fe80::1%]:8001")).toThrow("bad member '[fe80::1%]:8001'");
  });

  test("a peers file, --peers and a ClusterClient read member ids alike (review: 'a/b:8001' passed in a file only)", () => {
    for (const id of ["a/b:8001", "a b:1", "[::1:1", "::1:8001"]) {
      expect(() => parseMembers(id)).toThrow(`bad member '${id}'`);
      expect(() => parseArgs(["--peers", id])).toThrow(ConfigError);
      expect(() => new ClusterClient({ members: [id] })).toThrow(RangeError);
    }
    expect(memberAddress("[fe80::1%eth0]:8001")).toEqual({ host: "fe80::1%eth0", port: 8001 });
    expect(memberAddress("cache-1.internal:70000")).toBeUndefined();
  });

  test("a member no client can be made for is left out of the ring, and the others join", () => {
    const { warnings, logger } = quiet();
    const made: string[] = [];
    const cluster = new Cluster({
      self: "me:1",
      logger,
      connect: (id) => {
        if (id === "bad:2") throw new Error("cannot dial");
        made.push(id);
        return { isDown: false, close: async () => {} } as unknown as PeerClient;
      },
    });
    expect(cluster.setMembers(["me:1", "bad:2", "good:3"])).toBe(true);
    expect(cluster.members).toEqual(["good:3", "me:1"]);
    expect(made).toEqual(["good:3"]);
    expect(warnings).toEqual(["cluster member left out: no client can be made for it"]);
  });
});

describe("member lists (review)", () => {
  const fake = (closed: string[] = []) => (id: string) => ({ isDown: false, close: async () => void closed.push(id) }) as unknown as PeerClient;

  test("a list of more than MAX_MEMBERS is refused, in a peers file and by the cluster; duplicates count once", () => {
    const many = Array.from({ length: MAX_MEMBERS + 1 }, (_, i) => `h${i}:1`);
    expect(() => parseMembers(many.join("\n"))).toThrow(`more than ${MAX_MEMBERS} members`);
    expect(parseMembers([...many.slice(0, 10), ...many.slice(0, 10)].join("\n")).length).toBe(10);
    const cluster = new Cluster({ self: "me:1", logger: quiet().logger, connect: fake() });
    expect(() => cluster.setMembers(many)).toThrow(RangeError);
    expect(cluster.members).toEqual(["me:1"]);
  });

  test("a list that does not name this node is applied with a warning (it may be listed under another name)", () => {
    const { warnings, logger } = quiet();
    const cluster = new Cluster({ self: "127.0.0.1:1", logger, connect: fake() });
    cluster.setMembers(["localhost:1", "b:2"]);
    expect(warnings[0]).toStartWith("the member list does not name this node");
    expect(cluster.members).toEqual(["127.0.0.1:1", "b:2", "localhost:1"]);
    cluster.setMembers(["localhost:1", "b:2"]); // the same list again: not warned again
    expect(warnings.length).toBe(1);
    warnings.length = 0;
    cluster.setMembers(["127.0.0.1:1", "b:2"]);
    expect(warnings).toEqual([]);
  });

  test("a member left out (no client) is tried again at the next read of the file, though the file is unchanged", async () => {
    const dir = await mkdtemp("/tmp/mbc-leftout-");
    try {
      const path = join(dir, "peers");
      await writeFile(path, "me:1\nflaky:2\n");
      let fail = true;
      const log = quiet();
      const leftOutWarnings = () => log.warnings.filter((w) => w.startsWith("cluster member left out")).length;
      const cluster = new Cluster({
        self: "me:1", logger: log.logger,
        connect: (id) => {
          if (id === "flaky:2" && fail) throw new Error("CA file unreadable for a moment");
          return fake()(id);
        },
      });
      const members = new FileMembers(path, quiet().logger);
      members.start((list) => {
        cluster.setMembers(list);
        return cluster.leftOut === 0;
      });
      await members.settled();
      expect(cluster.members).toEqual(["me:1"]);
      for (let i = 0; i < 3; i++) members.reload(); // retried with the same error: warned once (review: at every poll)
      await members.settled();
      expect(leftOutWarnings()).toBe(1);
      fail = false;
      members.reload(); // SIGHUP (a poll does it too)
      await members.settled();
      expect(cluster.members).toEqual(["flaky:2", "me:1"]);
      members.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test("a ring that cannot be built leaves the ring as it was and closes the clients made for it", () => {
    const closed: string[] = [];
    const cluster = new Cluster({ self: "me:1", logger: quiet().logger, connect: fake(closed) });
    cluster.ring.setMembers = () => {
      throw new RangeError("Out of memory");
    };
    expect(() => cluster.setMembers(["me:1", "a:2", "b:3"])).toThrow("Out of memory");
    expect(closed.sort()).toEqual(["a:2", "b:3"]);
    expect(cluster.members).toEqual(["me:1"]);
  });
});

describe("peers file reloads", () => {
  test("a list the node fails to apply is logged; later lists are still applied, and the failed one again", async () => {
    const dir = await mkdtemp("/tmp/mybuncache-members-");
    try {
      const path = join(dir, "peers");
      const { warnings, logger } = quiet();
      const applied: string[][] = [];
      let failNext = false;
      const members = new FileMembers(path, logger);
      await writeFile(path, "a:1\n");
      members.start((list) => {
        if (failNext) {
          failNext = false;
          throw new Error("boom");
        }
        applied.push(list);
      });
      await members.settled();
      failNext = true;
      await writeFile(path, "a:1\nb:2\n");
      members.reload();
      await members.settled();
      members.reload(); // the same list: tried again, since it was not applied
      await members.settled();
      await writeFile(path, "a:1\nb:2\nc:3\n");
      members.reload();
      await members.settled();
      members.close();
      expect(applied).toEqual([["a:1"], ["a:1", "b:2"], ["a:1", "b:2", "c:3"]]);
      expect(warnings).toContain("member list not applied");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("a ring change", () => {
  test("drops the items of keys another member owns now; a fallback load then asks the loader, not the leftover", async () => {
    const dir = await mkdtemp("/tmp/mybuncache-ring-");
    try {
      const [pa, pb] = freePorts(2) as [number, number];
      const ids = [`127.0.0.1:${pa}`, `127.0.0.1:${pb}`];
      const source = new Map<string, string>();
      const config = { host: "127.0.0.1", logLevel: "silent" as const, peerTimeoutMs: 300, groups: [{ name: "g", ttlMs: 0, admission: "always" as const }] };
      const peersFile = join(dir, "peers");
      await writeFile(peersFile, `${ids[0]}\n`);
      const a = CacheNode.start({ ...config, port: pa, peersFile }, { logger: new LogSink().logger, loaders: { g: (k) => source.get(k) ?? null } });
      open.push(a);
      const keys = Array.from({ length: 200 }, (_, i) => `r${i}`);
      const c = new CacheClient({ host: "127.0.0.1", port: pa, timeoutMs: 2000, maxFailures: 1 });
      open.push(c);
      for (const k of keys) {
        source.set(k, `${k}:v1`);
        await c.set("g", k, `${k}:v1`); // A alone owns them all
      }
      const b = CacheNode.start({ ...config, port: pb, peers: ids }, { logger: new LogSink().logger, loaders: { g: (k) => source.get(k) ?? null } });
      open.push(b);
      await writeFile(peersFile, ids.join("\n") + "\n"); // B joins
      const moved = keys.filter((k) => b.cluster!.owner(new TextEncoder().encode(k), 0, k.length) === ids[1]);
      expect(moved.length).toBeGreaterThan(20);
      const store = a.groups.byName("g")!.store;
      const deadline = Date.now() + 5000;
      while ((a.cluster!.members.length < 2 || moved.some((k) => store.has(new TextEncoder().encode(k)))) && Date.now() < deadline) await Bun.sleep(10);
      expect(moved.filter((k) => store.has(new TextEncoder().encode(k)))).toEqual([]);
      expect(keys.filter((k) => !moved.includes(k)).every((k) => store.has(new TextEncoder().encode(k)))).toBe(true);
      // The key is written anew through A (to its new owner), then its owner stops: A's fallback
      // load answers what the source says now.
      const k = moved[0]!;
      source.set(k, `${k}:v2`);
      await c.set("g", k, `${k}:v2`);
      await b.close();
      expect(text((await c.get("g", k)).value)).toBe(`${k}:v2`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

/**
 * DisagreeingMembers: three nodes A, B, C on peers files of their own, each starting with the
 * list `lists(ids)[i]` and reloaded one at a time with `reload`; `key` is owned by B in [A, B] and
 * by C in [A, B, C]; `via[i]` is a client of node i.
 */
interface DisagreeingMembers {
  ids: [string, string, string];
  nodes: CacheNode[];
  via: [CacheClient, CacheClient, CacheClient];
  key: string;
  reload(i: number, ids: string[]): Promise<void>;
}

async function disagreeingMembers(
  dir: string, lists: (ids: [string, string, string]) => string[][], loader?: (i: number, key: string) => string | null,
): Promise<DisagreeingMembers> {
  const ports = freePorts(3);
  const ids = ports.map((p) => `127.0.0.1:${p}`) as [string, string, string];
  const [A, B, C] = ids;
  const file = (i: number) => join(dir, `peers-${i}`);
  const initial = lists(ids);
  for (let i = 0; i < 3; i++) await writeFile(file(i), initial[i]!.join("\n") + "\n");
  const nodes = ports.map((port, i) => {
    const n = CacheNode.start(
      // (admit=always is for loaded values: a group without a loader refuses it)
      { port, host: "127.0.0.1", peersFile: file(i), logLevel: "silent", peerTimeoutMs: 500, groups: [{ name: "g", ttlMs: 0, ...(loader === undefined ? {} : { admission: "always" as const }) }] },
      { logger: new LogSink().logger, ...(loader === undefined ? {} : { loaders: { g: (key: string) => loader(i, key) } }) },
    );
    open.push(n);
    return n;
  });
  const reload = async (i: number, list: string[]) => {
    await writeFile(file(i), list.join("\n") + "\n");
    nodes[i]!.reloadPeers();
    const deadline = Date.now() + 2000;
    while (nodes[i]!.cluster!.members.length !== list.length && Date.now() < deadline) await Bun.sleep(10);
    await Bun.sleep(50); // (the purge runs in slices)
  };
  const deadline = Date.now() + 2000;
  while (nodes.some((n, i) => n.cluster!.members.length !== initial[i]!.length) && Date.now() < deadline) await Bun.sleep(10);
  const two = new Cluster({ self: A, connect: () => ({}) as PeerClient, logger: quiet().logger });
  two.setMembers([A, B]);
  const three = new Cluster({ self: A, connect: () => ({}) as PeerClient, logger: quiet().logger });
  three.setMembers([A, B, C]);
  let key = "";
  for (let i = 0; key === ""; i++) {
    const k = new TextEncoder().encode(`k${i}`);
    if (two.owner(k, 0, k.length) === B && three.owner(k, 0, k.length) === C) key = `k${i}`;
  }
  const via = nodes.map((n) => {
    const c = new CacheClient({ host: "127.0.0.1", port: n.port, timeoutMs: 2000 });
    open.push(c);
    return c;
  }) as [CacheClient, CacheClient, CacheClient];
  return { ids, nodes, via, key, reload };
}

describe("member lists that disagree for a moment", () => {
  test("a peer's write of a key this node no longer owns is dropped, not kept to come back old", async () => {
    // Peers files reloaded one node at a time: B learns of C (k is C's now; B's purge drops it),
    // A does not yet and forwards Set v1 to B, which kept it; A catches up and Set v2 goes to C;
    // C leaves and k is B's again: B served v1 over the acknowledged v2.
    const dir = await mkdtemp("/tmp/mybuncache-flap-");
    try {
      const { ids: [A, B, C], nodes, via: [viaA, viaB], key, reload } = await disagreeingMembers(dir, ([A, B, C]) => [[A, B], [A, B], [A, B, C]]);
      await viaB.set("g", key, "v0");
      await reload(1, [A, B, C]);
      // Forwarded to B, which no longer owns it: dropped, and refused (C may hold an older value).
      await expect(viaA.set("g", key, "v1")).rejects.toMatchObject({ code: 7 });
      expect(nodes[1]!.cluster!.counters.foreignWrites).toBe(1);
      await reload(0, [A, B, C]);
      await viaA.set("g", key, "v2"); // to C
      for (const i of [0, 1, 2]) await reload(i, [A, B]);
      for (const via of [viaA, viaB]) {
        const got = await via.get("g", key).then((r) => text(r.value), (e: { code: number }) => `error ${e.code}`);
        expect(got).not.toBe("v1");
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test("a peer's Get of a key this node does not own is answered, but its load is not stored to come back old", async () => {
    // A (list [A, B]) forwards Gets of k to B; B (list [A, B, C]) gives k to C. B loaded k and kept
    // it in its main store, out of reach of C's writes and invalidations: once C left and k was
    // B's again, B served the old row.
    const dir = await mkdtemp("/tmp/mybuncache-flap-");
    const source = new Map<string, string>();
    const calls: string[] = [];
    try {
      const { ids: [A, B], nodes, via: [viaA, viaB, viaC], key, reload } = await disagreeingMembers(
        dir, ([A, B, C]) => [[A, B], [A, B, C], [A, B, C]], (i, k) => (calls.push(`${"ABC"[i]}:${k}`), source.get(k) ?? null),
      );
      const kb = new TextEncoder().encode(key);
      const b = nodes[1]!;
      source.set(key, "v1");
      expect(text((await viaA.get("g", key)).value)).toBe("v1"); // A forwards to B; B loads
      expect(text((await viaB.get("g", key, { peer: true })).value)).toBe("v1");
      expect(calls).toEqual([`B:${key}`, `B:${key}`]);
      expect(b.groups.byName("g")!.store.has(kb)).toBe(false);
      expect(b.cluster!.counters.foreignReads).toBe(2);
      expect((await viaB.peerGetMulti("g", [key])).keys.length).toBe(1);
      expect(b.groups.byName("g")!.store.has(kb)).toBe(false);
      // The row changes; its owner C is told (cache-aside) and loads the new one.
      source.set(key, "v2");
      await viaC.delete("g", key);
      expect(text((await viaC.get("g", key)).value)).toBe("v2");
      // C leaves: k is B's again, and B answers what the source says.
      for (const i of [0, 1, 2]) await reload(i, [A, B]);
      expect(text((await viaB.get("g", key)).value)).toBe("v2");
      expect(text((await viaA.get("g", key)).value)).toBe("v2");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("a ring-aware client", () => {
  test("a member list with a bad id is refused whole; the client goes on with the list it had", async () => {
    const node = CacheNode.start({ port: 0, logLevel: "silent" }, { logger: new LogSink().logger });
    open.push(node);
    const cc = new ClusterClient({ members: [`127.0.0.1:${node.port}`] });
    open.push(cc);
    expect(() => cc.setMembers([`127.0.0.1:${node.port}`, "127.0.0.1:70000", "127.0.0.1:1"])).toThrow(RangeError);
    for (let i = 0; i < 20; i++) await cc.set("default", `k${i}`, `v${i}`);
    expect(text((await cc.get("default", "k7")).value)).toBe("v7");
    expect(cc.ownerOf("k7")).toBe(`127.0.0.1:${node.port}`);
  });

  test("sends a down owner's keys through another member, which loads them itself; after close, calls reject", async () => {
    const ports = freePorts(2);
    const ids = ports.map((p) => `127.0.0.1:${p}`);
    const nodes = ports.map((port) => {
      const n = CacheNode.start(
        { port, host: "127.0.0.1", peers: ids, logLevel: "silent", peerTimeoutMs: 300, groups: [{ name: "g", ttlMs: 0, admission: "always" }] },
        { logger: new LogSink().logger, loaders: { g: (key) => `loaded ${key}` } },
      );
      open.push(n);
      return n;
    });
    const cc = new ClusterClient({ members: ids, client: { timeoutMs: 500, maxFailures: 1, probeIntervalMs: 60_000 } });
    let key = "";
    for (let i = 0; key === ""; i++) if (cc.ownerOf(`u${i}`) === ids[1]) key = `u${i}`;
    expect(text((await cc.get("g", key)).value)).toBe(`loaded ${key}`);
    await nodes[1]!.close();
    // GetMulti too, from its first call on (review: the down owner's part failed the whole call,
    // the other owner's values with it, until the client marked it down).
    const keys = Array.from({ length: 20 }, (_, i) => `m${i}`);
    const found = await cc.getMulti("g", keys);
    expect(keys.map((k) => found.get(k) && text(found.get(k)!))).toEqual(keys.map((k) => `loaded ${k}`));
    for (let i = 0; i < 5; i++) expect(text((await cc.get("g", key)).value)).toBe(`loaded ${key}`);
    expect(nodes[0]!.cluster!.counters.fallbackLoads).toBeGreaterThan(0);
    await cc.close();
    await expect(cc.get("g", key)).rejects.toMatchObject({ code: 7, message: "client closed" });
    await expect(cc.set("g", key, "v")).rejects.toMatchObject({ code: 7 });
  });
});

describe("the loader pool's stop", () => {
  test("comes after four of the longest group timeout, not of --load-timeout", async () => {
    await using node = await CacheNode.open(
      { port: 0, loaders: FIXTURES, loadTimeoutMs: 100, groups: [{ name: "slow", ttlMs: 0, loadTimeoutMs: 2_000 }] },
      { logger: new LogSink().logger },
    );
    const c = new CacheClient({ host: "127.0.0.1", port: node.port, timeoutMs: 5_000 });
    try {
      // 600 ms: past 4 × 100 ms, within the group's 2 s.
      expect(text((await c.get("slow", "600")).value)).toBe("slept 600");
      expect(node.pool!.counters.stopped).toBe(0);
    } finally {
      await c.close();
    }
  });
});
