/**
 * What a member list costs the node's thread: the time and memory of building the ring for 16,
 * 128 and 1,024 members at the default vnodes (1,024 at 10,000 vnodes is also the largest a node
 * takes: MAX_MEMBERS and --vnodes' bound), of one member joining and leaving a 1,024-member ring
 * (`Cluster.setMembers` → `Ring.setMembers`), of a node's first list (itself, then 1,024
 * members: `start`), and of the copy each change makes for the purge
 * (`Ring.clone`, Cluster.ownedHere). Then the lookup on the request path (`Ring.owner`), in mitata.
 *
 * Each case runs in a child process of its own. Memory is the peak RSS during the first run
 * (VmHWM, reset through /proc/self/clear_refs, Linux) minus the RSS before it: typed arrays live
 * outside the JS heap, and Bun's process.memoryUsage().arrayBuffers does not count them. Times are
 * the best of the runs.
 *
 *   bun bench/ring-build.ts            # all
 *   bun bench/ring-build.ts build      # builds only
 *   bun bench/ring-build.ts lookup     # lookups only
 */
import { bench, do_not_optimize, run, summary } from "mitata";
import { readFileSync, writeFileSync } from "node:fs";
import { DEFAULT_VNODES, Ring } from "../src/cluster/ring.ts";

const MB = 2 ** 20;
/** peakRss is the process's peak RSS in bytes since the last resetPeak (VmHWM). */
const peakRss = (): number => Number(/VmHWM:\s+(\d+)/.exec(readFileSync("/proc/self/status", "utf8"))![1]) * 1024;
const resetPeak = (): void => writeFileSync("/proc/self/clear_refs", "5");

const ids = (n: number): string[] => Array.from({ length: n }, (_, i) => `10.${(i >> 8) & 255}.${i & 255}.${1 + (i % 7)}:${8001 + (i % 3)}`);

/** child: one case in this process; prints `{ ms, peakMB }`. */
async function child(what: string, n: number): Promise<void> {
  const members = ids(n);
  let ring = new Ring();
  if (what !== "build" && what !== "start") ring.setMembers(members);
  Bun.gc(true);
  const before = process.memoryUsage().rss;
  resetPeak();
  let peak = 0;
  const runs = what === "build" || what === "start" ? (n <= 128 ? 5 : 2) : 5;
  let best = Infinity;
  for (let i = 0; i < runs; i++) {
    if (i === 1 && peak === 0) peak = peakRss();
    const t = performance.now();
    if (what === "build") {
      ring = new Ring();
      ring.setMembers(members);
    } else if (what === "start") {
      // As a node starts (Cluster): itself in the ring, then the list.
      ring = new Ring();
      ring.add(members[0]!);
      const t2 = performance.now();
      ring.setMembers(members);
      best = Math.min(best, performance.now() - t2);
      continue;
    } else if (what === "join" || what === "leave") {
      ring.setMembers(what === "join" ? [...members, "10.99.99.99:9000"] : members.slice(1));
      best = Math.min(best, performance.now() - t);
      if (i === 0) peak = peakRss(); // not the list put back
      ring.setMembers(members);
      continue;
    } else if (what === "clone") {
      do_not_optimize(ring.clone());
    }
    best = Math.min(best, performance.now() - t);
  }
  console.log(JSON.stringify({ ms: best, peakMB: (peak - before) / MB }));
}

async function builds(): Promise<void> {
  console.log(`vnodes ${DEFAULT_VNODES}; time: best run; memory: peak RSS growth during the first run`);
  const cases: [string, number][] = [["build", 16], ["build", 128], ["build", 1024], ["start", 1024], ["join", 1024], ["leave", 1024], ["clone", 1024]];
  for (const [what, n] of cases) {
    const p = Bun.spawnSync(["bun", import.meta.path, "--child", what, String(n)], { stderr: "inherit" });
    const r = JSON.parse(p.stdout.toString()) as { ms: number; peakMB: number };
    console.log(`${what.padEnd(6)} ${String(n).padStart(5)} members: ${r.ms.toFixed(1).padStart(7)} ms, peak +${r.peakMB.toFixed(1)} MB`);
  }
}

async function lookups(): Promise<void> {
  const keys = Array.from({ length: 1024 }, (_, i) => new TextEncoder().encode(`user:${i * 7919}:profile`));
  summary(() => {
    for (const n of [3, 16, 128, 1024]) {
      const r = new Ring();
      r.setMembers(ids(n));
      bench(`owner, ${n} members`, function* () {
        let i = 0;
        yield () => do_not_optimize(r.owner(keys[i++ & 1023]!));
      });
    }
  });
  await run({ format: process.env.BENCH_FORMAT === "markdown" ? "markdown" : "mitata" });
}

const args = process.argv.slice(2);
if (args[0] === "--child") await child(args[1]!, Number(args[2]));
else {
  if (args[0] !== "lookup") await builds();
  if (args[0] !== "build") await lookups();
}
