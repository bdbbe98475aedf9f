/**
 * Group names come from the command line (--group NAME, `[\w.-]+`), and the node looks them up in
 * tables of its own: a name that is also a property of every plain object (`toString`,
 * `constructor`, `__proto__`) must be a group like any other. A plain object's `toString` read as
 * the group's loader: a Get miss of a group named so was answered "[object Undefined]" and stored,
 * and one named `constructor` answered LOAD_FAILED ("a loader must return …").
 */
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
import { ERROR_CODE } from "../../src/protocol/errors.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import { parseArgs } from "../../src/server/flags.ts";
import { LogSink } from "./support.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((x) => x.close()));
});

const NAMES = ["toString", "constructor", "hasOwnProperty", "valueOf", "__proto__"];

describe("groups named like an object's own properties", () => {
  test("are plain groups: a miss is NOT_FOUND, a Set is read back; with a loader of that name, it loads", async () => {
    const r = parseArgs(["--port", "0", ...NAMES.flatMap((n) => ["--group", n]), "--group", "loaded"]);
    if (r.kind !== "run") throw new Error(`expected a run config, got ${r.kind}`);
    const node = CacheNode.start(r.config, { logger: new LogSink().logger, loaders: { loaded: (key: string) => `v:${key}` } });
    open.push(node);
    const c = new CacheClient({ host: "127.0.0.1", port: node.port, timeoutMs: 2000 });
    open.push(c);
    for (const name of NAMES) {
      expect(node.groups.byName(name)?.loader).toBeUndefined();
      await expect(c.get(name, "missing")).rejects.toMatchObject({ code: ERROR_CODE.NOT_FOUND });
      await c.set(name, "k", `value of ${name}`);
      expect(new TextDecoder().decode((await c.get(name, "k")).value)).toBe(`value of ${name}`);
    }
    expect(new TextDecoder().decode((await c.get("loaded", "x")).value)).toBe("v:x");
  });

  test("a size's unit is one of its units, not an object's property", () => {
    expect(() => parseArgs(["--memory", "64constructor"])).toThrow("--memory expects a size like 64mb, 512k or 1048576, got '64constructor'");
  });
});
