/**
 * The Get reply of a stored item, written straight from the slab (no staging copy): the value,
 * then its remaining TTL in the store's clock when it has one. `writeHit` is the general path's
 * (any transport, from a decoded request); `writePlainHit` is a run's (framed or buffered, from
 * the seqid of a listed call, call-runs.ts). Both give the same bytes for the same item.
 */
import type { ReplyWriter } from "../protocol/reply-writer.ts";
import type { Request } from "../protocol/request.ts";
import type { Store } from "../store/store.ts";

/** writeHit writes the Get reply to `req` of item `id` of `store`. */
export function writeHit(reply: ReplyWriter, req: Request, store: Store, id: number): void {
  const at = reply.beginGet(req, store.valueLength(id));
  store.copyValue(id, reply.out.buffer, at);
  reply.endGet(store.ttlRemaining(id));
}

/** writePlainHit writes the Get reply of item `id` of `store` to the plain Get with `seqid`. */
export function writePlainHit(reply: ReplyWriter, store: Store, id: number, seqid: number, framed: boolean): void {
  const at = reply.beginPlainGet(seqid, store.valueLength(id), framed);
  store.copyValue(id, reply.out.buffer, at);
  reply.endGet(store.ttlRemaining(id));
}
