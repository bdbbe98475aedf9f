/**
 * Review: a routed GetMulti matched the owner's answer back to the request's keys by their UTF-8
 * decoding (it looked each key up in a Map by `utf8.decode(key)`). Keys that are not valid UTF-8
 * all decode to U+FFFD, so distinct keys got each other's value. Now the answer is matched by the
 * keys' bytes (results.ts `valuesFor`), and the same GetMulti reads as when the owner serves it.
 */
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
import { startMembers } from "../support/cluster-members.ts";
import { T } from "../protocol/wire-builder.ts";
import { RawSocket, getMultiCall, replyHeader } from "../server/support.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((x) => x.close()));
});


/** readMap parses a GetMulti success reply into [key bytes as hex, value text] pairs. */
function readMap(frame: Uint8Array): [string, string][] {
  const h = replyHeader(frame);
  const dv = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  let p = h.body;
  expect(frame[p]).toBe(T.STRUCT); // field 0: success
  p += 3;
  expect(frame[p]).toBe(T.MAP);
  p += 3 + 2;
  const n = dv.getInt32(p);
  p += 4;
  const out: [string, string][] = [];
  for (let i = 0; i < n; i++) {
    const kl = dv.getInt32(p);
    const k = Buffer.from(frame.subarray(p + 4, p + 4 + kl)).toString("hex");
    p += 4 + kl;
    const vl = dv.getInt32(p);
    const v = new TextDecoder().decode(frame.subarray(p + 4, p + 4 + vl));
    p += 4 + vl;
    out.push([k, v]);
  }
  return out;
}

describe("routed GetMulti with keys that are not UTF-8", () => {
  test("each key gets its own value when the call is forwarded to the owner", async () => {
    const { nodes, ids } = startMembers(2, open, { peerTimeoutMs: 1000 });
    const [a] = nodes;
    // Two single-byte keys, invalid UTF-8, both owned by node b.
    const keys: Uint8Array[] = [];
    for (let x = 0x80; x <= 0xff && keys.length < 2; x++) {
      const k = Uint8Array.of(x);
      if (a!.cluster!.owner(k, 0, 1) === ids[1]) keys.push(k);
    }
    expect(keys.length).toBe(2);
    const owner = new CacheClient({ host: "127.0.0.1", port: nodes[1]!.port, timeoutMs: 2000 });
    open.push(owner);
    await owner.set("default", keys[0]!, "value-0", 0, { peer: true });
    await owner.set("default", keys[1]!, "value-1", 0, { peer: true });
    const expected = keys.map((k, i): [string, string] => [Buffer.from(k).toString("hex"), `value-${i}`]);

    // Control: asked of the owner directly.
    const direct = await RawSocket.connect(nodes[1]!.port);
    direct.write(getMultiCall(1, "default", keys));
    await direct.waitFor(() => direct.frames().length === 1, "direct reply");
    expect(readMap(direct.frames()[0]!)).toEqual(expected);
    direct.close();

    // Routed through node a.
    const routed = await RawSocket.connect(nodes[0]!.port);
    routed.write(getMultiCall(2, "default", keys));
    await routed.waitFor(() => routed.frames().length === 1, "routed reply");
    expect(readMap(routed.frames()[0]!)).toEqual(expected);
    routed.close();
  });
});
