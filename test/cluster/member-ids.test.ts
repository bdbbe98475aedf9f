/**
 * One node written two ways is one member (review: `127.0.0.1:08001` and `127.0.0.1:8001`,
 * `[::1]:8001` and `[0:0:0:0:0:0:0:1]:8001`, `Cache-A:8001` and `cache-a.:8001` were two
 * members, and a node whose --self was written otherwise than in the list did not find itself).
 * Every source reads ids into one canonical spelling (src/cluster/member-id.ts); an id already
 * canonical is kept as written (ring-placement.test.ts: it hashes as before).
 */
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
import { ClusterClient } from "../../src/client/cluster-client.ts";
import { canonicalMember } from "../../src/cluster/member-id.ts";
import { DnsMembers, FileMembers, StaticMembers, parseMembers } from "../../src/cluster/membership.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import { parseArgs } from "../../src/server/flags.ts";
import { LogSink } from "../server/support.ts";
import { freePorts } from "../support/node-process.ts";
import { Prng, testSeed } from "../support/prng.ts";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const open: { close(): Promise<void> | void }[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((x) => x.close()));
});

function quiet() {
  const warnings: string[] = [];
  return { warnings, logger: { info() {}, warn: (msg: string, f?: Record<string, unknown>) => void warnings.push(`${msg} ${JSON.stringify(f ?? {})}`) } };
}

