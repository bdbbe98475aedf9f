/**
 * The replies to a connection's first calls (its Auth, its intro PeerPing: first-calls.ts). The
 * node taking them has taken the connection: once it has, a connection that reconnected after a
 * failure is usable again, though none of its calls has been answered yet. Review: it stayed
 * backing off until a call of its own was answered, so while a node held its first calls (a
 * PeerGet that loads, a routed GetMulti's part the node serves in order) a node's peer client sent
 * its other reads over the write connection, where a write may then wait behind their loads. Its
 * reconnects still back off longer per failure until the node has served a call on it, and the
 * node's refusal of the connection (an OVERLOADED answering the first call:
 * connection-refusals.test.ts) still tells apart.
 */
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient, TEST_DOOR } from "../../src/client/cache-client.ts";
import type { ClientConnection } from "../../src/client/client-connection.ts";
import { METHOD_AUTH, METHOD_PEER_PING } from "../../src/protocol/request.ts";
import { StubServer, type StubCall, boolReply, multiReply, pingReply, rejection, serve, until } from "./support.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const enc = new TextEncoder();
const open: { close(): unknown }[] = [];
afterEach(async () => {
  for (const x of open.splice(0).reverse()) await x.close();
});

/**
 * failingStub is a node that takes any auth token, answers pings, ends the connection of a call of key "drop" without
 * answering it (as a node that dies with calls in flight), holds a GetMulti of key "slow" in `held`, and serves the rest.
 */
function failingStub(held: StubCall[]): StubServer {
  const stub = new StubServer();
  open.push(stub);
  stub.store.set("g/k", enc.encode("v"));
  stub.handler = (c, s) => {
    if (c.method === METHOD_AUTH) return boolReply(c.name, c.seqid, true);
    if (c.method === METHOD_PEER_PING) return pingReply(c.seqid, "stub:1", 1);
    if (c.key === "drop") {
      for (const socket of s.sockets) if (socket.data.id === c.conn) socket.end();
      return null;
    }
    if (c.keys.includes("slow")) {
      held.push(c);
      return null;
    }
    return serve(c, s);
  };
  return stub;
}

/** FIRST_CALLS: a node's client of its peers sends its intro PeerPing first on each connection, and with a token its Auth before that. */
const FIRST_CALLS = [
  { name: "intro PeerPing", opts: { sender: "127.0.0.1:1" }, first: ["PeerPing"] },
  { name: "Auth and intro PeerPing", opts: { sender: "127.0.0.1:1", authToken: "s3cret-token-0123456789" }, first: ["Auth", "PeerPing"] },
];

/** peerClient is a node's client of a peer (writes on a connection of their own), with a 500 ms timeout. */
function peerClient(stub: StubServer, opts: object): { client: CacheClient; write: ClientConnection; read: ClientConnection } {
  const client = new CacheClient({
    host: "127.0.0.1", port: stub.port, connections: 2, writeConnection: true, timeoutMs: 500, loadWaitMs: 5_000, maxFailures: 100, ...opts,
  });
  open.push(client);
  const [write, read] = client[TEST_DOOR].connections as [ClientConnection, ClientConnection];
  return { client, write, read };
}

describe("a connection that reconnected after a failure, its first calls answered", () => {
  test.each(FIRST_CALLS)("is usable while the node holds its other calls: the next reads go on it, not on the write connection ($name)", async ({ opts, first }) => {
    const held: StubCall[] = [];
    const stub = failingStub(held);
    const { client, write, read } = peerClient(stub, opts);
    // Both connections fail, a call lost on each: both back off.
    await rejection(client.set("g", "drop", "v", undefined, { peer: true }));
    await rejection(client.get("g", "drop", { peer: true }));
    expect([write.usable, read.usable]).toEqual([false, false]);
    // Two routed GetMultis' parts while both back off wait for the read connection's reconnect (no
    // revival ping: its backoff is not over), which the node takes (its first calls answered) and then
    // serves in order behind their loads: a liveness ping there would wait behind them too, so the
    // client asks on the write connection, revived for it.
    read.dialer.retryAt = performance.now() + 50;
    const parts = [client.peerGetMulti("g", ["slow", "a"]), client.peerGetMulti("g", ["slow", "b"])];
    await until(() => held.length === 2);
    const readConn = held[0]!.conn;
    expect(stub.calls.filter((c) => c.conn === readConn).map((c) => c.name)).toEqual([...first, "PeerGetMulti", "PeerGetMulti"]);
    for (const p of parts) p.catch(() => {}); // (settled below; a failure above leaves them to the close)
    await until(() => write.usable); // (half a timeout after the first calls' answers: a liveness ping)
    // A read now goes on the read connection, which the node took, not on the write connection.
    expect((await client.get("g", "k", { peer: true })).value).toEqual(enc.encode("v"));
    const served = stub.calls.filter((c) => c.key === "k");
    expect(served.map((c) => c.conn)).toEqual([readConn]);
    expect(read.usable).toBe(true);
    for (const c of held) stub.write(c.conn, multiReply(c.name, c.seqid, [["slow", enc.encode("loaded")]]));
    for (const found of await Promise.all(parts)) expect(found.keys.map((k) => new TextDecoder().decode(k))).toEqual(["slow"]);
    expect(client.isDown).toBe(false);
  });

  test("still backs off longer when it is lost again before the node served a call on it", async () => {
    // The intro is the node taking the connection, not serving it: a node that takes connections
    // and drops them at the first call gets a growing backoff, not a reconnect per call.
    const stub = failingStub([]);
    const client = new CacheClient({ host: "127.0.0.1", port: stub.port, connections: 1, sender: "127.0.0.1:1", timeoutMs: 2_000, maxFailures: 100 });
    open.push(client);
    const conn = client[TEST_DOOR].connections[0]!;
    await rejection(client.get("g", "drop"));
    expect(conn.dialer.backoffFailures).toBe(1);
    conn.dialer.retryAt = performance.now() + 50; // (no revival ping: the next call reconnects it)
    await rejection(client.get("g", "drop")); // its intro answered, then lost
    expect(stub.calls.map((c) => c.name)).toEqual(["PeerPing", "Get", "PeerPing", "Get"]);
    expect(conn.dialer.backoffFailures).toBe(2);
    expect(conn.usable).toBe(false);
  });
});
