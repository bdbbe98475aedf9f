// RequestDecoder and BinaryReader: skip of every type, type mismatches, every limit, message
// types, i64 handling. Table-driven through the pure decodeMessage().

import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { decodeMessage } from "../../src/protocol/decode-message.ts";
import { BinaryReader } from "../../src/protocol/binary-reader.ts";
import { APP_ERROR, CacheError, ERROR_CODE, ProtocolError } from "../../src/protocol/errors.ts";
import { DEFAULT_LIMITS, resolveLimits } from "../../src/protocol/limits.ts";
import { ProtocolConnection } from "../../src/protocol/protocol-connection.ts";
import { METHOD_GET, METHOD_GET_MULTI, METHOD_SET, METHOD_UNKNOWN } from "../../src/protocol/request.ts";
import { Bytes, MSG, T, TRANSPORTS, concat, hex, message, text, wrap } from "./wire-builder.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

/** One value of every type, as [type, encoded bytes]. */
const VALUES: [string, number, (b: Bytes) => Bytes][] = [
  ["bool", T.BOOL, (b) => b.u8(1)],
  ["byte", T.BYTE, (b) => b.u8(0xfe)],
  ["double", T.DOUBLE, (b) => b.i32(0x400921fb).i32(0x54442d18)],
  ["i16", T.I16, (b) => b.i16(-2)],
  ["i32", T.I32, (b) => b.i32(-3)],
  ["i64", T.I64, (b) => b.i64(-4)],
  ["string", T.STRING, (b) => b.str("hello")],
  ["uuid", T.UUID, (b) => b.raw(new Uint8Array(16).fill(7))],
  ["struct", T.STRUCT, (b) => b.field(T.I32, 1).i32(1).field(T.STRING, 2).str("x").field(T.STRUCT, 3).stop().stop()],
  ["list<i32>", T.LIST, (b) => b.u8(T.I32).i32(3).i32(1).i32(2).i32(3)],
  ["set<string>", T.SET, (b) => b.u8(T.STRING).i32(2).str("a").str("b")],
  ["map<i64,double>", T.MAP, (b) => b.u8(T.I64, T.DOUBLE).i32(1).i64(1).i64(2)],
  ["map<string,list<map<i16,struct>>>", T.MAP, (b) => b.u8(T.STRING, T.LIST).i32(1).str("k").u8(T.MAP).i32(2).u8(T.I16, T.STRUCT).i32(1).i16(1).stop().u8(T.I16, T.STRUCT).i32(0)],
  ["list<list<bool>>", T.LIST, (b) => b.u8(T.LIST).i32(2).u8(T.BOOL).i32(2).u8(1, 0).u8(T.BOOL).i32(0)],
  ["empty map", T.MAP, (b) => b.u8(T.STRING, T.STRING).i32(0)],
];

/** getWith builds a Get call whose request struct has `extra` fields after group and key. */
function getWith(extra: (b: Bytes) => Bytes, argsExtra: (b: Bytes) => Bytes = (b) => b): Uint8Array {
  const req = extra(new Bytes().field(T.STRING, 1).str("g").field(T.STRING, 2).str("key"));
  return message(MSG.CALL, "Get", 1, argsExtra(new Bytes()).field(T.STRUCT, 1).raw(req.out).stop().stop().bytes());
}

function expectRequest(bytes: Uint8Array, limits?: Parameters<typeof decodeMessage>[1]) {
  const r = decodeMessage(bytes, limits);
  if (r.kind !== "request") throw new Error(`expected a request, got ${r.kind}: ${r.kind === "error" ? r.error.message : ""}`);
  return r;
}

function expectProtocolError(bytes: Uint8Array, type: number = APP_ERROR.PROTOCOL_ERROR, limits?: Parameters<typeof decodeMessage>[1]): ProtocolError {
  const r = decodeMessage(bytes, limits);
  if (r.kind !== "error" || !(r.error instanceof ProtocolError)) throw new Error(`expected a protocol error, got ${r.kind}`);
  expect(r.error.type as number).toBe(type);
  return r.error;
}

