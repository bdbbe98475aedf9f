/**
 * Measures the memory of the largest ring a node takes (1,024 members at the default 10,000
 * vnodes) in a process of its own (spawned by ring-build.test.ts), so the figures are this
 * ring's: peak RSS growth (VmHWM, reset through /proc/self/clear_refs; Linux) while it is built,
 * while Cluster.ownedHere's copy of it is made, and while a node's first list is applied (its
 * ring holds itself, then the list). Prints one JSON line, in MiB.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { Ring } from "../../src/cluster/ring.ts";

const MB = 2 ** 20;
const peakRss = (): number => Number(/VmHWM:\s+(\d+)/.exec(readFileSync("/proc/self/status", "utf8"))![1]) * 1024;
const resetPeak = (): void => writeFileSync("/proc/self/clear_refs", "5");
const ids = Array.from({ length: 1024 }, (_, i) => `10.${(i >> 8) & 255}.${i & 255}.${1 + (i % 7)}:${8001 + (i % 3)}`);

function grown(f: () => unknown): { mb: number; kept: unknown } {
  Bun.gc(true);
  const before = process.memoryUsage().rss;
  resetPeak();
  const kept = f();
  return { mb: (peakRss() - before) / MB, kept };
}

const build = grown(() => {
  const r = new Ring();
  r.setMembers(ids);
  return r;
});
const ring = build.kept as Ring;
const clone = grown(() => ring.clone());
const started = new Ring();
started.add(ids[0]!);
const start = grown(() => started.setMembers(ids));
console.log(JSON.stringify({ build: build.mb, clone: clone.mb, start: start.mb, size: ring.size + (clone.kept as Ring).size + started.size }));
