import { afterEach, beforeEach, expect, test, setDefaultTimeout } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Group } from "../../src/cluster/group.ts";
import { Groups } from "../../src/cluster/groups.ts";
import { Snapshotter, type SnapshotLogger } from "../../src/server/snapshot.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const MB = 1024 * 1024;
const enc = new TextEncoder();
const dec = new TextDecoder();
const quiet: SnapshotLogger = { info() {}, warn() {}, error() {} };

let dir = "";
let path = "";
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "mbc-recency-"));
  path = join(dir, "cache.snap");
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function makeGroups(memory: number, names = ["kv"]): Groups {
  const groups = new Groups();
  for (const name of names) groups.add(new Group({ name, memory, store: { maxItemSize: 64 * 1024 } }));
  return groups;
}

/**
 * test/server/fixtures/v1.snap was written by the Snapshotter of 6aac2d3 (items in id order): groups
 * "kv" (key-<i> = "value-<i>-" repeated i + 1 times; key-0 to key-9 without expiry, key-10 to
 * key-19 expiring at wall time 9,904,057,042,347 ms, in 2283) and "other" (o = "other-group").
 */
test("a version-1 snapshot written before recency was kept still loads (fixture made by that writer)", async () => {
  const groups = makeGroups(4 * MB, ["kv", "other"]);
  const fixture = join(import.meta.dir, "fixtures", "v1.snap");
  rmSync(path, { force: true });
  await Bun.write(path, Bun.file(fixture));
  const l = await new Snapshotter({ path, groups, logger: quiet }).load();
  expect(l).toMatchObject({ status: "loaded", items: 21, skippedExpired: 0, skippedUnknownGroup: 0 });
  const kv = groups.byName("kv")!.store;
  for (let i = 0; i < 20; i++) {
    const id = kv.get(enc.encode(`key-${i}`));
    expect(id).toBeGreaterThanOrEqual(0);
    expect(dec.decode(kv.valueView(id))).toBe(`value-${i}-`.repeat(i + 1));
    expect(kv.ttlRemaining(id) === -1).toBe(i < 10); // key-10 to key-19 expire in 2283
  }
  const other = groups.byName("other")!.store;
  expect(dec.decode(other.valueView(other.get(enc.encode("o"))))).toBe("other-group");
});
