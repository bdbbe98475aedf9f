/**
 * GetMulti answers against a trivial model (a Map of key → value and expiry), over real sockets:
 * seeded random chunks of Sets (some with a TTL), Deletes and GetMultis (keys repeated, present,
 * absent, expired), pipelined in one write (or split in two) on five connections at once, one per
 * transport (framed, buffered, THeader, TTHeader, TTHeader inner framed), so replies share the
 * turn's output buffer and outgrow it at any entry (get-multi.ts lookUpRest, ReplyWriter.makeRoom).
 * A group without a loader and one with (a miss is loaded as "L:" + key). The clock moves only
 * between rounds. The same through a cluster of two (routed-multi.ts), the connections on both,
 * and with groups small enough that Sets evict (a value answered is the model's or the load's). Each connection has keys of its own, so its replies are fixed by its own calls.
 * Checked: every reply well-formed in its transport (lengths patched right), seqids in order, each
 * key answered once with the model's value, every live key answered, none other; a reply past the
 * frame limit is VALUE_TOO_LARGE, a reply under it is not, and none sent is over it. A regression
 * guard for the GetMulti reply commits (089a416, 8980cba, 60fde73); replay with TEST_SEED.
 */
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { startMembers } from "../support/cluster-members.ts";
import { Prng, pattern, testSeed } from "../support/prng.ts";
import { Bytes, MSG, T, concat, framed, message, theader, ttheader, type TransportName } from "../protocol/wire-builder.ts";
import { RawSocket, setMessage, startNode } from "./support.ts";
import { type Reply, field, outcome, readReplies } from "./wire-reader.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const FRAME = 64 * 1024;
const KEYS = 40; // per connection
const enc = new TextEncoder();
const dec = new TextDecoder();

interface Variant {
  transport: TransportName;
  wrap(msg: Uint8Array, seqid: number): Uint8Array;
}
const VARIANTS: Variant[] = [
  { transport: "framed", wrap: (m) => framed(m) },
  { transport: "buffered", wrap: (m) => m },
  { transport: "theader", wrap: (m, seqid) => theader(m, { flags: 1, seqid }) },
  { transport: "ttheader", wrap: (m, seqid) => ttheader(m, { seqid }) },
  { transport: "ttheader", wrap: (m, seqid) => ttheader(m, { seqid, innerFramed: true }) },
];

function deleteMessage(seqid: number, group: string, key: string): Uint8Array {
  const body = new Bytes().field(T.STRUCT, 1).field(T.STRING, 1).str(group).field(T.STRING, 2).str(key).stop().stop().bytes();
  return message(MSG.CALL, "Delete", seqid, body);
}
function getMultiMessage(seqid: number, group: string, keys: string[]): Uint8Array {
  const b = new Bytes().field(T.STRUCT, 1).field(T.STRING, 1).str(group).field(T.LIST, 2).u8(T.STRING).i32(keys.length);
  for (const k of keys) b.str(k);
  return message(MSG.CALL, "GetMulti", seqid, b.stop().stop().bytes());
}

function bytesEqual(a: Uint8Array, b: Uint8Array | undefined): boolean {
  return b !== undefined && a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Model: per group, key → value and absolute expiry (0: none), as the store keeps them. */
type Entry = { value: Uint8Array; expiresAt: number };

const CONFIG = { maxItemSize: 12 * 1024, maxFrameSize: FRAME, groups: [{ name: "plain", ttlMs: 0 }, { name: "ld", ttlMs: 0, admission: "always" as const }] };
const loaders = { ld: (key: string) => (key.endsWith("7") ? Promise.resolve(`L:${key}`) : `L:${key}`) };

let now = 5_000_000;
const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((x) => x.close()));
});

