/**
 * dispatch serves one decoded request from the node's groups and writes its reply.
 *
 * Outcomes become wire errors in reply-errors.ts (the one mapping point); unknown methods are
 * answered with Thrift's UNKNOWN_METHOD application exception here.
 *
 * In a cluster, a client's call for keys owned by another node is routed (routing.ts); the peer
 * variants (PeerGet, PeerSet, ...) are always served here, never forwarded. As the owner of a key,
 * a node that stores or deletes it tells the other members to drop their mirrored copies, and
 * acknowledges the write once they have answered when one of them may hold a copy (HandOuts:
 * the keys of peers' Gets it answered with values, or that wait for loads, are noted as handed
 * out): mirror-copies.ts. A peer's call for keys this node's member list gives to another member is checked in
 * foreign-keys.ts.
 *
 * The Get hit path allocates nothing: the group is found by its name bytes, the store probes by
 * key bytes, and the value is copied from the slab straight into the connection's output buffer.
 * A ONEWAY call runs like a CALL and its reply is dropped.
 *
 * A miss in a group with a loader cannot be answered at once: `dispatch` then returns a promise
 * that writes the reply when the load settles. The server stops serving that connection until it
 * does, so replies stay in request order and the request's byte ranges stay valid (the frame
 * reader is not advanced meanwhile). GetMulti is served in get-multi.ts: it loads its misses a few
 * at a time (multi-loads.ts); not-found keys are left out of the map, and a load failure fails the
 * whole call with its CacheError.
 */
import type { Cluster } from "../cluster/cluster.ts";
import type { Group } from "../cluster/group.ts";
import type { Groups } from "../cluster/groups.ts";
import { LOAD_AGAIN, LOAD_IN_TURN, type LoadKind } from "../cluster/load-path.ts";
import { APP_ERROR, ERROR_CODE, NOT_FOUND_MESSAGE, type ErrorCode } from "../protocol/errors.ts";
import { BinaryWriter } from "../protocol/binary-writer.ts";
import { ReplyWriter } from "../protocol/reply-writer.ts";
import { writePing, writeStats } from "../protocol/figure-replies.ts";
import {
  METHOD_CLEAR, METHOD_DELETE, METHOD_GET, METHOD_GET_MULTI, METHOD_PEER_GET, METHOD_PEER_GET_MULTI, METHOD_PEER_INVALIDATE,
  METHOD_PEER_PING, METHOD_SET, METHOD_SET_MULTI, INTRO_SEQID,
  METHOD_STATS, METHOD_UNKNOWN, baseMethod, isPeerMethod, type Request,
} from "../protocol/request.ts";
import { SET_OK, type SetResult } from "../store/store.ts";
import { replyCacheError, replySetError, replyThrown } from "./reply-errors.ts";
import { writeHit } from "./hit-reply.ts";
import { agedTtl, type Prefetch, type Prefetches } from "./prefetch.ts";
import { route } from "./routing.ts";
import { answerWhenDone } from "./routed-get.ts";
import { dropForeignReads, foreign, refuseForeign, type ForeignKeys } from "./foreign-keys.ts";
import { forgetCopies, handedOut, invalidate } from "./mirror-copies.ts";
import { getMulti } from "./get-multi.ts";

export interface DispatchContext {
  readonly groups: Groups;
  readonly clock: () => number;
  /** cluster is set when the node has peers; undefined for a lone node. */
  readonly cluster?: Cluster;
  /** nodeId and startedAt answer PeerPing. */
  readonly nodeId?: string;
  readonly startedAt?: number;
}

/**
 * dispatch serves `req` and appends its reply (none for ONEWAY) to `reply`; it returns a promise
 * when the reply has to wait for a load, else undefined. `prefetches` are the connection's Gets
 * forwarded ahead (prefetch.ts), if any; `member` is the member whose peer client the connection
 * is, if it said so (its PeerPing's sender: HandOuts).
 */
export function dispatch(ctx: DispatchContext, req: Request, reply: ReplyWriter, prefetches?: Prefetches, member?: string): Promise<void> | undefined {
  const pending = serve(ctx, req, replyFor(req, reply), prefetches, member);
  return pending instanceof Promise ? pending : undefined;
}

