/**
 * LoaderPool runs the loader functions of a user module in a bounded tinypool worker pool: the
 * seed's goroutine pool, in threads. A load never runs on, or blocks, the event loop.
 *
 * The module's named exports that are functions are the loaders, one per group of the same
 * name (`export async function users(key) {...}` serves group "users"). `open` imports the module
 * once only to list them, in a thread of its own, so that the module's top-level code never runs
 * in the node's (loaders-module.ts, which checks the options too);
 * the loads themselves run in the workers, each of which imports the module once
 * (loader-worker.ts). Exports that are not functions (and a `default` export) are ignored with a
 * warning; a module with no loader is an error.
 *
 * Bounds. All `threads` workers start at open and stay (minThreads = maxThreads, no idle exit).
 * Each runs up to `concurrency` loads at once (tinypool's concurrentTasksPerWorker): loaders are
 * async functions, and one that awaits a database or a service leaves its thread to the others
 * meanwhile, as a goroutine would (a synchronous loader still runs its loads one after another).
 * At most `threads * concurrency + queue` loads are in flight (running or waiting); the next one
 * is refused with OVERLOADED at once, by our own counter, before tinypool is called. Loads wait
 * in our own queue, not tinypool's: a thread that becomes free takes one task of tinypool's queue
 * per event (its `_onWorkerAvailable` posts one and returns), so loads queued there while a
 * replaced thread booted would run one at a time for as long as the queue never emptied. A load
 * is handed to tinypool only while a place is free on a thread that is ready (a replacement is
 * counted once it has imported the module: its first heartbeat, heartbeat.ts) and tinypool's own
 * queue is empty, so it goes straight to a thread with room; and none while a thread the pool
 * terminated has not exited yet (`canStart` says why).
 *
 * Failures, all as CacheError:
 *  - the loader throws/rejects, or returns a wrong type → LOAD_FAILED with its message
 *    (a value from the worker, see loader-worker.ts);
 *  - the worker dies during the load → LOAD_FAILED "loader worker crashed: ...". The death is
 *    counted once, logged through `logger.error`, and the thread replaced, though tinypool does
 *    not watch a thread's 'exit' (a `process.exit()` in a loader) nor always replace the dead
 *    (loader-threads.ts: LoaderThreads keeps the threads); after a wait, growing, if threads keep
 *    dying soon after they start (restart-backoff.ts);
 *  - the pool closes while the load runs or waits → LOAD_FAILED "loader pool closed";
 *  - with `stopAfterMs`, a load not answered by then → LOAD_FAILED "... stopped". Its thread
 *    answers it so and abandons the loader's promise, serving its other loads on; a thread that a
 *    synchronous loader blocks for that long stops beating (heartbeat.ts) and is terminated and
 *    replaced, its loads failing as stopped, and so is a thread with as many abandoned loads still
 *    unsettled as it has places (they may all wait on one wedged client it holds), and so is a
 *    thread that has not imported the module by then (a top-level await on a database that is
 *    down: it would never take a load); a load that waited that long in the queue is dropped from
 *    it the same way. Last, a load handed to tinypool and still unanswered `overdueMs` after its
 *    stop time (left in tinypool's queue, with no thread to take it) is failed as stopped by the
 *    pool itself: every load is answered, whatever becomes of its thread.
 *
 * Counters are a plain struct; `submitted = completed + failed + in flight` at all times. (A load
 * the pool stopped as overdue may still run later in a thread; its answer is dropped.)
 */
import { fileURLToPath } from "node:url";
import Tinypool from "tinypool";
import { CacheError, ERROR_CODE, errorText } from "../protocol/errors.ts";
import type { LoadReply, LoadTask, LoaderWorkerData } from "./loader-worker.ts";
import { BEAT_MS, newBeatTable } from "./heartbeat.ts";
import { newWaitCell } from "./restart-backoff.ts";
import { LoaderThreads, type PoolSide, ReplacedThread } from "./loader-threads.ts";
import { type LoaderPoolLogger, type LoaderPoolOptions, openModule } from "./loaders-module.ts";
import type { LoadResult } from "../cluster/loader.ts";
import { LogBudget, linesLeftOut } from "../server/log.ts";

