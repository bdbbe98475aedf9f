/**
 * peekCalls lists the plain Gets and Sets of a chunk (warm-up and runs, server/call-runs.ts): it
 * must never throw, never read past the chunk, and list a frame only if the real decoder reads
 * that same frame as a Get or Set with the same ranges. Frames are built with the spec-based wire
 * builder.
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { PEEK_METHOD, PEEK_STRIDE, PEEK_TTL, PEEK_VALUE, matchPlainGet, matchPlainSet, peekCalls } from "../../src/protocol/peek-calls.ts";
import { RequestDecoder } from "../../src/protocol/request-decoder.ts";
import { Request, METHOD_SET } from "../../src/protocol/request.ts";
import { DEFAULT_LIMITS } from "../../src/protocol/limits.ts";
import { TRANSPORT_BUFFERED, TRANSPORT_FRAMED } from "../../src/protocol/wire.ts";
import { Bytes, MSG, T, concat, framed, message, theader } from "./wire-builder.ts";
import { mulberry32, mutate, validRequest } from "./fuzz.ts";
import { testSeed } from "../support/prng.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const utf8 = new TextEncoder();

function getBody(group: string, key: string, extra?: (b: Bytes) => void): Uint8Array {
  const b = new Bytes().field(T.STRUCT, 1).field(T.STRING, 1).str(group).field(T.STRING, 2).str(key);
  extra?.(b);
  return b.stop().stop().bytes();
}
const getFrame = (seqid: number, group: string, key: string) => framed(message(MSG.CALL, "Get", seqid, getBody(group, key)));
function setBody(group: string, key: string, value: Uint8Array, ttl: number | bigint, ttlMs?: number): Uint8Array {
  const b = new Bytes().field(T.STRUCT, 1).field(T.STRING, 1).str(group).field(T.STRING, 2).str(key)
    .field(T.STRING, 3).str(value).field(T.I64, 4).i64(ttl);
  if (ttlMs !== undefined) b.field(T.I64, 5).i64(ttlMs);
  return b.stop().stop().bytes();
}
const setFrame = (seqid: number, group: string, key: string, value: Uint8Array, ttl: number | bigint = 0) =>
  framed(message(MSG.CALL, "Set", seqid, setBody(group, key, value, ttl)));
/** kitexSetBody is a SetRequest as Kitex's FastWrite lays it out: the fixed-size ttl field first. */
function kitexSetBody(group: string, key: string, value: Uint8Array, ttl: number | bigint): Uint8Array {
  return new Bytes().field(T.STRUCT, 1).field(T.I64, 4).i64(ttl).field(T.STRING, 1).str(group).field(T.STRING, 2).str(key)
    .field(T.STRING, 3).str(value).stop().stop().bytes();
}
const kitexSetFrame = (seqid: number, group: string, key: string, value: Uint8Array, ttl: number | bigint = 0) =>
  framed(message(MSG.CALL, "Set", seqid, kitexSetBody(group, key, value, ttl)));
const text = (buf: Uint8Array, start: number, len: number) => new TextDecoder().decode(buf.subarray(start, start + len));

/** listed returns the peeked [group, key] strings. */
function listed(buf: Uint8Array, capacity = 64, leading = false): [string, string][] {
  const out = new Int32Array(capacity * PEEK_STRIDE);
  const n = peekCalls(buf, 0, buf.length, out, leading);
  const result: [string, string][] = [];
  for (let i = 0; i < n; i++) {
    const o = i * PEEK_STRIDE;
    result.push([text(buf, out[o]!, out[o + 1]!), text(buf, out[o + 2]!, out[o + 3]!)]);
  }
  return result;
}

