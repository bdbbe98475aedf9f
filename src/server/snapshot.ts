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
 * and one after. Each item in it is intact (its key, value and expiry were copied in one slice),
 * and an item held throughout is in it: the store's ids are pinned while it is walked (`pinIds`),
 * so a shrink of its item table, which gives items lower ids, cannot move one past the walk.
 * Items are written coldest first (snapshot-order.ts: a walk to count their ages, then one walk
 * per age band), so the load, which sets them in file order, rebuilds the LRU order: the coldest
 * are evicted first after a restart, and a node restarted with less memory keeps the hottest.
 * Only the last band's walk advances the pin: an earlier one is followed by another from id 0.
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
 * Expiry is judged by each store's own clock, the domain its expiry times are in; in the file they
 * are wall times (`clock`, wall ms, read against each store's clock once a group when written, once
 * a load when read). `clock` also names the moved-aside file, stamps the header and paces the
 * progress line. A write's slices and duration are timed by `now` (performance.now unless a test
 * moves it), a load's by performance.now().
 *
 * `load` refuses (throws, so the node does not start) a path that is not a regular file (a
 * directory, or a FIFO whose open would wait for a writer) and a directory where no snapshot can
 * be written (missing, or read-only: each write would fail, and the data be lost at shutdown).
 */
import { unlinkSync } from "node:fs";
import { open, rename, unlink, type FileHandle } from "node:fs/promises";
import { dirname } from "node:path";
import { NEW_FILE, type SnapshotLock } from "./snapshot-lock.ts";
import type { Group } from "../cluster/group.ts";
import type { Groups } from "../cluster/groups.ts";
import { DEFAULT_MAX_KEY_BYTES } from "../protocol/limits.ts";
import { CHUNK_HEADER } from "../store/slab-allocator.ts";
import type { IdPin } from "../store/table-shrink.ts";
import { syncDir } from "./dir-sync.ts";
import { BlockWriter, encodeHeader, encodeTrailer } from "./snapshot-format.ts";
import { loadSnapshot, moveAside } from "./snapshot-load.ts";
import { RecencyOrder } from "./snapshot-order.ts";
import { SnapshotOut } from "./snapshot-stream.ts";

export { MIN_BLOCK_ITEM_BYTES } from "./snapshot-load.ts";

export interface SnapshotLogger {
  info(msg: string, f?: Record<string, unknown>): void;
  warn(msg: string, f?: Record<string, unknown>): void;
  error(msg: string, f?: Record<string, unknown>): void;
}
export interface SnapshotResult { items: number; bytes: number; ms: number; worstPauseMs: number }
export interface LoadResult {
  /** items is how many items the load added to the groups (a key in the file twice counts once; less those evicted by later ones). */
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
  /** now is the monotonic ms clock of a write's slices and duration (default performance.now; tests move it). */
  now?: () => number;
}

/** SnapshotCounters: the writes of this node's life (the admin port's `mybuncache_snapshot_*`). */
export interface SnapshotCounters {
  writes: number; // snapshots written (renamed into place)
  failures: number; // writes that failed (the previous snapshot kept)
  lastSuccessMs: number; // wall time of the last write that succeeded (0: none yet)
}

export class Snapshotter {
  /** lock, when set, is this node's hold on the path (snapshot-lock.ts), let go after the final write. */
  lock: SnapshotLock | undefined;
  readonly path: string;
  readonly counters: SnapshotCounters = { writes: 0, failures: 0, lastSuccessMs: 0 };
  private readonly groups: Groups;
  private readonly clock: () => number;
  private readonly logger: SnapshotLogger;
  private readonly sliceMs: number;
  private readonly maxKeyBytes: number;
  private readonly now: () => number;
  private writing: Promise<SnapshotResult> | undefined;
  private timer: ReturnType<typeof setInterval> | undefined;
  /** writers are the two block buffers every write reuses. */
  private readonly writers: [BlockWriter, BlockWriter] = [new BlockWriter(), new BlockWriter()];
  /** order puts each group's items coldest first (snapshot-order.ts). */
  private readonly order = new RecencyOrder();

  constructor(opts: SnapshotterOptions) {
    this.path = opts.path;
    this.groups = opts.groups;
    this.clock = opts.clock ?? Date.now;
    this.logger = opts.logger;
    this.sliceMs = opts.sliceMs ?? 10;
    this.maxKeyBytes = opts.maxKeyBytes ?? DEFAULT_MAX_KEY_BYTES;
    this.now = opts.now ?? (() => performance.now());
  }

