/**
 * The cluster soak (bench/soak/cluster-soak.ts) for 30 seconds: a spawned soak process that
 * starts three real node processes on loopback (no mocks), drives them with workers, roamers,
 * readers and churners, restarts one node and pauses another meanwhile, and checks every read
 * against the acknowledged writes. It must pass its own checks (exit 0: no errors outside the
 * fault windows, no read violation during the run or in the final read-back through every node,
 * Stats consistent, clean SIGTERM exits) and its summary must show every client kind at work,
 * both faults done, the mirrors and the read-through group in use. The seed is printed on
 * failure; replay with `bun bench/soak/cluster-soak.ts --seconds 30 --seed N`.
 */
import { expect, test, setDefaultTimeout } from "bun:test";
import { join } from "node:path";
import { testSeed } from "../support/prng.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const ROOT = join(import.meta.dir, "../..");
const KINDS = ["worker", "roam", "read", "churn"];

interface Summary {
  failures: string[];
  violationTraces: { id: string; what: string; owner: number; calls: string[] }[];
  violations: number;
  kinds: Record<string, { ops: number; errors: number }>;
  verdicts: Record<string, Record<string, number>>;
  final: Record<string, Record<string, number>>;
  restart?: { upAt: number; exitCode: number | null; opsAfterByNode: number[]; node: number };
  pause?: { contAt: number };
  nodes: { cluster: Record<string, number>; loads: Record<string, number>; exitCode: number | null }[];
}

test("a 30-second soak of a 3-node cluster with a restart and a pause: every read consistent with the acknowledged writes", async () => {
  const seed = testSeed();
  const proc = Bun.spawn([process.execPath, "bench/soak/cluster-soak.ts", "--seconds", "30", "--seed", String(seed)], {
    cwd: ROOT,
    stdout: "pipe",
    stderr: "pipe",
  });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  const line = out.split("\n").find((l) => l.startsWith("CLUSTER-SOAK-SUMMARY "));
  if (code !== 0 || line === undefined) console.error(`cluster soak (seed ${seed}) exited ${code}\n${out}\n${err}`);
  expect(line).toBeDefined();
  const summary = JSON.parse(line!.slice("CLUSTER-SOAK-SUMMARY ".length)) as Summary;
  // First, so a failed run's assertion names its reasons, the seed to replay it with, and the last
  // calls of the keys read wrong (a CI log keeps only the lines around the failure).
  expect({ seed, failures: summary.failures, violationTraces: summary.violationTraces }).toEqual({ seed, failures: [], violationTraces: [] });
  expect(code).toBe(0);
  expect(summary.violations).toBe(0);
  for (const kind of KINDS) {
    expect([kind, summary.kinds[kind]!.ops > 0]).toEqual([kind, true]);
    expect([kind, summary.kinds[kind]!.errors]).toEqual([kind, 0]);
  }
  // Both faults happened, the restarted node exited cleanly and served again.
  expect(summary.restart?.upAt).toBeGreaterThan(0);
  expect(summary.restart?.exitCode).toBe(0);
  expect(summary.restart!.opsAfterByNode[summary.restart!.node]).toBeGreaterThan(0);
  expect(summary.pause?.contAt).toBeGreaterThan(0);
  // The cluster path was exercised: forwards, mirror hits, invalidations, look-ahead, loads.
  const sum = (k: string): number => summary.nodes.reduce((n, node) => n + (node.cluster[k] ?? 0), 0);
  for (const k of ["forwarded", "mirrorHits", "mirrorFills", "invalidationsReceived", "prefetchesUsed"]) expect([k, sum(k) > 0]).toEqual([k, true]);
  expect(summary.nodes.reduce((n, node) => n + (node.loads.loads ?? 0), 0)).toBeGreaterThan(0);
  for (const node of summary.nodes) expect(node.exitCode).toBe(0);
  // Reads were judged, during the run and in the final read-back, in every group.
  for (const group of ["soak", "keep", "ld"]) {
    expect([group, (summary.verdicts[group]!.hit ?? 0) > 0]).toEqual([group, true]);
    expect([group, (summary.final[group]!.hit ?? 0) > 0]).toEqual([group, true]);
  }
  expect(summary.verdicts.ld!.loaded).toBeGreaterThan(0);
}, 120_000);
