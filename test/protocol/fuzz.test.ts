// In-process fuzzing in CI: 100k+ random and structure-aware mutated inputs through the pure
// decoder and through a chunk-fed connection (see fuzz.ts). The seed is printed on failure;
// set FUZZ_SEED to replay one. A longer run: bun run test/protocol/fuzz-run.ts --iterations 1000000

import { expect, test, setDefaultTimeout } from "bun:test";
import { runFuzz } from "./fuzz.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const ITERATIONS = 100_000;

test(`fuzz: ${ITERATIONS} inputs yield only ProtocolError/CacheError, agree across chunkings, and finish`, () => {
  const seed = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : (Date.now() ^ (Math.random() * 2 ** 31)) >>> 0;
  let counts: { structured: number; random: number } | undefined;
  try {
    counts = runFuzz(seed, ITERATIONS);
  } catch (e) {
    console.error(`fuzz seed ${seed} failed (replay with FUZZ_SEED=${seed})`);
    throw e;
  }
  expect(counts.structured + counts.random).toBe(ITERATIONS);
  expect(counts.structured).toBeGreaterThan(ITERATIONS / 2);
}, 30_000);