  /**
   * write snapshots every group's main store; a call while a write runs returns that write. A
   * failure is logged as keeping the previous snapshot, which it does, unless `final`: the
   * caller (CacheNode's last write at shutdown) moves the previous one aside, and says so and
   * why in one line (the write's error with it).
   */
  write(final = false): Promise<SnapshotResult> {
    if (this.writing !== undefined) return this.writing;
    const p = this.checkedWrite(final).finally(() => {
      this.writing = undefined;
    });
    this.writing = p;
    return p;
  }

  /**
   * checkedWrite writes unless the lock is another node's now (this node stopped past its
   * staleness and it was taken over): the file is that node's then. The lock is read off the
   * node's thread (SnapshotLock.stillMineAsync): a volume that stopped answering holds the write.
   */
  private async checkedWrite(final: boolean): Promise<SnapshotResult> {
    const lock = this.lock;
    if (lock !== undefined && !(await lock.stillMineAsync())) {
      if (!lock.holding) throw new Error(`not writing ${this.path}: its lock was released (the node is exiting)`);
      if (lock.unreadable !== undefined) {
        // Whose the lock is, unknown (EIO, EMFILE): this write is skipped, not the next ones.
        this.counters.failures++;
        if (!final) this.logger.error("snapshot write skipped: its lock could not be read; the previous snapshot is kept", { path: this.path, error: lock.unreadable });
        throw new Error(`not writing ${this.path}: its lock could not be read (${lock.unreadable})`);
      }
      this.stop();
      this.logger.error("snapshot write refused: the snapshot lock is another node's now", { path: this.path });
      throw new Error(`not writing ${this.path}: its lock is another node's now`);
    }
    return this.writeOnce(final);
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

  /**
   * abandon is for a process about to exit, a write perhaps under way (a second signal): it stops
   * the periodic writes and removes the temporary file of a write it has under way, which the exit would leave until
   * the next start (as Redis removes its temporary RDB file on a second SIGINT). Synchronous.
   */
  abandon(): void {
    this.stop();
    // Only a write of this Snapshotter's own, and while the file is still this node's: another
    // node on the same path may write under the same name (both pid 1 in their containers).
    if (this.writing === undefined || (this.lock !== undefined && !this.lock.stillMine())) return;
    try {
      unlinkSync(this.tmp);
    } catch {
      // None (no write ran), or it cannot be removed: the next start removes it (snapshot-load.ts).
    }
  }

  [Symbol.dispose](): void {
    this.stop();
  }

  /** tmp is where this process writes a snapshot before renaming it over `path`. */
  private get tmp(): string {
    return `${this.path}.tmp-${process.pid}`;
  }

  private async writeOnce(final: boolean): Promise<SnapshotResult> {
    const t0 = this.now();
    const tmp = this.tmp;
    let fh: FileHandle | undefined;
    try {
      fh = await createTemp(tmp);
      const out = new SnapshotOut(fh, this.writers, this.now);
      await out.emit(encodeHeader(this.clock()));
      const items = await this.writeGroups(out);
      await out.emit(encodeTrailer(out.blocks, items, out.fileCrc), false);
      await out.drain();
      await fh.sync();
      await fh.close();
      fh = undefined;
      await rename(tmp, this.path);
      this.counters.writes++; // in place: what a restart loads now (CacheNode.abandonSnapshot)
      this.counters.lastSuccessMs = this.clock();
      await syncDir(dirname(this.path));
      const result = { items, bytes: out.pos, ms: this.now() - t0, worstPauseMs: out.worstPauseMs };
      this.logger.info("snapshot written", { path: this.path, ...result, ms: round(result.ms), worstPauseMs: round(result.worstPauseMs) });
      return result;
    } catch (e) {
      await fh?.close().catch(() => {});
      await unlink(tmp).catch(() => {});
      this.counters.failures++;
      if (!final) this.logger.error("snapshot write failed; the previous snapshot is kept", { path: this.path, error: String(e) });
      throw e;
    } finally {
      // (A write still in flight after a failure holds a view of the old buffer, not the writer.)
      for (const w of this.writers) w.shrink();
    }
  }

  /** writeGroups streams every group's live items as blocks and returns how many it wrote. */
  private async writeGroups(out: SnapshotOut): Promise<number> {
    let count = 0;
    for (const group of this.groups.all()) {
      // Pinned, no item moves from an id the walk has not passed to one it has (a shrink of the
      // item table moves only items it has passed: `writeGroup` tells it how far it is).
      const pin = group.store.pinIds();
      try {
        count += await this.writeGroup(out, group, pin);
      } finally {
        group.store.unpinIds(pin);
      }
    }
    return count;
  }

  /**
   * writeGroup streams one group's live items as blocks, coldest first (snapshot-order.ts: a walk
   * over the ids to count their ages, then one per age band), and returns how many it wrote.
   */
  private async writeGroup(out: SnapshotOut, group: Group, pin: IdPin): Promise<number> {
    const store = group.store;
    const order = this.order;
    order.begin(store.accessTick, store.items.cap);
    try {
      await this.walk(out, group, pin, -1);
      order.split();
      let count = 0;
      for (let band = 0; band < order.bands; band++) count += await this.walk(out, group, pin, band);
      return count;
    } finally {
      order.end();
    }
  }

  /**
   * walk goes over a group's ids once, in slices: with `band` -1 it counts the live items' ages
   * (RecencyOrder.count), else it writes the items of that band (RecencyOrder.first, due) and
   * returns how many. Only the last band's walk tells the pin how far it is: an item moved by a table
   * shrink goes to a lower id, which an earlier band's walk would not see again, nor the next
   * one if it had passed it already.
   */
  private async walk(out: SnapshotOut, group: Group, pin: IdPin, band: number): Promise<number> {
    let count = 0;
    const store = group.store;
    const items = store.items;
    const order = this.order;
    const last = band === order.bands - 1;
    // Expiry times go in the file as wall time: the store's clock is monotonic, started at the
    // wall time of its process's start, which may have been off (a process started before NTP
    // set the time); the next process reads them against the wall time at its own start.
    const toWall = this.clock() - store.clock();
    // The group's block runs on from one band's walk to the next (out.writer() is the one not in
    // flight: the one filling), so the bands make no more blocks than one walk did.
    const writing = band >= 0;
    let w = out.writer();
    if (band === 0) w.begin(group.nameBytes);
    let id = 0;
    while (id < items.cap) {
      // One slice. The table may have grown since the last one (pinned: ids do not move), and pages
      // and records are read through the store's arrays each time, never kept across the await below.
      const cap = items.cap;
      const pages = store.slab.pages;
      const words = items.w;
      const now = store.clock();
      const deadline = out.turnStart + this.sliceMs; // (writes waited for since then count: see turnStart)
      let n = 0;
      while (id < cap) {
        if ((band <= 0 || order.due(id, band)) && items.isLive(id) && !items.isNegative(id)) {
          const exp = items.expiry(id);
          if (exp > now) {
            if (band < 0) order.count(words, id);
            else if (band > 0 || order.first(words, id)) {
              w.add(exp + toWall, pages[items.page(id)]!, items.off(id) + CHUNK_HEADER, items.keyLen(id), items.valLen(id));
              count++;
            }
          }
        }
        id++;
        if ((writing && w.full()) || ((++n & 63) === 0 && this.now() >= deadline)) break;
      }
      if (last) pin.passed = id; // (read again at the next slice: the ids it passed may move now)
      if (writing && w.full()) {
        await out.emitBlock(w);
        w = out.writer();
        w.begin(group.nameBytes);
      }
      if (this.now() >= deadline) await out.yieldTurn();
    }
    if (last && w.records > 0) await out.emitBlock(w);
    return count;
  }

  /**
   * retire moves the snapshot at `path` aside (to `${path}.stale-<ms>`) and returns where, or
   * undefined when there is none: the node's final write failed, so it lacks the writes taken
   * since, and loaded at the next start it would bring back the values they replaced.
   * Synchronous, for a process about to exit (CacheNode.abandonSnapshot).
   */
  retire(): string | undefined {
    try {
      return moveAside(this.path, "stale", this.clock);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw e;
    }
  }

  /** load fills the groups from the snapshot at `path`; see the header and snapshot-load.ts. */
  load(): Promise<LoadResult> {
    return loadSnapshot({
      path: this.path, groups: this.groups, clock: this.clock, logger: this.logger, sliceMs: this.sliceMs,
      maxKeyBytes: this.maxKeyBytes, writing: () => this.writing !== undefined,
    });
  }
}

/**
 * createTemp makes `tmp` anew, mode 0600 (only the node's user may read it: it holds every value,
 * and a node may require a token). A leftover of the same name (a crashed life of this pid) is
 * removed first, and the create is exclusive: a symlink planted at the name (by anyone who can
 * write the directory, which pids make easy to guess) is never followed. Opened with "w", it was:
 * the file it named was truncated, filled with the cache and chmodded, and the link renamed over
 * the snapshot. A name taken again between the unlink and the open fails this write (EEXIST).
 */
async function createTemp(tmp: string): Promise<FileHandle> {
  await unlink(tmp).catch(() => {}); // (removes a link itself, never what it names)
  return open(tmp, NEW_FILE, 0o600);
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}
