// THeader / TTHeader: header block parsing in both encodings, info headers kept as byte
// ranges, refusals of transforms and non-binary protocols, and malformed headers.

import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { decodeMessage } from "../../src/protocol/decode-message.ts";
import { ProtocolConnection } from "../../src/protocol/protocol-connection.ts";
import { APP_ERROR, ProtocolError } from "../../src/protocol/errors.ts";
import { DEFAULT_LIMITS } from "../../src/protocol/limits.ts";
import { Bytes, MSG, T, message, theader, ttheader } from "./wire-builder.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const GET = message(MSG.CALL, "Get", 3, new Bytes().field(T.STRUCT, 1).field(T.STRING, 2).str("k").stop().stop().bytes());
const str = (b: Uint8Array) => Buffer.from(b).toString();

function errorType(bytes: Uint8Array): number {
  const r = decodeMessage(bytes);
  if (r.kind !== "error" || !(r.error instanceof ProtocolError)) throw new Error(`expected a protocol error, got ${r.kind}`);
  return r.error.type;
}

/** frame builds a header frame by hand with a raw header block (padded to 4). */
function rawHeader(magic: number, block: number[], payload: Uint8Array, sizeWords?: number): Uint8Array {
  const h = new Bytes().raw(block);
  while (h.length % 4 !== 0) h.u8(0);
  const rest = new Bytes().i16(magic).i16(0).i32(3).i16(sizeWords ?? h.length / 4).raw(h.out).raw(payload);
  return new Bytes().i32(rest.length).raw(rest.out).bytes();
}

