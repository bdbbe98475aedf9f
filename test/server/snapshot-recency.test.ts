import { afterEach, beforeEach, expect, spyOn, test, setDefaultTimeout } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CacheClient } from "../../src/client/cache-client.ts";
import { Group } from "../../src/cluster/group.ts";
import { Groups } from "../../src/cluster/groups.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import { Snapshotter, type SnapshotLogger } from "../../src/server/snapshot.ts";
import { LogSink } from "./support.ts";
import { snapshotRecords } from "./snapshot-records.ts";
import { MAX_BANDS } from "../../src/server/snapshot-order.ts";
import { SnapshotOut } from "../../src/server/snapshot-stream.ts";
import { Prng, testSeed } from "../support/prng.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const MB = 1024 * 1024;
const enc = new TextEncoder();
const dec = new TextDecoder();
const quiet: SnapshotLogger = { info() {}, warn() {}, error() {} };

let dir = "";
let path = "";
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "mbc-recency-"));
  path = join(dir, "cache.snap");
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function makeGroups(memory: number, names = ["kv"]): Groups {
  const groups = new Groups();
  for (const name of names) groups.add(new Group({ name, memory, store: { maxItemSize: 64 * 1024 } }));
  return groups;
}

const key = (i: number): Uint8Array => enc.encode(`k${i}`);

/**
 * heated fills `n` keys of 1000 B (one size class) in key order, so item ids follow the key,
 * then reads every key once in a seeded random order: `rank[i]` is key i's place in that order
 * (0 = coldest). Recency then has nothing to do with the ids a write walks.
 */
function heated(memory: number, n: number, seed: number): { groups: Groups; rank: Int32Array; byRank: Int32Array } {
  const groups = makeGroups(memory);
  const store = groups.byName("kv")!.store;
  const value = new Uint8Array(1000);
  for (let i = 0; i < n; i++) expect(store.set(key(i), 0, key(i).length, value.fill(i & 0xff), 0, 1000, 0)).toBe(0);
  const byRank = new Int32Array(n).map((_, i) => i);
  const rng = new Prng(seed);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [byRank[i], byRank[j]] = [byRank[j]!, byRank[i]!];
  }
  const rank = new Int32Array(n);
  for (let r = 0; r < n; r++) {
    rank[byRank[r]!] = r;
    expect(store.get(key(byRank[r]!))).toBeGreaterThanOrEqual(0);
  }
  return { groups, rank, byRank };
}

function held(groups: Groups, n: number): boolean[] {
  const store = groups.byName("kv")!.store;
  return Array.from({ length: n }, (_, i) => store.has(key(i)));
}

test("a restart into less memory keeps the hottest items and drops the coldest (review: it kept the highest item ids, whatever their recency)", async () => {
  const seed = testSeed();
  const n = 20_000;
  const { groups, byRank } = heated(64 * MB, n, seed);
  const w = await new Snapshotter({ path, groups, logger: quiet, sliceMs: 1 }).write();
  expect(w.items).toBe(n);
  const small = makeGroups(4 * MB);
  const l = await new Snapshotter({ path, groups: small, logger: quiet }).load();
  const kept = small.byName("kv")!.store.size;
  expect(l).toMatchObject({ status: "loaded", items: kept });
  expect(kept).toBeGreaterThan(n / 10);
  expect(kept).toBeLessThan(n / 4);
  const has = held(small, n);
  // The order is approximate (items of one age band in id order): the hottest half of what fits
  // is all there, and nothing from the coldest half of the file.
  const missingHot = [...byRank.subarray(n - Math.floor(kept / 2))].filter((i) => !has[i]);
  const keptCold = [...byRank.subarray(0, n / 2)].filter((i) => has[i]);
  expect({ seed, missingHot: missingHot.length, keptCold: keptCold.length }).toEqual({ seed, missingHot: 0, keptCold: 0 });
  small.byName("kv")!.store.checkInvariants();
});

