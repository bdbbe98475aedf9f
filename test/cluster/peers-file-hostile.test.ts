/**
 * A --peers-file path that names no regular file (a FIFO, whose read would wait for a writer
 * forever, or a directory), at start or put in place of the file later: the last good list is
 * kept with a warning, and the reloads after it are not stuck behind a read that never ends.
 */
import { afterEach, beforeEach, expect, test, setDefaultTimeout } from "bun:test";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FileMembers } from "../../src/cluster/membership.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

let dir = "";
let path = "";
const sources: FileMembers[] = [];
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "mbc-peers-hostile-"));
  path = join(dir, "peers.txt");
});
afterEach(() => {
  for (const s of sources.splice(0)) s.close();
  rmSync(dir, { recursive: true, force: true });
});

/** settledWithin fails the test, instead of hanging it, when the reloads are not done in `ms`. */
async function settledWithin(members: FileMembers, ms = 3000): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the peers file reloads were still waiting after ${ms} ms`)), ms);
  });
  try {
    await Promise.race([members.settled(), late]);
  } finally {
    clearTimeout(timer);
  }
}

function watch(): { members: FileMembers; applied: string[][]; warnings: { msg: string; error: unknown }[] } {
  const applied: string[][] = [];
  const warnings: { msg: string; error: unknown }[] = [];
  const members = new FileMembers(path, {
    info() {},
    warn: (msg, fields) => void warnings.push({ msg, error: fields?.error }),
  });
  sources.push(members);
  return { members, applied, warnings };
}

/**
 * replace puts `make(tmp)`'s result in place of the peers file by a rename, as an editor does (a
 * directory cannot be renamed over a file, nor a file over a directory: the old one goes first).
 */
function replace(make: (at: string) => void): void {
  const tmp = join(dir, "next");
  make(tmp);
  if (statSync(tmp).isDirectory() !== statSync(path).isDirectory()) rmSync(path, { recursive: true });
  renameSync(tmp, path);
}

const mkfifo = (at: string): void => void execFileSync("mkfifo", [at]);
const cases: [string, (at: string) => void, string][] = [
  ["a FIFO", mkfifo, "not a regular file (it is a FIFO)"],
  ["a directory", (at) => mkdirSync(at), "not a regular file (it is a directory)"],
];

for (const [name, make, reason] of cases) {
  test(`at start the peers file is ${name}: no list, a warning; a good file later is applied`, async () => {
    make(path);
    const { members, applied, warnings } = watch();
    members.start((list) => void applied.push(list));
    await settledWithin(members);
    expect(applied).toEqual([]);
    expect(warnings[0]).toEqual({ msg: "peers file not applied; keeping the last good member list", error: reason });

    replace((at) => writeFileSync(at, "a:1\nb:2\n"));
    members.reload();
    await settledWithin(members);
    expect(applied.at(-1)).toEqual(["a:1", "b:2"]);
  });

  test(`a peers file replaced by ${name} keeps the last good list; the next good file is applied`, async () => {
    writeFileSync(path, "a:1\n");
    const { members, applied, warnings } = watch();
    members.start((list) => void applied.push(list));
    await settledWithin(members);
    expect(applied).toEqual([["a:1"]]);

    replace(make);
    for (let i = 0; i < 3; i++) members.reload(); // SIGHUPs: each one a read of its own
    await settledWithin(members);
    expect(applied).toEqual([["a:1"]]);
    // The watcher may add a read of its own, and see the file missing for a moment as it is replaced.
    expect(warnings.filter((w) => w.error === reason).length).toBeGreaterThanOrEqual(3);
    for (const w of warnings) expect(w.msg).toBe("peers file not applied; keeping the last good member list");

    replace((at) => writeFileSync(at, "a:1\nc:3\n"));
    members.reload();
    await settledWithin(members);
    expect(applied).toEqual([["a:1"], ["a:1", "c:3"]]);
  });
}

/** until waits for `cond`, polling; fails the test after `ms` instead of hanging it. */
async function until(cond: () => boolean, ms: number): Promise<void> {
  const end = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > end) throw new Error(`condition not met in ${ms} ms`);
    await Bun.sleep(10);
  }
}

test("two writes a millisecond apart: the second is applied (review: the watch saw only the first)", async () => {
  writeFileSync(path, "a:1\n");
  const { members, applied } = watch();
  members.start((list) => void applied.push(list));
  await settledWithin(members);
  for (let i = 0; i < 5; i++) {
    writeFileSync(path, `a:1\nx${i}:1\n`);
    await Bun.sleep(1);
    writeFileSync(path, `a:1\ny${i}:1\n`);
    await until(() => applied.at(-1)?.[1] === `y${i}:1`, 5_000); // the re-read after the burst, or the poll
  }
});

test("a Kubernetes ConfigMap update (its ..data symlink swapped) is applied (review: the event's name was not the file's)", async () => {
  // The layout kubelet makes: peers.txt -> ..data/peers.txt, ..data -> ..v1 (a directory).
  const version = (n: number, text: string) => {
    mkdirSync(join(dir, `..v${n}`));
    writeFileSync(join(dir, `..v${n}`, "peers.txt"), text);
  };
  version(1, "a:1\n");
  symlinkSync("..v1", join(dir, "..data"));
  symlinkSync(join("..data", "peers.txt"), path);
  const { members, applied } = watch();
  members.start((list) => void applied.push(list));
  await settledWithin(members);
  expect(applied).toEqual([["a:1"]]);
  version(2, "a:1\nb:2\n");
  symlinkSync("..v2", join(dir, "..data_tmp"));
  renameSync(join(dir, "..data_tmp"), join(dir, "..data")); // the atomic swap
  await until(() => applied.length === 2, 5_000);
  expect(applied[1]).toEqual(["a:1", "b:2"]);
});

test("a peers file over 1 MiB is refused unread, once per change; the last good list stays", async () => {
  writeFileSync(path, "a:1\n");
  const { members, applied, warnings } = watch();
  members.start((list) => void applied.push(list));
  await settledWithin(members);
  replace((at) => writeFileSync(at, `a:1\n${"#".repeat(2 << 20)}\n`));
  await until(() => warnings.length > 0, 5_000);
  expect(String(warnings[0]!.error)).toContain("more than a member list takes");
  expect(applied).toEqual([["a:1"]]);
});
