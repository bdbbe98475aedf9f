/**
 * LoaderThreads keeps a LoaderPool's worker threads alive and counted: it sees each thread die,
 * replaces the ones that are blocked, stuck or never import the loaders module, makes tinypool
 * start threads again when it has none, and counts the places on threads ready to take a load.
 *
 * tinypool handles a thread's 'error' event (uncaught error) itself: it fails the thread's tasks,
 * drops it and starts a replacement. It does NOT listen for 'exit', so after a `process.exit()` in
 * a loader the task would wait forever on a dead thread. So every worker's 'exit' is watched
 * (`watchWorkers`): a worker that exits while tinypool still counts it as live died on its own,
 * and the exit is re-emitted as an 'error' on it, which makes tinypool do its usual recovery.
 * Each death is counted once (`crashes`) and logged through `logger.error`; threads that keep
 * dying soon after they start make their replacements wait before they import the module
 * (restart-backoff.ts). Workers are looked for after each task is run too (LoaderPool's
 * `runInPool`): once a worker died as it started, tinypool starts one per task it runs instead
 * of replacing the dead, and none for a task it already holds: with no thread left while loads
 * wait in its queue, `restartThreads` makes it start them.
 *
 * With a stop time, `checkThreads` (run by each pool check) terminates a thread (`replace`) whose
 * beat has stopped for blockedAfterMs (heartbeat.ts: a synchronous loader blocks it), one with as
 * many abandoned loads still unsettled as it has places, and one that has not imported the module
 * in importAfterMs (doubled for the next after each one replaced so, up to MAX_IMPORT_MS); tinypool
 * fails its loads with ReplacedThread and starts a new one. A thread lost either way is out of
 * `readyPlaces` until `recount` sees its replacement beat, and one terminated stays in `replaced`
 * until it exits: meanwhile LoaderPool's `canStart` hands tinypool only loads that go straight to
 * a ready thread.
 *
 * State: a WeakSet or WeakMap per fact about a tinypool worker object (watched, dead, importing
 * since), so each goes with its worker; the Map of terminated workers still exiting; the BeatWatch
 * over the shared heartbeat table. What it asks of the pool (is it closing, how many loads run,
 * start the queued ones) comes through PoolSide.
 */
import type Tinypool from "tinypool";
import { errorText } from "../protocol/errors.ts";
import { BEAT_MS, BeatWatch } from "./heartbeat.ts";
import { MAX_WAIT_MS, RestartBackoff } from "./restart-backoff.ts";
import type { LoaderPoolCounters } from "./loader-pool.ts";
import type { LoaderPoolLogger } from "./loaders-module.ts";

type PoolWorker = Tinypool["threads"][number];

/**
 * ReplacedThread is the error a thread's loads fail with when the pool terminates it: it stopped
 * beating (`blocked`), or as many of its loads got stuck as it has places.
 */
export class ReplacedThread extends Error {
  constructor(message: string, readonly why: string) {
    super(message);
  }
}

/**
 * MIN_BLOCKED_MS: a thread counts as blocked only after this long without a beat, however short
 * the stop time (beats and checks come every BEAT_MS or more: a few ms would catch healthy ones).
 */
const MIN_BLOCKED_MS = 10 * BEAT_MS;
/**
 * MAX_IMPORT_MS caps how long a thread may import the module before it is replaced: the bound
 * doubles with each thread replaced so (`checkImport`), and would otherwise grow without end
 * while a database the import awaits stays down.
 */
export const MAX_IMPORT_MS = 60_000;

/** PoolSide is what LoaderThreads asks of its LoaderPool (closures made once, with the pool). */
export interface PoolSide {
  /** closing tells whether the pool is closing (`close` was called). */
  closing(): boolean;
  /** running is how many loads are handed to tinypool and not answered yet (the places they take). */
  running(): number;
  /** startQueued starts the queued loads that now have room. */
  startQueued(): void;
}

export class LoaderThreads {
  /** readyPlaces: the places (threads * concurrency) on threads known ready (`lost`, `recount`). */
  readyPlaces: number;
  /** blockedAfterMs: a thread that has not beaten for this long is blocked (stopAfterMs, MIN_BLOCKED_MS at least). */
  readonly blockedAfterMs: number;
  /** replaced holds each thread `replace` terminated that has not exited yet, with when (LoaderPool's `canStart`). */
  readonly replaced = new Map<PoolWorker, number>();
  /** restarting settles once threads `restartThreads` asked tinypool for are created. */
  restarting: Promise<void> = Promise.resolve();
  private readonly watched = new WeakSet<PoolWorker>();
  private readonly dead = new WeakSet<PoolWorker>();
  private lastCrash: unknown = null;
  /** recountTimer: armed while a replaced thread may not be ready yet (`recount`). */
  private recountTimer: ReturnType<typeof setTimeout> | null = null;
  /** importing holds each thread not yet seen to have imported the module, with when it was first seen. */
  private readonly importing = new WeakMap<PoolWorker, number>();
  /** importAfterMs: a thread importing the module for this long is replaced (`checkImport`). */
  private importAfterMs: number;
  private readonly beats: BeatWatch;
  /** born holds when each thread began to import the module (after its wait, restart-backoff.ts). */
  private readonly born = new WeakMap<PoolWorker, number>();
  private readonly backoff: RestartBackoff;

