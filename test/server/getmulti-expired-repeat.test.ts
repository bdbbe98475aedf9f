/**
 * A GetMulti whose reply outgrows its buffer looks the keys left up ahead (get-multi.ts
 * lookUpRest). When repeatedKeys gives up on a flood of colliding keys, a key may come again
 * among those, and be found expired there (the clock's millisecond turned between the two
 * lookups): that lookup frees its item. The entry that did not fit, looked up before, must not
 * be copied from the freed item (it was: a TypeError, the connection closed INTERNAL_ERROR after
 * half a reply). A clock that moves 1 ms at every read makes that turn come between two lookups.
 */
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import type { CacheNode } from "../../src/server/cache-node.ts";
import { collidingKeys } from "../support/murmur-collisions.ts";
import { T, concat } from "../protocol/wire-builder.ts";
import { RawSocket, getMultiCall, setCall, startNode } from "./support.ts";
import { field, outcome, readReplies } from "./wire-reader.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const MIB = 1024 * 1024;
const enc = new TextEncoder();

const open: CacheNode[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((n) => n.close()));
});

describe("a GetMulti whose key repeats among colliding keys and expires between its two lookups", () => {
  test("is answered (the key left out, or its value), never from the freed item; the connection goes on", async () => {
    let now = 1_000_000;
    const node = startNode({ maxItemSize: 4 * MIB }, { clock: () => now++ }); // (each read moves the time 1 ms)
    open.push(node);
    const key = enc.encode("big");
    const value = new Uint8Array(1.5 * MIB).fill(0x5a); // (larger than any output buffer kept: it does not fit)
    const flood = collidingKeys(7, 100); // (repeatedKeys gives up: the key's second entry is answered as asked)
    const keys = [key, ...flood, key];
    // The key's first lookup is its entry that does not fit; the second, lookUpRest's. Some TTL
    // among these ends between the two.
    for (let ttl = 1; ttl <= 12; ttl++) {
      const raw = await RawSocket.connect(node.port);
      raw.write(concat(setCall(1, key, value, "default", ttl), getMultiCall(2, "default", keys), getMultiCall(3, "default", [key])));
      await raw.waitFor(() => raw.frames().length === 3 || raw.isClosed, "3 replies");
      let replies: ReturnType<typeof readReplies>["replies"];
      try {
        replies = readReplies(raw.received, "framed").replies;
      } catch (e) {
        throw new Error(`ttl ${ttl}: ${String(e)} (closed: ${raw.isClosed})`);
      }
      raw.close();
      expect(replies.map((r) => outcome(r).kind), `ttl ${ttl}`).toEqual(["success", "success", "success"]);
      const got = outcome(replies[1]!);
      if (got.kind !== "success") throw new Error(`ttl ${ttl}: ${JSON.stringify(got)}`);
      const map = field(got.value, 1, T.MAP) as [Uint8Array, Uint8Array][];
      for (const [k, v] of map) {
        expect(k).toEqual(key);
        expect(v.length === value.length && v.every((b) => b === 0x5a), `ttl ${ttl}: the value`).toBe(true);
      }
    }
  });
});
