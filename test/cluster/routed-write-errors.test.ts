/**
 * A write forwarded to an owner that cannot be reached is answered PEER_UNAVAILABLE naming the
 * owner, as a Get is ("peer is down" alone did not say which member, nor that it was the owner);
 * so is one a member answers success=false (it did not do it), which is not counted as done. An
 * entry of a routed SetMulti that this node's own store refuses reads as a lone node's refusal.
 */
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
import { type CacheError, ERROR_CODE } from "../../src/protocol/errors.ts";
import { METHOD_PEER_CLEAR, METHOD_PEER_SET, METHOD_PEER_SET_MULTI } from "../../src/protocol/request.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import { boolReply } from "../client/support.ts";
import { LogSink } from "../server/support.ts";
import { keysOwnedBy, nodeBesideStub, startMembers } from "../support/cluster-members.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((x) => x.close()));
});

describe("a write forwarded to an unreachable owner", () => {
  test("is PEER_UNAVAILABLE naming the owner, before and after it is marked down", async () => {
    const { nodes, ids } = startMembers(2, open, { peerTimeoutMs: 300 });
    const [a, b] = nodes as [typeof nodes[0], typeof nodes[0]];
    const enc = new TextEncoder();
    let key = "";
    for (let i = 0; key === ""; i++) if (a.cluster!.owner(enc.encode(`k${i}`), 0, `k${i}`.length) === ids[1]) key = `k${i}`;
    await b.close();
    const client = new CacheClient({ host: "127.0.0.1", port: a.port, timeoutMs: 2000 });
    open.push(client);
    for (let i = 0; i < 5; i++) { // the first failures, then "peer is down"
      await expect(client.set("default", key, "v")).rejects.toMatchObject({
        code: ERROR_CODE.PEER_UNAVAILABLE, message: expect.stringContaining(`owner ${ids[1]} unreachable`),
      });
      await expect(client.delete("default", key)).rejects.toMatchObject({ code: ERROR_CODE.PEER_UNAVAILABLE, message: expect.stringContaining(`owner ${ids[1]}`) });
    }
  });
});

describe("a routed SetMulti with a part for an unreachable owner", () => {
  test("is answered only once its other parts have landed: a write after the answer is not overwritten", async () => {
    const { nodes, ids } = startMembers(3, open);
    const [a, b, c] = nodes as [typeof nodes[0], typeof nodes[0], typeof nodes[0]];
    const enc = new TextEncoder();
    const ownedBy = (id: string, prefix: string, n: number): string[] => {
      const keys: string[] = [];
      for (let i = 0; keys.length < n; i++) if (a.cluster!.owner(enc.encode(`${prefix}${i}`), 0, `${prefix}${i}`.length) === id) keys.push(`${prefix}${i}`);
      return keys;
    };
    const [down] = ownedBy(ids[1]!, "b", 1) as [string];
    const keys = ownedBy(ids[2]!, "c", 8);
    await b.close(); // still a member: its part fails at once ("peer is down" once marked)
    const viaA = new CacheClient({ host: "127.0.0.1", port: a.port, timeoutMs: 2000 });
    const viaC = new CacheClient({ host: "127.0.0.1", port: c.port, timeoutMs: 2000 });
    open.push(viaA, viaC);
    for (let i = 0; i < 5; i++) await viaA.get("default", down).catch(() => {}); // A marks it down
    for (const [round, key] of keys.entries()) {
      const failed = await viaA.setMulti("default", [[down, "x"], [key, `old${round}`]]).then(() => undefined, (e: unknown) => e);
      expect(failed).toMatchObject({ code: ERROR_CODE.PEER_UNAVAILABLE, message: expect.stringContaining(`owner ${ids[1]} unreachable: `) }); // (named, as a Set's)
      await viaC.set("default", key, `new${round}`); // the client's own later write, at the owner
    }
    await Bun.sleep(50); // anything the SetMulti left on its way would land by now
    for (const [round, key] of keys.entries()) {
      expect(new TextDecoder().decode((await viaC.get("default", key)).value)).toBe(`new${round}`);
    }
  });
});

