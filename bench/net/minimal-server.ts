// Minimal server: the least work any server that really answers this benchmark's Gets and Sets
// must do in Bun, as a reference between the canned-reply server (no work at all) and ours. It is
// written for the load generator's exact frames and nothing else: framed binary Thrift, `Get` and
// `Set` with the field layout the generated clients write (group, key, value at fixed places), no
// validation, limits, errors, groups, TTL, LRU, eviction, counters or latency figures.
//
// Per frame: read the method's first letter and the seqid, find the key (FNV-1a, open addressing
// in typed arrays), copy the value in (Set) or out (Get), write the reply into one output buffer
// shared by the data event, and send the event's replies in ONE `socket.write` (what the socket
// does not take waits for `drain`). A partial frame at the end of a chunk is kept for the next one. A key longer than KEY_MAX, a value longer than
// `--value-size`, a frame this parser does not know, or a full table closes the connection.
//
//   bun bench/net/minimal-server.ts --port 9000 --value-size 100
import type { Socket } from "bun";
import { parseArgs } from "node:util";
import { hostPort } from "../../src/bytes/bytes.ts";

const { values: opt } = parseArgs({
  options: {
    port: { type: "string", default: "9000" }, host: { type: "string", default: "127.0.0.1" },
    "value-size": { type: "string", default: "100" }, warm: { type: "boolean", default: false },
  },
});
const VALUE_MAX = Number(opt["value-size"]);
const KEY_MAX = 64;
const SLOTS = 1 << 15; // twice the most items: probe chains stay short
const MASK = SLOTS - 1;
const ITEMS_MAX = SLOTS >> 1;
const slots = new Int32Array(SLOTS * 2).fill(-1); // [hash, id] per slot
const keys = new Uint8Array(ITEMS_MAX * KEY_MAX);
const keyLen = new Int32Array(ITEMS_MAX);
const values = new Uint8Array(ITEMS_MAX * VALUE_MAX);
const valueLen = new Int32Array(ITEMS_MAX);
let items = 0;
// --warm: before serving a chunk, read the index slots and then the item lines of all its Gets in
// two short loops, so their cache misses overlap (what the node's warm-up does, store/warm.ts).
const WARM = opt.warm === true;
const WARM_MAX = 64;
const warmIds = new Int32Array(WARM_MAX);
let warmSink = 0;
let out = new Uint8Array(1 << 20);
const copy = Buffer.prototype.copy;

function hash(b: Uint8Array, at: number, n: number): number {
  let h = 0x811c9dc5 | 0;
  for (let i = 0; i < n; i++) h = Math.imul(h ^ b[at + i]!, 16777619);
  return h;
}

/** find returns the key's item id, or -1 - slot of the free slot where it would go. */
function find(b: Uint8Array, at: number, n: number, h: number): number {
  let s = h & MASK;
  for (;;) {
    const id = slots[2 * s + 1]!;
    if (id < 0) return -1 - s;
    if (slots[2 * s] === h && keyLen[id] === n) {
      let i = 0;
      while (i < n && keys[id * KEY_MAX + i] === b[at + i]) i++;
      if (i === n) return id;
    }
    s = (s + 1) & MASK;
  }
}

