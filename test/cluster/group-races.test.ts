/**
 * Review: a Set (or a Delete→Set) that lands while a load of the same key is in flight is
 * overwritten when the load settles, by the loaded value or by a negative entry.
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { Group } from "../../src/cluster/group.ts";
import { MIB } from "../../src/store/store.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

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

describe("Group delete or clear during an in-flight load", () => {
  /** versioned: a loader whose n-th call waits for release(n) and returns `v<n>` (or null when `found` is false). */
  function versioned(found = true) {
    const gates: (() => void)[] = [];
    const waits: Promise<void>[] = [];
    let calls = 0;
    const loader = async (_key: string) => {
      const n = ++calls;
      await waits[n - 1];
      return found ? `v${n}` : null;
    };
    for (let i = 0; i < 4; i++) waits.push(new Promise<void>((r) => gates.push(r)));
    return { loader, release: (n: number) => gates[n - 1]!(), calls: () => calls };
  }

  /** loadDeleteLoad starts a load of "k", deletes "k" while it runs, and starts another Get of it. */
  async function loadDeleteLoad(v: ReturnType<typeof versioned>) {
    const g = new Group({ name: "g", memory: 4 * MIB, admission: "always", loader: v.loader });
    const before = g.get("k");
    await Bun.sleep(0);
    g.delete("k"); // the row changed: what the running load read is old
    const after = g.get("k");
    await Bun.sleep(0);
    return { g, before, after };
  }

  test("a Delete while the loader runs: the loaded value answers the callers before it, is not cached, and later callers load anew", async () => {
    const v = versioned();
    const { g, before, after } = await loadDeleteLoad(v);
    expect(v.calls()).toBe(2); // the caller after the Delete did not join the old load
    v.release(1);
    expect(text(await before)).toBe("v1");
    v.release(2);
    expect(text(await after)).toBe("v2");
    expect(text(await g.get("k"))).toBe("v2"); // v2 is cached, v1 never was
    expect(v.calls()).toBe(2);
  });

  test("a late first load cannot overwrite the newer one's value", async () => {
    const v = versioned();
    const { g, before, after } = await loadDeleteLoad(v);
    v.release(2);
    expect(text(await after)).toBe("v2");
    v.release(1); // the old load answers last: the value cached meanwhile is newer and wins
    expect(text(await before)).toBe("v2");
    expect(text(await g.get("k"))).toBe("v2");
    expect(v.calls()).toBe(2);
  });

  test("a load replaced as stuck is superseded: when it answers after a newer load and a Delete, it is not cached", async () => {
    const v = versioned();
    const g = new Group({ name: "g", memory: 4 * MIB, admission: "always", loader: v.loader, loadTimeoutMs: 20 });
    const stuck = g.get("k").catch((e: unknown) => e); // times out at 20 ms; its flight is replaced after 80 ms
    await Bun.sleep(120);
    const fresh = g.get("k");
    await Bun.sleep(0);
    expect(v.calls()).toBe(2);
    v.release(2);
    expect(text(await fresh)).toBe("v2");
    g.delete("k");
    v.release(1); // the stuck load answers at last, with what it read before all of this
    await stuck;
    await Bun.sleep(0);
    const after = g.get("k");
    await Bun.sleep(0);
    expect(v.calls()).toBe(3); // nothing was cached: a new load
    v.release(3);
    expect(text(await after)).toBe("v3");
  });

  test("a Clear while the loader runs: nothing it loads lands in the cleared group, a \"not found\" neither", async () => {
    const v = versioned();
    const g = new Group({ name: "g", memory: 4 * MIB, admission: "always", loader: v.loader });
    const before = g.get("k");
    await Bun.sleep(0);
    g.clear();
    v.release(1);
    expect(text(await before)).toBe("v1");
    const again = g.get("k");
    await Bun.sleep(0);
    expect(v.calls()).toBe(2);
    v.release(2);
    expect(text(await again)).toBe("v2");

    const n = versioned(false);
    const neg = new Group({ name: "n", memory: 4 * MIB, admission: "always", negativeTtlMs: 60_000, loader: n.loader });
    const miss = neg.get("k").catch((e: unknown) => e);
    await Bun.sleep(0);
    neg.delete("k");
    n.release(1);
    await miss;
    const next = neg.get("k").catch((e: unknown) => e);
    await Bun.sleep(0);
    expect(n.calls()).toBe(2); // no negative entry was cached for the old load
    n.release(2);
    await next;
  });
});
