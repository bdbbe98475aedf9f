// Differential test of our client's reply reader (ReplyReader, what CacheClient and the peers read
// replies with) against replies the Apache generated server writes (shared by
// apache-differential.test.ts and differential-run.ts).
//
// For a random method, a call the Apache client writes (framed or buffered) is answered by the
// Apache generated Processor, its handler returning a random result (optional fields present and
// absent, i64 edges, values of every byte, maps small and large), a CacheError of every code, or a
// plain Error (which the Processor sends as a TApplicationException); ReplyReader must read the
// outcome and every field as the Processor was given them, within its limits (a value over
// maxValueBytes or a key over maxKeyBytes reads as the client-side CacheError it documents).

import { ERROR_CODE } from "../../src/protocol/errors.ts";
import { REPLY_APP_ERROR, REPLY_CACHE_ERROR, REPLY_FAILED, REPLY_OK, REPLY_KEY_TOO_LONG, REPLY_VALUE_TOO_LARGE, ReplyReader } from "../../src/protocol/reply-reader.ts";
import { METHOD_NAMES } from "../../src/protocol/request.ts";
import { ApacheTypes, apacheWriteCall, apacheWriteReply, int64 } from "./apache-oracle.ts";
import { randomBytes, randomText, shapeOf } from "./differential-calls.ts";
import { DIFF_LIMITS } from "./differential.ts";
import type { Rng } from "./fuzz.ts";

const int = (rng: Rng, n: number) => Math.floor(rng() * n);
const pick = <X>(rng: Rng, xs: readonly X[]): X => xs[int(rng, xs.length)]!;
const json = (v: unknown) => JSON.stringify(v);
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const utf8 = (s: string) => Buffer.from(s).toString("hex");

/** The methods ReplyReader reads a result of (NodeStats' figures are read elsewhere). */
export const READ = METHOD_NAMES.slice(1).filter((m) => m !== "NodeStats");
const I64S = [0n, 1n, -1n, -5n, 2n ** 53n - 1n, 2n ** 53n + 1n, 2n ** 63n - 1n, -(2n ** 63n)];
const i64 = (rng: Rng) => (rng() < 0.5 ? pick(rng, I64S) : BigInt(int(rng, 2 ** 40)));
const opt = <X>(rng: Rng, make: () => X): X | null => (rng() < 0.7 ? make() : null);
const num = (v: bigint | null, absent: number) => (v === null ? absent : Number(v));

/** randomResult returns the handler's result for `name` and what ReplyReader must make of it. */
export function randomResult(rng: Rng, name: string): { result: unknown; want: Record<string, unknown> } {
  if (name.endsWith("Get")) {
    const value = opt(rng, () => randomBytes(rng, rng() < 0.05 ? DIFF_LIMITS.maxValueBytes + 1 : int(rng, 200)));
    const ttl = opt(rng, () => i64(rng));
    const big = (value?.length ?? 0) > DIFF_LIMITS.maxValueBytes;
    const outcome = big ? { outcome: REPLY_CACHE_ERROR, errorCode: ERROR_CODE.VALUE_TOO_LARGE, errorText: REPLY_VALUE_TOO_LARGE } : { outcome: REPLY_OK };
    // An absent ttlRemainingMs is no expiry (-1); a negative one, outside the contract, none left (0).
    return { result: { value, ttlRemainingMs: ttl === null ? null : int64(ttl) }, want: { ...outcome, value: hex(value ?? Buffer.alloc(0)), ttl: ttl === null ? -1 : ttl < 0n ? 0 : Number(ttl) } };
  }
  if (name.endsWith("Stats")) {
    const c = Array.from({ length: 4 }, () => opt(rng, () => i64(rng)));
    const r = { itemCount: c[0] ?? null, hitCount: c[1] ?? null, missCount: c[2] ?? null, totalCount: c[3] ?? null };
    return { result: Object.fromEntries(Object.entries(r).map(([k, v]) => [k, v === null ? null : int64(v)])), want: { outcome: REPLY_OK, counts: c.map((v) => num(v, 0)) } };
  }
  switch (shapeOf(name)) {
    case "group": // Clear
    case "key": // Delete
    case "set":
    case "values":
    case "auth": {
      const success = opt(rng, () => rng() < 0.7);
      // false (or absent) with no error: Set, Clear and SetMulti did not do it; Delete's false is "not found".
      const failed = success !== true && !/Delete|Auth/.test(name);
      return { result: { success }, want: { outcome: failed ? REPLY_FAILED : REPLY_OK, success: success === true } };
    }
    case "keys": {
      const n = rng() < 0.05 ? 300 + int(rng, 700) : int(rng, 8);
      const values: Record<string, Buffer> = {};
      for (let i = 0; i < n; i++) values[`${String(randomText(rng, n < 8))}${i}`.replace("__proto__", "_")] = randomBytes(rng, int(rng, 60));
      const long = Object.keys(values).some((k) => Buffer.byteLength(k) > DIFF_LIMITS.maxKeyBytes);
      const outcome = long ? { outcome: REPLY_CACHE_ERROR, errorCode: ERROR_CODE.INVALID_ARGUMENT, errorText: REPLY_KEY_TOO_LONG } : { outcome: REPLY_OK };
      return { result: { values }, want: { ...outcome, entries: Object.entries(values).map(([k, v]) => [utf8(k), hex(v)]).sort() } };
    }
    case "ping": {
      const nodeId = opt(rng, () => String(randomText(rng)));
      const uptime = opt(rng, () => i64(rng));
      const lease = opt(rng, () => i64(rng));
      return { result: { nodeId, uptimeMs: uptime === null ? null : int64(uptime), leaseMs: lease === null ? null : int64(lease) }, want: { outcome: REPLY_OK, nodeId: utf8(nodeId ?? ""), uptime: num(uptime, 0), lease: num(lease, -1) } };
    }
    default: {
      const dropped = opt(rng, () => i64(rng)); // PeerInvalidate
      return { result: { dropped: dropped === null ? null : int64(dropped) }, want: { outcome: REPLY_OK, dropped: num(dropped, 0) } };
    }
  }
}

