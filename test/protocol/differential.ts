// Differential test of our request decoder against the Apache runtime (shared by
// apache-differential.test.ts and differential-run.ts).
//
// Each case is a random valid call of a random method (differential-calls.ts), written by the
// Apache generated client in a random transport (framed, buffered, THeader), with random extra
// fields. Two checks:
//  1. valid: our pure decoder (decodeMessage) reads every field exactly as written (bytes, not
//     strings), the whole message and nothing more, or refuses it for a limit the call is known to
//     break; Apache's own server-side reader reads it back too (the oracle checks itself).
//  2. mutated: the bytes flipped, truncated, extended, lengths and types changed (fuzz.ts mutate,
//     plus type and length bytes of our own). Our decoder must return (never throw anything but
//     through its result); when both accept, both read the same method, seqid and fields (strings
//     compared as Apache's readString decodes them); when both wait or both refuse, they agree;
//     when only one side accepts, the difference must fall in a known class (CLASSES), counted.
// Any other outcome throws with the seed, the case and the input's hex.

import { decodeMessage, type DecodeResult, type DecodedRequest } from "../../src/protocol/decode-message.ts";
import { CacheError, ERROR_CODE, ProtocolError } from "../../src/protocol/errors.ts";
import { resolveLimits, type ProtocolLimits } from "../../src/protocol/limits.ts";
import { MESSAGE_CALL, TRANSPORT_BUFFERED, TRANSPORT_FRAMED, TRANSPORT_THEADER } from "../../src/protocol/wire.ts";
import { APACHE_MAX_FRAME, apacheReadCall, apacheWriteCall, type ApacheCall, type ApacheTransport } from "./apache-oracle.ts";
import { ExtraPlan, METHODS, expectedRefusals, randomRequest, randomText, shapeOf, viewOfOurs, viewOfReq } from "./differential-calls.ts";
import { mulberry32, mutate, type Rng } from "./fuzz.ts";

const int = (rng: Rng, n: number) => Math.floor(rng() * n);
const pick = <X>(rng: Rng, xs: readonly X[]): X => xs[int(rng, xs.length)]!;

/**
 * The decoder's limits here: the defaults (keys 250 B, nesting 64), values to 8 KiB and frames to
 * 1 MiB so that the value and frame limits are met often without megabytes of input.
 */
export const DIFF_LIMITS: ProtocolLimits = resolveLimits({ maxValueBytes: 8192, maxFrameBytes: 1 << 20 });

const TRANSPORTS: readonly ApacheTransport[] = ["framed", "buffered", "theader"];
const TRANSPORT_IDS: Record<ApacheTransport, number> = { framed: TRANSPORT_FRAMED, buffered: TRANSPORT_BUFFERED, theader: TRANSPORT_THEADER };
const INFO_KEYS = ["auth", "k", "trace-id", ""];

const json = (v: unknown) => JSON.stringify(v);

/** A valid case: its bytes, and what the decoder must make of them. */
interface Written {
  transport: ApacheTransport;
  name: string;
  seqid: number;
  req: Record<string, unknown> | null;
  info: Record<string, string>;
  bytes: Uint8Array;
  refusals: number[];
  tooDeep: boolean;
}

function writeCase(rng: Rng): Written {
  const transport = pick(rng, TRANSPORTS);
  const name = pick(rng, METHODS);
  const seqid = pick(rng, [0, 1, -1, -2, 2 ** 31 - 1, -(2 ** 31), int(rng, 1 << 20)]);
  const req = randomRequest(rng, name, DIFF_LIMITS);
  const plan = new ExtraPlan(rng, rng() < 0.5 ? 0 : rng() < 0.7 ? 0.2 : 0.6, rng() < 0.03);
  const info: Record<string, string> = {};
  if (transport === "theader") for (let i = int(rng, 3); i > 0; i--) info[pick(rng, INFO_KEYS)] = String(randomText(rng));
  const bytes = apacheWriteCall(transport, name, req, seqid, plan.inject, info);
  return { transport, name, seqid, req, info, bytes, refusals: expectedRefusals(name, req, DIFF_LIMITS), tooDeep: plan.maxDepth > DIFF_LIMITS.maxDepth };
}

function fail(what: string, ours: unknown, theirs: unknown): never {
  throw new Error(`${what}\n  ours:   ${json(ours)}\n  apache: ${json(theirs)}`);
}

