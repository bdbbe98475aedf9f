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
    const version = this.readVersion(id, key, value, readThrough);
    if (version === "violation") return version;
    if (epoch < 0 || epoch !== this.epochOf(id)) return "raced"; // (a write in flight when it was sent, or since)
    const loaded = readThrough && version === LOADED_VERSION;
    const e = this.entries.get(id);
    if (e === undefined) return value === undefined ? "absent" : loaded ? "loaded" : this.fail(id, `${id}: hit on a key never written`);
    if (e.unknown) return "unknown";
    if (e.deleted) return value === undefined ? "absent" : loaded ? "loaded" : this.fail(id, `${id}: hit after an acknowledged delete`);
    const mayHaveExpired = e.ttlMs > 0 && e.sentAt + e.ttlMs - CLOCK_SLACK_MS <= recvAt;
    if (loaded) return mayHaveExpired ? "loaded" : "missing";
    if (value !== undefined) {
      if (version !== e.version) return this.fail(id, `${id}: version ${version}, last acknowledged ${e.version}`);
      if (e.ttlMs > 0 && e.ackAt + e.ttlMs + CLOCK_SLACK_MS < sentAt) {
        return this.fail(id, `${id}: returned ${sentAt - e.ackAt - e.ttlMs} ms after its TTL of ${e.ttlMs} ms`);
      }
      return "hit";
    }
    return mayHaveExpired ? "expired" : "missing";
  }

  /**
   * readVersion is the version a read's `value` carries (-1: a miss), or a violation: a corrupt
   * or foreign value, or, in a read-through group, a value or a NOT_FOUND the loader cannot have
   * given.
   */
  protected readVersion(id: string, key: string, value: Uint8Array | undefined, readThrough: boolean): number | "violation" {
    if (value === undefined) return readThrough && loaderLength(key) !== null ? this.fail(id, `${id}: NOT_FOUND, the loader has a value`) : -1;
    const version = decodeVersion(key, value);
    if (version < 0) return this.fail(id, `${id}: corrupt or foreign value (${value.length} B)`);
    if (readThrough && version === LOADED_VERSION && value.length !== loaderLength(key)) {
      return this.fail(id, `${id}: a loaded value of ${value.length} B, the loader gives ${loaderLength(key) ?? "none"}`);
    }
    return version;
  }

  /** fail records a violation of the read of `id`. */
  protected fail(_id: string, what: string): "violation" {
    this.violation(what);
    return "violation";
  }
}

// ---------------------------------------------------------------------------------------------
// Cluster rules (bench/soak/cluster-soak.ts): the same ledger, judged for a cluster of nodes.

/**
 * ClusterVerdict is a read's class under the cluster rules: the single-node verdicts, plus
 * "stale" (an older version than the last acknowledged one, or a hit after an acknowledged
 * delete, or the loader's value where a write must be live, read less than the staleness bound
 * after the write that superseded it: a mirrored copy whose invalidation is still travelling or
 * was lost), "lost" (missing, or loaded again, because the key's owner restarted, empty,
 * after the write was acknowledged), and "fallback" (in a read-through group, the loader's value
 * or its NOT_FOUND where a write must be live, read while the key's owner was unreachable or
 * soon after: the node loaded the key itself, groupcache's fallback, and keeps that value in its
 * mirror for at most the group's TTL).
 */
export type ClusterVerdict = Verdict | "stale" | "lost" | "fallback";
export const CLUSTER_VERDICTS: readonly ClusterVerdict[] = ["hit", "loaded", "stale", "raced", "expired", "missing", "lost", "fallback", "absent", "unknown", "violation"];

/** WriteRecord is one write of a key as the cluster ledger keeps it (acknowledged or not). */
export interface WriteRecord {
  version: number;
  deleted: boolean;
  sentAt: number;
  /** endAt: when it was acknowledged (acked) or failed */
  endAt: number;
  ttlMs: number;
  /** acked: acknowledged; a failed write (not acked) may or may not have been applied */
  acked: boolean;
  /** via: the node the write was sent through (ClusterRules.writeVia), if known */
  via?: number;
}

