/**
 * In-process fuzzing of the whole request path with no sockets: FrameReader → RequestDecoder →
 * dispatch → Group/Store → ReplyWriter, exactly as CacheServer.process drives them.
 *
 * Sessions of 1–8 messages in one transport (framed, buffered, THeader, TTHeader, TTHeader inner
 * framed) are fed to a ProtocolConnection in random chunks. Messages are valid calls of all seven
 * methods over a small key space (so gets hit, sets overwrite and evict), structure-mutated
 * (field types swapped, ids changed, fields dropped/duplicated, lengths corrupted, wrong
 * container types, wrong message types, trailing bytes), byte-mutated (test/protocol/fuzz.ts),
 * or random. After a ProtocolError the session ends (the server closes such a connection) and
 * the next starts on a fresh ProtocolConnection.
 *
 * Checked on every input: only ProtocolError escapes; every reply written is one well-formed
 * message in the request's transport (all lengths agree: wire-reader.ts) addressed to the
 * request (name, seqid, header flags/seqid echoed), and a ONEWAY call writes nothing; each
 * outcome is one the method may have; a Get/GetMulti hit returns exactly the bytes of the last
 * successful set of that key, never a deleted, cleared or expired one, with a consistent
 * ttlRemainingMs. The stores' checkInvariants() runs every 1000 inputs and at the end.
 * Replay a failure with TEST_SEED=<seed from the test name>.
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { Group } from "../../src/cluster/group.ts";
import { Groups } from "../../src/cluster/groups.ts";
import { APP_ERROR, ProtocolError } from "../../src/protocol/errors.ts";
import { resolveLimits } from "../../src/protocol/limits.ts";
import { ProtocolConnection } from "../../src/protocol/protocol-connection.ts";
import {
  METHOD_CLEAR, METHOD_DELETE, METHOD_GET, METHOD_GET_MULTI, METHOD_NAMES, METHOD_PEER_INVALIDATE, METHOD_PEER_PING, baseMethod, METHOD_SET, METHOD_SET_MULTI, METHOD_STATS,
  METHOD_UNKNOWN, type Request,
} from "../../src/protocol/request.ts";
import { dispatch, type DispatchContext } from "../../src/server/dispatch.ts";
import { Prng, testSeed } from "../support/prng.ts";
import { Bytes, MSG, T, concat, framed, hex, message } from "../protocol/wire-builder.ts";
import { Gen, I64_MAX, READER_TRANSPORT, chunks, session } from "./fuzz-inputs.ts";
import { field, outcome, readReply, type Outcome, type Reply, type Struct, type Value } from "./wire-reader.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const SEED = testSeed();
const MIN_INPUTS = 50_000; // messages that reached the decoder (a request or a protocol error)
const LIMITS = resolveLimits({ maxFrameBytes: 65_536, maxDepth: 16, maxKeyBytes: 32, maxValueBytes: 1024 });
const GROUP_TTL_MS = { default: 0, g: 5_000 } as const;

// ---------------------------------------------------------------------------------------------
// The reference model: what a hit may return

type Entry = { kind: "value"; value: Uint8Array; expiresAt: number } | { kind: "unknown" };

class Model {
  /** group → key hex → entry; a key not in the map is known absent. */
  readonly groups = new Map<string, Map<string, Entry>>([["default", new Map()], ["g", new Map()]]);

  of(group: string): Map<string, Entry> {
    return this.groups.get(group)!;
  }
}

interface Snapshot {
  method: number;
  name: string;
  oneway: boolean;
  seqid: number;
  errorCode: number;
  group: string;
  key: Uint8Array;
  value: Uint8Array;
  /** requested TTL in ms (0 = group default), as the IDL defines it */
  ttlMs: number;
  items: { key: Uint8Array; value: Uint8Array }[];
  headerFlags: number;
  headerSeqid: number;
  innerFramed: boolean;
}

