// RequestDecoder: one complete message view → the connection's reusable Request.
//
// Layout of what it reads (strict binary; header transports first strip their header):
//     i32 0x80010000|type  string name  i32 seqid
//     args struct { 1: <method>Request req } STOP
// and per method the request struct of thrift/cache.thrift:
//     Get/Delete { 1: string group, 2: string key }        Clear/Stats { 1: string group }
//     Set        { 1: group, 2: key, 3: binary value, 4: i64 ttl, 5: optional i64 ttlMs }
//     GetMulti   { 1: group, 2: list<string> keys }
//     SetMulti   { 1: group, 2: map<string,binary> values, 3: i64 ttl, 4: optional i64 ttlMs }
//
// Rules, as every Thrift implementation applies them:
//  - Unknown field ids are skipped (a newer client); a KNOWN field id arriving with a different
//    type is skipped too (generated code does `input.skip(ftype)` on a type mismatch), so it
//    reads as absent. A `list`/`map` whose element types are not string is skipped likewise.
//  - A repeated field: the last one wins.
//  - Only CALL and ONEWAY are served; other message types → INVALID_MESSAGE_TYPE (close).
//  - Unknown methods are parsed (skipped) to their end, so the stream stays in sync and the
//    connection is kept: `method` is METHOD_UNKNOWN and the name's range is kept for the reply.
//  - The message must end exactly at the end of its frame: leftover bytes are an error.
// Nothing is allocated: ranges index the input, numbers are read from bytes.
// Fast path: a framed Get in the exact layout every generator writes (peek-calls.ts) is filled in
// directly instead of field by field; the tests check it reads what the general path reads.

import { readI32 } from "../bytes/bytes.ts";
import { APP_ERROR, ERROR_CODE, ProtocolError, protocolError } from "./errors.ts";
import { BinaryReader } from "./binary-reader.ts";
import { parseHeader } from "./header-transport.ts";
import { PLAIN_GET, matchPlainGet } from "./peek-calls.ts";
import type { ProtocolLimits } from "./limits.ts";
import {
  METHOD_AUTH,
  METHOD_DELETE,
  METHOD_GET,
  METHOD_GET_MULTI,
  METHOD_PEER_INVALIDATE,
  METHOD_PEER_PING,
  METHOD_SET,
  METHOD_SET_MULTI,
  METHOD_UNKNOWN,
  Request,
  baseMethod,
  matchMethod,
} from "./request.ts";
import {
  COMPACT_PROTOCOL_ID,
  MESSAGE_CALL,
  MESSAGE_ONEWAY,
  TRANSPORT_FRAMED,
  TRANSPORT_THEADER,
  TRANSPORT_TTHEADER,
  TYPE_I64,
  TYPE_BOOL,
  TYPE_LIST,
  TYPE_MAP,
  TYPE_SET,
  TYPE_STOP,
  TYPE_STRING,
  TYPE_STRUCT,
  VERSION_1,
  VERSION_MASK,
} from "./wire.ts";

const EMPTY = new Uint8Array(0);
const KEY_TOO_LONG = "key longer than the limit";
const VALUE_TOO_LARGE = "value larger than the limit";
const NEGATIVE_TTL = "negative ttl";

export class RequestDecoder {
  private readonly reader: BinaryReader;
  private readonly maxKeyBytes: number;
  private readonly maxValueBytes: number;

  constructor(limits: ProtocolLimits) {
    this.reader = new BinaryReader(limits.maxDepth);
    this.maxKeyBytes = limits.maxKeyBytes;
    this.maxValueBytes = limits.maxValueBytes;
  }

  /** releaseBuffer drops the decoder's view of the last message (it is served). */
  releaseBuffer(): void {
    this.reader.reset(EMPTY, 0, 0);
  }

  /**
   * decode parses the complete message `buf[start, end)` that arrived in `transport` into
   * `req`. Throws ProtocolError for malformed input; cache-level refusals go to req.errorCode.
   */
  decode(buf: Uint8Array, start: number, end: number, transport: number, req: Request): void {
    req.reset();
    req.buffer = buf;
    req.transport = transport;
    if (transport === TRANSPORT_FRAMED && matchPlainGet(buf, start, end)) return this.plainGet(buf, start, req);
    let p = start;
    if (transport === TRANSPORT_THEADER || transport === TRANSPORT_TTHEADER) {
      p = parseHeader(buf, start, end, transport, req.header);
      // (Kitex's TTHeaderFramed only: an Apache THeader payload is the message itself, and a
      // length before it would be echoed into a reply its client cannot read.)
      if (transport === TRANSPORT_TTHEADER) p = this.innerFrame(buf, p, end, req);
    } else {
      req.header.reset();
    }
    const r = this.reader;
    r.reset(buf, p, end);
    this.readMessageHeader(r, req);
    if (req.method === METHOD_UNKNOWN) {
      r.skip(TYPE_STRUCT, 1);
    } else {
      let args = 0;
      for (;;) {
        const type = r.readFieldBegin();
        if (type === TYPE_STOP) break;
        if (r.fieldId === 1 && type === TYPE_STRUCT) {
          if (args++ > 0) req.resetArgs(); // repeated: this one replaces the first, fields and refusal
          this.readRequestStruct(r, req);
        } else r.skip(type, 2);
      }
    }
    if (r.pos !== end) throw protocolError("bytes left after the message");
  }

