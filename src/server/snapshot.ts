/**
 * Snapshotter writes every live item of a node's groups to a file, and loads it back at start.
 *
 * Writing: the main store of every group (not mirrors, not negative entries, not items already
 * expired) is walked by item id in slices of at most `sliceMs` of work, with a macrotask
 * (`setImmediate`) between slices so requests keep being served. Each slice copies the bytes it
 * reads into a block buffer before it ends (no slab view is held across an await, since items may
 * move or go between slices). Full blocks (~1 MiB; layout in `snapshot-format.ts`) are written
 * while the next one is filled (`snapshot-stream.ts`: two buffers, at most one write in flight).
 * The file is `${path}.tmp-<pid>`, fsynced, renamed over `path`, and the directory fsynced, so a
 * crash at any point leaves the previous snapshot (or the new complete one) in place.
 *
 * The snapshot is fuzzy, like a Redis RDB save without fork: an item set or deleted while the
 * write runs may or may not be in it, and two items changed together may be caught one before
 * and one after. Each item in it is intact (its key, value and expiry were copied in one slice).
 * Recency is not kept: items are written, and so reloaded, in item id order.
 *
 * Loading makes two passes over the file: the first checks every checksum and the structure of
 * every block, the second applies the records (the first pass is the cheap part: page-cache reads
 * and CRC-32 run at GB/s). So a corrupt or truncated file loads nothing; it is renamed to
 * `${path}.corrupt-<ms>` (never deleted) and the node starts empty. The apply pass checks
 * each block again; if it still fails (the file changed under us, or an I/O error), the groups it
 * already filled are cleared. `load` is meant to run before the node serves. Expired items and
 * items of groups the node no longer has are skipped and counted; an item the store refuses (too
 * large for this node's max item size, or the wrong TTL) or whose key is longer than `maxKeyBytes`
 * (no request could read or delete it) is counted in the log line. A block longer than any made of
 * items this node can hold is corrupt (`maxBlockBytes`), refused before memory is allocated for it.
 * Expiry is judged by each store's own clock, the domain its expiry times are in; `clock` (wall ms)
 * names the moved-aside file, stamps the header and paces the progress line; durations use
 * `performance.now()`.
 *
 * `load` refuses (throws, so the node does not start) a path that is not a regular file (a
 * directory, or a FIFO whose open would wait for a writer) and a directory where no snapshot can
 * be written (missing, or read-only: each write would fail, and the data be lost at shutdown).
 */
import { errorText } from "../protocol/errors.ts";
import { constants, type Stats } from "node:fs";
import { open, readdir, rename, stat, unlink, type FileHandle } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import type { Group, Groups } from "../cluster/group.ts";
import { DEFAULT_MAX_KEY_BYTES } from "../protocol/limits.ts";
import { CHUNK_HEADER } from "../store/slab-allocator.ts";
import { SET_OK } from "../store/store.ts";
import { BLOCK_HEADER_BYTES, BlockWriter, encodeHeader, encodeTrailer, maxBlockBytes } from "./snapshot-format.ts";
import { scanSnapshot, SnapshotOut } from "./snapshot-stream.ts";

export interface SnapshotLogger {
  info(msg: string, f?: Record<string, unknown>): void;
  warn(msg: string, f?: Record<string, unknown>): void;
  error(msg: string, f?: Record<string, unknown>): void;
}
export interface SnapshotResult { items: number; bytes: number; ms: number; worstPauseMs: number }
export interface LoadResult {
  items: number;
  skippedExpired: number;
  skippedUnknownGroup: number;
  ms: number;
  status: "loaded" | "missing" | "corrupt";
}
export interface SnapshotterOptions {
  path: string;
  groups: Groups;
  /** clock is wall time in ms (default Date.now). */
  clock?: () => number;
  logger: SnapshotLogger;
  /** sliceMs bounds the work done in one event-loop turn (default 10). */
  sliceMs?: number;
  /** maxKeyBytes is the node's key limit (--max-key-size, default 250): a longer key is not loaded. */
  maxKeyBytes?: number;
}

/**
 * MIN_BLOCK_ITEM_BYTES: blocks are read if made of items up to this size (key and value) whatever
 * the node's --max-item-size, which bounds a hostile file's one allocation at ~65 MiB.
 */
export const MIN_BLOCK_ITEM_BYTES = 64 * 1024 * 1024;

/** PROGRESS_EVERY_MS: the load logs progress at most this often. */
const PROGRESS_EVERY_MS = 1000;

