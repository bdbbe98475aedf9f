/**
 * A bug thrown while a reply is being written (here a GetMulti's value copy, made to throw) is
 * answered INTERNAL_ERROR and closes the connection (faults.ts): the half-written reply is dropped
 * first, so the replies before it and the INTERNAL_ERROR reach the client well-formed. Before, the
 * exception followed the half reply, whose frame length was never patched: the client read garbage
 * (found with a GetMulti that read a freed item, fixed since: getmulti-expired-repeat.test.ts).
 */
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import type { CacheNode } from "../../src/server/cache-node.ts";
import { concat } from "../protocol/wire-builder.ts";
import { RawSocket, getMultiCall, setCall, startNode } from "./support.ts";
import { outcome, readReplies } from "./wire-reader.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const enc = new TextEncoder();
const open: CacheNode[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((n) => n.close()));
});

describe("a bug thrown in the middle of a reply", () => {
  test("drops the half reply: the replies before it, then INTERNAL_ERROR, all well-formed", async () => {
    const node = startNode();
    open.push(node);
    const store = node.groups.byName("default")!.store;
    const copy = store.copyValue.bind(store);
    let copies = 0;
    store.copyValue = (id, dst, off) => {
      if (++copies === 2) throw new Error("injected"); // (the GetMulti's second value)
      return copy(id, dst, off);
    };
    const keys = ["a", "b", "c"].map((k) => enc.encode(k));
    const raw = await RawSocket.connect(node.port);
    raw.write(concat(...keys.map((k, i) => setCall(i + 1, k, new Uint8Array(300).fill(i))), getMultiCall(9, "default", keys)));
    await raw.closed;
    const replies = readReplies(raw.received, "framed");
    expect(replies.rest).toBe(raw.received.length);
    expect(replies.replies.map((r) => [r.seqid, outcome(r).kind])).toEqual([[1, "success"], [2, "success"], [3, "success"], [9, "appException"]]);
    expect(outcome(replies.replies[3]!)).toMatchObject({ type: 6 });
  });
});