  /**
   * plainGet fills `req` for a message `matchPlainGet` recognised (the exact layout every Thrift
   * generator writes for Get): what the general path below would read from it, without walking
   * it field by field.
   */
  private plainGet(buf: Uint8Array, start: number, req: Request): void {
    req.header.reset();
    req.messageType = MESSAGE_CALL;
    req.nameStart = start + 8;
    req.nameLength = 3;
    req.seqid = PLAIN_GET[4]!;
    req.method = METHOD_GET;
    req.headerRead = true;
    req.groupStart = PLAIN_GET[0]!;
    req.groupLength = PLAIN_GET[1]!;
    req.keyStart = PLAIN_GET[2]!;
    req.keyLength = PLAIN_GET[3]!;
    if (req.keyLength > this.maxKeyBytes) req.refuse(ERROR_CODE.INVALID_ARGUMENT, KEY_TOO_LONG);
  }

  /** innerFrame handles Kitex TTHeaderFramed: a framed message inside the header payload. */
  private innerFrame(buf: Uint8Array, p: number, end: number, req: Request): number {
    if (end - p >= 6 && buf[p] !== 0x80 && buf[p + 4] === 0x80 && buf[p + 5] === 0x01) {
      const length = readI32(buf, p);
      if (length !== end - p - 4) throw protocolError("inner frame length does not match the header frame");
      req.header.innerFramed = true;
      return p + 4;
    }
    return p;
  }

  private readMessageHeader(r: BinaryReader, req: Request): void {
    const first = r.buf[r.pos];
    const version = r.readI32();
    if ((version & VERSION_MASK) !== VERSION_1) {
      if (first === COMPACT_PROTOCOL_ID) throw new ProtocolError(APP_ERROR.INVALID_PROTOCOL, "compact protocol is not supported (binary only)");
      throw protocolError(version > 0 ? "non-strict binary message (strict only)" : "bad protocol version");
    }
    const type = version & 0xff;
    req.nameLength = r.readBinary();
    req.nameStart = r.rangeStart;
    req.seqid = r.readI32();
    req.messageType = type;
    req.method = matchMethod(r.buf, req.nameStart, req.nameLength);
    req.headerRead = true;
    if (type !== MESSAGE_CALL && type !== MESSAGE_ONEWAY) {
      throw new ProtocolError(APP_ERROR.INVALID_MESSAGE_TYPE, `message type ${type} is not served (CALL and ONEWAY only)`);
    }
    req.oneway = type === MESSAGE_ONEWAY;
  }

  /**
   * readRequestStruct reads the method's request struct (depth 2) into `req`. Limits are checked
   * on what it ends with: a repeated field replaces the earlier one, refusal and all (a key too
   * long followed by a valid one is a valid request).
   */
  private readRequestStruct(r: BinaryReader, req: Request): void {
    const method = baseMethod(req.method);
    const hasKey = method === METHOD_GET || method === METHOD_SET || method === METHOD_DELETE;
    const hasKeyList = method === METHOD_GET_MULTI || method === METHOD_PEER_INVALIDATE;
    let itemsRefusal = 0; // what the kept key list or entry map breaks (ITEMS_*)
    for (;;) {
      const type = r.readFieldBegin();
      if (type === TYPE_STOP) break;
      const id = r.fieldId;
      if (type === TYPE_STRING && id === 1 && method === METHOD_AUTH) {
        req.valueLength = r.readBinary(); // the token
        req.valueStart = r.rangeStart;
      } else if (type === TYPE_STRING && id === 1) {
        req.groupLength = r.readBinary();
        req.groupStart = r.rangeStart;
      } else if (type === TYPE_STRING && id === 2 && hasKey) {
        req.keyLength = r.readBinary();
        req.keyStart = r.rangeStart;
      } else if (type === TYPE_STRING && id === 3 && method === METHOD_SET) {
        req.valueLength = r.readBinary();
        req.valueStart = r.rangeStart;
      } else if (type === TYPE_I64 && ttlField(method, id) === 1) {
        req.ttlSeconds = r.readI64();
      } else if (type === TYPE_I64 && ttlField(method, id) === 2) {
        req.ttlMs = r.readI64();
        req.hasTtlMs = true;
      } else if ((type === TYPE_LIST || type === TYPE_SET) && id === 2 && hasKeyList) {
        const refusal = this.readKeyList(r, req, type);
        if (refusal !== ITEMS_SKIPPED) itemsRefusal = refusal;
      } else if (type === TYPE_BOOL && id === 3 && method === METHOD_PEER_INVALIDATE) {
        req.all = r.readBool();
      } else if (type === TYPE_BOOL && id === 2 && method === METHOD_PEER_PING) {
        req.lease = r.readBool();
      } else if (type === TYPE_MAP && id === 2 && method === METHOD_SET_MULTI) {
        const refusal = this.readEntryMap(r, req);
        if (refusal !== ITEMS_SKIPPED) itemsRefusal = refusal;
      } else {
        r.skip(type, 3);
      }
    }
    if ((hasKey && req.keyLength > this.maxKeyBytes) || itemsRefusal === ITEMS_KEY_TOO_LONG) req.refuse(ERROR_CODE.INVALID_ARGUMENT, KEY_TOO_LONG);
    if ((method === METHOD_SET && req.valueLength > this.maxValueBytes) || itemsRefusal === ITEMS_VALUE_TOO_LARGE) req.refuse(ERROR_CODE.VALUE_TOO_LARGE, VALUE_TOO_LARGE);
    if (req.ttlSeconds < 0 || (req.hasTtlMs && req.ttlMs < 0)) req.refuse(ERROR_CODE.INVALID_ARGUMENT, NEGATIVE_TTL);
  }

