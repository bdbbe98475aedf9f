// Results: a decoded reply (ReplyReader) → the value a promise-returning call resolves to, or the
// CacheError it rejects with. The one place the client maps wire errors to CacheError.
//
// Mapping:
//  - the server's declared CacheError → that code and message;
//  - a TApplicationException → PEER_UNAVAILABLE, message
//      "<Method> failed: server exception <TYPE_NAME> (<type>): <server's message>"
//    e.g. "PeerGet failed: server exception UNKNOWN_METHOD (1): Invalid method name: 'PeerGet'"
//    for a server that predates the peer methods; origin APP_EXCEPTION, the type in
//    `appErrorType` (`isUnknownMethod` tests for type 1). Why PEER_UNAVAILABLE and not
//    INVALID_ARGUMENT: the caller's input was fine; the peer could not serve the call, and a
//    router must treat it like an unreachable peer (load locally), though it words it apart: the
//    peer answered (server/reply-errors.ts, ownerFailed);
//  - a REPLY without a result → PEER_UNAVAILABLE "… failed: reply carried no result" (NO_RESULT);
//  - a Set's, Clear's or SetMulti's REPLY with success=false and no error (REPLY_FAILED: how a
//    seed server may answer a failure) → PEER_UNAVAILABLE, message
//      "<Method> failed: the server answered success=false, with no error" (origin REFUSED)
//    as for a missing result: the server did not do the write and said not why, so nothing points
//    at the caller's input; a node forwarding the write to a member that answers so does not
//    count it acknowledged, and says the member refused it, not that it was unreachable
//    (server/reply-errors.ts ownerFailed, and routed-writes.ts, by the origin). The connection is kept: the bytes were fine.
//    Delete's success=false is its answer (not found), not a failure;
//  - timeouts, lost connections, a down peer, a closed client → PEER_UNAVAILABLE of origin
//    UNANSWERED (`unavailable`: made by the connection and the client, with "timeout", "connection
//    closed: …", "peer is down", "client closed").
// The origin (ERROR_ORIGIN) is how code tells these apart; the messages are for people, and a
// peer's declared CacheError may say anything.
// Byte values are copied out of the receive buffer (it is reused); keys of GetMulti become
// UTF-8 strings. These paths allocate by nature; the zero-allocation path is forwardGet.

import { compareBytes, sortedByBytes } from "../bytes/bytes.ts";
import { APP_ERROR, CacheError, ERROR_CODE, ERROR_ORIGIN, type ErrorCode, parseSeedError } from "../protocol/errors.ts";
import { REPLY_APP_ERROR, REPLY_CACHE_ERROR, REPLY_FAILED, type ReplyReader } from "../protocol/reply-reader.ts";
import {
  METHOD_DELETE,
  METHOD_GET,
  METHOD_GET_MULTI,
  METHOD_NAMES,
  METHOD_PEER_INVALIDATE,
  METHOD_PEER_PING,
  METHOD_STATS,
  baseMethod,
} from "../protocol/request.ts";

export interface GetResult {
  value: Uint8Array;
  /** Milliseconds until the value expires; -1 = no expiry. */
  ttlRemainingMs: number;
}

export interface StatsResult {
  itemCount: number;
  hitCount: number;
  missCount: number;
  totalCount: number;
}

/**
 * FoundEntries is a GetMulti's or PeerGetMulti's answer: the keys found (bytes, as nodes treat keys) and their
 * values, in the order the peer wrote them. Not a Map keyed by the keys' strings: those are
 * chosen by clients, and a Map of keys built to share JavaScriptCore's string hash takes
 * quadratic time to fill (`valuesFor` matches them by sorting).
 */
export interface FoundEntries {
  keys: Uint8Array[];
  values: Uint8Array[];
}

/**
 * RawEntries is a PeerGetMulti's answer as read: one copy of its entries' bytes, and `items`, 4
 * int32 an entry (keyStart, keyLength, valueStart, valueLength in `buffer`), `count` of them, in
 * the order the peer wrote them. No object a key: a node's part of a routed GetMulti of millions
 * of keys made two buffers a key found (FoundEntries).
 */
export interface RawEntries {
  buffer: Uint8Array;
  items: Int32Array;
  count: number;
}

/** rawEntries copies a GetMulti reply's entries out of the receive buffer (RawEntries). */
function rawEntries(r: ReplyReader): RawEntries {
  const n = r.entryCount * 4;
  if (n === 0) return { buffer: new Uint8Array(0), items: new Int32Array(0), count: 0 };
  const from = r.items[0]!;
  const items = r.items.slice(0, n);
  for (let i = 0; i < n; i += 2) items[i] = items[i]! - from;
  return { buffer: r.buffer.slice(from, r.items[n - 2]! + r.items[n - 1]!), items, count: r.entryCount };
}

/** foundOf makes FoundEntries of RawEntries (a buffer a key and a value). */
export function foundOf(raw: RawEntries): FoundEntries {
  const found: FoundEntries = { keys: [], values: [] };
  const { buffer, items } = raw;
  for (let i = 0; i < raw.count * 4; i += 4) {
    found.keys.push(buffer.slice(items[i]!, items[i]! + items[i + 1]!));
    found.values.push(buffer.slice(items[i + 2]!, items[i + 2]! + items[i + 3]!));
  }
  return found;
}

