/**
 * The soak's loaders module (`--loaders`): one read-through group, `ld`. Its value for a key is
 * the ledger's version-0 value of `loaderLength(key)` bytes, or null (NOT_FOUND) for one key in
 * ten; one key in ten takes 2–5 ms, so Gets queue behind loads on a connection and the node
 * starts them ahead (look-ahead.ts). Every export of this module is a group: keep helpers in
 * ledger.ts.
 */
import { LOADED_VERSION, encodeValue, loaderDelayMs, loaderLength } from "./ledger.ts";

export async function ld(key: string): Promise<Uint8Array | null> {
  const delay = loaderDelayMs(key);
  if (delay > 0) await Bun.sleep(delay);
  const length = loaderLength(key);
  return length === null ? null : encodeValue(key, LOADED_VERSION, length);
}
