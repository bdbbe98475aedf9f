/**
 * Cold loads pipelined on one connection: how long N concurrent Gets of keys nobody has loaded
 * take when the loader needs `--delay` ms, through one client connection and through several,
 * on a lone node and through a 2-node cluster (keys the other member owns). A node serves each
 * connection in order, and a Get waiting for its load holds the calls behind it on that
 * connection; the look-ahead (src/server/look-ahead.ts) starts their loads meanwhile, so they run
 * side by side (~delay) rather than one after another (N × delay), on one connection as on N.
 * groupcache over HTTP/1.1 runs them side by side.
 *
 * Then hits behind a load: Gets through A of keys B holds, sent while B loads another of its keys
 * for a Get (a PeerGet from A) or a GetMulti (A's PeerGetMulti of B's part). A sends all its reads
 * of B's keys on one connection; B writes such a reply when its loads settle, out of order
 * (load-waits.ts `detach`), so the hits are answered at once, not after the load (in order they
 * took ~delay).
 *
 *   bun run bench/cold-loads.ts [--keys 10] [--delay 100]
 */
import { parseArgs } from "node:util";
import { CacheClient } from "../src/client/cache-client.ts";
import { CacheNode } from "../src/server/cache-node.ts";
import { Logger } from "../src/server/log.ts";

const { values } = parseArgs({ options: { keys: { type: "string", default: "10" }, delay: { type: "string", default: "100" } } });
const KEYS = Number(values.keys);
const DELAY = Number(values.delay);
const quiet = new Logger("silent", false, () => {});
const enc = new TextEncoder();

function freePorts(n: number): number[] {
  return Array.from({ length: n }, () => {
    const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const port = l.port;
    l.stop(true);
    return port;
  });
}

const ports = freePorts(2);
const ids = ports.map((p) => `127.0.0.1:${p}`);
const loader = async (key: string) => {
  await Bun.sleep(DELAY);
  return `value of ${key}`;
};
const lone = CacheNode.start({ port: 0, logLevel: "silent", groups: [{ name: "g", ttlMs: 0 }] }, { logger: quiet, loaders: { g: loader } });
const pair = ports.map((port) =>
  CacheNode.start({ port, host: "127.0.0.1", peers: ids, logLevel: "silent", peerTimeoutMs: 60_000, groups: [{ name: "g", ttlMs: 0 }] }, { logger: quiet, loaders: { g: loader } }));
const a = pair[0]!;

/** keysOf returns KEYS fresh keys with `prefix`, owned by `owner` in the pair (any, without). */
function keysOf(prefix: string, owner?: string): string[] {
  const keys: string[] = [];
  for (let i = 0; keys.length < KEYS; i++) {
    const k = `${prefix}-${i}`;
    if (owner === undefined || a.cluster!.owner(enc.encode(k), 0, k.length) === owner) keys.push(k);
  }
  return keys;
}

async function time(port: number, connections: number, keys: string[]): Promise<number> {
  const c = new CacheClient({ host: "127.0.0.1", port, connections, timeoutMs: 120_000 });
  const t0 = performance.now();
  await Promise.all(keys.map((k) => c.get("g", k)));
  const ms = performance.now() - t0;
  await c.close();
  return Math.round(ms);
}

console.log(`${KEYS} concurrent Gets of cold keys, loader ${DELAY} ms (one after another: ${KEYS * DELAY} ms; side by side: ~${DELAY} ms)`);
console.log("| path | client connections | ms |");
console.log("| --- | ---: | ---: |");
for (const conns of [1, KEYS]) {
  console.log(`| lone node | ${conns} | ${await time(lone.port, conns, keysOf(`lone${conns}`))} |`);
  console.log(`| via A, keys A owns | ${conns} | ${await time(a.port, conns, keysOf(`own${conns}`, ids[0]))} |`);
  console.log(`| via A, keys B owns | ${conns} | ${await time(a.port, conns, keysOf(`far${conns}`, ids[1]))} |`);
}

/**
 * hitsBehindLoad times KEYS Gets through A of keys B holds, from a client of their own, sent
 * just after another client's Get through A of a cold key of B's: they share only A's
 * connection to B.
 */
async function hitsBehindLoad(connections: number, multi = false): Promise<{ hits: number; load: number }> {
  const b = pair[1]!;
  const hot = keysOf(`hot${connections}${multi ? "m" : ""}`, ids[1]);
  const [cold] = keysOf(`cold${connections}${multi ? "m" : ""}`, ids[1]);
  const toB = new CacheClient({ host: "127.0.0.1", port: b.port, timeoutMs: 120_000 });
  for (const k of hot) await toB.set("g", k, enc.encode(`value of ${k}`));
  await toB.close();
  const loading = new CacheClient({ host: "127.0.0.1", port: a.port, timeoutMs: 120_000 });
  const c = new CacheClient({ host: "127.0.0.1", port: a.port, connections, timeoutMs: 120_000 });
  await Promise.all([loading.stats("g"), ...Array.from({ length: connections * 4 }, () => c.stats("g"))]); // the connections open
  const t0 = performance.now();
  const load = (multi ? loading.getMulti("g", [cold!, ...hot]) : loading.get("g", cold!)).then(() => performance.now() - t0);
  await Bun.sleep(1); // the cold key's PeerGet goes first
  const t1 = performance.now();
  await Promise.all(hot.map((k) => c.get("g", k)));
  const hits = performance.now() - t1;
  const loaded = await load;
  await Promise.all([c.close(), loading.close()]);
  return { hits: Math.round(hits * 10) / 10, load: Math.round(loaded) };
}

console.log("");
console.log(`${KEYS} Gets through A of keys B holds, sent while B loads another of its keys (${DELAY} ms) for a Get, or for a GetMulti of it and the ${KEYS}`);
console.log("| behind | client connections | hits answered after, ms | the load, ms |");
console.log("| --- | ---: | ---: | ---: |");
for (const multi of [false, true]) {
  for (const conns of [1, KEYS]) {
    const r = await hitsBehindLoad(conns, multi);
    console.log(`| ${multi ? "GetMulti" : "Get"} | ${conns} | ${r.hits} | ${r.load} |`);
  }
}
await Promise.all([lone, ...pair].map((n) => n.close()));
