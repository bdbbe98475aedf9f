// Differential test of our client's reply reader (ReplyReader) against the Apache generated
// client on MUTATED replies (shared by apache-differential.test.ts and differential-run.ts).
//
// A reply the Apache generated server writes for a random call (differential-reader.ts: results,
// CacheErrors, application exceptions) is mutated in its message (flips, truncation, extension,
// type and length bytes: fuzz.ts mutate, differential.ts retype) and framed again, then read by
// ReplyReader as the call's reply (the call's method: a client matches a reply by its seqid) and by
// the generated client's recv_<name> (the Apache connection picks recv_ by the reply's name). Our
// reader must never throw anything but ProtocolError; when both read a reply they must read the same
// outcome and fields; a difference must fall in a known class (REPLY_CLASSES), counted.

import { ProtocolError } from "../../src/protocol/errors.ts";
import { resolveLimits } from "../../src/protocol/limits.ts";
import { REPLY_APP_ERROR, REPLY_CACHE_ERROR, REPLY_FAILED, REPLY_MISSING, ReplyReader } from "../../src/protocol/reply-reader.ts";
import { METHOD_NAMES } from "../../src/protocol/request.ts";
import { ApacheTypes, TApplicationException, apacheReadReply, apacheWriteCall, apacheWriteReply, bigOf } from "./apache-oracle.ts";
import { randomText, shapeOf } from "./differential-calls.ts";
import { READ, randomResult } from "./differential-reader.ts";
import { DIFF_LIMITS, retype } from "./differential.ts";
import { mutate, type Rng } from "./fuzz.ts";

const int = (rng: Rng, n: number) => Math.floor(rng() * n);
const pick = <X>(rng: Rng, xs: readonly X[]): X => xs[int(rng, xs.length)]!;
const json = (v: unknown) => JSON.stringify(v);
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
/** lossy: what a generated reader's readString makes of bytes, as UTF-8 hex. */
const lossy = (b: Uint8Array) => Buffer.from(Buffer.from(b).toString("utf8")).toString("hex");
const text = (s: unknown) => (typeof s === "string" ? Buffer.from(s).toString("hex") : "");
const num = (v: unknown, absent: number) => (v === null || v === undefined ? absent : Number(bigOf(v)));

/** Without the client-side limits on values and keys (Apache has none), to read on past them. */
const LIFTED = resolveLimits({ ...DIFF_LIMITS, maxKeyBytes: 0x7fffffff, maxValueBytes: 0x7fffffff });

type View = { kind: string } & Record<string, unknown>;

/** fieldsOf views the response struct `r` of `name` as ReplyReader reads one (its documented rules applied). */
function fieldsOf(name: string, r: Record<string, unknown>): Record<string, unknown> {
  if (name.endsWith("Get")) {
    // ReplyReader's rule: a negative ttlRemainingMs (outside the contract) is read as none left.
    const ttl = num(r.ttlRemainingMs, -1);
    return { value: Buffer.isBuffer(r.value) ? hex(r.value) : "", ttl: r.ttlRemainingMs !== null && ttl < 0 ? 0 : ttl };
  }
  if (name.endsWith("Stats")) return { counts: [num(r.itemCount, 0), num(r.hitCount, 0), num(r.missCount, 0), num(r.totalCount, 0)] };
  if (name === "PeerInvalidate") return { dropped: num(r.dropped, 0) };
  if (name === "PeerPing") return { nodeId: text(r.nodeId), uptime: num(r.uptimeMs, 0), lease: num(r.leaseMs, -1) };
  if (shapeOf(name) === "keys") {
    const values = (r.values as Record<string, Buffer> | null) ?? {};
    return { entries: Object.entries(values).map(([k, v]) => [text(k), hex(v)]).sort() };
  }
  return { success: r.success === true };
}

function apacheView(frame: Uint8Array, seen: { otherElements: boolean }): View {
  let got: ReturnType<typeof apacheReadReply>;
  try {
    got = apacheReadReply(frame, "framed", seen);
  } catch (e) {
    return { kind: "error", message: String((e as Error)?.message ?? e) };
  }
  const e = got.err as { code?: number; type?: number; message?: string };
  if (e instanceof ApacheTypes.CacheError) return { kind: "cache", name: got.name, seqid: got.seqid, code: e.code ?? 0, message: text(e.message) };
  if (e instanceof TApplicationException) return { kind: "app", name: got.name, seqid: got.seqid, code: e.type ?? 0, message: text(e.message) };
  if (typeof e === "string") return { kind: "missing", name: got.name, seqid: got.seqid };
  return { kind: "ok", name: got.name, seqid: got.seqid, ...fieldsOf(got.name, got.result as Record<string, unknown>) };
}

