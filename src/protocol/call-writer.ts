// CallWriter: encodes framed CALL messages into a connection's BinaryWriter (the client side).
//
// The inverse of the server's RequestDecoder. Every call is one frame:
//     i32 len | i32 0x80010001 | string name | i32 seqid | args { 1: <request struct> } STOP
// and the caller writes the request struct's fields between `begin` and `end`:
//     w.begin(METHOD_PEER_GET, seqid);
//     w.binary(1, group, 0, group.length);
//     w.binary(2, key, keyOff, keyLen);
//     w.end();
// `end` writes both STOPs and patches the frame length. Several calls may sit in the buffer one
// after another (a connection coalesces a tick's calls into one socket.write); `abort` drops the
// call being written, leaving the earlier ones intact.
//
// Nothing is allocated: names come from METHOD_NAME_BYTES, bytes are copied with copyBytes and
// strings are UTF-8 encoded by hand (BinaryWriter.utf8). Every writer ensures its own room, so the
// buffer may be replaced between calls: never keep `out.buffer` across them.

import { BinaryWriter } from "./binary-writer.ts";
import { METHOD_NAME_BYTES } from "./request.ts";
import { MESSAGE_CALL, TYPE_BOOL, TYPE_I64, TYPE_LIST, TYPE_MAP, TYPE_STOP, TYPE_STRING, TYPE_STRUCT, VERSION_1 } from "./wire.ts";

/**
 * EntryRanges is a part of a multi-key request, by reference: the entries `indexes[from, to)` of
 * `items` (4 int32 an entry: keyStart, keyLength, valueStart, valueLength, as Request.items), byte
 * ranges of `src`. A node forwards a routed GetMulti's or SetMulti's keys so, none copied out.
 */
export interface EntryRanges {
  readonly src: Uint8Array;
  readonly items: Int32Array;
  readonly indexes: readonly number[];
  readonly from: number;
  readonly to: number;
}

/** Frame length, version, name length, seqid, the `req` field header, two STOPs. */
const CALL_OVERHEAD_BYTES = 4 + 4 + 4 + 4 + 3 + 2;

export class CallWriter {
  readonly out: BinaryWriter;
  /** Offset of the frame being written, -1 between calls. */
  private frameAt = -1;
  /** listed is the element count of the call's last `listBegin` (a GetMulti's keys), -1 when it has none. */
  listed = -1;

  constructor(out: BinaryWriter = new BinaryWriter()) {
    this.out = out;
  }

  /** begin starts a framed CALL of method `method` (a METHOD_* id) and opens its request struct. */
  begin(method: number, seqid: number): void {
    const w = this.out;
    const name = METHOD_NAME_BYTES[method]!;
    w.ensure(CALL_OVERHEAD_BYTES + name.length);
    this.frameAt = w.reserveI32();
    this.listed = -1;
    w.i32(VERSION_1 | MESSAGE_CALL);
    w.i32(name.length);
    w.bytes(name, 0, name.length);
    w.i32(seqid);
    w.fieldBegin(TYPE_STRUCT, 1);
  }

  /** binary writes a string/binary field from `src[start, start+length)`. */
  binary(id: number, src: Uint8Array, start: number, length: number): void {
    const w = this.out;
    w.ensure(7 + length);
    w.fieldBegin(TYPE_STRING, id);
    w.i32(length);
    w.bytes(src, start, length);
  }

  /** text writes a string field, UTF-8 encoded. */
  text(id: number, value: string): void {
    const w = this.out;
    w.ensure(3);
    w.fieldBegin(TYPE_STRING, id);
    w.utf8(value);
  }

  /** bytesOrText writes a string field from a string (UTF-8) or from all of a Uint8Array. */
  bytesOrText(id: number, value: string | Uint8Array): void {
    if (typeof value === "string") this.text(id, value);
    else this.binary(id, value, 0, value.length);
  }

  i64(id: number, value: number): void {
    const w = this.out;
    w.ensure(11);
    w.fieldBegin(TYPE_I64, id);
    w.i64(value);
  }