describe("canonicalMember", () => {
  const cases: [string, string | undefined][] = [
    // already canonical: kept as written
    ["127.0.0.1:8001", "127.0.0.1:8001"],
    ["[::1]:8001", "[::1]:8001"],
    ["[fe80::1%eth0]:8001", "[fe80::1%eth0]:8001"],
    ["cache-a.example.com:9000", "cache-a.example.com:9000"],
    ["[::ffff:10.0.0.1]:8001", "[::ffff:10.0.0.1]:8001"],
    ["[2001:db8::8:800:200c:417a]:7000", "[2001:db8::8:800:200c:417a]:7000"],
    // the port
    ["127.0.0.1:08001", "127.0.0.1:8001"],
    ["127.0.0.1:00001", "127.0.0.1:1"],
    ["127.0.0.1:65535", "127.0.0.1:65535"],
    ["127.0.0.1:65536", undefined],
    ["127.0.0.1:00000", undefined],
    // IPv6, RFC 5952
    ["[0:0:0:0:0:0:0:1]:8001", "[::1]:8001"],
    ["[::0001]:8001", "[::1]:8001"],
    ["[0000::1]:8001", "[::1]:8001"],
    ["[FE80::ABCD%eth0]:8001", "[fe80::abcd%eth0]:8001"],
    ["[fe80::1%ETH0]:8001", "[fe80::1%ETH0]:8001"], // interface names are case-sensitive
    ["[2001:DB8:0:0:1:0:0:1]:1", "[2001:db8::1:0:0:1]:1"], // the first of equal runs
    ["[2001:db8:0:0:0:0:2:1]:1", "[2001:db8::2:1]:1"],
    ["[2001:db8:0:1:1:1:1:1]:1", "[2001:db8:0:1:1:1:1:1]:1"], // one zero group is not shortened
    ["[2001:0:0:1:0:0:0:1]:1", "[2001:0:0:1::1]:1"], // the longest run
    ["[::]:1", "[::]:1"],
    ["[0:0:0:0:0:0:0:0]:1", "[::]:1"],
    ["[::FFFF:10.0.0.1]:8001", "[::ffff:10.0.0.1]:8001"],
    ["[0:0:0:0:0:ffff:a00:1]:8001", "[::ffff:10.0.0.1]:8001"],
    ["[::1.2.3.4]:1", "[::102:304]:1"],
    ["[1:2:3:4:5:6:7:8]:1", "[1:2:3:4:5:6:7:8]:1"],
    ["[1:2:3:4:5:6:7::]:1", "[1:2:3:4:5:6:7:0]:1"],
    ["[1::2::3]:1", undefined],
    ["[1:2:3:4:5:6:7:8:9]:1", undefined],
    ["[1:2:3:4:5:6:7]:1", undefined],
    ["[12345::1]:1", undefined],
    ["[::1.2.3.256]:1", undefined],
    ["[1.2.3.4]:1", undefined],
    ["[:::]:1", undefined],
    ["[fe80::1%]:8001", undefined],
    // host names
    ["Cache-A:8001", "cache-a:8001"],
    ["cache-a.:8001", "cache-a:8001"],
    ["CACHE-A.Example.COM.:8001", "cache-a.example.com:8001"],
    ["localhost:8001", "localhost:8001"],
    ["a/b:8001", undefined],
    ["::1:8001", undefined],
    ["a b:1", undefined],
    // corner cases (review of member-id.ts)
    [":8001", undefined], // no host
    ["[]:8001", undefined],
    ["cache-a:0", undefined],
    ["cache-a:", undefined],
    ["cache-a:+1", undefined],
    ["cache-a:٣", undefined], // (an Arabic-Indic digit is no port)
    ["host1.rack2:8001", "host1.rack2:8001"],
    ["XN--BCHER-KVA.Example:1", "xn--bcher-kva.example:1"], // punycode is ASCII: lower-cased
    ["[fe80::1%eth0.100]:1", "[fe80::1%eth0.100]:1"], // a VLAN interface's zone
    ["[fe80::%Eth0]:1", "[fe80::%Eth0]:1"],
    ["[1:2:3:4:5:6:1.2.3.4]:1", "[1:2:3:4:5:6:102:304]:1"],
    ["[1:2:3:4:5:6:7:1.2.3.4]:1", undefined], // nine groups
    ["[1.2.3.4::]:1", undefined], // an IPv4 part only last
    ["[::ffff:1.2.3.04]:1", undefined], // no leading zeros in its parts
    ["[::ffff:0:0]:1", "[::ffff:0.0.0.0]:1"],
  ];
  for (const [id, want] of cases) {
    test(`${id} → ${want ?? "not a member id"}`, () => {
      expect(canonicalMember(id)).toBe(want);
      if (want !== undefined) expect(canonicalMember(want)).toBe(want); // canonical ids stay
    });
  }

  test(`random IPv6 addresses, written at random, come out as WHATWG URL hosts do (RFC 5952; TEST_SEED=${testSeed()})`, () => {
    const rnd = new Prng(testSeed());
    let checked = 0;
    for (let i = 0; i < 3000; i++) {
      // groups: mostly zeros, so runs of every length occur
      const g = Array.from({ length: 8 }, () => (rnd.int(3) === 0 ? rnd.int(0x10000) : 0));
      if (g.slice(0, 6).join() === "0,0,0,0,0,65535") continue; // IPv4-mapped: URL writes it in hex
      const written = g.map((x) => x.toString(16).padStart(rnd.int(5), "0")).map((s) => (rnd.int(2) ? s.toUpperCase() : s)).join(":");
      const want = new URL(`http://[${written}]/`).hostname;
      expect(canonicalMember(`[${written}]:${1 + rnd.int(65535)}`)?.replace(/:\d+$/, "")).toBe(want);
      checked++;
    }
    expect(checked).toBeGreaterThan(2900);
  });
});

