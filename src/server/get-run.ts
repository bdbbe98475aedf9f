/**
 * serveGetRun serves a run of pipelined Get hits straight from a connection's input chunk: the
 * common case of a busy cache (a client pipelining Gets of keys that are in the store) done in
 * a few tight loops instead of once per request through decoder, Request, dispatch and group.
 *
 * 1. List (peek-gets.ts `peekGets`) the plain framed Gets that follow each other from the next
 *    frame: the exact layout the Apache and Kitex generators write, which the decoder reads as a
 *    Get of that group and key; up to WARM_MAX of them.
 * 2. Warm (store/warm.ts) the index slots, records and chunks of the listed keys of known groups,
 *    a step at a time for the whole batch, so their cache misses overlap instead of each Get
 *    waiting for its own three in turn (+16–20 % at depth 16 with 10k keys; bench/RESULTS.md).
 *    Only batches of two or more are warmed, and each frame once per chunk: a run that stopped
 *    early (at a Set, a miss) leaves a mark, and the next run on the same chunk warms only the
 *    frames past it. The hashes computed here serve step 3 too.
 * 3. Serve the listed Gets in order: each must be a live, non-negative item of a known group
 *    (`Store.getHit`). The run stops, without touching that frame, at the first frame that is
 *    anything else (another method or layout, an unknown group, a miss, an expired or negative
 *    item, an incomplete frame), when `budget` requests are served, or when the output passes
 *    `maxOutput`.
 *
 * The caller serves the frame that stopped the run on the general path, which decodes, validates,
 * counts and answers it as always, then tries a run again. So every request gets the same reply
 * bytes and the same counters either way (the tests compare the two paths byte for byte); the
 * run only skips work a hit does not need. Group gets and hits, store hits and the LRU bump happen
 * here exactly as `Group.lookup` does them; the caller adds the run to the request counters and
 * the latency histogram (one clock read per run, LatencyHistogram.recordRun).
 *
 * Not for clusters with peers (a key may belong to another node: routing decides) or connections
 * that must authenticate first; the caller checks. Allocates nothing: the lists are module
 * scratch, which is safe because serving is synchronous.
 */
import type { Group, Groups } from "../cluster/group.ts";
import type { FrameReader } from "../protocol/frame-reader.ts";
import { PEEK_STRIDE, peekGets } from "../protocol/peek-gets.ts";
import type { ReplyWriter } from "../protocol/reply-writer.ts";
import { WARM_MAX, warmKeys } from "../store/warm.ts";

/** RunCounters receives what runs did (ServerCounters has the field). */
export interface RunCounters {
  warmedGets: number;
}

const LISTED = new Int32Array(WARM_MAX * PEEK_STRIDE);
const HASHES = new Int32Array(WARM_MAX);
const GROUPS: (Group | undefined)[] = new Array<Group | undefined>(WARM_MAX).fill(undefined);
// Where warming of a chunk got to (step 2): frames that end at or before `warmedTo` of
// `warmedChunk`, read by `warmedReader`, were warmed by an earlier run. A hint only: another
// connection's run in between resets it, and the frames are then warmed again.
let warmedReader: FrameReader | undefined;
let warmedChunk: Uint8Array | undefined;
let warmedTo = 0;
/** warmSink keeps what warming read, so the loads are never optimised away. */
let warmSink = 0;

/** serveGetRun serves Get hits from `reader`'s chunk (see above) and returns how many. */
export function serveGetRun(
  reader: FrameReader, groups: Groups, reply: ReplyWriter, clock: () => number, budget: number, maxOutput: number,
  counters: RunCounters,
): number {
  const start = reader.framedRunStart();
  if (start < 0) return 0;
  const buf = reader.chunkBytes;
  const listed = peekGets(buf, start, buf.length, LISTED, true);
  if (listed === 0) return 0;
  resolveGroups(groups, buf, listed);
  const fresh = reader === warmedReader && buf === warmedChunk ? warmedTo : start;
  const hashedFrom = warm(buf, listed, fresh, counters);
  if (listed > 1) {
    warmedReader = reader;
    warmedChunk = buf;
    warmedTo = LISTED[(listed - 1) * PEEK_STRIDE + 6]!;
  }

  const out = reply.out;
  let p = start;
  let served = 0;
  let now = -1;
  for (let i = 0; i < listed && served < budget && out.length < maxOutput; i++) {
    const o = i * PEEK_STRIDE;
    const group = GROUPS[i];
    if (group === undefined) break;
    const store = group.store;
    const keyStart = LISTED[o + 2]!;
    const keyLength = LISTED[o + 3]!;
    const hash = i >= hashedFrom ? HASHES[i]! : store.hashOf(buf, keyStart, keyLength);
    const id = store.getHit(buf, keyStart, keyLength, hash);
    if (id < 0) break;
    const c = group.counters;
    c.gets++;
    c.hits++;
    const at = reply.beginFramedGet(LISTED[o + 4]!, store.valueLength(id));
    store.copyValue(id, out.buffer, at);
    const expiry = store.expiresAt(id);
    if (expiry === Infinity) reply.endGet(-1);
    else {
      if (now < 0) now = clock();
      reply.endGet(Math.max(0, expiry - now));
    }
    p = LISTED[o + 6]!;
    served++;
  }
  if (served > 0) reader.skipTo(p);
  return served;
}

/** resolveGroups fills GROUPS[i] with the group of listed Get i (undefined: no such group). */
function resolveGroups(groups: Groups, buf: Uint8Array, listed: number): void {
  let group: Group | undefined;
  for (let i = 0; i < listed; i++) {
    const o = i * PEEK_STRIDE;
    const gs = LISTED[o]!;
    const gl = LISTED[o + 1]!;
    if (group === undefined || !group.nameIs(buf, gs, gl)) group = groups.find(buf, gs, gl);
    GROUPS[i] = group;
  }
}

/**
 * warm warms the listed Gets whose frames end after `fresh` (the earlier ones were warmed by an
 * earlier run on this chunk), store by store in runs of the same group, and keeps their hashes in
 * HASHES. A batch of one is not warmed: it has no other misses to overlap with. Returns the first
 * listed Get whose hash is in HASHES (`listed` when none is).
 */
function warm(buf: Uint8Array, listed: number, fresh: number, counters: RunCounters): number {
  let first = 0;
  while (first < listed && LISTED[first * PEEK_STRIDE + 6]! <= fresh) first++;
  if (listed - first < 2) return listed;
  let from = first;
  for (let i = first + 1; i <= listed; i++) {
    if (i < listed && GROUPS[i] === GROUPS[from]) continue;
    const group = GROUPS[from];
    if (group !== undefined) {
      warmSink ^= warmKeys(group.store, buf, LISTED, from, i - from, PEEK_STRIDE, 2, HASHES);
      counters.warmedGets += i - from;
    }
    from = i;
  }
  return first;
}

/** warmReadSum is the running sum of the bytes warming read (kept so the loads are not dropped). */
export function warmReadSum(): number {
  return warmSink;
}
