/**
 * RingPurges: after a ring change the items of keys other members own leave the main store; a key
 * another member owned in a ring that came and went while a purge ran is dropped too, since that
 * member may have taken its writes meanwhile (each purge keeps to the ring of its change, which
 * Cluster.ownedHere copies).
 */
import { describe, expect, test } from "bun:test";
import { Cluster, type PeerClient } from "../../src/cluster/cluster.ts";
import { Group } from "../../src/cluster/group.ts";
import { RingPurges, type Owned } from "../../src/cluster/ring-purge.ts";
import { MIB } from "../../src/store/store.ts";

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
