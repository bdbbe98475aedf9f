/**
 * Loading a snapshot (Snapshotter.load; the format in snapshot-format.ts, the reads in
 * snapshot-stream.ts): checks of the path and its directory, the two passes (verify, then apply),
 * progress lines, setting a corrupt file aside, and removing temporary files of stopped writers.
 * What it skips and refuses is in snapshot.ts's header.
 */
import { errorText } from "../protocol/errors.ts";
import { constants, existsSync, renameSync, type Stats } from "node:fs";
import { open, readdir, stat, unlink, type FileHandle } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import type { Group } from "../cluster/group.ts";
import type { Groups } from "../cluster/groups.ts";
import { fileKind } from "../cluster/membership.ts";
import { CHUNK_HEADER } from "../store/slab-allocator.ts";
import { SET_OK } from "../store/store.ts";
import { syncDirSync } from "./dir-sync.ts";
import { BLOCK_HEADER_BYTES, maxBlockBytes } from "./snapshot-format.ts";
import { scanSnapshot } from "./snapshot-stream.ts";
import type { LoadResult, SnapshotLogger } from "./snapshot.ts";

/** LoadOptions is what a load needs of its Snapshotter. */
export interface LoadOptions {
  path: string;
  groups: Groups;
  clock: () => number;
  logger: SnapshotLogger;
  sliceMs: number;
  maxKeyBytes: number;
  /** writing tells whether a write of this Snapshotter is under way (its temp file is not stale). */
  writing: () => boolean;
}

/**
 * MIN_BLOCK_ITEM_BYTES: blocks are read if made of items up to this size (key and value) whatever
 * the node's --max-item-size, which bounds a hostile file's one allocation at ~65 MiB. So a file
 * written with items up to 64 MiB loads into a node with a lower --max-item-size (its items too
 * large now refused one by one); one holding a larger item needs a node whose limit allows it.
 */
export const MIN_BLOCK_ITEM_BYTES = 64 * 1024 * 1024;

/** PROGRESS_EVERY_MS: the load logs progress at most this often. */
const PROGRESS_EVERY_MS = 1000;