export class Snapshotter {
  readonly path: string;
  private readonly groups: Groups;
  private readonly clock: () => number;
  private readonly logger: SnapshotLogger;
  private readonly sliceMs: number;
  private readonly maxKeyBytes: number;
  private writing: Promise<SnapshotResult> | undefined;
  private timer: ReturnType<typeof setInterval> | undefined;
  /** writers are the two block buffers every write reuses. */
  private readonly writers: [BlockWriter, BlockWriter] = [new BlockWriter(), new BlockWriter()];

  constructor(opts: SnapshotterOptions) {
    this.path = opts.path;
    this.groups = opts.groups;
    this.clock = opts.clock ?? Date.now;
    this.logger = opts.logger;
    this.sliceMs = opts.sliceMs ?? 10;
    this.maxKeyBytes = opts.maxKeyBytes ?? DEFAULT_MAX_KEY_BYTES;
  }

  /** write snapshots every group's main store; a call while a write runs returns that write. */
  write(): Promise<SnapshotResult> {
    if (this.writing !== undefined) return this.writing;
    const p = this.writeOnce().finally(() => {
      this.writing = undefined;
    });
    this.writing = p;
    return p;
  }

  /** settled resolves once no write runs (at once when none does), however the running one ends. */
  async settled(): Promise<void> {
    await this.writing?.catch(() => {});
  }

  /** startInterval writes a snapshot every `ms` (the timer does not keep the process alive). */
  startInterval(ms: number): void {
    this.stop();
    this.timer = setInterval(() => {
      this.write().catch(() => {}); // writeOnce has logged it
    }, ms);
    this.timer.unref();
  }

  /** stop ends the periodic write (a write in progress runs to its end). */
  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  [Symbol.dispose](): void {
    this.stop();
  }

  private async writeOnce(): Promise<SnapshotResult> {
    const t0 = performance.now();
    const tmp = `${this.path}.tmp-${process.pid}`;
    let fh: FileHandle | undefined;
    try {
      fh = await open(tmp, "w");
      const out = new SnapshotOut(fh, this.writers);
      await out.emit(encodeHeader(this.clock()));
      const items = await this.writeGroups(out);
      await out.emit(encodeTrailer(out.blocks, items, out.fileCrc), false);
      await out.drain();
      await fh.sync();
      await fh.close();
      fh = undefined;
      await rename(tmp, this.path);
      await syncDir(dirname(this.path));
      const result = { items, bytes: out.pos, ms: performance.now() - t0, worstPauseMs: out.worstPauseMs };
      this.logger.info("snapshot written", { path: this.path, ...result, ms: round(result.ms), worstPauseMs: round(result.worstPauseMs) });
      return result;
    } catch (e) {
      await fh?.close().catch(() => {});
      await unlink(tmp).catch(() => {});
      this.logger.error("snapshot write failed; the previous snapshot is kept", { path: this.path, error: String(e) });
      throw e;
    }
  }

  /** writeGroups streams every group's live items as blocks and returns how many it wrote. */
  private async writeGroups(out: SnapshotOut): Promise<number> {
    let count = 0;
    for (const group of this.groups.all()) {
      const store = group.store;
      const items = store.items;
      let w = out.writer();
      w.begin(group.nameBytes);
      let id = 0;
      while (id < items.cap) {
        // One slice. The table may have grown since the last one (ids never move), and pages
        // are read through the allocator's array each time, never kept across the await below.
        const cap = items.cap;
        const pages = store.slab.pages;
        const now = store.clock();
        const deadline = out.sliceStart + this.sliceMs;
        let n = 0;
        while (id < cap) {
          if (items.isLive(id) && !items.isNegative(id)) {
            const exp = items.expiry(id);
            if (exp > now) {
              w.add(exp, pages[items.page(id)]!, items.off(id) + CHUNK_HEADER, items.keyLen(id), items.valLen(id));
              count++;
            }
          }
          id++;
          if (w.full() || ((++n & 63) === 0 && performance.now() >= deadline)) break;
        }
        if (w.full()) {
          await out.emitBlock(w);
          w = out.writer();
          w.begin(group.nameBytes);
        }
        if (performance.now() >= deadline) await out.yieldTurn();
      }
      if (w.records > 0) await out.emitBlock(w);
    }
    return count;
  }

