/**
 * A client closed from a call's callback while its sweep fails calls (a timeout's callback closes
 * it, as a node shutting down may): the rest of that sweep must not report the peer down to
 * `onHealth` (a callback run after close). Before, the sweep went on to count the timeout as a
 * failure, marked the peer down and reported it to the closed client's onHealth; and it swapped a
 * new, idle connection in for the quiet one it had just closed, and left the peer marked down.
 */
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient, TEST_DOOR } from "../../src/client/cache-client.ts";
import { CONN_CLOSED } from "../../src/client/dialer.ts";
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

  test("makes no connection and marks nothing down after it closed (before: the sweep swapped an idle connection in for the quiet one, and isDown read true)", async () => {
    const stub = new StubServer();
    open.push(stub);
    stub.handler = () => null; // answers nothing: its connection goes quiet for a whole timeout
    let closed = false;
    const client = new CacheClient({ host: "127.0.0.1", port: stub.port, connections: 1, timeoutMs: 30, maxFailures: 1 });
    open.push(client);
    const conns = client[TEST_DOOR].connections;
    const first = conns[0]!;
    client.forwardGet(enc.encode("g"), enc.encode("k"), 0, 1, () => {
      closed = true;
      void client.close();
    });
    await until(() => closed);
    expect(conns.length).toBe(1);
    expect(conns[0]).toBe(first); // not replaced by a new, idle one
    expect(first.state).toBe(CONN_CLOSED);
    expect(client.isDown).toBe(false);
    expect(client.counters.downs).toBe(0);
  });
});
