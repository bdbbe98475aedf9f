// Differential test of our writers against the Apache runtime's readers (shared by
// apache-differential.test.ts and differential-run.ts).
//
//  - replies: for a random method in a random transport (framed, buffered, THeader), a random
//    result (each method's response struct, with optional fields present and absent, i64 edges,
//    values of every byte, maps small and large), a CacheError of every code (as result field 1, and
//    as --seed-errors tells it), or a TApplicationException of every type, written by ReplyWriter
//    (and figure-replies.ts), then read by the generated client's recv_<method>: it must read the
//    method, the seqid and every field as written, and nothing may be left over.
//  - calls: CallWriter (our client's and peers' encoder) writes a random call of every method; the
//    Apache server-side reader must read every field as written, and nothing more.

import { BinaryWriter } from "../../src/protocol/binary-writer.ts";
import { CallWriter } from "../../src/protocol/call-writer.ts";
import { APP_ERROR, seedErrorText } from "../../src/protocol/errors.ts";
import { writeFigures, writeInvalidate, writePing, writeStats } from "../../src/protocol/figure-replies.ts";
import { METHOD_GET, METHOD_NAMES, METHOD_SET } from "../../src/protocol/request.ts";
import { ProtocolConnection } from "../../src/protocol/protocol-connection.ts";
import { ReplyWriter } from "../../src/protocol/reply-writer.ts";
import { TRANSPORT_BUFFERED, TRANSPORT_FRAMED } from "../../src/protocol/wire.ts";
import { ApacheTypes, TApplicationException, apacheReadCall, apacheReadReply, bigOf, type ApacheTransport } from "./apache-oracle.ts";
import { METHODS, randomBytes, randomText, shapeOf, viewOfReq } from "./differential-calls.ts";
import { DIFF_LIMITS } from "./differential.ts";
import { checkReader } from "./differential-reader.ts";
import { checkMutatedReply } from "./differential-reply-mutations.ts";
import { mulberry32, type Rng } from "./fuzz.ts";
import { Bytes, MSG, T, message, wrap } from "./wire-builder.ts";

const int = (rng: Rng, n: number) => Math.floor(rng() * n);
const pick = <X>(rng: Rng, xs: readonly X[]): X => xs[int(rng, xs.length)]!;
const json = (v: unknown) => JSON.stringify(v, (_k, x) => (typeof x === "bigint" ? `${x}n` : x));
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
/** asRead is what a reader of a Thrift string gets for `s`: its UTF-8 form (a lone surrogate as U+FFFD). */
const asRead = (s: string | Buffer) => Buffer.from(typeof s === "string" ? Buffer.from(s) : s).toString("utf8");

const I64S = [0, 1, 2 ** 31, 2 ** 32 + 7, 2 ** 53 - 1, 2 ** 53, 2 ** 60, 2 ** 63, 1e300, -1, -(2 ** 53), -(2 ** 63)];
const i64 = (rng: Rng) => (rng() < 0.5 ? pick(rng, I64S) : int(rng, 2 ** 40));
/** onWire is the i64 BinaryWriter.i64 writes for `v`: saturated at ±2^63, exact below. */
const onWire = (v: number) => (v >= 2 ** 63 ? 2n ** 63n - 1024n : v < -(2 ** 63) ? -(2n ** 63n) : BigInt(v));

/** requestFor decodes an empty call of `name` in `transport`: the request a reply answers. */
function requestFor(name: string, seqid: number, transport: ApacheTransport, rng: Rng): ProtocolConnection {
  const args = new Bytes().field(T.STRUCT, 1).stop().stop().bytes();
  const conn = new ProtocolConnection(DIFF_LIMITS, new ReplyWriter(new BinaryWriter(64)));
  conn.push(wrap(transport, message(MSG.CALL, name, seqid, args), { flags: int(rng, 65536), seqid: int(rng, 1000) }));
  if (!conn.nextRequest()) throw new Error("no request");
  return conn;
}

