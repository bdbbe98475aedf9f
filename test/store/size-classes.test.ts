import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { SizeClasses } from "../../src/store/size-classes.ts";
import { MIB, SET_OK, Store } from "../../src/store/store.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

describe("SizeClasses", () => {
  const sc = new SizeClasses(48, 1.25, 1024 * 1024);

  test("sizes start at the minimum, grow by the factor, are 8-aligned and end at the max", () => {
    expect(sc.sizes[0]).toBe(48);
    expect(sc.sizes[sc.count - 1]).toBe(1024 * 1024);
    for (let c = 1; c < sc.count; c++) {
      const prev = sc.sizes[c - 1]!;
      const cur = sc.sizes[c]!;
      expect(cur % 8).toBe(0);
      expect(cur).toBeGreaterThan(prev);
      if (c < sc.count - 1) expect(cur).toBeLessThanOrEqual(Math.ceil(prev * 1.25) + 8);
    }
  });

  test.each([
    [1, 0],
    [48, 0],
    [49, 1],
    [1024 * 1024, -2],
    [1024 * 1024 + 1, -1],
    [70000, null],
  ])("classFor(%p)", (bytes, want) => {
    const cls = sc.classFor(bytes);
    if (want === -1) return expect(cls).toBe(-1);
    if (want === -2) return expect(cls).toBe(sc.count - 1);
    if (want !== null) expect(cls).toBe(want);
    // Always: the smallest class that fits.
    expect(sc.sizes[cls]!).toBeGreaterThanOrEqual(bytes);
    if (cls > 0) expect(sc.sizes[cls - 1]!).toBeLessThan(bytes);
  });

  test("classFor is the smallest fitting class for every size up to 200 KiB", () => {
    for (let n = 1; n <= 200 * 1024; n += 7) {
      const cls = sc.classFor(n);
      expect(sc.sizes[cls]! >= n && (cls === 0 || sc.sizes[cls - 1]! < n)).toBe(true);
    }
  });

  test("rejects a factor that does not grow", () => {
    expect(() => new SizeClasses(48, 1, 1024)).toThrow(RangeError);
  });
});

describe("SizeClasses largest item", () => {
  test("an item one byte over a largest item that is not a multiple of 8 is refused (review: the last chunk, rounded up to 8, took up to 7 bytes more)", () => {
    const sc = new SizeClasses(48, 1.25, 1001);
    expect(sc.classFor(1001)).toBe(sc.count - 1);
    expect(sc.classFor(1002)).toBe(-1);
    expect(sc.classFor(1008)).toBe(-1);
    expect(sc.maxItem).toBe(1001);
    expect(sc.maxChunk).toBe(1008); // the chunk itself stays 8-aligned
  });
});

describe("SizeClasses half-page class", () => {
  test("with the page size, a class of exactly half a page is there (memcached's largest chunk class), and classFor still finds the smallest fitting class", () => {
    const page = 1024 * 1024;
    const sc = new SizeClasses(48, 1.25, page, page);
    const plain = new SizeClasses(48, 1.25, page);
    expect([...sc.sizes]).toContain(page / 2);
    expect([...plain.sizes]).not.toContain(page / 2);
    expect(sc.count).toBe(plain.count + 1);
    for (let c = 1; c < sc.count; c++) expect(sc.sizes[c]!).toBeGreaterThan(sc.sizes[c - 1]!);
    for (const n of [page / 2 - 60_000, page / 2 - 1, page / 2, page / 2 + 1, page - 1]) {
      const cls = sc.classFor(n);
      expect(sc.sizes[cls]!).toBeGreaterThanOrEqual(n);
      expect(sc.sizes[cls - 1]!).toBeLessThan(n);
    }
    expect(sc.sizes[sc.classFor(page / 2)]).toBe(page / 2);
    // An odd page: half of it rounded down to 8. A largest item under half a page: no such class.
    expect([...new SizeClasses(48, 1.25, 100_001, 100_008).sizes]).toContain(50_000);
    expect([...new SizeClasses(48, 1.25, 4096, 65_536).sizes]).toEqual([...new SizeClasses(48, 1.25, 4096).sizes]);
  });

  test("a store of 1 MiB pages holds two items of 0.45 MiB a page, where each took a page of its own", () => {
    const s = new Store({ memory: 64 * MIB });
    expect(s.slab.pageSize).toBe(MIB);
    const value = new Uint8Array(Math.floor(0.45 * MIB)).fill(7);
    for (let i = 0; i < 300; i++) {
      const key = new TextEncoder().encode(`big${i}`);
      expect(s.set(key, 0, key.length, value, 0, value.length)).toBe(SET_OK);
    }
    s.checkInvariants();
    expect(s.size).toBe(2 * s.slab.pagesAssigned); // 126 in 63 pages (63 before)
    expect(s.size).toBeGreaterThan(120);
    const last = new TextEncoder().encode("big299");
    expect(s.valueView(s.get(last))).toEqual(value);
  });
});
