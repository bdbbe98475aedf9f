// LoaderPool: values across the thread boundary, loader errors, worker crashes and recovery,
// queue saturation (ordering proven by promise settlement, never by timing), module validation,
// close, and the bun:sqlite example module. Every pool is closed (`await using`).
import { afterAll, describe, expect, test, setDefaultTimeout } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { Worker } from "node:worker_threads";
import { Database } from "bun:sqlite";
import { LoaderPool } from "../../src/loaders/loader-pool.ts";
import type { LoaderPoolLogger } from "../../src/loaders/loaders-module.ts";
import { CacheError, ERROR_CODE, type ErrorCode } from "../../src/protocol/errors.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

/** Paths relative to the current directory, as a user passes them on the command line. */
const fixture = (name: string) => relative(process.cwd(), join(import.meta.dir, "fixtures", name));
const LOADERS = fixture("loaders.ts");
const CRASH = fixture("crash.ts");
const NO_LOADERS = fixture("no-loaders.ts");
const EXAMPLE = relative(process.cwd(), join(import.meta.dir, "../../examples/sqlite-loaders.ts"));

type Entry = { level: "warn" | "error"; msg: string; f?: Record<string, unknown> };
function recordingLogger(): LoaderPoolLogger & { entries: Entry[] } {
  const entries: Entry[] = [];
  return {
    entries,
    warn: (msg, f) => entries.push({ level: "warn", msg, f }),
    error: (msg, f) => entries.push({ level: "error", msg, f }),
  };
}

