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
 * An owner's answer (RawEntries: one buffer, no object a key) is matched to the part's keys by
 * their bytes, and kept whole until the reply is written (MultiValues). Ours answers in request
 * order, so one walk matches it; another order falls back to sorting (valuesFor).
 */
import type { EntryRanges } from "../protocol/call-writer.ts";
import type { Request } from "../protocol/request.ts";
import { type RawEntries, foundOf, valuesFor } from "../client/results.ts";
import { getMultiEntryBytes } from "../protocol/reply-writer.ts";
import { multiTooLargeError } from "./reply-errors.ts";

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
 * MultiValues holds a routed GetMulti's values until its reply is written, by entry: in `values`
 * (this node's part, the mirror's copies, fallback loads), or as entry `entry[i]` of the owner's
 * answer `answer[i]` (RawEntries, kept whole: no buffer a value), -1 for none.
 *
 * The owners' answers together may come to `maxBytes` of reply (the frame limit) at most: past
 * it `take` throws VALUE_TOO_LARGE and keeps no answer more. Each part's answer is within the
 * owner's frame, but an owner's keys go in up to 16 parts (at 16 MB frames), and every answer
 * was kept until all had settled, to refuse the reply then: up to 16 frames an owner held.
 */
export class MultiValues {
  readonly values: (Uint8Array | undefined)[];
  private readonly answers: RawEntries[] = [];
  private readonly answer: Int32Array;
  private readonly entry: Int32Array;
  /** taken: the reply bytes of the answers kept; -1 once they passed maxBytes. */
  private taken = 0;

  constructor(count: number, private readonly maxBytes: number) {
    this.values = new Array<Uint8Array | undefined>(count);
    this.answer = new Int32Array(count).fill(-1);
    this.entry = new Int32Array(count);
  }

  /**
   * take matches `raw`, an owner's answer to `part` (whose keys are distinct), to the part's
   * entries, and returns the reply bytes its values come to (getMultiEntryBytes). Throws
   * VALUE_TOO_LARGE, keeping nothing of it, when the answers kept would pass `maxBytes`.
   */
  take(part: EntryRanges, raw: RawEntries): number {
    if (this.taken < 0) throw multiTooLargeError(this.maxBytes);
    const bytes = this.match(part, raw);
    if (this.taken + bytes <= this.maxBytes) {
      this.taken += bytes;
      return bytes;
    }
    // Past the limit: this answer is let go, and every one kept (the reply fails), and any to come.
    this.taken = -1;
    this.answers.length = 0;
    this.answer.fill(-1);
    throw multiTooLargeError(this.maxBytes);
  }

  private match(part: EntryRanges, raw: RawEntries): number {
    const { src, items, indexes, to } = part;
    const a = this.answers.push(raw) - 1;
    const got = raw.items;
    let bytes = 0;
    let n = part.from;
    for (let f = 0; f < raw.count; f++) {
      const kl = got[f * 4 + 1]!;
      while (n < to && !sameBytes(src, items[indexes[n]! * 4]!, items[indexes[n]! * 4 + 1]!, raw.buffer, got[f * 4]!, kl)) n++;
      if (n === to) return this.takeSorted(part, raw); // (not in request order)
      const i = indexes[n++]!;
      this.answer[i] = a;
      this.entry[i] = f;
      bytes += getMultiEntryBytes(kl, got[f * 4 + 3]!);
    }
    return bytes;
  }

  /** valueLength is the length of entry `i`'s value, -1 when it has none. */
  valueLength(i: number): number {
    const a = this.answer[i]!;
    if (a >= 0) return this.answers[a]!.items[this.entry[i]! * 4 + 3]!;
    const v = this.values[i];
    return v === undefined ? -1 : v.length;
  }

  /** copyTo copies entry `i`'s value (valueLength says it has one) into `dst` at `at`. */
  copyTo(i: number, dst: Uint8Array, at: number): void {
    const a = this.answer[i]!;
    if (a < 0) return dst.set(this.values[i]!, at);
    const raw = this.answers[a]!;
    const e = this.entry[i]! * 4;
    dst.set(raw.buffer.subarray(raw.items[e + 2]!, raw.items[e + 2]! + raw.items[e + 3]!), at);
  }

  /** takeSorted is `take` for an answer in another order than the request's: by sorting both (valuesFor). */
  private takeSorted(part: EntryRanges, raw: RawEntries): number {
    const { src, items, indexes } = part;
    const keys: Uint8Array[] = [];
    for (let n = part.from; n < part.to; n++) {
      const at = indexes[n]! * 4;
      keys.push(src.subarray(items[at]!, items[at]! + items[at + 1]!));
    }
    const matched = valuesFor(keys, foundOf(raw));
    let bytes = 0;
    for (let n = part.from; n < part.to; n++) {
      const i = indexes[n]!;
      const v = matched[n - part.from];
      this.answer[i] = -1; // (what the walk matched before it fell back is matched again)
      this.values[i] = v;
      if (v !== undefined) bytes += getMultiEntryBytes(keys[n - part.from]!.length, v.length);
    }
    return bytes;
  }
}

function sameBytes(a: Uint8Array, aStart: number, aLength: number, b: Uint8Array, bStart: number, bLength: number): boolean {
  if (aLength !== bLength) return false;
  for (let k = 0; k < aLength; k++) if (a[aStart + k] !== b[bStart + k]) return false;
  return true;
}