describe("peekCalls", () => {
  test("lists the group and key of every plain framed Get call, in order", () => {
    const chunk = concat(getFrame(1, "default", "user:1"), getFrame(2, "sessions", "s"), getFrame(3, "default", ""));
    expect(listed(chunk)).toEqual([["default", "user:1"], ["sessions", "s"], ["default", ""]]);
  });

  test("lists plain Sets too; skips other methods, other layouts, replies and header transports, and goes on after them", () => {
    const set = framed(message(MSG.CALL, "Set", 2, new Bytes().field(T.STRUCT, 1).field(T.STRING, 1).str("default")
      .field(T.STRING, 2).str("k").field(T.STRING, 3).str("v").field(T.I64, 4).i64(0).stop().stop().bytes()));
    const keyFirst = framed(message(MSG.CALL, "Get", 3, new Bytes().field(T.STRUCT, 1).field(T.STRING, 2).str("k")
      .field(T.STRING, 1).str("default").stop().stop().bytes()));
    const reply = framed(message(MSG.REPLY, "Get", 4, getBody("default", "k")));
    const oneway = framed(message(MSG.ONEWAY, "Get", 5, getBody("default", "k")));
    const peerGet = framed(message(MSG.CALL, "PeerGet", 6, getBody("default", "k")));
    const header = theader(message(MSG.CALL, "Get", 7, getBody("default", "k")));
    const chunk = concat(getFrame(1, "g", "a"), set, keyFirst, reply, oneway, peerGet, header, getFrame(8, "g", "b"));
    // The THeader frame is skipped as a frame (its length is valid), so the last Get is still found.
    expect(listed(chunk)).toEqual([["g", "a"], ["default", "k"], ["g", "b"]]);
    // `leading`: only the calls before the first other frame.
    expect(listed(chunk, 64, true)).toEqual([["g", "a"], ["default", "k"]]);
    expect(listed(concat(keyFirst, getFrame(9, "g", "c")), 64, true)).toEqual([]);
  });

  test("a plain Set: its value range and its ttl, when the ttl is a non-negative int32 of seconds", () => {
    const value = utf8.encode("the value");
    const out = new Int32Array(8 * PEEK_STRIDE);
    const frames = [
      setFrame(1, "g", "k", value, 300),
      setFrame(2, "g", "k", value, -1), // negative: listed, ttl -1 (the decoder refuses it)
      setFrame(3, "g", "k", value, 2n ** 31n), // past int32: listed, ttl -1
      setFrame(4, "g", "k", new Uint8Array(0), 0),
      framed(message(MSG.CALL, "Set", 5, setBody("g", "k", value, 0, 1500))), // with ttlMs: not this layout
    ];
    const chunk = concat(...frames);
    expect(peekCalls(chunk, 0, chunk.length, out)).toBe(4);
    const row = (i: number) => {
      const o = i * PEEK_STRIDE;
      return [out[o + PEEK_METHOD], text(chunk, out[o + PEEK_VALUE]!, out[o + PEEK_VALUE + 1]!), out[o + PEEK_TTL], out[o + 4]];
    };
    expect([0, 1, 2, 3].map(row)).toEqual([
      [METHOD_SET, "the value", 300, 1], [METHOD_SET, "the value", -1, 2], [METHOD_SET, "the value", -1, 3], [METHOD_SET, "", 0, 4],
    ]);
    // Lengths pointing past the message are not followed.
    const bad = frames[0]!.slice();
    bad[4 + 15 + 3 + 3] = 0x7f; // the group length's top byte
    expect(matchPlainSet(bad, 4, bad.length)).toBe(false);
    // Kitex's layout (the ttl field first) is listed the same way, framed and buffered.
    const kout = new Int32Array(8 * PEEK_STRIDE);
    const kitex = [kitexSetFrame(6, "g", "k", value, 300), kitexSetFrame(7, "g", "k", value, -1), getFrame(8, "g", "k")];
    const kitexChunk = concat(...kitex);
    expect(peekCalls(kitexChunk, 0, kitexChunk.length, kout)).toBe(3);
    const kitexRows = [0, 1].map((i) => {
      const o = i * PEEK_STRIDE;
      return [kout[o + PEEK_METHOD], text(kitexChunk, kout[o + 2]!, kout[o + 3]!), text(kitexChunk, kout[o + PEEK_VALUE]!, kout[o + PEEK_VALUE + 1]!), kout[o + PEEK_TTL], kout[o + 4]];
    });
    expect(kitexRows).toEqual([[METHOD_SET, "k", "the value", 300, 6], [METHOD_SET, "k", "the value", -1, 7]]);
    const unframed = concat(...kitex.map((f) => f.subarray(4)));
    expect(peekCalls(unframed, 0, unframed.length, kout, true, 0x7fffffff, false)).toBe(3);
    expect([kout[6], kout[PEEK_STRIDE + 5], kout[PEEK_STRIDE + 6], kout[2 * PEEK_STRIDE + 6]])
      .toEqual([kitex[0]!.length - 4, kitex[0]!.length - 4, kitex[0]!.length + kitex[1]!.length - 8, unframed.length]);
  });

  test("each listed Get carries its seqid and its frame's bounds", () => {
    const a = getFrame(41, "g", "a");
    const b = getFrame(-7, "g", "bb");
    const out = new Int32Array(2 * PEEK_STRIDE);
    expect(peekCalls(concat(a, b), 0, a.length + b.length, out)).toBe(2);
    expect(Array.from(out.subarray(4, 7))).toEqual([41, 0, a.length]);
    expect(Array.from(out.subarray(PEEK_STRIDE + 4, PEEK_STRIDE + 7))).toEqual([-7, a.length, a.length + b.length]);
  });

  test("only the exact layout is listed: a Get with a field after the key (a newer client) is not", () => {
    const body = getBody("default", "user:9", (b) => b.field(T.I64, 7).i64(5));
    expect(listed(concat(framed(message(MSG.CALL, "Get", 1, body)), getFrame(2, "default", "user:8")))).toEqual([["default", "user:8"]]);
  });

  test("stops at an incomplete frame and when the output is full", () => {
    const a = getFrame(1, "g", "a");
    const b = getFrame(2, "g", "b");
    expect(listed(concat(a, b.subarray(0, b.length - 1)))).toEqual([["g", "a"]]);
    expect(listed(concat(a, b, a), 2)).toEqual([["g", "a"], ["g", "b"]]);
    expect(listed(new Uint8Array(0))).toEqual([]);
    expect(listed(new Uint8Array([0, 0, 0]))).toEqual([]);
  });

  test("lengths that point past the frame or are negative are skipped, not followed", () => {
    const good = getFrame(1, "g", "key");
    // Frame length 0-3, message header 4-18, field 1 header 19-21, group field header 22-24,
    // group length 25-28, "g" 29, key field header 30-32, key length 33-36, "key" 37-39, STOPs.
    for (const at of [25, 26, 27, 28]) {
      const bad = good.slice();
      bad[at] = 0x7f;
      expect(listed(concat(bad, good))).toEqual([["g", "key"]]);
    }
    const negative = good.slice();
    negative[25] = 0xff; // the group length's top byte: negative
    expect(listed(negative)).toEqual([]);
    const keyTooLong = good.slice();
    keyTooLong[36] = 200; // the key length's low byte: past the frame
    expect(listed(keyTooLong)).toEqual([]);
    const frameTooLong = good.slice();
    frameTooLong[3] = frameTooLong[3]! + 1; // the frame claims one byte more than the chunk has
    expect(listed(frameTooLong)).toEqual([]);
    expect(listed(utf8.encode("GET / HTTP/1.1\r\n\r\n"))).toEqual([]);
  });

  test("fuzz: never throws, ranges stay inside their frame, and the decoder reads each listed frame as exactly that Get or Set", () => {
    const seed = testSeed();
    const rng = mulberry32(seed);
    const decoder = new RequestDecoder(DEFAULT_LIMITS);
    const req = new Request();
    const out = new Int32Array(64 * PEEK_STRIDE);
    let listedFrames = 0;
    let listedSets = 0;
    for (let i = 0; i < 20_000; i++) {
      const parts: Uint8Array[] = [];
      const n = 1 + Math.floor(rng() * 6);
      for (let j = 0; j < n; j++) {
        const r = rng();
        const key = `k${Math.floor(rng() * 1e6)}`;
        const ttl = rng() < 0.8 ? Math.floor(rng() * 1000) : BigInt.asIntN(64, BigInt(Math.floor(rng() * 2 ** 53)) << BigInt(Math.floor(rng() * 16)));
        const frame = r < 0.35 ? getFrame(j, rng() < 0.5 ? "default" : "g", key)
          : r < 0.6 ? (rng() < 0.5 ? setFrame : kitexSetFrame)(j, "g", key, utf8.encode("v".repeat(Math.floor(rng() * 40))), rng() < 0.1 ? -ttl : ttl)
          : validRequest(rng);
        parts.push(rng() < 0.3 ? mutate(rng, frame, validRequest(rng)) : frame);
      }
      const chunk = concat(...parts);
      let count = 0;
      try {
        count = peekCalls(chunk, 0, chunk.length, out);
      } catch (e) {
        throw new Error(`seed ${seed}, input ${i}: peekCalls threw ${String(e)}`);
      }
      // Walk the same frames: each listed Get must be a frame the decoder reads as that Get.
      let p = 0;
      let k = 0;
      while (k < count) {
        const length = (chunk[p]! << 24) | (chunk[p + 1]! << 16) | (chunk[p + 2]! << 8) | chunk[p + 3]!;
        const start = p + 4;
        const end = start + length;
        const o = k * PEEK_STRIDE;
        if (out[o]! >= end) {
          p = end; // this frame was not listed
          continue;
        }
        expect(out[o]! >= start && out[o]! + out[o + 1]! <= end && out[o + 2]! + out[o + 3]! <= end).toBe(true);
        // Decoded as the same message unframed: the general path (the framed one would take the
        // fast path, which is matchPlainGet itself). A listed frame always decodes.
        decoder.decode(chunk, start, end, TRANSPORT_BUFFERED, req);
        expect([req.method, req.groupStart, req.groupLength, req.keyStart, req.keyLength, req.seqid])
          .toEqual([out[o + PEEK_METHOD]!, out[o]!, out[o + 1]!, out[o + 2]!, out[o + 3]!, out[o + 4]!]);
        expect([out[o + 5], out[o + 6]]).toEqual([p, end]);
        if (req.method === METHOD_SET) {
          expect([req.valueStart, req.valueLength, req.hasTtlMs]).toEqual([out[o + PEEK_VALUE]!, out[o + PEEK_VALUE + 1]!, false]);
          const ttl = out[o + PEEK_TTL]!;
          if (ttl >= 0) expect(req.ttlSeconds).toBe(ttl);
          else expect(req.ttlSeconds < 0 || req.ttlSeconds >= 2 ** 31).toBe(true);
          listedSets++;
        }
        listedFrames++;
        k++;
        p = end;
      }
    }
    expect(listedFrames).toBeGreaterThan(10_000); // the property was checked on many real calls
    expect(listedSets).toBeGreaterThan(3_000);
  });
});

