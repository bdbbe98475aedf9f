/**
 * Review: with an auth token, the client reads ANY non-success reply to its Auth call as "the
 * peer refused our auth token". A node at its connection limit answers the first call (the Auth)
 * with CacheError OVERLOADED; the client then reports a protocol fault and PEER_UNAVAILABLE
 * instead of OVERLOADED (which it reports without auth).
 */
import { describe, expect, test } from "bun:test";
import { CacheClient, TEST_DOOR } from "../../src/client/cache-client.ts";
import { BACKOFF_BASE_MS, CONN_IDLE, CONN_OPEN, type ClientConnection } from "../../src/client/client-connection.ts";
import { until } from "./support.ts";
import { CacheError, ERROR_CODE } from "../../src/protocol/errors.ts";
import { RawSocket, startNode } from "../server/support.ts";

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
    const hog = await RawSocket.connect(node.port);
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
      const hog = await RawSocket.connect(node.port);
      await using client = new CacheClient({ host: "127.0.0.1", port: node.port, connections: 1, timeoutMs: 2000, ...(authToken === undefined ? {} : { authToken }) });
      const conn = client[TEST_DOOR].connections[0]!;
      const started = performance.now();
      for (let i = 0; i < 4; i++) {
        const e = await client.get("default", "k").then(() => undefined, (err: unknown) => err);
        expect((e as CacheError).code).toBe(ERROR_CODE.OVERLOADED);
        await until(() => conn.state === CONN_IDLE);
        expect(conn.usable).toBe(false); // backing off, not reconnecting at once
      }
      // Four refusals: the three reconnects waited 20 + 40 + 80 ms of backoff.
      expect(performance.now() - started).toBeGreaterThanOrEqual(140);
      expect(node.server.counters.connectionsRejected).toBe(4);
      expect(client.isDown).toBe(false); // the node is up and answering
      hog.close();
    });
  }
});

describe("a connection the node refused", () => {
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

  test("is used again once its backoff has passed: a node's write connection refused once keeps taking the writes", async () => {
    // Refused, the connection was left unusable until a call reconnected it, and `pick` gives no
    // call to an unusable connection while another works: the writes went over the read
    // connection for good.
    await using node = startNode({ maxConnections: 2 });
    const hogs = [await RawSocket.connect(node.port), await RawSocket.connect(node.port)];
    await using client = new CacheClient({ host: "127.0.0.1", port: node.port, connections: 2, writeConnection: true, timeoutMs: 2000 });
    const [write, read] = client[TEST_DOOR].connections as [ClientConnection, ClientConnection];
    const refused = await client.set("default", "k", "v1").then(() => undefined, (e: unknown) => e);
    expect((refused as CacheError).code).toBe(ERROR_CODE.OVERLOADED);
    await until(() => write.state === CONN_IDLE);
    for (const hog of hogs) hog.close();
    await until(() => node.server.counters.connectionsCurrent === 0);
    await expect(client.get("default", "k")).rejects.toMatchObject({ code: ERROR_CODE.NOT_FOUND }); // on the read connection
    expect(read.state).toBe(CONN_OPEN);
    await Bun.sleep(BACKOFF_BASE_MS + 10); // the write connection's backoff passes
    await client.set("default", "k", "v2");
    expect(write.state).toBe(CONN_OPEN);
    expect(node.server.counters.connectionsCurrent).toBe(2);
  });
});
