/**
 * CacheClient over real sockets on port 0: the seed methods against a real node, the peer
 * methods against StubServer (the node's peer dispatch is being built alongside), errors,
 * pipelining, timeouts, down marking and probing back, and hostile servers.
 */
import { afterAll, beforeAll, describe, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient, TEST_DOOR, isUnknownMethod } from "../../src/client/cache-client.ts";
import { ERROR_CODE } from "../../src/protocol/errors.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import { Bytes, MSG, T, framed, message } from "../protocol/wire-builder.ts";
import { type StubCall, StubServer, appExceptionReply, closedPort, getReply, multiReply, rejection, serve, until } from "./support.ts";
import { LogSink } from "../server/support.ts";
import { IPV6 } from "../support/ipv6.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const enc = new TextEncoder();
const dec = new TextDecoder();
const str = (b: Uint8Array) => dec.decode(b);

describe("against a real node (seed methods)", () => {
  let node: CacheNode;
  let client: CacheClient;
  beforeAll(() => {
    node = CacheNode.start({ port: 0, logLevel: "silent", maxItemSize: 64 * 1024 });
    client = new CacheClient({ host: "127.0.0.1", port: node.port });
  });
  afterAll(async () => {
    await client.close();
    await node.close();
  });

  test("set/get/delete/clear/stats/getMulti/setMulti round-trip", async () => {
    await client.set("default", "a", "alpha", 60_000);
    const a = await client.get("default", "a");
    expect(str(a.value)).toBe("alpha");
    expect(a.ttlRemainingMs).toBeGreaterThan(59_000);
    expect(a.ttlRemainingMs).toBeLessThanOrEqual(60_000);

    await client.set("default", "forever", "x");
    expect((await client.get("default", "forever")).ttlRemainingMs).toBe(-1);

    // binary keys and values, and a non-ASCII key
    const key = new Uint8Array([0, 255, 1, 254]);
    const value = new Uint8Array(5000).map((_, i) => i * 7);
    await client.set("default", key, value);
    expect((await client.get("default", key)).value).toEqual(value);
    await client.set("default", "clé-ключ-键", "ü");
    expect(str((await client.get("default", "clé-ключ-键")).value)).toBe("ü");

    expect(await client.delete("default", "a")).toBe(true);
    expect(await client.delete("default", "a")).toBe(false);

    await client.setMulti("default", [["m1", "one"], [enc.encode("m2"), enc.encode("two")]], 30_000);
    await client.setMulti("default", new Map([["m3", "three"]]));
    const got = await client.getMulti("default", ["m1", "m2", enc.encode("m3"), "missing"]);
    expect([...got].map(([k, v]) => [k, str(v)]).sort()).toEqual([["m1", "one"], ["m2", "two"], ["m3", "three"]]);
    expect((await client.get("default", "m1")).ttlRemainingMs).toBeGreaterThan(29_000);

    const stats = await client.stats("default");
    expect(stats.itemCount).toBe(6);
    expect(stats.totalCount).toBe(stats.hitCount + stats.missCount);
    await client.clear("default");
    expect((await client.stats("default")).itemCount).toBe(0);
  });

  test.each([
    ["a miss", () => client.get("default", "nope"), ERROR_CODE.NOT_FOUND],
    ["an unknown group", () => client.get("nogroup", "k"), ERROR_CODE.UNKNOWN_GROUP],
    ["a key over the limit", () => client.set("default", "k".repeat(251), "v"), ERROR_CODE.INVALID_ARGUMENT],
    ["a negative ttl", () => client.set("default", "k", "v", -5000), ERROR_CODE.INVALID_ARGUMENT],
    ["a value over maxItemSize", () => client.set("default", "k", new Uint8Array(65 * 1024)), ERROR_CODE.VALUE_TOO_LARGE],
  ] as const)("the server's CacheError for %s keeps its code", async (_, call, code) => {
    const e = await rejection(call());
    expect(e.name).toBe("CacheError");
    expect(e.code).toBe(code);
    expect(e.message.length).toBeGreaterThan(0);
    expect(client.isDown).toBe(false);
  });

  test("pipelining: 10,000 gets in flight across 2 connections", async () => {
    await Promise.all(Array.from({ length: 1000 }, (_, i) => client.set("default", `p${i}`, `v${i}`)));
    const before = client.counters.calls;
    const gets = Array.from({ length: 10_000 }, (_, i) => client.get("default", `p${i % 1000}`));
    // all 10k are in flight at once, half on each connection
    expect(client[TEST_DOOR].connections.map((conn) => conn.pending.waiting)).toEqual([5000, 5000]);
    const values = await Promise.all(gets);
    values.forEach((r, i) => expect(str(r.value)).toBe(`v${i % 1000}`));
    expect(client.counters.calls - before).toBe(10_000);
    expect(node.server.connectionCount).toBe(2);
  });
});

