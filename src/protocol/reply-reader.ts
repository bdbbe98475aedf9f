// ReplyReader: one complete REPLY/EXCEPTION message view → the reader's own reusable fields.
//
// The inverse of ReplyWriter, for the client. Decoding is split in two so the caller can find
// the pending call between them: `begin` reads the message header (version, name, seqid); the
// caller looks the seqid up, then `readResult(method)` reads the body as that method's result:
//     REPLY      result { 0: <method's response struct>, 1: CacheError { 1: i32 code, 2: string } }
//     EXCEPTION  TApplicationException { 1: string message, 2: i32 type }
// and the outcome lands in `outcome` (REPLY_OK / REPLY_CACHE_ERROR / REPLY_APP_ERROR /
// REPLY_MISSING / REPLY_FAILED). Response fields per method (thrift/cache.thrift; peer variants
// read like their seed methods):
//     Get            valueStart/valueLength, ttlRemainingMs (-1 when absent: no expiry; 0 for a negative one)
//     Set/Delete/Clear/SetMulti   success (false for Set, Clear and SetMulti: REPLY_FAILED; for
//                    Delete it is the answer, false = not found)
//     Stats          itemCount, hitCount, missCount, totalCount
//     GetMulti       itemCount entries in `items` (4 int32 each: keyStart, keyLength, valueStart,
//                    valueLength), like Request.items
//     PeerInvalidate dropped          PeerPing   nodeIdStart/nodeIdLength, uptimeMs, leaseMs (-1 when absent)
// Byte fields are ranges into `buffer`, valid until the connection's FrameReader moves on.
//
// A hostile peer is a hostile client: the same ProtocolLimits bound everything. Lengths and
// container counts are checked against the bytes left before use (BinaryReader); unknown fields
// are skipped depth-limited (maxDepth); the message must end exactly at its frame's end; a
// REPLY's name must be the called method's. Anything else throws ProtocolError: the stream can no
// longer be trusted and the connection must close. Policy limits do not close the stream (the
// frame is well-formed): a value over maxValueBytes or a key over maxKeyBytes becomes a
// REPLY_CACHE_ERROR (VALUE_TOO_LARGE / INVALID_ARGUMENT) with a constant message. Nothing is
// allocated on any path; error messages are ranges too.

import { BinaryReader } from "./binary-reader.ts";
import { APP_ERROR, ERROR_CODE, ProtocolError, protocolError } from "./errors.ts";
import type { ProtocolLimits } from "./limits.ts";
import {
  METHOD_CLEAR,
  METHOD_GET,
  METHOD_GET_MULTI,
  METHOD_NAME_BYTES,
  METHOD_PEER_INVALIDATE,
  METHOD_PEER_PING,
  METHOD_SET,
  METHOD_SET_MULTI,
  METHOD_STATS,
  baseMethod,
} from "./request.ts";
import {
  MESSAGE_EXCEPTION,
  MESSAGE_REPLY,
  TYPE_BOOL,
  TYPE_I32,
  TYPE_I64,
  TYPE_MAP,
  TYPE_STOP,
  TYPE_STRING,
  TYPE_STRUCT,
  VERSION_1,
  VERSION_MASK,
} from "./wire.ts";

export const REPLY_OK = 0;
/** The server's declared CacheError (result field 1), or a reply over a client-side limit. */
export const REPLY_CACHE_ERROR = 1;
/** A TApplicationException message (unknown method, protocol error on the server, …). */
export const REPLY_APP_ERROR = 2;
/** A REPLY with neither result field (Thrift's MISSING_RESULT). */
export const REPLY_MISSING = 3;
/**
 * A Set's, Clear's or SetMulti's REPLY (or their Peer forms') whose `success` is false (or absent,
 * which Thrift reads as false) with no error: the server did not do it and gave no reason. The
 * seed's servers may answer a failure so; ours never do (they answer a CacheError, or with
 * --seed-errors an application exception). Not Delete's: its false means "not found".
 */
export const REPLY_FAILED = 4;

export const REPLY_VALUE_TOO_LARGE = "reply value larger than the limit";
export const REPLY_KEY_TOO_LONG = "reply key longer than the limit";

const EMPTY = new Uint8Array(0);
/** MAX_ENTRIES: a GetMulti reply's entries when the caller gives no bound (the frame limit bounds them). */
const MAX_ENTRIES = 0x7fffffff;
/** KEEP_ITEMS: a GetMulti entry table larger than this (int32s: 16k entries) is let go before the next reply. */
const KEEP_ITEMS = 64 * 1024;

export class ReplyReader {
  private readonly reader: BinaryReader;
  private readonly maxKeyBytes: number;
  private readonly maxValueBytes: number;

  /** The message view the ranges index into. */
  buffer: Uint8Array = EMPTY;
  messageType = 0;
  seqid = 0;
  nameStart = 0;
  nameLength = 0;

  outcome = REPLY_OK;
  /** REPLY_CACHE_ERROR: the IDL ErrorCode; REPLY_APP_ERROR: the TApplicationException type. */
  errorCode = 0;
  /** The error message's range, or a constant in `errorText` for client-side limits. */
  messageStart = 0;
  messageLength = 0;
  errorText = "";

