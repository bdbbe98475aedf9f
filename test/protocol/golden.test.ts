// Golden byte vectors: every method's call and reply, in framed, buffered, THeader and
// TTHeader form. Expected bytes are built by hand from the spec (wire-builder.ts) and, where
// the stock Apache `thrift` library can produce or read them, cross-checked against it.

import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { ProtocolConnection } from "../../src/protocol/protocol-connection.ts";
import { DEFAULT_LIMITS } from "../../src/protocol/limits.ts";
import { APP_ERROR, ERROR_CODE } from "../../src/protocol/errors.ts";
import { writeStats } from "../../src/protocol/figure-replies.ts";
import { METHOD_DELETE, METHOD_CLEAR, METHOD_GET, METHOD_GET_MULTI, METHOD_SET, METHOD_SET_MULTI, METHOD_STATS, METHOD_UNKNOWN } from "../../src/protocol/request.ts";
import { TRANSPORT_BUFFERED, TRANSPORT_FRAMED, TRANSPORT_THEADER, TRANSPORT_TTHEADER } from "../../src/protocol/wire.ts";
import { apacheCall, apacheReadReply } from "./apache-adapter.ts";
import { Bytes, MSG, T, TRANSPORTS, type TransportName, hex, message, text, wrap } from "./wire-builder.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const SEQID = 7;
const HEADER = { flags: 0x0001, seqid: SEQID };

const str = (b: Bytes, id: number, s: string | Uint8Array) => b.field(T.STRING, id).str(s);
/** args wraps a request struct body as the args struct `{1: req}`. */
const args = (req: Bytes) => new Bytes().field(T.STRUCT, 1).raw(req.out).stop().stop().bytes();

interface CallCase {
  name: string;
  method: number;
  apacheArgs: Record<string, unknown>;
  body: Uint8Array;
  check: (req: ProtocolConnection["request"]) => void;
}

const bytesOf = (req: ProtocolConnection["request"], start: number, length: number) => hex(req.buffer.subarray(start, start + length));

const CALLS: CallCase[] = [
  {
    name: "Get",
    method: METHOD_GET,
    apacheArgs: { group: "g1", key: "k1" },
    body: args(str(str(new Bytes(), 1, "g1"), 2, "k1")),
    check: (r) => {
      expect(bytesOf(r, r.groupStart, r.groupLength)).toBe(hex(text("g1")));
      expect(bytesOf(r, r.keyStart, r.keyLength)).toBe(hex(text("k1")));
    },
  },
  {
    name: "Set",
    method: METHOD_SET,
    apacheArgs: { group: "g1", key: "k1", value: Buffer.from([0, 1, 2, 255]), ttl: 60, ttlMs: 1500 },
    body: args(str(str(str(new Bytes(), 1, "g1"), 2, "k1"), 3, Uint8Array.of(0, 1, 2, 255)).field(T.I64, 4).i64(60).field(T.I64, 5).i64(1500)),
    check: (r) => {
      expect(bytesOf(r, r.keyStart, r.keyLength)).toBe(hex(text("k1")));
      expect(bytesOf(r, r.valueStart, r.valueLength)).toBe("000102ff");
      expect(r.ttlSeconds).toBe(60);
      expect(r.hasTtlMs).toBe(true);
      expect(r.ttlMs).toBe(1500);
      expect(r.effectiveTtlMs()).toBe(1500);
    },
  },
  {
    name: "Delete",
    method: METHOD_DELETE,
    apacheArgs: { group: "g1", key: "k1" },
    body: args(str(str(new Bytes(), 1, "g1"), 2, "k1")),
    check: (r) => expect(bytesOf(r, r.keyStart, r.keyLength)).toBe(hex(text("k1"))),
  },
  {
    name: "Clear",
    method: METHOD_CLEAR,
    apacheArgs: { group: "g1" },
    body: args(str(new Bytes(), 1, "g1")),
    check: (r) => expect(bytesOf(r, r.groupStart, r.groupLength)).toBe(hex(text("g1"))),
  },
  {
    name: "Stats",
    method: METHOD_STATS,
    apacheArgs: { group: "g1" },
    body: args(str(new Bytes(), 1, "g1")),
    check: (r) => expect(bytesOf(r, r.groupStart, r.groupLength)).toBe(hex(text("g1"))),
  },
  {
    name: "GetMulti",
    method: METHOD_GET_MULTI,
    apacheArgs: { group: "g1", keys: ["a", "bb"] },
    body: args(str(new Bytes(), 1, "g1").field(T.LIST, 2).u8(T.STRING).i32(2).str("a").str("bb")),
    check: (r) => {
      expect(r.itemCount).toBe(2);
      expect(bytesOf(r, r.items[0]!, r.items[1]!)).toBe(hex(text("a")));
      expect(bytesOf(r, r.items[4]!, r.items[5]!)).toBe(hex(text("bb")));
    },
  },
  {
    name: "SetMulti",
    method: METHOD_SET_MULTI,
    apacheArgs: { group: "g1", values: { a: Buffer.from("x"), bb: Buffer.from("yy") }, ttl: 3 },
    body: args(str(new Bytes(), 1, "g1").field(T.MAP, 2).u8(T.STRING, T.STRING).i32(2).str("a").str("x").str("bb").str("yy").field(T.I64, 3).i64(3)),
    check: (r) => {
      expect(r.itemCount).toBe(2);
      expect(bytesOf(r, r.items[0]!, r.items[1]!)).toBe(hex(text("a")));
      expect(bytesOf(r, r.items[2]!, r.items[3]!)).toBe(hex(text("x")));
      expect(bytesOf(r, r.items[4]!, r.items[5]!)).toBe(hex(text("bb")));
      expect(bytesOf(r, r.items[6]!, r.items[7]!)).toBe(hex(text("yy")));
      expect(r.ttlSeconds).toBe(3);
      expect(r.hasTtlMs).toBe(false);
      expect(r.effectiveTtlMs()).toBe(3000);
    },
  },
];

