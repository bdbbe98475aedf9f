/**
 * The stall watch of ServerTimers (server-timers.ts `stalled`) itself: a clustered node whose
 * event loop did not run for longer than `stallMs` empties its mirrors, whether its stall timer
 * or the data handler (`checkStall`, before any input of the event is served) finds it first.
 *
 * test/e2e/stalled-member.test.ts stops a real member while it answers from its mirror, but a
 * stopped member's read lease (cluster/leases.ts) also runs out while it is stopped, and keeps it
 * from answering its copies on its own: those tests pass with the drop disabled. These fail
 * without it (shown: with `this.groups.dropCopies()` in `stalled` disabled, the two stall tests
 * fail, the copy still there).
 */
import { afterEach, expect, test, setDefaultTimeout } from "bun:test";
import type { Cluster } from "../../src/cluster/cluster.ts";
import { Group } from "../../src/cluster/group.ts";
import { Groups } from "../../src/cluster/groups.ts";
import type { Connection } from "../../src/server/connection.ts";
import { LingeringClose } from "../../src/server/lingering-close.ts";
import { ServerCounters } from "../../src/server/server-counters.ts";
import type { ServerOptions } from "../../src/server/server-options.ts";
import { ServerTimers } from "../../src/server/server-timers.ts";
import { MIB } from "../../src/store/store.ts";
import { LogSink } from "./support.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const STALL_MS = 200; // (ticks every 50 ms: a loaded machine's late timer is no stall)
const started: ServerTimers[] = [];
afterEach(() => {
  for (const t of started.splice(0)) t.close();
});

/** watch makes a stall watch over one group "g" holding a copy in its mirror, for a node of `members` members. */
function watch(members: number) {
  const group = new Group({ name: "g", memory: 8 * MIB, mirrorMemory: 2 * MIB });
  const groups = new Groups();
  groups.add(group);
  const k = new TextEncoder().encode("k");
  group.mirror!.set(k, 0, 1, k, 0, 1, 0); // a copy of another member's key
  const cluster = { members: Array.from({ length: members }, (_, i) => `127.0.0.1:${7000 + i}`) } as unknown as Cluster;
  const sink = new LogSink();
  const counters = new ServerCounters();
  const opts: Partial<ServerOptions> = {
    clock: Date.now, logger: sink.logger, stallMs: STALL_MS, expiryIntervalMs: 60_000, expiryBudget: 100, cluster: () => cluster,
  };
  const timers = new ServerTimers(groups, new Set<Connection>(), counters, opts as ServerOptions, new LingeringClose(counters));
  started.push(timers);
  return { mirror: group.mirror!, timers, counters, sink };
}

/** block keeps the event loop from running for `ms` (as a SIGSTOP or a swapped-out process would). */
function block(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) { /* stalled */ }
}

test("a loop stalled longer than stallMs drops the mirrors when the stall timer next runs, counted and logged", async () => {
  const { mirror, counters, sink } = watch(2);
  await Bun.sleep(STALL_MS); // the timer runs on time a few times: no stall
  expect(mirror.size).toBe(1);
  expect(counters.stalls).toBe(0);
  block(3 * STALL_MS);
  await Bun.sleep(STALL_MS); // the timer's next run finds it late
  expect(mirror.size).toBe(0);
  expect(counters.stalls).toBe(1);
  expect(sink.lines.filter((l) => l.includes("event loop stalled: mirrors dropped"))).toHaveLength(1);
});

test("input read after a stall, before the stall timer runs, finds the mirrors dropped (checkStall, as the data handler calls it)", () => {
  const { mirror, timers, counters } = watch(2);
  block(3 * STALL_MS);
  timers.checkStall(performance.now()); // no turn since: the stall timer has not run
  expect(mirror.size).toBe(0);
  expect(counters.stalls).toBe(1);
});

test("a loop that runs on time, or a stall shorter than stallMs, keeps the mirrors", async () => {
  const { mirror, timers, counters } = watch(2);
  await Bun.sleep(4 * STALL_MS);
  block(STALL_MS / 2);
  timers.checkStall(performance.now());
  await Bun.sleep(STALL_MS);
  expect(mirror.size).toBe(1);
  expect(counters.stalls).toBe(0);
});

test("a node alone in its cluster keeps its mirrors through a stall (no member could have written without it)", async () => {
  const { mirror, counters } = watch(1);
  block(3 * STALL_MS);
  await Bun.sleep(STALL_MS);
  expect(mirror.size).toBe(1);
  expect(counters.stalls).toBe(0);
});
