/**
 * The bound on loads under way (load-bound.ts): a group, or a node's groups together, start no
 * more loader calls at once than it allows; a miss past it is OVERLOADED at once, a caller of a
 * key under way joins its load whatever the bound, and a place frees when a load settles (not
 * when its callers time out). Keys chosen to share a string hash make each entry of the Maps of
 * loads under way cost a comparison (test/server/key-floods.test.ts floods a node with them).
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { Group } from "../../src/cluster/group.ts";
import { DEFAULT_MAX_LOADS, LoadBound } from "../../src/cluster/load-bound.ts";
import { CacheError, ERROR_CODE } from "../../src/protocol/errors.ts";
import { MIB } from "../../src/store/store.ts";
import { GatedLoader } from "../support/gates.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const enc = new TextEncoder();

/** loadOf starts a load of `key` in `g` and settles to its value's text or its error code. */
function loadOf(g: Group, key: string): Promise<string | number> {
  const k = enc.encode(key);
  return g.load(k, 0, k.length).then((l) => new TextDecoder().decode(l.value), (e: unknown) => (e instanceof CacheError ? e.code : -1));
}

describe("LoadBound", () => {
  test("past the bound a new key is OVERLOADED; a key under way is joined; a settled load frees its place", async () => {
    const loader = new GatedLoader();
    const g = new Group({ name: "g", memory: 4 * MIB, admission: "always", loader: loader.load, loads: new LoadBound(3) });
    const first = ["a", "b", "c"].map((k) => loadOf(g, k));
    expect(await loadOf(g, "d")).toBe(ERROR_CODE.OVERLOADED);
    const joined = loadOf(g, "a");
    expect(g.loads.running).toBe(3);
    expect(g.counters.loadsRefused).toBe(1);
    loader.open();
    expect(await Promise.all([...first, joined])).toEqual(["loaded a #1", "loaded b #1", "loaded c #1", "loaded a #1"]);
    expect(g.loads.running).toBe(0);
    expect(await loadOf(g, "d")).toBe("loaded d #1");
    expect([...loader.calls.keys()]).toEqual(["a", "b", "c", "d"]);
  });

  test("a load keeps its place after its callers timed out, until the loader answers", async () => {
    const loader = new GatedLoader();
    const g = new Group({ name: "g", memory: 4 * MIB, loader: loader.load, loadTimeoutMs: 1, loads: new LoadBound(1) });
    expect(await loadOf(g, "slow")).toBe(ERROR_CODE.LOAD_FAILED);
    expect(await loadOf(g, "other")).toBe(ERROR_CODE.OVERLOADED);
    loader.open();
    await Bun.sleep(0);
    expect(g.loads.running).toBe(0);
    expect(loader.calls.has("other")).toBe(false);
  });

  test("groups that share a bound share its places", async () => {
    const loader = new GatedLoader();
    const loads = new LoadBound(2);
    const [g1, g2] = ["one", "two"].map((name) => new Group({ name, memory: 4 * MIB, loader: loader.load, loads }));
    const started = [loadOf(g1!, "x"), loadOf(g2!, "y")];
    expect(await loadOf(g2!, "z")).toBe(ERROR_CODE.OVERLOADED);
    expect(g2!.counters.loadsRefused).toBe(1);
    loader.open();
    await Promise.all(started);
    expect(loads.running).toBe(0);
  });

  test(`a group made alone runs at most DEFAULT_MAX_LOADS (${DEFAULT_MAX_LOADS}) loads at once`, async () => {
    const loader = new GatedLoader();
    const g = new Group({ name: "g", memory: 16 * MIB, loader: loader.load });
    const extra = 100;
    const all = Array.from({ length: DEFAULT_MAX_LOADS + extra }, (_, i) => loadOf(g, `k${i}`));
    await Bun.sleep(0);
    expect(loader.total).toBe(DEFAULT_MAX_LOADS);
    loader.open();
    const outcomes = await Promise.all(all);
    expect(outcomes.filter((o) => o === ERROR_CODE.OVERLOADED).length).toBe(extra);
    expect(g.counters.loadsRefused).toBe(extra);
  });
});
