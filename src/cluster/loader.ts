/**
 * Loader is a group's "getter": it fetches the value of a key the cache does not hold.
 *
 * It returns the value as bytes or a string (stored as UTF-8), or `null`/`undefined` for "not
 * found"; it may be async. A thrown error is a load failure (nothing is cached). The same shape
 * serves an in-process function (the cache embedded in a program) and a function exported by a
 * loaders module run in the worker pool (`src/loaders/`).
 */
export type LoadResult = Uint8Array | string | null | undefined;

export type Loader = (key: string) => LoadResult | Promise<LoadResult>;

/**
 * MAX_TIMER_MS is the longest delay a timer keeps (2^31 - 1 ms, about 24.8 days): Bun, like Node,
 * fires a timer with a longer delay after 1 ms. Load timeouts and the timers derived from them
 * are capped to it; the command line refuses longer durations for every timer it sets.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * toValue checks a loader's value: bytes and a string as they are, absent as null. The group
 * encodes a string (UTF-8) once its length does not prove it too large already (LoadPath.store1).
 */
export function toValue(result: unknown): Uint8Array | string | null {
  if (result === null || result === undefined) return null;
  if (result instanceof Uint8Array && isTransferred(result)) throw new TypeError(`a loader returned ${TRANSFERRED}`);
  if (result instanceof Uint8Array || typeof result === "string") return result;
  throw new TypeError(`a loader must return Uint8Array, string, null or undefined, not ${typeof result}`);
}

/** TRANSFERRED describes bytes whose buffer was transferred away (`isTransferred`). */
export const TRANSFERRED = "a Uint8Array whose buffer was transferred (detached): its bytes are gone";

/**
 * isTransferred tells whether `bytes`' buffer was transferred (postMessage, structuredClone with
 * `transfer`, ArrayBuffer.transfer): it then reads as empty, and was stored and served as an
 * empty value, a hit, where the loader meant bytes it no longer has: a load failure.
 */
export function isTransferred(bytes: Uint8Array): boolean {
  return (bytes.buffer as ArrayBuffer).detached === true;
}
