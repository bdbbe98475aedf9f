/** Helpers the store's tests share. */
import type { Store } from "../../src/store/store.ts";
import { bytes } from "../support/prng.ts";

/** readValue is a copy of `key`'s value in `s` (a string key as its UTF-8 bytes), or undefined on a miss. */
export function readValue(s: Store, key: string | Uint8Array): Uint8Array | undefined {
  const id = s.get(typeof key === "string" ? bytes(key) : key);
  if (id < 0) return undefined;
  const out = new Uint8Array(s.valueLength(id));
  s.copyValue(id, out, 0);
  return out;
}

/** FakeClock is a store clock the test moves by hand (`clock: c.read`). */
export class FakeClock {
  now = 1_000_000;
  read = (): number => this.now;
}

/** putValue sets `key` (a string as its UTF-8 bytes) to `value` in `s` and returns the SetResult. */
export function putValue(s: Store, key: string | Uint8Array, value: Uint8Array, ttlMs = 0): number {
  const k = typeof key === "string" ? bytes(key) : key;
  return s.set(k, 0, k.length, value, 0, value.length, ttlMs);
}
