/**
 * CallRuns serves runs of pipelined Get hits and Set overwrites straight from a connection's
 * input chunk: the common case of a busy cache (a client pipelining Gets of keys that are in the
 * store, and Sets that replace their values) done in a few tight loops instead of once per
 * request through decoder, Request, dispatch and group.
 *
 * 1. List (peek-calls.ts `peekCalls`) the plain Gets and Sets that follow each other from the
 *    next frame (framed transport) or message (buffered: "frame" below means either): the exact
 *    layouts the Apache generator writes (fields in id order), which the decoder reads as a Get or Set of
 *    those ranges; up to WARM_MAX of them. Header transports take the general path.
 * 2. Warm (store/warm.ts) the index slots, records and chunks of the listed keys of known groups,
 *    a step at a time for the whole batch, so their cache misses overlap instead of each request
 *    waiting for its own three in turn (+16–20 % at depth 16 with 10k keys; bench/RESULTS.md).
 *    Only batches of two or more are warmed. The hashes computed here serve step 3 too.
 * 3. Serve the listed calls in order, Gets and Sets alike (one run, one clock read: the caller
 *    shares its time between its Gets and Sets by count). A run that stops early leaves the
 *    listing for the next run on the same chunk, which goes on from the frame after the one the
 *    general path served, so each frame is listed and warmed once:
 *    - a Get must find a live, non-negative item of a known group (`Store.getHit`), or miss in a
 *      group without a loader (then it is counted by `Group.lookup` and answered NOT_FOUND, as
 *      dispatch does; a miss in a group with a loader ends the run: loading is the general
 *      path's);
 *    - a Set must replace the value of a live item of a known group without a mirror, in place
 *      (`Store.overwrite`: the new value fits the same chunk), with a ttl in seconds that is a
 *      non-negative int32.
 *    Frames, keys and values must be within the protocol limits. The run stops, without touching that
 *    frame, at the first frame that is anything else (another method or layout, an unknown group,
 *    a miss where a loader may load, a Set that needs a new chunk, an incomplete frame), when
 *    `budget` requests are served, or when the output passes `maxOutput`.
 *
 * The caller serves the frame that stopped the run on the general path, which decodes, validates,
 * counts and answers it as always, then tries a run again. So every request gets the same reply
 * bytes and the same counters either way (the tests compare the two paths byte for byte); a run
 * only skips work its requests do not need. Group and store counters and the LRU marks change here
 * exactly as `Group.lookup` and dispatch's Set do them; the caller adds the run to the request
 * counters and the latency histogram (one clock read per run, LatencyHistogram.recordRun).
 *
 * On a node with peers, a run serves only Gets: of keys this node owns as dispatch serves them
 * (routing hands an owned key back to the local path), and of keys owned elsewhere that its
 * mirror holds while it holds their owner's read lease (cluster/leases.ts: one Map lookup and a
 * clock read), as routing answers them. The first Get of another key owned elsewhere ends the
 * run (routing forwards it), and so does every Set (a write in a cluster also drops mirrored
 * copies, on this node and its peers). A ring-aware client (ClusterClient) sends every key to its
 * owner, so its Gets all run; other clients' Gets of hot keys mostly do.
 *
 * Not for connections that must authenticate first; the caller checks. Allocates nothing: the
 * lists are module scratch, which is safe because serving is synchronous.
 */
import type { Cluster } from "../cluster/cluster.ts";
import type { Group } from "../cluster/group.ts";
import type { Groups } from "../cluster/groups.ts";
import type { Prefetches } from "./prefetch.ts";
import type { FrameReader } from "../protocol/frame-reader.ts";
import type { ProtocolLimits } from "../protocol/limits.ts";
import { PEEK_METHOD, PEEK_STRIDE, PEEK_TTL, PEEK_VALUE, peekCalls } from "../protocol/peek-calls.ts";
import type { ReplyWriter } from "../protocol/reply-writer.ts";
import { METHOD_GET } from "../protocol/request.ts";
import { TRANSPORT_FRAMED } from "../protocol/wire.ts";
import { ERROR_CODE, NOT_FOUND_MESSAGE } from "../protocol/errors.ts";
import { WARM_MAX, warmKeys } from "../store/warm.ts";
import { writePlainHit } from "./hit-reply.ts";

/** RunCounters receives what runs did (ServerCounters has the field). */
export interface RunCounters {
  warmedRequests: number;
}

