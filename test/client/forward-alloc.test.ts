/**
 * A steady stream of forwardGet calls allocates nothing per call: pending slot from the pool,
 * PeerGet encoded into the reused output buffer, reply framed, decoded and matched by seqid, value
 * handed to the callback as a view, slot returned.
 *
 * Measured with the WeakRef-canary probe (test/support/alloc-probe.ts) over 1M calls per case in a
 * spawned process (forward-alloc-child.ts, which explains the loop). A control that allocates one
 * two-field object per call must be detected; 100 B and 4 KiB values with a canned server reply,
 * and a loop that also runs the server's decoder and ReplyWriter, must run without a collection.
 */
import { expect, test, setDefaultTimeout } from "bun:test";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

interface ProbeResult {
  control: boolean;
  canned100: boolean;
  canned4096: boolean;
  serverCodec: boolean;
  received100: number;
  received4096: number;
  receivedServerCodec: number;
  inFlight100: number;
  inFlight4096: number;
}

test("forwardGet: 1M calls with 100 B and 4 KiB values allocate nothing; the probe detects 32 B/call", async () => {
  const proc = Bun.spawn(["bun", `${import.meta.dir}/forward-alloc-child.ts`], { stdout: "pipe", stderr: "inherit" });
  const text = await new Response(proc.stdout).text();
  expect(await proc.exited).toBe(0);
  const r = JSON.parse(text.trim().split("\n").pop()!) as ProbeResult;
  expect(r.control).toBe(true); // the probe works
  // every call of the measured loops completed through the callback (warm-up 100k + 1M)
  expect([r.received100, r.received4096, r.receivedServerCodec]).toEqual([1_100_000, 1_100_000, 1_100_000]);
  expect([r.inFlight100, r.inFlight4096]).toEqual([1, 1]); // only the call parked to keep the sweep timer on
  expect(r.canned100).toBe(false);
  expect(r.canned4096).toBe(false);
  expect(r.serverCodec).toBe(false);
}, 60_000);
