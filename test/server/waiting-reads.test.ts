// A connection whose request waits for a load (here a loader held by a gate the test opens) keeps
// reading: what the client sends meanwhile queues behind the wait and is answered in order after
// it, and reading pauses only once BACKLOG_PAUSE_BYTES (64 KiB) are queued. The replies written
// before the wait go out at the end of the turn, like every other connection's, not after the wait.
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { connect } from "node:net";
import { CacheNode } from "../../src/server/cache-node.ts";
import { Bytes, MSG, T, concat, framed, message } from "../protocol/wire-builder.ts";
import { WAITING_ENTRY_BYTES } from "../../src/protocol/protocol-connection.ts";
import { LogSink, RawSocket, getCall, getMultiCall, replyHeader, roundTrip, setCall } from "./support.ts";
import { field, outcome, readReplies } from "./wire-reader.ts";
import { waitUntil } from "../support/gates.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

/** gatedNode starts a node whose group "slow" loads `loaded <key>` once the test calls `open()`. */
function gatedNode(maxBufferedBytes?: number) {
  let open!: () => void;
  const gate = new Promise<void>((resolve) => (open = resolve));
  const node = CacheNode.start(
    { port: 0, logLevel: "silent", groups: [{ name: "default", ttlMs: 0 }, { name: "slow", ttlMs: 0 }], ...(maxBufferedBytes === undefined ? {} : { maxBufferedBytes }) },
    { logger: new LogSink().logger, loaders: { slow: async (key) => { await gate; return `loaded ${key}`; } } },
  );
  return { node, open };
}


/** waitingConnection is a gatedNode with a connection whose Get of "a" in "slow" waits at the gate. */
async function waitingConnection(maxBufferedBytes?: number) {
  const { node, open } = gatedNode(maxBufferedBytes);
  const raw = await RawSocket.connect(node.port);
  raw.write(getCall(1, "a", "slow"));
  await waitUntil(() => node.server.counters.bytesIn > 0, "the first request");
  return { node, open, raw };
}

/** valueOf returns the value of reply `i` on `raw` (a successful Get reply). */
function valueOf(raw: RawSocket, i: number): Uint8Array {
  const { replies } = readReplies(raw.received, "framed");
  const o = outcome(replies[i]!);
  if (o.kind !== "success") throw new Error(`reply ${i}: ${JSON.stringify(o)}`);
  return field(o.value, 1, T.STRING) as Uint8Array;
}

const text = (b: Uint8Array) => new TextDecoder().decode(b);

