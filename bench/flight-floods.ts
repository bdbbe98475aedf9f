/**
 * flight-floods.ts — what loads of keys chosen to share a string hash cost a node whose loader
 * runs in its own thread (an in-process loader: the cache embedded in a program), against keys
 * that do not.
 *
 *   bun bench/flight-floods.ts [CONNECTIONS=300] [GETS=65]
 *
 * The loader stands for a slow backend: it answers only once every load has started. Each of
 * CONNECTIONS sockets pipelines GETS Gets of cold keys (32-byte printable keys sharing
 * JavaScriptCore's string hash: test/support/jsc-collisions.ts); the first Get waits for its load
 * and the look-ahead starts the loads of the rest (server/look-ahead.ts). A load under way is an
 * entry of the group's singleflight and `loading` Maps, keyed by the key's string. Prints how
 * many loads ran at once, how the Gets were answered, the time to start them and to answer them
 * all, and the longest the event loop was held (a 5 ms timer in the process).
 */
import { CacheNode } from "../src/server/cache-node.ts";
import { jscCollidingTextKeys } from "../test/support/jsc-collisions.ts";
import { LogSink, RawSocket, cacheErrorCode, getCall } from "../test/server/support.ts";
import { watchLoop } from "./loop-watch.ts";

const CONNECTIONS = Number(process.argv[2] ?? 300);
const GETS = Number(process.argv[3] ?? 65);
const N = CONNECTIONS * GETS;

/** shifted is a control: the same bytes rotated one place, so no two share a hash. */
const shifted = (keys: Uint8Array[]): Uint8Array[] => keys.map((k) => new Uint8Array([...k.subarray(1), k[0]!]));

for (const [name, keys] of [["control", shifted(jscCollidingTextKeys(N, 1))], ["colliding", jscCollidingTextKeys(N, 2)]] as const) {
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  let running = 0;
  let most = 0;
  const loader = async (key: string): Promise<string> => {
    most = Math.max(most, ++running);
    await gate;
    running--;
    return key;
  };
  await using node = CacheNode.start({ port: 0, logLevel: "silent" }, { logger: new LogSink().logger, loaders: { text: loader } });
  const sockets: RawSocket[] = [];
  for (let c = 0; c < CONNECTIONS; c++) sockets.push(await RawSocket.connect(node.port));

  const stopWatch = await watchLoop();
  const t0 = performance.now();
  sockets.forEach((s, c) => s.write(Buffer.concat(keys.slice(c * GETS, (c + 1) * GETS).map((k, i) => getCall(i + 1, k, "text")))));
  // Started: every load is under way, or the node stopped starting them (refused or answered).
  const answered = (): number => sockets.reduce((n, s) => n + s.frames().length, 0);
  for (let seen = -1; running + answered() < N && running !== seen;) {
    seen = running;
    await Bun.sleep(200);
  }
  const started = performance.now() - t0;
  open();
  await Promise.all(sockets.map((s) => s.waitFor(() => s.frames().length === GETS, "replies", 600_000)));
  const all = performance.now() - t0;
  const gap = stopWatch();
  const codes = new Map<number, number>();
  for (const s of sockets) for (const f of s.frames()) codes.set(cacheErrorCode(f), (codes.get(cacheErrorCode(f)) ?? 0) + 1);
  const answers = [...codes].map(([code, n]) => `${code === -1 ? "value" : `error ${code}`}: ${n}`).join(", ");
  console.log(
    `${name.padEnd(9)} ${CONNECTIONS} x ${GETS} Gets: ${most} loads at once; ${answers}; started in ${started.toFixed(0)} ms, ` +
      `answered in ${all.toFixed(0)} ms; loop held up to ${gap.toFixed(0)} ms`,
  );
  for (const s of sockets) s.close();
}
