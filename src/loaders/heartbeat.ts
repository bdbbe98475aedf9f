/**
 * Heartbeats of loader threads: how the pool tells a thread that is blocked (a loader stuck in a
 * synchronous loop) from one whose loads merely take long.
 *
 * A thread runs several loads at once, so a load that gives no answer in time is stopped by its
 * own thread (loader-worker.ts), which keeps serving the others. A thread that a synchronous loader
 * blocks cannot do that, nor anything else: it stops beating. Each thread adds 1 to its beat count
 * every BEAT_MS once it has imported the loaders module (the import may hold its event loop a
 * while); the pool (`BeatWatch`) terminates a thread whose count has not moved for the stop time,
 * and counts a replacement thread ready once it beats. A thread that never begins to beat (its
 * import awaits a database that is down) is terminated too, after a bound of the pool's own
 * (LoaderThreads' `checkImport`). (The pool's threads wait for work on their event loop, not in
 * `Atomics.wait`, so an idle thread beats too: LoaderPool sets tinypool's `useAtomics: false`.)
 *
 * The table is one SharedArrayBuffer of Int32 words, three per thread slot: the thread's id, its
 * beat count, and how many loads it stopped and abandoned are still unsettled (`stuck`: a thread
 * with as many of those as it has places may hold a wedged client, a database connection that
 * never answers; the pool replaces it). A thread's slot is its tinypool worker id - 1 (ids 1..threads, each held by one
 * live thread and handed to its replacement), so there are as many slots as threads; the pool
 * finds a thread's slot by its id, so a slot taken over by a replacement is not mistaken for the
 * thread that had it.
 */

/** BEAT_MS is how often a loader thread beats. */
export const BEAT_MS = 50;

/** newBeatTable returns the shared heartbeat table of a pool of `threads` threads. */
export function newBeatTable(threads: number): SharedArrayBuffer {
  return new SharedArrayBuffer(4 * WORDS * threads);
}

/** WORDS per slot: thread id, beat count, stuck loads. */
const WORDS = 3;

/**
 * startBeating makes thread `threadId` beat in `slot` of `table` every BEAT_MS, and returns the
 * beat: the thread calls it once its loaders module is imported, so that the pool judges it from
 * then on (not while the import may hold its event loop).
 */
export function startBeating(table: SharedArrayBuffer, slot: number, threadId: number): () => void {
  const words = new Int32Array(table);
  if (!(slot >= 0 && WORDS * slot + 2 < words.length)) return () => {}; // (not a pool thread's slot: no beat to watch)
  Atomics.store(words, WORDS * slot + 1, 0);
  Atomics.store(words, WORDS * slot + 2, 0);
  Atomics.store(words, WORDS * slot, threadId);
  let imported = false;
  const beat = (): void => {
    if (imported) Atomics.add(words, WORDS * slot + 1, 1);
  };
  setInterval(beat, BEAT_MS);
  return () => {
    imported = true;
    beat();
  };
}

/**
 * countStuck adds `delta` to the stuck loads of `slot`: +1 when the thread stops and abandons a
 * load, -1 when that load settles after all.
 */
export function countStuck(table: SharedArrayBuffer, slot: number, delta: number): void {
  const words = new Int32Array(table);
  if (slot >= 0 && WORDS * slot + 2 < words.length) Atomics.add(words, WORDS * slot + 2, delta);
}

/** BeatWatch is the pool's side: it remembers each thread's last beat count and when it moved. */
export class BeatWatch {
  private readonly words: Int32Array;
  private readonly seen = new Map<number, { beats: number; at: number }>();
  private readonly slotOf = new Map<number, number>();

  constructor(table: SharedArrayBuffer) {
    this.words = new Int32Array(table);
  }

  /** look reads which thread beats in which slot (once per check, before `stalledFor`). */
  look(): void {
    this.slotOf.clear();
    for (let s = 0; WORDS * s < this.words.length; s++) this.slotOf.set(Atomics.load(this.words, WORDS * s), s);
  }

  /**
   * stalledFor returns how many ms thread `threadId`'s beat has not moved as of `now`
   * (performance.now()), or 0 while it moves, before the thread has a slot, and before its first
   * beat, which comes once it has imported the loaders module (the import may hold its event loop
   * a while; the pool bounds how long, see `imported`).
   */
  stalledFor(threadId: number, now: number): number {
    const slot = this.slotOf.get(threadId);
    if (slot === undefined) return 0;
    const beats = Atomics.load(this.words, WORDS * slot + 1);
    if (beats === 0) return 0;
    const last = this.seen.get(threadId);
    if (last === undefined || last.beats !== beats) {
      this.seen.set(threadId, { beats, at: now });
      return 0;
    }
    return now - last.at;
  }

  /** imported tells whether thread `threadId` has beaten: it has imported the loaders module (after `look`). */
  imported(threadId: number): boolean {
    const slot = this.slotOf.get(threadId);
    return slot !== undefined && Atomics.load(this.words, WORDS * slot + 1) > 0;
  }

  /** stuck is how many loads thread `threadId` stopped and abandoned are still unsettled (after `look`). */
  stuck(threadId: number): number {
    const slot = this.slotOf.get(threadId);
    return slot === undefined ? 0 : Atomics.load(this.words, WORDS * slot + 2);
  }

  /** forget drops what is remembered of threads not in `live`. */
  forget(live: ReadonlySet<number>): void {
    for (const id of this.seen.keys()) if (!live.has(id)) this.seen.delete(id);
  }
}
