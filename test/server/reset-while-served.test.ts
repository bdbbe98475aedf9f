// A client whose connection is reset after the node read its requests and before it wrote their
// replies (a client killed, or closing with replies unread, in the middle of a turn). The node's
// write returns -1 (Bun: the socket is closed), the replies stay queued and past --max-output the
// node pauses reading: it then never saw the reset, and kept the connection, its slot and its
// --max-buffered share until it shut down (review). White-box: the requests are handed to the
// data handler after the reset reached the node's kernel, before the node polls it.
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { RawSocket, getCall, setCall, startNode } from "./support.ts";
import { concat } from "../protocol/wire-builder.ts";
import { waitUntil } from "../support/gates.ts";
import type { CacheNode } from "../../src/server/cache-node.ts";
import type { Connection } from "../../src/server/connection.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const KIB = 1024;

/** setValue has a client set "v" to 128 KiB, and returns it. */
async function setValue(node: CacheNode): Promise<RawSocket> {
  const writer = await RawSocket.connect(node.port);
  writer.write(setCall(1, "v", new Uint8Array(128 * KIB).fill(3)));
  await writer.waitFor(() => writer.frames().length === 1, "the Set's reply");
  return writer;
}

/**
 * resetServed connects a client, has one Get answered, then resets it; it returns the client's
 * Connection once the reset has reached the node's kernel, before the node has polled it.
 */
async function resetServed(node: CacheNode): Promise<Connection> {
  const raw = await RawSocket.connect(node.port);
  raw.write(getCall(1, "missing"));
  await raw.waitFor(() => raw.frames().length === 1, "the first Get's reply");
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const conn = [...((node.server as any).connections as Set<Connection>)].at(-1)!;
  raw.reset();
  Bun.sleepSync(50);
  return conn;
}

describe("a connection reset while its replies are written", () => {
  test("is closed and counted out, though the replies held it over --max-output (its reading paused)", async () => {
    await using node = startNode({ maxOutputBytes: 512 * KIB, maxItemSize: 300 * KIB, maxFrameSize: 400 * KIB });
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const server = node.server as any;
    const writer = await setValue(node);
    const conn = await resetServed(node);
    server.onData(conn, concat(...Array.from({ length: 20 }, (_, i) => getCall(i + 2, "v")))); // 2.5 MB of replies
    await waitUntil(() => !conn.open, "the reset connection closed", 3_000);
    expect(server.connectionCount).toBe(1);
    expect(server.counters.bufferedBytes).toBe(0);
    expect(server.counters.internalErrors).toBe(0);
    // The other connection is served as before.
    writer.write(getCall(2, "v"));
    await writer.waitFor(() => writer.frames().length === 2, "the writer's Get");
    writer.close();
  });
});

describe("a connection whose socket refused a write", () => {
  test("is not served on: the requests it sent after those whose replies were refused are left unserved (review: served up to its turn's budget, their replies dropped)", async () => {
    await using node = startNode();
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const server = node.server as any;
    const conn = await resetServed(node);
    const before = server.counters.requests;
    // Two chunks in one poll: the second serves the first at once (its replies wait in the shared
    // buffer for the turn's end), and the turn's end writes those before serving the second.
    server.onData(conn, getCall(2, "missing"));
    server.onData(conn, concat(...Array.from({ length: 500 }, (_, i) => getCall(i + 3, "missing"))));
    await waitUntil(() => !conn.open, "the reset connection closed", 3_000);
    expect(server.counters.requests - before).toBe(1); // the second chunk's 500 Gets not served
    expect(server.connectionCount).toBe(0);
    expect(server.counters.bufferedBytes).toBe(0);
  });
});

describe("the replies a refused write leaves", () => {
  test("do not count toward --max-buffered: they never go, and counted, they had the cap close another connection, one that holds more (review)", async () => {
    await using node = startNode({ maxOutputBytes: 256 * KIB, maxItemSize: 300 * KIB, maxFrameSize: 400 * KIB });
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const server = node.server as any;
    const writer = await setValue(node);
    // A client that does not read: the node holds --max-output of its replies.
    const slow = await RawSocket.connect(node.port, { read: false });
    const slowConn = [...(server.connections as Set<Connection>)].at(-1)!;
    slow.write(concat(...Array.from({ length: 200 }, (_, i) => getCall(i + 1, "v")))); // 25 MB of replies
    await waitUntil(() => slowConn.held && slowConn.buffered >= 256 * KIB, "the slow reader held at --max-output", 5_000);
    const conn = await resetServed(node);
    // The cap: what the slow reader holds, and less than the reset connection's one reply more.
    server.opts.maxBufferedBytes = slowConn.buffered + 64 * KIB;
    server.onData(conn, getCall(2, "v")); // a reply of 128 KiB, refused at the turn's end
    await waitUntil(() => !conn.open, "the reset connection closed", 3_000);
    expect(server.counters.bufferCapClosed).toBe(0);
    expect(slow.isClosed).toBe(false);
    expect(server.connectionCount).toBe(2);
    server.cap.checkInvariants();
    writer.close();
    slow.close();
  });
});
