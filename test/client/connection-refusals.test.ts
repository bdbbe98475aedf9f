/**
 * How a client tells a node's refusal of its connection (over --max-connections: the first request
 * answered OVERLOADED, then the close) from the node's other OVERLOADEDs: by where the answer
 * stands (the connection's first reply, to its Auth or intro PeerPing), not by its text.
 * Review: the text alone decided, so a refusal worded otherwise was not one (the calls while
 * backing off were queued for reconnects, one connection each), and an OVERLOADED "too many
 * connections" a node relays from its owner, after it had answered our Auth, was taken for the
 * node refusing our connection (its idle close then made the client answer calls with that
 * OVERLOADED at once, without asking the node).
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient, TEST_DOOR } from "../../src/client/cache-client.ts";
import { CONN_IDLE } from "../../src/client/dialer.ts";
import { CacheError, ERROR_CODE, TOO_MANY_CONNECTIONS } from "../../src/protocol/errors.ts";
import { METHOD_AUTH, METHOD_PEER_PING } from "../../src/protocol/request.ts";
import { StubServer, boolReply, cacheErrorReply, getReply, pingReply, until } from "./support.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const TOKEN = "s3cret-token-0123456789";
const utf8 = new TextEncoder();

/** FIRST_CALLS: the first call each kind of client sends on a new connection, and how a node takes it. */
const FIRST_CALLS = [
  { name: "Auth (a token)", opts: { authToken: TOKEN }, method: METHOD_AUTH, ok: (seqid: number) => boolReply("Auth", seqid, true) },
  { name: "intro PeerPing (a node's peer client)", opts: { sender: "127.0.0.1:1" }, method: METHOD_PEER_PING, ok: (seqid: number) => pingReply(seqid, "stub:1", 1) },
] as const;

async function failure(p: Promise<unknown>): Promise<CacheError> {
  const e = await p.then(() => undefined, (x: unknown) => x);
  if (!(e instanceof CacheError)) throw new Error(`expected a CacheError, got ${String(e)}`);
  return e;
}

/** endConnection closes the stub's side of connection `conn` after writing `bytes`. */
function endConnection(stub: StubServer, conn: number, bytes?: Uint8Array): void {
  for (const s of stub.sockets) {
    if (s.data.id !== conn) continue;
    if (bytes !== undefined) s.write(bytes);
    s.end();
  }
}

describe("an OVERLOADED answering the first call of a connection, then the close", () => {
  for (const first of FIRST_CALLS) {
    test(`is the node's refusal whatever its words: ${first.name}`, async () => {
      // Another version's words for the refusal, answered to the first call, as a node does.
      using stub = new StubServer();
      const refusedConns = new Set<number>();
      stub.handler = (call, server) => {
        if (refusedConns.has(call.conn)) return null; // (a refused connection is answered once)
        refusedConns.add(call.conn);
        expect(call.method).toBe(first.method);
        endConnection(server, call.conn, cacheErrorReply(call.name, call.seqid, ERROR_CODE.OVERLOADED, "connections: 4 of 4 in use"));
        return null;
      };
      await using client = new CacheClient({ host: "127.0.0.1", port: stub.port, connections: 1, timeoutMs: 2000, maxFailures: 1, ...first.opts });
      const conn = client[TEST_DOOR].connections[0]!;
      const e = await failure(client.get("g", "k"));
      expect([e.code, e.message]).toEqual([ERROR_CODE.OVERLOADED, "connections: 4 of 4 in use"]);
      await until(() => conn.state === CONN_IDLE);
      // Backing off from the refusal: the calls meanwhile are answered with it at once, not each
      // queued for a reconnect the node refuses again.
      expect(conn.refusedNow?.message).toBe("connections: 4 of 4 in use");
      for (let i = 0; i < 3; i++) expect((await failure(client.get("g", "k"))).code).toBe(ERROR_CODE.OVERLOADED);
      expect(stub.connections).toBe(1);
      expect(client.isDown).toBe(false);
    });
  }
});

describe("an OVERLOADED \"too many connections\" after the node answered a reply on the connection", () => {
  // A forwarding node answers our Get with its owner's refusal of ITS connection, which it passes
  // on as it came; later it closes our connection, idle. That is no refusal of ours: the next call
  // reconnects at once and is served.
  const cases = [
    ...FIRST_CALLS.map((f) => ({ name: `after the ${f.name} was answered`, opts: f.opts, answer: f.ok, servedFirst: false })),
    { name: "after a Get was served (no first call)", opts: {}, answer: null, servedFirst: true },
  ];
  for (const c of cases) {
    test(c.name, async () => {
      using stub = new StubServer();
      stub.store.set("g/k", utf8.encode("v"));
      let relayed = false;
      stub.handler = (call) => {
        if (call.method === METHOD_AUTH || call.method === METHOD_PEER_PING) return c.answer!(call.seqid);
        if (call.key === "relayed" && !relayed) {
          relayed = true;
          return cacheErrorReply(call.name, call.seqid, ERROR_CODE.OVERLOADED, TOO_MANY_CONNECTIONS);
        }
        return getReply(call.name, call.seqid, utf8.encode("v"));
      };
      await using client = new CacheClient({ host: "127.0.0.1", port: stub.port, connections: 1, timeoutMs: 2000, ...c.opts });
      const conn = client[TEST_DOOR].connections[0]!;
      if (c.servedFirst) await client.get("g", "k");
      const e = await failure(client.get("g", "relayed"));
      expect([e.code, e.message]).toEqual([ERROR_CODE.OVERLOADED, TOO_MANY_CONNECTIONS]);
      endConnection(stub, 0); // the node's idle close
      await until(() => conn.state === CONN_IDLE);
      expect(conn.refusedNow).toBeNull();
      expect(conn.usable).toBe(true);
      expect(new TextDecoder().decode((await client.get("g", "k")).value)).toBe("v");
      expect(stub.connections).toBe(2);
    });
  }
});
