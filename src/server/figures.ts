/**
 * nodeFigures flattens a node's counters into (name, value) pairs for the NodeStats Thrift
 * method: the main figures the admin port exports (not its histograms, per-method and per-class
 * series), for tooling that only speaks Thrift.
 *
 * Names: `server.<counter>`, `group.<name>.<counter>` (group counters and store figures),
 * `cluster.<counter>`, `cluster.members`, `cluster.peersDown` and `cluster.peersLagging` when the
 * node has peers, `loaders.<counter>` with a loader pool, `memory.<counter>` with the memory watch,
 * `snapshot.<counter>` with a snapshot. Read at call time from the plain counter structs; allocates (a stats call).
 */
import type { CacheNode } from "./cache-node.ts";

export function nodeFigures(node: CacheNode): [string, number][] {
  const out: [string, number][] = [];
  const add = (prefix: string, counters: object): void => {
    for (const [k, v] of Object.entries(counters)) if (typeof v === "number") out.push([`${prefix}.${k}`, v]);
  };
  add("server", node.server.counters);
  out.push(["server.connections", node.server.connectionCount]);
  for (const g of node.groups.all()) {
    add(`group.${g.name}`, g.counters);
    const s = g.store.stats();
    for (const k of ["items", "bytesUsed", "dataBytes", "pageBytes", "metaBytes", "capacity", "pageSize", "maxItemSize", "evictions", "collisionEvictions", "expiredLazy", "expiredActive",
      "admissionsRejected", "pageMoves", "pageReleases", "pageRescues", "heapSize", "itemCapacity", "tableShrinks"] as const) {
      out.push([`group.${g.name}.store.${k}`, s[k]]);
    }
    if (g.mirror !== undefined) out.push([`group.${g.name}.mirror.items`, g.mirror.size]);
  }
  if (node.cluster !== undefined) {
    add("cluster", node.cluster.counters);
    out.push(["cluster.members", node.cluster.members.length]);
    out.push(["cluster.peersDown", node.cluster.peersDown]);
    out.push(["cluster.peersLagging", node.cluster.laggingMembers.length]);
  }
  if (node.pool !== undefined) add("loaders", node.pool.counters);
  if (node.memoryWatch !== undefined) add("memory", node.memoryWatch.counters);
  if (node.snapshotter !== undefined) add("snapshot", node.snapshotter.counters);
  return out;
}
