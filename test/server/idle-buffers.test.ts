// What an idle connection keeps: once everything it sent is served and its replies are taken, its
// partial-message buffer, its key list and its own output buffer are back to a small size,
// whatever the largest request or reply it had (review: 200 idle connections that had each sent
// one 1 MB Set kept 200 MB, and a 60,000-key GetMulti 1.5 MB each, none of it counted toward
// --max-buffered; at --max-connections 10,000 that was 10-30 GB over a 64 MiB --memory).
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { IDLE_KEEP_BYTES } from "../../src/protocol/limits.ts";
import { RawSocket, getCall, getMultiCall, setCall, startNode } from "./support.ts";
import { waitUntil } from "../support/gates.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

/** held returns the sizes of the buffers the server's side of its only connection keeps. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
function held(server: any): { pending: number; items: number; out: number } {
  const conn = [...server.connections][0];
  const proto = conn.proto;
  return { pending: proto.reader.pendingCapacity, items: proto.request.items.byteLength, out: proto.reply.out.buffer.length };
}

describe("an idle connection keeps small buffers", () => {
  test("after a 1 MB Set, a 60,000-key GetMulti and 1 MB replies it did not read at once", async () => {
    await using node = startNode({ maxItemSize: 2 * 1024 * 1024 });
    const raw = await RawSocket.connect(node.port, { read: false });
    const value = new Uint8Array(1_000_000).fill(7);
    raw.write(setCall(1, "big", value));
    const keys = Array.from({ length: 60_000 }, (_, i) => new TextEncoder().encode(`k${i}`));
    raw.write(getMultiCall(2, "default", keys));
    for (let i = 0; i < 8; i++) raw.write(getCall(3 + i, "big")); // replies it does not read yet
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const server = node.server as any;
    await Bun.sleep(200);
    raw.resume();
    await raw.waitFor(() => raw.frames().length === 10, "the replies");
    await waitUntil(() => [...server.connections][0].proto.reply.out.length === 0, "the last drain");
    const h = held(server);
    expect(h.pending).toBeLessThanOrEqual(IDLE_KEEP_BYTES);
    expect(h.items).toBeLessThanOrEqual(IDLE_KEEP_BYTES);
    expect(h.out).toBeLessThanOrEqual(IDLE_KEEP_BYTES);
    raw.close();
  });

  test("an output buffer a backlog of under 1 MiB grew is let go once the socket took it", async () => {
    await using node = startNode();
    const raw = await RawSocket.connect(node.port);
    raw.write(getCall(1, "k"));
    await raw.waitFor(() => raw.frames().length === 1, "the miss");
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const server = node.server as any;
    const conn = [...server.connections][0];
    // White-box: 600 KB left over in the connection's own buffer, as a socket that took only part of a reply leaves it.
    const out = conn.proto.reply.out;
    out.ensure(600_000);
    out.length = 600_000;
    server.turnEnd.flush(conn);
    await raw.waitFor(() => raw.received.length >= 600_000, "the bytes");
    await waitUntil(() => out.length === 0, "the last drain");
    expect(held(server).out).toBeLessThanOrEqual(IDLE_KEEP_BYTES);
    raw.close();
  });

  test("a backlog the client takes slowly: the buffer its peak grew is given back as it drains", async () => {
    await using node = startNode();
    const raw = await RawSocket.connect(node.port, { read: false });
    raw.write(getCall(1, "k"));
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const server = node.server as any;
    await waitUntil(() => [...server.connections][0]?.bytesOut > 0, "the miss served");
    const conn = [...server.connections][0];
    // White-box: 40 MB queued, more than the kernel's buffers take; then most of it is taken (the
    // client read it), 2 MB are left, and the socket takes little or none of them now.
    const out = conn.proto.reply.out;
    out.ensure(40_000_000);
    out.length = 40_000_000;
    server.turnEnd.flush(conn);
    expect(out.length).toBeGreaterThan(0);
    out.length = 2_000_000;
    server.turnEnd.flush(conn);
    expect(out.length).toBeGreaterThan(0); // (the kernel's buffers are still full)
    expect(out.buffer.length).toBeLessThanOrEqual(4_000_000);
    raw.close();
  });
});
