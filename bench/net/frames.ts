// Wire frames for the network benchmark, built once before timing: framed strict Thrift binary
// (`GroupCache.Get` / `GroupCache.Set` calls and a canned `Get` reply) and memcached's binary
// protocol (GET / SET), plus a slow, allocating reply decoder used only by the correctness check.
//
// Layout of a `RequestTable`: every key has the same width (`key:000042`), so every Get frame has
// the same length and every Set frame too. All Get frames sit back to back in one `Uint8Array`
// (`gets`, stride `getLen`), all Set frames in another (`sets`, stride `setLen`); request `i` of a
// kind is `bytes[i * stride, (i + 1) * stride)`. The load client copies frames out of these tables
// with `Uint8Array.set`; nothing is encoded while the clock runs.

export type Protocol = "thrift" | "memcache";

export const THRIFT_VERSION_1 = 0x80010000; // strict header: version in the top 16 bits
export const THRIFT_CALL = 1;
export const THRIFT_REPLY = 2;
export const T_STOP = 0, T_I64 = 10, T_STRING = 11, T_STRUCT = 12;
export const MC_REQUEST = 0x80, MC_RESPONSE = 0x81;
export const MC_GET = 0x00, MC_SET = 0x01;
export const KEY_DIGITS = 6;

/** keyName returns the benchmark key for index `i`, fixed width so all frames of a kind match. */
export function keyName(i: number): string {
  return "key:" + String(i).padStart(KEY_DIGITS, "0");
}

/** valueFor fills a value of `size` bytes whose content depends on the key index. */
export function valueFor(i: number, size: number): Uint8Array {
  const v = new Uint8Array(size);
  for (let j = 0; j < size; j++) v[j] = 97 + ((i + j) % 26);
  return v;
}

/** ByteWriter appends big-endian fields to a growable buffer; only used while precomputing. */
class ByteWriter {
  private buf = new Uint8Array(256);
  private view = new DataView(this.buf.buffer);
  len = 0;
  private room(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.len + n));
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }
  u8(v: number): this { this.room(1); this.buf[this.len++] = v; return this; }
  u16(v: number): this { this.room(2); this.view.setUint16(this.len, v); this.len += 2; return this; }
  u32(v: number): this { this.room(4); this.view.setUint32(this.len, v >>> 0); this.len += 4; return this; }
  i64(v: bigint): this { this.room(8); this.view.setBigInt64(this.len, v); this.len += 8; return this; }
  bytes(b: Uint8Array): this { this.room(b.length); this.buf.set(b, this.len); this.len += b.length; return this; }
  str(s: string): this { const b = new TextEncoder().encode(s); return this.u32(b.length).bytes(b); }
  field(type: number, id: number): this { return this.u8(type).u16(id); }
  patchU32(at: number, v: number): void { this.view.setUint32(at, v >>> 0); }
  done(): Uint8Array { return this.buf.slice(0, this.len); }
}

/** thriftFrame writes a framed strict message whose body (the argument/result struct) is `body`. */
function thriftFrame(name: string, type: number, seqid: number, body: (w: ByteWriter) => void): Uint8Array {
  const w = new ByteWriter().u32(0).u32(THRIFT_VERSION_1 | type).str(name).u32(seqid);
  body(w);
  w.patchU32(0, w.len - 4);
  return w.done();
}

export function thriftGet(group: string, key: string, seqid: number): Uint8Array {
  return thriftFrame("Get", THRIFT_CALL, seqid, (w) => {
    w.field(T_STRUCT, 1).field(T_STRING, 1).str(group).field(T_STRING, 2).str(key).u8(T_STOP).u8(T_STOP);
  });
}

export function thriftSet(group: string, key: string, value: Uint8Array, seqid: number): Uint8Array {
  return thriftFrame("Set", THRIFT_CALL, seqid, (w) => {
    w.field(T_STRUCT, 1).field(T_STRING, 1).str(group).field(T_STRING, 2).str(key);
    w.field(T_STRING, 3).u32(value.length).bytes(value).field(T_I64, 4).i64(0n).u8(T_STOP).u8(T_STOP);
  });
}

/** thriftGetReply is a successful `Get` reply (result field 0: Response{1: value}). */
export function thriftGetReply(value: Uint8Array, seqid: number): Uint8Array {
  return thriftFrame("Get", THRIFT_REPLY, seqid, (w) => {
    w.field(T_STRUCT, 0).field(T_STRING, 1).u32(value.length).bytes(value).u8(T_STOP).u8(T_STOP);
  });
}

