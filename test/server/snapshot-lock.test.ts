/**
 * One snapshot path, one node (snapshot-lock.ts): a second node on the path is refused at start,
 * in the same process or another, until the first lets go; a lock its holder left behind (a
 * crash) is taken over with a warning once it is stale.
 */
import { afterEach, beforeEach, expect, test, setDefaultTimeout } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { execFileSync } from "node:child_process";
import { CacheClient } from "../../src/client/cache-client.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import { LOCK_STALE_MS, SnapshotLock } from "../../src/server/snapshot-lock.ts";
import { Logger } from "../../src/server/log.ts";
import { spawnNode, type NodeProcess } from "../support/node-process.ts";
import { LogSink } from "./support.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

/** childLines reads a child's output: `line(word)` waits until it has printed `word` (or ended), `text()` is all it printed. */
function childLines(stdout: ReadableStream<Uint8Array>): { line: (word: string) => Promise<void>; text: () => string } {
  const reader = stdout.getReader();
  let out = "";
  const line = async (word: string): Promise<void> => {
    while (!out.includes(word)) {
      const { value, done } = await reader.read();
      if (done) return;
      out += new TextDecoder().decode(value);
    }
  };
  return { line, text: () => out };
}

let dir = "";
const spawned: NodeProcess[] = [];
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "mbc-snapshot-lock-"));
});
afterEach(() => {
  for (const n of spawned.splice(0)) n.proc.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
});

/** ns is this process's pid namespace, as a lock names it. */
const ns = readlinkSync("/proc/self/ns/pid");
const mine = `${hostname()} ${process.pid} ${ns}\n`;

const open = (snapshot: string, sink = new LogSink()) => CacheNode.open({ port: 0, snapshot }, { logger: sink.logger });

/** openHolding opens a node on `cache.snap` in the test's directory and sets default/k to `value` through `c`, left open. */
async function openHolding(value: string): Promise<{ snapshot: string; sink: LogSink; node: CacheNode; c: CacheClient }> {
  const snapshot = join(dir, "cache.snap");
  const sink = new LogSink();
  const node = await open(snapshot, sink);
  const c = new CacheClient({ host: "127.0.0.1", port: node.port });
  await c.set("default", "k", value);
  return { snapshot, sink, node, c };
}

test("a second node of the same process on the path is refused until the first closes; the lock goes with it", async () => {
  const snapshot = join(dir, "cache.snap");
  const first = await open(snapshot);
  expect(readFileSync(`${snapshot}.lock`, "utf8")).toBe(mine);
  await expect(open(snapshot)).rejects.toThrow("is in use by another node of this process");
  // The same path spelled another way is the same lock.
  await expect(open(join(dir, ".", "cache.snap"))).rejects.toThrow("is in use by another node of this process");
  await first.close();
  expect(existsSync(`${snapshot}.lock`)).toBe(false);
  const second = await open(snapshot);
  await second.close();
});

test("a node in another process holding the path: the start is refused, naming it; once it stopped, the path is free", async () => {
  const snapshot = join(dir, "cache.snap");
  const first = await spawnNode(["--port", "0", "--snapshot", snapshot]);
  spawned.push(first);
  const c = new CacheClient({ host: "127.0.0.1", port: first.port });
  await c.set("default", "k", "from the first");
  await c.close();
  const refused = await spawnNode(["--port", "0", "--snapshot", snapshot]).then(() => "listened", (e: Error) => e.message);
  expect(refused).toContain(`is in use by process ${first.proc.pid} on ${hostname()}`);
  first.proc.kill("SIGTERM");
  expect(await first.proc.exited).toBe(0);
  const second = await open(snapshot);
  const c2 = new CacheClient({ host: "127.0.0.1", port: second.port });
  expect(new TextDecoder().decode((await c2.get("default", "k")).value!)).toBe("from the first");
  await c2.close();
  await second.close();
});

