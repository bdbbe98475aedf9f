/**
 * Replies no server of ours writes, and what the client makes of them (review of the client
 * against a hostile or broken server): never a hit, an error the server chose for calls it never
 * answered, or a large reply kept by an idle connection.
 */
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient, TEST_DOOR } from "../../src/client/cache-client.ts";
import type { TimeoutSweep } from "../../src/client/timeout-sweep.ts";
import { ERROR_CODE } from "../../src/protocol/errors.ts";
import { Bytes, MSG, T, framed, message } from "../protocol/wire-builder.ts";
import { StubServer, getReply, multiReply, rejection } from "./support.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const open: { close(): unknown }[] = [];
afterEach(async () => {
  for (const x of open.splice(0)) await x.close();
});

function client(stub: StubServer, extra: Partial<ConstructorParameters<typeof CacheClient>[0]> = {}): CacheClient {
  const c = new CacheClient({ host: "127.0.0.1", port: stub.port, connections: 1, timeoutMs: 2000, ...extra });
  open.push(c);
  return c;
}

function stub(): StubServer {
  const s = new StubServer();
  open.push({ close: () => s.close() });
  return s;
}

const reply = (name: string, seqid: number, body: Bytes): Uint8Array => framed(message(MSG.REPLY, name, seqid, body.bytes()));
const notFound = (b: Bytes): Bytes => b.field(T.STRUCT, 1).field(T.I32, 1).i32(ERROR_CODE.NOT_FOUND).field(T.STRING, 2).str("key not found").stop();

describe("a reply with more than one result", () => {
  const bodies: [string, () => Bytes][] = [
    ["a CacheError, then a success", () => notFound(new Bytes()).field(T.STRUCT, 0).stop().stop()],
    ["a value over the limit, then an empty success", () =>
      new Bytes().field(T.STRUCT, 0).field(T.STRING, 1).str("x".repeat(1000)).stop().field(T.STRUCT, 0).stop().stop()],
    ["a success, then a CacheError", () => notFound(new Bytes().field(T.STRUCT, 0).field(T.STRING, 1).str("v").stop()).stop()],
  ];
  test.each(bodies)("%s is a protocol error, never a hit", async (_, body) => {
    const s = stub();
    s.handler = (call) => reply(call.name, call.seqid, body());
    const c = client(s, { limits: { maxValueBytes: 100 } });
    const e = await rejection(c.get("g", "k"));
    expect(e.code).toBe(ERROR_CODE.PEER_UNAVAILABLE);
    expect(e.message).toContain("reply carries more than one result");
  });
});

describe("a Get reply without its value", () => {
  test("is an empty value, as Thrift reads an unset binary (Apache's servers write a Response left unset so)", async () => {
    const s = stub();
    s.handler = (call) => reply(call.name, call.seqid, new Bytes().field(T.STRUCT, 0).field(T.I64, 2).i64(5).stop().stop());
    expect(await client(s).get("g", "k")).toEqual({ value: new Uint8Array(0), ttlRemainingMs: 5 });
  });
});

describe("replies to the reserved seqids", () => {
  test("an Auth (-1) or intro PeerPing (-2) reply the client never asked for is a protocol error, not the answer to its calls", async () => {
    for (const [name, seqid] of [["Auth", -1], ["PeerPing", -2]] as const) {
      const s = stub();
      let n = 0;
      s.handler = (call) => (++n === 2 ? reply(name, seqid, notFound(new Bytes()).stop()) : null);
      const c = client(s);
      const [a, b] = await Promise.all([rejection(c.get("g", "a")), rejection(c.get("g", "b"))]);
      for (const e of [a, b]) {
        expect(e.code).toBe(ERROR_CODE.PEER_UNAVAILABLE); // the connection dropped, not the server's NOT_FOUND
        expect(e.message).toContain(`reply to seqid ${seqid}, which is not in flight`);
      }
      expect(c.counters.protocolErrors).toBe(1);
    }
  });

  test("an Auth reply is taken once, for the Auth sent: a second is a protocol error", async () => {
    const s = stub();
    s.handler = (call) => {
      if (call.name === "Auth") return reply("Auth", -1, new Bytes().field(T.STRUCT, 0).field(T.BOOL, 1).u8(1).stop().stop());
      return new Uint8Array([...reply("Auth", -1, notFound(new Bytes()).stop()), ...getReply("Get", call.seqid, new Uint8Array([1]))]);
    };
    const c = client(s, { authToken: "a-token-of-sixteen-chars" });
    const e = await rejection(c.get("g", "k"));
    expect(e.message).toContain("reply to seqid -1, which is not in flight");
  });
});

