// A connection's input is served at the end of the event loop's turn, after every socket event of
// the poll (cache-server.ts `onTurnEnd`). Between its data event and that point the connection is
// `queued`: whatever else happens to it in the same turn (more data, the client's FIN, the node
// starting to close) must not lose, reorder or skip what it sent. White-box: the events are made
// to fall in one turn by calling the server's handlers directly on a real connection.
import { describe, expect, test } from "bun:test";
import { RawSocket, getCall, setCall, startNode } from "./support.ts";
import { T, concat } from "../protocol/wire-builder.ts";
import { field, outcome, readReplies } from "./wire-reader.ts";

const VALUE = new Uint8Array(64).map((_, i) => (i * 37 + 11) & 255);

/** connected returns a node with key "k" stored, a raw client, and the server's side of it. */
async function connected(node: ReturnType<typeof startNode>) {
  const raw = await RawSocket.connect(node.port);
  raw.write(setCall(1, "k", VALUE));
  await raw.waitFor(() => raw.frames().length === 1, "set reply");
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const server = node.server as any;
  const conn = [...server.connections][0];
  return { raw, server, conn };
}

/** hits checks that the replies after the Set are Get hits of "k" with these seqids, in order. */
function expectHits(raw: RawSocket, seqids: number[]): void {
  const { replies, rest } = readReplies(raw.received, "framed");
  expect(rest).toBe(raw.received.length);
  expect(replies.slice(1).map((r) => r.seqid)).toEqual(seqids);
  for (const r of replies.slice(1)) {
    const o = outcome(r);
    if (o.kind !== "success") throw new Error(`reply ${r.seqid}: ${JSON.stringify(o)}`);
    expect(Buffer.compare(field(o.value, 1, T.STRING) as Uint8Array, VALUE)).toBe(0);
  }
}

describe("input is served at the end of the turn", () => {
  test("two chunks of one connection in the same turn are served in order", async () => {
    await using node = startNode();
    const { raw, server, conn } = await connected(node);
    server.onData(conn, concat(getCall(2, "k"), getCall(3, "k")));
    server.onData(conn, getCall(4, "k"));
    expect(raw.frames().length).toBe(1); // nothing served before the turn ends
    await raw.waitFor(() => raw.frames().length === 4, "get replies");
    expectHits(raw, [2, 3, 4]);
    expect(raw.isClosed).toBe(false);
    raw.close();
  });

  test("a FIN in the same turn as the input: the input is answered, then the connection ends", async () => {
    await using node = startNode();
    const { raw, server, conn } = await connected(node);
    server.onData(conn, concat(getCall(2, "k"), getCall(3, "k")));
    server.onEnd(conn);
    await raw.closed;
    expectHits(raw, [2, 3]);
  });

  test("the node closing in the same turn as the input still answers it, then ends the connection", async () => {
    await using node = startNode();
    const { raw, server, conn } = await connected(node);
    server.onData(conn, concat(getCall(2, "k"), getCall(3, "k"), getCall(4, "k")));
    const closing = server.close();
    await raw.closed;
    await closing;
    expectHits(raw, [2, 3, 4]);
  });
});
