// ReplyWriter: encodes complete reply messages into a connection's BinaryWriter.
//
// Each reply is written in the transport its request came in (req.transport), then its
// lengths are patched:
//     framed    i32 len | message
//     buffered  message
//     THeader   i32 len | 0x0FFF flags seqid 0x0001 00000000 | message
//     TTHeader  i32 len | 0x1000 flags seqid 0x0001 00000000 | [i32 len, Kitex framed] | message
// The header echoes the request's flags and carries the reply's seqid (equal to the request's
// message seqid), as the Apache and Kitex servers do; it carries no info headers.
// The message is `i32 0x80010000|type, string name, i32 seqid` + a result struct:
//     success      { 0: <Response struct> }                       type REPLY
//     cache error  { 1: CacheError { 1: i32 code, 2: string message } }   type REPLY
//     app error    TApplicationException { 1: string message, 2: i32 type }  type EXCEPTION
//
// Value bytes are never staged: `beginGet` writes everything up to the value, reserves
// `valueLength` bytes and returns their offset in `out.buffer`; the caller copies the value
// there (e.g. from the slab) and calls `endGet`. GetMulti is built incrementally the same way,
// with the map count patched by `endGetMulti`. After any begin/add call the writer's buffer may
// have been replaced by a larger one: always index `out.buffer` afresh.
// A ONEWAY request (req.oneway) must get no reply: the caller checks, these functions do not.
// The replies made of figures only (Stats, PeerInvalidate, PeerPing, NodeStats) are written by
// figure-replies.ts, through `begin` and `end`.

import { copyBytes } from "../bytes/bytes.ts";
import { BinaryWriter } from "./binary-writer.ts";
import { writeHeaderPrefix } from "./header-transport.ts";
import { APP_ERROR, seedErrorText } from "./errors.ts";
import { METHOD_GET, METHOD_NAME_BYTES, METHOD_SET_MULTI, METHOD_UNKNOWN, type Request } from "./request.ts";
import {
  MESSAGE_EXCEPTION, MESSAGE_REPLY, TRANSPORT_BUFFERED, TRANSPORT_FRAMED, TRANSPORT_THEADER, TRANSPORT_TTHEADER,
  TYPE_BOOL, TYPE_I32, TYPE_I64, TYPE_MAP, TYPE_STOP, TYPE_STRING, TYPE_STRUCT, VERSION_1,
} from "./wire.ts";

export const GET_MULTI_FULL = -2; // (addGetMultiEntry, told not to grow the buffer, found it full)
/** Upper bound of everything in a reply except the name and variable payload. */
export const REPLY_OVERHEAD_BYTES = 96;

/** getMultiEntryBytes is what one GetMulti map entry takes in a reply: two lengths, key, value. */
export function getMultiEntryBytes(keyLength: number, valueLength: number): number {
  return 8 + keyLength + valueLength;
}

/**
 * An unknown method's name is echoed when it is at most NAME_ALWAYS_ECHOED bytes, or stays
 * NAME_ECHO_MARGIN under the frame limit (the rest of an error reply is well under 1 KiB).
 */
const NAME_ALWAYS_ECHOED = 256;
const NAME_ECHO_MARGIN = 1024;

export class ReplyWriter {
  /**
   * out is where replies are written. A server may point it at a buffer it shares between
   * connections while this one's own is empty, and back before anything else writes here
   * (server/cache-server.ts `process`); a reply is always begun and ended in one buffer.
   */
  out: BinaryWriter;
  /** errorCode is the CacheError code of the last reply written (the server resets it per request). */
  errorCode = 0;
  private outerAt = -1;
  private innerAt = -1;
  private countAt = -1;
  private count = 0;
  /**
   * maxMultiBytes bounds one GetMulti reply (the connection's frame limit: a client could not read
   * a longer frame anyway): past it `addGetMultiEntry` refuses, before the buffer grows, so a
   * short request naming one large value a thousand times cannot make a reply of any size. Error
   * replies keep to it too: an unknown method's name that comes within NAME_ECHO_MARGIN of it is
   * not echoed.
   */
  maxMultiBytes = Infinity;
  /**
   * seedErrors: the errors of the seed's seven methods go as the seed sent them, a
   * TApplicationException INTERNAL_ERROR (`seedErrorText`), not as the CacheError of result field
   * 1: a client generated from the seed's IDL declares no exception, and skips that field (Kitex's
   * then answers no value and no error). The Peer* and other methods, ours only, keep CacheError.
   */
  seedErrors = false;
  private multiStart = 0;
  /** unfinishedAt is where a reply begun and not yet ended starts in `out`, else -1 (`dropUnfinished`). */
  private unfinishedAt = -1;