/** mcFrame writes a memcached binary-protocol request header followed by extras, key and value. */
function mcFrame(op: number, key: string, extras: Uint8Array, value: Uint8Array, opaque: number): Uint8Array {
  const k = new TextEncoder().encode(key);
  const w = new ByteWriter().u8(MC_REQUEST).u8(op).u16(k.length).u8(extras.length).u8(0).u16(0);
  w.u32(extras.length + k.length + value.length).u32(opaque).u32(0).u32(0);
  return w.bytes(extras).bytes(k).bytes(value).done();
}

export function mcGet(key: string, opaque: number): Uint8Array {
  return mcFrame(MC_GET, key, new Uint8Array(0), new Uint8Array(0), opaque);
}

export function mcSet(key: string, value: Uint8Array, opaque: number): Uint8Array {
  return mcFrame(MC_SET, key, new Uint8Array(8), value, opaque); // extras: flags 0, expiry 0
}

/** RequestTable holds every Get and Set frame of the workload, back to back (see header). */
export class RequestTable {
  readonly gets: Uint8Array;
  readonly sets: Uint8Array;
  readonly getLen: number;
  readonly setLen: number;
  /** Views of each frame, made once so copying one out allocates nothing. */
  readonly getFrames: Uint8Array[] = [];
  readonly setFrames: Uint8Array[] = [];
  constructor(readonly protocol: Protocol, readonly keys: number, readonly valueSize: number, group = "default") {
    const get = (i: number) => protocol === "thrift" ? thriftGet(group, keyName(i), i) : mcGet(keyName(i), i);
    const set = (i: number) => {
      const v = valueFor(i, valueSize);
      return protocol === "thrift" ? thriftSet(group, keyName(i), v, i) : mcSet(keyName(i), v, i);
    };
    this.getLen = get(0).length;
    this.setLen = set(0).length;
    this.gets = new Uint8Array(this.getLen * keys);
    this.sets = new Uint8Array(this.setLen * keys);
    for (let i = 0; i < keys; i++) {
      this.gets.set(get(i), i * this.getLen);
      this.sets.set(set(i), i * this.setLen);
    }
    for (let i = 0; i < keys; i++) {
      this.getFrames.push(this.gets.subarray(i * this.getLen, (i + 1) * this.getLen));
      this.setFrames.push(this.sets.subarray(i * this.setLen, (i + 1) * this.setLen));
    }
  }
}

/**
 * replyLength returns the total length of the reply frame at the start of `b`, or -1 when fewer
 * bytes than its length field are present. Used by the correctness check only.
 */
export function replyLength(protocol: Protocol, b: Uint8Array): number {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  if (protocol === "thrift") return b.length < 4 ? -1 : 4 + dv.getUint32(0);
  return b.length < 24 ? -1 : 24 + dv.getUint32(8);
}

/**
 * decodeGetReply extracts the value of a complete Get reply frame, or returns a string saying what
 * is wrong with it. Walks the Thrift reply just far enough: header, result field 0, field 1.
 */
export function decodeGetReply(protocol: Protocol, f: Uint8Array): Uint8Array | string {
  const dv = new DataView(f.buffer, f.byteOffset, f.byteLength);
  if (protocol === "memcache") {
    if (f[0] !== MC_RESPONSE) return "bad magic " + f[0];
    const status = dv.getUint16(6);
    if (status !== 0) return "status " + status;
    return f.slice(24 + f[4]! + dv.getUint16(2));
  }
  const version = dv.getUint32(4);
  if ((version & 0xffff0000) >>> 0 !== THRIFT_VERSION_1) return "not a strict header";
  if ((version & 0xff) !== THRIFT_REPLY) return "message type " + (version & 0xff);
  let p = 8 + 4 + dv.getUint32(8) + 4; // name, seqid
  if (f[p] !== T_STRUCT || dv.getUint16(p + 1) !== 0) return "no success field (CacheError?)";
  p += 3;
  if (f[p] !== T_STRING || dv.getUint16(p + 1) !== 1) return "Response.value missing";
  const n = dv.getUint32(p + 3);
  return f.slice(p + 7, p + 7 + n);
}
