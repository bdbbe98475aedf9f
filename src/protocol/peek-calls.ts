// peekCalls: list the plain framed `Get` and `Set` calls at the head of a chunk, before any is
// decoded. matchPlainGet, the test for one Get, is also the decoder's fast path for Get.
//
// Why: a pipelined client sends a batch of requests in one TCP chunk. Served one after another,
// every Get (and every Set of an existing key) walks a chain of dependent memory loads (index
// slot → item record → slab chunk) and waits for each miss in turn, because the decode and reply
// code between two requests is far longer than what the CPU can look ahead over. Listing the
// batch's keys first lets the store warm the lines of the whole batch in a few tight loops
// (store/warm.ts), where the misses of different keys overlap, and lets a run of them be served
// without decoding each (server/call-runs.ts). Measured on the 10k-key, 100-byte, depth-16 network
// benchmark: +17% ops/s for the warm-up alone (bench/RESULTS.md).
//
// It reads only the bytes it is given, never throws, allocates nothing, and changes no state.
// Anything other than the exact layouts of framed strict-binary `Get` and `Set` calls is not
// listed:
//
//   i32 length | 80 01 00 01 | 00 00 00 03 "Get" | i32 seqid
//   0C 00 01                          (field 1: GetRequest)
//     0B 00 01 | i32 n | group        (field 1: group)
//     0B 00 02 | i32 n | key          (field 2: key)
//   00 00                             (STOP of GetRequest, STOP of the arguments; end of frame)
//
//   i32 length | 80 01 00 01 | 00 00 00 03 "Set" | i32 seqid
//   0C 00 01                          (field 1: SetRequest)
//     0B 00 01 | i32 n | group        (field 1: group)
//     0B 00 02 | i32 n | key          (field 2: key)
//     0B 00 03 | i32 n | value        (field 3: value)
//     0A 00 04 | i64 ttl              (field 4: ttl in seconds; no ttlMs)
//   00 00
//
// which is how the Apache generator writes them (fields in id order), and the same Set with its
// ttl field first, before the group: Kitex's generated FastWrite writes a struct's fixed-size
// fields first, then the others in id order (CloudWeGo's write-up of its codec shows a struct
// written as fields 2, 4, 1, 3). A listed frame is one the decoder reads as a Get or Set of
// exactly those ranges (a property the tests fuzz). Other field orders, extra fields (a Set with
// ttlMs), other methods and the header transports are simply not listed: the general path
// serves them, with the same replies.
//
// The buffered (unframed) transport sends the same messages without the i32 length. There the
// end of a message is where its plain layout ends (`plainCallEnd`): the decoder's scanner finds
// the same end, since the two STOPs close the message. A message that is not plain cannot be
// passed over (its end is unknown without scanning it), so the listing always stops there.

import { readI32 } from "../bytes/bytes.ts";
import { METHOD_GET, METHOD_SET } from "./request.ts";

/**
 * PEEK_STRIDE is the number of Int32 words per listed call: groupStart, groupLength, keyStart,
 * keyLength, seqid, frameStart (its length prefix; buffered: the message), frameEnd (the next
 * frame's start), method
 * (METHOD_GET or METHOD_SET); for a Set also valueStart, valueLength, and ttl: its seconds when
 * they are a non-negative int32 (high word 0), else -1.
 */
export const PEEK_STRIDE = 11;
export const PEEK_METHOD = 7;
export const PEEK_VALUE = 8;
export const PEEK_TTL = 10;

/**
 * isCallOf tells whether the message at `buf[f]` (18 bytes or more) starts as a strict CALL of the
 * three-letter method `first` + "et" (Get, Set) whose arguments begin with field 1, a struct:
 *   80 01 00 01 | 00 00 00 03 | first 'e' 't' | i32 seqid | 0C 00 01
 */
