/**
 * Runs the protocol allocation probes in a process of their own (spawned by allocation.test.ts):
 * the probe's sensitivity depends on the heap's size, which the rest of a test run inflates (a
 * large heap has a large young generation, so 16 MB of garbage may not trigger a collection).
 * Prints one JSON line: for each case, whether a collection happened during the loop.
 */
import { collectedDuring } from "../support/alloc-probe.ts";
import { ProtocolConnection } from "../../src/protocol/protocol-connection.ts";
import { DEFAULT_LIMITS } from "../../src/protocol/limits.ts";
import { METHOD_GET, METHOD_SET } from "../../src/protocol/request.ts";
import { Bytes, MSG, T, type TransportName, message, wrap } from "./wire-builder.ts";

const OPS = 1_000_000;
const VALUE = new Uint8Array(48).fill(7);

function getFrame(transport: TransportName): Uint8Array {
  const req = new Bytes().field(T.STRUCT, 1).field(T.STRING, 1).str("default").field(T.STRING, 2).str("user:12345").stop().stop();
  return wrap(transport, message(MSG.CALL, "Get", 1, req.bytes()), { info: [["auth", "token"]], seqid: 1 });
}

function setFrame(): Uint8Array {
  const req = new Bytes().field(T.STRUCT, 1).field(T.STRING, 1).str("default").field(T.STRING, 2).str("user:12345").field(T.STRING, 3).str(VALUE).field(T.I64, 4).i64(60).stop().stop();
  return wrap("framed", message(MSG.CALL, "Set", 1, req.bytes()));
}

/** serve is the server's hot loop for one chunk: decode every request, encode every reply. */
function serve(conn: ProtocolConnection, chunk: Uint8Array): void {
  conn.push(chunk);
  while (conn.nextRequest()) {
    const req = conn.request;
    if (req.method === METHOD_GET) {
      const at = conn.reply.beginGet(req, VALUE.length);
      const out = conn.reply.out.buffer;
      for (let i = 0; i < VALUE.length; i++) out[at + i] = VALUE[i]!;
      conn.reply.endGet(30_000);
    } else if (req.method === METHOD_SET) {
      conn.reply.writeSuccess(req, req.valueLength === VALUE.length);
    }
  }
  conn.reply.out.reset(); // the bytes were "sent"
}

let sink: unknown;
const result: Record<string, unknown> = {};
{
  const conn = new ProtocolConnection(DEFAULT_LIMITS);
  const frame = getFrame("framed");
  result.control = await collectedDuring((i) => {
    serve(conn, frame);
    sink = { i };
  }, OPS);
}
for (const transport of ["framed", "buffered", "theader", "ttheader"] as const) {
  const conn = new ProtocolConnection(DEFAULT_LIMITS);
  const frame = getFrame(transport);
  result[transport] = await collectedDuring(() => serve(conn, frame), OPS);
  result[`${transport}Method`] = conn.request.method;
}
{
  const conn = new ProtocolConnection(DEFAULT_LIMITS);
  const frame = setFrame();
  result.set = await collectedDuring(() => serve(conn, frame), OPS);
}
void sink;
console.log(JSON.stringify(result));
