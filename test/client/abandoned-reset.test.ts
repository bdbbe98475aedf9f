/**
 * A connection reset for too many unanswered calls (CallTimeouts.MAX_ABANDONED) in the sweep that
 * timed them out counts one failure of the peer, as any sweep whose calls timed out: the calls
 * sent together time out together. Review: the reset counted a failure of its own besides the
 * sweep's, so one burst counted twice toward marking the peer down.
 */
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
import { MAX_ABANDONED } from "../../src/client/call-timeouts.ts";
import { StubServer, rejection } from "./support.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const open: { close(): unknown }[] = [];
afterEach(async () => {
  for (const x of open.splice(0).reverse()) await x.close();
});

describe("a connection reset for too many unanswered calls", () => {
  test("counts one failure for the sweep, not two (review: a burst of MAX_ABANDONED calls timing out together marked a peer of maxFailures 2 down)", async () => {
    const stub = new StubServer();
    open.push(stub);
    stub.handler = () => null; // answers nothing
    const client = new CacheClient({ host: "127.0.0.1", port: stub.port, connections: 1, timeoutMs: 50, maxFailures: 2 });
    open.push(client);
    // Issued in one go, they time out in one sweep, which finds MAX_ABANDONED unanswered and resets the connection.
    const burst = Array.from({ length: MAX_ABANDONED }, () => rejection(client.get("g", "k")));
    const errors = await Promise.all(burst);
    expect(errors.every((e) => e.message.includes("timeout"))).toBe(true);
    expect(client.counters.timeouts).toBe(MAX_ABANDONED);
    expect(client.counters.downs).toBe(0);
    expect(client.isDown).toBe(false);
    // The next timeout is the second failure in a row: now it is down.
    expect((await rejection(client.get("g", "k"))).message).toContain("timeout");
    expect(client.isDown).toBe(true);
  });
});
