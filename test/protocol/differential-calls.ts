// Random valid calls of every method of thrift/cache.thrift, as the Apache generated client writes
// them, and the views the differential test compares (differential.ts).
//
// A call is a method name, the `req` object handed to the generated client (strings or Buffers of
// any bytes for string fields, Buffers for binary, exact Int64s for i64, optional fields present or
// absent) and a plan of extra fields: values of every Thrift type, nested, at unknown ids (and now
// and then at a known id with another type, which every reader skips), written before any field or
// the STOP of the argument and request structs. `expectedRefusal` says what our decoder must refuse
// it for (limits; Apache's reader has none of them).
//
// A view is the request as a plain object of hex strings, numbers and booleans, the fields the
// method's IDL struct declares only, absent fields as Thrift defaults them (empty, 0, false; an
// absent optional ttlMs as null): the same shape for what was written, for what our decoder read
// and for what Apache's read, so the three compare with one deep equality.

import type { DecodedRequest } from "../../src/protocol/decode-message.ts";
import { ERROR_CODE } from "../../src/protocol/errors.ts";
import type { ProtocolLimits } from "../../src/protocol/limits.ts";
import { METHOD_NAMES } from "../../src/protocol/request.ts";
import { bigOf, int64, TYPE, type Inject } from "./apache-oracle.ts";
import type { Rng } from "./fuzz.ts";

const int = (rng: Rng, n: number) => Math.floor(rng() * n);
const pick = <X>(rng: Rng, xs: readonly X[]): X => xs[int(rng, xs.length)]!;

/** Every method of the IDL, by wire name. */
export const METHODS: readonly string[] = METHOD_NAMES.slice(1);

/** SHAPES: which request struct each method takes (peer variants take their seed method's). */
const SHAPES: Record<string, string> = {
  Get: "key", Delete: "key", Set: "set", Clear: "group", Stats: "group", GetMulti: "keys", SetMulti: "values",
  PeerInvalidate: "invalidate", PeerPing: "ping", Auth: "auth", NodeStats: "none",
};
export function shapeOf(name: string): string {
  return SHAPES[name] ?? SHAPES[name.replace(/^Peer/, "")] ?? "unknown";
}

const I64_EDGES = [0n, 1n, -1n, 2n ** 31n - 1n, 2n ** 31n, 2n ** 32n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 53n + 1n, 2n ** 63n - 1n, -(2n ** 63n), -(2n ** 53n) - 1n, 86_400n];

function randomI64(rng: Rng): bigint {
  if (rng() < 0.6) return pick(rng, I64_EDGES);
  if (rng() < 0.5) return BigInt(int(rng, 100_000));
  return BigInt.asIntN(64, (BigInt(int(rng, 2 ** 32)) << 32n) | BigInt(int(rng, 2 ** 32)));
}

export function randomBytes(rng: Rng, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = int(rng, 256);
  return b;
}

/** A code point outside the surrogates (a lone surrogate has no UTF-8 form: it is tried apart). */
function codePoint(rng: Rng): number {
  const c = pick(rng, [0x80, 0x800, 0x10000, 0x110000]);
  let p = int(rng, c);
  if (p >= 0xd800 && p <= 0xdfff) p = 0x41;
  return p;
}

/** randomText returns a string field's value: a string (UTF-8 on the wire) or a Buffer of any bytes. */
export function randomText(rng: Rng, long = false): string | Buffer {
  const n = long && rng() < 0.3 ? pick(rng, [249, 250, 251, 300, 1000, 5000]) : int(rng, 24);
  switch (int(rng, 6)) {
    case 0:
      return "";
    case 1:
      return randomBytes(rng, n); // every byte value, not UTF-8
    case 2:
      return String.fromCodePoint(...Array.from({ length: n }, () => codePoint(rng)));
    case 3: // lone surrogates (UTF-8 has no form for them: EF BF BD is written) and a pair
      return pick(rng, ["a\ud800b", "\udc00", "x\ud83d", "\ud83d\ude00", "\ud800\ud800\udc00"]);
    default:
      return Array.from({ length: n }, () => String.fromCharCode(0x20 + int(rng, 95))).join("");
  }
}

