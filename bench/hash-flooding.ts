/**
 * hash-flooding.ts — what keys chosen to share a hash cost the node, against keys that do not.
 *
 *   bun bench/hash-flooding.ts [N=20000]
 *
 * 1. Store: N keys sharing one MurmurHash3 under every seed (test/support/murmur-collisions.ts),
 *    set into a store; the index keeps at most 8 under one hash (HashIndex.sameHash).
 * 2. GetMulti of N keys sharing JavaScriptCore's string hash (test/support/jsc-collisions.ts) to a
 *    node whose group has a loader (its loads are grouped by key: earlierSameKey).
 * 3. The same keys, held by one member, asked of the other in one GetMulti (the peer's answer is
 *    matched to the keys asked: valuesFor).
 * Each prints the time and the longest the event loop was held (a 5 ms timer in the process).
 */
import { join } from "node:path";
import { CacheNode } from "../src/server/cache-node.ts";
import { Store } from "../src/store/store.ts";
import { collidingKeys } from "../test/support/murmur-collisions.ts";
import { jscCollidingKeys } from "../test/support/jsc-collisions.ts";
import { startMembers } from "../test/support/cluster-members.ts";
import { watchLoop } from "./loop-watch.ts";
import { LogSink, RawSocket, getMultiCall, replyHeader, setCall } from "../test/server/support.ts";

const N = Number(process.argv[2] ?? 20000);

/** shifted is a control: the same bytes rotated one place, so no two share a hash. */
const shifted = (keys: Uint8Array[]): Uint8Array[] => keys.map((k) => new Uint8Array([...k.subarray(1), k[0]!]));

async function held<T>(run: () => Promise<T>): Promise<[T, number, number]> {
  const stop = await watchLoop();
  const t0 = performance.now();
  const out = await run();
  const ms = performance.now() - t0;
  return [out, ms, stop()];
}

{
  const pairs = Math.ceil(Math.log2(N));
  for (const [name, keys] of [["control", shifted(collidingKeys(pairs, N))], ["colliding", collidingKeys(pairs, N)]] as const) {
    const s = new Store({ memory: 256 * 1024 * 1024 });
    const v = new Uint8Array(10);
    const t0 = performance.now();
    for (const k of keys) s.set(k, 0, k.length, v, 0, v.length, 0);
    console.log(`store, ${name.padEnd(9)} N=${N}: set in ${(performance.now() - t0).toFixed(0)} ms, ${s.size} items, ${s.counters.collisionEvictions} collision evictions`);
  }
}

{
  const loaders = join(import.meta.dir, "../test/loaders/fixtures/loaders.ts");
  await using node = await CacheNode.open({ port: 0, loaders, loaderThreads: 1 }, { logger: new LogSink().logger });
  for (const [name, keys] of [["control", shifted(jscCollidingKeys(N))], ["colliding", jscCollidingKeys(N)]] as const) {
    const s = await RawSocket.connect(node.port);
    const [, ms, gap] = await held(async () => {
      s.write(getMultiCall(1, "text", keys));
      await s.waitFor(() => s.frames().length > 0, "reply", 600_000);
    });
    console.log(`GetMulti with loads, ${name.padEnd(9)} N=${N}: reply type ${replyHeader(s.frames()[0]!).type} in ${ms.toFixed(0)} ms, loop held up to ${gap.toFixed(0)} ms`);
    s.close();
  }
}

{
  const open: { close(): Promise<void> }[] = [];
  const m = startMembers(2, open);
  await Bun.sleep(300);
  const [a, owner] = [m.nodes[0]!, m.nodes[1]!];
  const ownedBy1 = (keys: Uint8Array[]): Uint8Array[] => keys.filter((k) => a.cluster!.owner(k, 0, k.length) === m.ids[1]);
  for (const [name, keys] of [["control", ownedBy1(shifted(jscCollidingKeys(2 * N, 1)))], ["colliding", ownedBy1(jscCollidingKeys(2 * N, 2))]] as const) {
    const w = await RawSocket.connect(owner.port);
    w.write(Buffer.concat(keys.map((k, i) => setCall(i + 1, k, new Uint8Array(0)))));
    await w.waitFor(() => w.frames().length >= keys.length, "sets", 600_000);
    w.close();
    const s = await RawSocket.connect(a.port);
    const [, ms, gap] = await held(async () => {
      s.write(getMultiCall(1, "default", keys));
      await s.waitFor(() => s.frames().length > 0, "reply", 600_000);
    });
    console.log(`routed GetMulti, ${name.padEnd(9)} N=${keys.length}: reply type ${replyHeader(s.frames()[0]!).type} in ${ms.toFixed(0)} ms, loop held up to ${gap.toFixed(0)} ms`);
    s.close();
  }
  for (const o of open) await o.close();
}