const NOT_FOUND_BYTES = new TextEncoder().encode(NOT_FOUND_MESSAGE);
const LISTED = new Int32Array(WARM_MAX * PEEK_STRIDE);
const HASHES = new Int32Array(WARM_MAX);
const GROUPS: (Group | undefined)[] = new Array<Group | undefined>(WARM_MAX).fill(undefined);
// The listing in LISTED, GROUPS and HASHES is of `listedChunk` as read by `listedReader`: the
// next run on the same chunk (after the general path served the frame that stopped a run) goes on
// from it instead of listing and warming the same frames again. Another connection's run in
// between replaces it; the frames are then listed (and warmed) again, which is only work.
let listedReader: FrameReader | undefined;
let listedChunk: Uint8Array | undefined;
let listedCount = 0;
/** listedHashed: HASHES holds the hash of every listed call of a known group (it was warmed). */
let listedHashed = false;
/** warmSink keeps what warming read, so the loads are never optimised away. */
let warmSink = 0;

export class CallRuns {
  /** gets and sets are how many Gets and Sets the last `serve` served. */
  gets = 0;
  sets = 0;
  /** notFound is how many of its Gets were answered CacheError NOT_FOUND (misses). */
  notFound = 0;
  private readonly groups: Groups;
  private readonly maxKeyBytes: number;
  private readonly maxValueBytes: number;
  private readonly maxFrameBytes: number;
  private readonly counters: RunCounters;

  constructor(groups: Groups, limits: ProtocolLimits, counters: RunCounters) {
    this.groups = groups;
    this.maxKeyBytes = limits.maxKeyBytes;
    this.maxValueBytes = limits.maxValueBytes;
    this.maxFrameBytes = limits.maxFrameBytes;
    this.counters = counters;
  }

  /** forget drops the listing if it is of `reader`'s chunk (its connection closed: keep nothing of it). */
  forget(reader: FrameReader): void {
    if (listedReader !== reader) return;
    listedReader = undefined;
    listedChunk = undefined;
    listedCount = 0;
  }

