/**
 * A GetMulti whose keys an unreachable member owns is answered from local loads (groupcache's
 * fallback). The connection decodes its next call into the same Request once the reply is
 * written, so the reply must wait for every part of the call: a part that fails first (here a
 * local key whose loader throws) must not answer while the fallback load of another part still
 * runs, or that load, finishing, would read the next call's key ranges as its own.
 */
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
import { DEFAULT_MULTI_LOAD_WINDOW } from "../../src/cluster/group.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import { freePorts } from "../support/node-process.ts";
import { LogSink, OverlapLoader, RawSocket, getCall, getMultiCall, setCall } from "../server/support.ts";
import { T, concat } from "../protocol/wire-builder.ts";
import { field, outcome, readReplies } from "../server/wire-reader.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((x) => x.close()));
});

const utf8 = new TextEncoder();

/** until waits (up to 3 s) for `done`, else throws naming `what`. */
async function until(done: () => boolean, what: string): Promise<void> {
  for (const end = Date.now() + 3_000; !done(); await Bun.sleep(2)) if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
}

describe("falling back to local loads (the owner unreachable)", () => {
  test("answers once every part settled; a slow fallback load never touches the next call's keys", async () => {
    const [pa, pb] = freePorts(2) as [number, number];
    const ids = [`127.0.0.1:${pa}`, `127.0.0.1:${pb}`]; // nothing listens on pb: B is unreachable
    let slowDone = false;
    const a = CacheNode.start(
      { port: pa, host: "127.0.0.1", peers: ids, logLevel: "silent", peerTimeoutMs: 500, groups: [{ name: "g", ttlMs: 0, admission: "always" }] },
      {
        logger: new LogSink().logger,
        loaders: {
          g: async (key) => {
            if (key.startsWith("fail")) throw new Error("no such row");
            if (key.startsWith("slow")) {
              await Bun.sleep(150);
              slowDone = true;
            }
            return `loaded ${key}`;
          },
        },
      },
    );
    open.push(a);
    const pick = (prefix: string, owner: string) => {
      for (let i = 0; ; i++) if (a.cluster!.owner(utf8.encode(`${prefix}${i}`), 0, `${prefix}${i}`.length) === owner) return `${prefix}${i}`;
    };
    const [fail, slow, kA, kB] = [pick("fail", ids[0]!), pick("slow", ids[1]!), pick("a", ids[0]!), pick("b", ids[0]!)];
    const raw = await RawSocket.connect(pa);
    raw.write(concat(setCall(1, kA, utf8.encode("stored a"), "g"), setCall(2, kB, utf8.encode("stored b"), "g")));
    await raw.waitFor(() => raw.frames().length === 2, "set replies");
    // The second GetMulti lists kB where the first lists `slow`.
    raw.write(concat(getMultiCall(3, "g", [utf8.encode(fail), utf8.encode(slow)]), getMultiCall(4, "g", [utf8.encode(kA), utf8.encode(kB)])));
    await raw.waitFor(() => raw.frames().length === 4, "GetMulti replies");
    expect(slowDone).toBe(true); // the failed GetMulti was answered after its fallback load, not before
    await Bun.sleep(200);
    raw.write(getCall(5, kB, "g"));
    await raw.waitFor(() => raw.frames().length === 5, "the Get after");
    const { replies } = readReplies(raw.received, "framed");
    const first = outcome(replies[2]!);
    expect(first.kind === "cacheError" ? first.code : first.kind).toBe(6); // LOAD_FAILED
    expect(outcome(replies[3]!).kind).toBe("success");
    const last = outcome(replies[4]!);
    if (last.kind !== "success") throw new Error(JSON.stringify(last));
    expect(new TextDecoder().decode(field(last.value, 1, T.STRING) as Uint8Array)).toBe("stored b");
    raw.close();
  });

  test("its own part and the fallback share one window of loads: never more than the group's window at once", async () => {
    const [pa, pb] = freePorts(2) as [number, number];
    const ids = [`127.0.0.1:${pa}`, `127.0.0.1:${pb}`]; // nothing listens on pb: B is unreachable
    const loader = new OverlapLoader(20);
    const a = CacheNode.start(
      { port: pa, host: "127.0.0.1", peers: ids, logLevel: "silent", peerTimeoutMs: 500, groups: [{ name: "g", ttlMs: 0, admission: "always" }] },
      { logger: new LogSink().logger, loaders: { g: loader.load } },
    );
    open.push(a);
    const owned = (owner: string, n: number): string[] => {
      const keys: string[] = [];
      for (let i = 0; keys.length < n; i++) if (a.cluster!.owner(utf8.encode(`k${i}`), 0, `k${i}`.length) === owner) keys.push(`k${i}`);
      return keys;
    };
    // 40 keys A loads as their owner, 40 it loads for B: each part alone fills a window.
    const keys = [...owned(ids[0]!, 40), ...owned(ids[1]!, 40)];
    const client = new CacheClient({ host: "127.0.0.1", port: pa });
    try {
      const got = await client.getMulti("g", keys);
      expect([...got.keys()].sort()).toEqual([...keys].sort());
      for (const k of keys) expect(new TextDecoder().decode(got.get(k))).toBe(`loaded ${k}`);
      expect(loader.most).toBeGreaterThan(1);
      expect(loader.most).toBeLessThanOrEqual(DEFAULT_MULTI_LOAD_WINDOW);
    } finally {
      client.close();
    }
  });

  test("a \"not found\" loaded for a key owned elsewhere is not cached here, also with negative caching on", async () => {
    const [pa, pb] = freePorts(2) as [number, number];
    const ids = [`127.0.0.1:${pa}`, `127.0.0.1:${pb}`]; // nothing listens on pb
    let calls = 0;
    const a = CacheNode.start(
      { port: pa, host: "127.0.0.1", peers: ids, logLevel: "silent", peerTimeoutMs: 500, groups: [{ name: "g", ttlMs: 0, admission: "always", negativeTtlMs: 60_000 }] },
      { logger: new LogSink().logger, loaders: { g: () => (++calls === 1 || calls === 3 ? null : `found ${calls}`) } },
    );
    open.push(a);
    let key = "";
    for (let i = 0; key === ""; i++) if (a.cluster!.owner(utf8.encode(`r${i}`), 0, `r${i}`.length) === ids[1]) key = `r${i}`;
    const raw = await RawSocket.connect(pa);
    // Get: not found (call 1) · Get: loaded again, found (call 2) · GetMulti: not found (call 3) · GetMulti: found (call 4).
    raw.write(getCall(1, key, "g"));
    await raw.waitFor(() => raw.frames().length === 1, "first Get");
    raw.write(getCall(2, key, "g"));
    await raw.waitFor(() => raw.frames().length === 2, "second Get");
    const other = (() => { for (let i = 0; ; i++) if (a.cluster!.owner(utf8.encode(`s${i}`), 0, `s${i}`.length) === ids[1]) return `s${i}`; })();
    raw.write(getMultiCall(3, "g", [utf8.encode(other)]));
    await raw.waitFor(() => raw.frames().length === 3, "first GetMulti");
    raw.write(getMultiCall(4, "g", [utf8.encode(other)]));
    await raw.waitFor(() => raw.frames().length === 4, "second GetMulti");
    const { replies } = readReplies(raw.received, "framed");
    const o = replies.map((r) => outcome(r));
    expect(o[0]!.kind === "cacheError" ? o[0]!.code : o[0]!.kind).toBe(1); // NOT_FOUND
    if (o[1]!.kind !== "success") throw new Error(JSON.stringify(o[1]));
    expect(new TextDecoder().decode(field(o[1]!.value, 1, T.STRING) as Uint8Array)).toBe("found 2");
    expect([o[2]!.kind, o[3]!.kind]).toEqual(["success", "success"]);
    expect(new TextDecoder().decode(raw.frames()[3]!)).toContain("found 4");
    expect(calls).toBe(4);
    raw.close();
  });

  test("what a fallback loads is answered and kept nowhere: not in the main store, nor in the mirror (the owner never handed it out)", async () => {
    const [pa, pb] = freePorts(2) as [number, number];
    const ids = [`127.0.0.1:${pa}`, `127.0.0.1:${pb}`]; // nothing listens on pb
    const gates: (() => void)[] = [];
    const a = CacheNode.start(
      { port: pa, host: "127.0.0.1", peers: ids, logLevel: "silent", peerTimeoutMs: 500, groups: [{ name: "g", ttlMs: 0, admission: "always" }] },
      { logger: new LogSink().logger, loaders: { g: async (key) => (await new Promise<void>((r) => gates.push(r)), `loaded ${key}`) } },
    );
    open.push(a);
    const owned = (i: number) => `r${i}`;
    const remote: string[] = [];
    for (let i = 0; remote.length < 2; i++) if (a.cluster!.owner(utf8.encode(owned(i)), 0, owned(i).length) === ids[1]) remote.push(owned(i));
    const [k1, k2] = remote as [string, string];
    const group = a.groups.byName("g")!;
    const raw = await RawSocket.connect(pa);
    raw.write(getCall(1, k1, "g"));
    while (gates.length < 1) await Bun.sleep(2);
    gates[0]!();
    await raw.waitFor(() => raw.frames().length === 1, "first Get");
    expect(new TextDecoder().decode(raw.frames()[0]!)).toContain(`loaded ${k1}`);
    expect(group.store.get(utf8.encode(k1), 0, k1.length)).toBe(-1); // not in the main store
    expect(group.mirror!.get(utf8.encode(k1), 0, k1.length)).toBe(-1); // nor in the mirror: its owner's writes would not wait for it (HandOuts)
    // The owner overwrote k2 while this node's fallback load of it ran (its PeerInvalidate arrives):
    raw.write(getCall(2, k2, "g"));
    while (gates.length < 2) await Bun.sleep(2);
    const owner = new CacheClient({ host: "127.0.0.1", port: pa, timeoutMs: 2000 }); // speaking for the owner
    open.push(owner);
    await owner.invalidate("g", [k2]);
    gates[1]!();
    await raw.waitFor(() => raw.frames().length === 2, "second Get");
    expect(new TextDecoder().decode(raw.frames()[1]!)).toContain(`loaded ${k2}`); // its caller asked before the write
    expect(group.store.get(utf8.encode(k2), 0, k2.length)).toBe(-1);
    expect(group.mirror!.get(utf8.encode(k2), 0, k2.length)).toBe(-1); // nor kept in the mirror
    raw.close();
  });

  test("a fallback load that ends after this node became the key's owner leaves the value written here meanwhile", async () => {
    // The load ran for a key B owned; B left, this node owns the key now and took a Set of it.
    // The load's end took the key out of the main store (a copy of a key owned elsewhere lives
    // in the mirror only): the acknowledged write was lost.
    const [pa, pb] = freePorts(2) as [number, number];
    const ids = [`127.0.0.1:${pa}`, `127.0.0.1:${pb}`]; // nothing listens on pb
    const gates: (() => void)[] = [];
    const loadedOnce = new Set<string>();
    const loading: string[] = [];
    const a = CacheNode.start(
      { port: pa, host: "127.0.0.1", peers: ids, logLevel: "silent", peerTimeoutMs: 500, groups: [{ name: "g", ttlMs: 0, admission: "always" }] },
      {
        logger: new LogSink().logger,
        loaders: {
          g: async (key) => {
            loading.push(key);
            if (!loadedOnce.has(key)) await new Promise<void>((r) => gates.push(r)); // the first load of a key waits
            loadedOnce.add(key);
            return key.startsWith("fail") ? null : `loaded ${key}`;
          },
        },
      },
    );
    open.push(a);
    const remote = (prefix: string) => {
      for (let i = 0; ; i++) if (a.cluster!.owner(utf8.encode(`${prefix}${i}`), 0, `${prefix}${i}`.length) === ids[1]) return `${prefix}${i}`;
    };
    const [k, gone, k3, gone3] = [remote("r"), remote("fail"), remote("m"), remote("failm")]; // (while B is a member)
    const raw = await RawSocket.connect(pa);
    raw.write(getCall(1, k, "g")); // B unreachable: loaded here
    await until(() => gates.length === 1, "the first load");
    const other = new CacheClient({ host: "127.0.0.1", port: pa, timeoutMs: 2000 });
    open.push(other);
    expect(a.cluster!.setMembers([ids[0]!])).toBe(true); // B is gone: this node owns every key
    await other.set("g", k, utf8.encode("written here"));
    gates[0]!();
    await raw.waitFor(() => raw.frames().length === 1, "the Get");
    expect(new TextDecoder().decode((await other.get("g", k)).value)).toBe("written here");
    // The same for a load that finds nothing (its failure path also cleared the key).
    expect(a.cluster!.setMembers(ids)).toBe(true);
    raw.write(getCall(2, gone, "g"));
    await until(() => gates.length === 2, "the second load");
    expect(a.cluster!.setMembers([ids[0]!])).toBe(true);
    await other.set("g", gone, utf8.encode("written too"));
    gates[1]!();
    await raw.waitFor(() => raw.frames().length === 2, "the second Get");
    expect(new TextDecoder().decode((await other.get("g", gone)).value)).toBe("written too");
    // And for the keys of a GetMulti (the loader's value, and its "not found").
    expect(a.cluster!.setMembers(ids)).toBe(true);
    raw.write(getMultiCall(3, "g", [utf8.encode(k3), utf8.encode(gone3)]));
    await until(() => loading.includes(k3) && loading.includes(gone3), "the GetMulti's two loads");
    expect(a.cluster!.setMembers([ids[0]!])).toBe(true);
    await other.set("g", k3, utf8.encode("written three"));
    await other.set("g", gone3, utf8.encode("written four"));
    gates[2]!();
    gates[3]!();
    await raw.waitFor(() => raw.frames().length === 3, "the GetMulti");
    expect(new TextDecoder().decode((await other.get("g", k3)).value)).toBe("written three");
    expect(new TextDecoder().decode((await other.get("g", gone3)).value)).toBe("written four");
    raw.close();
  });
});
