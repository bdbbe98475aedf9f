/**
 * Test preload (bunfig.toml): makes sure the stock Apache Thrift JS and Python code that the
 * interop tests use is generated from thrift/*.thrift by the official compiler. On a fresh Debian machine
 * where the compiler is missing and we are root, it installs Debian's `thrift-compiler` first;
 * otherwise it fails with the command to run, never silently skipping the interop tests.
 */
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";

const root = join(import.meta.dir, "..");
// The JS code, and the Python code of the python-interop test (a test/gen made before gen.sh wrote it has none).
const generated = ["test/gen/cache/GroupCache.js", "test/gen/py/cache/GroupCache.py"].map((f) => join(root, f));
const sources = ["thrift/cache.thrift", "thrift/seed/groupcache.thrift", "thrift/gen.sh"].map((f) => join(root, f));

function run(cmd: string[]): boolean {
  return Bun.spawnSync(cmd, { cwd: root, stdout: "inherit", stderr: "inherit" }).exitCode === 0;
}

const stale = generated.some((g) => !existsSync(g) || sources.some((s) => statSync(s).mtimeMs > statSync(g).mtimeMs));
if (stale) {
  if (Bun.which("thrift") === null) {
    const isRoot = process.getuid?.() === 0;
    if (!isRoot || !run(["apt-get", "update", "-qq"]) || !run(["apt-get", "install", "-y", "-qq", "thrift-compiler"])) {
      throw new Error("the Thrift compiler is missing: run `apt-get install -y thrift-compiler`, then `bun test` again");
    }
  }
  if (!run(["bash", "thrift/gen.sh"])) throw new Error("thrift/gen.sh failed");
}

// No per-test timeout is set here: bun keeps a preload's setDefaultTimeout() for the first test
// file of a run only (oven-sh/bun#43787; bunfig.toml has no timeout setting), so every test
// file sets its own 30 s default (real servers and processes on a loaded machine need more than
// bun's 5 s), and tests that need more set theirs. test/suite-rules.test.ts checks that each does.
