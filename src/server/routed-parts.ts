/**
 * Routed parts: how a routed GetMulti or SetMulti (routed-multi.ts) forwards an owner's entries.
 *
 * An owner's entries go in calls of at most PART_BYTES of keys (and values) each, and half the
 * frame limit, read from the request's buffer (EntryRanges: no key or value copied out first).
 * One call of all of an owner's keys came to a few bytes more than the client's own frame when it
 * had them all (the longer Peer* name, the TTL in ms as well): the peer client refused it ("call
 * larger than the frame limit") though the request was within the limit. And a member whose
 * --max-frame-size is smaller than this node's (but 1 MiB or more) read such a call as a protocol
 * error, closing the connection every call to it shared. Bounded, too, is what one part holds
 * up on a shared peer connection. (A single SetMulti entry of nearly the frame limit still goes
 * alone, and may be refused so: VALUE_TOO_LARGE.)
 *
 * An owner's answer is matched to the part's keys by their bytes. Ours answers in request order,
 * so one walk matches it; another order falls back to sorting (valuesFor).
 */
import type { EntryRanges } from "../protocol/call-writer.ts";
import type { Request } from "../protocol/request.ts";
import { type FoundEntries, valuesFor } from "../client/results.ts";

/** PART_BYTES: the most bytes of keys (4 + key each) or entries (8 + key + value) one forwarded call carries, unless one entry alone is more. */
export const PART_BYTES = 1 << 20;

/**
 * parts splits `indexes` (entries of `req`) into EntryRanges of at most PART_BYTES each, and at
 * most half of `maxFrameBytes` (this node's frame limit, the peer client's too), an entry larger
 * than that going alone: counting keys alone, or `withValues` keys and values.
 */
export function parts(req: Request, indexes: readonly number[], withValues: boolean, maxFrameBytes: number): EntryRanges[] {
  const most = Math.min(PART_BYTES, Math.floor(maxFrameBytes / 2));
  const out: EntryRanges[] = [];
  const items = req.items;
  let from = 0;
  let bytes = 0;
  for (let n = 0; n < indexes.length; n++) {
    const i = indexes[n]! * 4;
    const size = 4 + items[i + 1]! + (withValues ? 4 + items[i + 3]! : 0);
    if (n > from && bytes + size > most) {
      out.push({ src: req.buffer, items, indexes, from, to: n });
      from = n;
      bytes = 0;
    }
    bytes += size;
  }
  if (indexes.length > from) out.push({ src: req.buffer, items, indexes, from, to: indexes.length });
  return out;
}

/**
 * matchFound puts the values of `found`, an owner's answer to `part`, into `values` (by entry),
 * and calls `got(entry, value)` for each one found. `part`'s keys are distinct.
 */
export function matchFound(part: EntryRanges, found: FoundEntries, values: (Uint8Array | undefined)[], got: (i: number, v: Uint8Array) => void): void {
  const { src, items, indexes, to } = part;
  let n = part.from;
  for (let f = 0; f < found.keys.length; f++) {
    const key = found.keys[f]!;
    while (n < to && !sameBytes(src, items[indexes[n]! * 4]!, items[indexes[n]! * 4 + 1]!, key)) n++;
    if (n === to) return matchSorted(part, found, values, got); // (not in request order)
    const i = indexes[n++]!;
    values[i] = found.values[f];
    got(i, found.values[f]!);
  }
}

/** matchSorted is matchFound for an answer in another order than the request's: by sorting both. */
function matchSorted(part: EntryRanges, found: FoundEntries, values: (Uint8Array | undefined)[], got: (i: number, v: Uint8Array) => void): void {
  const { src, items, indexes } = part;
  const keys: Uint8Array[] = [];
  for (let n = part.from; n < part.to; n++) {
    const at = indexes[n]! * 4;
    keys.push(src.subarray(items[at]!, items[at]! + items[at + 1]!));
  }
  const matched = valuesFor(keys, found);
  for (let n = part.from; n < part.to; n++) {
    const i = indexes[n]!;
    const v = matched[n - part.from];
    if (values[i] !== undefined) continue; // (counted by the walk, before it fell back)
    values[i] = v;
    if (v !== undefined) got(i, v);
  }
}

function sameBytes(src: Uint8Array, start: number, length: number, key: Uint8Array): boolean {
  if (key.length !== length) return false;
  for (let k = 0; k < length; k++) if (src[start + k] !== key[k]) return false;
  return true;
}