describe("a routed SetMulti's entry this node's store refuses", () => {
  test("reads as the same refusal through a lone node: the same CacheError code and message", async () => {
    // A value of the max item size passes the protocol's value limit, but with its key and the
    // chunk header it is too large for the store.
    const config = { maxItemSize: 64 * 1024 };
    const big = new Uint8Array(64 * 1024);
    const refusal = async (port: number, entries: [string, string | Uint8Array][]): Promise<unknown> => {
      const c = new CacheClient({ host: "127.0.0.1", port, timeoutMs: 2000 });
      open.push(c);
      return c.setMulti("default", entries).then(() => undefined, (e: unknown) => e);
    };
    const lone = CacheNode.start({ port: 0, logLevel: "silent", ...config }, { logger: new LogSink().logger });
    open.push(lone);
    const alone = await refusal(lone.port, [["k", big]]);
    expect(alone).toMatchObject({ name: "CacheError", code: ERROR_CODE.VALUE_TOO_LARGE });

    const { nodes, ids } = startMembers(2, open, config);
    const a = nodes[0]!;
    const [mine] = keysOwnedBy(a, ids[0]!, 1, "a") as [string];
    const [theirs] = keysOwnedBy(a, ids[1]!, 1, "b") as [string];
    const routed = await refusal(a.port, [[mine, big], [theirs, "v"]]); // routed: this node's part is stored by Group.set
    const { code, message } = alone as CacheError;
    expect(routed).toMatchObject({ name: "CacheError", code, message });
  });
});

describe("a member that answers a forwarded write success=false, with no error", () => {
  test("has not acknowledged it: the Set, SetMulti and Clear through another node fail PEER_UNAVAILABLE, and their entries are not counted as sets (they were acknowledged, and counted)", async () => {
    // M is a stub member that answers PeerSet, PeerSetMulti and PeerClear success=false, the rest as a member would.
    const { a, m, ids, viaA } = nodeBesideStub(open, FAILING, (call) => boolReply(call.name, call.seqid, false));
    const [mine] = keysOwnedBy(a, ids[0]!, 1, "a") as [string];
    const [theirs] = keysOwnedBy(a, ids[1]!, 1, "m") as [string];
    const counters = a.groups.byName("default")!.counters;
    const refused = { name: "CacheError", code: ERROR_CODE.PEER_UNAVAILABLE };

    // M answered: the errors say it refused, not that it was unreachable.
    await expect(viaA.set("default", theirs, "v")).rejects.toMatchObject({
      ...refused, message: `owner ${ids[1]} refused it without a reason: PeerSet failed: the server answered success=false, with no error`,
    });
    await expect(viaA.setMulti("default", [[mine, "1"], [theirs, "2"]])).rejects.toMatchObject({
      ...refused, message: `owner ${ids[1]} refused it without a reason: PeerSetMulti failed: the server answered success=false, with no error`,
    });
    expect(counters.sets).toBe(1); // the SetMulti's entry A owns, stored here; none of M's
    expect(new TextDecoder().decode((await viaA.get("default", mine)).value)).toBe("1");

    await expect(viaA.clear("default")).rejects.toMatchObject({ ...refused, message: "cleared here, but 1 of 1 peers refused it without a reason (answered success=false)" });
    expect(a.cluster!.owedMembers).toEqual([ids[1]!]); // to be asked again to drop its copies
    expect(a.cluster!.counters.peerErrors).toBe(3); // one a call
    expect(m.calls.filter((c) => FAILING.has(c.method)).map((c) => c.name)).toEqual(["PeerSet", "PeerSetMulti", "PeerClear"]);
  });

  test("a Clear that one member refuses so and another does not get says which is which, both owed", async () => {
    const { a, ids, viaA } = nodeBesideStub(open, FAILING, (call) => boolReply(call.name, call.seqid, false), true);
    await expect(viaA.clear("default")).rejects.toMatchObject({
      name: "CacheError", code: ERROR_CODE.PEER_UNAVAILABLE,
      message: "cleared here, but 1 of 2 peers could not be reached, and 1 of 2 refused it without a reason (answered success=false)",
    });
    expect(a.cluster!.owedMembers.toSorted()).toEqual([ids[1]!, ids[2]!].toSorted());
    expect(a.cluster!.counters.peerErrors).toBe(2);
  });
});

const FAILING = new Set([METHOD_PEER_SET, METHOD_PEER_SET_MULTI, METHOD_PEER_CLEAR]);