type Expect = { err?: unknown; result?: unknown };

/** writeResult writes a random success reply of `name` and returns what Apache must read. */
function writeResult(rng: Rng, conn: ProtocolConnection, name: string): Expect {
  const w = conn.reply;
  const req = conn.request;
  if (name.endsWith("Get")) {
    const value = randomBytes(rng, rng() < 0.1 ? int(rng, 70_000) : int(rng, 64));
    const ttl = rng() < 0.4 ? -1 : i64(rng);
    w.writeGet(req, value, 0, value.length, ttl);
    return { result: { value: hex(value), ttlRemainingMs: ttl < 0 ? null : onWire(ttl) } };
  }
  switch (shapeOf(name)) {
    case "key": // Delete
    case "set":
    case "group":
    case "values":
    case "auth": {
      if (name.endsWith("Stats")) {
        const c = [i64(rng), i64(rng), i64(rng), i64(rng)] as const;
        writeStats(w, req, ...c);
        return { result: { itemCount: onWire(c[0]), hitCount: onWire(c[1]), missCount: onWire(c[2]), totalCount: onWire(c[3]) } };
      }
      const success = rng() < 0.7;
      const plain = req.transport === TRANSPORT_FRAMED || req.transport === TRANSPORT_BUFFERED;
      if (success && req.method === METHOD_SET && plain && rng() < 0.5) w.writePlainSetOk(req.seqid, req.transport === TRANSPORT_FRAMED);
      else w.writeSuccess(req, success);
      return { result: { success } };
    }
    case "keys": {
      if (name === "PeerInvalidate") break;
      const n = rng() < 0.05 ? 500 + int(rng, 1500) : int(rng, 10);
      const entries = new Map<string, string>();
      w.beginGetMulti(req);
      for (let i = 0; i < n; i++) {
        const t = randomText(rng); // any bytes: a node answers the keys it was asked, each once
        const key = Buffer.concat([Buffer.isBuffer(t) ? t : Buffer.from(t), Buffer.from(String(i))]);
        const value = randomBytes(rng, int(rng, 100));
        const at = w.addGetMultiEntry(key, 0, key.length, value.length);
        w.out.buffer.set(value, at);
        entries.set(asRead(key), hex(value));
      }
      w.endGetMulti();
      return { result: { values: Object.fromEntries([...entries].sort()) } };
    }
    case "ping": {
      const nodeId = String(randomText(rng));
      const uptime = i64(rng);
      const lease = rng() < 0.5 ? -1 : i64(rng);
      writePing(w, req, nodeId, uptime, lease);
      return { result: { nodeId: asRead(nodeId), uptimeMs: onWire(uptime), leaseMs: lease < 0 ? null : onWire(lease) } };
    }
    case "none": {
      const figures = Array.from({ length: int(rng, 6) }, (_, i) => [`${String(randomText(rng))}.${i}`, i64(rng)] as const);
      writeFigures(w, req, figures);
      return { result: { figures: Object.fromEntries(figures.map(([k, v]) => [asRead(k), onWire(v)]).sort()) } };
    }
  }
  const dropped = i64(rng); // PeerInvalidate
  writeInvalidate(w, req, dropped);
  return { result: { dropped: onWire(dropped) } };
}

/** viewOfResult turns what the generated client returned into the shape of Expect. */
function viewOfResult(x: Record<string, unknown>): unknown {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(x)) {
    if (v === null || typeof v === "boolean" || typeof v === "string") out[k] = v;
    else if (Buffer.isBuffer(v)) out[k] = hex(v);
    else if ((v as { buffer?: unknown }).buffer !== undefined && (v as { offset?: unknown }).offset !== undefined) out[k] = bigOf(v);
    else out[k] = Object.fromEntries(Object.entries(v as Record<string, unknown>).map(([mk, mv]) => [mk, Buffer.isBuffer(mv) ? hex(mv) : bigOf(mv)]).sort());
  }
  return out;
}

