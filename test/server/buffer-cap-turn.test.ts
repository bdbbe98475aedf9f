// --max-buffered within one turn, and the memory watch in the middle of one: connections whose input came in the same turn are served one
// after another, and each may queue up to --max-output of replies its client does not read. The
// cap was applied only once all of them were served, so one turn of N such connections held N ×
// --max-output (review: 100 connections pipelining 1 MB Gets they did not read took the node to
// 2.35 GB resident with --max-buffered 256mb and --memory 64mb). White-box: the input is handed
// to the server's data handler directly, so that it all falls in one turn.
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { RawSocket, getCall, getMultiCall, setCall, startNode } from "./support.ts";
import { concat } from "../protocol/wire-builder.ts";
import { waitUntil } from "../support/gates.ts";
import type { MemoryWatch } from "../../src/server/memory-watch.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const MIB = 1024 * 1024;

/**
 * overCap connects 20 clients that do not read to `node` (a 4 MiB cap, 1 MiB --max-output), and
 * has the server serve each 200 Gets of a 256 KiB value in one turn. Returns the most all
 * connections held after serving one.
 */
async function overCap(node: ReturnType<typeof startNode>) {
  const writer = await RawSocket.connect(node.port);
  writer.write(setCall(1, "v", new Uint8Array(256 * 1024).fill(3)));
  await writer.waitFor(() => writer.frames().length === 1, "set reply");
  const raws = await Promise.all(Array.from({ length: 20 }, () => RawSocket.connect(node.port, { read: false })));
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const server = node.server as any;
  await waitUntil(() => node.server.connectionCount === 21, "every connection accepted");
  const conns = [...server.connections].filter((c) => c.bytesOut === 0);
  expect(conns.length).toBe(20);
  const gets = concat(...Array.from({ length: 200 }, (_, i) => getCall(i + 1, "v")));
  let peak = 0;
  const process = server.process.bind(server);
  server.process = (conn: unknown) => {
    process(conn);
    peak = Math.max(peak, server.counters.bufferedBytes);
  };
  for (const c of conns) server.onData(c, gets);
  await Bun.sleep(300);
  const close = () => {
    for (const r of raws) r.close();
    writer.close();
  };
  return { server, peak, close };
}

/** countChecks stops the watch's timer (its checks are not counted) and counts the checks made otherwise. */
function countChecks(watch: MemoryWatch): { count: number } {
  watch.stop();
  const checks = { count: 0 };
  const check = watch.check.bind(watch);
  watch.check = () => {
    checks.count++;
    return check();
  };
  return checks;
}

const NODE = { maxItemSize: 300 * 1024, maxFrameSize: 400 * 1024, maxBufferedBytes: 4 * MIB, maxOutputBytes: MIB };

describe("--max-buffered holds within a turn", () => {
  test("20 connections in one turn, each asking 50 MB of replies it does not read", async () => {
    await using node = startNode(NODE);
    const { server, peak, close } = await overCap(node);
    const cap = NODE.maxBufferedBytes;
    // One connection served past the cap (it may hold --max-output and a reply more) before the
    // cap closes the largest holders, not twenty.
    expect(peak).toBeLessThan(cap + 3 * NODE.maxOutputBytes);
    expect(server.counters.bufferedBytes).toBeLessThanOrEqual(cap);
    expect(server.counters.bufferCapClosed).toBeGreaterThan(0);
    close();
  });

  test("the memory watch looks at the garbage as soon as the cap closes connections, in the middle of the turn", async () => {
    await using node = startNode({ ...NODE, gcHeadroomBytes: 64 * MIB });
    const checks = countChecks(node.memoryWatch!);
    const { server, close } = await overCap(node);
    expect(server.counters.bufferCapClosed).toBeGreaterThan(0);
    expect(checks.count).toBeGreaterThan(0);
    close();
  });

  test("the memory watch looks at the garbage every 16 MiB of traffic, not only on its timer", async () => {
    await using node = startNode({ gcHeadroomBytes: 64 * MIB });
    const checks = countChecks(node.memoryWatch!);
    const raw = await RawSocket.connect(node.port);
    const keys = Array.from({ length: 1_000_000 }, (_, i) => new Uint8Array([i & 255, (i >> 8) & 255, i >> 16, 1]));
    const call = getMultiCall(1, "default", keys); // 8 MB: ~16 MB of scratch while it is served
    const all = concat(call, call, call);
    for (let off = 0; off < all.length; await Bun.sleep(1)) off += raw.write(all.subarray(off)); // (a write takes what the socket does)
    await raw.waitFor(() => raw.frames().length === 3, "the replies");
    expect(checks.count).toBeGreaterThan(0);
    raw.close();
  });
});

