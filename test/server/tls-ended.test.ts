/**
 * TLS connections the node has ended are counted out when the node cuts them. Review: after
 * `end()` on a TLS socket, Bun reports its close only once the client closes, or ~12 s later, and
 * `terminate()` then does nothing; such a connection kept counting toward --max-connections and
 * held shutdown: its forced cut at the drain bound (5 s) closed nothing, and node.close() took
 * 11–12 s. The cut now does the close's bookkeeping itself (once: Bun's late close event finds it
 * done).
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { ERROR_CODE } from "../../src/protocol/errors.ts";
import { drainTimeoutMs } from "../../src/server/cache-node.ts";
import { DRAIN_MS } from "../../src/server/connection-lifecycle.ts";
import { RawSocket, cacheErrorCode, getCall, startNode } from "./support.ts";
import { waitUntil } from "../support/gates.ts";
import { selfSigned, withTlsDir } from "../support/tls.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

describe("a TLS connection the node ended, whose client keeps its side open", () => {
  test("shutdown cuts it at its drain bound, and counts it out", async () => {
    await withTlsDir(async (dir) => {
      const { cert, key } = selfSigned(dir);
      const node = startNode({ tlsCert: cert, tlsKey: key });
      const client = await RawSocket.connect(node.port, { tls: true, halfOpen: true });
      client.write(getCall(1, "absent"));
      await client.waitFor(() => client.frames().length === 1, "the Get's reply");
      expect(cacheErrorCode(client.frames()[0]!)).toBe(ERROR_CODE.NOT_FOUND);
      expect(node.server.connectionCount).toBe(1);
      const bound = Math.min(DRAIN_MS, drainTimeoutMs(node.config)); // (a connection not waiting for a load: 5 s)
      const closing = node.close().then(() => "closed");
      await client.waitFor(() => client.eof, "the node's end"); // (the client does not close its side)
      const late = Bun.sleep(bound + 1_000).then(() => "past the drain bound");
      expect(await Promise.race([closing, late])).toBe("closed");
      expect(node.server.connectionCount).toBe(0);
      expect(node.server.counters.connectionsCurrent).toBe(0);
      client.reset();
    });
  });

  test("a connection refused UNAUTHORIZED is counted out at its auth deadline, not when Bun reports its close", async () => {
    await withTlsDir(async (dir) => {
      const { cert, key } = selfSigned(dir);
      await using node = startNode({ tlsCert: cert, tlsKey: key, authToken: "s3cret-token-0123456789" }, { authTimeoutMs: 300 });
      const client = await RawSocket.connect(node.port, { tls: true, halfOpen: true });
      client.write(getCall(1, "k")); // (no Auth first)
      await client.waitFor(() => client.frames().length === 1 && client.eof, "the refusal and the node's end");
      expect(cacheErrorCode(client.frames()[0]!)).toBe(ERROR_CODE.UNAUTHORIZED);
      await waitUntil(() => node.server.connectionCount === 0, "the refused connection counted out", 5_000);
      expect(node.server.counters.connectionsCurrent).toBe(0);
      client.reset();
    });
  });
});
