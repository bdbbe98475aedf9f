// BinaryWriter: one reused, growable output buffer for a connection's replies.
//
// Memory layout: `buffer` is a Uint8Array of `capacity` bytes; bytes [0, length) are encoded
// replies waiting to be written to the socket. A DataView over the same ArrayBuffer is cached
// and re-made only when the buffer grows. Growth doubles (at least `SLACK` more than asked),
// so a connection reaches its steady size after a few replies and then never allocates.
//
// Hot-path discipline (msgpackr's): a reply calls `ensure(n)` ONCE with an upper bound of its
// size, then uses the unchecked `u8/i16/i32/i64` writers. Lengths that are only known at the
// end (frame length, THeader length, map counts) are reserved with `reserveI32()` and written
// with `patchI32()`. After `ensure` the buffer may have been replaced: never keep `buffer`
// across an `ensure` call.
//
// The server sends `buffer` bytes [0, length) (e.g. `socket.write(w.buffer, 0, w.length)`),
// then calls `consume(written)`; a short write keeps the unsent tail at the front.

import { copyBytes } from "../bytes/bytes.ts";
import { fittedSize } from "./limits.ts";

export const WRITER_INITIAL_BYTES = 16 * 1024;
export const WRITER_SLACK_BYTES = 1024;
/** 2^63, and the largest double below it (the largest i64 a double can carry). */
const I64_MAX_DOUBLE = 2 ** 63;
const I64_MAX_DOUBLE_BELOW = 2 ** 63 - 1024;

/** KEEP_OUTPUT_BYTES: an emptied output buffer larger than this is given back (`shrink`; bursts only). */
export const KEEP_OUTPUT_BYTES = 1024 * 1024;

export class BinaryWriter {
  buffer: Uint8Array;
  view: DataView;
  /** Bytes written so far (the write cursor). */
  length = 0;

  constructor(initialBytes = WRITER_INITIAL_BYTES) {
    this.buffer = new Uint8Array(initialBytes);
    this.view = new DataView(this.buffer.buffer);
  }

  /** ensure makes room for `n` more bytes, growing (and re-making the DataView) if needed. */
  ensure(n: number): void {
    const needed = this.length + n;
    if (needed <= this.buffer.length) return;
    let capacity = this.buffer.length * 2;
    if (capacity < needed + WRITER_SLACK_BYTES) capacity = needed + WRITER_SLACK_BYTES;
    const grown = new Uint8Array(capacity);
    grown.set(this.buffer.subarray(0, this.length));
    this.buffer = grown;
    this.view = new DataView(grown.buffer);
  }

  /** fits tells whether `n` more bytes fit without growing. */
  fits(n: number): boolean {
    return this.length + n <= this.buffer.length;
  }

  /** reset forgets all written bytes (keeps the buffer). */
  reset(): void {
    this.length = 0;
  }

  /**
   * shrink gives back a buffer that a burst grew past `keepBytes`, once it is empty: a connection
   * that once queued megabytes of replies does not hold them for the rest of its life.
   */
  shrink(keepBytes: number): void {
    if (this.length !== 0 || this.buffer.length <= keepBytes) return;
    this.buffer = new Uint8Array(Math.min(keepBytes, WRITER_INITIAL_BYTES));
    this.view = new DataView(this.buffer.buffer);
  }

  /**
   * fit gives back most of a buffer past `keepBytes` that holds a quarter of it or less: the bytes
   * held move to a buffer twice their size. A client taking a large backlog slowly would otherwise
   * keep the buffer its peak grew resident while only what is left counts toward --max-buffered
   * (50 such connections counted 18 MB and held 310 MB; review). Shrinking at a quarter to twice
   * what is held leaves a factor of two each way, so a connection near a size does not flap.
   */
  fit(keepBytes: number): void {
    const size = fittedSize(this.buffer.length, this.length, keepBytes);
    if (size === 0) return;
    const fitted = new Uint8Array(size);
    fitted.set(this.buffer.subarray(0, this.length));
    this.buffer = fitted;
    this.view = new DataView(fitted.buffer);
  }