  /** load fills the groups from the snapshot at `path`; see the header for what it skips. */
  async load(): Promise<LoadResult> {
    const t0 = performance.now();
    const result: LoadResult = { items: 0, skippedExpired: 0, skippedUnknownGroup: 0, ms: 0, status: "loaded" };
    await this.removeStaleTemps();
    await this.checkWritable();
    // Not a file (a directory named by mistake, a FIFO): refused, never moved aside like a
    // corrupt snapshot, and the node does not start. Checked before the open, which would wait
    // for a FIFO's writer; the open does not block either (should the path change in between),
    // and the file it opened is checked again.
    const found = await stat(this.path).catch((e: unknown) => e as NodeJS.ErrnoException);
    if (found instanceof Error) {
      if (found.code === "ENOENT") {
        this.logger.info("no snapshot to load; starting empty", { path: this.path });
        return { ...result, status: "missing", ms: performance.now() - t0 };
      }
      return this.setAside(found, t0);
    }
    if (!found.isFile()) throw notAFile(this.path, found);
    let fh: FileHandle;
    try {
      fh = await open(this.path, constants.O_RDONLY | constants.O_NONBLOCK);
    } catch (e) {
      return this.setAside(e, t0);
    }
    const opened = await fh.stat().catch((e: unknown) => e as Error);
    if (opened instanceof Error || !opened.isFile()) {
      await fh.close().catch(() => {});
      throw notAFile(this.path, opened);
    }
    const touched = new Set<Group>();
    try {
      const size = opened.size;
      const progress = this.progress(size);
      // The store's max item size counts the chunk header along with the key and the value. At
      // least MIN_BLOCK_ITEM_BYTES: a node restarted with a lower --max-item-size still reads a
      // file written before (its items too large now are refused one by one, not the whole file).
      const largest = Math.max(MIN_BLOCK_ITEM_BYTES, ...this.groups.all().map((g) => g.store.classes.maxChunk - CHUNK_HEADER));
      const maxBlock = maxBlockBytes(largest);
      const total = await scanSnapshot(fh, size, maxBlock, this.sliceMs, (_, end, n) => progress("verify", end, n, 0));
      const unknown = new Set<string>();
      let refused = 0;
      let longKeys = 0;
      let applied = 0;
      await scanSnapshot(fh, size, maxBlock, this.sliceMs, (block, end, n) => {
        const a = applyBlock(block, this.groups, this.maxKeyBytes, result);
        if (a === undefined) unknown.add(groupName(block));
        else {
          touched.add(a.group);
          refused += a.refused;
          longKeys += a.longKeys;
        }
        progress("apply", end, (applied += n), total);
      });
      await fh.close();
      if (unknown.size > 0) this.logger.warn("snapshot items of unknown groups skipped", { groups: [...unknown], items: result.skippedUnknownGroup });
      if (refused > 0) this.logger.warn("snapshot items refused by the store (too large or bad TTL)", { items: refused });
      if (longKeys > 0) this.logger.warn("snapshot items with keys over the max key size skipped", { items: longKeys, maxKeyBytes: this.maxKeyBytes });
      result.ms = performance.now() - t0;
      this.logger.info("snapshot loaded", { path: this.path, ...result, ms: round(result.ms) });
      return result;
    } catch (e) {
      await fh.close().catch(() => {});
      for (const g of touched) g.store.clear();
      return this.setAside(e, t0);
    }
  }

  /**
   * checkWritable throws unless a file can be made next to `path`: otherwise every write would
   * fail, and the node exit at shutdown with the data lost. It makes and removes a temporary file
   * of the writer's name (left by a crash, the next start removes it).
   */
  private async checkWritable(): Promise<void> {
    const probe = `${this.path}.tmp-${process.pid}`;
    try {
      await (await open(probe, "wx")).close();
      await unlink(probe);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "EEXIST") return; // a write of ours under way: the directory is writable
      const why = code === "ENOENT" ? "does not exist" : `is not writable (${errorText(e)})`;
      throw new Error(`snapshot directory ${dirname(this.path)} ${why}: no snapshot could be written`);
    }
  }

  /**
   * progress returns the load's progress reporter: called after each block with the phase's
   * records so far, it logs a line at most every PROGRESS_EVERY_MS of `clock`.
   */
  private progress(size: number): (phase: "verify" | "apply", end: number, records: number, total: number) => void {
    let phaseRecords = 0;
    let start = this.clock();
    let lastLog = start;
    let current = "verify";
    return (phase, end, records, total) => {
      const now = this.clock();
      if (phase !== current) {
        current = phase;
        start = lastLog = now;
        phaseRecords = 0;
        return;
      }
      phaseRecords = phase === "verify" ? phaseRecords + records : records;
      if (now - lastLog < PROGRESS_EVERY_MS) return;
      lastLog = now;
      this.logger.info("snapshot loading", {
        phase,
        percent: Math.floor((end / size) * 100),
        items: phaseRecords,
        of: phase === "apply" ? total : undefined,
        itemsPerSec: Math.round((phaseRecords * 1000) / Math.max(1, now - start)),
      });
    };
  }

  /** setAside logs why the snapshot cannot be used and renames it out of the way. */
  private async setAside(cause: unknown, t0: number): Promise<LoadResult> {
    let aside = `${this.path}.corrupt-${Math.floor(this.clock())}`;
    for (let n = 1; await exists(aside); n++) aside = `${this.path}.corrupt-${Math.floor(this.clock())}-${n}`;
    const reason = errorText(cause);
    try {
      await rename(this.path, aside);
      this.logger.error("snapshot is corrupt or unreadable; moved aside, starting empty", { path: this.path, movedTo: aside, reason });
    } catch (e) {
      this.logger.error("snapshot is corrupt or unreadable and could not be moved aside; starting empty", { path: this.path, reason, renameError: String(e) });
    }
    return { items: 0, skippedExpired: 0, skippedUnknownGroup: 0, status: "corrupt", ms: performance.now() - t0 };
  }

  /**
   * removeStaleTemps deletes `${path}.tmp-<pid>` files left by a writer that died: its pid is no
   * longer running, or it is ours (a previous life of this node under a reused pid, e.g. pid 1 in
   * a container) while we are not writing.
   */
  private async removeStaleTemps(): Promise<void> {
    const dir = dirname(this.path);
    const prefix = `${basename(this.path)}.tmp-`;
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      return;
    }
    for (const name of names) {
      if (!name.startsWith(prefix)) continue;
      const pid = Number(name.slice(prefix.length));
      if (!Number.isInteger(pid) || pid <= 0) continue;
      const stale = pid === process.pid ? this.writing === undefined : !running(pid);
      if (!stale) continue;
      await unlink(join(dir, name)).catch(() => {});
      this.logger.info("removed an unfinished snapshot left by a stopped writer", { file: join(dir, name) });
    }
  }
}