function int32(b: Uint8Array, at: number): number {
  return (b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!;
}

/**
 * serve answers the frame of `len` bytes at `f` into `out` at `o`; returns the new end of `out`,
 * or -1 for a frame it cannot serve.
 */
function serve(b: Uint8Array, f: number, len: number, o: number): number {
  // 80 01 00 01 | name length 3 | "Get"/"Set" | seqid | 0C 00 01 (args) | 0B 00 01 group | 0B 00 02 key ...
  if (len < 32 || b[f] !== 0x80 || b[f + 7] !== 3) return -1;
  const isSet = b[f + 8] === 0x53;
  const groupLen = int32(b, f + 21);
  const k = f + 25 + groupLen;
  const n = int32(b, k + 3);
  if (groupLen < 0 || n < 0 || n > KEY_MAX || k + 7 + n > f + len) return -1;
  const ko = k + 7;
  const h = hash(b, ko, n);
  let id = find(b, ko, n, h);
  const at = o;
  // The reply: frame length, 80 01 00 02, name, seqid, the result struct's field 0.
  out[o + 4] = 0x80; out[o + 5] = 1; out[o + 6] = 0; out[o + 7] = 2;
  out[o + 8] = 0; out[o + 9] = 0; out[o + 10] = 0; out[o + 11] = 3;
  out[o + 12] = b[f + 8]!; out[o + 13] = 0x65; out[o + 14] = 0x74;
  out[o + 15] = b[f + 11]!; out[o + 16] = b[f + 12]!; out[o + 17] = b[f + 13]!; out[o + 18] = b[f + 14]!;
  out[o + 19] = 12; out[o + 20] = 0; out[o + 21] = 0;
  o += 22;
  if (isSet) {
    const v = ko + n;
    const vl = int32(b, v + 3);
    if (vl < 0 || vl > VALUE_MAX || v + 7 + vl > f + len) return -1;
    if (id < 0) {
      if (items === ITEMS_MAX) return -1;
      const s = -1 - id;
      id = items++;
      slots[2 * s] = h;
      slots[2 * s + 1] = id;
      keyLen[id] = n;
      copy.call(b, keys, id * KEY_MAX, ko, ko + n);
    }
    valueLen[id] = vl;
    copy.call(b, values, id * VALUE_MAX, v + 7, v + 7 + vl);
    // SetResponse { 1: bool success = true }
    out[o] = 2; out[o + 1] = 0; out[o + 2] = 1; out[o + 3] = 1; out[o + 4] = 0; out[o + 5] = 0;
    o += 6;
  } else {
    // Response { 1: binary value } (empty for a miss: this server has no NOT_FOUND)
    const vl = id >= 0 ? valueLen[id]! : 0;
    out[o] = 11; out[o + 1] = 0; out[o + 2] = 1;
    out[o + 3] = vl >>> 24; out[o + 4] = vl >>> 16; out[o + 5] = vl >>> 8; out[o + 6] = vl;
    o += 7;
    if (vl > 0) copy.call(values, out, o, id * VALUE_MAX, id * VALUE_MAX + vl);
    o += vl;
    out[o] = 0; out[o + 1] = 0;
    o += 2;
  }
  const size = o - at - 4;
  out[at] = size >>> 24; out[at + 1] = size >>> 16; out[at + 2] = size >>> 8; out[at + 3] = size;
  return o;
}

/** warm touches the slot, then the key and value lines, of each complete Get/Set in `b`. */
function warm(b: Uint8Array): void {
  let n = 0;
  for (let p = 0; b.length - p >= 4 && n < WARM_MAX;) {
    const len = int32(b, p);
    const f = p + 4;
    if (len < 32 || b.length - f < len) break;
    const k = f + 25 + int32(b, f + 21);
    const kl = int32(b, k + 3);
    if (kl < 0 || kl > KEY_MAX || k + 7 + kl > f + len) break;
    warmIds[n++] = slots[2 * (hash(b, k + 7, kl) & MASK) + 1]!;
    p = f + len;
  }
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const id = warmIds[i]!;
    if (id < 0) continue;
    sum += keyLen[id]! + keys[id * KEY_MAX]! + valueLen[id]! + values[id * VALUE_MAX]! + values[id * VALUE_MAX + VALUE_MAX - 1]!;
  }
  warmSink ^= sum;
}

class Conn {
  partial: Uint8Array | null = null;
  /** unsent: replies the socket did not take yet (sent on `drain`, new ones queue behind them). */
  unsent: Uint8Array | null = null;
}

function send(s: Socket<Conn>, c: Conn, bytes: Uint8Array, length: number): void {
  if (c.unsent !== null) {
    const all = new Uint8Array(c.unsent.length + length);
    all.set(c.unsent);
    all.set(bytes.subarray(0, length), c.unsent.length);
    c.unsent = all;
    return;
  }
  const n = s.write(bytes, 0, length);
  if (n < length) c.unsent = bytes.slice(n < 0 ? 0 : n, length);
}

const server = Bun.listen<Conn>({
  hostname: opt.host!,
  port: Number(opt.port),
  socket: {
    open(s) { s.data = new Conn(); },
    data(s, chunk) {
      const c = s.data;
      let b: Uint8Array = chunk;
      if (c.partial !== null) {
        b = new Uint8Array(c.partial.length + chunk.length);
        b.set(c.partial);
        b.set(chunk, c.partial.length);
        c.partial = null;
      }
      let p = 0;
      let o = 0;
      if (WARM) warm(b);
      while (b.length - p >= 4) {
        const len = int32(b, p);
        if (len < 0 || len > 16_384_000) { s.terminate(); return; }
        if (b.length - p - 4 < len) break;
        if (out.length - o < VALUE_MAX + 64) {
          const grown = new Uint8Array(out.length * 2);
          grown.set(out.subarray(0, o));
          out = grown;
        }
        o = serve(b, p + 4, len, o);
        if (o < 0) { s.terminate(); return; }
        p += 4 + len;
      }
      if (p < b.length) c.partial = b.slice(p);
      if (o > 0) send(s, c, out, o);
    },
    drain(s) {
      const c = s.data;
      const unsent = c.unsent;
      if (unsent === null) return;
      c.unsent = null;
      send(s, c, unsent, unsent.length);
    },
    error() {},
  },
});
console.log(`minimal-server listening on ${hostPort(server.hostname, server.port)}${WARM ? " (warm)" : ""}`);
process.on("exit", () => { if (warmSink === 0.5) console.log(warmSink); }); // keeps the warm loads
for (const sig of ["SIGINT", "SIGTERM"] as const) process.on(sig, () => { server.stop(true); process.exit(0); });
