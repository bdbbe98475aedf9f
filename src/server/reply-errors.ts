/**
 * The one place where outcomes become wire errors.
 *
 * Store results map to `CacheError` codes (`SET_ERRORS`, protocol/errors.ts: Group.set throws the
 * same); a thrown `CacheError` keeps its code;
 * anything else thrown by a loader or a peer is LOAD_FAILED. Protocol faults (bad bytes) are
 * answered by the server with Thrift's TApplicationException through the same ReplyWriter.
 */
import { CacheError, ERROR_CODE, ERROR_NAMES, ERROR_ORIGIN, type ErrorCode, SET_ERRORS, errorText } from "../protocol/errors.ts";
import type { ReplyWriter } from "../protocol/reply-writer.ts";
import type { Request } from "../protocol/request.ts";
import type { SET_OK, SetResult } from "../store/store.ts";

/** replyCacheError writes a CacheError reply `{code, message}`. */
export function replyCacheError(reply: ReplyWriter, req: Request, code: ErrorCode, message: string): void {
  reply.writeCacheError(req, code, message);
}

/** replySetError answers a refused store write. */
export function replySetError(reply: ReplyWriter, req: Request, r: Exclude<SetResult, typeof SET_OK>): void {
  const [code, message] = SET_ERRORS[r];
  replyCacheError(reply, req, code, message);
}

/**
 * multiTooLarge answers a GetMulti whose reply would pass the reply's frame limit
 * (ReplyWriter.maxMultiBytes): VALUE_TOO_LARGE, after dropping what was begun of the reply.
 */
export function multiTooLarge(reply: ReplyWriter, req: Request, begun: boolean): void {
  if (begun) reply.abortGetMulti();
  replyCacheError(reply, req, ERROR_CODE.VALUE_TOO_LARGE, multiTooLargeError(reply.maxMultiBytes).message);
}

/** multiTooLargeError is that answer as an error (for a GetMulti that fails before its reply begins). */
export function multiTooLargeError(maxBytes: number): CacheError {
  return new CacheError(ERROR_CODE.VALUE_TOO_LARGE, `GetMulti reply over ${maxBytes} bytes (the frame limit): ask for fewer keys`);
}

/**
 * ownerFailed is the message of a call forwarded to `owner` that failed with PEER_UNAVAILABLE `e`
 * (a Get, GetMulti part, Set, Delete or SetMulti part), worded by how it failed (e.origin): only
 * an owner that did not answer was unreachable. One that answered is up, and the operator looks at
 * what it said: a Thrift exception (e.g. UNKNOWN_METHOD from a member of another version), a
 * refusal without a reason (success=false), or its own PEER_UNAVAILABLE.
 */
export function ownerFailed(owner: string, e: CacheError): string {
  return `owner ${owner} ${ownerFailure(e)}: ${e.message}`;
}

function ownerFailure(e: CacheError): string {
  switch (e.origin) {
    case ERROR_ORIGIN.UNANSWERED:
      return "unreachable";
    case ERROR_ORIGIN.REFUSED:
      return "refused it without a reason";
    case ERROR_ORIGIN.APP_EXCEPTION:
    case ERROR_ORIGIN.NO_RESULT:
      return "answered, but could not serve it";
    default:
      return `answered ${ERROR_NAMES[e.code] ?? e.code}`;
  }
}

/** replyThrown answers a failure: a CacheError with its code, anything else LOAD_FAILED. */
export function replyThrown(reply: ReplyWriter, req: Request, e: unknown): void {
  if (e instanceof CacheError) return replyCacheError(reply, req, e.code, e.message);
  replyCacheError(reply, req, ERROR_CODE.LOAD_FAILED, errorText(e));
}
