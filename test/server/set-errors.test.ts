/**
 * set_errors_total counts values, as sets_total does: a Set, and each entry of a SetMulti, is one,
 * stored (sets) or refused (setErrors). Review: a SetMulti served whole on one node counted one
 * error however many of its entries were refused, while the part of a routed SetMulti its
 * receiving node owns counted one per entry.
 */
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
import type { CacheNode } from "../../src/server/cache-node.ts";
import { ERROR_CODE } from "../../src/protocol/errors.ts";
import { keysOwnedBy, startMembers } from "../support/cluster-members.ts";
import { startNode } from "./support.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((x) => x.close()));
});

/** MAX_ITEM: values of exactly this size pass the call's check but not the store's (no room left for the key). */
const MAX_ITEM = 64 * 1024;
const FITS = new Uint8Array(8);
const REFUSED = new Uint8Array(MAX_ITEM);

function client(node: CacheNode): CacheClient {
  const c = new CacheClient({ host: "127.0.0.1", port: node.port, timeoutMs: 5000 });
  open.push(c);
  return c;
}

interface Counted {
  sets: number;
  setErrors: number;
}

/**
 * counted runs `write` and returns the code it was refused with (0: done) and what each of
 * `nodes`' group "default" counted meanwhile in sets and setErrors.
 */
async function counted(nodes: CacheNode[], write: () => Promise<unknown>): Promise<{ code: number; counts: Counted[] }> {
  const before = nodes.map((n) => ({ ...n.groups.byName("default")!.counters }));
  const code = await write().then(() => 0, (e: { code: number }) => e.code);
  const counts = nodes.map((n, i) => {
    const c = n.groups.byName("default")!.counters;
    return { sets: c.sets - before[i]!.sets, setErrors: c.setErrors - before[i]!.setErrors };
  });
  return { code, counts };
}

const TOO_LARGE = ERROR_CODE.VALUE_TOO_LARGE;

describe("a lone node", () => {
  test("a SetMulti the store refuses two entries of counts 2 set errors and 1 set, as three Sets do", async () => {
    const node = startNode({ maxItemSize: MAX_ITEM });
    open.push(node);
    const c = client(node);
    const entries: [string, Uint8Array][] = [["a", FITS], ["b", REFUSED], ["c", REFUSED]];
    expect(await counted([node], () => c.setMulti("default", entries))).toEqual({ code: TOO_LARGE, counts: [{ sets: 1, setErrors: 2 }] });
    expect(await counted([node], () => Promise.allSettled(entries.map(([k, v]) => c.set("default", k, v))))).toEqual({ code: 0, counts: [{ sets: 1, setErrors: 2 }] });
  });

  test("a SetMulti refused as it is read stores none of its entries: each is a set error", async () => {
    const node = startNode({ maxItemSize: MAX_ITEM });
    open.push(node);
    const c = client(node);
    const tooLarge = new Uint8Array(MAX_ITEM + 1);
    expect(await counted([node], () => c.setMulti("default", [["a", FITS], ["b", tooLarge], ["c", FITS]]))).toEqual({ code: TOO_LARGE, counts: [{ sets: 0, setErrors: 3 }] });
    expect(await counted([node], () => c.setMulti("default", [["a", FITS], ["b", FITS]], -1000))).toEqual({ code: ERROR_CODE.INVALID_ARGUMENT, counts: [{ sets: 0, setErrors: 2 }] });
    expect(await counted([node], () => c.set("default", "a", tooLarge))).toEqual({ code: TOO_LARGE, counts: [{ sets: 0, setErrors: 1 }] });
    await expect(c.get("default", "a")).rejects.toMatchObject({ code: ERROR_CODE.NOT_FOUND });
  });
});

describe("a 2-node cluster", () => {
  test("each owner counts its entries one by one, whichever node the SetMulti came through, routed or served whole", async () => {
    const { nodes, ids } = startMembers(2, open, { maxItemSize: MAX_ITEM });
    const [a, b] = nodes as [CacheNode, CacheNode];
    const ofA = keysOwnedBy(a, ids[0]!, 3, "a");
    const ofB = keysOwnedBy(a, ids[1]!, 3, "b");
    const entries = (keys: string[]): [string, Uint8Array][] => [[keys[0]!, FITS], [keys[1]!, REFUSED], [keys[2]!, REFUSED]];
    const [viaA, viaB] = [client(a), client(b)];
    const cases: [string, CacheClient, [string, Uint8Array][], Counted[]][] = [
      // Served whole by dispatch (every key is the receiving node's): a local SetMulti, or a PeerSetMulti.
      ["A's keys through A", viaA, entries(ofA), [{ sets: 1, setErrors: 2 }, { sets: 0, setErrors: 0 }]],
      ["B's keys through B", viaB, entries(ofB), [{ sets: 0, setErrors: 0 }, { sets: 1, setErrors: 2 }]],
      // Forwarded whole: B counts its entries; A, told only that the part failed, counts none.
      ["B's keys through A", viaA, entries(ofB), [{ sets: 0, setErrors: 0 }, { sets: 1, setErrors: 2 }]],
      // Routed: A's part stored here (Group.set), B's forwarded.
      ["A's and B's keys through A", viaA, [...entries(ofA), ...entries(ofB)], [{ sets: 1, setErrors: 2 }, { sets: 1, setErrors: 2 }]],
    ];
    for (const [what, via, es, counts] of cases) {
      expect({ what, ...(await counted([a, b], () => via.setMulti("default", es))) }).toEqual({ what, code: TOO_LARGE, counts });
    }
  });
});
