import { describe, expect, test } from "bun:test";
import { RawSocket, getCall, setCall, startNode } from "../server/support.ts";

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
});
