import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { RawSocket, getCall, setCall, startNode } from "../server/support.ts";
import { T } from "../protocol/wire-builder.ts";
import { field, outcome, readReplies } from "./wire-reader.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

describe("flow control", () => {
  test("replies past maxOutputBytes that the socket accepts at once do not stall the connection", async () => {
    await using node = startNode({ maxOutputBytes: 8 * 1024 });
    const raw = await RawSocket.connect(node.port);
    raw.write(setCall(1, "v", new Uint8Array(3000).fill(1)));
    await raw.waitFor(() => raw.frames().length === 1, "set reply");
    // 10 Gets of a 3000 B value in one write: ~30 KB of replies, written in one event; the kernel
    // takes them all, so no `drain` ever fires.
    raw.write(concat(Array.from({ length: 10 }, (_, i) => getCall(2 + i, "v"))));
    await raw.waitFor(() => raw.frames().length === 11, "10 get replies", 3000).catch(() => {});
    expect(raw.frames().length).toBe(11);
    raw.close();
  });

  // The server writes a connection's replies into one buffer it shares between connections while
  // the connection has nothing queued; what the socket does not take moves to the connection's own
  // buffer. Neither connection may get the other's bytes, lose any, or get them out of order.
  test("a slow reader's unsent replies stay its own while another connection is served", async () => {
    await using node = startNode({ maxOutputBytes: 1024 * 1024 });
    const big = new Uint8Array(64 * 1024).map((_, i) => i * 7);
    const setter = await RawSocket.connect(node.port);
    setter.write(concat([setCall(1, "big", big), setCall(2, "small", new TextEncoder().encode("small value"))]));
    await setter.waitFor(() => setter.frames().length === 2, "set replies");
    setter.close();

    const slow = await RawSocket.connect(node.port, { read: false });
    slow.write(concat(Array.from({ length: 100 }, (_, i) => getCall(1000 + i, "big")))); // 6.4 MiB of replies
    const deadline = Date.now() + 5000;
    while (node.server.counters.bufferedBytes === 0 && Date.now() < deadline) await Bun.sleep(5);
    expect(node.server.counters.bufferedBytes).toBeGreaterThan(0); // the slow reader's tail is queued

    const fast = await RawSocket.connect(node.port);
    for (let round = 0; round < 4; round++) {
      fast.write(concat(Array.from({ length: 50 }, (_, i) => getCall(round * 50 + i, "small"))));
      await fast.waitFor(() => fast.frames().length === (round + 1) * 50, "fast replies");
    }
    const fastReplies = readReplies(fast.received, "framed");
    expect(fastReplies.rest).toBe(fast.received.length);
    expect(fastReplies.replies.map((r) => r.seqid)).toEqual(Array.from({ length: 200 }, (_, i) => i));
    for (const r of fastReplies.replies) {
      const o = outcome(r);
      if (o.kind !== "success") throw new Error(`fast reply ${r.seqid}: ${JSON.stringify(o)}`);
      expect(new TextDecoder().decode(field(o.value, 1, T.STRING) as Uint8Array)).toBe("small value");
    }

    slow.resume();
    await slow.waitFor(() => slow.frames().length === 100, "slow replies", 20_000);
    const slowReplies = readReplies(slow.received, "framed");
    expect(slowReplies.rest).toBe(slow.received.length);
    expect(slowReplies.replies.map((r) => r.seqid)).toEqual(Array.from({ length: 100 }, (_, i) => 1000 + i));
    for (const r of slowReplies.replies) {
      const o = outcome(r);
      if (o.kind !== "success") throw new Error(`slow reply ${r.seqid}: ${JSON.stringify(o)}`);
      expect(Buffer.compare(field(o.value, 1, T.STRING) as Uint8Array, big)).toBe(0);
    }
    fast.close();
    slow.close();
  }, 30_000);
});