describe("an idle connection after a large reply", () => {
  test("keeps no view of it (the frame and reply readers let go)", async () => {
    const s = stub();
    const big = new Uint8Array(512 * 1024).fill(7);
    s.handler = (call) => multiReply(call.name, call.seqid, [["k", big]]);
    const c = client(s, { limits: { maxValueBytes: big.length } });
    expect((await c.getMulti("g", ["k"])).get("k")!.length).toBe(big.length);
    const conn = c[TEST_DOOR].connections[0]! as unknown as { frames: { buffer: Uint8Array }; replies: { buffer: Uint8Array } };
    expect(conn.frames.buffer.length).toBeLessThanOrEqual(64 * 1024);
    expect(conn.replies.buffer.length).toBeLessThanOrEqual(64 * 1024);
    // And the connection goes on serving.
    s.handler = (call) => getReply(call.name, call.seqid, new Uint8Array([9]));
    expect((await c.get("g", "k")).value).toEqual(new Uint8Array([9]));
  });
});

describe("getMulti's map", () => {
  test("is keyed by the keys as asked; a key the server names but was not asked is not in it", async () => {
    const s = stub();
    s.handler = (call) => multiReply(call.name, call.seqid, [["b", new Uint8Array([2])], ["café", new Uint8Array([3])], ["never asked", new Uint8Array([4])]]);
    const got = await client(s).getMulti("g", ["a", new TextEncoder().encode("b"), "café"]);
    expect([...got.entries()]).toEqual([["b", new Uint8Array([2])], ["café", new Uint8Array([3])]]);
  });

  test("refuses byte keys that are not UTF-8 (two such keys read as the same text): INVALID_ARGUMENT, nothing sent", async () => {
    const s = stub();
    const c = client(s);
    for (const bad of [new Uint8Array([0xff]), new Uint8Array([0x61, 0xc3])]) {
      const e = await rejection(c.getMulti("g", ["ok", bad]));
      expect(e.code).toBe(ERROR_CODE.INVALID_ARGUMENT);
      expect(e.message).toContain("GetMulti key 1 is not UTF-8");
    }
    expect(s.calls.length).toBe(0);
    // A key with a byte-order mark is its own key, not "a".
    s.handler = (call) => multiReply(call.name, call.seqid, [["\uFEFFa", new Uint8Array([5])], ["a", new Uint8Array([1])]]);
    const got = await c.getMulti("g", [new Uint8Array([0xef, 0xbb, 0xbf, 0x61]), "a"]);
    expect([...got.entries()]).toEqual([["\uFEFFa", new Uint8Array([5])], ["a", new Uint8Array([1])]]);
  });
});

describe("client options a timer waits for", () => {
  test.each(["timeoutMs", "connectTimeoutMs", "probeIntervalMs"])("%s over 2^31 - 1 ms is refused (a timer fires such a delay after 1 ms)", (name) => {
    expect(() => new CacheClient({ host: "127.0.0.1", port: 1, [name]: 2 ** 31 })).toThrow(`ClientOptions.${name} must be at most 2147483647 ms`);
    expect(() => new CacheClient({ host: "127.0.0.1", port: 1, [name]: 2 ** 31 - 1 }).close()).not.toThrow();
  });
});

describe("a small timeoutMs", () => {
  test.each([[5, 1, 5], [11, 2, 6], [15, 2, 8], [1000, 100, 10]])("%p ms is %p ms ticks × %p, not 10 ticks whatever their length (11 ms failed after 22–24 ms)", (timeoutMs, tickMs, ticks) => {
    const c = new CacheClient({ host: "127.0.0.1", port: 1, timeoutMs }) as unknown as { timeouts: TimeoutSweep; close(): unknown };
    expect([c.timeouts.tickMs, c.timeouts.timeoutTicks]).toEqual([tickMs, ticks]);
    c.close();
  });
});
