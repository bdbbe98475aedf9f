/**
 * Long fuzz run of the whole in-process request path (issue 7): FrameReader → RequestDecoder →
 * dispatch → Group/Store → ReplyWriter, as CacheServer drives them, with no sockets.
 *
 *   bun run fuzz -- --iterations 1000000 [--seed N] [--check-every 10000]
 *
 * Inputs are sessions of one connection: 85 % come from test/server/fuzz-inputs.ts `session`
 * (valid, structure-mutated and byte-mutated calls of the seed methods in all five transports,
 * plus test/protocol/fuzz.ts's random and mutated inputs); 15 % are built here for the methods
 * those generators do not call: the Peer* variants, PeerInvalidate, PeerPing, Auth and NodeStats,
 * valid or with a field's type swapped, a length or count corrupted, the payload truncated, or
 * byte-mutated. Every session is fed in random chunks (`chunks`) to a fresh ProtocolConnection.
 * `--iterations` counts inputs that reached the decoder (a decoded request or a protocol error);
 * frames generated after a session's protocol error are not fed, so more frames are generated.
 *
 * Checked on every input: nothing but ProtocolError or CacheError is thrown (a ProtocolError ends
 * the session, as the server closes such a connection); dispatch never defers (the groups have no
 * loader); every reply is one well-formed message in the request's transport (test/server/
 * wire-reader.ts, which is written from the spec) whose outcome is a success struct, a CacheError
 * or a TApplicationException; a ONEWAY call writes nothing. Both stores' `checkInvariants()` run
 * every `--check-every` inputs and at the end. What a hit returns is checked against a model by
 * fuzz-dispatch.test.ts in CI; this run is about volume.
 *
 * Prints inputs/s and the outcome counts; on a violation prints the seed, the session index and
 * the session's input as hex, and exits 1. The same seed replays the same run.
 */
import { Group } from "../src/cluster/group.ts";
import { Groups } from "../src/cluster/groups.ts";
import { CacheError, ProtocolError } from "../src/protocol/errors.ts";
import { resolveLimits } from "../src/protocol/limits.ts";
import { ProtocolConnection } from "../src/protocol/protocol-connection.ts";
import { METHOD_NAMES, METHOD_UNKNOWN } from "../src/protocol/request.ts";
import { dispatch, type DispatchContext } from "../src/server/dispatch.ts";
import { mutate } from "../test/protocol/fuzz.ts";
import { Bytes, MSG, T, concat, hex, message, wrap, TRANSPORTS } from "../test/protocol/wire-builder.ts";
import { Gen, READER_TRANSPORT, chunks, session } from "../test/server/fuzz-inputs.ts";
import { outcome, readReply } from "../test/server/wire-reader.ts";
import { Prng } from "../test/support/prng.ts";
import { intFlag as flag } from "../test/support/cli-flags.ts";

const LIMITS = resolveLimits({ maxFrameBytes: 65_536, maxDepth: 16, maxKeyBytes: 32, maxValueBytes: 1024 });

// ---------------------------------------------------------------------------------------------
// Calls of the methods fuzz-inputs.ts does not generate

const PEER_SEED = ["PeerGet", "PeerSet", "PeerDelete", "PeerClear", "PeerStats", "PeerGetMulti", "PeerSetMulti"];
const OTHERS = ["PeerInvalidate", "PeerPing", "Auth", "NodeStats"];
const GROUPS = ["default", "default", "g", "", "nope"];
const TYPES = [T.STOP, T.BOOL, T.BYTE, T.I16, T.I32, T.I64, T.STRING, T.STRUCT, T.MAP, T.SET, T.LIST, T.UUID, 0x1f];
const I32S = [0, -1, 1, 0x7fffffff, -0x80000000, 33, 1025, 65_536];

