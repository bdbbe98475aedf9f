/**
 * SnapshotLock keeps two nodes from using one snapshot path: each would load the other's items at
 * start and overwrite the other's file at shutdown, so whichever stopped last silently undid the
 * other (review: a rolling update on a shared volume).
 *
 * The lock is the file `${path}.lock`, made with O_EXCL, holding the holder's host, pid and pid
 * namespace. The holder touches it every LOCK_REFRESH_MS while it runs and removes it when it
 * lets go. A lock found at start is another node's, and the start is refused, unless it is stale:
 *  - not touched for LOCK_STALE_MS (its holder is gone, on this host or another: a crash leaves the
 *    file, and a restart within that time waits it out or removes the file);
 *  - written on this host in this pid namespace by a process that is no longer running, or by
 *    this very pid (which this process is not using: see below). A pid says nothing across
 *    namespaces: every container's first process is pid 1, and two containers on a shared volume
 *    may share a host name too, so a lock of another namespace only goes stale by its age.
 * A stale lock is taken over, with a warning, by one starting node at a time: the taker holds
 * `${path}.lock.takeover` (O_EXCL; one older than LOCK_STALE_MS is a crashed taker's) while it
 * checks the lock again, removes it and makes its own. One process may hold a path once (a
 * second node of the same process is refused like another process's, whatever the spelling of
 * the path).
 */
import { closeSync, constants, fstatSync, lstatSync, openSync, readFileSync, readlinkSync, realpathSync, statSync, unlinkSync, writeSync } from "node:fs";
import { open as openFile, readFile, type FileHandle } from "node:fs/promises";
import { hostname } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { ConfigError } from "./config.ts";
import type { Logger } from "./log.ts";

/** LOCK_REFRESH_MS: how often the holder touches its lock. */
export const LOCK_REFRESH_MS = 10_000;
/** LOCK_STALE_MS: a lock not touched for this long is its holder's no longer. */
export const LOCK_STALE_MS = 3 * LOCK_REFRESH_MS;

/** held: the locks this process holds, by SnapshotLock.key. */
const held = new Map<string, SnapshotLock>();
/**
 * When the process exits another way than through the node's close (a signal while starting, a
 * fatal error: node.ts calls process.exit), its locks go with it: left, a restart was refused for
 * up to LOCK_STALE_MS in a new pid namespace (a container), or warned of a stale lock.
 */
let exitHookSet = false;
function releaseAllOnExit(): void {
  if (exitHookSet) return;
  exitHookSet = true;
  process.on("exit", () => {
    for (const lock of [...held.values()]) lock.release();
  });
}

/** PID_NAMESPACE names this process's pid namespace ("?" where /proc does not tell). */
const PID_NAMESPACE = ((): string => {
  try {
    return readlinkSync("/proc/self/ns/pid").replace(/\s/g, "");
  } catch {
    return "?";
  }
})();

/**
 * NEW_FILE opens a file the node makes beside the snapshot (its temporary file, the lock's time
 * probe): created exclusively, never through a symlink (one planted at the name had the file it
 * named overwritten or truncated: review). Opened with mode 0600.
 */
export const NEW_FILE = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

export class SnapshotLock {
  readonly file: string;
  private timer: ReturnType<typeof setInterval> | undefined;
  /** heldAs is the key under which this node holds the lock (`held`), "" while it holds none. */
  private heldAs = "";
  /** takenOver: the lock was found another node's; it is never made again then (`remade`). */
  private takenOver = false;
  /** touchedAt is when this node last touched (or made) its lock, in performance.now() ms. */
  private touchedAt = 0;
  /** touching: a touch is under way (`touch`). */
  private touching = false;

  constructor(private readonly path: string, private readonly logger: Logger) {
    this.file = `${path}.lock`;
  }

  /** key names the lock in this process's `held` whatever the path's spelling (./, symlinked directories). */
  private key(): string {
    try {
      return join(realpathSync(dirname(this.file)), basename(this.file));
    } catch {
      return resolve(this.file);
    }
  }

