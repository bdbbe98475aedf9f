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

const utf8 = new TextEncoder();

/** toBytes normalizes a loader's value: bytes as they are, a string as UTF-8, absent as null. */
export function toBytes(result: unknown): Uint8Array | null {
  if (result === null || result === undefined) return null;
  if (result instanceof Uint8Array) return result;
  if (typeof result === "string") return utf8.encode(result);
  throw new TypeError(`a loader must return Uint8Array, string, null or undefined, not ${typeof result}`);
}
