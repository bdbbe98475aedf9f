/**
 * Replies made of figures, with no cached value in them: Stats (a group's counters), PeerInvalidate
 * (how many copies were dropped), PeerPing (the node's id, its uptime and a lease) and NodeStats
 * (the node's figures). Each is a function of the connection's ReplyWriter, written through its
 * `begin` and `end` like the writer's own replies. They are apart from reply-writer.ts because
 * none answers a Get or a Set: that file keeps the replies of the hot path together.
 */
import { REPLY_OVERHEAD_BYTES, type ReplyWriter } from "./reply-writer.ts";
import type { Request } from "./request.ts";
import { MESSAGE_REPLY, TYPE_I64, TYPE_MAP, TYPE_STOP, TYPE_STRING, TYPE_STRUCT } from "./wire.ts";

/** writeStats writes the StatsResponse reply (four i64 counters). */
export function writeStats(reply: ReplyWriter, req: Request, itemCount: number, hitCount: number, missCount: number, totalCount: number): void {
  const w = reply.out;
  reply.begin(req, MESSAGE_REPLY, 44);
  w.fieldBegin(TYPE_STRUCT, 0);
  w.fieldBegin(TYPE_I64, 1);
  w.i64(itemCount);
  w.fieldBegin(TYPE_I64, 2);
  w.i64(hitCount);
  w.fieldBegin(TYPE_I64, 3);
  w.i64(missCount);
  w.fieldBegin(TYPE_I64, 4);
  w.i64(totalCount);
  w.u8(TYPE_STOP);
  w.u8(TYPE_STOP);
  reply.end();
}

/** writeInvalidate writes the PeerInvalidateResponse reply `{1: i64 dropped}`. */
export function writeInvalidate(reply: ReplyWriter, req: Request, dropped: number): void {
  const w = reply.out;
  reply.begin(req, MESSAGE_REPLY, 16);
  w.fieldBegin(TYPE_STRUCT, 0);
  w.fieldBegin(TYPE_I64, 1);
  w.i64(dropped);
  w.u8(TYPE_STOP);
  w.u8(TYPE_STOP);
  reply.end();
}

/**
 * writePing writes the PingResponse reply `{1: string nodeId, 2: i64 uptimeMs, 3: i64 leaseMs}`,
 * field 3 only when `leaseMs` is not negative (a ping that did not ask for a lease).
 */
export function writePing(reply: ReplyWriter, req: Request, nodeId: string, uptimeMs: number, leaseMs = -1): void {
  const w = reply.out;
  reply.begin(req, MESSAGE_REPLY, 0);
  w.fieldBegin(TYPE_STRUCT, 0);
  w.fieldBegin(TYPE_STRING, 1);
  w.utf8(nodeId);
  w.ensure(32 + REPLY_OVERHEAD_BYTES);
  w.fieldBegin(TYPE_I64, 2);
  w.i64(uptimeMs);
  if (leaseMs >= 0) {
    w.fieldBegin(TYPE_I64, 3);
    w.i64(leaseMs);
  }
  w.u8(TYPE_STOP);
  w.u8(TYPE_STOP);
  reply.end();
}

/** writeFigures writes the NodeStatsResponse reply `{1: map<string, i64> figures}`. */
export function writeFigures(reply: ReplyWriter, req: Request, figures: readonly (readonly [string, number])[]): void {
  const w = reply.out;
  reply.begin(req, MESSAGE_REPLY, 16);
  w.fieldBegin(TYPE_STRUCT, 0);
  w.fieldBegin(TYPE_MAP, 1);
  w.u8(TYPE_STRING);
  w.u8(TYPE_I64);
  w.i32(figures.length);
  for (const [name, value] of figures) {
    w.utf8(name);
    w.ensure(8 + REPLY_OVERHEAD_BYTES);
    w.i64(value);
  }
  w.u8(TYPE_STOP);
  w.u8(TYPE_STOP);
  reply.end();
}
