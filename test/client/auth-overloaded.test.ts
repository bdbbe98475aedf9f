/**
 * Review: with an auth token, the client reads ANY non-success reply to its Auth call as "the
 * peer refused our auth token". A node at its connection limit answers the first call (the Auth)
 * with CacheError OVERLOADED; the client then reports a protocol fault and PEER_UNAVAILABLE
 * instead of OVERLOADED (which it reports without auth).
 */
import { describe, expect, spyOn, test, setDefaultTimeout } from "bun:test";
import { CacheClient, TEST_DOOR } from "../../src/client/cache-client.ts";
import type { ClientConnection } from "../../src/client/client-connection.ts";
import { BACKOFF_BASE_MS, CONN_IDLE, CONN_OPEN } from "../../src/client/dialer.ts";
import { StubServer, cacheErrorReply, closedPort, until } from "./support.ts";
import { CacheError, ERROR_CODE } from "../../src/protocol/errors.ts";
import { RawSocket, startNode } from "../server/support.ts";
import { BinaryWriter } from "../../src/protocol/binary-writer.ts";
import { Bytes, MSG, T, framed, message } from "../protocol/wire-builder.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

/**
 * hogConnection takes a slot of the node: a connection that sends nothing, or, on a node with a
 * token, one that authenticates (one that has not is closed to make room for a newcomer at the
 * cap, connection-lifecycle.ts's evictUnauthenticated: only authenticated connections fill a node
 * with a token for good).
 */
async function hogConnection(port: number, authToken: string | undefined): Promise<RawSocket> {
  const hog = await RawSocket.connect(port);
  if (authToken === undefined) return hog;
  hog.write(framed(message(MSG.CALL, "Auth", 1, new Bytes().field(T.STRUCT, 1).field(T.STRING, 1).str(authToken).stop().stop().bytes())));
  await hog.waitFor(() => hog.frames().length === 1, "the hog's Auth reply");
  return hog;
}

async function firstError(node: { port: number }, authToken: string | undefined): Promise<CacheError> {
  const client = new CacheClient({ host: "127.0.0.1", port: node.port, connections: 1, timeoutMs: 2000, ...(authToken === undefined ? {} : { authToken }) });
  try {
    const e = await client.get("default", "k").then(() => undefined, (err: unknown) => err);
    expect(e).toBeInstanceOf(CacheError);
    return e as CacheError;
  } finally {
    await client.close();
  }
}

describe("Auth on connect to a node at its connection limit", () => {
  test("control: without auth the call is answered OVERLOADED", async () => {
    await using node = startNode({ maxConnections: 1 });
    const hog = await RawSocket.connect(node.port);
    const e = await firstError(node, undefined);
    expect(e.code).toBe(ERROR_CODE.OVERLOADED);
    hog.close();
  });

  test("with the right token the call is still answered OVERLOADED, not 'refused our auth token'", async () => {
    await using node = startNode({ maxConnections: 1, authToken: "s3cret-token-0123456789" });
    const hog = await hogConnection(node.port, "s3cret-token-0123456789");
    const e = await firstError(node, "s3cret-token-0123456789");
    expect(e.message).not.toContain("auth token");
    expect(e.code).toBe(ERROR_CODE.OVERLOADED);
    hog.close();
  });
});

describe("a node at its connection limit", () => {
  // The node answers the first call OVERLOADED and closes. That close used to count as the idle
  // close of a healthy connection (no call was in flight any more): the next call, however soon,
  // reconnected at once, so a client opened one connection per call against a full node.
  for (const authToken of [undefined, "s3cret-token-0123456789"]) {
    test(`backs off its reconnects without marking the node down (${authToken === undefined ? "no auth" : "auth"})`, async () => {
      await using node = startNode({ maxConnections: 1, ...(authToken === undefined ? {} : { authToken }) });
      const hog = await hogConnection(node.port, authToken);
      await using client = new CacheClient({ host: "127.0.0.1", port: node.port, connections: 1, timeoutMs: 2000, ...(authToken === undefined ? {} : { authToken }) });
      const conn = client[TEST_DOOR].connections[0]!;
      const overloaded = async () => expect(((await client.get("default", "k").then(() => undefined, (err: unknown) => err)) as CacheError).code).toBe(ERROR_CODE.OVERLOADED);
      await overloaded();
      await until(() => conn.state === CONN_IDLE);
      // Backing off: the calls meanwhile are answered with the refusal at once, not queued for a
      // reconnect (whose wait could pass their timeout and count toward marking the node down).
      for (let i = 0; i < 3; i++) {
        await overloaded();
        expect(conn.usable).toBe(false);
      }
      expect(node.server.counters.connectionsRejected).toBe(1);
      // Once the backoff is over, the next call revives the connection (a ping, refused again),
      // and waits behind that ping for the node's answer.
      await Bun.sleep(BACKOFF_BASE_MS + 5);
      await overloaded();
      expect(node.server.counters.connectionsRejected).toBe(2);
      await until(() => conn.state === CONN_IDLE);
      await overloaded(); // at once again, the backoff doubled
      expect(node.server.counters.connectionsRejected).toBe(2);
      expect(client.isDown).toBe(false); // the node is up and answering
      hog.close();
    });
  }
});