  valueStart = 0;
  valueLength = 0;
  ttlRemainingMs = -1;
  success = false;
  itemCount = 0;
  hitCount = 0;
  missCount = 0;
  totalCount = 0;
  dropped = 0;
  nodeIdStart = 0;
  nodeIdLength = 0;
  uptimeMs = 0;
  leaseMs = -1;
  /** GetMulti entries: 4 int32 per entry; `entryCount` in use. */
  entryCount = 0;
  items = new Int32Array(64);
  /** maxEntries: the most entries the reply being read may hold (`readResult`). */
  private maxEntries = 0;

  constructor(limits: ProtocolLimits) {
    this.reader = new BinaryReader(limits.maxDepth);
    this.maxKeyBytes = limits.maxKeyBytes;
    this.maxValueBytes = limits.maxValueBytes;
  }

  /** release lets go of the message read last (FrameReader.releaseServed let go of its buffer). */
  release(): void {
    this.buffer = EMPTY;
    this.reader.reset(EMPTY, 0, 0);
    if (this.items.length > KEEP_ITEMS) this.items = new Int32Array(64);
  }

  /** begin reads the message header of `buf[start, end)`. Throws ProtocolError. */
  begin(buf: Uint8Array, start: number, end: number): void {
    const r = this.reader;
    r.reset(buf, start, end);
    this.buffer = buf;
    const version = r.readI32();
    if ((version & VERSION_MASK) !== VERSION_1) throw protocolError("reply is not strict binary protocol");
    const type = version & 0xff;
    if (type !== MESSAGE_REPLY && type !== MESSAGE_EXCEPTION) {
      throw new ProtocolError(APP_ERROR.INVALID_MESSAGE_TYPE, `unexpected message type ${type} from the server`);
    }
    this.messageType = type;
    this.nameLength = r.readBinary();
    this.nameStart = r.rangeStart;
    this.seqid = r.readI32();
  }

  /**
   * readResult reads the body after `begin` as the result of `method`; a GetMulti's map may hold
   * `maxEntries` entries at most (the keys asked for: a map has one entry per key). Throws
   * ProtocolError.
   */
  readResult(method: number, maxEntries = MAX_ENTRIES): void {
    this.clear();
    this.maxEntries = maxEntries < 0 ? 0 : maxEntries;
    // A large GetMulti's entries are not kept past it (the reader lives as long as its connection).
    if (this.items.length > KEEP_ITEMS) this.items = new Int32Array(64);
    const r = this.reader;
    if (this.messageType === MESSAGE_EXCEPTION) {
      if (this.nameLength !== 0) this.checkName(method);
      this.readAppException();
    } else {
      this.checkName(method);
      this.outcome = REPLY_MISSING;
      for (;;) {
        const type = r.readFieldBegin();
        if (type === TYPE_STOP) break;
        if (type === TYPE_STRUCT && (r.fieldId === 0 || r.fieldId === 1)) {
          // A result is a union: a second one (a success after an error, say) is no reply of a
          // server's, and read on it would turn an error, or a value over the limit, into a hit.
          if (this.outcome !== REPLY_MISSING) throw protocolError("reply carries more than one result");
          if (r.fieldId === 1) this.readCacheError();
          else {
            this.outcome = REPLY_OK; // limits found inside may turn it into REPLY_CACHE_ERROR
            const base = baseMethod(method);
            this.readResponse(base);
            if (this.outcome === REPLY_OK && !this.success && (base === METHOD_SET || base === METHOD_CLEAR || base === METHOD_SET_MULTI)) this.outcome = REPLY_FAILED;
          }
        } else {
          r.skip(type, 2);
        }
      }
    }
    if (r.pos !== r.end) throw protocolError("bytes left after the reply");
  }

  private clear(): void {
    this.outcome = REPLY_OK;
    this.errorCode = 0;
    this.messageStart = this.messageLength = 0;
    this.errorText = "";
    this.valueStart = this.valueLength = 0;
    this.ttlRemainingMs = -1;
    this.success = false;
    this.itemCount = this.hitCount = this.missCount = this.totalCount = 0;
    this.dropped = 0;
    this.nodeIdStart = this.nodeIdLength = 0;
    this.uptimeMs = 0;
    this.leaseMs = -1;
    this.entryCount = 0;
  }

  private checkName(method: number): void {
    const name = METHOD_NAME_BYTES[method]!;
    const buf = this.buffer;
    let ok = name.length === this.nameLength;
    for (let i = 0; ok && i < name.length; i++) ok = buf[this.nameStart + i] === name[i];
    if (!ok) throw new ProtocolError(APP_ERROR.WRONG_METHOD_NAME, "reply name does not match the call");
  }

  private readAppException(): void {
    const r = this.reader;
    this.outcome = REPLY_APP_ERROR;
    this.errorCode = APP_ERROR.UNKNOWN;
    for (;;) {
      const type = r.readFieldBegin();
      if (type === TYPE_STOP) return;
      if (type === TYPE_STRING && r.fieldId === 1) {
        this.messageLength = r.readBinary();
        this.messageStart = r.rangeStart;
      } else if (type === TYPE_I32 && r.fieldId === 2) {
        this.errorCode = r.readI32();
      } else {
        r.skip(type, 2);
      }
    }
  }

