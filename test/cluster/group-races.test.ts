/**
 * Review: a Set (or a Delete→Set) that lands while a load of the same key is in flight is
 * overwritten when the load settles, by the loaded value or by a negative entry.
 */
import { describe, expect, test } from "bun:test";
import { Group } from "../../src/cluster/group.ts";
import { MIB } from "../../src/store/store.ts";

const text = (b: Uint8Array): string => new TextDecoder().decode(b);

function gated(result: string | null) {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const loader = async (_key: string) => {
    await gate;
    return result;
  };
  return { loader, release };
}

describe("Group set during an in-flight load", () => {
  test("an explicit Set made while the load runs survives the load (always admission)", async () => {
    const { loader, release } = gated("stale-from-loader");
    const g = new Group({ name: "g", memory: 4 * MIB, admission: "always", loader });
    const inFlight = g.get("k");
    await Bun.sleep(0);
    g.set("k", "fresh-from-set");
    release();
    await inFlight;
    expect(text(await g.get("k"))).toBe("fresh-from-set");
  });

  test("an explicit Set made while the load runs survives the load (LRU-K: fill replaces a live key)", async () => {
    const { loader, release } = gated("stale-from-loader");
    const g = new Group({ name: "g", memory: 4 * MIB, loader });
    const inFlight = g.get("k");
    await Bun.sleep(0);
    g.set("k", "fresh-from-set");
    release();
    await inFlight;
    expect(text(await g.get("k"))).toBe("fresh-from-set");
  });

  test("an explicit Set made while a not-found load runs is not replaced by a negative entry", async () => {
    const { loader, release } = gated(null);
    const g = new Group({ name: "g", memory: 4 * MIB, negativeTtlMs: 60_000, loader });
    const inFlight = g.get("k").catch(() => undefined);
    await Bun.sleep(0);
    g.set("k", "fresh-from-set");
    release();
    await inFlight;
    expect(text(await g.get("k"))).toBe("fresh-from-set");
  });
});
