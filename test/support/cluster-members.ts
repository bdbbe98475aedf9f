/**
 * In-process cluster members for tests: nodes on free 127.0.0.1 ports that list each other as
 * peers, with their logs kept out of the test output.
 */
import { type Socket, listen } from "bun";
import { CacheClient } from "../../src/client/cache-client.ts";
import type { Loader } from "../../src/cluster/loader.ts";
import { CacheNode, type NodeDeps } from "../../src/server/cache-node.ts";
import type { NodeConfig } from "../../src/server/config.ts";
import { StubServer, type StubCall, closedPort, serve } from "../client/support.ts";
import { LogSink } from "../server/support.ts";
import { freePorts } from "./node-process.ts";

export interface Members {
  nodes: CacheNode[];
  /** ids are the members' ids (host:port), in the order of `nodes`. */
  ids: string[];
  /** start starts member `i` (again, after it was closed) with the same settings; it replaces nodes[i]. */
  start(i: number): CacheNode;
}

/**
 * startMembers starts `count` members; each node is added to `open`, the test's list of things to
 * close. `loaders(i)` gives member i's loaders by group (none without it).
 */
export function startMembers(
  count: number, open: { close(): Promise<void> }[], config: Partial<NodeConfig> = {}, loaders?: (i: number) => NodeDeps["loaders"],
): Members {
  const ports = freePorts(count);
  const ids = ports.map((p) => `127.0.0.1:${p}`);
  const nodes: CacheNode[] = [];
  const start = (i: number): CacheNode => {
    const n = CacheNode.start(
      { port: ports[i]!, host: "127.0.0.1", peers: ids, logLevel: "silent", ...config },
      { logger: new LogSink().logger, loaders: loaders?.(i) },
    );
    open.push(n);
    nodes[i] = n;
    return n;
  };
  ports.forEach((_, i) => start(i));
  return { nodes, ids, start };
}

/**
 * slowLoadingMember starts a member with group "g" (no TTL, every value admitted) loaded by
 * `loader`, a 200 ms peer timeout and a 500 ms load timeout (`extra` over them), for tests of loads
 * that outlast the peer timeout; it is added to `open`.
 */
export function slowLoadingMember(
  open: { close(): Promise<void> }[], port: number, ids: string[], loader: Loader, extra: Partial<NodeConfig> = {},
): CacheNode {
  const n = CacheNode.start(
    {
      port, host: "127.0.0.1", peers: ids, logLevel: "silent", peerTimeoutMs: 200, loadTimeoutMs: 500,
      groups: [{ name: "g", ttlMs: 0, admission: "always" }], ...extra,
    },
    { logger: new LogSink().logger, loaders: { g: loader } },
  );
  open.push(n);
  return n;
}

/** silentMember is a peer that reads what it is sent and never answers (a hung process); it is added to `open`. */
export function silentMember(open: { close(): Promise<void> }[]): { port: number } {
  const silent = listen({ hostname: "127.0.0.1", port: 0, socket: { data(_s: Socket, _d: Uint8Array) {} } });
  open.push({ close: async () => silent.stop(true) });
  return silent;
}

/** countingLoader loads `${name}:${key}` after `ms`, noting in `calls` under each key the nodes that loaded it. */
export function countingLoader(name: string, ms: number, calls: Map<string, string[]>): Loader {
  return async (key) => {
    const by = calls.get(key);
    if (by === undefined) calls.set(key, [name]);
    else by.push(name);
    await Bun.sleep(ms);
    return `${name}:${key}`;
  };
}

/** keysOwnedBy lists the first `n` keys `<prefix><i>` that `node`'s ring gives to member `id`. */
export function keysOwnedBy(node: CacheNode, id: string, n: number, prefix = "k"): string[] {
  const enc = new TextEncoder();
  const keys: string[] = [];
  for (let i = 0; keys.length < n; i++) if (node.cluster!.owner(enc.encode(`${prefix}${i}`), 0, `${prefix}${i}`.length) === id) keys.push(`${prefix}${i}`);
  return keys;
}

/** keysOf lists `n` keys (`prefix` + i) that `node`'s ring gives to member `id`. */
export function keysOf(node: CacheNode, id: string, prefix: string, n: number): string[] {
  const utf8 = new TextEncoder();
  const keys: string[] = [];
  for (let i = 0; keys.length < n; i++) {
    const k = utf8.encode(`${prefix}${i}`);
    if (node.cluster!.owner(k, 0, k.length) === id) keys.push(`${prefix}${i}`);
  }
  return keys;
}

/**
 * fetchedBy has `member` (a client naming itself `sender`, as a node's peer clients do, or none)
 * fetch `key` of group "g" from the node it is connected to as a member does (PeerGet), so the
 * node notes the member may hold a copy; resolves with the value's text.
 */
export function fetchedBy(member: CacheClient, key: string): Promise<string> {
  const answered = Promise.withResolvers<string>();
  member.forwardGet(utf8.encode("g"), utf8.encode(key), 0, key.length, (err, value, off, len) => {
    if (err !== null) answered.reject(err);
    else answered.resolve(new TextDecoder().decode(value!.subarray(off, off + len)));
  });
  return answered.promise;
}

const utf8 = new TextEncoder();

/**
 * leasesHeld resolves once every member of `nodes` (ids in the same order) holds a read lease from
 * every other (cluster/leases.ts): only then do their mirrors answer Gets of each other's keys. (A
 * member whose first invalidation found another not listening yet waits for its drop ask: up to
 * half a second.)
 */
export async function leasesHeld(nodes: readonly CacheNode[], ids: readonly string[], timeoutMs = 5_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  const held = (): boolean => nodes.every((n, i) => ids.every((id, j) => i === j || n.cluster!.leaseHeld(id)));
  while (!held()) {
    if (performance.now() > deadline) throw new Error("members hold no read leases on each other");
    await Bun.sleep(5);
  }
}

/** NodeBesideStub is a node A whose other member M is a stub server, and a client of A. */
export interface NodeBesideStub {
  a: CacheNode;
  m: StubServer;
  /** ids: A's, M's, then the member nothing listens on, if asked for. */
  ids: string[];
  viaA: CacheClient;
}

/**
 * nodeBesideStub starts node A listing stub member M (and, with `unreached`, a member nothing
 * listens on): M answers the calls of `methods` with `answer`, the rest as a member would. A, M
 * and the client are added to `open`.
 */
export function nodeBesideStub(
  open: { close(): Promise<void> }[], methods: ReadonlySet<number>, answer: (call: StubCall) => Uint8Array | null, unreached = false,
): NodeBesideStub {
  const m = new StubServer();
  open.push({ close: async () => m.close() });
  m.handler = (call, stub) => (methods.has(call.method) ? answer(call) : serve(call, stub));
  const [pa] = freePorts(1) as [number];
  const ids = [`127.0.0.1:${pa}`, `127.0.0.1:${m.port}`, ...(unreached ? [`127.0.0.1:${closedPort()}`] : [])];
  const a = CacheNode.start({ host: "127.0.0.1", port: pa, peers: ids, logLevel: "silent" }, { logger: new LogSink().logger });
  open.push(a);
  const viaA = new CacheClient({ host: "127.0.0.1", port: a.port, timeoutMs: 2000 });
  open.push(viaA);
  return { a, m, ids, viaA };
}
