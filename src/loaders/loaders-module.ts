/**
 * openModule checks a LoaderPool's options and opens its loaders module once, in a thread of its
 * own (never in the node's: `listExports`), only to list its loaders: the module's named exports
 * that are functions, one per group of the same name. Exports that are not functions (and a
 * `default` export) are ignored with a warning; a module that is missing, fails to import (or
 * ends its thread as it does) or exports no loader is an error. The loads run in the
 * pool's threads, each of which imports the module again (loader-worker.ts).
 *
 * The checks come in this order, each refusal thrown (a RangeError for a bad number): threads,
 * queue, concurrency; the module found, exporting no `then` (`exportsThen`), imported, exporting
 * a loader; stopAfterMs.
 */
import { existsSync, readFileSync } from "node:fs";
import { extname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import type { Listed } from "./list-exports-worker.ts";
import { errorText } from "../protocol/errors.ts";
import { MAX_TIMER_MS } from "../cluster/loader.ts";
import { MAX_IMPORT_MS } from "./loader-threads.ts";

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
  /**
   * The module's import to list its exports (as the node starts) not done after this many ms
   * refuses the start, saying so (default IMPORT_BOUND_MS); one still going after
   * IMPORT_WARN_MS is logged as it goes.
   */
  importTimeoutMs?: number;
  logger?: LoaderPoolLogger;
}

/**
 * IMPORT_BOUND_MS bounds the listing import by default, as long as a pool thread's import may
 * grow to (loader-threads.ts's MAX_IMPORT_MS); IMPORT_WARN_MS is when a still-running one is logged.
 */
export const IMPORT_BOUND_MS = MAX_IMPORT_MS;
export const IMPORT_WARN_MS = 5_000;

const consoleLogger: LoaderPoolLogger = {
  warn: (msg, f) => console.warn(msg, f ?? ""),
  error: (msg, f) => console.error(msg, f ?? ""),
};

/** LoadersModule is what `openModule` found: the module's path and loaders, and the options it checked or filled in. */
export interface LoadersModule {
  path: string;
  groups: string[];
  concurrency: number;
  stopAfterMs: number;
  logger: LoaderPoolLogger;
}

/** openModule checks `opts`, then resolves and imports the loaders module and lists its loaders. */
export async function openModule(opts: LoaderPoolOptions): Promise<LoadersModule> {
  const logger = opts.logger ?? consoleLogger;
  if (!Number.isSafeInteger(opts.threads) || opts.threads < 1) throw new RangeError(`loader threads must be an integer >= 1, got ${opts.threads}`);
  if (!Number.isSafeInteger(opts.queue) || opts.queue < 0) throw new RangeError(`loader queue must be an integer >= 0, got ${opts.queue}`);
  const concurrency = opts.concurrency ?? 1;
  if (!Number.isSafeInteger(concurrency) || concurrency < 1) throw new RangeError(`loader concurrency must be an integer >= 1, got ${concurrency}`);
  const path = resolve(process.cwd(), opts.module);
  if (!existsSync(path)) throw new Error(`loaders module not found: ${path}`);
  if (exportsThen(path)) throw new Error(`loaders module ${path} exports \`then\`: import() would take the module for a promise and wait for good; rename that loader`);
  const groups: string[] = [];
  const importTimeoutMs = opts.importTimeoutMs ?? IMPORT_BOUND_MS;
  if (!(importTimeoutMs > 0)) throw new RangeError(`loader importTimeoutMs must be > 0, got ${importTimeoutMs}`);
  for (const [name, type] of await listExports(path, importTimeoutMs, logger)) {
    if (name !== "default" && type === "function") groups.push(name);
    else logger.warn("loaders module export is not a named loader function; ignored", { module: path, export: name, type });
  }
  if (groups.length === 0) {
    throw new Error(`loaders module ${path} exports no loader functions (expected e.g. \`export async function users(key: string)\`)`);
  }
  const stopAfterMs = opts.stopAfterMs ?? 0;
  if (!(stopAfterMs >= 0)) throw new RangeError(`loader stopAfterMs must be >= 0, got ${stopAfterMs}`);
  return { path, groups, concurrency, stopAfterMs, logger };
}

/**
 * listExports imports the module at `path` in a thread of its own (list-exports-worker.ts), never
 * in the node's: its top-level code would go on running there, and a timer of it that throws (a
 * keep-alive to a database that is down) ended the node. It answers each export's name and
 * `typeof`, and ends the thread. An import not done in `boundMs` (a top-level await on a database
 * that is down) is given up, its thread ended: the node's start waited for it for good, saying
 * nothing; it says so after IMPORT_WARN_MS (half the bound if less), and refuses to start at the bound.
 */
function listExports(path: string, boundMs: number, logger: LoaderPoolLogger): Promise<[string, string][]> {
  const cannot = (why: string, cause?: unknown): Error => new Error(`cannot import loaders module ${path}: ${why}`, { cause });
  return new Promise((resolve, reject) => {
    const worker = new Worker(LISTER, { workerData: { path } });
    let answered = false;
    const answer = (settle: () => void): void => {
      if (answered) return; // (the module's timers may still throw, until the thread ends)
      answered = true;
      clearTimeout(warn);
      clearTimeout(bound);
      settle();
      void worker.terminate();
    };
    const warn = setTimeout(() => {
      logger.warn("loaders module still importing; the node starts once it is done", { module: path, limitMs: boundMs });
    }, Math.min(IMPORT_WARN_MS, boundMs / 2));
    const bound = setTimeout(() => {
      answer(() => reject(cannot(`its import did not finish in ${boundMs} ms (its top-level code waits: a top-level await on a service that is down? or a \`then\` export that import() takes for a promise, re-exported by \`export *\`?)`)));
    }, Math.min(boundMs, MAX_TIMER_MS));
    worker.on("message", (listed: Listed) => answer(() => ("error" in listed ? reject(cannot(listed.error)) : resolve(listed.exports))));
    worker.on("error", (err: unknown) => answer(() => reject(cannot(errorText(err), err))));
    worker.on("exit", (code: number) => answer(() => reject(cannot(`it ended its thread (exit code ${code}) as it was imported`))));
  });
}

const LISTER = fileURLToPath(new URL("./list-exports-worker.ts", import.meta.url));

/**
 * exportsThen tells whether the module at `path` declares an export named `then`, read from its
 * source without running it. import() resolves to the module's namespace, and a namespace with a
 * `then` is taken for a promise: `then` (a loader of a group "then") is called with the import's
 * resolve and reject, answers neither, and the import, in the thread that lists the exports and
 * in every worker, waits for good: the node never started, and said nothing. What the source does not declare (a
 * `then` re-exported by `export *`, or set on a CommonJS module's exports) is not seen; a source
 * that does not parse is left to the import to refuse.
 */
function exportsThen(path: string): boolean {
  const ext = extname(path);
  const loader = ext === ".tsx" || ext === ".jsx" ? ext.slice(1) as "tsx" | "jsx" : /^\.[mc]?ts$/.test(ext) ? "ts" : "js";
  try {
    return new Bun.Transpiler({ loader }).scan(readFileSync(path, "utf8")).exports.includes("then");
  } catch {
    return false;
  }
}