/**
 * replyFor is where `req`'s reply goes: `reply`, or for a ONEWAY call (which gets none) a
 * throwaway writer, so it is served like a CALL (ONEWAY is rare; this allocates).
 */
export function replyFor(req: Request, reply: ReplyWriter): ReplyWriter {
  if (!req.oneway) return reply;
  return reply.sibling(new BinaryWriter(256));
}


function serve(ctx: DispatchContext, req: Request, reply: ReplyWriter, prefetches: Prefetches | undefined, member: string | undefined): Promise<void> | void {
  if (req.errorCode !== 0) {
    // A Set refused as it was read (a value over --max-item-size, a key too long, a negative TTL)
    // is a Set its group refused, as the store's refusals are (mybuncache_set_errors_total); a
    // SetMulti so refused stores none of its entries: each is a refusal (setErrors counts
    // entries, as sets does).
    const base = baseMethod(req.method);
    if (base === METHOD_SET || base === METHOD_SET_MULTI) {
      const group = ctx.groups.find(req.buffer, req.groupStart, req.groupLength);
      if (group !== undefined) group.counters.setErrors += base === METHOD_SET ? 1 : req.itemCount;
    }
    return replyCacheError(reply, req, req.errorCode as ErrorCode, req.errorMessage);
  }
  const method = req.method;
  if (method === METHOD_UNKNOWN) {
    const name = quotedName(req.buffer, req.nameStart, req.nameLength);
    return reply.writeApplicationException(req, APP_ERROR.UNKNOWN_METHOD, `Invalid method name: '${name}'`);
  }
  if (method === METHOD_PEER_PING) {
    // (A lease asked for is answered by the cluster: cluster/leases.ts; a lone node vouches for no one.)
    const leaseMs = ctx.cluster?.pinged(member, req.seqid === INTRO_SEQID, req.lease) ?? (req.lease ? 0 : -1);
    return writePing(reply, req, ctx.nodeId ?? "", ctx.clock() - (ctx.startedAt ?? 0), leaseMs);
  }
  const group = ctx.groups.find(req.buffer, req.groupStart, req.groupLength);
  if (group === undefined) return unknownGroup(reply, req);
  if (method === METHOD_PEER_INVALIDATE) return invalidate(ctx, group, req, reply);
  const base = baseMethod(method);
  const cluster = ctx.cluster;
  if (cluster !== undefined && cluster.members.length > 1 && !isPeerMethod(method)) {
    const routed = route(cluster, group, base, req, reply, prefetches);
    if (routed === true) return;
    if (routed !== false) return routed;
  }
  switch (base) {
    case METHOD_GET: {
      const answered = get(group, req, reply, dropForeignReads(ctx, group, req), prefetches?.take(cluster, group, req.buffer, req.keyStart, req.keyLength, true));
      return method === METHOD_PEER_GET && cluster !== undefined ? handedOut(cluster, group, req, reply, member, answered) : answered;
    }
    case METHOD_SET:
      return set(ctx, group, req, reply, member);
    case METHOD_DELETE:
      return remove(ctx, group, req, reply, member);
    case METHOD_CLEAR:
      group.clear();
      // A client's Clear here on a clustered node: alone in its list (else routed). A member just
      // taken out of it may still answer from copies under its lease (WriteWaits.removed).
      if (cluster === undefined || isPeerMethod(method)) return reply.writeSuccess(req, true);
      return cluster.dropAll(group.name).then(() => reply.writeSuccess(req, true));
    case METHOD_STATS: {
      const c = group.counters;
      // itemCount: the values held; cached "not found" entries are not items of the cache.
      return writeStats(reply, req, group.store.size - group.store.negatives, c.hits, c.misses, c.gets);
    }
    case METHOD_GET_MULTI: {
      const answered = getMulti(group, req, reply, dropForeignReads(ctx, group, req));
      return method === METHOD_PEER_GET_MULTI && cluster !== undefined ? handedOut(cluster, group, req, reply, member, answered) : answered;
    }
    default:
      return setMulti(ctx, group, req, reply, member);
  }
}

