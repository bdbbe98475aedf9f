// Test helper: the Apache `thrift` runtime (0.24.0) and the code its compiler generated from
// thrift/cache.thrift, driven as the reference side of the differential test (differential.ts).
//
// Three entry points, each doing exactly what an Apache client or server does with the bytes:
//  - apacheWriteCall: a generated client's `send_<method>` through TBinaryProtocol (framed or
//    buffered transport) or THeaderProtocol, with a hook that writes extra fields, through the same
//    Apache protocol object, before any field or STOP of the argument struct (level 1) and of the
//    request struct (level 2): what a client generated from a newer IDL would send.
//  - apacheReadCall: what a generated server reads: the transport's framing as its `receiver`
//    applies it, then `readMessageBegin` and the Processor's `process_<name>` (its args struct's
//    `read`), the handler capturing the request; an unknown name is skipped as the Processor does.
//  - apacheReadReply: a reply read by the generated client's `recv_<method>`, in any transport.
// The generated code lives in test/gen/ (apache-adapter.ts generates it when missing).

import { apacheRuntime } from "./apache-adapter.ts";

// The runtime is untyped JavaScript: these helpers reach into it loosely, by design.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Js = any;

const thrift: Js = apacheRuntime.thrift;
const service: Js = apacheRuntime.service;
const Int64: Js = require("node-int64");
const InputBufferUnderrunError: Js = require("thrift/lib/nodejs/lib/thrift/input_buffer_underrun_error");

/** The framed receiver's default frame limit (TFramedTransport.DEFAULT_MAX_LENGTH). */
export const APACHE_MAX_FRAME = 16_384_000;
export const TYPE = thrift.Thrift.Type as Record<string, number>;

export type ApacheTransport = "framed" | "buffered" | "theader";

/** int64 makes an Apache Int64 holding exactly `v` (no trip through a double). */
export function int64(v: bigint): Js {
  const b = Buffer.alloc(8);
  b.writeBigInt64BE(BigInt.asIntN(64, v));
  return new Int64(b);
}

/** bigOf reads an Apache Int64 exactly. */
export function bigOf(x: Js): bigint {
  return (x.buffer as Buffer).readBigInt64BE(x.offset as number);
}

/** Inject is called before each field and before the STOP of the args (level 1) and request (level 2) structs. */
export type Inject = (level: number, out: Js) => void;

/** apacheWriteCall returns the bytes a generated client sends for `method(req)`. */
export function apacheWriteCall(transport: ApacheTransport, method: string, req: unknown, seqid: number, inject: Inject, info: Record<string, string> = {}): Uint8Array {
  let out: Buffer | undefined;
  const capture = (b: Buffer) => {
    out = b;
  };
  const t: Js = transport === "framed" ? new thrift.TFramedTransport(undefined, capture) : new thrift.TBufferedTransport(undefined, capture);
  const Base: Js = transport === "theader" ? thrift.THeaderProtocol : thrift.TBinaryProtocol;
  if (transport === "theader") {
    for (const [k, v] of Object.entries(info)) t.setWriteHeader(k, v);
    // The generated client flushes the transport, not the protocol: the header goes first.
    const flush = t.flush.bind(t);
    t.flush = () => {
      t.writeHeaders();
      flush();
    };
  }
  function Injecting(this: unknown, trans: Js): Js {
    const inner = new Base(trans);
    let depth = 0;
    return new Proxy(inner, {
      get(target, prop) {
        if (prop === "writeStructBegin") return (name: string) => (depth++, target.writeStructBegin(name));
        if (prop === "writeStructEnd") return () => (depth--, target.writeStructEnd());
        if (prop === "writeFieldBegin" || prop === "writeFieldStop") {
          return (...a: unknown[]) => {
            if (depth === 1 || depth === 2) inject(depth, target);
            return target[prop](...a);
          };
        }
        const v = target[prop];
        return typeof v === "function" ? v.bind(target) : v;
      },
    });
  }
  const client: Js = new service.Client(t, Injecting);
  client._seqid = seqid; // (send_<method> writes the client's current seqid and throws what fails)
  client[`send_${method}`](req);
  if (!out) throw new Error("Apache client wrote nothing");
  return new Uint8Array(out);
}

