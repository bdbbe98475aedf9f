/**
 * Rules the test suite itself keeps. Bun keeps a preload's setDefaultTimeout() for the first
 * test file of a run only (oven-sh/bun#43787), so every test file sets its own default at its
 * top level; a file that forgets it runs at bun's 5 s in `bun test` and 30 s when run alone.
 */
import { expect, test, setDefaultTimeout } from "bun:test";
import { Glob } from "bun";
import { join } from "node:path";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

test("every test file sets its own default timeout at its top level", async () => {
  const root = join(import.meta.dir, "..");
  const files = [...new Glob("test/**/*.test.ts").scanSync(root)].sort();
  expect(files.length).toBeGreaterThan(100);
  const missing: string[] = [];
  for (const f of files) {
    const src = await Bun.file(join(root, f)).text();
    if (!/^setDefaultTimeout\(\d[\d_]*\);/m.test(src)) missing.push(f);
  }
  expect(missing).toEqual([]);
});