  constructor(
    private readonly pool: Tinypool, shared: { beats: SharedArrayBuffer; restartWait: SharedArrayBuffer }, private readonly side: PoolSide, private readonly module: string,
    private readonly logger: LoaderPoolLogger, private readonly counters: LoaderPoolCounters, private readonly threads: number,
    private readonly concurrency: number, private readonly places: number, stopAfterMs: number,
  ) {
    this.readyPlaces = this.places; // tinypool's first threads take tasks as soon as they boot
    this.blockedAfterMs = Math.max(stopAfterMs, MIN_BLOCKED_MS);
    this.importAfterMs = this.blockedAfterMs;
    this.beats = new BeatWatch(shared.beats);
    // A thread waiting to import does not beat: the wait stays well within the import bound.
    this.backoff = new RestartBackoff(shared.restartWait, threads, stopAfterMs > 0 ? Math.min(MAX_WAIT_MS, this.blockedAfterMs / 2) : MAX_WAIT_MS);
    // With no task on the dead thread, tinypool reports its death as a pool 'error' (an
    // EventEmitter 'error' without a listener would throw), from its own listener of the
    // thread's 'error', which runs before onWorkerError: so it is looked at a microtask later,
    // once onWorkerError has logged it (a loader's timer that throws after its load answered: it
    // was logged twice, once as a pool error). An "Unexpected message" is the late answer of a
    // thread `replace` terminated: tinypool failed that load already, as the pool meant it to.
    this.pool.on("error", (err: unknown) => {
      if (this.replaced.size > 0 && errorText(err).startsWith("Unexpected message from Worker")) return;
      queueMicrotask(() => {
        if (err !== this.lastCrash) this.logger.error("loader pool error", { module: this.module, error: errorText(err) });
      });
    });
    this.watchWorkers();
  }

  /** replacedExiting tells whether a thread `replace` terminated less than blockedAfterMs ago has not exited yet. */
  replacedExiting(): boolean {
    const now = performance.now();
    for (const at of this.replaced.values()) if (now - at < this.blockedAfterMs) return true;
    return false;
  }

  /**
   * lost takes a thread that died or is being terminated out of the ready places, until `recount`
   * sees its replacement ready.
   */
  private lost(): void {
    this.readyPlaces = Math.max(0, this.readyPlaces - this.concurrency);
    if (this.recountTimer === null && !this.side.closing()) {
      this.recountTimer = setTimeout(() => this.recount(), BEAT_MS);
      this.recountTimer.unref?.();
    }
  }

  /** recount counts the ready places again (threads that beat), starts queued loads, and goes on until all are ready. */
  private recount(): void {
    this.recountTimer = null;
    if (this.side.closing()) return;
    this.beats.look();
    let ready = 0;
    for (const worker of this.pool.threads) if (!this.dead.has(worker) && this.beats.imported(worker.threadId)) ready++;
    this.readyPlaces = Math.min(this.places, ready * this.concurrency);
    this.side.startQueued();
    if (ready < this.threads) {
      this.recountTimer = setTimeout(() => this.recount(), BEAT_MS);
      this.recountTimer.unref?.();
    }
  }

  /**
   * replace terminates `worker` (not a crash): tinypool fails its loads with `why`, drops it, and
   * starts a new one (none if `worker` never got ready: see `restartThreads`).
   */
  private replace(worker: PoolWorker, why: ReplacedThread): void {
    this.dead.add(worker); // onWorkerError / onWorkerExit leave it be
    this.replaced.set(worker, performance.now());
    this.lost();
    this.lastCrash = why; // (with no load on it, tinypool reports it as a pool error: logged already)
    worker.emit("error", why);
  }

  /**
   * checkThreads terminates the threads that have not beaten for blockedAfterMs (a synchronous
   * loader blocks them), that hold as many stuck loads as places, or that have not imported the
   * module in importAfterMs: tinypool fails their loads (as stopped, see LoaderPool's `fail`) and starts
   * replacements.
   */
  checkThreads(now: number): void {
    const beats = this.beats;
    beats.look();
    const live = new Set<number>();
    let importsReplaced = false;
    for (const worker of this.pool.threads) {
      live.add(worker.threadId);
      if (this.dead.has(worker)) continue;
      if (this.importing.has(worker)) {
        importsReplaced = this.checkImport(worker, now) || importsReplaced;
        continue;
      }
      const stalled = beats.stalledFor(worker.threadId, now);
      const stuck = beats.stuck(worker.threadId);
      if (stalled >= this.blockedAfterMs) {
        this.logger.warn("loader thread stopped: blocked", { module: this.module, thread: worker.threadId, ms: Math.round(stalled) });
        this.replace(worker, new ReplacedThread(`loader thread blocked for ${Math.round(stalled)} ms`, "its thread was blocked"));
      } else if (stuck >= this.concurrency) {
        // As many loads of the thread are stuck, abandoned and still unsettled, as it has places:
        // a client it holds (a database connection that never answers) may be wedged for good.
        // A new thread starts afresh.
        this.logger.warn("loader thread replaced: its loads keep getting stuck", { module: this.module, thread: worker.threadId, stuck });
        this.replace(worker, new ReplacedThread(`${stuck} loads of the loader thread got stuck`, "its thread was replaced"));
      }
    }
    // The next threads get twice as long: an import that is only slow gets through in the end.
    if (importsReplaced) this.importAfterMs = Math.min(2 * this.importAfterMs, MAX_IMPORT_MS);
    beats.forget(live);
    this.watchWorkers();
  }