export interface ClusterRules {
  /**
   * staleBoundMs: how long after the write that superseded it an older version may still be read
   * (see ClusterLedger). The soak takes the nodes' --mirror-ttl + --peer-timeout + 1 s.
   */
  staleBoundMs: number;
  /**
   * loadedStaleBoundMs: the same bound for a copy of the loader's value (default staleBoundMs):
   * a loaded value lives no longer than its group's TTL, in the mirror too, so with a TTL shorter
   * than --mirror-ttl its copies are stale for less (the soak takes min(TTL, --mirror-ttl) +
   * --peer-timeout + 1 s). Past it, the loader's value where a write must be live was loaded
   * again after the write's value was evicted: "missing".
   */
  loadedStaleBoundMs?: number;
  /**
   * lost tells whether `key`'s owner restarted (came back with an empty store) after a write
   * acknowledged at `ackAt`, as seen by a read sent at `readSentAt`; absent: no restarts.
   */
  lost?: (key: string, ackAt: number, readSentAt: number) => boolean;
  /**
   * ownerUnreachable tells whether `key`'s owner was down or stalled at some time in [from, to]
   * (its peers then load the key themselves: "fallback"); absent: never.
   */
  ownerUnreachable?: (key: string, from: number, to: number) => boolean;
  /** onViolation is called with the ledger id and the description of every violation. */
  onViolation?: (id: string, what: string) => void;
  /**
   * writeVia names the node the write of `id` ending now was sent through (endWrite asks), and
   * readVia the node a read's value came through (the value's own object). With both, a stale
   * read is checked against the node that forwarded the superseding write: that node drops its
   * own copy when it forwards the write and again when the owner answers, and keeps out the
   * answers of Gets sent before (design.md, "Cluster"), so an old version through it is a
   * violation, and the loader's value through it was loaded after the write's value was lost
   * (evicted: "missing"), not a copy from before.
   */
  writeVia?: (id: string) => number | undefined;
  readVia?: (value: Uint8Array) => number | undefined;
}

/** StaleRead describes one stale read: the group, its age (ms after the superseding ack), whether it was the loader's value, and what was read. */
export interface StaleRead {
  group: string;
  ageMs: number;
  loaded: boolean;
  what: string;
}

/**
 * ClusterLedger is the ledger of a soak against a cluster, whose rules differ from a lone node's
 * in these ways (design.md, "Cluster"):
 *
 * - Mirrors: a node keeps hot copies of keys other nodes own, and the owner tells the others to
 *   drop theirs after it acknowledged a write (PeerInvalidate, sent once, not retried). A read
 *   through another node may then return the version before the write until the invalidation
 *   arrives, or, if it was lost, until the copy expires: no later than `--mirror-ttl` after it
 *   was filled, and a copy of a version is filled at the latest when the forward that read it
 *   comes back (within `--peer-timeout` of the write that superseded it). So a hit of a version
 *   older than the last acknowledged one (or after an acknowledged delete) is "stale" — allowed,
 *   counted, its age kept — when it was read
 *   less than `staleBoundMs` after the first acknowledged write that superseded it (age = read
 *   sent − that write's acknowledgement, a lower bound of how old the copy was); older than that
 *   it is a violation, as is an old version hit past its own TTL (a copy never outlives the
 *   owner's TTL), and, given the nodes reads and writes went through (writeVia, readVia), an old
 *   version read through the node that forwarded the superseding write. Versions of writes that
 *   failed (the key `unknown`) count as written: they may have been applied.
 * - Loaded copies: in a read-through group, the loader's value where a write must be live is
 *   "stale" if the key may have been absent before that write (never written, deleted, past its
 *   TTL, or a write failed: `loadedUntil`) and it is read less than `loadedStaleBoundMs` after
 *   it, not through the writing node; else it was loaded again after an eviction: "missing".
 * - Restarts: a restarted node comes back empty, so a key whose owner restarted after the
 *   key's last acknowledged write may be missing (or loaded again) with no eviction: "lost".
 * - Unreachable owners: in a read-through group the other nodes then load the key themselves
 *   and keep the value in their mirrors for its TTL, so the loader's value (or its NOT_FOUND)
 *   where a write must be live is "fallback" while the owner is unreachable (`ownerUnreachable`)
 *   and up to `loadedStaleBoundMs` after.
 *
 * Everything else stays as in `Ledger.judge`: a value never written (or not the loader's in a
 * read-through group), a corrupt value, a hit of the last version past its TTL, NOT_FOUND of a
 * key the loader has a value for, an old version beyond the bound: violations. Missing keys that
 * are not lost need evidence of eviction on the key's owner (the soak checks it).
 *
 * Keys are written by one worker each, so their versions increase with time; each key keeps its
 * writes (`history`) until the write that superseded them is older than the bound plus
 * HISTORY_MARGIN_MS (then any read of them is a violation anyway).
 *
 * `judge` (what the soak's Workers call) judges under these rules, tallies the verdict per group
 * in `tally`, and returns the nearest single-node verdict (stale → hit, lost → missing,
 * fallback → loaded) for the caller's own tally; `judgeCluster` judges without tallying.
 */
