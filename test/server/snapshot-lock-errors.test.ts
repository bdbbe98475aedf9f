/**
 * A lock that cannot be read for a moment (EIO from a network volume, EMFILE on a node out of
 * descriptors) is not a lock taken over: the write at hand is skipped, and the periodic writes go
 * on. Only a lock found another node's (or gone and not to be made again) stops them.
 */
import { afterEach, beforeEach, expect, spyOn, test, setDefaultTimeout } from "bun:test";
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Group } from "../../src/cluster/group.ts";
import { Groups } from "../../src/cluster/groups.ts";
import { FinalSnapshot } from "../../src/server/final-snapshot.ts";
import { Logger } from "../../src/server/log.ts";
import { LogSink } from "./support.ts";
import { SnapshotLock } from "../../src/server/snapshot-lock.ts";
import { Snapshotter, type SnapshotLogger } from "../../src/server/snapshot.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

let dir = "";
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "mbc-lock-errors-"));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** setup holds the lock of a snapshot path and gives a Snapshotter of one item that checks it; `written` resolves at its first write. */
function setup(): { lock: SnapshotLock; snap: Snapshotter; errors: string[]; written: Promise<string> } {
  const path = join(dir, "cache.snap");
  const lock = new SnapshotLock(path, new Logger("silent"));
  lock.acquire();
  const groups = new Groups();
  groups.add(new Group({ name: "kv", memory: 4 * 1024 * 1024 }));
  const k = new TextEncoder().encode("k");
  expect(groups.byName("kv")!.store.set(k, 0, 1, k, 0, 1, 0)).toBe(0);
  const errors: string[] = [];
  let onWritten: (m: string) => void = () => {};
  const written = new Promise<string>((resolve) => (onWritten = resolve));
  const logger: SnapshotLogger = {
    info: (m) => m === "snapshot written" && onWritten("written"),
    warn: (m) => void errors.push(m),
    error: (m) => void errors.push(m),
  };
  const snap = new Snapshotter({ path, groups, logger });
  snap.lock = lock;
  return { lock, snap, errors, written };
}

