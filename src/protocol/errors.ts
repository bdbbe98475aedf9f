// Errors of the protocol layer, and the cache-level error codes of the IDL.
//
// Two kinds, never mixed:
//  - ProtocolError: the bytes are wrong (or a method is unknown). It carries the Thrift
//    TApplicationException type number that goes on the wire, and whether the connection must
//    close afterwards (anything that leaves the stream position in doubt closes it; an unknown
//    method inside a well-formed message does not).
//  - CacheError: a well-formed request the cache refuses (key too long, value too large, ...).
//    Its `code` is the IDL's `ErrorCode` number, sent in result field 1 (`CacheError err`).
// Expected outcomes of a request are not exceptions: the decoder records a cache-level refusal
// in the request (`errorCode`, `errorMessage`) instead of throwing, so the hot path never
// allocates an Error; CacheError exists for the server and for the fuzzing entry point.
// A store's refusal of a write is told as the CacheError of SET_ERRORS, whoever wrote: a client's
// Set or SetMulti (server/reply-errors.ts) or Group.set (the local part of a routed SetMulti, and
// programs embedding a group); it lives here, below both, as cluster/ imports nothing of server/.

import { SET_INVALID_TTL, SET_NO_MEMORY, SET_OK, SET_REJECTED, SET_TOO_LARGE, type SetResult } from "../store/store-api.ts";

/** TApplicationException type numbers (Thrift's own TApplicationException.TYPE). */
export const APP_ERROR = {
  UNKNOWN: 0,
  UNKNOWN_METHOD: 1,
  INVALID_MESSAGE_TYPE: 2,
  WRONG_METHOD_NAME: 3,
  BAD_SEQUENCE_ID: 4,
  MISSING_RESULT: 5,
  INTERNAL_ERROR: 6,
  PROTOCOL_ERROR: 7,
  INVALID_TRANSFORM: 8,
  INVALID_PROTOCOL: 9,
  UNSUPPORTED_CLIENT_TYPE: 10,
} as const;
export type AppErrorType = (typeof APP_ERROR)[keyof typeof APP_ERROR];

/** The IDL's `enum ErrorCode` (thrift/cache.thrift). Numbers are the wire values; never renumber. */
export const ERROR_CODE = {
  NOT_FOUND: 1,
  UNKNOWN_GROUP: 2,
  INVALID_ARGUMENT: 3,
  VALUE_TOO_LARGE: 4,
  NO_MEMORY: 5,
  LOAD_FAILED: 6,
  PEER_UNAVAILABLE: 7,
  OVERLOADED: 8,
  UNAUTHORIZED: 9,
} as const;
export type ErrorCode = (typeof ERROR_CODE)[keyof typeof ERROR_CODE];

/** ERROR_NAMES names each ErrorCode number (`NOT_FOUND` for 1). */
export const ERROR_NAMES: Readonly<Record<number, string>> = Object.fromEntries(Object.entries(ERROR_CODE).map(([name, code]) => [code, name]));

/**
 * seedErrorText is how a CacheError is told as a TApplicationException's message when the node
 * answers errors as the seed did (`--seed-errors`): `NOT_FOUND (1): key not found`.
 * `parseSeedError` reads it back; undefined for any other text.
 */
export function seedErrorText(code: number, message: string): string {
  return `${ERROR_NAMES[code] ?? "UNKNOWN"} (${code}): ${message}`;
}

const SEED_ERROR = /^([A-Z_]+) \((\d+)\): ([\s\S]*)$/;

export function parseSeedError(text: string): CacheError | undefined {
  const m = SEED_ERROR.exec(text);
  if (m === null) return undefined;
  const code = Number(m[2]);
  if (ERROR_NAMES[code] !== m[1]) return undefined;
  return new CacheError(code as ErrorCode, m[3]!);
}

/** NOT_FOUND_MESSAGE is the message of a Get miss's CacheError NOT_FOUND. */
export const NOT_FOUND_MESSAGE = "key not found";
/**
 * TOO_MANY_CONNECTIONS is the message of the OVERLOADED a node answers to the first call of a
 * connection over its --max-connections, before closing it. A client reads a refusal of the
 * connection, not the node failing, by where that answer stands; the text counts only for a
 * client that sends no Auth or intro PeerPing first (callRefused, src/client/refusals.ts).
 */
export const TOO_MANY_CONNECTIONS = "too many connections";