export class ClusterLedger extends Ledger {
  readonly history = new Map<string, WriteRecord[]>();
  /** trimmed: keys whose oldest writes were dropped from `history` (superseded long ago). */
  private readonly trimmed = new Set<string>();
  /** tally: verdicts of `judge` per group (the reads during the run). */
  readonly tally = new Map<string, Record<ClusterVerdict, number>>();
  /** staleAges: every stale read (group, age, loader's value or not), for the percentiles; staleExamples: the first few. */
  readonly staleAges: { group: string; ageMs: number; loaded: boolean }[] = [];
  readonly staleExamples: StaleRead[] = [];
  /** detail describes the last verdict of judgeCluster when it was stale or lost. */
  detail = "";
  /** staleBy is, after a stale verdict of judgeCluster, the write that superseded what was read. */
  staleBy: WriteRecord | undefined;
  /** readVia: the node the value being judged came through, if known (ClusterRules.readVia). */
  private readVia: number | undefined;

  constructor(readonly rules: ClusterRules) {
    super();
  }

  override endWrite(id: string, ok: boolean, e: Omit<Entry, "unknown">): void {
    super.endWrite(id, ok, e);
    let recs = this.history.get(id);
    if (recs === undefined) this.history.set(id, (recs = []));
    const rec: WriteRecord = { version: e.version, deleted: e.deleted, sentAt: e.sentAt, endAt: e.ackAt, ttlMs: e.ttlMs, acked: ok };
    const via = this.rules.writeVia?.(id);
    if (via !== undefined) rec.via = via;
    recs.push(rec);
    // Drop the prefix superseded (by an acknowledged write) longer ago than the bound + margin.
    const horizon = e.ackAt - this.rules.staleBoundMs - HISTORY_MARGIN_MS;
    let keep = 0;
    for (let i = 0; i < recs.length - 1; i++) {
      const by = supersededBy(recs, i);
      if (by === undefined || by.endAt >= horizon) break;
      keep = i + 1;
    }
    if (keep > 0) {
      recs.splice(0, keep);
      this.trimmed.add(id);
    }
  }

  override judge(id: string, key: string, value: Uint8Array | undefined, epoch: number, sentAt: number, recvAt: number, readThrough = false): Verdict {
    const v = this.judgeCluster(id, key, value, epoch, sentAt, recvAt, readThrough);
    tallyCluster(this.tally, id.slice(0, id.indexOf("/")), v);
    return v === "stale" ? "hit" : v === "lost" ? "missing" : v === "fallback" ? "loaded" : v;
  }

