/**
 * Ledger: what the soak's well-behaved clients know about every key they wrote, and the rules a
 * read must obey.
 *
 * Each key is written by one client lane at a time (keys are partitioned by worker, and a worker
 * never starts a write on a key with a write in flight), so the acknowledged writes of a key are
 * totally ordered and the last one is what the node must hold. An entry keeps the last
 * acknowledged write: its value's version, when it was sent and acknowledged, its effective TTL
 * (the explicit one or the group's default; 0 = none), or that it was a delete. A write that
 * failed or timed out leaves the key `unknown` (the node may or may not have applied it) until the
 * next acknowledged write. `epoch` counts writes started on a key, so a read that overlapped a
 * write is recognised and only checked for self-consistency.
 *
 * Values are self-describing: `<key>#<version>#` followed by a filler byte derived from the
 * version and length, so any hit can be checked against its key without the ledger.
 *
 * Read rules (`judge`): a corrupt value or another key's value → violation. If no write overlapped
 * the read: a hit must be the last acknowledged version, not deleted, and not past its TTL (with
 * CLOCK_SLACK_MS for the node's per-tick clock); a miss is "expired" when the TTL may have passed
 * (sentAt + ttl ≤ read reply time), otherwise "missing": allowed only if the group has evicted.
 *
 * Read-through groups (the soak's loader, loader.ts): where the key may be absent from the store
 * (never written, deleted, or its TTL may have passed) a read returns what the loader gives,
 * version 0 (no write uses it): `loaderLength`'s bytes, or NOT_FOUND for the keys it has no value
 * for. So a hit of version 0 is "loaded" there; where the last acknowledged write must still be
 * live it is "missing" (the value was evicted and loaded again: allowed only with evictions); any
 * other version 0, and a miss of a key the loader has a value for, is a violation.
 */

/** Tolerance for the node's clock (read once per event-loop tick; expiry timer every 100 ms). */
export const CLOCK_SLACK_MS = 250;

export interface Entry {
  version: number;
  sentAt: number;
  ackAt: number;
  ttlMs: number;
  deleted: boolean;
  unknown: boolean;
}

export type Verdict = "hit" | "loaded" | "raced" | "expired" | "missing" | "absent" | "unknown" | "violation";

/** LOADED_VERSION is the version of every value the soak's loader returns. */
export const LOADED_VERSION = 0;

/**
 * loaderLength is the length of the value the soak's loader returns for `key`, or null when it
 * has none (NOT_FOUND): one key in ten. Both the loader and the ledger use it.
 */
export function loaderLength(key: string): number | null {
  const h = keyHash(key);
  return h % 10 === 0 ? null : 64 + (h % 449);
}

/** loaderDelayMs is how long the soak's loader takes for `key`: 2–5 ms for one key in ten, else 0. */
export function loaderDelayMs(key: string): number {
  const h = keyHash(key) >>> 8;
  return h % 10 === 0 ? 2 + (h % 4) : 0;
}

function keyHash(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 16777619);
  return h >>> 0;
}

const enc = new TextEncoder();
const dec = new TextDecoder();
const HASH = 0x23; // '#'

export function encodeValue(key: string, version: number, length: number): Uint8Array {
  const head = enc.encode(`${key}#${version}#`);
  const out = new Uint8Array(Math.max(length, head.length));
  out.set(head);
  out.fill(filler(version, out.length), head.length);
  return out;
}

/** decodeVersion returns the version a value carries for `key`, or -1 if it is not one of ours. */
export function decodeVersion(key: string, value: Uint8Array): number {
  const first = value.indexOf(HASH, key.length);
  if (first !== key.length) return -1;
  const second = value.indexOf(HASH, first + 1);
  if (second < 0 || dec.decode(value.subarray(0, first)) !== key) return -1;
  const version = Number(dec.decode(value.subarray(first + 1, second)));
  if (!Number.isSafeInteger(version)) return -1;
  const f = filler(version, value.length);
  for (let i = second + 1; i < value.length; i++) if (value[i] !== f) return -1;
  return version;
}

function filler(version: number, length: number): number {
  return (Math.imul(version, 31) + length) & 0xff;
}

export class Ledger {
  readonly entries = new Map<string, Entry>();
  private readonly epochs = new Map<string, number>();
  private readonly inFlight = new Set<string>();
  readonly violations: string[] = [];
  violationCount = 0;

  busy(id: string): boolean {
    return this.inFlight.has(id);
  }

  /** epochOf is the key's write epoch for a read being sent now; -1 if a write is in flight. */
  epochOf(id: string): number {
    return this.inFlight.has(id) ? -1 : (this.epochs.get(id) ?? 0);
  }

  beginWrite(id: string): void {
    this.inFlight.add(id);
    this.epochs.set(id, (this.epochs.get(id) ?? 0) + 1);
  }

  /** endWrite records the outcome of a write: acknowledged (`ok`) or not (the key is unknown). */
  endWrite(id: string, ok: boolean, e: Omit<Entry, "unknown">): void {
    this.inFlight.delete(id);
    this.entries.set(id, ok ? { ...e, unknown: false } : { ...e, unknown: true });
  }

  violation(what: string): void {
    this.violationCount++;
    if (this.violations.length < 20) this.violations.push(what);
  }

  /**
   * judge classifies a read of `id` (ledger id) for key `key`: `value` undefined = a miss;
   * `epoch` from epochOf at send time; `sentAt`/`recvAt` bracket the read.
   */
  judge(id: string, key: string, value: Uint8Array | undefined, epoch: number, sentAt: number, recvAt: number, readThrough = false): Verdict {
    let version = -1;
    if (value !== undefined) {
      version = decodeVersion(key, value);
      if (version < 0) return this.fail(`${id}: corrupt or foreign value (${value.length} B)`);
    }
    const loadable = readThrough ? loaderLength(key) : null;
    if (readThrough) {
      if (version === LOADED_VERSION && value!.length !== loadable) return this.fail(`${id}: a loaded value of ${value!.length} B, the loader gives ${loadable ?? "none"}`);
      if (value === undefined && loadable !== null) return this.fail(`${id}: NOT_FOUND, the loader has a value`);
    }
    if (epoch < 0 || epoch !== (this.epochs.get(id) ?? 0) || this.inFlight.has(id)) return "raced";
    const loaded = readThrough && version === LOADED_VERSION;
    const e = this.entries.get(id);
    if (e === undefined) return value === undefined ? "absent" : loaded ? "loaded" : this.fail(`${id}: hit on a key never written`);
    if (e.unknown) return "unknown";
    if (e.deleted) return value === undefined ? "absent" : loaded ? "loaded" : this.fail(`${id}: hit after an acknowledged delete`);
    const mayHaveExpired = e.ttlMs > 0 && e.sentAt + e.ttlMs - CLOCK_SLACK_MS <= recvAt;
    if (loaded) return mayHaveExpired ? "loaded" : "missing";
    if (value !== undefined) {
      if (version !== e.version) return this.fail(`${id}: version ${version}, last acknowledged ${e.version}`);
      if (e.ttlMs > 0 && e.ackAt + e.ttlMs + CLOCK_SLACK_MS < sentAt) {
        return this.fail(`${id}: returned ${sentAt - e.ackAt - e.ttlMs} ms after its TTL of ${e.ttlMs} ms`);
      }
      return "hit";
    }
    return mayHaveExpired ? "expired" : "missing";
  }

  private fail(what: string): Verdict {
    this.violation(what);
    return "violation";
  }
}
