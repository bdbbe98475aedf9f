/**
 * Waiting helpers for tests of loads: a loader held at gates the test opens, and a poll for
 * state that has no event to wait on (server counters, loader calls, log lines).
 */

/**
 * GatedLoader answers `loaded <key> #<n>` (n: its call count for the key) once its gate opens;
 * keys starting with "later" wait at a second gate (`openLater`), with "last" at a third (`openLast`).
 */
export class GatedLoader {
  readonly calls = new Map<string, number>();
  private openGate!: () => void;
  private readonly gate = new Promise<void>((r) => (this.openGate = r));
  private openSecond!: () => void;
  private readonly second = new Promise<void>((r) => (this.openSecond = r));
  private openThird!: () => void;
  private readonly third = new Promise<void>((r) => (this.openThird = r));
  readonly load = async (key: string): Promise<string> => {
    const n = (this.calls.get(key) ?? 0) + 1;
    this.calls.set(key, n);
    await (key.startsWith("later") ? this.second : key.startsWith("last") ? this.third : this.gate);
    return `loaded ${key} #${n}`;
  };
  /** total is the loader's calls, all keys together. */
  get total(): number {
    let n = 0;
    for (const c of this.calls.values()) n += c;
    return n;
  }
  open(): void {
    this.openGate();
  }
  openLater(): void {
    this.openSecond();
  }
  openLast(): void {
    this.openThird();
  }
}

/** waitUntil polls `pred` every 5 ms until it holds; past `ms` it throws, naming `what`. */
export async function waitUntil(pred: () => boolean, what: string, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(5);
  }
}