test("a lock read that fails with EIO skips that periodic write, and the next one is written (review: it stopped the periodic writes for good, logged as a takeover)", async () => {
  const { lock, snap, errors, written } = setup();
  const realRead = fsp.readFile;
  let failures = 1;
  const spy = spyOn(fsp, "readFile").mockImplementation(((...args: Parameters<typeof realRead>) => {
    if (failures-- > 0) return Promise.reject(Object.assign(new Error("EIO: i/o error, read"), { code: "EIO" }));
    return realRead(...args);
  }) as typeof realRead);
  try {
    await expect(snap.write()).rejects.toThrow(/could not be read/);
    expect(errors.some((m) => /another node's/.test(m))).toBe(false);
    expect(snap.counters.failures).toBe(1);
    // The interval started now must still write (the failed check must not have stopped writes to come).
    snap.startInterval(20);
    const stopped = new Promise<string>((resolve) => setTimeout(() => resolve("no write in 10 s"), 10_000).unref());
    expect(await Promise.race([written, stopped])).toBe("written");
    expect(lock.stillMine()).toBe(true);
  } finally {
    spy.mockRestore();
    snap.stop();
    await snap.settled();
    lock.release();
  }
});

test("a periodic write whose check fails with EMFILE leaves the timer running: the next tick writes", async () => {
  const { lock, snap, written } = setup();
  const realRead = fsp.readFile;
  let failures = 1;
  const spy = spyOn(fsp, "readFile").mockImplementation(((...args: Parameters<typeof realRead>) => {
    if (failures-- > 0) return Promise.reject(Object.assign(new Error("EMFILE: too many open files"), { code: "EMFILE" }));
    return realRead(...args);
  }) as typeof realRead);
  try {
    snap.startInterval(20); // its first tick meets the failing read, a later one writes
    const stopped = new Promise<string>((resolve) => setTimeout(() => resolve("no write in 10 s"), 10_000).unref());
    expect(await Promise.race([written, stopped])).toBe("written");
    expect(failures).toBeLessThan(0); // (the failing read was met)
    expect(snap.counters.failures).toBe(1);
  } finally {
    spy.mockRestore();
    snap.stop();
    await snap.settled();
    lock.release();
  }
});

test("a lock found another node's still stops the periodic writes and refuses the write", async () => {
  const { lock, snap, errors } = setup();
  writeFileSync(lock.file, "another node's lock\n");
  await expect(snap.write()).rejects.toThrow(/another node's now/);
  expect(errors).toContain("snapshot write refused: the snapshot lock is another node's now");
  expect(await lock.stillMineAsync()).toBe(false);
  lock.release(); // (leaves the other node's file: it is not this node's)
});

test("a removed lock that two checks find gone at once is made again by one, and both find it this node's (review: the second met the first's new file, EEXIST, and took it for another node's)", async () => {
  const { lock, snap, errors } = setup();
  rmSync(lock.file);
  // Both reads are under way before either is answered (as a touch's and a periodic write's can
  // be on a slow volume): each fails ENOENT, and only then does the first make the lock again.
  const realRead = fsp.readFile;
  let answer: () => void = () => {};
  const answered = new Promise<void>((resolve) => (answer = resolve));
  const reads: Promise<unknown>[] = [];
  const spy = spyOn(fsp, "readFile").mockImplementation(((...args: Parameters<typeof realRead>) => {
    const read = realRead(...args);
    reads.push(read);
    return answered.then(() => read);
  }) as typeof realRead);
  let a: boolean;
  let b: boolean;
  try {
    const both = Promise.all([lock.stillMineAsync(), lock.stillMineAsync()]);
    await Promise.allSettled(reads); // both failed ENOENT; now their callers hear of it, one after the other
    answer();
    [a, b] = await both;
  } finally {
    spy.mockRestore();
  }
  expect([a, b]).toEqual([true, true]);
  expect(lock.stillMine()).toBe(true);
  const w = await snap.write();
  expect(w.items).toBe(1);
  expect(errors.filter((m) => /another node's/.test(m))).toEqual([]);
  lock.release();
});

/** stallReads holds every lock read until `answer()`: a volume that has stopped answering for now. */
function stallReads(): { answer: () => void; restore: () => void } {
  const realRead = fsp.readFile;
  let answer: () => void = () => {};
  const answered = new Promise<void>((resolve) => (answer = resolve));
  const spy = spyOn(fsp, "readFile").mockImplementation(((...args: Parameters<typeof realRead>) => answered.then(() => realRead(...args))) as typeof realRead);
  return { answer: () => answer(), restore: () => spy.mockRestore() };
}

test("a shutdown while a periodic write waits on its lock check: the final write follows it and holds what was set meanwhile", async () => {
  const { lock, snap } = setup();
  const store = snap["groups"].byName("kv")!.store; // (the setup's group)
  const stall = stallReads();
  let finalDone = false;
  try {
    const periodic = snap.write();
    const final = new FinalSnapshot(new Logger("silent"));
    const closing = final.write(snap).then(() => (finalDone = true));
    const k = new TextEncoder().encode("late");
    expect(store.set(k, 0, k.length, k, 0, k.length, 0)).toBe(0); // taken while both wait
    expect(finalDone).toBe(false);
    stall.answer();
    expect((await periodic).items).toBeGreaterThanOrEqual(1);
    await closing;
    expect(final.failed).toBe(false);
    expect(snap.counters.writes).toBe(2);
  } finally {
    stall.restore();
  }
  const next = new Groups();
  next.add(new Group({ name: "kv", memory: 4 * 1024 * 1024 }));
  expect((await new Snapshotter({ path: snap.path, groups: next, logger: { info() {}, warn() {}, error() {} } }).load()).items).toBe(2);
  expect(next.byName("kv")!.store.has(new TextEncoder().encode("late"))).toBe(true);
  expect(existsSync(lock.file)).toBe(false); // released after the final write
});

test("a second signal while a periodic write waits on its lock check: the snapshot on disk is moved aside, and the write that waited makes none (review: it went on unlocked and put one back)", async () => {
  const { lock, snap } = setup();
  await snap.write(); // a snapshot on disk, which the writes since would make stale
  const stall = stallReads();
  try {
    const periodic = snap.write().catch((e: unknown) => e);
    const final = new FinalSnapshot(new Logger("silent"));
    const movedTo = final.abandon(snap);
    expect(movedTo).toMatch(/\.stale-\d+$/);
    expect(existsSync(snap.path)).toBe(false);
    expect(existsSync(lock.file)).toBe(false);
    expect(readdirSync(dir).filter((f) => f.includes(".tmp-"))).toEqual([]);
    stall.answer();
    // A process exits here; this one lets the write that waited go on: it must not write.
    expect(String(await periodic)).toMatch(/its lock was released/);
    expect(existsSync(snap.path)).toBe(false);
    expect(readdirSync(dir).filter((f) => !f.includes(".stale-"))).toEqual([]);
  } finally {
    stall.restore();
  }
});

/** failLockReads makes every read of `file` fail with `code`, synchronous and not (a volume returning EIO). */
function failLockReads(file: string, code: string): { restore: () => void } {
  const error = (): Error => Object.assign(new Error(`${code}: i/o error, read`), { code });
  const realRead = fsp.readFile;
  const realReadSync = fs.readFileSync;
  const async = spyOn(fsp, "readFile").mockImplementation(((...args: Parameters<typeof realRead>) =>
    args[0] === file ? Promise.reject(error()) : realRead(...args)) as typeof realRead);
  const sync = spyOn(fs, "readFileSync").mockImplementation(((...args: Parameters<typeof realReadSync>) => {
    if (args[0] === file) throw error();
    return realReadSync(...args);
  }) as typeof realReadSync);
  return { restore: () => (async.mockRestore(), sync.mockRestore()) };
}

test("a final write whose lock cannot be read (EIO) says so, with the error, and moves the previous snapshot aside (review: it logged a takeover and left it, stale)", async () => {
  const { lock, snap } = setup();
  await snap.write(); // a snapshot on disk, which the writes since would make stale
  const sink = new LogSink();
  const final = new FinalSnapshot(sink.logger);
  const failing = failLockReads(lock.file, "EIO");
  try {
    await final.write(snap);
  } finally {
    failing.restore();
  }
  expect(final.failed).toBe(true);
  const lines = sink.lines.join("\n");
  expect(lines).not.toMatch(/another node's/);
  expect(lines).toMatch(/lock could not be read/);
  expect(lines).toMatch(/EIO/);
  // Not written over (whose it is, unknown), not left in place (it lacks the writes since): moved aside.
  expect(existsSync(snap.path)).toBe(false);
  expect(readdirSync(dir).filter((f) => f.includes(".stale-")).length).toBe(1);
  expect(readdirSync(dir).filter((f) => f.includes(".tmp-"))).toEqual([]);
});

test("a second signal whose lock cannot be read (EMFILE) moves the previous snapshot aside and says why", async () => {
  const { lock, snap } = setup();
  await snap.write();
  const sink = new LogSink();
  const final = new FinalSnapshot(sink.logger);
  const failing = failLockReads(lock.file, "EMFILE");
  let movedTo: string | undefined;
  try {
    movedTo = final.abandon(snap);
  } finally {
    failing.restore();
  }
  expect(movedTo).toMatch(/\.stale-\d+$/);
  expect(existsSync(snap.path)).toBe(false);
  const lines = sink.lines.join("\n");
  expect(lines).not.toMatch(/another node's/);
  expect(lines).toMatch(/lock could not be read.*EMFILE/);
});

test("a final write whose lock is found another node's still leaves the snapshot as it is", async () => {
  const { lock, snap } = setup();
  await snap.write();
  writeFileSync(lock.file, "another node's lock\n");
  const sink = new LogSink();
  const final = new FinalSnapshot(sink.logger);
  await final.write(snap);
  expect(final.failed).toBe(true);
  expect(sink.lines.join("\n")).toMatch(/another node's now \(it took the lock\)/);
  expect(existsSync(snap.path)).toBe(true);
  expect(fs.readFileSync(lock.file, "utf8")).toBe("another node's lock\n"); // (not this node's to remove)
});
