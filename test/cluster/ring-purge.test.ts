/**
 * RingPurges: after a ring change the items of keys other members own leave the main store; a key
 * another member owned in a ring that came and went while a purge ran is dropped too, since that
 * member may have taken its writes meanwhile (each purge keeps to the ring of its change, which
 * Cluster.ownedHere copies).
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { Cluster, type PeerClient } from "../../src/cluster/cluster.ts";
import { Group } from "../../src/cluster/group.ts";
import { RingPurges, type Owned } from "../../src/cluster/ring-purge.ts";
import { MIB } from "../../src/store/store.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import { LogSink, RawSocket, getCall } from "../server/support.ts";
import { field, outcome, readReplies } from "../server/wire-reader.ts";
import { T, concat } from "../protocol/wire-builder.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const enc = new TextEncoder();
const index = (key: Uint8Array, off: number, len: number): number => Number(new TextDecoder().decode(key.subarray(off + 1, off + len)));

function filled(n: number): Group {
  const g = new Group({ name: "g", memory: 16 * MIB });
  for (let i = 0; i < n; i++) g.set(`k${i}`, `v${i}`);
  return g;
}

const quiet = { info() {} };

describe("RingPurges", () => {
  test("a change drops the keys the new ring gives to others, and nothing else", async () => {
    const g = filled(3000);
    const thirds: Owned = (key, off, len) => index(key, off, len) % 3 !== 0;
    await new RingPurges(quiet).changed(thirds, [g], 500);
    expect(g.store.size).toBe(2000);
    expect(g.store.has(enc.encode("k3"))).toBe(false);
    expect(g.store.has(enc.encode("k4"))).toBe(true);
  });

  test("a member that comes and goes during a purge: its keys are dropped although the last ring gives them back", async () => {
    const g = filled(20_000);
    const purges = new RingPurges(quiet);
    const withC: Owned = (key, off, len) => index(key, off, len) % 2 === 0; // C owns the odd keys
    const alone: Owned = () => true; // C left again: this node owns everything
    const first = purges.changed(withC, [g], 1000);
    const second = purges.changed(alone, [g], 1000); // before the first purge has gone far
    await Promise.all([first, second]);
    expect(g.store.size).toBe(10_000);
    expect(g.store.has(enc.encode("k19999"))).toBe(false); // the last slice's odd key, reached after C had left
    g.set("k1", "again");
    await purges.changed(alone, [g], 1000);
    expect(g.store.has(enc.encode("k1"))).toBe(true);
  });

  test("while that purge runs, an item it has not reached yet is not served (review: the key came back and its old value was)", async () => {
    const g = filled(20_000);
    const purges = new RingPurges(quiet);
    const withC: Owned = (key, off, len) => index(key, off, len) % 2 === 0; // C owns the odd keys
    const first = purges.changed(withC, [g], 1000);
    const second = purges.changed(() => true, [g], 1000); // C left again before the first purge got far
    const last = enc.encode("k19999"); // odd, in the last slice: C may have taken a write of it
    expect(g.store.has(last)).toBe(true); // not reached yet
    expect(g.lookup(last, 0, last.length)).toBe(-1); // a read drops it instead of serving it
    expect(g.store.has(last)).toBe(false);
    const kept = enc.encode("k19998"); // even: owned here under every ring
    expect(g.lookup(kept, 0, kept.length)).toBeGreaterThanOrEqual(0);
    await expect(g.get("k19997")).rejects.toMatchObject({ code: 1 }); // the embedded API too (no loader: not found)
    await Promise.all([first, second]);
    expect(g.purging.length).toBe(0);
  });

  test("a key written during that purge into a slot it has passed is served (review: dropped on read, though the purge keeps it)", async () => {
    const g = filled(20_000);
    const purges = new RingPurges(quiet);
    const first = purges.changed((key, off, len) => index(key, off, len) % 2 === 0, [g], 1000);
    const second = purges.changed(() => true, [g], 1000); // C left again
    for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r)); // the first purge is past ids 0..2999
    const fresh = enc.encode("k30001"); // odd: C's under the first purge's ring, this node's now
    g.set(fresh, "fresh");
    const id = g.store.get(fresh, 0, fresh.length);
    expect(id).toBeLessThan(g.purging[0]!.next); // in a slot the purge freed and passed
    expect(new TextDecoder().decode(await g.get(fresh))).toBe("fresh");
    await Promise.all([first, second]);
    expect(g.store.has(fresh)).toBe(true); // the purge kept it too
  });

  test("over the wire too: a Get of such an item, pipelined framed (the runs' fast path), misses", async () => {
    await using node = CacheNode.start({ port: 0, logLevel: "silent", groups: [{ name: "g", ttlMs: 0 }] }, { logger: new LogSink().logger });
    const g = node.groups.byName("g")!;
    for (let i = 0; i < 20_000; i++) g.set(`k${i}`, `v${i}`);
    const raw = await RawSocket.connect(node.port);
    const purge = g.dropNotOwned((key, off, len) => index(key, off, len) % 2 === 0, 100);
    expect(g.store.has(enc.encode("k19999"))).toBe(true); // not reached for a while: 200 slices
    raw.write(getCall(1, "k0", "g")); // the connection's first call (its transport is found on the general path)
    await raw.waitFor(() => raw.frames().length === 1, "the first reply");
    raw.write(concat(getCall(2, "k19999", "g"), getCall(3, "k19998", "g"))); // a run, in the generated clients' layout
    await raw.waitFor(() => raw.frames().length === 3, "every reply");
    const [, odd, even] = readReplies(raw.received, "framed").replies.map(outcome);
    expect(odd).toMatchObject({ kind: "cacheError", code: 1 });
    expect(even!.kind === "success" && new TextDecoder().decode(field(even!.value, 1, T.STRING) as Uint8Array)).toBe("v19998");
    raw.close();
    await purge;
  });

  test("a shrink of the item table while a purge runs moves no item past it (review: an item given an id the purge had passed escaped it, and was served)", async () => {
    const g = filled(40_000);
    for (let i = 0; i < 40_000; i++) if (i % 5 !== 0) g.delete(`k${i}`); // a fifth left: the table is mostly free
    let done = false;
    const purge = g.dropNotOwned((key, off, len) => index(key, off, len) % 2 === 0, 1000).then((n) => {
      done = true;
      return n;
    });
    let ticks = 0;
    while (!done) {
      g.store.expire(g.store.clock(), 2000); // the node's expiry timer: what it leaves of its budget shrinks the table
      ticks++;
      await new Promise((r) => setImmediate(r));
    }
    expect(ticks).toBeGreaterThan(10);
    expect(await purge).toBe(4000);
    for (let i = 0; i < 40_000; i += 5) expect(g.store.has(enc.encode(`k${i}`))).toBe(i % 2 === 0);
    // After the purge the shrink goes on.
    for (let t = 0; t < 100 && g.store.stats().tableShrinks === 0; t++) g.store.expire(g.store.clock(), 2000);
    expect(g.store.stats().tableShrinks).toBe(1);
    for (let i = 0; i < 40_000; i += 10) expect(g.store.has(enc.encode(`k${i}`))).toBe(true);
    g.store.checkInvariants();
  });

  test("Cluster.ownedHere is a copy of the ring: later member changes do not move it", () => {
    const cluster = new Cluster({ self: "me:1", connect: () => ({ close: async () => {} }) as unknown as PeerClient, logger: { info() {}, warn() {} } });
    cluster.setMembers(["me:1", "c:2"]);
    const withC = cluster.ownedHere();
    cluster.setMembers(["me:1"]);
    const keys = Array.from({ length: 200 }, (_, i) => enc.encode(`k${i}`));
    expect(keys.filter((k) => !withC(k, 0, k.length)).length).toBeGreaterThan(50); // still C's share
    expect(keys.every((k) => cluster.ownedHere()(k, 0, k.length))).toBe(true);
  });
});
