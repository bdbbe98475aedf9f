/**
 * AdminGate alone, in front of a plain TCP server that answers any bytes with a 32 MB reply (what
 * a huge /metrics or pipelined scrapes amount to), over real sockets on port 0: a client that
 * takes none of it is closed after clientStallMs, and its slot comes back. (With Bun.serve behind
 * it: test/server/admin.test.ts.)
 */
import { expect, test, setDefaultTimeout } from "bun:test";
import type { Socket } from "bun";
import { AdminGate } from "../../src/server/admin-gate.ts";
import { Logger } from "../../src/server/log.ts";
import { waitUntil } from "../support/gates.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const REPLY = new Uint8Array(32 * 1024 * 1024).fill(0x61);

/** bigReplies is a server that writes REPLY for any bytes it gets, as fast as its client takes it. */
function bigReplies() {
  const sent = new Map<Socket<undefined>, number>();
  const push = (s: Socket<undefined>) => {
    let at = sent.get(s) ?? 0;
    while (at < REPLY.length) {
      const n = s.write(REPLY.subarray(at));
      if (n <= 0) break;
      at += n;
    }
    sent.set(s, at);
  };
  const server = Bun.listen<undefined>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      data: (s) => push(s),
      drain: (s) => push(s),
      close: (s) => void sent.delete(s),
    },
  });
  return { server, open: () => sent.size };
}

test("a client that takes nothing of a reply is closed after clientStallMs: the paused server could not be seen closing, and the slot was held for good", async () => {
  const upstream = bigReplies();
  const gate = new AdminGate("127.0.0.1", 0, upstream.server.port, new Logger("silent"), 1, 300);
  try {
    const client = await new Promise<Socket<undefined>>((resolve) => {
      void Bun.connect<undefined>({ hostname: "127.0.0.1", port: gate.port, socket: {
        open: (s) => {
          s.pause(); // reads nothing, ever
          s.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
          resolve(s);
        },
        data() {},
      } });
    });
    await waitUntil(() => gate.stalled === 1, "the client to be closed as stalled", 10_000);
    expect(gate.connections).toBe(0);
    await waitUntil(() => upstream.open() === 0, "the gate's socket to the server to close");
    client.end();
    // The slot is free: another client is let in and gets the whole reply.
    const got = await new Promise<number>((resolve) => {
      let bytes = 0;
      void Bun.connect<undefined>({ hostname: "127.0.0.1", port: gate.port, socket: {
        open: (s) => void s.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        data: (s, d) => {
          bytes += d.length;
          if (bytes >= REPLY.length) {
            s.end();
            resolve(bytes);
          }
        },
      } });
    });
    expect(got).toBe(REPLY.length);
    expect(gate.stalled).toBe(1);
  } finally {
    gate.close();
    upstream.server.stop(true);
  }
}, 30_000);