/** loadSnapshot fills the groups from the snapshot at `path` (see snapshot.ts's header for what it skips). */
export async function loadSnapshot(o: LoadOptions): Promise<LoadResult> {
  const t0 = performance.now();
  // The file's expiry times are wall times: each store's clock against the wall now, once.
  const wall = o.clock();
  const fromWall = new Map<Group, number>(o.groups.all().map((g) => [g, g.store.clock() - wall]));
  const result: LoadResult = { items: 0, skippedExpired: 0, skippedUnknownGroup: 0, ms: 0, status: "loaded" };
  await removeStaleTemps(o);
  await checkWritable(o);
  // Not a file (a directory named by mistake, a FIFO): refused, never moved aside like a
  // corrupt snapshot, and the node does not start. Checked before the open, which would wait
  // for a FIFO's writer; the open does not block either (should the path change in between),
  // and the file it opened is checked again.
  const found = await stat(o.path).catch((e: unknown) => e as NodeJS.ErrnoException);
  if (found instanceof Error) {
    if (found.code === "ENOENT") {
      o.logger.info("no snapshot to load; starting empty", { path: o.path });
      return { ...result, status: "missing", ms: performance.now() - t0 };
    }
    return setAside(o, found, t0);
  }
  if (!found.isFile()) throw notAFile(o.path, found);
  let fh: FileHandle;
  try {
    fh = await open(o.path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (e) {
    return setAside(o, e, t0);
  }
  const opened = await fh.stat().catch((e: unknown) => e as Error);
  if (opened instanceof Error || !opened.isFile()) {
    await fh.close().catch(() => {});
    throw notAFile(o.path, opened);
  }
  const touched = new Set<Group>();
  try {
    const size = opened.size;
    const progress = progressOf(o, size);
    // The store's max item size counts the chunk header along with the key and the value. At
    // least MIN_BLOCK_ITEM_BYTES: a node restarted with a lower --max-item-size still reads a
    // file written before (its items too large now are refused one by one, not the whole file).
    const largest = Math.max(MIN_BLOCK_ITEM_BYTES, ...o.groups.all().map((g) => g.store.classes.maxChunk - CHUNK_HEADER));
    const maxBlock = maxBlockBytes(largest);
    const total = await scanSnapshot(fh, size, maxBlock, o.sliceMs, (_, end, n) => progress("verify", end, n, 0));
    const unknown = new Set<string>();
    let refused = 0;
    let longKeys = 0;
    let applied = 0;
    // (Collision evictions too: a file written before the index's bound on keys sharing a hash.)
    const evictions = (): number => o.groups.all().reduce((n, g) => n + g.store.counters.evictions + g.store.counters.collisionEvictions, 0);
    const evictedBefore = evictions();
    const held = (): number => o.groups.all().reduce((n, g) => n + g.store.size, 0);
    const heldBefore = held();
    await scanSnapshot(fh, size, maxBlock, o.sliceMs, (block, end, n) => {
      const a = applyBlock(block, o.groups, o.maxKeyBytes, fromWall, result);
      if (a === undefined) unknown.add(groupName(block));
      else {
        touched.add(a.group);
        refused += a.refused;
        longKeys += a.longKeys;
      }
      progress("apply", end, (applied += n), total);
    });
    await fh.close();
    if (unknown.size > 0) o.logger.warn("snapshot items of unknown groups skipped", { groups: [...unknown], items: result.skippedUnknownGroup });
    if (refused > 0) o.logger.warn("snapshot items refused by the store (too large or bad TTL)", { items: refused });
    if (longKeys > 0) o.logger.warn("snapshot items with keys over the max key size skipped", { items: longKeys, maxKeyBytes: o.maxKeyBytes });
    // What the load leaves is what the groups gained, not the records stored: a fuzzy write may
    // catch a key twice (deleted behind its walk, set again ahead of it), and the later record
    // replaces the earlier (review: both were counted). A group smaller than when the snapshot
    // was written keeps what fits: later items evict earlier ones, and the warning counts them.
    result.items = held() - heldBefore;
    const evicted = evictions() - evictedBefore;
    if (evicted > 0) {
      o.logger.warn("snapshot items evicted while loading: the groups hold less than the snapshot", { evicted, kept: result.items });
    }
    result.ms = performance.now() - t0;
    o.logger.info("snapshot loaded", { path: o.path, ...result, ms: round(result.ms) });
    return result;
  } catch (e) {
    await fh.close().catch(() => {});
    for (const g of touched) g.store.clear();
    return setAside(o, e, t0);
  }
}

/**
 * checkWritable throws unless a new file can be made next to `path`: otherwise every write would
 * fail, and the node exit at shutdown with the data lost. It makes and removes a file of a name
 * no writer uses (an existing file proves nothing: a temporary file a crashed writer left may
 * still be there in a directory that is read-only now).
 */
async function checkWritable(o: LoadOptions): Promise<void> {
  const probe = `${o.path}.probe-${process.pid}-${crypto.randomUUID()}`;
  try {
    await (await open(probe, "wx")).close();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === "ENOENT" ? "does not exist" : `is not writable (${errorText(e)})`;
    throw new Error(`snapshot directory ${dirname(o.path)} ${why}: no snapshot could be written`);
  }
  await unlink(probe).catch(() => {});
}

/**
 * progress returns the load's progress reporter: called after each block with the phase's
 * records so far, it logs a line at most every PROGRESS_EVERY_MS of `clock`.
 */
function progressOf(o: LoadOptions, size: number): (phase: "verify" | "apply", end: number, records: number, total: number) => void {
  let phaseRecords = 0;
  let start = o.clock();
  let lastLog = start;
  let current = "verify";
  return (phase, end, records, total) => {
    const now = o.clock();
    if (phase !== current) {
      current = phase;
      start = lastLog = now;
      phaseRecords = 0;
      return;
    }
    phaseRecords = phase === "verify" ? phaseRecords + records : records;
    if (now - lastLog < PROGRESS_EVERY_MS) return;
    lastLog = now;
    o.logger.info("snapshot loading", {
      phase,
      percent: Math.floor((end / size) * 100),
      items: phaseRecords,
      of: phase === "apply" ? total : undefined,
      itemsPerSec: Math.round((phaseRecords * 1000) / Math.max(1, now - start)),
    });
  };
}

/**
 * moveAside renames the file at `path` to `${path}.${kind}-<ms>` (with `-<n>` added rather than
 * over an earlier one) and returns the new name; it is never deleted. The directory is fsynced
 * after the rename: a stale snapshot put back by a power loss would be loaded at the next start.
 * Synchronous: a process about to exit uses it too (CacheNode.abandonSnapshot).
 */
export function moveAside(path: string, kind: string, clock: () => number): string {
  const ms = Math.floor(clock());
  let aside = `${path}.${kind}-${ms}`;
  for (let n = 1; existsSync(aside); n++) aside = `${path}.${kind}-${ms}-${n}`;
  renameSync(path, aside);
  syncDirSync(dirname(path));
  return aside;
}

/** setAside logs why the snapshot cannot be used and renames it out of the way. */
async function setAside(o: LoadOptions, cause: unknown, t0: number): Promise<LoadResult> {
  const reason = errorText(cause);
  try {
    const aside = moveAside(o.path, "corrupt", o.clock);
    o.logger.error("snapshot is corrupt or unreadable; moved aside, starting empty", { path: o.path, movedTo: aside, reason });
  } catch (e) {
    o.logger.error("snapshot is corrupt or unreadable and could not be moved aside; starting empty", { path: o.path, reason, renameError: String(e) });
  }
  return { items: 0, skippedExpired: 0, skippedUnknownGroup: 0, status: "corrupt", ms: performance.now() - t0 };
}

/**
 * removeStaleTemps deletes `${path}.tmp-<pid>` files left by a writer that died: its pid is no
 * longer running, or it is ours (a previous life of this node under a reused pid, e.g. pid 1 in
 * a container) while we are not writing.
 */
async function removeStaleTemps(o: LoadOptions): Promise<void> {
  const dir = dirname(o.path);
  const prefix = `${basename(o.path)}.tmp-`;
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
    const stale = pid === process.pid ? !o.writing() : !running(pid);
    if (!stale) continue;
    const removed = await unlink(join(dir, name)).then(() => true, (e: unknown) => errorText(e));
    if (removed === true) o.logger.info("removed an unfinished snapshot left by a stopped writer", { file: join(dir, name) });
    else o.logger.warn("could not remove an unfinished snapshot left by a stopped writer", { file: join(dir, name), error: removed });
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
function applyBlock(block: Uint8Array, groups: Groups, maxKeyBytes: number, fromWall: Map<Group, number>, result: LoadResult): Applied | undefined {
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
  const shift = fromWall.get(group) ?? 0;
  let refused = 0;
  let longKeys = 0;
  let p = BLOCK_HEADER_BYTES + 2 + nameLen;
  for (let r = 0; r < records; r++) {
    const exp = dv.getFloat64(p, true) + shift;
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
    if (store.set(block, keyOff, keyLen, block, keyOff + keyLen, valLen, ttl) !== SET_OK) refused++;
  }
  return { group, refused, longKeys };
}

/** notAFile is the error for a snapshot path that names something other than a regular file. */
function notAFile(path: string, found: Stats | Error): Error {
  if (found instanceof Error) return new Error(`snapshot path ${path} is not a regular file: ${found.message}`);
  return new Error(`snapshot path ${path} is not a regular file (it is ${fileKind(found)})`);
}

function groupName(block: Uint8Array): string {
  const len = block[BLOCK_HEADER_BYTES]! | (block[BLOCK_HEADER_BYTES + 1]! << 8);
  return new TextDecoder().decode(block.subarray(BLOCK_HEADER_BYTES + 2, BLOCK_HEADER_BYTES + 2 + len));
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
