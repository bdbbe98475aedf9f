// FrameReader: turns a connection's TCP chunks into complete message views.
//
// Usage (per connection, per `data` event):
//     reader.push(chunk);
//     while (reader.next()) decode(reader.buffer, reader.start, reader.end);
// `next()` throws ProtocolError on a bad frame (the connection must then close).
//
// The transport is detected from the connection's first bytes and fixed from then on:
//   0x80 …                     buffered: a strict message, no length (end found by scanning)
//   len(4) 0x80 0x01 …         framed
//   len(4) 0x0F 0xFF …         Apache THeader
//   len(4) 0x10 0x00 …         Kitex TTHeader
// anything else (compact protocol, HTTP, garbage) is a clear error.
//
// Views: for framed and header transports a view is the frame AFTER its 4-byte length
// (header transports: starting at the magic); for buffered it is the whole message. A view is
// valid until the next call to `next()` or `push()`.
//
// Memory layout and copying: when a message lies whole in the chunk, the view points into the
// chunk (no copy). Only a partial tail is copied, into `pending` — one Uint8Array per
// connection that grows (doubling) to the largest partial frame seen and is reused. For
// framed/header transports exactly the missing bytes of the pending frame are taken from the
// next chunk, and the rest of that chunk is served zero-copy again. For buffered transport
// the end is unknown until scanned: the resumable MessageScanner continues where it stopped and
// says how many bytes its next step needs (`needAtLeast`), and only those are taken, so there
// too the rest of the chunk is served zero-copy. `pending` never grows past
// `maxFrameBytes + 4`: lengths are validated before any growth.

import { APP_ERROR, ProtocolError, protocolError } from "./errors.ts";
import { IDLE_KEEP_BYTES, type ProtocolLimits, fittedSize } from "./limits.ts";
import { MessageScanner, SCAN_NEED_MORE } from "./message-scanner.ts";
import { copyBytes, readI32 } from "../bytes/bytes.ts";
import {
  COMPACT_PROTOCOL_ID,
  THEADER_MAGIC,
  TRANSPORT_BUFFERED,
  TRANSPORT_FRAMED,
  TRANSPORT_THEADER,
  TRANSPORT_TTHEADER,
  TRANSPORT_UNKNOWN,
  TTHEADER_MAGIC,
} from "./wire.ts";

const EMPTY = new Uint8Array(0);
const PENDING_INITIAL_BYTES = 1024;
/**
 * KEEP_PENDING_BYTES: a larger partial-message buffer is dropped once it is empty, even in the
 * middle of a chunk (a client pipelining large frames); one that is empty when every message is
 * served is kept only up to IDLE_KEEP_BYTES (`releaseServed`).
 */
const KEEP_PENDING_BYTES = 1024 * 1024;
/** Bytes needed to tell framed/header transports apart: length + 2 magic bytes. */
const DETECT_BYTES = 6;

export class FrameReader {
  /** Detected transport (TRANSPORT_*), TRANSPORT_UNKNOWN until the first bytes arrive. */
  transport = TRANSPORT_UNKNOWN;
  /** The current message view, set by a `next()` that returned true. */
  buffer: Uint8Array = EMPTY;
  start = 0;
  end = 0;

  private chunk: Uint8Array = EMPTY;
  private chunkPos = 0;
  /** The frame last refused for its length: its bytes at hand, after the length (`refusedFrame`). */
  private refusedBuf: Uint8Array = EMPTY;
  private refusedAt = 0;
  private refusedEnd = 0;
  private pending: Uint8Array = EMPTY; // allocated on the first partial message
  private pendingStart = 0;
  private pendingEnd = 0;
  private scannerInstance: MessageScanner | null = null; // buffered transport only
  private readonly maxDepth: number;
  private readonly maxFrameBytes: number;

  constructor(limits: ProtocolLimits) {
    this.maxFrameBytes = limits.maxFrameBytes;
    this.maxDepth = limits.maxDepth;
  }

  /** scanner is the buffered transport's message scanner, made when a connection first needs it. */
  private get scanner(): MessageScanner {
    return (this.scannerInstance ??= new MessageScanner(this.maxDepth));
  }

  /** push hands the reader a new chunk; call `next()` until it returns false first. */
  push(chunk: Uint8Array): void {
    if (this.chunkPos < this.chunk.length) throw new Error("FrameReader.push before next() returned false");
    this.chunk = chunk;
    this.chunkPos = 0;
  }

  /**
   * runStart returns where the next frame (buffered: message) starts in the current chunk when
   * the connection is framed or buffered and holds no partial one, else -1: a caller may then
   * serve whole frames straight from `chunkBytes` and move past them with `skipTo`
   * (server/call-runs.ts). With nothing pending, the buffered scanner is between messages.
   */
  runStart(): number {
    const t = this.transport;
    return (t === TRANSPORT_FRAMED || t === TRANSPORT_BUFFERED) && this.pendingEnd === this.pendingStart ? this.chunkPos : -1;
  }