describe("a connection the node refused", () => {
  test("an OVERLOADED that is not a refusal of the connection, followed by a close, is a failure as before", async () => {
    // A node whose loader queue is full answers OVERLOADED and goes on; if it then dies with calls
    // unanswered, they are PEER_UNAVAILABLE and the node is counted toward down.
    using stub = new StubServer();
    let first = true;
    stub.handler = (call, server) => {
      if (!first) return null;
      first = false;
      setTimeout(() => { for (const s of server.sockets) s.end(); }, 50);
      return cacheErrorReply(call.name, call.seqid, ERROR_CODE.OVERLOADED, "loader queue full");
    };
    await using client = new CacheClient({ host: "127.0.0.1", port: stub.port, connections: 1, timeoutMs: 2000, maxFailures: 1 });
    const codes = await Promise.all([0, 1, 2].map((i) => client.get("default", `k${i}`).then(() => 0, (e: unknown) => (e as CacheError).code)));
    expect(codes).toEqual([ERROR_CODE.OVERLOADED, ERROR_CODE.PEER_UNAVAILABLE, ERROR_CODE.PEER_UNAVAILABLE]);
    expect(client.isDown).toBe(true);
  });

  test("calls pipelined on it all get the node's OVERLOADED, and the node is not counted toward down", async () => {
    // The node answers the first call and closes: the others were still in flight, so they
    // failed PEER_UNAVAILABLE and the close counted as a failure of the node (maxFailures 1: down).
    await using node = startNode({ maxConnections: 1 });
    const hog = await RawSocket.connect(node.port);
    await using client = new CacheClient({ host: "127.0.0.1", port: node.port, connections: 1, timeoutMs: 2000, maxFailures: 1 });
    for (let round = 0; round < 2; round++) {
      const codes = await Promise.all([0, 1, 2].map((i) => client.get("default", `k${i}`).then(() => 0, (e: unknown) => (e as CacheError).code)));
      expect(codes).toEqual([ERROR_CODE.OVERLOADED, ERROR_CODE.OVERLOADED, ERROR_CODE.OVERLOADED]);
    }
    expect(client.isDown).toBe(false);
    expect(client.counters.downs).toBe(0);
    hog.close();
  });

  test("is revived by a ping beside the calls once the node has room, with no call of the application risked on it", async () => {
    // Left unusable after the refusal, a connection was never used again while another worked
    // (the pool shrank for good; a node's write connection refused once sent its writes over the
    // read connection). Given calls again after each backoff instead, every retry against a node
    // still full failed a batch of them with OVERLOADED.
    await using node = startNode({ maxConnections: 2 });
    const hogs = [await RawSocket.connect(node.port), await RawSocket.connect(node.port)];
    await using client = new CacheClient({ host: "127.0.0.1", port: node.port, connections: 2, writeConnection: true, timeoutMs: 2000 });
    const [write, read] = client[TEST_DOOR].connections as [ClientConnection, ClientConnection];
    const refused = await client.set("default", "k", "v1").then(() => undefined, (e: unknown) => e);
    expect((refused as CacheError).code).toBe(ERROR_CODE.OVERLOADED);
    await until(() => write.state === CONN_IDLE);
    hogs.pop()!.close(); // room for one connection
    await until(() => node.server.counters.connectionsCurrent === 1);
    // The read connection takes the calls, the write one included, while the write connection,
    // pinging in the background, keeps being refused: not one call fails.
    for (let i = 0; i < 40; i++) {
      await client.set("default", "k", `v${i}`);
      expect(new TextDecoder().decode((await client.get("default", "k")).value)).toBe(`v${i}`);
      await Bun.sleep(5);
    }
    expect(read.state).toBe(CONN_OPEN);
    expect(write.usable).toBe(false);
    expect(node.server.counters.connectionsRejected).toBeGreaterThan(2); // the revival pings
    // An idle client does not knock on the full node.
    await Bun.sleep(1100); // past the longest backoff
    const rejected = node.server.counters.connectionsRejected;
    await Bun.sleep(300);
    expect(node.server.counters.connectionsRejected).toBe(rejected);
    hogs.pop()!.close(); // room for both
    // The next call revives the write connection beside it.
    await client.get("default", "k");
    await until(() => write.state === CONN_OPEN && write.usable);
    expect(node.server.counters.connectionsCurrent).toBe(2);
    await client.set("default", "k", "last"); // (every call since the first set's refusal succeeded: each is awaited)
    expect(client.counters.calls).toBe(83); // the pings are not calls
    expect(client.counters.errors).toBe(1); // nor errors: the first set's refusal is the only one
  });
});