  private readCacheError(): void {
    const r = this.reader;
    this.outcome = REPLY_CACHE_ERROR;
    this.errorCode = 0;
    this.messageStart = this.messageLength = 0;
    this.errorText = "";
    for (;;) {
      const type = r.readFieldBegin();
      if (type === TYPE_STOP) return;
      if (type === TYPE_I32 && r.fieldId === 1) {
        this.errorCode = r.readI32();
      } else if (type === TYPE_STRING && r.fieldId === 2) {
        this.messageLength = r.readBinary();
        this.messageStart = r.rangeStart;
      } else {
        r.skip(type, 3);
      }
    }
  }

  /** limit records a client-side limit refusal (the rest of the message is still read). */
  private limit(code: number, text: string): void {
    if (this.outcome === REPLY_CACHE_ERROR) return;
    this.outcome = REPLY_CACHE_ERROR;
    this.errorCode = code;
    this.errorText = text;
  }

  /**
   * readResponse reads the response struct (depth 2) of seed method `base`. A Get's without its
   * value (field 1) is an empty value, as Thrift reads an unset binary: Apache's generated
   * servers write a Response whose value was left unset so.
   */
  private readResponse(base: number): void {
    const r = this.reader;
    for (;;) {
      const type = r.readFieldBegin();
      if (type === TYPE_STOP) return;
      const id = r.fieldId;
      if (base === METHOD_GET) {
        if (type === TYPE_STRING && id === 1) {
          this.valueLength = r.readBinary();
          this.valueStart = r.rangeStart;
          if (this.valueLength > this.maxValueBytes) this.limit(ERROR_CODE.VALUE_TOO_LARGE, REPLY_VALUE_TOO_LARGE);
          continue;
        }
        if (type === TYPE_I64 && id === 2) {
          // A negative one is outside the contract (absent = no expiry): read as none left, not
          // as -1, which would make a copy of a value that ran out live as one that never expires.
          const ttl = r.readI64();
          this.ttlRemainingMs = ttl < 0 ? 0 : ttl;
          continue;
        }
      } else if (base === METHOD_STATS) {
        if (type === TYPE_I64 && id >= 1 && id <= 4) {
          const v = r.readI64();
          if (id === 1) this.itemCount = v;
          else if (id === 2) this.hitCount = v;
          else if (id === 3) this.missCount = v;
          else this.totalCount = v;
          continue;
        }
      } else if (base === METHOD_GET_MULTI) {
        if (type === TYPE_MAP && id === 1) {
          this.readValues();
          continue;
        }
      } else if (base === METHOD_PEER_INVALIDATE) {
        if (type === TYPE_I64 && id === 1) {
          this.dropped = r.readI64();
          continue;
        }
      } else if (base === METHOD_PEER_PING) {
        if (type === TYPE_STRING && id === 1) {
          this.nodeIdLength = r.readBinary();
          this.nodeIdStart = r.rangeStart;
          continue;
        }
        if (type === TYPE_I64 && id === 2) {
          this.uptimeMs = r.readI64();
          continue;
        }
        if (type === TYPE_I64 && id === 3) {
          this.leaseMs = r.readI64();
          continue;
        }
      } else if (type === TYPE_BOOL && id === 1) {
        this.success = r.readBool(); // Set, Delete, Clear, SetMulti
        continue;
      }
      r.skip(type, 3);
    }
  }

  /** readValues reads GetMulti's `map<string, binary>` into `items` (other map types: skipped). */
  private readValues(): void {
    const r = this.reader;
    const start = r.pos;
    const count = r.readMapBegin(); // count * 8 <= bytes left, checked
    // More entries than keys asked for: not a reply to this call (and a few MB of them would
    // become hundreds of MB of keys and values for the caller).
    if (count > this.maxEntries) throw protocolError(`GetMulti reply holds ${count} entries for ${this.maxEntries} keys asked`);
    if (r.elemType !== TYPE_STRING || r.valueType !== TYPE_STRING) {
      r.pos = start;
      r.skip(TYPE_MAP, 3);
      return;
    }
    if (count * 4 > this.items.length) this.items = new Int32Array(Math.max(count * 4, this.items.length * 2));
    const items = this.items;
    for (let i = 0; i < count; i++) {
      const keyLength = r.readBinary();
      const keyStart = r.rangeStart;
      const valueLength = r.readBinary();
      if (keyLength > this.maxKeyBytes) this.limit(ERROR_CODE.INVALID_ARGUMENT, REPLY_KEY_TOO_LONG);
      if (valueLength > this.maxValueBytes) this.limit(ERROR_CODE.VALUE_TOO_LARGE, REPLY_VALUE_TOO_LARGE);
      items[i * 4] = keyStart;
      items[i * 4 + 1] = keyLength;
      items[i * 4 + 2] = r.rangeStart;
      items[i * 4 + 3] = valueLength;
    }
    this.entryCount = count;
  }
}