  constructor(out: BinaryWriter = new BinaryWriter()) {
    this.out = out;
  }

  /** sibling is a writer to `out` that answers as this one does (its reply limit, its error style). */
  sibling(out: BinaryWriter): ReplyWriter {
    const w = new ReplyWriter(out);
    w.maxMultiBytes = this.maxMultiBytes;
    w.seedErrors = this.seedErrors;
    return w;
  }

  /** beginGet writes a Get reply up to the value and returns where `valueLength` bytes go. */
  beginGet(req: Request, valueLength: number): number {
    const t = req.transport;
    if ((t === TRANSPORT_FRAMED || t === TRANSPORT_BUFFERED) && req.method === METHOD_GET) {
      return this.beginPlainGet(req.seqid, valueLength, t === TRANSPORT_FRAMED);
    }
    const w = this.out;
    this.begin(req, MESSAGE_REPLY, valueLength);
    w.fieldBegin(TYPE_STRUCT, 0);
    w.fieldBegin(TYPE_STRING, 1);
    w.i32(valueLength);
    const at = w.length;
    w.length += valueLength;
    return at;
  }

  // The three writers below are for the commonest replies, on the framed transport (`framed`) or
  // the buffered one (the same message without its i32 length): written byte by byte with one
  // bounds check instead of through the general begin(); the bytes are the same (the golden tests
  // compare them). Each message is laid out from `at`, where a framed reply's length goes (for a
  // buffered one, 4 bytes before the message: nothing is written there).

  /**
   * beginPlainGet is beginGet for a Get on the framed or buffered transport (no header, the name
   * known).
   *   [i32 len] | 80 01 00 02 | 00 00 00 03 "Get" | i32 seqid | 0C 00 00 | 0B 00 01 | i32 n | value…
   */
  beginPlainGet(seqid: number, valueLength: number, framed: boolean): number {
    const w = this.out;
    w.ensure(REPLY_OVERHEAD_BYTES + 3 + valueLength);
    const b = w.buffer;
    const at = framed ? w.length : w.length - 4;
    this.unfinishedAt = w.length;
    this.outerAt = framed ? at : -1;
    this.innerAt = -1;
    replyHead(b, at, 0x47, seqid); // G
    b[at + 22] = TYPE_STRING;
    b[at + 23] = 0;
    b[at + 24] = 1;
    b[at + 25] = valueLength >>> 24;
    b[at + 26] = valueLength >>> 16;
    b[at + 27] = valueLength >>> 8;
    b[at + 28] = valueLength;
    w.length = at + 29 + valueLength;
    return at + 29;
  }

  /**
   * writePlainSetOk writes the reply of a Set that stored its value: what writeSuccess writes
   * for it.
   *   [00 00 00 18] | 80 01 00 02 | 00 00 00 03 "Set" | i32 seqid | 0C 00 00 | 02 00 01 01 | 00 00
   */
  writePlainSetOk(seqid: number, framed: boolean): void {
    const w = this.out;
    w.ensure(28);
    const b = w.buffer;
    const at = framed ? w.length : w.length - 4;
    if (framed) w.patchI32(at, 24);
    replyHead(b, at, 0x53, seqid); // S
    b[at + 22] = TYPE_BOOL;
    b[at + 23] = 0;
    b[at + 24] = 1;
    b[at + 25] = 1;
    b[at + 26] = TYPE_STOP;
    b[at + 27] = TYPE_STOP;
    w.length = at + 28;
  }

  /**
   * writePlainGetError writes the CacheError reply of a Get, byte for byte what writeCacheError
   * writes for it (`message` is the message's UTF-8 bytes).
   *   [i32 len] | 80 01 00 02 | 00 00 00 03 "Get" | i32 seqid | 0C 00 01 | 08 00 01 i32 code |
   *   0B 00 02 i32 n message | 00 | 00
   */
  writePlainGetError(seqid: number, code: number, message: Uint8Array, framed: boolean): void {
    this.errorCode = code;
    const w = this.out;
    const total = 22 + 7 + 7 + message.length + 2;
    w.ensure(total);
    const b = w.buffer;
    const at = framed ? w.length : w.length - 4;
    if (framed) w.patchI32(at, total - 4);
    replyHead(b, at, 0x47, seqid, 1); // G
    w.length = at + 22;
    w.fieldBegin(TYPE_I32, 1);
    w.i32(code);
    w.fieldBegin(TYPE_STRING, 2);
    w.i32(message.length);
    w.bytes(message, 0, message.length);
    w.u8(TYPE_STOP);
    w.u8(TYPE_STOP);
  }