  /**
   * unavailable is why no lock file could be made (a missing or read-only directory), if so: the
   * snapshot's own checks then refuse the start with a clearer message (snapshot-load.ts).
   */
  unavailable: string | undefined;

  /** acquire takes the lock, or throws ConfigError naming its holder; see `unavailable`. */
  acquire(): void {
    const key = this.key();
    if (held.has(key)) throw new ConfigError(`--snapshot ${this.path} is in use by another node of this process`);
    const made = this.create(this.file);
    if (made === undefined) return;
    if (!made) this.takeOver();
    this.heldAs = key;
    this.touchedAt = performance.now();
    held.set(key, this);
    releaseAllOnExit();
    this.timer = setInterval(() => void this.touch(), LOCK_REFRESH_MS);
    this.timer.unref();
  }

  /**
   * takeOver replaces the lock found if it is stale (else throws ConfigError naming its holder),
   * holding the takeover lock meanwhile, so of nodes starting together one takes it.
   */
  private takeOver(): void {
    try {
      const st = lstatSync(this.file);
      if (!st.isFile() && !st.isSymbolicLink()) throw new ConfigError(`--snapshot ${this.path}: its lock ${this.file} is not a file: remove it`);
    } catch (e) {
      if (e instanceof ConfigError) throw e;
      // (gone meanwhile: taken over below)
    }
    const takeover = `${this.file}.takeover`;
    if (this.create(takeover) !== true) {
      let age = 0;
      try {
        age = this.fileSystemNow() - statSync(takeover).mtimeMs;
      } catch {
        // gone meanwhile: try once more below
      }
      // (One older than LOCK_STALE_MS, or ahead of the file system's clock by as much, is a crashed taker's.)
      if (Math.abs(age) <= LOCK_STALE_MS) throw new ConfigError(`--snapshot ${this.path}: another node is taking over its lock ${this.file} now`);
      try {
        unlinkSync(takeover); // a taker that crashed
      } catch {
        // (gone meanwhile)
      }
      if (this.create(takeover) !== true) throw new ConfigError(`--snapshot ${this.path}: another node is taking over its lock ${this.file} now`);
    }
    try {
      const stale = this.staleReason();
      if (stale === undefined) {
        throw new ConfigError(
          `--snapshot ${this.path} is in use by ${this.holder()} (its lock ${this.file} was touched in the last ` +
            `${LOCK_STALE_MS / 1000} s): two nodes on one snapshot would each undo the other's; if that node is gone, wait or remove the lock`,
        );
      }
      this.logger.warn("taking over a stale snapshot lock", { lock: this.file, holder: this.holder(), why: stale });
      try {
        unlinkSync(this.file);
      } catch {
        // (gone meanwhile)
      }
      if (this.create(this.file) !== true) throw new ConfigError(`--snapshot ${this.path}: cannot take its lock ${this.file}: ${this.unavailable ?? "another node took it just now"}`);
    } finally {
      try {
        unlinkSync(takeover);
      } catch {
        // (nothing to remove)
      }
    }
  }

  /**
   * stillMine tells whether this node may still write the snapshot: true unless it held the lock
   * and the file is now another node's. A node stopped past LOCK_STALE_MS can come back to find
   * its lock taken over; writing then would undo the node that took it. A lock removed is made
   * again (review: a node whose lock was deleted stopped writing, and the next start loaded the
   * snapshot it had left, older than writes it acknowledged since).
   */
  stillMine(): boolean {
    if (this.heldAs === "") return true;
    let found: string;
    try {
      found = readFileSync(this.file, "utf8");
    } catch (e) {
      return this.gone(e);
    }
    this.unreadable = undefined;
    return this.judge(found);
  }