function snapshot(req: Request): Snapshot {
  const b = req.buffer;
  const slice = (s: number, l: number) => b.slice(s, s + l);
  const items: Snapshot["items"] = [];
  for (let i = 0; i < req.itemCount; i++) {
    const o = i * 4;
    items.push({ key: slice(req.items[o]!, req.items[o + 1]!), value: slice(req.items[o + 2]!, req.items[o + 3]!) });
  }
  return {
    method: baseMethod(req.method), // peer variants are served like their seed methods (no cluster here)
    name: req.method !== METHOD_UNKNOWN ? METHOD_NAMES[req.method]! : new TextDecoder().decode(slice(req.nameStart, req.nameLength)),
    oneway: req.oneway,
    seqid: req.seqid,
    errorCode: req.errorCode,
    group: new TextDecoder().decode(slice(req.groupStart, req.groupLength)),
    key: slice(req.keyStart, req.keyLength),
    value: slice(req.valueStart, req.valueLength),
    ttlMs: req.hasTtlMs ? req.ttlMs : req.ttlSeconds * 1000,
    items,
    headerFlags: req.header.flags,
    headerSeqid: req.header.seqid,
    innerFramed: req.header.innerFramed,
  };
}

// ---------------------------------------------------------------------------------------------
// The run

class Fail extends Error {}
function check(ok: boolean, what: string): void {
  if (!ok) throw new Fail(what);
}

interface Tally {
  inputs: number;
  sessions: number;
  requests: number;
  protocolErrors: number;
  replies: Record<string, number>;
  getHits: number;
  multiHits: number;
  ttlReplies: number;
  evictions: number;
}

