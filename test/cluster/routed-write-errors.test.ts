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
