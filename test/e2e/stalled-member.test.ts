/**
 * A member A whose process was stopped (SIGSTOP) while it answered a key of member B from its
 * mirror, while B acknowledged a write of the key without A's answer: when A runs again it must
 * not answer the old value. Two real `bun run node.ts` processes.
 *
 * Each test first shows that A answers the key from its mirror: Stats hitCount rises on each of
 * A's last three reads before the stop, and its NodeStats `cluster.mirrorHits` with them (so A
 * held B's read lease then), so a stale read was possible. (Before, A read the key three times
 * and each read was forwarded to B, hitCount 0: no stale read was possible, and the tests passed
 * with the stall's drop disabled, proving nothing about it.) Then A is stopped, B writes, A runs
 * again and the read through A must answer the new value; A logs and counts the stall.
 *
 * Two things keep A from answering its old copy, and each alone is enough. These tests show that
 * both together work; they cannot tell which one acted:
 * - A's read lease on B's keys (cluster/leases.ts): a lease is a quarter of B's peer timeout and
 *   began before the stop, so it ran out while A was stopped. B acknowledged the write without
 *   A's answer only after that (Vouches.cutoff), and gives A no new lease until A answers that
 *   invalidation (Vouches.abandon). So A's read is a lease miss, forwarded to B;
 * - the stall drop (ServerTimers `stalled`): A finds its loop stalled and empties its mirrors
 *   before it serves anything (the stall line in its log, its `server.stalls`).
 * Shown by disabling each check for a run: with `this.groups.dropCopies()` in `stalled` disabled,
 * all three pass (the lease protects); with the lease check in routed-get.ts disabled, all three
 * pass (the drop protects); with both disabled, all three fail, answering the old value. Here the
 * drop is defence in depth (it is the only protection for copies of an owner that gives no
 * leases, an older node). test/server/server-timers.test.ts tests the drop itself, and fails
 * without it.
 */