test("a stale lock is taken over with a warning: its process gone, written by this pid, or not touched for LOCK_STALE_MS", async () => {
  const snapshot = join(dir, "cache.snap");
  const gone = Bun.spawnSync(["true"]).pid; // (exited: no process has it now)
  const old = (Date.now() - LOCK_STALE_MS - 5000) / 1000;
  const cases: [string, () => void, string][] = [
    ["process gone", () => writeFileSync(`${snapshot}.lock`, `${hostname()} ${gone} ${ns}\n`), `process ${gone} is not running`],
    ["this pid", () => writeFileSync(`${snapshot}.lock`, mine), "written by this pid before"],
    ["another host's, old", () => {
      writeFileSync(`${snapshot}.lock`, "elsewhere 1 pid:[1]\n");
      utimesSync(`${snapshot}.lock`, old, old);
    }, "not touched for"],
  ];
  for (const [name, make, why] of cases) {
    make();
    const sink = new LogSink();
    const node = await open(snapshot, sink);
    expect([name, sink.lines.some((l) => l.includes("taking over a stale snapshot lock") && l.includes(why))]).toEqual([name, true]);
    expect(readFileSync(`${snapshot}.lock`, "utf8")).toBe(mine);
    await node.close();
  }
});

test("a lock of another pid namespace (a container's: pid 1 in each) goes stale by its age only, even with this host and pid", async () => {
  const snapshot = join(dir, "cache.snap");
  writeFileSync(`${snapshot}.lock`, `${hostname()} ${process.pid} pid:[1]\n`);
  await expect(open(snapshot)).rejects.toThrow(`is in use by process ${process.pid} on ${hostname()} (pid:[1])`);
  const old = (Date.now() - LOCK_STALE_MS - 5000) / 1000;
  utimesSync(`${snapshot}.lock`, old, old);
  const node = await open(snapshot);
  expect(readFileSync(`${snapshot}.lock`, "utf8")).toBe(mine);
  await node.close();
});

test("a stale lock is taken over by one starting node at a time: a fresh takeover lock refuses the start, a crashed taker's is removed", async () => {
  const snapshot = join(dir, "cache.snap");
  const old = (Date.now() - LOCK_STALE_MS - 5000) / 1000;
  writeFileSync(`${snapshot}.lock`, "elsewhere 1 pid:[1]\n");
  utimesSync(`${snapshot}.lock`, old, old);
  writeFileSync(`${snapshot}.lock.takeover`, "");
  await expect(open(snapshot)).rejects.toThrow("another node is taking over its lock");
  expect(readFileSync(`${snapshot}.lock`, "utf8")).toBe("elsewhere 1 pid:[1]\n");
  utimesSync(`${snapshot}.lock.takeover`, old, old);
  const node = await open(snapshot);
  expect(existsSync(`${snapshot}.lock.takeover`)).toBe(false);
  expect(readFileSync(`${snapshot}.lock`, "utf8")).toBe(mine);
  await node.close();
});

test("another host's lock touched lately is not taken over", async () => {
  const snapshot = join(dir, "cache.snap");
  writeFileSync(`${snapshot}.lock`, "elsewhere 4242 pid:[1]\n");
  await expect(open(snapshot)).rejects.toThrow("is in use by process 4242 on elsewhere");
  expect(readFileSync(`${snapshot}.lock`, "utf8")).toBe("elsewhere 4242 pid:[1]\n");
});

test("a process that exits without closing its node (a signal while starting, a fatal error) lets its locks go", async () => {
  const snapshot = join(dir, "cache.snap");
  const script = [
    `import { SnapshotLock } from ${JSON.stringify(join(import.meta.dir, "../../src/server/snapshot-lock.ts"))};`,
    `import { Logger } from ${JSON.stringify(join(import.meta.dir, "../../src/server/log.ts"))};`,
    `new SnapshotLock(${JSON.stringify(snapshot)}, new Logger("silent")).acquire();`,
    `console.log("held");`,
    `process.exit(0);`,
  ].join("\n");
  const file = join(dir, "exit-child.ts");
  writeFileSync(file, script);
  const child = Bun.spawnSync([process.execPath, file]);
  expect(child.stdout.toString()).toBe("held\n");
  expect(child.exitCode).toBe(0);
  expect(existsSync(`${snapshot}.lock`)).toBe(false);
});