/** peerRequest writes the request struct's fields of `name`, as the IDL defines them. */
function peerRequest(g: Gen, name: string, b: Bytes): void {
  const group = (): Bytes => b.field(T.STRING, 1).str(g.pick(GROUPS));
  switch (name) {
    case "PeerGet":
    case "PeerDelete":
      group().field(T.STRING, 2).str(g.key());
      return;
    case "PeerSet":
      group().field(T.STRING, 2).str(g.key()).field(T.STRING, 3).str(g.value()).field(T.I64, 4).i64(g.ttl());
      if (g.chance(0.3)) b.field(T.I64, 5).i64(g.ttlMs());
      return;
    case "PeerClear":
    case "PeerStats":
      group();
      return;
    case "PeerGetMulti":
    case "PeerInvalidate": {
      const n = g.int(6);
      group().field(T.LIST, 2).u8(T.STRING).i32(n);
      for (let i = 0; i < n; i++) b.str(g.key());
      if (name === "PeerInvalidate" && g.chance(0.3)) b.field(T.BOOL, 3).u8(g.int(2));
      return;
    }
    case "PeerSetMulti": {
      const n = g.int(5);
      group().field(T.MAP, 2).u8(T.STRING, T.STRING).i32(n);
      for (let i = 0; i < n; i++) b.str(g.key()).str(g.value());
      b.field(T.I64, 3).i64(g.ttl());
      return;
    }
    case "PeerPing":
      if (g.chance(0.7)) b.field(T.STRING, 1).str(`127.0.0.1:${g.int(65_536)}`);
      return;
    case "Auth":
      b.field(T.STRING, 1).str(g.bytes(g.int(40)));
      return;
  }
}

/**
 * peerCall builds one framed/header call of a Peer*, Auth or NodeStats method: valid, or with a
 * structure-aware fault (a type byte swapped, an i32 length or count overwritten, a truncation)
 * placed in the request struct, or byte-mutated after wrapping.
 */
function peerCall(g: Gen): Uint8Array {
  const name = g.chance(0.75) ? g.pick(PEER_SEED) : g.pick(OTHERS);
  const req = new Bytes();
  peerRequest(g, name, req);
  let fields = Uint8Array.from(req.out);
  const fault = g.int(10);
  if (fault === 0 && fields.length > 0) fields[0] = g.pick(TYPES); // first field's type swapped
  else if (fault === 1 && fields.length > 0) fields[g.int(fields.length)] = g.pick(TYPES); // some type-position byte
  else if (fault === 2 && fields.length >= 7) { // i32 at a random offset past a field header overwritten
    const at = 3 + g.int(fields.length - 6);
    new DataView(fields.buffer).setInt32(at, g.pick(I32S));
  } else if (fault === 3) fields = fields.subarray(0, g.int(fields.length + 1)); // truncated
  const args = new Bytes().field(T.STRUCT, 1).raw(fields).stop().stop().bytes();
  const msg = message(g.chance(0.05) ? MSG.ONEWAY : MSG.CALL, name, g.int(1 << 20), args);
  const bytes = wrap(g.pick(TRANSPORTS), msg, { flags: g.int(65_536), seqid: g.int(1000), innerFramed: g.chance(0.3) });
  return fault === 4 ? mutate(g.rng, bytes, bytes) : bytes;
}

function peerSession(g: Gen): Uint8Array[] {
  return Array.from({ length: 1 + g.int(6) }, () => peerCall(g));
}

// ---------------------------------------------------------------------------------------------
// The run

class Violation extends Error {}

interface Tally {
  /** inputs that reached the decoder: decoded requests plus protocol errors */
  inputs: number;
  frames: number;
  sessions: number;
  requests: number;
  outcomes: Map<string, number>;
  evictions: number;
}

