/**
 * A write forwarded to an owner that cannot be reached is answered PEER_UNAVAILABLE naming the
 * owner, as a Get is ("peer is down" alone did not say which member, nor that it was the owner).
 */
import { afterEach, describe, expect, test } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
import { ERROR_CODE } from "../../src/protocol/errors.ts";
import { startMembers } from "../support/cluster-members.ts";

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
      expect(failed).toMatchObject({ code: ERROR_CODE.PEER_UNAVAILABLE });
      await viaC.set("default", key, `new${round}`); // the client's own later write, at the owner
    }
    await Bun.sleep(50); // anything the SetMulti left on its way would land by now
    for (const [round, key] of keys.entries()) {
      expect(new TextDecoder().decode((await viaC.get("default", key)).value)).toBe(`new${round}`);
    }
  });
});