function ourView(frame: Uint8Array, method: number, lifted: boolean): View {
  const r = new ReplyReader(lifted ? LIFTED : DIFF_LIMITS);
  try {
    r.begin(frame, 4, frame.length);
    r.readResult(method, 1 << 20);
  } catch (e) {
    if (e instanceof ProtocolError) return { kind: "error", message: e.message };
    throw e;
  }
  const name = METHOD_NAMES[method]!;
  const head = { name: r.nameLength === 0 ? "" : name, seqid: r.seqid };
  const range = (start: number, length: number) => r.buffer.subarray(start, start + length);
  if (r.outcome === REPLY_CACHE_ERROR && r.errorText !== "") return { kind: "limit", ...head };
  if (r.outcome === REPLY_CACHE_ERROR) return { kind: "cache", ...head, code: r.errorCode, message: lossy(range(r.messageStart, r.messageLength)) };
  if (r.outcome === REPLY_APP_ERROR) return { kind: "app", ...head, code: r.errorCode, message: lossy(range(r.messageStart, r.messageLength)) };
  if (r.outcome === REPLY_MISSING) return { kind: "missing", ...head };
  const fields: Record<string, unknown> = {};
  if (name.endsWith("Get")) (fields.value = hex(range(r.valueStart, r.valueLength)), (fields.ttl = r.ttlRemainingMs));
  else if (name.endsWith("Stats")) fields.counts = [r.itemCount, r.hitCount, r.missCount, r.totalCount];
  else if (name === "PeerInvalidate") fields.dropped = r.dropped;
  else if (name === "PeerPing") (fields.nodeId = lossy(range(r.nodeIdStart, r.nodeIdLength)), (fields.uptime = r.uptimeMs), (fields.lease = r.leaseMs));
  else if (shapeOf(name) === "keys") {
    const last = new Map<string, string>(); // an object's keys: the last of a key wins
    for (let i = 0; i < r.entryCount; i++) last.set(lossy(range(r.items[i * 4]!, r.items[i * 4 + 1]!)), hex(range(r.items[i * 4 + 2]!, r.items[i * 4 + 3]!)));
    fields.entries = [...last.entries()].sort();
  } else fields.success = r.success && r.outcome !== REPLY_FAILED;
  return { kind: "ok", ...head, ...fields };
}

const errorIs = (v: View, re: RegExp) => v.kind === "error" && re.test(String(v.message));

/** REPLY_CLASSES: the known ways ReplyReader and Apache's generated client read a mutated reply apart. */
export const REPLY_CLASSES: Record<string, (ours: View, apache: View, name: string, otherElements: boolean) => boolean> = {
  "reply named another method (or none): we refuse it, Apache reads it as that method's": (o, a, name) => errorIs(o, /name does not match/) || a.name !== name,
  "bytes after the reply in its frame: we refuse, Apache ignores them": (o) => errorIs(o, /bytes left after the reply/),
  "a result field 0 and 1 both: we refuse, Apache takes the error": (o) => errorIs(o, /more than one result/),
  "message type other than REPLY/EXCEPTION, or a non-strict header: we refuse, Apache reads a reply": (o) => errorIs(o, /unexpected message type|not strict binary/),
  "negative count, or an element type that is no Thrift type: we refuse, Apache reads an empty container": (o) => errorIs(o, /negative (container|map) size|invalid (container element|map key or value) type/),
  "list/map of other element types: we skip the field, Apache reads them as strings": (_o, _a, _n, other) => other,
  "Apache bug: its skip of a uuid field throws unless the 16 bytes are an RFC 4122 id": (_o, a) => a.kind === "error" && /UUID/.test(String(a.message)),
  "nesting deeper than 64": (o, a) => errorIs(o, /nesting too deep/) || errorIs(a, /depth/i),
};

export const REPLY_LIMIT = "value over maxValueBytes or key over maxKeyBytes: we read a client-side CacheError, Apache the reply";

/** compareReply reads one mutated reply both ways; returns the class of a difference, "" when none. */
function compareReply(frame: Uint8Array, method: number): string {
  let ours = ourView(frame, method, false);
  let cls = "";
  if (ours.kind === "limit") {
    ours = ourView(frame, method, true);
    cls = REPLY_LIMIT;
  }
  const seen = { otherElements: false };
  const apache = apacheView(frame, seen);
  if (json(ours) === json(apache) || (ours.kind === "error" && apache.kind === "error")) return cls;
  for (const [name, matches] of Object.entries(REPLY_CLASSES)) if (matches(ours, apache, METHOD_NAMES[method]!, seen.otherElements)) return name;
  throw new Error(`unclassified reply disagreement\n  ours:   ${json(ours)}\n  apache: ${json(apache)}\n  frame:  ${hex(frame)}`);
}

/** checkMutatedReply makes one Apache-written reply, mutates it twice, and compares both reads. */
export function checkMutatedReply(rng: Rng, classes: Record<string, number>): void {
  const name = pick(rng, READ);
  const method = METHOD_NAMES.indexOf(name);
  const call = apacheWriteCall("framed", name, {}, int(rng, 1 << 20), () => {});
  const kind = int(rng, 10);
  const message = String(randomText(rng));
  const err = kind < 7 ? null : kind < 9 ? new ApacheTypes.CacheError({ code: 1 + int(rng, 9), message }) : new Error(message);
  const reply = apacheWriteReply(call, "framed", err, kind < 7 ? randomResult(rng, name).result : null);
  for (let m = 0; m < 2; m++) {
    const msg = reply.subarray(4);
    const mutated = rng() < 0.3 ? retype(rng, msg) : mutate(rng, msg, msg);
    const frame = new Uint8Array(4 + mutated.length);
    new DataView(frame.buffer).setInt32(0, mutated.length);
    frame.set(mutated, 4);
    const cls = compareReply(frame, method);
    classes[cls] = (classes[cls] ?? 0) + 1;
  }
}
