/**
 * The soak's hostile clients, on raw sockets to 127.0.0.1 (Bun.connect):
 *
 * - garbage: connect, write 16 B–4 KiB of random bytes, wait for the node to close (or 300 ms),
 *   close, repeat;
 * - oversized: connect, announce a frame of 256 MiB–2 GiB (framed, THeader, or a header size past
 *   its frame), send a few bytes of it, and wait for the node to close the connection;
 * - slowloris: a valid framed Get written one byte per `dripMs` (1 s), forever: the node must hold
 *   the partial frame without spinning or growing;
 * - never-reader: stops reading (`pause()`), then pipelines Gets of a 256 KiB value until the
 *   socket's send buffer pushes back: the node's per-connection output bound must hold.
 *
 * Each counts its actions in a KindStats (`ops`), and what the node did (`counts`). None of them
 * fails the soak by itself: the checks are that the node survives, serves the well-behaved
 * clients without error and stays within its memory bound while they run.
 */
import type { Socket } from "bun";
import { Prng } from "../../test/support/prng.ts";
import { Bytes, MSG, T, framed, message } from "../../test/protocol/wire-builder.ts";
import type { KindStats, Stop } from "./clients.ts";

const running = (s: Stop): boolean => !s.stopped && Date.now() < s.until;
const sleep = (ms: number): Promise<void> => new Promise((ok) => setTimeout(ok, ms));

/** getFrame is a framed strict-binary Get call of `group`/`key`. */
export function getFrame(group: string, key: string, seqid: number): Uint8Array {
  const args = new Bytes().field(T.STRUCT, 1).field(T.STRING, 1).str(group).field(T.STRING, 2).str(key).stop().stop();
  return framed(message(MSG.CALL, "Get", seqid, args.bytes()));
}

interface Conn {
  socket: Socket<undefined>;
  closed: Promise<void>;
  received: number;
}

async function open(port: number, onData?: (n: number) => void): Promise<Conn> {
  let done!: () => void;
  const closed = new Promise<void>((ok) => (done = ok));
  const conn: Conn = { socket: undefined as unknown as Socket<undefined>, closed, received: 0 };
  conn.socket = await Bun.connect({
    hostname: "127.0.0.1",
    port,
    socket: {
      data(_s, chunk) {
        conn.received += chunk.length;
        onData?.(chunk.length);
      },
      close: () => done(),
      end: () => done(),
      error: () => done(),
      connectError: () => done(),
    },
  });
  return conn;
}

/** closedWithin resolves true if the node closes `conn` within `ms`. */
async function closedWithin(conn: Conn, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const r = await Promise.race([conn.closed.then(() => true), new Promise<boolean>((ok) => (timer = setTimeout(() => ok(false), ms)))]);
  clearTimeout(timer);
  return r;
}

export async function garbage(port: number, stats: KindStats, stop: Stop, seed: number): Promise<void> {
  const rng = new Prng(seed);
  while (running(stop)) {
    const conn = await open(port);
    const bytes = new Uint8Array(16 + rng.int(4080));
    for (let i = 0; i < bytes.length; i++) bytes[i] = rng.int(256);
    conn.socket.write(bytes);
    const closedByNode = await closedWithin(conn, 300);
    conn.socket.end();
    await conn.closed;
    stats.ops++;
    stats.count(closedByNode ? "closed by node" : "still open after 300 ms");
    if (conn.received > 0) stats.count("answered");
  }
}

const OVERSIZED: (() => Uint8Array)[] = [
  () => new Bytes().i32(0x7fffffff).u8(0x80, 0x01, 0x00, 0x01).bytes(), // framed, 2 GiB
  () => new Bytes().i32(0x10000000).u8(0x80, 0x01, 0x00, 0x01).i32(3).raw([71, 101, 116]).bytes(), // framed, 256 MiB
  () => new Bytes().i32(0x40000000).u8(0x0f, 0xff, 0, 0).i32(1).i16(0x7fff).bytes(), // THeader, 1 GiB
  () => new Bytes().i32(64).u8(0x0f, 0xff, 0, 0).i32(1).i16(0xffff).raw(new Uint8Array(54)).bytes(), // header size past the frame
  () => new Bytes().u8(0x80, 0x01, 0x00, 0x01).i32(0x7ffffff0).bytes(), // buffered, 2 GiB method name
];

export async function oversized(port: number, stats: KindStats, stop: Stop, seed: number): Promise<void> {
  const rng = new Prng(seed);
  while (running(stop)) {
    const conn = await open(port);
    conn.socket.write(OVERSIZED[rng.int(OVERSIZED.length)]!());
    const closedByNode = await closedWithin(conn, 5_000);
    conn.socket.end();
    await conn.closed;
    stats.ops++;
    stats.count(closedByNode ? "closed by node" : "still open after 5 s");
    await sleep(20);
  }
}

export async function slowloris(port: number, stats: KindStats, stop: Stop, dripMs: number): Promise<void> {
  let replies = 0;
  const conn = await open(port, () => replies++);
  for (let seq = 1; running(stop); seq++) {
    const frame = getFrame("soak", `slow${seq}`, seq);
    let i = 0;
    for (; i < frame.length && running(stop); i++) {
      conn.socket.write(frame.subarray(i, i + 1));
      stats.ops++; // one byte dripped
      await sleep(dripMs);
    }
    if (i === frame.length) stats.count("frames completed");
  }
  stats.count("reply chunks", replies);
  conn.socket.end();
}

export async function neverReader(port: number, stats: KindStats, stop: Stop, group: string, key: string): Promise<void> {
  const conn = await open(port);
  conn.socket.pause(); // the node sees TCP backpressure from now on
  let pushedBack = false;
  for (let seq = 1; running(stop); seq++) {
    const frame = getFrame(group, key, seq);
    const n = conn.socket.write(frame);
    if (n < frame.length) {
      // The kernel buffers are full both ways and the node has stopped reading us: wait it out.
      if (!pushedBack) stats.count("pushed back after requests", seq);
      pushedBack = true;
      while (running(stop)) await sleep(250);
      break;
    }
    stats.ops++;
    if (seq % 64 === 0) await sleep(10);
  }
  stats.count("bytes received before pause", conn.received);
  conn.socket.end();
}
