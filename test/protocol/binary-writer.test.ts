import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { BinaryWriter } from "../../src/protocol/binary-writer.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const bytes = (n: number, from: number) => Uint8Array.from({ length: n }, (_, i) => (from + i) & 255);

describe("BinaryWriter.prepend", () => {
  test("puts the bytes before those written so far, growing the buffer when needed", () => {
    const w = new BinaryWriter(16);
    for (const b of bytes(10, 100)) w.u8(b);
    const src = bytes(40, 0);
    w.prepend(src, 5, 30); // more than the 6 bytes left: the buffer grows
    expect(w.length).toBe(40);
    expect([...w.buffer.subarray(0, 40)]).toEqual([...bytes(30, 5), ...bytes(10, 100)]);
  });

  test("into an empty writer it is a copy, and consume then sends it in order", () => {
    const w = new BinaryWriter(64);
    w.prepend(bytes(20, 7), 0, 20);
    w.consume(8);
    expect([...w.buffer.subarray(0, w.length)]).toEqual([...bytes(12, 15)]);
  });
});

describe("BinaryWriter.fit", () => {
  test("a buffer holding a quarter of its size or less moves to one twice what it holds; the bytes stay", () => {
    const w = new BinaryWriter(1024 * 1024);
    w.bytes(bytes(300_000, 3), 0, 300_000);
    w.fit(16 * 1024);
    expect(w.buffer.length).toBe(1024 * 1024); // more than a quarter: kept
    w.consume(290_000);
    w.fit(16 * 1024);
    expect(w.buffer.length).toBe(20_000);
    expect([...w.buffer.subarray(0, w.length)]).toEqual([...bytes(10_000, 3 + 290_000)]);
    w.consume(9_990);
    w.fit(16 * 1024);
    expect(w.buffer.length).toBe(16 * 1024); // never under keepBytes
    w.i32(7); // and it writes on
    expect(w.length).toBe(14);
  });
});
