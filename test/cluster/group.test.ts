/**
 * Read-through groups: singleflight loading, loader outcomes (value, not found, error, timeout),
 * negative caching, LRU-K admission of loaded values, and the embeddable API.
 */
import { describe, expect, spyOn, test, setDefaultTimeout } from "bun:test";
import { join } from "node:path";
import { Group } from "../../src/cluster/group.ts";
import type { LoadResult } from "../../src/cluster/loader.ts";
import type { TooLargeKeys } from "../../src/cluster/too-large-keys.ts";
import { LoaderPool } from "../../src/loaders/loader-pool.ts";
import { CacheError, ERROR_CODE } from "../../src/protocol/errors.ts";
import { MIB, SET_OK, SET_TOO_LARGE } from "../../src/store/store.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const text = (b: Uint8Array): string => new TextDecoder().decode(b);
const FIXTURES = join(import.meta.dir, "../loaders/fixtures/loaders.ts");

function codeOf(e: unknown): number {
  return e instanceof CacheError ? e.code : -1;
}

async function failure(p: Promise<unknown>): Promise<CacheError> {
  const e = await p.then(() => undefined, (err: unknown) => err);
  expect(e).toBeInstanceOf(CacheError);
  return e as CacheError;
}

describe("Group read-through", () => {
  test("the loader gets the key as sent: a leading byte-order mark stays", async () => {
    const seen: string[] = [];
    const g = new Group({ name: "g", memory: 4 * MIB, admission: "always", loader: (key) => (seen.push(key), `v:${key.length}`) });
    const key = new Uint8Array([0xef, 0xbb, 0xbf, 0x61, 0x62, 0x63]); // U+FEFF "abc"
    expect(text((await g.load(key, 0, key.length)).value)).toBe("v:4");
    expect(seen).toEqual(["\uFEFFabc"]);
  });

  test("a key that is not UTF-8 is INVALID_ARGUMENT and never reaches the loader", async () => {
    // Decoded leniently, 0xFF and 0xFE would both reach the loader as "\uFFFD": it would load the
    // same row for two different keys, and each would cache it under its own name.
    const seen: string[] = [];
    const g = new Group({ name: "g", memory: 4 * MIB, admission: "always", loader: (key) => (seen.push(key), `row of ${key}`) });
    for (const bad of [[0xff], [0xfe], [0x61, 0xc3], [0xed, 0xa0, 0x80]]) {
      const key = Uint8Array.from(bad);
      const e = await failure(g.load(key, 0, key.length));
      expect([e.code, e.message]).toEqual([ERROR_CODE.INVALID_ARGUMENT, "key is not valid UTF-8: a loader takes the key as text"]);
      expect(g.store.has(key)).toBe(false);
    }
    expect(seen).toEqual([]);
    expect(g.counters.loads).toBe(0);
    const ok = new Uint8Array([0x61, 0xc3, 0xa9]); // "aé"
    expect(text((await g.load(ok, 0, ok.length)).value)).toBe("row of aé");
    expect(seen).toEqual(["aé"]);
  });

  test("a mirror's items are capped at its page, a 64th of it (at least 64 KiB): a larger value is not mirrored", () => {
    const g = new Group({ name: "g", memory: 64 * MIB, mirrorMemory: 8 * MIB });
    expect(g.store.slab.pageSize).toBe(MIB);
    expect(g.mirror!.slab.pageSize).toBe(128 * 1024);
    const k = new TextEncoder().encode("k");
    const big = new Uint8Array(200 * 1024);
    expect(g.store.set(k, 0, 1, big, 0, big.length, 0)).toBe(SET_OK);
    expect(g.mirror!.fill(k, 0, 1, big, 0, big.length, 0)).toBe(SET_TOO_LARGE);
    expect(g.mirror!.fill(k, 0, 1, big, 0, 100 * 1024, 0)).not.toBe(SET_TOO_LARGE);
    // A large mirror's cap grows with it, past 1 MiB when --max-item-size allows (review).
    const large = new Group({ name: "l", memory: 1024 * MIB, mirrorMemory: 128 * MIB, store: { maxItemSize: 4 * MIB } });
    const two = new Uint8Array(2 * MIB - 64); // (an item is a 4-byte header, the key and the value)
    expect(large.mirror!.set(k, 0, 1, two, 0, two.length, 0)).toBe(SET_OK);
    expect(large.mirror!.set(k, 0, 1, new Uint8Array(3 * MIB), 0, 3 * MIB, 0)).toBe(SET_TOO_LARGE);
  });

  test("mirror copy tickets: a write of the key, a clear or a member change since the ticket refuses the copy", () => {
    const g = new Group({ name: "g", memory: 8 * MIB, mirrorMemory: 2 * MIB });
    const k = new TextEncoder().encode("k");
    const t0 = g.copyTicket();
    expect(g.mayCopy(k, 0, 1, t0)).toBe(true);
    g.written(k, 0, 1); // a Set or Delete of k here, forwarded through here, or the owner's PeerInvalidate
    expect(g.mayCopy(k, 0, 1, t0)).toBe(false);
    const t1 = g.copyTicket();
    expect(g.mayCopy(k, 0, 1, t1)).toBe(true); // sent after the write: its answer is newer
    g.clear();
    expect(g.mayCopy(k, 0, 1, t1)).toBe(false);
    const t2 = g.copyTicket();
    g.mirror!.set(k, 0, 1, k, 0, 1, 0);
    g.dropCopies();
    expect(g.mirror!.size).toBe(0);
    expect(g.mayCopy(k, 0, 1, t2)).toBe(false);
    expect(g.mayCopy(k, 0, 1, g.copyTicket())).toBe(true);
  });

  test("dropNotOwned removes, a slice at a time, the items whose keys this node no longer owns", async () => {
    const g = new Group({ name: "g", memory: 8 * MIB });
    for (let i = 0; i < 10_000; i++) g.set(`k${i}`, `v${i}`);
    const owns = (key: Uint8Array, off: number, len: number) => Number(new TextDecoder().decode(key.subarray(off + 1, off + len))) % 3 !== 0;
    const removed = await g.dropNotOwned(owns, 1000);
    expect(removed).toBe(3334);
    expect(g.store.size).toBe(10_000 - 3334);
    expect(g.store.has(new TextEncoder().encode("k3"))).toBe(false);
    expect(g.store.has(new TextEncoder().encode("k4"))).toBe(true);
    g.store.checkInvariants();
  });

  test("1,000 concurrent gets of one cold key make exactly one loader call; all get the same bytes", async () => {
    let calls = 0;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const g = new Group({
      name: "g", memory: 4 * MIB, admission: "always",
      loader: async (key) => {
        calls++;
        await gate;
        return `loaded:${key}`;
      },
    });
    const gets = Array.from({ length: 1000 }, () => g.get("cold"));
    release();
    const values = await Promise.all(gets);
    expect(calls).toBe(1);
    expect(new Set(values.map(text))).toEqual(new Set(["loaded:cold"]));
    const c = g.counters;
    expect([c.gets, c.hits, c.loads, c.loadsDeduped, c.localLoads]).toEqual([1000, 0, 1000, 1, 1]);
    expect(text(await g.get("cold"))).toBe("loaded:cold"); // now a hit
    expect(calls).toBe(1);
    expect(g.counters.hits).toBe(1);
  });

  test("with LRU-K (K=2) the concurrent callers count as accesses: one load, and the value is admitted", async () => {
    let calls = 0;
    const g = new Group({ name: "g", memory: 4 * MIB, loader: async (key) => {
      calls++;
      await Bun.sleep(10);
      return `loaded:${key}`;
    } });
    await Promise.all(Array.from({ length: 1000 }, () => g.get("hot")));
    expect(calls).toBe(1);
    expect(g.store.has(new TextEncoder().encode("hot"))).toBe(true);
    // A key read once is still not admitted.
    await g.get("once");
    expect(g.store.has(new TextEncoder().encode("once"))).toBe(false);
  });

  test("1,000 concurrent gets of one cold key through the worker pool make one pool load", async () => {
    await using pool = await LoaderPool.open({ module: FIXTURES, threads: 2, queue: 8 });
    const g = new Group({ name: "slow", memory: 4 * MIB, loader: (key) => pool.run("slow", key) });
    const values = await Promise.all(Array.from({ length: 1000 }, () => g.get("30")));
    expect(new Set(values.map(text))).toEqual(new Set(["slept 30"]));
    expect(pool.counters.submitted).toBe(1);
    expect(g.counters.loadsDeduped).toBe(1);
  });

  test("a loader's own TTL from the worker pool is the stored item's", async () => {
    let now = 5_000;
    await using pool = await LoaderPool.open({ module: join(import.meta.dir, "../loaders/fixtures/fresh.ts"), threads: 1, queue: 8 });
    const g = new Group({ name: "g", memory: 4 * MIB, admission: "always", defaultTtlMs: 60_000, store: { clock: () => now },
      loader: (key) => pool.run(key, "k") });
    const ttl = async (group: string): Promise<number> => {
      const key = new TextEncoder().encode(group);
      await g.load(key, 0, key.length).catch(() => undefined);
      const id = g.lookup(key, 0, key.length, false);
      return id < 0 ? -2 : g.store.ttlRemaining(id);
    };
    expect([await ttl("bytes"), await ttl("text"), await ttl("forever"), await ttl("groupTtl")]).toEqual([250, 1, -1, 60_000]);
    expect((await failure(g.get("missing"))).code).toBe(ERROR_CODE.NOT_FOUND);
    expect(g.counters.localLoads).toBe(4);
    now += 299;
    expect((await failure(g.get("missing"))).code).toBe(ERROR_CODE.NOT_FOUND);
    expect(pool.counters.submitted).toBe(5); // the not found was cached for its 300 ms
  });

  test("the store is re-checked inside the flight: a value set meanwhile is not loaded again", async () => {
    let calls = 0;
    const g = new Group({ name: "g", memory: 4 * MIB, loader: () => `${++calls}` });
    const key = new TextEncoder().encode("k");
    g.set("k", "set-by-someone");
    // A caller that missed before the set now loads: the flight finds the value and returns it.
    expect(text((await g.load(key, 0, key.length)).value)).toBe("set-by-someone");
    expect(calls).toBe(0);
  });

  test("a thrown error is LOAD_FAILED with its message, and nothing is cached", async () => {
    let calls = 0;
    const g = new Group({ name: "g", memory: 4 * MIB, negativeTtlMs: 60_000, loader: () => {
      calls++;
      throw new Error("database down");
    } });
    const e = await failure(g.get("k"));
    expect([e.code, e.message]).toEqual([ERROR_CODE.LOAD_FAILED, "database down"]);
    await failure(g.get("k"));
    expect(calls).toBe(2); // errors are never cached, not even as negative entries
    expect(g.counters.localLoadErrs).toBe(2);
    expect(g.store.size).toBe(0);
  });

  test("an in-process loader's error whose message getter throws is LOAD_FAILED with the error's name", async () => {
    const g = new Group({ name: "g", memory: 4 * MIB, loader: () => {
      const e = new RangeError("hidden");
      Object.defineProperty(e, "message", { get() { throw new Error("no message for you"); } });
      throw e;
    } });
    const e = await failure(g.get("k"));
    expect([e.code, e.message]).toEqual([ERROR_CODE.LOAD_FAILED, "RangeError: <message unreadable>"]);
  });

  test("a loader slower than the timeout is LOAD_FAILED (timeout); its late value still fills the cache", async () => {
    let finish!: (v: LoadResult) => void;
    const g = new Group({ name: "g", memory: 4 * MIB, admission: "always", loadTimeoutMs: 20,
      loader: () => new Promise<LoadResult>((r) => (finish = r)) });
    const e = await failure(g.get("k"));
    expect(e.code).toBe(ERROR_CODE.LOAD_FAILED);
    expect(e.message).toContain("timed out");
    expect(g.counters.loadTimeouts).toBe(1);
    finish("late");
    await Promise.resolve();
    await new Promise((r) => setTimeout(r, 0));
    expect(text(await g.get("k"))).toBe("late");
    expect(g.counters.hits).toBe(1);
  });

  test("callers that time out do not call a slow loader again: later callers join its one flight", async () => {
    let calls = 0;
    let finish!: (v: LoadResult) => void;
    const g = new Group({ name: "g", memory: 4 * MIB, admission: "always", loadTimeoutMs: 20,
      loader: () => {
        calls++;
        return new Promise<LoadResult>((r) => (finish = r));
      } });
    expect((await failure(g.get("k"))).message).toContain("timed out");
    expect((await failure(g.get("k"))).message).toContain("timed out"); // joined the same flight
    expect([calls, g.counters.loadTimeouts, g.counters.loadsDeduped]).toEqual([1, 2, 1]);
    const third = g.get("k"); // joins too, and gets the value when it comes
    finish("late");
    expect(text(await third)).toBe("late");
    expect(text(await g.get("k"))).toBe("late");
    expect(calls).toBe(1);
  });

  test("a flight unanswered for four load timeouts may be replaced by a new call", async () => {
    let calls = 0;
    const g = new Group({ name: "g", memory: 4 * MIB, admission: "always", loadTimeoutMs: 15,
      loader: () => {
        calls++;
        return calls === 1 ? new Promise<LoadResult>(() => {}) : "second";
      } });
    expect((await failure(g.get("k"))).message).toContain("timed out");
    expect(calls).toBe(1);
    await new Promise((r) => setTimeout(r, 4 * 15 + 20));
    expect(text(await g.get("k"))).toBe("second");
    expect(calls).toBe(2);
  });

  test.each([
    ["off", 0, 3, 0],
    ["on", 60_000, 1, 2],
  ])("not found → NOT_FOUND; negative caching %s", async (_name, negativeTtlMs, wantCalls, wantNegativeHits) => {
    let calls = 0;
    const g = new Group({ name: "g", memory: 4 * MIB, negativeTtlMs, loader: () => {
      calls++;
      return null;
    } });
    for (let i = 0; i < 3; i++) expect(codeOf(await g.get("absent").catch((e: unknown) => e))).toBe(ERROR_CODE.NOT_FOUND);
    expect(calls).toBe(wantCalls);
    expect(g.counters.negativeHits).toBe(wantNegativeHits);
    expect(g.counters.notFound).toBe(wantCalls);
  });

  test("refused oversized values are remembered for the negative TTL, at most 1,024 keys, and forgotten by a clear", async () => {
    const calls = new Map<string, number>();
    const g = new Group({ name: "g", memory: 4 * MIB, negativeTtlMs: 60_000, store: { maxItemSize: 4096 }, loader: (key) => {
      calls.set(key, (calls.get(key) ?? 0) + 1);
      return "x".repeat(5000);
    } });
    const tooLarge = async (key: string) => expect(codeOf(await failure(g.get(key)))).toBe(ERROR_CODE.VALUE_TOO_LARGE);
    await tooLarge("k0");
    await tooLarge("k0");
    expect(calls.get("k0")).toBe(1);
    expect(g.counters.negativeHits).toBe(1);
    g.clear();
    await tooLarge("k0");
    expect(calls.get("k0")).toBe(2);
    for (let i = 1; i <= 1024; i++) await tooLarge(`k${i}`); // k0 is the oldest of 1,025: forgotten
    await tooLarge("k1024");
    await tooLarge("k1");
    expect(calls.get("k1024")).toBe(1);
    expect(calls.get("k1")).toBe(1);
    await tooLarge("k0");
    expect(calls.get("k0")).toBe(3);
  });

  test("a loaded string longer than the max item size is refused unencoded, with the same error as one that is too large once encoded", async () => {
    // Table: [loaded string, its UTF-8 bytes, encoded before the refusal]. "€" is 3 bytes of UTF-8.
    const cases: [string, number, boolean][] = [
      ["x".repeat(5000), 5000, false], // its length proves it too large
      ["€".repeat(5000), 15_000, false],
      ["€".repeat(2000), 6000, true], // short enough to fit, too large once encoded
    ];
    const encode = spyOn(TextEncoder.prototype, "encode");
    try {
      for (const [loaded, bytes, encoded] of cases) {
        const g = new Group({ name: "g", memory: 4 * MIB, store: { maxItemSize: 4096 }, loader: () => loaded });
        encode.mockClear();
        const e = await failure(g.get("k"));
        expect([e.code, e.message]).toEqual([ERROR_CODE.VALUE_TOO_LARGE, `the loader returned ${bytes} bytes, more than the max item size`]);
        expect(encode.mock.calls.some(([s]) => s === loaded)).toBe(encoded);
        expect(g.counters.localLoadErrs).toBe(1);
        expect(g.store.size).toBe(0);
      }
    } finally {
      encode.mockRestore();
    }
  });

  test("expired refusals are dropped by the next write, so writes stop paying for them", async () => {
    let now = 1_000;
    const g = new Group({ name: "g", memory: 4 * MIB, negativeTtlMs: 100, store: { maxItemSize: 4096, clock: () => now }, loader: () => "x".repeat(5000) });
    const remembered = () => (g as unknown as { loadPath: { tooLarge: TooLargeKeys } }).loadPath.tooLarge.size;
    await failure(g.get("a"));
    now += 50;
    await failure(g.get("b"));
    expect(remembered()).toBe(2);
    now += 50; // a's refusal is up, b's is not
    g.set("other", "v");
    expect(remembered()).toBe(1);
    now += 50;
    g.set("other", "v");
    expect(remembered()).toBe(0);
  });

  test("a refusal expires at its own time even when the clock stepped back since an earlier one", async () => {
    let now = 1_000;
    let calls = 0;
    const g = new Group({ name: "g", memory: 4 * MIB, negativeTtlMs: 100, store: { maxItemSize: 4096, clock: () => now }, loader: () => (calls++, "x".repeat(5000)) });
    await failure(g.get("a")); // until 1100
    now = 950; // the wall clock steps back
    await failure(g.get("b")); // until 1050, behind a's
    now = 1_060;
    await failure(g.get("b"));
    expect(calls).toBe(3); // b's refusal was over: loaded again
  });

  test("a negative entry expires after its TTL, and a set replaces it", async () => {
    let now = 1_000;
    let calls = 0;
    const g = new Group({ name: "g", memory: 4 * MIB, negativeTtlMs: 100, store: { clock: () => now }, loader: () => {
      calls++;
      return undefined;
    } });
    await failure(g.get("k"));
    now += 99;
    await failure(g.get("k"));
    expect(calls).toBe(1);
    now += 1;
    await failure(g.get("k"));
    expect(calls).toBe(2);
    g.set("k", "real");
    expect(text(await g.get("k"))).toBe("real");
  });

  test("LRU-K (K=2): the first load is served but not admitted, the second access is admitted", async () => {
    let calls = 0;
    const g = new Group({ name: "g", memory: 4 * MIB, admissionK: 2, loader: (k) => `v${++calls}:${k}` });
    expect(text(await g.get("k"))).toBe("v1:k");
    expect(g.store.has(new TextEncoder().encode("k"))).toBe(false);
    expect(g.counters.admissionsRejected).toBe(1);
    expect(text(await g.get("k"))).toBe("v2:k");
    expect(g.store.has(new TextEncoder().encode("k"))).toBe(true);
    expect(text(await g.get("k"))).toBe("v2:k"); // a hit now
    expect(calls).toBe(2);
    // An explicit set is always admitted and readable back.
    g.set("explicit", "mine");
    expect(text(await g.get("explicit"))).toBe("mine");
  });

  test("loaded values get the group's default TTL", async () => {
    let now = 5_000;
    const g = new Group({ name: "g", memory: 4 * MIB, admission: "always", defaultTtlMs: 1_000, store: { clock: () => now },
      loader: () => `at ${now}` });
    expect(text(await g.get("k"))).toBe("at 5000");
    now += 999;
    expect(text(await g.get("k"))).toBe("at 5000");
    now += 1;
    expect(text(await g.get("k"))).toBe("at 6000");
  });

  test("a loader's own TTL ({ value, ttlMs }) wins over the group's: ms, rounded up, Infinity for good, 0 the group's", async () => {
    let now = 5_000;
    const ttls: Record<string, number | undefined> = { short: 250, frac: 0.2, forever: Infinity, dflt: 0, absent: undefined };
    const g = new Group({ name: "g", memory: 4 * MIB, admission: "always", defaultTtlMs: 1_000, store: { clock: () => now },
      loader: (key) => (key === "absent" ? { value: `${key} at ${now}` } : { value: `${key} at ${now}`, ttlMs: ttls[key] }) });
    const lived = async (key: string): Promise<number> => {
      const start = now;
      const first = text(await g.get(key));
      for (;;) {
        now += 1;
        if (text(await g.get(key)) !== first) return now - start;
        if (now - start > 100_000) return Infinity;
      }
    };
    expect(await lived("short")).toBe(250);
    expect(await lived("frac")).toBe(1);
    expect(await lived("dflt")).toBe(1_000);
    expect(await lived("absent")).toBe(1_000);
    expect(await lived("forever")).toBe(Infinity);
    const key = new TextEncoder().encode("short");
    const loaded = await g.load(key, 0, key.length);
    expect(loaded.ttlRemainingMs).toBe(250); // what a Get over the wire answers as ttlRemainingMs
  });

  test("a loader's { value: null, ttlMs } caches the not found that long, whatever the group's negttl", async () => {
    let now = 5_000;
    let calls = 0;
    const g = new Group({ name: "g", memory: 4 * MIB, negativeTtlMs: 0, store: { clock: () => now }, loader: () => (calls++, { value: null, ttlMs: 300 }) });
    expect((await failure(g.get("k"))).code).toBe(ERROR_CODE.NOT_FOUND);
    now += 299;
    expect((await failure(g.get("k"))).code).toBe(ERROR_CODE.NOT_FOUND);
    expect(calls).toBe(1);
    now += 1;
    expect((await failure(g.get("k"))).code).toBe(ERROR_CODE.NOT_FOUND);
    expect(calls).toBe(2);
  });

  test.each([
    ["a negative ttlMs", { value: "v", ttlMs: -1 }, /gave a ttlMs of -1; it must be a number of ms >= 0/],
    ["a NaN ttlMs", { value: "v", ttlMs: NaN }, /gave a ttlMs of NaN; it must be a number of ms >= 0/],
    ["a ttlMs that is not a number", { value: "v", ttlMs: "5" }, /gave a ttlMs of a string; it must be a number of ms >= 0/],
    ["Infinity for a not found", { value: null, ttlMs: Infinity }, /gave a ttlMs of Infinity with no value/],
    ["a row object as it is", { id: 7, name: "x" }, /returned an object with a property "id"/],
    ["an object without value", { ttlMs: 5 }, /without "value"/],
    ["{ value } of a number", { value: 5 }, /returned a number; expected Uint8Array, string, null, undefined or \{ value, ttlMs \}/],
  ])("%s from a loader is LOAD_FAILED and nothing is cached", async (_name, answer, message) => {
    let calls = 0;
    const g = new Group({ name: "g", memory: 4 * MIB, negativeTtlMs: 60_000, loader: () => (calls++, answer as LoadResult) });
    for (let i = 0; i < 2; i++) {
      const e = await failure(g.get("k"));
      expect(e.code).toBe(ERROR_CODE.LOAD_FAILED);
      expect(e.message).toMatch(message);
    }
    expect(calls).toBe(2);
    expect(g.stats().items).toBe(0);
  });

  test("embeddable API: set/get/delete/clear with strings or bytes, typed errors, stats", async () => {
    const g = new Group({ name: "plain", memory: 4 * MIB, store: { maxItemSize: 4096 } });
    g.set("a", "1");
    g.set(new Uint8Array([0, 255]), new Uint8Array([9, 9, 9]), 60_000);
    expect(text(await g.get("a"))).toBe("1");
    expect(await g.get(new Uint8Array([0, 255]))).toEqual(new Uint8Array([9, 9, 9]));
    expect((await failure(g.get("nope"))).code).toBe(ERROR_CODE.NOT_FOUND); // no loader: plain store
    expect(() => g.set("big", new Uint8Array(5000))).toThrow(CacheError);
    expect(() => g.set("neg", "v", -5)).toThrow(CacheError);
    expect(g.delete("a")).toBe(true);
    expect(g.delete("a")).toBe(false);
    const s = g.stats();
    expect([s.items, s.sets, s.setErrors, s.deletes, s.hits]).toEqual([1, 2, 2, 1, 2]);
    g.clear();
    expect(g.stats().items).toBe(0);
  });
});
