// Long fuzz run: bun run test/protocol/fuzz-run.ts --iterations 1000000 [--seed N]
// Runs in batches of 100k with consecutive seeds, printing progress; exits 1 on a failure with
// the seed and case needed to replay it.

import { runFuzz } from "./fuzz.ts";
import { intFlag as flag } from "../support/cli-flags.ts";

const iterations = flag("iterations", 1_000_000);
const firstSeed = flag("seed", (Date.now() ^ (Math.random() * 2 ** 31)) >>> 0);
const BATCH = 100_000;
const started = performance.now();
let done = 0;
for (let seed = firstSeed; done < iterations; seed++) {
  const n = Math.min(BATCH, iterations - done);
  try {
    runFuzz(seed, n);
  } catch (e) {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
  }
  done += n;
  const s = (performance.now() - started) / 1000;
  console.log(`seed ${seed}: ${n} ok (${done}/${iterations}, ${s.toFixed(1)} s, ${Math.round(done / s)} inputs/s)`);
}
console.log(`fuzz: ${done} inputs, no failures (first seed ${firstSeed})`);