describe("one member however written", () => {
  test("a peers file: the same member twice counts once, with a warning that names the spelling", async () => {
    expect(parseMembers("127.0.0.1:08001\n127.0.0.1:8001\n[0:0:0:0:0:0:0:1]:8002, [::1]:8002\nCache-A.:9000\ncache-a:9000")).toEqual([
      "127.0.0.1:8001", "[::1]:8002", "cache-a:9000",
    ]);
    const dir = mkdtempSync(join(tmpdir(), "member-ids-"));
    const path = join(dir, "peers");
    writeFileSync(path, "127.0.0.1:8001\n127.0.0.1:08001\n127.0.0.1:8002\n");
    const { warnings, logger } = quiet();
    const got: string[][] = [];
    const source = new FileMembers(path, logger);
    open.push(source);
    source.start((m) => void got.push(m));
    await source.settled();
    expect(got).toEqual([["127.0.0.1:8001", "127.0.0.1:8002"]]);
    expect(warnings.filter((w) => w.includes("listed twice"))).toHaveLength(1);
    expect(warnings.find((w) => w.includes("listed twice"))).toContain("127.0.0.1:08001");
  });

  test("--self and --peers are read into the canonical spelling (--peers keeps a name's trailing dot to dial: member-spellings.test.ts)", () => {
    const parsed = parseArgs(["--self", "127.0.0.1:08001", "--peers", "127.0.0.1:08001,[0:0::1]:8002,Cache-B.:8003"]);
    if (parsed.kind !== "run") throw new Error(parsed.kind);
    expect(parsed.config.self).toBe("127.0.0.1:8001");
    expect(parsed.config.peers).toEqual(["127.0.0.1:8001", "[::1]:8002", "cache-b.:8003"]);
    const got: string[][] = [];
    new StaticMembers(parsed.config.peers!).start((m) => void got.push(m));
    expect(got).toEqual([["127.0.0.1:8001", "[::1]:8002", "cache-b:8003"]]);
  });

  test("--peers with the same member twice: counted once, with a warning", () => {
    const { warnings, logger } = quiet();
    const got: string[][] = [];
    new StaticMembers(["127.0.0.1:8001", "127.0.0.1:08001", "[::1]:8002"], logger).start((m) => void got.push(m));
    expect(got).toEqual([["127.0.0.1:8001", "[::1]:8002"]]);
    expect(warnings.filter((w) => w.includes("listed twice"))).toHaveLength(1);
  });

  test("a DNS answer that spells one address two ways is one member", async () => {
    const { logger } = quiet();
    const got: string[][] = [];
    const dns = new DnsMembers("cache", 8001, 60_000, logger, async () => ["0:0:0:0:0:0:0:1", "::1", "::0002", "FE80::1"]);
    open.push(dns);
    dns.start((m) => void got.push(m));
    await dns.settled();
    expect(got).toEqual([["[::1]:8001", "[::2]:8001", "[fe80::1]:8001"]]);
  });

  test("a ring-aware client places keys as the nodes do, whatever the spelling", () => {
    const a = new ClusterClient({ members: ["127.0.0.1:8001", "[::1]:8002"] });
    const b = new ClusterClient({ members: ["127.0.0.1:08001", "[0:0:0:0:0:0:0:1]:8002", "127.0.0.1:8001"] });
    open.push(a, b);
    for (let i = 0; i < 200; i++) expect(b.ownerOf(`k${i}`)).toBe(a.ownerOf(`k${i}`));
    expect(b.ownerOf("k0")).toMatch(/^(127\.0\.0\.1:8001|\[::1\]:8002)$/);
  });

  test("over sockets: a node whose --self and list spell it otherwise finds itself, and both nodes have one ring", async () => {
    const ports = freePorts(2);
    const ids = ports.map((p) => `127.0.0.1:${p}`);
    const logs = ports.map(() => new LogSink());
    // Node A is `127.0.0.1:0PORT` in its own --self and in B's list; B is so in A's list.
    const self = [`127.0.0.1:0${ports[0]}`, ids[1]!];
    const lists = [[`127.0.0.1:${ports[0]}`, `127.0.0.1:0${ports[1]}`], [`127.0.0.1:0${ports[0]}`, ids[1]!]];
    const nodes = ports.map((port, i) => {
      const n = CacheNode.start({ port, host: "127.0.0.1", self: self[i]!, peers: lists[i]!, logLevel: "warn" }, { logger: logs[i]!.logger });
      open.push(n);
      return n;
    });
    expect(nodes.map((n) => n.server.nodeId)).toEqual(ids);
    const sorted = [...ids].sort(); // (the ring's order)
    expect(nodes.map((n) => [...n.cluster!.members])).toEqual([sorted, sorted]);
    expect(logs.flatMap((l) => l.lines).filter((l) => l.includes("does not name this node"))).toEqual([]);
    const a = new CacheClient({ host: "127.0.0.1", port: ports[0]! });
    const b = new CacheClient({ host: "127.0.0.1", port: ports[1]! });
    open.push(a, b);
    for (let i = 0; i < 20; i++) await a.set("default", `k${i}`, `v${i}`);
    for (let i = 0; i < 20; i++) expect(new TextDecoder().decode((await b.get("default", `k${i}`)).value)).toBe(`v${i}`);
    expect(nodes.map((n) => n.cluster!.counters.forwarded > 0)).toEqual([true, true]);
  });
});
