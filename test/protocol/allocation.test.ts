// Proof that the per-request path allocates nothing: decode a request and encode its reply
// a million times and show that no garbage collection was triggered.
//
// How it is measured: see test/support/alloc-probe.ts (a WeakRef canary that any collection
// during the loop would free; the control below proves the probe detects 16 bytes per request).

import { expect, test } from "bun:test";
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

test("the probe works: one 16-byte object per request is detected", async () => {
  const conn = new ProtocolConnection(DEFAULT_LIMITS);
  const frame = getFrame("framed");
  expect(
    await collectedDuring((i) => {
      serve(conn, frame);
      sink = { i };
    }),
  ).toBe(true);
}, 30_000);

for (const transport of ["framed", "buffered", "theader", "ttheader"] as const) {
  test(`Get decode + reply (${transport}) allocates nothing over ${OPS} requests`, async () => {
    const conn = new ProtocolConnection(DEFAULT_LIMITS);
    const frame = getFrame(transport);
    expect(await collectedDuring(() => serve(conn, frame))).toBe(false);
    expect(conn.request.method).toBe(METHOD_GET);
    void sink;
  }, 30_000);
}

test(`Set decode + reply allocates nothing over ${OPS} requests`, async () => {
  const conn = new ProtocolConnection(DEFAULT_LIMITS);
  const frame = setFrame();
  expect(await collectedDuring(() => serve(conn, frame))).toBe(false);
}, 30_000);
