/**
 * The Get reply of a stored item, written straight from the slab (no staging copy): the value,
 * then its remaining TTL in the store's clock when it has one. `writeHit` is the general path's
 * (any transport, from a decoded request); `writePlainHit` is a run's (framed or buffered, from
 * the seqid of a listed call, call-runs.ts). Both give the same bytes for the same item.
 */
import { copyBytes } from "../bytes/bytes.ts";
import { REPLY_OVERHEAD_BYTES, type ReplyWriter, replyHead } from "../protocol/reply-writer.ts";
import { TYPE_I64, TYPE_STOP, TYPE_STRING } from "../protocol/wire.ts";
import type { Request } from "../protocol/request.ts";
import type { Store } from "../store/store.ts";

/** writeHit writes the Get reply to `req` of item `id` of `store`. */
export function writeHit(reply: ReplyWriter, req: Request, store: Store, id: number): void {
  const at = reply.beginGet(req, store.valueLength(id));
  store.copyValue(id, reply.out.buffer, at);
  reply.endGet(store.ttlRemaining(id));
}

/**
 * writePlainHit writes the Get reply of item `id` of `store` to the plain Get with `seqid`: the
 * bytes of ReplyWriter's beginPlainGet, the value's copy and endGet, in one pass with the frame's
 * length known before the copy (one call on a run's hot path instead of three). The cursor moves
 * once the reply is whole, so a throw leaves no reply begun.
 */
export function writePlainHit(reply: ReplyWriter, store: Store, id: number, seqid: number, framed: boolean): void {
  const length = store.valueLength(id);
  const w = reply.out;
  w.ensure(REPLY_OVERHEAD_BYTES + 3 + length);
  const b = w.buffer;
  const at = framed ? w.length : w.length - 4; // (buffered: no length, nothing written before the message)
  replyHead(b, at, 0x47, seqid); // G, field 0: { 0: GetResponse }
  b[at + 22] = TYPE_STRING; b[at + 23] = 0; b[at + 24] = 1; // value
  b[at + 25] = length >>> 24; b[at + 26] = length >>> 16; b[at + 27] = length >>> 8; b[at + 28] = length;
  copyBytes(b, at + 29, store.valuePage(id), store.valueStart(id), length);
  let q = at + 29 + length;
  const ttl = store.ttlRemaining(id);
  if (ttl >= 0) {
    w.length = q;
    w.fieldBegin(TYPE_I64, 2);
    w.i64(ttl);
    q += 11;
  }
  b[q] = TYPE_STOP; // GetResponse
  b[q + 1] = TYPE_STOP; // result
  if (framed) w.patchI32(at, q - at - 2);
  w.length = q + 2;
}
