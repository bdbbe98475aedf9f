// Callbacks: how the client hands outcomes to the application's code. A call settles through its
// forward callback (forwardGet) or its promise's Waiter (`settleReply` with its reply,
// `settleError` for a failure of the client's: a timeout, a lost connection), and the
// application's own hooks (onHealth, onProtocolError) are called through `report`. A throw in any
// of them is the application's bug, not the client's: it is rethrown apart, from a microtask of its
// own (`rethrowApart`), so the client's state change it was told of completes and the connection
// goes on serving.

import type { CacheError } from "../protocol/errors.ts";
import type { ReplyReader } from "../protocol/reply-reader.ts";
import type { ForwardCallback, Waiter } from "./pending-calls.ts";
import { buildResult, replyError } from "./results.ts";

/**
 * settleReply tells a call's caller its reply, read in `r` (`ok`: REPLY_OK): its forward callback
 * gets the value as a view into the receive buffer, its waiter the result copied out
 * (buildResult) or the reply's error (replyError).
 */
export function settleReply(forward: ForwardCallback | null, waiter: Waiter | null, method: number, r: ReplyReader, ok: boolean): void {
  try {
    if (forward !== null) {
      if (ok) forward(null, r.buffer, r.valueStart, r.valueLength, r.ttlRemainingMs);
      else forward(replyError(method, r), null, 0, 0, -1);
    } else if (waiter !== null) {
      if (ok) waiter.resolve(buildResult(method, r));
      else waiter.reject(replyError(method, r));
    }
  } catch (e) {
    rethrowApart(e); // a callback's own bug: report it, but keep serving this connection
  }
}

/** settleError tells a call's caller that it failed with `error`: its forward callback, else its waiter. */
export function settleError(forward: ForwardCallback | null, waiter: Waiter | null, error: CacheError): void {
  try {
    if (forward !== null) forward(error, null, 0, 0, -1);
    else waiter?.reject(error);
  } catch (e) {
    rethrowApart(e);
  }
}

/**
 * report calls an application's callback (onHealth, onProtocolError): a throw there is its own
 * bug, rethrown apart (`rethrowApart`) so that the client's state change it was told of completes.
 */
export function report<A extends unknown[]>(callback: ((...args: A) => void) | undefined, ...args: A): void {
  try {
    callback?.(...args);
  } catch (e) {
    rethrowApart(e);
  }
}

/** rethrowApart throws `e` from a microtask of its own: an uncaught error, out of the client's code. */
export function rethrowApart(e: unknown): void {
  queueMicrotask(() => {
    throw e;
  });
}