/** ProtocolError is a fault in the bytes: `type` is the TApplicationException type to send. */
export class ProtocolError extends Error {
  override readonly name = "ProtocolError";
  /** TApplicationException type number (APP_ERROR). */
  readonly type: AppErrorType;
  /** True when the connection must be closed after the error reply (stream position unknown). */
  readonly close: boolean;

  constructor(type: AppErrorType, message: string, close = true) {
    super(message);
    this.type = type;
    this.close = close;
  }
}

/**
 * ERROR_ORIGIN tells how a CacheError came to be (CacheError.origin): above all whether a peer
 * answered. Code tells a PEER_UNAVAILABLE by it, never by its message, which is for people (and a
 * peer's own message may hold any text: one ending like a refusal is not one).
 */
export const ERROR_ORIGIN = {
  /** Said as a CacheError: this process's own, or a peer's declared one (result field 1, or seed-told). */
  DECLARED: 0,
  /** A peer's TApplicationException, its type number in CacheError.appErrorType (client/results.ts). */
  APP_EXCEPTION: 1,
  /** A peer's answer to a write of success=false, with no error (REPLY_FAILED): it did not do it. */
  REFUSED: 2,
  /** A peer's REPLY that carried no result. */
  NO_RESULT: 3,
  /** No answer: a timeout, a lost or refused connection, a peer marked down, a closed client. */
  UNANSWERED: 4,
} as const;
export type ErrorOrigin = (typeof ERROR_ORIGIN)[keyof typeof ERROR_ORIGIN];

/**
 * CacheError is a refusal of a well-formed request; `code` is the IDL ErrorCode number, `origin`
 * how it came to be (ERROR_ORIGIN) and `appErrorType` the TApplicationException type number of an
 * APP_EXCEPTION (-1 otherwise). Numbers set in the constructor: telling where an error came from
 * costs no object.
 */
export class CacheError extends Error {
  override readonly name = "CacheError";
  readonly code: ErrorCode;
  readonly origin: ErrorOrigin;
  readonly appErrorType: number;

  constructor(code: ErrorCode, message: string, origin: ErrorOrigin = ERROR_ORIGIN.DECLARED, appErrorType = -1) {
    super(message);
    this.code = code;
    this.origin = origin;
    this.appErrorType = appErrorType;
  }
}

/** SET_ERRORS gives each refusal of a store's `set` its ErrorCode and message. */
export const SET_ERRORS: Readonly<Record<Exclude<SetResult, typeof SET_OK>, readonly [ErrorCode, string]>> = {
  [SET_TOO_LARGE]: [ERROR_CODE.VALUE_TOO_LARGE, "item larger than the largest slab chunk (max item size)"],
  [SET_NO_MEMORY]: [ERROR_CODE.NO_MEMORY, "no memory could be freed for the item"],
  [SET_REJECTED]: [ERROR_CODE.NO_MEMORY, "item not admitted"],
  [SET_INVALID_TTL]: [ERROR_CODE.INVALID_ARGUMENT, "ttl must be >= 0"],
};

/** setError is the CacheError of a store's refusal `r` (SET_ERRORS). */
export function setError(r: Exclude<SetResult, typeof SET_OK>): CacheError {
  const [code, message] = SET_ERRORS[r];
  return new CacheError(code, message);
}

/** protocolError builds a ProtocolError of type PROTOCOL_ERROR that closes the connection. */
export function protocolError(message: string): ProtocolError {
  return new ProtocolError(APP_ERROR.PROTOCOL_ERROR, message, true);
}

/**
 * errorText is the message of anything thrown: an Error's message, else its string form, so
 * reporting an error never throws itself. An Error whose message cannot be read (its getter
 * throws: a loader's error thrown so was reported as its thread crashing) is told by its name,
 * `TypeError: <message unreadable>`; any other value that cannot be turned into a string (an
 * object without a prototype throws from `String`) by a fixed text.
 */
export function errorText(e: unknown): string {
  try {
    return e instanceof Error ? String(e.message) : String(e);
  } catch {
    return unreadableText(e);
  }
}

/** unreadableText is errorText's answer for what it cannot read: the Error's name, if that can be. */
function unreadableText(e: unknown): string {
  try {
    const name: unknown = e instanceof Error ? e.name : undefined;
    if (typeof name === "string" && name !== "") return `${name}: <message unreadable>`;
    if (e instanceof Error) return "<message unreadable>";
  } catch {
    // (a Proxy whose traps throw)
  }
  return "a value that cannot be printed";
}