  /**
   * stillMineAsync is stillMine off the node's thread (fs/promises), for the write a node makes
   * while it serves (Snapshotter.write): read synchronously, a lock on a volume that stopped
   * answering stopped the node at its next periodic write; now that write waits (and the ones
   * after it share it), as the touch does. The exit paths (abandon, the final write's retire,
   * release) keep the synchronous one: a process about to exit has nothing to serve meanwhile.
   */
  async stillMineAsync(): Promise<boolean> {
    if (this.heldAs === "") return true;
    let found: string;
    try {
      found = await readFile(this.file, "utf8");
    } catch (e) {
      return this.heldAs !== "" && this.gone(e);
    }
    this.unreadable = undefined;
    // Released while the read waited (a second signal's abandon): not this node's to write now
    // (review: the write went on, unlocked, and put back a snapshot the abandon had moved aside).
    return this.heldAs !== "" && this.judge(found);
  }

  /** holding tells whether this node holds the lock now (not before `acquire`, nor after `release`). */
  get holding(): boolean {
    return this.heldAs !== "";
  }

  /**
   * unreadable: why the last check could not read the lock (EIO, EMFILE; not ENOENT): its false knows not whose it
   * is, so a caller skips that write, not the later ones (review: one EMFILE stopped the periodic writes for good).
   */
  unreadable: string | undefined;

  /** judge tells whether the lock's content `found` is this node's, and notes a takeover if not. */
  private judge(found: string): boolean {
    if (found === this.content()) return true;
    this.takenOver = true;
    return false;
  }

  /** gone answers stillMine when the lock could not be read (`e`): removed, it is made again. */
  private gone(e: unknown): boolean {
    // Removed (not taken: a taker makes its own): made again, the snapshot is still this node's.
    if ((e as NodeJS.ErrnoException).code === "ENOENT") {
      this.unreadable = undefined;
      return this.remade();
    }
    this.unreadable = String(e);
    return false;
  }

  /** release removes the lock, if this node holds it (and it is still this node's file). */
  release(): void {
    if (this.heldAs === "") return;
    held.delete(this.heldAs);
    this.heldAs = "";
    clearInterval(this.timer);
    try {
      if (readFileSync(this.file, "utf8") === this.content()) unlinkSync(this.file);
    } catch {
      // gone already
    }
  }

  private content(): string {
    return `${hostname()} ${process.pid} ${PID_NAMESPACE}\n`;
  }