export interface LoaderPoolCounters {
  submitted: number; // loads accepted into the pool
  completed: number; // loads that answered a value or "not found"
  failed: number; // loads that ended in LOAD_FAILED (loader error, wrong type, crash, close)
  rejected: number; // loads refused with OVERLOADED because the pool was full
  crashes: number; // worker threads that died (each replaced by a new one)
  stopped: number; // loads stopped after stopAfterMs (abandoned, or their blocked thread terminated)
}

const WORKER_FILE = fileURLToPath(new URL("./loader-worker.ts", import.meta.url));
const TINYPOOL_QUEUE_ERRORS = new Set(["Task queue is at limit", "No task queue available and all Workers are busy"]);

/** Load is a load accepted and not answered: waiting for a place (LoaderPool.waiting) or handed to tinypool (LoaderPool.started). */
interface Load {
  task: LoadTask;
  since: number; // performance.now() when it was accepted
  resolve(result: LoadResult): void;
  reject(err: unknown): void;
}

/** CHECK_MS: how often the pool looks at its queue (and at the heartbeats, sooner with a short stop time). */
const CHECK_MS = 1000;
/** CLOSE_WAIT_MS bounds how long `close` waits for the threads to exit (one blocked in a native call cannot). */
const CLOSE_WAIT_MS = 1000;

/** STOPPED_LOG_LINES: stopped loads logged per second at most. */
const STOPPED_LOG_LINES = 10;

export class LoaderPool {
  /** groups are the names of the module's loader exports. */
  readonly groups: readonly string[];
  readonly counters: LoaderPoolCounters = { submitted: 0, completed: 0, failed: 0, rejected: 0, crashes: 0, stopped: 0 };
  private readonly module: string;
  private readonly known: ReadonlySet<string>;
  /** capacity is how many loads may be in flight at once (threads * concurrency + queue); the next is refused. */
  readonly capacity: number;
  private readonly logger: LoaderPoolLogger;
  private readonly pool: Tinypool;
  /** inFlight counts loads accepted and not settled (started or waiting). */
  private inFlight = 0;

  /** started are the loads handed to tinypool and not answered yet, the places they take. */
  private readonly started = new Set<Load>();
  /** places is how many loads run at once (threads * concurrency); those on threads known ready are LoaderThreads.readyPlaces. */
  private readonly places: number;
  private readonly threads: number;
  /** waiting are the loads accepted beyond `places`, oldest first. */
  private readonly waiting: Load[] = [];
  /**
   * overdueMs: a started load not answered this long after its stop time is stopped by the pool
   * (`stopOverdue`). By then its thread answered it, or was judged blocked: a check sees a beat
   * stop within a check interval and finds it blocked blockedAfterMs (LoaderThreads) later, within another.
   */
  private readonly overdueMs: number;
  private closing: Promise<void> | null = null;
  private readonly checkTimer: ReturnType<typeof setInterval>;
  /** workers: the threads' lifecycle (crashes, replacements, restarts, ready places: loader-threads.ts). */
  private readonly workers: LoaderThreads;

  /** open resolves and imports the loaders module, lists its loaders and starts the workers. */
  static async open(opts: LoaderPoolOptions): Promise<LoaderPool> {
    const { path, groups, concurrency, stopAfterMs, logger } = await openModule(opts);
    return new LoaderPool(path, groups, opts.threads, concurrency, opts.queue, logger, stopAfterMs);
  }

