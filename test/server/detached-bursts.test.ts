/**
 * Peer writes answered out of order (cache-server.ts `detach`) settle in bursts: an owner waits for
 * its members' answers to their invalidations, and a member answers many in one chunk. A burst
 * that lands in a connection's output while the connection has yielded its turn must not leave it
 * held for good: it is served on until every request it sent is answered.
 */
import { afterEach, expect, test } from "bun:test";
import { connect, type Socket } from "node:net";
import { CacheNode } from "../../src/server/cache-node.ts";
import { METHOD_PEER_INVALIDATE } from "../../src/protocol/request.ts";
import { StubServer, serve, until } from "../client/support.ts";
import { LogSink } from "./support.ts";
import { Bytes, MSG, T, concat, message, wrap } from "../protocol/wire-builder.ts";
import { keysOf } from "../support/cluster-members.ts";
import { freePorts } from "../support/node-process.ts";

const open: { close(): unknown }[] = [];
afterEach(async () => {
  for (const x of open.splice(0).reverse()) await x.close();
});

function peerSet(seqid: number, key: string): Uint8Array {
  const body = new Bytes().field(T.STRUCT, 1).field(T.STRING, 1).str("g").field(T.STRING, 2).str(key)
    .field(T.STRING, 3).str("v").field(T.I64, 4).i64(0).stop().stop().bytes();
  return wrap("framed", message(MSG.CALL, "PeerSet", seqid, body), { seqid });
}

test("a connection that yielded its turn while a burst of out-of-order replies filled its output is served on (review: it stayed held for good)", async () => {
  // The other member answers invalidations of keys every 20 ms, all at once; it never answers the
  // ask to drop its mirrors, so the node waits for it on every write (copies of its last run).
  const member = new StubServer();
  open.push(member);
  const held: { conn: number; reply: Uint8Array }[] = [];
  member.handler = (c, st) => {
    if (c.method !== METHOD_PEER_INVALIDATE) return serve(c, st);
    if (!c.all) held.push({ conn: c.conn, reply: serve(c, st)! });
    return null;
  };
  const burst = setInterval(() => {
    for (const conn of new Set(held.map((h) => h.conn))) member.write(conn, concat(...held.filter((h) => h.conn === conn).map((h) => h.reply)));
    held.length = 0;
  }, 20);
  open.push({ close: () => clearInterval(burst) });
  const [port] = freePorts(1) as [number];
  const ids = [`127.0.0.1:${port}`, `127.0.0.1:${member.port}`];
  const node = CacheNode.start(
    { port, host: "127.0.0.1", peers: ids, logLevel: "silent", peerTimeoutMs: 4_000, maxOutputBytes: 16 * 1024, maxRequestsPerEvent: 64, groups: [{ name: "g", ttlMs: 0 }] },
    { logger: new LogSink().logger },
  );
  open.push(node);
  const keys = keysOf(node, ids[0]!, "k", 100);
  const count = 60_000;
  let replied = 0;
  const socket: Socket = connect({ host: "127.0.0.1", port });
  open.push({ close: () => socket.destroy() });
  let carry = new Uint8Array(0);
  socket.on("data", (chunk: Buffer) => {
    let buf = concat(carry, new Uint8Array(chunk));
    let at = 0;
    while (buf.length - at >= 4) {
      const size = new DataView(buf.buffer, buf.byteOffset + at).getInt32(0);
      if (buf.length - at - 4 < size) break;
      at += 4 + size;
      replied++;
    }
    carry = buf.slice(at);
  });
  await new Promise<void>((r) => socket.once("connect", () => r()));
  socket.write(concat(...Array.from({ length: count }, (_, i) => peerSet(i + 1, keys[i % keys.length]!))));
  await until(() => replied === count, 20_000);
  expect(replied).toBe(count);
  expect(node.server.counters.detachedReplies).toBeGreaterThan(0); // the replies were written out of order
}, 30_000);
