/**
 * promClientMetrics is src/server/metrics.ts as it was at 38dbd17, when prom-client rendered
 * /metrics: kept, unchanged but for its imports and name, as the oracle the node's own writer
 * (src/server/exposition.ts) is compared with byte for byte (metrics-exposition.test.ts), so that
 * dashboards keep every name, HELP and TYPE line, label set and value they had. A family added to
 * metrics.ts since is not here: the test compares the families this file has.
 *
 * As it was: every metric is a prom-client Counter or Gauge whose `collect` callback clears its
 * series and re-reads the engine's plain counters at scrape time; `RequestDurations` exposes
 * LatencyHistogram's arrays as a prom-client Histogram.
 */
import { Counter, Gauge, Histogram, Registry, type MetricType } from "prom-client";
import type { Group } from "../../src/cluster/group.ts";
import { APP_ERROR, ERROR_CODE } from "../../src/protocol/errors.ts";
import { METHOD_NAMES, METHOD_SET_MULTI } from "../../src/protocol/request.ts";
import { classStats } from "../../src/store/store-stats.ts";
import type { Store } from "../../src/store/store.ts";
import type { CacheNode } from "../../src/server/cache-node.ts";
import { VERSION } from "../../src/server/config.ts";
import { APP_ERROR_SLOTS, BOUND_COUNT, BOUNDS_SECONDS, ERROR_SLOTS, METHOD_COUNT, type LatencyHistogram } from "../../src/server/latency.ts";

interface Metrics {
  registry: Registry;
  /** render returns the exposition text of every metric, read now. */
  render(): Promise<string>;
}

type Labels = Record<string, string>;
type Emit = (labels: Labels, value: number) => void;
type Fill = (emit: Emit) => void;

/** METHOD_LABELS[id] is the `method` label of a method id ("unknown" for 0). */
const METHOD_LABELS: readonly string[] = METHOD_NAMES.map((name, id) => (id === 0 ? "unknown" : name));
/** CODE_LABELS[code] is the `code` label of an IDL ErrorCode ("not_found", ...). */
const CODE_LABELS = namesByNumber(ERROR_CODE, ERROR_SLOTS);
/** KIND_LABELS[type] is the `kind` label of a TApplicationException type ("protocol_error", ...). */
const KIND_LABELS = namesByNumber(APP_ERROR, APP_ERROR_SLOTS);
const LE_LABELS: readonly string[] = [...BOUNDS_SECONDS.map(String), "+Inf"];

/** AdminConnections is the admin port's own connections (AdminServer.connections), read at scrape time. */
interface AdminConnections {
  open: number;
  refused: number;
  stalled: number;
  evicted: number;
}

