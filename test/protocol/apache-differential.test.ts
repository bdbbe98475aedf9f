// Differential test against the official Apache runtime (thrift 0.24.0, code generated from
// thrift/cache.thrift): calls its generated client writes are read by our decoder exactly as written,
// and mutated, read alike by both or apart only in a known class (differential.ts); our replies and
// our client's calls are read by its generated code exactly as written (differential-replies.ts),
// and the replies its generated server writes by our ReplyReader (differential-reader.ts), also
// mutated: read alike by both, or apart only in a known class (differential-reply-mutations.ts).
// The seed is printed; replay a failure with TEST_SEED=<seed>. A longer run:
// bun run test/protocol/differential-run.ts --cases 200000

import { expect, test, setDefaultTimeout } from "bun:test";
import { testSeed } from "../support/prng.ts";
import { CACHE_REFUSAL, CLASSES, FRAME_LIMIT, runDifferential } from "./differential.ts";
import { runReplyDifferential } from "./differential-replies.ts";
import { REPLY_CLASSES, REPLY_LIMIT } from "./differential-reply-mutations.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const CALLS = 6_000; // each also mutated twice: 18,000 inputs
const REPLIES = 4_000;
const seed = testSeed();

test(`Apache-written calls read as written; ${CALLS * 2} mutations read alike or apart in a known class (seed ${seed})`, () => {
  let counts: ReturnType<typeof runDifferential> | undefined;
  try {
    counts = runDifferential(seed, CALLS);
  } catch (e) {
    console.error(`apache differential failed: replay with TEST_SEED=${seed}`);
    throw e;
  }
  expect(counts.valid).toBe(CALLS);
  expect(counts.mutated).toBe(CALLS * 2);
  // Most mutated inputs are read alike; the rest fall in named classes (listed in differential.ts).
  expect(counts.agreed).toBeGreaterThan(counts.mutated / 2);
  const known = new Set([...Object.keys(CLASSES), CACHE_REFUSAL, FRAME_LIMIT]);
  for (const name of Object.keys(counts.classes)) expect(known.has(name)).toBe(true);
});

test(`our replies and calls read by Apache's generated code as written, its server's replies (and ${REPLIES * 2} mutations) by our ReplyReader (${REPLIES} each, seed ${seed})`, () => {
  let counts: ReturnType<typeof runReplyDifferential> | undefined;
  try {
    counts = runReplyDifferential(seed, REPLIES);
  } catch (e) {
    console.error(`apache reply differential failed: replay with TEST_SEED=${seed}`);
    throw e;
  }
  expect(counts.replies).toBe(REPLIES);
  expect(counts.calls).toBe(REPLIES);
  // Mutated, the generated server's replies are read alike by both, or apart in a named class.
  const { "": alike = 0, ...apart } = counts.mutated;
  expect(alike).toBeGreaterThan(REPLIES);
  const known = new Set([...Object.keys(REPLY_CLASSES), REPLY_LIMIT]);
  for (const name of Object.keys(apart)) expect(known.has(name)).toBe(true);
});
