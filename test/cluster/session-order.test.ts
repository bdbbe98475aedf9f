/**
 * Each connection's own calls, pipelined through a two-node cluster, must be answered as if they
 * ran one after another: the reads a connection makes of its keys see its earlier writes, however
 * the node serves them (runs, mirror, forwarding, Gets fetched ahead past Sets, a connection that
 * waits while more of its input arrives). Every connection here has keys no other connection
 * touches, so the right answer to each call follows from that connection's calls alone: a model
 * per connection predicts every reply byte for byte (value, stored, deleted or not, NOT_FOUND).
 * Batches of random length are split across writes at random points, to both nodes.
 */
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { startMembers } from "../support/cluster-members.ts";
import { RawSocket, deleteCall, getCall, setCall } from "../server/support.ts";
import { Prng } from "../support/prng.ts";
import { T, concat } from "../protocol/wire-builder.ts";
import { field, outcome, readReplies } from "../server/wire-reader.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((x) => x.close()));
});

const utf8 = new TextEncoder();



/** describeReply turns a reply into the text the model predicts. */
function describeReply(r: ReturnType<typeof readReplies>["replies"][number]): string {
  const o = outcome(r);
  if (o.kind === "cacheError") return `${r.name} error ${o.code}`;
  if (o.kind !== "success") return `${r.name} ${o.kind}`;
  if (r.name === "Get") return `Get ${new TextDecoder().decode(field(o.value, 1, T.STRING) as Uint8Array)}`;
  return `${r.name} ${field(o.value, 1, T.BOOL) === true}`;
}

/** session drives one connection to `port` with keys `prefix*` for `rounds` batches; returns mismatches. */
async function session(port: number, prefix: string, seed: number, rounds: number): Promise<string[]> {
  const prng = new Prng(seed);
  const next = () => prng.next();
  const model = new Map<string, string>();
  const raw = await RawSocket.connect(port);
  const problems: string[] = [];
  let seqid = 0;
  let received = 0;
  for (let round = 0; round < rounds; round++) {
    const calls: Uint8Array[] = [];
    const want: string[] = [];
    const depth = 1 + Math.floor(next() * 24);
    for (let i = 0; i < depth; i++) {
      const key = `${prefix}${Math.floor(next() * 12)}`;
      const roll = next();
      seqid++;
      if (roll < 0.55) {
        calls.push(getCall(seqid, key));
        const v = model.get(key);
        want.push(v === undefined ? "Get error 1" : `Get ${v}`);
      } else if (roll < 0.9) {
        const v = `${key}@${seqid}:${"x".repeat(Math.floor(next() * 300))}`;
        calls.push(setCall(seqid, key, utf8.encode(v)));
        model.set(key, v);
        want.push("Set true");
      } else {
        calls.push(deleteCall(seqid, key));
        want.push(`Delete ${model.delete(key)}`);
      }
    }
    // One write, or two split at a random byte (the second may land while the connection waits).
    const bytes = concat(...calls);
    if (next() < 0.5) raw.write(bytes);
    else {
      const cut = 1 + Math.floor(next() * (bytes.length - 1));
      raw.write(bytes.subarray(0, cut));
      await Bun.sleep(0);
      raw.write(bytes.subarray(cut));
    }
    await raw.waitFor(() => raw.frames().length === received + depth, `round ${round} replies`, 10_000);
    received += depth;
    const { replies } = readReplies(raw.received, "framed");
    const got = replies.slice(received - depth).map(describeReply);
    for (let i = 0; i < depth; i++) {
      if (got[i] !== want[i]) problems.push(`${prefix} round ${round} call ${i}: want ${want[i]}, got ${got[i]}`);
    }
  }
  raw.close();
  return problems;
}

describe("a connection's own calls through a cluster", () => {
  test("are answered in its order, reads seeing its writes, on both nodes under concurrent load", async () => {
    const { nodes } = startMembers(2, open, { peerTimeoutMs: 5000 });
    const sessions = Array.from({ length: 12 }, (_, i) => session(nodes[i % 2]!.port, `c${i}-`, 1000 + i, 40));
    const problems = (await Promise.all(sessions)).flat();
    expect(problems.slice(0, 10)).toEqual([]);
    // The paths under test ran: forwards, Gets fetched ahead, and mirror hits.
    const counters = nodes.map((n) => n.cluster!.counters);
    expect(counters.reduce((n, c) => n + c.forwarded, 0)).toBeGreaterThan(0);
    expect(counters.reduce((n, c) => n + c.prefetchesUsed, 0)).toBeGreaterThan(0);
    expect(counters.reduce((n, c) => n + c.mirrorHits, 0)).toBeGreaterThan(0);
  }, 60_000);
});