  /**
   * checkImport replaces `worker` if it has imported the module for importAfterMs and more (a
   * top-level await on a database that is down: the thread never beats, and never takes a load,
   * so it would never be judged blocked); true if it did. A thread seen imported is judged by its
   * beat from then on, and the bound is reset.
   */
  private checkImport(worker: PoolWorker, now: number): boolean {
    if (this.beats.imported(worker.threadId)) {
      this.importing.delete(worker);
      this.importAfterMs = this.blockedAfterMs;
      return false;
    }
    const ms = now - this.importing.get(worker)!;
    if (ms < this.importAfterMs) return false;
    this.logger.warn("loader thread replaced: it did not import the loaders module", { module: this.module, thread: worker.threadId, ms: Math.round(ms) });
    this.replace(worker, new ReplacedThread(`loader thread did not import the loaders module in ${Math.round(ms)} ms`, "its thread could not import the loaders module"));
    return true;
  }

  /** settleBackoff ends a restart wait once threads stopped dying quickly (RestartBackoff.settle). */
  settleBackoff(now: number): void {
    this.backoff.settle(now);
  }

  /**
   * restartThreads makes tinypool start its threads again if it has none while loads wait in its
   * queue: once a thread died (or was replaced) before it was ready, tinypool replaces no dead
   * thread, and starts one only as a load is handed to it, so those would wait for the next.
   */
  restartThreads(): void {
    if (this.pool.threads.length > 0 || this.side.running() === 0 || this.side.closing()) return;
    this.restarting = this.pool.recycleWorkers().then(
      () => this.watchWorkers(),
      (err: unknown) => this.logger.error("loader threads not restarted", { module: this.module, error: errorText(err) }),
    );
  }

  /** stopRecount disarms `recount` (the pool is closing). */
  stopRecount(): void {
    if (this.recountTimer !== null) clearTimeout(this.recountTimer);
  }

  /** watchWorkers subscribes to the death of workers not seen yet (new ones replace the dead), and times their import. */
  watchWorkers(): void {
    for (const worker of this.pool.threads) {
      if (this.watched.has(worker)) continue;
      this.watched.add(worker);
      this.importing.set(worker, performance.now());
      this.born.set(worker, performance.now() + this.backoff.waitMs);
      worker.on("error", (err: unknown) => this.onWorkerError(worker, err));
      worker.on("exit", (code: number) => this.onWorkerExit(worker, code));
    }
  }

  // Runs after tinypool's own 'error' listener (registered first): the worker is already dropped,
  // its tasks failed, and its replacement started, so watchWorkers() finds the replacement.
  private onWorkerError(worker: PoolWorker, err: unknown): void {
    if (!this.dead.has(worker)) this.reportCrash(worker, err);
    this.watchWorkers();
  }

  private onWorkerExit(worker: PoolWorker, code: number): void {
    if (this.replaced.delete(worker)) this.side.startQueued(); // the loads it held back (LoaderPool's canStart)
    // A worker tinypool terminated itself (close) is no longer in pool.threads.
    if (this.side.closing() || this.dead.has(worker) || !this.pool.threads.includes(worker)) return;
    const err = new Error(`worker exited with code ${code}`);
    this.reportCrash(worker, err);
    worker.emit("error", err); // tinypool's recovery: fail its tasks, drop it, start a new one
    this.watchWorkers();
  }

  private reportCrash(worker: PoolWorker, err: unknown): void {
    this.dead.add(worker);
    this.lost();
    this.lastCrash = err;
    this.counters.crashes++;
    this.logger.error("loader worker crashed", { module: this.module, thread: worker.threadId, error: errorText(err) });
    // The replacement reads its wait as it starts, after this (tinypool may have created it
    // already, from its own listener of the 'error': a thread takes ms to start running).
    this.beats.look();
    const born = this.born.get(worker);
    const waitMs = this.backoff.died(born === undefined ? Infinity : performance.now() - born, this.beats.imported(worker.threadId));
    if (waitMs !== undefined) this.logger.warn("loader threads keep dying soon after they start: the next ones wait before they import the module", { module: this.module, ms: waitMs });
  }
}