describe("peer methods (stub server)", () => {
  test("every peer variant sends its Peer* name and round-trips", async () => {
    using stub = new StubServer();
    await using c = new CacheClient({ host: "127.0.0.1", port: stub.port, connections: 1 });
    const peer = { peer: true };
    await c.set("g", "k", "v", 1500, peer);
    expect(await c.get("g", "k", peer)).toEqual({ value: enc.encode("v"), ttlRemainingMs: 777 });
    await c.setMulti("g", [["a", "1"], ["b", "2"]], undefined, peer);
    expect((await c.peerGetMulti("g", ["a", "b", "z"])).keys.map((k) => dec.decode(k)).sort()).toEqual(["a", "b"]);
    expect(await c.delete("g", "a", peer)).toBe(true);
    await c.clear("g", peer);
    expect(await c.invalidate("g", ["x", "y"])).toBe(2);
    expect(await c.invalidate("g", [], true)).toBe(99);
    expect(await c.ping("me:1")).toEqual({ nodeId: "stub:1", uptimeMs: 42 });
    expect(stub.calls.map((x) => x.name)).toEqual([
      "PeerSet", "PeerGet", "PeerSetMulti", "PeerGetMulti", "PeerDelete", "PeerClear", "PeerInvalidate", "PeerInvalidate", "PeerPing",
    ]);
    // ttlMs goes out exactly, ttl as whole seconds rounded up (for seed servers); none = defaults
    expect([stub.calls[0]!.ttlSeconds, stub.calls[0]!.ttlMs]).toEqual([2, 1500]);
    expect([stub.calls[2]!.ttlSeconds, stub.calls[2]!.ttlMs]).toEqual([0, undefined]);
    expect(stub.calls[7]!.all).toBe(true);
  });

  test("a TTL of a fraction of a millisecond goes out as 1 ms, not 0 (the group's default), and NaN is refused", async () => {
    using stub = new StubServer();
    await using c = new CacheClient({ host: "127.0.0.1", port: stub.port, connections: 1 });
    await c.set("g", "a", "v", 0.4);
    await c.setMulti("g", [["b", "1"]], 0.5);
    await c.set("g", "c", "v", 1500.2);
    await c.set("g", "d", "v", -0.5);
    expect(stub.calls.map((x) => [x.ttlSeconds, x.ttlMs])).toEqual([[1, 1], [1, 1], [2, 1501], [0, -1]]);
    for (const call of [() => c.set("g", "e", "v", Number.NaN), () => c.setMulti("g", [["f", "1"]], Number.NaN)]) {
      const e = await rejection(call());
      expect([e.code, /ttlMs/.test(e.message)]).toEqual([ERROR_CODE.INVALID_ARGUMENT, true]);
    }
    expect(stub.calls.length).toBe(4); // nothing sent for them
  });

  test("forwardGet hands the value bytes and TTL to the callback, never synchronously", async () => {
    using stub = new StubServer();
    stub.store.set("g/key", enc.encode("forwarded"));
    await using c = new CacheClient({ host: "127.0.0.1", port: stub.port });
    const group = enc.encode("g");
    const buf = enc.encode("xxkeyxx");
    const results: string[] = [];
    let sync = true;
    await new Promise<void>((resolve) => {
      c.forwardGet(group, buf, 2, 3, (err, value, off, len, ttl) => {
        expect(sync).toBe(false);
        results.push(`${err?.code ?? "ok"} ${str(value!.subarray(off, off + len))} ${ttl}`);
        c.forwardGet(group, buf, 0, 1, (err2) => {
          results.push(`${err2?.code} ${err2?.message}`);
          resolve();
        });
      });
      sync = false;
    });
    expect(results).toEqual(["ok forwarded 777", `${ERROR_CODE.NOT_FOUND} key not found`]);
    expect(stub.calls.map((x) => x.name)).toEqual(["PeerGet", "PeerGet"]);
  });

  test("a TApplicationException (an old server without the method) maps to PEER_UNAVAILABLE, marked UNKNOWN_METHOD", async () => {
    using stub = new StubServer();
    stub.handler = (call) => appExceptionReply(call.name, call.seqid, 1, `Invalid method name: '${call.name}'`);
    await using c = new CacheClient({ host: "127.0.0.1", port: stub.port, maxFailures: 1 });
    const e = await rejection(c.get("g", "k", { peer: true }));
    expect(e.code).toBe(ERROR_CODE.PEER_UNAVAILABLE);
    expect(e.message).toBe("PeerGet failed: server exception UNKNOWN_METHOD (1): Invalid method name: 'PeerGet'");
    expect(isUnknownMethod(e)).toBe(true);
    stub.handler = (call) => appExceptionReply(call.name, call.seqid, 6, "boom");
    const e2 = await rejection(c.ping());
    expect(e2.message).toBe("PeerPing failed: server exception INTERNAL_ERROR (6): boom");
    expect(isUnknownMethod(e2)).toBe(false);
    expect(c.isDown).toBe(false); // the peer answered: alive
  });
});

