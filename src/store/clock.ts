/**
 * monotonicMs is the default clock of stores and nodes: whole ms since the epoch as the process
 * started, counted on from there by the monotonic clock. Expiry times are absolute on it; on the
 * wall clock (`Date.now`) a step of the time (NTP, `date -s`) moved every TTL by the step: set
 * back an hour, a 10 s item lived an hour and ten seconds and told clients 3,610 s were left.
 * (The monotonic clock does not count time the machine spends suspended: items outlive their TTL
 * by that.) A snapshot converts expiry times to wall time as it writes them, and back to the
 * store's clock as it reads them (server/snapshot.ts), so they carry over a restart even when
 * the writing process started while the wall clock was off.
 */
const ORIGIN = performance.timeOrigin;

export function monotonicMs(): number {
  return Math.floor(ORIGIN + performance.now());
}
