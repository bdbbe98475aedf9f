/**
 * Cold loads pipelined on one connection: how long N concurrent Gets of keys nobody has loaded
 * take when the loader needs `--delay` ms, through one client connection and through several,
 * on a lone node and through a 2-node cluster (keys the other member owns). A node serves each
 * connection in order, and a Get waiting for its load holds the calls behind it on that
 * connection; the look-ahead (src/server/look-ahead.ts) starts their loads meanwhile, so they run
 * side by side (~delay) rather than one after another (N × delay), on one connection as on N.
 * groupcache over HTTP/1.1 runs them side by side.
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
await Promise.all([lone, ...pair].map((n) => n.close()));
