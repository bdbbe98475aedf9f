// Proof that the per-request path allocates nothing: decode a request and encode its reply
// a million times and show that no garbage collection was triggered.
//
// How it is measured: see test/support/alloc-probe.ts (a WeakRef canary that any collection
// during the loop would free; the control proves the probe detects 16 bytes per request). The
// probes run in a spawned process (allocation-child.ts) so the heap is small and the probe
// sensitive whatever ran before in this test process.

import { expect, test, setDefaultTimeout } from "bun:test";
import { METHOD_GET } from "../../src/protocol/request.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

test("Get (framed, buffered, THeader, TTHeader) and Set decode + reply allocate nothing over 1M requests; the probe detects 16 B/request", async () => {
  const proc = Bun.spawn(["bun", `${import.meta.dir}/allocation-child.ts`], { stdout: "pipe", stderr: "inherit" });
  const text = await new Response(proc.stdout).text();
  expect(await proc.exited).toBe(0);
  const r = JSON.parse(text.trim().split("\n").pop()!) as Record<string, unknown>;
  expect(r.control).toBe(true); // the probe works
  for (const transport of ["framed", "buffered", "theader", "ttheader"]) {
    expect([transport, r[`${transport}Method`], r[transport]]).toEqual([transport, METHOD_GET, false]);
  }
  expect(r.set).toBe(false);
}, 120_000);
