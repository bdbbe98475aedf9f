/**
 * A load on the owner that outlasts --peer-timeout: the member that forwarded the Get waits for
 * it while the owner answers (its peer client's late wait, `loadWaitMs`), so the key is loaded once
 * cluster-wide and the owner is not counted as failing. Before, the forwarder gave up at the peer
 * timeout, loaded the key itself (a second loader call for the same key) and counted a peer error
 * (three in a row marked a working owner down). An owner that answers nothing still fails at the
 * timeout, and the forwarder loads the key itself.
 */
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
import type { Loader } from "../../src/cluster/loader.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import type { NodeConfig } from "../../src/server/config.ts";
import { LogSink } from "../server/support.ts";
import { freePorts } from "../support/node-process.ts";
import { keysOwnedBy, silentMember } from "../support/cluster-members.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const text = (b: Uint8Array): string => new TextDecoder().decode(b);

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((x) => x.close()));
});

/** slowLoader loads `${name}:${key}` after `ms`, recording each call in `calls`. */
function slowLoader(name: string, ms: number, calls: string[]): Loader {
  return async (key) => {
    calls.push(`${name}:${key}`);
    await Bun.sleep(ms);
    return `${name}:${key}`;
  };
}

function startNode(port: number, ids: string[], loader: Loader, extra: Partial<NodeConfig> = {}): CacheNode {
  const n = CacheNode.start(
    { port, host: "127.0.0.1", peers: ids, logLevel: "silent", peerTimeoutMs: 200, groups: [{ name: "g", ttlMs: 0, admission: "always" }], ...extra },
    { logger: new LogSink().logger, loaders: { g: loader } },
  );
  open.push(n);
  return n;
}

function client(port: number): CacheClient {
  const c = new CacheClient({ host: "127.0.0.1", port, timeoutMs: 5_000 });
  open.push(c);
  return c;
}

describe("a load on the owner that outlasts the peer timeout", () => {
  test("a forwarded Get waits for it: one loader call cluster-wide, no peer error", async () => {
    const [pa, pb] = freePorts(2) as [number, number];
    const ids = [`127.0.0.1:${pa}`, `127.0.0.1:${pb}`];
    const calls: string[] = [];
    const a = startNode(pa, ids, slowLoader("A", 700, calls)); // 700 ms of load against a 200 ms peer timeout
    startNode(pb, ids, slowLoader("B", 700, calls));
    const keys = keysOwnedBy(a, ids[1]!, 3, "k");
    const c = client(pa);
    const values = await Promise.all(keys.map((k) => c.get("g", k)));
    expect(values.map((v) => text(v.value))).toEqual(keys.map((k) => `B:${k}`));
    expect(calls.sort()).toEqual(keys.map((k) => `B:${k}`).sort());
    expect(a.cluster!.counters.peerErrors).toBe(0);
    const peer = a.cluster!.peer(ids[1]!)!;
    expect(peer.isDown).toBe(false);
    expect((peer as CacheClient).counters.timeouts).toBe(0);
  });

  test("so does a forwarded GetMulti part (PeerGetMulti)", async () => {
    const [pa, pb] = freePorts(2) as [number, number];
    const ids = [`127.0.0.1:${pa}`, `127.0.0.1:${pb}`];
    const calls: string[] = [];
    const a = startNode(pa, ids, slowLoader("A", 700, calls));
    startNode(pb, ids, slowLoader("B", 700, calls));
    const keys = keysOwnedBy(a, ids[1]!, 4, "m");
    const found = await client(pa).getMulti("g", keys);
    expect([...found.entries()].map(([k, v]) => [k, text(v)]).sort()).toEqual(keys.map((k) => [k, `B:${k}`]).sort());
    expect(calls.sort()).toEqual(keys.map((k) => `B:${k}`).sort());
    expect(a.cluster!.counters.peerErrors).toBe(0);
  });

  test("an owner that answers nothing fails at the timeout, not the load wait: the forwarder loads the key", async () => {
    // B accepts connections and reads what it is sent, and never answers (a hung process). The
    // load wait is 30 s here: a forwarded Get waiting it out would outlast this test's timeout.
    const [pa] = freePorts(1) as [number];
    const silent = silentMember(open); // (reads what it is sent, answers nothing: a hung process)
    const ids = [`127.0.0.1:${pa}`, `127.0.0.1:${silent.port}`];
    const calls: string[] = [];
    const a = startNode(pa, ids, slowLoader("A", 10, calls), { loadTimeoutMs: 30_000 });
    const [key] = keysOwnedBy(a, ids[1]!, 1, "h") as [string];
    const got = await client(pa).get("g", key);
    expect(text(got.value)).toBe(`A:${key}`);
    expect(calls).toEqual([`A:${key}`]);
    expect(a.cluster!.counters.peerErrors).toBe(1);
  });
});
