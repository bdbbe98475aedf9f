/**
 * Member ids beside the ring's canonical id (src/cluster/member-id.ts):
 * - a name written with a trailing dot is dialled and looked up with it (review: the canonical id
 *   dropped it, and the node dialled the name relative: the resolver's search domains first, and
 *   under Kubernetes' ndots:5 perhaps another answer), by a node's peer clients, by --peers-dns and
 *   by ClusterClient; the ring keeps the id without it;
 * - a peer's own id on its connections (its intro PeerPing's sender) is read into the canonical
 *   spelling as the lists are (review: it was compared as written, so a member whose --self an
 *   older node spelt otherwise was not recognised, and every member counted as a holder of what
 *   it fetched).
 */
import { afterEach, describe, expect, spyOn, test, setDefaultTimeout } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
import { ClusterClient } from "../../src/client/cluster-client.ts";
import { canonicalMembers, dialSpelling, memberAddress } from "../../src/cluster/member-id.ts";
import { FileMembers, parseMembers } from "../../src/cluster/membership.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import { parseArgs } from "../../src/server/flags.ts";
import { LogSink } from "../server/support.ts";
import { keysOwnedBy, leasesHeld, startMembers } from "../support/cluster-members.ts";
import { freePorts } from "../support/node-process.ts";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((x) => x.close()));
});

/** leaseFor asks node `port` for a lease on a connection whose intro PeerPing names `sender`: > 0 when it vouches for that member. */
async function leaseFor(port: number, sender: string): Promise<number> {
  const c = new CacheClient({ host: "127.0.0.1", port, timeoutMs: 5_000, connections: 1, sender });
  open.push(c);
  return (await c.ping(undefined, true)).leaseMs ?? -1;
}

test("a peer's intro PeerPing that spells its id otherwise than the list (an older node's --self) names that member", async () => {
  const m = startMembers(2, open);
  const [a, b] = [m.nodes[0]!, m.nodes[1]!];
  const bId = m.ids[1]!;
  const [host, port] = [bId.slice(0, bId.lastIndexOf(":")), bId.slice(bId.lastIndexOf(":") + 1)];
  expect(a.cluster!.members).toContain(bId);
  await leasesHeld(m.nodes, m.ids); // (A vouches for B once its start's drop asks settled)
  // As written in the list, the member is vouched for: the baseline the other spellings must meet.
  expect(await leaseFor(a.port, bId)).toBeGreaterThan(0);
  // The same member spelt with a leading zero in its port, as a node of a version that kept
  // --self as written would send it.
  expect(await leaseFor(a.port, `${host}:0${port}`)).toBeGreaterThan(0);
  // Not a member, or not an id at all (compared as written, and nothing thrown): no lease.
  expect(await leaseFor(a.port, "127.0.0.2:1")).toBe(0);
  expect(await leaseFor(a.port, "not a member id")).toBe(0);
  expect(await leaseFor(a.port, `${host}:0${port}`)).toBeGreaterThan(0); // (the node still serves)
  expect(b.cluster!.members).toContain(bId);
});

describe("dialSpelling", () => {
  const cases: [string, string | undefined][] = [
    ["cache-a.example.:8001", "cache-a.example.:8001"],
    ["Cache-A.Example.:08001", "cache-a.example.:8001"], // lower case and the port as the id, the dot kept
    ["cache-a.example:8001", "cache-a.example:8001"],
    ["localhost.:1", "localhost.:1"],
    ["10.0.0.1.:8001", "10.0.0.1:8001"], // an address is no name to look up
    ["10.0.0.1:8001", "10.0.0.1:8001"],
    ["[::1]:8001", "[::1]:8001"],
    ["[0:0::1]:8001", "[::1]:8001"],
    ["cache-a.:0", undefined],
    ["nope", undefined],
  ];
  for (const [written, dial] of cases) {
    test(`${written} is dialled as ${dial}`, () => {
      expect(dialSpelling(written)).toBe(dial);
      if (dial !== undefined) expect(dialSpelling(dial)).toBe(dial);
    });
  }

  test("memberAddress keeps a name's trailing dot; the ids and lists do not", () => {
    expect(memberAddress("cache-a.example.:8001")).toEqual({ host: "cache-a.example.", port: 8001 });
    expect(memberAddress("cache-a.example:8001")).toEqual({ host: "cache-a.example", port: 8001 });
    const dialAs = new Map<string, string>();
    expect(canonicalMembers(["B.test:2", "a.test.:1", "a.test:01", "b.test.:2"], undefined, dialAs)).toEqual(["b.test:2", "a.test:1"]);
    expect([...dialAs]).toEqual([["a.test:1", "a.test.:1"]]); // each member as first written
    expect(parseMembers("x.test.:3\n# c\ny.test:4", undefined, dialAs)).toEqual(["x.test:3", "y.test:4"]);
    expect(dialAs.get("x.test:3")).toBe("x.test.:3");
  });

  test("--peers and --peers-dns keep the dot to dial; --self is the canonical id", () => {
    const parsed = parseArgs(["--self", "Cache-A.:8001", "--peers", "cache-a.:8001,Cache-B.test.:8002"]);
    if (parsed.kind !== "run") throw new Error(parsed.kind);
    expect(parsed.config.self).toBe("cache-a:8001");
    expect(parsed.config.peers).toEqual(["cache-a.:8001", "cache-b.test.:8002"]);
    const dns = parseArgs(["--peers-dns", "Cache.NS.svc.cluster.local.:8001"]);
    if (dns.kind !== "run") throw new Error(dns.kind);
    expect(dns.config.peersDns).toBe("cache.ns.svc.cluster.local.:8001");
  });
});

