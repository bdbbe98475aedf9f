// BinaryReader: the strict Thrift binary protocol read over a view of a complete message.
//
// Memory layout: the reader holds a reference to the caller's Uint8Array and two cursors,
// `pos` and `end`; it never copies and never builds a string. Variable-length values are
// returned as ranges: `readBinary()` returns the length and leaves the start in `rangeStart`.
// Integers are assembled from bytes (no DataView per input chunk); an i64 becomes a JS number
// `hi * 2^32 + lo` without a BigInt — exact up to 2^53, rounded beyond (documented at readI64).
//
// The input is always a COMPLETE frame (framed, header, or a buffered message whose end the
// MessageScanner already found), so running past `end` is corrupt input, never "need more".
// Every length and count is validated against the bytes left BEFORE the caller uses it, so a
// hostile length can make nobody allocate: negative or larger than what is left → error;
// container counts must satisfy `count * minValueBytes(type) <= left`; element types STOP and
// VOID (and unassigned codes) are rejected; `skip()` is depth-limited.

import { readI32 } from "../bytes/bytes.ts";
import { protocolError } from "./errors.ts";
import {
  TYPE_LIST,
  TYPE_MAP,
  TYPE_SET,
  TYPE_STOP,
  TYPE_STRING,
  TYPE_STRUCT,
  fixedValueBytes,
  minValueBytes,
} from "./wire.ts";

const EMPTY = new Uint8Array(0);

export class BinaryReader {
  /** The input; ranges returned by the reader index into it. */
  buf: Uint8Array = EMPTY;
  /** Next byte to read. */
  pos = 0;
  /** One past the last readable byte. */
  end = 0;
  /** Start of the last range read by readBinary(). */
  rangeStart = 0;
  /** Field id of the last field header read by readFieldBegin(). */
  fieldId = 0;
  /** Element type(s) of the last container header read. */
  elemType = 0;
  valueType = 0;
  /** Deepest struct/container nesting allowed (ProtocolLimits.maxDepth). */
  maxDepth: number;

  constructor(maxDepth: number) {
    this.maxDepth = maxDepth;
  }

  /** reset points the reader at `buf[start, end)`. */
  reset(buf: Uint8Array, start: number, end: number): void {
    this.buf = buf;
    this.pos = start;
    this.end = end;
  }

  /** left returns the number of unread bytes. */
  left(): number {
    return this.end - this.pos;
  }

  private need(n: number): void {
    if (this.end - this.pos < n) throw protocolError("message truncated");
  }

  readU8(): number {
    this.need(1);
    return this.buf[this.pos++]!;
  }

  readI16(): number {
    this.need(2);
    const b = this.buf;
    const p = this.pos;
    this.pos = p + 2;
    return ((b[p]! << 24) | (b[p + 1]! << 16)) >> 16;
  }

  /** readBool reads a bool byte (any non-zero byte is true, as the Apache libraries read it). */
  readBool(): boolean {
    this.need(1);
    return this.buf[this.pos++] !== 0;
  }

  readI32(): number {
    this.need(4);
    const b = this.buf;
    const p = this.pos;
    this.pos = p + 4;
    return readI32(b, p);
  }

  /**
   * readI64 returns a signed i64 as a JS number, `hi * 2^32 + lo` with `hi` signed, without
   * allocating a BigInt. Exact for |v| <= 2^53; larger magnitudes are rounded to the nearest
   * double (a TTL that large is "forever" for any caller, so rounding is harmless here).
   */
  readI64(): number {
    const hi = this.readI32();
    const lo = this.readI32() >>> 0;
    return hi * 4294967296 + lo;
  }

  /** readBinary reads a string/binary header; returns the length, start in `rangeStart`. */
  readBinary(): number {
    const length = this.readI32();
    if (length < 0) throw protocolError("negative string length");
    if (length > this.end - this.pos) throw protocolError("string length exceeds the frame");
    this.rangeStart = this.pos;
    this.pos += length;
    return length;
  }

  /** readFieldBegin returns the field type (TYPE_STOP ends the struct); id in `fieldId`. */
  readFieldBegin(): number {
    const type = this.readU8();
    if (type === TYPE_STOP) return TYPE_STOP;
    if (minValueBytes(type) < 0) throw protocolError("invalid field type");
    this.fieldId = this.readI16();
    return type;
  }

  /** readListBegin reads a list/set header; returns the count, element type in `elemType`. */
  readListBegin(): number {
    const elemType = this.readU8();
    const count = this.readI32();
    const min = minValueBytes(elemType);
    if (min < 0) throw protocolError("invalid container element type");
    if (count < 0) throw protocolError("negative container size");
    if (count * min > this.end - this.pos) throw protocolError("container size exceeds the frame");
    this.elemType = elemType;
    return count;
  }

  /** readMapBegin reads a map header; returns the count, types in `elemType`/`valueType`. */
  readMapBegin(): number {
    const keyType = this.readU8();
    const valueType = this.readU8();
    const count = this.readI32();
    const kMin = minValueBytes(keyType);
    const vMin = minValueBytes(valueType);
    if (kMin < 0 || vMin < 0) throw protocolError("invalid map key or value type");
    if (count < 0) throw protocolError("negative map size");
    if (count * (kMin + vMin) > this.end - this.pos) throw protocolError("map size exceeds the frame");
    this.elemType = keyType;
    this.valueType = valueType;
    return count;
  }

  /**
   * skip consumes one value of `type` whose nesting depth is `depth` (the argument struct of a
   * message is depth 1). Every Thrift type is handled; nesting deeper than maxDepth is an
   * error, so a hostile `list<list<list<…>>>` cannot exhaust the stack.
   */
  skip(type: number, depth: number): void {
    const fixed = fixedValueBytes(type);
    if (fixed > 0) {
      this.need(fixed);
      this.pos += fixed;
      return;
    }
    switch (type) {
      case TYPE_STRING:
        this.readBinary();
        return;
      case TYPE_STRUCT: {
        if (depth > this.maxDepth) throw protocolError("nesting too deep");
        for (;;) {
          const fieldType = this.readFieldBegin();
          if (fieldType === TYPE_STOP) return;
          this.skip(fieldType, depth + 1);
        }
      }
      case TYPE_LIST:
      case TYPE_SET: {
        if (depth > this.maxDepth) throw protocolError("nesting too deep");
        const count = this.readListBegin();
        this.skipElements(this.elemType, count, depth);
        return;
      }
      case TYPE_MAP: {
        if (depth > this.maxDepth) throw protocolError("nesting too deep");
        const count = this.readMapBegin();
        const keyType = this.elemType;
        const valueType = this.valueType;
        const kFixed = fixedValueBytes(keyType);
        const vFixed = fixedValueBytes(valueType);
        if (kFixed > 0 && vFixed > 0) {
          this.pos += count * (kFixed + vFixed); // bounded by readMapBegin's check
          return;
        }
        for (let i = 0; i < count; i++) {
          this.skip(keyType, depth + 1);
          this.skip(valueType, depth + 1);
        }
        return;
      }
      default:
        throw protocolError("invalid type");
    }
  }

  private skipElements(elemType: number, count: number, depth: number): void {
    const fixed = fixedValueBytes(elemType);
    if (fixed > 0) {
      this.pos += count * fixed; // bounded by readListBegin's check
      return;
    }
    for (let i = 0; i < count; i++) this.skip(elemType, depth + 1);
  }
}
