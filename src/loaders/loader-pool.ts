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
 * is refused with OVERLOADED at once, by our own counter, before tinypool is called. tinypool's
 * own `maxQueue` is set above that bound and is only a backstop: its count varies while a replaced
 * worker boots (it adds the booting worker's capacity), ours does not.
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
 *    replaced, its loads failing as stopped.
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

/** BlockedThread is the error a thread's loads fail with when the pool terminates it for not beating. */
class BlockedThread extends Error {}

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
  private inFlight = 0;
  private closing: Promise<void> | null = null;
  private readonly beats: BeatWatch | null = null;
  private readonly beatTimer: ReturnType<typeof setInterval> | null = null;

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
    this.capacity = threads * concurrency + queue;
    this.logger = logger;
    const workerData: LoaderWorkerData = { module, stopAfterMs };
    if (stopAfterMs > 0) {
      workerData.beats = newBeatTable();
      this.beats = new BeatWatch(workerData.beats);
      this.beatTimer = setInterval(() => this.checkBeats(), Math.max(BEAT_MS, Math.min(1000, stopAfterMs / 4)));
      this.beatTimer.unref?.();
    }
    this.pool = new Tinypool({
      filename: WORKER_FILE,
      name: "load",
      minThreads: threads,
      maxThreads: threads,
      concurrentTasksPerWorker: concurrency,
      maxQueue: this.capacity + threads * concurrency, // backstop only; the bound is `capacity`, enforced in run()
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
    const task: LoadTask = { group, key };
    return this.watchingWorkers(this.pool.run(task) as Promise<LoadReply>).then(
      (reply) => this.settle(reply, group, key),
      (err: unknown) => this.fail(err, group, key),
    );
  }

  /**
   * checkBeats terminates the threads that have not beaten for `stopAfterMs` while loads are in
   * flight (a synchronous loader blocks them): tinypool fails their loads (as stopped, see `fail`)
   * and starts replacements.
   */
  private checkBeats(): void {
    const beats = this.beats!;
    const now = performance.now();
    const live = new Set<number>();
    for (const worker of this.pool.threads) {
      live.add(worker.threadId);
      const stalled = beats.stalledFor(worker.threadId, now);
      if (stalled < this.stopAfterMs || this.inFlight === 0 || this.dead.has(worker) || this.closing !== null) continue;
      this.dead.add(worker); // not a crash: onWorkerError / onWorkerExit leave it be
      this.logger.warn("loader thread stopped: blocked", { module: this.module, thread: worker.threadId, ms: Math.round(stalled) });
      worker.emit("error", new BlockedThread(`loader thread blocked for ${Math.round(stalled)} ms`)); // tinypool: fail its loads, drop it, start a new one
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
    if (this.beatTimer !== null) clearInterval(this.beatTimer);
    this.closing ??= this.pool.destroy();
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
    if (err instanceof BlockedThread) {
      // Its thread was terminated for not beating (checkBeats), which logged it.
      this.counters.failed++;
      this.counters.stopped++;
      throw new CacheError(ERROR_CODE.LOAD_FAILED, `loader gave no answer in ${this.stopAfterMs} ms: stopped (its thread was blocked)`);
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
    this.lastCrash = err;
    this.counters.crashes++;
    this.logger.error("loader worker crashed", { module: this.module, thread: worker.threadId, error: errorText(err) });
  }
}

