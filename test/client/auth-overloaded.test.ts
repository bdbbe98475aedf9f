/**
 * Review: with an auth token, the client reads ANY non-success reply to its Auth call as "the
 * peer refused our auth token". A node at its connection limit answers the first call (the Auth)
 * with CacheError OVERLOADED; the client then reports a protocol fault and PEER_UNAVAILABLE
 * instead of OVERLOADED (which it reports without auth).
 */
import { describe, expect, test } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
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