function run(seed: number): Tally {
  const g = new Gen(new Prng(seed));
  let now = 1_000_000;
  const clock = (): number => now;
  const groups = new Groups();
  for (const name of ["default", "g"] as const) {
    groups.add(new Group({
      name,
      // "g" is tiny: a few 64 KiB pages for a dozen size classes, so sets evict and move pages.
      memory: name === "default" ? 4 * 1024 * 1024 : 256 * 1024,
      defaultTtlMs: GROUP_TTL_MS[name],
      store: { maxItemSize: 1024, pageSize: 64 * 1024, clock },
    }));
  }
  const ctx: DispatchContext = { groups, clock };
  const model = new Model();
  const tally: Tally = { inputs: 0, sessions: 0, requests: 0, protocolErrors: 0, replies: {}, getHits: 0, multiHits: 0, ttlReplies: 0, evictions: 0 };
  let nextCheck = 1000;
  const checkStores = (): void => {
    for (const group of groups.all()) group.store.checkInvariants();
  };

  for (let s = 0; tally.requests + tally.protocolErrors < MIN_INPUTS; s++) {
    const messages = session(g);
    const input = concat(...messages);
    tally.inputs += messages.length;
    tally.sessions++;
    if (g.chance(0.05)) now += g.pick([1, 999, 1000, 4_999, 5_000, 20_000]);
    if (g.chance(0.02)) for (const group of groups.all()) group.store.expire(now, 1 + g.int(50));
    const conn = new ProtocolConnection(LIMITS);
    try {
      feed(conn, chunks(g, input));
    } catch (e) {
      const detail = e instanceof Error ? (e.stack ?? e.message) : String(e);
      throw new Error(`seed=${seed} session=${s} input=${hex(input)}\n${detail}`);
    }
    if (tally.requests + tally.protocolErrors >= nextCheck) {
      checkStores();
      nextCheck += 1000;
    }
  }
  checkStores();
  for (const group of groups.all()) tally.evictions += group.store.counters.evictions;
  return tally;

  function feed(conn: ProtocolConnection, parts: Uint8Array[]): void {
    const out = conn.reply.out;
    for (const part of parts) {
      conn.push(part);
      for (;;) {
        let snap: Snapshot | undefined;
        try {
          if (!conn.nextRequest()) break;
          tally.requests++;
          snap = snapshot(conn.request);
          const pending = dispatch(ctx, conn.request, conn.reply);
          check(pending === undefined, "dispatch deferred a reply in a group without a loader");
        } catch (e) {
          if (!(e instanceof ProtocolError)) throw e; // anything else is a bug
          check(snap === undefined, `dispatch threw ${e.message}`);
          tally.protocolErrors++;
          // What the server does: answer where the transport is known, then close.
          const req = conn.request;
          if (req.transport !== 0) {
            conn.reply.writeApplicationException(req, e.type, e.message);
            const r = onlyReply(out.buffer.subarray(0, out.length), req.transport);
            check(r.type === MSG.EXCEPTION, "protocol error reply is not an EXCEPTION");
            const o = outcome(r);
            check(o.kind === "appException" && o.type === e.type, `exception type ${JSON.stringify(o)} vs ${e.type}`);
          }
          return;
        }
        if (snap.oneway) {
          check(out.length === 0, `ONEWAY ${snap.name} wrote ${out.length} bytes`);
          applyOneway(snap);
        } else {
          const r = onlyReply(out.buffer.subarray(0, out.length), conn.request.transport);
          checkAddress(r, snap);
          verify(snap, outcome(r));
        }
        out.reset();
      }
    }
  }

  function onlyReply(bytes: Uint8Array, transport: number): Reply {
    const name = READER_TRANSPORT[transport];
    check(name !== undefined, `reply in transport ${transport}`);
    const r = readReply(bytes, 0, name!);
    check(r !== null, `incomplete reply (${bytes.length} bytes)`);
    check(r!.consumed === bytes.length, `reply uses ${r!.consumed} of ${bytes.length} bytes written`);
    return r!;
  }

  function checkAddress(r: Reply, s: Snapshot): void {
    check(r.name === s.name, `reply name '${r.name}' for '${s.name}'`);
    check(r.seqid === s.seqid, `reply seqid ${r.seqid} for ${s.seqid}`);
    if (r.header) {
      check(r.header.flags === s.headerFlags, "header flags not echoed");
      check(r.header.seqid === s.seqid, "header seqid is not the message seqid");
      check(r.header.innerFramed === s.innerFramed, "inner framing not kept");
      check(r.header.protocolId === 0 && r.header.transforms === 0, "reply header not plain binary");
    }
  }

  function count(what: string): void {
    tally.replies[what] = (tally.replies[what] ?? 0) + 1;
  }

  function cacheError(o: Outcome, codes: number[]): void {
    check(o.kind === "cacheError" && codes.includes(o.code), `expected CacheError ${codes}, got ${JSON.stringify(o)}`);
    count(`cacheError:${(o as { code: number }).code}`);
  }

  function successStruct(o: Outcome): Struct {
    check(o.kind === "success", `expected success, got ${JSON.stringify(o)}`);
    return (o as { value: Struct }).value;
  }

  function expectedTtl(s: Snapshot): number {
    return s.ttlMs === 0 ? GROUP_TTL_MS[s.group as keyof typeof GROUP_TTL_MS] : s.ttlMs;
  }

  function store(entries: Map<string, Entry>, key: Uint8Array, value: Uint8Array, ttl: number): void {
    entries.set(hex(key), { kind: "value", value, expiresAt: ttl === 0 ? Infinity : now + ttl });
  }

  /**
   * checkHit: a hit must be the last value set, not yet expired; a Get's ttlRemainingMs must
   * match it (GetMulti entries carry no TTL: `ttlRemaining` is "none").
   */
  function checkHit(entries: Map<string, Entry>, key: Uint8Array, value: Value | undefined, ttlRemaining: Value | undefined | "none"): void {
    const e = entries.get(hex(key));
    check(e !== undefined, `hit on key ${hex(key)} that was never set, or deleted/cleared`);
    check(value instanceof Uint8Array, "hit without a binary value");
    if (e!.kind === "unknown") return;
    check(Buffer.compare(e!.value, value as Uint8Array) === 0, `key ${hex(key)}: got ${hex(value as Uint8Array)}, last set ${hex(e!.value)}`);
    check(now < e!.expiresAt, `key ${hex(key)} returned at ${now}, expired at ${e!.expiresAt}`);
    if (ttlRemaining === "none") return;
    if (ttlRemaining === undefined) {
      check(e!.expiresAt === Infinity, `key ${hex(key)} has a TTL but the reply has no ttlRemainingMs`);
      return;
    }
    check(typeof ttlRemaining === "bigint", "ttlRemainingMs is not an i64");
    tally.ttlReplies++;
    const got = ttlRemaining as bigint;
    const want = e!.expiresAt - now;
    check(e!.expiresAt !== Infinity, `key ${hex(key)} has no TTL but the reply says ${got} ms remain`);
    check(got >= 0n, `ttlRemainingMs ${got} is negative (expected ${want})`);
    if (want <= 2 ** 53) check(got === BigInt(want), `ttlRemainingMs ${got}, expected ${want}`);
    else check(got >= 2n ** 53n, `ttlRemainingMs ${got}, expected about ${want} (at most ${I64_MAX})`);
  }

  function applyOneway(s: Snapshot): void {
    if (s.errorCode !== 0 || !model.groups.has(s.group)) return;
    const entries = model.of(s.group);
    if (s.method === METHOD_SET) entries.set(hex(s.key), { kind: "unknown" });
    else if (s.method === METHOD_SET_MULTI) for (const it of s.items) entries.set(hex(it.key), { kind: "unknown" });
    else if (s.method === METHOD_DELETE) entries.delete(hex(s.key));
    else if (s.method === METHOD_CLEAR) entries.clear();
  }

  function verify(s: Snapshot, o: Outcome): void {
    if (s.errorCode !== 0) {
      check(o.kind === "cacheError" && o.code === s.errorCode, `decode refusal ${s.errorCode} answered ${JSON.stringify(o)}`);
      return count(`cacheError:${s.errorCode}`);
    }
    if (s.method === METHOD_UNKNOWN) {
      check(o.kind === "appException" && o.type === APP_ERROR.UNKNOWN_METHOD, `unknown method answered ${JSON.stringify(o)}`);
      return count("unknownMethod");
    }
    if (s.method === METHOD_PEER_PING) {
      const r = successStruct(o);
      check(typeof field(r, 1, T.STRING) !== "undefined" && typeof field(r, 2, T.I64) === "bigint", "PeerPing without nodeId and uptimeMs");
      return count("peerPing");
    }
    if (!model.groups.has(s.group)) return cacheError(o, [2]);
    if (s.method === METHOD_PEER_INVALIDATE) {
      check(field(successStruct(o), 1, T.I64) === 0n, "PeerInvalidate dropped mirrors of a node without a mirror");
      return count("peerInvalidate");
    }
    const entries = model.of(s.group);
    const group = groups.byName(s.group)!;
    switch (s.method) {
      case METHOD_GET: {
        if (o.kind === "cacheError") return cacheError(o, [1]); // a miss (evicted or expired is fine)
        const r = successStruct(o);
        checkHit(entries, s.key, field(r, 1, T.STRING), field(r, 2, T.I64));
        tally.getHits++;
        return count("getHit");
      }
      case METHOD_SET: {
        if (o.kind === "cacheError") {
          cacheError(o, [4, 5]); // too large for a chunk, or no memory
          entries.set(hex(s.key), { kind: "unknown" });
          return;
        }
        check(field(successStruct(o), 1, T.BOOL) === true, "Set success is not true");
        store(entries, s.key, s.value, expectedTtl(s));
        return count("set");
      }
      case METHOD_DELETE: {
        const removed = field(successStruct(o), 1, T.BOOL);
        check(typeof removed === "boolean", "Delete without a bool");
        if (removed) check(entries.has(hex(s.key)), `Delete removed key ${hex(s.key)} that was not there`);
        entries.delete(hex(s.key));
        return count(removed ? "deleteHit" : "deleteMiss");
      }
      case METHOD_CLEAR:
        check(field(successStruct(o), 1, T.BOOL) === true, "Clear success is not true");
        entries.clear();
        check(group.store.size === 0, "Clear left items");
        return count("clear");
      case METHOD_STATS: {
        const r = successStruct(o);
        const [items, hits, misses, total] = [1, 2, 3, 4].map((id) => field(r, id, T.I64));
        check([items, hits, misses, total].every((v) => typeof v === "bigint"), "Stats without four i64 counters");
        check(items === BigInt(group.store.size - group.store.negatives), `Stats itemCount ${items} vs store size ${group.store.size} - ${group.store.negatives} negative`);
        check((hits as bigint) + (misses as bigint) === total, `Stats hits ${hits} + misses ${misses} != total ${total}`);
        return count("stats");
      }
      case METHOD_GET_MULTI: {
        const r = successStruct(o);
        const map = field(r, 1, T.MAP);
        check(Array.isArray(map), "GetMulti without a map");
        const requested = new Set(s.items.map((it) => hex(it.key)));
        for (const [k, v] of map as [Value, Value][]) {
          check(k instanceof Uint8Array && requested.has(hex(k)), "GetMulti returned a key it was not asked for");
          checkHit(entries, k as Uint8Array, v, "none");
          tally.multiHits++;
        }
        return count("getMulti");
      }
      case METHOD_SET_MULTI: {
        if (o.kind === "cacheError") {
          cacheError(o, [4, 5]);
          for (const it of s.items) entries.set(hex(it.key), { kind: "unknown" });
          return;
        }
        check(field(successStruct(o), 1, T.BOOL) === true, "SetMulti success is not true");
        const ttl = expectedTtl(s);
        for (const it of s.items) store(entries, it.key, it.value, ttl);
        return count("setMulti");
      }
    }
    check(false, `method ${s.method} not handled`);
  }
}

