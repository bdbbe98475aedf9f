/**
 * Memory benchmark (issue 2): bytes of process memory per item for 1M items with 16-byte keys and
 * 100-byte values, our Store vs lru-cache vs a plain Map.
 *
 * Each implementation runs in its own spawned `bun` child (`bun bench/memory.ts --child <name>`),
 * so no cache sees another's heap or allocator state. The child collects garbage (`Bun.gc(true)`),
 * samples RSS, `process.memoryUsage()` and JSC's `heapStats()`, builds the cache, fills it with 1M
 * items from one reused key buffer and one reused value buffer (as a server fills from its receive
 * buffer), spot-checks a round trip, collects again and samples again. It reports the deltas as
 * bytes per item and the overhead beyond key + value (116 B). Each sample waits `SETTLE_MS` between
 * two collections so freed GC blocks are returned to the OS and RSS shows what is live. Peak RSS during the fill is sampled
 * every 50k items. For our store it also checks `stats()`: 1M items and 0 evictions, and reports
 * metadata and chunk bytes per item. "mybuncache-presized" is the same store with `initialItems`
 * set to 1M, which shows what the item table's growth by reallocation leaves in RSS. The parent
 * prints one table.
 *
 * Run: `bun run bench:memory` (or `bun run bench/memory.ts`); `--json` prints the raw rows.
 */
import { heapStats } from "bun:jsc";
import { LruCacheImpl } from "./impls/lru-cache.ts";
import { MapImpl } from "./impls/map.ts";
import { MyBunCacheImpl } from "./impls/mybuncache.ts";
import type { CacheImpl } from "./impls/cache-impl.ts";
import { KEY_BYTES, writeKey } from "./workload.ts";

const ITEMS = 1_000_000;
const VALUE_BYTES = 100;
const MIB = 1024 * 1024;
const IMPLS = ["mybuncache", "mybuncache-presized", "lru-cache", "map"] as const;
type ImplName = (typeof IMPLS)[number];

interface Row {
  impl: string;
  items: number;
  rssPerItem: number; // RSS growth / items, after gc
  peakRssPerItem: number; // highest RSS seen during the fill, minus the baseline, / items
  heapPerItem: number; // JSC heapSize growth / items (GC-managed objects)
  externalPerItem: number; // process.memoryUsage().external growth / items (ArrayBuffers etc.)
  overheadPerItem: number; // rssPerItem - key - value
  store?: { evictions: number; metaPerItem: number; chunkPerItem: number; pagePerItem: number };
}

function make(name: ImplName): CacheImpl {
  switch (name) {
    case "mybuncache":
      // 136 B chunks (4 + 16 + 100 rounded up to a size class) + metadata, with room to spare.
      return new MyBunCacheImpl({ memory: 320 * MIB });
    case "mybuncache-presized":
      // The same with the item table sized up front, so no grown-out arrays are left behind.
      return new MyBunCacheImpl({ memory: 320 * MIB, initialItems: ITEMS });
    case "lru-cache":
      return new LruCacheImpl(2 * ITEMS * VALUE_BYTES);
    case "map":
      return new MapImpl();
  }
}

/** SETTLE_MS (env MEMORY_SETTLE_MS, default 3000) lets the allocator return freed pages to the OS before RSS is read. */
const SETTLE_MS = Number(process.env.MEMORY_SETTLE_MS ?? 3000);

function settle(): { rss: number; heap: number; external: number } {
  Bun.gc(true);
  if (SETTLE_MS > 0) Bun.sleepSync(SETTLE_MS);
  Bun.gc(true);
  const m = process.memoryUsage();
  return { rss: m.rss, heap: heapStats().heapSize, external: m.external };
}

