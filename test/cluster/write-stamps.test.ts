/**
 * WriteStamps against a model that remembers every write: a key written since a ticket is always
 * said written (an answer older than a write is never used), and a key of a bucket only another
 * key was written in since is not (review: any write of the bucket redid the loads ahead of its
 * other keys). Replay a failure with `TEST_SEED=<seed> bun test test/cluster/write-stamps.test.ts`.
 */
import { expect, test, setDefaultTimeout } from "bun:test";
import { BUCKETS, WriteStamps } from "../../src/cluster/write-stamps.ts";
import { Prng, testSeed } from "../support/prng.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

/** HASHES: 4 hashes in each of 3 buckets (signed, as the store's are, some negative). */
const HASHES = [0, 1, 2].flatMap((b) => [0, 1, 2, -3].map((j) => (b + BUCKETS * j) | 0));

test("a key written since the ticket is said written; one whose bucket saw only another key's writes is not", () => {
  const seed = testSeed();
  const rnd = new Prng(seed);
  const stamps = new WriteStamps();
  const log: { hash: number; t: number }[] = []; // the writes (hash NaN: of every key), with the ticket after each
  const tickets: number[] = [];
  try {
    for (let step = 0; step < 20_000; step++) {
      const r = rnd.int(100);
      if (r < 70) {
        const hash = HASHES[rnd.int(HASHES.length)]!;
        stamps.written(hash);
        log.push({ hash, t: stamps.ticket() });
      } else if (r < 71) {
        stamps.allWritten();
        log.push({ hash: NaN, t: stamps.ticket() });
      } else {
        tickets.push(stamps.ticket());
        if (tickets.length > 8) tickets.shift();
      }
      for (const ticket of tickets) {
        const since = log.filter((w) => w.t > ticket);
        for (const hash of HASHES) {
          const said = stamps.writtenSince(hash, ticket);
          const bucket = since.filter((w) => Number.isNaN(w.hash) || (w.hash & (BUCKETS - 1)) === (hash & (BUCKETS - 1)));
          if (bucket.some((w) => Number.isNaN(w.hash) || w.hash === hash)) expect(said).toBe(true);
          else if (new Set(bucket.map((w) => w.hash)).size <= 1) expect(said).toBe(false);
        }
      }
      // Only the writes after the oldest ticket kept matter.
      const oldest = tickets[0] ?? stamps.ticket();
      while (log.length > 0 && log[0]!.t <= oldest) log.shift();
    }
  } catch (e) {
    throw new Error(`TEST_SEED=${seed}: ${String(e)}`);
  }
});

test("no write, one write and a write of every key, as a table", () => {
  const s = new WriteStamps();
  const [a, b] = [5, 5 + BUCKETS]; // one bucket
  const t0 = s.ticket();
  expect([s.writtenSince(a, t0), s.writtenSince(b, t0)]).toEqual([false, false]);
  s.written(a);
  expect([s.writtenSince(a, t0), s.writtenSince(b, t0)]).toEqual([true, false]);
  s.written(b);
  expect([s.writtenSince(a, t0), s.writtenSince(b, t0)]).toEqual([true, true]);
  const t1 = s.ticket();
  s.written(b);
  expect([s.writtenSince(a, t1), s.writtenSince(b, t1)]).toEqual([false, true]);
  s.allWritten();
  expect([s.writtenSince(a, t1), s.writtenSince(7, t1), s.writtenSince(7, s.ticket())]).toEqual([true, true, false]);
});