describe("timeouts", () => {
  test("a call made by a forward's callback as the sweep times it out, on a connection swept already, still times out (review: the sweep stopped its timer and the call hung)", async () => {
    using stub = new StubServer();
    stub.store.set("g/a", enc.encode("a"));
    stub.handler = (call, s) => (call.key === "a" ? serve(call, s) : null); // nothing but "a" is answered
    await using c = new CacheClient({ host: "127.0.0.1", port: stub.port, connections: 2, timeoutMs: 100 });
    const g = enc.encode("g");
    const retried = Promise.withResolvers<string>();
    c.forwardGet(g, enc.encode("a"), 0, 1, () => {}); // on the first connection, answered
    c.forwardGet(g, enc.encode("b"), 0, 1, () => {
      // Fails at its timeout on the second connection; its retry goes on the first, swept before it.
      c.forwardGet(g, enc.encode("c"), 0, 1, (err) => retried.resolve(err?.message ?? "answered"));
    });
    const hung = Bun.sleep(3_000).then(() => "no outcome within 3 s");
    expect(await Promise.race([retried.promise, hung])).toContain("timeout");
  });

  test("a call issued while the sweep runs waits its whole timeout, wherever in a tick it was issued (review: up to a tick early)", async () => {
    using stub = new StubServer();
    stub.store.set("g/alive", enc.encode("yes"));
    // Answers "alive" at once (the connection is not quiet, so it is not reset), nothing else.
    stub.handler = (call, s) => (call.key === "alive" ? serve(call, s) : null);
    await using c = new CacheClient({ host: "127.0.0.1", port: stub.port, connections: 1, timeoutMs: 200, maxFailures: 1_000 });
    let done = false;
    const alive = (async () => {
      while (!done) await Promise.all([c.get("g", "alive"), Bun.sleep(5)]);
    })();
    const first = rejection(c.get("g", "k0")); // starts the sweep
    const waited: Promise<number>[] = [];
    for (let i = 1; i <= 12; i++) {
      await Bun.sleep(7); // 7 ms apart: issued at every point of the 20 ms ticks
      const t0 = performance.now();
      waited.push(rejection(c.get("g", `k${i}`)).then(() => performance.now() - t0));
    }
    await first;
    const elapsed = await Promise.all(waited);
    done = true;
    await alive;
    expect(Math.min(...elapsed)).toBeGreaterThanOrEqual(197); // timer slack only
    expect(Math.max(...elapsed)).toBeLessThan(5_000); // they do time out (not a latency claim)
  });

  // A read connection is replaced; the write connection is reset (its writes keep one order).
  for (const write of [false, true]) {
    test(`a ${write ? "write" : "read"} connection quiet for over a timeout: ${write ? "reset, failing its calls" : "replaced for new calls, the calls on it keep their own deadlines (review: they all failed at once)"}`, async () => {
      using stub = new StubServer();
      stub.store.set("g/fast", enc.encode("fast"));
      stub.store.set("g/late", enc.encode("late value"));
      stub.handler = (call, s) => {
        if (call.key.startsWith("never")) return null;
        if (call.key === "late") {
          // Answered 300 ms on, within its 400 ms, but after the connection was found quiet.
          const socket = [...s.sockets][0]!;
          const reply = serve(call, s);
          setTimeout(() => socket.write(reply), 300);
          return null;
        }
        return serve(call, s);
      };
      // Reads on one connection; or Sets on the write connection (the first of two).
      await using c = new CacheClient({ host: "127.0.0.1", port: stub.port, connections: write ? 2 : 1, writeConnection: write, timeoutMs: 400, maxFailures: 1_000 });
      const call = async (key: string): Promise<void> => void (write ? await c.set("g", key, "v") : await c.get("g", key));
      await call("fast");
      const never = [rejection(call("never0"))];
      await Bun.sleep(60);
      never.push(rejection(call("never1"))); // times out once nothing came back for over 400 ms
      await Bun.sleep(240);
      const late = call("late");
      for (const e of await Promise.all(never)) expect(e.message).toContain("timeout");
      if (write) {
        expect((await rejection(late)).message).toContain("no reply on this connection within the timeout");
        await call("fast"); // reconnected
      } else {
        await call("fast"); // on a fresh connection
        await late;
        await until(() => stub.sockets.size === 1); // the replaced one is closed once its calls settled
      }
      expect(stub.connections).toBe(2);
      expect(c.counters.timeouts).toBe(2);
    });
  }

  test("a quiet connection with a write waiting is reset, not replaced: the write fails rather than be answered after later writes on a fresh connection (review)", async () => {
    await using node = CacheNode.start({ port: 0, logLevel: "silent", groups: [{ name: "g", ttlMs: 0, admission: "always" }] }, {
      logger: new LogSink().logger,
      loaders: { g: async (key) => {
        await Bun.sleep(key === "slow" ? 650 : 600);
        return `loaded ${key}`;
      } },
    });
    // One connection carries reads and writes: the node serves it in order, so w1 waits behind the loads.
    await using c = new CacheClient({ host: "127.0.0.1", port: node.port, connections: 1, timeoutMs: 400, maxFailures: 1_000 });
    await c.set("g", "k", "v0");
    const slow = rejection(c.get("g", "slow"));
    await Bun.sleep(60);
    const slow2 = rejection(c.get("g", "slow2"));
    await Bun.sleep(140);
    const w1 = rejection(c.set("g", "k", "v1"));
    await Bun.sleep(360); // the connection was found quiet with w1 on it
    await c.set("g", "k", "v2");
    for (const e of [await slow, await slow2]) expect(e.message).toContain("timeout"); // theirs, or the reset's
    // Reset: w1 fails (the node may still apply it, as any write a caller was told failed). Kept
    // on a replaced connection, it would have been acknowledged after v2, applied over it.
    expect((await w1).message).toContain("no reply on this connection within the timeout");
  });

  test("a sweep that marks the peer down while replaced connections time out their calls does not throw (review: it read an emptied list)", async () => {
    const sockets = new Set<unknown>();
    const silent = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { open: (s) => void sockets.add(s), data() {}, close: (s) => void sockets.delete(s) } });
    try {
      // A timeout so long that only the sweeps driven here run; two failures mark the peer down.
      const c = new CacheClient({ host: "127.0.0.1", port: silent.port, connections: 2, timeoutMs: 10_000_000, maxFailures: 2 });
      const door = c[TEST_DOOR];
      const calls: Promise<unknown>[] = [];
      const call = (key: string): void => void calls.push(rejection(c.get("g", key)));
      call("a");
      call("b");
      await until(() => sockets.size === 2);
      for (let t = 1; t <= 10; t++) door.sweep();
      for (let i = 0; i < 2200; i++) call(`k${i}`); // more than MAX_ABANDONED on each connection
      await Bun.sleep(20);
      door.sweep(); // a and b time out, both connections quiet: replaced, their calls kept
      for (let t = 12; t <= 21; t++) door.sweep(); // the kept calls time out: a drop marks the peer down
      expect(c.isDown).toBe(true);
      await c.close();
      await Promise.all(calls); // every call settled
    } finally {
      silent.stop(true);
    }
  });

  test("a server that never answers: PEER_UNAVAILABLE within ~timeout, and the late reply is dropped", async () => {
    using stub = new StubServer();
    const held: (() => void)[] = [];
    stub.handler = (call, s) => {
      if (call.key === "slow") {
        const late = getReply(call.name, call.seqid, enc.encode("LATE"), 1);
        held.push(() => [...s.sockets][0]!.write(late));
        return null;
      }
      return serve(call, s);
    };
    stub.store.set("g/fast", enc.encode("fast"));
    await using c = new CacheClient({ host: "127.0.0.1", port: stub.port, connections: 1, timeoutMs: 200 });
    await c.get("g", "fast"); // connected
    const t0 = performance.now();
    const e = await rejection(c.get("g", "slow"));
    const elapsed = performance.now() - t0;
    expect(e.code).toBe(ERROR_CODE.PEER_UNAVAILABLE);
    expect(e.message).toContain("timeout");
    expect(elapsed).toBeGreaterThanOrEqual(190);
    expect(elapsed).toBeLessThan(5_000); // it times out rather than hanging (an upper bound on a loaded CI machine is not a latency claim)
    expect(c.counters.timeouts).toBe(1);
    // The late reply arrives while another call is in flight; it must not answer that call.
    const next = c.get("g", "fast");
    held[0]!();
    expect(str((await next).value)).toBe("fast");
    expect(str((await c.get("g", "fast")).value)).toBe("fast");
    expect(c.counters.reconnects).toBe(0);
    expect(c.isDown).toBe(false);
  });

  test("a silent server (reads, never answers) times every call out; enough of them mark the peer down", async () => {
    const silent = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    try {
      await using c = new CacheClient({ host: "127.0.0.1", port: silent.port, timeoutMs: 100, maxFailures: 3, probeIntervalMs: 10_000 });
      // Calls that time out together count once: three rounds of them, with no reply between.
      for (let round = 0; round < 3; round++) {
        expect(c.isDown).toBe(false);
        const errors = await Promise.all([1, 2, 3].map((i) => rejection(c.get("g", `k${round}-${i}`))));
        expect(errors.map((e) => e.message)).toEqual(Array(3).fill(`timeout calling 127.0.0.1:${silent.port}`));
      }
      expect(c.isDown).toBe(true);
      expect(c.counters.downs).toBe(1);
      const e = await rejection(c.get("g", "k"));
      expect(e.message).toBe("peer is down");
    } finally {
      silent.stop(true);
    }
  });
});

