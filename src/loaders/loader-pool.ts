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
 * queue is empty, so it goes straight to a thread with room.
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
 *    task it runs instead of replacing the dead;
 *  - the pool closes while the load runs or waits → LOAD_FAILED "loader pool closed";
 *  - with `stopAfterMs`, a load not answered by then → LOAD_FAILED "... stopped". Its thread
 *    answers it so and abandons the loader's promise, serving its other loads on; a thread that a
 *    synchronous loader blocks for that long stops beating (heartbeat.ts) and is terminated and
 *    replaced, its loads failing as stopped, and so is a thread with as many abandoned loads still
 *    unsettled as it has places (they may all wait on one wedged client it holds); a load that
 *    waited that long in the queue is dropped from it the same way.
 *
 * Counters are a plain struct; `submitted = completed + failed + in flight` at all times.
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

/** Queued is a load waiting for a place (LoaderPool.waiting). */
interface Queued {
  task: LoadTask;
  since: number; // performance.now() when it was queued
  resolve(result: LoadResult): void;
  reject(err: unknown): void;
}

/** CHECK_MS: how often the pool looks at its queue (and at the heartbeats, sooner with a short stop time). */
const CHECK_MS = 1000;
/**
 * MIN_BLOCKED_MS: a thread counts as blocked only after this long without a beat, however short
 * the stop time (beats and checks come every BEAT_MS or more: a few ms would catch healthy ones).
 */
