/**
 * Peer writes answered out of order (load-waits.ts `detach`) while their owner waits for its
 * members' answers to their invalidations. They settle in bursts (a member answers many in one
 * chunk): a burst that lands in a connection's output while the connection has yielded its turn
 * must not leave it held for good. And they are bounded: MAX_DETACHED_WRITES wait at once on a
 * connection, what they hold counted toward --max-buffered.
 */
import { afterEach, expect, test, setDefaultTimeout } from "bun:test";
import { connect, type Socket } from "node:net";
import { CacheNode } from "../../src/server/cache-node.ts";
import { MAX_DETACHED_WRITES } from "../../src/server/load-waits.ts";
import { METHOD_PEER_INVALIDATE } from "../../src/protocol/request.ts";
import { StubServer, serve, until } from "../client/support.ts";
import { LogSink } from "./support.ts";
import { Bytes, MSG, T, concat, message, wrap } from "../protocol/wire-builder.ts";
import { keysOf } from "../support/cluster-members.ts";
import { freePorts } from "../support/node-process.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const open: { close(): unknown }[] = [];
afterEach(async () => {
  for (const x of open.splice(0).reverse()) await x.close();
});

/** pipeline connects to `port`, sends `frames`, and counts the framed replies that come back. */
async function pipeline(port: number, frames: Uint8Array): Promise<{ replied(): number }> {
  let replied = 0;
  const socket: Socket = connect({ host: "127.0.0.1", port });
  open.push({ close: () => socket.destroy() });
  let carry = new Uint8Array(0);
  socket.on("data", (chunk: Buffer) => {
    const buf = concat(carry, new Uint8Array(chunk));
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
  socket.write(frames);
  return { replied: () => replied };
}

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
  const client = await pipeline(port, concat(...Array.from({ length: count }, (_, i) => peerSet(i + 1, keys[i % keys.length]!))));
  await until(() => client.replied() === count, 20_000);
  expect(node.server.counters.detachedReplies).toBeGreaterThan(0); // the replies were written out of order
}, 30_000);

test("at most MAX_DETACHED_WRITES peer writes wait out of order on a connection, each counted toward --max-buffered; the next parks it until the owner's wait ends (review: 60k waited at once, 438 B counted of ~3 KB each)", async () => {
  // The other member never answers invalidations: each write waits the owner's whole wait (2 s).
  const member = new StubServer();
  open.push(member);
  member.handler = (c, st) => (c.method === METHOD_PEER_INVALIDATE ? null : serve(c, st));
  const [port] = freePorts(1) as [number];
  const ids = [`127.0.0.1:${port}`, `127.0.0.1:${member.port}`];
  const node = CacheNode.start(
    { port, host: "127.0.0.1", peers: ids, logLevel: "silent", peerTimeoutMs: 4_000, groups: [{ name: "g", ttlMs: 0 }] },
    { logger: new LogSink().logger },
  );
  open.push(node);
  const keys = keysOf(node, ids[0]!, "k", 100);
  const count = MAX_DETACHED_WRITES + 1_000;
  const told = (): number => member.calls.filter((c) => c.method === METHOD_PEER_INVALIDATE && !c.all).length;
  const client = await pipeline(port, concat(...Array.from({ length: count }, (_, i) => peerSet(i + 1, keys[i % keys.length]!))));
  // Every write decoded tells the member: the one past the bound is decoded, and parks.
  await until(() => told() >= MAX_DETACHED_WRITES + 1, 5_000);
  await Bun.sleep(200);
  expect(told()).toBe(MAX_DETACHED_WRITES + 1);
  expect(client.replied()).toBe(0);
  expect(node.server.counters.bufferedBytes).toBeGreaterThan(MAX_DETACHED_WRITES * 2048);
  await until(() => client.replied() === count, 20_000); // every wait ends, and the rest is served
  expect(told()).toBe(count);
}, 30_000);
