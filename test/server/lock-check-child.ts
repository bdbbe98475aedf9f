/**
 * A snapshot writer whose lock stops answering reads, run in its own process by
 * snapshot-lock.test.ts (its thread may stop until the read is answered).
 *
 *   bun lock-check-child.ts SNAPSHOT_PATH
 *
 * It takes the lock and prints `ready`, then waits for a line on stdin: meanwhile the parent puts
 * a FIFO that no one writes in the lock's place, so a read of it waits, as a read on a network
 * volume that stopped answering does. It then starts a write, as its periodic timer would (the
 * write first checks that the lock is still this node's), and prints `ticks N`: how many 10 ms
 * timers ran in the 300 ms after.
 */
import { Group } from "../../src/cluster/group.ts";
import { Groups } from "../../src/cluster/groups.ts";
import { Logger } from "../../src/server/log.ts";
import { SnapshotLock } from "../../src/server/snapshot-lock.ts";
import { Snapshotter } from "../../src/server/snapshot.ts";

const path = process.argv[2]!;
const logger = new Logger("silent");
const lock = new SnapshotLock(path, logger);
lock.acquire();
const groups = new Groups();
groups.add(new Group({ name: "kv", memory: 4 * 1024 * 1024 }));
const snap = new Snapshotter({ path, groups, logger });
snap.lock = lock;
process.stdout.write("ready\n");
for await (const _ of Bun.stdin.stream()) break;
let ticks = 0;
const timer = setInterval(() => ticks++, 10);
snap.write().catch(() => {});
setTimeout(() => {
  clearInterval(timer);
  process.stdout.write(`ticks ${ticks}\n`);
  process.exit(0);
}, 300);
