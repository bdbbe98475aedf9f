/**
 * Cluster soak: three real node processes under mixed load for a set time, every read checked
 * against what the clients had acknowledged, to find consistency bugs in the cluster path
 * (forwarding to key owners, the mirror of hot keys owned elsewhere, invalidation, the
 * look-ahead, read-through loads, a node restart).
 *
 *   bun bench/soak/cluster-soak.ts --seconds 30 --seed N       (default 60 s)
 *   options: --workers 6 --lanes 8 --churners 3 --roamers 2 --roam-lanes 1 (per node)
 *            --readers 2 --read-lanes 4 (per node)
 *            --restart 1 (0: no restart) --restart-at 0.4 --pause 1 (0: no pause) --pause-at 0.7 --pause-ms 3000
 *            --mirror-ttl 10000 (ms) --mirror-share 0.25 --peer-timeout 1000 (ms)
 *            --stale-bound N (ms; default --mirror-ttl + --peer-timeout + 1000: see below)
 *            --snapshot 1 (every node keeps a snapshot: the restarted node comes back with what it held)
 *            --trace 1 (keep the last calls of every key, printed for a violation)
 *            --node-log DIR (every line each node logs, DIR/node-<i>.log)
 *
 * The nodes: `bun node.ts --port P --host 127.0.0.1 --self 127.0.0.1:P --peers <all three>
 * --memory 48mb --group soak:16mb:10s --group keep:8mb --group ld:16mb:3s --loaders
 * bench/soak/loader.ts --mirror-share 0.25 --mirror-ttl 10s --loader-threads 1 ...`, ports free
 * on 127.0.0.1. A mirror share of 0.25 gives every group a mirror (the default 1/8 leaves none
 * under 2 MiB, i.e. for groups under 16 MiB). The soak waits until every node answers and
 * forwards to every other.
 *
 * Load, all through one ClusterLedger (ledger.ts), each key written by one lane at a time:
 * - workers: the single-node soak's Workers (clients.ts), each with a CacheClient connected to ONE
 *   node (spread over the three; not ring-aware, so the nodes forward to the owners, serve from
 *   their mirrors and look ahead of parked Gets); keys w<n>, over key spaces larger than memory;
 * - roamers: a Worker whose lanes go through every node (one client per node), over small key
 *   spaces (ROAM_GROUPS, keys r<n>): a key is written through one node and read through the others;
 * - readers: Gets only, of the roamers' keys, each through a node picked at random: the roamers'
 *   keys are read far more than written, so the nodes keep copies of them in their mirrors, and a
 *   roamer's write must invalidate them (copies are what can be stale);
 * - churners: connect to a node picked at random, make a few Worker calls, close (keys c<n>).
 * Every call is traced (the last TRACE_PER_KEY calls of each key: node, times, version read or
 * written, outcome), so a violation is shown with the raw sequence of calls and replies of its key.
 *
 * Faults (each on by default):
 * - restart (--restart 0 to leave it out): at --restart-at of the run (0.4) node (seed mod 3) gets
 *   SIGTERM, the soak waits for its exit (code 0 expected) and starts it again on the same port;
 *   it comes back empty, or with --snapshot 1 with the snapshot it wrote at its SIGTERM (each node
 *   `--snapshot <tmp dir>/node-<i>.snap`): then an older version than one it acknowledged before
 *   the restart is judged as any read is (stale within the bound, past it a violation). The window runs from the SIGTERM to RESTART_GRACE_MS after the node
 *   listens again (its peers' and the clients' probes find it up within ~0.5 s);
 * - pause (--pause 0 to leave it out): at --pause-at (0.7) node (seed + 1 mod 3) gets SIGSTOP for
 *   --pause-ms (3 s), then SIGCONT: its peers time out on it, mark it down and drop the
 *   invalidations they owe it until a probe finds it up again, so its mirror may serve stale
 *   copies afterwards (for at most --mirror-ttl). Window: SIGSTOP to RESTART_GRACE_MS after SIGCONT.
 * Calls failing in a window with PEER_UNAVAILABLE (node down, connection lost, timeout, peer
 * marked down) are expected: counted apart, not failures; a write that fails leaves its key
 * `unknown` in the ledger as ever.
 *
 * Reads are judged by ClusterLedger (ledger.ts): as on one node, except that
 * - an older version (or a hit after a delete) read less than the staleness bound after the write
 *   that superseded it is "stale": allowed, counted, ages reported; past the bound, or read
 *   through the very node that forwarded the superseding write (it drops its own copy when it
 *   forwards a write), a violation. Staleness bound = --mirror-ttl + --peer-timeout + 1 s
 *   (STALE_SLACK_MS): a copy is filled at the latest when the forward that read it is answered
 *   (within the peer timeout of the write) and lives at most --mirror-ttl; the last second is for
 *   clocks read once per tick and scheduling. For the loader's value (ld) where a write must be
 *   live the bound is min(ld's TTL 3 s, --mirror-ttl) + the same (a loaded value never outlives
 *   its TTL); past it, or through the writing node, it was loaded again after an eviction: "missing";
 * - a key whose owner restarted after its last acknowledged write may be missing or loaded again:
 *   "lost";
 * - in ld, the loader's value (or NOT_FOUND of a key it has none for) where a write must be live,
 *   read while the key's owner was in a fault window (or a loaded copy's life after it) is
 *   "fallback": the node loaded the key itself, as designed when the owner is unreachable.
 *
 * Checks (any failure → exit 1):
 *  1. errors: no failed call on the well-behaved kinds outside the fault windows, and inside them
 *     none but PEER_UNAVAILABLE;
 *  2. reads: no violation during the run nor in the final read-back of every key written, through
 *     every node; a "missing" key (not lost, not expired) needs evictions in its group on its
 *     owner (NodeStats `group.<g>.store.evictions`);
 *  3. per node: Stats of every group agree (hits + misses = total: a Get a node answers from its
 *     mirror is a hit there, one it forwards a miss), the node stays up (but for the restart) and
 *     exits 0 on SIGTERM (the restarted one too);
 *  4. progress: every kind made calls, the faults happened, and the workers of the restarted node
 *     made calls after its window.
 *
 * Prints a summary table, then one `CLUSTER-SOAK-SUMMARY <json>` line (test/cluster/cluster-soak.test.ts).
 */
