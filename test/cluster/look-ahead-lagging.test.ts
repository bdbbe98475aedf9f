/**
 * A member whose owner's invalidations come late (a slow link to it: the owner marks it lagging
 * and acknowledges writes without its answer, or waits for that answer while the member reads the
 * new value another way) must not answer a Get with a value it fetched ahead of the Get's turn
 * after the same connection read the newer value: a GetMulti of the key, served at its turn, drops
 * what was fetched ahead for it, so the Get behind reads as it would in turn. (Review: "a member
 * marked lagging may still use an answer it fetched ahead until askDrops reaches it".) What such a
 * member may still serve, as its mirror may, until the invalidation or the ask to drop its mirrors
 * reaches it: a value older than a write acknowledged without its answer, of a key the connection
 * did not read since (docs/operations.md, `cluster_peers_lagging`).
 *
 * B owns K; B reaches A through a proxy that holds back its calls from the first one naming
 * `needle` on (B's invalidations of that key, and all that follow them on that connection).
 */
import { afterEach, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import { until } from "../client/support.ts";
import { delayingProxy } from "../support/delay-proxy.ts";
import { freePorts } from "../support/node-process.ts";
import { LogSink, RawSocket, getCall, getMultiCall } from "../server/support.ts";
import { T } from "../protocol/wire-builder.ts";
import { field, outcome, readReplies } from "../server/wire-reader.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const open: { close(): Promise<void> }[] = [];
afterEach(async () => { await Promise.all(open.splice(0).reverse().map((x) => x.close().catch(() => {}))); });
const utf8 = new TextEncoder();
const dec = new TextDecoder();

/** SLOW_MS: the load of A's own key the connection waits for while K is fetched ahead. */
const SLOW_MS = 600;

/**
 * twoMembers starts A and B (B reaching A through the delaying proxy, whose needle is the key
 * `needle` names: the first chunk naming it and all after it come `delayMs` late), and picks a key
 * A owns (`slow`, loaded in SLOW_MS) and two keys B owns (`lag`, `k`).
 */
async function twoMembers(peerTimeoutMs: number, delayMs: number, needle: "lag" | "k") {
  const [pa, pb, proxied] = freePorts(3) as [number, number, number];
  const ids = [`127.0.0.1:${proxied}`, `127.0.0.1:${pb}`];
  const loader = async (key: string): Promise<string> => {
    if (key.startsWith("slow")) await Bun.sleep(SLOW_MS);
    return `L:${key}`;
  };
  const cfg = { host: "127.0.0.1", peers: ids, logLevel: "silent" as const, peerTimeoutMs };
  const a = CacheNode.start({ ...cfg, port: pa, self: ids[0] }, { logger: new LogSink().logger, loaders: { default: loader } });
  const b = CacheNode.start({ ...cfg, port: pb }, { logger: new LogSink().logger, loaders: { default: loader } });
  open.push(a, b);
  const owned = (prefix: string, id: string): string => {
    for (let i = 0; ; i++) if (a.cluster!.owner(utf8.encode(`${prefix}${i}`), 0, `${prefix}${i}`.length) === id) return `${prefix}${i}`;
  };
  const slow = owned("slow", ids[0]!), lag = owned("lagq", ids[1]!), k = owned("kq", ids[1]!);
  open.push(delayingProxy(proxied, pa, needle === "lag" ? lag : k, delayMs));
  await until(() => a.cluster!.startConfirmed && b.cluster!.startConfirmed, 5_000);
  const writer = new CacheClient({ host: "127.0.0.1", port: pb, timeoutMs: 5_000 }); // writes at B, the owner
  const reader = new CacheClient({ host: "127.0.0.1", port: pa, timeoutMs: 5_000 }); // reads through A
  open.push(writer, reader);
  return { a, b, aId: ids[0]!, slow, lag, k, writer, reader };
}

/**
 * fetchedAhead resolves once A forwarded a Get ahead and its owner loaded the value it answers
 * with (one more load there than `loads`; the answer is written in the same turn, before the
 * owner reads a write sent after this).
 */
function fetchedAhead(a: CacheNode, owner: CacheNode, loads: number): Promise<void> {
  return until(() => a.cluster!.counters.prefetchesSent > 0 && loadsOf(owner) > loads);
}

function loadsOf(node: CacheNode): number {
  return node.groups.byName("default")!.counters.localLoads;
}

/** pipeline sends Get slow, GetMulti [k], Get k on one connection to `port`. */
async function pipeline(port: number, slow: string, k: string): Promise<RawSocket> {
  const raw = await RawSocket.connect(port);
  raw.write(new Uint8Array([...getCall(1, slow), ...getMultiCall(2, "default", [utf8.encode(k)]), ...getCall(3, k)]));
  return raw;
}

/** answers reads the three replies: each Get's value, the GetMulti's values joined. */
async function answers(raw: RawSocket): Promise<string[]> {
  await raw.waitFor(() => raw.frames().length === 3, "replies");
  return readReplies(raw.received, "framed").replies.map((r) => {
    const o = outcome(r);
    if (o.kind !== "success") return o.kind;
    if (r.name === "GetMulti") return ((field(o.value, 1, T.MAP) as [Uint8Array, Uint8Array][]) ?? []).map(([, v]) => dec.decode(v)).join();
    return dec.decode(field(o.value, 1, T.STRING) as Uint8Array);
  });
}

test("a member the owner marked lagging: a write acknowledged without its answer, read by a GetMulti, then the Get of the key behind it reads the older value fetched ahead", async () => {
  // A write waits 1 s at most for A's answer; B's invalidations reach A 1.5 s late.
  const { a, b, aId, slow, lag, k, writer, reader } = await twoMembers(2_000, 1_500, "lag");
  await reader.get("default", lag); // A fetches `lag` (B loads it): B notes it handed it out to A
  await writer.set("default", lag, "v2"); // waits for A's answer, held back by the proxy, until A's lease ends
  // Marked lagging once the write's longest wait (1 s) passed unanswered.
  await until(() => b.cluster!.laggingMembers.length > 0);
  expect(b.cluster!.laggingMembers).toEqual([aId]);

  const loads = loadsOf(b);
  const raw = await pipeline(a.port, slow, k);
  await fetchedAhead(a, b, loads); // K fetched ahead (B loads L:K) while `slow` loads
  await writer.set("default", k, "v2"); // acknowledged at once: B does not wait for a lagging member
  // Served before B's invalidation of K (and its ask to drop the mirrors) reach A.
  expect(await answers(raw)).toEqual([`L:${slow}`, "v2", "v2"]);
  raw.close();
}, 20_000);

test("an owner waiting for this member's answer: a GetMulti reads the write it has not acknowledged yet, and the Get of the key behind it must not read the older value fetched ahead", async () => {
  // A write waits 2 s at most for A's answer; B's invalidation of K reaches A 1.5 s late: A is not lagging.
  const { a, b, slow, k, writer } = await twoMembers(4_000, 1_500, "k");
  const loads = loadsOf(b);
  const raw = await pipeline(a.port, slow, k);
  await fetchedAhead(a, b, loads); // K fetched ahead (L:K): B notes it handed K out to A
  const written = writer.set("default", k, "v2"); // B stores v2, then waits for A's answer
  expect(await answers(raw)).toEqual([`L:${slow}`, "v2", "v2"]);
  await written;
  expect(b.cluster!.laggingMembers).toEqual([]); // (waited for, and answered in time)
  raw.close();
}, 20_000);
