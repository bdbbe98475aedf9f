// Fuzzing harness for the protocol layer (shared by fuzz.test.ts and fuzz-run.ts).
//
// Inputs are either purely random bytes (sometimes behind a valid transport prefix) or
// structure-aware: a valid request of a random method with random unknown fields, in a random
// transport, then mutated (bit flips, interesting bytes and i32s over lengths and counts,
// truncation, insertion, deletion, duplication, splicing). Each input goes through
//   1. decodeMessage (the pure function), and
//   2. a ProtocolConnection fed in random chunks, writing a reply for every request,
// and the two must agree on the first outcome. Only ProtocolError (from decoding) and
// CacheError (decode-time refusals) may come out; anything else thrown is a bug. Each case is
// bounded by its input, so a hang would show as a stuck run (the test asserts a time bound).
// The PRNG is seeded (mulberry32); failures report the seed and the case index.

import { decodeMessage } from "../../src/protocol/decode-message.ts";
import { APP_ERROR, CacheError, ProtocolError } from "../../src/protocol/errors.ts";
import { resolveLimits, type ProtocolLimits } from "../../src/protocol/limits.ts";
import { ProtocolConnection } from "../../src/protocol/protocol-connection.ts";
import { ReplyWriter } from "../../src/protocol/reply-writer.ts";
import { BinaryWriter } from "../../src/protocol/binary-writer.ts";
import { METHOD_GET, METHOD_GET_MULTI, METHOD_UNKNOWN } from "../../src/protocol/request.ts";
import { Bytes, MSG, T, TRANSPORTS, hex, message, wrap } from "./wire-builder.ts";

export type Rng = () => number;