function fail(what: string, got: unknown, want: unknown): never {
  throw new Error(`${what}\n  apache read: ${json(got)}\n  written:     ${json(want)}`);
}

/** checkReply writes one random reply and has the generated client read it. */
function checkReply(rng: Rng): void {
  const transport = pick(rng, ["framed", "buffered", "theader"] as const);
  const name = pick(rng, METHODS);
  const seqid = pick(rng, [0, -1, 2 ** 31 - 1, -(2 ** 31), int(rng, 1 << 20)]);
  const conn = requestFor(name, seqid, transport, rng);
  const w = conn.reply;
  const req = conn.request;
  let want: Expect;
  const kind = int(rng, 10);
  if (kind < 6) {
    want = writeResult(rng, conn, name);
  } else if (kind < 9) {
    const code = 1 + int(rng, 9);
    const text = String(randomText(rng, true));
    w.seedErrors = kind === 8;
    const seed = w.seedErrors && req.method >= METHOD_GET && req.method <= METHOD_NAMES.indexOf("SetMulti");
    if (req.method === METHOD_GET && !seed && (transport === "framed" || transport === "buffered") && rng() < 0.5) w.writePlainGetError(seqid, code, Buffer.from(text), transport === "framed");
    else w.writeCacheError(req, code, text);
    want = seed ? { err: { type: APP_ERROR.INTERNAL_ERROR, message: asRead(seedErrorText(code, text)) } } : { err: { code, message: asRead(text) } };
  } else {
    const type = int(rng, 11);
    const text = String(randomText(rng, true));
    w.writeApplicationException(req, type, text);
    want = { err: { type, message: asRead(text) } };
  }
  const bytes = w.out.buffer.slice(0, w.out.length);
  const got = apacheReadReply(bytes, transport);
  if (got.name !== name || got.seqid !== seqid || got.trailing !== 0) fail("reply header or length differs", { name: got.name, seqid: got.seqid, trailing: got.trailing }, { name, seqid });
  let view: Expect;
  if (got.err instanceof ApacheTypes.CacheError) view = { err: { code: got.err.code, message: got.err.message } };
  else if (got.err instanceof TApplicationException) view = { err: { type: got.err.type, message: got.err.message ?? "" } };
  else if (got.err !== null && got.err !== undefined) fail("Apache failed to read the reply", String(got.err), want);
  else view = { result: viewOfResult(got.result) };
  if (json(view) !== json(want)) fail(`${name} reply read differently (${transport})`, view, want);
}

