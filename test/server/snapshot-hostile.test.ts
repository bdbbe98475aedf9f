/**
 * Hostile snapshot paths and files at start: a FIFO, a block length no writer makes (a sparse
 * file's 1 GiB block), keys over the node's key limit in a file with valid checksums, and a
 * snapshot directory that is missing or not a directory. Each is refused (the node does not
 * start), moved aside as corrupt, or skipped item by item, and said so.
 */
import { afterEach, beforeEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { execFileSync } from "node:child_process";
import { closeSync, existsSync, ftruncateSync, mkdirSync, mkdtempSync, openSync, readdirSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Group } from "../../src/cluster/group.ts";
import { Groups } from "../../src/cluster/groups.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import { MIN_BLOCK_ITEM_BYTES, Snapshotter, type SnapshotLogger } from "../../src/server/snapshot.ts";
import {
  BLOCK_HEADER_BYTES, BLOCK_TAG, BLOCK_TARGET_BYTES, BlockWriter, encodeHeader, encodeTrailer, HEADER_BYTES, maxBlockBytes,
  RECORD_HEADER_BYTES, TRAILER_BYTES,
} from "../../src/server/snapshot-format.ts";
import { CHUNK_HEADER } from "../../src/store/slab-allocator.ts";
import { ROOT } from "../support/node-process.ts";
import { LogSink } from "./support.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const MB = 1024 * 1024;
/** MAX_ITEM: the test stores' max item size (chunk header, key and value). */
const MAX_ITEM = 64 * 1024;
const enc = new TextEncoder();

interface Line {
  level: "info" | "warn" | "error";
  msg: string;
  f: Record<string, unknown> | undefined;
}

function captureLog(): SnapshotLogger & { lines: Line[] } {
  const lines: Line[] = [];
  const push = (level: Line["level"]) => (msg: string, f?: Record<string, unknown>) => void lines.push({ level, msg, f });
  return { lines, info: push("info"), warn: push("warn"), error: push("error") };
}

let dir = "";
let path = "";
const children: ReturnType<typeof Bun.spawn>[] = [];
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "mbc-snapshot-hostile-"));
  path = join(dir, "cache.snap");
});
afterEach(async () => {
  for (const c of children.splice(0)) {
    c.kill("SIGKILL");
    await c.exited;
  }
  rmSync(dir, { recursive: true, force: true });
});

function makeGroups(): Groups {
  const groups = new Groups();
  groups.add(new Group({ name: "kv", memory: 64 * MB, store: { maxItemSize: MAX_ITEM } }));
  return groups;
}

/** CraftedRecord is one item of a crafted block: its key, and the length of its value. */
interface CraftedRecord {
  key: Uint8Array;
  valLen: number;
}

/** craft writes a snapshot of one block of group "kv" with valid checksums, and returns its block's length. */
function craft(records: CraftedRecord[]): number {
  const w = new BlockWriter(1024);
  w.begin(enc.encode("kv"));
  for (const r of records) {
    const src = new Uint8Array(r.key.length + r.valLen).fill(0x61);
    src.set(r.key);
    w.add(Infinity, src, 0, r.key.length, r.valLen);
  }
  const block = w.finish();
  const header = encodeHeader(Date.now());
  const fileCrc = Bun.hash.crc32(block, Bun.hash.crc32(header));
  writeFileSync(path, Buffer.concat([header, block, encodeTrailer(1, records.length, fileCrc)]));
  return block.length;
}

/**
 * fullBlock lists records whose body ends one byte short of BLOCK_TARGET_BYTES (the writer would
 * add one more), then a last record of `lastKeyValue` bytes of key and value.
 */
function fullBlock(lastKeyValue: number): CraftedRecord[] {
  const records: CraftedRecord[] = [];
  let body = 2 + 2; // the name length and "kv"
  for (let i = 0; body < BLOCK_TARGET_BYTES - 1; i++) {
    const left = BLOCK_TARGET_BYTES - 1 - body;
    const size = left > 65_000 ? 32_768 : left;
    records.push({ key: enc.encode(`fill-${i}`.padEnd(8, ".")), valLen: size - RECORD_HEADER_BYTES - 8 });
    body += size;
  }
  records.push({ key: enc.encode("the-last"), valLen: lastKeyValue - 8 });
  return records;
}

function corruptFiles(): string[] {
  return readdirSync(dir).filter((f) => f.startsWith("cache.snap.corrupt-"));
}

