/**
 * RestartBackoff on a fake clock: quick deaths past the free ones raise the wait of the threads
 * started next, any slow death resets it, and so does a quiet span with no quick death (it stayed
 * raised for good once the deaths ended: a thread started much later waited for nothing).
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { MAX_WAIT_MS, RestartBackoff, newWaitCell } from "../../src/loaders/restart-backoff.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

describe("RestartBackoff", () => {
  test("three quick deaths a thread are free; then the wait doubles from 100 ms up to the most", () => {
    const b = new RestartBackoff(newWaitCell(), 1, MAX_WAIT_MS);
    const waits: number[] = [];
    for (let i = 0; i < 10; i++) {
      b.died(50, true, i * 200);
      waits.push(b.waitMs);
    }
    expect(waits).toEqual([0, 0, 0, 100, 200, 400, 800, 1600, 3200, 5000]);
    b.died(5_000, true, 3_000); // a slow death resets it
    expect(b.waitMs).toBe(0);
  });

  test("the wait ends once no thread died quickly for twice the longest wait and a quick death", () => {
    const b = new RestartBackoff(newWaitCell(), 1, 2_000);
    for (let i = 0; i < 6; i++) b.died(50, true, 1_000 + i * 10);
    expect(b.waitMs).toBe(400);
    const last = 1_050;
    b.settle(last + 2 * 2_000 + 1_000 - 1);
    expect(b.waitMs).toBe(400); // a module still killing its threads dies again within that
    b.settle(last + 2 * 2_000 + 1_000);
    expect(b.waitMs).toBe(0);
    for (let i = 0; i < 3; i++) b.died(50, true, 10_000 + i); // counted afresh: free again
    expect(b.waitMs).toBe(0);
    b.died(50, true, 10_010);
    expect(b.waitMs).toBe(100);
  });
});
