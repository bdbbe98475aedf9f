/**
 * mixed-sizes.ts — the hit rate of a small cache holding values of many sizes: our store against
 * memcached, the same operations in the same order.
 *
 *   bun bench/mixed-sizes.ts --memory 16 --keys 30000                  # our store, 1 MiB pages
 *   bun bench/mixed-sizes.ts --memory 16 --keys 30000 --max-item 64k   # maxitem=64k: 256 KiB pages
 *   memcached -m 16 -p 11211 & bun bench/mixed-sizes.ts --keys 30000 --memcached 11211
 *
 * Keys k0..k(keys-1), each with one value size, 100 B to 1 KiB (key * 7919 mod 925 + 100).
 * 10 × keys operations on random keys (xorshift, fixed seed): the first half all Sets, then odd
 * operations read (a miss sets the key again) and even ones set. Prints the hit rate of the reads
 * and the items held. memcached answers its reads in batches of 200 (misses set after each batch).
 */
import { connect } from "node:net";
import { parseArgs } from "node:util";
import { MIB, Store } from "../src/store/store.ts";
import { parseSize } from "../src/server/flag-values.ts";

const { values: opt } = parseArgs({
  options: {
    memory: { type: "string", default: "16" }, keys: { type: "string", default: "30000" },
    "max-item": { type: "string" }, memcached: { type: "string" },
  },
});
const KEYS = Number(opt.keys);
const OPS = KEYS * 10;
const size = (k: number): number => 100 + ((k * 7919) % 925);
let x = 0x9e3779b9 | 0;
const rnd = (): number => {
  x ^= x << 13;
  x ^= x >>> 17;
  x ^= x << 5;
  return (x >>> 0) / 4294967296;
};
const isRead = (op: number): boolean => op > KEYS * 5 && (op & 1) === 1;

if (opt.memcached === undefined) {
  const maxItemSize = opt["max-item"] === undefined ? undefined : parseSize("--max-item", opt["max-item"]);
  const s = new Store({ memory: Number(opt.memory) * MIB, maxItemSize });
  const enc = new TextEncoder();
  const keys = Array.from({ length: KEYS }, (_, k) => enc.encode(`k${k}`));
  const value = new Uint8Array(1024);
  let reads = 0;
  let hits = 0;
  for (let op = 0; op < OPS; op++) {
    const k = Math.floor(rnd() * KEYS);
    const key = keys[k]!;
    if (isRead(op)) {
      reads++;
      if (s.get(key) >= 0) {
        hits++;
        continue;
      }
    }
    s.set(key, 0, key.length, value, 0, size(k), 0);
  }
  const st = s.stats();
  console.log(`ours: ${opt.memory} MiB, ${KEYS} keys, page ${s.slab.pageSize} B: hits ${(100 * hits / reads).toFixed(1)} %, items ${st.items}, page moves ${st.pageMoves}`);
} else {
  const sock = connect(Number(opt.memcached), "127.0.0.1");
  await new Promise((r) => sock.once("connect", r));
  let input = "";
  let waiting: { ends: number; done: () => void } | null = null;
  sock.on("data", (d) => {
    input += d.toString("latin1");
    if (waiting !== null && (input.match(/END\r\n|VERSION [^\r]*\r\n/g)?.length ?? 0) >= waiting.ends) {
      const w = waiting;
      waiting = null;
      w.done();
    }
  });
  const filler = "x".repeat(1024);
  const setCmd = (k: number): string => `set k${k} 0 0 ${size(k)} noreply\r\n${filler.slice(0, size(k))}\r\n`;
  let reads = 0;
  let hits = 0;
  for (let op = 0; op < OPS;) {
    let out = "";
    const read: number[] = [];
    for (let n = 0; n < 200 && op < OPS; n++, op++) {
      const k = Math.floor(rnd() * KEYS);
      if (isRead(op)) {
        read.push(k);
        out += `get k${k}\r\n`;
      } else out += setCmd(k);
    }
    input = "";
    await new Promise<void>((done) => {
      waiting = { ends: read.length + 1, done };
      sock.write(`${out}version\r\n`);
    });
    const answers = input.split("END\r\n");
    let misses = "";
    for (let j = 0; j < read.length; j++) {
      reads++;
      if (answers[j]!.includes("VALUE ")) hits++;
      else misses += setCmd(read[j]!);
    }
    if (misses !== "") sock.write(misses);
  }
  input = "";
  await new Promise<void>((done) => {
    waiting = { ends: 1, done };
    sock.write("stats\r\n");
  });
  const items = /STAT curr_items (\d+)/.exec(input)?.[1];
  const bytes = /STAT limit_maxbytes (\d+)/.exec(input)?.[1];
  console.log(`memcached -m ${Number(bytes) / MIB}, ${KEYS} keys: hits ${(100 * hits / reads).toFixed(1)} %, items ${items}`);
  sock.end();
}
