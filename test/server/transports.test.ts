/**
 * The four transports against a real node over raw sockets: every reply comes back in the
 * transport of its request (length prefix, header magic, flags and seqid echoed, Kitex inner
 * framing kept), ONEWAY calls are applied without a reply, unsupported header transforms and
 * protocols are refused with the right TApplicationException, and a connection that changes
 * transport mid-stream is closed.
 */
import { afterAll, beforeAll, describe, expect, test, setDefaultTimeout } from "bun:test";
import type { CacheNode } from "../../src/server/cache-node.ts";
import { Bytes, MSG, T, concat, framed, message, text, theader, ttheader, type HeaderOptions, type TransportName } from "../protocol/wire-builder.ts";
import { RawSocket, roundTrip, startNode } from "./support.ts";
import { field, outcome, readReplies, type Reply, type Struct } from "./wire-reader.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const APP = { PROTOCOL_ERROR: 7, INVALID_TRANSFORM: 8, INVALID_PROTOCOL: 9 } as const;

interface Variant {
  name: string;
  transport: TransportName;
  /** wraps a message; `seqid` goes into the header of header transports, as clients do */
  wrap(msg: Uint8Array, seqid: number, o?: HeaderOptions): Uint8Array;
  innerFramed?: boolean;
  flags?: number;
}

const VARIANTS: Variant[] = [
  { name: "framed", transport: "framed", wrap: (m) => framed(m) },
  { name: "buffered", transport: "buffered", wrap: (m) => m },
  {
    name: "Apache THeader", transport: "theader", flags: 0x0001,
    wrap: (m, seqid, o) => theader(m, { flags: 0x0001, seqid, info: [["client", "test"]], ...o }),
  },
  {
    name: "Kitex TTHeader", transport: "ttheader", flags: 0x0000,
    wrap: (m, seqid, o) => ttheader(m, { seqid, info: [["idl", "cache"]], intInfo: [[8, "caller"]], ...o }),
  },
  {
    name: "Kitex TTHeader, inner framed", transport: "ttheader", flags: 0x0000, innerFramed: true,
    wrap: (m, seqid, o) => ttheader(m, { seqid, innerFramed: true, ...o }),
  },
];

function setMessage(type: number, seqid: number, key: string, value: Uint8Array): Uint8Array {
  const body = new Bytes().field(T.STRUCT, 1)
    .field(T.STRING, 1).str("default")
    .field(T.STRING, 2).str(key)
    .field(T.STRING, 3).str(value)
    .field(T.I64, 4).i64(0)
    .stop().stop().bytes();
  return message(type, "Set", seqid, body);
}

function getMessage(seqid: number, key: string): Uint8Array {
  const body = new Bytes().field(T.STRUCT, 1).field(T.STRING, 1).str("default").field(T.STRING, 2).str(key).stop().stop().bytes();
  return message(MSG.CALL, "Get", seqid, body);
}

/** awaitReplies waits until `n` complete replies in `transport` have arrived and returns them. */
async function awaitReplies(raw: RawSocket, transport: TransportName, n: number): Promise<Reply[]> {
  await raw.waitFor(() => raw.isClosed || readReplies(raw.received, transport).replies.length >= n, `${n} ${transport} replies`);
  const { replies, rest } = readReplies(raw.received, transport);
  expect(replies.length).toBe(n);
  expect(rest).toBe(raw.received.length); // nothing partial or extra
  return replies;
}

/** expectEnvelope checks the transport layer of a reply against the request's variant. */
function expectEnvelope(r: Reply, v: Variant, seqid: number): void {
  if (v.transport === "theader" || v.transport === "ttheader") {
    expect(r.header).toEqual({
      magic: v.transport === "theader" ? 0x0fff : 0x1000,
      flags: v.flags ?? 0,
      seqid,
      protocolId: 0,
      transforms: 0,
      innerFramed: v.innerFramed ?? false,
    });
  } else {
    expect(r.header).toBeUndefined();
  }
}

function success(r: Reply): Struct {
  const o = outcome(r);
  if (o.kind !== "success") throw new Error(`expected success, got ${JSON.stringify(o)}`);
  return o.value;
}

let node: CacheNode;
beforeAll(() => {
  node = startNode();
});
afterAll(async () => {
  await node.close();
});