function child(name: ImplName): Row {
  const key = new Uint8Array(KEY_BYTES);
  const value = new Uint8Array(VALUE_BYTES);
  const out = new Uint8Array(VALUE_BYTES);
  for (let b = 0; b < VALUE_BYTES; b++) value[b] = (b * 31 + 7) & 0xff;
  const m0 = settle();
  const impl = make(name);
  let peak = 0;
  for (let i = 0; i < ITEMS; i++) {
    writeKey(key, 0, i);
    value[0] = i & 0xff; // each value differs from its neighbours
    value[1] = (i >> 8) & 0xff;
    value[2] = (i >> 16) & 0xff;
    if (!impl.set(key, 0, KEY_BYTES, value, 0, VALUE_BYTES)) throw new Error(`${name}: set ${i} failed`);
    if (i % 50_000 === 0) peak = Math.max(peak, process.memoryUsage().rss);
  }
  for (const i of [0, 1, 12_345, ITEMS - 1]) {
    writeKey(key, 0, i);
    const n = impl.get(key, 0, KEY_BYTES, out);
    if (n !== VALUE_BYTES || out[0] !== (i & 0xff) || out[1] !== ((i >> 8) & 0xff) || out[2] !== ((i >> 16) & 0xff)) {
      throw new Error(`${name}: round trip of key ${i} failed`);
    }
  }
  if (impl.size !== ITEMS) throw new Error(`${name}: holds ${impl.size} items, expected ${ITEMS}`);
  const m1 = settle();
  peak = Math.max(peak, m1.rss);
  const rssPerItem = (m1.rss - m0.rss) / ITEMS;
  const row: Row = {
    impl: name,
    items: impl.size,
    rssPerItem,
    peakRssPerItem: (peak - m0.rss) / ITEMS,
    heapPerItem: (m1.heap - m0.heap) / ITEMS,
    externalPerItem: (m1.external - m0.external) / ITEMS,
    overheadPerItem: rssPerItem - KEY_BYTES - VALUE_BYTES,
  };
  if (impl instanceof MyBunCacheImpl) {
    const s = impl.stats();
    if (s.evictions !== 0 || s.items !== ITEMS) throw new Error(`store evicted: ${s.items} items, ${s.evictions} evictions`);
    row.store = {
      evictions: s.evictions,
      metaPerItem: s.metaBytes / s.items,
      chunkPerItem: s.bytesUsed / s.items,
      pagePerItem: s.pageBytes / s.items,
    };
  }
  return row;
}

function parent(json: boolean): void {
  const rows: Row[] = [];
  for (const name of IMPLS) {
    const proc = Bun.spawnSync([process.execPath, import.meta.path, "--child", name], { stderr: "inherit" });
    if (proc.exitCode !== 0) throw new Error(`child ${name} exited with ${proc.exitCode}`);
    rows.push(JSON.parse(proc.stdout.toString()) as Row);
  }
  if (json) {
    console.log(JSON.stringify(rows, null, 2));
    return;
  }
  console.log(`${ITEMS} items, ${KEY_BYTES} B keys, ${VALUE_BYTES} B values (key + value = ${KEY_BYTES + VALUE_BYTES} B); bytes per item:`);
  console.log("| impl | RSS/item | overhead/item | peak RSS/item | JSC heap/item | external/item |");
  console.log("|---|---:|---:|---:|---:|---:|");
  const f = (n: number): string => n.toFixed(1);
  for (const r of rows) {
    console.log(`| ${r.impl} | ${f(r.rssPerItem)} | ${f(r.overheadPerItem)} | ${f(r.peakRssPerItem)} | ${f(r.heapPerItem)} | ${f(r.externalPerItem)} |`);
  }
  for (const r of rows) {
    if (!r.store) continue;
    const s = r.store;
    console.log(
      `${r.impl} stats(): ${r.items} items, ${s.evictions} evictions; chunk ${f(s.chunkPerItem)} B/item ` +
        `(rounding ${f(s.chunkPerItem - KEY_BYTES - VALUE_BYTES)} incl. 4 B header), pages ${f(s.pagePerItem)} B/item, ` +
        `metaBytes ${f(s.metaPerItem)} B/item → accounted overhead ${f(s.pagePerItem + s.metaPerItem - KEY_BYTES - VALUE_BYTES)} B/item`,
    );
  }
}

const at = process.argv.indexOf("--child");
if (at >= 0) {
  const name = process.argv[at + 1] as ImplName;
  if (!IMPLS.includes(name)) throw new Error(`unknown impl ${name}`);
  console.log(JSON.stringify(child(name)));
} else {
  parent(process.argv.includes("--json"));
}