function run(seed: number, iterations: number, checkEvery: number): Tally {
  const g = new Gen(new Prng(seed));
  let now = 1_000_000;
  const clock = (): number => now;
  const groups = new Groups();
  // "g" is tiny (four 64 KiB pages) so sets evict and pages move between size classes.
  groups.add(new Group({ name: "default", memory: 4 * 1024 * 1024, store: { maxItemSize: 1024, pageSize: 64 * 1024, clock } }));
  groups.add(new Group({ name: "g", memory: 256 * 1024, defaultTtlMs: 5_000, store: { maxItemSize: 1024, pageSize: 64 * 1024, clock } }));
  const ctx: DispatchContext = { groups, clock, nodeId: "127.0.0.1:1", startedAt: 0 };
  const tally: Tally = { inputs: 0, frames: 0, sessions: 0, requests: 0, outcomes: new Map(), evictions: 0 };
  const count = (what: string): void => void tally.outcomes.set(what, (tally.outcomes.get(what) ?? 0) + 1);
  const checkStores = (): void => {
    for (const group of groups.all()) group.store.checkInvariants();
  };
  let nextCheck = checkEvery;

  for (let s = 0; tally.inputs < iterations; s++) {
    const messages = g.chance(0.15) ? peerSession(g) : session(g);
    const input = concat(...messages);
    tally.frames += messages.length;
    tally.sessions++;
    if (g.chance(0.05)) now += g.pick([1, 999, 1000, 4_999, 5_000, 20_000]);
    if (g.chance(0.02)) for (const group of groups.all()) group.store.expire(now, 1 + g.int(50));
    try {
      feed(new ProtocolConnection(LIMITS), chunks(g, input));
      if (tally.inputs >= nextCheck) {
        checkStores();
        nextCheck += checkEvery;
      }
    } catch (e) {
      const detail = e instanceof Error ? (e.stack ?? e.message) : String(e);
      throw new Violation(`seed=${seed} session=${s} inputs-before=${tally.inputs}\ninput=${hex(input)}\n${detail}`);
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
        let method = -1;
        let oneway = false;
        try {
          if (!conn.nextRequest()) break;
          tally.requests++;
          tally.inputs++;
          method = conn.request.method;
          oneway = conn.request.oneway;
          const pending = dispatch(ctx, conn.request, conn.reply);
          if (pending !== undefined) throw new Violation("dispatch deferred a reply in a group without a loader");
        } catch (e) {
          if (e instanceof Violation) throw e;
          if (method === -1) tally.inputs++;
          if (e instanceof CacheError) {
            count(`thrown CacheError:${e.code}`);
            return;
          }
          if (!(e instanceof ProtocolError)) throw e; // anything else is a bug
          if (method !== -1) throw new Violation(`dispatch threw ProtocolError: ${e.message}`);
          count(`ProtocolError:${e.type}`);
          return; // the server answers where it can and closes: the session ends
        }
        if (oneway) {
          if (out.length !== 0) throw new Violation(`ONEWAY ${METHOD_NAMES[method]} wrote ${out.length} bytes`);
          count("oneway");
        } else {
          const name = READER_TRANSPORT[conn.request.transport];
          if (name === undefined) throw new Violation(`reply in transport ${conn.request.transport}`);
          const r = readReply(out.buffer.subarray(0, out.length), 0, name);
          if (r === null || r.consumed !== out.length) throw new Violation(`reply is not exactly one message (${out.length} bytes)`);
          const o = outcome(r);
          const m = method === METHOD_UNKNOWN ? "unknown" : METHOD_NAMES[method];
          count(o.kind === "success" ? `${m} ok` : o.kind === "cacheError" ? `CacheError:${o.code}` : `TApplicationException:${o.type}`);
        }
        out.reset();
      }
    }
  }
}

const iterations = flag("iterations", 1_000_000);
const seed = flag("seed", (Date.now() ^ (Math.random() * 2 ** 31)) >>> 0);
const checkEvery = Math.max(1, flag("check-every", 10_000));
console.log(`fuzz: ${iterations} inputs, seed ${seed}, invariants every ${checkEvery} inputs`);
const started = performance.now();
let tally: Tally;
try {
  tally = run(seed, iterations, checkEvery);
} catch (e) {
  console.error(`fuzz: VIOLATION (replay: bun run fuzz -- --iterations ${iterations} --seed ${seed})`);
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
}
const seconds = (performance.now() - started) / 1000;
const rows = [...tally.outcomes].sort((a, b) => b[1] - a[1]);
for (const [what, n] of rows) console.log(`  ${what.padEnd(36)} ${n}`);
console.log(
  `fuzz: ${tally.inputs} inputs (${tally.requests} decoded requests, ${tally.inputs - tally.requests} protocol errors) ` +
    `from ${tally.frames} frames in ${tally.sessions} sessions, ${tally.evictions} evictions; ` +
    `${seconds.toFixed(1)} s, ${Math.round(tally.inputs / seconds)} inputs/s; no violations (seed ${seed})`,
);
