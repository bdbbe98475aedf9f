/**
 * A client closed from a call's callback while its sweep fails calls (a timeout's callback closes
 * it, as a node shutting down may): the rest of that sweep must not report the peer down to
 * `onHealth` (a callback run after close). Before, the sweep went on to count the timeout as a
 * failure, marked the peer down and reported it to the closed client's onHealth.
 */
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
import { StubServer, until } from "./support.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const enc = new TextEncoder();
const open: { close(): unknown }[] = [];
afterEach(async () => {
  for (const x of open.splice(0).reverse()) await x.close();
});

describe("a client closed by a timed-out call's callback", () => {
  test("reports nothing to onHealth after it closed (before: 'down', from the sweep that timed the call out)", async () => {
    const stub = new StubServer();
    open.push(stub);
    stub.handler = () => null; // answers nothing
    const health: string[] = [];
    let closed = false;
    const client = new CacheClient({ host: "127.0.0.1", port: stub.port, connections: 1, timeoutMs: 30, maxFailures: 1, onHealth: (state) => health.push(`${state}${closed ? " after close" : ""}`) });
    open.push(client);
    let failed = "";
    client.forwardGet(enc.encode("g"), enc.encode("k"), 0, 1, (err) => {
      failed = err?.message ?? "answered";
      closed = true;
      void client.close();
    });
    await until(() => closed); // (polled from a later task: the sweep that ran the callback is over)
    expect(failed).toContain("timeout");
    expect(health).toEqual([]);
  });
});
