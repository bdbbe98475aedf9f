/**
 * The snapshot file format: a versioned, checksummed stream of per-group blocks of items.
 *
 * Layout (every integer little-endian; CRC is CRC-32/ISO-HDLC, `Bun.hash.crc32`):
 *
 *   HEADER (32 B)
 *     0  magic       8 B  "MBCSNAP\0"
 *     8  version     u16  1
 *    10  headerBytes u16  32
 *    12  flags       u32  0 (none defined in version 1; a reader refuses unknown flags)
 *    16  createdAt   f64  wall-clock ms when the write started
 *    24  reserved    u32  0
 *    28  crc         u32  CRC of bytes 0..28
 *
 *   BLOCK (16 B + body), any number, each holding items of one group
 *     0  tag         u32  BLOCK_TAG ("BLK1")
 *     4  bodyBytes   u32
 *     8  records     u32
 *    12  crc         u32  CRC of bytes 4..12 of this header followed by the body
 *    16  body:  u16 nameLen, group name (UTF-8), then `records` records:
 *                 f64 expiresAt  absolute wall-clock ms, Infinity = no expiry
 *                 u16 keyLen, u32 valueLen, key bytes, value bytes
 *
 *   TRAILER (24 B), exactly at the end of the file
 *     0  tag         u32  END_TAG ("END1")
 *     4  blocks      u32
 *     8  records     f64  total records in all blocks
 *    16  fileCrc     u32  CRC of every byte before the trailer
 *    20  crc         u32  CRC of bytes 0..20 of the trailer
 *
 * A truncated file has no trailer (or a short block); a flipped bit fails the header, a block or
 * the trailer CRC, and a dropped or reordered block fails `fileCrc`. `checkBody` also checks a
 * block's structure (records fill the body exactly), so a block that passes it can be applied
 * without further bounds checks. No writer makes a block longer than `maxBlockBytes` of its
 * largest item, so a reader refuses a longer one before it allocates for it.
 *
 * BlockWriter builds one block in a reused buffer that grows only for a record larger than the
 * buffer (msgpackr's technique: reserve the header, write in place, patch lengths and CRC after),
 * and goes back to its initial size once the write is over (`shrink`).
 */
import { copyBytes } from "../bytes/bytes.ts";

export const MAGIC = new Uint8Array([0x4d, 0x42, 0x43, 0x53, 0x4e, 0x41, 0x50, 0x00]); // "MBCSNAP\0"
export const VERSION = 1;
export const HEADER_BYTES = 32;
export const BLOCK_HEADER_BYTES = 16;
export const TRAILER_BYTES = 24;
export const RECORD_HEADER_BYTES = 14;
export const BLOCK_TAG = 0x314b4c42; // "BLK1"
export const END_TAG = 0x31444e45; // "END1"
/** BLOCK_TARGET_BYTES: a block is closed once its body reaches this size. */
export const BLOCK_TARGET_BYTES = 1 << 20;

/**
 * maxBlockBytes is the longest block a writer makes of items whose key and value together are at
 * most `maxKeyValueBytes`: the body stays below BLOCK_TARGET_BYTES until one more record closes it.
 */
export function maxBlockBytes(maxKeyValueBytes: number): number {
  return BLOCK_HEADER_BYTES + BLOCK_TARGET_BYTES - 1 + RECORD_HEADER_BYTES + maxKeyValueBytes;
}

/** SnapshotCorrupt is thrown for any file that is not a complete, intact snapshot. */
export class SnapshotCorrupt extends Error {
  constructor(message: string, readonly offset: number) {
    super(`${message} (at byte ${offset})`);
    this.name = "SnapshotCorrupt";
  }
}

const crc32 = Bun.hash.crc32;

/** encodeHeader returns the 32-byte file header. */
export function encodeHeader(createdAt: number): Uint8Array {
  const out = new Uint8Array(HEADER_BYTES);
  const dv = new DataView(out.buffer);
  out.set(MAGIC, 0);
  dv.setUint16(8, VERSION, true);
  dv.setUint16(10, HEADER_BYTES, true);
  dv.setUint32(12, 0, true);
  dv.setFloat64(16, createdAt, true);
  dv.setUint32(28, crc32(out.subarray(0, 28)), true);
  return out;
}

/** checkHeader throws SnapshotCorrupt unless `h` (at least 32 bytes) is a version-1 header. */
export function checkHeader(h: Uint8Array): void {
  if (h.length < HEADER_BYTES) throw new SnapshotCorrupt("file shorter than the header", h.length);
  for (let i = 0; i < MAGIC.length; i++) if (h[i] !== MAGIC[i]) throw new SnapshotCorrupt("not a snapshot file (bad magic)", 0);
  const dv = new DataView(h.buffer, h.byteOffset, HEADER_BYTES);
  if (dv.getUint32(28, true) !== crc32(h.subarray(0, 28))) throw new SnapshotCorrupt("header checksum mismatch", 0);
  const version = dv.getUint16(8, true);
  if (version !== VERSION) throw new SnapshotCorrupt(`unsupported snapshot version ${version}`, 8);
  if (dv.getUint16(10, true) !== HEADER_BYTES || dv.getUint32(12, true) !== 0) throw new SnapshotCorrupt("unknown header layout or flags", 10);
}

/** encodeTrailer returns the 24-byte trailer. */
export function encodeTrailer(blocks: number, records: number, fileCrc: number): Uint8Array {
  const out = new Uint8Array(TRAILER_BYTES);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, END_TAG, true);
  dv.setUint32(4, blocks, true);
  dv.setFloat64(8, records, true);
  dv.setUint32(16, fileCrc >>> 0, true);
  dv.setUint32(20, crc32(out.subarray(0, 20)), true);
  return out;
}

