/**
 * Runs the forwardGet allocation probes in a process of their own (spawned by
 * forward-alloc.test.ts; a small heap keeps the probe sensitive). Prints one JSON line.
 *
 * The probe needs a synchronous loop, so the socket is a fake attached through the client's test
 * door and each iteration is one call's whole life on the client: `forwardGet` (pending slot from
 * the pool, PeerGet encoded into the connection's output buffer) → the buffer is "sent" (reset, as
 * a full socket.write would leave it; the flush microtask queued by the first call stays queued, as
 * it does within one tick) → a reply frame is handed to the connection's data handler (frame
 * reader, reply reader, seqid lookup, callback with a view of the value, slot back to the pool).
 * Cases:
 *  - canned: the reply frame was made once by the server's ReplyWriter; the loop patches the
 *    seqid of the call just written into it;
 *  - server codec: every iteration also runs the server side in process — the server's decoder
 *    reads the client's call bytes and its ReplyWriter encodes the reply — a full round trip
 *    through both codecs minus the kernel;
 *  - control: the canned loop plus one two-field object per call, which the probe must detect.
 */
import { CacheClient, TEST_DOOR } from "../../src/client/cache-client.ts";
import type { CallSocket } from "../../src/client/client-connection.ts";
import { DEFAULT_LIMITS } from "../../src/protocol/limits.ts";
import { ProtocolConnection } from "../../src/protocol/protocol-connection.ts";
import { collectedDuring } from "../support/alloc-probe.ts";

const OPS = 1_000_000;
/** Offset of the seqid in a framed PeerGet call or reply: length, version, name length, "PeerGet". */
const SEQID_AT = 4 + 4 + 4 + 7;

const socket: CallSocket = { write: (_b, _o, length) => length, end() {} };
const group = new TextEncoder().encode("default");
const keys = new TextEncoder().encode("user:12345");

let received = 0;
let checksum = 0;
function done(err: unknown, value: Uint8Array | null, off: number, len: number, ttl: number): void {
  if (err !== null) throw err;
  received++;
  checksum += value![off + len - 1]! + ttl;
}

function setup(valueBytes: number) {
  const client = new CacheClient({ host: "127.0.0.1", port: 1, connections: 1, timeoutMs: 600_000 });
  const conn = client[TEST_DOOR].connections[0]!;
  conn.attach(socket);
  // One call stays in flight for the whole run, so the sweep timer never stops and restarts.
  client.forwardGet(group, keys, 0, keys.length, () => {});
  conn.calls.out.reset();
  const value = new Uint8Array(valueBytes).fill(7);
  // The server side: decode the client's call, answer it with the server's ReplyWriter.
  const server = new ProtocolConnection(DEFAULT_LIMITS);
  const serveCall = (): Uint8Array => {
    const out = conn.calls.out;
    server.push(out.buffer.subarray(0, out.length)); // setup only, not in a measured loop
    server.nextRequest();
    server.reply.writeGet(server.request, value, 0, value.length, 60_000);
    return server.reply.out.buffer;
  };
  client.forwardGet(group, keys, 0, keys.length, done);
  const canned = serveCall().slice(0, server.reply.out.length);
  server.reply.out.reset();
  server.nextRequest();
  conn.calls.out.reset();
  conn.onData(socket, canned);
  return { client, conn, canned, server, value };
}

const result: Record<string, unknown> = {};
let sink: unknown;
for (const size of [100, 4096]) {
  const { conn, canned, client } = setup(size);
  const out = conn.calls.out;
  const canonical = (): void => {
    client.forwardGet(group, keys, 0, keys.length, done);
    const b = out.buffer;
    canned[SEQID_AT] = b[SEQID_AT]!;
    canned[SEQID_AT + 1] = b[SEQID_AT + 1]!;
    canned[SEQID_AT + 2] = b[SEQID_AT + 2]!;
    canned[SEQID_AT + 3] = b[SEQID_AT + 3]!;
    out.reset(); // "written to the socket"
    conn.onData(socket, canned);
  };
  if (size === 100) {
    result.control = await collectedDuring((i) => {
      canonical();
      sink = { i, j: i };
    }, OPS);
  }
  received = 0;
  result[`canned${size}`] = await collectedDuring(canonical, OPS);
  result[`received${size}`] = received;
  result[`inFlight${size}`] = conn.pending.inFlight;
  await client.close();
}
{
  // Server codec in the loop. The server's frame reader is fed the client's output buffer without
  // a subarray: its `push` takes a whole chunk, so the call bytes are copied into a fixed buffer
  // whose length is exactly one call (all calls have the same size here).
  const { conn, server, client } = setup(100);
  const out = conn.calls.out;
  client.forwardGet(group, keys, 0, keys.length, () => {}); // sizes the chunk; stays in flight
  const chunk = new Uint8Array(out.length);
  out.reset();
  const replyOut = server.reply.out;
  let replyChunk = new Uint8Array(0);
  const roundTrip = (): void => {
    client.forwardGet(group, keys, 0, keys.length, done);
    for (let i = 0; i < chunk.length; i++) chunk[i] = out.buffer[i]!;
    out.reset();
    server.push(chunk);
    server.nextRequest();
    server.reply.writeGet(server.request, setupValue, 0, setupValue.length, 60_000);
    if (replyChunk.length !== replyOut.length) replyChunk = new Uint8Array(replyOut.length);
    for (let i = 0; i < replyChunk.length; i++) replyChunk[i] = replyOut.buffer[i]!;
    replyOut.reset();
    server.nextRequest();
    conn.onData(socket, replyChunk);
  };
  const setupValue = new Uint8Array(100).fill(7);
  received = 0;
  result.serverCodec = await collectedDuring(roundTrip, OPS);
  result.receivedServerCodec = received;
  await client.close();
}
void sink;
result.checksum = checksum;
console.log(JSON.stringify(result));
