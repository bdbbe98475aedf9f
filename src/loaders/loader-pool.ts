/**
 * LoaderPool runs the loader functions of a user module in a bounded tinypool worker pool: the
 * seed's goroutine pool, in threads. A load never runs on, or blocks, the event loop.
 *
 * The module's named exports that are functions are the loaders, one per group of the same
 * name (`export async function users(key) {...}` serves group "users"). `open` imports the module
 * once in the main thread only to list them; the loads themselves run in the workers, each of
 * which imports the module once (loader-worker.ts). Exports that are not functions (and a
 * `default` export) are ignored with a warning; a module with no loader is an error.
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
 *  - the worker dies during the load → LOAD_FAILED "loader worker crashed: ...". tinypool
 *    handles a thread's 'error' event (uncaught error) itself: it fails the thread's tasks,
 *    drops it and starts a replacement. It does NOT listen for 'exit', so after a
 *    `process.exit()` in a loader the task would wait forever on a dead thread. We watch every
 *    worker's 'exit': a worker that exits while tinypool still counts it as live died on its
 *    own, and we re-emit the exit as an 'error' on it, which makes tinypool do its usual
 *    recovery. Each death is counted once and logged through `logger.error`. Workers are looked
 *    for after each task is run too: once a worker died as it started, tinypool starts one per
 *    task it runs instead of replacing the dead, and none for a task it already holds: with no
 *    thread left while loads wait in its queue, the pool makes it start them (`restartThreads`);
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
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import Tinypool from "tinypool";
import { CacheError, ERROR_CODE, errorText } from "../protocol/errors.ts";
import type { LoadReply, LoadTask, LoaderWorkerData } from "./loader-worker.ts";
import { BEAT_MS, BeatWatch, newBeatTable } from "./heartbeat.ts";

import type { LoadResult } from "../cluster/loader.ts";

export type { LoadResult };

/** LoaderPoolLogger receives warnings (ignored exports) and errors (worker crashes). */
export interface LoaderPoolLogger {
  warn(msg: string, f?: Record<string, unknown>): void;
  error(msg: string, f?: Record<string, unknown>): void;
}

export interface LoaderPoolOptions {
  /** Path of the loaders module, resolved against the current directory. */
  module: string;
  /** Worker threads (>= 1). */
  threads: number;
  /** Loads each thread runs at once (>= 1; default 1). */
  concurrency?: number;
  /** Loads that may wait for a thread (>= 0); more are refused with OVERLOADED. */
  queue: number;
  /**
   * A load not answered after this many ms is stopped: it fails with LOAD_FAILED and gives its
   * place back (a loader stuck on a lost connection would otherwise hold it for good); a thread
   * blocked that long is terminated and replaced. 0 or absent: never.
   */
  stopAfterMs?: number;
  logger?: LoaderPoolLogger;
}

export interface LoaderPoolCounters {
  submitted: number; // loads accepted into the pool
  completed: number; // loads that answered a value or "not found"
  failed: number; // loads that ended in LOAD_FAILED (loader error, wrong type, crash, close)
  rejected: number; // loads refused with OVERLOADED because the pool was full
  crashes: number; // worker threads that died (each replaced by a new one)
  stopped: number; // loads stopped after stopAfterMs (abandoned, or their blocked thread terminated)
}

type PoolWorker = Tinypool["threads"][number];

const WORKER_FILE = fileURLToPath(new URL("./loader-worker.ts", import.meta.url));
const TINYPOOL_QUEUE_ERRORS = new Set(["Task queue is at limit", "No task queue available and all Workers are busy"]);

/**
 * ReplacedThread is the error a thread's loads fail with when the pool terminates it: it stopped
 * beating (`blocked`), or as many of its loads got stuck as it has places.
 */
class ReplacedThread extends Error {
  constructor(message: string, readonly why: string) {
    super(message);
  }
}

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
const MAX_IMPORT_MS = 60_000;

