/**
 * loader-worker is the entry of every LoaderPool worker thread: it imports the user's loaders
 * module once, and answers each task `{ group, key }` by calling `module[group](key)`.
 *
 * The thread protocol (LoadTask in, LoadReply out) keeps three things apart:
 *  - a value (`string`, `Uint8Array`, or `null` for "not found") is returned as is;
 *  - a loader's own failure (it throws or rejects, or returns a value of the wrong type) is
 *    returned as a LoadFailure *value*, never thrown. So every rejection the pool sees from
 *    tinypool is about the infrastructure (queue full, worker death, close), and a loader error
 *    never depends on how a runtime structured-clones Error objects;
 *  - a worker death (`process.exit`, an uncaught error) is not answered at all; the pool notices
 *    it through the thread's events (see loader-threads.ts).
 *
 * Results cross the thread boundary with one copy: a string is posted as a string; a Uint8Array
 * is copied into a buffer of its own, which is handed to tinypool with `Tinypool.move` (its
 * ArrayBuffer goes in the transfer list). The loader's own bytes are never transferred: a loader
 * may keep them (a module-level table, a constant) and return them again, and a transfer would
 * have detached them, making that next answer unsendable and crashing the thread. Nor is a view
 * posted as is: that would clone the whole buffer under it.
 *
 * If the module fails to import here (though it imported where the pool listed its exports),
 * every load fails with that message instead of crashing the thread: a crash would be replaced
 * by a new worker that crashes the same way, in a loop.
 *
 * A thread runs several loads at once (the pool's `concurrency`): a loader that awaits I/O leaves
 * its thread to the others meanwhile. So one stuck load must not cost the thread's other loads:
 * with `stopAfterMs`, a load not answered by then is answered here as stopped (`LoadFailure`
 * with `stopped`), and its loader's promise is abandoned: whatever it settles to later is
 * dropped. The thread counts such loads while they stay unsettled, and the pool replaces a thread
 * with as many as it has places (they may all wait on one wedged client). A loader that blocks the
 * thread itself (a synchronous loop) cannot be answered so: the thread beats (heartbeat.ts) once
 * the module is imported, and the pool terminates a thread whose beat stops for `stopAfterMs` (the
 * beat also tells the pool a replacement is ready), and one whose beat never begins: an import
 * that does not end (a top-level await on a database that is down) would hold it for good.
 */
import { threadId } from "node:worker_threads";
import Tinypool, { kTransferable, kValue, type Transferable, workerId } from "tinypool";
import { AnswerError, toChecked } from "../cluster/loader.ts";
import { errorText } from "../protocol/errors.ts";
import { countStuck, startBeating } from "./heartbeat.ts";
import { waitBeforeImport } from "./restart-backoff.ts";

/** LoadTask is one load request sent to a worker; `stopAfterMs` > 0: answer it as stopped after that long. */
export interface LoadTask {
  group: string;
  key: string;
  stopAfterMs: number;
}

/**
 * LoadFailure carries a loader's own error message back to the main thread (the callers' answer);
 * `detail`, for the node's log only, is what the callers are not told (paths, configuration).
 */
export interface LoadFailure {
  failed: string;
  detail?: string;
  /** stopped: the loader gave no answer in `stopAfterMs`; it was abandoned. */
  stopped?: true;
}

/** FreshReply is a value with the loader's own TTL (a Fresh whose `ttlMs` is not 0), checked. */
export interface FreshReply {
  value: Uint8Array | string | null;
  ttlMs: number;
}

/**
 * LoadReply is what a worker answers: a value, `null` for "not found", a FreshReply, or a
 * LoadFailure (told apart by `failed`).
 */
export type LoadReply = Uint8Array | string | null | FreshReply | LoadFailure;

/**
 * LoaderWorkerData is the pool's `workerData`: the absolute path of the loaders module, the stop
 * time (0: never), the heartbeat table (heartbeat.ts), and the cell holding how long a thread
 * waits before it imports the module (restart-backoff.ts).
 */
export interface LoaderWorkerData {
  module: string;
  stopAfterMs: number;
  beats: SharedArrayBuffer;
  restartWait: SharedArrayBuffer;
}

type Moved = ReturnType<typeof Tinypool.move>;

