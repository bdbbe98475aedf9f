/**
 * A snapshot lock's holder whose file system stops answering, run in its own process by
 * snapshot-lock.test.ts (its thread may stop until the file system answers again).
 *
 *   bun lock-touch-child.ts SNAPSHOT_PATH
 *
 * It takes the lock and prints `ready`; the parent then freezes the file system (`fsfreeze`: a
 * write waits until it is thawed, as on a network volume that stopped answering). 500 ms later
 * it touches the lock, as the holder does every 10 s, and prints `ticks N`: how many 10 ms
 * timers ran in the 300 ms after.
 */
import { Logger } from "../../src/server/log.ts";
import { SnapshotLock } from "../../src/server/snapshot-lock.ts";

const lock = new SnapshotLock(process.argv[2]!, new Logger("silent"));
lock.acquire();
process.stdout.write("ready\n");
setTimeout(() => {
  let ticks = 0;
  const timer = setInterval(() => ticks++, 10);
  void (lock as unknown as { touch(): Promise<void> }).touch();
  setTimeout(() => {
    clearInterval(timer);
    process.stdout.write(`ticks ${ticks}\n`);
  }, 300);
}, 500);