function isCallOf(buf: Uint8Array, f: number, first: number): boolean {
  // One test of all fourteen bytes (each XORed with what it must be), not one branch per byte.
  return ((buf[f]! ^ 0x80) | (buf[f + 1]! ^ 0x01) | buf[f + 2]! | (buf[f + 3]! ^ 1) |
    buf[f + 4]! | buf[f + 5]! | buf[f + 6]! | (buf[f + 7]! ^ 3) |
    (buf[f + 8]! ^ first) | (buf[f + 9]! ^ 0x65) | (buf[f + 10]! ^ 0x74) |
    (buf[f + 15]! ^ 12) | buf[f + 16]! | (buf[f + 17]! ^ 1)) === 0;
}

/**
 * PLAIN_GET receives what `matchPlainGet` found when given no other place: groupStart,
 * groupLength, keyStart, keyLength, seqid (shared scratch: callers read it at once; nothing here
 * is asynchronous).
 */
export const PLAIN_GET = new Int32Array(5);

/**
 * matchPlainGet tells whether the message `buf[f, end)` (a frame's body) is exactly a plain Get
 * call in the layout above, and if so writes its groupStart, groupLength, keyStart, keyLength and
 * seqid to `out[o, o+5)` (peekCalls' first five words; PLAIN_GET by default). Reads only inside
 * [f, end).
 */
export function matchPlainGet(buf: Uint8Array, f: number, end: number, out: Int32Array = PLAIN_GET, o = 0): boolean {
  // Message header (15 bytes) + field 1 header (3) + group field header (7) + key field header (7) + 2 STOPs.
  // (Kept this short, the fields in `getFields`: so the JIT inlines it into peekCalls' loop.)
  return end - f >= 34 && isCallOf(buf, f, 0x47) && getFields(buf, f, end, out, o); // "Get"
}

/** getFields is matchPlainGet past the message header (the GetRequest's fields and the end). */
function getFields(buf: Uint8Array, f: number, end: number, out: Int32Array, o: number): boolean {
  let q = f + 18;
  if (buf[q] !== 11 || buf[q + 1] !== 0 || buf[q + 2] !== 1) return false;
  const groupLength = readI32(buf, q + 3);
  const groupStart = q + 7;
  if (groupLength < 0 || groupLength > end - groupStart - 9) return false;
  q = groupStart + groupLength;
  if (buf[q] !== 11 || buf[q + 1] !== 0 || buf[q + 2] !== 2) return false;
  const keyLength = readI32(buf, q + 3);
  const keyStart = q + 7;
  // Exactly two STOPs after the key (GetRequest, then the arguments) end the message: so the
  // decoder reads this message as a Get of exactly this group and key.
  if (keyLength !== end - keyStart - 2 || buf[end - 2] !== 0 || buf[end - 1] !== 0) return false;
  out[o] = groupStart;
  out[o + 1] = groupLength;
  out[o + 2] = keyStart;
  out[o + 3] = keyLength;
  out[o + 4] = readI32(buf, f + 11);
  return true;
}

/**
 * matchPlainSet tells whether the message `buf[f, end)` (a frame's body) is exactly a plain Set
 * call in the layout above, and if so writes it to `out[o, o+PEEK_STRIDE)` as peekCalls lists it
 * (all but the frame's bounds and the method; other words may be written when it is not). Reads
 * only inside [f, end).
 */
export function matchPlainSet(buf: Uint8Array, f: number, end: number, out: Int32Array = PLAIN_SET, o = 0): boolean {
  // Message header (15) + field 1 header (3) + 3 string field headers (21) + ttl field (11) + 2 STOPs.
  if (end - f < 52 || !isCallOf(buf, f, 0x53)) return false; // "Set"
  let q = f + 18;
  const ttlFirst = isTtlField(buf, q); // Kitex's layout (see the header)
  let ttlAt = q;
  if (ttlFirst) q += 11;
  // Three strings, fields 1, 2, 3 (to words 0, 2 and PEEK_VALUE); each length checked against
  // what must still follow it (the later field headers, the ttl field if it comes last, and the
  // STOPs: 7 bytes per string field, then 13 or 2).
  const after = ttlFirst ? 2 : 13;
  for (let field = 1; field <= 3; field++) {
    if (buf[q] !== 11 || buf[q + 1] !== 0 || buf[q + 2] !== field) return false;
    const length = readI32(buf, q + 3);
    const at = q + 7;
    if (length < 0 || length > end - at - after - 7 * (3 - field)) return false;
    const w = field === 3 ? o + PEEK_VALUE : o + field * 2 - 2;
    out[w] = at;
    out[w + 1] = length;
    q = at + length;
  }
  if (!ttlFirst) {
    if (!isTtlField(buf, q)) return false;
    ttlAt = q;
    q += 11;
  }
  // Exactly two STOPs end the message.
  if (q + 2 !== end || buf[end - 2] !== 0 || buf[end - 1] !== 0) return false;
  const high = readI32(buf, ttlAt + 3);
  const low = readI32(buf, ttlAt + 7);
  out[o + 4] = readI32(buf, f + 11);
  out[o + PEEK_TTL] = high === 0 && low >= 0 ? low : -1;
  return true;
}