describe("--max-buffered within a turn counts a connection with two chunks in one poll once", () => {
  test("served connections holding 3 MB under a 4 MiB cap are not closed because one of them came twice in the turn's list", async () => {
    await using node = startNode({ maxItemSize: 4 * MIB, maxFrameSize: 8 * MIB, maxBufferedBytes: 4 * MIB });
    const raws: RawSocket[] = [];
    for (let i = 0; i < 3; i++) raws.push(await RawSocket.connect(node.port));
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const server = node.server as any;
    await waitUntil(() => node.server.connectionCount === 3, "every connection accepted");
    const [a, c, b] = [...server.connections];
    const big = (seqid: number, bytes: number) => setCall(seqid, `k${seqid}`, new Uint8Array(bytes).fill(seqid));
    const setA = big(1, 2_000_000);
    const setC = big(2, 2_000_000);
    const setB = big(3, 3_100_000);
    // A turn before: B holds 3 MB of a Set (under the cap alone).
    server.onData(b, setB.subarray(0, 3_000_000));
    await Bun.sleep(50);
    expect(b.buffered).toBe(3_000_000);
    // One turn: A starts a Set (1.5 MB held), C sends a Get then, in the same poll, the start of a
    // Set (1.5 MB held), and B ends its Set (its 3 MB are used up). Served, they hold 3 MB.
    server.onData(a, setA.subarray(0, 1_500_000));
    server.onData(c, getCall(4, "k"));
    server.onData(c, setC.subarray(0, 1_500_000));
    server.onData(b, setB.subarray(3_000_000));
    await Bun.sleep(100);
    expect(server.counters.bufferCapClosed).toBe(0);
    expect(server.counters.bufferedBytes).toBe(3_000_000);
    for (const r of raws) r.close();
  });
});

describe("--max-buffered within a turn counts what the queued connections hold as it is now", () => {
  test("a queued connection's replies written early to a client that does not read are its own, not the served ones' (review)", async () => {
    // The turn serves A, D, B, E. B sent two chunks in one poll: the first was served at once, Gets
    // whose replies (its socket's worth and 10 MB more; its client does not read) wait in the
    // shared buffer for the turn's end; the second queues B. A, served first (its own output holds
    // replies its client does not read, so it writes none to the shared buffer), takes the node
    // over the cap with E's partial Set, queued. D, served next, writes the shared buffer early:
    // what B's socket does not take moves to B's own output. What the queued connections held was
    // summed when A passed the cap, and each one's count taken off as it was served: B's 10 MB
    // since were counted as the served connections', and A (~3 MB) was closed, then B. B alone
    // is over the cap: B is the one to close.
    const cap = 8 * MIB;
    await using node = startNode({ maxItemSize: 7 * MIB, maxFrameSize: cap, maxBufferedBytes: cap, maxOutputBytes: 64 * MIB });
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const server = node.server as any;
    const accept = async (read: boolean) => {
      const before = server.connections.size;
      const raw = await RawSocket.connect(node.port, { read });
      while (server.connections.size === before) await Bun.sleep(1);
      return { raw, conn: [...server.connections].at(-1) };
    };
    const turn = () => new Promise<void>((r) => setImmediate(r)); // (after the turn's end queued before it)
    const value = 256 * 1024;
    const w = await accept(true);
    w.raw.write(setCall(1, "v", new Uint8Array(value).fill(3)));
    await w.raw.waitFor(() => w.raw.frames().length === 1, "set reply");
    const [a, d, b, e] = [await accept(false), await accept(true), await accept(false), await accept(true)];
    // A's client does not read: Gets until the socket takes no more, then 4 more (~1 MB kept).
    let seqid = 1;
    while (a.conn.proto.reply.out.length === 0) {
      server.onData(a.conn, getCall(seqid++, "v"));
      await turn();
    }
    server.onData(a.conn, concat(...Array.from({ length: 4 }, () => getCall(seqid++, "v"))));
    await turn();
    const kernel = a.conn.bytesOut; // what a socket whose client does not read takes
    // A's part of a Set takes A's and E's counts over the cap, by more than the socket may take of A's replies meanwhile.
    const aPart = 2 * a.conn.buffered + 100_000;
    const eHeld = cap - aPart - 50_000;
    const setE = setCall(1, "e", new Uint8Array(eHeld + 1000).fill(5));
    server.onData(e.conn, setE.subarray(0, eHeld));
    await turn();
    expect(e.conn.buffered).toBe(eHeld);
    expect(a.conn.proto.reply.out.length).toBeGreaterThan(0);
    // The turn: A, D, B (two chunks), E.
    const gets = Math.ceil((kernel + cap + 2 * MIB) / value); // B keeps more than the cap once its socket is full
    const broken: string[] = []; // (thrown in the server, a fault would close the connection served)
    const process = server.process.bind(server);
    server.process = (conn: unknown) => {
      process(conn);
      try {
        server.cap.checkInvariants();
      } catch (err) {
        broken.push(String(err));
      }
    };
    server.onData(a.conn, setCall(1, "a", new Uint8Array(2 * aPart).fill(1)).subarray(0, aPart));
    server.onData(d.conn, getCall(1, "v"));
    server.onData(b.conn, concat(...Array.from({ length: gets }, (_, i) => getCall(i + 1, "v"))));
    server.onData(b.conn, getCall(gets + 1, "v"));
    server.onData(e.conn, setE.subarray(eHeld));
    await turn();
    expect(server.counters.earlyFlushes).toBeGreaterThan(0);
    expect(a.conn.capClosed).toBe(false);
    expect(b.conn.capClosed).toBe(true);
    expect(server.counters.bufferCapClosed).toBe(1);
    expect(server.counters.bufferedBytes).toBe(a.conn.buffered);
    expect(broken).toEqual([]);
    await e.raw.waitFor(() => e.raw.frames().length === 1, "e's set reply");
    for (const x of [w, a, d, b, e]) x.raw.close();
  });
});
