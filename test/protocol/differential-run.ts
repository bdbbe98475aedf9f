// Long differential run against the Apache runtime (apache-differential.test.ts, longer):
//   bun run test/protocol/differential-run.ts --cases 200000 [--seed N]
// Runs in batches of 10k cases with consecutive seeds (each case: one Apache-written call and two
// mutations of it, one reply and one call of ours, one reply of the Apache server and two mutations
// of it), printing progress and the count of each disagreement class; exits 1 on a failure with
// the seed and case needed to replay it.

import { runDifferential } from "./differential.ts";
import { runReplyDifferential } from "./differential-replies.ts";
import { intFlag as flag } from "../support/cli-flags.ts";

const cases = flag("cases", 200_000);
const firstSeed = flag("seed", (Date.now() ^ (Math.random() * 2 ** 31)) >>> 0);
const BATCH = 10_000;
const started = performance.now();
const classes: Record<string, number> = {};
const replyClasses: Record<string, number> = {};
let done = 0;
let agreed = 0;
for (let seed = firstSeed; done < cases; seed++) {
  const n = Math.min(BATCH, cases - done);
  try {
    const c = runDifferential(seed, n);
    const r = runReplyDifferential(seed, n);
    for (const [k, v] of Object.entries(r.mutated)) if (k !== "") replyClasses[k] = (replyClasses[k] ?? 0) + v;
    agreed += c.agreed;
    for (const [k, v] of Object.entries(c.classes)) classes[k] = (classes[k] ?? 0) + v;
  } catch (e) {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
  }
  done += n;
  const s = (performance.now() - started) / 1000;
  console.log(`seed ${seed}: ${n} ok (${done}/${cases}, ${s.toFixed(1)} s, ${Math.round(done / s)} cases/s)`);
}
console.log(`differential: ${done} cases, no failures (first seed ${firstSeed}); of ${done * 2} mutated inputs ${agreed} read alike, the rest:`);
for (const [k, v] of Object.entries(classes).sort((a, b) => b[1] - a[1])) console.log(`  ${String(v).padStart(7)}  ${k}`);
console.log(`of ${done * 2} mutated replies of the Apache server, read apart by our ReplyReader:`);
for (const [k, v] of Object.entries(replyClasses).sort((a, b) => b[1] - a[1])) console.log(`  ${String(v).padStart(7)}  ${k}`);
