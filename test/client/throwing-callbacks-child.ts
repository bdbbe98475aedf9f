/**
 * Runs a CacheClient whose onHealth and onProtocolError callbacks throw, in a process of its own
 * (spawned by throwing-callbacks.test.ts: the client rethrows a callback's error apart, as an
 * uncaught error, which would fail the test that saw it). Prints one JSON line.
 */
import { CacheClient } from "../../src/client/cache-client.ts";
import { StubServer, getReply, serve } from "./support.ts";

let uncaught = 0;
process.on("uncaughtException", () => uncaught++);

async function until(cond: () => boolean, ms: number): Promise<boolean> {
  for (const end = performance.now() + ms; !cond(); await Bun.sleep(5)) if (performance.now() > end) return false;
  return true;
}

// onHealth throws at every state: the peer goes down (silent) and comes back (answering), twice.
const stub = new StubServer();
stub.store.set("g/k", new TextEncoder().encode("v"));
let answering = false;
stub.handler = (c, s) => (answering ? serve(c, s) : null);
const health = new CacheClient({
  host: "127.0.0.1", port: stub.port, connections: 1, timeoutMs: 50, maxFailures: 1, probeIntervalMs: 50,
  onHealth: (state) => {
    throw new Error(`onHealth(${state}) failed`);
  },
});
const recovered: boolean[] = [];
for (let round = 0; round < 2; round++) {
  answering = false;
  await health.get("g", "k").catch(() => {});
  await until(() => health.isDown, 1_000);
  answering = true;
  recovered.push(await until(() => !health.isDown, 2_000) && (await health.get("g", "k").then(() => true, () => false)));
}
await health.close();

// onProtocolError throws: the connection that broke the protocol is still dropped, its call failed at once.
stub.handler = (c, s) => (c.key === "bad" ? getReply(c.name, c.seqid + 1, new Uint8Array(1)) : serve(c, s));
const proto = new CacheClient({
  host: "127.0.0.1", port: stub.port, connections: 1, timeoutMs: 5_000,
  onProtocolError: () => {
    throw new Error("onProtocolError failed");
  },
});
const bad = await proto.get("g", "bad").then(() => "answered", (e: Error) => e.message);
const after = await proto.get("g", "k").then(() => "answered", (e: Error) => e.message);
await proto.close();
stub.close();
await Bun.sleep(10);
console.log(JSON.stringify({ recovered, bad, after, uncaught }));
