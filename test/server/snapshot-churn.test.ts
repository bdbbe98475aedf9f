/**
 * A recency-ordered write (snapshot-order.ts: a counting walk, then one walk per age band) while
 * the store changes between its slices in every way the walks must survive: reads that move items
 * to younger bands, values re-set (another size class: another id) and deleted, the item table
 * grown by new keys, shrunk by the active-expiry tick (its moves waiting on the write's pin), or
 * emptied by a Clear, and the access tick wrapping past 2^31 and 2^32 mid-write. Every value
 * carries its key's version; the file must hold, for each key, versions in the order they were
 * set (a later record, which the load keeps, is never an older value), each key read but never
 * changed exactly once, and the count the write reports; it must load into a consistent store.
 */
import { afterEach, beforeEach, expect, test, setDefaultTimeout } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Group } from "../../src/cluster/group.ts";
import { Groups } from "../../src/cluster/groups.ts";
import { Snapshotter, type SnapshotLogger } from "../../src/server/snapshot.ts";
import { STRIDE, W_ATIME } from "../../src/store/item-table.ts";
import { Prng, testSeed } from "../support/prng.ts";
import { snapshotRecords } from "./snapshot-records.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const enc = new TextEncoder();
const quiet: SnapshotLogger = { info() {}, warn() {}, error() {} };

let dir = "";
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "mbc-churn-"));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** records lists the snapshot's records at `file` in file order: key and the value's first 4 bytes (version, big-endian). */
async function records(file: string): Promise<{ key: string; version: number }[]> {
  return (await snapshotRecords(file)).map(({ key, value }) => ({
    key,
    version: value.length >= 4 ? new DataView(value.buffer, value.byteOffset, value.length).getUint32(0) : 0,
  }));
}

type Mode = "churn" | "growth" | "shrink" | "clear";
const seed = testSeed();