import { afterEach, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
import { Ring } from "../../src/cluster/ring.ts";
import { freePorts, spawnNode, type NodeProcess } from "../support/node-process.ts";
import { nodeStats } from "../server/support.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const text = (b: Uint8Array): string => new TextDecoder().decode(b);
const open: { close(): unknown }[] = [];
const procs: NodeProcess[] = [];
afterEach(async () => {
  for (const c of open.splice(0)) await c.close();
  for (const p of procs.splice(0)) {
    p.proc.kill("SIGCONT");
    p.proc.kill("SIGKILL");
  }
});


/**
 * readFromMirror reads `key` through A (`viaA`, port `portA`) until its last three reads were
 * answered from A's mirror (A's Stats hitCount rose by one at each: only B's keys are read through
 * A), each answering `value`. The lease is renewed only while the copies are used, so the reads
 * go on up to just before the caller stops A (a NodeStats call, a millisecond or two, under a
 * lease). A's NodeStats show the mirror hits too.
 */
async function readFromMirror(viaA: CacheClient, portA: number, key: string, value: string): Promise<void> {
  const before = (await nodeStats(portA)).get("cluster.mirrorHits")!;
  let hits = (await viaA.stats("g")).hitCount;
  let inARow = 0;
  for (const end = performance.now() + 5_000; inARow < 3 && performance.now() < end;) {
    expect(text((await viaA.get("g", key)).value)).toBe(value);
    const now = (await viaA.stats("g")).hitCount;
    inARow = now > hits ? inARow + 1 : 0;
    hits = now;
  }
  expect(inARow).toBe(3); // A answers the key from its copy: a stale answer is possible
  expect((await nodeStats(portA)).get("cluster.mirrorHits")! - before).toBeGreaterThanOrEqual(3);
}

// Covers: a stop past B's peer timeout (300 ms; stopped 900 or 1,800 ms). B marks A down and
// sends it no invalidation of `key` at all; A's read reaches it with nothing of the write.
for (const writes of [12, 6]) test(`a member stopped past the peer timeout (${writes * 150} ms) while it answered a key from its mirror answers the write made meanwhile when it runs again`, async () => {
  const ports = freePorts(2);
  const ids = ports.map((p) => `127.0.0.1:${p}`);
  for (const port of ports) {
    procs.push(await spawnNode(["--port", String(port), "--peers", ids.join(","), "--peer-timeout", "300ms", "--mirror-ttl", "60s", "--group", "g:16mb"]));
  }
  const [a] = procs as [NodeProcess, NodeProcess];
  const ring = new Ring();
  for (const id of ids) ring.add(id);
  const ofB = Array.from({ length: 200 }, (_, i) => `k${i}`).filter((k) => ring.owner(new TextEncoder().encode(k)) === ids[1]);
  const [key, ...others] = ofB as [string, ...string[]];
  const viaA = new CacheClient({ host: "127.0.0.1", port: ports[0]!, timeoutMs: 5000 });
  const viaB = new CacheClient({ host: "127.0.0.1", port: ports[1]!, timeoutMs: 5000 });
  open.push(viaA, viaB);
  await viaB.set("g", key, "old");
  await readFromMirror(viaA, ports[0]!, key, "old"); // A answers "old" from its copy, under B's lease
  a.proc.kill("SIGSTOP");
  // B's invalidations to A time out (other keys A never fetched: told, not waited for) until B
  // marks A down; then it sends A none, and writes `key` (acknowledged without A: its lease ran out).
  for (let i = 0; i < writes; i++) {
    await viaB.set("g", others[i % others.length]!, `w${i}`);
    await Bun.sleep(150);
  }
  await viaB.set("g", key, "new");
  a.proc.kill("SIGCONT");
  expect(text((await viaA.get("g", key)).value)).toBe("new");
  expect(a.log()).toContain("event loop stalled: mirrors dropped");
  expect((await nodeStats(ports[0]!)).get("server.stalls")).toBeGreaterThanOrEqual(1);
}, 30_000);

// Covers: a stop of 800 ms, past B's wait for A's answer (500 ms of its 1 s peer timeout) but
// not its peer timeout, three times. B still sends A the invalidation, and acknowledges without
// its answer; A serves the read before it reads the invalidation (the Stats call sent first).
test("a member stopped for longer than an owner waits for its answer, but not a peer timeout, while it answered a key from its mirror answers the write made meanwhile when it runs again (review: one stopped 800 ms of a 1 s timeout answered the old value)", async () => {
  const ports = freePorts(2);
  const ids = ports.map((p) => `127.0.0.1:${p}`);
  for (const port of ports) procs.push(await spawnNode(["--port", String(port), "--peers", ids.join(","), "--peer-timeout", "1s", "--group", "g:16mb"]));
  const [a] = procs as [NodeProcess, NodeProcess];
  const ring = new Ring();
  for (const id of ids) ring.add(id);
  const key = Array.from({ length: 200 }, (_, i) => `k${i}`).find((k) => ring.owner(new TextEncoder().encode(k)) === ids[1])!;
  const viaA = new CacheClient({ host: "127.0.0.1", port: ports[0]!, timeoutMs: 5000, connections: 1 });
  const viaB = new CacheClient({ host: "127.0.0.1", port: ports[1]!, timeoutMs: 5000, connections: 1 });
  open.push(viaA, viaB);
  for (let round = 0; round < 3; round++) {
    await viaB.set("g", key, `old${round}`);
    await readFromMirror(viaA, ports[0]!, key, `old${round}`); // A answers it from its copy, under B's lease
    a.proc.kill("SIGSTOP");
    const stoppedAt = performance.now();
    // A Stats call on the connection the read will take reaches A before B's invalidation does:
    // when A runs again it serves that connection's input first (the Stats, then the read behind
    // it), before it reads the invalidation. (Without it, A read the invalidation first and
    // dropped the copy: the test passed with neither the lease check nor the stall drop.)
    const early = viaA.stats("g");
    await Bun.sleep(20);
    // B waits for A's answer to the invalidation until A's lease has run out (a quarter of the
    // peer timeout from its last renewal; not at all once it counts A lagging), then
    // acknowledges. The read sent after that reaches A with the invalidation still unread beside it.
    await viaB.set("g", key, `new${round}`);
    const read = viaA.get("g", key);
    await Bun.sleep(Math.max(0, 800 - (performance.now() - stoppedAt)));
    a.proc.kill("SIGCONT");
    await early;
    expect(text((await read).value)).toBe(`new${round}`);
    await Bun.sleep(300); // (B may count A lagging now: whether the next write waits for A or not, A drops its copies when it runs again)
  }
  expect(a.log()).toContain("event loop stalled: mirrors dropped");
  expect((await nodeStats(ports[0]!)).get("server.stalls")).toBeGreaterThanOrEqual(3);
}, 30_000);