function randomKeyList(rng: Rng): (string | Buffer)[] {
  const n = rng() < 0.05 ? 100 + int(rng, 3000) : int(rng, 8);
  return Array.from({ length: n }, () => randomText(rng, n < 8));
}

function randomValues(rng: Rng, maxValue: number): Record<string, Buffer> {
  const n = rng() < 0.05 ? 100 + int(rng, 1000) : int(rng, 8);
  const values: Record<string, Buffer> = {};
  for (let i = 0; i < n; i++) {
    const k = randomText(rng, n < 8);
    // (object keys are strings: a Buffer key becomes its hex, bytes a map may carry all the same)
    values[typeof k === "string" && Buffer.from(k).toString() === k ? k : Buffer.from(k).toString("hex")] = randomBytes(rng, rng() < 0.02 ? maxValue + 1 : int(rng, 64));
  }
  return values;
}

const opt = <X>(rng: Rng, make: () => X): X | null => (rng() < 0.5 ? make() : null);

/** randomRequest builds the `req` object of `name`'s request struct, or null (no `req` field). */
export function randomRequest(rng: Rng, name: string, limits: ProtocolLimits): Record<string, unknown> | null {
  if (rng() < 0.02) return null;
  const group = () => (rng() < 0.9 ? randomText(rng) : null);
  const value = () => randomBytes(rng, rng() < 0.02 ? limits.maxValueBytes + int(rng, 2) : rng() < 0.1 ? int(rng, 20_000) : int(rng, 100));
  switch (shapeOf(name)) {
    case "key":
      return { group: group(), key: rng() < 0.95 ? randomText(rng, true) : null };
    case "set":
      return { group: group(), key: randomText(rng, true), value: value(), ttl: rng() < 0.9 ? int64(randomI64(rng)) : null, ttlMs: opt(rng, () => int64(randomI64(rng))) };
    case "group":
      return { group: group() };
    case "keys":
      return { group: group(), keys: rng() < 0.95 ? randomKeyList(rng) : null };
    case "values":
      return { group: group(), values: rng() < 0.95 ? randomValues(rng, limits.maxValueBytes) : null, ttl: int64(randomI64(rng)), ttlMs: opt(rng, () => int64(randomI64(rng))) };
    case "invalidate":
      return { group: group(), keys: randomKeyList(rng), all: opt(rng, () => rng() < 0.5) };
    case "ping":
      return { sender: opt(rng, () => randomText(rng)), lease: opt(rng, () => rng() < 0.5) };
    case "auth":
      return { token: randomText(rng) };
    default:
      return {};
  }
}

const EXTRA_TYPES = ["BOOL", "BYTE", "DOUBLE", "I16", "I32", "I64", "STRING", "STRUCT", "MAP", "SET", "LIST", "UUID"] as const;
/** Field ids no request struct declares (1–5 are known; 0 and negative ids are legal too). */
const UNKNOWN_IDS = [6, 7, 9, 15, 100, 1000, 32767, 0, -1, -32768];

/**
 * ExtraPlan writes the extra fields of one call through the Apache protocol (its `inject`), and
 * records how deep its containers went, counted as our decoder counts (the argument struct is 1).
 */
export class ExtraPlan {
  maxDepth = 0;
  constructor(private readonly rng: Rng, private readonly rate: number, private readonly deep: boolean) {}

  readonly inject: Inject = (level, out) => {
    const rng = this.rng;
    if (rng() >= this.rate) return;
    const type = pick(rng, EXTRA_TYPES);
    // Now and then a known id of another type: a reader skips it (the field stays as it was).
    const id = rng() < 0.1 ? 1 + int(rng, level === 1 ? 1 : 5) : pick(rng, UNKNOWN_IDS);
    if (level === 2 && id >= 1 && id <= 5 && (type === "STRING" || type === "I64" || type === "LIST" || type === "MAP" || type === "BOOL")) return;
    if (level === 1 && id === 1 && type === "STRUCT") return;
    out.writeFieldBegin("extra", TYPE[type], id);
    this.value(out, type, level + 1, this.deep && rng() < 0.3 ? 50 + int(rng, 20) : 0);
    out.writeFieldEnd();
  };