test("a node restarted with a smaller --memory serves the keys read last before it stopped, not the ones read first (over its port)", async () => {
  const seed = testSeed();
  const n = 8_000;
  const snapshot = join(dir, "node.snap");
  const first = await CacheNode.open({ port: 0, snapshot, snapshotIntervalMs: 0, memory: 32 * MB }, { logger: new LogSink().logger });
  const c1 = new CacheClient({ host: "127.0.0.1", port: first.port });
  const value = "v".repeat(1000);
  const keys = Array.from({ length: n }, (_, i) => `k${i}`);
  for (let i = 0; i < n; i += 500) await Promise.all(keys.slice(i, i + 500).map((k) => c1.set("default", k, value)));
  // Read in a seeded random order, pipelined on one connection (served in the order sent).
  const order = keys.slice();
  const rng = new Prng(seed);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  for (let i = 0; i < n; i += 500) await Promise.all(order.slice(i, i + 500).map((k) => c1.get("default", k)));
  c1.close();
  await first.close();
  await using second = await CacheNode.open({ port: 0, snapshot, memory: 4 * MB }, { logger: new LogSink().logger });
  const c2 = new CacheClient({ host: "127.0.0.1", port: second.port });
  const found = new Set<string>();
  for (let i = 0; i < n; i += 500) for (const k of (await c2.getMulti("default", keys.slice(i, i + 500))).keys()) found.add(k);
  c2.close();
  expect(found.size).toBeGreaterThan(n / 10);
  expect(found.size).toBeLessThan(n / 2);
  const missingHot = order.slice(n - Math.floor(found.size / 2)).filter((k) => !found.has(k));
  const keptCold = order.slice(0, n / 2).filter((k) => found.has(k));
  expect({ seed, missingHot: missingHot.length, keptCold: keptCold.length }).toEqual({ seed, missingHot: 0, keptCold: 0 });
});

test("after a restart into the same memory, new items evict what was coldest before the restart", async () => {
  const seed = testSeed();
  const n = 3_000;
  const { groups, byRank } = heated(4 * MB, n, seed);
  expect(groups.byName("kv")!.store.counters.evictions).toBe(0);
  await new Snapshotter({ path, groups, logger: quiet, sliceMs: 1 }).write();
  const next = makeGroups(4 * MB);
  expect((await new Snapshotter({ path, groups: next, logger: quiet }).load()).items).toBe(n);
  const store = next.byName("kv")!.store;
  const value = new Uint8Array(1000);
  let added = 0;
  for (; store.counters.evictions < n / 3; added++) {
    const k = enc.encode(`new${added}`);
    expect(store.set(k, 0, k.length, value, 0, 1000, 0)).toBe(0);
  }
  const has = held(next, n);
  const evicted = store.counters.evictions;
  // Evicted: the coldest third, give or take an age band (an eighth of the items: within one the
  // order is the id order, snapshot-order.ts); the hottest half all stayed.
  const band = n / MAX_BANDS;
  const missingHot = [...byRank.subarray(n / 2)].filter((i) => !has[i]);
  const goneCold = [...byRank.subarray(0, evicted - band)].filter((i) => !has[i]);
  expect({ seed, missingHot: missingHot.length, coldGone: goneCold.length }).toEqual({ seed, missingHot: 0, coldGone: evicted - band });
  store.checkInvariants();
});

/**
 * test/server/fixtures/v1.snap was written by the Snapshotter of 6aac2d3 (items in id order): groups
 * "kv" (key-<i> = "value-<i>-" repeated i + 1 times; key-0 to key-9 without expiry, key-10 to
 * key-19 expiring at wall time 9,904,057,042,347 ms, in 2283) and "other" (o = "other-group").
 */
test("a version-1 snapshot written before recency was kept still loads (fixture made by that writer)", async () => {
  const groups = makeGroups(4 * MB, ["kv", "other"]);
  const fixture = join(import.meta.dir, "fixtures", "v1.snap");
  rmSync(path, { force: true });
  await Bun.write(path, Bun.file(fixture));
  const l = await new Snapshotter({ path, groups, logger: quiet }).load();
  expect(l).toMatchObject({ status: "loaded", items: 21, skippedExpired: 0, skippedUnknownGroup: 0 });
  const kv = groups.byName("kv")!.store;
  for (let i = 0; i < 20; i++) {
    const id = kv.get(enc.encode(`key-${i}`));
    expect(id).toBeGreaterThanOrEqual(0);
    expect(dec.decode(kv.valueView(id))).toBe(`value-${i}-`.repeat(i + 1));
    expect(kv.ttlRemaining(id) === -1).toBe(i < 10); // key-10 to key-19 expire in 2283
  }
  const other = groups.byName("other")!.store;
  expect(dec.decode(other.valueView(other.get(enc.encode("o"))))).toBe("other-group");
});