describe("revival pings", () => {
  test("a revival ping answered OK leaves nothing behind: later calls on its slot count as they should", async () => {
    // Its slot stayed marked as the revival's after an OK reply: a later call given the same slot
    // was not counted as an error when it failed, nor toward marking the node down.
    const node = startNode({ maxConnections: 1 });
    const port = node.port;
    const hog = await RawSocket.connect(port);
    await using client = new CacheClient({ host: "127.0.0.1", port, connections: 1, timeoutMs: 2000, maxFailures: 100 });
    await expect(client.get("default", "k")).rejects.toMatchObject({ code: ERROR_CODE.OVERLOADED });
    hog.close();
    await Bun.sleep(BACKOFF_BASE_MS + 10);
    await expect(client.get("default", "k")).rejects.toMatchObject({ code: ERROR_CODE.NOT_FOUND }); // behind the revival ping
    await node.close();
    const errors = client.counters.errors;
    const codes = await Promise.all([1, 2, 3].map(() => client.get("default", "k").then(() => 0, (e: unknown) => (e as CacheError).code)));
    expect(codes).toEqual([ERROR_CODE.PEER_UNAVAILABLE, ERROR_CODE.PEER_UNAVAILABLE, ERROR_CODE.PEER_UNAVAILABLE]);
    expect(client.counters.errors - errors).toBe(3);
  });

  test("one failed call to a peer that is away does not become 'peer is down' through the client's own retries", async () => {
    // The revival pings of the connection backing off counted as failures: with maxFailures 3, a
    // peer away for a moment (a restart) was marked down within ~60 ms of one failed call, and
    // calls were refused for a probe interval after it was back.
    await using client = new CacheClient({ host: "127.0.0.1", port: closedPort(), connections: 2, timeoutMs: 2000, maxFailures: 3 });
    await expect(client.get("default", "k")).rejects.toMatchObject({ code: ERROR_CODE.PEER_UNAVAILABLE });
    await Bun.sleep(200); // several backoffs
    expect(client.isDown).toBe(false);
    expect([client.counters.calls, client.counters.errors]).toEqual([1, 1]);
    // The next call, the second failure, revives the other connection too: that ping's failure
    // does not count either.
    await expect(client.get("default", "k")).rejects.toMatchObject({ code: ERROR_CODE.PEER_UNAVAILABLE });
    await Bun.sleep(100);
    expect(client.isDown).toBe(false);
    expect([client.counters.calls, client.counters.errors]).toEqual([2, 2]);
  });
});

describe("every connection backing off", () => {
  test.each([0, 1])("a call goes to the one whose backoff ends first (connection %i), not always the same one (review: calls piled on one backing off for 640 ms while another's backoff had ended)", async (first) => {
    await using client = new CacheClient({ host: "127.0.0.1", port: closedPort(), connections: 2, timeoutMs: 5000, maxFailures: 1000 });
    const conns = client[TEST_DOOR].connections as [ClientConnection, ClientConnection];
    // Both fail to connect, and back off.
    await Promise.allSettled([client.get("g", "k"), client.get("g", "k")]);
    await until(() => conns.every((c) => !c.usable && c.state === CONN_IDLE));
    // One backs off much longer than the other (as after more failures in a row).
    const soon = conns[first]!;
    const late = conns[1 - first]!;
    late.dialer.retryAt = performance.now() + 60_000;
    soon.dialer.retryAt = performance.now() + 30_000;
    const call = client.get("g", "k").catch(() => {});
    expect([soon.pending.waiting, late.pending.waiting]).toEqual([1, 0]);
    await client.close();
    await call;
  });
});

