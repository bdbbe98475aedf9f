/**
 * Read leases when an invalidation fails or a member comes and goes (src/cluster/leases.ts,
 * WriteWaits.awaitAnswers): stub peers, no sockets. A member whose connection introduced itself again
 * (a reconnect) may still hold the lease given it before; a write whose invalidation failed is
 * acknowledged by its longest wait at the latest; a member listed again gets no lease until it
 * dropped its mirrors (writes while it was out of the list did not tell it).
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { Cluster, type PeerClient } from "../../src/cluster/cluster.ts";
import type { PingResult } from "../../src/client/results.ts";
import { CacheError, ERROR_CODE } from "../../src/protocol/errors.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

/**
 * stubPeer fails invalidations after `failMs` (undefined: answers at once; the first `failing`
 * only, then answers), and pings as a node that vouches.
 */
function stubPeer(failMs: number | undefined, failing = Infinity): PeerClient {
  let calls = 0;
  return {
    isDown: false,
    invalidate: () => new Promise<number>((resolve, reject) => {
      if (failMs === undefined || ++calls > failing) resolve(0);
      else setTimeout(() => reject(new CacheError(ERROR_CODE.PEER_UNAVAILABLE, "connection lost")), failMs);
    }),
    close: async () => {},
    ping: async (): Promise<PingResult> => ({ nodeId: "o:1", uptimeMs: 1, leaseMs: 500 }),
  } as unknown as PeerClient;
}

const quiet = { info() {}, warn() {} };
const group = { name: "g", nameBytes: new TextEncoder().encode("g") };
const key = new TextEncoder().encode("k");

/** owner: this node o:1 and member m:1 (peer timeout 2 s: waits of 1 s at most, leases of 500 ms), m:1 may hold `key`. */
function owner(failMs: number | undefined, failing = Infinity) {
  const cluster = new Cluster({ self: "o:1", connect: () => stubPeer(failMs, failing), logger: quiet, peerTimeoutMs: 2000, mirrorTtlMs: 10_000 });
  cluster.setMembers(["o:1", "m:1"]);
  cluster.handOuts.confirm("m:1");
  cluster.handOuts.note(group.nameBytes, key, 0, key.length, "m:1", 10_000);
  return { cluster, write: () => cluster.invalidate(group, [key]) };
}

/** within settles with how long `p` took, or with Infinity when it has not settled after `ms`. */
async function within(p: Promise<void> | undefined, ms: number): Promise<number> {
  const t0 = performance.now();
  const timeout = new Promise<number>((resolve) => setTimeout(() => resolve(Infinity), ms));
  return Promise.race([(p ?? Promise.resolve()).then(() => performance.now() - t0), timeout]);
}

describe("a failed invalidation of a member that holds a lease", () => {
  test("its connection introduces itself again while the write waits for its lease's end: acknowledged by the longest wait (1 s), not never", async () => {
    const { cluster, write } = owner(10);
    expect(cluster.pinged("m:1", false, true)).toBe(500);
    const acked = write();
    await Bun.sleep(50); // (failed at 10 ms: waits for the lease's end, ~500 ms)
    cluster.pinged("m:1", true, false); // a new connection's intro PeerPing (a reconnect)
    const waited = await within(acked, 1500);
    expect(waited).toBeLessThan(1500);
    await cluster.close();
  });

  test("it dropped its mirrors (the drop ask answered) while the write waits, and is vouched for again: acknowledged by the longest wait (1 s), not never", async () => {
    const { cluster, write } = owner(10, 1);
    expect(cluster.pinged("m:1", false, true)).toBe(500);
    const acked = write();
    await Bun.sleep(50); // (failed at 10 ms: owed a drop)
    cluster.askDrops(["g"]);
    await Bun.sleep(5);
    expect(cluster.owedMembers).toEqual([]);
    // Its renewals, a quarter lease apart: each lease moves the write's end, up to the longest wait.
    const renewals = setInterval(() => cluster.pinged("m:1", false, true), 125);
    const waited = await within(acked, 1500);
    clearInterval(renewals);
    expect(waited).toBeLessThan(1500);
    await cluster.close();
  });

  test("its connection introduced itself again just before the write: the write still waits for the lease given before (500 ms)", async () => {
    const { cluster, write } = owner(10);
    expect(cluster.pinged("m:1", false, true)).toBe(500); // m:1 holds a lease until ~500 ms from now
    cluster.pinged("m:1", true, false); // a reconnect's intro PeerPing; its next lease ask is a quarter lease away
    const waited = await within(write(), 1500);
    expect(waited).toBeGreaterThanOrEqual(490);
    expect(waited).toBeLessThan(1500);
    await cluster.close();
  });
});

describe("a member removed from the list and listed again", () => {
  test("gets no lease until it has dropped its mirrors: writes while it was out of the list did not tell it", async () => {
    const { cluster } = owner(undefined);
    expect(cluster.pinged("m:1", false, true)).toBe(500);
    cluster.setMembers(["o:1"]); // (writes now tell m:1 nothing)
    cluster.setMembers(["o:1", "m:1"]);
    expect(cluster.pinged("m:1", false, true)).toBe(0);
    cluster.askDrops(["g"]);
    await Bun.sleep(5);
    expect(cluster.pinged("m:1", false, true)).toBe(500);
    await cluster.close();
  });
});