  /**
   * readKeyList reads GetMulti's `list<string> keys` into req.items (value ranges 0,0); returns
   * ITEMS_KEY_TOO_LONG if a key is over the limit, else ITEMS_OK, or ITEMS_SKIPPED for a list of
   * another type (passed over: what an earlier copy of the field gave stays).
   */
  private readKeyList(r: BinaryReader, req: Request, type: number): number {
    const at = r.pos;
    const count = r.readListBegin(); // count bounded by the bytes left
    if (type !== TYPE_LIST || r.elemType !== TYPE_STRING) {
      r.pos = at;
      r.skip(type, 3);
      return ITEMS_SKIPPED;
    }
    let refusal = ITEMS_OK;
    req.ensureItems(count);
    req.itemCount = 0;
    const items = req.items;
    for (let i = 0; i < count; i++) {
      const length = r.readBinary();
      const o = i * 4;
      items[o] = r.rangeStart;
      items[o + 1] = length;
      items[o + 2] = 0;
      items[o + 3] = 0;
      if (length > this.maxKeyBytes) refusal = ITEMS_KEY_TOO_LONG;
    }
    req.itemCount = count;
    return refusal;
  }

  /**
   * readEntryMap reads SetMulti's `map<string, binary> values` into req.items; returns what the
   * first entry over a limit breaks (ITEMS_KEY_TOO_LONG or ITEMS_VALUE_TOO_LARGE), else ITEMS_OK,
   * or ITEMS_SKIPPED for a map of other types (passed over).
   */
  private readEntryMap(r: BinaryReader, req: Request): number {
    const at = r.pos;
    const count = r.readMapBegin(); // count bounded by the bytes left
    if (r.elemType !== TYPE_STRING || r.valueType !== TYPE_STRING) {
      r.pos = at;
      r.skip(TYPE_MAP, 3);
      return ITEMS_SKIPPED;
    }
    let refusal = ITEMS_OK;
    req.ensureItems(count);
    req.itemCount = 0;
    const items = req.items;
    for (let i = 0; i < count; i++) {
      const keyLength = r.readBinary();
      const o = i * 4;
      items[o] = r.rangeStart;
      items[o + 1] = keyLength;
      const valueLength = r.readBinary();
      items[o + 2] = r.rangeStart;
      items[o + 3] = valueLength;
      if (refusal === ITEMS_OK && keyLength > this.maxKeyBytes) refusal = ITEMS_KEY_TOO_LONG;
      if (refusal === ITEMS_OK && valueLength > this.maxValueBytes) refusal = ITEMS_VALUE_TOO_LARGE;
    }
    req.itemCount = count;
    return refusal;
  }
}

/** What a key list or entry map read says (readKeyList, readEntryMap). */
const ITEMS_OK = 0;
const ITEMS_KEY_TOO_LONG = 1;
const ITEMS_VALUE_TOO_LARGE = 2;
const ITEMS_SKIPPED = 3;

/** ttlField says which TTL field `id` is for (base) `method`: 1 = ttl (seconds), 2 = ttlMs, 0 = none. */
function ttlField(method: number, id: number): number {
  if (method === METHOD_SET) return id === 4 ? 1 : id === 5 ? 2 : 0;
  if (method === METHOD_SET_MULTI) return id === 3 ? 1 : id === 4 ? 2 : 0;
  return 0;
}
