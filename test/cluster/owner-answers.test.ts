/**
 * A call forwarded to its owner that the owner answers with an error (a Thrift exception, such as
 * UNKNOWN_METHOD from a member of another version, or its own declared PEER_UNAVAILABLE) was told
 * to the client as "owner X unreachable": false, the owner answered, and the operator looks at
 * the wrong thing. Each forwarded call (Set, Delete, SetMulti part, Get and GetMulti part without
 * a loader) now says how the owner failed it, and the owner is not marked down for answering; a
 * Clear tells the members that answered an error apart from those it could not reach.
 */
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { APP_ERROR, ERROR_CODE } from "../../src/protocol/errors.ts";
import {
  METHOD_PEER_CLEAR,
  METHOD_PEER_DELETE,
  METHOD_PEER_GET,
  METHOD_PEER_GET_MULTI,
  METHOD_PEER_SET,
  METHOD_PEER_SET_MULTI,
} from "../../src/protocol/request.ts";
import { appExceptionReply, cacheErrorReply } from "../client/support.ts";
import { keysOwnedBy, nodeBesideStub } from "../support/cluster-members.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((x) => x.close()));
});

const FAILING = new Set([METHOD_PEER_SET, METHOD_PEER_DELETE, METHOD_PEER_SET_MULTI, METHOD_PEER_GET, METHOD_PEER_GET_MULTI]);

const REFUSAL_TEXT = "owner y refused it without a reason: PeerSet failed: the server answered success=false, with no error";

/** Each way M answers the forwarded calls, and what A's client is told (`%s` is the call's name). */
const answers: [string, (name: string, seqid: number) => Uint8Array, string][] = [
  ["a TApplicationException UNKNOWN_METHOD", (n, s) => appExceptionReply(n, s, APP_ERROR.UNKNOWN_METHOD, `Invalid method name: '${n}'`),
    "answered, but could not serve it: %s failed: server exception UNKNOWN_METHOD (1): Invalid method name: '%s'"],
  ["a TApplicationException INTERNAL_ERROR", (n, s) => appExceptionReply(n, s, APP_ERROR.INTERNAL_ERROR, "boom"),
    "answered, but could not serve it: %s failed: server exception INTERNAL_ERROR (6): boom"],
  ["its own PEER_UNAVAILABLE", (n, s) => cacheErrorReply(n, s, ERROR_CODE.PEER_UNAVAILABLE, "owner y unreachable: timeout"),
    "answered PEER_UNAVAILABLE: owner y unreachable: timeout"],
  ["its own PEER_UNAVAILABLE, worded like a refusal", (n, s) => cacheErrorReply(n, s, ERROR_CODE.PEER_UNAVAILABLE, REFUSAL_TEXT),
    `answered PEER_UNAVAILABLE: ${REFUSAL_TEXT}`], // (not "refused it without a reason": the text is not the answer)
];

describe("an owner that answers a forwarded call with an error", () => {
  test.each(answers)("%s: the client is told the owner answered, not that it was unreachable; the owner is not marked down", async (_, answer, told) => {
    // M is a stub member that answers the forwarded calls with `answer`, the rest as a member would.
    const { a, m, ids, viaA } = nodeBesideStub(open, FAILING, (call) => answer(call.name, call.seqid));
    const [mine] = keysOwnedBy(a, ids[0]!, 1, "a") as [string];
    const [theirs] = keysOwnedBy(a, ids[1]!, 1, "m") as [string];
    const expected = (method: string) => ({
      name: "CacheError", code: ERROR_CODE.PEER_UNAVAILABLE, message: `owner ${ids[1]} ${told.replaceAll("%s", method)}`,
    });

    await expect(viaA.set("default", theirs, "v")).rejects.toMatchObject(expected("PeerSet"));
    await expect(viaA.delete("default", theirs)).rejects.toMatchObject(expected("PeerDelete"));
    await expect(viaA.setMulti("default", [[mine, "1"], [theirs, "2"]])).rejects.toMatchObject(expected("PeerSetMulti"));
    await expect(viaA.get("default", theirs)).rejects.toMatchObject(expected("PeerGet")); // (no loader to fall back on)
    await expect(viaA.getMulti("default", [mine, theirs])).rejects.toMatchObject(expected("PeerGetMulti"));

    expect(m.calls.filter((c) => FAILING.has(c.method)).map((c) => c.name)).toEqual(["PeerSet", "PeerDelete", "PeerSetMulti", "PeerGet", "PeerGetMulti"]);
    expect(a.cluster!.counters.peerErrors).toBe(5); // failed calls all the same: counted, one a call
    expect(a.cluster!.peersDown).toBe(0); // it answered every one: up (3 failures in a row, a peer client's default, mark it down)
    expect(a.cluster!.peer(ids[1]!)!.isDown).toBe(false);
  });
});

describe("a Clear a member answers with an error", () => {
  const clears: [string, (name: string, seqid: number) => Uint8Array, boolean, string][] = [
    ["a TApplicationException, beside a member not reached", (n, s) => appExceptionReply(n, s, APP_ERROR.UNKNOWN_METHOD, `Invalid method name: '${n}'`), true,
      "cleared here, but 1 of 2 peers could not be reached, and 1 of 2 answered an error (PeerClear failed: server exception UNKNOWN_METHOD (1): Invalid method name: 'PeerClear')"],
    ["its own PEER_UNAVAILABLE, worded like a refusal", (n, s) => cacheErrorReply(n, s, ERROR_CODE.PEER_UNAVAILABLE, REFUSAL_TEXT), false,
      `cleared here, but 1 of 1 peers answered an error (${REFUSAL_TEXT})`],
  ];
  test.each(clears)("%s: says it answered, not that it could not be reached or refused; owed all the same", async (_, answer, withUnreached, told) => {
    const { a, ids, viaA } = nodeBesideStub(open, new Set([METHOD_PEER_CLEAR]), (call) => answer(call.name, call.seqid), withUnreached);
    await expect(viaA.clear("default")).rejects.toMatchObject({ name: "CacheError", code: ERROR_CODE.PEER_UNAVAILABLE, message: told });
    expect(a.cluster!.owedMembers.toSorted()).toEqual(ids.slice(1).toSorted()); // (it did not clear: asked again to drop its copies)
    expect(a.cluster!.counters.peerErrors).toBe(ids.length - 1);
  });
});