  private constructor(
    module: string, groups: string[], threads: number, concurrency: number, queue: number, logger: LoaderPoolLogger,
    private readonly stopAfterMs: number,
  ) {
    this.module = module;
    this.groups = Object.freeze(groups);
    this.known = new Set(groups);
    this.threads = threads;
    this.places = threads * concurrency;
    this.capacity = this.places + queue;
    this.logger = logger;
    const checkMs = stopAfterMs > 0 ? Math.max(BEAT_MS, Math.min(CHECK_MS, stopAfterMs / 4)) : CHECK_MS;
    const workerData: LoaderWorkerData = { module, stopAfterMs, beats: newBeatTable(threads), restartWait: newWaitCell() };
    this.checkTimer = setInterval(() => this.check(), checkMs);
    this.checkTimer.unref?.();
    this.pool = new Tinypool({
      filename: WORKER_FILE,
      name: "load",
      minThreads: threads,
      maxThreads: threads,
      concurrentTasksPerWorker: concurrency,
      // An idle thread waits on its event loop, where its heartbeat goes on (heartbeat.ts).
      useAtomics: false,
      maxQueue: this.capacity + this.places, // backstop only; the bound is `capacity`, enforced in run()
      workerData,
    });
    const side: PoolSide = { closing: () => this.closing !== null, running: () => this.started.size, startQueued: () => this.startQueued() };
    this.workers = new LoaderThreads(this.pool, workerData, side, module, logger, this.counters, threads, concurrency, this.places, stopAfterMs);
    this.overdueMs = this.workers.blockedAfterMs + 2 * checkMs;
  }

  /** run loads `key` with the loader of `group` in a worker; it never waits for queue room. */
  run(group: string, key: string): Promise<LoadResult> {
    if (this.closing !== null) return Promise.reject(new CacheError(ERROR_CODE.LOAD_FAILED, "loader pool closed"));
    if (!this.known.has(group)) return Promise.reject(new CacheError(ERROR_CODE.UNKNOWN_GROUP, `no loader for group "${group}"`));
    if (this.inFlight >= this.capacity) {
      this.counters.rejected++;
      return Promise.reject(new CacheError(ERROR_CODE.OVERLOADED, "loader queue full"));
    }
    this.inFlight++;
    this.counters.submitted++;
    return new Promise<LoadResult>((resolve, reject) => {
      const load: Load = { task: { group, key, stopAfterMs: this.stopAfterMs }, since: performance.now(), resolve, reject };
      if (this.waiting.length === 0 && this.canStart()) this.start(load);
      else this.waiting.push(load);
    });
  }

  /**
   * canStart tells whether a load handed to tinypool now goes straight to a thread with room; or
   * makes tinypool start a thread for it: with none running, or with fewer threads than the pool's
   * (after threads died as they started, tinypool replaces them only as tasks come, and a task it
   * holds for a thread that then died too waits until another comes).
   *
   * None while a thread `replace` terminated is still exiting: it may yet answer loads tinypool
   * failed already, and tinypool, finding no task for such an answer, counts the thread free and
   * posts it the first load of its own queue, which then fails as the thread ends ("crashed",
   * though nothing did). With that queue empty, a late answer takes nothing. A thread blocked in
   * a native call exits only once the call returns, running no more JS: it is waited for
   * blockedAfterMs at most.
   */
  private canStart(): boolean {
    const exiting = this.workers.replaced.size > 0 && this.workers.replacedExiting();
    if (!exiting && this.pool.threads.length < this.threads) return true;
    const running = this.started.size;
    // While a terminated thread may still answer late, only a load that goes straight to a ready
    // thread with room (never into tinypool's queue) is started.
    return this.pool.queueSize === 0 && (running < this.workers.readyPlaces || (running === 0 && !exiting));
  }

  /** start hands `load` to tinypool; its outcome answers it (settle / fail), unless `stopOverdue` did first. */
  private start(load: Load): void {
    this.started.add(load);
    this.runInPool(load.task).then(
      (reply) => {
        if (this.ended(load)) this.settle(load, reply);
      },
      (err: unknown) => {
        if (this.ended(load)) load.reject(this.fail(err));
      },
    );
  }

