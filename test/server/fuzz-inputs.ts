/**
 * Inputs for fuzz-dispatch.test.ts: sessions of GroupCache calls in one transport, valid or
 * mutated at the structure level (field types swapped, ids changed, fields dropped, repeated or
 * reordered, unknown fields added, lengths and counts corrupted, container element types
 * swapped, payloads truncated, wrong message types and names, trailing bytes, a missing STOP) or
 * at the byte level (test/protocol/fuzz.ts `mutate`), plus fuzz.ts's random inputs and its own
 * random valid requests. Keys come from a small pool so gets hit and sets overwrite and evict.
 */
import type { Prng } from "../support/prng.ts";
import { mutate, randomInput, validRequest } from "../protocol/fuzz.ts";
import { Bytes, MSG, T, concat, framed, message, theader, ttheader } from "../protocol/wire-builder.ts";

export const I64_MAX = 2n ** 63n - 1n;

export const TRANSPORTS = ["framed", "buffered", "theader", "ttheader", "ttheader-inner"] as const;
export type Transport = (typeof TRANSPORTS)[number];
/** Transport names as wire-reader.ts spells them, by the decoder's TRANSPORT_* number. */
export const READER_TRANSPORT = [undefined, "framed", "buffered", "theader", "ttheader"] as const;

const KEYS: Uint8Array[] = [
  ...Array.from({ length: 40 }, (_, i) => new TextEncoder().encode(`k${i}`)),
  new Uint8Array(0),
  Uint8Array.of(0, 255, 0x80, 1),
  new TextEncoder().encode("x".repeat(32)), // exactly the key limit
];
const LONG_KEY = new TextEncoder().encode("y".repeat(33)); // one over
const GROUP_NAMES = ["default", "default", "default", "default", "default", "default", "g", "g", "g", "", "nope", "G"];
/** All seven methods, weighted like a cache's traffic (Clear rare, so hits can happen). */
const METHODS = [
  ...Array<string>(12).fill("Get"), ...Array<string>(8).fill("Set"), ...Array<string>(4).fill("GetMulti"),
  ...Array<string>(4).fill("SetMulti"), ...Array<string>(3).fill("Delete"), "Stats", "Stats", "Clear",
];
const INTERESTING_I64: (number | bigint)[] = [0, 1, -1, 999, 1000, 2 ** 31, 2 ** 32, 2 ** 53, 2n ** 62n, I64_MAX, -(2n ** 63n)];
const INTERESTING_I32 = [0, 1, -1, 4, 0x7fffffff, -0x80000000, 33, 1024, 1025, 65_536];

export class Gen {
  constructor(private readonly p: Prng) {}
  int(n: number): number {
    return this.p.int(n);
  }
  chance(x: number): boolean {
    return this.p.next() < x;
  }
  pick<X>(xs: readonly X[]): X {
    return xs[this.p.int(xs.length)]!;
  }
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.p.int(256);
    return out;
  }
  rng = (): number => this.p.next();

  key(): Uint8Array {
    const r = this.p.next();
    if (r < 0.9) return this.pick(KEYS);
    if (r < 0.95) return LONG_KEY;
    return this.bytes(this.int(40));
  }
  value(): Uint8Array {
    const r = this.p.next();
    const n = r < 0.1 ? 0 : r < 0.6 ? 1 + this.int(64) : r < 0.9 ? 64 + this.int(600) : 900 + this.int(200);
    return this.bytes(n);
  }
  ttl(): number | bigint {
    const r = this.p.next();
    if (r < 0.6) return 0;
    if (r < 0.85) return this.int(10);
    return this.pick(INTERESTING_I64);
  }
  ttlMs(): number | bigint {
    return this.chance(0.8) ? this.int(20_000) : this.pick(INTERESTING_I64);
  }
}