  /**
   * readPosition is `runStart` for every transport once detected (framed, buffered, and the
   * header transports, framed like framed): where the next message starts in the current chunk
   * when no partial one is held, else -1. For a caller that only reads ahead (server/look-ahead.ts).
   */
  readPosition(): number {
    return this.transport !== TRANSPORT_UNKNOWN && this.pendingEnd === this.pendingStart ? this.chunkPos : -1;
  }

  /** chunkBytes is the chunk last pushed (see runStart). */
  get chunkBytes(): Uint8Array {
    return this.chunk;
  }

  /** skipTo moves past frames a caller served from the chunk; `p` must be a frame boundary. */
  skipTo(p: number): void {
    this.chunkPos = p;
  }

  /** pendingCapacity is the size of the buffer kept for partial messages (0 when none is kept). */
  get pendingCapacity(): number {
    return this.pending.length;
  }

  /** bufferedBytes returns how many bytes of an incomplete message are held. */
  bufferedBytes(): number {
    return this.pendingEnd - this.pendingStart + this.chunk.length - this.chunkPos;
  }

  /** next finds the next complete message; false = need more bytes. Throws ProtocolError. */
  next(): boolean {
    if (this.pendingEnd > this.pendingStart) return this.nextFromPending();
    this.pendingStart = this.pendingEnd = 0;
    // Nothing pending, and the last message is served: a buffer a large frame grew is given back
    // (an idle connection would keep up to the frame limit for good).
    if (this.pending.length > KEEP_PENDING_BYTES) this.pending = EMPTY;
    return this.nextFromChunk();
  }

  /**
   * releaseServed lets go of what the messages served were read from, for a caller whose `next()`
   * returned false (every message is served, and the chunk is used up): a large chunk, or the
   * partial-message buffer a large frame grew (which `next` gave back), would otherwise stay
   * referenced as `buffer`, held by an idle connection for good (24 idle connections after one
   * 16 MB frame each held 380 MB, none of it counted toward --max-buffered). So is the
   * partial-message buffer itself once it holds nothing, past IDLE_KEEP_BYTES: kept up to 1 MiB,
   * 200 connections that had each sent one 1 MB Set held 200 MB (review); one that holds a quarter
   * of it or less (the first bytes of the next message) moves to a buffer twice that, 16 KiB at
   * least: a 1 MB Set followed by 3 bytes kept the 1 MB, counted as 3 bytes. Returns whether it let
   * go of a view: the caller then drops its own views of it (the request's, the decoder's).
   */
  releaseServed(): boolean {
    const held = this.pendingEnd - this.pendingStart;
    const size = fittedSize(this.pending.length, held, IDLE_KEEP_BYTES);
    if (size > 0 && held === 0) {
      this.pending = EMPTY; // (not referenced as `buffer` any more either: let go just below)
      this.pendingStart = this.pendingEnd = 0;
    } else if (size > 0) {
      // The start of its next message, stashed in the buffer a large one grew: it is counted as
      // what it holds (`bufferedBytes`), so it moves to a buffer near that size, as BinaryWriter.fit.
      const fitted = new Uint8Array(size);
      copyBytes(fitted, 0, this.pending, this.pendingStart, held);
      this.pending = fitted;
      this.pendingStart = 0;
      this.pendingEnd = held;
    }
    if (this.buffer.length <= IDLE_KEEP_BYTES && this.chunk.length <= IDLE_KEEP_BYTES) return false;
    this.buffer = EMPTY;
    this.start = this.end = 0;
    if (this.chunkPos >= this.chunk.length) {
      this.chunk = EMPTY;
      this.chunkPos = 0;
    }
    return true;
  }

  private nextFromChunk(): boolean {
    const buf = this.chunk;
    const p = this.chunkPos;
    const end = buf.length;
    if (p >= end) return false;
    if (this.transport === TRANSPORT_UNKNOWN) {
      this.transport = detectTransport(buf, p, end, this.maxFrameBytes);
      if (this.transport === TRANSPORT_UNKNOWN) return this.stash();
    }
    if (this.transport === TRANSPORT_BUFFERED) {
      const length = this.scan(buf, p, end);
      if (length === SCAN_NEED_MORE) return this.stash();
      return this.yieldView(buf, p, p + length, p + length);
    }
    if (end - p < 4) return this.stash();
    const total = 4 + this.frameLength(buf, p);
    if (end - p < total) return this.stash();
    return this.yieldView(buf, p + 4, p + total, p + total);
  }

  private yieldView(buf: Uint8Array, start: number, end: number, chunkPos: number): boolean {
    this.buffer = buf;
    this.start = start;
    this.end = end;
    this.chunkPos = chunkPos;
    return true;
  }