function expectCacheError(bytes: Uint8Array, code: number, limits?: Parameters<typeof decodeMessage>[1]): void {
  const r = decodeMessage(bytes, limits);
  if (r.kind !== "error" || !(r.error instanceof CacheError)) throw new Error(`expected a cache error, got ${r.kind}`);
  expect(r.error.code).toBe(code as never);
}

describe("skip", () => {
  for (const [name, type, write] of VALUES) {
    test(`unknown field of type ${name} is skipped, in the request struct and in the args struct`, () => {
      for (const transport of TRANSPORTS) {
        const bytes = wrap(transport, getWith((b) => write(b.field(type, 77)), (b) => write(b.field(type, 5))));
        const r = expectRequest(bytes);
        expect(r.method).toBe(METHOD_GET);
        expect(hex(r.key)).toBe(hex(text("key")));
        expect(r.consumed).toBe(bytes.length);
      }
    });
    test(`BinaryReader.skip consumes exactly one ${name}`, () => {
      const bytes = write(new Bytes()).u8(0xaa).bytes();
      const reader = new BinaryReader(64);
      reader.reset(bytes, 0, bytes.length);
      reader.skip(type, 1);
      expect(reader.pos).toBe(bytes.length - 1);
    });
  }

  test("known field ids with the wrong type are skipped (read as absent)", () => {
    const req = new Bytes().field(T.I32, 1).i32(5).field(T.LIST, 2).u8(T.STRING).i32(1).str("x").stop();
    const r = expectRequest(message(MSG.CALL, "Get", 1, new Bytes().field(T.STRUCT, 1).raw(req.out).stop().bytes()));
    expect(r.group.length).toBe(0);
    expect(r.key.length).toBe(0);
  });

  test("GetMulti keys as list<i32> or set<string> are skipped", () => {
    for (const keys of [(b: Bytes) => b.field(T.LIST, 2).u8(T.I32).i32(1).i32(9), (b: Bytes) => b.field(T.SET, 2).u8(T.STRING).i32(1).str("k")]) {
      const req = keys(new Bytes().field(T.STRING, 1).str("g")).stop();
      const r = expectRequest(message(MSG.CALL, "GetMulti", 1, new Bytes().field(T.STRUCT, 1).raw(req.out).stop().bytes()));
      expect(r.method).toBe(METHOD_GET_MULTI);
      expect(r.items.length).toBe(0);
    }
  });

  test("the args struct's field 1 of a wrong type is skipped; the last repeated field wins", () => {
    const req = new Bytes().field(T.STRING, 2).str("first").field(T.STRING, 2).str("second").stop();
    const body = new Bytes().field(T.STRING, 1).str("not a struct").field(T.STRUCT, 1).raw(req.out).stop().bytes();
    expect(Buffer.from(expectRequest(message(MSG.CALL, "Get", 1, body)).key).toString()).toBe("second");
  });

  test("an unknown method is skipped to its end and keeps its name", () => {
    const body = write(new Bytes().field(T.MAP, 3), T.MAP).stop().bytes();
    const r = expectRequest(message(MSG.CALL, "PeerFetch", 9, body));
    expect(r.method).toBe(METHOD_UNKNOWN);
    expect(r.methodName).toBe("PeerFetch");
    expect(r.seqid).toBe(9);
  });
});

function write(b: Bytes, _type: number): Bytes {
  return VALUES.find((v) => v[1] === _type)![2](b);
}

