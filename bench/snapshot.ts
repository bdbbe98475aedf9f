/**
 * Snapshot write and load of 1M items (16 B keys, 100 B values): total time, the worst pause the
 * Snapshotter measured between its event-loop turns, and the worst gap an independent
 * `setImmediate` ping loop saw (what a request arriving during the write would wait). With
 * `heat` 1 (the default) every key is then read once in a random order, so recency is not the item
 * id order and the write has to put the items in recency order (coldest first) itself; 0 leaves
 * recency in id order.
 *
 * A one-shot measurement, not a mitata suite: one write of 1M items is the unit being measured
 * (seconds, not nanoseconds), and no rival library persists this store.
 *
 *   bun run bench/snapshot.ts [items] [sliceMs] [heat]
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Group } from "../src/cluster/group.ts";
import { Groups } from "../src/cluster/groups.ts";
import { Snapshotter, type SnapshotLogger } from "../src/server/snapshot.ts";

const N = Number(process.argv[2] ?? 1_000_000);
const SLICE_MS = Number(process.argv[3] ?? 10);
const HEAT = Number(process.argv[4] ?? 1) !== 0;
const quiet: SnapshotLogger = { info() {}, warn() {}, error: (m, f) => console.error(m, f) };

function makeGroups(): Groups {
  const groups = new Groups();
  groups.add(new Group({ name: "bench", memory: 512 * 1024 * 1024, admission: "always" }));
  return groups;
}

/** lagMonitor records the longest gap between consecutive setImmediate callbacks until stopped. */
function lagMonitor(): { stop(): number } {
  let worst = 0;
  let last = performance.now();
  let running = true;
  const tick = (): void => {
    const now = performance.now();
    if (now - last > worst) worst = now - last;
    last = now;
    if (running) setImmediate(tick);
  };
  setImmediate(tick);
  return {
    stop() {
      running = false;
      return worst;
    },
  };
}

const dir = mkdtempSync(join(tmpdir(), "mbc-snap-bench-"));
const path = join(dir, "bench.snap");
try {
  const src = makeGroups();
  const store = src.byName("bench")!.store;
  const key = new Uint8Array(16);
  const value = new Uint8Array(100);
  const dv = new DataView(key.buffer);
  for (let i = 0; i < N; i++) {
    dv.setUint32(0, i, true);
    dv.setUint32(12, i * 2654435761, true);
    value[i % 100] = i & 0xff;
    store.set(key, 0, 16, value, 0, 100, i % 3 === 0 ? 3_600_000 : 0);
  }
  if (HEAT) {
    // A multiplicative permutation of the ids (odd multiplier, power-of-two range): no array needed.
    const range = 2 ** Math.ceil(Math.log2(N));
    for (let j = 0; j < range; j++) {
      const i = Math.imul(j, 0x9e3779b1) & (range - 1);
      if (i >= N) continue;
      dv.setUint32(0, i, true);
      dv.setUint32(12, i * 2654435761, true);
      store.get(key, 0, 16);
    }
  }
  console.log(`filled ${store.size} items (${(store.stats().dataBytes / 1e6).toFixed(0)} MB of keys+values), sliceMs ${SLICE_MS}, heat ${HEAT ? 1 : 0}`);

  for (let run = 1; run <= 3; run++) {
    const snap = new Snapshotter({ path, groups: src, logger: quiet, sliceMs: SLICE_MS });
    const lag = lagMonitor();
    const w = await snap.write();
    const worstGap = lag.stop();
    console.log(
      `write ${run}: ${w.items} items, ${(w.bytes / 1e6).toFixed(1)} MB in ${w.ms.toFixed(0)} ms ` +
        `(${((w.bytes / 1e6) / (w.ms / 1000)).toFixed(0)} MB/s); worst pause ${w.worstPauseMs.toFixed(2)} ms (Snapshotter), ` +
        `${worstGap.toFixed(2)} ms (setImmediate ping)`,
    );
  }
  for (let run = 1; run <= 2; run++) {
    const dst = makeGroups();
    const snap = new Snapshotter({ path, groups: dst, logger: quiet, sliceMs: SLICE_MS });
    const lag = lagMonitor();
    const l = await snap.load();
    const worstGap = lag.stop();
    console.log(
      `load ${run}: ${l.status}, ${l.items} items in ${l.ms.toFixed(0)} ms (${Math.round(l.items / (l.ms / 1000))} items/s, ` +
        `verify pass + apply pass); worst gap ${worstGap.toFixed(2)} ms (setImmediate ping)`,
    );
    if (l.items !== N) throw new Error(`loaded ${l.items}, expected ${N}`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