/**
 * dotNames answers Bun.connect as a resolver that knows `names` (absolute, with their dot) as
 * 127.0.0.1 and nothing else by name (as search domains that find no such host); every host
 * dialled is noted in `dialled`.
 */
function dotNames(names: readonly string[]): { dialled: string[]; restore: () => void } {
  const real = Bun.connect;
  const dialled: string[] = [];
  const spy = spyOn(Bun, "connect").mockImplementation(((opts: Parameters<typeof real>[0]) => {
    const host = (opts as { hostname?: string }).hostname ?? "";
    dialled.push(host);
    if (names.includes(host)) return real({ ...opts, hostname: "127.0.0.1" } as Parameters<typeof real>[0]);
    if (host === "127.0.0.1") return real(opts);
    return Promise.reject(Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: "ENOTFOUND" }));
  }) as typeof real);
  return { dialled, restore: () => spy.mockRestore() };
}

describe("a member written with a trailing dot is dialled with it", () => {
  test("a node's peer client: writes forwarded to the member reach it under its absolute name", async () => {
    const [pa, pb] = freePorts(2) as [number, number];
    const bWritten = `cache-b.test.:${pb}`;
    const bId = `cache-b.test:${pb}`;
    const aId = `127.0.0.1:${pa}`;
    const names = dotNames(["cache-b.test."]);
    try {
      const a = CacheNode.start({ port: pa, host: "127.0.0.1", peers: [aId, bWritten], logLevel: "silent" }, { logger: new LogSink().logger });
      const b = CacheNode.start({ port: pb, host: "127.0.0.1", self: bId, peers: [aId, bWritten], logLevel: "silent" }, { logger: new LogSink().logger });
      open.push(a, b);
      expect([...a.cluster!.members]).toEqual([aId, bId].sort()); // the ring's id: no dot
      const keys = keysOwnedBy(a, bId, 5);
      const viaA = new CacheClient({ host: "127.0.0.1", port: pa, timeoutMs: 5_000 });
      const atB = new CacheClient({ host: "127.0.0.1", port: pb, timeoutMs: 5_000 });
      open.push(viaA, atB);
      for (const k of keys) await viaA.set("default", k, `v-${k}`);
      for (const k of keys) expect(new TextDecoder().decode((await atB.get("default", k, { peer: true })).value!)).toBe(`v-${k}`);
      expect(names.dialled).toContain("cache-b.test.");
      expect(names.dialled).not.toContain("cache-b.test");
    } finally {
      names.restore();
    }
  });

  test("a peers file: the member is dialled as the file first spells it", async () => {
    const dir = mkdtempSync(join(tmpdir(), "mbc-dial-"));
    const file = join(dir, "peers");
    writeFileSync(file, "cache-c.test.:9001\ncache-c.test:9001\n127.0.0.1:9002\n");
    const got: [string[], [string, string][]][] = [];
    const members = new FileMembers(file, { info() {}, warn() {} });
    open.push({ close: async () => members.close() });
    members.start((m, dialAs) => void got.push([m, [...(dialAs ?? [])]]));
    await members.settled();
    expect(got).toEqual([[["cache-c.test:9001", "127.0.0.1:9002"], [["cache-c.test:9001", "cache-c.test.:9001"]]]]);
  });

  test("--peers-dns looks the name up with its dot", async () => {
    const port = freePorts(1)[0]!;
    const parsed = parseArgs(["--peers-dns", `cache.test.:${port}`]);
    if (parsed.kind !== "run") throw new Error(parsed.kind);
    const asked: string[] = [];
    const n = CacheNode.start(
      { port, host: "127.0.0.1", logLevel: "silent", self: `127.0.0.1:${port}`, peersDns: parsed.config.peersDns },
      { logger: new LogSink().logger, resolve: async (name) => (asked.push(name), ["127.0.0.1"]) },
    );
    open.push(n);
    const deadline = Date.now() + 5_000;
    while (asked.length === 0 && Date.now() < deadline) await Bun.sleep(5);
    expect(asked[0]).toBe("cache.test.");
  });

  test("ClusterClient: the ring's id without the dot, the dial with it", async () => {
    const m = startMembers(2, open);
    const bPort = m.ids[1]!.slice(m.ids[1]!.lastIndexOf(":") + 1);
    // Member 1 is reached by an absolute name only; the nodes know it as 127.0.0.1:port, so this
    // client's ring (which names it cache-b.test:port) differs from theirs: the nodes forward.
    const names = dotNames(["cache-b.test."]);
    try {
      const c = new ClusterClient({ members: [m.ids[0]!, `cache-b.test.:${bPort}`, `cache-b.test:${bPort}`], client: { timeoutMs: 5_000 } });
      open.push(c);
      let k = 0;
      while (c.ownerOf(`k${k}`) !== `cache-b.test:${bPort}`) k++;
      await c.set("default", `k${k}`, "v");
      expect(new TextDecoder().decode((await c.get("default", `k${k}`)).value!)).toBe("v");
      expect(names.dialled).toContain("cache-b.test.");
      expect(names.dialled).not.toContain("cache-b.test");
    } finally {
      names.restore();
    }
  });
});