test(`fuzz dispatch (seed ${SEED}): ${MIN_INPUTS}+ inputs through decoder, dispatcher and stores; only ProtocolError escapes, replies well-formed, hits match the model`, () => {
  const started = performance.now();
  let tally: Tally;
  try {
    tally = run(SEED);
  } catch (e) {
    console.error(`fuzz-dispatch failed with seed ${SEED}: replay with TEST_SEED=${SEED} bun test test/server/fuzz-dispatch.test.ts`);
    throw e;
  }
  const seconds = (performance.now() - started) / 1000;
  if (process.env.FUZZ_VERBOSE) console.log(JSON.stringify({ seconds, ...tally }));
  expect(tally.requests + tally.protocolErrors).toBeGreaterThanOrEqual(MIN_INPUTS);
  // The run must have reached every part of the path, not just the error exits.
  expect(tally.getHits).toBeGreaterThan(200);
  expect(tally.multiHits).toBeGreaterThan(200);
  expect(tally.ttlReplies).toBeGreaterThan(20);
  expect(tally.evictions).toBeGreaterThan(0);
  expect(tally.protocolErrors).toBeGreaterThan(1000);
  for (const kind of ["set", "setMulti", "deleteHit", "deleteMiss", "clear", "stats", "getMulti", "unknownMethod", "cacheError:1", "cacheError:2", "cacheError:3", "cacheError:4"]) {
    expect([kind, tally.replies[kind] ?? 0]).not.toEqual([kind, 0]);
  }
}, 30_000);