import { loadavg } from "node:os";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CacheClient, type ClientOptions, type GetResult, type PeerOption } from "../../src/client/cache-client.ts";
import { Ring } from "../../src/cluster/ring.ts";
import { CacheError, ERROR_CODE } from "../../src/protocol/errors.ts";
import { Prng } from "../../test/support/prng.ts";
import { freePorts } from "../../test/support/node-process.ts";
import { CLOCK_SLACK_MS, CLUSTER_VERDICTS, ClusterLedger, type ClusterVerdict, decodeVersion, tallyCluster } from "./ledger.ts";
import { KindStats, Worker, churn, describe, isMiss, readBack, type GroupPlan, type Stop, type Verdicts } from "./clients.ts";
import { flag } from "./cli.ts";
import { NodeProcess } from "./node-process.ts";
import { nodeFigures } from "./node-figures.ts";

const GROUPS: GroupPlan[] = [
  { name: "soak", keys: 200_000, defaultTtlMs: 10_000, share: 0.6, minValue: 256, maxValue: 4096 },
  { name: "keep", keys: 30_000, defaultTtlMs: 0, share: 0.25, minValue: 100, maxValue: 1024 },
  { name: "ld", keys: 4_000, defaultTtlMs: 3_000, share: 0.15, minValue: 100, maxValue: 512, readThrough: true },
];
/**
 * ROAM_GROUPS: the roamers' key spaces (prefix "r"), small so that their keys are read again
 * through every node soon: hot enough for the mirrors' LRU-K admission, which is what makes
 * copies, and so stale copies, to judge.
 */
const ROAM_GROUPS: GroupPlan[] = [
  { name: "soak", keys: 6_000, defaultTtlMs: 10_000, share: 0.4, minValue: 256, maxValue: 4096 },
  { name: "keep", keys: 3_000, defaultTtlMs: 0, share: 0.35, minValue: 100, maxValue: 1024 },
  { name: "ld", keys: 1_000, defaultTtlMs: 3_000, share: 0.25, minValue: 100, maxValue: 512, readThrough: true },
];
/** STALE_SLACK_MS: added to --mirror-ttl + --peer-timeout for the staleness bound (file header). */
const STALE_SLACK_MS = 1_000;
/** RESTART_GRACE_MS: the restart window lasts this long after the restarted node listens. */
const RESTART_GRACE_MS = 3_000;
/** TRACE_PER_KEY: calls kept per key for the violation reports. */
const TRACE_PER_KEY = 12;
/** ERROR_PAUSE_MS: a call that fails is answered this much later (a down node fails calls at once). */
const ERROR_PAUSE_MS = 10;
const STATS_NOTE = "hits + misses = total per group and node";

function stringFlag(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? undefined : process.argv[i + 1];
}

const seconds = flag("seconds", 60);
const seed = flag("seed", (Date.now() ^ (Math.random() * 2 ** 31)) >>> 0) >>> 0;
const workers = flag("workers", 6);
const lanes = flag("lanes", 8);
const churners = flag("churners", 3);
const roamers = flag("roamers", 2);
const roamLanes = flag("roam-lanes", 1);
const readers = flag("readers", 2);
const readLanes = flag("read-lanes", 4);
const restart = flag("restart", 1) !== 0;
const restartAt = flag("restart-at", 0.4);
const pause = flag("pause", 1) !== 0;
const pauseAt = flag("pause-at", 0.7);
const pauseMs = flag("pause-ms", 3_000);
const mirrorTtlMs = flag("mirror-ttl", 10_000);
const mirrorShare = flag("mirror-share", 0.25);
const peerTimeoutMs = flag("peer-timeout", 1_000);
const tracing = flag("trace", 1) !== 0;
const logDir = stringFlag("node-log");
/** snapshotDir: with --snapshot 1, where the nodes keep their snapshots (removed at the end). */
const snapshotDir = flag("snapshot", 0) !== 0 ? mkdtempSync(join(tmpdir(), "cluster-soak-")) : undefined;
/** --stale-bound N overrides the staleness bound (ms), to see what a tighter one would call a violation. */
const staleBoundMs = flag("stale-bound", mirrorTtlMs + peerTimeoutMs + STALE_SLACK_MS);
/** loadedStaleBoundMs: the same for copies of the loader's values, which live at most the ld group's TTL. */
const LD_TTL_MS = 3_000;
const loadedStaleBoundMs = Math.min(LD_TTL_MS, mirrorTtlMs) + peerTimeoutMs + STALE_SLACK_MS;
const NODES = 3;

const failures: string[] = [];
const fail = (what: string): void => void failures.push(what);

console.log(`cluster-soak: ${seconds} s, seed ${seed}, ${NODES} nodes, ${workers} workers × ${lanes} lanes, ${roamers} roamers × ${roamLanes} lanes a node, ${readers} readers × ${readLanes} lanes a node, ${churners} churners; restart ${restart ? `at ${restartAt}` : "off"}, pause ${pause ? `at ${pauseAt} for ${pauseMs} ms` : "off"}; staleness bound ${staleBoundMs} ms (loader's values ${loadedStaleBoundMs} ms); load average ${loadavg().map((x) => x.toFixed(2)).join(" ")}`);

// ---------------------------------------------------------------------------------------------
// The nodes

const ports = freePorts(NODES);
const ids = ports.map((p) => `127.0.0.1:${p}`);
const ring = new Ring();
for (const id of ids) ring.add(id);
const enc = new TextEncoder();
const ownerOf = (key: string): number => ids.indexOf(ring.owner(enc.encode(key))!);

function nodeArgs(i: number): string[] {
  return [
    "--port", String(ports[i]), "--host", "127.0.0.1", "--self", ids[i]!, "--peers", ids.join(","),
    "--memory", "48mb", "--group", "soak:16mb:10s", "--group", "keep:8mb", "--group", "ld:16mb:3s",
    "--loaders", "bench/soak/loader.ts", "--loader-threads", "1", "--loader-queue", "1024",
    "--mirror-share", String(mirrorShare), "--mirror-ttl", `${mirrorTtlMs}ms`, "--peer-timeout", `${peerTimeoutMs}ms`,
    "--log-level", "info",
    ...(snapshotDir === undefined ? [] : ["--snapshot", `${snapshotDir}/node-${i}.snap`]),
  ];
}
if (logDir !== undefined) mkdirSync(logDir, { recursive: true });
let restarts = 0;
const startNode = (i: number): Promise<NodeProcess> =>
  NodeProcess.start(nodeArgs(i), logDir === undefined ? undefined : `${logDir}/node-${i}${restarts > 0 ? `-r${restarts}` : ""}.log`);
const nodes: NodeProcess[] = await Promise.all(ids.map((_, i) => startNode(i)));
console.log(`cluster-soak: nodes ${nodes.map((n, i) => `${i}: pid ${n.pid} on ${ids[i]}`).join(", ")}`);