describe.each(VARIANTS)("$name", (v) => {
  test("a Set then a Get are answered in the same transport", async () => {
    const raw = await RawSocket.connect(node.port);
    const key = `k-${v.name}`;
    const value = Uint8Array.from({ length: 300 }, (_, i) => (i * 7) & 0xff);
    raw.write(v.wrap(setMessage(MSG.CALL, 11, key, value), 11));
    const [set] = await awaitReplies(raw, v.transport, 1);
    expectEnvelope(set!, v, 11);
    expect([set!.type, set!.name, set!.seqid]).toEqual([MSG.REPLY, "Set", 11]);
    expect(field(success(set!), 1, T.BOOL)).toBe(true);

    raw.write(v.wrap(getMessage(12, key), 12));
    const [, get] = await awaitReplies(raw, v.transport, 2);
    expectEnvelope(get!, v, 12);
    expect([get!.type, get!.name, get!.seqid]).toEqual([MSG.REPLY, "Get", 12]);
    const response = success(get!);
    expect(field(response, 1, T.STRING)).toEqual(value);
    expect(response.has(2)).toBe(false); // no TTL: ttlRemainingMs left out
    expect(raw.isClosed).toBe(false);
    raw.close();
  });

  test("a reply's header seqid follows the message seqid, not a stale one", async () => {
    const raw = await RawSocket.connect(node.port);
    // Two requests in one write, different seqids: each reply carries its own.
    raw.write(concat(v.wrap(getMessage(100, "absent-1"), 100), v.wrap(getMessage(0x7fffffff, "absent-2"), 0x7fffffff)));
    const replies = await awaitReplies(raw, v.transport, 2);
    expect(replies.map((r) => r.seqid)).toEqual([100, 0x7fffffff]);
    replies.forEach((r, i) => expectEnvelope(r, v, [100, 0x7fffffff][i]!));
    expect(replies.map((r) => outcome(r))).toEqual([
      { kind: "cacheError", code: 1, message: "key not found" },
      { kind: "cacheError", code: 1, message: "key not found" },
    ]);
    raw.close();
  });

  test("a ONEWAY Set gets no reply but is applied", async () => {
    const raw = await RawSocket.connect(node.port);
    const key = `oneway-${v.name}`;
    raw.write(v.wrap(setMessage(MSG.ONEWAY, 1, key, text("fire and forget")), 1));
    raw.write(v.wrap(getMessage(2, key), 2));
    const [first] = await awaitReplies(raw, v.transport, 1);
    expect([first!.name, first!.seqid]).toEqual(["Get", 2]);
    expect(field(success(first!), 1, T.STRING)).toEqual(text("fire and forget"));
    // One more round trip proves nothing else was queued between them.
    raw.write(v.wrap(getMessage(3, key), 3));
    const replies = await awaitReplies(raw, v.transport, 2);
    expect(replies.map((r) => [r.name, r.seqid])).toEqual([["Get", 2], ["Get", 3]]);
    raw.close();
  });
});

describe("header transports refuse what they cannot decode", () => {
  const CASES: [string, TransportName, Uint8Array, number][] = [
    ["THeader with the zlib transform", "theader", theader(getMessage(5, "k"), { seqid: 42, transforms: [1] }), APP.INVALID_TRANSFORM],
    ["THeader with two transforms", "theader", theader(getMessage(5, "k"), { seqid: 42, transforms: [1, 3] }), APP.INVALID_TRANSFORM],
    ["THeader with the compact protocol id", "theader", theader(getMessage(5, "k"), { seqid: 42, protocolId: 2 }), APP.INVALID_PROTOCOL],
    ["THeader with an unknown protocol id", "theader", theader(getMessage(5, "k"), { seqid: 42, protocolId: 7 }), APP.INVALID_PROTOCOL],
    ["TTHeader with the zlib transform", "ttheader", ttheader(getMessage(5, "k"), { seqid: 42, transforms: [1] }), APP.INVALID_TRANSFORM],
    ["TTHeader with the compact protocol id", "ttheader", ttheader(getMessage(5, "k"), { seqid: 42, protocolId: 2 }), APP.INVALID_PROTOCOL],
  ];
  test.each(CASES)("%s: TApplicationException, then the connection closes", async (_name, transport, bytes, type) => {
    const raw = await RawSocket.connect(node.port);
    raw.write(bytes);
    await raw.closed;
    const { replies, rest } = readReplies(raw.received, transport);
    expect(rest).toBe(raw.received.length);
    expect(replies.length).toBe(1);
    const r = replies[0]!;
    expect(r.header?.magic).toBe(transport === "theader" ? 0x0fff : 0x1000);
    expect(r.header?.seqid).toBe(42); // the message was never read: the header's seqid addresses it
    expect(r.type).toBe(MSG.EXCEPTION);
    const o = outcome(r);
    expect(o.kind === "appException" && o.type).toBe(type);
  });

  test("a refused header after a good request on the same connection", async () => {
    const raw = await RawSocket.connect(node.port);
    raw.write(theader(getMessage(1, "k"), { seqid: 1 }));
    await awaitReplies(raw, "theader", 1);
    raw.write(theader(getMessage(2, "k"), { seqid: 2, transforms: [1] }));
    await raw.closed;
    const { replies } = readReplies(raw.received, "theader");
    expect(replies.length).toBe(2);
    const o = outcome(replies[1]!);
    expect(o.kind === "appException" && o.type).toBe(APP.INVALID_TRANSFORM);
  });
});

describe("a connection that switches transport mid-stream is closed", () => {
  const BASE = VARIANTS.filter((v) => !v.innerFramed);
  const PAIRS = BASE.flatMap((a) => BASE.filter((b) => b !== a).map((b) => [a.name, b.name, a, b] as const));
  test.each(PAIRS)("%s, then %s", async (_a, _b, first, second) => {
    const errorsBefore = node.server.counters.protocolErrors;
    const raw = await RawSocket.connect(node.port);
    const key = `switch-${first.name}-${second.name}`;
    raw.write(first.wrap(setMessage(MSG.CALL, 1, key, text("v")), 1));
    await awaitReplies(raw, first.transport, 1);
    raw.write(second.wrap(getMessage(2, key), 2));
    await raw.closed;
    // The Get is answered with PROTOCOL_ERROR in the connection's (first) transport, then close.
    const { replies, rest } = readReplies(raw.received, first.transport);
    expect(rest).toBe(raw.received.length);
    expect(replies.length).toBe(2);
    const o = outcome(replies[1]!);
    expect(o.kind === "appException" && o.type).toBe(APP.PROTOCOL_ERROR);
    expect(node.server.counters.protocolErrors).toBe(errorsBefore + 1);
  });

  test("the node still serves after all of them", async () => {
    expect(await roundTrip(node.port)).toBe("ok");
  });
});
