/**
 * Pipelined batches are warmed before they are served (call-runs.ts: peekCalls + warmKeys), and only
 * whole frames from a frame boundary (the server counts the Gets it warmed). Whatever a batch holds — Gets across several groups, an unknown group, absent keys, Sets and
 * Deletes of the keys being read, a chunk that starts in the middle of a frame — every reply must
 * be exactly what serving the requests one by one gives.
 */
import { expect, test, setDefaultTimeout } from "bun:test";
import { DEFAULT_LIMITS } from "../../src/protocol/limits.ts";
import { REPLY_CACHE_ERROR, REPLY_OK, ReplyReader } from "../../src/protocol/reply-reader.ts";
import { METHOD_DELETE, METHOD_GET, METHOD_SET } from "../../src/protocol/request.ts";
import { ERROR_CODE } from "../../src/protocol/errors.ts";
import { Bytes, MSG, T, framed, message } from "../protocol/wire-builder.ts";
import { RawSocket, getCall, setCall, startNode } from "./support.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const utf8 = new TextEncoder();
const text = (b: Uint8Array, start: number, len: number) => new TextDecoder().decode(b.subarray(start, start + len));

function deleteCall(seqid: number, key: string, group: string): Uint8Array {
  const body = new Bytes().field(T.STRUCT, 1).field(T.STRING, 1).str(group).field(T.STRING, 2).str(key).stop().stop().bytes();
  return framed(message(MSG.CALL, "Delete", seqid, body));
}

function concatAll(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((at, p) => (out.set(p, at), at + p.length), 0);
  return out;
}

type Call = { bytes: Uint8Array; method: number; expect: string };

test("a pipelined batch across groups, with writes and misses among the Gets, is answered exactly in order", async () => {
  await using node = startNode({ groups: [{ name: "a", memory: 8 * 1024 * 1024, ttlMs: 0 }, { name: "b", memory: 8 * 1024 * 1024, ttlMs: 0 }] });
  const setup = await RawSocket.connect(node.port);
  const seed: Uint8Array[] = [];
  for (let i = 0; i < 50; i++) {
    seed.push(setCall(i, `k${i}`, utf8.encode(`a-value-${i}`), "a"), setCall(100 + i, `k${i}`, utf8.encode(`b-value-${i}`.repeat(40)), "b"));
  }
  setup.write(concatAll(seed));
  await setup.waitFor(() => setup.frames().length === 100, "the seed sets");
  setup.close();

  // The batch, and what each reply must say (the model: serve in order).
  const calls: Call[] = [];
  const model = new Map<string, string>();
  for (let i = 0; i < 50; i++) {
    model.set(`a/k${i}`, `a-value-${i}`);
    model.set(`b/k${i}`, `b-value-${i}`.repeat(40));
  }
  let seqid = 1000;
  const get = (group: string, key: string) => {
    const v = model.get(`${group}/${key}`);
    const expectation = group === "zz" ? "error UNKNOWN_GROUP" : v === undefined ? "error NOT_FOUND" : `value ${v}`;
    calls.push({ bytes: getCall(seqid++, key, group), method: METHOD_GET, expect: expectation });
  };
  for (let i = 0; i < 40; i++) {
    get(i % 3 === 0 ? "b" : "a", `k${i}`);
    if (i % 5 === 0) get("zz", `k${i}`);
    if (i % 7 === 0) get("a", `absent${i}`);
    if (i % 6 === 0) {
      const v = `rewritten-${i}`;
      calls.push({ bytes: setCall(seqid++, `k${i + 1}`, utf8.encode(v), "a"), method: METHOD_SET, expect: "success true" });
      model.set(`a/k${i + 1}`, v);
    }
    if (i % 8 === 0) {
      const present = model.has(`b/k${i + 2}`);
      calls.push({ bytes: deleteCall(seqid++, `k${i + 2}`, "b"), method: METHOD_DELETE, expect: `success ${present}` });
      model.delete(`b/k${i + 2}`);
    }
  }
  const all = concatAll(calls.map((c) => c.bytes));

  const raw = await RawSocket.connect(node.port);
  // First the whole batch in one write (one chunk on loopback). Runs warm the Gets and Sets that
  // follow each other (a Delete ends such a stretch), a stretch of two or more at a time, each
  // once; those of the unknown group "zz" are not warmed, and neither is the connection's first
  // request (the general path reads it: it tells the transport).
  const base = node.server.counters.warmedRequests; // what the seed's Sets warmed
  const warmedFrom = (first: number) => {
    let warmed = base;
    for (let i = first; i < calls.length; ) {
      let j = i;
      while (j < calls.length && calls[j]!.method !== METHOD_DELETE) j++;
      const stretch = calls.slice(i, j);
      if (stretch.length >= 2) warmed += stretch.filter((c) => !c.expect.includes("UNKNOWN_GROUP")).length;
      i = Math.max(j, i + 1);
    }
    return warmed - base;
  };
  expect(calls.filter((c) => c.method !== METHOD_DELETE).length).toBeLessThanOrEqual(64); // every stretch fits one listing
  expect(calls[0]!.method).toBe(METHOD_GET);
  raw.write(all);
  await raw.waitFor(() => raw.frames().length === calls.length, "the first batch's replies");
  expect(node.server.counters.warmedRequests - base).toBe(warmedFrom(1));
  // Then the same batch split after one frame and 7 bytes: the first chunk holds one whole Get (a
  // lone Get is not warmed); the second starts in the middle of a frame, so it must not be peeked
  // as if it started at one: the general path completes that frame, and the frames after it are
  // warmed. The replies are all right either way.
  const cut = calls[0]!.bytes.length + 7;
  raw.write(all.subarray(0, cut));
  await raw.waitFor(() => raw.frames().length === calls.length + 1, "the first frame's reply");
  expect(node.server.counters.warmedRequests - base).toBe(warmedFrom(1));
  raw.write(all.subarray(cut));
  await raw.waitFor(() => raw.frames().length === 2 * calls.length, "the second batch's replies");
  expect(node.server.counters.warmedRequests - base).toBe(warmedFrom(1) + warmedFrom(2));

  const reader = new ReplyReader(DEFAULT_LIMITS);
  const frames = raw.frames();
  const answers = frames.map((frame, i) => {
    const call = calls[i % calls.length]!;
    reader.begin(frame, 0, frame.length);
    reader.readResult(call.method);
    if (reader.outcome === REPLY_CACHE_ERROR) {
      const code = Object.entries(ERROR_CODE).find(([, n]) => n === reader.errorCode)![0];
      return `error ${code}`;
    }
    expect(reader.outcome).toBe(REPLY_OK);
    return call.method === METHOD_GET ? `value ${text(reader.buffer, reader.valueStart, reader.valueLength)}` : `success ${reader.success}`;
  });
  // The second pass reads the state the first one left: its writes are repeated, so Sets answer
  // true again and Deletes of keys the first pass deleted answer false.
  const second = calls.map((c) => (c.method === METHOD_DELETE ? "success false" : c.expect));
  expect(answers).toEqual([...calls.map((c) => c.expect), ...second]);
  expect(answers.filter((a) => a.startsWith("value")).length).toBeGreaterThan(50);
  raw.close();
});