/** mulberry32 returns a seeded PRNG of floats in [0, 1). */
export function mulberry32(seed: number): Rng {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const int = (rng: Rng, n: number) => Math.floor(rng() * n);
const pick = <X>(rng: Rng, xs: readonly X[]): X => xs[int(rng, xs.length)]!;

export const FUZZ_LIMITS: ProtocolLimits = resolveLimits({ maxFrameBytes: 65_536, maxDepth: 16, maxKeyBytes: 32, maxValueBytes: 256 });

const NAMES = ["Get", "Set", "Delete", "Clear", "Stats", "GetMulti", "SetMulti", "PeerPing", "", "G"];
const VALUE_TYPES = [T.BOOL, T.BYTE, T.DOUBLE, T.I16, T.I32, T.I64, T.STRING, T.STRUCT, T.MAP, T.SET, T.LIST, T.UUID];

function randomValue(rng: Rng, b: Bytes, type: number, depth: number): void {
  switch (type) {
    case T.BOOL:
    case T.BYTE:
      b.u8(int(rng, 256));
      return;
    case T.I16:
      b.i16(int(rng, 65536));
      return;
    case T.I32:
      b.i32(int(rng, 2 ** 32));
      return;
    case T.DOUBLE:
    case T.I64:
      b.i32(int(rng, 2 ** 32)).i32(int(rng, 2 ** 32));
      return;
    case T.UUID:
      for (let i = 0; i < 16; i++) b.u8(int(rng, 256));
      return;
    case T.STRING:
      b.str(randomBytes(rng, int(rng, 4) === 0 ? int(rng, 300) : int(rng, 12)));
      return;
    case T.STRUCT:
      randomStruct(rng, b, depth + 1, 3);
      return;
    case T.LIST:
    case T.SET: {
      const elem = depth > 4 ? T.I32 : pick(rng, VALUE_TYPES);
      const n = int(rng, 4);
      b.u8(elem).i32(n);
      for (let i = 0; i < n; i++) randomValue(rng, b, elem, depth + 1);
      return;
    }
    case T.MAP: {
      const k = depth > 4 ? T.STRING : pick(rng, VALUE_TYPES);
      const v = depth > 4 ? T.BOOL : pick(rng, VALUE_TYPES);
      const n = int(rng, 3);
      b.u8(k, v).i32(n);
      for (let i = 0; i < n; i++) {
        randomValue(rng, b, k, depth + 1);
        randomValue(rng, b, v, depth + 1);
      }
      return;
    }
  }
}

function randomStruct(rng: Rng, b: Bytes, depth: number, maxFields: number): void {
  const n = depth > 5 ? 0 : int(rng, maxFields + 1);
  for (let i = 0; i < n; i++) {
    const type = pick(rng, VALUE_TYPES);
    b.field(type, 10 + int(rng, 20));
    randomValue(rng, b, type, depth);
  }
  b.stop();
}

function randomBytes(rng: Rng, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = int(rng, 256);
  return out;
}

/** validRequest builds a well-formed call of a random method in a random transport. */
export function validRequest(rng: Rng): Uint8Array {
  const name = pick(rng, NAMES);
  const req = new Bytes();
  req.field(T.STRING, 1).str(pick(rng, ["g", "default", ""]));
  if (rng() < 0.8) req.field(T.STRING, 2).str(randomBytes(rng, int(rng, 40)));
  if (name === "Set" || rng() < 0.1) req.field(T.STRING, 3).str(randomBytes(rng, int(rng, 300)));
  if (rng() < 0.5) req.field(T.I64, 4).i64(int(rng, 100) - 5);
  if (rng() < 0.3) req.field(T.I64, 5).i64(int(rng, 100000));
  if (name === "GetMulti" || rng() < 0.1) {
    const n = int(rng, 6);
    req.field(T.LIST, 2).u8(T.STRING).i32(n);
    for (let i = 0; i < n; i++) req.str(randomBytes(rng, int(rng, 40)));
  }
  if (name === "SetMulti" || rng() < 0.1) {
    const n = int(rng, 6);
    req.field(T.MAP, 2).u8(T.STRING, T.STRING).i32(n);
    for (let i = 0; i < n; i++) req.str(randomBytes(rng, int(rng, 40))).str(randomBytes(rng, int(rng, 300)));
  }
  randomStruct(rng, req, 2, 2);
  const args = new Bytes().field(T.STRUCT, 1).raw(req.out);
  randomStruct(rng, args, 1, 1);
  const msg = message(rng() < 0.95 ? MSG.CALL : pick(rng, [MSG.ONEWAY, MSG.REPLY, 0]), name, int(rng, 2 ** 31), args.bytes());
  const transport = pick(rng, TRANSPORTS);
  return wrap(transport, msg, {
    flags: int(rng, 65536),
    seqid: int(rng, 1000),
    info: rng() < 0.3 ? [["auth", "x"], ["k", ""]] : [],
    innerFramed: rng() < 0.3,
  });
}

const INTERESTING_BYTES = [0, 1, 0x7f, 0x80, 0xff, T.STOP, T.VOID, T.STRUCT, T.LIST, T.MAP];
const INTERESTING_I32 = [0, 1, -1, 2, 4, 0x7fffffff, -0x80000000, 0x10000, 65_537, 250, 251];

/** mutate applies 1–4 random mutations to a copy of `input`. */
export function mutate(rng: Rng, input: Uint8Array, other: Uint8Array): Uint8Array {
  let b = Array.from(input);
  const rounds = 1 + int(rng, 4);
  for (let r = 0; r < rounds; r++) {
    const at = int(rng, b.length + 1);
    switch (int(rng, 8)) {
      case 0:
        if (b.length > 0) b[at % b.length]! ^= 1 << int(rng, 8);
        break;
      case 1:
        if (b.length > 0) b[at % b.length] = pick(rng, INTERESTING_BYTES);
        break;
      case 2: {
        const v = pick(rng, INTERESTING_I32);
        for (let i = 0; i < 4 && at + i < b.length; i++) b[at + i] = (v >>> (24 - 8 * i)) & 0xff;
        break;
      }
      case 3:
        b = b.slice(0, at);
        break;
      case 4:
        b.splice(at, 0, ...randomBytes(rng, 1 + int(rng, 8)));
        break;
      case 5:
        b.splice(at, 1 + int(rng, 8));
        break;
      case 6:
        b.splice(at, 0, ...b.slice(int(rng, b.length + 1), int(rng, b.length + 1)));
        break;
      case 7:
        b = b.slice(0, at).concat(Array.from(other.subarray(int(rng, other.length + 1))));
        break;
    }
  }
  return Uint8Array.from(b);
}

/** randomInput returns pure random bytes, sometimes behind a valid transport prefix. */
export function randomInput(rng: Rng): Uint8Array {
  const body = randomBytes(rng, int(rng, 64));
  switch (int(rng, 4)) {
    case 0:
      return body;
    case 1:
      return new Bytes().u8(0x80, 0x01, 0x00, 1 + int(rng, 4)).raw(body).bytes();
    case 2:
      return new Bytes().i32(body.length + 4).u8(0x80, 0x01, 0x00, 1).raw(body).bytes();
    default:
      return new Bytes().i32(body.length + 10).u8(...pick(rng, [[0x0f, 0xff], [0x10, 0x00]])).raw(body).bytes();
  }
}

type Outcome = { kind: "request"; seqid: number; method: number } | { kind: "need-more" } | { kind: "error"; cache: boolean };

/** checkOne runs one input through both paths; throws (with details) on any violation. */
export function checkOne(rng: Rng, input: Uint8Array): void {
  const r = decodeMessage(input, FUZZ_LIMITS);
  let first: Outcome;
  if (r.kind === "request") first = { kind: "request", seqid: r.seqid, method: r.method };
  else if (r.kind === "need-more") first = { kind: "need-more" };
  else {
    if (!(r.error instanceof ProtocolError) && !(r.error instanceof CacheError)) throw new Error("decodeMessage returned a foreign error");
    first = { kind: "error", cache: r.error instanceof CacheError };
  }

  const conn = new ProtocolConnection(FUZZ_LIMITS, new ReplyWriter(new BinaryWriter(256)));
  let chunked: Outcome | undefined;
  let at = 0;
  let closed = false;
  while (at < input.length && !closed) {
    const n = 1 + int(rng, rng() < 0.5 ? 4 : input.length);
    conn.push(input.subarray(at, at + n));
    at += n;
    try {
      while (conn.nextRequest()) {
        const req = conn.request;
        for (const [s, l] of [[req.groupStart, req.groupLength], [req.keyStart, req.keyLength], [req.valueStart, req.valueLength], [req.nameStart, req.nameLength]] as const) {
          if (s < 0 || l < 0 || s + l > req.buffer.length) throw new Error("range outside the input");
        }
        chunked ??= req.errorCode !== 0 ? { kind: "error", cache: true } : { kind: "request", seqid: req.seqid, method: req.method };
        if (req.oneway) continue;
        if (req.errorCode !== 0) conn.reply.writeCacheError(req, req.errorCode, req.errorMessage);
        else if (req.method === METHOD_UNKNOWN) conn.reply.writeApplicationException(req, APP_ERROR.UNKNOWN_METHOD, "unknown method");
        else if (req.method === METHOD_GET) conn.reply.writeGet(req, req.buffer, req.keyStart, req.keyLength, req.ttlSeconds);
        else if (req.method === METHOD_GET_MULTI) {
          conn.reply.beginGetMulti(req);
          for (let i = 0; i < req.itemCount; i++) conn.reply.addGetMultiEntry(req.buffer, req.items[i * 4]!, req.items[i * 4 + 1]!, 3);
          conn.reply.endGetMulti();
        } else conn.reply.writeSuccess(req, true);
        conn.reply.out.reset();
      }
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      chunked ??= { kind: "error", cache: false };
      conn.reply.writeApplicationException(conn.request, e.type, e.message);
      closed = true;
    }
  }
  chunked ??= input.length === 0 ? { kind: "need-more" } : { kind: "need-more" };
  if (JSON.stringify(first) !== JSON.stringify(chunked)) {
    throw new Error(`one-shot and chunked decoding disagree: ${JSON.stringify(first)} vs ${JSON.stringify(chunked)}`);
  }
}

/** Size of the pool of valid requests that mutations start from (refreshed as it goes). */
const POOL_SIZE = 512;

/** runFuzz runs `iterations` cases from `seed`; returns how many inputs of each kind ran. */
export function runFuzz(seed: number, iterations: number): { structured: number; random: number } {
  const rng = mulberry32(seed);
  const pool = Array.from({ length: POOL_SIZE }, () => validRequest(rng));
  let structured = 0;
  let random = 0;
  for (let i = 0; i < iterations; i++) {
    let input: Uint8Array;
    if (rng() < 0.3) {
      input = randomInput(rng);
      random++;
    } else {
      const slot = int(rng, POOL_SIZE);
      if (rng() < 0.1) pool[slot] = validRequest(rng);
      input = mutate(rng, pool[slot]!, pick(rng, pool));
      structured++;
    }
    try {
      checkOne(rng, input);
    } catch (e) {
      const detail = e instanceof Error ? (e.stack ?? e.message) : String(e);
      throw new Error(`fuzz failure: seed=${seed} case=${i} input=${hex(input)}\n${detail}`);
    }
  }
  return { structured, random };
}
