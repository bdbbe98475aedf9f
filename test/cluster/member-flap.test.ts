/**
 * A member taken out of the list and put back (a readiness flap under --peers-dns, a peers file
 * edited): while it was out, its keys were written elsewhere, so it keeps none of what it held
 * (review: back in the list, it served a value older than an acknowledged write).
 */
import { afterEach, expect, test, setDefaultTimeout } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CacheClient } from "../../src/client/cache-client.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import { LogSink } from "../server/support.ts";
import { waitUntil } from "../support/gates.ts";
import { freePorts } from "../support/node-process.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const open: { close(): unknown }[] = [];
afterEach(async () => {
  for (const x of open.splice(0)) await x.close();
});

/** fileMembers starts `count` nodes on one peers file that lists the first `listed` of them. */
function fileMembers(count: number, listed: number): { ids: string[]; ports: number[]; file: string; nodes: CacheNode[] } {
  const ports = freePorts(count);
  const ids = ports.map((p) => `127.0.0.1:${p}`);
  const dir = mkdtempSync(join(tmpdir(), "mbc-members-"));
  open.push({ close: () => rmSync(dir, { recursive: true, force: true }) });
  const file = join(dir, "peers");
  writeFileSync(file, ids.slice(0, listed).join("\n"));
  const nodes = ports.map((port) => {
    const n = CacheNode.start({ port, host: "127.0.0.1", peersFile: file, logLevel: "silent", groups: [{ name: "g", ttlMs: 0 }] }, { logger: new LogSink().logger });
    open.push(n);
    return n;
  });
  return { ids, ports, file, nodes };
}

test("a member left out of the list and listed again serves nothing it held before: no value older than a write acknowledged meanwhile", async () => {
  const { ids, ports, file, nodes } = fileMembers(3, 3);
  const [a, , d] = nodes as [CacheNode, CacheNode, CacheNode];
  await waitUntil(() => nodes.every((n) => n.cluster!.members.length === 3), "every member's list read", 10_000);
  const enc = new TextEncoder();
  let key = "";
  for (let i = 0; key === ""; i++) if (a.cluster!.owner(enc.encode(`k${i}`), 0, `k${i}`.length) === ids[2]) key = `k${i}`;
  const viaA = new CacheClient({ host: "127.0.0.1", port: ports[0]!, timeoutMs: 3000 });
  open.push(viaA);
  await viaA.set("g", key, "v1"); // D owns it
  expect(d.groups.byName("g")!.store.size).toBe(1);

  writeFileSync(file, ids.slice(0, 2).join("\n")); // D is out
  await waitUntil(() => a.cluster!.members.length === 2 && d.cluster!.listedSelf === false, "D out of every list", 10_000);
  await waitUntil(() => d.groups.byName("g")!.store.size === 0, "D dropping what it held", 5_000);
  await viaA.set("g", key, "v2"); // acknowledged by the key's owner now, B

  writeFileSync(file, ids.join("\n")); // D is back, and owns the key again
  await waitUntil(() => a.cluster!.members.length === 3 && d.cluster!.listedSelf === true, "D back in every list", 10_000);
  const got = await viaA.get("g", key).then((r) => new TextDecoder().decode(r.value), (e: { code: number }) => e.code);
  expect(got).not.toBe("v1");
  expect(got).toBe(1); // NOT_FOUND: the value written meanwhile is B's, which owns the key no more
}, 30_000);

test("a node the list does not name yet when it starts (under --peers-dns until it is ready) keeps what it holds once listed: a join, not a return", async () => {
  const { ids, file, nodes } = fileMembers(2, 1);
  const late = nodes[1]!;
  await waitUntil(() => late.cluster!.listedSelf === false, "the late node's first list", 10_000);
  // What it loaded at start (a snapshot, say): a thousand items.
  const store = late.groups.byName("g")!.store;
  const v = new Uint8Array([1]);
  for (let i = 0; i < 1000; i++) {
    const k = new TextEncoder().encode(`k${i}`);
    store.set(k, 0, k.length, v, 0, 1, 0);
  }
  writeFileSync(file, ids.join("\n"));
  await waitUntil(() => late.cluster!.listedSelf === true && nodes[0]!.cluster!.members.length === 2, "the late node listed", 10_000);
  await Bun.sleep(100); // (a purge runs in slices)
  // Its ring was the same before (a node not named keeps itself in it): nothing to purge.
  expect(store.size).toBe(1000);
}, 30_000);