describe("down marking and probing", () => {
  test("a probe that times out has its silent connection reset, so a peer reachable again on a new connection comes back", async () => {
    using stub = new StubServer();
    stub.store.set("g/k", enc.encode("v"));
    let answerFrom = 0; // answer calls only while the stub has accepted more connections than this
    stub.handler = (call, s) => (s.connections > answerFrom ? serve(call, s) : null);
    await using c = new CacheClient({ host: "127.0.0.1", port: stub.port, connections: 2, timeoutMs: 100, maxFailures: 1, probeIntervalMs: 20 });
    for (let i = 0; i < 3; i++) await c.get("g", "k"); // both connections open; the next call takes the second
    expect(stub.connections).toBe(2);
    answerFrom = 2; // both paths now silently dead; only a new connection would be answered
    expect((await rejection(c.get("g", "k"))).code).toBe(7);
    expect(c.isDown).toBe(true);
    // The second connection held the timed-out call and was reset; the first, idle, is what probes use.
    expect(c[TEST_DOOR].connections.map((conn) => conn.pending.abandoned)).toEqual([0, 0]);
    await until(() => !c.isDown, 3000);
    expect(stub.connections).toBeGreaterThan(2);
    expect(str((await c.get("g", "k")).value)).toBe("v");
  });

  test("one connection dead on a silent path while the others answer: it is reset, the peer stays up", async () => {
    using stub = new StubServer();
    stub.store.set("g/k", enc.encode("v"));
    await using c = new CacheClient({ host: "127.0.0.1", port: stub.port, connections: 2, timeoutMs: 100, maxFailures: 3, probeIntervalMs: 10_000 });
    await Promise.all([1, 2, 3, 4].map(() => c.get("g", "k")));
    expect(stub.connections).toBe(2);
    [...stub.sockets][0]!.pause(); // the server stops reading one connection: calls on it are never answered
    const outcomes: boolean[] = [];
    for (let i = 0; i < 30; i++) {
      outcomes.push(await c.get("g", "k").then(() => true, () => false));
    }
    expect(outcomes.includes(false)).toBe(true); // some calls hit the dead connection and timed out
    expect(outcomes.slice(-10)).toEqual(Array(10).fill(true)); // after its reset, all are answered
    expect([c.isDown, c.counters.downs]).toEqual([false, 0]);
  });

  test("a probe answered with an error brings the peer back and keeps its connection", async () => {
    using stub = new StubServer();
    stub.store.set("g/k", enc.encode("v"));
    // Gets of "silent" are never answered; PeerPing gets an UNKNOWN_METHOD exception (an older node).
    stub.handler = (call, s) => call.name === "PeerPing" ? appExceptionReply(call.name, call.seqid, 1, "unknown method")
      : call.key === "silent" ? null : serve(call, s);
    await using c = new CacheClient({ host: "127.0.0.1", port: stub.port, connections: 1, timeoutMs: 100, maxFailures: 1, probeIntervalMs: 20 });
    expect((await rejection(c.get("g", "silent"))).code).toBe(7);
    expect(c.isDown).toBe(true);
    await until(() => !c.isDown, 3000);
    const opened = stub.connections;
    expect(str((await c.get("g", "k")).value)).toBe("v");
    expect(stub.connections).toBe(opened); // the connection the probe was answered on was kept
  });

  test("the server closing idle connections (its idle timeout) is not a failure of the peer", async () => {
    using stub = new StubServer();
    stub.store.set("g/k", enc.encode("v"));
    await using c = new CacheClient({ host: "127.0.0.1", port: stub.port, connections: 3, maxFailures: 3, probeIntervalMs: 10_000 });
    await Promise.all([1, 2, 3, 4, 5, 6].map(() => c.get("g", "k")));
    expect(stub.connections).toBe(3);
    for (const s of stub.sockets) s.end(); // all three idle connections closed at once
    await until(() => stub.sockets.size === 0);
    await Bun.sleep(20);
    expect([c.isDown, c.counters.downs]).toEqual([false, 0]);
    expect(str((await c.get("g", "k")).value)).toBe("v");
  });

  test("with a write connection, writes stay on it after the peer closes it for idleness", async () => {
    // The idle close counted as a backoff failure: the write connection was passed over as not
    // usable, and with no call on it, never reconnected; every write shared the read connection.
    using stub = new StubServer();
    stub.store.set("g/k", enc.encode("v"));
    await using c = new CacheClient({ host: "127.0.0.1", port: stub.port, connections: 2, writeConnection: true, probeIntervalMs: 10_000 });
    await c.set("g", "k", "v1");
    await c.get("g", "k");
    expect(stub.connections).toBe(2);
    const [write] = [...stub.sockets];
    write!.end(); // the peer closes the write connection (its idle timeout)
    await until(() => stub.sockets.size === 1);
    await Bun.sleep(20);
    await c.set("g", "k", "v2");
    await c.set("g", "k", "v3");
    expect(stub.connections).toBe(3); // the write connection reconnected
    expect(c[TEST_DOOR].connections.map((conn) => conn.usable)).toEqual([true, true]);
    expect(str((await c.get("g", "k")).value)).toBe("v3");
  });

  test("a peer marked down by timeouts is reported down once: resetting its connections is no new failure (review: a \"still down: peer marked down\" followed)", async () => {
    using stub = new StubServer();
    stub.store.set("g/fast", enc.encode("ok"));
    stub.handler = (call, s) => (call.key === "slow" ? null : serve(call, s));
    const heard: string[] = [];
    await using c = new CacheClient({
      host: "127.0.0.1", port: stub.port, connections: 1, timeoutMs: 50, maxFailures: 1, probeIntervalMs: 10_000,
      onHealth: (state, reason) => heard.push(`${state}: ${reason}`),
    });
    const slow = rejection(c.get("g", "slow"));
    await c.get("g", "fast"); // answered: the connection is not quiet when the slow call times out
    expect((await slow).message).toContain("timeout");
    await until(() => c.isDown);
    await Bun.sleep(20); // (what a reset reports comes in the same turn)
    expect(heard).toEqual([`down: calls to 127.0.0.1:${stub.port} timed out`]);
  });

  test("slow calls timing out together, between answered ones, do not mark a healthy peer down", async () => {
    using stub = new StubServer();
    stub.store.set("g/fast", enc.encode("ok"));
    stub.handler = (call, s) => (call.key.startsWith("slow") ? null : serve(call, s)); // slow keys: no answer
    await using c = new CacheClient({ host: "127.0.0.1", port: stub.port, connections: 1, timeoutMs: 100, maxFailures: 3, probeIntervalMs: 10_000 });
    for (let round = 0; round < 3; round++) {
      const slow = [1, 2, 3, 4].map((i) => rejection(c.get("g", `slow${round}-${i}`)));
      expect(str((await c.get("g", "fast")).value)).toBe("ok");
      expect((await Promise.all(slow)).map((e) => e.code)).toEqual([7, 7, 7, 7]);
      expect(str((await c.get("g", "fast")).value)).toBe("ok"); // a reply: the failures start over
    }
    expect([c.isDown, c.counters.downs, c.counters.timeouts]).toEqual([false, 0, 12]);
  });

  test("a closed port: down after maxFailures, calls then reject at once, a probe brings it back when a server starts", async () => {
    const port = closedPort();
    await using c = new CacheClient({ host: "127.0.0.1", port, connections: 1, maxFailures: 3, probeIntervalMs: 20 });
    for (let i = 0; i < 3; i++) {
      expect(c.isDown).toBe(false);
      const e = await rejection(c.get("g", "k"));
      expect(e.code).toBe(ERROR_CODE.PEER_UNAVAILABLE);
      expect(e.message).toContain(`connect to 127.0.0.1:${port} failed`);
    }
    expect(c.isDown).toBe(true);
    expect(c.counters.downs).toBe(1);
    const calls = c.counters.calls;
    const down = c.get("g", "k");
    const e = await rejection(down);
    expect(e.message).toBe("peer is down");
    expect(c.counters.calls).toBe(calls); // refused before being issued
    let forwardErr = "";
    c.forwardGet(enc.encode("g"), enc.encode("k"), 0, 1, (err) => (forwardErr = err!.message));
    expect(forwardErr).toBe(""); // never synchronously
    await Promise.resolve();
    expect(forwardErr).toBe("peer is down");

    using stub = new StubServer(port);
    stub.store.set("g/k", enc.encode("back"));
    await until(() => !c.isDown);
    expect(stub.calls[0]!.name).toBe("PeerPing");
    expect(str((await c.get("g", "k")).value)).toBe("back");
  });

  test("a peer marked down is probed first after a tenth of probeIntervalMs: a restart is seen well before the interval", async () => {
    const port = closedPort();
    await using c = new CacheClient({ host: "127.0.0.1", port, connections: 1, maxFailures: 1, probeIntervalMs: 4_000 });
    await rejection(c.get("g", "k"));
    expect(c.isDown).toBe(true);
    using stub = new StubServer(port);
    stub.store.set("g/k", enc.encode("back"));
    // With the interval alone the first probe would come after 4 s; it comes after 400 ms.
    await until(() => !c.isDown, 2_500);
    expect(stub.calls.map((call) => call.name)).toEqual(["PeerPing"]);
    expect(str((await c.get("g", "k")).value)).toBe("back");
  });
});

