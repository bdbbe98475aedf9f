/**
 * Runs the Ring.owner allocation probes in a process of their own (spawned by ring.test.ts): in
 * the shared test process the probe's control was seen to go blind (no collection during 2M
 * allocating calls) depending on which test files ran before, and a probe whose control fails
 * proves nothing. A small, fresh heap keeps it sensitive. Prints one JSON line.
 *
 * Cases: `owner` and `ownerIndex` of a 10-member ring (2M calls each), and the control, `owner`
 * plus one small object per call, which the probe must detect.
 */
import { Ring } from "../../src/cluster/ring.ts";
import { collectedDuring } from "../support/alloc-probe.ts";

const r = new Ring();
for (let i = 0; i < 10; i++) r.add(`127.0.0.1:${8001 + i}`);
const key = new TextEncoder().encode("user:12345:profile");
let sink: unknown;
const control = await collectedDuring((i) => {
  r.owner(key);
  sink = { i };
}, 2_000_000);
const owner = await collectedDuring(() => r.owner(key), 2_000_000);
const ownerIndex = await collectedDuring(() => r.ownerIndex(key, 5, 5), 2_000_000);
void sink;
console.log(JSON.stringify({ control, owner, ownerIndex }));