export function promClientMetrics(node: CacheNode, latency: LatencyHistogram, admin?: () => AdminConnections): Metrics {
  const registry = new Registry();
  const counter = (name: string, help: string, labelNames: readonly string[], fill: Fill): void => {
    new Counter({
      name, help, labelNames, registers: [registry],
      collect() {
        this.reset();
        fill((labels, value) => this.inc(labels, value));
      },
    });
  };
  const gauge = (name: string, help: string, labelNames: readonly string[], fill: Fill): void => {
    new Gauge({
      name, help, labelNames, registers: [registry],
      collect() {
        this.reset();
        fill((labels, value) => this.set(labels, value));
      },
    });
  };
  const server = node.server;
  const sc = server.counters;

  // ---- Node ----
  gauge("mybuncache_info", "Constant 1, labelled with the node's version and id.", ["version", "node"], (emit) =>
    emit({ version: VERSION, node: server.nodeId }, 1));
  gauge("mybuncache_start_time_seconds", "When the node started, in seconds since the epoch.", [], (emit) =>
    emit({}, server.startedAt / 1000));
  gauge("mybuncache_connections", "Open client connections.", [], (emit) => emit({}, server.connectionCount));
  counter("mybuncache_connections_accepted_total", "Connections accepted since start.", [], (emit) => emit({}, sc.connectionsTotal));
  counter("mybuncache_connections_rejected_total", "Connections over --max-connections, answered OVERLOADED and closed.", [], (emit) =>
    emit({}, sc.connectionsRejected));
  counter("mybuncache_connections_rejected_cut_total", "Of those, cut at once without a reply: 32 refused connections were open already (a flood at the limit).", [], (emit) =>
    emit({}, sc.connectionsRejectedCut));
  counter("mybuncache_received_bytes_total", "Bytes received on the Thrift port.", [], (emit) => emit({}, sc.bytesIn));
  counter("mybuncache_sent_bytes_total", "Bytes written on the Thrift port.", [], (emit) => emit({}, sc.bytesOut));
  counter("mybuncache_internal_errors_total", "Unexpected exceptions, each contained to its connection, and promises rejected with no handler (node.ts).", [], (emit) =>
    emit({}, sc.internalErrors));
  counter("mybuncache_output_pauses_total", "Times a connection's reading was paused: replies past --max-output, a yielded turn, or 64 KiB of input queued while it waited for a load.", [], (emit) =>
    emit({}, sc.pauses));
  counter("mybuncache_yields_total", "Times a connection yielded its turn after --max-requests-per-event requests.", [], (emit) =>
    emit({}, sc.yields));
  counter("mybuncache_connections_unauthorized_total", "Connections closed for a missing or wrong auth token.", [], (emit) =>
    emit({}, sc.unauthorized));
  counter("mybuncache_connections_evicted_unauthenticated_total", "Connections not authenticated yet, closed at --max-connections to let a new one in (oldest first).", [], (emit) =>
    emit({}, sc.evictedUnauthenticated));
  counter("mybuncache_connections_idle_closed_total", "Connections closed by the idle timeout.", [], (emit) => emit({}, sc.idleClosed));
  counter("mybuncache_connections_linger_cut_total", "Connections the node had ended, cut as their clients had not closed within 2 s, or for a newcomer at --max-connections.", [], (emit) => emit({}, sc.lingerCut));
  counter("mybuncache_connections_handshake_timeouts_total", "TLS connections closed for not finishing their handshake within 10 s.", [], (emit) => emit({}, sc.handshakeTimeouts));
  counter("mybuncache_connections_buffer_cap_closed_total", "Connections closed because all connections' buffers passed --max-buffered.", [],
    (emit) => emit({}, sc.bufferCapClosed));
  counter("mybuncache_warmed_requests_total", "Gets and Sets of pipelined batches served after the store warmed their memory.", [], (emit) =>
    emit({}, sc.warmedRequests));
  counter("mybuncache_turn_writes_total", "Connection writes made together at the end of an event-loop turn, from the shared output buffer.", [], (emit) =>
    emit({}, sc.turnWrites));
  counter("mybuncache_turn_flushes_total", "Times the replies waiting in the shared output buffer were written (turn_writes / turn_flushes: connections per flush).", [], (emit) =>
    emit({}, sc.turnFlushes));
  counter("mybuncache_early_flushes_total", "Of those, written before the end of the turn because the shared buffer passed its bound.", [], (emit) =>
    emit({}, sc.earlyFlushes));
  counter("mybuncache_detached_replies_total", "PeerGet and PeerGetMulti replies that waited for a load without holding up their connection's later requests (written out of order).", [], (emit) =>
    emit({}, sc.detachedReplies));
  counter("mybuncache_memory_forced_collections_total", "Full collections run because garbage passed --gc-headroom.", [], (emit) =>
    emit({}, node.memoryWatch?.counters.forcedCollections ?? 0));
  // (Registered only with a memory watch: a gauge never set shows 0, which looks like a reading.)
  if (node.config.gcHeadroomBytes > 0) {
    gauge("mybuncache_memory_retained_bytes", "Resident memory after the last full collection (what the node retains); absent when --gc-headroom is 0.", [],
      (emit) => {
        if (node.memoryWatch !== undefined) emit({}, node.memoryWatch.counters.retainedBytes);
      });
  }
  gauge("mybuncache_buffered_bytes", "Bytes all connections hold now (partial input plus queued replies).", [], (emit) =>
    emit({}, sc.bufferedBytes));
  counter("mybuncache_requests_total", "Requests served, by method.", ["method"], (emit) => {
    for (let m = 0; m < METHOD_COUNT; m++) if (shownMethod(latency, m)) emit({ method: METHOD_LABELS[m]! }, latency.counts[m]!);
  });
  counter("mybuncache_request_errors_total", "Requests answered with a CacheError, by method and error code.", ["method", "code"], (emit) => {
    for (let m = 0; m < METHOD_COUNT; m++) {
      for (let code = 1; code < ERROR_SLOTS; code++) {
        const n = latency.errorCount(m, code);
        if (n > 0) emit({ method: METHOD_LABELS[m]!, code: CODE_LABELS[code]! }, n);
      }
    }
  });
  counter("mybuncache_protocol_errors_total", "Malformed or unsupported input, by TApplicationException kind.", ["kind"], (emit) => {
    for (let t = 0; t < APP_ERROR_SLOTS; t++) {
      const n = latency.protocolErrors[t]!;
      if (n > 0) emit({ kind: KIND_LABELS[t]! }, n);
    }
  });
  new RequestDurations(registry, latency);

  // ---- The admin port's own connections (admin-gate.ts) ----
  if (admin !== undefined) {
    gauge("mybuncache_admin_connections", "Open connections to the admin port.", [], (emit) => emit({}, admin().open));
    counter("mybuncache_admin_connections_refused_total", "Admin connections answered 503 at the cap (a health probe among them would fail).", [], (emit) =>
      emit({}, admin().refused));
    counter("mybuncache_admin_connections_stalled_total", "Admin connections closed for taking none of their reply for 10 s.", [], (emit) =>
      emit({}, admin().stalled));
    counter("mybuncache_admin_connections_evicted_total", "Quiet admin connections closed at the cap to let a new one in.", [], (emit) =>
      emit({}, admin().evicted));
  }

  // ---- Groups ----
  const perGroup = (name: string, help: string, read: (g: Group) => number): void =>
    counter(name, help, ["group"], (emit) => {
      for (const g of node.groups.all()) emit({ group: g.name }, read(g));
    });
  perGroup("mybuncache_gets_total", "Keys looked up (Get calls and GetMulti keys).", (g) => g.counters.gets);
  perGroup("mybuncache_hits_total", "Lookups served from the store, or in a cluster from the mirror of keys owned elsewhere.", (g) => g.counters.hits);
  perGroup("mybuncache_misses_total", "Lookups not in the store (negative hits included), or in a cluster forwarded to the key's owner.", (g) => g.counters.misses);
  perGroup("mybuncache_negative_hits_total", "Gets answered from a remembered outcome: NOT_FOUND from a cached negative entry, or VALUE_TOO_LARGE from a remembered refusal.", (g) => g.counters.negativeHits);
  perGroup("mybuncache_loads_total", "Misses that went to the loader path, before singleflight (one per Get: a load ahead done again at its turn counts once).", (g) => g.counters.loads);
  perGroup("mybuncache_loads_ahead_total", "Loads started before their Get's turn, behind a read its connection waited for; each counts in loads_total once its Get takes it (one no Get uses, its key moved to another member or its connection closed first, never does).", (g) => g.counters.loadsAhead);
  perGroup("mybuncache_loads_refused_total", "Loads refused OVERLOADED: as many loads under way on the node as --max-loads (a Get counts one at most).", (g) => g.counters.loadsRefused);
  perGroup("mybuncache_loads_deduped_total", "Loader calls actually made, after singleflight deduplication.", (g) => g.counters.loadsDeduped);
  perGroup("mybuncache_local_loads_total", "Loader calls that returned a value.", (g) => g.counters.localLoads);
  perGroup("mybuncache_local_load_errors_total", "Loader calls that threw, crashed or were refused.", (g) => g.counters.localLoadErrs);
  perGroup("mybuncache_load_timeouts_total", "Callers answered LOAD_FAILED because the loader was too slow.", (g) => g.counters.loadTimeouts);
  perGroup("mybuncache_loads_not_found_total", "Loader calls that answered not found.", (g) => g.counters.notFound);
  perGroup("mybuncache_sets_total", "Set calls and SetMulti entries stored.", (g) => g.counters.sets);
  perGroup("mybuncache_set_errors_total", "Set calls and SetMulti entries refused, not stored (too large, no memory, not admitted, bad TTL, key too long): one per entry, as sets_total counts those stored.", (g) => g.counters.setErrors);
  perGroup("mybuncache_deletes_total", "Delete calls that removed a live item.", (g) => g.counters.deletes);

  // ---- Stores of each group (main, and the mirror in a cluster) ----
  const eachStore = (fn: (labels: Labels, store: Store) => void): void => {
    for (const g of node.groups.all()) {
      fn({ group: g.name, store: "main" }, g.store);
      if (g.mirror !== undefined) fn({ group: g.name, store: "mirror" }, g.mirror);
    }
  };
  const storeLabels = ["group", "store"];
  const perStore = (kind: "counter" | "gauge", name: string, help: string, read: (s: Store) => number): void =>
    (kind === "counter" ? counter : gauge)(name, help, storeLabels, (emit) => eachStore((labels, s) => emit(labels, read(s))));
  perStore("gauge", "mybuncache_items", "Live items.", (s) => s.size);
  perStore("gauge", "mybuncache_used_bytes", "Chunk bytes held by live items.", (s) => s.stats().bytesUsed);
  perStore("gauge", "mybuncache_data_bytes", "Key and value bytes of live items.", (s) => s.stats().dataBytes);
  perStore("gauge", "mybuncache_page_bytes", "Bytes of slab pages given to size classes.", (s) => s.stats().pageBytes);
  perStore("gauge", "mybuncache_meta_bytes", "Bytes charged to metadata (item table, index, heap).", (s) => s.metaBytes());
  perStore("gauge", "mybuncache_capacity_bytes", "Memory budget: slab pages plus metadata.", (s) => s.capacity);
  perStore("counter", "mybuncache_evictions_total", "Live items removed to make room.", (s) => s.counters.evictions);
  perStore("counter", "mybuncache_collision_evictions_total", "Live items removed for a new key past the most keys one hash may hold (8): chosen keys, hash flooding.", (s) => s.counters.collisionEvictions);
  counter("mybuncache_expirations_total", "Expired items removed, on read (lazy) or by the expiry timer (active).",
    ["group", "store", "kind"], (emit) => eachStore((labels, s) => {
      emit({ ...labels, kind: "lazy" }, s.counters.expiredLazy);
      emit({ ...labels, kind: "active" }, s.counters.expiredActive);
    }));
  perStore("counter", "mybuncache_admissions_rejected_total", "Fills not stored by LRU-K admission.", (s) => s.counters.admissionsRejected);
  perStore("gauge", "mybuncache_expiry_heap_items", "Items with a TTL waiting in the expiry heap.", (s) => s.heap.size);
  perStore("counter", "mybuncache_slab_page_moves_total", "Slab pages moved from one size class to another.", (s) => s.slab.pageMoves);
  perStore("counter", "mybuncache_slab_page_releases_total", "Slab pages given back so the item table could grow.", (s) => s.slab.pageReleases);
  perStore("gauge", "mybuncache_item_capacity", "Items the item table holds before it must grow (it shrinks once under a quarter are live).", (s) => s.items.cap);
  perStore("counter", "mybuncache_item_table_shrinks_total", "Times the item table and its index were made smaller, their bytes given back to pages.", (s) => s.counters.tableShrinks);
  const perClass = (kind: "counter" | "gauge", name: string, help: string, read: (c: ReturnType<typeof classStats>[number]) => number): void =>
    (kind === "counter" ? counter : gauge)(name, help, ["group", "store", "class", "chunk_size"], (emit) =>
      eachStore((labels, s) => {
        for (const c of classStats(s)) emit({ ...labels, class: String(c.cls), chunk_size: String(c.chunkSize) }, read(c));
      }));
  perClass("gauge", "mybuncache_slab_pages", "Slab pages of a size class.", (c) => c.pages);
  perClass("gauge", "mybuncache_slab_used_chunks", "Chunks holding an item, per size class.", (c) => c.usedChunks);
  perClass("gauge", "mybuncache_slab_free_chunks", "Chunks on the free list, per size class.", (c) => c.freeChunks);
  perClass("gauge", "mybuncache_slab_items", "Items in the LRU list of a size class.", (c) => c.items);
  perClass("counter", "mybuncache_slab_evictions_total", "Evictions from a size class.", (c) => c.evictions);

  // ---- Cluster (a node with peers) ----
  const cluster = node.cluster;
  if (cluster !== undefined) {
    const cc = cluster.counters;
    gauge("mybuncache_cluster_members", "Members of the ring, this node included.", [], (emit) => emit({}, cluster.members.length));
    gauge("mybuncache_cluster_peers_down", "Peers whose client marks them down.", [], (emit) =>
      emit({}, cluster.peersDown));
    gauge("mybuncache_cluster_peers_lagging", "Peers that let a write's wait for their answer to its invalidation run out, and have not answered in time since: writes do not wait for them.", [], (emit) =>
      emit({}, cluster.laggingMembers.length));
    counter("mybuncache_cluster_stalls_total", "Times this node's event loop was found stalled (0.4 peer timeouts, 50 ms at least, or more) and its mirrors dropped.", [], (emit) =>
      emit({}, sc.stalls));
    const c = (name: string, help: string, read: () => number): void => counter(name, help, [], (emit) => emit({}, read()));
    c("mybuncache_cluster_forwarded_total", "Client calls sent on to the owner of their keys.", () => cc.forwarded);
    c("mybuncache_cluster_peer_loads_total", "Gets answered by the owner peer.", () => cc.peerLoads);
    c("mybuncache_cluster_peer_errors_total", "Calls to peers that failed: not answered (timeout, down, connection lost), or answered with an error of the peer's (PEER_UNAVAILABLE, a Thrift exception, a write refused without a reason); a peer that answers is not marked down.", () => cc.peerErrors);
    c("mybuncache_cluster_peer_protocol_errors_total", "Peer replies that broke the protocol (malformed, or to a seqid not in flight); each dropped its connection. Never expected.", () => cc.peerProtocolErrors);
    c("mybuncache_cluster_fallback_loads_total", "Gets loaded locally because the owner could not be reached or failed the call (answered PEER_UNAVAILABLE or a Thrift exception).", () => cc.fallbackLoads);
    c("mybuncache_cluster_mirror_hits_total", "Gets answered from this node's mirror of a key owned elsewhere.", () => cc.mirrorHits);
    c("mybuncache_cluster_mirror_lease_misses_total", "Gets of keys owned elsewhere that this node's mirror (or an answer fetched ahead) held but did not answer, with no lease from the owner: forwarded.", () => cc.mirrorLeaseMisses);
    c("mybuncache_cluster_lease_pings_sent_total", "PeerPings asking another member for a read lease: a quarter lease apart per member, while this node's copies of its keys were used in the last 4 leases.", () => cc.leasePingsSent);
    c("mybuncache_cluster_prefetches_sent_total", "Gets of a waiting connection forwarded to their owners ahead of their turn.", () => cc.prefetchesSent);
    c("mybuncache_cluster_prefetches_used_total", "Forwarded gets answered from such a prefetch.", () => cc.prefetchesUsed);
    c("mybuncache_cluster_mirror_fills_total", "Values copied into the mirror.", () => cc.mirrorFills);
    c("mybuncache_cluster_invalidations_sent_total", "PeerInvalidate calls sent.", () => cc.invalidationsSent);
    c("mybuncache_cluster_invalidations_received_total", "PeerInvalidate calls served.", () => cc.invalidationsReceived);
    c("mybuncache_cluster_foreign_writes_total", "Peer writes of keys another member owns by this node's member list: dropped, not stored.", () => cc.foreignWrites);
    c("mybuncache_cluster_foreign_reads_total", "Keys of peer Gets another member owns by this node's member list: answered, loads not stored.", () => cc.foreignReads);
    c("mybuncache_cluster_membership_changes_total", "Member lists applied.", () => cc.membershipChanges);
  }

  // ---- Loader pool (a node with a loaders module) ----
  const pool = node.pool;
  if (pool !== undefined) {
    const pc = pool.counters;
    const c = (name: string, help: string, read: () => number): void => counter(name, help, [], (emit) => emit({}, read()));
    c("mybuncache_loader_pool_submitted_total", "Loads accepted into the worker pool.", () => pc.submitted);
    c("mybuncache_loader_pool_completed_total", "Loads that answered a value or not found.", () => pc.completed);
    c("mybuncache_loader_pool_failed_total", "Loads that ended in LOAD_FAILED.", () => pc.failed);
    c("mybuncache_loader_pool_rejected_total", "Loads refused with OVERLOADED because the pool was full.", () => pc.rejected);
    c("mybuncache_loader_pool_stopped_total", "Loads stopped unanswered after four load timeouts (abandoned, or their blocked thread replaced).", () => pc.stopped);
    c("mybuncache_loader_pool_crashes_total", "Worker threads that died (each replaced).", () => pc.crashes);
    gauge("mybuncache_loader_pool_in_flight", "Loads running or waiting for a worker.", [], (emit) =>
      emit({}, pc.submitted - pc.completed - pc.failed));
  }

  // ---- Snapshot (a node with --snapshot) ----
  const snapshotter = node.snapshotter;
  if (snapshotter !== undefined) {
    const snap = snapshotter.counters;
    counter("mybuncache_snapshot_writes_total", "Snapshots written (periodic ones; the final one is written after the port closes).", [], (emit) => emit({}, snap.writes));
    counter("mybuncache_snapshot_write_failures_total", "Snapshot writes that failed (the previous snapshot is kept; the log says why).", [], (emit) => emit({}, snap.failures));
    gauge("mybuncache_snapshot_last_success_timestamp_seconds", "Wall time of the last snapshot written; 0 until one is.", [], (emit) =>
      emit({}, snap.lastSuccessMs / 1000));
  }

  return { registry, render: () => registry.metrics() };
}

