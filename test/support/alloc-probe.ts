/**
 * collectedDuring: proof that a loop allocates nothing, by showing no garbage collection ran.
 *
 * `heapStats()` from bun:jsc reports the heap as of the last collection, so before/after numbers
 * stay flat even for code that allocates (garbage dies young and is never seen). Instead: after a
 * full GC, a canary object is made reachable only through a WeakRef (in an earlier job, so the
 * WeakRef does not pin it), then the loop runs synchronously. JSC only collects when an
 * allocation asks for memory, so if the loop allocated anything, the eden collections it triggers
 * free the canary (a sentinel of the same age, read just before the loop, tells a collection
 * by the runtime's timers before the loop from one during it). Callers pair it with a control (the same loop plus one 16-byte object per
 * iteration) that must be detected. JIT recompilation can itself start a collection, so a
 * measurement is repeated up to `attempts` times and the claim is "some full run of `ops`
 * iterations saw no collection": code that allocated per iteration would collect every time.
 */
import { fullGC } from "bun:jsc";

const tick = () => new Promise((resolve) => setTimeout(resolve, 0));

/** collectedDuring runs `op` `ops` times, up to `attempts` times; true = every run collected. */
export async function collectedDuring(op: (i: number) => void, ops = 1_000_000, attempts = 4): Promise<boolean> {
  for (let i = 0; i < 100_000; i++) op(i); // warm up: JIT tiers, buffers reach their size
  for (let attempt = 0; attempt < attempts; attempt++) {
    if (!(await collectedOnce(op, ops))) return false;
  }
  return true;
}

async function collectedOnce(op: (i: number) => void, ops: number): Promise<boolean> {
  for (;;) {
    fullGC();
    const canary = new WeakRef({ canary: true });
    const sentinel = new WeakRef({ sentinel: true });
    await tick();
    // The runtime's GC timers may fire during the tick (more likely after a long loop): then the
    // sentinel, as old as the canary, is gone too, and the attempt is made again. Reading the
    // sentinel pins it for this job; the canary stays unread until the loop is over.
    if (sentinel.deref() === undefined) continue;
    for (let i = 0; i < ops; i++) op(i);
    return canary.deref() === undefined;
  }
}
