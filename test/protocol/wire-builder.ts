// Test helper: builds Thrift bytes by hand from the spec, independent of src/protocol.
//
// Every golden vector in these tests is written with this builder (big-endian, strict binary,
// the transport layouts of HeaderFormat.md and Kitex's TTHeader), so the code under test is
// checked against the spec rather than against itself.

export const T = { STOP: 0, VOID: 1, BOOL: 2, BYTE: 3, DOUBLE: 4, I16: 6, I32: 8, I64: 10, STRING: 11, STRUCT: 12, MAP: 13, SET: 14, LIST: 15, UUID: 16 } as const;
export const MSG = { CALL: 1, REPLY: 2, EXCEPTION: 3, ONEWAY: 4 } as const;

const utf8 = new TextEncoder();

/** Bytes is a tiny append-only byte builder. */
export class Bytes {
  readonly out: number[] = [];

  u8(...values: number[]): this {
    for (const v of values) this.out.push(v & 0xff);
    return this;
  }
  i16(v: number): this {
    return this.u8(v >> 8, v);
  }
  i32(v: number): this {
    return this.u8(v >>> 24, v >>> 16, v >>> 8, v);
  }
  i64(v: number | bigint): this {
    const b = BigInt.asUintN(64, BigInt(v));
    this.i32(Number(b >> 32n));
    return this.i32(Number(b & 0xffffffffn));
  }
  raw(bytes: ArrayLike<number>): this {
    for (let i = 0; i < bytes.length; i++) this.out.push(bytes[i]!);
    return this;
  }
  /** str writes an i32 length + the bytes (UTF-8 for strings). */
  str(s: string | Uint8Array): this {
    const b = typeof s === "string" ? utf8.encode(s) : s;
    return this.i32(b.length).raw(b);
  }
  field(type: number, id: number): this {
    return this.u8(type).i16(id);
  }
  stop(): this {
    return this.u8(0);
  }
  /** uvarint writes an unsigned LEB128 varint. */
  uvarint(v: number): this {
    while (v >= 0x80) {
      this.u8((v & 0x7f) | 0x80);
      v = Math.floor(v / 128);
    }
    return this.u8(v);
  }
  get length(): number {
    return this.out.length;
  }
  bytes(): Uint8Array {
    return Uint8Array.from(this.out);
  }
}

/** message builds a strict binary message: version|type, name, seqid, then `body` bytes. */
export function message(type: number, name: string, seqid: number, body: Uint8Array): Uint8Array {
  return new Bytes().i32(0x80010000 | type).str(name).i32(seqid).raw(body).bytes();
}

/** framed prefixes the i32 length. */
export function framed(msg: Uint8Array): Uint8Array {
  return new Bytes().i32(msg.length).raw(msg).bytes();
}

export interface HeaderOptions {
  flags?: number;
  seqid?: number;
  /** Info key/value pairs (id 1). */
  info?: [string, string][];
  /** Kitex only: int key/value pairs (id 0x10). */
  intInfo?: [number, string][];
  protocolId?: number;
  transforms?: number[];
  /** Kitex TTHeaderFramed: payload is itself framed. */
  innerFramed?: boolean;
}

/** theader wraps `msg` in an Apache THeader frame (varint header block). */
export function theader(msg: Uint8Array, o: HeaderOptions = {}): Uint8Array {
  const h = new Bytes().uvarint(o.protocolId ?? 0).uvarint(o.transforms?.length ?? 0);
  for (const t of o.transforms ?? []) h.uvarint(t);
  if (o.info && o.info.length > 0) {
    h.uvarint(1).uvarint(o.info.length);
    for (const [k, v] of o.info) {
      const kb = utf8.encode(k);
      const vb = utf8.encode(v);
      h.uvarint(kb.length).raw(kb).uvarint(vb.length).raw(vb);
    }
  }
  return headerFrame(0x0fff, h, msg, o);
}

/** ttheader wraps `msg` in a Kitex TTHeader frame (fixed-width header block). */
export function ttheader(msg: Uint8Array, o: HeaderOptions = {}): Uint8Array {
  const h = new Bytes().u8(o.protocolId ?? 0).u8(o.transforms?.length ?? 0);
  for (const t of o.transforms ?? []) h.u8(t);
  if (o.info && o.info.length > 0) {
    h.u8(1).i16(o.info.length);
    for (const [k, v] of o.info) h.i16(utf8.encode(k).length).raw(utf8.encode(k)).i16(utf8.encode(v).length).raw(utf8.encode(v));
  }
  if (o.intInfo && o.intInfo.length > 0) {
    h.u8(0x10).i16(o.intInfo.length);
    for (const [k, v] of o.intInfo) h.i16(k).i16(utf8.encode(v).length).raw(utf8.encode(v));
  }
  const payload = o.innerFramed ? framed(msg) : msg;
  return headerFrame(0x1000, h, payload, o);
}

function headerFrame(magic: number, h: Bytes, payload: Uint8Array, o: HeaderOptions): Uint8Array {
  while (h.length % 4 !== 0) h.u8(0);
  const rest = new Bytes().i16(magic).i16(o.flags ?? 0).i32(o.seqid ?? 0).i16(h.length / 4).raw(h.out).raw(payload);
  return new Bytes().i32(rest.length).raw(rest.out).bytes();
}

export const TRANSPORTS = ["framed", "buffered", "theader", "ttheader"] as const;
export type TransportName = (typeof TRANSPORTS)[number];

/** wrap puts a message into the named transport (header transports with default options). */
export function wrap(transport: TransportName, msg: Uint8Array, o: HeaderOptions = {}): Uint8Array {
  switch (transport) {
    case "framed":
      return framed(msg);
    case "buffered":
      return msg;
    case "theader":
      return theader(msg, o);
    case "ttheader":
      return ttheader(msg, o);
  }
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export function hex(b: Uint8Array): string {
  return Buffer.from(b).toString("hex");
}

export const text = (s: string): Uint8Array => utf8.encode(s);