/** ready waits until node i answers and serves, through itself, a key owned by every node. */
async function ready(i: number, deadlineMs = 15_000): Promise<void> {
  const until = Date.now() + deadlineMs;
  await using c = new CacheClient({ host: "127.0.0.1", port: ports[i]!, timeoutMs: 2_000, connectTimeoutMs: 1_000 });
  for (let owner = 0; owner < NODES; owner++) {
    const key = probeKey(owner);
    for (;;) {
      try {
        await c.set("keep", key, `probe ${owner}`);
        await c.get("keep", key);
        break;
      } catch (e) {
        if (Date.now() > until) throw new Error(`node ${i} does not serve a key of node ${owner}: ${describe(e)}`);
        await Bun.sleep(100);
      }
    }
  }
}
/** probeKey is a key (never a worker's) that node `owner` owns. */
function probeKey(owner: number): string {
  for (let n = 0; ; n++) if (ownerOf(`probe-${n}`) === owner) return `probe-${n}`;
}
await Promise.all(nodes.map((_, i) => ready(i)));

// ---------------------------------------------------------------------------------------------
// Restart window, ledger, traces, clients

interface RestartRecord { node: number; downAt: number; exitedAt: number; exitCode: number | null; upAt: number; windowEnd: number }
let restartRecord: RestartRecord | undefined;
interface PauseRecord { node: number; stopAt: number; contAt: number; windowEnd: number }
let pauseRecord: PauseRecord | undefined;
/**
 * faultWindow names the fault window `t` falls in: the restart's (from the SIGTERM; open-ended
 * until the node is up) or the pause's (from the SIGSTOP; open-ended until the SIGCONT).
 */
function faultWindow(t: number): "restart" | "pause" | undefined {
  const r = restartRecord;
  if (r !== undefined && t >= r.downAt && (r.upAt === 0 || t <= r.windowEnd)) return "restart";
  const p = pauseRecord;
  if (p !== undefined && t >= p.stopAt && (p.contAt === 0 || t <= p.windowEnd)) return "pause";
  return undefined;
}

const started = Date.now();
const rel = (t: number): string => ((t - started) / 1000).toFixed(3);
/** valueNode: the node each value a read returned came through (ClusterRules.readVia). */
const valueNode = new WeakMap<Uint8Array, number>();
/** writeNode: the node the last write of each key was sent through (ClusterRules.writeVia). */
const writeNode = new Map<string, number>();
const violationTraces: { id: string; what: string; owner: number; calls: string[] }[] = [];
/** missingExamples: the first reads judged "missing" (printed when their group shows no eviction). */
const missingExamples = new Map<string, { id: string; what: string; owner: number; calls: string[] }[]>();

/**
 * Traces: the last TRACE_PER_KEY calls of every key, as 32-bit integers (some 400 bytes a key: the
 * soak touches some 200k keys): per call, TRACE_FIELDS of them, in a ring per key.
 */
const OP_NAMES = ["get", "getMulti", "set", "delete", "setMulti"] as const;
type Op = 0 | 1 | 2 | 3 | 4;
const [OP_GET, OP_GET_MULTI, OP_SET, OP_DELETE, OP_SET_MULTI] = [0, 1, 2, 3, 4] as const;
/** Outcomes: OK (a hit, a write done, a delete that removed), MISS (NOT_FOUND, absent, a delete of nothing), else ERROR_BASE + the error code. */
const OK = 0;
const MISS = 1;
const ERROR_BASE = 100;
const TRACE_FIELDS = 8; // sent, answered (ms from the start), node, op, version (read or written; -1 none), outcome, ttl (-2: not given), batch size
const traces = new Map<string, { calls: Int32Array; n: number }>();

function trace(id: string, t0: number, node: number, op: Op, version: number, outcome: number, ttl: number, batch: number): void {
  if (!tracing) return;
  let t = traces.get(id);
  if (t === undefined) traces.set(id, (t = { calls: new Int32Array(TRACE_PER_KEY * TRACE_FIELDS), n: 0 }));
  const o = (t.n++ % TRACE_PER_KEY) * TRACE_FIELDS;
  const c = t.calls;
  c[o] = t0 - started;
  c[o + 1] = Date.now() - started;
  c[o + 2] = node;
  c[o + 3] = op;
  c[o + 4] = version;
  c[o + 5] = outcome;
  c[o + 6] = ttl;
  c[o + 7] = batch;
}

/** traceLines renders the calls kept for `id`, oldest first. */
function traceLines(id: string): string[] {
  const t = traces.get(id);
  if (t === undefined) return [];
  const out: string[] = [];
  const s = (ms: number): string => (ms / 1000).toFixed(3);
  for (let i = Math.max(0, t.n - TRACE_PER_KEY); i < t.n; i++) {
    const o = (i % TRACE_PER_KEY) * TRACE_FIELDS;
    const c = t.calls;
    const op = c[o + 3]! as Op;
    const version = c[o + 4]!;
    const result = c[o + 5]!;
    const ttl = c[o + 6]!;
    const name = `${OP_NAMES[op]}${op === OP_GET_MULTI || op === OP_SET_MULTI ? `×${c[o + 7]}` : ""}`;
    const written = op === OP_SET || op === OP_SET_MULTI ? ` v${version} ttl ${ttl === -2 ? "default" : ttl}` : "";
    const answer = result >= ERROR_BASE
      ? `ERR ${CODE_NAMES.get(result - ERROR_BASE) ?? result - ERROR_BASE}`
      : op === OP_GET || op === OP_GET_MULTI
        ? result === MISS ? (op === OP_GET ? "NOT_FOUND" : "absent") : `v${version}${op === OP_GET ? ` ttl ${ttl}` : ""}`
        : op === OP_DELETE ? String(result === OK) : "ok";
    out.push(`${s(c[o]!)}-${s(c[o + 1]!)} n${c[o + 2]} ${name}${written} → ${answer}`);
  }
  return out;
}

/** missingBy[group][owner]: reads judged "missing" (not lost) of keys each node owns. */
const missingBy = new Map<string, number[]>();
const errorOutcome = (e: unknown): number => (isMiss(e) ? MISS : ERROR_BASE + (e instanceof CacheError ? e.code : 0));
const versionIn = (key: string, v: string | Uint8Array): number => (typeof v === "string" ? -1 : decodeVersion(key, v));

