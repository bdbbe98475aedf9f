/**
 * The cap on a late wait (CallTimeouts.MAX_LATE_LOAD_WAITS): a PeerGetMulti waits a load wait per
 * window of its keys, and those of the parts queued ahead of it, but never more than the cap in
 * all. Review: a routed GetMulti's part of ~10-byte keys counted a load wait per 32 of them, ~2,300
 * for a 1 MiB part (hours at the default 10 s load timeout), and a connection the node may be
 * holding (a part of over 64 KiB) had its calls wait as long as another connection answered: a
 * half-open one kept them waiting all that time.
 */
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
import { MAX_LATE_LOAD_WAITS } from "../../src/client/call-timeouts.ts";
import { StubServer, partOf, rejection, serve } from "./support.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const open: { close(): unknown }[] = [];
afterEach(async () => {
  for (const x of open.splice(0).reverse()) await x.close();
});

describe("a late wait is capped", () => {
  test("a part of 7,000 short keys on a connection that went half-open fails within the cap, while the other connection answers (review: ~220 load waits, 44 s here)", async () => {
    // The stub never answers the read connection once the part is on it (half-open: nothing comes
    // back, pings included) and answers the write connection at once. Timeout 100 ms, load wait
    // 200 ms: uncapped, the part (over 64 KiB: the node would serve it in order, so its
    // connection counts as held and its calls wait while the peer answers anywhere) would wait
    // 100 + 219 × 200 ms.
    const stub = new StubServer();
    open.push(stub);
    let dead = -1;
    stub.handler = (c, s) => {
      if (c.name === "PeerGetMulti") dead = c.conn;
      return c.conn === dead ? null : serve(c, s);
    };
    const client = new CacheClient({ host: "127.0.0.1", port: stub.port, timeoutMs: 100, loadWaitMs: 200, connections: 2, writeConnection: true });
    open.push(client);
    await client.set("g", "w", "v", undefined, { peer: true });
    const keys = Array.from({ length: 7_000 }, (_, i) => `key-${i}`.padStart(10, "0"));
    const t0 = performance.now();
    const e = await rejection(client.peerGetMultiOf("g", partOf(keys), 32));
    const waited = performance.now() - t0;
    expect(e.message).toContain("timeout");
    // The timeout and the capped load waits, with slack for a busy machine; far short of 44 s.
    expect(waited).toBeGreaterThan(100 + MAX_LATE_LOAD_WAITS * 200 - 50);
    expect(waited).toBeLessThan(100 + MAX_LATE_LOAD_WAITS * 200 + 3_000);
    expect(stub.calls.some((c) => c.name === "PeerPing" && c.conn !== dead)).toBe(true); // (asked elsewhere, and answered)
    expect(client.isDown).toBe(false);
  });
});