interface Applied {
  group: Group;
  /** refused counts the items the store refused. */
  refused: number;
  /** longKeys counts the items not set because their key is over the node's key limit. */
  longKeys: number;
}

/**
 * applyBlock sets a checked block's items into its group's store, but for keys over `maxKeyBytes`
 * (the store would take them, yet no request could read or delete them); undefined for an
 * unknown group.
 */
function applyBlock(block: Uint8Array, groups: Groups, maxKeyBytes: number, result: LoadResult): Applied | undefined {
  const dv = new DataView(block.buffer, block.byteOffset, block.length);
  const records = dv.getUint32(8, true);
  const nameLen = dv.getUint16(BLOCK_HEADER_BYTES, true);
  const group = groups.find(block, BLOCK_HEADER_BYTES + 2, nameLen);
  if (group === undefined) {
    result.skippedUnknownGroup += records;
    return undefined;
  }
  const store = group.store;
  const now = store.clock();
  let refused = 0;
  let longKeys = 0;
  let p = BLOCK_HEADER_BYTES + 2 + nameLen;
  for (let r = 0; r < records; r++) {
    const exp = dv.getFloat64(p, true);
    const keyLen = dv.getUint16(p + 8, true);
    const valLen = dv.getUint32(p + 10, true);
    const keyOff = p + 14;
    p = keyOff + keyLen + valLen;
    if (exp <= now) {
      result.skippedExpired++;
      continue;
    }
    if (keyLen > maxKeyBytes) {
      longKeys++;
      continue;
    }
    const ttl = exp === Infinity ? 0 : exp - now;
    if (store.set(block, keyOff, keyLen, block, keyOff + keyLen, valLen, ttl) === SET_OK) result.items++;
    else refused++;
  }
  return { group, refused, longKeys };
}

/** notAFile is the error for a snapshot path that names something other than a regular file. */
function notAFile(path: string, found: Stats | Error): Error {
  if (found instanceof Error) return new Error(`snapshot path ${path} is not a regular file: ${found.message}`);
  const kind = found.isDirectory() ? "a directory" : found.isFIFO() ? "a FIFO" : found.isSocket() ? "a socket" : "a device";
  return new Error(`snapshot path ${path} is not a regular file (it is ${kind})`);
}

function groupName(block: Uint8Array): string {
  const len = block[BLOCK_HEADER_BYTES]! | (block[BLOCK_HEADER_BYTES + 1]! << 8);
  return new TextDecoder().decode(block.subarray(BLOCK_HEADER_BYTES + 2, BLOCK_HEADER_BYTES + 2 + len));
}

/** syncDir makes a rename in `dir` durable; a file system that cannot fsync a directory is let be. */
async function syncDir(dir: string): Promise<void> {
  let d: FileHandle | undefined;
  try {
    d = await open(dir, "r");
    await d.sync();
  } catch {
    // The rename has happened; it is as durable as this file system allows.
  } finally {
    await d?.close().catch(() => {});
  }
}

async function exists(path: string): Promise<boolean> {
  return Bun.file(path).exists();
}

function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}