  /** endGet finishes a Get reply; `ttlRemainingMs` < 0 leaves the optional field out. */
  endGet(ttlRemainingMs: number): void {
    const w = this.out;
    if (ttlRemainingMs >= 0) {
      w.fieldBegin(TYPE_I64, 2);
      w.i64(ttlRemainingMs);
    }
    w.u8(TYPE_STOP); // Response
    w.u8(TYPE_STOP); // result
    this.end();
  }

  /** writeGet writes a whole Get reply, copying the value from `src[start, start+length)`. */
  writeGet(req: Request, src: Uint8Array, start: number, length: number, ttlRemainingMs: number): void {
    const at = this.beginGet(req, length);
    copyBytes(this.out.buffer, at, src, start, length);
    this.endGet(ttlRemainingMs);
  }

  /** writeSuccess writes the `{1: bool success}` reply of Set, Delete, Clear and SetMulti. */
  writeSuccess(req: Request, success: boolean): void {
    const w = this.out;
    this.begin(req, MESSAGE_REPLY, 0);
    w.fieldBegin(TYPE_STRUCT, 0);
    w.fieldBegin(TYPE_BOOL, 1);
    w.u8(success ? 1 : 0);
    w.u8(TYPE_STOP);
    w.u8(TYPE_STOP);
    this.end();
  }

  /** beginGetMulti starts a GetMultiResponse `{1: map<string, binary> values}`. */
  beginGetMulti(req: Request): void {
    const w = this.out;
    this.multiStart = w.length;
    this.begin(req, MESSAGE_REPLY, 16);
    w.fieldBegin(TYPE_STRUCT, 0);
    w.fieldBegin(TYPE_MAP, 1);
    w.u8(TYPE_STRING);
    w.u8(TYPE_STRING);
    this.countAt = w.reserveI32();
    this.count = 0;
  }

  /**
   * makeRoom grows the buffer once for `entryBytes` more of GetMulti entries and the reply's end,
   * not doubling as they come (each doubling copies what came before); false, growing nothing, past `maxMultiBytes`.
   */
  makeRoom(entryBytes: number): boolean {
    if (this.out.length - this.multiStart + entryBytes + 2 > this.maxMultiBytes) return false; // (+ the two STOPs)
    this.out.ensure(entryBytes + REPLY_OVERHEAD_BYTES);
    return true;
  }

  /**
   * addGetMultiEntry appends one map entry: copies the key from `keyBuf[keyStart…]` and
   * returns the offset in `out.buffer` where the caller copies `valueLength` value bytes; or -1,
   * writing nothing, when the reply would pass `maxMultiBytes` (the caller then `abortGetMulti`s);
   * or GET_MULTI_FULL, writing nothing, when the buffer must grow for it and `grow` is false.
   */
  addGetMultiEntry(keyBuf: Uint8Array, keyStart: number, keyLength: number, valueLength: number, grow = true): number {
    const w = this.out;
    const entry = getMultiEntryBytes(keyLength, valueLength);
    if (w.length - this.multiStart + entry + 2 > this.maxMultiBytes) return -1; // (+ the two STOPs)
    if (!w.fits(entry + REPLY_OVERHEAD_BYTES)) {
      if (!grow) return GET_MULTI_FULL;
      w.ensure(entry + REPLY_OVERHEAD_BYTES);
    }
    w.i32(keyLength);
    w.bytes(keyBuf, keyStart, keyLength);
    w.i32(valueLength);
    const at = w.length;
    w.length += valueLength;
    this.count++;
    return at;
  }

  /** abortGetMulti drops the GetMulti reply begun last (its buffer is where it was before). */
  abortGetMulti(): void {
    this.out.truncate(this.multiStart);
    this.unfinishedAt = -1;
  }

  /** dropUnfinished drops a reply begun and not ended (a bug thrown while it was written: faults.ts). */
  dropUnfinished(): void {
    if (this.unfinishedAt >= 0) this.out.truncate(this.unfinishedAt);
    this.unfinishedAt = -1;
  }

  /** endGetMulti patches the entry count and finishes the reply. */
  endGetMulti(): void {
    const w = this.out;
    w.patchI32(this.countAt, this.count);
    w.u8(TYPE_STOP);
    w.u8(TYPE_STOP);
    this.end();
  }

