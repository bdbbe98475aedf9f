/**
 * A peer's write of a key this node's member list gives to another member (the lists disagree
 * while a change spreads) is not stored here, and must not be acknowledged either: the key's
 * real owner may hold an older value, which every member reads once the write is acknowledged
 * (review: a Set forwarded by a node with the old list was answered success and dropped, and the
 * new owner's older value was read back after it, for good in a group without a TTL).
 */
import { afterEach, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
import { Ring } from "../../src/cluster/ring.ts";
import { ERROR_CODE } from "../../src/protocol/errors.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import { LogSink } from "../server/support.ts";
import { waitUntil } from "../support/gates.ts";
import { freePorts } from "../support/node-process.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const text = (b: Uint8Array): string => new TextDecoder().decode(b);

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((x) => x.close()));
});

/**
 * disagreeing starts A with the list [A, B] (it has not heard of C yet), B and C with [A, B, C],
 * and finds keys B owns under the first list and C under the second: A forwards their writes to
 * B, which gives them to C.
 */
async function disagreeing(): Promise<{ keys: string[]; nodes: CacheNode[]; via: [CacheClient, CacheClient, CacheClient] }> {
  const ports = freePorts(3);
  const ids = ports.map((p) => `127.0.0.1:${p}`);
  const [A, B, C] = ids as [string, string, string];
  const lists = [[A, B], [A, B, C], [A, B, C]];
  const nodes = ports.map((port, i) => {
    const n = CacheNode.start(
      { port, host: "127.0.0.1", peers: lists[i]!, logLevel: "silent", groups: [{ name: "g", ttlMs: 0 }] },
      { logger: new LogSink().logger },
    );
    open.push(n);
    return n;
  });
  await waitUntil(() => nodes.every((n, i) => n.cluster!.members.length === lists[i]!.length), "every list applied", 5_000);
  const two = new Ring();
  two.setMembers([A, B]);
  const three = new Ring();
  three.setMembers([A, B, C]);
  const enc = new TextEncoder();
  const keys: string[] = [];
  for (let i = 0; keys.length < 3; i++) {
    const k = enc.encode(`k${i}`);
    if (two.owner(k) === B && three.owner(k) === C) keys.push(`k${i}`);
  }
  const via = nodes.map((n) => {
    const c = new CacheClient({ host: "127.0.0.1", port: n.port, timeoutMs: 3_000 });
    open.push(c);
    return c;
  }) as [CacheClient, CacheClient, CacheClient];
  return { keys, nodes, via };
}

/** outcome is what a write's promise came to: "acknowledged", or the CacheError's code. */
function outcome(p: Promise<unknown>): Promise<string | number> {
  return p.then(() => "acknowledged", (e: { code: number }) => e.code);
}

test("a Set, Delete or SetMulti the node forwarded to does not own is refused, not acknowledged over the real owner's older value", async () => {
  const { keys: [setKey, delKey, multiKey], nodes, via: [viaA, , viaC] } = await disagreeing();
  for (const k of [setKey!, delKey!, multiKey!]) await viaC.set("g", k, "v1"); // stored by C, the owner by C's list

  const wrote = {
    set: await outcome(viaA.set("g", setKey!, "v2")), // A forwards to B (by A's list), B gives it to C
    del: await outcome(viaA.delete("g", delKey!)),
    multi: await outcome(viaA.setMulti("g", [[multiKey!, "v2"]])),
  };
  // A write acknowledged must be what the key's owner answers next; one not taken is an error.
  for (const [k, what] of [[setKey!, wrote.set], [multiKey!, wrote.multi]] as const) {
    const read = text((await viaC.get("g", k)).value);
    if (what === "acknowledged") expect(read).toBe("v2");
  }
  if (wrote.del === "acknowledged") await expect(viaC.get("g", delKey!)).rejects.toMatchObject({ code: ERROR_CODE.NOT_FOUND });
  expect(wrote).toEqual({ set: ERROR_CODE.PEER_UNAVAILABLE, del: ERROR_CODE.PEER_UNAVAILABLE, multi: ERROR_CODE.PEER_UNAVAILABLE });
  expect(nodes[1]!.cluster!.counters.foreignWrites).toBe(3);
  // The real owner kept what it had; B holds nothing of the keys.
  for (const k of [setKey!, delKey!, multiKey!]) expect(text((await viaC.get("g", k)).value)).toBe("v1");
  expect(nodes[1]!.groups.byName("g")!.store.size).toBe(0);
});

test("a SetMulti with keys of both kinds stores the node's own and refuses the foreign ones", async () => {
  const { keys: [foreignKey], nodes, via: [viaA, viaB] } = await disagreeing();
  const [A, B] = nodes.map((n) => n.cluster!.self) as [string, string];
  const two = new Ring();
  two.setMembers([A, B]);
  const three = new Ring();
  three.setMembers([A, B, nodes[2]!.cluster!.self]);
  const enc = new TextEncoder();
  let ownKey = "";
  for (let i = 0; ownKey === ""; i++) if (two.owner(enc.encode(`o${i}`)) === B && three.owner(enc.encode(`o${i}`)) === B) ownKey = `o${i}`;
  // One forwarded part for B: its own key is stored, the foreign one refused, and the call fails.
  expect(await outcome(viaA.setMulti("g", [[ownKey, "mine"], [foreignKey!, "not mine"]]))).toBe(ERROR_CODE.PEER_UNAVAILABLE);
  expect(text((await viaB.get("g", ownKey)).value)).toBe("mine");
});
