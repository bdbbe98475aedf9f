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