  /** judgeCluster classifies a read as `judge` does, under the cluster rules (class comment). */
  judgeCluster(id: string, key: string, value: Uint8Array | undefined, epoch: number, sentAt: number, recvAt: number, readThrough = false): ClusterVerdict {
    this.detail = "";
    this.staleBy = undefined;
    this.readVia = value === undefined ? undefined : this.rules.readVia?.(value);
    const version = this.readVersion(id, key, value, readThrough);
    if (version === "violation") return version;
    if (epoch < 0 || epoch !== this.epochOf(id)) return "raced"; // (a write in flight when it was sent, or since)
    const loaded = readThrough && version === LOADED_VERSION;
    const e = this.entries.get(id);
    if (e === undefined) return value === undefined ? "absent" : loaded ? "loaded" : this.fail(id, `${id}: hit of version ${version} on a key never written`);
    if (e.unknown) return "unknown";
    const mayHaveExpired = !e.deleted && e.ttlMs > 0 && e.sentAt + e.ttlMs - CLOCK_SLACK_MS <= recvAt;
    if (value === undefined) {
      if (e.deleted) return "absent";
      if (mayHaveExpired) return "expired";
      if (readThrough && this.lostOrMissing(key, e, sentAt) === "missing" && this.fallback(key, sentAt, recvAt)) return "fallback";
      return this.lostOrMissing(key, e, sentAt);
    }
    if (loaded) {
      if (e.deleted || mayHaveExpired) return "loaded";
      // A write must be live: the loader's value is either a copy from before that write (stale),
      // or loaded again after the write's value was lost (restart: "lost") or evicted ("missing").
      // It can be a copy only of a time the key may have been absent (loadedUntil), and not
      // through the node that forwarded the write that ended that time (see readVia).
      if (this.rules.lost?.(key, e.ackAt, sentAt) === true) return this.lostOrMissing(key, e, sentAt);
      if (this.fallback(key, sentAt, recvAt)) return "fallback";
      const by = this.loadedUntil(id);
      if (by === undefined) return "missing";
      if (this.readVia !== undefined && this.readVia === by.via) return "missing";
      const age = sentAt - by.endAt;
      if (age < (this.rules.loadedStaleBoundMs ?? this.rules.staleBoundMs)) {
        return this.stale(id, age, `${id}: the loader's value ${age} ms after v${by.version} ended the key's absence (last: v${e.version})`, by, true);
      }
      return "missing";
    }
    if (!e.deleted && version === e.version) {
      if (e.ttlMs > 0 && e.ackAt + e.ttlMs + CLOCK_SLACK_MS < sentAt) {
        return this.fail(id, `${id}: returned ${sentAt - e.ackAt - e.ttlMs} ms after its TTL of ${e.ttlMs} ms`);
      }
      return "hit";
    }
    // An older version (or any version after a delete).
    const recs = this.history.get(id) ?? [];
    const at = recs.findIndex((r) => !r.deleted && r.version === version);
    const last = e.deleted ? "an acknowledged delete" : `v${e.version}`;
    if (at < 0) {
      const oldest = recs.find((r) => !r.deleted);
      const long = this.trimmed.has(id) && oldest !== undefined && version < oldest.version;
      return this.fail(id, long
        ? `${id}: v${version}, superseded more than ${this.rules.staleBoundMs + HISTORY_MARGIN_MS} ms before the read (last: ${last})`
        : `${id}: v${version}, a version never written (last: ${last})`);
    }
    const own = recs[at]!;
    const by = supersededBy(recs, at);
    if (by === undefined) return this.fail(id, `${id}: v${version} read, ledger has no later acknowledged write (last: ${last})`);
    const age = sentAt - by.endAt;
    const byWhat = by.deleted ? "the delete" : `v${by.version}`;
    if (own.acked && own.ttlMs > 0 && own.endAt + own.ttlMs + CLOCK_SLACK_MS < sentAt) {
      return this.fail(id, `${id}: old v${version} returned ${sentAt - own.endAt - own.ttlMs} ms after its own TTL of ${own.ttlMs} ms (superseded by ${byWhat} ${age} ms before; last: ${last})`);
    }
    if (this.readVia !== undefined && this.readVia === by.via) {
      return this.fail(id, `${id}: v${version} ${age} ms after ${byWhat} was acknowledged through that same node, which drops its copy when it forwards a write (last: ${last})`);
    }
    if (age < this.rules.staleBoundMs) return this.stale(id, age, `${id}: v${version} ${age} ms after ${byWhat} was acknowledged (last: ${last})`, by, false);
    return this.fail(id, `${id}: v${version} ${age} ms after ${byWhat} was acknowledged, over the staleness bound of ${this.rules.staleBoundMs} ms (last: ${last})`);
  }

