/**
 * A connection the node ends gracefully (shutdown's drain, the idle timeout, an OVERLOADED or
 * UNAUTHORIZED refusal) closes lingering, as nginx's lingering_close: the node half-closes it
 * once its replies are written, reads and drops what the client still sends, and closes when the
 * client does, or cuts it LINGER_MS later. Review: `end()` closed the socket at once, and a
 * request the client had pipelined meanwhile got the node's kernel to answer RST, which threw
 * away the replies still unread in the client's receive buffer: the client read 0 bytes and got
 * EPIPE (one Get served, its reply unread, the node closing, another Get 20 ms later).
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import net from "node:net";
import tls from "node:tls";
import { ERROR_CODE } from "../../src/protocol/errors.ts";
import type { CacheNode } from "../../src/server/cache-node.ts";
import { DRAIN_MS, MAX_REJECTED_OPEN } from "../../src/server/connection-lifecycle.ts";
import { LINGER_MS } from "../../src/server/lingering-close.ts";
import { RawSocket, cacheErrorCode, getCall, startNode } from "./support.ts";
import { waitUntil } from "../support/gates.ts";
import { selfSigned, withTlsDir } from "../support/tls.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

/** NetClient is a node:net (or node:tls) client, as the stock Thrift client uses: what it read, its EOF, and the error it closed with. */
interface NetClient {
  socket: net.Socket;
  received: Buffer;
  eof: boolean;
  error: string | undefined;
  closed: Promise<void>;
}

/**
 * servedUnread connects a node:net client that does not read (paused), has one Get answered, and
 * waits until the node has written the reply: it waits in the client's receive buffer. (Bun's own
 * client delivered such replies even past the reset; node:net's read 0 bytes and EPIPE, as the
 * review found.)
 */
async function servedUnread(node: CacheNode, opts: { tls?: boolean } = {}): Promise<NetClient> {
  const socket = opts.tls === true
    ? tls.connect({ host: "127.0.0.1", port: node.port, rejectUnauthorized: false })
    : net.connect(node.port, "127.0.0.1");
  await new Promise<void>((resolve, reject) => {
    socket.once(opts.tls === true ? "secureConnect" : "connect", () => resolve());
    socket.once("error", reject);
  });
  const c: NetClient = { socket, received: Buffer.alloc(0), eof: false, error: undefined, closed: Promise.resolve() };
  c.closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  socket.on("data", (d: Buffer) => (c.received = Buffer.concat([c.received, d])));
  socket.on("end", () => (c.eof = true));
  socket.on("error", (e) => (c.error ??= e.message));
  socket.pause();
  const before = node.server.counters.bytesOut;
  socket.write(getCall(1, "absent"));
  await waitUntil(() => node.server.counters.bytesOut > before, "the reply written");
  return c;
}

/**
 * sendLate has the client send another Get after the node ended its side, then read: it must get
 * the reply it had not read, then the node's FIN, and no reset. (The reset has no event the test
 * could wait on before the client reads: a short pause lets the late Get reach the node first.)
 */
async function sendLate(c: NetClient, expected: number): Promise<void> {
  c.socket.write(getCall(2, "absent"));
  await Bun.sleep(50);
  c.socket.resume();
  await c.closed; // (node:net closes its side at the node's FIN)
  expect(c.error).toBeUndefined();
  expect(c.eof).toBe(true);
  const frames: number[] = [];
  for (let p = 0; p + 4 <= c.received.length; p += 4 + c.received.readInt32BE(p)) {
    frames.push(cacheErrorCode(new Uint8Array(c.received.subarray(p + 4, p + 4 + c.received.readInt32BE(p)))));
  }
  expect(frames).toEqual([expected]);
}

function countsAgree(node: CacheNode): void {
  expect(node.server.counters.connectionsCurrent).toBe(node.server.connectionCount);
  node.server.lifecycle.checkInvariants();
}

describe("a connection the node ends keeps the replies its client has not read", () => {
  test("at shutdown (the drain)", async () => {
    const node = startNode();
    const client = await servedUnread(node);
    const closing = node.close();
    await sendLate(client, ERROR_CODE.NOT_FOUND);
    await closing;
    expect(node.server.connectionCount).toBe(0);
    countsAgree(node);
  });

  test("at the idle timeout", async () => {
    await using node = startNode({ idleTimeoutMs: 200 });
    const client = await servedUnread(node);
    await waitUntil(() => node.server.counters.idleClosed === 1, "the idle close");
    await sendLate(client, ERROR_CODE.NOT_FOUND);
    await waitUntil(() => node.server.connectionCount === 0, "the close counted");
    countsAgree(node);
  });

  test("refused OVERLOADED past --max-connections, with a request sent behind", async () => {
    await using node = startNode({ maxConnections: 1 });
    const holder = await RawSocket.connect(node.port);
    await waitUntil(() => node.server.connectionCount === 1, "the first connection open");
    const client = await servedUnread(node); // (its Get refused OVERLOADED, unread) …
    await sendLate(client, ERROR_CODE.OVERLOADED); // … and the next one pipelined behind
    await waitUntil(() => node.server.connectionCount === 1, "the refused connection counted out");
    expect(node.server.counters.connectionsRejected).toBe(1);
    countsAgree(node);
    holder.close();
  });

  test("refused UNAUTHORIZED (no Auth first), with a request sent behind", async () => {
    await using node = startNode({ authToken: "s3cret-token-0123456789" });
    const client = await servedUnread(node);
    await sendLate(client, ERROR_CODE.UNAUTHORIZED);
    await waitUntil(() => node.server.connectionCount === 0, "the refused connection counted out");
    countsAgree(node);
  });

  test("over TLS too (at shutdown)", async () => {
    await withTlsDir(async (dir) => {
      const { cert, key } = selfSigned(dir);
      const node = startNode({ tlsCert: cert, tlsKey: key });
      const client = await servedUnread(node, { tls: true });
      const closing = node.close();
      await sendLate(client, ERROR_CODE.NOT_FOUND);
      await closing;
      countsAgree(node);
    });
  });
});

