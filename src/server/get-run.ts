/**
 * serveGetRun serves a run of pipelined Get hits straight from a connection's input chunk: the
 * common case of a busy cache (a client pipelining Gets of keys that are in the store) done in
 * one tight loop instead of once per request through decoder, Request, dispatch and group.
 *
 * Each frame must be a plain framed Get (peek-gets.ts `matchPlainGet`: the exact layout the Apache
 * and Kitex generators write, which the decoder reads as a Get of that group and key) whose key
 * is a live, non-negative item of its group's store (`Store.getHit`). The run stops, without
 * touching that frame, at the first frame that is anything else (another method or layout, an
 * unknown group, a miss, an expired or negative item, an incomplete frame, a bad length), when
 * `budget` requests are served, or when the output passes `maxOutput`. The caller then serves
 * that frame on the general path, which decodes, validates, counts and answers it as always. So
 * a request gets the same reply bytes and the same counters either way (the tests compare the
 * two paths byte for byte); the run only skips work a hit does not need.
 *
 * Counting: group gets and hits, store hits and the LRU bump happen here exactly as
 * `Group.lookup` does them; the caller adds the run to the request counters and the latency
 * histogram (one clock read per run, LatencyHistogram.recordRun).
 *
 * Not for clusters with peers (a key may belong to another node: routing decides) or connections
 * that must authenticate first; the caller checks. Allocates nothing.
 */
import { readI32 } from "../bytes/bytes.ts";
import type { Group, Groups } from "../cluster/group.ts";
import type { FrameReader } from "../protocol/frame-reader.ts";
import { PLAIN_GET, matchPlainGet } from "../protocol/peek-gets.ts";
import type { ReplyWriter } from "../protocol/reply-writer.ts";

/** serveGetRun serves Get hits from `reader`'s chunk (see above) and returns how many. */
export function serveGetRun(
  reader: FrameReader, groups: Groups, reply: ReplyWriter, clock: () => number, budget: number, maxOutput: number,
): number {
  let p = reader.framedRunStart();
  if (p < 0) return 0;
  const buf = reader.chunkBytes;
  const end = buf.length;
  const out = reply.out;
  let group: Group | undefined;
  let served = 0;
  let now = -1;
  while (served < budget && end - p >= 4 && out.length < maxOutput) {
    const length = readI32(buf, p);
    const f = p + 4;
    if (length <= 0 || length > end - f || !matchPlainGet(buf, f, f + length)) break;
    const gs = PLAIN_GET[1]!;
    const gl = PLAIN_GET[2]!;
    if (group === undefined || !group.nameIs(buf, gs, gl)) {
      group = groups.find(buf, gs, gl);
      if (group === undefined) break;
    }
    const store = group.store;
    const id = store.getHit(buf, PLAIN_GET[3]!, PLAIN_GET[4]!);
    if (id < 0) break;
    const counters = group.counters;
    counters.gets++;
    counters.hits++;
    const at = reply.beginFramedGet(PLAIN_GET[0]!, store.valueLength(id));
    store.copyValue(id, out.buffer, at);
    const expiry = store.expiresAt(id);
    if (expiry === Infinity) reply.endGet(-1);
    else {
      if (now < 0) now = clock();
      reply.endGet(Math.max(0, expiry - now));
    }
    p = f + length;
    served++;
  }
  if (served > 0) reader.skipTo(p);
  return served;
}
