/**
 * SlabAllocator (slab-allocator.ts): what a page move costs.
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { MIB, SET_OK, Store } from "../../src/store/store.ts";
import { bytes } from "../support/prng.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

describe("SlabAllocator page moves", () => {
  test("moving a page reads that page's chunks, not every free chunk of its class (review: each move walked the class's whole free list, 0.8 s a move at 100M free chunks)", () => {
    const s = new Store({ memory: 8 * MIB, pageSize: 64 * 1024, maxItemSize: 64 * 1024, minChunk: 16, clock: () => 1_000 });
    const empty = new Uint8Array(0);
    let n = 0;
    for (; s.stats().evictions === 0; n++) expect(s.set(bytes(`k${n}`), 0, bytes(`k${n}`).length, empty, 0, 0, 0)).toBe(SET_OK);
    for (let i = 0; i < n; i += 2) s.delete(bytes(`k${i}`));
    const cls = s.classes.classFor(4 + 6);
    const perPage = s.slab.chunksPerPage(cls);
    expect(s.slab.freeCount[cls]!).toBeGreaterThan(8 * perPage); // free chunks on every page
    // Count the reads of pages' word views (the allocator's only way into chunk memory) while a
    // large value takes a page from the small class.
    const slab = s.slab as unknown as { words: (Int32Array | undefined)[] };
    let reads = 0;
    slab.words = new Proxy(slab.words, {
      get(target, prop, receiver) {
        if (typeof prop === "string" && prop.length > 0 && prop.charCodeAt(0) >= 48 && prop.charCodeAt(0) <= 57) reads++;
        return Reflect.get(target, prop, receiver);
      },
    });
    const moves = s.slab.pageMoves;
    const big = bytes("big");
    expect(s.set(big, 0, big.length, new Uint8Array(40_000), 0, 40_000, 0)).toBe(SET_OK);
    expect(s.slab.pageMoves).toBe(moves + 1);
    expect(reads).toBeLessThan(4 * perPage); // (a page's chunks, each live one rescued to another page: a few reads each)
    s.checkInvariants();
  });

  test("a moved page's live items go to free chunks of their class on other pages before any is evicted (memcached's slab_reassign rescues)", () => {
    let now = 1_000;
    const s = new Store({ memory: 8 * MIB, pageSize: 64 * 1024, maxItemSize: 64 * 1024, minChunk: 16, clock: () => now });
    const empty = new Uint8Array(0);
    let n = 0;
    for (; s.stats().evictions === 0; n++) expect(s.set(bytes(`k${n}`), 0, bytes(`k${n}`).length, empty, 0, 0, 0)).toBe(SET_OK);
    for (let i = 0; i < n; i += 2) s.delete(bytes(`k${i}`)); // half the class's chunks free, on every page
    // Some of the rest expire: those are not worth a chunk.
    for (let i = 1; i < 200; i += 2) expect(s.set(bytes(`k${i}`), 0, bytes(`k${i}`).length, empty, 0, 0, 10)).toBe(SET_OK);
    now += 20;
    const before = s.stats();
    const big = bytes("big");
    expect(s.set(big, 0, big.length, new Uint8Array(40_000), 0, 40_000, 0)).toBe(SET_OK);
    const after = s.stats();
    expect(after.pageMoves).toBe(before.pageMoves + 1);
    expect(after.evictions).toBe(before.evictions); // no live item lost: the class had room for them
    expect(after.pageRescues - before.pageRescues).toBeGreaterThan(1_000);
    let kept = 0;
    for (let i = 201; i < n; i += 2) if (s.has(bytes(`k${i}`))) kept++;
    const evictedEarly = before.evictions; // (the one eviction that ended the fill)
    expect(kept).toBeGreaterThanOrEqual((n - 201) / 2 - evictedEarly - 1);
    s.checkInvariants();
  });
});
