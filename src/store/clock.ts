/**
 * monotonicMs is the default clock of stores and nodes: whole ms since the epoch as the process
 * started, counted on from there by the monotonic clock. Expiry times are absolute on it; on the
 * wall clock (`Date.now`) a step of the time (NTP, a VM resumed, `date -s`) moved every TTL by the
 * step: set back an hour, a 10 s item lived an hour and ten seconds and told clients 3,610 s were
 * left. A snapshot keeps absolute expiry times, which the next process reads against the wall
 * time at its own start: they carry over to within how far the two clocks drifted apart meanwhile.
 */
const ORIGIN = performance.timeOrigin;

export function monotonicMs(): number {
  return Math.floor(ORIGIN + performance.now());
}
