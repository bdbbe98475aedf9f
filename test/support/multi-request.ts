/**
 * multiKeyRequest lays `keys` out as a decoded multi-key request does (GetMulti's keys in one
 * buffer; items: start, length, then two words a SetMulti uses for its value), for functions that
 * read only those fields.
 */
import type { Request } from "../../src/protocol/request.ts";

export function multiKeyRequest(keys: Uint8Array[]): Pick<Request, "buffer" | "items" | "itemCount"> {
  const buffer = new Uint8Array(keys.reduce((n, k) => n + k.length, 0));
  const items = new Int32Array(keys.length * 4);
  let at = 0;
  keys.forEach((k, i) => {
    buffer.set(k, at);
    items[i * 4] = at;
    items[i * 4 + 1] = k.length;
    at += k.length;
  });
  return { buffer, items, itemCount: keys.length };
}