/** viewOfReader is what `r` read, in the shape of `want`. */
function viewOfReader(r: ReplyReader, want: Record<string, unknown>): Record<string, unknown> {
  const range = (start: number, length: number) => hex(r.buffer.subarray(start, start + length));
  const v: Record<string, unknown> = { outcome: r.outcome };
  if (r.outcome === REPLY_CACHE_ERROR || r.outcome === REPLY_APP_ERROR) {
    v.errorCode = r.errorCode;
    if (r.errorText !== "") v.errorText = r.errorText;
    else v.message = range(r.messageStart, r.messageLength);
  }
  if ("value" in want) (v.value = range(r.valueStart, r.valueLength), (v.ttl = r.ttlRemainingMs));
  if ("counts" in want) v.counts = [r.itemCount, r.hitCount, r.missCount, r.totalCount];
  if ("success" in want) v.success = r.success;
  if ("entries" in want) v.entries = Array.from({ length: r.entryCount }, (_, i) => [range(r.items[i * 4]!, r.items[i * 4 + 1]!), range(r.items[i * 4 + 2]!, r.items[i * 4 + 3]!)]).sort();
  if ("nodeId" in want) (v.nodeId = range(r.nodeIdStart, r.nodeIdLength), (v.uptime = r.uptimeMs), (v.lease = r.leaseMs));
  if ("dropped" in want) v.dropped = r.dropped;
  return v;
}

/** checkReader has the Apache server answer one random call and our ReplyReader read the answer. */
export function checkReader(rng: Rng): void {
  const transport = pick(rng, ["framed", "buffered"] as const);
  const name = pick(rng, READ);
  const seqid = int(rng, 1 << 20);
  const call = apacheWriteCall(transport, name, {}, seqid, () => {});
  let err: unknown = null;
  let result: unknown = null;
  let want: Record<string, unknown>;
  const kind = int(rng, 10);
  if (kind < 7) ({ result, want } = randomResult(rng, name));
  else {
    const message = String(randomText(rng, true));
    const code = 1 + int(rng, 9);
    // A CacheError goes as result field 1; any other Error as a TApplicationException UNKNOWN (0).
    err = kind < 9 ? new ApacheTypes.CacheError({ code, message }) : new Error(message);
    want = { outcome: kind < 9 ? REPLY_CACHE_ERROR : REPLY_APP_ERROR, errorCode: kind < 9 ? code : 0, message: utf8(message) };
  }
  const reply = apacheWriteReply(call, transport, err, result);
  const r = new ReplyReader(DIFF_LIMITS);
  const start = transport === "framed" ? 4 : 0;
  r.begin(reply, start, reply.length);
  if (r.seqid !== seqid) throw new Error(`seqid ${r.seqid} read for ${seqid}`);
  r.readResult(METHOD_NAMES.indexOf(name), 1 << 20);
  const got = viewOfReader(r, want);
  if (json(got) !== json(want)) throw new Error(`${name} reply from the Apache server read differently\n  ours:    ${json(got)}\n  written: ${json(want)}\n  reply:   ${hex(reply)}`);
}
