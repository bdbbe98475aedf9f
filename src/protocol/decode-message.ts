// decodeMessage: the whole decoder as one pure function, for fuzzing and tests.
//
// It runs the exact zero-allocation path the server runs (FrameReader → RequestDecoder →
// Request) on a fresh connection state, then copies the result out into a plain object, so it
// allocates freely (it is not on the hot path). Outcomes:
//   { kind: "request", … }   one complete message decoded (`consumed` bytes of the input)
//   { kind: "need-more" }    the input is a valid but incomplete prefix
//   { kind: "error", error } a ProtocolError, or a CacheError for a well-formed request the
//                            cache refuses at decode time (key too long, value too large, ttl<0)
// Anything else thrown is a bug and propagates.

import { CacheError, ProtocolError, type ErrorCode } from "./errors.ts";
import { resolveLimits, type ProtocolLimits } from "./limits.ts";
import { ProtocolConnection } from "./protocol-connection.ts";
import { ReplyWriter } from "./reply-writer.ts";
import { BinaryWriter } from "./binary-writer.ts";
import { METHOD_NAMES, type Request } from "./request.ts";
import { TRANSPORT_BUFFERED } from "./wire.ts";

export interface DecodedRequest {
  kind: "request";
  /** Bytes of the input this message used (length prefix and header included). */
  consumed: number;
  transport: number;
  method: number;
  /** The name as sent (decoded as UTF-8 here only, for convenience). */
  methodName: string;
  messageType: number;
  oneway: boolean;
  seqid: number;
  group: Uint8Array;
  key: Uint8Array;
  value: Uint8Array;
  ttlSeconds: number;
  ttlMs: number | null;
  /** GetMulti keys (value empty) / SetMulti entries. */
  items: { key: Uint8Array; value: Uint8Array }[];
  /** PeerInvalidate's `all`, PeerPing's `lease` (false when absent). */
  all: boolean;
  lease: boolean;
  headerFlags: number;
  headerSeqid: number;
  innerFramed: boolean;
  infoHeaders: { key: Uint8Array; value: Uint8Array }[];
}

export type DecodeResult =
  | DecodedRequest
  | { kind: "need-more" }
  | { kind: "error"; error: ProtocolError | CacheError };

/** decodeMessage decodes the first message in `bytes` (see file header). */
export function decodeMessage(bytes: Uint8Array, limits?: Partial<ProtocolLimits>): DecodeResult {
  // This path never writes replies: a tiny output buffer keeps fuzzing cheap.
  const conn = new ProtocolConnection(resolveLimits(limits), new ReplyWriter(new BinaryWriter(64)));
  conn.push(bytes);
  try {
    if (!conn.nextRequest()) return { kind: "need-more" };
  } catch (e) {
    if (e instanceof ProtocolError) return { kind: "error", error: e };
    throw e;
  }
  const req = conn.request;
  if (req.errorCode !== 0) return { kind: "error", error: new CacheError(req.errorCode as ErrorCode, req.errorMessage) };
  return snapshot(req, consumedBytes(conn));
}

function consumedBytes(conn: ProtocolConnection): number {
  // Framed and header views start after their 4-byte length; a buffered view is the message.
  const view = conn.reader.end - conn.reader.start;
  return conn.request.transport === TRANSPORT_BUFFERED ? view : view + 4;
}

function snapshot(req: Request, consumed: number): DecodedRequest {
  const b = req.buffer;
  const slice = (start: number, length: number) => b.slice(start, start + length);
  const items: { key: Uint8Array; value: Uint8Array }[] = [];
  for (let i = 0; i < req.itemCount; i++) {
    const o = i * 4;
    items.push({ key: slice(req.items[o]!, req.items[o + 1]!), value: slice(req.items[o + 2]!, req.items[o + 3]!) });
  }
  const infoHeaders: { key: Uint8Array; value: Uint8Array }[] = [];
  const h = req.header;
  for (let i = 0; i < h.stringCount; i++) {
    const o = i * 4;
    infoHeaders.push({ key: slice(h.strings[o]!, h.strings[o + 1]!), value: slice(h.strings[o + 2]!, h.strings[o + 3]!) });
  }
  return {
    kind: "request",
    consumed,
    transport: req.transport,
    method: req.method,
    methodName: req.method !== 0 ? METHOD_NAMES[req.method]! : new TextDecoder().decode(slice(req.nameStart, req.nameLength)),
    messageType: req.messageType,
    oneway: req.oneway,
    seqid: req.seqid,
    group: slice(req.groupStart, req.groupLength),
    key: slice(req.keyStart, req.keyLength),
    value: slice(req.valueStart, req.valueLength),
    ttlSeconds: req.ttlSeconds,
    ttlMs: req.hasTtlMs ? req.ttlMs : null,
    items,
    all: req.all,
    lease: req.lease,
    headerFlags: h.flags,
    headerSeqid: h.seqid,
    innerFramed: h.innerFramed,
    infoHeaders,
  };
}
