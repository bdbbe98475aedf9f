/**
 * SnapshotLock keeps two nodes from using one snapshot path: each would load the other's items at
 * start and overwrite the other's file at shutdown, so whichever stopped last silently undid the
 * other (review: a rolling update on a shared volume).
 *
 * The lock is the file `${path}.lock`, made with O_EXCL, holding the holder's host and pid. The
 * holder touches it every LOCK_REFRESH_MS while it runs and removes it when it lets go. A lock
 * found at start is another node's, and the start is refused, unless it is stale:
 *  - not touched for LOCK_STALE_MS (its holder is gone, on this host or another: a crash leaves the
 *    file, and a restart within that time waits it out or removes the file);
 *  - written on this host by a process that is no longer running, or by this very pid (a
 *    container restarted with the same pid: that holder cannot be running beside us).
 * A stale lock is taken over, with a warning. One process may hold a path once (a second node in
 * the same process is refused like another process).
 */
import { closeSync, openSync, readFileSync, statSync, unlinkSync, utimesSync, writeSync } from "node:fs";
import { hostname } from "node:os";
import { ConfigError } from "./config.ts";
import type { Logger } from "./log.ts";

/** LOCK_REFRESH_MS: how often the holder touches its lock. */
export const LOCK_REFRESH_MS = 10_000;
/** LOCK_STALE_MS: a lock not touched for this long is its holder's no longer. */
export const LOCK_STALE_MS = 3 * LOCK_REFRESH_MS;

/** held: the lock files this process holds. */
const held = new Set<string>();

export class SnapshotLock {
  readonly file: string;
  private timer: ReturnType<typeof setInterval> | undefined;
  private owned = false;

  constructor(path: string, private readonly logger: Logger) {
    this.file = `${path}.lock`;
  }

  /**
   * unavailable is why no lock file could be made (a missing or read-only directory), if so: the
   * snapshot's own checks then refuse the start with a clearer message (snapshot-load.ts).
   */
  unavailable: string | undefined;

  /** acquire takes the lock, or throws ConfigError naming its holder; see `unavailable`. */
  acquire(): void {
    if (held.has(this.file)) throw new ConfigError(`--snapshot ${this.file.slice(0, -5)} is in use by another node of this process`);
    const made = this.create();
    if (made === undefined) return;
    if (!made) {
      const stale = this.staleReason();
      if (stale === undefined) {
        throw new ConfigError(
          `--snapshot ${this.file.slice(0, -5)} is in use by ${this.holder()} (its lock ${this.file} was touched in the last ` +
            `${LOCK_STALE_MS / 1000} s): two nodes on one snapshot would each undo the other's; if that node is gone, wait or remove the lock`,
        );
      }
      this.logger.warn("taking over a stale snapshot lock", { lock: this.file, holder: this.holder(), why: stale });
      try {
        unlinkSync(this.file);
      } catch {
        // (gone meanwhile: create below tells)
      }
      if (this.create() !== true) throw new ConfigError(`--snapshot ${this.file.slice(0, -5)}: cannot take its lock ${this.file}: ${this.unavailable ?? "another node took it just now"}`);
    }
    this.owned = true;
    held.add(this.file);
    this.timer = setInterval(() => this.touch(), LOCK_REFRESH_MS);
    this.timer.unref();
  }

  /** release removes the lock, if this node holds it (and it is still this node's file). */
  release(): void {
    if (!this.owned) return;
    this.owned = false;
    held.delete(this.file);
    clearInterval(this.timer);
    try {
      if (readFileSync(this.file, "utf8") === this.content()) unlinkSync(this.file);
    } catch {
      // gone already
    }
  }

  private content(): string {
    return `${hostname()} ${process.pid}\n`;
  }

  /** create makes the lock file with O_EXCL; false if one exists, undefined if it cannot be made (`unavailable`). */
  private create(): boolean | undefined {
    let fd: number;
    try {
      fd = openSync(this.file, "wx", 0o600);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "EEXIST") return false;
      this.unavailable = (e as Error).message;
      return undefined;
    }
    try {
      writeSync(fd, this.content());
    } finally {
      closeSync(fd);
    }
    return true;
  }

  private touch(): void {
    const now = new Date();
    try {
      utimesSync(this.file, now, now);
    } catch (e) {
      this.logger.warn("cannot touch the snapshot lock", { lock: this.file, error: String(e) });
    }
  }

  /** holder names who holds the lock: "host pid", as written, or what could be read. */
  private holder(): string {
    try {
      const text = readFileSync(this.file, "utf8").trim();
      return text === "" ? "an unknown node" : `process ${text.replace(" ", " pid ")}`;
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
    if (Date.now() - mtimeMs > LOCK_STALE_MS) return `not touched for ${Math.round((Date.now() - mtimeMs) / 1000)} s`;
    const [host, pidText] = text.trim().split(" ");
    if (host !== hostname()) return undefined; // another host's: its holder may run there until the lock goes stale
    const pid = Number(pidText);
    if (!Number.isInteger(pid) || pid <= 0) return "it names no process";
    if (pid === process.pid) return "written by this pid before (a restart)";
    try {
      process.kill(pid, 0);
      return undefined;
    } catch (e) {
      return (e as NodeJS.ErrnoException).code === "ESRCH" ? `process ${pid} is not running` : undefined;
    }
  }
}