  /** stash copies the chunk's partial tail into `pending` (which is empty). */
  private stash(): boolean {
    const n = this.chunk.length - this.chunkPos;
    this.growPending(n);
    copyBytes(this.pending, 0, this.chunk, this.chunkPos, n);
    this.pendingStart = 0;
    this.pendingEnd = n;
    this.chunkPos = this.chunk.length;
    return false;
  }

  private nextFromPending(): boolean {
    if (this.pendingStart > 0) {
      // The view handed out last time is no longer in use: move the rest to the front.
      this.pending.copyWithin(0, this.pendingStart, this.pendingEnd);
      this.pendingEnd -= this.pendingStart;
      this.pendingStart = 0;
    }
    for (;;) {
      const avail = this.chunk.length - this.chunkPos;
      if (this.transport === TRANSPORT_UNKNOWN) {
        this.transport = detectTransport(this.pending, 0, this.pendingEnd, this.maxFrameBytes);
        if (this.transport === TRANSPORT_UNKNOWN) {
          if (avail === 0) return false;
          this.take(Math.min(avail, DETECT_BYTES - this.pendingEnd));
          continue;
        }
      }
      if (this.transport === TRANSPORT_BUFFERED) {
        // Only the bytes the scanner's next step needs are taken, so the message ends at the end
        // of `pending` and the rest of the chunk is served zero-copy again. (Taking the whole
        // chunk made every message after it one more move of the rest: quadratic in the chunk.)
        const length = this.scan(this.pending, 0, this.pendingEnd);
        if (length !== SCAN_NEED_MORE) {
          this.pendingStart = length;
          return this.yieldPending(0, length);
        }
        if (avail === 0) return false;
        // (grown to the frame limit at most, as for framed: the scanner refuses a longer message)
        this.take(Math.min(avail, Math.max(1, this.scanner.needAtLeast - this.pendingEnd)), this.maxFrameBytes);
        continue;
      }
      if (this.pendingEnd < 4) {
        if (avail === 0) return false;
        this.take(Math.min(avail, 4 - this.pendingEnd));
        continue;
      }
      const length = readI32(this.pending, 0);
      // Refused for its length: first what of its start the chunk has, so its reply can be addressed.
      if (!(length > 0 && length <= this.maxFrameBytes) && this.pendingEnd < ADDRESS_BYTES) this.take(Math.min(avail, ADDRESS_BYTES - this.pendingEnd));
      const total = 4 + this.frameLength(this.pending, 0);
      if (this.pendingEnd < total) {
        if (avail === 0) return false;
        // Grown as the bytes come (to at most the frame), not to the length the frame declares:
        // a client declaring 16 MB frames and sending a little of each would reserve 16 MB a
        // connection (address space: review, 3,000 such connections took 100 GB of it).
        this.take(Math.min(avail, total - this.pendingEnd), total);
        continue;
      }
      this.pendingStart = total;
      return this.yieldPending(4, total);
    }
  }

  private yieldPending(start: number, end: number): boolean {
    this.buffer = this.pending;
    this.start = start;
    this.end = end;
    return true;
  }

  /** take moves `n` bytes from the chunk to the end of `pending` (growing it to at most `cap`). */
  private take(n: number, cap = Infinity): void {
    this.growPending(this.pendingEnd + n, cap);
    copyBytes(this.pending, this.pendingEnd, this.chunk, this.chunkPos, n);
    this.pendingEnd += n;
    this.chunkPos += n;
  }

  private growPending(size: number, cap = Infinity): void {
    if (size <= this.pending.length) return;
    let capacity = Math.min(Math.max(this.pending.length * 2, PENDING_INITIAL_BYTES), cap);
    if (capacity < size) capacity = size;
    const grown = new Uint8Array(capacity);
    grown.set(this.pending.subarray(0, this.pendingEnd));
    this.pending = grown;
  }

  /**
   * scan finds the end of the buffered (unframed) message at `p` (MessageScanner); one it refuses
   * keeps its bytes at hand, as a frame refused for its length does, to address the error reply.
   */
  private scan(buf: Uint8Array, p: number, end: number): number {
    try {
      return this.scanner.scan(buf, p, end, this.maxFrameBytes);
    } catch (e) {
      this.refusedBuf = buf;
      this.refusedAt = p;
      this.refusedEnd = end;
      throw e;
    }
  }

  /** frameLength reads and validates the i32 length of a framed/header frame at `p`. */
  private frameLength(buf: Uint8Array, p: number): number {
    const length = readI32(buf, p);
    if (length > 0 && length <= this.maxFrameBytes) return length;
    // Refused: what of the frame is at hand may still say whom to answer (`refusedFrame`).
    this.refusedBuf = buf;
    this.refusedAt = p + 4;
    this.refusedEnd = buf === this.pending ? this.pendingEnd : buf.length;
    throw invalidLength(length, this.maxFrameBytes);
  }