for (const mode of ["churn", "growth", "shrink", "clear"] as Mode[]) {
  test(`${mode}: versions in order, keys held throughout once, while the store changes between slices and the access tick wraps (TEST_SEED=${seed})`, async () => {
    const rng = new Prng(seed);
    let clock = 1_000;
    const groups = new Groups();
    groups.add(new Group({ name: "kv", memory: 64 << 20, store: { maxItemSize: 64 * 1024, initialItems: 64, clock: () => clock } }));
    const store = groups.byName("kv")!.store;
    // The tick a little below 2^32 (or 2^31): atimes written as Int32 wrap during the write.
    store.tick = 2 ** 32 - 2_000 - rng.int(4_000) - (rng.int(2) === 0 ? 2 ** 31 : 0);
    const n = 3_000;
    const version = new Int32Array(n); // the key's current version, 0: none
    const changed = new Uint8Array(n); // set, deleted or cleared while the write ran
    let versions = 0;
    const put = (i: number): void => {
      const k = enc.encode(`k${i}`);
      const len = 100 + rng.int(3) * 700; // three size classes
      const v = new Uint8Array(len);
      new DataView(v.buffer).setUint32(0, ++versions);
      expect(store.set(k, 0, k.length, v, 0, len, 0)).toBe(0);
      version[i] = versions;
    };
    // shrink: a table far larger than its items, which sit at its top: the expiry tick shrinks it
    // while the write runs, moving them down to free ids once the write's pin lets it.
    const filler = mode === "shrink" ? 30_000 : 0;
    for (let x = 0; x < filler; x++) store.set(enc.encode(`y${x}`), 0, `y${x}`.length, new Uint8Array(8), 0, 8, 0);
    for (let i = 0; i < n; i++) put(i);
    for (let x = 0; x < filler; x++) store.delete(enc.encode(`y${x}`));
    for (let j = 0; j < n; j++) store.get(enc.encode(`k${rng.int(n)}`));
    const cap0 = store.items.cap;
    let minCap = cap0;
    let maxCap = cap0;
    let clears = 0;
    let writing = true;
    let turns = 0;
    const meddle = (): void => {
      if (!writing) return;
      turns++;
      for (let j = 0; j < 30; j++) {
        const i = rng.int(n);
        const op = rng.int(10);
        if (op < 5) store.get(enc.encode(`k${i}`));
        else if (op < 7) {
          changed[i] = 1;
          put(i);
        } else if (op < 9) {
          changed[i] = 1;
          store.delete(enc.encode(`k${i}`));
          version[i] = 0;
        }
      }
      if (mode === "growth") for (let q = 0; q < 40; q++) store.set(enc.encode(`z${turns}-${q}`), 0, `z${turns}-${q}`.length, new Uint8Array(8), 0, 8, 0);
      if (mode === "clear" && turns % 25 === 0) {
        store.clear();
        clears++;
        changed.fill(1);
        version.fill(0);
        for (let q = 0; q < 300; q++) put(rng.int(n));
      }
      clock += 10;
      store.expire(clock, 200);
      minCap = Math.min(minCap, store.items.cap);
      maxCap = Math.max(maxCap, store.items.cap);
      setImmediate(meddle);
    };
    setImmediate(meddle);
    const path = join(dir, "cache.snap");
    const w = await new Snapshotter({ path, groups, logger: quiet, sliceMs: 0.05 }).write();
    writing = false;
    expect(turns).toBeGreaterThan(20); // (the changes really ran between slices)
    if (mode === "growth") expect(maxCap).toBeGreaterThan(cap0);
    if (mode === "shrink") expect(minCap).toBeLessThan(cap0 / 2);
    if (mode === "clear") expect(clears).toBeGreaterThan(0);

    const recs = await records(path);
    expect(recs.length).toBe(w.items);
    const seen = new Map<string, number[]>();
    for (const r of recs) if (r.key.startsWith("k")) (seen.get(r.key) ?? seen.set(r.key, []).get(r.key)!).push(r.version);
    const wrong: string[] = [];
    for (const [k, vs] of seen) for (let j = 1; j < vs.length; j++) if (vs[j]! <= vs[j - 1]!) wrong.push(`${k}: versions ${vs.join(",")}`);
    for (let i = 0; i < n; i++) if (changed[i] === 0 && (seen.get(`k${i}`)?.length ?? 0) !== 1) wrong.push(`k${i} held: ${seen.get(`k${i}`)?.length ?? 0} records`);
    expect({ seed, wrong: wrong.slice(0, 5) }).toEqual({ seed, wrong: [] });
    store.checkInvariants();
    const next = new Groups();
    next.add(new Group({ name: "kv", memory: 64 << 20, store: { maxItemSize: 64 * 1024 } }));
    expect((await new Snapshotter({ path, groups: next, logger: quiet }).load()).status).toBe("loaded");
    next.byName("kv")!.store.checkInvariants();
  });
}

test("a group of no items, one of one item and one whose items all have the same age: each item once, the same-age ones in id order", async () => {
  const groups = new Groups();
  for (const name of ["none", "one", "same"]) groups.add(new Group({ name, memory: 4 << 20 }));
  const one = groups.byName("one")!.store;
  expect(one.set(enc.encode("only"), 0, 4, enc.encode("v"), 0, 1, 0)).toBe(0);
  const same = groups.byName("same")!.store;
  for (let i = 0; i < 500; i++) expect(same.set(enc.encode(`s${i}`), 0, `s${i}`.length, enc.encode("v"), 0, 1, 0)).toBe(0);
  for (let id = 0; id < same.items.cap; id++) if (same.items.isLive(id)) same.items.w[id * STRIDE + W_ATIME] = same.accessTick - 7;
  const path = join(dir, "small.snap");
  const w = await new Snapshotter({ path, groups, logger: quiet, sliceMs: 0.05 }).write();
  expect(w.items).toBe(501);
  const keys = (await records(path)).map((r) => r.key);
  expect(keys).toEqual(["only", ...Array.from({ length: 500 }, (_, i) => `s${i}`)]);
});
