/**
 * Heartbeats of loader threads: how the pool tells a thread that is blocked (a loader stuck in a
 * synchronous loop) from one whose loads merely take long.
 *
 * A thread runs several loads at once, so a load that gives no answer in time is stopped by its
 * own thread (loader-worker.ts), which keeps serving the others. A thread that a synchronous loader
 * blocks cannot do that, nor anything else: it stops beating. Each thread adds 1 to its beat count
 * every BEAT_MS, from before it imports the loaders module; the pool (`BeatWatch`) terminates a
 * thread whose count has not moved for the stop time while loads are in flight.
 *
 * The table is one SharedArrayBuffer of Int32 words: word 0 counts the slots claimed; slot s is
 * words 1 + 2s (the thread's id) and 2 + 2s (its beat count). A thread takes the next slot modulo
 * BEAT_SLOTS; the pool finds a thread's slot by its id, so a slot taken over by a later thread is
 * never mistaken for an earlier one's.
 */

/** BEAT_MS is how often a loader thread beats. */
export const BEAT_MS = 50;
const BEAT_SLOTS = 256;

/** newBeatTable returns the shared heartbeat table a pool hands its threads. */
export function newBeatTable(): SharedArrayBuffer {
  return new SharedArrayBuffer(4 * (1 + 2 * BEAT_SLOTS));
}

/** startBeating claims a slot of `table` for thread `threadId` and beats in it every BEAT_MS. */
export function startBeating(table: SharedArrayBuffer, threadId: number): void {
  const words = new Int32Array(table);
  const slot = Atomics.add(words, 0, 1) % BEAT_SLOTS;
  Atomics.store(words, 2 + 2 * slot, 0);
  Atomics.store(words, 1 + 2 * slot, threadId);
  setInterval(() => Atomics.add(words, 2 + 2 * slot, 1), BEAT_MS);
}

/** BeatWatch is the pool's side: it remembers each thread's last beat count and when it moved. */
export class BeatWatch {
  private readonly words: Int32Array;
  private readonly seen = new Map<number, { beats: number; at: number }>();

  constructor(table: SharedArrayBuffer) {
    this.words = new Int32Array(table);
  }

  /**
   * stalledFor returns how many ms thread `threadId`'s beat has not moved as of `now`
   * (performance.now()), or 0 while it moves or before the thread has a slot.
   */
  stalledFor(threadId: number, now: number): number {
    let slot = -1;
    for (let s = 0; s < BEAT_SLOTS; s++) {
      if (Atomics.load(this.words, 1 + 2 * s) === threadId) {
        slot = s;
        break;
      }
    }
    if (slot < 0) return 0;
    const beats = Atomics.load(this.words, 2 + 2 * slot);
    const last = this.seen.get(threadId);
    if (last === undefined || last.beats !== beats) {
      this.seen.set(threadId, { beats, at: now });
      return 0;
    }
    return now - last.at;
  }

  /** forget drops what is remembered of threads not in `live`. */
  forget(live: ReadonlySet<number>): void {
    for (const id of this.seen.keys()) if (!live.has(id)) this.seen.delete(id);
  }
}
