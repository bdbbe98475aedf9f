/**
 * syncDir and syncDirSync make the renames in a directory durable: a rename changes the directory,
 * not the file, and until the directory is fsynced a power loss can undo it (the new snapshot
 * gone, or a snapshot moved aside as stale back in place and loaded at the next start). Each is
 * called after a rename the snapshot relies on: the new file over the old (snapshot.ts), a file
 * moved aside as corrupt or stale (moveAside in snapshot-load.ts), and the final snapshot a second
 * signal finds in place (final-snapshot.ts). A file system that cannot fsync a directory is let
 * be: the rename has happened, as durable as that file system allows.
 */
import { closeSync, constants, fsyncSync, openSync } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";

/** syncDir fsyncs directory `dir`, ignoring a failure (see the header). */
export async function syncDir(dir: string): Promise<void> {
  let d: FileHandle | undefined;
  try {
    d = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
    await d.sync();
  } catch {
    // As durable as this file system allows.
  } finally {
    await d?.close().catch(() => {});
  }
}

/** syncDirSync is syncDir for a process about to exit (moveAside, FinalSnapshot.abandon). */
export function syncDirSync(dir: string): void {
  let fd = -1;
  try {
    fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
    fsyncSync(fd);
  } catch {
    // As durable as this file system allows.
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}