test("a FIFO at the snapshot path is refused at once, and left where it is", async () => {
  execFileSync("mkfifo", [path]);
  const log = captureLog();
  const load = new Snapshotter({ path, groups: makeGroups(), logger: log }).load();
  await expect(load).rejects.toThrow(`snapshot path ${path} is not a regular file (it is a FIFO)`);
  expect(existsSync(path)).toBe(true);
  expect(corruptFiles()).toEqual([]);
});

describe("a block longer than any a writer makes of this node's items is refused before it is read", () => {
  // Items up to the node's max item size, or MIN_BLOCK_ITEM_BYTES if that is more: a node
  // restarted with a lower --max-item-size still reads what it wrote before.
  const largest = Math.max(MAX_ITEM - CHUNK_HEADER, MIN_BLOCK_ITEM_BYTES); // key and value of one item
  const cases: [string, number, "loaded" | "corrupt"][] = [
    ["the longest block a writer makes (its last item of the largest size): read, that item refused", largest, "loaded"],
    ["one byte longer", largest + 1, "corrupt"],
  ];
  for (const [name, lastKeyValue, status] of cases) {
    test(name, async () => {
      const records = fullBlock(lastKeyValue);
      const blockBytes = craft(records);
      expect(blockBytes).toBe(maxBlockBytes(largest) - largest + lastKeyValue);
      const log = captureLog();
      const groups = makeGroups();
      const l = await new Snapshotter({ path, groups, clock: () => 7, logger: log }).load();
      expect(l.status).toBe(status);
      if (status === "loaded") {
        expect(groups.byName("kv")!.store.size).toBe(records.length - 1);
        expect(groups.byName("kv")!.store.has(enc.encode("the-last"))).toBe(false); // too large for this node
        expect(log.lines.filter((x) => x.level === "warn").map((x) => x.msg)).toEqual(["snapshot items refused by the store (too large or bad TTL)"]);
      } else {
        expect(groups.byName("kv")!.store.size).toBe(0);
        expect(corruptFiles()).toEqual(["cache.snap.corrupt-7"]);
        expect(String(log.lines.find((x) => x.level === "error")!.f!.reason)).toContain(`block of ${blockBytes} B exceeds ${maxBlockBytes(largest)} B`);
      }
    });
  }

  test("a sparse file declaring one 1 GiB block: corrupt, without reading or allocating the gigabyte", async () => {
    const fd = openSync(path, "w");
    writeSync(fd, encodeHeader(Date.now()), 0, HEADER_BYTES, 0);
    const bh = new DataView(new ArrayBuffer(BLOCK_HEADER_BYTES));
    bh.setUint32(0, BLOCK_TAG, true);
    bh.setUint32(4, 1 << 30, true);
    bh.setUint32(8, 1, true);
    writeSync(fd, new Uint8Array(bh.buffer), 0, BLOCK_HEADER_BYTES, HEADER_BYTES);
    ftruncateSync(fd, HEADER_BYTES + BLOCK_HEADER_BYTES + (1 << 30) + TRAILER_BYTES);
    closeSync(fd);
    const log = captureLog();
    const rss = process.memoryUsage().rss;
    const l = await new Snapshotter({ path, groups: makeGroups(), clock: () => 8, logger: log }).load();
    expect(process.memoryUsage().rss - rss).toBeLessThan(256 * MB);
    expect(l.status).toBe("corrupt");
    expect(corruptFiles()).toEqual(["cache.snap.corrupt-8"]);
    expect(String(log.lines.find((x) => x.level === "error")!.f!.reason)).toMatch(/block of \d+ B exceeds \d+ B.*\(at byte 32\)/);
  });
});

describe("keys over the node's key limit in a well-formed snapshot are skipped and counted", () => {
  // The store holds keys up to 65535 bytes; the node's requests only up to --max-key-size.
  const keys = [250, 251, 1000].map((n) => "k".repeat(n));
  const cases: [string, number | undefined, number[]][] = [
    ["default limit (250)", undefined, [250]],
    ["--max-key-size 251", 251, [250, 251]],
    ["--max-key-size 1000", 1000, [250, 251, 1000]],
  ];
  for (const [name, maxKeyBytes, loaded] of cases) {
    test(name, async () => {
      const src = makeGroups();
      for (const k of keys) {
        const key = enc.encode(k);
        expect(src.byName("kv")!.store.set(key, 0, key.length, enc.encode("v"), 0, 1, 0)).toBe(0);
      }
      await new Snapshotter({ path, groups: src, logger: captureLog() }).write();
      const log = captureLog();
      const dst = makeGroups();
      const l = await new Snapshotter({ path, groups: dst, logger: log, maxKeyBytes }).load();
      expect(l).toMatchObject({ status: "loaded", items: loaded.length });
      for (const k of keys) expect(dst.byName("kv")!.store.has(enc.encode(k))).toBe(loaded.includes(k.length));
      const warned = log.lines.filter((x) => x.level === "warn");
      if (loaded.length === keys.length) expect(warned).toEqual([]);
      else {
        expect(warned).toEqual([{
          level: "warn",
          msg: "snapshot items with keys over the max key size skipped",
          f: { items: keys.length - loaded.length, maxKeyBytes: maxKeyBytes ?? 250 },
        }]);
      }
      dst.byName("kv")!.store.checkInvariants();
    });
  }
});