/** checkValid asserts the decoder reads a valid case exactly as written (see file header). */
function checkValid(c: Written): void {
  const ours = decodeMessage(c.bytes, DIFF_LIMITS);
  const frame = c.transport === "buffered" ? c.bytes.length : c.bytes.length - 4;
  if (c.tooDeep || frame > DIFF_LIMITS.maxFrameBytes) {
    if (ours.kind !== "error" || !(ours.error instanceof ProtocolError)) fail("a call past the nesting or frame limit was not refused", brief(ours), c.bytes.length);
    return;
  }
  if (c.refusals.length > 0) {
    if (ours.kind !== "error" || !(ours.error instanceof CacheError) || !c.refusals.includes(ours.error.code)) fail(`expected a refusal ${json(c.refusals)}`, brief(ours), null);
    return;
  }
  if (ours.kind !== "request") fail("a valid call was not decoded", brief(ours), null);
  const got = { name: ours.methodName, seqid: ours.seqid, type: ours.messageType, transport: ours.transport, consumed: ours.consumed, ...viewOfOurs(ours, false) };
  const want = { name: c.name, seqid: c.seqid, type: MESSAGE_CALL, transport: TRANSPORT_IDS[c.transport], consumed: c.bytes.length, ...viewOfReq(c.name, c.req) };
  if (json(got) !== json(want)) fail("decoded fields differ from what the Apache client wrote", got, want);
  if (c.transport === "theader") {
    const headers = Object.fromEntries(ours.infoHeaders.map((h) => [Buffer.from(h.key).toString(), Buffer.from(h.value).toString()]));
    const written = Object.fromEntries(Object.entries(c.info).map(([k, v]) => [k, Buffer.from(v).toString()])); // (a lone surrogate goes as U+FFFD)
    if (json(headers) !== json(written)) fail("THeader info headers differ", headers, written);
  }
  // The oracle reads its own client's bytes back (deep extras aside: its skip depth is its own).
  const apache = apacheReadCall(c.bytes, c.transport);
  if (apache.kind !== "request" || json(viewOfReq(c.name, apache.req)) !== json(viewOfOurs(ours, true))) fail("Apache does not read its own call as we do", viewOfOurs(ours, true), apache);
}

const brief = (r: DecodeResult) => (r.kind === "error" ? { kind: r.kind, error: r.error.name, message: r.error.message } : r.kind === "request" ? { kind: r.kind, name: r.methodName } : r);

const OTHER_TRANSPORT = "first bytes name another transport than the Apache server's configured one";
const UUID_BUG = "Apache bug: its skip of a uuid field throws unless the 16 bytes are an RFC 4122 id (uuid's stringify validates)";

/**
 * CLASSES: the known ways our decoder and Apache's reader differ on a mutated input, each a limit or
 * rule of ours or a laxness of Apache's (docs/wire.md lists them, under Transports). Each takes
 * our result, Apache's, and the input, and says whether the disagreement is of its kind.
 */
export const CLASSES: Record<string, (ours: DecodeResult, apache: ApacheCall, input: Uint8Array, transport: ApacheTransport) => boolean> = {
  "nesting: ours ≤ 64 counted from the message, Apache's ≤ 64 counted from each skipped value": (o, a) => errorIs(o, /nesting too deep/) || (a.kind === "error" && /depth/i.test(a.message)),
  "bytes after the message in its frame: we refuse, Apache ignores them": (o, a) => errorIs(o, /bytes left after the message/) && a.kind === "request" && a.trailing > 0,
  "negative container count: we refuse, Apache reads an empty container": (o) => errorIs(o, /negative (container|map) size/),
  "container element type that is no Thrift type: we refuse, Apache reads an empty one": (o) => errorIs(o, /invalid (container element|map key or value) type/),
  "message type other than CALL/ONEWAY: we refuse, Apache's processor ignores the type": (o, a) => errorIs(o, /message type \d+ is not served/) && a.kind === "request",
  "non-strict (old) message header: we refuse, Apache reads it": (o) => errorIs(o, /non-strict binary message|bad protocol version/),
  [OTHER_TRANSPORT]: (o, _a, i, t) =>
    errorIs(o, /unrecognised transport|compact protocol|HTTP request|invalid frame length|frame length 1|header magic/) || (o.kind === "request" && o.transport !== TRANSPORT_IDS[t]) || (t === "buffered" && i[0] !== 0x80) || (t !== "buffered" && (i[0] === 0x80 || (i.length > 4 && i[4] === 0x80 !== (t === "framed")))),
  "THeader: Apache's reader does not bound the message by the frame length (reads from a partial frame, or past its end)": (_o, a, i, t) =>
    t === "theader" && (i.length < 4 || i.length !== 4 + Buffer.from(i).readInt32BE(0) || a.kind === "need-more" || (a.kind === "request" && a.consumed !== i.length)),
  [UUID_BUG]: (o, a) => o.kind !== "error" && a.kind === "error" && /UUID/.test(a.message),
  "invalid field type byte: we refuse it at once, Apache first waits for the field id after it": (o, a) => errorIs(o, /invalid (field )?type/) && a.kind === "need-more",
  "list/map of a declared field with other element types: we skip the field, Apache reads the elements as strings": (_o, a) => a.otherElements,
  "THeader info entry running past the header: we refuse, Apache stops reading infos there": (o, a) => errorIs(o, /header (string|info count) exceeds|header truncated|header varint/) && a.kind === "request",
};

