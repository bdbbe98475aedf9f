// Header transports: Apache THeader (magic 0x0FFF) and Kitex TTHeader (magic 0x1000).
//
// Both share the outer layout, given here from the byte after the i32 frame length:
//     u16 magic | u16 flags | i32 seqid | u16 headerSize/4 | header block | payload
// They differ inside the header block (see wire.ts): Apache uses unsigned LEB128 varints
// (protocol id, transform count and ids, info id, key/value count, string lengths); Kitex uses
// fixed-width u8 ids and u16 counts/lengths and adds int-keyed infos and an ACL token.
// Only protocol id 0 (binary) is accepted; any transform is refused (INVALID_TRANSFORM), as
// the spec requires for transforms a server does not implement. Info blocks are ignorable by
// the spec: padding (0) and unknown info ids end the info section, and the payload starts at
// the header size either way.
//
// Info headers stay bytes: HeaderInfo records (offset, length) pairs into the input, so a
// later feature (auth) can compare keys without strings. Memory layout: `strings` holds 4
// int32 per key/value entry (keyStart, keyLength, valueStart, valueLength); `ints` holds 3 per
// Kitex int entry (key, valueStart, valueLength). Both grow (doubling) only when a header
// carries more entries than ever before on this connection, and counts are bounded by the
// header bytes before growing.
//
// Kitex "TTHeaderFramed" carries a framed message (i32 length + strict message) as the
// payload; `innerFramed` records it so the reply is built the same way.

import { readI32 } from "../bytes/bytes.ts";
import { APP_ERROR, ProtocolError, protocolError } from "./errors.ts";
import type { BinaryWriter } from "./binary-writer.ts";
import { HEADER_PROTOCOL_BINARY, HEADER_PROTOCOL_COMPACT, INFO_ACL_TOKEN, INFO_INT_KEY_VALUE, INFO_KEY_VALUE, INFO_PADDING, THEADER_MAGIC, TRANSPORT_THEADER, TTHEADER_MAGIC } from "./wire.ts";

/** KEEP_INFO_WORDS: larger info-entry arrays (a header of thousands of entries) are dropped once served. */
const KEEP_INFO_WORDS = 4096;

/** HeaderInfo is what a header frame said, reused per connection. */
export class HeaderInfo {
  flags = 0;
  seqid = 0;
  /** Kitex TTHeaderFramed: the payload is itself framed. */
  innerFramed = false;
  stringCount = 0;
  strings = new Int32Array(16);
  intCount = 0;
  ints = new Int32Array(12);
  /** Kitex ACL token range; start -1 when absent. */
  aclStart = -1;
  aclLength = 0;
  /** Reused by parseHeader, so parsing a header allocates nothing. */
  readonly cursor = new HeaderCursor();

  reset(): void {
    this.flags = 0;
    this.seqid = 0;
    this.innerFramed = false;
    this.stringCount = 0;
    this.intCount = 0;
    this.aclStart = -1;
    this.aclLength = 0;
  }

  /**
   * release drops entry arrays grown past KEEP_INFO_WORDS, once the request is served: a header
   * of empty entries (2 bytes each) made 16 bytes of entry each, kept for good otherwise (2 MiB
   * per connection from one 260 KB header, outside --max-buffered). The counts go with them, so
   * the info never claims entries its arrays do not hold.
   */
  release(): void {
    if (this.strings.length > KEEP_INFO_WORDS) {
      this.strings = new Int32Array(16);
      this.stringCount = 0;
    }
    if (this.ints.length > KEEP_INFO_WORDS) {
      this.ints = new Int32Array(12);
      this.intCount = 0;
    }
  }

  addString(keyStart: number, keyLength: number, valueStart: number, valueLength: number): void {
    const at = this.stringCount * 4;
    if (at + 4 > this.strings.length) this.strings = grow(this.strings, at + 4);
    this.strings[at] = keyStart;
    this.strings[at + 1] = keyLength;
    this.strings[at + 2] = valueStart;
    this.strings[at + 3] = valueLength;
    this.stringCount++;
  }

  addInt(key: number, valueStart: number, valueLength: number): void {
    const at = this.intCount * 3;
    if (at + 3 > this.ints.length) this.ints = grow(this.ints, at + 3);
    this.ints[at] = key;
    this.ints[at + 1] = valueStart;
    this.ints[at + 2] = valueLength;
    this.intCount++;
  }
}

function grow(a: Int32Array, size: number): Int32Array<ArrayBuffer> {
  const grown = new Int32Array(Math.max(size, a.length * 2));
  grown.set(a);
  return grown;
}

/**
 * parseHeader reads the header of a THeader/TTHeader frame `buf[start, end)` (start is at the
 * magic, i.e. just after the frame length) into `info` and returns where the payload starts.
 * Throws ProtocolError (INVALID_PROTOCOL, INVALID_TRANSFORM or PROTOCOL_ERROR).
 */