  /**
   * writeCacheError writes a REPLY whose result field 1 is `CacheError {code, message}` (with
   * `seedErrors`, for the seed's methods, an EXCEPTION instead; `errorCode` is the code either way).
   */
  writeCacheError(req: Request, code: number, message: string): void {
    if (this.seedErrors && req.method >= METHOD_GET && req.method <= METHOD_SET_MULTI) {
      this.writeApplicationException(req, APP_ERROR.INTERNAL_ERROR, seedErrorText(code, message));
      this.errorCode = code;
      return;
    }
    this.errorCode = code;
    const w = this.out;
    this.begin(req, MESSAGE_REPLY, 0);
    w.fieldBegin(TYPE_STRUCT, 1);
    w.fieldBegin(TYPE_I32, 1);
    w.i32(code);
    w.fieldBegin(TYPE_STRING, 2);
    w.utf8(message);
    w.ensure(2 + REPLY_OVERHEAD_BYTES);
    w.u8(TYPE_STOP);
    w.u8(TYPE_STOP);
    this.end();
  }

  /**
   * writeApplicationException writes an EXCEPTION message `{1: string message, 2: i32 type}`.
   * It answers with the request's name and seqid when its message header was read, else with
   * an empty name and the header seqid (or 0).
   */
  writeApplicationException(req: Request, type: number, message: string): void {
    const w = this.out;
    this.begin(req, MESSAGE_EXCEPTION, 0);
    w.fieldBegin(TYPE_STRING, 1);
    w.utf8(message);
    w.ensure(8 + REPLY_OVERHEAD_BYTES);
    w.fieldBegin(TYPE_I32, 2);
    w.i32(type);
    w.u8(TYPE_STOP);
    this.end();
  }

  /**
   * begin writes the transport prefix and message header, with room for `bodyBytes` more (also
   * for the replies of figure-replies.ts).
   */
  begin(req: Request, messageType: number, bodyBytes: number): void {
    const w = this.out;
    // An unknown method's name is echoed as Thrift asks, unless the reply could then pass the
    // frame limit (a client would refuse it): a name that long is no method's, and the reply
    // names none then (as for a message whose header could not be read).
    const named = req.headerRead &&
      (req.method !== METHOD_UNKNOWN || req.nameLength <= NAME_ALWAYS_ECHOED || req.nameLength + NAME_ECHO_MARGIN <= this.maxMultiBytes);
    const nameLength = named ? req.nameLength : 0;
    const seqid = req.headerRead ? req.seqid : req.header.seqid;
    this.unfinishedAt = w.length;
    w.ensure(REPLY_OVERHEAD_BYTES + nameLength + bodyBytes);
    const transport = req.transport;
    this.innerAt = -1;
    if (transport === TRANSPORT_THEADER || transport === TRANSPORT_TTHEADER) {
      this.outerAt = writeHeaderPrefix(w, transport, req.header.flags, seqid);
      if (req.header.innerFramed) this.innerAt = w.reserveI32();
    } else if (transport === TRANSPORT_FRAMED) {
      this.outerAt = w.reserveI32();
    } else {
      this.outerAt = -1; // buffered (and unknown: answer unframed)
    }
    w.i32(VERSION_1 | messageType);
    w.i32(nameLength);
    if (!named) {
      // no name
    } else if (req.method !== METHOD_UNKNOWN) {
      const name = METHOD_NAME_BYTES[req.method]!;
      w.bytes(name, 0, name.length);
    } else {
      w.bytes(req.buffer, req.nameStart, nameLength);
    }
    w.i32(seqid);
  }

  /** end patches the inner (Kitex framed) and outer (frame/header) lengths. */
  end(): void {
    const w = this.out;
    if (this.innerAt >= 0) w.patchI32(this.innerAt, w.length - this.innerAt - 4);
    if (this.outerAt >= 0) w.patchI32(this.outerAt, w.length - this.outerAt - 4);
    this.unfinishedAt = -1;
  }
}

/**
 * replyHead writes bytes 4 to 21 of a framed REPLY to the three-letter method `first` + "et" (Get,
 * Set) at `b[at]` (also hit-reply.ts's): the message header with `seqid`, then the result's `field` (0: the success, 1:
 * the CacheError), a struct.
 *   80 01 00 02 | 00 00 00 03 | first 'e' 't' | i32 seqid | 0C 00 field
 */
export function replyHead(b: Uint8Array, at: number, first: number, seqid: number, field = 0): void {
  b[at + 4] = 0x80; b[at + 5] = 0x01; b[at + 6] = 0; b[at + 7] = MESSAGE_REPLY;
  b[at + 8] = 0; b[at + 9] = 0; b[at + 10] = 0; b[at + 11] = 3;
  b[at + 12] = first; b[at + 13] = 0x65; b[at + 14] = 0x74; // first 'e' 't'
  b[at + 15] = seqid >>> 24; b[at + 16] = seqid >>> 16; b[at + 17] = seqid >>> 8; b[at + 18] = seqid;
  b[at + 19] = TYPE_STRUCT; b[at + 20] = 0; b[at + 21] = field;
}