function errorIs(o: DecodeResult, re: RegExp): boolean {
  return o.kind === "error" && o.error instanceof ProtocolError && re.test(o.error.message);
}

/**
 * Our limits lifted to Apache's, to read on past a refusal: none on keys, values and TTLs; its
 * servers' message limits (TFramedTransport 16,384,000 B; TBufferedTransport, under THeader too, 100 MiB).
 */
const lifted = (t: ApacheTransport) => resolveLimits({ ...DIFF_LIMITS, maxKeyBytes: 0x7fffffff, maxValueBytes: 0x7fffffff, maxFrameBytes: t === "framed" ? APACHE_MAX_FRAME : 100 * 1024 * 1024 });
const LIFTED: Record<ApacheTransport, ProtocolLimits> = { framed: lifted("framed"), buffered: lifted("buffered"), theader: lifted("theader") };
export const CACHE_REFUSAL = "cache-level refusal (key over 250 B, value over the limit, negative ttl): Apache reads them";
export const FRAME_LIMIT = "frame over our limit (1 MiB here; Apache's servers: 16,384,000 B framed, 100 MiB buffered)";

/** justified tells whether the request `d`, read without limits, breaks one that answers `code`. */
function justified(d: DecodedRequest, code: number): boolean {
  const shape = shapeOf(d.methodName);
  const keys = shape === "key" || shape === "set" ? [d.key] : shape === "keys" || shape === "invalidate" || shape === "values" ? d.items.map((i) => i.key) : [];
  const values = shape === "set" ? [d.value] : shape === "values" ? d.items.map((i) => i.value) : [];
  const ttls = shape === "set" || shape === "values" ? [d.ttlSeconds, d.ttlMs ?? 0] : [];
  if (code === ERROR_CODE.INVALID_ARGUMENT) return keys.some((k) => k.length > DIFF_LIMITS.maxKeyBytes) || ttls.some((t) => t < 0);
  return code === ERROR_CODE.VALUE_TOO_LARGE && values.some((v) => v.length > DIFF_LIMITS.maxValueBytes);
}