describe("limits and malformed input", () => {
  const nest = (depth: number) => {
    // args struct (depth 1) → field 9: list<list<…<i32>>> adding one level each
    const b = new Bytes().field(T.LIST, 9);
    for (let i = 2; i < depth; i++) b.u8(T.LIST).i32(1);
    b.u8(T.I32).i32(0);
    return message(MSG.CALL, "Get", 1, b.stop().bytes());
  };
  test("nesting up to maxDepth is accepted, one more is a protocol error", () => {
    expect(decodeMessage(nest(64)).kind).toBe("request");
    expectProtocolError(nest(65));
    expectProtocolError(nest(5), APP_ERROR.PROTOCOL_ERROR, { maxDepth: 4 });
  });

  test("deep nesting in buffered transport errors in the scanner too", () => {
    expectProtocolError(nest(1000));
  });

  // [name, message, bufferedNeedsMore]: the buffered transport has no frame, so a message that
  // only runs past its end (a size within the limit that more bytes could still satisfy) is
  // "need more" there, and an error in every framed transport.
  const MALFORMED: [string, Uint8Array, boolean][] = [
    ["negative string length", getWith((b) => b.field(T.STRING, 9).i32(-1)), false],
    ["string longer than the frame", getWith((b) => b.field(T.STRING, 9).i32(1000).u8(1)), true],
    ["negative list size", getWith((b) => b.field(T.LIST, 9).u8(T.I32).i32(-1)), false],
    ["list count beyond the bytes left (i64 elements)", getWith((b) => b.field(T.LIST, 9).u8(T.I64).i32(3).i64(1).i64(2)), true],
    ["huge count, tiny payload", getWith((b) => b.field(T.LIST, 9).u8(T.STRUCT).i32(0x7fffffff)), false],
    ["map count beyond the bytes left", getWith((b) => b.field(T.MAP, 9).u8(T.STRING, T.STRING).i32(100).str("a")), true],
    ["list of STOP elements", getWith((b) => b.field(T.LIST, 9).u8(T.STOP).i32(0)), false],
    ["list of VOID elements", getWith((b) => b.field(T.LIST, 9).u8(T.VOID).i32(0)), false],
    ["map with VOID keys", getWith((b) => b.field(T.MAP, 9).u8(T.VOID, T.I32).i32(0)), false],
    ["field of VOID type", getWith((b) => b.field(T.VOID, 9)), false],
    ["field of unassigned type 5", getWith((b) => b.field(5, 9).i32(0)), false],
    ["truncated struct (no STOP)", message(MSG.CALL, "Get", 1, new Bytes().field(T.STRUCT, 1).bytes()), true],
    ["negative name length", new Bytes().i32(0x80010001).i32(-3).bytes(), false],
  ];
  for (const [name, msg, bufferedNeedsMore] of MALFORMED) {
    for (const transport of TRANSPORTS) {
      const waits = transport === "buffered" && bufferedNeedsMore;
      test(`${name} (${transport}) → ${waits ? "need-more (no frame to end it)" : "PROTOCOL_ERROR, never need-more when the frame is complete"}`, () => {
        const r = decodeMessage(wrap(transport, msg), { maxFrameBytes: 4096 });
        if (waits) {
          expect(r.kind).toBe("need-more");
          return;
        }
        expect(r.kind).toBe("error");
        if (r.kind === "error") expect(r.error).toBeInstanceOf(ProtocolError);
      });
    }
  }

  test("trailing bytes inside a frame are an error", () => {
    const m = getWith((b) => b);
    expectProtocolError(wrap("framed", new Uint8Array([...m, 0])));
  });

  test("only strict binary: a non-strict (old) message header is refused", () => {
    const old = new Bytes().str("Get").u8(MSG.CALL).i32(1).stop().bytes();
    // As a first framed frame it is not even a recognisable transport; inside a header frame
    // the decoder sees it and refuses it.
    expectProtocolError(wrap("framed", old), APP_ERROR.UNSUPPORTED_CLIENT_TYPE);
    expectProtocolError(wrap("theader", old), APP_ERROR.PROTOCOL_ERROR);
  });

  test("REPLY and EXCEPTION messages are INVALID_MESSAGE_TYPE; ONEWAY is served without reply", () => {
    for (const type of [MSG.REPLY, MSG.EXCEPTION, 0, 5]) {
      expectProtocolError(wrap("framed", message(type, "Get", 1, new Bytes().stop().bytes())), APP_ERROR.INVALID_MESSAGE_TYPE);
    }
    const r = expectRequest(wrap("framed", message(MSG.ONEWAY, "Set", 1, new Bytes().stop().bytes())));
    expect(r.oneway).toBe(true);
    expect(r.method).toBe(METHOD_SET);
  });

  test("key over maxKeyBytes → CacheError INVALID_ARGUMENT (not a protocol error); at the limit is fine", () => {
    const withKey = (n: number) => message(MSG.CALL, "Get", 1, new Bytes().field(T.STRUCT, 1).field(T.STRING, 2).str(new Uint8Array(n)).stop().stop().bytes());
    expect(decodeMessage(withKey(250)).kind).toBe("request");
    expectCacheError(withKey(251), ERROR_CODE.INVALID_ARGUMENT);
    expectCacheError(withKey(11), ERROR_CODE.INVALID_ARGUMENT, { maxKeyBytes: 10 });
    const multi = message(MSG.CALL, "GetMulti", 1, new Bytes().field(T.STRUCT, 1).field(T.LIST, 2).u8(T.STRING).i32(2).str("ok").str(new Uint8Array(300)).stop().stop().bytes());
    expectCacheError(multi, ERROR_CODE.INVALID_ARGUMENT);
  });

  test("value over maxValueBytes → CacheError VALUE_TOO_LARGE (Set and SetMulti)", () => {
    const set = (n: number) => message(MSG.CALL, "Set", 1, new Bytes().field(T.STRUCT, 1).field(T.STRING, 3).str(new Uint8Array(n)).stop().stop().bytes());
    expect(decodeMessage(set(100), { maxValueBytes: 100 }).kind).toBe("request");
    expectCacheError(set(101), ERROR_CODE.VALUE_TOO_LARGE, { maxValueBytes: 100 });
    const multi = message(MSG.CALL, "SetMulti", 1, new Bytes().field(T.STRUCT, 1).field(T.MAP, 2).u8(T.STRING, T.STRING).i32(1).str("k").str(new Uint8Array(101)).stop().stop().bytes());
    expectCacheError(multi, ERROR_CODE.VALUE_TOO_LARGE, { maxValueBytes: 100 });
  });

  test("negative ttl or ttlMs → CacheError INVALID_ARGUMENT", () => {
    for (const [id, v] of [[4, -1], [5, -1]] as const) {
      const m = message(MSG.CALL, "Set", 1, new Bytes().field(T.STRUCT, 1).field(T.I64, id).i64(v).stop().stop().bytes());
      expectCacheError(m, ERROR_CODE.INVALID_ARGUMENT);
    }
  });

  test("a repeated field replaces the earlier one, refusal and all: the limits hold for what the struct ends with", () => {
    const call = (method: string, fields: (b: Bytes) => Bytes) => message(MSG.CALL, method, 1, fields(new Bytes().field(T.STRUCT, 1).field(T.STRING, 1).str("g")).stop().stop().bytes());
    const key = (b: Bytes, n: number) => b.field(T.STRING, 2).str(new Uint8Array(n).fill(0x6b));
    // A key too long, then a valid one: the valid one is the request's; the reverse is refused.
    const get = expectRequest(call("Get", (b) => key(key(b, 300), 3)));
    expect(get.key.length).toBe(3);
    expectCacheError(call("Get", (b) => key(key(b, 3), 300)), ERROR_CODE.INVALID_ARGUMENT);
    // The same for a value, and for ttl and ttlMs.
    const value = (b: Bytes, n: number) => b.field(T.STRING, 3).str(new Uint8Array(n));
    expect(expectRequest(call("Set", (b) => value(value(key(b, 3), 101), 100)), { maxValueBytes: 100 }).value.length).toBe(100);
    expectCacheError(call("Set", (b) => value(value(key(b, 3), 100), 101)), ERROR_CODE.VALUE_TOO_LARGE, { maxValueBytes: 100 });
    for (const id of [4, 5]) {
      expect(expectRequest(call("Set", (b) => key(b, 3).field(T.I64, id).i64(-1).field(T.I64, id).i64(7))).method).toBe(METHOD_SET);
      expectCacheError(call("Set", (b) => key(b, 3).field(T.I64, id).i64(7).field(T.I64, id).i64(-1)), ERROR_CODE.INVALID_ARGUMENT);
    }
    // A key list, and an entry map.
    const list = (b: Bytes, n: number) => b.field(T.LIST, 2).u8(T.STRING).i32(1).str(new Uint8Array(n));
    expect(expectRequest(call("GetMulti", (b) => list(list(b, 300), 3))).method).toBe(METHOD_GET_MULTI);
    expectCacheError(call("GetMulti", (b) => list(list(b, 3), 300)), ERROR_CODE.INVALID_ARGUMENT);
    const map = (b: Bytes, n: number) => b.field(T.MAP, 2).u8(T.STRING, T.STRING).i32(1).str("k").str(new Uint8Array(n));
    expect(decodeMessage(call("SetMulti", (b) => map(map(b, 101), 100)), { maxValueBytes: 100 }).kind).toBe("request");
    expectCacheError(call("SetMulti", (b) => map(map(b, 100), 101)), ERROR_CODE.VALUE_TOO_LARGE, { maxValueBytes: 100 });
    // A repeated argument struct replaces the first one whole, its fields and its refusal.
    const args = (...structs: ((b: Bytes) => Bytes)[]) => {
      const b = new Bytes();
      for (const st of structs) st(b.field(T.STRUCT, 1).field(T.STRING, 1).str("g")).stop();
      return b.stop().bytes();
    };
    expect(expectRequest(message(MSG.CALL, "Get", 1, args((b) => key(b, 300), (b) => key(b, 3)))).key.length).toBe(3);
    expect(expectRequest(message(MSG.CALL, "Set", 1, args((b) => key(b, 3).field(T.I64, 4).i64(-1), (b) => key(b, 3)))).ttlSeconds).toBe(0);
    expect(expectRequest(message(MSG.CALL, "Get", 1, args((b) => key(b, 3), (b) => b))).key.length).toBe(0);
    // A list of another type passes over: the earlier list, and what it breaks, stay.
    const ints = (b: Bytes) => b.field(T.LIST, 2).u8(T.I32).i32(1).i32(5);
    expectCacheError(call("GetMulti", (b) => ints(list(b, 300))), ERROR_CODE.INVALID_ARGUMENT);
  });

  test("i64 is read without BigInt: exact to 2^53, rounded beyond", () => {
    const ttl = (v: bigint) => expectRequest(message(MSG.CALL, "Set", 1, new Bytes().field(T.STRUCT, 1).field(T.I64, 4).i64(v).field(T.I64, 5).i64(v).stop().stop().bytes()));
    expect(ttl(2n ** 53n).ttlSeconds).toBe(2 ** 53);
    expect(ttl(2n ** 32n + 7n).ttlMs).toBe(2 ** 32 + 7);
    expect(ttl(2n ** 63n - 1n).ttlSeconds).toBe(2 ** 63);
    expect(ttl(0xffffffffn).ttlSeconds).toBe(0xffffffff);
  });

  test("a cache-level refusal still parses the whole message (stream stays in sync)", () => {
    const bad = message(MSG.CALL, "Get", 1, new Bytes().field(T.STRUCT, 1).field(T.STRING, 2).str(new Uint8Array(300)).field(T.STRING, 9).str("after").stop().stop().bytes());
    expectCacheError(wrap("framed", bad), ERROR_CODE.INVALID_ARGUMENT);
    // Buffered (no frame to skip by): the refused message is read to its end, and the next one
    // in the same bytes decodes.
    const conn = new ProtocolConnection(DEFAULT_LIMITS);
    const next = message(MSG.CALL, "Get", 2, new Bytes().field(T.STRUCT, 1).field(T.STRING, 1).str("g").field(T.STRING, 2).str("next").stop().stop().bytes());
    conn.push(concat(wrap("buffered", bad), wrap("buffered", next)));
    expect(conn.nextRequest()).toBe(true);
    expect([conn.request.seqid, conn.request.errorCode]).toEqual([1, ERROR_CODE.INVALID_ARGUMENT]);
    expect(conn.nextRequest()).toBe(true);
    expect([conn.request.seqid, conn.request.errorCode]).toEqual([2, 0]);
    expect(new TextDecoder().decode(conn.request.buffer.subarray(conn.request.keyStart, conn.request.keyStart + conn.request.keyLength))).toBe("next");
    expect(conn.nextRequest()).toBe(false);
  });

  test("resolveLimits rejects nonsense", () => {
    expect(() => resolveLimits({ maxFrameBytes: 0 })).toThrow(RangeError);
    expect(() => resolveLimits({ maxDepth: 1 })).toThrow(RangeError);
    expect(() => resolveLimits({ maxDepth: 2 })).toThrow(RangeError); // a GetMulti's key list is depth 3
    expect(resolveLimits({ maxDepth: 3 }).maxDepth).toBe(3);
    expect(() => resolveLimits({ maxKeyBytes: 1.5 })).toThrow(RangeError);
  });
});