const consoleLogger: LoaderPoolLogger = {
  warn: (msg, f) => console.warn(msg, f ?? ""),
  error: (msg, f) => console.error(msg, f ?? ""),
};

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
  private readonly watched = new WeakSet<PoolWorker>();
  private readonly dead = new WeakSet<PoolWorker>();
  private lastCrash: unknown = null;
  /** inFlight counts loads accepted and not settled (started or waiting). */
  private inFlight = 0;

  /** started are the loads handed to tinypool and not answered yet, the places they take. */
  private readonly started = new Set<Load>();
  /** places is how many loads run at once (threads * concurrency); readyPlaces, those on threads known ready. */
  private readonly places: number;
  private readyPlaces: number;
  private readonly threads: number;
  private readonly concurrency: number;
  /** recountTimer: armed while a replaced thread may not be ready yet (`recount`). */
  private recountTimer: ReturnType<typeof setTimeout> | null = null;
  /** waiting are the loads accepted beyond `places`, oldest first. */
  private readonly waiting: Load[] = [];
  /** blockedAfterMs: a thread that has not beaten for this long is blocked (stopAfterMs, MIN_BLOCKED_MS at least). */
  private readonly blockedAfterMs: number;
  /**
   * overdueMs: a started load not answered this long after its stop time is stopped by the pool
   * (`stopOverdue`). By then its thread answered it, or was judged blocked: a check sees a beat
   * stop within a check interval and finds it blocked blockedAfterMs later, within another.
   */
  private readonly overdueMs: number;
  /** importing holds each thread not yet seen to have imported the module, with when it was first seen. */
  private readonly importing = new WeakMap<PoolWorker, number>();
  /** importAfterMs: a thread importing the module for this long is replaced (`checkImport`). */
  private importAfterMs: number;
  /** replaced holds each thread `replace` terminated that has not exited yet, with when (`canStart`). */
  private readonly replaced = new Map<PoolWorker, number>();
  /** restarting settles once threads `restartThreads` asked tinypool for are created. */
  private restarting: Promise<void> = Promise.resolve();
  private closing: Promise<void> | null = null;
  private readonly beats: BeatWatch;
  private readonly checkTimer: ReturnType<typeof setInterval>;

  /** open resolves and imports the loaders module, lists its loaders and starts the workers. */
  static async open(opts: LoaderPoolOptions): Promise<LoaderPool> {
    const logger = opts.logger ?? consoleLogger;
    if (!Number.isSafeInteger(opts.threads) || opts.threads < 1) throw new RangeError(`loader threads must be an integer >= 1, got ${opts.threads}`);
    if (!Number.isSafeInteger(opts.queue) || opts.queue < 0) throw new RangeError(`loader queue must be an integer >= 0, got ${opts.queue}`);
    const concurrency = opts.concurrency ?? 1;
    if (!Number.isSafeInteger(concurrency) || concurrency < 1) throw new RangeError(`loader concurrency must be an integer >= 1, got ${concurrency}`);
    const path = resolve(process.cwd(), opts.module);
    if (!existsSync(path)) throw new Error(`loaders module not found: ${path}`);
    let mod: Record<string, unknown>;
    try {
      mod = (await import(path)) as Record<string, unknown>;
    } catch (err) {
      throw new Error(`cannot import loaders module ${path}: ${errorText(err)}`, { cause: err });
    }
    const groups: string[] = [];
    for (const [name, value] of Object.entries(mod)) {
      if (name !== "default" && typeof value === "function") groups.push(name);
      else logger.warn("loaders module export is not a named loader function; ignored", { module: path, export: name, type: typeof value });
    }
    if (groups.length === 0) {
      throw new Error(`loaders module ${path} exports no loader functions (expected e.g. \`export async function users(key: string)\`)`);
    }
    const stopAfterMs = opts.stopAfterMs ?? 0;
    if (!(stopAfterMs >= 0)) throw new RangeError(`loader stopAfterMs must be >= 0, got ${stopAfterMs}`);
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
    this.concurrency = concurrency;
    this.places = threads * concurrency;
    this.readyPlaces = this.places; // tinypool's first threads take tasks as soon as they boot
    this.capacity = this.places + queue;
    this.logger = logger;
    this.blockedAfterMs = Math.max(stopAfterMs, MIN_BLOCKED_MS);
    this.importAfterMs = this.blockedAfterMs;
    const checkMs = stopAfterMs > 0 ? Math.max(BEAT_MS, Math.min(CHECK_MS, stopAfterMs / 4)) : CHECK_MS;
    this.overdueMs = this.blockedAfterMs + 2 * checkMs;
    const workerData: LoaderWorkerData = { module, stopAfterMs, beats: newBeatTable(threads) };
    this.beats = new BeatWatch(workerData.beats);
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
    // With no task on the dead thread, tinypool reports its death as a pool 'error' (an
    // EventEmitter 'error' without a listener would throw). onWorkerError already logged it. An
    // "Unexpected message" is the late answer of a thread `replace` terminated: tinypool failed
    // that load already, as the pool meant it to.
    this.pool.on("error", (err: unknown) => {
      if (err === this.lastCrash) return;
      if (this.replaced.size > 0 && errorText(err).startsWith("Unexpected message from Worker")) return;
      this.logger.error("loader pool error", { module: this.module, error: errorText(err) });
    });
    this.watchWorkers();
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
    const exiting = this.replaced.size > 0 && this.replacedExiting();
    if (!exiting && this.pool.threads.length < this.threads) return true;
    const running = this.started.size;
    // While a terminated thread may still answer late, only a load that goes straight to a ready
    // thread with room (never into tinypool's queue) is started.
    return this.pool.queueSize === 0 && (running < this.readyPlaces || (running === 0 && !exiting));
  }

  /** replacedExiting tells whether a thread `replace` terminated less than blockedAfterMs ago has not exited yet. */
  private replacedExiting(): boolean {
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
    if (this.recountTimer === null && this.closing === null) {
      this.recountTimer = setTimeout(() => this.recount(), BEAT_MS);
      this.recountTimer.unref?.();
    }
  }

  /** recount counts the ready places again (threads that beat), starts queued loads, and goes on until all are ready. */
  private recount(): void {
    this.recountTimer = null;
    if (this.closing !== null) return;
    this.beats.look();
    let ready = 0;
    for (const worker of this.pool.threads) if (!this.dead.has(worker) && this.beats.imported(worker.threadId)) ready++;
    this.readyPlaces = Math.min(this.places, ready * this.concurrency);
    this.startQueued();
    if (ready < this.threads) {
      this.recountTimer = setTimeout(() => this.recount(), BEAT_MS);
      this.recountTimer.unref?.();
    }
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
    this.watchWorkers();
    return running;
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
    this.logger.warn("loader stopped: no answer in time", { module: this.module, group: load.task.group, key: load.task.key, ms: this.stopAfterMs, [where]: true });
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
      this.restartThreads();
      if (this.stopAfterMs > 0 && this.closing === null) {
        const now = performance.now();
        this.checkThreads(now);
        this.stopOverdue(now);
      }
      this.startQueued();
    } catch (err) {
      this.logger.error("loader pool check failed", { module: this.module, error: errorText(err) });
    }
  }

  /**
   * checkThreads terminates the threads that have not beaten for blockedAfterMs (a synchronous
   * loader blocks them), that hold as many stuck loads as places, or that have not imported the
   * module in importAfterMs: tinypool fails their loads (as stopped, see `fail`) and starts
   * replacements.
   */
  private checkThreads(now: number): void {
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

  /**
   * restartThreads makes tinypool start its threads again if it has none while loads wait in its
   * queue: once a thread died (or was replaced) before it was ready, tinypool replaces no dead
   * thread, and starts one only as a load is handed to it, so those would wait for the next.
   */
  private restartThreads(): void {
    if (this.pool.threads.length > 0 || this.started.size === 0 || this.closing !== null) return;
    this.restarting = this.pool.recycleWorkers().then(
      () => this.watchWorkers(),
      (err: unknown) => this.logger.error("loader threads not restarted", { module: this.module, error: errorText(err) }),
    );
  }

  /** close stops the workers; loads still running or waiting fail with LOAD_FAILED. */
  close(): Promise<void> {
    if (this.closing === null) {
      clearInterval(this.checkTimer);
      if (this.recountTimer !== null) clearTimeout(this.recountTimer);
      // After the threads restartThreads asked for are created, so that none outlives the pool.
      const destroyed = this.restarting.then(() => this.pool.destroy());
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
    if (reply === null || typeof reply === "string" || reply instanceof Uint8Array) {
      this.counters.completed++;
      load.resolve(reply);
      return;
    }
    this.counters.failed++;
    if (reply.stopped === true) {
      this.counters.stopped++;
      this.logger.warn("loader stopped: no answer in time", { module: this.module, group: load.task.group, key: load.task.key, ms: this.stopAfterMs });
    }
    if (reply.detail !== undefined && reply.detail !== this.loggedDetail) {
      this.loggedDetail = reply.detail; // once, not for every load that fails the same way
      this.logger.error("loaders module failed in a worker", { module: this.module, error: reply.detail });
    }
    load.reject(new CacheError(ERROR_CODE.LOAD_FAILED, reply.failed));
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

  /** watchWorkers subscribes to the death of workers not seen yet (new ones replace the dead), and times their import. */
  private watchWorkers(): void {
    for (const worker of this.pool.threads) {
      if (this.watched.has(worker)) continue;
      this.watched.add(worker);
      this.importing.set(worker, performance.now());
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
    if (this.replaced.delete(worker)) this.startQueued(); // the loads it held back (canStart)
    // A worker tinypool terminated itself (close) is no longer in pool.threads.
    if (this.closing !== null || this.dead.has(worker) || !this.pool.threads.includes(worker)) return;
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
  }
}

