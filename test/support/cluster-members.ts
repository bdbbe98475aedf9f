/**
 * In-process cluster members for tests: nodes on free 127.0.0.1 ports that list each other as
 * peers, with their logs kept out of the test output.
 */
import { CacheNode } from "../../src/server/cache-node.ts";
import type { NodeConfig } from "../../src/server/config.ts";
import { LogSink } from "../server/support.ts";
import { freePorts } from "./node-process.ts";

export interface Members {
  nodes: CacheNode[];
  /** ids are the members' ids (host:port), in the order of `nodes`. */
  ids: string[];
  /** start starts member `i` (again, after it was closed) with the same settings; it replaces nodes[i]. */
  start(i: number): CacheNode;
}

/** startMembers starts `count` members; each node is added to `open`, the test's list of things to close. */
export function startMembers(count: number, open: { close(): Promise<void> }[], config: Partial<NodeConfig> = {}): Members {
  const ports = freePorts(count);
  const ids = ports.map((p) => `127.0.0.1:${p}`);
  const nodes: CacheNode[] = [];
  const start = (i: number): CacheNode => {
    const n = CacheNode.start({ port: ports[i]!, host: "127.0.0.1", peers: ids, logLevel: "silent", ...config }, { logger: new LogSink().logger });
    open.push(n);
    nodes[i] = n;
    return n;
  };
  ports.forEach((_, i) => start(i));
  return { nodes, ids, start };
}