const data = Tinypool.workerData as LoaderWorkerData | undefined;
if (data === undefined) throw new Error("loader-worker.ts runs only inside a LoaderPool worker thread");
const modulePath = data.module;
const stopAfterMs = data.stopAfterMs;
const beats = data.beats;
const slot = (workerId ?? 0) - 1;
const imported = startBeating(beats, slot, threadId);
// A promise a loader left rejected with no handler (a fire-and-forget call that failed) fails
// nothing: by default it ended the thread, and every load running on it failed "crashed". It is
// written to stderr (as a loader's own output is), one line per STRAY_LOG_MS at most.
const STRAY_LOG_MS = 10_000;
let strayLoggedAt = -Infinity;
let strayLeftOut = 0;
process.on("unhandledRejection", (reason: unknown) => {
  const now = performance.now();
  if (now - strayLoggedAt < STRAY_LOG_MS) return void strayLeftOut++;
  const more = strayLeftOut > 0 ? ` (${strayLeftOut} more not shown)` : "";
  strayLoggedAt = now;
  strayLeftOut = 0;
  console.error(`mybuncache: loader thread ${threadId}: a loader left a promise rejected with no handler${more}: ${errorText(reason)}`);
});

let loaders: Record<string, unknown> | null = null;
let importError = "";
await waitBeforeImport(data.restartWait); // (threads that keep dying soon after they start)
try {
  loaders = (await import(modulePath)) as Record<string, unknown>;
} catch (err) {
  importError = `cannot import loaders module ${modulePath} in a worker: ${errorText(err)}`;
}
imported();

/** load runs the loader of `task.group` on `task.key` and answers a LoadReply. */
export async function load(task: LoadTask): Promise<LoadReply | Moved> {
  if (loaders === null) return { failed: "the loaders module failed to load (see the node's log)", detail: importError };
  const loader = loaders[task.group];
  if (typeof loader !== "function") return { failed: `no loader "${task.group}" in ${modulePath}` };
  let value: unknown;
  try {
    const answer = (loader as (key: string) => unknown)(task.key);
    // A promise or any thenable (a query builder) is stopped; a plain value is the answer.
    const thenable = answer !== null && (typeof answer === "object" || typeof answer === "function") &&
      typeof (answer as { then?: unknown }).then === "function";
    if (task.stopAfterMs > 0 && thenable) {
      const settling = Promise.resolve(answer);
      value = await withinStop(settling, task.stopAfterMs);
      if (value === STOPPED) {
        // Stuck while it stays unsettled: the pool replaces a thread with as many as it has places.
        countStuck(beats, slot, 1);
        const unstuck = (): void => countStuck(beats, slot, -1);
        settling.then(unstuck, unstuck);
      }
    } else value = await answer;
  } catch (err) {
    return { failed: errorText(err) };
  }
  if (value === STOPPED) return { failed: `loader gave no answer in ${stopAfterMs} ms: stopped`, stopped: true };
  // Looking at the value runs the loader's code too (a Proxy's traps, a `constructor` getter): what
  // it throws is the loader's failure. Uncaught, it rejected the task, and the load was answered
  // as a crash of the thread, which had not crashed.
  try {
    return reply(task.group, value);
  } catch (err) {
    return { failed: `loader "${task.group}" returned a value that cannot be read: ${errorText(err)}` };
  }
}

/**
 * reply turns what the loader of `group` answered into the LoadReply that carries it: checked here
 * as in the main thread (`toChecked`), so a refusal names the loader. Bytes cross as a copy moved
 * to the main thread, inside a FreshReply too (`moveFresh`).
 */
function reply(group: string, value: unknown): LoadReply | Moved {
  let checked;
  try {
    checked = toChecked(value);
  } catch (err) {
    if (err instanceof AnswerError) return { failed: `loader "${group}" ${err.what}` };
    throw err;
  }
  const v = checked.value;
  if (checked.ttlMs !== 0) return v instanceof Uint8Array ? moveFresh(new Uint8Array(v), checked.ttlMs) : { value: v, ttlMs: checked.ttlMs };
  return v instanceof Uint8Array ? Tinypool.move(new Uint8Array(v)) : v;
}

/** moveFresh answers a FreshReply of `bytes` (a copy of the loader's), their buffer moved, not cloned. */
function moveFresh(bytes: Uint8Array, ttlMs: number): Moved {
  const fresh: FreshReply = { value: bytes, ttlMs };
  const moved: Transferable = { [kTransferable]: bytes.buffer, [kValue]: fresh };
  return Tinypool.move(moved);
}

/** STOPPED is what `withinStop` answers for a loader that gave no answer in time. */
const STOPPED = Symbol("stopped");

/** withinStop answers what `answer` settles to, or STOPPED after `ms` (it is then abandoned). */
function withinStop(answer: Promise<unknown>, ms: number): Promise<unknown> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const stop = new Promise<typeof STOPPED>((resolve) => {
    timer = setTimeout(resolve, Math.min(ms, 2 ** 31 - 1), STOPPED); // (the longest delay a timer keeps)
  });
  return Promise.race([answer, stop]).finally(() => clearTimeout(timer));
}