test("a lock's time is the file system's: a holder whose clock is 40 s behind keeps its lock fresh; one 1 h ahead is stale", async () => {
  const snapshot = join(dir, "cache.snap");
  const lock = new SnapshotLock(snapshot, new Logger("silent"));
  lock.acquire();
  const RealDate = Date;
  const behind = class extends RealDate {
    constructor(...a: unknown[]) {
      if (a.length === 0) super(RealDate.now() - 40_000);
      else super(...(a as [number]));
    }
    static override now(): number {
      return RealDate.now() - 40_000;
    }
  };
  try {
    globalThis.Date = behind as DateConstructor;
    await (lock as unknown as { touch(): Promise<void> }).touch(); // what the holder does every 10 s
  } finally {
    globalThis.Date = RealDate;
  }
  // Before: touched with the holder's clock, 40 s old to everyone else, and taken over live.
  expect(Math.abs(statSync(`${snapshot}.lock`).mtimeMs - Date.now())).toBeLessThan(5000);
  lock.release();

  writeFileSync(`${snapshot}.lock`, "elsewhere 7 pid:[1]\n");
  const ahead = (Date.now() + 3600_000) / 1000;
  utimesSync(`${snapshot}.lock`, ahead, ahead);
  const sink = new LogSink();
  const node = await open(snapshot, sink);
  expect(sink.lines.some((l) => l.includes("taking over a stale snapshot lock") && l.includes("ahead of the file system's"))).toBe(true);
  await node.close();
});

test("a lock path that is a directory refuses the start with a message saying so", async () => {
  const snapshot = join(dir, "cache.snap");
  mkdirSync(`${snapshot}.lock`);
  await expect(open(snapshot)).rejects.toThrow(`its lock ${snapshot}.lock is not a file: remove it`);
});

test("a node whose lock was taken over (stopped past its staleness) writes no snapshot over the new holder's, nor moves it aside", async () => {
  const { snapshot, sink, node, c } = await openHolding("the old node's");
  await c.close();
  // Another node took the lock meanwhile and wrote its own snapshot.
  writeFileSync(`${snapshot}.lock`, "elsewhere 9 pid:[1]\n");
  writeFileSync(snapshot, "the new holder's snapshot");
  await node.close();
  expect(readFileSync(snapshot, "utf8")).toBe("the new holder's snapshot");
  expect(readFileSync(`${snapshot}.lock`, "utf8")).toBe("elsewhere 9 pid:[1]\n");
  expect(node.finalSnapshotFailed).toBe(true);
  expect(sink.lines.some((l) => l.includes("the snapshot lock is another node's now"))).toBe(true);
  expect(sink.lines.some((l) => l.includes("so it is left as it is"))).toBe(true);
});

test("a lock removed while the node holds it is made again: the node's writes go on, and its final snapshot is the one the next start loads (review: it stopped writing, and the next start loaded a stale one)", async () => {
  const { snapshot, sink, node, c } = await openHolding("first");
  await node.snapshotter!.write();
  rmSync(`${snapshot}.lock`); // an operator, or a cleaner of the directory
  await c.set("default", "k", "acknowledged after");
  await c.close();
  await node.close();
  expect(node.finalSnapshotFailed).toBe(false);
  expect(sink.lines.some((l) => l.includes("the snapshot lock was removed while this node held it: made again"))).toBe(true);
  expect(existsSync(`${snapshot}.lock`)).toBe(false); // (released at close)
  const next = await open(snapshot);
  const c2 = new CacheClient({ host: "127.0.0.1", port: next.port });
  try {
    expect(new TextDecoder().decode((await c2.get("default", "k")).value)).toBe("acknowledged after");
  } finally {
    await c2.close();
    await next.close();
  }
});