const TRANSPORT_IDS: Record<TransportName, number> = { framed: TRANSPORT_FRAMED, buffered: TRANSPORT_BUFFERED, theader: TRANSPORT_THEADER, ttheader: TRANSPORT_TTHEADER };

function decodeOne(bytes: Uint8Array): ProtocolConnection {
  const conn = new ProtocolConnection(DEFAULT_LIMITS);
  conn.push(bytes);
  expect(conn.nextRequest()).toBe(true);
  expect(conn.nextRequest()).toBe(false);
  return conn;
}

describe("golden calls", () => {
  for (const c of CALLS) {
    for (const transport of TRANSPORTS) {
      test(`${c.name} call, ${transport}`, () => {
        const bytes = wrap(transport, message(MSG.CALL, c.name, SEQID, c.body), HEADER);
        const { request: r } = decodeOne(bytes);
        expect(r.transport).toBe(TRANSPORT_IDS[transport]);
        expect(r.method).toBe(c.method);
        expect(r.seqid).toBe(SEQID);
        expect(r.oneway).toBe(false);
        expect(r.errorCode).toBe(0);
        if (transport === "theader" || transport === "ttheader") {
          expect(r.header.flags).toBe(HEADER.flags);
          expect(r.header.seqid).toBe(SEQID);
        }
        c.check(r);
      });
    }
    for (const transport of ["framed", "buffered"] as const) {
      test(`${c.name} call, ${transport}: hand-built bytes equal the Apache client's`, () => {
        const expected = wrap(transport, message(MSG.CALL, c.name, SEQID, c.body));
        expect(hex(apacheCall(transport, c.name, c.apacheArgs, SEQID))).toBe(hex(expected));
      });
    }
    test(`${c.name} call, THeader with info headers: hand-built bytes equal the Apache client's`, () => {
      // The Apache Node THeader client writes header seqid 0 and flags 0.
      const expected = wrap("theader", message(MSG.CALL, c.name, SEQID, c.body), { info: [["auth", "tok"]] });
      const got = apacheCall("theader", c.name, c.apacheArgs, SEQID, [["auth", "tok"]]);
      expect(hex(got)).toBe(hex(expected));
      const { request: r } = decodeOne(got);
      expect(r.header.stringCount).toBe(1);
      const s = r.header.strings;
      expect(Buffer.from(r.buffer.subarray(s[0]!, s[0]! + s[1]!)).toString()).toBe("auth");
      expect(Buffer.from(r.buffer.subarray(s[2]!, s[2]! + s[3]!)).toString()).toBe("tok");
      c.check(r);
    });
  }
});

interface ReplyCase {
  name: string;
  call: string;
  write: (conn: ProtocolConnection) => void;
  type: number;
  body: Uint8Array;
  apache: (got: { err: unknown; result: unknown }) => void;
}

const structField0 = (inner: Bytes) => new Bytes().field(T.STRUCT, 0).raw(inner.out).stop().stop().bytes();
const boolReply = (name: string): ReplyCase => ({
  name: `${name} success`,
  call: name,
  write: (conn) => conn.reply.writeSuccess(conn.request, true),
  type: MSG.REPLY,
  body: structField0(new Bytes().field(T.BOOL, 1).u8(1)),
  apache: (g) => expect((g.result as { success: boolean }).success).toBe(true),
});

