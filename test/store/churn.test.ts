import { expect, test, setDefaultTimeout } from "bun:test";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

// The bound: after warm-up the store holds no growing state, so its retained JS heap must not
// grow. 512 KiB leaves room for JIT code, inline caches and the runtime's own bookkeeping over one
// million operations (measured noise here: a few KiB); any per-operation retention (even 1 byte
// per op) would show up as ~1 MB and fail.
const HEAP_GROWTH_BOUND = 512 * 1024;

test("1M mixed operations over 2x capacity leave the JS heap flat (spawned process)", async () => {
  const proc = Bun.spawn(["bun", `${import.meta.dir}/churn-child.ts`, "1000000"], { stdout: "pipe", stderr: "inherit" });
  const text = await new Response(proc.stdout).text();
  expect(await proc.exited).toBe(0);
  const r = JSON.parse(text.trim().split("\n").pop()!) as { before: number; after: number; evictions: number; items: number };
  expect(r.evictions).toBeGreaterThan(0); // the workload really runs over capacity
  expect(r.items).toBeGreaterThan(10_000);
  expect(r.after - r.before).toBeLessThan(HEAP_GROWTH_BOUND);
}, 120_000);