  /**
   * runInPool hands `task` to tinypool (a synchronous throw, from creating a thread, is a
   * rejection), then watches the worker it may have started: after a worker died as it started,
   * tinypool starts no replacement but a worker per task as it is run, and its death would go
   * unseen (the load waiting until stopped, or for good).
   */
  private runInPool(task: LoadTask): Promise<LoadReply> {
    let running: Promise<LoadReply>;
    try {
      running = this.pool.run(task) as Promise<LoadReply>;
    } catch (err) {
      running = Promise.reject(err);
    }
    this.workers.watchWorkers();
    return running;
  }

  /**
   * ended takes started `load` out, giving its place back, and starts the queued loads that now
   * have room; false if it was out already (stopped as overdue: its late outcome is dropped).
   */
  private ended(load: Load): boolean {
    if (!this.started.delete(load)) return false;
    this.startQueued();
    return true;
  }

  /**
   * startQueued starts the queued loads that have room, oldest first, each with what is left of its
   * stop time (a load is stopped `stopAfterMs` after it was accepted, however long it queued here;
   * its thread does not count time in tinypool's own queue, which holds a load only while its
   * thread boots: `stopOverdue` bounds that).
   */
  private startQueued(): void {
    this.dropStale(performance.now());
    while (this.waiting.length > 0 && this.closing === null && this.canStart()) {
      const load = this.waiting.shift()!;
      if (this.stopAfterMs > 0) load.task.stopAfterMs = Math.max(1, Math.ceil(this.stopAfterMs - (performance.now() - load.since)));
      this.start(load);
    }
  }

  /** dropStale fails the queued loads accepted `stopAfterMs` or more before `now` as stopped. */
  private dropStale(now: number): void {
    if (!(this.stopAfterMs > 0)) return;
    while (this.waiting.length > 0 && now - this.waiting[0]!.since >= this.stopAfterMs) this.stop(this.waiting.shift()!, "queued");
  }

  /**
   * stopOverdue fails the started loads accepted `stopAfterMs + overdueMs` or more before `now` as
   * stopped, giving their places back: tinypool holds them for a thread that may never come.
   */
  private stopOverdue(now: number): void {
    for (const load of this.started) {
      if (now - load.since < this.stopAfterMs + this.overdueMs) continue;
      this.started.delete(load);
      this.stop(load, "overdue");
    }
  }

  /** stop fails `load`, unanswered in its stop time while `where`, as stopped. */
  private stop(load: Load, where: "queued" | "overdue"): void {
    this.counters.stopped++;
    this.logStopped(load, { [where]: true });
    this.drop(load, `loader gave no answer in ${this.stopAfterMs} ms: stopped`);
  }

  /** drop fails `load`, which gets no answer from a thread, with LOAD_FAILED `message`. */
  private drop(load: Load, message: string): void {
    this.inFlight--;
    this.counters.failed++;
    load.reject(new CacheError(ERROR_CODE.LOAD_FAILED, message));
  }

  /**
   * check runs every CHECK_MS (sooner with a short stop time): it restarts threads for loads left
   * in tinypool's queue, starts queued loads that have room (a thread that became ready takes
   * from tinypool's queue without a load of ours ending), drops queued loads older than
   * `stopAfterMs`, stops overdue ones, and terminates the threads that are blocked, stuck or not
   * importing (`checkThreads`). It runs in a timer: a fault (tinypool failing to create a thread)
   * is logged, and the next check goes on.
   */
  private check(): void {
    try {
      const now = performance.now();
      this.workers.settleBackoff(now);
      this.workers.restartThreads();
      if (this.stopAfterMs > 0 && this.closing === null) {
        this.workers.checkThreads(now);
        this.stopOverdue(now);
      }
      this.startQueued();
    } catch (err) {
      this.logger.error("loader pool check failed", { module: this.module, error: errorText(err) });
    }
  }

