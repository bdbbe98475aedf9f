/**
 * Helpers for client tests: reply frames built by hand from the spec (test/protocol/wire-builder,
 * independent of src/protocol's writers), and StubServer, a Bun.listen server on port 0 that
 * decodes calls with the server's decoder and answers through a replaceable handler. The default
 * handler serves every method, seed and peer, from a Map, so peer variants can be tested before
 * (and independently of) the node serving them.
 */
import type { Socket, TCPSocketListener } from "bun";
import type { EntryRanges } from "../../src/protocol/call-writer.ts";
import { DEFAULT_LIMITS } from "../../src/protocol/limits.ts";
import { ProtocolConnection } from "../../src/protocol/protocol-connection.ts";
import {
  METHOD_CLEAR,
  METHOD_DELETE,
  METHOD_GET,
  METHOD_GET_MULTI,
  METHOD_NAMES,
  METHOD_PEER_INVALIDATE,
  METHOD_PEER_PING,
  METHOD_SET,
  METHOD_SET_MULTI,
  METHOD_STATS,
  type Request,
  baseMethod,
} from "../../src/protocol/request.ts";
import { Bytes, MSG, T, framed, message } from "../protocol/wire-builder.ts";

const utf8 = new TextDecoder();

/** StubCall is a decoded call, as plain values. */
export interface StubCall {
  method: number;
  name: string;
  seqid: number;
  group: string;
  key: string;
  value: Uint8Array;
  ttlSeconds: number;
  ttlMs: number | undefined;
  /** GetMulti keys / PeerInvalidate keys; SetMulti entries as [key, value]. */
  keys: string[];
  entries: [string, Uint8Array][];
  all: boolean;
  /** conn numbers the connection the call came on, in the order the stub accepted them (0, 1, …). */
  conn: number;
}

/** A handler returns the reply bytes to send, or null to send nothing. */
export type StubHandler = (call: StubCall, server: StubServer) => Uint8Array | null;

// ---- replies (spec-built) ----

const reply = (name: string, seqid: number, body: Bytes): Uint8Array => framed(message(MSG.REPLY, name, seqid, body.bytes()));

export function getReply(name: string, seqid: number, value: Uint8Array, ttlRemainingMs?: number): Uint8Array {
  const b = new Bytes().field(T.STRUCT, 0).field(T.STRING, 1).str(value);
  if (ttlRemainingMs !== undefined) b.field(T.I64, 2).i64(ttlRemainingMs);
  return reply(name, seqid, b.stop().stop());
}
export function boolReply(name: string, seqid: number, success: boolean): Uint8Array {
  return reply(name, seqid, new Bytes().field(T.STRUCT, 0).field(T.BOOL, 1).u8(success ? 1 : 0).stop().stop());
}
export function i64Reply(name: string, seqid: number, values: number[]): Uint8Array {
  const b = new Bytes().field(T.STRUCT, 0);
  values.forEach((v, i) => b.field(T.I64, i + 1).i64(v));
  return reply(name, seqid, b.stop().stop());
}
export function multiReply(name: string, seqid: number, entries: [string, Uint8Array][]): Uint8Array {
  const b = new Bytes().field(T.STRUCT, 0).field(T.MAP, 1).u8(T.STRING, T.STRING).i32(entries.length);
  for (const [k, v] of entries) b.str(k).str(v);
  return reply(name, seqid, b.stop().stop());
}
/** pingReply is a PingResponse; `leaseMs` (PingResponse field 3) only when given. */
export function pingReply(seqid: number, nodeId: string, uptimeMs: number, leaseMs?: number): Uint8Array {
  const body = new Bytes().field(T.STRUCT, 0).field(T.STRING, 1).str(nodeId).field(T.I64, 2).i64(uptimeMs);
  if (leaseMs !== undefined) body.field(T.I64, 3).i64(leaseMs);
  return reply("PeerPing", seqid, body.stop().stop());
}
export function cacheErrorReply(name: string, seqid: number, code: number, msg: string): Uint8Array {
  return reply(name, seqid, new Bytes().field(T.STRUCT, 1).field(T.I32, 1).i32(code).field(T.STRING, 2).str(msg).stop().stop());
}
export function appExceptionReply(name: string, seqid: number, type: number, msg: string): Uint8Array {
  return framed(message(MSG.EXCEPTION, name, seqid, new Bytes().field(T.STRING, 1).str(msg).field(T.I32, 2).i32(type).stop().bytes()));
}

// ---- the stub ----

interface StubSocketData {
  proto: ProtocolConnection;
  id: number;
}

export class StubServer {
  readonly calls: StubCall[] = [];
  readonly store = new Map<string, Uint8Array>();
  handler: StubHandler = serve;
  connections = 0;
  dataEvents = 0;
  readonly sockets = new Set<Socket<StubSocketData>>();
  private readonly listener: TCPSocketListener<StubSocketData>;
  private waiters: (() => void)[] = [];