/** checkCall writes one random call with CallWriter and has the Apache server-side reader read it. */
function checkCall(rng: Rng): void {
  const name = pick(rng, METHODS);
  const seqid = pick(rng, [0, -2, 2 ** 31 - 1, int(rng, 1 << 20)]);
  const w = new CallWriter(new BinaryWriter(64));
  const req: Record<string, unknown> = {};
  const text = () => {
    const t = randomText(rng);
    return typeof t === "string" ? t : new Uint8Array(t);
  };
  w.begin(METHOD_NAMES.indexOf(name), seqid);
  const shape = shapeOf(name);
  if (shape !== "ping" && shape !== "auth" && shape !== "none") w.bytesOrText(1, (req.group = text()) as string | Uint8Array);
  if (shape === "key" || shape === "set") w.bytesOrText(2, (req.key = text()) as string | Uint8Array);
  if (shape === "set") w.binary(3, (req.value = randomBytes(rng, int(rng, 300))), 0, (req.value as Buffer).length);
  if (shape === "keys" || shape === "invalidate") {
    const keys = Array.from({ length: rng() < 0.05 ? 2000 : int(rng, 8) }, text);
    w.listBegin(2, keys.length);
    for (const k of keys) w.element(k);
    req.keys = keys;
  }
  if (shape === "values") {
    const values = new Map(Array.from({ length: int(rng, 8) }, (_, i) => [`${String(randomText(rng))}${i}`, randomBytes(rng, int(rng, 50))]));
    w.mapBegin(2, values.size);
    for (const [k, v] of values) (w.element(k), w.element(v));
    req.values = Object.fromEntries(values);
  }
  if (shape === "set" || shape === "values") {
    const ttlMs = rng() < 0.3 ? undefined : pick(rng, [0, 0.4, 999.5, 1000, 1001, -1, -0.5, 2 ** 53, int(rng, 1e9)]);
    w.ttl(shape === "set" ? 4 : 3, ttlMs);
    const ms = ttlMs === undefined ? undefined : ttlMs > 0 ? Math.ceil(ttlMs) : ttlMs;
    req.ttl = ms === undefined ? 0n : BigInt(Math.floor(Math.ceil(ms / 1000)));
    req.ttlMs = ms === undefined ? null : BigInt(Math.floor(ms));
  }
  if (shape === "invalidate" && rng() < 0.5) w.bool(3, (req.all = rng() < 0.5) as boolean);
  if (shape === "ping") {
    if (rng() < 0.7) w.text(1, (req.sender = String(randomText(rng))) as string);
    if (rng() < 0.5) w.bool(2, (req.lease = rng() < 0.5) as boolean);
  }
  if (shape === "auth") w.text(1, (req.token = String(randomText(rng))) as string);
  w.end();
  const bytes = w.out.buffer.slice(0, w.out.length);
  const got = apacheReadCall(bytes, "framed");
  if (got.kind !== "request" || got.name !== name || got.seqid !== seqid || got.trailing !== 0) fail("Apache did not read the call whole", got, { name, seqid });
  const big = (v: unknown) => (typeof v === "bigint" ? { buffer: (() => { const b = Buffer.alloc(8); b.writeBigInt64BE(v); return b; })(), offset: 0 } : v);
  const asWritten = viewOfReq(name, { ...req, keys: (req.keys as unknown[] | undefined)?.map((k) => (typeof k === "string" ? k : Buffer.from(k as Uint8Array))), group: typeof req.group === "string" || req.group === undefined ? req.group : Buffer.from(req.group as Uint8Array), key: typeof req.key === "string" || req.key === undefined ? req.key : Buffer.from(req.key as Uint8Array), ttl: big(req.ttl), ttlMs: big(req.ttlMs) });
  const read = viewOfReq(name, got.req);
  // String fields are compared as Apache's readString decodes them; a map's keys too.
  if (json(lossyView(read)) !== json(lossyView(asWritten))) fail(`${name} call read differently`, read, asWritten);
}

type View = Record<string, unknown>;

/** lossyView decodes a view's string fields (hex) as Apache's readString does; binary ones stay. */
function lossyView(v: View): View {
  const l = (h: string) => Buffer.from(Buffer.from(h, "hex").toString("utf8")).toString("hex");
  const out = { ...v };
  for (const k of ["group", "key", "sender", "token"]) if (typeof out[k] === "string") out[k] = l(out[k] as string);
  if (Array.isArray(out.keys)) out.keys = (out.keys as string[]).map(l);
  if (Array.isArray(out.entries)) out.entries = (out.entries as [string, string][]).map(([k, e]) => [l(k), e]).sort();
  return out;
}

/**
 * runReplyDifferential runs, from `seed`, `cases` of each: our replies read by Apache's client,
 * our calls read by Apache's server, Apache's server's replies read by our ReplyReader, and those
 * replies mutated twice read by both (`mutated` counts them by class, "" for read alike).
 */
export function runReplyDifferential(seed: number, cases: number): { replies: number; calls: number; mutated: Record<string, number> } {
  const rng = mulberry32(seed);
  const mutated: Record<string, number> = {};
  for (let i = 0; i < cases; i++) {
    try {
      checkReply(rng);
      checkCall(rng);
      checkReader(rng);
      checkMutatedReply(rng, mutated);
    } catch (e) {
      throw new Error(`reply/call differential failure: seed=${seed} case=${i}\n${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    }
  }
  return { replies: cases, calls: cases, mutated };
}