  /** close stops the workers; loads still running or waiting fail with LOAD_FAILED. */
  close(): Promise<void> {
    if (this.closing === null) {
      clearInterval(this.checkTimer);
      this.workers.stopRecount();
      // After the threads restartThreads asked for are created, so that none outlives the pool.
      const destroyed = this.workers.restarting.then(() => this.pool.destroy());
      // A thread blocked in a native call (a slow synchronous query) exits only once the call
      // returns: it is waited for CLOSE_WAIT_MS at most, and the loads it holds then fail.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const bound = new Promise<false>((r) => (timer = setTimeout(() => r(false), CLOSE_WAIT_MS)));
      this.closing = Promise.race([destroyed.then(() => true), bound]).then((exited) => {
        clearTimeout(timer);
        if (!exited) this.logger.warn("loader threads did not exit: one is blocked in a call that does not return; not waited for", { module: this.module, ms: CLOSE_WAIT_MS, loads: this.started.size });
        for (const load of this.started) this.drop(load, "loader pool closed");
        this.started.clear();
      });
      for (const load of this.waiting.splice(0)) this.drop(load, "loader pool closed");
    }
    return this.closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** settle answers `load` with its thread's `reply`. */
  private settle(load: Load, reply: LoadReply): void {
    this.inFlight--;
    if (reply === null || typeof reply === "string" || reply instanceof Uint8Array || !("failed" in reply)) {
      this.counters.completed++;
      load.resolve(reply);
      return;
    }
    this.counters.failed++;
    if (reply.stopped === true) {
      this.counters.stopped++;
      this.logStopped(load, {});
    }
    if (reply.detail !== undefined && reply.detail !== this.loggedDetail) {
      this.loggedDetail = reply.detail; // once, not for every load that fails the same way
      this.logger.error("loaders module failed in a worker", { module: this.module, error: reply.detail });
    }
    load.reject(new CacheError(ERROR_CODE.LOAD_FAILED, reply.failed));
  }

  /**
   * stoppedLog: stopped loads are logged STOPPED_LOG_LINES a second at most, the next line saying
   * how many were not (a database gone quiet stopped every load, one line each: thousands a second).
   */
  private readonly stoppedLog = new LogBudget(STOPPED_LOG_LINES);

  private logStopped(load: Load, where: Record<string, true>): void {
    const held = this.stoppedLog.take(performance.now());
    if (held < 0) return;
    this.logger.warn("loader stopped: no answer in time", {
      module: this.module, group: load.task.group, key: load.task.key, ms: this.stopAfterMs, ...where, ...linesLeftOut(held),
    });
  }

  /** loggedDetail is the last LoadFailure detail written to the log. */
  private loggedDetail: string | undefined;

  /** fail counts a load tinypool rejected with `err`, and returns the error to answer it with. */
  private fail(err: unknown): CacheError {
    this.inFlight--;
    const message = errorText(err);
    if (err instanceof ReplacedThread) {
      // Its thread was terminated (`checkThreads`), which logged why.
      this.counters.failed++;
      this.counters.stopped++;
      return new CacheError(ERROR_CODE.LOAD_FAILED, `loader gave no answer in ${this.stopAfterMs} ms: stopped (${err.why})`);
    }
    if (TINYPOOL_QUEUE_ERRORS.has(message)) {
      this.counters.submitted--;
      this.counters.rejected++;
      return new CacheError(ERROR_CODE.OVERLOADED, "loader queue full");
    }
    this.counters.failed++;
    if (this.closing !== null) return new CacheError(ERROR_CODE.LOAD_FAILED, "loader pool closed");
    return new CacheError(ERROR_CODE.LOAD_FAILED, `loader worker crashed: ${message}`);
  }
}