export function parseHeader(buf: Uint8Array, start: number, end: number, kind: number, info: HeaderInfo): number {
  info.reset();
  if (end - start < 10) throw protocolError("header frame too short");
  const magic = (buf[start]! << 8) | buf[start + 1]!;
  if (magic !== (kind === TRANSPORT_THEADER ? THEADER_MAGIC : TTHEADER_MAGIC)) throw protocolError("header magic changed on the connection");
  info.flags = (buf[start + 2]! << 8) | buf[start + 3]!;
  info.seqid = readI32(buf, start + 4);
  const headerBytes = ((buf[start + 8]! << 8) | buf[start + 9]!) * 4;
  const h = start + 10;
  const payload = h + headerBytes;
  if (headerBytes < 2 || payload > end) throw protocolError("header size exceeds the frame");
  const cursor = info.cursor;
  cursor.reset(buf, h, payload, kind === TRANSPORT_THEADER);
  checkProtocolId(cursor.id());
  const transforms = cursor.id();
  if (transforms !== 0) {
    const first = cursor.pos < payload ? cursor.id() : -1;
    throw new ProtocolError(APP_ERROR.INVALID_TRANSFORM, `header transform ${first} is not supported (no transforms are)`);
  }
  readInfos(cursor, info);
  return payload;
}

function checkProtocolId(id: number): void {
  if (id === HEADER_PROTOCOL_BINARY) return;
  if (id === HEADER_PROTOCOL_COMPACT) throw new ProtocolError(APP_ERROR.INVALID_PROTOCOL, "compact protocol in header is not supported (binary only)");
  throw new ProtocolError(APP_ERROR.INVALID_PROTOCOL, `header protocol id ${id} is not supported (binary only)`);
}

function readInfos(c: HeaderCursor, info: HeaderInfo): void {
  while (c.pos < c.end) {
    const id = c.id();
    if (id === INFO_KEY_VALUE) {
      const count = c.count();
      // Each entry is at least two empty strings: 2 bytes (varint) or 4 bytes (u16 lengths).
      if (count * (c.varint ? 2 : 4) > c.end - c.pos) throw protocolError("header info count exceeds the header");
      for (let i = 0; i < count; i++) {
        const keyLength = c.length();
        const keyStart = c.pos;
        c.pos += keyLength;
        const valueLength = c.length();
        const valueStart = c.pos;
        c.pos += valueLength;
        info.addString(keyStart, keyLength, valueStart, valueLength);
      }
    } else if (!c.varint && id === INFO_INT_KEY_VALUE) {
      const count = c.count();
      if (count * 4 > c.end - c.pos) throw protocolError("header info count exceeds the header");
      for (let i = 0; i < count; i++) {
        const key = c.u16();
        const valueLength = c.length();
        info.addInt(key, c.pos, valueLength);
        c.pos += valueLength;
      }
    } else if (!c.varint && id === INFO_ACL_TOKEN) {
      const length = c.length();
      info.aclStart = c.pos;
      info.aclLength = length;
      c.pos += length;
    } else if (!c.varint && id === INFO_PADDING) {
      continue;
    } else {
      return; // padding (Apache) or an unknown info id: the rest is ignorable
    }
  }
}

/** HeaderCursor reads the header block in either encoding, never past `end`. */
class HeaderCursor {
  buf: Uint8Array = new Uint8Array(0);
  pos = 0;
  end = 0;
  varint = false;

  reset(buf: Uint8Array, pos: number, end: number, varint: boolean): void {
    this.buf = buf;
    this.pos = pos;
    this.end = end;
    this.varint = varint;
  }

  /** id reads a protocol/transform/info id: varint (Apache) or u8 (Kitex). */
  id(): number {
    return this.varint ? this.uvarint() : this.u8();
  }

  /** count reads an info entry count: varint (Apache) or u16 (Kitex). */
  count(): number {
    return this.varint ? this.uvarint() : this.u16();
  }

  /** length reads a string length and checks the bytes are there. */
  length(): number {
    const n = this.varint ? this.uvarint() : this.u16();
    if (n > this.end - this.pos) throw protocolError("header string exceeds the header");
    return n;
  }

  u8(): number {
    if (this.pos >= this.end) throw protocolError("header truncated");
    return this.buf[this.pos++]!;
  }

  u16(): number {
    if (this.pos + 2 > this.end) throw protocolError("header truncated");
    const v = (this.buf[this.pos]! << 8) | this.buf[this.pos + 1]!;
    this.pos += 2;
    return v;
  }

  /** uvarint reads an unsigned LEB128 varint32 (at most 5 bytes, value < 2^31). */
  uvarint(): number {
    let value = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      const b = this.u8();
      value += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) {
        if (value > 0x7fffffff) throw protocolError("header varint out of range");
        return value;
      }
    }
    throw protocolError("header varint too long");
  }
}

/**
 * writeHeaderPrefix writes the header of a reply frame: a reserved i32 frame length (its
 * offset is returned, to be patched with `length - offset - 4`), the magic of `kind`, the
 * request's flags, `seqid`, and an empty header block (binary protocol, no transforms, no
 * infos; 2 bytes padded to 4) — identical bytes in both encodings.
 */
export function writeHeaderPrefix(w: BinaryWriter, kind: number, flags: number, seqid: number): number {
  const lengthAt = w.reserveI32();
  w.i16(kind === TRANSPORT_THEADER ? THEADER_MAGIC : TTHEADER_MAGIC);
  w.i16(flags);
  w.i32(seqid);
  w.i16(1); // header size in 4-byte words
  w.i32(0); // protocol id 0, transform count 0, two bytes of padding
  return lengthAt;
}
