// ProtocolConnection: the protocol state of one TCP connection, in one object.
//
// It bundles what a connection needs and owns no socket: the FrameReader (transport detection,
// partial frames), the RequestDecoder, the single reusable Request, and the ReplyWriter with
// its output buffer. The server's `data` handler is:
//
//     conn.push(chunk);
//     try {
//       while (conn.nextRequest()) { const req = conn.request; …dispatch, write a reply… }
//     } catch (e) {
//       if (!(e instanceof ProtocolError)) throw e;
//       if (conn.request.transport !== 0) conn.reply.writeApplicationException(conn.request, e.type, e.message);
//       …flush conn.reply.out, then close if e.close…
//     }
//     socket.write(conn.reply.out.buffer, 0, conn.reply.out.length) …
//
// An unknown method is NOT thrown: nextRequest() returns true with request.method ===
// METHOD_UNKNOWN, and the server replies UNKNOWN_METHOD and keeps the connection.
// Every view (request ranges) is valid until the next push()/nextRequest(), except those of a
// request handed over with `detach` (a reply written later, out of request order).

import type { ProtocolLimits } from "./limits.ts";
import { FrameReader } from "./frame-reader.ts";
import type { BinaryWriter } from "./binary-writer.ts";
import { ReplyWriter } from "./reply-writer.ts";
import { Request, matchMethod } from "./request.ts";
import { readI32 } from "../bytes/bytes.ts";
import { TRANSPORT_BUFFERED, TRANSPORT_FRAMED, TRANSPORT_THEADER, TRANSPORT_TTHEADER, VERSION_1, VERSION_MASK } from "./wire.ts";
import { RequestDecoder } from "./request-decoder.ts";

/**
 * WAITING_ENTRY_BYTES: what serving a multi-key request that waits for its loads builds for each
 * of its entries besides the request's own arrays (the lists of hits and misses, the loaded values'
 * slots, the duplicate-key map, closures queued for the load window: server/get-multi.ts and
 * multi-loads.ts); measured at 22–60 bytes a key for GetMultis of 1M short keys.
 */
export const WAITING_ENTRY_BYTES = 64;

/**
 * requestHolds is what a request that waits for its loads holds besides the values it loads: its
 * message (`messageBytes`, which stays in memory as long as the request reads from it), its
 * entries' and header's arrays (a header's info entries take up to 8 bytes for each byte of
 * message), and WAITING_ENTRY_BYTES for each entry. The server counts it toward --max-buffered
 * until the reply is written.
 */
export function requestHolds(request: Request, messageBytes: number): number {
  const header = request.header;
  return messageBytes + request.items.byteLength + header.strings.byteLength + header.ints.byteLength +
    request.itemCount * WAITING_ENTRY_BYTES;
}

export class ProtocolConnection {
  readonly reader: FrameReader;
  readonly decoder: RequestDecoder;
  /** request is the message `nextRequest` decoded last (a new object after `detach`). */
  request = new Request();
  /** reply writes the connection's replies (a new object over the same output after `detach`). */
  reply: ReplyWriter;

  constructor(limits: ProtocolLimits, reply: ReplyWriter = new ReplyWriter()) {
    this.reader = new FrameReader(limits);
    this.decoder = new RequestDecoder(limits);
    this.reply = reply;
    reply.maxMultiBytes = limits.maxFrameBytes;
  }

  /** push hands over a chunk read from the socket. */
  push(chunk: Uint8Array): void {
    this.reader.push(chunk);
  }

  /**
   * nextRequest decodes the next complete message into `request`; false = need more bytes.
   * Throws ProtocolError; `request` then holds whatever was read (transport, header, and the
   * name/seqid when `request.headerRead`), enough to address the error reply.
   */
  nextRequest(): boolean {
    const reader = this.reader;
    const req = this.request;
    let found: boolean;
    try {
      found = reader.next();
    } catch (e) {
      req.reset();
      req.header.reset();
      req.transport = reader.transport;
      if (reader.refusedFrame(REFUSED)) addressRefused(req, REFUSED.buf, REFUSED.start, REFUSED.end);
      throw e;
    }
    if (!found) {
      req.releaseItems(); // the last request is served: a huge key list is not kept while idle
      if (reader.releaseServed()) {
        // nor a large message it was read from (views of it in the request and the decoder)
        req.releaseBuffer();
        this.decoder.releaseBuffer();
      }
      return false;
    }
    this.decoder.decode(reader.buffer, reader.start, reader.end, reader.transport, req);
    return true;
  }

  /**
   * detach hands the request just decoded, and the writer its reply goes to, to a reply that will
   * be written later, out of request order (server/load-waits.ts): the request is decoded again
   * from its own copy of the message, so its ranges outlive the reader's next call, and the writer
   * now writes to `out`. The connection goes on with a new request and a new writer over its output.
   * `bytes` is what the request holds (`requestHolds`: the copy, its arrays). Allocates (a copy,
   * a Request with its arrays, a ReplyWriter): it is for replies that wait for a load.
   */
  detach(out: BinaryWriter): { request: Request; reply: ReplyWriter; bytes: number } {
    const reader = this.reader;
    const request = this.request;
    const reply = this.reply;
    const copy = reader.buffer.slice(reader.start, reader.end);
    this.decoder.decode(copy, 0, copy.length, reader.transport, request); // (it decoded once: it cannot throw now)
    const next = reply.sibling(reply.out);
    reply.out = out;
    this.reply = next;
    this.request = new Request();
    this.request.holder = request.holder;
    return { request, reply, bytes: requestHolds(request, copy.length) };
  }
}

/** REFUSED receives the bytes at hand of a frame refused for its length (scratch: used at once). */
const REFUSED = { buf: new Uint8Array(0), start: 0, end: 0 };

/**
 * addressRefused fills `req` with whom a frame refused for its length came from, when its first
 * bytes say it, so its error reply is addressed to the call (a reply to seqid 0 is one a client
 * cannot match: ours called it a reply to a call not in flight): framed, the message header (name
 * and seqid), and a buffered message the scanner refused likewise; a header transport, the
 * header's seqid and flags.
 */
function addressRefused(req: Request, buf: Uint8Array, start: number, end: number): void {
  const t = req.transport;
  if (t === TRANSPORT_THEADER || t === TRANSPORT_TTHEADER) {
    if (end - start < 8) return;
    req.header.flags = (buf[start + 2]! << 8) | buf[start + 3]!;
    req.header.seqid = readI32(buf, start + 4);
    return;
  }
  if ((t !== TRANSPORT_FRAMED && t !== TRANSPORT_BUFFERED) || end - start < 12 || (readI32(buf, start) & VERSION_MASK) !== VERSION_1) return;
  const nameLength = readI32(buf, start + 4);
  if (nameLength < 0 || nameLength > end - start - 12) return;
  req.buffer = buf;
  req.messageType = buf[start + 3]!;
  req.nameStart = start + 8;
  req.nameLength = nameLength;
  req.method = matchMethod(buf, start + 8, nameLength);
  req.seqid = readI32(buf, start + 8 + nameLength);
  req.headerRead = true;
}
