// Canned-reply server: the ceiling of Bun's network layer for the benchmark. It answers every
// complete framed Thrift message with one prebuilt `Get` reply carrying a value of `--value-size`
// bytes, reading nothing but each frame's 4-byte length.
//
// Layout: `REPLIES` holds the reply frame repeated BATCH times back to back, so the replies of one
// data event are a prefix of it and go out in ONE `socket.write(REPLIES, 0, count * len)`. Per
// connection (`Conn`) the scanner keeps the partial length (`lenBytes`, `len`) and the bytes left
// of the current frame (`skip`). A partial write leaves `pending` bytes unsent; since all replies
// are identical, those are the last `pending` bytes of whole replies, i.e. they start at phase
// `(-pending) mod len` of the repeated buffer, so no copy or queue is needed; new replies are added
// to `pending` and everything is flushed on `drain`.
//
//   bun bench/net/canned-server.ts --port 9000 --value-size 100
import { parseArgs } from "node:util";
import { thriftGetReply, valueFor } from "./frames.ts";
import { hostPort } from "../../src/bytes/bytes.ts";

const MAX_FRAME = 16_384_000; // Thrift's default frame limit
const BATCH = 1024; // replies prebuilt; larger bursts are written in BATCH-sized pieces

const { values: opt } = parseArgs({
  options: {
    port: { type: "string", default: "9000" }, host: { type: "string", default: "127.0.0.1" },
    "value-size": { type: "string", default: "100" },
  },
});
const REPLY = thriftGetReply(valueFor(0, Number(opt["value-size"])), 0);
const LEN = REPLY.length;
const REPLIES = new Uint8Array(LEN * BATCH);
for (let i = 0; i < BATCH; i++) REPLIES.set(REPLY, i * LEN);

/** Conn is the per-connection scanner and output state (see header). */
class Conn {
  len = 0; // frame length being assembled from its 4 bytes
  lenBytes = 0; // how many of those 4 bytes were seen
  skip = 0; // bytes left of the current frame's body
  pending = 0; // reply bytes not yet accepted by the kernel
}

/** flush writes up to `c.pending` bytes; returns false when the kernel took less (wait for drain). */
function flush(s: { write(d: Uint8Array, off: number, len: number): number }, c: Conn): boolean {
  while (c.pending > 0) {
    const start = (LEN - (c.pending % LEN)) % LEN;
    const n = Math.min(c.pending, REPLIES.length - start);
    const wrote = s.write(REPLIES, start, n);
    if (wrote > 0) c.pending -= wrote;
    if (wrote < n) return false;
  }
  return true;
}

const server = Bun.listen<Conn>({
  hostname: opt.host!,
  port: Number(opt.port),
  socket: {
    open(s) { s.data = new Conn(); s.setNoDelay(true); },
    data(s, b) {
      const c = s.data;
      let p = 0, frames = 0;
      const n = b.length;
      while (p < n) {
        if (c.skip > 0) {
          const take = c.skip < n - p ? c.skip : n - p;
          p += take;
          c.skip -= take;
          if (c.skip === 0) frames++;
          continue;
        }
        c.len = (c.len << 8) | b[p++]!;
        if (++c.lenBytes < 4) continue;
        const len = c.len;
        c.len = 0;
        c.lenBytes = 0;
        if (len <= 0 || len > MAX_FRAME) { s.terminate(); return; }
        c.skip = len;
      }
      if (frames === 0) return;
      const queued = c.pending > 0; // replies behind a partial write must wait for drain
      c.pending += frames * LEN;
      if (!queued) flush(s, c);
    },
    drain(s) { flush(s, s.data); },
    error() {},
  },
});
console.log(`canned-server listening on ${hostPort(server.hostname, server.port)} reply=${LEN}B`);
for (const sig of ["SIGINT", "SIGTERM"] as const) process.on(sig, () => { server.stop(true); process.exit(0); });
