/**
 * dispatch serves one decoded request from the node's groups and writes its reply.
 *
 * This file is the one place where outcomes become wire errors: store results and lookups map to
 * `CacheError` codes here (`replyCacheError`, `SET_ERRORS`), unknown methods to Thrift's
 * UNKNOWN_METHOD application exception. Protocol faults (bad bytes) are mapped by the server
 * where they are caught, with the same writer.
 *
 * The Get hit path allocates nothing: the group is found by its name bytes, the store probes by
 * key bytes, and the value is copied from the slab straight into the connection's output buffer.
 * A ONEWAY call runs like a CALL and its reply is dropped.
 *
 * A miss in a group with a loader cannot be answered at once: `dispatch` then returns a promise
 * that writes the reply when the load settles. The server stops serving that connection until it
 * does, so replies stay in request order and the request's byte ranges stay valid (the frame
 * reader is not advanced meanwhile). GetMulti loads all its misses in parallel; not-found keys are
 * left out of the map, and a load failure fails the whole call with its CacheError.
 */
import type { Group, Groups, Loaded } from "../cluster/group.ts";
import { APP_ERROR, CacheError, ERROR_CODE, type ErrorCode } from "../protocol/errors.ts";
import { BinaryWriter } from "../protocol/binary-writer.ts";
import { ReplyWriter } from "../protocol/reply-writer.ts";
import {
  METHOD_CLEAR, METHOD_DELETE, METHOD_GET, METHOD_GET_MULTI, METHOD_SET, METHOD_SET_MULTI, METHOD_STATS,
  type Request,
} from "../protocol/request.ts";
import { SET_INVALID_TTL, SET_NO_MEMORY, SET_OK, SET_REJECTED, SET_TOO_LARGE, type SetResult } from "../store/store.ts";

const NOT_FOUND_MESSAGE = "key not found";

/** SET_ERRORS maps a failed store SetResult to its ErrorCode and message. */
const SET_ERRORS: Record<Exclude<SetResult, typeof SET_OK>, [ErrorCode, string]> = {
  [SET_TOO_LARGE]: [ERROR_CODE.VALUE_TOO_LARGE, "item larger than the largest slab chunk (max item size)"],
  [SET_NO_MEMORY]: [ERROR_CODE.NO_MEMORY, "no memory could be freed for the item"],
  [SET_REJECTED]: [ERROR_CODE.NO_MEMORY, "item not admitted"],
  [SET_INVALID_TTL]: [ERROR_CODE.INVALID_ARGUMENT, "ttl must be >= 0"],
};

export interface DispatchContext {
  readonly groups: Groups;
  readonly clock: () => number;
}

/**
 * dispatch serves `req` and appends its reply (none for ONEWAY) to `reply`; it returns a promise
 * when the reply has to wait for a load, else undefined.
 */
export function dispatch(ctx: DispatchContext, req: Request, reply: ReplyWriter): Promise<void> | undefined {
  // A ONEWAY call is served like a CALL into a throwaway writer (ONEWAY is rare; this allocates).
  const pending = serve(ctx, req, req.oneway ? new ReplyWriter(new BinaryWriter(256)) : reply);
  return pending instanceof Promise ? pending : undefined;
}

function serve(ctx: DispatchContext, req: Request, reply: ReplyWriter): Promise<void> | void {
  if (req.errorCode !== 0) return replyCacheError(reply, req, req.errorCode as ErrorCode, req.errorMessage);
  const method = req.method;
  if (method < METHOD_GET || method > METHOD_SET_MULTI) {
    const name = new TextDecoder().decode(req.buffer.subarray(req.nameStart, req.nameStart + req.nameLength));
    return reply.writeApplicationException(req, APP_ERROR.UNKNOWN_METHOD, `Invalid method name: '${name}'`);
  }
  const group = ctx.groups.find(req.buffer, req.groupStart, req.groupLength);
  if (group === undefined) return unknownGroup(reply, req);
  switch (method) {
    case METHOD_GET:
      return get(ctx, group, req, reply);
    case METHOD_SET:
      return set(group, req, reply);
    case METHOD_DELETE:
      return reply.writeSuccess(req, remove(group, req));
    case METHOD_CLEAR:
      group.store.clear();
      return reply.writeSuccess(req, true);
    case METHOD_STATS: {
      const c = group.counters;
      return reply.writeStats(req, group.store.size, c.hits, c.misses, c.gets);
    }
    case METHOD_GET_MULTI:
      return getMulti(group, req, reply);
    default:
      return setMulti(group, req, reply);
  }
}

function get(ctx: DispatchContext, group: Group, req: Request, reply: ReplyWriter): Promise<void> | void {
  const id = group.lookup(req.buffer, req.keyStart, req.keyLength);
  if (id < 0) {
    if (group.loader === undefined || group.lastNegative) return replyCacheError(reply, req, ERROR_CODE.NOT_FOUND, NOT_FOUND_MESSAGE);
    return group.load(req.buffer, req.keyStart, req.keyLength).then(
      (loaded) => reply.writeGet(req, loaded.value, 0, loaded.value.length, loaded.ttlRemainingMs),
      (e: unknown) => replyThrown(reply, req, e),
    );
  }
  const store = group.store;
  const at = reply.beginGet(req, store.valueLength(id));
  store.copyValue(id, reply.out.buffer, at);
  const expiry = store.expiresAt(id);
  reply.endGet(expiry === Infinity ? -1 : Math.max(0, expiry - ctx.clock()));
}

