/**
 * large-items.ts — how many large items a store holds in its memory: values of a given fraction of
 * the page (1 MiB) against memcached, which splits items larger than its largest chunk class
 * (`slab_chunk_max`, half a page) into chunks of that class plus a tail of a class that fits.
 *
 *   bun bench/large-items.ts [--memory 64] [--fractions 0.45,0.5,0.52,0.55,0.6,0.8]
 *
 * For each fraction f: 3 × memory / (f MiB) Sets of distinct keys `f<f>-<i>` (5-9 bytes) with
 * values of f × 1 MiB bytes, then the items held (the store's size, memcached's curr_items) and
 * items per MiB. Our store runs in process, a fresh one per fraction. memcached keeps its pages
 * with the classes that took them, so give it a fresh process per fraction:
 *   for f in 0.45 0.5 0.52 0.55 0.6 0.8; do memcached -m 64 -p 11311 & sleep 0.5
 *     bun bench/large-items.ts --memcached 11311 --fractions $f; kill $!; done
 */
import { connect } from "node:net";
import { parseArgs } from "node:util";
import { MIB, Store } from "../src/store/store.ts";

const { values: opt } = parseArgs({
  options: {
    memory: { type: "string", default: "64" },
    fractions: { type: "string", default: "0.45,0.5,0.52,0.55,0.6,0.8" },
    memcached: { type: "string" },
  },
});
const memory = Number(opt.memory);
const fractions = opt.fractions.split(",").map(Number);
const valueOf = (f: number): number => Math.floor(f * MIB);
const setsFor = (f: number): number => Math.ceil((3 * memory) / f);
const enc = new TextEncoder();

for (const f of fractions) {
  const n = setsFor(f);
  const len = valueOf(f);
  let held: number;
  if (opt.memcached === undefined) {
    const store = new Store({ memory: memory * MIB });
    const value = new Uint8Array(len);
    for (let i = 0; i < n; i++) {
      const key = enc.encode(`f${f}-${i}`);
      store.set(key, 0, key.length, value, 0, len, 0);
    }
    held = store.size;
  } else {
    held = await memcachedHolds(Number(opt.memcached), f, n, len);
  }
  const who = opt.memcached === undefined ? "ours" : "memcached";
  console.log(`${who} ${memory} MiB, values ${f} MiB (${len} B): ${held} items held of ${n} set, ${(held / memory).toFixed(3)} per MiB, ${((100 * held * len) / (memory * MIB)).toFixed(1)} % of the memory in values`);
}

/** memcachedHolds sets n keys of `len` bytes in the memcached at `port` and returns its curr_items. */
async function memcachedHolds(port: number, f: number, n: number, len: number): Promise<number> {
  const sock = connect(port, "127.0.0.1");
  await new Promise((r) => sock.once("connect", r));
  let input = "";
  let want: RegExp | null = null;
  let done: (() => void) | null = null;
  sock.on("data", (d) => {
    input += d.toString("latin1");
    if (want !== null && want.test(input)) done?.();
  });
  const ask = (cmd: string, until: RegExp): Promise<string> => {
    input = "";
    want = until;
    return new Promise((r) => {
      done = () => {
        want = null;
        r(input);
      };
      sock.write(cmd);
    });
  };
  const body = Buffer.alloc(len, 0x78);
  for (let i = 0; i < n; i++) {
    sock.write(`set f${f}-${i} 0 0 ${len} noreply\r\n`);
    sock.write(body);
    sock.write("\r\n");
    if (i % 16 === 15) await ask("version\r\n", /VERSION [^\r]*\r\n/);
  }
  const stats = await ask("stats\r\n", /END\r\n/);
  sock.end();
  return Number(/STAT curr_items (\d+)/.exec(stats)?.[1]);
}