  /** create makes the lock file `file` with O_EXCL; false if one exists, undefined if it cannot be made (`unavailable`). */
  private create(file: string): boolean | undefined {
    let fd: number;
    try {
      fd = openSync(file, "wx", 0o600);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "EEXIST") return false;
      this.unavailable = (e as Error).message;
      return undefined;
    }
    try {
      writeSync(fd, this.content());
    } catch (e) {
      // (A disk full: an empty lock left behind would keep the next start out for LOCK_STALE_MS.)
      closeSync(fd);
      try {
        unlinkSync(file);
      } catch {
        // (gone already)
      }
      throw new ConfigError(`--snapshot ${this.path}: cannot write its lock ${file}: ${(e as Error).message}`);
    }
    closeSync(fd);
    return true;
  }

  /**
   * remade makes the lock again when it is gone (an operator or a cleaner of the directory
   * removed it while this node held it); false if another node's lock is there now.
   */
  private remade(): boolean {
    // Not once another node held it (it may have released it since: this node's snapshot is the
    // older), nor when this node went without touching it long enough for one to take it over
    // and release it unseen (a node paused past LOCK_STALE_MS).
    if (this.takenOver || performance.now() - this.touchedAt >= LOCK_STALE_MS) return false;
    try {
      const made = this.create(this.file);
      // There again: this node's own if another of its checks (a touch, a write's), its read
      // under way too, found it gone and made it first.
      if (made === false) return readFileSync(this.file, "utf8") === this.content();
      if (made !== true) return false;
    } catch {
      return false;
    }
    this.touchedAt = performance.now();
    this.logger.warn("the snapshot lock was removed while this node held it: made again", { lock: this.file });
    return true;
  }

  /**
   * touch rewrites the lock's own bytes in place: its time is then the file system's (a volume's
   * server, or this host's kernel), the clock `staleReason` reads it against, never a host's idea
   * of the time (review: a holder whose clock ran 40 s behind had its lock taken over, live).
   * A lock that is no longer this node's (removed, or another's) is left alone, and said so.
   * Off the node's thread (fs/promises), one at a time: done synchronously, a network volume that
   * stopped answering stopped the node from serving at its next touch (review), where now only
   * the touch waits, and the touches after it are skipped until it ends.
   */
  private async touch(): Promise<void> {
    if (this.touching) return;
    this.touching = true;
    const mine = this.content();
    let fh: FileHandle | undefined;
    try {
      fh = await openFile(this.file, "r+");
      const found = Buffer.alloc(mine.length + 1);
      const { bytesRead } = await fh.read(found, 0, found.length, 0);
      if (this.heldAs === "") return; // released meanwhile
      if (found.toString("utf8", 0, bytesRead) !== mine) {
        this.takenOver = true;
        this.logger.error("the snapshot lock is another node's now: this node writes the snapshot no more", { lock: this.file, holder: this.holder() });
        clearInterval(this.timer);
        return;
      }
      await fh.write(mine, 0);
      this.touchedAt = performance.now();
    } catch (e) {
      if (this.heldAs === "") return;
      if ((e as NodeJS.ErrnoException).code === "ENOENT" && this.remade()) return;
      this.logger.warn("cannot touch the snapshot lock", { lock: this.file, error: String(e) });
    } finally {
      await fh?.close().catch(() => {});
      this.touching = false;
    }
  }

  /**
   * fileSystemNow is the time of the lock's file system now: the time of a file made beside it
   * (Date.now() where none can be made). Made exclusively, never through a symlink: written
   * with writeFileSync, a link planted at its name had the file it named truncated (review).
   */
  private fileSystemNow(): number {
    const probe = `${this.file}.now-${process.pid}`;
    try {
      try {
        unlinkSync(probe); // a leftover (a crash here), or a link: the link itself goes
      } catch {
        // (none)
      }
      const fd = openSync(probe, NEW_FILE, 0o600);
      try {
        return fstatSync(fd).mtimeMs;
      } finally {
        closeSync(fd);
        unlinkSync(probe);
      }
    } catch {
      return Date.now();
    }
  }

  /** holder names who holds the lock ("process <pid> on <host> (<pid namespace>)"), as far as it can be read. */
  private holder(): string {
    try {
      const [host, pid, namespace] = readFileSync(this.file, "utf8").trim().split(" ");
      return host === undefined || host === "" ? "an unknown node" : `process ${pid ?? "?"} on ${host}${namespace === undefined ? "" : ` (${namespace})`}`;
    } catch {
      return "an unknown node";
    }
  }

  /** staleReason says why the lock found is no one's now, or undefined if its holder may run. */
  private staleReason(): string | undefined {
    let mtimeMs: number;
    let text: string;
    try {
      mtimeMs = statSync(this.file).mtimeMs;
      text = readFileSync(this.file, "utf8");
    } catch {
      return "it could not be read";
    }
    // Its age, by the file system's clock (see `touch`): hosts sharing a volume may disagree on the time.
    const age = this.fileSystemNow() - mtimeMs;
    if (age > LOCK_STALE_MS) return `not touched for ${Math.round(age / 1000)} s`;
    // (A holder's lock is never ahead of the file system's clock: set by hand, or by a clock set back.)
    if (age < -LOCK_STALE_MS) return `its time is ${Math.round(-age / 1000)} s ahead of the file system's`;
    const [host, pidText, namespace] = text.trim().split(" ");
    // Another host's, or another pid namespace's (a container's): its holder may run there until the lock goes stale.
    if (host !== hostname() || namespace !== PID_NAMESPACE || PID_NAMESPACE === "?") return undefined;
    const pid = Number(pidText);
    if (!Number.isInteger(pid) || pid <= 0) return "it names no process";
    if (pid === process.pid) return "written by this pid before (a restart)"; // (this process holds no lock on it: `held`)
    try {
      process.kill(pid, 0);
      return undefined;
    } catch (e) {
      return (e as NodeJS.ErrnoException).code === "ESRCH" ? `process ${pid} is not running` : undefined;
    }
  }
}