describe("a snapshot directory where no snapshot can be written refuses the start", () => {
  const cases: [string, () => string, RegExp][] = [
    ["missing", () => join(dir, "no-such-dir", "cache.snap"), /^snapshot directory \S+no-such-dir does not exist: no snapshot could be written$/],
    ["a regular file", () => {
      writeFileSync(join(dir, "file"), "x");
      return join(dir, "file", "cache.snap");
    }, /^snapshot directory \S+file is not writable \(ENOTDIR/],
  ];
  for (const [name, where, message] of cases) {
    test(name, async () => {
      const load = new Snapshotter({ path: where(), groups: makeGroups(), logger: captureLog() }).load();
      await expect(load).rejects.toThrow(message);
    });
  }

  test("a writable directory is checked without a trace: nothing left in it", async () => {
    const l = await new Snapshotter({ path, groups: makeGroups(), logger: captureLog() }).load();
    expect(l.status).toBe("missing");
    expect(readdirSync(dir)).toEqual([]);
  });

  test("a temporary file a stopped writer left is no proof: one that cannot be removed is reported, and the check makes its own", async () => {
    // The check used the writer's temporary name and took "it exists" for "writable": in a
    // directory made read-only since (a container's pid is 1 at every start), the node started
    // and lost every item at its first write. (Root writes anywhere, so the leftover here is a
    // directory, which unlink cannot remove.)
    mkdirSync(`${path}.tmp-${process.pid}`);
    const log = captureLog();
    const l = await new Snapshotter({ path, groups: makeGroups(), logger: log }).load();
    expect(l.status).toBe("missing");
    expect(log.lines.filter((x) => x.level !== "info").map((x) => x.msg)).toEqual(["could not remove an unfinished snapshot left by a stopped writer"]);
    expect(log.lines.some((x) => x.msg.startsWith("removed an unfinished snapshot"))).toBe(false);
    expect(readdirSync(dir)).toEqual([`cache.snap.tmp-${process.pid}`]); // and no probe left behind
  });

  test("a read-only file system refuses the start", async () => {
    const load = new Snapshotter({ path: "/proc/mybuncache-test.snap", groups: makeGroups(), logger: captureLog() }).load();
    await expect(load).rejects.toThrow(/^snapshot directory \/proc (does not exist|is not writable)/);
  });

  test("CacheNode.open rejects it", async () => {
    const snapshot = join(dir, "no-such-dir", "cache.snap");
    await expect(CacheNode.open({ port: 0, snapshot }, { logger: new LogSink().logger })).rejects.toThrow("does not exist");
  });
});

describe("node.ts reports the refusal in one line and exits 1, before listening", () => {
  /** startNode runs node.ts until it exits, or until it listens (then it is stopped). */
  async function startNode(snapshot: string): Promise<{ code: number; stderr: string; listened: boolean }> {
    const proc = Bun.spawn(["bun", "run", "node.ts", "--port", "0", "--snapshot", snapshot], { cwd: ROOT, stdout: "ignore", stderr: "pipe" });
    children.push(proc);
    const reader = proc.stderr.getReader();
    let stderr = "";
    let listened = false;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      stderr += new TextDecoder().decode(value);
      if (stderr.includes("listening on")) {
        listened = true;
        proc.kill("SIGTERM");
      }
    }
    return { code: await proc.exited, stderr, listened };
  }

  const cases: [string, () => string, string][] = [
    ["--snapshot in a missing directory", () => join(dir, "no-such-dir", "cache.snap"), "does not exist: no snapshot could be written"],
    ["--snapshot naming a FIFO", () => {
      execFileSync("mkfifo", [path]);
      return path;
    }, "is not a regular file (it is a FIFO)"],
  ];
  for (const [name, where, reason] of cases) {
    test(name, async () => {
      const r = await startNode(where());
      expect(r.listened).toBe(false);
      expect(r.code).toBe(1);
      const lines = r.stderr.trim().split("\n");
      expect(lines.length).toBe(1);
      expect(lines[0]).toStartWith("mybuncache: cannot start: snapshot ");
      expect(lines[0]).toContain(reason);
    }, 15_000);
  }
});
