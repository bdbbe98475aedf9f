/**
 * A TLS connection whose handshake does not finish: the client gives the attempt up at its
 * connect timeout and ends its socket, and ends the one in progress when it closes. (The client
 * holds a TLS socket from the TCP open, before its handshake: one it let go would stay open on
 * both sides for good, counted toward the node's --max-connections.)
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
import { ERROR_CODE } from "../../src/protocol/errors.ts";
import { waitUntil } from "../support/gates.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

describe("a TLS handshake that never finishes", () => {
  test("each attempt's socket is ended at the connect timeout, and the last one when the client closes", async () => {
    let live = 0;
    let accepted = 0;
    const silent = Bun.listen({
      hostname: "127.0.0.1",
      port: 0,
      socket: { open() { live++; accepted++; }, data() {}, close() { live--; }, error() {} },
    });
    try {
      const client = new CacheClient({
        host: "127.0.0.1", port: silent.port, tls: true /* (no certificate is ever looked at: the server never answers) */, connectTimeoutMs: 100, timeoutMs: 5_000, maxFailures: 1000,
      });
      for (let i = 0; i < 4; i++) {
        await expect(client.get("g", "k")).rejects.toMatchObject({ code: ERROR_CODE.PEER_UNAVAILABLE, message: expect.stringContaining("connect timeout") });
      }
      await waitUntil(() => accepted >= 4 && live <= 1, "the timed-out attempts' sockets to close");
      const inFlight = client.get("g", "k").catch(() => {}); // one more attempt, in its handshake
      await waitUntil(() => accepted >= 5, "the next attempt's TCP connection");
      await client.close();
      await inFlight;
      await waitUntil(() => live === 0, "the attempt in its handshake to be ended by close()");
    } finally {
      silent.stop(true);
    }
  });
});