const REPLIES: ReplyCase[] = [
  {
    name: "Get hit, no ttl",
    call: "Get",
    write: (conn) => {
      const at = conn.reply.beginGet(conn.request, 3);
      conn.reply.out.buffer.set([0x61, 0x00, 0xff], at);
      conn.reply.endGet(-1);
    },
    type: MSG.REPLY,
    body: structField0(new Bytes().field(T.STRING, 1).str(Uint8Array.of(0x61, 0, 0xff))),
    apache: (g) => expect(hex((g.result as { value: Buffer }).value)).toBe("6100ff"),
  },
  {
    name: "Get hit with ttlRemainingMs",
    call: "Get",
    write: (conn) => conn.reply.writeGet(conn.request, Uint8Array.of(9, 8, 7, 6), 1, 2, 2 ** 40 + 5),
    type: MSG.REPLY,
    body: structField0(new Bytes().field(T.STRING, 1).str(Uint8Array.of(8, 7)).field(T.I64, 2).i64(2 ** 40 + 5)),
    apache: (g) => {
      const r = g.result as { value: Buffer; ttlRemainingMs: { toNumber(): number } };
      expect(hex(r.value)).toBe("0807");
      expect(r.ttlRemainingMs.toNumber()).toBe(2 ** 40 + 5);
    },
  },
  boolReply("Set"),
  boolReply("Delete"),
  boolReply("Clear"),
  boolReply("SetMulti"),
  {
    name: "Stats",
    call: "Stats",
    write: (conn) => writeStats(conn.reply, conn.request, 1, 2, 3, 2 ** 50),
    type: MSG.REPLY,
    body: structField0(new Bytes().field(T.I64, 1).i64(1).field(T.I64, 2).i64(2).field(T.I64, 3).i64(3).field(T.I64, 4).i64(2 ** 50)),
    apache: (g) => expect((g.result as { totalCount: { toNumber(): number } }).totalCount.toNumber()).toBe(2 ** 50),
  },
  {
    name: "GetMulti",
    call: "GetMulti",
    write: (conn) => {
      const r = conn.reply;
      r.beginGetMulti(conn.request);
      let at = r.addGetMultiEntry(text("a"), 0, 1, 1);
      r.out.buffer[at] = 0x78;
      at = r.addGetMultiEntry(text("xbb"), 1, 2, 0);
      r.endGetMulti();
    },
    type: MSG.REPLY,
    body: structField0(new Bytes().field(T.MAP, 1).u8(T.STRING, T.STRING).i32(2).str("a").str("x").str("bb").str("")),
    apache: (g) => {
      const v = (g.result as { values: Record<string, Buffer> }).values;
      expect(Object.keys(v).sort()).toEqual(["a", "bb"]);
      expect(v.a!.toString()).toBe("x");
    },
  },
  {
    name: "CacheError",
    call: "Get",
    write: (conn) => conn.reply.writeCacheError(conn.request, ERROR_CODE.NOT_FOUND, "no such key: é"),
    type: MSG.REPLY,
    body: new Bytes().field(T.STRUCT, 1).field(T.I32, 1).i32(1).field(T.STRING, 2).str("no such key: é").stop().stop().bytes(),
    apache: (g) => {
      const e = g.err as { code: number; message: string };
      expect(e.code).toBe(1);
      expect(e.message).toBe("no such key: é");
    },
  },
  {
    name: "TApplicationException",
    call: "Set",
    write: (conn) => conn.reply.writeApplicationException(conn.request, APP_ERROR.INTERNAL_ERROR, "boom"),
    type: MSG.EXCEPTION,
    body: new Bytes().field(T.STRING, 1).str("boom").field(T.I32, 2).i32(6).stop().bytes(),
    apache: (g) => {
      const e = g.err as { type: number; message: string };
      expect(e.type).toBe(6);
      expect(e.message).toBe("boom");
    },
  },
];

const callBody = (name: string) => CALLS.find((c) => c.name === name)!.body;

describe("golden replies", () => {
  for (const c of REPLIES) {
    for (const transport of TRANSPORTS) {
      for (const innerFramed of transport === "ttheader" ? [false, true] : [false]) {
        test(`${c.name} reply, ${transport}${innerFramed ? " (Kitex TTHeaderFramed)" : ""}`, () => {
          const conn = decodeOne(wrap(transport, message(MSG.CALL, c.call, SEQID, callBody(c.call)), { ...HEADER, info: [["k", "v"]], innerFramed }));
          c.write(conn);
          const replyMsg = message(c.type, c.call, SEQID, c.body);
          // The reply echoes flags, carries the seqid, and no info headers.
          const expected = wrap(transport, replyMsg, { ...HEADER, innerFramed });
          const out = conn.reply.out;
          expect(hex(out.buffer.subarray(0, out.length))).toBe(hex(expected));
          c.apache(apacheReadReply(replyMsg));
        });
      }
    }
  }

  test("unknown method: the reply echoes the name bytes and the seqid", () => {
    const conn = decodeOne(wrap("framed", message(MSG.CALL, "Frobnicate", 42, new Bytes().stop().bytes())));
    expect(conn.request.method).toBe(METHOD_UNKNOWN);
    conn.reply.writeApplicationException(conn.request, APP_ERROR.UNKNOWN_METHOD, "unknown method Frobnicate");
    const body = new Bytes().field(T.STRING, 1).str("unknown method Frobnicate").field(T.I32, 2).i32(1).stop().bytes();
    const out = conn.reply.out;
    expect(hex(out.buffer.subarray(0, out.length))).toBe(hex(wrap("framed", message(MSG.EXCEPTION, "Frobnicate", 42, body))));
  });
});