const MIN_BLOCKED_MS = 10 * BEAT_MS;

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
  /** inFlight counts loads accepted and not settled (running or queued); running, those handed to tinypool. */
  private inFlight = 0;
  private running = 0;
  /** places is how many loads run at once (threads * concurrency); readyPlaces, those on threads known ready. */
  private readonly places: number;
  private readyPlaces: number;
  private readonly threads: number;
  private readonly concurrency: number;
  /** recountTimer: armed while a replaced thread may not be ready yet (`recount`). */
  private recountTimer: ReturnType<typeof setTimeout> | null = null;
  /** waiting are the loads accepted beyond `places`, oldest first. */
  private readonly waiting: Queued[] = [];
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
    const workerData: LoaderWorkerData = { module, stopAfterMs, beats: newBeatTable(threads) };
    this.beats = new BeatWatch(workerData.beats);
    this.checkTimer = setInterval(() => this.check(), stopAfterMs > 0 ? Math.max(BEAT_MS, Math.min(CHECK_MS, stopAfterMs / 4)) : CHECK_MS);
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
    // EventEmitter 'error' without a listener would throw). onWorkerError already logged it.
    this.pool.on("error", (err: unknown) => {
      if (err !== this.lastCrash) this.logger.error("loader pool error", { module: this.module, error: errorText(err) });
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
    const task: LoadTask = { group, key, stopAfterMs: this.stopAfterMs };
    if (this.waiting.length === 0 && this.canStart()) return this.start(task);
    return new Promise<LoadResult>((resolve, reject) => {
      this.waiting.push({ task, since: performance.now(), resolve, reject });
    });
  }

  /**
   * canStart tells whether a load handed to tinypool now goes straight to a thread with room; or
   * makes tinypool start a thread for it: with none running, or with fewer threads than the pool's
   * (after threads died as they started, tinypool replaces them only as tasks come, and a task it
   * holds for a thread that then died too waits until another comes).
   */
  private canStart(): boolean {
    if (this.pool.threads.length < this.threads) return true;
    return this.pool.queueSize === 0 && (this.running < this.readyPlaces || this.running === 0);
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

  /** start hands `task` to tinypool; its outcome settles it (settle / fail) and starts queued loads. */
  private start(task: LoadTask): Promise<LoadResult> {
    this.running++;
    return this.watchingWorkers(this.pool.run(task) as Promise<LoadReply>).then(
      (reply) => {
        this.ended();
        return this.settle(reply, task.group, task.key);
      },
      (err: unknown) => {
        this.ended();
        return this.fail(err, task.group, task.key);
      },
    );
  }

  /** replace terminates `worker` (not a crash): tinypool fails its loads with `why`, drops it, and starts a new one. */
  private replace(worker: PoolWorker, why: ReplacedThread): void {
    this.dead.add(worker); // onWorkerError / onWorkerExit leave it be
    this.lost();
    this.lastCrash = why; // (with no load on it, tinypool reports it as a pool error: logged already)
    worker.emit("error", why);
  }

  /** ended gives a running load's place back and starts the queued loads that now have room. */
  private ended(): void {
    this.running--;
    this.startQueued();
  }

  /**
   * startQueued starts the queued loads that have room, oldest first, each with what is left of its
   * stop time (a load is stopped `stopAfterMs` after it was accepted, however long it queued here;
   * time in tinypool's own queue, which holds a load only while its thread boots, is not counted).
   */
  private startQueued(): void {
    this.dropStale(performance.now());
    while (this.waiting.length > 0 && this.closing === null && this.canStart()) {
      const q = this.waiting.shift()!;
      if (this.stopAfterMs > 0) q.task.stopAfterMs = Math.max(1, Math.ceil(this.stopAfterMs - (performance.now() - q.since)));
      this.start(q.task).then(q.resolve, q.reject);
    }
  }

  /** dropStale fails the queued loads accepted `stopAfterMs` or more before `now` as stopped. */
  private dropStale(now: number): void {
    if (!(this.stopAfterMs > 0)) return;
    while (this.waiting.length > 0 && now - this.waiting[0]!.since >= this.stopAfterMs) {
      const q = this.waiting.shift()!;
      this.counters.stopped++;
      this.logger.warn("loader stopped: no answer in time", { module: this.module, group: q.task.group, key: q.task.key, ms: this.stopAfterMs, queued: true });
      this.dropQueued(q, `loader gave no answer in ${this.stopAfterMs} ms: stopped`);
    }
  }

  /** dropQueued fails queued load `q` with LOAD_FAILED `message` (it never ran). */
  private dropQueued(q: Queued, message: string): void {
    this.inFlight--;
    this.counters.failed++;
    q.reject(new CacheError(ERROR_CODE.LOAD_FAILED, message));
  }

  /**
   * check runs every CHECK_MS (sooner with a short stop time): it starts queued loads that have room
   * (a thread that became ready takes from tinypool's queue without a load of ours ending), drops
   * queued loads older than `stopAfterMs`, and terminates the threads that have not beaten for
   * `stopAfterMs` (and MIN_BLOCKED_MS at least: a synchronous loader blocks them): tinypool fails
   * their loads (as stopped, see `fail`) and starts replacements.
   */
  private check(): void {
    this.startQueued();
    const beats = this.beats;
    if (!(this.stopAfterMs > 0) || this.closing !== null) return;
    const now = performance.now();
    beats.look();
    const live = new Set<number>();
    for (const worker of this.pool.threads) {
      live.add(worker.threadId);
      const stalled = beats.stalledFor(worker.threadId, now);
      const stuck = beats.stuck(worker.threadId);
      if (this.dead.has(worker)) continue;
      if (stalled >= Math.max(this.stopAfterMs, MIN_BLOCKED_MS)) {
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
    beats.forget(live);
    this.watchWorkers();
  }

  /**
   * watchingWorkers returns `running` once the worker a task may have started is watched: after
   * a worker died as it started, tinypool starts no replacement but a worker per task as it is
   * run, and its death would go unseen (the load waiting until stopped, or for good).
   */
  private watchingWorkers(running: Promise<LoadReply>): Promise<LoadReply> {
    this.watchWorkers();
    return running;
  }

  /** close stops the workers; loads still running or waiting fail with LOAD_FAILED. */
  close(): Promise<void> {
    if (this.closing === null) {
      clearInterval(this.checkTimer);
      if (this.recountTimer !== null) clearTimeout(this.recountTimer);
      this.closing = this.pool.destroy();
      for (const q of this.waiting.splice(0)) this.dropQueued(q, "loader pool closed");
    }
    return this.closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  private settle(reply: LoadReply, group: string, key: string): LoadResult {
    this.inFlight--;
    if (reply === null || typeof reply === "string" || reply instanceof Uint8Array) {
      this.counters.completed++;
      return reply;
    }
    this.counters.failed++;
    if (reply.stopped === true) {
      this.counters.stopped++;
      this.logger.warn("loader stopped: no answer in time", { module: this.module, group, key, ms: this.stopAfterMs });
    }
    if (reply.detail !== undefined && reply.detail !== this.loggedDetail) {
      this.loggedDetail = reply.detail; // once, not for every load that fails the same way
      this.logger.error("loaders module failed in a worker", { module: this.module, error: reply.detail });
    }
    throw new CacheError(ERROR_CODE.LOAD_FAILED, reply.failed);
  }

  /** loggedDetail is the last LoadFailure detail written to the log. */
  private loggedDetail: string | undefined;

  private fail(err: unknown, group: string, key: string): never {
    this.inFlight--;
    const message = errorText(err);
    if (err instanceof ReplacedThread) {
      // Its thread was terminated (`check`), which logged why.
      this.counters.failed++;
      this.counters.stopped++;
      throw new CacheError(ERROR_CODE.LOAD_FAILED, `loader gave no answer in ${this.stopAfterMs} ms: stopped (${err.why})`);
    }
    if (TINYPOOL_QUEUE_ERRORS.has(message)) {
      this.counters.submitted--;
      this.counters.rejected++;
      throw new CacheError(ERROR_CODE.OVERLOADED, "loader queue full");
    }
    this.counters.failed++;
    if (this.closing !== null) throw new CacheError(ERROR_CODE.LOAD_FAILED, "loader pool closed");
    throw new CacheError(ERROR_CODE.LOAD_FAILED, `loader worker crashed: ${message}`);
  }

  /** watchWorkers subscribes to the death of workers not seen yet (new ones replace the dead). */
  private watchWorkers(): void {
    for (const worker of this.pool.threads) {
      if (this.watched.has(worker)) continue;
      this.watched.add(worker);
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

