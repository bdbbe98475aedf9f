/**
 * RestartBackoff slows the restarts of loader threads that keep dying soon after they imported the
 * loaders module: a module whose own timer throws once it runs (a keep-alive to a database that is
 * down) killed each thread a few ms after it started, and tinypool started the next at once, for
 * good: two threads died 46 times a second, burning 1.5 cores and writing an error line each.
 *
 * A thread that dies within QUICK_DEATH_MS of its start (not counting the wait below), after it
 * imported the module, is a quick death; any other death resets the count. Past FREE_QUICK_DEATHS
 * quick deaths a thread in a row, a new thread waits before it imports the module: MIN_WAIT_MS,
 * doubled with each further quick death, up to `maxWaitMs`. (A thread that dies as it imports is
 * tinypool's own case: it then starts no replacement until a load comes, see LoaderThreads.)
 *
 * The wait is one Int32 in a SharedArrayBuffer of the pool's workerData: the pool writes it as a
 * death is seen, a thread reads it as it starts (`waitBeforeImport`). A waiting thread has not
 * imported the module, so it does not beat: it takes no load meanwhile, and the pool's import
 * bound (LoaderThreads' importAfterMs) must exceed the longest wait: `maxWaitMs` is kept to half
 * of it. Once no thread died quickly for QUIET_MS (twice the longest wait and a quick death: a
 * module that still kills its threads dies again sooner), the wait and the count are reset
 * (`settle`, from the pool's check): else they stayed raised for good after the deaths ended, and
 * a thread started much later (replacing one a blocked loader held) waited up to 5 s for nothing.
 */

/** QUICK_DEATH_MS: a thread that dies sooner than this after it started died quickly. */
const QUICK_DEATH_MS = 1000;
/** FREE_QUICK_DEATHS: quick deaths a thread in a row replaced at once (a loader crashing on a few keys). */
const FREE_QUICK_DEATHS = 3;
/** MIN_WAIT_MS is the first wait; MAX_WAIT_MS the longest, with no bound of the pool's below it. */
const MIN_WAIT_MS = 100;
export const MAX_WAIT_MS = 5000;

/** newWaitCell returns the shared cell a pool's threads read their wait from (0: none). */
export function newWaitCell(): SharedArrayBuffer {
  return new SharedArrayBuffer(4);
}

/** waitBeforeImport waits as long as `cell` says, in a thread about to import the loaders module. */
export async function waitBeforeImport(cell: SharedArrayBuffer): Promise<void> {
  const ms = Atomics.load(new Int32Array(cell), 0);
  if (ms > 0) await new Promise((resolve) => setTimeout(resolve, ms));
}

export class RestartBackoff {
  private readonly wait: Int32Array;
  private quickDeaths = 0;
  /** lastQuickDeathAt: when (performance.now()) the last quick death was seen. */
  private lastQuickDeathAt = -Infinity;

  constructor(cell: SharedArrayBuffer, private readonly threads: number, private readonly maxWaitMs: number) {
    this.wait = new Int32Array(cell);
  }

  /** waitMs is how long a thread started now waits before it imports the module. */
  get waitMs(): number {
    return Atomics.load(this.wait, 0);
  }

  /**
   * died notes a thread's death, `livedMs` after it began to import the module, `imported` or not,
   * and sets the wait of the threads started from now on; it returns that wait if it grew.
   */
  died(livedMs: number, imported: boolean, now = performance.now()): number | undefined {
    const was = this.waitMs;
    const quick = imported && livedMs < QUICK_DEATH_MS;
    this.quickDeaths = quick ? this.quickDeaths + 1 : 0;
    if (quick) this.lastQuickDeathAt = now;
    const over = this.quickDeaths - FREE_QUICK_DEATHS * this.threads;
    const ms = over <= 0 ? 0 : Math.min(MIN_WAIT_MS * 2 ** Math.min(over - 1, 30), this.maxWaitMs);
    Atomics.store(this.wait, 0, ms);
    return ms > was ? ms : undefined;
  }

  /** settle resets the wait and the count once no thread died quickly for QUIET_MS until `now`. */
  settle(now: number): void {
    if (this.quickDeaths === 0 || now - this.lastQuickDeathAt < 2 * this.maxWaitMs + QUICK_DEATH_MS) return;
    this.quickDeaths = 0;
    Atomics.store(this.wait, 0, 0);
  }
}
