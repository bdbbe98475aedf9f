/**
 * Snapshot writer run in its own process by snapshot.test.ts, to be killed with SIGKILL mid-write.
 *
 *   bun snapshot-child.ts PATH ITEMS
 *
 * Generation g = 1, 2, ...: rewrite every item's value to name g, then write a snapshot. Nothing
 * changes while a write runs, so every complete snapshot holds one generation only. Prints
 * `written g` after each write, and `mid g` once the temporary file of write g has passed 1 MiB
 * (checked between the write's slices), so the parent can kill it inside a write.
 */
import { statSync } from "node:fs";
import { Group } from "../../src/cluster/group.ts";
import { Groups } from "../../src/cluster/groups.ts";
import { Snapshotter } from "../../src/server/snapshot.ts";

const path = process.argv[2]!;
const items = Number(process.argv[3] ?? 40_000);
const VALUE_BYTES = 1000;
const groups = new Groups();
const store = groups.add(new Group({ name: "kv", memory: 256 * 1024 * 1024 })).store;
const snap = new Snapshotter({ path, groups, logger: { info() {}, warn() {}, error: (m, f) => console.error(m, f) }, sliceMs: 2 });
const enc = new TextEncoder();
const tmp = `${path}.tmp-${process.pid}`;
const value = new Uint8Array(VALUE_BYTES);

for (let gen = 1; ; gen++) {
  for (let i = 0; i < items; i++) {
    const key = enc.encode(`k${i}`);
    value.fill(gen & 0xff);
    enc.encodeInto(`gen ${gen} k${i};`, value);
    store.set(key, 0, key.length, value, 0, VALUE_BYTES, 0);
  }
  let done = false;
  const writing = snap.write().finally(() => {
    done = true;
  });
  let told = false;
  while (!done) {
    await new Promise((resolve) => setImmediate(resolve));
    if (!told && (statSync(tmp, { throwIfNoEntry: false })?.size ?? 0) > 1 << 20) {
      told = true;
      process.stdout.write(`mid ${gen}\n`);
    }
  }
  await writing;
  process.stdout.write(`written ${gen}\n`);
}
