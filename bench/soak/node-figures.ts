/**
 * nodeFigures asks a node for its NodeStats figures (`group.<name>.store.evictions`, ...) over a raw
 * framed connection; undefined when the node does not have the method yet (UNKNOWN_METHOD) or
 * answers anything else. The client has no NodeStats call, so the frame is built by hand.
 */
import { Bytes, MSG, T, framed, message } from "../../test/protocol/wire-builder.ts";
import { field, outcome, readReply, type Value } from "../../test/server/wire-reader.ts";

export async function nodeFigures(port: number): Promise<Map<string, number> | undefined> {
  const call = framed(message(MSG.CALL, "NodeStats", 1, new Bytes().field(T.STRUCT, 1).stop().stop().bytes()));
  let received = new Uint8Array(0);
  let done!: (reply: Uint8Array | undefined) => void;
  const reply = new Promise<Uint8Array | undefined>((ok) => (done = ok));
  const socket = await Bun.connect({
    hostname: "127.0.0.1",
    port,
    socket: {
      data(_s, chunk) {
        const joined = new Uint8Array(received.length + chunk.length);
        joined.set(received);
        joined.set(chunk, received.length);
        received = joined;
        if (received.length >= 4 && received.length - 4 >= new DataView(received.buffer).getInt32(0)) done(received);
      },
      close: () => done(undefined),
      error: () => done(undefined),
    },
  });
  socket.write(call);
  const timer = setTimeout(() => done(undefined), 5_000);
  const bytes = await reply;
  clearTimeout(timer);
  socket.end();
  if (bytes === undefined) return undefined;
  try {
    const r = readReply(bytes, 0, "framed");
    const o = r === null ? undefined : outcome(r);
    if (o?.kind !== "success") return undefined;
    const map = field(o.value, 1, T.MAP) as [Value, Value][] | undefined;
    if (!Array.isArray(map)) return undefined;
    const figures = new Map<string, number>();
    const utf8 = new TextDecoder();
    for (const [k, v] of map) if (k instanceof Uint8Array && typeof v === "bigint") figures.set(utf8.decode(k), Number(v));
    return figures;
  } catch {
    return undefined;
  }
}
