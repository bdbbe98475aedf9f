// --max-buffered's totals (BufferCap: bufferedBytes, and queuedBytes, what the connections queued
// for the turn's end hold) against the connections' own counts, over seeded random turns that mix
// every path that changes them: input in one chunk or two in a turn, Auth or not, clients that do
// not read, connections evicted at --max-connections (while queued in the turn's list, with
// replies in the shared buffer), closed by their client or by the cap. checkInvariants after every
// step and after every connection served. White-box: input is handed to the data handler
// directly, so that several connections' input falls in one turn.
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { RawSocket, getCall, setCall, startNode } from "./support.ts";
import { Bytes, MSG, T, concat, framed, message } from "../protocol/wire-builder.ts";
import { Prng, testSeed } from "../support/prng.ts";
import type { Connection } from "../../src/server/connection.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const TOKEN = "s3cret-token-0123456789";
const KIB = 1024;

function authCall(seqid: number, token: string): Uint8Array {
  return framed(message(MSG.CALL, "Auth", seqid, new Bytes().field(T.STRUCT, 1).field(T.STRING, 1).str(token).stop().stop().bytes()));
}

const turn = () => new Promise<void>((r) => setImmediate(r)); // (after the turn's end queued before it)

describe("--max-buffered's totals stay the sums of the connections' counts", () => {
  test("seeded random turns with evictions, closes and the cap", async () => {
    const seed = testSeed();
    await using node = startNode({
      authToken: TOKEN, maxConnections: 6, maxBufferedBytes: 1024 * KIB, maxOutputBytes: 512 * KIB, maxItemSize: 300 * KIB, maxFrameSize: 400 * KIB,
    });
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const server = node.server as any;
    const check = (): void => {
      server.cap.checkInvariants();
      expect(server.cap.queuedBytes).toBeGreaterThanOrEqual(0);
    };
    const broken: string[] = []; // (thrown in the server, a fault would close the connection served)
    const serveOne = server.process.bind(server);
    server.process = (conn: unknown) => {
      serveOne(conn);
      try {
        check();
      } catch (err) {
        broken.push(String(err));
      }
    };
    const writer = await RawSocket.connect(node.port);
    writer.write(concat(authCall(1, TOKEN), setCall(2, "v", new Uint8Array(128 * KIB).fill(3))));
    await writer.waitFor(() => writer.frames().length === 2, "the writer's replies");
    const raws: RawSocket[] = [writer];
    const writerConn = [...(server.connections as Set<Connection>)][0]; // (not sent Gets: this process reads what it is sent)
    const live = (): Connection[] => [...(server.connections as Set<Connection>)].filter((c) => c.open && !c.closing && c !== writerConn);
    let seqid = 10;
    const rng = new Prng(seed);
    try {
      for (let step = 0; step < 300; step++) {
        const op = rng.int(12);
        const conns = live();
        const conn = conns[rng.int(conns.length)];
        if (op === 0 || conns.length < 2) {
          const before = server.counters.connectionsTotal;
          raws.push(await RawSocket.connect(node.port, { read: rng.int(4) === 0 }));
          while (server.counters.connectionsTotal === before) await Bun.sleep(1);
        } else if (op <= 5 && conn !== undefined) {
          // Input: Gets of 128 KiB (whole, or a frame split over two chunks of the turn) when
          // authenticated; else part of an Auth, all of it, or a wrong token.
          let bytes: Uint8Array;
          if (conn.authed) bytes = concat(...Array.from({ length: 1 + rng.int(6) }, () => getCall(seqid++, "v")));
          else bytes = [authCall(1, TOKEN).subarray(0, 10), authCall(1, TOKEN), authCall(1, "wrong-token-0123456789")][rng.int(3)]!;
          const cut = rng.int(2) === 0 ? bytes.length : 1 + rng.int(bytes.length - 1); // (no empty chunk: Bun sends none)
          server.onData(conn, bytes.subarray(0, cut));
          if (cut < bytes.length) server.onData(conn, bytes.subarray(cut));
        } else if (op === 6) {
          server.lifecycle.evictUnauthenticated();
        } else if (op === 7 && raws.length > 1) {
          const raw = raws.splice(1 + rng.int(raws.length - 1), 1)[0]!;
          raw.resume(); // (a connection held for a client that does not read sees its FIN once it reads)
          raw.close();
        } else {
          await turn();
        }
        check();
      }
      await turn();
      check();
      for (const r of raws) {
        r.resume();
        r.close();
      }
      for (let i = 0; i < 20; i++) await Bun.sleep(5);
      check();
      // (What is still open, e.g. held for a client that half-closed while not reading, is cut: each close counts it out.)
      for (const c of [...(server.connections as Set<Connection>)]) c.socket.terminate();
      expect(server.connections.size).toBe(0);
      expect([server.counters.bufferedBytes, server.cap.queuedBytes]).toEqual([0, 0]);
      expect(broken).toEqual([]);
      expect(server.counters.internalErrors).toBe(0);
    } catch (e) {
      console.error(`buffer-cap drift test failed: replay with TEST_SEED=${seed}`);
      for (const r of raws) r.close();
      throw e;
    }
  });
});