/** PLAIN_SET is where `matchPlainSet` writes when given no other place (PEEK_STRIDE words). */
const PLAIN_SET = new Int32Array(PEEK_STRIDE);

/** isTtlField tells whether `buf[q]` starts the SetRequest's ttl field header: 0A 00 04 (i64, field 4). */
function isTtlField(buf: Uint8Array, q: number): boolean {
  return buf[q] === 10 && buf[q + 1] === 0 && buf[q + 2] === 4;
}

/**
 * plainCallEnd returns where the message at `buf[f]` ends if it is laid out as a plain Get or Set
 * (the lengths of its strings say where its two STOPs are) and ends by `end`, else -1. Whether it
 * really is one is for matchPlainGet and matchPlainSet to tell, on exactly these bounds.
 */
export function plainCallEnd(buf: Uint8Array, f: number, end: number): number {
  if (end - f < 34) return -1;
  const method = buf[f + 8];
  let q = f + 18; // the group field: 0B 00 01 | i32 n | group
  const strings = method === 0x47 ? 2 : method === 0x53 ? 3 : 0;
  if (strings === 0) return -1;
  // A Set's ttl field (0A 00 04 | i64) comes last, or first (Kitex).
  const ttlFirst = strings === 3 && isTtlField(buf, q);
  if (ttlFirst) q += 11;
  for (let i = 0; i < strings; i++) {
    if (end - q < 7) return -1;
    const length = readI32(buf, q + 3);
    if (length < 0) return -1;
    q += 7 + length;
  }
  if (strings === 3 && !ttlFirst) q += 11;
  q += 2; // the two STOPs
  return q <= end ? q : -1;
}

/**
 * peekCalls lists the plain Get and Set calls in `buf[start, end)`, which must begin at a frame
 * (framed) or message (buffered: `framed` false) boundary, into `out` (PEEK_STRIDE words each)
 * and returns how many. It stops at the first incomplete frame, at a frame longer than
 * `maxFrameBytes` (the reader refuses it), when `out` is full, and, when `leading` is set, at the
 * first frame that is neither (so the list is the calls that follow each other from `start`);
 * otherwise other frames are passed over (framed only: see the header).
 */
export function peekCalls(
  buf: Uint8Array, start: number, end: number, out: Int32Array, leading = false, maxFrameBytes = 0x7fffffff,
  framed = true,
): number {
  const max = (out.length / PEEK_STRIDE) | 0;
  let count = 0;
  let p = start;
  while (count < max && end - p >= 4) {
    let f: number; // the message
    const frameStart = p;
    if (framed) {
      const length = readI32(buf, p);
      f = p + 4;
      if (length <= 0 || length > end - f || length > maxFrameBytes) break;
      p = f + length; // the next frame
    } else {
      f = p;
      p = plainCallEnd(buf, f, end);
      if (p < 0 || p - f > maxFrameBytes) break;
    }
    const o = count * PEEK_STRIDE;
    if (matchPlainGet(buf, f, p, out, o)) {
      out[o + PEEK_METHOD] = METHOD_GET;
    } else if (matchPlainSet(buf, f, p, out, o)) {
      out[o + PEEK_METHOD] = METHOD_SET;
    } else {
      if (leading || !framed) break;
      continue;
    }
    out[o + 5] = frameStart;
    out[o + 6] = p;
    count++;
  }
  return count;
}
