/**
 * The real-process MemoryWatch probe, in a process of its own (spawned by memory-watch.test.ts):
 * in the test runner's process, earlier tests' freed memory is still resident, and new garbage
 * fills it without raising RSS. Prints one JSON line.
 */
import { MemoryWatch } from "../../src/server/memory-watch.ts";
import { Logger } from "../../src/server/log.ts";

const MIB = 1024 * 1024;
Bun.gc(true);
const watch = new MemoryWatch({ headroomBytes: 32 * MIB, intervalMs: 1000, logger: new Logger("silent", false) });
// The garbage: buffers nothing references (typed arrays are given back to the OS when freed).
let junk: Uint8Array[] | null = Array.from({ length: 100 }, () => new Uint8Array(MIB).fill(1));
const made = junk.length;
junk = null;
const before = process.memoryUsage.rss();
const collected = watch.check();
console.log(JSON.stringify({ made, before, collected, forced: watch.counters.forcedCollections, retained: watch.counters.retainedBytes }));
