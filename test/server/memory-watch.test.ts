/**
 * MemoryWatch: a full collection when RSS passes the retained level by more than the headroom,
 * never otherwise; the retained level follows the process up (after a collection) and down (a
 * lower RSS seen). Driven with an injected RSS reading; one test runs the real thing.
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { MemoryWatch } from "../../src/server/memory-watch.ts";
import { Logger } from "../../src/server/log.ts";
import { startNode } from "./support.ts";
import { waitUntil } from "../support/gates.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const MIB = 1024 * 1024;
const quiet = new Logger("silent", false);

/** fake is a process whose RSS the test sets; a collection drops it to `afterCollect`. */
function fake(start: number) {
  const p = { rss: start, afterCollect: start, collections: 0 };
  const watch = new MemoryWatch({
    headroomBytes: 64 * MIB, intervalMs: 1000, logger: quiet,
    rss: () => p.rss,
    collect: () => {
      p.collections++;
      p.rss = p.afterCollect;
    },
  });
  return { p, watch };
}

describe("MemoryWatch", () => {
  test("what the connections held when the level was set is not retained once they let it go", () => {
    // Review: a collection while clients held 250 MB of partial frames set the level there; once
    // they closed, the garbage they left stayed resident (RSS never passed the level again).
    let held = 0;
    const p = { rss: 50 * MIB, collections: 0 };
    const watch = new MemoryWatch({
      headroomBytes: 64 * MIB, intervalMs: 1000, logger: quiet, rss: () => p.rss, heldBytes: () => held,
      collect: () => {
        p.collections++;
        p.rss = 50 * MIB + held; // what is garbage goes
      },
    });
    held = 250 * MIB;
    p.rss = 50 * MIB + 250 * MIB + 100 * MIB; // held, and garbage past the headroom
    expect(watch.check()).toBe(true);
    expect(p.rss).toBe(300 * MIB);
    p.rss += 30 * MIB; // garbage under the headroom: no
    expect(watch.check()).toBe(false);
    held = 0; // the clients closed: their 250 MB are garbage
    expect(watch.check()).toBe(true);
    expect(p.rss).toBe(50 * MIB);
    expect(watch.counters.retainedBytes).toBe(50 * MIB);
    expect(watch.check()).toBe(false);
    expect(p.collections).toBe(2);
    // And held bytes alone never make it collect: 500 MB held more is live, not garbage.
    held = 500 * MIB;
    p.rss = 50 * MIB + 500 * MIB + 60 * MIB;
    expect(watch.check()).toBe(false);
  });

  test("a check that cannot read the memory figures is skipped with one warning, not a crash", async () => {
    // With every file descriptor in use, reading RSS throws ("Failed to get memory usage"): from
    // the timer that was an uncaught exception, and the node exited with every cached value lost.
    const lines: string[] = [];
    let broken = false;
    let reads = 0; // ticks, counted where the watch reads RSS (a fixed sleep may see none on a loaded machine)
    const watch = new MemoryWatch({
      headroomBytes: 64 * MIB, intervalMs: 5, logger: new Logger("info", false, (line) => void lines.push(line)),
      rss: () => {
        reads++;
        if (broken) throw new Error("Failed to get memory usage");
        return 100 * MIB;
      },
      collect: () => {},
    }).start();
    const ticks = async (n: number): Promise<void> => {
      const from = reads;
      await waitUntil(() => reads >= from + n, `${n} ticks`);
    };
    try {
      broken = true;
      await ticks(10); // failing on every one of them: logged once
      expect(lines.filter((l) => l.includes("cannot read memory figures"))).toHaveLength(1);
      broken = false;
      await ticks(5);
      expect(lines.filter((l) => l.includes("reading memory figures again"))).toHaveLength(1);
    } finally {
      watch.stop();
    }
  });

  test("collects only past retained + headroom, then retains what the collection left", () => {
    const { p, watch } = fake(100 * MIB);
    p.rss = 164 * MIB; // exactly at the limit: no
    expect(watch.check()).toBe(false);
    p.rss = 164 * MIB + 1;
    p.afterCollect = 120 * MIB; // the store grew meanwhile: more is retained now
    expect(watch.check()).toBe(true);
    expect([p.collections, watch.counters.retainedBytes, watch.counters.forcedCollections]).toEqual([1, 120 * MIB, 1]);
    p.rss = 180 * MIB; // within 120 + 64: no
    expect(watch.check()).toBe(false);
    p.rss = 185 * MIB;
    expect(watch.check()).toBe(true);
    expect(p.collections).toBe(2);
  });

  test("a store filling up does not make it collect at every check", () => {
    const { p, watch } = fake(50 * MIB);
    // RSS climbs 10 MiB per check to 650 MiB, all retained: a collection at most every ~7 checks.
    for (let rss = 60; rss <= 650; rss += 10) {
      p.rss = rss * MIB;
      p.afterCollect = rss * MIB;
      watch.check();
    }
    expect(p.collections).toBeGreaterThan(0);
    expect(p.collections).toBeLessThanOrEqual(Math.ceil(600 / 64));
  });

  test("the retained level follows RSS down", () => {
    const { p, watch } = fake(300 * MIB);
    p.rss = 200 * MIB; // a store cleared, garbage collected by the runtime itself
    expect(watch.check()).toBe(false);
    expect(watch.counters.retainedBytes).toBe(200 * MIB);
    p.rss = 265 * MIB; // 200 + 64 passed: collect (at 300 + 64 it would not have)
    expect(watch.check()).toBe(true);
  });

  test("a headroom of 0 or less is refused", () => {
    expect(() => new MemoryWatch({ headroomBytes: 0, intervalMs: 1000, logger: quiet })).toThrow(RangeError);
  });

  test("in a real process: 100 MiB of garbage past a 32 MiB headroom is collected and RSS falls", async () => {
    // In a process of its own (memory-watch-child.ts): this one holds other tests' freed memory.
    const proc = Bun.spawn(["bun", `${import.meta.dir}/memory-watch-child.ts`], { stdout: "pipe", stderr: "inherit" });
    const out = await new Response(proc.stdout).text();
    expect(await proc.exited).toBe(0);
    const r = JSON.parse(out.trim()) as { made: number; before: number; collected: boolean; forced: number; retained: number };
    expect(r.made).toBe(100);
    expect(r.collected).toBe(true);
    expect(r.forced).toBe(1);
    expect(r.retained).toBeLessThan(r.before - 50 * MIB);
  });

  test("a node runs a watch with --gc-headroom, none with 0, and reports it in NodeStats figures", async () => {
    {
      await using node = startNode({ gcHeadroomBytes: 48 * MIB });
      expect(node.memoryWatch).toBeDefined();
      const { nodeFigures } = await import("../../src/server/figures.ts");
      const names = nodeFigures(node).map(([n]) => n);
      expect(names).toContain("memory.forcedCollections");
      expect(names).toContain("memory.retainedBytes");
    }
    await using off = startNode({ gcHeadroomBytes: 0 });
    expect(off.memoryWatch).toBeUndefined();
  });
});
