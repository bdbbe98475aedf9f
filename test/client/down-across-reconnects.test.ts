/**
 * Down detection across reconnects: a peer that takes every new connection (answers its Auth and
 * intro PeerPing) but lets every call on it time out must be marked down after `maxFailures`
 * timeouts in a row. Review: the node taking a connection reset the failures in a row, and each
 * quiet connection replaced after a timeout or two came back taken, so such a peer was never
 * marked down (every call waited the whole timeout, and the forwarder never fell back at once).
 * A reply to a call (a liveness ping's included) still keeps late calls waiting.
 */
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
import { METHOD_AUTH, METHOD_PEER_PING } from "../../src/protocol/request.ts";
import { StubServer, boolReply, getReply, pingReply, rejection } from "./support.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const open: { close(): unknown }[] = [];
afterEach(async () => {
  for (const x of open.splice(0).reverse()) await x.close();
});

describe("a peer that takes connections but answers no call", () => {
  for (const { name, opts } of [
    { name: "intro PeerPing", opts: { sender: "127.0.0.1:1" } },
    { name: "Auth and intro PeerPing", opts: { sender: "127.0.0.1:1", authToken: "s3cret-token-0123456789" } },
  ]) {
    test(`is marked down after maxFailures timeouts in a row, though each new connection's ${name} is answered (review: never marked down)`, async () => {
      const stub = new StubServer();
      open.push(stub);
      stub.handler = (c) => {
        if (c.method === METHOD_AUTH) return boolReply(c.name, c.seqid, true);
        if (c.method === METHOD_PEER_PING) return pingReply(c.seqid, "stub:1", 1);
        return null; // every call times out
      };
      const client = new CacheClient({ host: "127.0.0.1", port: stub.port, connections: 2, writeConnection: true, timeoutMs: 50, maxFailures: 3, ...opts });
      open.push(client);
      const errors: string[] = [];
      for (let i = 0; i < 12 && !client.isDown; i++) errors.push((await rejection(client.get("g", "k", { peer: true }))).message);
      expect(client.counters.downs).toBe(1);
      expect(errors.filter((m) => m.includes("timeout")).length).toBe(3);
      expect(stub.connections).toBeGreaterThan(1); // (it did reconnect in between)
      expect((await rejection(client.get("g", "k", { peer: true }))).message).toContain("down");
    });
  }

  test("a peer that answers the liveness pings of late calls but never the calls is marked down after maxFailures of them (review: each ping's reply reset the count)", async () => {
    const stub = new StubServer();
    open.push(stub);
    stub.handler = (c) => (c.method === METHOD_PEER_PING ? pingReply(c.seqid, "stub:1", 1) : null);
    const client = new CacheClient({ host: "127.0.0.1", port: stub.port, connections: 2, writeConnection: true, timeoutMs: 50, loadWaitMs: 100, maxFailures: 3, sender: "127.0.0.1:1" });
    open.push(client);
    const errors: string[] = [];
    for (let i = 0; i < 12 && !client.isDown; i++) errors.push((await rejection(client.get("g", "k", { peer: true }))).message);
    expect(client.counters.downs).toBe(1);
    expect(errors.filter((m) => m.includes("timeout")).length).toBe(3);
    expect(stub.calls.filter((c) => c.method === METHOD_PEER_PING).length).toBeGreaterThan(stub.connections); // (liveness pings, answered)
  });

  test("late calls still wait while the peer answers their connection's liveness pings", async () => {
    // Each PeerGet is answered 250 ms after it came (a load), pings at once: timeout 50 ms, load
    // wait 500 ms. None fails, and the peer is not marked down.
    const stub = new StubServer();
    open.push(stub);
    stub.handler = (c, s) => {
      if (c.method === METHOD_PEER_PING) return pingReply(c.seqid, "stub:1", 1);
      setTimeout(() => s.write(c.conn, getReply(c.name, c.seqid, new Uint8Array([1]), 5)), 250);
      return null;
    };
    const client = new CacheClient({ host: "127.0.0.1", port: stub.port, connections: 2, writeConnection: true, timeoutMs: 50, loadWaitMs: 500, maxFailures: 1, sender: "127.0.0.1:1" });
    open.push(client);
    for (let i = 0; i < 3; i++) expect((await client.get("g", "k", { peer: true })).value).toEqual(new Uint8Array([1]));
    expect(client.counters.timeouts).toBe(0);
    expect(client.isDown).toBe(false);
    expect(stub.calls.filter((c) => c.method === METHOD_PEER_PING).length).toBeGreaterThan(1); // (liveness pings besides the intro)
  });
});
