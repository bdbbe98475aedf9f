/**
 * Loader is a group's "getter": it fetches the value of a key the cache does not hold.
 *
 * It returns the value as bytes or a string (stored as UTF-8, a lone surrogate as U+FFFD), or
 * `null`/`undefined` for "not found", either with a TTL of its own (`Fresh`); it may be async. A
 * thrown error is a load failure (nothing is cached). The same shape serves an in-process
 * function (the cache embedded in a program) and a function exported by a loaders module run in
 * the worker pool (`src/loaders/`).
 */
export type LoadResult = Uint8Array | string | null | undefined | Fresh;

/**
 * Fresh is a loader's value with a TTL of its own (a loader that knows how long its answer holds:
 * a token's expiry, a row's freshness): `ttlMs` > 0 keeps it that long (a fraction of a ms
 * rounded up), `Infinity` for good, 0 or absent as the group's TTL. With `value` null (not found)
 * a finite `ttlMs` > 0 caches the "not found" that long, whatever the group's negttl. An object
 * with any other property, or a `ttlMs` that is negative, NaN or not a number, is a load failure
 * (a row returned as it is must not read as "not found").
 */
export interface Fresh {
  value: Uint8Array | string | null | undefined;
  ttlMs?: number;
}

/** Checked is a loader's outcome checked (`toChecked`): the value, null for "not found", and its own TTL (0 = the group's). */
export interface Checked {
  value: Uint8Array | string | null;
  ttlMs: number;
}

export type Loader = (key: string) => LoadResult | Promise<LoadResult>;

/**
 * MAX_TIMER_MS is the longest delay a timer keeps (2^31 - 1 ms, about 24.8 days): Bun, like Node,
 * fires a timer with a longer delay after 1 ms. Load timeouts and the timers derived from them
 * are capped to it; the command line refuses longer durations for every timer it sets.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * AnswerError is a loader's answer refused by `toChecked`: `what` says what the loader did
 * ("returned a Map; expected …"), for a message that names the loader (the pool's threads).
 */
export class AnswerError extends TypeError {
  constructor(readonly what: string) {
    super(`a loader ${what}`);
  }
}

/**
 * toChecked checks a loader's outcome, a value or a Fresh (a plain object; its TTL 0 when it has
 * none). Throws AnswerError for anything else.
 */
export function toChecked(result: unknown): Checked {
  if (!isPlainObject(result)) return { value: toValue(result), ttlMs: 0 };
  for (const name of Object.keys(result)) {
    if (name !== "value" && name !== "ttlMs") throw new AnswerError(`returned an object with a property "${name.slice(0, 64)}"; expected ${EXPECTED}`);
  }
  if (!("value" in result)) throw new AnswerError(`returned an object without "value"; expected ${EXPECTED}`);
  const { value, ttlMs } = result as Fresh;
  return { value: toValue(value), ttlMs: ownTtl(ttlMs, value === null || value === undefined) };
}

/** EXPECTED names what a loader may return. */
const EXPECTED = "Uint8Array, string, null, undefined or { value, ttlMs }";

/** ownTtl checks a Fresh's `ttlMs`: 0 when absent, whole ms (rounded up), or Infinity for a value. */
function ownTtl(ttlMs: unknown, notFound: boolean): number {
  if (ttlMs === undefined) return 0;
  if (typeof ttlMs !== "number" || !(ttlMs >= 0)) {
    throw new AnswerError(`gave a ttlMs of ${typeof ttlMs === "number" ? ttlMs : describe(ttlMs)}; it must be a number of ms >= 0`);
  }
  if (ttlMs === Infinity && notFound) throw new AnswerError('gave a ttlMs of Infinity with no value; a "not found" is cached for a finite time');
  return Math.ceil(ttlMs);
}

/**
 * toValue checks a loader's value: bytes and a string as they are, absent as null. The group
 * encodes a string (UTF-8) once its length does not prove it too large already (LoadPath.store1).
 */
export function toValue(result: unknown): Uint8Array | string | null {
  if (result === null || result === undefined) return null;
  if (result instanceof Uint8Array && isTransferred(result)) throw new AnswerError(`returned ${TRANSFERRED}`);
  if (result instanceof Uint8Array || typeof result === "string") return result;
  throw new AnswerError(`returned ${describe(result)}; expected ${EXPECTED}`);
}

/** isPlainObject tells a Fresh's shape (an object literal) from other objects (a Map, a Date, bytes). */
function isPlainObject(x: unknown): x is object {
  if (x === null || typeof x !== "object") return false;
  const proto: unknown = Object.getPrototypeOf(x);
  return proto === Object.prototype || proto === null;
}

/** describe names a value's kind for an error: "a number", "a Map", "an object". */
export function describe(value: unknown): string {
  if (value === null) return "null";
  if (typeof value !== "object") return `a ${typeof value}`;
  const name: unknown = (value as object).constructor?.name;
  return typeof name === "string" && name !== "" ? `a ${name}` : "an object";
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