/** A request-struct field as (type, id, payload); mutations work on lists of these. */
interface Field {
  type: number;
  id: number;
  payload: Uint8Array;
}
const str = (type: number, id: number, s: Uint8Array): Field => ({ type, id, payload: new Bytes().str(s).bytes() });
const i64 = (id: number, v: number | bigint): Field => ({ type: T.I64, id, payload: new Bytes().i64(v).bytes() });

function requestFields(g: Gen, method: string): Field[] {
  const f: Field[] = [str(T.STRING, 1, new TextEncoder().encode(g.pick(GROUP_NAMES)))];
  switch (method) {
    case "Get":
    case "Delete":
      f.push(str(T.STRING, 2, g.key()));
      break;
    case "Set":
      f.push(str(T.STRING, 2, g.key()), str(T.STRING, 3, g.value()), i64(4, g.ttl()));
      if (g.chance(0.3)) f.push(i64(5, g.ttlMs()));
      break;
    case "GetMulti": {
      const n = g.int(6);
      const b = new Bytes().u8(T.STRING).i32(n);
      for (let i = 0; i < n; i++) b.str(g.key());
      f.push({ type: T.LIST, id: 2, payload: b.bytes() });
      break;
    }
    case "SetMulti": {
      const n = g.int(5);
      const b = new Bytes().u8(T.STRING, T.STRING).i32(n);
      for (let i = 0; i < n; i++) b.str(g.key()).str(g.value());
      f.push({ type: T.MAP, id: 2, payload: b.bytes() }, i64(3, g.ttl()));
      if (g.chance(0.3)) f.push(i64(4, g.ttlMs()));
      break;
    }
  }
  return f;
}

function unknownField(g: Gen): Field {
  const id = 6 + g.int(30);
  switch (g.int(4)) {
    case 0:
      return { type: T.I32, id, payload: new Bytes().i32(g.int(1000)).bytes() };
    case 1:
      return str(T.STRING, id, g.bytes(g.int(20)));
    case 2:
      return { type: T.STRUCT, id, payload: new Bytes().field(T.I16, 1).i16(7).stop().bytes() };
    default:
      return { type: T.LIST, id, payload: new Bytes().u8(T.I32).i32(2).i32(1).i32(2).bytes() };
  }
}

const ALL_TYPES = [T.STOP, T.VOID, T.BOOL, T.BYTE, T.DOUBLE, T.I16, T.I32, T.I64, T.STRING, T.STRUCT, T.MAP, T.SET, T.LIST, T.UUID, 17, 0xff];

/** mutateFields applies one structure-aware change to a request struct's fields. */
function mutateFields(g: Gen, f: Field[]): void {
  const at = g.int(f.length);
  const target = f[at]!;
  switch (g.int(9)) {
    case 0: // type swapped, payload kept
      target.type = g.pick(ALL_TYPES);
      break;
    case 1: // id changed
      target.id = g.pick([0, 1, 2, 3, 4, 5, -1, 0x7fff, target.id + 1]);
      break;
    case 2: // field dropped
      f.splice(at, 1);
      break;
    case 3: // field repeated (last wins)
      f.splice(g.int(f.length + 1), 0, { ...target, payload: target.payload });
      break;
    case 4: // order shuffled
      f.reverse();
      break;
    case 5: // unknown fields added
      f.splice(g.int(f.length + 1), 0, unknownField(g));
      break;
    case 6: { // a length or count corrupted in place
      const p = Uint8Array.from(target.payload);
      const off = target.type === T.MAP ? 2 : target.type === T.LIST || target.type === T.SET ? 1 : 0;
      const v = g.pick(INTERESTING_I32);
      for (let i = 0; i < 4 && off + i < p.length; i++) p[off + i] = (v >>> (24 - 8 * i)) & 0xff;
      target.payload = p;
      break;
    }
    case 7: // container element types swapped
      if ((target.type === T.LIST || target.type === T.MAP) && target.payload.length > 0) {
        const p = Uint8Array.from(target.payload);
        p[g.int(target.type === T.MAP ? 2 : 1)] = g.pick(ALL_TYPES);
        target.payload = p;
      } else {
        target.type = target.type === T.LIST ? T.SET : T.LIST;
      }
      break;
    default: // payload truncated
      target.payload = target.payload.subarray(0, g.int(target.payload.length + 1));
      break;
  }
}