  /**
   * ttl writes a Set's or SetMulti's TTL: field `id` the seconds (rounded up, for seed servers)
   * and, when `ttlMs` is given, field `id + 1` the whole ms, a fraction rounded up: the wire's
   * i64 truncated 0.4 ms to 0, the group's default (no expiry by default), so a TTL under a
   * millisecond kept its value for good. NaN is refused (it went out as 0 too); a negative TTL
   * goes out negative, for the node to refuse. Undefined: 0 seconds alone, the group's default.
   */
  ttl(id: number, ttlMs: number | undefined): void {
    if (ttlMs === undefined) return this.i64(id, 0);
    if (Number.isNaN(ttlMs)) throw new RangeError("ttlMs must be a number of milliseconds, got NaN");
    const ms = ttlMs > 0 ? Math.ceil(ttlMs) : ttlMs;
    this.i64(id, Math.ceil(ms / 1000));
    this.i64(id + 1, ms);
  }

  bool(id: number, value: boolean): void {
    const w = this.out;
    w.ensure(4);
    w.fieldBegin(TYPE_BOOL, id);
    w.u8(value ? 1 : 0);
  }

  /** listBegin opens a `list<string>` field of `count` elements (write them with `element`). */
  listBegin(id: number, count: number): void {
    const w = this.out;
    w.ensure(8);
    w.fieldBegin(TYPE_LIST, id);
    w.u8(TYPE_STRING);
    w.i32(count);
    this.listed = count;
  }

  /** mapBegin opens a `map<string, binary>` field of `count` entries (key, value elements). */
  mapBegin(id: number, count: number): void {
    const w = this.out;
    w.ensure(9);
    w.fieldBegin(TYPE_MAP, id);
    w.u8(TYPE_STRING);
    w.u8(TYPE_STRING);
    w.i32(count);
  }

  /** element writes one string/binary element of a list or map. */
  element(value: string | Uint8Array): void {
    const w = this.out;
    if (typeof value === "string") {
      w.utf8(value);
      return;
    }
    w.ensure(4 + value.length);
    w.i32(value.length);
    w.bytes(value, 0, value.length);
  }

  /**
   * keyList writes a `list<string>` field of the keys of `part` (EntryRanges), copied from its
   * source buffer: no key is sliced out first.
   */
  keyList(id: number, part: EntryRanges): void {
    this.listBegin(id, part.to - part.from);
    for (let n = part.from; n < part.to; n++) {
      const i = part.indexes[n]! * 4;
      this.range(part.src, part.items[i]!, part.items[i + 1]!);
    }
  }

  /** entryMap writes a `map<string, binary>` field of the keys and values of `part` (EntryRanges). */
  entryMap(id: number, part: EntryRanges): void {
    this.mapBegin(id, part.to - part.from);
    for (let n = part.from; n < part.to; n++) {
      const i = part.indexes[n]! * 4;
      this.range(part.src, part.items[i]!, part.items[i + 1]!);
      this.range(part.src, part.items[i + 2]!, part.items[i + 3]!);
    }
  }

  /** range writes one string/binary element of a list or map from `src[start, start+length)`. */
  private range(src: Uint8Array, start: number, length: number): void {
    const w = this.out;
    w.ensure(4 + length);
    w.i32(length);
    w.bytes(src, start, length);
  }

  /**
   * end closes the request and argument structs, patches the frame length and returns it. A frame
   * longer than `maxFrameBytes` is dropped instead, nothing of it left in `out`, and -1 returned.
   */
  end(maxFrameBytes = 0x7fffffff): number {
    const w = this.out;
    w.ensure(2);
    w.u8(TYPE_STOP); // request struct
    w.u8(TYPE_STOP); // argument struct
    const length = w.length - this.frameAt - 4;
    if (length > maxFrameBytes) {
      w.truncate(this.frameAt);
      this.frameAt = -1;
      return -1;
    }
    w.patchI32(this.frameAt, length);
    this.frameAt = -1;
    return length;
  }

  /** abort drops the call being written (after an error while encoding it). */
  abort(): void {
    if (this.frameAt >= 0) this.out.truncate(this.frameAt);
    this.frameAt = -1;
  }
}
