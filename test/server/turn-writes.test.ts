// The replies of the connections served in one turn of the event loop are written into one shared
// buffer, one connection's after another's, and go out together at the end of the turn (or early,
// once the buffer holds SHARED_FLUSH_BYTES). Each connection must get exactly its own bytes: whole,
// in order, none lost and none of another connection's.
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { RawSocket, getCall, setCall, startNode } from "./support.ts";
import { T } from "../protocol/wire-builder.ts";
import { field, outcome, readReplies } from "./wire-reader.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

/** valueOf is key i's value: `size` bytes no other key's value shares. */
function valueOf(i: number, size: number): Uint8Array {
  return new Uint8Array(size).map((_, j) => (i * 131 + j * 7 + (j >> 8)) & 255);
}

/**
 * exchange stores `clients` keys of `size` bytes, then has each of `clients` connections send
 * `depth` Gets of its own key in one write, all writes issued before any reply is read, and
 * checks every connection got its replies and nothing else. Returns the node's counters.
 */
async function exchange(clients: number, depth: number, size: number, rounds: number) {
  await using node = startNode({ maxOutputBytes: 64 * 1024 * 1024 });
  const setter = await RawSocket.connect(node.port);
  setter.write(concat(Array.from({ length: clients }, (_, i) => setCall(i, `k${i}`, valueOf(i, size)))));
  await setter.waitFor(() => setter.frames().length === clients, "set replies");
  setter.close();
  const conns = await Promise.all(Array.from({ length: clients }, () => RawSocket.connect(node.port)));
  for (let round = 0; round < rounds; round++) {
    conns.forEach((c, i) => c.write(concat(Array.from({ length: depth }, (_, j) => getCall(i * 10_000 + round * depth + j, `k${i}`)))));
    await Promise.all(conns.map((c) => c.waitFor(() => c.frames().length === (round + 1) * depth, "get replies", 20_000)));
  }
  conns.forEach((c, i) => {
    const { replies, rest } = readReplies(c.received, "framed");
    expect(rest).toBe(c.received.length);
    expect(replies.map((r) => r.seqid)).toEqual(Array.from({ length: rounds * depth }, (_, j) => i * 10_000 + j));
    const want = valueOf(i, size);
    for (const r of replies) {
      const o = outcome(r);
      if (o.kind !== "success") throw new Error(`conn ${i} reply ${r.seqid}: ${JSON.stringify(o)}`);
      expect(Buffer.compare(field(o.value, 1, T.STRING) as Uint8Array, want)).toBe(0);
    }
    c.close();
  });
  return { ...node.server.counters };
}

describe("replies written at the end of the turn", () => {
  test("connections served in one turn each get exactly their own replies, whole and in order", async () => {
    const counters = await exchange(40, 16, 300, 5);
    // The Gets went through the shared buffer, and some flush wrote several connections at once.
    expect(counters.turnWrites).toBeGreaterThan(0);
    expect(counters.turnWrites).toBeGreaterThan(counters.turnFlushes);
  }, 30_000);

  test("a turn whose replies pass the shared buffer's bound writes them early, each connection's still its own", async () => {
    // 8 Gets of 20 KB per connection: about 160 KB each, so the buffer passes its 256 KB bound
    // every second connection of a turn and is written before the next one adds to it.
    const counters = await exchange(12, 8, 20_000, 3);
    expect(counters.turnWrites).toBeGreaterThan(0);
    expect(counters.earlyFlushes).toBeGreaterThan(0);
  }, 30_000);
});