/** A hostile first answer; the stub serves normally from then on. */
const HOSTILE: [string, (seqid: number) => Uint8Array, string][] = [
  ["an oversized frame length", () => new Bytes().i32(0x7fffffff).u8(0x80, 1, 0, 2).bytes(), "frame length 2147483647 exceeds the limit 16384000"],
  ["a negative frame length", () => new Bytes().i32(-5).u8(0x80, 1, 0, 2).bytes(), "invalid frame length"],
  ["text garbage", () => new TextEncoder().encode("HTTP/1.1 400 Bad Request\r\n\r\n"), "frame length 1213486160 exceeds the limit"],
  ["a sane length and garbage", () => new Bytes().i32(12).u8(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12).bytes(), "unrecognised transport"],
  [
    "nesting deeper than maxDepth",
    (seqid) => {
      const b = new Bytes().field(T.STRUCT, 0).field(T.LIST, 9);
      for (let i = 0; i < 100; i++) b.u8(T.LIST).i32(1);
      b.u8(T.I32).i32(0);
      return framed(message(MSG.REPLY, "Get", seqid, b.stop().stop().bytes()));
    },
    "nesting too deep",
  ],
  ["a string length past the frame", (seqid) => framed(message(MSG.REPLY, "Get", seqid, new Bytes().field(T.STRUCT, 0).field(T.STRING, 1).i32(1 << 20).bytes())), "exceeds the frame"],
  ["a seqid not in flight", (seqid) => getReply("Get", seqid + 1, enc.encode("x")), "not in flight"],
  ["another method's name", (seqid) => getReply("Set", seqid, enc.encode("x")), "name does not match"],
  ["bytes after the message", (seqid) => framed(message(MSG.REPLY, "Get", seqid, new Bytes().field(T.STRUCT, 0).stop().stop().u8(7).bytes())), "bytes left"],
  ["an unframed (buffered) reply", (seqid) => message(MSG.REPLY, "Get", seqid, new Bytes().field(T.STRUCT, 0).stop().stop().bytes()), "not in framed"],
  ["a CALL instead of a reply", (seqid) => framed(message(MSG.CALL, "Get", seqid, new Bytes().stop().bytes())), "unexpected message type"],
  // (what a node answers input it cannot tie to a call: said as it is, not as "not in flight")
  ["an exception for no call", () => appExceptionReply("", 0, 7, "frame length 3000000 exceeds the limit 2097152"), "server exception PROTOCOL_ERROR (7) for no call in flight (seqid 0): frame length 3000000 exceeds the limit 2097152"],
];

