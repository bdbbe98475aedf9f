/**
 * Where a PEER_UNAVAILABLE came from is a field of the CacheError (origin, and appErrorType for a
 * Thrift exception), not something read in its message: a peer's declared CacheError may say
 * anything, and one that merely quotes the text of a refusal or of an UNKNOWN_METHOD (a node
 * passing on what its own peer answered) is neither (isRefusedWithoutReason, isUnknownMethod
 * read the message and took it for one).
 */
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient, isUnknownMethod } from "../../src/client/cache-client.ts";
import { ClusterClient } from "../../src/client/cluster-client.ts";
import { isRefusedWithoutReason } from "../../src/client/results.ts";
import { APP_ERROR, CacheError, ERROR_CODE, ERROR_ORIGIN, type ErrorOrigin } from "../../src/protocol/errors.ts";
import { StubServer, appExceptionReply, boolReply, cacheErrorReply, closedPort } from "./support.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const open: { close(): unknown }[] = [];
afterEach(async () => {
  for (const x of open.splice(0)) await x.close();
});

const REFUSED_TEXT = "PeerSet failed: the server answered success=false, with no error";
const UNKNOWN_METHOD_TEXT = "PeerSet failed: server exception UNKNOWN_METHOD (1): Invalid method name: 'PeerSet'";

/** stubAnswering is a stub that answers every call with `answer`. */
function stubAnswering(answer: (name: string, seqid: number) => Uint8Array | null): StubServer {
  const s = new StubServer();
  open.push({ close: () => s.close() });
  s.handler = (call) => answer(call.name, call.seqid);
  return s;
}

function client(port: number, timeoutMs = 2000): CacheClient {
  const c = new CacheClient({ host: "127.0.0.1", port, connections: 1, timeoutMs, maxFailures: 100 });
  open.push(c);
  return c;
}

async function failure(p: Promise<unknown>): Promise<CacheError> {
  const e = await p.then(() => undefined, (x: unknown) => x);
  if (!(e instanceof CacheError)) throw new Error(`expected a CacheError, got ${String(e)}`);
  return e;
}

interface Case {
  answer: (name: string, seqid: number) => Uint8Array | null;
  origin: ErrorOrigin;
  appErrorType: number;
  unknownMethod: boolean;
  refused: boolean;
  message: string;
}

const answered: [string, Case][] = [
  ["a declared PEER_UNAVAILABLE ending like a refusal", {
    answer: (n, s) => cacheErrorReply(n, s, ERROR_CODE.PEER_UNAVAILABLE, `owner x refused it without a reason: ${REFUSED_TEXT}`),
    origin: ERROR_ORIGIN.DECLARED, appErrorType: -1, unknownMethod: false, refused: false,
    message: `owner x refused it without a reason: ${REFUSED_TEXT}`,
  }],
  ["a declared PEER_UNAVAILABLE quoting an UNKNOWN_METHOD", {
    answer: (n, s) => cacheErrorReply(n, s, ERROR_CODE.PEER_UNAVAILABLE, `owner x failed: ${UNKNOWN_METHOD_TEXT}`),
    origin: ERROR_ORIGIN.DECLARED, appErrorType: -1, unknownMethod: false, refused: false,
    message: `owner x failed: ${UNKNOWN_METHOD_TEXT}`,
  }],
  ["a seed-told PEER_UNAVAILABLE (INTERNAL_ERROR naming the code)", {
    answer: (n, s) => appExceptionReply(n, s, APP_ERROR.INTERNAL_ERROR, `PEER_UNAVAILABLE (7): ${REFUSED_TEXT}`),
    origin: ERROR_ORIGIN.DECLARED, appErrorType: -1, unknownMethod: false, refused: false, message: REFUSED_TEXT,
  }],
  ["a TApplicationException UNKNOWN_METHOD", {
    answer: (n, s) => appExceptionReply(n, s, APP_ERROR.UNKNOWN_METHOD, `Invalid method name: '${n}'`),
    origin: ERROR_ORIGIN.APP_EXCEPTION, appErrorType: APP_ERROR.UNKNOWN_METHOD, unknownMethod: true, refused: false, message: UNKNOWN_METHOD_TEXT,
  }],
  ["a TApplicationException INTERNAL_ERROR", {
    answer: (n, s) => appExceptionReply(n, s, APP_ERROR.INTERNAL_ERROR, "boom"),
    origin: ERROR_ORIGIN.APP_EXCEPTION, appErrorType: APP_ERROR.INTERNAL_ERROR, unknownMethod: false, refused: false,
    message: "PeerSet failed: server exception INTERNAL_ERROR (6): boom",
  }],
  ["success=false, with no error", {
    answer: (n, s) => boolReply(n, s, false),
    origin: ERROR_ORIGIN.REFUSED, appErrorType: -1, unknownMethod: false, refused: true, message: REFUSED_TEXT,
  }],
];

describe("a PeerSet's PEER_UNAVAILABLE tells by its origin how the peer answered, whatever its message", () => {
  test.each(answered)("%s", async (_, c) => {
    const e = await failure(client(stubAnswering(c.answer).port).set("g", "k", "v", 1000, { peer: true }));
    expect({ code: e.code, message: e.message, origin: e.origin, appErrorType: e.appErrorType }).toEqual({
      code: ERROR_CODE.PEER_UNAVAILABLE, message: c.message, origin: c.origin, appErrorType: c.appErrorType,
    });
    expect(isUnknownMethod(e)).toBe(c.unknownMethod);
    expect(isRefusedWithoutReason(e)).toBe(c.refused);
  });
});

describe("a call not answered is PEER_UNAVAILABLE of origin UNANSWERED", () => {
  const unanswered = (e: CacheError): void => {
    expect({ code: e.code, origin: e.origin, appErrorType: e.appErrorType }).toEqual({
      code: ERROR_CODE.PEER_UNAVAILABLE, origin: ERROR_ORIGIN.UNANSWERED, appErrorType: -1,
    });
    expect(isRefusedWithoutReason(e)).toBe(false);
    expect(isUnknownMethod(e)).toBe(false);
  };

  test("timeout", async () => {
    const e = await failure(client(stubAnswering(() => null).port, 100).set("g", "k", "v"));
    expect(e.message).toContain("timeout");
    unanswered(e);
  });

  test("nothing listening", async () => {
    unanswered(await failure(client(closedPort()).set("g", "k", "v")));
  });

  test("peer is down", async () => {
    const c = new CacheClient({ host: "127.0.0.1", port: closedPort(), connections: 1, maxFailures: 1 });
    open.push(c);
    await failure(c.set("g", "k", "v"));
    expect(c.isDown).toBe(true);
    const e = await failure(c.set("g", "k", "v"));
    expect(e.message).toBe("peer is down");
    unanswered(e);
  });

  test("client closed, a CacheClient's and a ClusterClient's", async () => {
    const c = client(stubAnswering(() => null).port);
    const pending = failure(c.set("g", "k", "v"));
    await c.close();
    const e = await pending;
    expect(e.message).toBe("client closed");
    unanswered(e);
    unanswered(await failure(c.set("g", "k", "v")));

    const cc = new ClusterClient({ members: [`127.0.0.1:${closedPort()}`] });
    await cc.close();
    unanswered(await failure(cc.set("g", "k", "v")));
  });
});