/** valuesFor gives each of `keys` its value in `found`, or undefined (not found). */
export function valuesFor(keys: readonly Uint8Array[], found: FoundEntries): (Uint8Array | undefined)[] {
  const out = new Array<Uint8Array | undefined>(keys.length).fill(undefined);
  const asked = sortedByBytes(keys);
  const got = sortedByBytes(found.keys);
  let g = 0;
  for (const a of asked) {
    let c = 1;
    while (g < got.length && (c = compareBytes(found.keys[got[g]!]!, keys[a]!)) < 0) g++;
    if (g < got.length && c === 0) out[a] = found.values[got[g]!];
  }
  return out;
}

export interface PingResult {
  nodeId: string;
  uptimeMs: number;
  /** leaseMs: how long the node vouches for the caller from when it sent the ping (0: not); undefined when the reply had no such field. */
  leaseMs?: number;
}

const UTF8 = new TextDecoder();
const APP_ERROR_NAMES: Record<number, string> = Object.fromEntries(Object.entries(APP_ERROR).map(([name, type]) => [type, name]));

/** buildResult returns what a call of `method` resolves to, from a REPLY_OK reply. */
export function buildResult(method: number, r: ReplyReader): unknown {
  const buf = r.buffer;
  switch (baseMethod(method)) {
    case METHOD_GET:
      return { value: buf.slice(r.valueStart, r.valueStart + r.valueLength), ttlRemainingMs: r.ttlRemainingMs } satisfies GetResult;
    case METHOD_DELETE:
      return r.success;
    case METHOD_STATS:
      return { itemCount: r.itemCount, hitCount: r.hitCount, missCount: r.missCount, totalCount: r.totalCount } satisfies StatsResult;
    case METHOD_GET_MULTI: {
      if (method !== baseMethod(method)) return rawEntries(r); // (a PeerGetMulti: CacheClient.peerGetMulti makes FoundEntries of them)
      // The entries as they came, keys as bytes: CacheClient.getMulti names them by the keys asked.
      const items = r.items;
      const found: FoundEntries = { keys: [], values: [] };
      for (let i = 0; i < r.entryCount * 4; i += 4) {
        found.keys.push(buf.slice(items[i]!, items[i]! + items[i + 1]!));
        found.values.push(buf.slice(items[i + 2]!, items[i + 2]! + items[i + 3]!));
      }
      return found;
    }
    case METHOD_PEER_INVALIDATE:
      return r.dropped;
    case METHOD_PEER_PING:
      return {
        nodeId: UTF8.decode(buf.subarray(r.nodeIdStart, r.nodeIdStart + r.nodeIdLength)), uptimeMs: r.uptimeMs,
        ...(r.leaseMs < 0 ? {} : { leaseMs: r.leaseMs }),
      } satisfies PingResult;
    default:
      return undefined; // Set, Clear, SetMulti with success=true (false is REPLY_FAILED: replyError)
  }
}

/**
 * strayException describes a TApplicationException (read, with no name) that answers no call in
 * flight: what a node says of input it could not tie to a call, before it closes the connection.
 */
export function strayException(r: ReplyReader): string {
  const type = APP_ERROR_NAMES[r.errorCode] ?? "UNKNOWN";
  const message = UTF8.decode(r.buffer.subarray(r.messageStart, r.messageStart + r.messageLength));
  return `the peer refused this connection's input: server exception ${type} (${r.errorCode}) for no call in flight (seqid ${r.seqid}): ${message}`;
}

/** replyError returns the CacheError of a reply that is not REPLY_OK. */
export function replyError(method: number, r: ReplyReader): CacheError {
  const name = METHOD_NAMES[method]!;
  const message = r.errorText !== "" ? r.errorText : UTF8.decode(r.buffer.subarray(r.messageStart, r.messageStart + r.messageLength));
  if (r.outcome === REPLY_CACHE_ERROR) return new CacheError(r.errorCode as ErrorCode, message);
  if (r.outcome === REPLY_APP_ERROR) {
    // A node with --seed-errors tells a CacheError of the seed's methods this way.
    const seed = r.errorCode === APP_ERROR.INTERNAL_ERROR ? parseSeedError(message) : undefined;
    if (seed !== undefined) return seed;
    const type = APP_ERROR_NAMES[r.errorCode] ?? "UNKNOWN";
    return new CacheError(ERROR_CODE.PEER_UNAVAILABLE, `${name} failed: server exception ${type} (${r.errorCode}): ${message}`, ERROR_ORIGIN.APP_EXCEPTION, r.errorCode);
  }
  if (r.outcome === REPLY_FAILED) {
    return new CacheError(ERROR_CODE.PEER_UNAVAILABLE, `${name} failed: the server answered success=false, with no error`, ERROR_ORIGIN.REFUSED);
  }
  return new CacheError(ERROR_CODE.PEER_UNAVAILABLE, `${name} failed: reply carried no result`, ERROR_ORIGIN.NO_RESULT);
}

/** isUnknownMethod tells whether `err` is a server's UNKNOWN_METHOD answer (a server without that method). */
export function isUnknownMethod(err: unknown): boolean {
  return err instanceof CacheError && err.origin === ERROR_ORIGIN.APP_EXCEPTION && err.appErrorType === APP_ERROR.UNKNOWN_METHOD;
}

/**
 * isRefusedWithoutReason tells whether `err` is a write the server answered success=false, with
 * no error (REPLY_FAILED): it answered, and did not do the write; it was not unreachable.
 */
export function isRefusedWithoutReason(err: unknown): boolean {
  return err instanceof CacheError && err.origin === ERROR_ORIGIN.REFUSED;
}

/** unavailable makes the PEER_UNAVAILABLE error of a call not answered (timeout, lost connection, …). */
export function unavailable(message: string): CacheError {
  return new CacheError(ERROR_CODE.PEER_UNAVAILABLE, message, ERROR_ORIGIN.UNANSWERED);
}