  /**
   * refusedFrame gives `view` the bytes at hand of the frame `next()` last refused for its length
   * (from just after the length), and false when none was (the error was another).
   */
  refusedFrame(view: { buf: Uint8Array; start: number; end: number }): boolean {
    if (this.refusedBuf === EMPTY) return false;
    view.buf = this.refusedBuf;
    view.start = this.refusedAt;
    view.end = this.refusedEnd;
    this.refusedBuf = EMPTY;
    return true;
  }
}

/**
 * ADDRESS_BYTES: what of a frame refused for its length is kept to address its reply (the length,
 * a message header with a method name of up to 256 bytes, its seqid; a header transport's seqid).
 */
const ADDRESS_BYTES = 4 + 12 + 256;

/**
 * detectTransport names the transport from a connection's first bytes `buf[p, end)`, or
 * returns TRANSPORT_UNKNOWN when more bytes are needed. Throws ProtocolError for compact
 * protocol (INVALID_PROTOCOL), HTTP and anything unrecognised (UNSUPPORTED_CLIENT_TYPE).
 * Every non-buffered transport starts with an i32 length: a length that is negative, zero or
 * over `maxFrameBytes` is refused as soon as 4 bytes are in, without waiting for the magic, if
 * the magic is not at hand yet or not one we know. With a known magic the transport is named,
 * and the frame is refused by the reader, which keeps its first bytes to address the error reply
 * to (a client's first call, too large, gets its answer rather than waiting for its timeout).
 */
export function detectTransport(buf: Uint8Array, p: number, end: number, maxFrameBytes = 0x7fffffff): number {
  if (end - p < 1) return TRANSPORT_UNKNOWN;
  const b0 = buf[p]!;
  if (b0 === 0x80) return TRANSPORT_BUFFERED;
  if (b0 === COMPACT_PROTOCOL_ID) throw new ProtocolError(APP_ERROR.INVALID_PROTOCOL, "compact protocol is not supported (binary only)");
  if (b0 >= 0x41 && b0 <= 0x5a && looksLikeHttp(buf, p, end)) {
    throw new ProtocolError(APP_ERROR.UNSUPPORTED_CLIENT_TYPE, "HTTP request on the Thrift port");
  }
  if (end - p < 4) return TRANSPORT_UNKNOWN;
  const length = readI32(buf, p);
  const lengthOk = length > 0 && length <= maxFrameBytes;
  if (end - p < DETECT_BYTES) {
    if (!lengthOk) throw invalidLength(length, maxFrameBytes);
    if (end - p === 4) return TRANSPORT_UNKNOWN;
    // A fifth byte that starts no magic we know names no transport; a frame of 1 byte is whole
    // and holds no message: either way waiting for a sixth byte would wait for nothing.
    const first = buf[p + 4]!;
    if (first === 0x80 || first === THEADER_MAGIC >> 8 || first === TTHEADER_MAGIC >> 8) {
      if (length > 1) return TRANSPORT_UNKNOWN;
      throw protocolError("frame length 1 is too short for a message");
    }
  }
  const m0 = buf[p + 4]!;
  const m1 = buf[p + 5]!;
  if (m0 === 0x80 && m1 === 0x01) return TRANSPORT_FRAMED;
  if (((m0 << 8) | m1) === THEADER_MAGIC) return TRANSPORT_THEADER;
  if (((m0 << 8) | m1) === TTHEADER_MAGIC) return TRANSPORT_TTHEADER;
  if (!lengthOk) throw invalidLength(length, maxFrameBytes);
  if (m0 === COMPACT_PROTOCOL_ID) throw new ProtocolError(APP_ERROR.INVALID_PROTOCOL, "compact protocol is not supported (binary only)");
  throw new ProtocolError(APP_ERROR.UNSUPPORTED_CLIENT_TYPE, "unrecognised transport (expected strict binary, framed, THeader or TTHeader)");
}

/** invalidLength is the error for a frame length that is not positive, or over the limit. */
function invalidLength(length: number, maxFrameBytes: number): ProtocolError {
  return protocolError(length <= 0 ? `invalid frame length ${length}` : `frame length ${length} exceeds the limit ${maxFrameBytes}`);
}

/** looksLikeHttp checks for an HTTP method followed by a space in the first bytes. */
function looksLikeHttp(buf: Uint8Array, p: number, end: number): boolean {
  for (let i = p; i < end && i < p + 8; i++) {
    const c = buf[i]!;
    if (c === 0x20) return i > p + 2;
    if (c < 0x41 || c > 0x5a) return false;
  }
  return false;
}