  /**
   * serve serves a run from `reader`'s chunk (see above) and returns how many requests it served;
   * `cluster` is the node's cluster, if it has one, and `prefetches` the connection's Gets
   * forwarded ahead (server/prefetch.ts), if any.
   */
  serve(
    reader: FrameReader, reply: ReplyWriter, budget: number, maxOutput: number, cluster?: Cluster, prefetches?: Prefetches | null,
  ): number {
    this.gets = 0;
    this.sets = 0;
    this.notFound = 0;
    const start = reader.runStart();
    if (start < 0) return 0;
    const framed = reader.transport === TRANSPORT_FRAMED;
    const buf = reader.chunkBytes;
    let first = reader === listedReader && buf === listedChunk ? continuing(start) : -1;
    if (first < 0) {
      listedReader = reader;
      listedChunk = buf;
      listedCount = peekCalls(buf, start, buf.length, LISTED, true, this.maxFrameBytes, framed);
      if (listedCount === 0) return 0;
      resolveGroups(this.groups, buf, listedCount);
      listedHashed = warm(buf, listedCount);
      first = 0;
    }
    const listed = listedCount;

    // With other members, keys are routed (dispatch's test): only Gets run here, of owned keys
    // and of mirrored ones.
    const routed = cluster !== undefined && cluster.members.length > 1;
    let gets = 0;
    let sets = 0;
    const out = reply.out;
    let p = start;
    let served = 0;
    for (let i = first; i < listed && served < budget && out.length < maxOutput; i++) {
      const o = i * PEEK_STRIDE;
      const group = GROUPS[i];
      const keyStart = LISTED[o + 2]!;
      const keyLength = LISTED[o + 3]!;
      if (group === undefined || keyLength > this.maxKeyBytes) break;
      const store = group.store;
      const hash = listedHashed ? HASHES[i]! : store.hashOf(buf, keyStart, keyLength);
      // What was loaded or fetched ahead for this key is this Get's (look-ahead.ts): answered
      // here (a hit, or from the mirror), it goes; a miss leaves it to the general path.
      const dropAhead = prefetches != null && prefetches.size > 0;
      if (LISTED[o + PEEK_METHOD] === METHOD_GET) {
        if (routed) {
          const owner = cluster.owner(buf, keyStart, keyLength);
          if (owner !== cluster.self) {
            // Owned elsewhere: served here only from this node's mirror under the owner's lease,
            // as routing serves it (a mirror miss, or a copy with no lease, counted once by
            // routing, forwards it).
            const mirror = group.mirror;
            if (mirror === undefined || cluster.peer(owner) === undefined) break;
            const mid = mirror.getHit(buf, keyStart, keyLength, mirror.hashOf(buf, keyStart, keyLength));
            if (mid < 0 || !cluster.leaseHeld(owner)) break;
            if (dropAhead) prefetches.drop(cluster, group, buf, keyStart, keyLength, false);
            group.countRouted(1, true);
            cluster.counters.mirrorHits++;
            writePlainHit(reply, mirror, mid, LISTED[o + 4]!, framed);
            gets++;
            p = LISTED[o + 6]!;
            served++;
            continue;
          }
        }
        // While a ring purge runs, the general path serves the Gets (it checks a hit: Group.held).
        if (group.purging.length > 0) break;
        let id = store.getHit(buf, keyStart, keyLength, hash);
        if (id >= 0) {
          const c = group.counters;
          c.gets++;
          // Found because its load was started ahead of its turn: it missed when it came.
          if (dropAhead && prefetches.drop(cluster, group, buf, keyStart, keyLength, true)) c.misses++;
          else c.hits++;
        } else {
          // A miss in a group without a loader is answered here as dispatch answers it: the group
          // counts it (and drops an expired item), then NOT_FOUND. With a loader the general path
          // loads (or answers a cached "not found").
          // (Also the general path's when misses are answered as the seed answered them: seedErrors.)
          if (group.loader !== undefined || reply.seedErrors) break;
          if (dropAhead) prefetches.drop(cluster, group, buf, keyStart, keyLength, true);
          id = group.lookup(buf, keyStart, keyLength);
          if (id < 0) {
            reply.writePlainGetError(LISTED[o + 4]!, ERROR_CODE.NOT_FOUND, NOT_FOUND_BYTES, framed);
            this.notFound++;
            p = LISTED[o + 6]!;
            served++;
            gets++;
            continue;
          }
        }
        writePlainHit(reply, store, id, LISTED[o + 4]!, framed);
        gets++;
      } else {
        if (routed) break; // a write in a cluster also drops mirrored copies: routing's
        const ttl = LISTED[o + PEEK_TTL]!;
        const valueLength = LISTED[o + PEEK_VALUE + 1]!;
        if (ttl < 0 || valueLength > this.maxValueBytes || group.mirror !== undefined) break;
        if (!store.overwrite(buf, keyStart, keyLength, hash, buf, LISTED[o + PEEK_VALUE]!, valueLength, group.ttlFor(ttl * 1000))) break;
        group.writtenHash(hash); // (answers kept ahead on other connections are not used: prefetch.ts)
        if (dropAhead) prefetches.clear(); // a write: the Gets after it read it, not what was started before
        group.counters.sets++;
        reply.writePlainSetOk(LISTED[o + 4]!, framed);
        sets++;
      }
      p = LISTED[o + 6]!;
      served++;
    }
    this.gets = gets;
    this.sets = sets;
    if (served > 0) reader.skipTo(p);
    // Counted as they are served, not as they are warmed: a listing another connection's run
    // replaced is listed and warmed again, and a frame warmed may go the general way.
    if (listedHashed) this.counters.warmedRequests += served;
    return served;
  }
}

/** resolveGroups fills GROUPS[i] with the group of listed call i (undefined: no such group). */
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
 * continuing returns the index of the listed call whose frame starts at `start` (the listing is of
 * the same chunk), or -1 when `start` is past the listing.
 */
function continuing(start: number): number {
  let i = 0;
  while (i < listedCount && LISTED[i * PEEK_STRIDE + 5]! < start) i++;
  return i < listedCount && LISTED[i * PEEK_STRIDE + 5] === start ? i : -1;
}

/**
 * warm warms the listed calls store by store, in runs of the same group, and keeps their hashes
 * in HASHES; it returns whether it did. A batch of one is not warmed: it has no other misses to
 * overlap with.
 */
function warm(buf: Uint8Array, listed: number): boolean {
  if (listed < 2) return false;
  let from = 0;
  for (let i = 1; i <= listed; i++) {
    if (i < listed && GROUPS[i] === GROUPS[from]) continue;
    const group = GROUPS[from];
    if (group !== undefined) warmSink ^= warmKeys(group.store, buf, LISTED, from, i - from, PEEK_STRIDE, 2, HASHES);
    from = i;
  }
  return true;
}

/** warmReadSum is the running sum of the bytes warming read (kept so the loads are not dropped). */
export function warmReadSum(): number {
  return warmSink;
}