test("a lock another node held is not made again once that node released it: this node's snapshot is the older (review: it took the lock back and wrote over the other's)", async () => {
  const snapshot = join(dir, "cache.snap");
  const sink = new LogSink();
  const node = await open(snapshot, sink);
  const lock = node.snapshotter!.lock!;
  expect(lock.stillMine()).toBe(true);
  writeFileSync(`${snapshot}.lock`, "elsewhere 9 pid:[1]\n"); // another node took it over
  expect(lock.stillMine()).toBe(false);
  writeFileSync(snapshot, "the other node's snapshot");
  rmSync(`${snapshot}.lock`); // and released it as it stopped
  expect(lock.stillMine()).toBe(false);
  expect(existsSync(`${snapshot}.lock`)).toBe(false);
  await node.close();
  expect(readFileSync(snapshot, "utf8")).toBe("the other node's snapshot");
  expect(sink.lines.some((l) => l.includes("made again"))).toBe(false);
});

test("a symlink planted where a starting node reads the file system's time is not followed (review: the file it named was truncated)", async () => {
  const snapshot = join(dir, "cache.snap");
  writeFileSync(`${snapshot}.lock`, "elsewhere 4242 pid:[1]\n"); // a lock whose age must be read
  const victim = join(dir, "victim");
  writeFileSync(victim, "not the node's");
  symlinkSync(victim, `${snapshot}.lock.now-${process.pid}`);
  await expect(open(snapshot)).rejects.toThrow("is in use by process 4242 on elsewhere");
  expect(readFileSync(victim, "utf8")).toBe("not the node's");
});

/** canFreeze: this process may make, mount and freeze a small file system (root, with mkfs.ext4 and fsfreeze). */
const canFreeze = process.getuid?.() === 0 && existsSync("/dev/loop-control") && Bun.which("fsfreeze") !== null && Bun.which("mkfs.ext4") !== null && Bun.which("losetup") !== null;

test.skipIf(!canFreeze)("a touch of the lock that its file system does not answer leaves the node's thread running (review: a hung network volume stopped serving)", async () => {
  // A frozen file system (fsfreeze) stands for a network volume that stopped answering: a write
  // to it waits until it is thawed. The touch wrote synchronously, so the holder's thread waited too.
  const mnt = join(dir, "mnt");
  const image = join(dir, "fs.img");
  mkdirSync(mnt);
  execFileSync("truncate", ["-s", "16M", image]);
  execFileSync("mkfs.ext4", ["-q", image]);
  execFileSync("mount", ["-o", "loop", image, mnt]);
  let frozen = false;
  const child = Bun.spawn(["bun", join(import.meta.dir, "lock-touch-child.ts"), join(mnt, "cache.snap")], { stdout: "pipe", stderr: "inherit" });
  try {
    const { line, text } = childLines(child.stdout);
    await line("ready\n");
    execFileSync("fsfreeze", ["-f", mnt]);
    frozen = true;
    // While frozen: the child's timers run, and it tells how many (or it says nothing at all).
    await Promise.race([line("ticks"), Bun.sleep(3000)]);
    expect(Number(/ticks (\d+)/.exec(text())?.[1])).toBeGreaterThan(10);
  } finally {
    if (frozen) execFileSync("fsfreeze", ["-u", mnt]);
    child.kill("SIGKILL");
    await child.exited;
    execFileSync("umount", [mnt]);
  }
});

test("a write whose check of the lock its file system does not answer leaves the node's thread running (stillMine read the lock synchronously)", async () => {
  // A FIFO that no one writes, in the lock's place, stands for a volume that stopped answering
  // reads (fsfreeze holds writes only): opening it to read waits for a writer.
  const snapshot = join(dir, "cache.snap");
  const child = Bun.spawn(["bun", join(import.meta.dir, "lock-check-child.ts"), snapshot], { stdin: "pipe", stdout: "pipe", stderr: "inherit" });
  try {
    const { line, text } = childLines(child.stdout);
    await line("ready\n");
    rmSync(`${snapshot}.lock`);
    execFileSync("mkfifo", [`${snapshot}.lock`]);
    child.stdin.write("go\n");
    await child.stdin.flush();
    // The child's timers run while its write waits on the lock, and it tells how many (or it
    // says nothing at all: its thread waits in the read).
    await Promise.race([line("ticks"), Bun.sleep(3000)]);
    expect(Number(/ticks (\d+)/.exec(text())?.[1])).toBeGreaterThan(10);
  } finally {
    child.kill("SIGKILL");
    await child.exited;
  }
});
