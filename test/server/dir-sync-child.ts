/**
 * One snapshot operation that renames a file, run in its own process by dir-sync.test.ts under
 * strace, which checks that the directory is fsynced after the rename.
 *
 *   bun dir-sync-child.ts write|retire|corrupt|abandon PATH
 *
 * write: a snapshot of one item. retire: the file at PATH moved aside as stale. corrupt: a load
 * of the (corrupt) file at PATH, which moves it aside. abandon: a final snapshot written, then
 * abandoned as a second signal would (after making `PATH.mark`, so the trace shows what follows).
 */
import { writeFileSync } from "node:fs";
import { Group } from "../../src/cluster/group.ts";
import { Groups } from "../../src/cluster/groups.ts";
import { FinalSnapshot } from "../../src/server/final-snapshot.ts";
import { Logger } from "../../src/server/log.ts";
import { Snapshotter } from "../../src/server/snapshot.ts";

const [mode, path] = [process.argv[2]!, process.argv[3]!];
const groups = new Groups();
const store = groups.add(new Group({ name: "kv", memory: 4 * 1024 * 1024 })).store;
const key = new TextEncoder().encode("k");
store.set(key, 0, 1, key, 0, 1, 0);
const logger = { info() {}, warn() {}, error() {} };
const snap = new Snapshotter({ path, groups, logger });
if (mode === "write") await snap.write();
else if (mode === "retire") snap.retire();
else if (mode === "corrupt") await snap.load();
else if (mode === "abandon") {
  const final = new FinalSnapshot(new Logger("error"));
  await final.write(snap);
  writeFileSync(`${path}.mark`, ""); // (its open is the mark in the trace)
  final.abandon(snap);
} else throw new Error(`unknown mode ${mode}`);
