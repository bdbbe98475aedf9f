/**
 * The README's examples run as written: the embedded example, and the sqlite loaders module
 * behind a real `node.ts` process fetched with examples/thrift-get.ts (a stock Thrift client).
 */
import { expect, test, setDefaultTimeout } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { join } from "node:path";
import { spawnNode } from "./support/node-process.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const ROOT = join(import.meta.dir, "..");

/** run runs `bun run ...args`; one not done in 10 s is killed (code null). */
async function run(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; out: string; err: string }> {
  const p = Bun.spawn(["bun", "run", ...args], { cwd: ROOT, stdout: "pipe", stderr: "pipe", env: { ...process.env, ...env }, timeout: 10_000, killSignal: "SIGKILL" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code: p.signalCode === null ? code : null, out, err };
}

test("examples/embedded.ts runs: one query for concurrent gets, typed errors, a node", async () => {
  const r = await run(["examples/embedded.ts"]);
  expect(r.code).toBe(0);
  expect(r.out).toContain('get 42: {"id":42,"name":"user 42"} | same bytes: true | queries: 1');
  expect(r.out).toContain("get 42 again (a hit)");
  expect(r.out).toContain("queries: 1");
  expect(r.out).toContain("get 1000: CacheError code 1");
  expect(r.out).toMatch(/node serving groups \[users\] on 127\.0\.0\.1:\d+/);
}, 30_000);

test("node.ts --loaders examples/sqlite-loaders.ts serves rows to examples/thrift-get.ts", async () => {
  const dir = await mkdtemp("/tmp/mybuncache-readme-");
  const env = { EXAMPLE_DB: join(dir, "example.sqlite") };
  const node = await spawnNode(["--port", "0", "--loaders", "./examples/sqlite-loaders.ts"], env);
  try {
    const { port } = node;
    const log = node.log();
    expect(log).toContain("users=");
    const hit = await run(["examples/thrift-get.ts", "--port", String(port), "users", "7"], env);
    expect(hit.code).toBe(0);
    expect(JSON.parse(hit.out).id).toBe(7);
    const miss = await run(["examples/thrift-get.ts", "--port", String(port), "users", "424242"], env);
    expect(miss.code).toBe(1);
    expect(miss.err).toContain("CacheError code 1");
  } finally {
    node.proc.kill("SIGTERM");
    expect(await node.proc.exited).toBe(0);
    await rm(dir, { recursive: true, force: true });
  }
}, 30_000);

test("examples/thrift-get.ts exits 1 when its connection closes unanswered (before: it waited for good, spinning a core)", async () => {
  // What a TLS port, a node cut short or anything else that closes without a reply does to it.
  using server = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data: (socket) => void socket.end() } });
  const r = await run(["examples/thrift-get.ts", "--port", String(server.port), "default", "k"]);
  expect(r.code).toBe(1);
  expect(r.err).toContain("connection closed before a reply");
}, 30_000);

test("examples/thrift-get.ts names a seed-style error as the server's exception, not as 'CacheError code undefined'", async () => {
  // (--seed-errors answers errors as the seed did: a TApplicationException, INTERNAL_ERROR (6), naming the code)
  const node = await spawnNode(["--port", "0", "--seed-errors"]);
  try {
    const miss = await run(["examples/thrift-get.ts", "--port", String(node.port), "default", "k"]);
    expect(miss.code).toBe(1);
    expect(miss.err).toContain("server exception INTERNAL_ERROR (6): NOT_FOUND (1): key not found");
  } finally {
    node.proc.kill("SIGTERM");
    expect(await node.proc.exited).toBe(0);
  }
}, 30_000);
