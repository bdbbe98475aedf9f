// MessageScanner: finds where a buffered (unframed) strict message ends, resumably.
//
// Buffered transport has no length prefix, so the end of a message is only known by walking
// its structure. A naive "try to parse, fail, wait, parse again from the start" costs O(n²)
// when a client (or a slowloris) dribbles a large message byte by byte. This scanner instead
// keeps its progress between calls: it walks the message as a sequence of ATOMIC steps (a
// field header plus a fixed value, a string header plus its bytes, a container header, …) and
// commits its position and an explicit stack after each one. When bytes run out it records
// `needAtLeast` (the byte count that would let the next step finish) and returns -1; the next
// call resumes at the last committed step. Every byte is walked once.
//
// Memory layout: all positions are RELATIVE to the message start, so the partial message may
// be moved (copied from a socket chunk into the connection's pending buffer) between calls.
// The stack is three typed arrays sized `maxDepth + 1`, allocated once per connection:
// `kind` (STRUCT/LIST/MAP), `remaining` (elements left; a map counts keys and values
// separately: 2·count, even → key next), and `keyType`/`valueType` of the container.
//
// Bounds: any step that would need the message to grow past `maxBytes` (the frame limit) is
// an error at once, so the pending buffer never grows beyond the limit; counts are checked
// with the same per-type minimum sizes as the BinaryReader; depth is limited the same way.

import { readI32 } from "../bytes/bytes.ts";
import { protocolError } from "./errors.ts";
import {
  TYPE_LIST,
  TYPE_MAP,
  TYPE_SET,
  TYPE_STOP,
  TYPE_STRING,
  TYPE_STRUCT,
  VERSION_1,
  VERSION_MASK,
  fixedValueBytes,
  minValueBytes,
} from "./wire.ts";

const PHASE_VERSION = 0;
const PHASE_NAME = 1;
const PHASE_SEQID = 2;
const PHASE_BODY = 3;

/** Sentinel returned by scan() while the message is incomplete. */
export const SCAN_NEED_MORE = -1;

export class MessageScanner {
  /** After SCAN_NEED_MORE: the message needs at least this many bytes before a rescan helps. */
  needAtLeast = 0;
  private phase = PHASE_VERSION;
  private offset = 0;
  private depth = 0;
  private readonly maxDepth: number;
  private readonly kind: Uint8Array;
  private readonly keyType: Uint8Array;
  private readonly valueType: Uint8Array;
  private readonly remaining: Float64Array;

  constructor(maxDepth: number) {
    this.maxDepth = maxDepth;
    this.kind = new Uint8Array(maxDepth + 1);
    this.keyType = new Uint8Array(maxDepth + 1);
    this.valueType = new Uint8Array(maxDepth + 1);
    this.remaining = new Float64Array(maxDepth + 1);
  }

  /** reset forgets any partial progress (the next scan starts a new message). */
  reset(): void {
    this.phase = PHASE_VERSION;
    this.offset = 0;
    this.depth = 0;
    this.needAtLeast = 0;
  }

  /**
   * scan looks at the message starting at `buf[start]` with bytes available up to `end`, and
   * returns its total length once complete, or SCAN_NEED_MORE. Throws ProtocolError on
   * invalid structure or when the message would exceed `maxBytes`.
   */
  scan(buf: Uint8Array, start: number, end: number, maxBytes: number): number {
    const avail = end - start;
    for (;;) {
      const p = this.offset;
      if (this.phase === PHASE_BODY) {
        if (this.depth === 0) {
          const length = this.offset;
          this.reset();
          // Whole in what was given, it is held to the limit all the same: the same message cut
          // by TCP is refused at the limit (`short`), so one in one chunk must be too.
          if (length > maxBytes) throw protocolError("message exceeds the frame limit");
          return length;
        }
        const top = this.depth - 1;
        const kind = this.kind[top]!;
        let type: number;
        let header = 0;
        if (kind === TYPE_STRUCT) {
          if (avail < p + 1) return this.short(p + 1, maxBytes);
          type = buf[start + p]!;
          if (type === TYPE_STOP) {
            this.offset = p + 1;
            this.depth--;
            continue;
          }
          if (minValueBytes(type) < 0) throw protocolError("invalid field type");
          header = 3;
        } else {
          const left = this.remaining[top]!;
          if (left === 0) {
            this.depth--;
            continue;
          }
          type = kind === TYPE_MAP && left % 2 === 0 ? this.keyType[top]! : this.valueType[top]!;
        }
        const done = this.value(buf, start, avail, p, header, type, maxBytes);
        if (done < 0) return SCAN_NEED_MORE;
        if (kind !== TYPE_STRUCT) this.remaining[top]! -= 1;
        continue;
      }
      if (avail < p + 4) return this.short(p + 4, maxBytes);
      const word = readI32(buf, start + p);
      if (this.phase === PHASE_VERSION) {
        if ((word & VERSION_MASK) !== VERSION_1) throw protocolError("bad protocol version (only strict binary)");
        this.offset = p + 4;
        this.phase = PHASE_NAME;
      } else if (this.phase === PHASE_NAME) {
        if (word < 0) throw protocolError("negative method name length");
        if (avail < p + 4 + word) return this.short(p + 4 + word, maxBytes);
        this.offset = p + 4 + word;
        this.phase = PHASE_SEQID;
      } else {
        this.offset = p + 4;
        this.phase = PHASE_BODY;
        this.push(TYPE_STRUCT, 0, 0, 0);
      }
    }
  }

