/**
 * An application's callback that throws (onHealth, onProtocolError) is its own bug: the client
 * reports it as an uncaught error and carries on with the state change it was telling of. Run in
 * a spawned process (throwing-callbacks-child.ts), where those uncaught errors are counted.
 */
import { expect, test, setDefaultTimeout } from "bun:test";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

test("onHealth and onProtocolError throwing break nothing: the peer comes back each time, a broken connection is still dropped (review: down for good; the desynced connection kept)", async () => {
  const proc = Bun.spawn(["bun", `${import.meta.dir}/throwing-callbacks-child.ts`], { stdout: "pipe", stderr: "pipe" });
  const text = await new Response(proc.stdout).text();
  expect(await proc.exited).toBe(0);
  const r = JSON.parse(text.trim().split("\n").pop()!) as { recovered: boolean[]; bad: string; after: string; uncaught: number };
  expect(r.recovered).toEqual([true, true]);
  expect(r.bad).toContain("malformed reply"); // failed at once, not at the 5 s timeout
  expect(r.after).toBe("answered"); // on a new connection
  expect(r.uncaught).toBe(5); // each throw reported: down, up, down, up, the protocol error
}, 20_000);
