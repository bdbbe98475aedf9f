// Wire constants of the Thrift binary protocol and the four transports MyBunCache speaks.
//
// Everything here is a number fixed by a spec; nothing here is mutable. Sources:
//  - Thrift binary protocol (strict): a message starts with the i32 version word
//    `0x80010000 | messageType`, then `string name`, `i32 seqid`, then one struct.
//  - Framed: `i32 length` (big-endian, not counting itself) + one strict message.
//  - Buffered/unframed: one strict message, no length: its end is found by parsing.
//  - Apache THeader (doc/specs/HeaderFormat.md): `i32 length`, `u16 magic 0x0FFF`, `u16 flags`,
//    `i32 seqid`, `u16 headerSize/4`, then a header block of VARINTS (protocol id, transform
//    count, transform ids, info blocks: `varint id=1, varint count, count × (varstring key,
//    varstring value)`), zero padding to 4 bytes, then the payload.
//  - Kitex TTHeader (cloudwego kitex pkg/remote/codec/header_codec.go): the same outer layout
//    with magic 0x1000, but the header block uses FIXED-WIDTH fields: `u8 protocol id`,
//    `u8 transform count`, `u8` transform ids, info blocks `u8 id`: 0x00 padding, 0x01 string
//    key/values (`u16 count`, strings with `u16` length), 0x10 int key/values (`u16 count`,
//    `u16 key`, `u16`-length value), 0x11 ACL token (`u16`-length string). Kitex's
//    "TTHeaderFramed" puts a framed message (i32 length + strict message) inside the payload.

/** Thrift field/element type codes (TType). */
export const TYPE_STOP = 0;
export const TYPE_VOID = 1;
export const TYPE_BOOL = 2;
export const TYPE_BYTE = 3;
export const TYPE_DOUBLE = 4;
export const TYPE_I16 = 6;
export const TYPE_I32 = 8;
export const TYPE_I64 = 10;
export const TYPE_STRING = 11;
export const TYPE_STRUCT = 12;
export const TYPE_MAP = 13;
export const TYPE_SET = 14;
export const TYPE_LIST = 15;
export const TYPE_UUID = 16;

/** Message types (TMessageType). */
export const MESSAGE_CALL = 1;
export const MESSAGE_REPLY = 2;
export const MESSAGE_EXCEPTION = 3;
export const MESSAGE_ONEWAY = 4;

/** Strict binary version word: high 16 bits, the message type in the low byte. */
export const VERSION_1 = 0x80010000 | 0;
export const VERSION_MASK = 0xffff0000 | 0;
/** First byte of a compact-protocol message (rejected: only binary is served). */
export const COMPACT_PROTOCOL_ID = 0x82;

/** Transport kinds, detected per connection from its first bytes. */
export const TRANSPORT_UNKNOWN = 0;
export const TRANSPORT_FRAMED = 1;
export const TRANSPORT_BUFFERED = 2;
export const TRANSPORT_THEADER = 3;
export const TRANSPORT_TTHEADER = 4;

/** Magic of the header transports: the u16 right after the frame length. */
export const THEADER_MAGIC = 0x0fff;
export const TTHEADER_MAGIC = 0x1000;
/** Bytes from the frame length up to the header block: length, magic, flags, seqid, size. */
export const HEADER_FIXED_BYTES = 14;
/** Protocol ids inside a header transport. Only binary is served. */
export const HEADER_PROTOCOL_BINARY = 0;
export const HEADER_PROTOCOL_COMPACT = 2;
/** Info block ids. Apache: 1 only. Kitex: 0 padding, 1, 0x10, 0x11. */
export const INFO_PADDING = 0x00;
export const INFO_KEY_VALUE = 0x01;
export const INFO_INT_KEY_VALUE = 0x10;
export const INFO_ACL_TOKEN = 0x11;

/**
 * minValueBytes returns the fewest bytes a value of `type` can occupy on the wire, or -1 when
 * `type` is not a valid value type (STOP, VOID and unassigned codes). Container counts are
 * checked against it before anything is read or grown: `count * min <= bytes left`.
 */
export function minValueBytes(type: number): number {
  switch (type) {
    case TYPE_BOOL:
    case TYPE_BYTE:
      return 1;
    case TYPE_I16:
      return 2;
    case TYPE_I32:
      return 4;
    case TYPE_DOUBLE:
    case TYPE_I64:
      return 8;
    case TYPE_STRING:
      return 4; // i32 length
    case TYPE_STRUCT:
      return 1; // STOP
    case TYPE_MAP:
      return 6; // key type, value type, i32 count
    case TYPE_SET:
    case TYPE_LIST:
      return 5; // element type, i32 count
    case TYPE_UUID:
      return 16;
    default:
      return -1;
  }
}

/** fixedValueBytes returns the size of a fixed-width type, or 0 for variable-width types. */
export function fixedValueBytes(type: number): number {
  switch (type) {
    case TYPE_BOOL:
    case TYPE_BYTE:
      return 1;
    case TYPE_I16:
      return 2;
    case TYPE_I32:
      return 4;
    case TYPE_DOUBLE:
    case TYPE_I64:
      return 8;
    case TYPE_UUID:
      return 16;
    default:
      return 0;
  }
}