describe("a connection waiting for a load", () => {
  test("answers what came before the wait at once, queues what comes during it without pausing, then answers all in order", async () => {
    const { node, open } = gatedNode();
    await using _ = node;
    const raw = await RawSocket.connect(node.port);
    raw.write(setCall(1, "x", new TextEncoder().encode("value x")));
    await raw.waitFor(() => raw.frames().length === 1, "set reply");
    const writesBefore = node.server.counters.turnWrites;
    raw.write(concat(getCall(2, "x"), getCall(3, "a", "slow")));
    // The Get of x is answered while the load of a still waits at the gate.
    await raw.waitFor(() => raw.frames().length === 2, "the reply before the wait");
    expect(node.server.counters.turnWrites).toBeGreaterThan(writesBefore); // written at the end of the turn
    // Sent during the wait: queued, reading not paused.
    const during = concat(getCall(4, "x"), getCall(5, "b", "slow"), setCall(6, "y", new TextEncoder().encode("value y")), getCall(7, "y"));
    const inBefore = node.server.counters.bytesIn;
    raw.write(during);
    await waitUntil(() => node.server.counters.bytesIn >= inBefore + during.length, "the server to read the requests sent during the wait");
    expect(raw.frames().length).toBe(2);
    expect(node.server.counters.pauses).toBe(0);
    open();
    await raw.waitFor(() => raw.frames().length === 7, "every reply");
    expect(raw.frames().map((f) => replyHeader(f).seqid)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect([1, 2, 3, 4, 6].map((i) => text(valueOf(raw, i)))).toEqual(["value x", "loaded a", "value x", "loaded b", "value y"]);
    raw.close();
  });

  test("pauses reading once 64 KiB are queued, counts them toward the buffer cap, and answers them all after the wait", async () => {
    const { node, open, raw } = await waitingConnection();
    await using _ = node;
    // 40 Sets of 4 KiB: 160 KiB while the Get of a waits.
    const values = Array.from({ length: 40 }, (_, i) => new Uint8Array(4096).fill(i + 1));
    raw.write(concat(...values.map((v, i) => setCall(2 + i, `k${i}`, v))));
    await waitUntil(() => node.server.counters.pauses > 0, "reading to pause");
    expect(node.server.counters.bufferedBytes).toBeGreaterThanOrEqual(64 * 1024);
    expect(raw.frames().length).toBe(0);
    open();
    await raw.waitFor(() => raw.frames().length === 41, "every reply");
    expect(raw.frames().map((f) => replyHeader(f).seqid)).toEqual(Array.from({ length: 41 }, (_, i) => 1 + i));
    expect(text(valueOf(raw, 0))).toBe("loaded a");
    raw.write(getCall(100, "k39"));
    await raw.waitFor(() => raw.frames().length === 42, "the Get after");
    expect(Buffer.compare(valueOf(raw, 41), values[39]!)).toBe(0);
    await waitUntil(() => node.server.counters.bufferedBytes === 0, "the buffers to empty");
    raw.close();
  });

  test("input queued during a wait past the server's buffer cap closes that connection only, after the reply it waits for", async () => {
    const { node, open, raw } = await waitingConnection(32 * 1024);
    await using _ = node;
    raw.write(concat(...Array.from({ length: 12 }, (_, i) => setCall(2 + i, `k${i}`, new Uint8Array(4096)))));
    await waitUntil(() => node.server.counters.bufferCapClosed === 1, "the cap to close the connection");
    // Its queued input is dropped; the load it waits for is still answered, then it ends.
    expect(raw.isClosed).toBe(false);
    open();
    await raw.closed;
    expect(raw.frames().map((f) => replyHeader(f).seqid)).toEqual([1]);
    expect(text(valueOf(raw, 0))).toBe("loaded a");
    await waitUntil(() => node.server.counters.bufferedBytes === 0, "the closed connection's bytes to be counted out");
    expect(await roundTrip(node.port)).toBe("ok");
  });

  test("what a waiting request holds counts toward --max-buffered: 1 MB Gets waiting for loads are closed past a 3.5 MB cap", async () => {
    const cap = 3.5 * 1024 * 1024;
    const { node, open } = gatedNode(cap);
    await using _ = node;
    // Each Get carries a 1 MB field the decoder skips (a newer client's), so its frame is 1 MB.
    const bigGet = (key: string) => framed(message(MSG.CALL, "Get", 1, new Bytes()
      .field(T.STRUCT, 1).field(T.STRING, 1).str("slow").field(T.STRING, 2).str(key).field(T.STRING, 99).str(new Uint8Array(1 << 20))
      .stop().stop().bytes()));
    const clients: RawSocket[] = [];
    for (let i = 0; i < 5; i++) {
      // One after another: each Get is read whole and waits for its load before the next is sent.
      const c = await RawSocket.connect(node.port);
      clients.push(c);
      const get = bigGet(`k${i}`);
      const inBefore = node.server.counters.bytesIn;
      c.write(get);
      await waitUntil(() => node.server.counters.bytesIn >= inBefore + get.length, `Get ${i} to be read`);
    }
    // Three wait within the cap (3 MB and their arrays); the 4th and 5th each pushed the total past
    // it, and the cap closed the largest holder each time.
    await waitUntil(() => node.server.counters.bufferCapClosed === 2, "the cap to close two connections");
    expect(node.server.counters.bufferedBytes).toBeGreaterThan(3 * (1 << 20));
    expect(node.server.counters.bufferedBytes).toBeLessThanOrEqual(cap);
    const closed = clients.map(() => false);
    clients.forEach((c, i) => void c.closed.then(() => (closed[i] = true)));
    open();
    // The two closed by the cap end once their replies are written; the other three are answered.
    await waitUntil(() => closed.filter((x) => x).length === 2 && clients.every((c, i) => closed[i] || c.frames().length === 1), "two ends and three replies");
    for (const [i, c] of clients.entries()) {
      if (closed[i]) continue;
      expect(text(valueOf(c, 0))).toBe(`loaded k${i}`);
      c.close();
    }
    await waitUntil(() => node.server.counters.bufferedBytes === 0, "what they held to be counted out");
    expect(await roundTrip(node.port)).toBe("ok");
  });

  test("a GetMulti of 20,000 keys waiting for its loads counts its keys' bookkeeping until its reply is written", async () => {
    const { node, open } = gatedNode();
    await using _ = node;
    const raw = await RawSocket.connect(node.port);
    const keys = Array.from({ length: 20_000 }, (_, i) => new TextEncoder().encode(`m${i}`));
    raw.write(getMultiCall(1, "slow", keys));
    await waitUntil(() => node.server.counters.bufferedBytes > 0, "the GetMulti to wait");
    // Its message, its entries (16 B each) and WAITING_ENTRY_BYTES per key.
    expect(node.server.counters.bufferedBytes).toBeGreaterThanOrEqual(20_000 * (16 + WAITING_ENTRY_BYTES));
    open();
    await raw.waitFor(() => raw.frames().length === 1, "the GetMulti's reply", 30_000);
    await waitUntil(() => node.server.counters.bufferedBytes === 0, "the request's bytes to be counted out");
    raw.close();
  }, 60_000);

  test("what a waiting GetMulti holds while it waits is not counted against its reply's frame limit (review: a cold GetMulti whose reply fits was refused)", async () => {
    const node = CacheNode.start(
      { port: 0, logLevel: "silent", maxFrameSize: 1 << 20, maxItemSize: 64 * 1024, groups: [{ name: "slow", ttlMs: 0 }] },
      { logger: new LogSink().logger, loaders: { slow: async (key) => `loaded ${key}` } },
    );
    await using _ = node;
    const raw = await RawSocket.connect(node.port);
    // 3,000 keys of 100 B: a 312 KB message, a 645 KB reply, under the 1 MiB frame limit; the
    // message, its entries and their bookkeeping come to 550 KB more.
    const keys = Array.from({ length: 3000 }, (_, i) => new TextEncoder().encode(`${i}`.padStart(100, "k")));
    raw.write(getMultiCall(1, "slow", keys));
    await raw.waitFor(() => raw.frames().length === 1, "the GetMulti's reply", 30_000);
    const o = outcome(readReplies(raw.received, "framed").replies[0]!);
    if (o.kind !== "success") throw new Error(`GetMulti: ${JSON.stringify(o)}`);
    const entries = field(o.value, 1, T.MAP) as [Uint8Array, Uint8Array][];
    expect(entries.length).toBe(3000);
    expect(text(entries[0]![1])).toBe(`loaded ${text(entries[0]![0])}`);
    raw.close();
  }, 60_000);

  test("a client dripping tiny segments while its connection waits is paused after a few of them", async () => {
    const { node, open, raw } = await waitingConnection();
    await using _ = node;
    // A Get sent a byte at a time: each byte its own segment, far below the 64 KiB bound.
    const get = getCall(2, "b", "slow");
    for (let i = 0; i < get.length && node.server.counters.pauses === 0; i++) {
      const inBefore = node.server.counters.bytesIn;
      raw.write(get.subarray(i, i + 1));
      await waitUntil(() => node.server.counters.bytesIn > inBefore, `byte ${i} to be read`);
    }
    expect(node.server.counters.pauses).toBe(1);
    expect(node.server.counters.bytesIn).toBeLessThan(getCall(1, "a", "slow").length + 20);
    raw.write(get.subarray(node.server.counters.bytesIn - getCall(1, "a", "slow").length));
    open();
    await raw.waitFor(() => raw.frames().length === 2, "both replies");
    expect([0, 1].map((i) => text(valueOf(raw, i)))).toEqual(["loaded a", "loaded b"]);
    raw.close();
  });
});

describe("a client that half-closes (FIN after its last request)", () => {
  /** halfClose sends `calls` and FIN on a node:net socket that stays readable, and collects every reply until the server ends. */
  async function halfClose(port: number, calls: Uint8Array): Promise<Uint8Array> {
    const socket = connect({ port, host: "127.0.0.1", allowHalfOpen: true });
    const parts: Uint8Array[] = [];
    await new Promise<void>((resolve, reject) => {
      socket.on("connect", () => socket.end(calls));
      socket.on("data", (d: Buffer) => parts.push(new Uint8Array(d)));
      socket.on("end", () => resolve());
      socket.on("error", reject);
    });
    socket.destroy();
    return concat(...parts);
  }

  test("gets every reply, also those behind a load, then the connection ends", async () => {
    const { node, open } = gatedNode();
    await using _ = node;
    setTimeout(open, 50);
    const calls = concat(setCall(1, "x", new TextEncoder().encode("value x")), getCall(2, "x"), getCall(3, "a", "slow"), getCall(4, "x"));
    const bytes = await halfClose(node.port, calls);
    const { replies, rest } = readReplies(bytes, "framed");
    expect(rest).toBe(bytes.length);
    expect(replies.map((r) => r.seqid)).toEqual([1, 2, 3, 4]);
    expect(replies.map((r) => outcome(r).kind)).toEqual(["success", "success", "success", "success"]);
    await waitUntil(() => node.server.connectionCount === 0, "the connection to close");
  });

  test("without a wait: every reply, then the end; a FIN in the middle of a frame just ends the connection", async () => {
    const { node } = gatedNode();
    await using _ = node;
    const whole = await halfClose(node.port, concat(setCall(1, "y", new TextEncoder().encode("value y")), getCall(2, "y")));
    expect(readReplies(whole, "framed").replies.map((r) => [r.seqid, outcome(r).kind])).toEqual([[1, "success"], [2, "success"]]);
    const get = getCall(3, "y");
    const cut = await halfClose(node.port, concat(getCall(4, "y"), get.subarray(0, get.length - 3)));
    expect(readReplies(cut, "framed").replies.map((r) => r.seqid)).toEqual([4]);
    await waitUntil(() => node.server.connectionCount === 0, "both connections to close");
    expect(node.server.counters.protocolErrors).toBe(0);
  });
});

describe("shutting down while a connection waits", () => {
  test("what it received before the shutdown is all answered, in order; what it sends after is not read", async () => {
    const { node, open, raw } = await waitingConnection();
    raw.write(concat(setCall(2, "x", new TextEncoder().encode("value x")), getCall(3, "x"), getCall(4, "b", "slow")));
    await waitUntil(() => node.server.counters.bytesIn > getCall(1, "a", "slow").length, "the requests behind the wait");
    const closed = node.close(); // what SIGTERM does
    await Bun.sleep(20);
    raw.write(getCall(5, "x")); // after the shutdown began
    await Bun.sleep(20);
    open();
    await closed;
    await raw.closed;
    const { replies } = readReplies(raw.received, "framed");
    expect(replies.map((r) => [r.seqid, outcome(r).kind])).toEqual([[1, "success"], [2, "success"], [3, "success"], [4, "success"]]);
    expect(text(valueOf(raw, 0))).toBe("loaded a");
    expect(text(valueOf(raw, 2))).toBe("value x");
    expect(text(valueOf(raw, 3))).toBe("loaded b");
  });
});