/** failure awaits `p`, expects a CacheError rejection, and returns it for further checks. */
async function failure(p: Promise<unknown>, code: ErrorCode, message: RegExp): Promise<CacheError> {
  const err = await p.then(
    (v) => { throw new Error(`expected a rejection, got ${String(v)}`); },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(CacheError);
  const ce = err as CacheError;
  expect({ code: ce.code, message: ce.message }).toEqual({ code, message: expect.stringMatching(message) });
  return ce;
}

/** within answers what `p` settles to, or rejects if it has not settled in `ms` (a load must be answered). */
function within<T>(p: Promise<T>, ms: number): Promise<T> {
  const late = Bun.sleep(ms).then(() => { throw new Error(`not answered in ${ms} ms`); });
  return Promise.race([p, late]);
}

/** firstValue runs `load` again until it answers a value, for `ms` at most; undefined if it never did. */
async function firstValue(load: () => Promise<unknown>, ms: number): Promise<unknown> {
  for (const until = performance.now() + ms; performance.now() < until; await Bun.sleep(20)) {
    try {
      return await load();
    } catch {
      // stopped: the pool has no thread that imported the module yet
    }
  }
  return undefined;
}

describe("LoaderPool values", () => {
  test("lists the function exports as groups; a non-function export is ignored with a warning", async () => {
    const logger = recordingLogger();
    await using pool = await LoaderPool.open({ module: LOADERS, threads: 2, queue: 4, logger });
    expect([...pool.groups].sort()).toEqual(["bytes", "detached", "fails", "memo", "missing", "oddValue", "rejects", "slow", "surrogates", "text", "together", "unprintable", "unreadable", "view", "wrong"]);
    expect(logger.entries).toEqual([{ level: "warn", msg: expect.stringContaining("ignored"), f: expect.objectContaining({ export: "notALoader" }) }]);
  });

  test("string, bytes and not-found results", async () => {
    await using pool = await LoaderPool.open({ module: LOADERS, threads: 2, queue: 4, logger: recordingLogger() });
    const cases: [string, string, unknown][] = [
      ["text", "k1", "value of k1"],
      ["bytes", "héllo", new TextEncoder().encode("héllo")],
      ["view", "abc", new TextEncoder().encode("abc")],
      ["missing", "null", null],
      ["missing", "undefined", null], // undefined arrives as null: both mean "not found"
    ];
    for (const [group, key, want] of cases) expect(await pool.run(group, key)).toEqual(want as never);
    const bytes = await pool.run("bytes", "xyz");
    expect(bytes).toBeInstanceOf(Uint8Array);
    expect((bytes as Uint8Array).buffer.byteLength).toBe(3);
    expect(pool.counters).toEqual({ submitted: 6, completed: 6, failed: 0, rejected: 0, crashes: 0, stopped: 0 });
  });

  test("a loader's bytes are copied, never transferred: a buffer or subarray it keeps stays intact", async () => {
    await using pool = await LoaderPool.open({ module: LOADERS, threads: 1, queue: 4, logger: recordingLogger() });
    expect(await pool.run("bytes", "abc")).toEqual(new TextEncoder().encode("abc"));
    expect(await pool.run("view", "de")).toEqual(new TextEncoder().encode("de"));
    // One thread: `detached` runs in the worker that answered both loads above.
    expect(JSON.parse((await pool.run("detached", "")) as string)).toEqual({ bytes: false, parent: false });
  });

  test("a loader that answers the same buffer every time is answered every time (review: a transfer detached it, and the next answer crashed the thread)", async () => {
    await using pool = await LoaderPool.open({ module: LOADERS, threads: 1, queue: 4, logger: recordingLogger() });
    for (let i = 0; i < 4; i++) expect(await pool.run("memo", "k")).toEqual(new TextEncoder().encode("memo k"));
    expect(pool.counters).toEqual({ submitted: 4, completed: 4, failed: 0, rejected: 0, crashes: 0, stopped: 0 });
  });
});

describe("LoaderPool: a loader's own TTL ({ value, ttlMs })", () => {
  test("crosses the thread with its value: bytes moved (only the loader's own), a string, a not found; a TTL of 0 answers the plain value", async () => {
    await using pool = await LoaderPool.open({ module: fixture("fresh.ts"), threads: 1, queue: 8, logger: recordingLogger() });
    const bytes = (await pool.run("bytes", "k")) as { value: Uint8Array; ttlMs: number };
    expect(bytes).toEqual({ value: new TextEncoder().encode("bytes k"), ttlMs: 250 });
    expect(bytes.value.buffer.byteLength).toBe(7);
    expect(await pool.run("text", "k")).toEqual({ value: "text k", ttlMs: 1 });
    expect(await pool.run("forever", "k")).toEqual({ value: "forever k", ttlMs: Infinity });
    expect(await pool.run("groupTtl", "k")).toBe("group k");
    expect(await pool.run("missing", "k")).toEqual({ value: null, ttlMs: 300 });
    expect(pool.counters).toEqual({ submitted: 5, completed: 5, failed: 0, rejected: 0, crashes: 0, stopped: 0 });
  });

  test("a bad one is LOAD_FAILED naming the loader: a negative ttlMs, a row returned as it is", async () => {
    await using pool = await LoaderPool.open({ module: fixture("fresh.ts"), threads: 1, queue: 8, logger: recordingLogger() });
    await failure(pool.run("negative", "k"), ERROR_CODE.LOAD_FAILED, /^loader "negative" gave a ttlMs of -5; it must be a number of ms >= 0$/);
    await failure(pool.run("row", "k"), ERROR_CODE.LOAD_FAILED, /^loader "row" returned an object with a property "id"; expected Uint8Array, string, null, undefined or \{ value, ttlMs \}$/);
    expect(pool.counters.crashes).toBe(0);
  });
});

describe("LoaderPool errors", () => {
  test("loader failures are LOAD_FAILED with the loader's message; nothing crashes", async () => {
    await using pool = await LoaderPool.open({ module: LOADERS, threads: 1, queue: 4, logger: recordingLogger() });
    const cases: [string, string, RegExp][] = [
      ["fails", "k", /^no row for k$/],
      ["rejects", "k", /^rejected k$/],
      ["wrong", "abc", /loader "wrong" returned a number; expected Uint8Array, string, null, undefined or \{ value, ttlMs \}/],
    ];
    for (const [group, key, message] of cases) await failure(pool.run(group, key), ERROR_CODE.LOAD_FAILED, message);
    await failure(pool.run("nope", "k"), ERROR_CODE.UNKNOWN_GROUP, /no loader for group "nope"/);
    expect(await pool.run("text", "after")).toBe("value of after");
    expect(pool.counters).toEqual({ submitted: 4, completed: 1, failed: 3, rejected: 0, crashes: 0, stopped: 0 });
  });

  test("a loader answering bytes whose buffer it transferred away is LOAD_FAILED, not an empty value (they read as empty)", async () => {
    await using pool = await LoaderPool.open({ module: fixture("transferred.ts"), threads: 1, queue: 4, logger: recordingLogger() });
    await failure(pool.run("transferred", "k"), ERROR_CODE.LOAD_FAILED, /^loader "transferred" returned a Uint8Array whose buffer was transferred \(detached\): its bytes are gone$/);
    expect(await pool.run("text", "after")).toBe("value of after");
    expect(pool.counters.crashes).toBe(0);
  });

  test("a loader throwing a value String() cannot convert is LOAD_FAILED, not a crash", async () => {
    await using pool = await LoaderPool.open({ module: LOADERS, threads: 1, queue: 4, logger: recordingLogger() });
    await failure(pool.run("unprintable", "k"), ERROR_CODE.LOAD_FAILED, /^a value that cannot be printed$/);
    expect(await pool.run("text", "after")).toBe("value of after");
    expect(pool.counters.crashes).toBe(0);
  });

  test("a loader throwing an Error whose message getter throws is LOAD_FAILED with its name, not a crash (review: reported as crashed)", async () => {
    const logger = recordingLogger();
    await using pool = await LoaderPool.open({ module: LOADERS, threads: 1, queue: 4, logger });
    await failure(pool.run("unreadable", "k"), ERROR_CODE.LOAD_FAILED, /^TypeError: <message unreadable>$/);
    expect(await pool.run("text", "after")).toBe("value of after");
    expect(pool.counters).toMatchObject({ failed: 1, crashes: 0 });
    expect(logger.entries.filter((e) => e.level === "error")).toEqual([]);
  });

  test("a loader answering a value that cannot be inspected is LOAD_FAILED saying so, not a crash (review: reported as crashed)", async () => {
    await using pool = await LoaderPool.open({ module: LOADERS, threads: 1, queue: 2, logger: recordingLogger() });
    await failure(pool.run("oddValue", "ctor"), ERROR_CODE.LOAD_FAILED, /^loader "oddValue" returned a value that cannot be read: no constructor for you$/);
    await failure(pool.run("oddValue", "proxy"), ERROR_CODE.LOAD_FAILED, /^loader "oddValue" returned a value that cannot be read: no prototype for you$/);
    expect(await pool.run("text", "after")).toBe("value of after");
    expect(pool.counters).toEqual({ submitted: 3, completed: 1, failed: 2, rejected: 0, crashes: 0, stopped: 0 });
  });

  test("a module whose import never finishes refuses the start at the import bound, logged as it waits (it waited for good, saying nothing)", async () => {
    const logger = recordingLogger();
    const opened = LoaderPool.open({ module: fixture("hangs-at-import.ts"), threads: 1, queue: 2, importTimeoutMs: 400, logger });
    const err = await opened.then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/^cannot import loaders module .*hangs-at-import\.ts: its import did not finish in 400 ms/);
    expect(logger.entries.map((e) => [e.level, e.msg])).toEqual([["warn", "loaders module still importing; the node starts once it is done"]]);
  });

  test("a module that fails to import in the workers: callers get a plain LOAD_FAILED, the log gets why, once", async () => {
    const logger = recordingLogger();
    await using pool = await LoaderPool.open({ module: fixture("worker-import-error.ts"), threads: 1, queue: 4, logger });
    for (let i = 0; i < 3; i++) {
      const e = await failure(pool.run("users", "1"), ERROR_CODE.LOAD_FAILED, /^the loaders module failed to load/);
      expect(e.message).not.toContain("DB_PASSWORD");
    }
    const logged = logger.entries.filter((x) => x.level === "error" && String(x.f?.error).includes("DB_PASSWORD"));
    expect(logged.length).toBe(1);
  });

  test("a worker crash fails its load, is logged and counted, and the pool keeps serving", async () => {
    const logger = recordingLogger();
    await using pool = await LoaderPool.open({ module: CRASH, threads: 1, queue: 2, logger });
    expect(await pool.run("ok", "before")).toBe("ok before");
    const cases: [string, string, RegExp][] = [
      ["exit", "3", /^loader worker crashed: .*exited with code 3/],
      ["asyncThrow", "x", /^loader worker crashed: .*async boom x/],
      ["exit", "0", /^loader worker crashed: .*exited with code 0/],
    ];
    for (const [i, [group, key, message]] of cases.entries()) {
      await failure(pool.run(group, key), ERROR_CODE.LOAD_FAILED, message);
      expect(pool.counters.crashes).toBe(i + 1);
      expect(await pool.run("ok", `after ${i}`)).toBe(`ok after ${i}`);
    }
    const errors = logger.entries.filter((e) => e.level === "error");
    expect(errors.map((e) => e.msg)).toEqual(["loader worker crashed", "loader worker crashed", "loader worker crashed"]);
    expect(pool.counters).toEqual({ submitted: 7, completed: 4, failed: 3, rejected: 0, crashes: 3, stopped: 0 });
  });

  test("a worker that dies after answering, with no load on it, is counted and logged once, and replaced (review: logged twice, also as a pool error)", async () => {
    let crashed!: () => void;
    const seen = new Promise<void>((r) => (crashed = r));
    const logger = recordingLogger();
    const error = logger.error;
    logger.error = (msg, f) => {
      error(msg, f);
      if (msg === "loader worker crashed") crashed();
    };
    await using pool = await LoaderPool.open({ module: CRASH, threads: 1, queue: 2, logger });
    expect(await pool.run("throwLater", "x")).toBe("answered x");
    await seen;
    expect(await pool.run("ok", "after")).toBe("ok after");
    expect(logger.entries.map((e) => [e.level, e.msg, e.f?.error])).toEqual([["error", "loader worker crashed", "late boom x"]]);
    expect(pool.counters).toEqual({ submitted: 2, completed: 2, failed: 0, rejected: 0, crashes: 1, stopped: 0 });
  });

  test("after a replacement worker died as it started, a later crash is still seen at once (review: its load waited to be stopped)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "mbc-pool-"));
    const down = join(dir, "down");
    process.env.CRASH_AT_IMPORT_FILE = down;
    try {
      await using pool = await LoaderPool.open({ module: CRASH, threads: 1, queue: 2, logger: recordingLogger(), stopAfterMs: 10_000 });
      expect(await pool.run("ok", "a")).toBe("ok a");
      writeFileSync(down, "");
      await failure(pool.run("exit", "3"), ERROR_CODE.LOAD_FAILED, /exited with code 3/);
      // Its replacement dies importing the module; tinypool then starts workers only for tasks.
      for (let i = 0; i < 400 && pool.counters.crashes < 2; i++) await Bun.sleep(5);
      expect(pool.counters.crashes).toBe(2);
      rmSync(down);
      expect(await pool.run("ok", "b")).toBe("ok b");
      await failure(pool.run("exit", "4"), ERROR_CODE.LOAD_FAILED, /^loader worker crashed: .*exited with code 4/);
      expect(await pool.run("ok", "c")).toBe("ok c");
      expect(pool.counters.stopped).toBe(0);
    } finally {
      delete process.env.CRASH_AT_IMPORT_FILE;
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("threads that keep dying soon after they start wait longer and longer before they import the module, and serve once they live (review: restarted at once, for good: 46 deaths a second burnt 1.5 cores)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "mbc-pool-"));
    const soon = join(dir, "soon");
    process.env.DIE_SOON_FILE = soon;
    writeFileSync(soon, "");
    const logger = recordingLogger();
    const waits: unknown[] = [];
    let thirdWait!: () => void;
    const waited = new Promise<void>((r) => (thirdWait = r));
    const warn = logger.warn;
    logger.warn = (msg, f) => {
      warn(msg, f);
      if (msg.startsWith("loader threads keep dying soon after they start") && waits.push(f?.ms) === 3) thirdWait();
    };
    try {
      await using pool = await LoaderPool.open({ module: CRASH, threads: 1, queue: 2, logger, stopAfterMs: 10_000 });
      await within(waited, 15_000);
      // Three deaths in a row are replaced at once (a loader crashing on a few keys); then 100 ms, doubled each time.
      expect(waits).toEqual([100, 200, 400]);
      expect(pool.counters.crashes).toBe(6);
      rmSync(soon); // the keep-alive succeeds from now on
      expect(await firstValue(() => pool.run("ok", "k"), 10_000)).toBe("ok k");
      expect(await pool.run("ok", "again")).toBe("ok again");
    } finally {
      delete process.env.DIE_SOON_FILE;
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);

  /**
   * whileThreadsDieAtStart runs `body` with a pool of one thread (two places) after its thread
   * crashed and its replacement died importing the module (CRASH_AT_IMPORT_FILE), and a load
   * (`during`) was made that a third thread, dying as it starts, never took; `revive` lets threads
   * import the module again.
   */
  async function whileThreadsDieAtStart(body: (pool: LoaderPool, during: Promise<unknown>, revive: () => void) => Promise<void>): Promise<void> {
    const dir = mkdtempSync(join(tmpdir(), "mbc-pool-"));
    const down = join(dir, "down");
    process.env.CRASH_AT_IMPORT_FILE = down;
    try {
      await using pool = await LoaderPool.open({ module: CRASH, threads: 1, concurrency: 2, queue: 4, logger: recordingLogger(), stopAfterMs: 10_000 });
      expect(await pool.run("ok", "a")).toBe("ok a");
      writeFileSync(down, "");
      await failure(pool.run("exit", "3"), ERROR_CODE.LOAD_FAILED, /exited with code 3/);
      for (let i = 0; i < 400 && pool.counters.crashes < 2; i++) await Bun.sleep(5);
      expect(pool.counters.crashes).toBe(2); // its replacement died importing the module
      const during = pool.run("ok", "b"); // its thread dies as it starts, before taking it
      for (let i = 0; i < 400 && pool.counters.crashes < 3; i++) await Bun.sleep(5);
      expect(pool.counters.crashes).toBe(3);
      await body(pool, during, () => rmSync(down));
    } finally {
      delete process.env.CRASH_AT_IMPORT_FILE;
      rmSync(dir, { recursive: true, force: true });
    }
  }

  test("a load made while threads die as they start is answered once the module imports again (review: it waited in tinypool's queue for good)", async () => {
    await whileThreadsDieAtStart(async (pool, during, revive) => {
      revive();
      expect(await pool.run("ok", "c")).toBe("ok c");
      expect(await during).toBe("ok b");
      expect(pool.counters.stopped).toBe(0);
    });
  });

  test("a load tinypool holds with no thread left starts once the module imports again, with no other load made (review: it waited for the next load)", async () => {
    await whileThreadsDieAtStart(async (pool, during, revive) => {
      revive();
      expect(await within(during, 3000)).toBe("ok b");
      expect(pool.counters).toMatchObject({ submitted: 3, completed: 2, failed: 1, stopped: 0 });
    });
  });

  test("loads queued behind a crashing load still complete on the replacement worker", async () => {
    await using pool = await LoaderPool.open({ module: CRASH, threads: 1, queue: 2, logger: recordingLogger() });
    const crash = pool.run("exit", "7");
    const queued = [pool.run("ok", "q1"), pool.run("ok", "q2")];
    await failure(crash, ERROR_CODE.LOAD_FAILED, /exited with code 7/);
    expect(await Promise.all(queued)).toEqual(["ok q1", "ok q2"]);
  });
});

describe("LoaderPool saturation", () => {
  test("threads 1, queue 2: a burst of 10 slow loads → 3 complete, 7 OVERLOADED before any completes", async () => {
    await using pool = await LoaderPool.open({ module: LOADERS, threads: 1, queue: 2, logger: recordingLogger() });
    const order: string[] = [];
    const burst = Array.from({ length: 10 }, (_, i) =>
      pool.run("slow", "50").then(
        (v) => { order.push(`done ${i}`); return v; },
        (e: unknown) => { order.push(`refused ${i}`); throw e; },
      ),
    );
    const settled = await Promise.allSettled(burst);
    expect(order).toEqual(["refused 3", "refused 4", "refused 5", "refused 6", "refused 7", "refused 8", "refused 9", "done 0", "done 1", "done 2"]);
    for (const s of settled.slice(0, 3)) expect(s).toEqual({ status: "fulfilled", value: "slept 50" });
    for (const s of settled.slice(3)) {
      expect(s.status).toBe("rejected");
      const err = (s as PromiseRejectedResult).reason as CacheError;
      expect({ code: err.code, message: err.message }).toEqual({ code: ERROR_CODE.OVERLOADED, message: "loader queue full" });
    }
    expect(pool.counters).toEqual({ submitted: 3, completed: 3, failed: 0, rejected: 7, crashes: 0, stopped: 0 });
    expect(await pool.run("text", "drained")).toBe("value of drained"); // room again once drained
  });

  test("a load not answered after stopAfterMs fails LOAD_FAILED and gives its place back; its thread serves on", async () => {
    const logger = recordingLogger();
    await using pool = await LoaderPool.open({ module: CRASH, threads: 1, concurrency: 2, queue: 0, logger, stopAfterMs: 150 });
    const before = await pool.run("thread", "k");
    // The other load of the thread is answered while the stuck one waits to be stopped.
    const [stuck, other] = await Promise.allSettled([pool.run("hang", "k"), pool.run("ok", "beside")]);
    expect(other).toEqual({ status: "fulfilled", value: "ok beside" });
    await failure(Promise.reject((stuck as PromiseRejectedResult).reason), ERROR_CODE.LOAD_FAILED, /^loader gave no answer in 150 ms: stopped$/);
    // Both places were given back: two new loads are accepted and answered, by the same thread
    // (its module state kept: it was not replaced).
    expect(await Promise.all([pool.run("thread", "k"), pool.run("ok", "after")])).toEqual([before, "ok after"]);
    expect(pool.counters).toEqual({ submitted: 5, completed: 4, failed: 1, rejected: 0, crashes: 0, stopped: 1 });
    expect(logger.entries.map((e) => [e.level, e.msg])).toEqual([["warn", "loader stopped: no answer in time"]]); // not a crash
    // The thread is watched as before: its crash is seen, counted, and replaced.
    await failure(pool.run("exit", "3"), ERROR_CODE.LOAD_FAILED, /^loader worker crashed: .*exited with code 3/);
    expect(pool.counters.crashes).toBe(1);
    expect(await pool.run("ok", "again")).toBe("ok again");
  });

  test("a thread with as many stuck loads as places is replaced: a wedged client it holds does not stop every load for good", async () => {
    const logger = recordingLogger();
    await using pool = await LoaderPool.open({ module: CRASH, threads: 1, concurrency: 2, queue: 0, logger, stopAfterMs: 150 });
    const before = await pool.run("thread", "k");
    // (Stopped at 150 ms; on a loaded machine the check may replace the thread first: then said so.)
    await Promise.all([pool.run("hang", "a"), pool.run("hang", "b")].map((p) => failure(p, ERROR_CODE.LOAD_FAILED, /^loader gave no answer in 150 ms: stopped( \(its thread was replaced\))?$/)));
    // Both places were stuck once: the next check replaces the thread (a new one answers).
    let after = before;
    for (let i = 0; i < 100 && after === before; i++) {
      await Bun.sleep(20);
      after = await pool.run("thread", "k").catch(() => before); // (a load caught in the replacement fails)
    }
    expect(after).not.toBe(before);
    expect(pool.counters.crashes).toBe(0);
    expect(logger.entries.map((e) => e.msg)).toContain("loader thread replaced: its loads keep getting stuck");
    expect(await pool.run("ok", "after")).toBe("ok after");
  });

  test("stopped loads are logged 10 a second at most, the next line saying how many were not (a database gone quiet: a line per load)", async () => {
    const logger = recordingLogger();
    await using pool = await LoaderPool.open({ module: LOADERS, threads: 1, concurrency: 32, queue: 0, logger, stopAfterMs: 100 });
    const stopped = () => logger.entries.filter((e) => e.msg === "loader stopped: no answer in time");
    await Promise.all(Array.from({ length: 16 }, (_, i) => failure(pool.run("slow", `${1500 + i}`), ERROR_CODE.LOAD_FAILED, /stopped$/)));
    expect(pool.counters.stopped).toBe(16);
    expect(stopped().length).toBe(10);
    expect(stopped().every((e) => e.f?.linesLeftOut === undefined)).toBe(true);
    await Bun.sleep(1_000);
    await failure(pool.run("slow", "300"), ERROR_CODE.LOAD_FAILED, /stopped$/);
    expect(stopped().length).toBe(11);
    expect(stopped()[10]!.f?.linesLeftOut).toBe(6);
  });

  test("stuck loads that settle later stop counting: a thread whose loads are only slow now and then is kept", async () => {
    const logger = recordingLogger();
    await using pool = await LoaderPool.open({ module: LOADERS, threads: 1, concurrency: 2, queue: 0, logger, stopAfterMs: 150 });
    for (let round = 0; round < 3; round++) {
      // One load at a time is stopped at 150 ms and settles at 400 ms: never two stuck at once.
      await failure(pool.run("slow", "400"), ERROR_CODE.LOAD_FAILED, /stopped$/);
      await Bun.sleep(400);
      expect(await pool.run("text", `${round}`)).toBe(`value of ${round}`);
    }
    expect(pool.counters).toMatchObject({ stopped: 3, crashes: 0 });
    expect(logger.entries.map((e) => e.msg).filter((m) => m.startsWith("loader "))).toEqual(Array(3).fill("loader stopped: no answer in time"));
  });

  test("a thread a synchronous loader blocks stops beating: it is terminated and replaced, its loads fail as stopped", async () => {
    const logger = recordingLogger();
    await using pool = await LoaderPool.open({ module: CRASH, threads: 1, concurrency: 2, queue: 1, logger, stopAfterMs: 200 });
    const before = await pool.run("thread", "k");
    const blocked = [pool.run("block", "k"), pool.run("ok", "behind")];
    for (const p of blocked) await failure(p, ERROR_CODE.LOAD_FAILED, /^loader gave no answer in 200 ms: stopped \(its thread was blocked\)$/);
    const after = await pool.run("thread", "k");
    expect(after).not.toBe(before); // a new thread
    expect(await pool.run("ok", "after")).toBe("ok after");
    expect(pool.counters).toEqual({ submitted: 5, completed: 3, failed: 2, rejected: 0, crashes: 0, stopped: 2 });
    expect(logger.entries.map((e) => [e.level, e.msg])).toEqual([["warn", "loader thread stopped: blocked"]]);
  });

  test("after a thread blocked in a native call is replaced, the other threads serve at once (review: no load started anywhere until blockedAfterMs passed)", async () => {
    const logger = recordingLogger();
    await using pool = await LoaderPool.open({ module: CRASH, threads: 2, concurrency: 1, queue: 4, logger, stopAfterMs: 1000 });
    await Promise.all([pool.run("ok", "a"), pool.run("ok", "b")]);
    // Bun.sleepSync: the thread cannot be terminated until the call returns (3 s).
    await failure(pool.run("sleepSync", "3000"), ERROR_CODE.LOAD_FAILED, /^loader gave no answer in 1000 ms: stopped \(its thread was blocked\)$/);
    const answers = await within(Promise.all(Array.from({ length: 4 }, (_, i) => pool.run("ok", `k${i}`))), 400);
    expect(answers).toEqual(["ok k0", "ok k1", "ok k2", "ok k3"]);
    expect(pool.counters).toMatchObject({ rejected: 0, crashes: 0, stopped: 1 });
  });

  test("one loader's promise left rejected with no handler fails nothing: the loads beside it on its thread answer, no crash (review: it ended the thread)", async () => {
    // In a process of its own: under `bun test` such a rejection in a worker is an error whatever its handlers say.
    const run = Bun.spawn(["bun", join(import.meta.dir, "fixtures/stray-run.ts")], { stdout: "pipe", stderr: "pipe" });
    const [out, err, code] = await Promise.all([new Response(run.stdout).text(), new Response(run.stderr).text(), run.exited]);
    expect(code).toBe(0);
    expect(JSON.parse(out)).toEqual({
      warm: "ok warm",
      stray: "stray k",
      beside: ["later 300", "later 301", "later 302", "later 303", "later 304"],
      counters: { submitted: 7, completed: 7, failed: 0, rejected: 0, crashes: 0, stopped: 0 },
      logged: [],
    });
    // Written to stderr, as a loader's own output is.
    expect(err).toMatch(/^mybuncache: loader thread \d+: a loader left a promise rejected with no handler: stray rejection of k\n$/);
  });

  test("a thread replaced for stuck loads may answer late: no healthy load fails as crashed, and no error is logged (review: tinypool posted the dying thread a load meant for its replacement)", async () => {
    const logger = recordingLogger();
    await using pool = await LoaderPool.open({ module: CRASH, threads: 1, concurrency: 4, queue: 64, logger, stopAfterMs: 150 });
    const failures: string[] = [];
    const replaced = () => logger.entries.filter((e) => e.msg === "loader thread replaced: its loads keep getting stuck").length;
    // Each round, four hung loads get stuck on the thread at once, and the next check replaces
    // it. When that check runs before the thread's answers for them are read (about one round
    // in two), those answers come late; healthy loads all along keep the pool's queue full.
    for (let round = 1; round <= 8; round++) {
      expect(await pool.run("ok", "ready")).toBe("ok ready");
      const hangs = Array.from({ length: 4 }, () => pool.run("hang", "k").catch(() => {}));
      let replacing = true;
      const clients = Array.from({ length: 30 }, async () => {
        while (replacing) await pool.run("ok", "k").catch((e: unknown) => failures.push((e as Error).message));
      });
      await Promise.all(hangs);
      for (let i = 0; i < 200 && replaced() < round; i++) await Bun.sleep(5);
      replacing = false;
      await Promise.all(clients);
      expect(replaced()).toBe(round);
    }
    // Loads on the thread as it is replaced, or queued past their stop time meanwhile, fail as stopped.
    expect(failures.filter((m) => !/^loader gave no answer in 150 ms: stopped/.test(m))).toEqual([]);
    expect(logger.entries.filter((e) => e.level === "error")).toEqual([]);
  });

  test("a replacement thread whose import never ends is replaced in turn: loads are answered as stopped meanwhile, and served once the import can end (review: the pool was wedged for good)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "mbc-pool-"));
    const down = join(dir, "down");
    process.env.HANG_AT_IMPORT_FILE = down;
    try {
      const logger = recordingLogger();
      await using pool = await LoaderPool.open({ module: CRASH, threads: 1, concurrency: 2, queue: 4, logger, stopAfterMs: 200 });
      expect(await pool.run("ok", "warm")).toBe("ok warm");
      writeFileSync(down, ""); // the database its import awaits is down
      await failure(pool.run("block", "k"), ERROR_CODE.LOAD_FAILED, /stopped \(its thread was blocked\)$/);
      // Its replacement never ends importing the module. One load goes to tinypool for it, the
      // other waits in the pool's queue: both are answered, as stopped.
      const during = [pool.run("ok", "a"), pool.run("ok", "b")];
      await Promise.all(during.map((p) => failure(within(p, 3000), ERROR_CODE.LOAD_FAILED, /^loader gave no answer in 200 ms: stopped$/)));
      expect(logger.entries.map((e) => e.msg)).toContain("loader thread replaced: it did not import the loaders module");
      rmSync(down); // the database is back
      expect(await firstValue(() => pool.run("ok", "c"), 5000)).toBe("ok c");
      expect(logger.entries.filter((e) => e.level === "error")).toEqual([]);
    } finally {
      delete process.env.HANG_AT_IMPORT_FILE;
      rmSync(dir, { recursive: true, force: true });
    }
  }, 15_000);

  test("concurrency 4: one thread runs four loads at once, and the pool holds threads x concurrency + queue", async () => {
    await using pool = await LoaderPool.open({ module: LOADERS, threads: 1, concurrency: 4, queue: 1, logger: recordingLogger() });
    expect(pool.capacity).toBe(5);
    // `together 4` answers only when four of its loads wait in the thread at once.
    const four = Array.from({ length: 4 }, () => pool.run("together", "4"));
    const queued = pool.run("text", "queued"); // the fifth place: waits for a running load to end
    await failure(pool.run("text", "refused"), ERROR_CODE.OVERLOADED, /^loader queue full$/);
    expect(await Promise.all(four)).toEqual(Array(4).fill("together 4"));
    expect(await queued).toBe("value of queued");
  });

  test("concurrency 1 runs a thread's loads one at a time: a `together 2` alone is stopped, and so is the one queued behind it", async () => {
    await using pool = await LoaderPool.open({ module: LOADERS, threads: 1, queue: 1, logger: recordingLogger(), stopAfterMs: 300 });
    const first = pool.run("together", "2");
    const second = pool.run("together", "2"); // queued until the first gives its place back
    // A load is stopped stopAfterMs after it was accepted, however long it waited for a place.
    await Promise.all([first, second].map((p) => failure(p, ERROR_CODE.LOAD_FAILED, /^loader gave no answer in 300 ms: stopped$/)));
    expect(pool.counters).toEqual({ submitted: 2, completed: 0, failed: 2, rejected: 0, crashes: 0, stopped: 2 });
  });

  test("a loader answering a thenable that never settles is stopped like a promise (review: only promises were)", async () => {
    await using pool = await LoaderPool.open({ module: CRASH, threads: 1, concurrency: 2, queue: 0, logger: recordingLogger(), stopAfterMs: 150 });
    await failure(pool.run("thenable", "k"), ERROR_CODE.LOAD_FAILED, /^loader gave no answer in 150 ms: stopped$/);
    expect(await pool.run("ok", "after")).toBe("ok after");
  });

  test("idle threads beat on: a pool with two threads and a short stop time kills none between loads (review: idle threads slept in Atomics.wait)", async () => {
    const logger = recordingLogger();
    await using pool = await LoaderPool.open({ module: CRASH, threads: 2, concurrency: 2, queue: 0, logger, stopAfterMs: 150 });
    const first = new Set(await Promise.all([pool.run("thread", "a"), pool.run("thread", "b"), pool.run("thread", "c")]));
    for (let round = 0; round < 2; round++) {
      await Bun.sleep(700); // idle for longer than a blocked thread may go without a beat
      expect(await pool.run("ok", `${round}`)).toBe(`ok ${round}`);
    }
    const later = await Promise.all([pool.run("thread", "a"), pool.run("thread", "b"), pool.run("thread", "c")]);
    expect(logger.entries).toEqual([]);
    expect(pool.counters).toEqual({ submitted: 8, completed: 8, failed: 0, rejected: 0, crashes: 0, stopped: 0 });
    for (const id of later) expect(first.has(id)).toBe(true); // the same threads answer
  });

  test("after a thread is replaced, queued loads run at the full concurrency of the new one (review: tinypool fed it one at a time)", async () => {
    const logger = recordingLogger();
    // A stop time well past a thread's boot: the four loads are accepted while the replacement
    // boots, and a load is stopped stopAfterMs after it was accepted (CI once took 300 ms to boot).
    await using pool = await LoaderPool.open({ module: CRASH, threads: 1, concurrency: 4, queue: 4, logger, stopAfterMs: 2000 });
    const before = await pool.run("thread", "k");
    await failure(pool.run("block", "k"), ERROR_CODE.LOAD_FAILED, /stopped \(its thread was blocked\)$/);
    // The replacement boots now. `together 4` answers only when four of its loads wait in one
    // thread at once: fed to the new thread one at a time, they would be stopped instead.
    const gathered = await Promise.all(Array.from({ length: 4 }, (_, i) => pool.run("together", `4:${i}`)));
    expect(gathered).toEqual(["together 4:0", "together 4:1", "together 4:2", "together 4:3"]);
    expect(await pool.run("thread", "k")).not.toBe(before);
    expect(pool.counters.stopped).toBe(1);
  });

  test("queue 0: only `threads` loads are accepted", async () => {
    await using pool = await LoaderPool.open({ module: LOADERS, threads: 2, queue: 0, logger: recordingLogger() });
    const accepted = [pool.run("slow", "20"), pool.run("slow", "20")];
    await failure(pool.run("text", "k"), ERROR_CODE.OVERLOADED, /^loader queue full$/);
    expect(await Promise.all(accepted)).toEqual(["slept 20", "slept 20"]);
  });
});

describe("LoaderPool open and close", () => {
  const cases: [string, Parameters<typeof LoaderPool.open>[0], RegExp][] = [
    ["a module with no loader function", { module: NO_LOADERS, threads: 1, queue: 1 }, /exports no loader functions/],
    ["a missing module", { module: "test/loaders/fixtures/absent.ts", threads: 1, queue: 1 }, /loaders module not found: .*absent\.ts/],
    ["a module that throws as it is imported", { module: fixture("throws-at-import.ts"), threads: 1, queue: 1 }, /^cannot import loaders module .*throws-at-import\.ts: config\.json: no such file$/],
    ["a module that ends its thread as it is imported", { module: fixture("exits-at-import.ts"), threads: 1, queue: 1 }, /^cannot import loaders module .*exits-at-import\.ts: it ended its thread \(exit code 3\) as it was imported$/],
    ["zero threads", { module: LOADERS, threads: 0, queue: 1 }, /threads must be an integer >= 1/],
    ["a negative queue", { module: LOADERS, threads: 1, queue: -1 }, /queue must be an integer >= 0/],
    ["zero concurrency", { module: LOADERS, threads: 1, concurrency: 0, queue: 1 }, /concurrency must be an integer >= 1/],
  ];
  for (const [name, opts, message] of cases) {
    test(`open refuses ${name}`, async () => {
      await expect(LoaderPool.open({ ...opts, logger: recordingLogger() })).rejects.toThrow(message);
    });
  }

  test("the loaders module never runs in the node's thread: its top-level code (a keep-alive timer that throws) cannot end the node (review: open imported it there, and the timer's error ended the process)", async () => {
    const logger = recordingLogger();
    await using pool = await LoaderPool.open({ module: fixture("main-thread-timer.ts"), threads: 1, queue: 1, logger });
    expect((globalThis as { mainThreadTimerImported?: boolean }).mainThreadTimerImported).toBeUndefined();
    expect(pool.groups).toEqual(["users"]);
  });

  test("open refuses a module exporting `then`, naming it, instead of waiting for good (review: import() took the module for a promise, and the node never started, saying nothing)", async () => {
    const opening = LoaderPool.open({ module: fixture("then-export.ts"), threads: 1, queue: 1, logger: recordingLogger() });
    await expect(within(opening, 3000)).rejects.toThrow(/^loaders module .*then-export\.ts exports `then`: import\(\) would take the module for a promise and wait for good; rename that loader$/);
  });

  test("close does not wait for a thread blocked in a native call: its load fails LOAD_FAILED, and close ends within a second or so (review: it waited for the call)", async () => {
    const logger = recordingLogger();
    const pool = await LoaderPool.open({ module: CRASH, threads: 1, concurrency: 2, queue: 2, logger, stopAfterMs: 10_000 });
    expect(await pool.run("ok", "warm")).toBe("ok warm");
    const blocked = failure(pool.run("sleepSync", "4000"), ERROR_CODE.LOAD_FAILED, /^loader pool closed$/);
    await Bun.sleep(100); // (it is in the call)
    await within(pool.close(), 2500);
    await within(blocked, 10);
    expect(pool.counters).toMatchObject({ submitted: 2, completed: 1, failed: 1 });
    expect(logger.entries.map((e) => [e.level, e.msg, e.f?.loads])).toEqual([
      ["warn", "loader threads did not exit: one is blocked in a call that does not return; not waited for", 1],
    ]);
  });

  test("close fails running and queued loads, and later loads, with LOAD_FAILED", async () => {
    const pool = await LoaderPool.open({ module: LOADERS, threads: 1, queue: 2, logger: recordingLogger() });
    expect(await pool.run("text", "warm")).toBe("value of warm");
    const outcomes = [pool.run("slow", "5000"), pool.run("slow", "5000")].map((p) =>
      failure(p, ERROR_CODE.LOAD_FAILED, /^loader pool closed$/),
    );
    await pool.close();
    await Promise.all(outcomes); // the running load and the queued one
    await failure(pool.run("text", "k"), ERROR_CODE.LOAD_FAILED, /^loader pool closed$/);
    await pool.close(); // idempotent
    expect(pool.counters).toEqual({ submitted: 3, completed: 1, failed: 2, rejected: 0, crashes: 0, stopped: 0 });
  });
});

describe("examples/sqlite-loaders.ts", () => {
  const dir = mkdtempSync(join(tmpdir(), "mybuncache-example-"));
  afterAll(() => {
    delete process.env.EXAMPLE_DB;
    rmSync(dir, { recursive: true, force: true });
  });

  test("seeds the database once, loads rows as JSON, and null for an absent id", async () => {
    process.env.EXAMPLE_DB = join(dir, "example.sqlite"); // read by the module in every thread
    await using pool = await LoaderPool.open({ module: EXAMPLE, threads: 2, queue: 16 });
    expect([...pool.groups].sort()).toEqual(["products", "users"]);
    const loads = await Promise.all([pool.run("users", "42"), pool.run("users", "1000"), pool.run("products", "7")]);
    expect(loads.map((v) => JSON.parse(v as string))).toEqual([
      { id: 42, name: "user 42", email: "user42@example.com" },
      { id: 1000, name: "user 1000", email: "user1000@example.com" },
      expect.objectContaining({ id: 7, name: "product 7" }),
    ]);
    const absent = await Promise.all(["0", "1001", "abc", ""].map((k) => pool.run("users", k)));
    expect(absent).toEqual([null, null, null, null]);
    expect(pool.counters).toMatchObject({ completed: 7, failed: 0, crashes: 0 });
  });

  test("threads seeding one new database at once all succeed (no SQLITE_BUSY), rows seeded once", async () => {
    const db = join(dir, "race.sqlite");
    process.env.EXAMPLE_DB = db; // copied into each Worker's environment at creation
    const script = join(import.meta.dir, "fixtures/seed-race.ts");
    const module = join(import.meta.dir, "../../examples/sqlite-loaders.ts");
    const workers = Array.from({ length: 4 }, () => new Worker(script, { workerData: { module } }));
    const reports = await Promise.all(workers.map((w) => new Promise((resolve) => w.once("message", resolve))));
    await Promise.all(workers.map((w) => w.terminate()));
    expect(reports).toEqual([{ ok: true }, { ok: true }, { ok: true }, { ok: true }]);
    using check = new Database(db, { readonly: true });
    expect(check.query("SELECT (SELECT count(*) FROM users) AS users, (SELECT count(*) FROM products) AS products").get()).toEqual({ users: 1000, products: 100 });
  });
});