/**
 * watchElements wraps a protocol to see the generated code read its containers (not those `skip`
 * passes over): `other` turns true once a list or map is read whose element types are not all
 * strings (every container of cache.thrift is of strings; the generated code reads them as such
 * whatever types the bytes name).
 */
function watchElements(plain: Js): { input: Js; readonly other: boolean } {
  let skipping = 0;
  let other = false;
  const S = TYPE.STRING;
  const input = new Proxy(plain, {
    get(target, prop) {
      const v = target[prop];
      if (prop === "skip") {
        return (...a: unknown[]) => {
          skipping++;
          try {
            return v.apply(target, a);
          } finally {
            skipping--;
          }
        };
      }
      if (prop === "readListBegin" || prop === "readSetBegin" || prop === "readMapBegin") {
        return () => {
          const r = v.call(target);
          if (skipping === 0 && ((r.etype ?? S) !== S || (r.ktype ?? S) !== S || (r.vtype ?? S) !== S)) other = true;
          return r;
        };
      }
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  return {
    input,
    get other() {
      return other;
    },
  };
}

export type ApacheCall =
  | {
      kind: "request";
      name: string;
      mtype: number;
      seqid: number;
      known: boolean;
      req: Js;
      consumed: number;
      trailing: number;
      headers: Record<string, string>;
      /** A declared list or map (all ours are of strings) was read with other element types named. */
      otherElements: boolean;
    }
  | { kind: "need-more"; otherElements: boolean }
  | { kind: "error"; message: string; otherElements: boolean };

const output = () => new thrift.TBinaryProtocol(new thrift.TBufferedTransport(undefined, () => {}));

/** apacheReadCall reads the first call in `bytes` as an Apache server of `transport` does. */
export function apacheReadCall(bytes: Uint8Array, transport: ApacheTransport): ApacheCall {
  let trans: Js;
  let consumed = -1;
  if (transport === "framed") {
    if (bytes.length < 4) return { kind: "need-more", otherElements: false };
    const size = Buffer.from(bytes.buffer, bytes.byteOffset, 4).readInt32BE(0);
    if (size < 0 || size > APACHE_MAX_FRAME) return { kind: "error", message: `frame size ${size}`, otherElements: false };
    if (bytes.length < 4 + size) return { kind: "need-more", otherElements: false };
    trans = new thrift.TFramedTransport(Buffer.from(bytes.subarray(4, 4 + size)));
    consumed = 4 + size;
  } else {
    trans = new thrift.TBufferedTransport();
    trans.inBuf = Buffer.from(bytes);
    trans.writeCursor = bytes.length;
  }
  const plain: Js = transport === "theader" ? new thrift.THeaderProtocol(trans) : new thrift.TBinaryProtocol(trans);
  const watch = watchElements(plain);
  const input = watch.input;
  let captured: { req: Js } | undefined;
  const handler = new Proxy({}, { get: () => (req: Js, _callback: unknown) => void (captured = { req }) });
  const processor: Js = new service.Processor(handler);
  try {
    // GroupCacheProcessor.process, with the message header kept for the comparison.
    const begin = input.readMessageBegin();
    const run = processor[`process_${begin.fname}`];
    if (run) run.call(processor, begin.rseqid, input, output());
    else {
      input.skip(TYPE.STRUCT);
      input.readMessageEnd();
    }
    const read = transport === "framed" ? trans.readPos : trans.readCursor;
    // Where the frame ends (Apache's THeader reader reads the message without looking at it).
    const frameEnd = transport === "framed" ? consumed - 4 : transport === "theader" ? 4 + Buffer.from(bytes).readInt32BE(0) : read;
    return {
      kind: "request",
      name: String(begin.fname), // (a Buffer for a non-strict header: the runtime reads its name so)
      mtype: begin.mtype,
      seqid: begin.rseqid,
      known: run !== undefined,
      req: captured?.req ?? null,
      consumed: transport === "framed" ? consumed : read,
      trailing: frameEnd - read,
      headers: transport === "theader" ? { ...trans.getReadHeaders() } : {},
      otherElements: watch.other,
    };
  } catch (e) {
    // Buffered, the server waits for more; framed, the frame is all there is (the call is dropped).
    if (e instanceof InputBufferUnderrunError && transport !== "framed") return { kind: "need-more", otherElements: watch.other };
    return { kind: "error", message: e instanceof InputBufferUnderrunError ? "frame ends inside the message" : String((e as Error)?.message ?? e), otherElements: watch.other };
  }
}

/**
 * apacheWriteReply returns the reply a generated server writes for `call` (a call's bytes in
 * `transport`, framed or buffered) when its handler answers `err` (a CacheError, another Error, or
 * null) and `result` (passed as the callback's arguments, as a callback-style handler does).
 */
export function apacheWriteReply(call: Uint8Array, transport: "framed" | "buffered", err: unknown, result: unknown): Uint8Array {
  let out: Buffer | undefined;
  const capture = (b: Buffer) => void (out = b);
  const trans: Js = transport === "framed" ? new thrift.TFramedTransport(Buffer.from(call.subarray(4))) : new thrift.TBufferedTransport();
  if (transport === "buffered") {
    trans.inBuf = Buffer.from(call);
    trans.writeCursor = call.length;
  }
  const handler = new Proxy({}, { get: () => (_req: Js, callback: (e: unknown, r: unknown) => void) => callback(err, result) });
  const output = new thrift.TBinaryProtocol(transport === "framed" ? new thrift.TFramedTransport(undefined, capture) : new thrift.TBufferedTransport(undefined, capture));
  new service.Processor(handler).process(new thrift.TBinaryProtocol(trans), output);
  if (!out) throw new Error("Apache server wrote nothing");
  return new Uint8Array(out);
}

export type ApacheReply = { name: string; mtype: number; seqid: number; err: Js; result: Js; trailing: number; headers: Record<string, string>; otherElements: boolean };

/**
 * apacheReadReply reads one reply in `transport` with the generated client's recv_<method>; `seen`
 * is told whether a list or map was read with other element types than strings (watchElements).
 */
export function apacheReadReply(bytes: Uint8Array, transport: ApacheTransport, seen: { otherElements: boolean } = { otherElements: false }): ApacheReply {
  let trans: Js;
  if (transport === "framed") {
    const size = Buffer.from(bytes).readInt32BE(0);
    if (size !== bytes.length - 4) throw new Error(`frame length ${size} for ${bytes.length - 4} bytes`);
    trans = new thrift.TFramedTransport(Buffer.from(bytes.subarray(4)));
  } else {
    trans = new thrift.TBufferedTransport();
    trans.inBuf = Buffer.from(bytes);
    trans.writeCursor = bytes.length;
  }
  const watch = watchElements(transport === "theader" ? new thrift.THeaderProtocol(trans) : new thrift.TBinaryProtocol(trans));
  const input = watch.input;
  const begin = input.readMessageBegin();
  const client: Js = new service.Client(trans, thrift.TBinaryProtocol);
  let got: { err: Js; result: Js } | undefined;
  client._reqs[begin.rseqid] = (err: Js, result: Js) => void (got = { err, result });
  try {
    client[`recv_${begin.fname}`](input, begin.mtype, begin.rseqid);
  } finally {
    seen.otherElements = watch.other; // (told even when reading failed)
  }
  if (!got) throw new Error("Apache client produced no result");
  const read = transport === "framed" ? trans.readPos : trans.readCursor;
  const total = transport === "framed" ? bytes.length - 4 : bytes.length;
  const headers = transport === "theader" ? { ...trans.getReadHeaders() } : {};
  return { name: String(begin.fname), mtype: begin.mtype, seqid: begin.rseqid, ...got, trailing: total - read, headers, otherElements: watch.other };
}

export const ApacheTypes: Js = apacheRuntime.types;
export const TApplicationException: Js = thrift.Thrift.TApplicationException;