class SoakLedger extends ClusterLedger {
  override judgeCluster(id: string, key: string, value: Uint8Array | undefined, epoch: number, sentAt: number, recvAt: number, readThrough = false): ClusterVerdict {
    const v = super.judgeCluster(id, key, value, epoch, sentAt, recvAt, readThrough);
    if (v === "missing") {
      const g = id.slice(0, id.indexOf("/"));
      const examples = missingExamples.get(g) ?? [];
      missingExamples.set(g, examples);
      if (examples.length < 4) examples.push({ id, what: `${id}: missing at ${rel(sentAt)}-${rel(recvAt)} s`, owner: ownerOf(key), calls: traceLines(id) });
      if (!missingBy.has(g)) missingBy.set(g, new Array<number>(NODES).fill(0));
      missingBy.get(g)![ownerOf(key)]!++;
    }
    return v;
  }
}
const ledger = new SoakLedger({
  staleBoundMs,
  loadedStaleBoundMs,
  lost: (key, ackAt, readSentAt) => {
    const r = restartRecord;
    return r !== undefined && ownerOf(key) === r.node && readSentAt >= r.downAt && (r.upAt === 0 || ackAt < r.upAt);
  },
  ownerUnreachable: (key, from, to) => {
    const owner = ownerOf(key);
    const r = restartRecord;
    const p = pauseRecord;
    const overlaps = (start: number, end: number): boolean => start <= to && (end === 0 || end >= from);
    return (r !== undefined && r.node === owner && overlaps(r.downAt, r.windowEnd)) || (p !== undefined && p.node === owner && overlaps(p.stopAt, p.windowEnd));
  },
  writeVia: (id) => writeNode.get(id),
  readVia: (value) => valueNode.get(value),
  onViolation: (id, what) => {
    if (violationTraces.length < 10) violationTraces.push({ id, what: `${what} [${faultsText()}]`, owner: ownerOf(id.slice(id.indexOf("/") + 1)), calls: traceLines(id) });
  },
});

/** faultsText describes the faults so far, for a violation's report. */
function faultsText(): string {
  const r = restartRecord;
  const p = pauseRecord;
  const parts: string[] = [];
  if (r !== undefined) parts.push(`node ${r.node} restarted: SIGTERM ${rel(r.downAt)} s, up ${r.upAt === 0 ? "—" : `${rel(r.upAt)} s`}`);
  if (p !== undefined) parts.push(`node ${p.node} paused ${rel(p.stopAt)}–${p.contAt === 0 ? "—" : `${rel(p.contAt)}`} s`);
  return parts.length === 0 ? "no fault yet" : parts.join("; ");
}

const CODE_NAMES = new Map<number, string>(Object.entries(ERROR_CODE).map(([k, v]) => [v, k]));
/** errorKind names an error by its code and message, numbers left out ("PEER_UNAVAILABLE: peer is down"). */
function errorKind(what: string): string {
  const m = /CacheError (\d+): (.*)$/.exec(what);
  const text = m ? `${CODE_NAMES.get(Number(m[1])) ?? m[1]}: ${m[2]}` : what.replace(/^\S+ \S+: /, "");
  return text.replace(/127\.0\.0\.1:\d+/g, "<node>").replace(/\d+/g, "N").slice(0, 120);
}

/** SoakStats: a client kind's figures, with the errors of the fault windows apart. */
class SoakStats extends KindStats {
  windowErrors = 0;
  readonly windowKinds: Record<string, number> = {};
  readonly errorKinds: Record<string, number> = {};
  /** opsAfter: calls completed after the restart window closed, per node. */
  readonly opsAfter = new Array<number>(NODES).fill(0);

  override error(what: string): void {
    const kind = errorKind(what);
    const fault = faultWindow(Date.now());
    if (fault !== undefined && kind.startsWith("PEER_UNAVAILABLE")) {
      this.windowErrors++;
      this.windowKinds[`${fault}: ${kind}`] = (this.windowKinds[`${fault}: ${kind}`] ?? 0) + 1;
      return;
    }
    this.errorKinds[kind] = (this.errorKinds[kind] ?? 0) + 1;
    super.error(`${rel(Date.now())} s ${what}`);
  }
}

/**
 * clientProtocolErrors counts the replies the soak's clients could not match (a malformed frame, a
 * seqid not in flight, a reply named for another method): each means a reply went to the wrong
 * connection or call, or came twice, and fails the run (a reply that went astray to a call of the
 * same method would be judged against the wrong key). protocolErrorSamples: the first few.
 */
let clientProtocolErrors = 0;
const protocolErrorSamples: string[] = [];
/** retiredNodes: the node processes a restart replaced (their ERROR lines are checked too). */
const retiredNodes: { n: number; node: NodeProcess }[] = [];

/**
 * TracedClient is a CacheClient of one node that traces the calls the soak's Workers make (their
 * key, node, send and reply times, version read or written, outcome) and pauses a little before
 * reporting a failure: a client that finds its node down rejects calls at once, and a lane that
 * retried at once would never yield to the event loop.
 */
class TracedClient extends CacheClient {
  constructor(readonly node: number, opts: ClientOptions, private readonly kindStats?: SoakStats) {
    super({ ...opts, onProtocolError: (reason) => {
      if (clientProtocolErrors++ < 5) protocolErrorSamples.push(`${rel(Date.now())} s, a client of node ${node}: ${reason}`);
    } });
  }

  private async failed(e: unknown): Promise<never> {
    if (!isMiss(e)) await Bun.sleep(ERROR_PAUSE_MS);
    throw e;
  }

  private done(): void {
    const r = restartRecord;
    if (this.kindStats !== undefined && r !== undefined && r.upAt > 0 && Date.now() > r.windowEnd) this.kindStats.opsAfter[this.node]!++;
  }

  override async get(group: string, key: string | Uint8Array, opts?: PeerOption): Promise<GetResult> {
    const t0 = Date.now();
    const k = String(key);
    try {
      const r = await super.get(group, key, opts);
      valueNode.set(r.value, this.node);
      trace(`${group}/${k}`, t0, this.node, OP_GET, decodeVersion(k, r.value), OK, r.ttlRemainingMs, 1);
      this.done();
      return r;
    } catch (e) {
      trace(`${group}/${k}`, t0, this.node, OP_GET, -1, errorOutcome(e), -2, 1);
      return this.failed(e);
    }
  }

  override async getMulti(group: string, keys: readonly (string | Uint8Array)[]): Promise<Map<string, Uint8Array>> {
    const t0 = Date.now();
    try {
      const found = await super.getMulti(group, keys);
      for (const key of keys) {
        const k = String(key);
        const v = found.get(k);
        if (v !== undefined) valueNode.set(v, this.node);
        trace(`${group}/${k}`, t0, this.node, OP_GET_MULTI, v === undefined ? -1 : decodeVersion(k, v), v === undefined ? MISS : OK, -2, keys.length);
      }
      this.done();
      return found;
    } catch (e) {
      for (const key of keys) trace(`${group}/${String(key)}`, t0, this.node, OP_GET_MULTI, -1, errorOutcome(e), -2, keys.length);
      return this.failed(e);
    }
  }

