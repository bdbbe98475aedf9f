/**
 * A GetMulti whose keys an unreachable member owns is answered from local loads (groupcache's
 * fallback). The connection decodes its next call into the same Request once the reply is
 * written, so the reply must wait for every part of the call: a part that fails first (here a
 * local key whose loader throws) must not answer while the fallback load of another part still
 * runs, or that load, finishing, would read the next call's key ranges as its own.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { CacheNode } from "../../src/server/cache-node.ts";
import { freePorts } from "../support/node-process.ts";
import { LogSink, RawSocket, getCall, getMultiCall, setCall } from "../server/support.ts";
import { T, concat } from "../protocol/wire-builder.ts";
import { field, outcome, readReplies } from "../server/wire-reader.ts";

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((x) => x.close()));
});

const utf8 = new TextEncoder();

describe("GetMulti falling back to local loads", () => {
  test("answers once every part settled; a slow fallback load never touches the next call's keys", async () => {
    const [pa, pb] = freePorts(2) as [number, number];
    const ids = [`127.0.0.1:${pa}`, `127.0.0.1:${pb}`]; // nothing listens on pb: B is unreachable
    let slowDone = false;
    const a = CacheNode.start(
      { port: pa, host: "127.0.0.1", peers: ids, logLevel: "silent", peerTimeoutMs: 500, groups: [{ name: "g", ttlMs: 0, admission: "always" }] },
      {
        logger: new LogSink().logger,
        loaders: {
          g: async (key) => {
            if (key.startsWith("fail")) throw new Error("no such row");
            if (key.startsWith("slow")) {
              await Bun.sleep(150);
              slowDone = true;
            }
            return `loaded ${key}`;
          },
        },
      },
    );
    open.push(a);
    const pick = (prefix: string, owner: string) => {
      for (let i = 0; ; i++) if (a.cluster!.owner(utf8.encode(`${prefix}${i}`), 0, `${prefix}${i}`.length) === owner) return `${prefix}${i}`;
    };
    const [fail, slow, kA, kB] = [pick("fail", ids[0]!), pick("slow", ids[1]!), pick("a", ids[0]!), pick("b", ids[0]!)];
    const raw = await RawSocket.connect(pa);
    raw.write(concat(setCall(1, kA, utf8.encode("stored a"), "g"), setCall(2, kB, utf8.encode("stored b"), "g")));
    await raw.waitFor(() => raw.frames().length === 2, "set replies");
    // The second GetMulti lists kB where the first lists `slow`.
    raw.write(concat(getMultiCall(3, "g", [utf8.encode(fail), utf8.encode(slow)]), getMultiCall(4, "g", [utf8.encode(kA), utf8.encode(kB)])));
    await raw.waitFor(() => raw.frames().length === 4, "GetMulti replies");
    expect(slowDone).toBe(true); // the failed GetMulti was answered after its fallback load, not before
    await Bun.sleep(200);
    raw.write(getCall(5, kB, "g"));
    await raw.waitFor(() => raw.frames().length === 5, "the Get after");
    const { replies } = readReplies(raw.received, "framed");
    const first = outcome(replies[2]!);
    expect(first.kind === "cacheError" ? first.code : first.kind).toBe(6); // LOAD_FAILED
    expect(outcome(replies[3]!).kind).toBe("success");
    const last = outcome(replies[4]!);
    if (last.kind !== "success") throw new Error(JSON.stringify(last));
    expect(new TextDecoder().decode(field(last.value, 1, T.STRING) as Uint8Array)).toBe("stored b");
    raw.close();
  });
});