/**
 * RequestDurations exposes LatencyHistogram's arrays as the histogram
 * `mybuncache_request_duration_seconds{method}`. It is a prom-client Histogram (so the registry
 * accepts it and writes its HELP/TYPE lines) whose `get` reads the arrays instead of the values
 * `observe` would have collected; nothing calls `observe`.
 */
const DURATION_NAME = "mybuncache_request_duration_seconds";
const DURATION_HELP = "Server time per request, from the start of its decoding to its reply in the output buffer (a load it waits for included), by method.";

class RequestDurations extends Histogram<"method" | "le"> {
  private readonly latency: LatencyHistogram;

  constructor(registry: Registry, latency: LatencyHistogram) {
    super({
      name: DURATION_NAME,
      help: DURATION_HELP,
      labelNames: ["method"],
      buckets: [...BOUNDS_SECONDS],
      registers: [registry],
    });
    this.latency = latency;
  }

  override async get(): Promise<Awaited<ReturnType<Histogram<"method" | "le">["get"]>>> {
    const name = DURATION_NAME;
    const lat = this.latency;
    const values: { labels: Labels; value: number; metricName: string }[] = [];
    for (let m = 0; m < METHOD_COUNT; m++) {
      if (!shownMethod(lat, m)) continue;
      const method = METHOD_LABELS[m]!;
      let cumulative = 0;
      for (let b = 0; b < BOUND_COUNT; b++) {
        cumulative += lat.bucket(m, b);
        values.push({ labels: { method, le: LE_LABELS[b]! }, value: cumulative, metricName: `${name}_bucket` });
      }
      // +Inf is the count itself, so the two can never disagree.
      const count = lat.counts[m]!;
      values.push({ labels: { method, le: "+Inf" }, value: count, metricName: `${name}_bucket` });
      values.push({ labels: { method }, value: lat.sums[m]! / 1e9, metricName: `${name}_sum` });
      values.push({ labels: { method }, value: count, metricName: `${name}_count` });
    }
    // prom-client's typings declare `type` as a numeric enum that does not exist at run time; the
    // registry reads the string, as in prom-client's own Histogram.
    const type = "histogram" as unknown as MetricType;
    return { name, help: DURATION_HELP, type, aggregator: "sum", collect: () => {}, values };
  }

  /** getForPromString is what the Registry asks a histogram for; the same values serve both. */
  getForPromString(): ReturnType<RequestDurations["get"]> {
    return this.get();
  }
}

/** shownMethod: the seed's methods always have series; the others once they were called. */
function shownMethod(latency: LatencyHistogram, m: number): boolean {
  return (m >= 1 && m <= METHOD_SET_MULTI) || latency.counts[m]! > 0;
}

/** namesByNumber turns {NOT_FOUND: 1, ...} into ["", "not_found", ...] (gaps as "code_N"). */
function namesByNumber(table: Record<string, number>, slots: number): string[] {
  const out = Array.from({ length: slots }, (_, i) => `code_${i}`);
  for (const [key, n] of Object.entries(table)) out[n] = key.toLowerCase();
  return out;
}