  override async set(group: string, key: string | Uint8Array, value: string | Uint8Array, ttlMs?: number, opts?: PeerOption): Promise<void> {
    const t0 = Date.now();
    const k = String(key);
    const id = `${group}/${k}`;
    writeNode.set(id, this.node);
    try {
      await super.set(group, key, value, ttlMs, opts);
      trace(id, t0, this.node, OP_SET, versionIn(k, value), OK, ttlMs ?? -2, 1);
      this.done();
    } catch (e) {
      trace(id, t0, this.node, OP_SET, versionIn(k, value), errorOutcome(e), ttlMs ?? -2, 1);
      return this.failed(e);
    }
  }

  override async delete(group: string, key: string | Uint8Array, opts?: PeerOption): Promise<boolean> {
    const t0 = Date.now();
    const id = `${group}/${String(key)}`;
    writeNode.set(id, this.node);
    try {
      const r = await super.delete(group, key, opts);
      trace(id, t0, this.node, OP_DELETE, -1, r ? OK : MISS, -2, 1);
      this.done();
      return r;
    } catch (e) {
      trace(id, t0, this.node, OP_DELETE, -1, errorOutcome(e), -2, 1);
      return this.failed(e);
    }
  }

  override async setMulti(group: string, entries: Iterable<[string | Uint8Array, string | Uint8Array]>, ttlMs?: number, opts?: PeerOption): Promise<void> {
    const list = [...entries];
    for (const [key] of list) writeNode.set(`${group}/${String(key)}`, this.node);
    const t0 = Date.now();
    let result = OK;
    try {
      await super.setMulti(group, list, ttlMs, opts);
      this.done();
    } catch (e) {
      result = errorOutcome(e);
      return this.failed(e);
    } finally {
      for (const [key, v] of list) trace(`${group}/${String(key)}`, t0, this.node, OP_SET_MULTI, versionIn(String(key), v), result, ttlMs ?? -2, list.length);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The run

const stop: Stop = { until: started + seconds * 1000, stopped: false };
const running = (): boolean => !stop.stopped && Date.now() < stop.until;
const kinds = { worker: new SoakStats(), roam: new SoakStats(), read: new SoakStats(), churn: new SoakStats() };
const ignored: Verdicts = new Map(); // the Workers' own tally (the ledger keeps the cluster one)
const alive = setInterval(() => {
  nodes.forEach((n, i) => {
    if (!n.alive && !(restartRecord?.node === i && restartRecord.upAt === 0)) fail(`node ${i} exited during the soak with code ${n.code}`);
  });
}, 500);

const clients = Array.from({ length: workers }, (_, i) =>
  new TracedClient(i % NODES, { host: "127.0.0.1", port: ports[i % NODES]!, connections: 2, timeoutMs: 10_000 }, kinds.worker));
/** roamClients[r][n]: roamer r's client of node n (a roamer runs roamLanes lanes on each). */
const readClients: TracedClient[] = [];
const roamClients = Array.from({ length: roamers }, () => ports.map((port, n) =>
  new TracedClient(n, { host: "127.0.0.1", port, connections: 2, timeoutMs: 10_000 }, kinds.roam)));

/**
 * readAcross is a reader lane: Gets only, of the roamers' keys (as hot as the roamers make them),
 * each through a node picked at random, judged by the ledger. Without writes of its own it keeps
 * one writer per key, and it makes the roamers' keys read far more often than written, so the
 * nodes copy them into their mirrors (LRU-K admission needs a key seen twice): copies whose
 * invalidations may be in flight, or lost, when the roamers write.
 */
async function readAcross(cs: TracedClient[], stats: SoakStats, readSeed: number): Promise<void> {
  const rng = new Prng(readSeed);
  while (running()) {
    let r = rng.next();
    let plan = ROAM_GROUPS[ROAM_GROUPS.length - 1]!;
    for (const g of ROAM_GROUPS) if ((r -= g.share) < 0) {
      plan = g;
      break;
    }
    const owner = rng.int(roamers); // the roamer whose key it reads (Worker.key's partition)
    const share = Math.max(1, Math.floor(plan.keys / roamers));
    const j = rng.next() < 0.7 ? rng.int(Math.max(1, share >> 3)) : rng.int(share);
    const key = `r${owner + roamers * j}`;
    const id = `${plan.name}/${key}`;
    const client = cs[rng.int(cs.length)]!;
    const epoch = ledger.epochOf(id);
    const sentAt = Date.now();
    let value: Uint8Array | undefined;
    try {
      value = (await client.get(plan.name, key)).value;
    } catch (e) {
      if (!isMiss(e)) {
        stats.error(`get ${id}: ${describe(e)}`);
        continue;
      }
    }
    stats.ops++;
    stats.count(value === undefined ? "get miss" : "get hit");
    ledger.judge(id, key, value, epoch, sentAt, Date.now(), plan.readThrough);
  }
}

/** evictionsBeforeRestart: the restarted node's evictions by group, read just before its SIGTERM. */
const evictionsBeforeRestart: Record<string, number> = {};

async function restartOne(): Promise<void> {
  await Bun.sleep(Math.max(0, started + seconds * 1000 * restartAt - Date.now()));
  if (!running()) return;
  const i = seed % NODES;
  // Its evictions so far: the process that replaces it counts from zero, and a read judged
  // "missing" before the restart is explained by the evictions of this one (checks below).
  const figures = await nodeFigures(ports[i]!);
  for (const g of GROUPS) evictionsBeforeRestart[g.name] = figures?.get(`group.${g.name}.store.evictions`) ?? 0;
  const r: RestartRecord = { node: i, downAt: Date.now(), exitedAt: 0, exitCode: null, upAt: 0, windowEnd: 0 };
  restartRecord = r;
  console.log(`  ${rel(r.downAt)} s: SIGTERM to node ${i} (${ids[i]})`);
  r.exitCode = await nodes[i]!.stop();
  r.exitedAt = Date.now();
  if (r.exitCode !== 0) fail(`node ${i} exited with ${r.exitCode} on SIGTERM (restart)`);
  restarts++;
  retiredNodes.push({ n: i, node: nodes[i]! });
  for (let attempt = 1; ; attempt++) {
    try {
      nodes[i] = await startNode(i);
      break;
    } catch (e) {
      if (attempt >= 5) throw e;
      await Bun.sleep(200);
    }
  }
  r.upAt = Date.now();
  r.windowEnd = r.upAt + RESTART_GRACE_MS;
  console.log(`  ${rel(r.exitedAt)} s: node ${i} exited ${r.exitCode}; ${rel(r.upAt)} s: listening again (pid ${nodes[i]!.pid}); window until ${rel(r.windowEnd)} s`);
}

/**
 * pauseOne stops another node (SIGSTOP) for pauseMs, longer than the peer timeout, then lets it
 * go on (SIGCONT): its peers time out on it, mark it down and drop the invalidations they owe it
 * until a probe finds it up again, so the copies in its mirror may be served stale afterwards,
 * for at most --mirror-ttl (what the staleness bound allows). Calls failing PEER_UNAVAILABLE from
 * the SIGSTOP to RESTART_GRACE_MS after the SIGCONT are counted in the window, as for the restart.
 */
async function pauseOne(): Promise<void> {
  await Bun.sleep(Math.max(0, started + seconds * 1000 * pauseAt - Date.now()));
  if (!running()) return;
  const i = (seed + 1) % NODES;
  const p: PauseRecord = { node: i, stopAt: Date.now(), contAt: 0, windowEnd: 0 };
  pauseRecord = p;
  process.kill(nodes[i]!.pid, "SIGSTOP");
  console.log(`  ${rel(p.stopAt)} s: SIGSTOP to node ${i} for ${pauseMs} ms`);
  await Bun.sleep(pauseMs);
  process.kill(nodes[i]!.pid, "SIGCONT");
  p.contAt = Date.now();
  p.windowEnd = p.contAt + RESTART_GRACE_MS;
  console.log(`  ${rel(p.contAt)} s: SIGCONT to node ${i}; window until ${rel(p.windowEnd)} s`);
}

const progress = setInterval(() => {
  const all = Object.values(kinds);
  const sum = (f: (k: SoakStats) => number): number => all.reduce((n, k) => n + f(k), 0);
  console.log(`  ${rel(Date.now())} s: ops ${Object.entries(kinds).map(([n, k]) => `${n} ${k.ops}`).join(", ")}; errors ${sum((k) => k.errors)} (+${sum((k) => k.windowErrors)} in the restart window), violations ${ledger.violationCount}, stale ${ledger.staleAges.length}`);
}, Math.max(5_000, Math.min(60_000, seconds * 100)));

const load: Promise<void>[] = [
  ...clients.map((c, i) => new Worker(i, workers, GROUPS, ledger, kinds.worker, ignored, seed + i).run(c, lanes, stop)),
  // A roamer is one Worker (one key partition, one writer per key) whose lanes go through every
  // node: a key is written through one node and read through the others at the full rate.
  ...roamClients.map((cs, i) => {
    const w = new Worker(i, roamers, ROAM_GROUPS, ledger, kinds.roam, ignored, seed + 300 + i, "r");
    return Promise.all(cs.map((c) => w.run(c, roamLanes, stop))).then(() => undefined);
  }),
  ...Array.from({ length: readers }, (_, i) => {
    const cs = ports.map((port, n) => new TracedClient(n, { host: "127.0.0.1", port, connections: 1, timeoutMs: 10_000 }, kinds.read));
    readClients.push(...cs);
    return Promise.all(Array.from({ length: readLanes * NODES }, (_, l) => readAcross(cs, kinds.read, seed + 400 + i * 100 + l))).then(() => undefined);
  }),
  ...Array.from({ length: churners }, (_, i) => churn(new Worker(i, churners, GROUPS, ledger, kinds.churn, ignored, seed + 100 + i, "c"), (rng) => {
    const n = rng.int(NODES); // a node picked at random for each connection
    return new TracedClient(n, { host: "127.0.0.1", port: ports[n]!, connections: 1, timeoutMs: 10_000, connectTimeoutMs: 5_000 }, kinds.churn);
  }, kinds.churn, stop, seed + 200 + i)),
  ...(restart ? [restartOne()] : []),
  ...(pause ? [pauseOne()] : []),
];
const outcomes = await Promise.allSettled(load);
stop.stopped = true;
clearInterval(progress);
const elapsed = (Date.now() - started) / 1000;
for (const o of outcomes) if (o.status === "rejected") fail(`a client loop or the restart died: ${o.reason instanceof Error ? o.reason.stack : String(o.reason)}`);
await Promise.all([...clients, ...roamClients.flat(), ...readClients].map((c) => c.close()));
for (const w of [restartRecord?.windowEnd, pauseRecord?.windowEnd]) if (w !== undefined && Date.now() < w) await Bun.sleep(w - Date.now());

// ---------------------------------------------------------------------------------------------
// Final read-back of every key written, through every node; then each node's counters.

const finalTally = new Map<string, Record<ClusterVerdict, number>>();
const finalByNode: Record<ClusterVerdict, number>[] = [];
const readThrough = new Set(GROUPS.filter((g) => g.readThrough === true).map((g) => g.name));
for (let n = 0; n < NODES; n++) {
  const byNode = new Map<string, Record<ClusterVerdict, number>>();
  await using reader = new TracedClient(n, { host: "127.0.0.1", port: ports[n]!, connections: 2, timeoutMs: 10_000 });
  await readBack(ledger, reader, 8,
    (group, k, value, sentAt, recvAt) => {
      const id = `${group}/${k}`;
      const v = ledger.judgeCluster(id, k, value, ledger.epochOf(id), sentAt, recvAt, readThrough.has(group));
      tallyCluster(finalTally, group, v);
      tallyCluster(byNode, "all", v);
    },
    (group, e) => fail(`final read-back of ${group} through node ${n}: ${describe(e)}`));
  finalByNode.push(byNode.get("all") ?? (Object.fromEntries(CLUSTER_VERDICTS.map((k) => [k, 0])) as Record<ClusterVerdict, number>));
}

interface NodeReport {
  id: string;
  stats: Record<string, { itemCount: number; hits: number; misses: number; total: number; ok: boolean }>;
  evictions: Record<string, number>;
  mirrorItems: Record<string, number>;
  cluster: Record<string, number>;
  loads: Record<string, number>;
  warnings: number;
  exitCode: number | null;
}
const CLUSTER_FIGURES = ["forwarded", "peerLoads", "mirrorHits", "mirrorFills", "invalidationsSent", "invalidationsReceived", "peerErrors", "fallbackLoads",
  "prefetchesSent", "prefetchesUsed", "foreignReads", "foreignWrites", "membershipChanges"];
const reports: NodeReport[] = [];
for (let n = 0; n < NODES; n++) {
  const report: NodeReport = { id: ids[n]!, stats: {}, evictions: {}, mirrorItems: {}, cluster: {}, loads: {}, warnings: 0, exitCode: null };
  await using c = new CacheClient({ host: "127.0.0.1", port: ports[n]!, timeoutMs: 10_000 });
  for (const g of GROUPS) {
    try {
      const s = await c.stats(g.name);
      const ok = s.hitCount + s.missCount === s.totalCount;
      report.stats[g.name] = { itemCount: s.itemCount, hits: s.hitCount, misses: s.missCount, total: s.totalCount, ok };
      if (!ok) fail(`Stats ${g.name} on node ${n}: hits ${s.hitCount} + misses ${s.missCount} ≠ total ${s.totalCount}`);
    } catch (e) {
      fail(`Stats ${g.name} on node ${n}: ${describe(e)}`);
    }
  }
  const figures = await nodeFigures(ports[n]!);
  if (figures === undefined) fail(`NodeStats of node ${n}: no answer`);
  for (const g of GROUPS) {
    report.evictions[g.name] = figures?.get(`group.${g.name}.store.evictions`) ?? 0;
    report.mirrorItems[g.name] = figures?.get(`group.${g.name}.mirror.items`) ?? 0;
    if (g.readThrough === true) for (const k of ["loads", "loadsDeduped", "loadsAhead", "localLoadErrs", "loadTimeouts"]) report.loads[k] = figures?.get(`group.${g.name}.${k}`) ?? 0;
  }
  for (const k of CLUSTER_FIGURES) report.cluster[k] = figures?.get(`cluster.${k}`) ?? 0;
  reports.push(report);
}
clearInterval(alive);
const exitCodes = await Promise.all(nodes.map((n) => n.stop()));
exitCodes.forEach((code, n) => {
  reports[n]!.exitCode = code;
  reports[n]!.warnings = nodes[n]!.warnings;
  if (code !== 0) fail(`node ${n} exited with ${code} on SIGTERM`);
});

// ---------------------------------------------------------------------------------------------
// Checks

for (const kind of ["worker", "roam", "read", "churn"] as const) {
  const k = kinds[kind];
  if (k.errors > 0) fail(`${kind}: ${k.errors} errors outside the fault windows (or not PEER_UNAVAILABLE), e.g. ${k.samples.slice(0, 3).join(" | ")}`);
  if (k.ops === 0) fail(`${kind}: no calls completed`);
}
if (clientProtocolErrors > 0) fail(`${clientProtocolErrors} replies the soak's clients could not match (gone astray or twice), e.g. ${protocolErrorSamples.join(" | ")}`);
// A node logs ERROR for what must not happen (a peer's reply it could not match, an internal
// error, a loader crash): any such line, from any node process of the run, fails it.
const errorLines = (n: number, node: NodeProcess, which: string): void => {
  if (node.errors.length > 0) fail(`node ${n}${which} logged ${node.errors.length} ERROR lines, e.g. ${node.errors.slice(0, 3).join(" | ")}`);
};
nodes.forEach((node, n) => errorLines(n, node, ""));
for (const r of retiredNodes) errorLines(r.n, r.node, " (before its restart)");
if (ledger.violationCount > 0) fail(`${ledger.violationCount} read violations, e.g. ${ledger.violations.slice(0, 5).join(" | ")}`);
for (const [group, byOwner] of missingBy) {
  byOwner.forEach((count, owner) => {
    const before = restartRecord?.node === owner ? (evictionsBeforeRestart[group] ?? 0) : 0;
    if (count > 0 && (reports[owner]!.evictions[group] ?? 0) + before === 0) fail(`${group}: ${count} reads of keys node ${owner} owns missing, with no eviction there`);
  });
}
if (pause && (pauseRecord === undefined || pauseRecord.contAt === 0)) fail("the pause did not happen");
if (restart) {
  const r = restartRecord;
  if (r === undefined || r.upAt === 0) fail("the restart did not happen");
  else if (kinds.worker.opsAfter[r.node] === 0) fail(`no worker call through node ${r.node} completed after its restart window`);
}

// ---------------------------------------------------------------------------------------------
// Summary

/** staleFigures: count and ages (max, p99, p50) of the stale reads `pick` selects (old versions, or the loader's values). */
function staleFigures(pick: (s: { group: string; loaded: boolean }) => boolean): { count: number; maxMs: number; p99Ms: number; p50Ms: number } {
  const ages = ledger.staleAges.filter(pick).map((s) => s.ageMs).sort((a, b) => a - b);
  const pct = (p: number): number => (ages.length === 0 ? 0 : ages[Math.min(ages.length - 1, Math.floor(p * ages.length))]!);
  return { count: ages.length, maxMs: pct(1), p99Ms: pct(0.99), p50Ms: pct(0.5) };
}
const staleOld = staleFigures((s) => !s.loaded);
const staleLoaded = staleFigures((s) => s.loaded);
const staleByGroup = Object.fromEntries(GROUPS.map((g) => [g.name, { old: staleFigures((s) => s.group === g.name && !s.loaded), loaded: staleFigures((s) => s.group === g.name && s.loaded) }]));
const windowKinds = mergeCounts(...Object.values(kinds).map((k) => k.windowKinds));
/** faultErrors: the calls failed in one fault's window, by kind (without the fault's prefix). */
function faultErrors(fault: string): { errors: number; errorKinds: Record<string, number> } {
  const errorKinds: Record<string, number> = {};
  let errors = 0;
  for (const [k, n] of Object.entries(windowKinds)) {
    if (!k.startsWith(`${fault}: `)) continue;
    errorKinds[k.slice(fault.length + 2)] = n;
    errors += n;
  }
  return { errors, errorKinds };
}
const r = restartRecord;
const windowSummary = r === undefined ? undefined : {
  node: r.node, downAt: (r.downAt - started) / 1000, exitedAt: (r.exitedAt - started) / 1000, upAt: (r.upAt - started) / 1000,
  windowEnd: (r.windowEnd - started) / 1000, downMs: r.upAt - r.downAt, exitCode: r.exitCode,
  ...faultErrors("restart"),
  opsAfterByNode: kinds.worker.opsAfter,
};
const pr = pauseRecord;
const pauseSummary = pr === undefined ? undefined : {
  node: pr.node, stopAt: (pr.stopAt - started) / 1000, contAt: (pr.contAt - started) / 1000, windowEnd: (pr.windowEnd - started) / 1000,
  ...faultErrors("pause"),
};

const own = process.memoryUsage();
console.log(`\ncluster-soak: ${elapsed.toFixed(1)} s, seed ${seed}; load average at end ${loadavg().map((x) => x.toFixed(2)).join(" ")}; the soak's own RSS ${(own.rss / 1048576).toFixed(0)} MiB (heap ${(own.heapUsed / 1048576).toFixed(0)} MiB; ${ledger.entries.size} keys, ${traces.size} traced)`);
console.log(`node args (node 0): ${nodeArgs(0).join(" ")}`);
console.log("| client kind | ops | ops/s | errors | errors in the fault windows | notes |\n| --- | ---: | ---: | ---: | ---: | --- |");
for (const [name, k] of Object.entries(kinds)) {
  const notes = Object.entries(k.counts).map(([what, n]) => `${what} ${n}`).join(", ");
  console.log(`| ${name} | ${k.ops} | ${(k.ops / elapsed).toFixed(0)} | ${k.errors} | ${k.windowErrors} | ${notes} |`);
}
const header = CLUSTER_VERDICTS.join(" / ");
console.log(`\n| group | reads during run: ${header} | final read-back (×${NODES} nodes): ${header} |\n| --- | --- | --- |`);
for (const g of GROUPS) {
  const row = (t: Map<string, Record<ClusterVerdict, number>>): string => {
    const v = t.get(g.name);
    return v === undefined ? "—" : CLUSTER_VERDICTS.map((k) => v[k]).join(" / ");
  };
  console.log(`| ${g.name} | ${row(ledger.tally)} | ${row(finalTally)} |`);
}
console.log(`final read-back by node: ${finalByNode.map((v, n) => `node ${n}: ${CLUSTER_VERDICTS.filter((k) => v[k] > 0).map((k) => `${k} ${v[k]}`).join(", ")}`).join("; ")}`);
const ageText = (f: ReturnType<typeof staleFigures>): string => `${f.count}, age max ${f.maxMs} ms, p99 ${f.p99Ms} ms, p50 ${f.p50Ms} ms`;
console.log(`stale reads of an older version (bound ${staleBoundMs} ms): ${ageText(staleOld)}; ${GROUPS.map((g) => `${g.name} ${staleByGroup[g.name]!.old.count}`).join(", ")}`);
console.log(`stale reads of the loader's value where a write must be live (bound ${loadedStaleBoundMs} ms): ${ageText(staleLoaded)}`);
for (const s of [...ledger.staleExamples.filter((x) => !x.loaded).slice(0, 5), ...ledger.staleExamples.filter((x) => x.loaded).slice(0, 3)]) console.log(`  stale e.g. ${s.what}`);
const errs = mergeCounts(...Object.values(kinds).map((k) => k.errorKinds));
console.log(`errors outside the fault windows: ${Object.keys(errs).length === 0 ? "none" : JSON.stringify(errs)}`);
if (windowSummary !== undefined) {
  console.log(`restart: node ${windowSummary.node} SIGTERM at ${windowSummary.downAt.toFixed(2)} s, exited ${windowSummary.exitCode} at ${windowSummary.exitedAt.toFixed(2)} s, listening again at ${windowSummary.upAt.toFixed(2)} s (down ${windowSummary.downMs} ms), window to ${windowSummary.windowEnd.toFixed(2)} s: ${windowSummary.errors} calls failed in it ${JSON.stringify(windowSummary.errorKinds)}; worker calls after it by node ${windowSummary.opsAfterByNode.join(" / ")}`);
}
if (pauseSummary !== undefined) {
  console.log(`pause: node ${pauseSummary.node} SIGSTOP at ${pauseSummary.stopAt.toFixed(2)} s, SIGCONT at ${pauseSummary.contAt.toFixed(2)} s, window to ${pauseSummary.windowEnd.toFixed(2)} s: ${pauseSummary.errors} calls failed in it ${JSON.stringify(pauseSummary.errorKinds)}`);
}
console.log(`\n| node | Stats (${STATS_NOTE}) | evictions soak / keep / ld | mirror items | ${CLUSTER_FIGURES.join(" / ")} | ld loads | warn lines | exit |\n| --- | --- | --- | --- | --- | --- | ---: | ---: |`);
reports.forEach((rep, n) => {
  const stats = Object.entries(rep.stats).map(([g, s]) => `${g} ${s.hits}+${s.misses}${s.ok ? "=" : "≠"}${s.total}`).join(", ");
  console.log(`| ${n} ${rep.id} | ${stats} | ${GROUPS.map((g) => rep.evictions[g.name]).join(" / ")} | ${GROUPS.map((g) => rep.mirrorItems[g.name]).join(" / ")} | ${CLUSTER_FIGURES.map((k) => rep.cluster[k]).join(" / ")} | ${rep.loads.loads} (${rep.loads.loadsDeduped} calls, ${rep.loads.loadsAhead} ahead, ${rep.loads.localLoadErrs} failed) | ${rep.warnings} | ${rep.exitCode} |`);
});
for (const [group, examples] of missingExamples) {
  if (!failures.some((f) => f.startsWith(`${group}: `) && f.includes("missing, with no eviction"))) continue;
  console.log(`\n${group}: missing reads, with the last calls of their keys:`);
  for (const v of examples) {
    console.log(`- ${v.what} (owner node ${v.owner})`);
    for (const c of v.calls) console.log(`    ${c}`);
  }
}
if (violationTraces.length > 0) {
  console.log("\nviolations, with the last calls of their keys (times in s from the start; n<i> = through node i):");
  for (const v of violationTraces) {
    console.log(`- ${v.what} (owner node ${v.owner})`);
    for (const c of v.calls) console.log(`    ${c}`);
  }
}
const summary = {
  seconds: elapsed, seed, failures, staleBoundMs, clockSlackMs: CLOCK_SLACK_MS,
  kinds: Object.fromEntries(Object.entries(kinds).map(([n, k]) => [n, { ops: k.ops, opsPerSec: k.ops / elapsed, errors: k.errors, windowErrors: k.windowErrors, counts: k.counts }])),
  verdicts: Object.fromEntries(ledger.tally), final: Object.fromEntries(finalTally), finalByNode,
  violations: ledger.violationCount, violationSamples: ledger.violations.slice(0, 10), violationTraces: violationTraces.slice(0, 3),
  stale: { boundMs: staleBoundMs, loadedBoundMs: loadedStaleBoundMs, old: staleOld, loaded: staleLoaded, byGroup: staleByGroup },
  errors: errs, restart: windowSummary, pause: pauseSummary, nodes: reports,
};
console.log(`CLUSTER-SOAK-SUMMARY ${JSON.stringify(summary)}`);
if (snapshotDir !== undefined) rmSync(snapshotDir, { recursive: true, force: true });
if (failures.length > 0) {
  console.error(`\ncluster-soak: FAILED (seed ${seed})\n- ${failures.join("\n- ")}`);
  for (const [n, node] of nodes.entries()) if (node.warnings > 0) console.error(`node ${n}, last log lines:\n${node.lines.slice(-10).join("\n")}`);
  process.exit(1);
}
console.log("cluster-soak: all checks passed");
process.exit(0);

function mergeCounts(...all: Record<string, number>[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const a of all) for (const [k, n] of Object.entries(a)) out[k] = (out[k] ?? 0) + n;
  return out;
}