test("a write gives the event loop a turn every sliceMs, also when each block's write is done before the next block is full (review: a recency-ordered write ran slice after slice from the task queue, 25-45 ms between two setImmediate turns)", async () => {
  // Every reading of the write's clock moves it 1 ms, so the slices are counted in readings, not
  // timed. A block of 32 KiB values is full after 32 items: the walk reads the clock less often
  // than that (every 64 ids), and the write of each block, issued to a real file, is done (from
  // Bun's task queue, no turn) by the time the next one is.
  let t = 0;
  const now = (): number => ++t;
  const groups = makeGroups(64 * MB);
  const store = groups.byName("kv")!.store;
  const value = new Uint8Array(32 * 1024);
  for (let i = 0; i < 1200; i++) expect(store.set(key(i), 0, key(i).length, value.fill(i & 0xff), 0, value.length, 0)).toBe(0);
  for (let i = 0; i < 1200; i += 7) store.get(key(i)); // recency not in id order: several bands
  const turns: number[] = [];
  const yieldTurn = SnapshotOut.prototype.yieldTurn;
  const spy = spyOn(SnapshotOut.prototype, "yieldTurn").mockImplementation(function (this: SnapshotOut) {
    turns.push(t);
    return yieldTurn.call(this);
  });
  try {
    const sliceMs = 20;
    const start = t;
    const w = await new Snapshotter({ path, groups, logger: quiet, sliceMs, now }).write();
    expect(w.items).toBe(1200);
    const marks = [start, ...turns, t];
    const gaps = marks.slice(1).map((m, i) => m - marks[i]!);
    // A slice ends at the first reading past its budget: the ids up to the next reading (64) and
    // the blocks they fill (two, a few readings each) may come first.
    expect(Math.max(...gaps)).toBeLessThanOrEqual(sliceMs + 16);
    expect(turns.length).toBeGreaterThan(10);
  } finally {
    spy.mockRestore();
  }
  const next = makeGroups(64 * MB);
  expect((await new Snapshotter({ path, groups: next, logger: quiet }).load()).items).toBe(1200);
});

/** recordsByKey counts the records of each key in the snapshot at `file`, whatever their group. */
async function recordsByKey(file: string): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for (const { key } of await snapshotRecords(file)) counts.set(key, (counts.get(key) ?? 0) + 1);
  return counts;
}

test("items held throughout a write are in it exactly once while others are read, set, replaced by larger values and deleted between its slices", async () => {
  const seed = testSeed();
  const rng = new Prng(seed);
  const groups = makeGroups(64 * MB);
  const store = groups.byName("kv")!.store;
  const held = 6_000;
  const churn = 2_000;
  const put = (k: string, len: number): void => {
    const kb = enc.encode(k);
    expect(store.set(kb, 0, kb.length, new Uint8Array(len).fill(len & 0xff), 0, len, 0)).toBe(0);
  };
  for (let i = 0; i < held; i++) put(`held${i}`, 200);
  for (let i = 0; i < churn; i++) put(`churn${i}`, 200);
  for (let i = 0; i < held; i += 3) store.get(enc.encode(`held${rng.int(held)}`));
  let writing = true;
  let turns = 0;
  const meddle = (): void => {
    if (!writing) return;
    turns++;
    for (let j = 0; j < 50; j++) {
      store.get(enc.encode(`held${rng.int(held)}`)); // a read moves an item to a younger band
      const k = `churn${rng.int(churn)}`;
      const op = rng.int(3);
      if (op === 0) store.delete(enc.encode(k));
      else put(k, op === 1 ? 200 : 2000); // 2000 B: another size class, so another id
    }
    setImmediate(meddle);
  };
  setImmediate(meddle);
  const w = await new Snapshotter({ path, groups, logger: quiet, sliceMs: 0.2 }).write();
  writing = false;
  expect(turns).toBeGreaterThan(5); // (the changes really ran between slices)
  const counts = await recordsByKey(path);
  const wrong = [];
  for (let i = 0; i < held; i++) if (counts.get(`held${i}`) !== 1) wrong.push(`held${i}: ${counts.get(`held${i}`) ?? 0}`);
  expect({ seed, wrong }).toEqual({ seed, wrong: [] });
  expect([...counts.values()].reduce((a, b) => a + b, 0)).toBe(w.items);
  const next = makeGroups(64 * MB);
  const l = await new Snapshotter({ path, groups: next, logger: quiet }).load();
  expect(l.items).toBeGreaterThanOrEqual(held);
  next.byName("kv")!.store.checkInvariants();
});