// A regression found by the fuzzer, kept as a plain table: a TTL the wire allows but whose
// remaining milliseconds exceed an i64 must still come back as a large positive ttlRemainingMs.
describe("ttlRemainingMs of very long TTLs", () => {
  const CASES: [string, bigint, bigint | null][] = [
    ["ttl = 2^53 s", 2n ** 53n, null],
    ["ttlMs = i64 max", 0n, I64_MAX],
    ["ttl = 2^62 s", 2n ** 62n, null],
    ["ttl = i64 max s", I64_MAX, null],
  ];
  test.each(CASES)("%s: the Get reports a positive TTL of at least 2^53 ms", (_name, ttl, ttlMs) => {
    const groups = new Groups();
    groups.add(new Group({ name: "default", memory: 4 * 1024 * 1024, store: { clock: () => 1_000_000 } }));
    const conn = new ProtocolConnection(LIMITS);
    const set = new Bytes().field(T.STRUCT, 1).field(T.STRING, 1).str("default").field(T.STRING, 2).str("k")
      .field(T.STRING, 3).str("v").field(T.I64, 4).i64(ttl);
    if (ttlMs !== null) set.field(T.I64, 5).i64(ttlMs);
    const get = new Bytes().field(T.STRUCT, 1).field(T.STRING, 1).str("default").field(T.STRING, 2).str("k").stop().stop();
    conn.push(concat(framed(message(MSG.CALL, "Set", 1, set.stop().stop().bytes())), framed(message(MSG.CALL, "Get", 2, get.bytes()))));
    while (conn.nextRequest()) dispatch({ groups, clock: () => 1_000_000 }, conn.request, conn.reply);
    const out = conn.reply.out.buffer.subarray(0, conn.reply.out.length);
    const setReply = readReply(out, 0, "framed")!;
    expect(outcome(setReply).kind).toBe("success");
    const o = outcome(readReply(out, setReply.consumed, "framed")!);
    expect(o.kind).toBe("success");
    const remaining = field((o as { value: Struct }).value, 2, T.I64) as bigint;
    expect(remaining).toBeGreaterThanOrEqual(2n ** 53n);
    expect(remaining).toBeLessThanOrEqual(I64_MAX);
  });
});
