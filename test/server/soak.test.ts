/**
 * The soak (bench/soak/soak.ts) for 30 seconds, as CI runs it: a spawned soak process that starts
 * its own node process. It must pass its own checks (exit 0: no errors on well-behaved clients,
 * every read consistent with the acknowledged writes, RSS flat and within its bound, clean
 * SIGTERM) and its summary must show every client kind at work and its read-through group loading. The seed is printed on failure;
 * replay with `bun run soak -- --seconds 30 --seed N`.
 */
import { expect, test, setDefaultTimeout } from "bun:test";
import { join } from "node:path";
import { testSeed } from "../support/prng.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const ROOT = join(import.meta.dir, "../..");
const KINDS = ["worker", "churn", "garbage", "oversized", "slowloris", "never-reader"];

interface Summary {
  failures: string[];
  kinds: Record<string, { ops: number; errors: number }>;
  verdicts: Record<string, Record<string, number>>;
  loads: Record<string, { loads: number }>;
}

test("a 30-second soak passes its checks with every client kind making progress", async () => {
  const seed = testSeed();
  const proc = Bun.spawn([process.execPath, "bench/soak/soak.ts", "--seconds", "30", "--seed", String(seed)], {
    cwd: ROOT,
    stdout: "pipe",
    stderr: "pipe",
  });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  const line = out.split("\n").find((l) => l.startsWith("SOAK-SUMMARY "));
  if (code !== 0 || line === undefined) console.error(`soak (seed ${seed}) exited ${code}\n${out}\n${err}`);
  expect(line).toBeDefined();
  const summary = JSON.parse(line!.slice("SOAK-SUMMARY ".length)) as Summary;
  expect(summary.failures).toEqual([]); // first, so a failed run's assertion names its reasons
  expect(code).toBe(0);
  for (const kind of KINDS) expect([kind, summary.kinds[kind]!.ops > 0]).toEqual([kind, true]);
  expect(summary.kinds.worker!.errors + summary.kinds.churn!.errors).toBe(0);
  // The read-through group loaded, and reads were answered from its loader.
  expect(summary.loads.ld!.loads).toBeGreaterThan(0);
  expect(summary.verdicts.ld!.loaded).toBeGreaterThan(0);
}, 120_000);