  /** value writes one value of `type` at `depth`; `chain` > 0 nests that many more levels first. */
  private value(out: Record<string, (...a: unknown[]) => void>, type: string, depth: number, chain: number): void {
    const rng = this.rng;
    if (type === "STRUCT" || type === "LIST" || type === "SET" || type === "MAP") this.maxDepth = Math.max(this.maxDepth, depth);
    const inner = (): string => (chain > 0 ? pick(rng, ["STRUCT", "LIST", "MAP"] as const) : depth > 6 ? pick(rng, ["I32", "STRING"] as const) : pick(rng, EXTRA_TYPES));
    switch (type) {
      case "BOOL": return out.writeBool!(rng() < 0.5);
      case "BYTE": return out.writeByte!(int(rng, 256) - 128);
      case "I16": return out.writeI16!(int(rng, 65536) - 32768);
      case "I32": return out.writeI32!(int(rng, 2 ** 32) - 2 ** 31);
      case "I64": return out.writeI64!(int64(randomI64(rng)));
      case "DOUBLE": return out.writeDouble!(pick(rng, [0, -0, 1.5, NaN, Infinity, -1e308, rng()]));
      case "STRING": return rng() < 0.5 ? out.writeBinary!(randomBytes(rng, int(rng, 40))) : out.writeString!(String(randomText(rng)));
      case "UUID": {
        // (the runtime's uuid parser takes RFC 4122 ids only: version 4, variant 10xx)
        const h = randomBytes(rng, 16).toString("hex");
        return out.writeUuid!(`${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-${pick(rng, ["8", "9", "a", "b"])}${h.slice(17, 20)}-${h.slice(20)}`);
      }
      case "STRUCT": {
        out.writeStructBegin!("Extra");
        const n = chain > 0 ? 1 : int(rng, 4);
        for (let i = 0; i < n; i++) {
          const t = inner();
          out.writeFieldBegin!("f", TYPE[t], 1 + int(rng, 40));
          this.value(out, t, depth + 1, chain - 1);
          out.writeFieldEnd!();
        }
        out.writeFieldStop!();
        return out.writeStructEnd!();
      }
      case "MAP": {
        const k = chain > 0 ? "I32" : depth > 6 ? "STRING" : pick(rng, EXTRA_TYPES);
        const v = inner();
        const n = chain > 0 ? 1 : int(rng, 3);
        out.writeMapBegin!(TYPE[k], TYPE[v], n);
        for (let i = 0; i < n; i++) {
          this.value(out, k, depth + 1, 0);
          this.value(out, v, depth + 1, chain - 1);
        }
        return out.writeMapEnd!();
      }
      default: {
        const e = inner();
        const n = chain > 0 ? 1 : int(rng, 4);
        out.writeListBegin!(TYPE[e], n); // (a set is written with the same bytes)
        for (let i = 0; i < n; i++) this.value(out, e, depth + 1, chain - 1);
        return out.writeListEnd!();
      }
    }
  }
}

const hexOf = (v: unknown): string => (v === null || v === undefined ? "" : Buffer.isBuffer(v) ? v.toString("hex") : Buffer.from(String(v), "utf8").toString("hex"));
const numOf = (v: unknown): number => (v === null || v === undefined ? 0 : Number(bigOf(v)));
/** lossy is what a generated reader's `readString` makes of bytes: UTF-8 decoded, re-encoded. */
const lossy = (b: Uint8Array): string => Buffer.from(Buffer.from(b).toString("utf8"), "utf8").toString("hex");
const exact = (b: Uint8Array): string => Buffer.from(b).toString("hex");

export type View = Record<string, unknown>;

