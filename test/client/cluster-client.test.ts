/**
 * What ClusterClient does when a key's owner fails a call: a read is asked once more through
 * another member on any PEER_UNAVAILABLE, the owner's answered ones included (that member
 * forwards it, and on the owner failing it again loads it itself, as a node does for any client);
 * a write is made once, and its failure is the caller's (one the owner answered would only be
 * forwarded to the same owner, and one that timed out may have been applied).
 */
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { ClusterClient } from "../../src/client/cluster-client.ts";
import { APP_ERROR, CacheError, ERROR_CODE } from "../../src/protocol/errors.ts";
import { METHOD_GET, METHOD_GET_MULTI, baseMethod } from "../../src/protocol/request.ts";
import { StubServer, appExceptionReply, cacheErrorReply, serve } from "./support.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const open: { close(): unknown }[] = [];
afterEach(async () => {
  for (const x of open.splice(0)) await x.close();
});

const utf8 = new TextEncoder();
const text = new TextDecoder();

/** OWNER_FAILURES: how the owner fails a call; null is no answer (the client's timeout). */
const OWNER_FAILURES: readonly { name: string; answer: ((name: string, seqid: number) => Uint8Array) | null }[] = [
  { name: "a Thrift exception", answer: (n, s) => appExceptionReply(n, s, APP_ERROR.INTERNAL_ERROR, "boom") },
  { name: "its own PEER_UNAVAILABLE", answer: (n, s) => cacheErrorReply(n, s, ERROR_CODE.PEER_UNAVAILABLE, "owner 10.0.0.9:8001 unreachable: timeout") },
  { name: "no answer (timeout)", answer: null },
];

/**
 * cluster is a ClusterClient of two stubs, `owner`, which fails every call as `fail` says, and
 * `other`, which serves them; `key` is owned by `owner`, and `other` holds it as `v:<key>`.
 */
function cluster(fail: ((name: string, seqid: number) => Uint8Array) | null): { cc: ClusterClient; owner: StubServer; other: StubServer; key: string } {
  const owner = new StubServer();
  const other = new StubServer();
  open.push(owner, other);
  owner.handler = (call) => (fail === null ? null : fail(call.name, call.seqid));
  other.handler = (call, stub) => serve(call, stub);
  const ownerId = `127.0.0.1:${owner.port}`;
  const cc = new ClusterClient({ members: [ownerId, `127.0.0.1:${other.port}`], client: { connections: 1, timeoutMs: 150, maxFailures: 1000 } });
  open.push(cc);
  let key = "";
  for (let i = 0; key === ""; i++) if (cc.ownerOf(`key-${i}`) === ownerId) key = `key-${i}`;
  other.store.set(`g/${key}`, utf8.encode(`v:${key}`));
  return { cc, owner, other, key };
}

async function failure(p: Promise<unknown>): Promise<CacheError> {
  const e = await p.then(() => undefined, (x: unknown) => x);
  if (!(e instanceof CacheError)) throw new Error(`expected a CacheError, got ${String(e)}`);
  return e;
}

describe("a read whose owner fails it PEER_UNAVAILABLE is asked once more through another member", () => {
  for (const f of OWNER_FAILURES) {
    test(`the owner: ${f.name}`, async () => {
      const { cc, owner, other, key } = cluster(f.answer);
      expect(text.decode((await cc.get("g", key)).value)).toBe(`v:${key}`);
      expect(text.decode((await cc.getMulti("g", [key])).get(key))).toBe(`v:${key}`);
      expect(owner.calls.map((c) => baseMethod(c.method))).toEqual([METHOD_GET, METHOD_GET_MULTI]);
      expect(other.calls.map((c) => baseMethod(c.method))).toEqual([METHOD_GET, METHOD_GET_MULTI]);
    });
  }

  test("but not an error of another code: the owner's answer is the answer", async () => {
    const { cc, other, key } = cluster((n, s) => cacheErrorReply(n, s, ERROR_CODE.LOAD_FAILED, "loader threw"));
    expect((await failure(cc.get("g", key))).code).toBe(ERROR_CODE.LOAD_FAILED);
    expect(other.calls).toEqual([]);
  });
});

describe("a write the owner fails is made once: its failure goes back to the caller", () => {
  // Through another member it would be forwarded to the same owner; after a timeout it may have
  // been applied already.
  for (const f of OWNER_FAILURES) {
    test(`the owner: ${f.name}`, async () => {
      const { cc, owner, other, key } = cluster(f.answer);
      const writes = [
        () => cc.set("g", key, "v2"),
        () => cc.delete("g", key),
        () => cc.setMulti("g", [[key, "v3"]]),
        () => cc.clear("g"), // (asked of the first member up: the owner, listed first)
      ];
      for (const write of writes) expect((await failure(write())).code).toBe(ERROR_CODE.PEER_UNAVAILABLE);
      expect(owner.calls.length).toBe(4);
      expect(other.calls).toEqual([]);
      expect(text.decode(other.store.get(`g/${key}`))).toBe(`v:${key}`);
    });
  }
});

test("a member list past the ring's 65,536 members throws RangeError and changes nothing: the members before still serve (review: the old members' clients were closed and dropped first, and every call then failed with a TypeError)", async () => {
  const member = new StubServer();
  open.push(member);
  const id = `127.0.0.1:${member.port}`;
  member.store.set("g/k", utf8.encode("v"));
  const cc = new ClusterClient({ members: [id], client: { connections: 1, timeoutMs: 1000 } });
  open.push(cc);
  const tooMany = Array.from({ length: 65_537 }, (_, i) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}:8001`);
  expect(() => cc.setMembers(tooMany)).toThrow(RangeError);
  expect(cc.ownerOf("k")).toBe(id);
  expect(text.decode((await cc.get("g", "k")).value)).toBe("v");
}, 120_000); // (the code before made a client for each of the 65,537 ids first: ~25 s)
