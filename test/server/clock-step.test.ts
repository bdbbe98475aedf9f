/**
 * TTLs run on the monotonic clock (store/clock.ts), not the wall clock: a step of the time (NTP,
 * a VM resumed, `date -s`; here bun:test's setSystemTime, which moves Date.now only) neither ends
 * items early nor keeps them past their TTL, and the TTL a Get reports never exceeds the one set.
 */
import { afterEach, describe, expect, test, setSystemTime, setDefaultTimeout } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
import { Store } from "../../src/store/store.ts";
import { startNode } from "./support.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

afterEach(() => void setSystemTime());

const HOUR = 3_600_000;
const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

describe("a step of the wall clock", () => {
  test("a store's items keep their TTL when the wall clock steps forward or back", async () => {
    const s = new Store({ memory: 4 * 1024 * 1024 });
    const k = bytes("k");
    s.set(k, 0, 1, bytes("v"), 0, 1, 500);
    setSystemTime(new Date(Date.now() + HOUR));
    expect(s.get(k)).toBeGreaterThanOrEqual(0); // not ended by the step forward
    setSystemTime(new Date(Date.now() - 2 * HOUR));
    const id = s.get(k);
    expect(id).toBeGreaterThanOrEqual(0);
    expect(s.ttlRemaining(id)).toBeLessThanOrEqual(500);
    await Bun.sleep(600);
    expect(s.get(k)).toBe(-1); // ended on time, though the wall clock is an hour behind
  });

  test("a node answers a Get with the TTL left as set, and ends the item on time, across steps", async () => {
    await using node = startNode({});
    const client = new CacheClient({ host: "127.0.0.1", port: node.port });
    try {
      await client.set("default", "k", "v", 10_000);
      await client.set("default", "short", "v", 300);
      setSystemTime(new Date(Date.now() + HOUR));
      const after = await client.get("default", "k");
      expect(new TextDecoder().decode(after.value)).toBe("v");
      expect(after.ttlRemainingMs).toBeGreaterThan(9_000);
      setSystemTime(new Date(Date.now() - 2 * HOUR));
      const back = await client.get("default", "k");
      expect(back.ttlRemainingMs).toBeLessThanOrEqual(10_000);
      expect(back.ttlRemainingMs).toBeGreaterThan(9_000);
      await Bun.sleep(400);
      await expect(client.get("default", "short")).rejects.toThrow(/not found/i);
    } finally {
      await client.close();
    }
  });
});
