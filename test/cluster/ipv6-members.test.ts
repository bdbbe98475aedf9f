/**
 * A cluster on IPv6 addresses with the default --self: a member's own id is written as --peers
 * writes it, `[::1]:port`, so each node finds itself in the member list and the rings agree
 * (review: `::1:port` was not in the list, each node built a ring of three, and acknowledged
 * writes were lost to Gets answered by the other ring's owner). And members with an IPv6 zone
 * (`[fe80::1%eth0]:8001`), which Bun connects to through the interface the zone names.
 */
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { networkInterfaces } from "node:os";
import { hostPort } from "../../src/bytes/bytes.ts";
import { CacheClient } from "../../src/client/cache-client.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import { parseArgs } from "../../src/server/flags.ts";
import { LogSink } from "../server/support.ts";
import { freePorts } from "../support/node-process.ts";
import { IPV6 } from "../support/ipv6.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)


/**
 * ZONED is an IPv6 address of this machine with its zone, one it can listen on: a link-local one
 * (`fe80::…%eth0`, which cannot be reached without its zone), else the loopback (`::1%lo`).
 */
const ZONED = (() => {
  const zoned = Object.entries(networkInterfaces()).flatMap(([name, addresses]) =>
    (addresses ?? []).filter((a) => a.family === "IPv6").map((a) => `${a.address}%${name}`));
  for (const host of [...zoned.filter((a) => a.startsWith("fe80:")), ...zoned.filter((a) => a.startsWith("::1%"))]) {
    try {
      Bun.listen({ hostname: host, port: 0, socket: { data() {} } }).stop(true);
      return host;
    } catch {
      // not one to listen on here
    }
  }
  return undefined;
})();

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((x) => x.close()));
});

describe("IPv6 members", () => {
  test("an address is written as --peers takes it: an IPv6 host in brackets", () => {
    expect([hostPort("::1", 8001), hostPort("[::1]", 8001), hostPort("127.0.0.1", 8001), hostPort("cache-0.svc", 8001)]).toEqual([
      "[::1]:8001", "[::1]:8001", "127.0.0.1:8001", "cache-0.svc:8001",
    ]);
  });

  test.skipIf(!IPV6)("(needs an IPv6 loopback) with the default --self, every node names itself as --peers does; writes through one are read through the other", async () => {
    const ports = freePorts(2);
    const ids = ports.map((p) => `[::1]:${p}`);
    const logs = ports.map(() => new LogSink());
    const nodes = ports.map((port, i) => {
      const n = CacheNode.start({ port, host: "::1", peers: ids, logLevel: "warn" }, { logger: logs[i]!.logger });
      open.push(n);
      return n;
    });
    expect(nodes.map((n) => n.server.nodeId)).toEqual(ids);
    expect(nodes.map((n) => [...n.cluster!.members].sort())).toEqual([[...ids].sort(), [...ids].sort()]);
    expect(logs.flatMap((l) => l.lines).filter((l) => l.includes("does not name this node"))).toEqual([]);
    const a = new CacheClient({ host: "::1", port: ports[0]! });
    const b = new CacheClient({ host: "::1", port: ports[1]! });
    try {
      for (let i = 0; i < 20; i++) await a.set("default", `k${i}`, `v${i}`);
      for (let i = 0; i < 20; i++) expect(new TextDecoder().decode((await b.get("default", `k${i}`)).value)).toBe(`v${i}`);
    } finally {
      await a.close();
      await b.close();
    }
  });

  test.skipIf(ZONED === undefined)("(needs an IPv6 address with a zone) members with a zone, `[fe80::1%eth0]:port`, are taken and reach each other (review: --peers refused them)", async () => {
    const ports = freePorts(2);
    const ids = ports.map((p) => hostPort(ZONED!, p));
    expect(ids[0]).toMatch(/^\[[0-9a-f:]+%[\w.-]+\]:\d+$/);
    const nodes = ports.map((port) => {
      const parsed = parseArgs(["--port", String(port), "--host", ZONED!, "--insecure", "--peers", ids.join(","), "--log-level", "warn"]);
      if (parsed.kind !== "run") throw new Error(`not a run: ${parsed.kind}`);
      const n = CacheNode.start(parsed.config, { logger: new LogSink().logger });
      open.push(n);
      return n;
    });
    expect(nodes.map((n) => n.server.nodeId)).toEqual(ids);
    const a = new CacheClient({ host: ZONED!, port: ports[0]! });
    const b = new CacheClient({ host: ZONED!, port: ports[1]! });
    try {
      for (let i = 0; i < 20; i++) await a.set("default", `k${i}`, `v${i}`);
      for (let i = 0; i < 20; i++) expect(new TextDecoder().decode((await b.get("default", `k${i}`)).value)).toBe(`v${i}`);
      // Keys of both owners were written through one node and read through the other: each
      // forwarded to the other member over its zoned address.
      expect(nodes.map((n) => n.cluster!.counters.forwarded > 0)).toEqual([true, true]);
    } finally {
      await a.close();
      await b.close();
    }
  });
});
