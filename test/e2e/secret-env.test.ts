/**
 * The auth token given in the environment (MYBUNCACHE_AUTH_TOKEN) is read and then taken out of
 * it: the loader threads get a copy of the node's environment, and a loaders module (its
 * dependencies, what they start) could read it there. Other variables pass as they are.
 */
import { expect, test, setDefaultTimeout } from "bun:test";
import { join } from "node:path";
import { CacheClient } from "../../src/client/cache-client.ts";
import { spawnNode } from "../support/node-process.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const TOKEN = "a-token-of-at-least-16-characters";
const LOADERS = join(import.meta.dir, "fixtures/env-loaders.ts");

test("a loader thread does not see MYBUNCACHE_AUTH_TOKEN; other variables it does", async () => {
  const node = await spawnNode(["--port", "0", "--loaders", LOADERS], { MYBUNCACHE_AUTH_TOKEN: TOKEN, MYBUNCACHE_TEST_VAR: "seen" });
  const client = new CacheClient({ host: "127.0.0.1", port: node.port, authToken: TOKEN });
  try {
    const text = async (key: string): Promise<string> => new TextDecoder().decode((await client.get("env", key)).value);
    expect(await text("MYBUNCACHE_TEST_VAR")).toBe("seen");
    expect(await text("MYBUNCACHE_AUTH_TOKEN")).toBe("<unset>");
  } finally {
    await client.close();
    node.proc.kill("SIGTERM");
    await node.proc.exited;
  }
});