/** compareMutated runs one mutated input through both readers; returns the class of a difference, "" when none. */
function compareMutated(input: Uint8Array, transport: ApacheTransport): string {
  let ours = decodeMessage(input, DIFF_LIMITS);
  if (ours.kind === "error" && !(ours.error instanceof ProtocolError) && !(ours.error instanceof CacheError)) throw new Error("decodeMessage returned a foreign error");
  // A refusal for one of our limits: read on without it, and compare what that reads.
  let refusal = "";
  if (ours.kind === "error" && (ours.error instanceof CacheError || errorIs(ours, /exceeds the (frame )?limit/))) {
    const refused = ours.error;
    ours = decodeMessage(input, LIFTED[transport]);
    refusal = refused instanceof CacheError ? CACHE_REFUSAL : FRAME_LIMIT;
    if (refused instanceof CacheError && ours.kind === "request" && !justified(ours, refused.code)) fail(`refusal ${refused.code} not justified by what the request holds`, brief(ours), null);
  }
  const apache = apacheReadCall(input, transport);
  if (ours.kind === "error" && ours.error instanceof CacheError) {
    // Still refused without limits: a negative TTL (a rule, not a limit). Apache must read one.
    const v = apache.kind === "request" && apache.known ? viewOfReq(apache.name, apache.req) : {};
    if (ours.error.code === ERROR_CODE.INVALID_ARGUMENT && ((v.ttl as number) < 0 || (v.ttlMs as number) < 0)) return CACHE_REFUSAL;
    if (apache.kind === "error" && /UUID/.test(apache.message)) return UUID_BUG;
    if (CLASSES[OTHER_TRANSPORT]!(ours, apache, input, transport)) return OTHER_TRANSPORT;
    fail("refused, and not for a TTL Apache reads as negative", brief(ours), apache);
  }
  if (ours.kind === "request" && apache.kind === "request" && ours.transport === TRANSPORT_IDS[transport]) {
    // (THeader info headers too: Apache keeps them in an object, the last of a key winning)
    const text = (b: Uint8Array) => Buffer.from(b).toString("utf8");
    const headers = Object.fromEntries(ours.infoHeaders.map((h) => [text(h.key), text(h.value)]));
    const o = { name: ours.methodName, seqid: ours.seqid, view: apache.known ? viewOfOurs(ours, true) : {}, headers };
    const a = { name: apache.name, seqid: apache.seqid, view: apache.known ? viewOfReq(apache.name, apache.req) : {}, headers: apache.headers };
    if (json(o) === json(a) && (transport !== "buffered" || ours.consumed === apache.consumed)) return refusal;
  } else if (ours.kind === apache.kind) {
    return refusal;
  }
  // A length past even Apache's limit: it waits for the bytes (until its limit closes the connection).
  if (errorIs(ours, /exceeds the (frame )?limit/) && apache.kind === "need-more") return FRAME_LIMIT;
  for (const [name, matches] of Object.entries(CLASSES)) if (matches(ours, apache, input, transport)) return name;
  return fail("unclassified disagreement", brief(ours), apache);
}

/** Our own mutations on top of fuzz.ts's: a type byte or a length word changed where one stands. */
export function retype(rng: Rng, bytes: Uint8Array): Uint8Array {
  const out = Uint8Array.from(bytes);
  for (let n = 1 + int(rng, 2); n > 0; n--) {
    // A field header is a type byte then an i16 id: find one by a type code followed by 00.
    const at = int(rng, out.length);
    for (let p = at; p < out.length - 2; p++) {
      if (out[p]! >= 2 && out[p]! <= 16 && out[p + 1] === 0 && rng() < 0.5) {
        if (rng() < 0.5) out[p] = pick(rng, [1, 2, 3, 4, 5, 6, 8, 10, 11, 12, 13, 14, 15, 16, 17, 0x7f]);
        else if (p + 7 <= out.length) new DataView(out.buffer).setInt32(p + 3, pick(rng, [0, 1, -1, 3, 250, 251, 0x7fffffff, out.length]));
        break;
      }
    }
  }
  return out;
}

export interface DifferentialCounts {
  valid: number;
  mutated: number;
  agreed: number;
  classes: Record<string, number>;
}

/** runDifferential runs `cases` valid calls (each also mutated twice) from `seed`. */
export function runDifferential(seed: number, cases: number): DifferentialCounts {
  const rng = mulberry32(seed);
  const counts: DifferentialCounts = { valid: 0, mutated: 0, agreed: 0, classes: {} };
  let previous: Uint8Array = new Uint8Array(0);
  for (let i = 0; i < cases; i++) {
    let input: Uint8Array | undefined;
    try {
      const c = writeCase(rng);
      input = c.bytes;
      checkValid(c);
      counts.valid++;
      for (let m = 0; m < 2; m++) {
        input = rng() < 0.3 ? retype(rng, c.bytes) : mutate(rng, c.bytes, previous);
        const cls = compareMutated(input, c.transport);
        counts.mutated++;
        if (cls === "") counts.agreed++;
        else counts.classes[cls] = (counts.classes[cls] ?? 0) + 1;
      }
      previous = c.bytes;
    } catch (e) {
      const detail = e instanceof Error ? (e.stack ?? e.message) : String(e);
      const hex = input ? Buffer.from(input.subarray(0, 4096)).toString("hex") : "";
      throw new Error(`differential failure: seed=${seed} case=${i} input=${hex}\n${detail}`);
    }
  }
  return counts;
}