describe("header transports", () => {
  const INFO: [string, string][] = [["auth", "secret"], ["", ""], ["trace-id", "é✓"]];
  for (const [name, wrapFn] of [["THeader", theader], ["TTHeader", ttheader]] as const) {
    test(`${name}: info key/values are kept as byte ranges, in order`, () => {
      const r = decodeMessage(wrapFn(GET, { flags: 0x8001, seqid: 77, info: INFO }));
      if (r.kind !== "request") throw new Error(r.kind);
      expect(r.headerFlags).toBe(0x8001);
      expect(r.headerSeqid).toBe(77);
      expect(r.infoHeaders.map((h) => [str(h.key), str(h.value)])).toEqual(INFO);
      expect(str(r.key)).toBe("k");
    });

    test(`${name}: a transform is refused with INVALID_TRANSFORM`, () => {
      expect(errorType(wrapFn(GET, { transforms: [1] }))).toBe(APP_ERROR.INVALID_TRANSFORM);
    });

    test(`${name}: compact and unknown protocol ids are refused with INVALID_PROTOCOL`, () => {
      expect(errorType(wrapFn(GET, { protocolId: 2 }))).toBe(APP_ERROR.INVALID_PROTOCOL);
      expect(errorType(wrapFn(GET, { protocolId: 3 }))).toBe(APP_ERROR.INVALID_PROTOCOL);
    });

    test(`${name}: the reply carries the request's flags and seqid, and the same magic`, () => {
      const conn = new ProtocolConnection(DEFAULT_LIMITS);
      conn.push(wrapFn(GET, { flags: 0x0123, seqid: 3 }));
      expect(conn.nextRequest()).toBe(true);
      conn.reply.writeSuccess(conn.request, true);
      const out = conn.reply.out.buffer;
      expect((out[4]! << 8) | out[5]!).toBe(name === "THeader" ? 0x0fff : 0x1000);
      expect((out[6]! << 8) | out[7]!).toBe(0x0123);
      expect(new DataView(out.buffer).getInt32(8)).toBe(3);
    });
  }

  test("TTHeader: int key/values and the ACL token are kept as ranges; padding ids are skipped", () => {
    const block = [0, 0, 0x10, 0, 2, 0, 7, 0, 2, 0x61, 0x62, 0, 9, 0, 0, 0x11, 0, 3, 0x74, 0x6f, 0x6b, 0, 0];
    const conn = new ProtocolConnection(DEFAULT_LIMITS);
    conn.push(rawHeader(0x1000, block, GET));
    expect(conn.nextRequest()).toBe(true);
    const h = conn.request.header;
    const b = conn.request.buffer;
    expect(h.intCount).toBe(2);
    expect([h.ints[0], str(b.subarray(h.ints[1]!, h.ints[1]! + h.ints[2]!))]).toEqual([7, "ab"]);
    expect([h.ints[3], h.ints[5]]).toEqual([9, 0]);
    expect(str(b.subarray(h.aclStart, h.aclStart + h.aclLength))).toBe("tok");
  });

  test("TTHeaderFramed (Kitex): a framed payload inside the header; a wrong inner length is an error", () => {
    const r = decodeMessage(ttheader(GET, { innerFramed: true }));
    expect(r.kind === "request" && r.innerFramed).toBe(true);
    const bad = ttheader(GET, { innerFramed: true });
    bad[19] = bad[19]! + 1; // inner length low byte (4 + 10 + 4 header bytes, then the i32)
    expect(errorType(bad)).toBe(APP_ERROR.PROTOCOL_ERROR);
  });

  test("an unknown info id ends the info section; the payload still starts at the header size", () => {
    expect(decodeMessage(rawHeader(0x0fff, [0, 0, 0x7f, 0xff, 0xff, 0x01], GET)).kind).toBe("request");
    expect(decodeMessage(rawHeader(0x1000, [0, 0, 0x55, 1, 2, 3], GET)).kind).toBe("request");
  });

  const BAD: [string, Uint8Array][] = [
    ["header size beyond the frame", rawHeader(0x0fff, [0, 0], GET, 1000)],
    ["header size zero", rawHeader(0x0fff, [], GET, 0)],
    ["info count beyond the header", rawHeader(0x0fff, [0, 0, 1, 100, 0], GET)],
    ["info string beyond the header", rawHeader(0x0fff, [0, 0, 1, 1, 50, 0], GET)],
    ["overlong varint", rawHeader(0x0fff, [0x80, 0x80, 0x80, 0x80, 0x80, 0x01], GET)],
    ["TTHeader info string beyond the header", rawHeader(0x1000, [0, 0, 1, 0, 1, 0, 40], GET)],
    ["frame shorter than the fixed header", new Bytes().i32(4).i16(0x0fff).i16(0).bytes()],
  ];
  for (const [name, bytes] of BAD) {
    test(`${name} → PROTOCOL_ERROR`, () => expect(errorType(bytes)).toBe(APP_ERROR.PROTOCOL_ERROR));
  }

  test("the header magic may not change on a connection", () => {
    const conn = new ProtocolConnection(DEFAULT_LIMITS);
    conn.push(new Uint8Array([...theader(GET), ...ttheader(GET)]));
    expect(conn.nextRequest()).toBe(true);
    expect(() => conn.nextRequest()).toThrow(ProtocolError);
  });
});

describe("header info entries", () => {
  test("arrays a header of many entries grew are not kept once its request is served", () => {
    // THeader: protocol id, no transforms, then one key-value info block of 60,000 empty entries
    // (2 bytes each): 16 bytes of entry each, 960 KB per connection kept for good, uncounted.
    const entries = 60_000;
    const block = new Bytes().uvarint(0).uvarint(0).uvarint(1).uvarint(entries);
    for (let i = 0; i < entries; i++) block.u8(0, 0);
    while (block.length % 4 !== 0) block.u8(0);
    const rest = new Bytes().i16(0x0fff).i16(0).i32(3).i16(block.length / 4).raw(block.out).raw(GET);
    const frame = new Bytes().i32(rest.length).raw(rest.out).bytes();
    const conn = new ProtocolConnection(DEFAULT_LIMITS);
    conn.push(frame);
    expect(conn.nextRequest()).toBe(true);
    expect(conn.request.header.stringCount).toBe(entries);
    expect(conn.nextRequest()).toBe(false); // served: the connection is idle
    expect(conn.request.header.strings.byteLength).toBeLessThan(64 * 1024);
    // The count goes with the entries: no reader may take the 60,000 for entries still there.
    expect(conn.request.header.stringCount * 4).toBeLessThanOrEqual(conn.request.header.strings.length);
  });
});
