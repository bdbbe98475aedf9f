/**
 * The one place where outcomes become wire errors.
 *
 * Store results map to `CacheError` codes (`SET_ERRORS`); a thrown `CacheError` keeps its code;
 * anything else thrown by a loader or a peer is LOAD_FAILED. Protocol faults (bad bytes) are
 * answered by the server with Thrift's TApplicationException through the same ReplyWriter.
 */
import { CacheError, ERROR_CODE, type ErrorCode, errorText } from "../protocol/errors.ts";
import type { ReplyWriter } from "../protocol/reply-writer.ts";
import type { Request } from "../protocol/request.ts";
import { SET_INVALID_TTL, SET_NO_MEMORY, SET_OK, SET_REJECTED, SET_TOO_LARGE, type SetResult } from "../store/store.ts";

/** SET_ERRORS maps a failed store SetResult to its ErrorCode and message. */
export const SET_ERRORS: Record<Exclude<SetResult, typeof SET_OK>, [ErrorCode, string]> = {
  [SET_TOO_LARGE]: [ERROR_CODE.VALUE_TOO_LARGE, "item larger than the largest slab chunk (max item size)"],
  [SET_NO_MEMORY]: [ERROR_CODE.NO_MEMORY, "no memory could be freed for the item"],
  [SET_REJECTED]: [ERROR_CODE.NO_MEMORY, "item not admitted"],
  [SET_INVALID_TTL]: [ERROR_CODE.INVALID_ARGUMENT, "ttl must be >= 0"],
};

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

/** replyThrown answers a failure: a CacheError with its code, anything else LOAD_FAILED. */
export function replyThrown(reply: ReplyWriter, req: Request, e: unknown): void {
  if (e instanceof CacheError) return replyCacheError(reply, req, e.code, e.message);
  replyCacheError(reply, req, ERROR_CODE.LOAD_FAILED, errorText(e));
}