/**
 * get serves a Get (or a peer's); with `foreign` (a peer's Get of a key this node does not own:
 * dropForeignReads) a load is answered but not stored. `ahead` is its load started ahead of its
 * turn (look-ahead.ts), taken off the connection's table whichever way the Get is answered: a
 * miss is answered from it instead of loading again.
 */
function get(group: Group, req: Request, reply: ReplyWriter, foreign: ForeignKeys, ahead: Prefetch | undefined): Promise<void> | void {
  const id = ahead === undefined
    ? group.lookup(req.buffer, req.keyStart, req.keyLength)
    : group.lookupLoadedAhead(req.buffer, req.keyStart, req.keyLength);
  if (id < 0) {
    if (group.loader === undefined || group.lastNegative) return replyCacheError(reply, req, ERROR_CODE.NOT_FOUND, NOT_FOUND_MESSAGE);
    if (ahead !== undefined) {
      const answered = answerWhenDone(req, reply, ahead, () => loadedAhead(group, req, reply, foreign, ahead));
      return answered === true ? undefined : answered;
    }
    return load(group, req, reply, foreign);
  }
  writeHit(reply, req, group.store, id);
}

/**
 * load answers a Get that missed with the group's load of its key (see `get`); `kind`: LOAD_AGAIN
 * for a Get whose load ahead could not answer it (counted as that load: LoadKind).
 */
function load(group: Group, req: Request, reply: ReplyWriter, foreign: ForeignKeys, kind: LoadKind = LOAD_IN_TURN): Promise<void> {
  return group.load(req.buffer, req.keyStart, req.keyLength, foreign === undefined, kind).then(
    (loaded) => reply.writeGet(req, loaded.value, 0, loaded.value.length, loaded.ttlRemainingMs),
    (e: unknown) => replyThrown(reply, req, e),
  );
}

/**
 * loadedAhead answers a Get from the outcome of its load started ahead: the value (its TTL aged
 * by the wait) or the error; a load made stale by a write of the key is done again now.
 */
function loadedAhead(group: Group, req: Request, reply: ReplyWriter, foreign: ForeignKeys, ahead: Prefetch): Promise<void> | true {
  // A write of the key heard of since it started (an error or "not found" included): loaded again.
  if (!group.mayCopy(req.buffer, req.keyStart, req.keyLength, ahead.ticket)) return load(group, req, reply, foreign, LOAD_AGAIN);
  if (ahead.err !== null) {
    replyThrown(reply, req, ahead.err);
    return true;
  }
  const value = ahead.value;
  if (value === null) return load(group, req, reply, foreign, LOAD_AGAIN);
  reply.writeGet(req, value, 0, value.length, agedTtl(ahead, group.store.clock()));
  return true;
}

function set(ctx: DispatchContext, group: Group, req: Request, reply: ReplyWriter, member: string | undefined): Promise<void> | void {
  const b = req.buffer;
  const drop = foreign(ctx, req.method, b, req.keyStart, req.keyLength);
  const r = drop
    ? (group.store.delete(b, req.keyStart, req.keyLength), SET_OK)
    : group.store.set(b, req.keyStart, req.keyLength, b, req.valueStart, req.valueLength, group.ttlFor(req.effectiveTtlMs()));
  group.written(b, req.keyStart, req.keyLength);
  const told = ctx.cluster !== undefined ? forgetCopies(ctx.cluster, group, b, [req.keyStart, req.keyLength], 2, 1, member) : undefined;
  if (r !== SET_OK) group.counters.setErrors++;
  else if (!drop) group.counters.sets++;
  const answer = drop ? FOREIGN : r;
  if (told === undefined) return answerSet(reply, req, answer); // (no closure: a lone node's Sets allocate nothing)
  return told.then(() => answerSet(reply, req, answer));
}

/** FOREIGN is answerSet's refusal of a foreign write (foreign-keys.ts), beside the store's SetResults. */
const FOREIGN = -1;