  /** value consumes one value of `type` after a `header`-byte field header; -1 = need more. */
  private value(buf: Uint8Array, start: number, avail: number, p: number, header: number, type: number, maxBytes: number): number {
    const q = p + header;
    const fixed = fixedValueBytes(type);
    if (fixed > 0) {
      if (avail < q + fixed) return this.short(q + fixed, maxBytes);
      this.offset = q + fixed;
      return 0;
    }
    switch (type) {
      case TYPE_STRING: {
        if (avail < q + 4) return this.short(q + 4, maxBytes);
        const length = readI32(buf, start + q);
        if (length < 0) throw protocolError("negative string length");
        if (avail < q + 4 + length) return this.short(q + 4 + length, maxBytes);
        this.offset = q + 4 + length;
        return 0;
      }
      case TYPE_STRUCT:
        this.offset = q;
        this.push(TYPE_STRUCT, 0, 0, 0);
        return 0;
      case TYPE_LIST:
      case TYPE_SET: {
        if (avail < q + 5) return this.short(q + 5, maxBytes);
        const elem = buf[start + q]!;
        const count = readI32(buf, start + q + 1);
        const min = minValueBytes(elem);
        if (min < 0) throw protocolError("invalid container element type");
        if (count < 0) throw protocolError("negative container size");
        return this.container(avail, q + 5, count, min, fixedValueBytes(elem), TYPE_LIST, elem, elem, maxBytes);
      }
      case TYPE_MAP: {
        if (avail < q + 6) return this.short(q + 6, maxBytes);
        const k = buf[start + q]!;
        const v = buf[start + q + 1]!;
        const count = readI32(buf, start + q + 2);
        const kMin = minValueBytes(k);
        const vMin = minValueBytes(v);
        if (kMin < 0 || vMin < 0) throw protocolError("invalid map key or value type");
        if (count < 0) throw protocolError("negative map size");
        const kFixed = fixedValueBytes(k);
        const vFixed = fixedValueBytes(v);
        const fixedPair = kFixed > 0 && vFixed > 0 ? kFixed + vFixed : 0;
        return this.container(avail, q + 6, count, kMin + vMin, fixedPair, TYPE_MAP, k, v, maxBytes);
      }
      default:
        throw protocolError("invalid type");
    }
  }

  /** container commits a container header at `body` (its elements start there). */
  private container(avail: number, body: number, count: number, minEach: number, fixedEach: number, kind: number, k: number, v: number, maxBytes: number): number {
    if (body + count * minEach > maxBytes) throw protocolError("container size exceeds the frame limit");
    if (fixedEach > 0) {
      // Elements of fixed size are consumed as one step.
      if (avail < body + count * fixedEach) return this.short(body + count * fixedEach, maxBytes);
      this.offset = body + count * fixedEach;
      return 0;
    }
    this.offset = body;
    this.push(kind, k, v, kind === TYPE_MAP ? count * 2 : count);
    return 0;
  }

  private push(kind: number, k: number, v: number, remaining: number): void {
    // The argument struct is depth 1, as in BinaryReader.skip.
    if (this.depth + 1 > this.maxDepth) throw protocolError("nesting too deep");
    const top = this.depth++;
    this.kind[top] = kind;
    this.keyType[top] = k;
    this.valueType[top] = v;
    this.remaining[top] = remaining;
  }

  private short(needed: number, maxBytes: number): number {
    if (needed > maxBytes) throw protocolError("message exceeds the frame limit");
    this.needAtLeast = needed;
    return SCAN_NEED_MORE;
  }
}