  /** consume drops the first `n` bytes (sent to the socket), keeping any unsent tail. */
  consume(n: number): void {
    if (n >= this.length) {
      this.length = 0;
      return;
    }
    this.buffer.copyWithin(0, n, this.length);
    this.length -= n;
  }

  /**
   * prepend puts `src[start, start+n)` before the bytes written so far: output that was due
   * before them (a short write's unsent tail held elsewhere) goes out first.
   */
  prepend(src: Uint8Array, start: number, n: number): void {
    this.ensure(n);
    const had = this.length;
    if (had > 0) this.buffer.copyWithin(n, 0, had);
    copyBytes(this.buffer, 0, src, start, n);
    this.length = had + n;
  }

  /** truncate rewinds the cursor to `length` (drops a reply that was being written). */
  truncate(length: number): void {
    this.length = length;
  }

  // Unchecked writers: the caller has called ensure() with room for them.

  u8(value: number): void {
    this.buffer[this.length++] = value;
  }

  i16(value: number): void {
    this.view.setInt16(this.length, value);
    this.length += 2;
  }

  i32(value: number): void {
    this.view.setInt32(this.length, value);
    this.length += 4;
  }

  /**
   * i64 writes a JS number as a big-endian i64 (two's complement), exact for |v| <= 2^53.
   * Fractions are truncated toward negative infinity.
   */
  i64(value: number): void {
    // Saturate: a double at or past ±2^63 (a huge TTL times 1000, say) must not wrap around.
    if (value >= I64_MAX_DOUBLE) value = I64_MAX_DOUBLE_BELOW;
    else if (value < -I64_MAX_DOUBLE) value = -I64_MAX_DOUBLE;
    const hi = Math.floor(value / 4294967296);
    const lo = value - hi * 4294967296;
    this.view.setInt32(this.length, hi | 0);
    this.view.setUint32(this.length + 4, lo >>> 0);
    this.length += 8;
  }

  /** fieldBegin writes a field header (type, id). */
  fieldBegin(type: number, id: number): void {
    this.buffer[this.length] = type;
    this.view.setInt16(this.length + 1, id);
    this.length += 3;
  }

  /** bytes copies `src[start, start+length)` (no view allocated) and advances. */
  bytes(src: Uint8Array, start: number, length: number): void {
    copyBytes(this.buffer, this.length, src, start, length);
    this.length += length;
  }

  /** reserveI32 skips 4 bytes to be patched later and returns their offset. */
  reserveI32(): number {
    const at = this.length;
    this.length += 4;
    return at;
  }

  patchI32(at: number, value: number): void {
    this.view.setInt32(at, value);
  }

  /**
   * utf8 writes `text` as an i32 length + UTF-8 bytes, encoding by hand (no TextEncoder, no
   * temporary array). Lone surrogates become U+FFFD. Used on slow paths (error messages).
   */
  utf8(text: string): void {
    this.ensure(4 + text.length * 3);
    const lengthAt = this.reserveI32();
    const b = this.buffer;
    let p = this.length;
    for (let i = 0; i < text.length; i++) {
      let c = text.charCodeAt(i);
      if (c < 0x80) {
        b[p++] = c;
      } else if (c < 0x800) {
        b[p++] = 0xc0 | (c >> 6);
        b[p++] = 0x80 | (c & 63);
      } else {
        if (c >= 0xd800 && c <= 0xdfff) {
          const next = i + 1 < text.length ? text.charCodeAt(i + 1) : 0;
          if (c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
            c = 0x10000 + ((c - 0xd800) << 10) + (next - 0xdc00);
            i++;
            b[p++] = 0xf0 | (c >> 18);
            b[p++] = 0x80 | ((c >> 12) & 63);
            b[p++] = 0x80 | ((c >> 6) & 63);
            b[p++] = 0x80 | (c & 63);
            continue;
          }
          c = 0xfffd;
        }
        b[p++] = 0xe0 | (c >> 12);
        b[p++] = 0x80 | ((c >> 6) & 63);
        b[p++] = 0x80 | (c & 63);
      }
    }
    this.patchI32(lengthAt, p - this.length);
    this.length = p;
  }
}
