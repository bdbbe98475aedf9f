/**
 * The Get hit path allocates nothing: frame reader → decoder → group lookup by name bytes → store
 * probe by key bytes → value copied from the slab into the output buffer → reply patched.
 *
 * Measured with the WeakRef-canary probe (test/support/alloc-probe.ts) over 2M requests per case,
 * in a spawned process (hot-path-child.ts) so the heap is small and the probe sensitive. A control
 * that allocates one two-field object (~32 bytes) per request must be detected; the Get hit with
 * 100 B and 4 KiB values and a Set overwrite must run 2M requests without any collection.
 */
import { expect, test, setDefaultTimeout } from "bun:test";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

interface ProbeResult {
  control: boolean;
  reply100: { type: number; length: number };
  reply4096: { type: number; length: number };
  get100: boolean;
  get4096: boolean;
  misses100: number;
  misses4096: number;
  set: boolean;
  warmListed: number;
  warm: boolean;
  runServed: number;
  run: boolean;
  runAllHits: boolean;
  bufferedRunServed: number;
  bufferedRun: boolean;
  bufferedRunAllHits: boolean;
  setRunServed: number;
  setRun: boolean;
  setRunAll: boolean;
  latency: boolean;
  missRunServed: number;
  missRun: boolean;
  missRunAll: boolean;
}

test("hot path: the Get hit (100 B, 4 KiB), Set overwrite, batch warm-up, runs of Get hits (framed and buffered), Get misses and Set overwrites, and latency recording allocate nothing; the probe detects 32 B/request", async () => {
  const proc = Bun.spawn(["bun", `${import.meta.dir}/hot-path-child.ts`], { stdout: "pipe", stderr: "inherit" });
  const text = await new Response(proc.stdout).text();
  expect(await proc.exited).toBe(0);
  const r = JSON.parse(text.trim().split("\n").pop()!) as ProbeResult;
  expect(r.control).toBe(true); // the probe works
  // The measured requests really are hits: a REPLY carrying the value, and no misses.
  expect(r.reply100.type).toBe(2);
  expect(r.reply100.length).toBeGreaterThan(100);
  expect(r.reply4096.length).toBeGreaterThan(4096);
  expect([r.misses100, r.misses4096]).toEqual([0, 0]);
  expect(r.get100).toBe(false);
  expect(r.get4096).toBe(false);
  expect(r.set).toBe(false);
  // The warm-up of a pipelined chunk (peekCalls + warmKeys over 16 Gets) allocates nothing.
  expect(r.warmListed).toBe(16);
  expect(r.warm).toBe(false);
  // A run of pipelined hits served straight from the chunk (call-runs.ts): 15 of the 16 Gets of
  // the first chunk (its first request fixed the transport), then all 16 of every chunk, all hits.
  expect(r.runServed).toBe(15);
  expect(r.runAllHits).toBe(true);
  expect(r.run).toBe(false);
  // The same on the buffered transport.
  expect(r.bufferedRunServed).toBe(15);
  expect(r.bufferedRunAllHits).toBe(true);
  expect(r.bufferedRun).toBe(false);
  // A run of Sets replacing a value in place, the same way.
  expect(r.setRunServed).toBe(15);
  expect(r.setRunAll).toBe(true);
  expect(r.setRun).toBe(false);
  // A run of Get misses answered NOT_FOUND, the same way.
  expect(r.missRunServed).toBe(15);
  expect(r.missRunAll).toBe(true);
  expect(r.missRun).toBe(false);
  // Recording requests in the latency histogram (record, recordRun, recordError, recordProtocolError).
  expect(r.latency).toBe(false);
}, 120_000);