/**
 * nodeGoneWhileBackingOff is a client of one connection (200 ms timeout) whose node served it and
 * then closed, and whose reconnects have failed seven times over: its backoff grew.
 */
async function nodeGoneWhileBackingOff(): Promise<{ client: CacheClient; port: number }> {
  const node = startNode();
  const port = node.port;
  const client = new CacheClient({ host: "127.0.0.1", port, connections: 1, timeoutMs: 200, maxFailures: 100 });
  await client.set("default", "warm", "1");
  await node.close();
  for (let i = 0; i < 7; i++) await client.get("default", "x").catch(() => {}); // failed connects: the backoff grows
  return { client, port };
}

describe("a call that timed out before its connection could send it", () => {
  test("is never sent: the node it was for does not apply it when it comes back", async () => {
    // It stayed in the connection's output while the connection waited out its backoff, and went
    // out when the node was back: a Set the client reported as failed was applied after all.
    const gone = await nodeGoneWhileBackingOff();
    await using client = gone.client;
    const port = gone.port;
    await expect(client.set("default", "late", "timed out")).rejects.toMatchObject({ code: ERROR_CODE.PEER_UNAVAILABLE, message: expect.stringContaining("timeout") });
    const node = startNode({ port });
    try {
      await Bun.sleep(1100); // past the longest backoff: a call still queued would have gone out
      await using other = new CacheClient({ host: "127.0.0.1", port, connections: 1 });
      await expect(other.get("default", "late")).rejects.toMatchObject({ code: ERROR_CODE.NOT_FOUND });
      await client.set("default", "after", "ok"); // and the connection carries calls as before
      expect(new TextDecoder().decode((await other.get("default", "after")).value)).toBe("ok");
    } finally {
      await node.close();
    }
  });
  test("many that time out together are cut from the output in one move, and the calls after them go out intact (review: one cut each moved all queued behind it, 40,000 calls stalled the loop 2.6 s)", async () => {
    const gone = await nodeGoneWhileBackingOff();
    await using client = gone.client;
    const port = gone.port;
    const cuts = spyOn(BinaryWriter.prototype, "consume");
    try {
      const sets: Promise<unknown>[] = [];
      for (let i = 0; i < 2000; i++) sets.push(client.set("default", `late${i}`, "timed out"));
      const failed = await Promise.allSettled(sets);
      expect(failed.every((r) => r.status === "rejected" && (r.reason as CacheError).code === ERROR_CODE.PEER_UNAVAILABLE)).toBe(true);
      // Issued in one tick, they time out in one sweep (two if it ticks in between): one cut each.
      expect(cuts.mock.calls.length).toBeLessThanOrEqual(2);
    } finally {
      cuts.mockRestore();
    }
    const node = startNode({ port });
    try {
      await Bun.sleep(1100); // past the longest backoff
      await client.set("default", "after", "ok"); // the output holds this call only, whole
      await using other = new CacheClient({ host: "127.0.0.1", port, connections: 1 });
      expect(new TextDecoder().decode((await other.get("default", "after")).value)).toBe("ok");
      for (const i of [0, 999, 1999]) await expect(other.get("default", `late${i}`)).rejects.toMatchObject({ code: ERROR_CODE.NOT_FOUND });
    } finally {
      await node.close();
    }
  });
});

describe("a wrong auth token", () => {
  test("is answered UNAUTHORIZED, does not mark the node down, and its reconnects back off (review: PEER_UNAVAILABLE, the node marked down, a reconnect every probe)", async () => {
    await using node = startNode({ authToken: "s3cret-token-0123456789" });
    await using client = new CacheClient({ host: "127.0.0.1", port: node.port, connections: 1, timeoutMs: 2000, maxFailures: 2, authToken: "wrong-token-0123456789" });
    for (let i = 0; i < 6; i++) {
      const e = (await client.get("default", "k").then(() => undefined, (err: unknown) => err)) as CacheError;
      expect([e.code, e.message]).toEqual([ERROR_CODE.UNAUTHORIZED, "the node refused our auth token"]);
    }
    expect(client.isDown).toBe(false);
    // Calls while it backs off are answered at once; the node saw one connection, not one per call.
    expect(node.server.counters.connectionsTotal).toBe(1);
  });
});