describe("lingering is bounded", () => {
  test("LINGER_MS is shorter than shutdown's drain bound", () => {
    expect(LINGER_MS).toBeLessThan(DRAIN_MS);
  });

  for (const tls of [false, true]) {
    test(`a client that never closes its side is cut after the linger time${tls ? " (TLS)" : ""}`, async () => {
      await withTlsDir(async (dir) => {
        const { cert, key } = selfSigned(dir);
        const node = startNode(tls ? { tlsCert: cert, tlsKey: key, idleTimeoutMs: 200 } : { idleTimeoutMs: 200 }, { lingerMs: 300 });
        const client = await RawSocket.connect(node.port, { tls, halfOpen: true });
        client.write(getCall(1, "absent"));
        await client.waitFor(() => client.frames().length === 1, "the Get's reply");
        await client.waitFor(() => client.eof, "the idle close's FIN");
        expect(node.server.connectionCount).toBe(1); // (lingering: still counted)
        countsAgree(node);
        await client.closed; // cut by the node
        expect(node.server.connectionCount).toBe(0);
        expect(node.server.counters.lingerCut).toBe(1);
        countsAgree(node);
        await node.close();
      });
    });
  }

  test("at --max-connections a newcomer cuts the oldest lingering connection instead of being refused", async () => {
    await using node = startNode({ maxConnections: 1, idleTimeoutMs: 200 }, { lingerMs: 60_000 });
    const old = await RawSocket.connect(node.port, { halfOpen: true });
    old.write(getCall(1, "absent"));
    await old.waitFor(() => old.eof, "the idle close's FIN");
    const newcomer = await RawSocket.connect(node.port);
    newcomer.write(getCall(1, "absent"));
    await newcomer.waitFor(() => newcomer.frames().length === 1, "the newcomer's reply");
    expect(cacheErrorCode(newcomer.frames()[0]!)).toBe(ERROR_CODE.NOT_FOUND);
    await old.closed;
    expect([node.server.counters.connectionsRejected, node.server.counters.lingerCut, node.server.connectionCount]).toEqual([0, 1, 1]);
    countsAgree(node);
    newcomer.close();
  });
  test("a flood past --max-connections holds at most MAX_REJECTED_OPEN refused connections open: the rest are cut at once, without a reply (review: each lingers up to 4 s, outside the limit, on descriptors the node keeps for the rest)", async () => {
    await using node = startNode({ maxConnections: 2 });
    const members = [await RawSocket.connect(node.port), await RawSocket.connect(node.port)];
    const flood: RawSocket[] = [];
    for (let i = 0; i < MAX_REJECTED_OPEN + 40; i++) flood.push(await RawSocket.connect(node.port, { halfOpen: true }));
    await waitUntil(() => node.server.counters.connectionsRejected === MAX_REJECTED_OPEN + 40, "every newcomer refused");
    expect(node.server.counters.connectionsRejectedCut).toBe(40);
    expect(node.server.connectionCount).toBe(2 + MAX_REJECTED_OPEN);
    countsAgree(node);
    // The first MAX_REJECTED_OPEN are answered OVERLOADED; the last 40 were cut, no reply.
    for (const c of flood) c.write(getCall(1, "absent"));
    for (const c of flood.slice(0, MAX_REJECTED_OPEN)) await c.waitFor(() => c.frames().length === 1, "OVERLOADED");
    for (const c of flood.slice(0, MAX_REJECTED_OPEN)) expect(cacheErrorCode(c.frames()[0]!)).toBe(ERROR_CODE.OVERLOADED);
    for (const c of flood.slice(MAX_REJECTED_OPEN)) await c.closed;
    expect(flood.slice(MAX_REJECTED_OPEN).every((c) => c.frames().length === 0)).toBe(true);
    // The members are served throughout.
    for (const m of members) {
      m.write(getCall(7, "absent"));
      await m.waitFor(() => m.frames().length === 1, "a member's reply");
      expect(cacheErrorCode(m.frames()[0]!)).toBe(ERROR_CODE.NOT_FOUND);
    }
    for (const c of flood) c.close();
    for (const m of members) m.close();
    await waitUntil(() => node.server.connectionCount === 0, "all closed");
    countsAgree(node);
  });
});
