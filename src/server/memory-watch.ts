/**
 * MemoryWatch keeps the garbage a node carries within `--gc-headroom` bytes of what it retains.
 *
 * A node's live memory is bounded by its configuration (the stores' `--memory`, connection
 * buffers bounded by `--max-output` and `--max-buffered`), but its resident memory also holds
 * garbage the runtime has not collected yet: every TCP chunk Bun delivers is a fresh buffer, so a
 * node taking 40 MB/s of writes makes 40 MB/s of garbage, and the collector, pacing itself by the
 * heap's size, let the resident size swing 40–110 MiB above the retained size in the soak. A cache
 * is run for a stated memory size, so the node bounds that swing itself: every `intervalMs` it
 * reads its RSS, and when RSS passes the RSS left after the last full collection by more than
 * the headroom, it runs a full collection (the runtime then returns the freed pages). With a full
 * store that takes 10–20 ms. Measured with the default 64 MiB: twice in a 10-minute soak (the
 * runtime's own collections usually keep up; the watch catches the swings), three times in 6 s of
 * 4 KiB values at 300k ops/s (~1 % of the CPU).
 *
 * The retained level follows the node both ways: it is re-read after each forced collection and
 * lowered whenever RSS is seen below it, so a store filling up (retained memory rising) does not
 * make the watch collect over and over. One RSS read per interval; nothing per request.
 *
 * What the connections hold (`heldBytes`: their buffers, counted toward --max-buffered) is live
 * but passing: the level the watch compares with is the retained level less what they held at
 * that collection, plus what they hold now. Without that, a collection while clients held 250 MB
 * of partial frames set the level there, and once they closed, the 250 MB of garbage they left
 * stayed resident (RSS 308 MiB 8 s later at --memory 64mb, 53 MiB after a collection; review):
 * nothing made RSS pass that level again.
 */
import { errorText } from "../protocol/errors.ts";
import type { Logger } from "./log.ts";

export interface MemoryWatchOptions {
  /** headroomBytes is the garbage allowed above the retained level (> 0). */
  headroomBytes: number;
  /** intervalMs is how often RSS is read. */
  intervalMs: number;
  logger: Logger;
  /** rss reads the process's resident size (injected by tests); default process.memoryUsage.rss. */
  rss?: () => number;
  /** collect runs a full collection (injected by tests); default Bun.gc(true). */
  collect?: () => void;
  /** heldBytes is what the connections hold now, live but let go as they are served or closed (default none). */
  heldBytes?: () => number;
}

/** MemoryWatchCounters are the watch's figures (NodeStats `memory.*`, /metrics). */
export class MemoryWatchCounters {
  forcedCollections = 0; // full collections the watch ran
  forcedCollectionMs = 0; // total time they took
  retainedBytes = 0; // RSS after the last forced collection (or the lowest RSS seen since)
  rssBytes = 0; // RSS at the last read
}

export class MemoryWatch {
  readonly counters = new MemoryWatchCounters();
  private readonly opts: MemoryWatchOptions;
  private readonly rss: () => number;
  private readonly collect: () => void;
  private readonly held: () => number;
  /** heldAtRetained: what the connections held when the retained level was last set. */
  private heldAtRetained = 0;
  private timer: ReturnType<typeof setInterval> | undefined;
  /** failing: the last check could not read the memory figures (warned once per streak). */
  private failing = false;

  constructor(opts: MemoryWatchOptions) {
    if (!(opts.headroomBytes > 0)) throw new RangeError("MemoryWatch: headroom must be > 0");
    this.opts = opts;
    this.rss = opts.rss ?? (() => process.memoryUsage.rss());
    this.collect = opts.collect ?? (() => Bun.gc(true));
    this.held = opts.heldBytes ?? (() => 0);
    this.counters.retainedBytes = this.counters.rssBytes = this.rss();
  }

  /** start reads RSS every intervalMs until stop(); the timer does not keep the process alive. */
  start(): this {
    this.timer ??= setInterval(() => this.tick(), this.opts.intervalMs);
    this.timer.unref();
    return this;
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  /**
   * tick is the timer's check. Reading the memory figures can fail (with every file descriptor in
   * use the runtime cannot open what it reads them from): that check is skipped, with one warning
   * per streak of failures, and the node goes on serving.
   */
  private tick(): void {
    try {
      this.check();
      if (this.failing) this.opts.logger.info("memory watch: reading memory figures again");
      this.failing = false;
    } catch (e) {
      if (!this.failing) this.opts.logger.warn("memory watch: cannot read memory figures; check skipped", { error: errorText(e) });
      this.failing = true;
    }
  }

  /** check reads RSS once and collects if the garbage passed the headroom; returns whether it did. */
  check(): boolean {
    const c = this.counters;
    const rss = this.rss();
    const held = this.held();
    c.rssBytes = rss;
    if (rss < c.retainedBytes) {
      c.retainedBytes = rss;
      this.heldAtRetained = Math.min(held, rss);
    }
    // (what the connections held at the retained level is replaced by what they hold now)
    if (rss <= c.retainedBytes - this.heldAtRetained + held + this.opts.headroomBytes) return false;
    const t0 = performance.now();
    this.collect();
    const ms = performance.now() - t0;
    const after = this.rss();
    c.forcedCollections++;
    c.forcedCollectionMs += ms;
    c.retainedBytes = after;
    this.heldAtRetained = Math.min(this.held(), after);
    c.rssBytes = after;
    this.opts.logger.debug("memory watch: full collection", { rssBefore: rss, rssAfter: after, ms: Math.round(ms * 10) / 10 });
    return true;
  }
}