/** checkTrailer throws SnapshotCorrupt unless trailer `t` at `offset` matches what was read. */
export function checkTrailer(t: Uint8Array, offset: number, blocks: number, records: number, fileCrc: number): void {
  const dv = new DataView(t.buffer, t.byteOffset, TRAILER_BYTES);
  if (dv.getUint32(20, true) !== crc32(t.subarray(0, 20))) throw new SnapshotCorrupt("trailer checksum mismatch", offset);
  if (dv.getUint32(4, true) !== blocks || dv.getFloat64(8, true) !== records) {
    throw new SnapshotCorrupt(`trailer counts (${dv.getUint32(4, true)} blocks, ${dv.getFloat64(8, true)} records) disagree with the file`, offset);
  }
  if (dv.getUint32(16, true) !== fileCrc >>> 0) throw new SnapshotCorrupt("file checksum mismatch (blocks dropped or reordered)", offset);
}

/**
 * checkBlock verifies block `buf[0, 16 + bodyBytes)` read at file `offset`: its CRC, then its
 * structure (a group name, then `records` records that fill the body exactly). It returns the
 * record count.
 */
export function checkBlock(buf: Uint8Array, offset: number): number {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.length);
  const bodyBytes = dv.getUint32(4, true);
  const records = dv.getUint32(8, true);
  const end = BLOCK_HEADER_BYTES + bodyBytes;
  const crc = crc32(buf.subarray(BLOCK_HEADER_BYTES, end), crc32(buf.subarray(4, 12)));
  if (dv.getUint32(12, true) !== crc) throw new SnapshotCorrupt("block checksum mismatch", offset);
  let p = BLOCK_HEADER_BYTES + 2;
  if (p > end) throw new SnapshotCorrupt("block too short for its group name", offset);
  const nameLen = dv.getUint16(BLOCK_HEADER_BYTES, true);
  if (nameLen === 0) throw new SnapshotCorrupt("block without a group name", offset);
  p += nameLen;
  for (let r = 0; r < records && p <= end; r++) {
    if (p + RECORD_HEADER_BYTES > end) throw new SnapshotCorrupt(`record ${r} overruns its block`, offset);
    p += RECORD_HEADER_BYTES + dv.getUint16(p + 8, true) + dv.getUint32(p + 10, true);
  }
  if (p !== end) throw new SnapshotCorrupt("block records do not fill its body exactly", offset);
  return records;
}

/** BlockWriter builds blocks of records in one reused, growable buffer. */
export class BlockWriter {
  buf: Uint8Array;
  private dv: DataView;
  pos = 0;
  records = 0;

  constructor(private readonly initialBytes = BLOCK_TARGET_BYTES + (64 << 10)) {
    this.buf = new Uint8Array(initialBytes);
    this.dv = new DataView(this.buf.buffer);
  }

  /**
   * shrink drops a buffer grown for a large record for one of the initial size (the block under
   * way is dropped with it). Called once a write is over: a buffer grown for a 60 MiB item was
   * otherwise kept for the process's life, outside --memory.
   */
  shrink(): void {
    if (this.buf.length <= this.initialBytes) return;
    this.buf = new Uint8Array(this.initialBytes);
    this.dv = new DataView(this.buf.buffer);
    this.pos = 0;
    this.records = 0;
  }

  /** begin starts a block of the group named `name`. */
  begin(name: Uint8Array): void {
    if (name.length === 0 || name.length > 0xffff) throw new RangeError(`group name of ${name.length} bytes cannot be snapshotted`);
    this.reserve(BLOCK_HEADER_BYTES + 2 + name.length);
    this.dv.setUint16(BLOCK_HEADER_BYTES, name.length, true);
    this.buf.set(name, BLOCK_HEADER_BYTES + 2);
    this.pos = BLOCK_HEADER_BYTES + 2 + name.length;
    this.records = 0;
  }

  /** add appends one item whose key and value sit in `src` (a slab page); it copies the bytes. */
  add(expiresAt: number, src: Uint8Array, keyOff: number, keyLen: number, valLen: number): void {
    this.reserve(this.pos + RECORD_HEADER_BYTES + keyLen + valLen);
    const dv = this.dv;
    const p = this.pos;
    dv.setFloat64(p, expiresAt, true);
    dv.setUint16(p + 8, keyLen, true);
    dv.setUint32(p + 10, valLen, true);
    copyBytes(this.buf, p + RECORD_HEADER_BYTES, src, keyOff, keyLen + valLen);
    this.pos = p + RECORD_HEADER_BYTES + keyLen + valLen;
    this.records++;
  }

  /** full tells whether the block has reached its target size. */
  full(): boolean {
    return this.pos - BLOCK_HEADER_BYTES >= BLOCK_TARGET_BYTES;
  }

  /** finish patches the block header and returns the block (a view, valid until the next begin). */
  finish(): Uint8Array {
    const dv = this.dv;
    dv.setUint32(0, BLOCK_TAG, true);
    dv.setUint32(4, this.pos - BLOCK_HEADER_BYTES, true);
    dv.setUint32(8, this.records, true);
    const buf = this.buf;
    dv.setUint32(12, crc32(buf.subarray(BLOCK_HEADER_BYTES, this.pos), crc32(buf.subarray(4, 12))), true);
    return buf.subarray(0, this.pos);
  }

  private reserve(bytes: number): void {
    if (bytes <= this.buf.length) return;
    const grown = new Uint8Array(Math.max(bytes, this.buf.length * 2));
    grown.set(this.buf.subarray(0, this.pos));
    this.buf = grown;
    this.dv = new DataView(grown.buffer);
  }
}
