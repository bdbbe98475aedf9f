/**
 * Review: CacheNode.start binds the Thrift port (and starts the cluster/membership) before the
 * admin port; when the admin port cannot be bound, start throws and nothing is closed.
 */
import { describe, expect, test } from "bun:test";
import { CacheNode } from "../../src/server/cache-node.ts";
import { freePorts } from "../support/node-process.ts";
import { LogSink } from "../server/support.ts";

describe("CacheNode.start failure", () => {
  test("a start that fails on the admin port leaves no Thrift port listening", async () => {
    const [thriftPort] = freePorts(1);
    const blocker = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    try {
      expect(() =>
        CacheNode.start({ host: "127.0.0.1", port: thriftPort!, adminPort: blocker.port, logLevel: "silent" }, { logger: new LogSink().logger }),
      ).toThrow();
      // The failed node's Thrift port must be free again: listening on it must succeed.
      let rebound: { stop(force?: boolean): void } | undefined;
      let error: unknown;
      try {
        rebound = Bun.listen({ hostname: "127.0.0.1", port: thriftPort!, socket: { data() {} } });
      } catch (e) {
        error = e;
      }
      rebound?.stop(true);
      expect(error).toBeUndefined();
    } finally {
      blocker.stop(true);
    }
  });
});