/** answerSet writes a Set's or SetMulti's reply: success, or the (first) refusal's CacheError. */
function answerSet(reply: ReplyWriter, req: Request, r: SetResult | typeof FOREIGN): void {
  if (r === FOREIGN) return refuseForeign(reply, req);
  if (r !== SET_OK) return replySetError(reply, req, r);
  reply.writeSuccess(req, true);
}

function remove(ctx: DispatchContext, group: Group, req: Request, reply: ReplyWriter, member: string | undefined): Promise<void> | void {
  const drop = foreign(ctx, req.method, req.buffer, req.keyStart, req.keyLength); // (refused: its owner may hold the key)
  const found = group.store.delete(req.buffer, req.keyStart, req.keyLength);
  group.written(req.buffer, req.keyStart, req.keyLength);
  if (found && !drop) group.counters.deletes++;
  const told = ctx.cluster !== undefined ? forgetCopies(ctx.cluster, group, req.buffer, [req.keyStart, req.keyLength], 2, 1, member) : undefined;
  if (told === undefined) return drop ? refuseForeign(reply, req) : reply.writeSuccess(req, found);
  return told.then(() => (drop ? refuseForeign(reply, req) : reply.writeSuccess(req, found)));
}

// SetMulti stores every entry it can; if any is refused the reply is the first refusal's
// CacheError (the other entries stay stored, as separate sets would; a peer's entry of a key
// another member owns is dropped and refused: foreign-keys.ts). Each entry counts as a Set would:
// in sets when stored, in setErrors when refused.
function setMulti(ctx: DispatchContext, group: Group, req: Request, reply: ReplyWriter, member: string | undefined): Promise<void> | void {
  const b = req.buffer;
  const items = req.items;
  const ttl = group.ttlFor(req.effectiveTtlMs());
  let failed: SetResult | typeof FOREIGN = SET_OK;
  for (let i = 0; i < req.itemCount; i++) {
    const o = i * 4;
    const drop = foreign(ctx, req.method, b, items[o]!, items[o + 1]!);
    const r = drop ? SET_OK : group.store.set(b, items[o]!, items[o + 1]!, b, items[o + 2]!, items[o + 3]!, ttl);
    if (drop) {
      group.store.delete(b, items[o]!, items[o + 1]!);
      if (failed === SET_OK) failed = FOREIGN; // (refused: foreign-keys.ts)
    }
    group.written(b, items[o]!, items[o + 1]!);
    if (r !== SET_OK) {
      if (failed === SET_OK) failed = r;
      group.counters.setErrors++; // each entry refused, as a routed SetMulti's part here counts them (Group.set)
    } else if (!drop) group.counters.sets++;
  }
  const told = ctx.cluster !== undefined ? forgetCopies(ctx.cluster, group, b, items, 4, req.itemCount, member) : undefined;
  if (told === undefined) return answerSet(reply, req, failed);
  const refused = failed;
  return told.then(() => answerSet(reply, req, refused));
}

function unknownGroup(reply: ReplyWriter, req: Request): void {
  const name = quotedName(req.buffer, req.groupStart, req.groupLength);
  replyCacheError(reply, req, ERROR_CODE.UNKNOWN_GROUP, `unknown group '${name}'`);
}

/** QUOTED_NAME_BYTES bounds how much of a client's name an error message repeats. */
export const QUOTED_NAME_BYTES = 128;
const NAME_TEXT = new TextDecoder();

/**
 * quotedName is the text of the name `buf[start, start+length)` for an error message: its first
 * QUOTED_NAME_BYTES bytes, then "…" when there were more. Repeated whole, a name of megabytes
 * (each invalid UTF-8 byte becoming a 3-byte U+FFFD) made a reply several times the request's
 * size, and past the frame limit a client can read.
 */
export function quotedName(buf: Uint8Array, start: number, length: number): string {
  const shown = length > QUOTED_NAME_BYTES ? QUOTED_NAME_BYTES : length;
  const text = NAME_TEXT.decode(buf.subarray(start, start + shown));
  return shown < length ? `${text}…` : text;
}