function set(group: Group, req: Request, reply: ReplyWriter): void {
  const b = req.buffer;
  const r = group.store.set(b, req.keyStart, req.keyLength, b, req.valueStart, req.valueLength, group.ttlFor(req.effectiveTtlMs()));
  if (r !== SET_OK) return replySetError(group, reply, req, r);
  group.counters.sets++;
  reply.writeSuccess(req, true);
}

function remove(group: Group, req: Request): boolean {
  const removed = group.store.delete(req.buffer, req.keyStart, req.keyLength);
  if (removed) group.counters.deletes++;
  return removed;
}

function getMulti(group: Group, req: Request, reply: ReplyWriter): Promise<void> | void {
  if (group.loader !== undefined) {
    const loads = loadMisses(group, req);
    if (loads !== undefined) return loads.then((loaded) => writeGetMulti(group, req, reply, loaded), (e: unknown) => replyThrown(reply, req, e));
  }
  writeGetMulti(group, req, reply, undefined);
}

/** loadMisses starts a load for every key of a GetMulti not in the store; undefined if none. */
function loadMisses(group: Group, req: Request): Promise<(Loaded | null)[]> | undefined {
  let loads: Promise<Loaded | null>[] | undefined;
  for (let i = 0; i < req.itemCount; i++) {
    const ks = req.items[i * 4]!;
    const kl = req.items[i * 4 + 1]!;
    const id = group.lookup(req.buffer, ks, kl);
    if (id >= 0 || group.lastNegative) continue;
    loads ??= new Array<Promise<Loaded | null>>(req.itemCount).fill(Promise.resolve(null));
    loads[i] = group.load(req.buffer, ks, kl).catch((e: unknown) => {
      if (e instanceof CacheError && e.code === ERROR_CODE.NOT_FOUND) return null;
      throw e;
    });
  }
  return loads === undefined ? undefined : Promise.all(loads);
}

/**
 * writeGetMulti writes the map of every requested key that has a value: from the store (looked up
 * now: after a wait, earlier item ids may be stale) or, for loaded keys the store did not admit,
 * from the load result.
 */
function writeGetMulti(group: Group, req: Request, reply: ReplyWriter, loaded: (Loaded | null)[] | undefined): void {
  const store = group.store;
  const items = req.items;
  const counted = loaded === undefined;
  reply.beginGetMulti(req);
  for (let i = 0; i < req.itemCount; i++) {
    const ks = items[i * 4]!;
    const kl = items[i * 4 + 1]!;
    const id = counted ? group.lookup(req.buffer, ks, kl) : store.get(req.buffer, ks, kl);
    if (id >= 0 && !store.isNegative(id)) {
      const at = reply.addGetMultiEntry(req.buffer, ks, kl, store.valueLength(id));
      store.copyValue(id, reply.out.buffer, at);
      continue;
    }
    const value = loaded?.[i]?.value;
    if (value === undefined) continue; // absent keys are left out of the map, as in the seed
    const at = reply.addGetMultiEntry(req.buffer, ks, kl, value.length);
    reply.out.buffer.set(value, at);
  }
  reply.endGetMulti();
}

/** replyThrown answers a failed load: a CacheError with its code, anything else LOAD_FAILED. */
function replyThrown(reply: ReplyWriter, req: Request, e: unknown): void {
  if (e instanceof CacheError) return replyCacheError(reply, req, e.code, e.message);
  replyCacheError(reply, req, ERROR_CODE.LOAD_FAILED, e instanceof Error ? e.message : String(e));
}

// SetMulti stores every entry it can; if any is refused the reply is the first refusal's
// CacheError (the other entries stay stored, as separate sets would).
function setMulti(group: Group, req: Request, reply: ReplyWriter): void {
  const b = req.buffer;
  const items = req.items;
  const ttl = group.ttlFor(req.effectiveTtlMs());
  let failed: SetResult = SET_OK;
  for (let i = 0; i < req.itemCount; i++) {
    const o = i * 4;
    const r = group.store.set(b, items[o]!, items[o + 1]!, b, items[o + 2]!, items[o + 3]!, ttl);
    if (r === SET_OK) group.counters.sets++;
    else if (failed === SET_OK) failed = r;
  }
  if (failed !== SET_OK) return replySetError(group, reply, req, failed);
  reply.writeSuccess(req, true);
}

function replySetError(group: Group, reply: ReplyWriter, req: Request, r: Exclude<SetResult, typeof SET_OK>): void {
  group.counters.setErrors++;
  const [code, message] = SET_ERRORS[r];
  replyCacheError(reply, req, code, message);
}

function unknownGroup(reply: ReplyWriter, req: Request): void {
  const name = new TextDecoder().decode(req.buffer.subarray(req.groupStart, req.groupStart + req.groupLength));
  replyCacheError(reply, req, ERROR_CODE.UNKNOWN_GROUP, `unknown group '${name}'`);
}

/** replyCacheError writes a CacheError reply; the single mapping point for cache-level errors. */
export function replyCacheError(reply: ReplyWriter, req: Request, code: ErrorCode, message: string): void {
  reply.writeCacheError(req, code, message);
}
