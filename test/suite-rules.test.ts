/**
 * Rules the test suite itself keeps. Bun keeps a preload's setDefaultTimeout() for the first
 * test file of a run only (oven-sh/bun#43787), so every test file sets its own default at its
 * top level; a file that forgets it runs at bun's 5 s in `bun test` and 30 s when run alone.
 * A test that cannot fail is a bug: each test asserts, directly or through a helper of its file
 * known to (listed below, with what it checks), and none is skipped except for what a machine
 * may lack and CI cannot install (an IPv6 loopback).
 */
import { expect, test, setDefaultTimeout } from "bun:test";
import { Glob } from "bun";
import { join } from "node:path";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const root = join(import.meta.dir, "..");
const files = [...new Glob("test/**/*.test.ts").scanSync(root)].filter((f) => !f.startsWith("test/gen/")).sort();
const source = (f: string): Promise<string> => Bun.file(join(root, f)).text();

test("every test file sets its own default timeout at its top level", async () => {
  expect(files.length).toBeGreaterThan(100);
  const missing: string[] = [];
  for (const f of files) {
    if (!/^setDefaultTimeout\(\d[\d_]*\);/m.test(await source(f))) missing.push(f);
  }
  expect(missing).toEqual([]);
});

/** code is `src` with comments and string literals blanked (template literals whole), so names and prose do not count as code. */
function code(src: string): string {
  let out = "";
  for (let i = 0; i < src.length; i++) {
    const c = src[i]!;
    if (c === "/" && src[i + 1] === "/") {
      const end = src.indexOf("\n", i);
      i = (end < 0 ? src.length : end) - 1;
    } else if (c === "/" && src[i + 1] === "*") {
      i = src.indexOf("*/", i + 2) + 1;
    } else if (c === '"' || c === "'" || c === "`") {
      let j = i + 1;
      while (j < src.length && src[j] !== c) j += src[j] === "\\" ? 2 : 1;
      out += `${c}${c}`;
      i = j;
    } else {
      out += c;
    }
  }
  return out;
}

/** close gives the index of the bracket closing the one at `open` in code `c`. */
function close(c: string, open: number): number {
  let depth = 0;
  for (let i = open; i < c.length; i++) {
    if ("([{".includes(c[i]!)) depth++;
    else if (")]}".includes(c[i]!) && --depth === 0) return i;
  }
  return c.length;
}

/**
 * calls gives the argument text of each top-of-line test call in code `c` with its line: `test(…)`,
 * `it(…)`, and the last call of a chain such as `test.each(table)(…)` or `test.skipIf(x)(…)`.
 */
function calls(c: string): { line: number; args: string }[] {
  const found: { line: number; args: string }[] = [];
  const re = /^[ \t]*(?:test|it)\b(?=\s*[.(])/gm;
  for (let m = re.exec(c); m !== null; m = re.exec(c)) {
    let i = m.index + m[0].length;
    let args: [number, number] | undefined;
    for (;;) {
      while (/\s/.test(c[i] ?? "")) i++;
      const member = /^\.\w+/.exec(c.slice(i, i + 40));
      if (member !== null) {
        i += member[0].length;
      } else if (c[i] === "(") {
        args = [i, close(c, i)];
        i = args[1] + 1;
      } else {
        break;
      }
    }
    if (args !== undefined) found.push({ line: c.slice(0, args[0]).split("\n").length, args: c.slice(args[0] + 1, args[1]) });
  }
  return found;
}

/** Helpers that assert (they call expect() or throw when what they wait for does not come), by file; an `expect…(` helper counts anywhere. */
const ASSERTING_HELPERS: Record<string, string[]> = {
  "test/cluster/peers-file-hostile.test.ts": ["until"], // throws when the condition is not met in time
  "test/client/error-origins.test.ts": ["failure", "unanswered"], // a CacheError or throw; expects on its origin
  "test/store/store.model.test.ts": ["run"], // the model comparison and checkInvariants() after each step
  "test/server/getmulti-model.test.ts": ["run"], // expects every reply against the model
  "test/server/lingering-close.test.ts": ["sendLate", "waitUntil", "countsAgree"], // expects on the frames and counts
  "test/server/node-cli.test.ts": ["refused"], // expects on the exit code and stderr
  "test/server/hardening.test.ts": ["waitUntil"], // throws when the condition is not met in time
};

test("every test asserts: an expect(), or a helper of its file that asserts (a test without one cannot fail)", async () => {
  const silent: string[] = [];
  let seen = 0;
  for (const f of files) {
    const helpers = ASSERTING_HELPERS[f] ?? [];
    const asserts = new RegExp(`\\bexpect\\w*\\(${helpers.map((h) => `|\\b${h}\\(`).join("")}`);
    for (const { line, args } of calls(code(await source(f)))) {
      seen++;
      if (!asserts.test(args)) silent.push(`${f}:${line}`);
    }
  }
  expect(seen).toBeGreaterThan(900); // (the scan finds the tests)
  expect(silent).toEqual([]);
});

// skipIf only on what a machine may lack: an IPv6 loopback, a zoned address, a loop device
// and fsfreeze as root (snapshot-lock.test.ts's frozen volume), or strace allowed to trace
// (dir-sync.test.ts; a container may deny ptrace).
test("no test is skipped, left to do or run alone; skipIf only for a machine without IPv6, zones, a loop device or strace", async () => {
  expect(files.length).toBeGreaterThan(100); // (the scan reads the test files)
  const found: string[] = [];
  for (const f of files) {
    const lines = code(await source(f)).split("\n");
    lines.forEach((l, i) => {
      if (/\b(?:test|it|describe)\.(?:skip|todo|only|failing)\b/.test(l)) found.push(`${f}:${i + 1}`);
      const cond = /\b(?:test|it|describe)\.(?:skipIf|if)\(([^)]*)\)/.exec(l);
      if (cond !== null && !["!IPV6", "ZONED === undefined", "!canFreeze", "!canTrace"].includes(cond[1]!.trim())) found.push(`${f}:${i + 1}`);
    });
  }
  expect(found).toEqual([]);
});
