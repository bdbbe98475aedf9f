import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { Singleflight } from "../../src/cluster/singleflight.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

describe("Singleflight", () => {
  test("concurrent callers of one key share one call; the entry goes when it settles", async () => {
    const sf = new Singleflight<string>();
    const d = deferred<string>();
    let calls = 0;
    const fn = () => {
      calls++;
      return d.promise;
    };
    const first = sf.do("k", fn);
    const others = Array.from({ length: 99 }, () => sf.do("k", fn));
    expect(first.joined).toBe(false);
    expect(others.every((o) => o.joined && o.promise === first.promise)).toBe(true);
    d.resolve("v");
    expect(await Promise.all([first, ...others].map((o) => o.promise))).toEqual(Array(100).fill("v"));
    expect(calls).toBe(1);
    expect(sf.inFlight).toBe(0);
  });

  test("a rejection reaches every caller and frees the key", async () => {
    const sf = new Singleflight<string>();
    const a = sf.do("k", () => Promise.reject(new Error("boom")));
    const b = sf.do("k", () => Promise.resolve("never"));
    await expect(a.promise).rejects.toThrow("boom");
    await expect(b.promise).rejects.toThrow("boom");
    expect(sf.has("k")).toBe(false);
    expect(await sf.do("k", () => Promise.resolve("again")).promise).toBe("again");
  });

  test("a forgotten flight finishing never removes the newer flight's entry", async () => {
    const sf = new Singleflight<string>();
    const old = deferred<string>();
    const newer = deferred<string>();
    const a = sf.do("k", () => old.promise);
    sf.forget("k");
    const b = sf.do("k", () => newer.promise);
    expect(b.joined).toBe(false);
    old.resolve("old");
    await a.promise;
    expect(sf.has("k")).toBe(true); // still the newer flight
    const c = sf.do("k", () => Promise.resolve("third"));
    expect(c.joined).toBe(true);
    newer.resolve("new");
    expect(await c.promise).toBe("new");
    expect(sf.has("k")).toBe(false);
  });

  test("different keys fly independently", async () => {
    const sf = new Singleflight<number>();
    const r = await Promise.all(["a", "b", "c"].map((k, i) => sf.do(k, async () => i).promise));
    expect(r).toEqual([0, 1, 2]);
  });
});