/** callMessage builds a call (valid, or structure-mutated when `mutated`). */
function callMessage(g: Gen, seqid: number, mutated: boolean): Uint8Array {
  let name: string = g.pick(METHODS);
  const fields = requestFields(g, name);
  let type: number = g.chance(0.05) ? MSG.ONEWAY : MSG.CALL;
  let trailer: Uint8Array = new Uint8Array(0);
  let argsStop = true;
  if (mutated) {
    const rounds = 1 + g.int(3);
    for (let r = 0; r < rounds; r++) {
      switch (g.int(12)) {
        case 0:
          type = g.pick([0, MSG.REPLY, MSG.EXCEPTION, 5, 0x41]);
          break;
        case 1:
          name = g.pick(["get", "PeerGet", "", "Gett", "SetMulti", "Get\u0000"]);
          break;
        case 2:
          trailer = g.bytes(1 + g.int(4));
          break;
        case 3:
          argsStop = false;
          break;
        default:
          if (fields.length > 0) mutateFields(g, fields);
          else fields.push(unknownField(g));
      }
    }
  }
  const req = new Bytes();
  for (const f of fields) req.field(f.type, f.id).raw(f.payload);
  req.stop();
  const args = new Bytes().field(T.STRUCT, 1).raw(req.out);
  if (argsStop) args.stop();
  return concat(message(type, name, seqid, args.bytes()), trailer);
}

function wrapIn(g: Gen, t: Transport, msg: Uint8Array, seqid: number): Uint8Array {
  switch (t) {
    case "framed":
      return framed(msg);
    case "buffered":
      return msg;
    case "theader":
      return theader(msg, { flags: g.int(65_536), seqid, info: g.chance(0.3) ? [["trace", "abc"]] : [] });
    case "ttheader":
      return ttheader(msg, { flags: g.int(65_536), seqid, info: g.chance(0.3) ? [["idl", "x"]] : [] });
    case "ttheader-inner":
      return ttheader(msg, { flags: g.int(65_536), seqid, innerFramed: true });
  }
}

/** session returns the messages of one connection (kept apart so they can be counted). */
export function session(g: Gen): Uint8Array[] {
  const r = g.rng();
  if (r < 0.15) return [randomInput(g.rng)];
  if (r < 0.3) {
    const v = validRequest(g.rng);
    return [g.chance(0.7) ? mutate(g.rng, v, validRequest(g.rng)) : v];
  }
  const t = g.pick(TRANSPORTS);
  const n = 1 + g.int(8);
  const out: Uint8Array[] = [];
  for (let i = 0; i < n; i++) {
    const seqid = g.chance(0.1) ? g.pick([0, -1, 0x7fffffff]) : g.int(1 << 20);
    const kind = g.rng();
    const msg = callMessage(g, seqid, kind >= 0.65 && kind < 0.87);
    let bytes = wrapIn(g, g.chance(0.02) ? g.pick(TRANSPORTS) : t, msg, seqid);
    if (kind >= 0.87) bytes = mutate(g.rng, bytes, out[0] ?? bytes);
    out.push(bytes);
  }
  return out;
}

/** chunks splits `bytes` at random points (often all at once, sometimes byte by byte). */
export function chunks(g: Gen, bytes: Uint8Array): Uint8Array[] {
  const r = g.rng();
  if (r < 0.3 || bytes.length === 0) return [bytes];
  const out: Uint8Array[] = [];
  let at = 0;
  const small = r < 0.4;
  while (at < bytes.length) {
    const n = 1 + g.int(small ? 3 : Math.max(1, bytes.length >> 1));
    out.push(bytes.subarray(at, at + n));
    at += n;
  }
  return out;
}