describe("hostile servers", () => {
  test.each(HOSTILE)("%s → PEER_UNAVAILABLE, the connection is dropped, the client reconnects and works", async (_, bytes, why) => {
    using stub = new StubServer();
    stub.store.set("g/k", enc.encode("good"));
    stub.handler = (call, s) => {
      s.handler = serve;
      return bytes(call.seqid);
    };
    const heard: string[] = [];
    await using c = new CacheClient({ host: "127.0.0.1", port: stub.port, connections: 1, onProtocolError: (reason) => heard.push(reason) });
    const e = await rejection(c.get("g", "k"));
    expect(e.code).toBe(ERROR_CODE.PEER_UNAVAILABLE);
    expect(e.message).toContain("malformed reply");
    expect(e.message).toContain(why);
    expect(str((await c.get("g", "k")).value)).toBe("good");
    expect(stub.connections).toBe(2);
    expect(c.counters.reconnects).toBe(1);
    // Counted and told (a node logs its peer clients' at ERROR: never expected of a node).
    expect(c.counters.protocolErrors).toBe(1);
    expect(heard).toHaveLength(1);
    expect(heard[0]).toContain(why);
  });

  test("a GetMulti reply with more entries than keys asked is a malformed reply, refused before its entries are built (review: 3 MB of them cost 150 MB)", async () => {
    using stub = new StubServer();
    stub.store.set("g/k", enc.encode("good"));
    /** flood answers the next call with 1,000 entries, then serves as usual. */
    const flood = (call: StubCall, s: StubServer) => {
      s.handler = serve;
      const entries: [string, Uint8Array][] = [];
      for (let i = 0; i < 1000; i++) entries.push([`extra${i}`, enc.encode("x")]);
      return multiReply(call.name, call.seqid, entries);
    };
    await using c = new CacheClient({ host: "127.0.0.1", port: stub.port, connections: 1 });
    for (const peer of [false, true]) {
      stub.handler = flood;
      const e = await rejection(peer ? c.peerGetMulti("g", ["k"]) : c.getMulti("g", ["k"]));
      expect(e.code).toBe(ERROR_CODE.PEER_UNAVAILABLE);
      expect(e.message).toContain("GetMulti reply holds 1000 entries for 1 keys asked");
    }
    // As many entries as keys (duplicates asked for answer once) is a reply as before.
    const got = await c.getMulti("g", ["k", "k", "absent"]);
    expect([...got.keys()]).toEqual(["k"]);
    expect(str(got.get("k")!)).toBe("good");
    expect(c.counters.protocolErrors).toBe(2);
  });

  test("a value over maxValueBytes fails that call with VALUE_TOO_LARGE and keeps the connection", async () => {
    using stub = new StubServer();
    stub.store.set("g/big", new Uint8Array(2000));
    stub.store.set("g/small", enc.encode("ok"));
    await using c = new CacheClient({ host: "127.0.0.1", port: stub.port, connections: 1, limits: { maxValueBytes: 1000 } });
    const e = await rejection(c.get("g", "big"));
    expect(e.code).toBe(ERROR_CODE.VALUE_TOO_LARGE);
    expect(str((await c.get("g", "small")).value)).toBe("ok");
    expect(stub.connections).toBe(1);
  });

  test("a connection gives back the output buffer a big call grew once it is sent", async () => {
    using stub = new StubServer();
    await using c = new CacheClient({ host: "127.0.0.1", port: stub.port, connections: 1 });
    await c.set("g", "big", new Uint8Array(4 * 1024 * 1024).fill(1));
    expect(stub.store.get("g/big")?.length).toBe(4 * 1024 * 1024);
    expect(c[TEST_DOOR].connections[0]!.calls.out.buffer.length).toBeLessThanOrEqual(1024 * 1024);
  });

  test("a call over maxFrameBytes fails with VALUE_TOO_LARGE and none of it is sent", async () => {
    using stub = new StubServer();
    await using c = new CacheClient({ host: "127.0.0.1", port: stub.port, connections: 1, limits: { maxFrameBytes: 1000 } });
    const e = await rejection(c.set("g", "big", new Uint8Array(2000)));
    expect(e.code).toBe(ERROR_CODE.VALUE_TOO_LARGE);
    await c.set("g", "small", enc.encode("ok"));
    expect(str((await c.get("g", "small")).value)).toBe("ok");
    expect(stub.calls.map((call) => call.name)).toEqual(["Set", "Get"]); // the big Set never reached the server
    expect(stub.store.has("g/big")).toBe(false);
    expect([stub.connections, c.counters.reconnects]).toEqual([1, 0]);
  });

  test("a frame split across many packets is reassembled", async () => {
    using stub = new StubServer();
    stub.handler = (call, s) => {
      const bytes = getReply(call.name, call.seqid, new Uint8Array(3000).fill(9), 5);
      const sock = [...s.sockets][0]!;
      (async () => {
        for (let i = 0; i < bytes.length; i += 700) {
          sock.write(bytes.subarray(i, i + 700));
          await Bun.sleep(1);
        }
      })();
      return null;
    };
    await using c = new CacheClient({ host: "127.0.0.1", port: stub.port, connections: 1 });
    const r = await c.get("g", "k");
    expect(r.value).toEqual(new Uint8Array(3000).fill(9));
    expect(r.ttlRemainingMs).toBe(5);
  });
});