describe("GetMulti against a model", () => {
  test("random pipelined Sets, Deletes and GetMultis on five transports at once", async () => {
    const node = startNode(CONFIG, { clock: () => now, loaders });
    open.push(node);
    await run([node.port], true, 300);
  });

  test("the same through a cluster of two (routed: parts forwarded, merged; no TTLs, the members' clocks being real)", async () => {
    const members = startMembers(2, open, CONFIG, () => loaders);
    await run(members.nodes.map((n) => n.port), false, 80);
  });

  test("with evictions: small groups, Sets of one connection evicting the keys of another's GetMulti in the turn", async () => {
    const small = { ...CONFIG, groups: CONFIG.groups.map((g) => ({ ...g, memory: 448 * 1024 })) };
    const node = startNode(small, { clock: () => now, loaders });
    open.push(node);
    await run([node.port], true, 150, true);
    expect(node.groups.byName("plain")!.store.counters.evictions).toBeGreaterThan(0);
  });
});

/**
 * run plays `rounds` random rounds, connection c on ports[c % ports.length]; `ttls`: some Sets have
 * one (the clock is `now`); `evicts`: the groups are small, so a key may be gone (in "ld", loaded
 * again): a value answered is then the model's or the load's, never another.
 */
async function run(ports: number[], ttls: boolean, rounds: number, evicts = false): Promise<void> {
  const seed = testSeed();
  const rng = new Prng(seed);
  const say = (what: string) => `seed ${seed} (TEST_SEED=${seed}): ${what}`;
  const conns = await Promise.all(VARIANTS.map((_, c) => RawSocket.connect(ports[c % ports.length]!)));
  const models = VARIANTS.map(() => new Map<string, Map<string, Entry>>([["plain", new Map()], ["ld", new Map()]]));
  const seen = VARIANTS.map(() => 0); // bytes of each connection's replies read so far
  let seqid = 0;
  let refused = 0;
  let answered = 0;
  const live = (e: Entry | undefined): e is Entry => e !== undefined && (e.expiresAt === 0 || e.expiresAt > now);
  const valueOf = (c: number) => {
    const r = rng.next();
    const n = r < 0.35 ? 2000 + rng.int(10_000) : r < 0.4 ? 0 : 1 + rng.int(200);
    return pattern(c * 1_000_000 + rng.int(1_000_000), n);
  };
  for (let round = 0; round < rounds; round++) {
    // Each connection's chunk, and what it expects, from its own model in its calls' order.
    const expected: ((r: Reply) => void)[][] = [];
    for (let c = 0; c < VARIANTS.length; c++) {
      const v = VARIANTS[c]!;
      const model = models[c]!;
      const calls: Uint8Array[] = [];
      const checks: ((r: Reply) => void)[] = [];
      const keyName = () => `c${c}-k${rng.int(KEYS)}`;
      for (let n = 1 + rng.int(6); n > 0; n--) {
        const id = ++seqid;
        const group = rng.next() < 0.5 ? "plain" : "ld";
        const m = model.get(group)!;
        const what = rng.next();
        const check = (r: Reply, kind: string) => {
          expect(r.seqid, say(`round ${round} conn ${c} seqid`)).toBe(id);
          expect(r.name, say(`round ${round} conn ${c} seqid ${id}`)).toBe(kind);
        };
        if (what < 0.35) {
          const key = keyName();
          const value = valueOf(c);
          const ttl = ttls && rng.next() < 0.4 ? 1 + rng.int(40) : 0;
          calls.push(v.wrap(setMessage(id, key, value, group, ttl), id));
          m.set(key, { value, expiresAt: ttl === 0 ? 0 : now + ttl });
          checks.push((r) => {
            check(r, "Set");
            expect(outcome(r).kind, say(`round ${round} conn ${c} Set ${id}`)).toBe("success");
          });
        } else if (what < 0.45) {
          const key = keyName();
          calls.push(v.wrap(deleteMessage(id, group, key), id));
          m.delete(key);
          checks.push((r) => check(r, "Delete"));
        } else {
          const keys = Array.from({ length: 1 + rng.int(rng.next() < 0.2 ? 100 : 12) }, keyName);
          calls.push(v.wrap(getMultiMessage(id, group, keys), id));
          // The answer: each distinct key with a live value, or for "ld" its load (then kept).
          const want = new Map<string, Uint8Array>();
          for (const k of keys) {
            const e = m.get(k);
            if (live(e)) want.set(k, e.value);
            else if (group === "ld") want.set(k, enc.encode(`L:${k}`));
          }
          let bytes = 0;
          for (const [k, val] of want) bytes += 8 + k.length + val.length;
          if (group === "ld") for (const [k, val] of want) if (!live(m.get(k))) m.set(k, { value: val, expiresAt: 0 }); // (refused or not, a later read answers the same)
          checks.push((r) => {
            check(r, "GetMulti");
            const o = outcome(r);
            const where = say(`round ${round} conn ${c} (${v.transport}) GetMulti ${id} of ${keys.length} keys, ${bytes} B of entries`);
            if (o.kind !== "success") {
              expect(o, where).toMatchObject({ kind: "cacheError", code: 4 });
              if (!evicts) expect(bytes, where).toBeGreaterThan(FRAME - 200); // (refused only past the frame limit)
              refused++;
              return;
            }
            if (!evicts) expect(bytes, where).toBeLessThanOrEqual(FRAME);
            const map = field(o.value, 1, T.MAP) as [Uint8Array, Uint8Array][];
            const got = map.map(([k, val]) => [dec.decode(k), val] as const);
            expect(new Set(got.map(([k]) => k)).size, `${where}: a key answered twice`).toBe(got.length);
            if (evicts) {
              for (const [k, val] of got) {
                const ok = bytesEqual(val, want.get(k)) || (group === "ld" && bytesEqual(val, enc.encode(`L:${k}`)));
                expect(ok, `${where}: the value of ${k}`).toBe(true);
              }
              if (group === "ld") expect(got.length, where).toBe(want.size); // (a key gone is loaded)
              expect(got.every(([k]) => want.has(k)), `${where}: a key deleted, expired or not asked`).toBe(true);
            } else {
              expect(got.map(([k]) => k).sort(), where).toEqual([...want.keys()].sort());
              for (const [k, val] of got) expect(val, `${where}: the value of ${k}`).toEqual(want.get(k)!);
            }
            answered++;
          });
        }
      }
      expected.push(checks);
      const chunk = concat(...calls);
      if (rng.next() < 0.3 && chunk.length > 1) {
        const cut = 1 + rng.int(chunk.length - 1);
        conns[c]!.write(chunk.subarray(0, cut));
        conns[c]!.write(chunk.subarray(cut));
      } else conns[c]!.write(chunk);
    }
    await Promise.all(conns.map(async (raw, c) => {
      const v = VARIANTS[c]!;
      const want = expected[c]!.length;
      const replies = () => readReplies(raw.received.subarray(seen[c]!), v.transport).replies;
      await raw.waitFor(() => raw.isClosed || replies().length >= want, say(`round ${round} conn ${c}: ${want} replies`));
      const got = replies();
      expect(got.length, say(`round ${round} conn ${c}: replies`)).toBe(want);
      for (let i = 0; i < want; i++) {
        expect(got[i]!.consumed - (v.transport === "buffered" ? 0 : 4), say("a reply over the frame limit")).toBeLessThanOrEqual(FRAME);
        expected[c]![i]!(got[i]!);
        seen[c]! += got[i]!.consumed;
      }
      expect(seen[c], say(`round ${round} conn ${c}: bytes past the replies`)).toBe(raw.received.length);
    }));
    now += rng.int(25); // (some TTLs end between rounds)
  }
  for (const raw of conns) raw.close();
  if (!evicts) expect(refused, say("some GetMultis refused")).toBeGreaterThan(0); // (small groups hold too little)
  expect(answered, say("most GetMultis answered")).toBeGreaterThan(refused);
}
