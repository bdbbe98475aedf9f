/**
 * How a write's failure reaches the caller: a Set, Clear or SetMulti the server answers
 * `success: false` with no error (a seed server's way to fail; ours never answers so) rejects
 * PEER_UNAVAILABLE saying so, where it resolved as if done; Delete's false stays its answer
 * (not found). And what our node with --seed-errors answers for each write it refuses: an
 * application exception naming the code, which the client reads back as that CacheError.
 */
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
import { ERROR_CODE } from "../../src/protocol/errors.ts";
import { METHOD_CLEAR, METHOD_SET, METHOD_SET_MULTI, baseMethod } from "../../src/protocol/request.ts";
import { startNode } from "../server/support.ts";
import { freePorts } from "../support/node-process.ts";
import { Bytes, MSG, T, framed, message } from "../protocol/wire-builder.ts";
import { StubServer, boolReply, closedPort, rejection, serve } from "./support.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const open: { close(): unknown }[] = [];
afterEach(async () => {
  for (const x of open.splice(0)) await x.close();
});

function client(port: number): CacheClient {
  const c = new CacheClient({ host: "127.0.0.1", port, connections: 1, timeoutMs: 5000 });
  open.push(c);
  return c;
}

const WRITES = new Set([METHOD_SET, METHOD_CLEAR, METHOD_SET_MULTI]);

/** failingWrites is a stub that answers every Set, Clear and SetMulti (and Peer form) with `reply`, the rest as `serve` does. */
function failingWrites(reply: (name: string, seqid: number) => Uint8Array): StubServer {
  const s = new StubServer();
  open.push({ close: () => s.close() });
  s.handler = (call, stub) => (WRITES.has(baseMethod(call.method)) ? reply(call.name, call.seqid) : serve(call, stub));
  return s;
}

/** emptyResponse is a REPLY whose response struct is empty: `success` unset, which Thrift reads as false. */
const emptyResponse = (name: string, seqid: number): Uint8Array =>
  framed(message(MSG.REPLY, name, seqid, new Bytes().field(T.STRUCT, 0).stop().stop().bytes()));

describe("a write answered success=false with no error", () => {
  const writes: [string, (c: CacheClient) => Promise<unknown>][] = [
    ["Set", (c) => c.set("g", "k", "v")],
    ["Clear", (c) => c.clear("g")],
    ["SetMulti", (c) => c.setMulti("g", [["a", "1"], ["b", "2"]])],
    ["PeerSet", (c) => c.set("g", "k", "v", 1000, { peer: true })],
    ["PeerClear", (c) => c.clear("g", { peer: true })],
    ["PeerSetMulti", (c) => c.setMulti("g", [["a", "1"]], 1000, { peer: true })],
  ];
  const answers: [string, (name: string, seqid: number) => Uint8Array][] = [
    ["success false", (name, seqid) => boolReply(name, seqid, false)],
    ["success unset", emptyResponse],
  ];
  for (const [how, answer] of answers) {
    test.each(writes)(`%s (${how}) rejects PEER_UNAVAILABLE saying so (it resolved as done); the connection serves on`, async (name, call) => {
      const s = failingWrites(answer);
      const c = client(s.port);
      const e = await rejection(call(c));
      expect({ name: e.name, code: e.code, message: e.message }).toEqual({
        name: "CacheError", code: ERROR_CODE.PEER_UNAVAILABLE, message: `${name} failed: the server answered success=false, with no error`,
      });
      expect(c.counters.errors).toBe(1);
      expect(c.counters.protocolErrors).toBe(0);
      // The reply was well-formed: the same connection answers the next call.
      expect(await c.delete("g", "k")).toBe(false);
      expect(s.connections).toBe(1);
      expect(c.isDown).toBe(false);
    });
  }

  test("success true still resolves; Delete's false is its answer (not found), not a failure", async () => {
    const s = new StubServer();
    open.push({ close: () => s.close() });
    const c = client(s.port);
    await c.set("g", "k", "v");
    await c.setMulti("g", [["a", "1"]]);
    expect(await c.delete("g", "k")).toBe(true);
    expect(await c.delete("g", "k")).toBe(false);
    expect(await c.delete("g", "k", { peer: true })).toBe(false);
    await c.clear("g");
    expect(c.counters.errors).toBe(0);
  });
});

describe("our node with --seed-errors", () => {
  test("answers each write it refuses with the code (an application exception, never success=false): the client rejects with that CacheError", async () => {
    await using node = startNode({ seedErrors: true, maxItemSize: 64 * 1024 });
    const c = client(node.port);
    const cases: [string, () => Promise<unknown>, number, string][] = [
      ["Set of an unknown group", () => c.set("nogroup", "k", "v"), ERROR_CODE.UNKNOWN_GROUP, "unknown group 'nogroup'"],
      ["Set over --max-item-size", () => c.set("default", "k", new Uint8Array(64 * 1024 + 1)), ERROR_CODE.VALUE_TOO_LARGE, ""],
      ["Set the store refuses (no room with its key)", () => c.set("default", "fits", new Uint8Array(64 * 1024)), ERROR_CODE.VALUE_TOO_LARGE, ""],
      ["Set with a negative TTL", () => c.set("default", "k", "v", -1000), ERROR_CODE.INVALID_ARGUMENT, ""],
      ["SetMulti of an unknown group", () => c.setMulti("nogroup", [["k", "v"]]), ERROR_CODE.UNKNOWN_GROUP, "unknown group 'nogroup'"],
      ["SetMulti with an entry the store refuses", () => c.setMulti("default", [["b1", "1"], ["fits", new Uint8Array(64 * 1024)]]), ERROR_CODE.VALUE_TOO_LARGE, ""],
      ["Clear of an unknown group", () => c.clear("nogroup"), ERROR_CODE.UNKNOWN_GROUP, "unknown group 'nogroup'"],
      ["Delete of an unknown group", () => c.delete("nogroup", "k"), ERROR_CODE.UNKNOWN_GROUP, "unknown group 'nogroup'"],
    ];
    for (const [what, call, code, message] of cases) {
      const e = await rejection(call());
      expect({ what, name: e.name, code: e.code }).toEqual({ what, name: "CacheError", code });
      if (message !== "") expect(e.message).toBe(message);
      expect(e.message).not.toContain("success=false");
    }
    // The entry the store could take was stored; a Delete of a key not there is false.
    expect(new TextDecoder().decode((await c.get("default", "b1")).value)).toBe("1");
    expect(await c.delete("default", "absent")).toBe(false);
  });

  test("a Clear some member did not get is PEER_UNAVAILABLE", async () => {
    const [port] = freePorts(1) as [number];
    await using node = startNode({ seedErrors: true, host: "127.0.0.1", port, peers: [`127.0.0.1:${port}`, `127.0.0.1:${closedPort()}`] });
    const c = client(node.port);
    await expect(c.clear("default")).rejects.toMatchObject({ name: "CacheError", code: ERROR_CODE.PEER_UNAVAILABLE, message: "cleared here, but 1 of 1 peers could not be reached" });
  });
});