describe("close", () => {
  test("close fails pending calls with 'client closed', later calls too, and is idempotent", async () => {
    const silent = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    try {
      const c = new CacheClient({ host: "127.0.0.1", port: silent.port, timeoutMs: 10_000 });
      const pending = [c.get("g", "a"), c.set("g", "b", "v"), c.ping()];
      const forwarded = new Promise<string>((r) => c.forwardGet(enc.encode("g"), enc.encode("k"), 0, 1, (err) => r(err!.message)));
      await c.close();
      for (const p of pending) expect((await rejection(p)).message).toBe("client closed");
      expect(await forwarded).toBe("client closed");
      expect((await rejection(c.get("g", "a"))).message).toBe("client closed");
      await c.close();
    } finally {
      silent.stop(true);
    }
  });

  test("options are validated", () => {
    expect(() => new CacheClient({ host: "h", port: 1, connections: 0 })).toThrow(RangeError);
    expect(() => new CacheClient({ host: "h", port: 1, timeoutMs: 1.5 })).toThrow(RangeError);
    expect(() => new CacheClient({ host: "h", port: 1, limits: { maxDepth: 1 } })).toThrow(RangeError);
  });
});

describe("picking a connection", () => {
  test("calls go around a connection held up by a slow call (the node serves each connection in order)", async () => {
    // Round-robin put every other call behind a Get whose load took its time: hits waited for it.
    let release: (() => void) | undefined;
    await using node = CacheNode.start({ port: 0, logLevel: "silent", groups: [{ name: "g", ttlMs: 0, admission: "always" }] }, {
      logger: new LogSink().logger,
      loaders: { g: async (key) => (key === "cold" ? await new Promise<void>((r) => (release = r)) : undefined, `row ${key}`) },
    });
    await using c = new CacheClient({ host: "127.0.0.1", port: node.port, connections: 2, timeoutMs: 5000 });
    await c.set("g", "hot", "h");
    const order: string[] = [];
    const cold = c.get("g", "cold").then(() => order.push("cold"));
    await until(() => release !== undefined);
    for (let i = 0; i < 6; i++) { // one after another: the connection behind the load has 1 call waiting, the other none
      await c.get("g", "hot");
      order.push(`hot${i}`);
    }
    release!();
    await cold;
    expect(order).toEqual(["hot0", "hot1", "hot2", "hot3", "hot4", "hot5", "cold"]);
  });
});


