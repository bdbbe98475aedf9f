/**
 * list-exports-worker is the entry of the thread in which `openModule` (loaders-module.ts)
 * imports a loaders module to list its exports, so that the module's top-level code never runs
 * in the node's thread: a timer it starts (a keep-alive to a database, which throws once the
 * database is down), a connection it opens, a `process.exit()`. The thread answers one Listed
 * message and is terminated.
 *
 * A promise the module leaves rejected with no handler fails nothing here: the pool's threads,
 * which import the module again, log it (loader-worker.ts).
 */
import { parentPort, workerData } from "node:worker_threads";
import { errorText } from "../protocol/errors.ts";

/** Listed is the thread's answer: each export's name and `typeof`, or why the import failed. */
export type Listed = { exports: [name: string, type: string][] } | { error: string };

process.on("unhandledRejection", () => {});
const { path } = workerData as { path: string };
let listed: Listed;
try {
  const mod = (await import(path)) as Record<string, unknown>;
  listed = { exports: Object.entries(mod).map(([name, value]): [string, string] => [name, typeof value]) };
} catch (err) {
  listed = { error: errorText(err) };
}
parentPort?.postMessage(listed);
