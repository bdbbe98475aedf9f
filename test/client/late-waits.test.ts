/**
 * Late waits (CallTimeouts' header): a PeerGet past the timeout waits on for a load while ITS
 * connection answers, judged by the replies on that connection and a liveness PeerPing sent on it;
 * replies on the client's other connection prove nothing about it. StubServer plays a node that
 * answers some connections and not others (a half-open socket, a wedged connection).
 */
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
import { METHOD_PEER_PING } from "../../src/protocol/request.ts";
import { StubServer, getReply, rejection, serve } from "./support.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const enc = new TextEncoder();
const open: { close(): unknown }[] = [];
afterEach(async () => {
  for (const x of open.splice(0).reverse()) await x.close();
});

/** peerClient is a node's client of a peer (write connection first), with a 100 ms timeout. */
function peerClient(stub: StubServer, loadWaitMs: number): CacheClient {
  const c = new CacheClient({ host: "127.0.0.1", port: stub.port, timeoutMs: 100, loadWaitMs, connections: 2, writeConnection: true });
  open.push(c);
  return c;
}

function stubServer(): StubServer {
  const stub = new StubServer();
  open.push(stub);
  stub.store.set("g/k", enc.encode("v"));
  return stub;
}

describe("late waits are judged per connection", () => {
  test("a read connection that stops answering while the write connection answers pings: its PeerGets fail at the timeout, not after loadWaitMs, and a fresh connection takes new ones (review: they all waited loadWaitMs)", async () => {
    const stub = stubServer();
    let dead = -1;
    stub.handler = (c, s) => (c.conn === dead ? null : serve(c, s));
    const client = peerClient(stub, 3_000);
    await client.set("g", "w", "v", undefined, { peer: true }); // opens the write connection
    await client.get("g", "k", { peer: true }); // and the read connection
    dead = stub.calls.at(-1)!.conn;
    const t0 = performance.now();
    const e = await rejection(client.get("g", "k", { peer: true }));
    expect(e.message).toContain("timeout");
    expect(performance.now() - t0).toBeLessThan(1_500); // the timeout and slack, well short of the 3 s load wait
    // The silent connection was replaced: the next read goes out on a new one and is answered.
    expect((await client.get("g", "k", { peer: true })).value).toEqual(enc.encode("v"));
    expect(stub.connections).toBe(3);
    expect(client.isDown).toBe(false);
  });

  test("a late PeerGet on a connection that answers waits for its load though the idle write connection is dead (review: the liveness ping went there, and the load failed at the timeout)", async () => {
    const stub = stubServer();
    let dead = -1;
    stub.handler = (c, s) => {
      if (c.conn === dead) return null;
      if (c.name !== "PeerGet") return serve(c, s);
      setTimeout(() => s.write(c.conn, getReply(c.name, c.seqid, enc.encode("loaded"), 5)), 350); // a load 3.5 timeouts long
      return null;
    };
    const client = peerClient(stub, 2_000);
    await client.set("g", "w", "v", undefined, { peer: true });
    dead = stub.calls.at(-1)!.conn; // the write connection goes silently dead while idle
    expect((await client.get("g", "k", { peer: true })).value).toEqual(enc.encode("loaded"));
    expect(client.counters.timeouts).toBe(0);
    // It was asked on its own connection.
    const read = stub.calls.find((c) => c.name === "PeerGet")!.conn;
    expect(stub.calls.some((c) => c.method === METHOD_PEER_PING && c.conn === read)).toBe(true);
  });

  test("PeerGetMultis the node serves in order (a second one waits behind the first's loads, and so would a ping) wait while the node answers on the other connection", async () => {
    // The stub holds its read connection as a node does: the second PeerGetMulti, and all after it
    // on that connection, are answered only after the first one's 350 ms load.
    const stub = stubServer();
    let held: (() => void)[] | null = null;
    stub.handler = (c, s) => {
      if (held !== null && c.name !== "PeerSet" && c.conn === stub.calls.find((x) => x.name === "PeerGetMulti")!.conn) {
        held.push(() => s.write(c.conn, serve(c, s)));
        return null;
      }
      if (c.name !== "PeerGetMulti") return serve(c, s);
      held = [];
      setTimeout(() => {
        s.write(c.conn, serve(c, s));
        for (const write of held!.splice(0)) write();
        held = null;
      }, 350);
      return null;
    };
    const client = peerClient(stub, 2_000);
    await client.set("g", "w", "v", undefined, { peer: true });
    const [a, b] = await Promise.all([client.peerGetMulti("g", ["k"]), client.peerGetMulti("g", ["k", "x"])]);
    expect([...a.keys, ...b.keys].map((k) => new TextDecoder().decode(k))).toEqual(["k", "k"]);
    expect(client.counters.timeouts).toBe(0);
  });
});