describe("addresses in error texts", () => {
  test.skipIf(!IPV6)("(needs an IPv6 loopback) an IPv6 host is written in brackets, as --peers takes it (review: 'connect to ::1:8001 failed')", async () => {
    const closed = Bun.listen({ hostname: "::1", port: 0, socket: { data() {} } });
    const port = closed.port;
    closed.stop(true);
    const heard: string[] = [];
    await using refused = new CacheClient({ host: "::1", port, connections: 1, maxFailures: 1, probeIntervalMs: 10_000, onHealth: (state, reason) => heard.push(`${state}: ${reason}`) });
    expect((await rejection(refused.get("g", "k"))).message).toStartWith(`connect to [::1]:${port} failed`);
    expect(heard).toEqual([expect.stringMatching(new RegExp(`^down: connect to \\[::1\\]:${port} failed`))]);

    const silent = Bun.listen({ hostname: "::1", port: 0, socket: { data() {} } });
    try {
      await using c = new CacheClient({ host: "::1", port: silent.port, timeoutMs: 50, maxFailures: 1, probeIntervalMs: 10_000, onHealth: (state, reason) => heard.push(`${state}: ${reason}`) });
      expect((await rejection(c.get("g", "k"))).message).toBe(`timeout calling [::1]:${silent.port}`);
      await until(() => heard.length === 2);
      expect(heard[1]).toBe(`down: calls to [::1]:${silent.port} timed out`);
    } finally {
      silent.stop(true);
    }
  });
});