  constructor(port = 0) {
    const stub = this;
    this.listener = Bun.listen<StubSocketData>({
      hostname: "127.0.0.1",
      port,
      socket: {
        binaryType: "uint8array",
        open(socket) {
          socket.data = { proto: new ProtocolConnection(DEFAULT_LIMITS), id: stub.connections++ };
          stub.sockets.add(socket);
        },
        data(socket, chunk: Uint8Array) {
          stub.dataEvents++;
          const proto = socket.data.proto;
          proto.push(chunk);
          while (proto.nextRequest()) {
            const call = toCall(proto.request, socket.data.id);
            stub.calls.push(call);
            const out = stub.handler(call, stub);
            if (out !== null) socket.write(out);
            stub.wake();
          }
        },
        close(socket) {
          stub.sockets.delete(socket);
        },
      },
    });
  }

  get port(): number {
    return this.listener.port;
  }

  /** write sends `bytes` on connection `conn` (StubCall.conn), if it is still open: a reply made later. */
  write(conn: number, bytes: Uint8Array): void {
    for (const socket of this.sockets) if (socket.data.id === conn) socket.write(bytes);
  }

  /** nextCall resolves once the stub has received `count` calls in all. */
  async callCount(count: number): Promise<void> {
    while (this.calls.length < count) await new Promise<void>((r) => this.waiters.push(r));
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  close(): void {
    this.listener.stop(true);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

function toCall(req: Request, conn: number): StubCall {
  const b = req.buffer;
  const str = (s: number, l: number) => utf8.decode(b.subarray(s, s + l));
  const keys: string[] = [];
  const entries: [string, Uint8Array][] = [];
  for (let i = 0; i < req.itemCount; i++) {
    const [ks, kl, vs, vl] = req.items.subarray(i * 4, i * 4 + 4);
    keys.push(str(ks!, kl!));
    entries.push([str(ks!, kl!), b.slice(vs!, vs! + vl!)]);
  }
  return {
    method: req.method,
    name: METHOD_NAMES[req.method] ?? "?",
    seqid: req.seqid,
    group: str(req.groupStart, req.groupLength),
    key: str(req.keyStart, req.keyLength),
    value: b.slice(req.valueStart, req.valueStart + req.valueLength),
    ttlSeconds: req.ttlSeconds,
    ttlMs: req.hasTtlMs ? req.ttlMs : undefined,
    keys,
    entries,
    all: req.all,
    conn,
  };
}

/** serve is the default handler: every method from the stub's Map; ttlRemainingMs 777 on gets. */
export function serve(c: StubCall, stub: StubServer): Uint8Array {
  const id = (k: string) => `${c.group}/${k}`;
  switch (baseMethod(c.method)) {
    case METHOD_GET: {
      const v = stub.store.get(id(c.key));
      return v === undefined ? cacheErrorReply(c.name, c.seqid, 1, "key not found") : getReply(c.name, c.seqid, v, 777);
    }
    case METHOD_SET:
      stub.store.set(id(c.key), c.value);
      return boolReply(c.name, c.seqid, true);
    case METHOD_DELETE:
      return boolReply(c.name, c.seqid, stub.store.delete(id(c.key)));
    case METHOD_CLEAR:
      stub.store.clear();
      return boolReply(c.name, c.seqid, true);
    case METHOD_STATS:
      return i64Reply(c.name, c.seqid, [stub.store.size, 1, 2, 3]);
    case METHOD_GET_MULTI:
      return multiReply(c.name, c.seqid, c.keys.filter((k) => stub.store.has(id(k))).map((k) => [k, stub.store.get(id(k))!]));
    case METHOD_SET_MULTI:
      for (const [k, v] of c.entries) stub.store.set(id(k), v);
      return boolReply(c.name, c.seqid, true);
    case METHOD_PEER_INVALIDATE:
      return i64Reply(c.name, c.seqid, [c.all ? 99 : c.keys.length]);
    case METHOD_PEER_PING:
      return pingReply(c.seqid, "stub:1", 42);
    default:
      return appExceptionReply(c.name, c.seqid, 1, `Invalid method name: '${c.name}'`);
  }
}

/** closedPort returns a port that nothing listens on (bound, then released). */
export function closedPort(): number {
  const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = l.port;
  l.stop(true);
  return port;
}

/** until resolves once `cond()` holds, polling every few ms; rejects after `ms`. */
export async function until(cond: () => boolean, ms = 3000): Promise<void> {
  const end = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > end) throw new Error("condition not met in time");
    await Bun.sleep(5);
  }
}

/** rejection returns the error a promise rejects with (fails if it resolves). */
export async function rejection(p: Promise<unknown>): Promise<{ code: number; message: string; name: string }> {
  try {
    await p;
  } catch (e) {
    return e as { code: number; message: string; name: string };
  }
  throw new Error("expected a rejection");
}

/** partOf lays `keys` out as a routed GetMulti's part (EntryRanges), as routed-parts.ts hands them to peerGetMultiOf. */
export function partOf(keys: string[]): EntryRanges {
  const src = new TextEncoder().encode(keys.join(""));
  const items = new Int32Array(keys.length * 4);
  let at = 0;
  keys.forEach((k, i) => {
    items[i * 4] = at;
    items[i * 4 + 1] = k.length;
    at += k.length;
  });
  return { src, items, indexes: keys.map((_, i) => i), from: 0, to: keys.length };
}