describe("the decoder's fast path for plain framed Gets", () => {
  /** fields reads what a decode left in `req`, ranges relative to the message start. */
  function decodeAs(transport: number, buf: Uint8Array, start: number, end: number): unknown {
    const req = new Request();
    try {
      new RequestDecoder({ ...DEFAULT_LIMITS, maxKeyBytes: 40 }).decode(buf, start, end, transport, req);
    } catch (e) {
      return { threw: (e as Error).message };
    }
    const rel = (at: number) => (at === 0 ? "unset" : at - start); // no range starts at a message's byte 0
    return {
      method: req.method, type: req.messageType, oneway: req.oneway, seqid: req.seqid, headerRead: req.headerRead,
      name: [rel(req.nameStart), req.nameLength], group: [rel(req.groupStart), req.groupLength],
      key: [rel(req.keyStart), req.keyLength], error: [req.errorCode, req.errorMessage],
    };
  }

  test("fuzz: a framed message decodes to what the general path (the same message unframed) reads", () => {
    const seed = testSeed();
    const rng = mulberry32(seed);
    let fast = 0;
    for (let i = 0; i < 20_000; i++) {
      const key = "k".repeat(Math.floor(rng() * 60)); // past maxKeyBytes 40 at times: refused alike
      const plain = message(MSG.CALL, "Get", Math.floor(rng() * 2 ** 31) - 2 ** 30, getBody(rng() < 0.5 ? "default" : "", key));
      const msg = rng() < 0.5 ? plain : mutate(rng, plain, validRequest(rng)).subarray(0);
      const frame = framed(msg);
      const viaFast = decodeAs(TRANSPORT_FRAMED, frame, 4, frame.length);
      const viaGeneral = decodeAs(TRANSPORT_BUFFERED, msg, 0, msg.length);
      if (JSON.stringify(viaFast) !== JSON.stringify(viaGeneral)) {
        throw new Error(`seed ${seed}, input ${i}: framed ${JSON.stringify(viaFast)} != general ${JSON.stringify(viaGeneral)}`);
      }
      if (matchPlainGet(frame, 4, frame.length)) fast++;
    }
    expect(fast).toBeGreaterThan(9_000); // the fast path was taken for most unmutated Gets
  });
});
