/**
 * watchLoop measures how long the event loop is held: a 5 ms timer notes the longest gap between
 * its runs. It starts the timer, lets it settle (20 ms), and resolves with `stop`, which ends it
 * and returns that longest gap in ms. Used by the flooding benchmarks (hash-flooding.ts,
 * flight-floods.ts), whose node runs in the same process.
 */
export async function watchLoop(): Promise<() => number> {
  let last = performance.now();
  let gap = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    gap = Math.max(gap, now - last);
    last = now;
  }, 5);
  await Bun.sleep(20);
  return () => {
    clearInterval(timer);
    return gap;
  };
}
