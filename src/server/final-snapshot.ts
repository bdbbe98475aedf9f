/**
 * FinalSnapshot is how a node's snapshot ends: one write of the state the node closes with
 * (`write`, from CacheNode.close), or `abandon` for a process that exits before that write is done
 * (a second signal). A snapshot on disk that lacks the writes taken since it is moved aside (to
 * `.stale-<ms>`), so the next start is empty rather than stale; one that another node has taken
 * (its lock) is left as it is. A lock that cannot be read then (EIO, EMFILE) proves neither: the
 * snapshot is not written over (it may be a new owner's: the lock is there to stop that), nor
 * left (it may be this node's, stale), but moved aside as a stale one is. It keeps the count of
 * snapshot writes done when the final one began, which tells a final snapshot already in place
 * from a stale one.
 */
import { dirname } from "node:path";
import { syncDirSync } from "./dir-sync.ts";
import type { Logger } from "./log.ts";
import type { Snapshotter } from "./snapshot.ts";

export class FinalSnapshot {
  /** failed: `write` could not write the final snapshot (the old one is moved aside). */
  failed = false;
  /** writesBefore: the snapshot writes done when the final one began (-1: not begun). */
  private writesBefore = -1;
  private readonly logger: Logger;

  constructor(logger: Logger) {
    this.logger = logger;
  }

  /**
   * abandon is for a process that exits before `write` (CacheNode.close) has written the final
   * snapshot (a second signal): a write under way is abandoned, its temporary file removed; the
   * snapshot on disk lacks the writes taken since it, so it is moved aside now (synchronously, to
   * `.stale-<ms>`) and the next start is empty rather than stale. Returns where it went, or
   * undefined (no snapshot, none on disk, or the final write already done).
   */
  abandon(s: Snapshotter | undefined): string | undefined {
    if (s === undefined) return undefined;
    s.abandon();
    // The final snapshot is in place (renamed, its directory maybe not fsynced yet: the exit
    // would not wait for that): it is the current one, made durable here.
    if (this.writesBefore >= 0 && s.counters.writes > this.writesBefore) {
      syncDirSync(dirname(s.path));
      return undefined;
    }
    const movedTo = this.retire(s, "exiting before the final snapshot");
    s.lock?.release();
    return movedTo;
  }

  /**
   * retire moves aside the snapshot on disk, which lacks the writes taken since it
   * (`why`: the final one was not written, `failure` its write's error if it failed), and says
   * so in one line; returns where it went, if anywhere.
   */
  private retire(s: Snapshotter, why: string, failure?: unknown): string | undefined {
    const fields: Record<string, unknown> = { path: s.path, ...(failure === undefined ? {} : { error: String(failure) }) };
    let moved = `${why}: the previous one lacks the writes taken since, so it is moved aside and the next start is empty`;
    if (s.lock !== undefined && !s.lock.stillMine()) {
      if (s.lock.unreadable === undefined) {
        this.logger.error(`${why}: the snapshot is another node's now (it took the lock), so it is left as it is`, fields);
        return undefined;
      }
      // Whose the snapshot is, unknown (EIO, EMFILE). Written over, a new owner's would be undone
      // (what the lock is for); left, this node's own would come back at the next start without
      // the writes taken since. Moved aside, a new owner's is missing only until it writes again.
      moved = `${why}: the snapshot lock could not be read, so whose the snapshot is now is unknown: it is not written over, and as it may be this node's, lacking the writes taken since, it is moved aside and the next start is empty`;
      fields.lockError = s.lock.unreadable;
    }
    try {
      const movedTo = s.retire();
      if (movedTo !== undefined) this.logger.error(moved, { ...fields, movedTo });
      else if (failure !== undefined) this.logger.error(`${why}; there is no previous one: the next start is empty`, fields);
      return movedTo;
    } catch (e) {
      this.logger.error(`${why}, and the previous one, which lacks the writes taken since, could not be moved aside: remove it before the next start`, { ...fields, moveError: String(e) });
      return undefined;
    }
  }

  /**
   * write stops the periodic writes and saves the state the node closes with. When
   * that fails, the previous snapshot lacks the writes taken since it: it is moved aside (the next
   * start is empty rather than stale) and `failed` is set (node.ts exits 1).
   */
  async write(s: Snapshotter | undefined): Promise<void> {
    if (s === undefined) return;
    s.stop();
    await s.settled(); // a periodic write still running ends first …
    this.writesBefore = s.counters.writes;
    try {
      await s.write(true); // … then one write of the final state (it logs its success; a failure is told below)
    } catch (e) {
      this.failed = true;
      this.retire(s, "the final snapshot failed", e);
    }
    s.lock?.release();
  }
}