  /** fallback: the key's owner was unreachable during the read or up to a loaded copy's life before it. */
  private fallback(key: string, sentAt: number, recvAt: number): boolean {
    return this.rules.ownerUnreachable?.(key, sentAt - (this.rules.loadedStaleBoundMs ?? this.rules.staleBoundMs), recvAt) === true;
  }

  private lostOrMissing(key: string, e: Entry, sentAt: number): ClusterVerdict {
    if (this.rules.lost?.(key, e.ackAt, sentAt) === true) {
      this.detail = "lost";
      return "lost";
    }
    return "missing";
  }

  /**
   * loadedUntil is the acknowledged write that last ended a time the key may have been absent
   * (so its loader's value may have been read and copied then): the first acknowledged write at
   * or after the latest one before which the key was never written (in the history kept),
   * deleted, past its TTL, or written by a write that failed. Undefined: none in the history.
   */
  private loadedUntil(id: string): WriteRecord | undefined {
    const recs = this.history.get(id) ?? [];
    for (let i = recs.length - 1; i >= 0; i--) {
      const r = recs[i]!;
      const prev = recs[i - 1];
      const absentBefore = prev === undefined
        ? !this.trimmed.has(id)
        : prev.deleted || !prev.acked || (prev.ttlMs > 0 && prev.sentAt + prev.ttlMs - CLOCK_SLACK_MS <= r.endAt);
      if (!absentBefore) continue;
      for (let j = i; j < recs.length; j++) if (recs[j]!.acked) return recs[j];
      return undefined;
    }
    return undefined;
  }

  private stale(id: string, ageMs: number, what: string, by: WriteRecord, loaded: boolean): ClusterVerdict {
    const group = id.slice(0, id.indexOf("/"));
    this.staleAges.push({ group, ageMs, loaded });
    if (this.staleExamples.filter((x) => x.loaded === loaded).length < 10) this.staleExamples.push({ group, ageMs, loaded, what });
    this.detail = what;
    this.staleBy = by;
    return "stale";
  }

  protected override fail(id: string, what: string): "violation" {
    const text = this.readVia === undefined ? what : `${what} (read through node ${this.readVia})`;
    super.fail(id, text);
    this.rules.onViolation?.(id, text);
    return "violation";
  }

}

/** HISTORY_MARGIN_MS: writes are kept this long past the staleness bound (ClusterLedger). */
export const HISTORY_MARGIN_MS = 5_000;

/** supersededBy is the first acknowledged write after recs[i], if any. */
function supersededBy(recs: readonly WriteRecord[], i: number): WriteRecord | undefined {
  for (let j = i + 1; j < recs.length; j++) if (recs[j]!.acked) return recs[j];
  return undefined;
}

/** tallyCluster counts one cluster verdict of `group`. */
export function tallyCluster(t: Map<string, Record<ClusterVerdict, number>>, group: string, v: ClusterVerdict): void {
  let r = t.get(group);
  if (r === undefined) t.set(group, (r = Object.fromEntries(CLUSTER_VERDICTS.map((k) => [k, 0])) as Record<ClusterVerdict, number>));
  r[v]++;
}