/** viewOfReq views a `req` object: what was written (strings and Buffers), or what Apache read. */
export function viewOfReq(name: string, req: Record<string, unknown> | null): View {
  const r = req ?? {};
  const keys = () => ((r.keys as unknown[] | null) ?? []).map(hexOf);
  const entries = () => Object.entries((r.values as Record<string, unknown> | null) ?? {}).map(([k, v]) => [hexOf(k), hexOf(v)]).sort();
  const ttlMs = () => (r.ttlMs === null || r.ttlMs === undefined ? null : numOf(r.ttlMs));
  switch (shapeOf(name)) {
    case "key": return { group: hexOf(r.group), key: hexOf(r.key) };
    case "set": return { group: hexOf(r.group), key: hexOf(r.key), value: hexOf(r.value), ttl: numOf(r.ttl), ttlMs: ttlMs() };
    case "group": return { group: hexOf(r.group) };
    case "keys": return { group: hexOf(r.group), keys: keys() };
    case "values": return { group: hexOf(r.group), entries: entries(), ttl: numOf(r.ttl), ttlMs: ttlMs() };
    case "invalidate": return { group: hexOf(r.group), keys: keys(), all: r.all === true };
    case "ping": return { sender: hexOf(r.sender), lease: r.lease === true };
    case "auth": return { token: hexOf(r.token) };
    default: return {};
  }
}

/** viewOfOurs views our decoder's request; `asString` decodes string fields as Apache's reader does. */
export function viewOfOurs(d: DecodedRequest, asString: boolean): View {
  const s = asString ? lossy : exact;
  const last = new Map<string, string>(); // a map's keys are unique: the last entry of a key wins
  for (const it of d.items) last.set(s(it.key), exact(it.value));
  switch (shapeOf(d.methodName)) {
    case "key": return { group: s(d.group), key: s(d.key) };
    case "set": return { group: s(d.group), key: s(d.key), value: exact(d.value), ttl: d.ttlSeconds, ttlMs: d.ttlMs };
    case "group": return { group: s(d.group) };
    case "keys": return { group: s(d.group), keys: d.items.map((it) => s(it.key)) };
    case "values": return { group: s(d.group), entries: [...last.entries()].sort(), ttl: d.ttlSeconds, ttlMs: d.ttlMs };
    case "invalidate": return { group: s(d.group), keys: d.items.map((it) => s(it.key)), all: d.all };
    case "ping": return { sender: s(d.group), lease: d.lease };
    case "auth": return { token: s(d.value) };
    default: return {};
  }
}

/** expectedRefusals lists the CacheError codes our decoder may answer the written call with. */
export function expectedRefusals(name: string, req: Record<string, unknown> | null, limits: ProtocolLimits): number[] {
  const r = req ?? {};
  const len = (v: unknown) => (v === null || v === undefined ? 0 : Buffer.isBuffer(v) ? v.length : Buffer.byteLength(String(v)));
  const codes: number[] = [];
  const shape = shapeOf(name);
  const keyLens = shape === "key" || shape === "set" ? [len(r.key)] : shape === "keys" || shape === "invalidate" ? ((r.keys as unknown[] | null) ?? []).map(len) : shape === "values" ? Object.keys(r.values ?? {}).map(len) : [];
  if (keyLens.some((n) => n > limits.maxKeyBytes)) codes.push(ERROR_CODE.INVALID_ARGUMENT);
  const valueLens = shape === "set" ? [len(r.value)] : shape === "values" ? Object.values((r.values as Record<string, Buffer> | null) ?? {}).map(len) : [];
  if (valueLens.some((n) => n > limits.maxValueBytes)) codes.push(ERROR_CODE.VALUE_TOO_LARGE);
  if ((shape === "set" || shape === "values") && (numOf(r.ttl) < 0 || (r.ttlMs !== null && r.ttlMs !== undefined && numOf(r.ttlMs) < 0))) codes.push(ERROR_CODE.INVALID_ARGUMENT);
  return codes;
}
