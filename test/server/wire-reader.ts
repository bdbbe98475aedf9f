/**
 * Test helper: reads reply messages back from bytes in any of the four transports, written from
 * the spec (like wire-builder.ts), independent of src/protocol. Strict: a length that does not
 * match its content, a field of an unknown type, or trailing bytes inside a frame throw, so
 * "well-formed" means every length and every nested struct agrees with its neighbours.
 */
import { T, type TransportName } from "../protocol/wire-builder.ts";

/** A decoded Thrift value: numbers, bigint (i64), bytes (string/binary/uuid), containers. */
export type Value = number | bigint | boolean | Uint8Array | Struct | Value[] | [Value, Value][];
/** A struct: field id → [type, value]. */
export type Struct = Map<number, [number, Value]>;

export interface Reply {
  /** bytes of the input the reply used, transport included */
  consumed: number;
  type: number;
  name: string;
  seqid: number;
  body: Struct;
  /** header transports only */
  header?: { magic: number; flags: number; seqid: number; protocolId: number; transforms: number; innerFramed: boolean };
}

export class WireError extends Error {}

const MAX_DEPTH = 64;

class Cursor {
  private readonly dv: DataView;
  constructor(readonly buf: Uint8Array, public pos: number, readonly end: number) {
    this.dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  need(n: number): void {
    if (n < 0 || this.pos + n > this.end) throw new WireError(`need ${n} bytes at ${this.pos}, have ${this.end - this.pos}`);
  }
  u8(): number {
    this.need(1);
    return this.buf[this.pos++]!;
  }
  i16(): number {
    this.need(2);
    const v = this.dv.getInt16(this.pos);
    this.pos += 2;
    return v;
  }
  u16(): number {
    return this.i16() & 0xffff;
  }
  i32(): number {
    this.need(4);
    const v = this.dv.getInt32(this.pos);
    this.pos += 4;
    return v;
  }
  i64(): bigint {
    this.need(8);
    const v = this.dv.getBigInt64(this.pos);
    this.pos += 8;
    return v;
  }
  double(): number {
    this.need(8);
    const v = this.dv.getFloat64(this.pos);
    this.pos += 8;
    return v;
  }
  bytes(n: number): Uint8Array {
    this.need(n);
    const out = this.buf.slice(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  uvarint(): number {
    let v = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      const b = this.u8();
      v += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) return v;
    }
    throw new WireError("varint too long");
  }
}

function readValue(c: Cursor, type: number, depth: number): Value {
  if (depth > MAX_DEPTH) throw new WireError("nesting too deep");
  switch (type) {
    case T.BOOL: {
      const b = c.u8();
      if (b > 1) throw new WireError(`bool byte ${b}`);
      return b === 1;
    }
    case T.BYTE:
      return c.u8();
    case T.I16:
      return c.i16();
    case T.I32:
      return c.i32();
    case T.I64:
      return c.i64();
    case T.DOUBLE:
      return c.double();
    case T.UUID:
      return c.bytes(16);
    case T.STRING: {
      const n = c.i32();
      if (n < 0) throw new WireError(`negative string length ${n}`);
      return c.bytes(n);
    }
    case T.STRUCT:
      return readStruct(c, depth + 1);
    case T.LIST:
    case T.SET: {
      const elem = c.u8();
      const n = c.i32();
      if (n < 0) throw new WireError(`negative count ${n}`);
      const out: Value[] = [];
      for (let i = 0; i < n; i++) out.push(readValue(c, elem, depth + 1));
      return out;
    }
    case T.MAP: {
      const k = c.u8();
      const v = c.u8();
      const n = c.i32();
      if (n < 0) throw new WireError(`negative count ${n}`);
      const out: [Value, Value][] = [];
      for (let i = 0; i < n; i++) out.push([readValue(c, k, depth + 1), readValue(c, v, depth + 1)]);
      return out;
    }
    default:
      throw new WireError(`unknown type ${type} at ${c.pos}`);
  }
}

function readStruct(c: Cursor, depth: number): Struct {
  const s: Struct = new Map();
  for (;;) {
    const type = c.u8();
    if (type === T.STOP) return s;
    const id = c.i16();
    if (s.has(id)) throw new WireError(`field ${id} twice`);
    s.set(id, [type, readValue(c, type, depth)]);
  }
}

/** readMessage reads a strict binary message at c.pos (to its struct's STOP). */
function readMessage(c: Cursor): Omit<Reply, "consumed" | "header"> {
  const version = c.i32();
  if ((version & 0xffff0000) !== (0x80010000 | 0)) throw new WireError(`bad version 0x${(version >>> 0).toString(16)}`);
  const nameLength = c.i32();
  if (nameLength < 0) throw new WireError("negative name length");
  const name = new TextDecoder().decode(c.bytes(nameLength));
  const seqid = c.i32();
  return { type: version & 0xff, name, seqid, body: readStruct(c, 0) };
}

/**
 * readReply reads one reply starting at `at` in `transport`; returns null when the bytes end
 * before the reply does (more may come), throws WireError when they are malformed.
 */
export function readReply(buf: Uint8Array, at: number, transport: TransportName): Reply | null {
  try {
    return readReplyStrict(buf, at, transport);
  } catch (e) {
    if (e instanceof Incomplete) return null;
    throw e;
  }
}

class Incomplete extends Error {}

function readReplyStrict(buf: Uint8Array, at: number, transport: TransportName): Reply {
  if (transport === "buffered") {
    const c = new Cursor(buf, at, buf.length);
    try {
      const m = readMessage(c);
      return { ...m, consumed: c.pos - at };
    } catch (e) {
      if (e instanceof WireError && e.message.startsWith("need ")) throw new Incomplete();
      throw e;
    }
  }
  if (buf.length - at < 4) throw new Incomplete();
  const length = new DataView(buf.buffer, buf.byteOffset + at, 4).getInt32(0);
  if (length <= 0) throw new WireError(`frame length ${length}`);
  if (buf.length - at - 4 < length) throw new Incomplete();
  const end = at + 4 + length;
  const c = new Cursor(buf, at + 4, end);
  let header: Reply["header"];
  if (transport === "theader" || transport === "ttheader") {
    const magic = c.u16();
    const want = transport === "theader" ? 0x0fff : 0x1000;
    if (magic !== want) throw new WireError(`magic 0x${magic.toString(16)}, expected 0x${want.toString(16)}`);
    const flags = c.u16();
    const seqid = c.i32();
    const headerBytes = c.u16() * 4;
    const payload = c.pos + headerBytes;
    if (payload > end) throw new WireError("header size exceeds the frame");
    const h = new Cursor(buf, c.pos, payload);
    const protocolId = transport === "theader" ? h.uvarint() : h.u8();
    const transforms = transport === "theader" ? h.uvarint() : h.u8();
    c.pos = payload;
    // Kitex TTHeaderFramed: the payload is an i32 length + message (a message starts 0x80).
    let innerFramed = false;
    if (transport === "ttheader" && end - c.pos >= 4 && buf[c.pos] !== 0x80) {
      innerFramed = true;
      const inner = c.i32();
      if (inner !== end - c.pos) throw new WireError(`inner frame length ${inner}, ${end - c.pos} bytes left`);
    }
    header = { magic, flags, seqid, protocolId, transforms, innerFramed };
    const m = readMessage(c);
    if (c.pos !== end) throw new WireError(`${end - c.pos} trailing bytes in the frame`);
    return { ...m, consumed: end - at, header };
  }
  const m = readMessage(c);
  if (c.pos !== end) throw new WireError(`${end - c.pos} trailing bytes in the frame`);
  return { ...m, consumed: end - at };
}

/** readReplies reads every complete reply in `buf`; `rest` is the offset of what is left. */
export function readReplies(buf: Uint8Array, transport: TransportName): { replies: Reply[]; rest: number } {
  const replies: Reply[] = [];
  let at = 0;
  for (;;) {
    const r = readReply(buf, at, transport);
    if (r === null) return { replies, rest: at };
    replies.push(r);
    at += r.consumed;
  }
}

/** field returns a struct field's value, checking its type. */
export function field(s: Struct, id: number, type: number): Value | undefined {
  const f = s.get(id);
  if (f === undefined) return undefined;
  if (f[0] !== type) throw new WireError(`field ${id} has type ${f[0]}, expected ${type}`);
  return f[1];
}

/** The pieces of a GroupCache reply: a success struct (field 0) or a CacheError (field 1). */
export type Outcome =
  | { kind: "success"; value: Struct }
  | { kind: "cacheError"; code: number; message: string }
  | { kind: "appException"; type: number; message: string };

const utf8 = new TextDecoder();

/** outcome interprets a reply per the GroupCache IDL (REPLY) or TApplicationException (EXCEPTION). */
export function outcome(r: Reply): Outcome {
  if (r.type === 3) {
    const message = field(r.body, 1, T.STRING);
    const type = field(r.body, 2, T.I32);
    if (typeof type !== "number") throw new WireError("TApplicationException without a type");
    return { kind: "appException", type, message: message instanceof Uint8Array ? utf8.decode(message) : "" };
  }
  if (r.type !== 2) throw new WireError(`message type ${r.type} is neither REPLY nor EXCEPTION`);
  if (r.body.size !== 1) throw new WireError(`result struct has ${r.body.size} fields, expected exactly 1`);
  const ok = field(r.body, 0, T.STRUCT);
  if (ok !== undefined) return { kind: "success", value: ok as Struct };
  const err = field(r.body, 1, T.STRUCT) as Struct | undefined;
  if (err === undefined) throw new WireError(`result field ${[...r.body.keys()][0]} is not 0 or 1`);
  const code = field(err, 1, T.I32);
  const message = field(err, 2, T.STRING);
  if (typeof code !== "number" || !(message instanceof Uint8Array)) throw new WireError("CacheError without code or message");
  return { kind: "cacheError", code, message: utf8.decode(message) };
}

/** getValues reads each framed reply in `received` as a Get's value (UTF-8), or its outcome's kind. */
export function getValues(received: Uint8Array): string[] {
  return readReplies(received, "framed").replies.map((r) => {
    const o = outcome(r);
    return o.kind === "success" ? new TextDecoder().decode(field(o.value, 1, T.STRING) as Uint8Array) : o.kind;
  });
}
