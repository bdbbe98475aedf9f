/**
 * The operator's documents against the code, so neither drifts alone: every flag parseArgs takes
 * has a row in docs/running.md, and every flag the documents name is one it takes; the defaults
 * running.md's tables and `--help` state are the node's (giving one explicitly changes nothing);
 * every metric family a node exports is listed in docs/operations.md, and every metric listed
 * there is exported, with the labels it says; the limits and timeouts the documents state are
 * the constants in src/.
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEFAULT_MULTI_LOAD_WINDOW } from "../src/cluster/group.ts";
import { MAX_TIMER_MS } from "../src/cluster/loader.ts";
import { DEFAULT_MAX_LOADS } from "../src/cluster/load-bound.ts";
import { MAX_MEMBERS } from "../src/cluster/membership.ts";
import { DEFAULT_VNODES } from "../src/cluster/ring.ts";
import { MAX_IMPORT_MS } from "../src/loaders/loader-threads.ts";
import { IMPORT_WARN_MS } from "../src/loaders/loaders-module.ts";
import { DEFAULT_MAX_DEPTH, DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_KEY_BYTES } from "../src/protocol/limits.ts";
import { MAX_TOKEN_BYTES, MIN_TOKEN_CHARS } from "../src/server/access.ts";
import { ADMIN_MAX_CONNECTIONS } from "../src/server/admin-gate.ts";
import { PRE_AUTH_BYTES } from "../src/server/cache-server.ts";
import { AUTH_MS, DRAIN_MS, HANDSHAKE_MS, MAX_REJECTED_OPEN, REJECTED_LINGER_MS } from "../src/server/connection-lifecycle.ts";
import { QUOTED_NAME_BYTES } from "../src/server/dispatch.ts";
import { FD_RESERVE } from "../src/server/fd-limit.ts";
import { LINGER_MS } from "../src/server/lingering-close.ts";
import { SEND_STALL_MS } from "../src/server/server-timers.ts";
import { LOCK_REFRESH_MS, LOCK_STALE_MS } from "../src/server/snapshot-lock.ts";
import { MIN_BLOCK_ITEM_BYTES } from "../src/server/snapshot-load.ts";
import { MAX_LATE_LOAD_WAITS } from "../src/client/call-timeouts.ts";
import { MAX_SAME_HASH } from "../src/store/hash-index.ts";
import { APP_ERROR, ERROR_CODE } from "../src/protocol/errors.ts";
import { METHOD_GET } from "../src/protocol/request.ts";
import { CacheNode } from "../src/server/cache-node.ts";
import type { NodeConfig } from "../src/server/config.ts";
import { MIN_GC_HEADROOM_BYTES, parseArgs } from "../src/server/flags.ts";
import { LatencyHistogram } from "../src/server/latency.ts";
import { Logger } from "../src/server/log.ts";
import { createMetrics } from "../src/server/metrics.ts";
import { USAGE } from "../src/server/usage.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const ROOT = join(import.meta.dir, "..");
const read = (path: string): Promise<string> => Bun.file(join(ROOT, path)).text();

/** FLAGS: every `case "--flag":` of the parser, read from its source, so a new flag cannot be missed. */
const FLAGS = [...(await read("src/server/flags.ts")).matchAll(/case "(--[a-z-]+)":/g)].map((m) => m[1]!);

/** SWITCHES: the flags that are on given alone and take `=BOOL` (`off` is a default of theirs). */
const SWITCHES = new Set(["--insecure", "--log-json", "--seed-errors"]);

/** DESCRIBED: defaults the documents describe rather than give as a value (none to parse). */
const DESCRIBED = new Set(["--group", "--self", "--tls-ca"]);

/** effective is a parsed config with what its absent fields mean filled in (no --vnodes: the ring's). */
function effective(argv: string[]): NodeConfig {
  const r = parseArgs(argv, {});
  if (r.kind !== "run") throw new Error(`expected a run config, got ${r.kind}`);
  return { ...r.config, vnodes: r.config.vnodes ?? DEFAULT_VNODES };
}

/**
 * defaultFault says how giving `flag` its stated default `value` differs from giving no flags
 * (undefined: it does not), or that the flag refuses it.
 */
function defaultFault(flag: string, value: string): string | undefined {
  const argv = SWITCHES.has(flag) ? [`${flag}=${value}`] : [flag, value];
  let given: NodeConfig;
  try {
    given = effective(argv);
  } catch (e) {
    return `${flag} ${value}: refused (${(e as Error).message})`;
  }
  const none = effective([]);
  const differ = (Object.keys(none) as (keyof NodeConfig)[]).filter((k) => !Bun.deepEquals(given[k], none[k]));
  return differ.length === 0 ? undefined : `${flag} ${value}: ${differ.map((k) => `${k} ${JSON.stringify(given[k])}, not ${JSON.stringify(none[k])}`).join("; ")}`;
}

/** tableRows: running.md's flag rows, as [flags of the first cell, the default cell]. */
async function tableRows(): Promise<[string[], string][]> {
  const rows: [string[], string][] = [];
  for (const line of (await read("docs/running.md")).split("\n")) {
    if (!line.startsWith("| `-")) continue;
    const [, first = "", defaults = ""] = line.split("|");
    const flags = [...first.matchAll(/`(--[a-z-]+)/g)].map((m) => m[1]!);
    rows.push([flags, defaults.trim()]);
  }
  return rows;
}

describe("flags", () => {
  test("every flag parseArgs takes has a row in docs/running.md's tables", async () => {
    expect(FLAGS.length).toBeGreaterThan(40);
    const documented = new Set((await tableRows()).flatMap(([flags]) => flags));
    expect(FLAGS.filter((f) => !documented.has(f))).toEqual([]);
  });

  test("every flag the README and docs/ name is one parseArgs takes", async () => {
    const taken = new Set([...FLAGS, "--help"]);
    const unknown: string[] = [];
    const named = new Set<string>();
    for (const path of ["README.md", "docs/running.md", "docs/operations.md", "docs/wire.md", "docs/design.md"]) {
      for (const m of (await read(path)).matchAll(/`(--[a-z][a-z-]*)/g)) {
        named.add(m[1]!);
        if (!taken.has(m[1]!)) unknown.push(`${path}: ${m[1]}`);
      }
    }
    expect(unknown).toEqual([]);
    expect(named.size).toBeGreaterThan(30); // (45 today: a scan that found no flag would find none unknown)
  });

  test("running.md's defaults are the node's: each given explicitly changes nothing", async () => {
    let checked = 0;
    const faults: string[] = [];
    for (const [flags, cell] of await tableRows()) {
      // "100ms / 2000" for two flags; "0 (never)"; "—" none
      const defaults = cell.split(" / ").map((d) => d.replace(/\s*\(.*$/, "").trim());
      flags.forEach((flag, i) => {
        const value = defaults[i];
        if (value === undefined || value === "" || value === "—" || DESCRIBED.has(flag)) return;
        const fault = defaultFault(flag, value);
        if (fault !== undefined) faults.push(fault);
        checked++;
      });
    }
    expect(faults).toEqual([]);
    expect(checked).toBeGreaterThan(25);
  });

  test("--help's defaults are the node's: each given explicitly changes nothing", () => {
    // A flag's entry is its line and the indented lines under it, up to the next flag.
    const entries = USAGE.split(/\n(?= {2}(?:-h, )?--)/);
    let checked = 0;
    const faults: string[] = [];
    for (const entry of entries) {
      const flag = /^ {2}(?:-h, )?(--[a-z-]+)/.exec(entry)?.[1];
      const value = /\(default:? ([^\s;,)]+)/.exec(entry)?.[1];
      if (flag === undefined || value === undefined || DESCRIBED.has(flag)) continue;
      const fault = defaultFault(flag, value);
      if (fault !== undefined) faults.push(fault);
      checked++;
    }
    expect(faults).toEqual([]);
    expect(checked).toBeGreaterThan(25);
  });
});

/** metricsSection is operations.md from "### Metrics" up to its next section but one ("What to alert on" included). */
async function metricsSection(): Promise<string> {
  const text = await read("docs/operations.md");
  const start = text.indexOf("### Metrics");
  const end = text.indexOf("\n### Memory", start);
  expect(start).toBeGreaterThan(0);
  expect(end).toBeGreaterThan(start);
  return text.slice(start, end);
}

/**
 * documentedMetrics: the `name` or `name{labels}` spans of operations.md's metrics, each name with
 * the labels of all its mentions; braces inside a name are expanded (`loader_pool_{a,b}_total`).
 */
async function documentedMetrics(): Promise<Map<string, string[]>> {
  const names = new Map<string, string[]>();
  for (const m of (await metricsSection()).matchAll(/`([^`]+)`/g)) {
    for (const span of m[1]!.matchAll(/[a-z][a-z_]*(?:\{[a-z_,]+\})?(?:[a-z_]*)/g)) {
      const text = span[0];
      const expand = /^([a-z_]*)\{([a-z_,]+)\}([a-z_]+)$/.exec(text); // (braces inside a name: alternatives)
      if (expand) {
        for (const part of expand[2]!.split(",")) names.set(`${expand[1]}${part}${expand[3]}`, []);
        continue;
      }
      const labelled = /^([a-z_]+)\{([a-z_,]+)\}$/.exec(text);
      // (a name mentioned with some of its labels, `request_errors_total{method}`, adds none)
      const [name, labels] = labelled ? [labelled[1]!, labelled[2]!.split(",")] : [text, []];
      names.set(name, [...new Set([...(names.get(name) ?? []), ...labels])]);
    }
  }
  return names;
}

describe("metrics", () => {
  test("every family a node with peers, a loaders module, a snapshot and a memory watch exports is in docs/operations.md, and every metric listed there is exported, with its labels", async () => {
    const dir = mkdtempSync(join(tmpdir(), "mbc-docs-"));
    const config: Partial<NodeConfig> = {
      port: 0, logLevel: "silent", peers: [], snapshot: join(dir, "cache.snap"), gcHeadroomBytes: 64 * 1024 * 1024,
      loaders: join(import.meta.dir, "loaders/fixtures/loaders.ts"), loaderThreads: 1,
    };
    await using node = await CacheNode.open(config, { logger: new Logger("silent") });
    try {
      expect([node.cluster, node.pool, node.snapshotter, node.memoryWatch].map((x) => x !== undefined)).toEqual([true, true, true, true]);
      // Samples of the labelled families: a slab class in use, a request, its error, a protocol error.
      node.groups.all()[0]!.set("k", "v");
      const latency = new LatencyHistogram();
      latency.record(METHOD_GET, 7_000);
      latency.recordError(METHOD_GET, ERROR_CODE.NOT_FOUND);
      latency.recordProtocolError(APP_ERROR.PROTOCOL_ERROR);
      const admin = () => ({ open: 0, refused: 0, stalled: 0, evicted: 0 });
      const text = new TextDecoder().decode(createMetrics(node, latency, admin).render());
      const families = [...text.matchAll(/^# TYPE mybuncache_(\S+) /gm)].map((m) => m[1]!);
      expect(families.length).toBeGreaterThan(90);

      const documented = await documentedMetrics();
      expect(families.filter((f) => !documented.has(f))).toEqual([]);

      // Documented names that look like metrics (with a `_`: `negttl` is a word, and `connections`
      // a family checked above); the prefix (`mybuncache_`) and PromQL's own function aside.
      const exported = new Set(families);
      const listed = [...documented.keys()].filter((n) => n.includes("_") && !n.endsWith("_") && n !== "histogram_quantile");
      // (a histogram's series: `request_duration_seconds_bucket` is of `request_duration_seconds`)
      const series = (n: string): string => (exported.has(n) ? n : n.replace(/_(bucket|sum|count)$/, ""));
      expect(listed.filter((n) => !exported.has(series(n)))).toEqual([]);

      // The labels a name is documented with are those of its samples (besides group, store, class, le).
      const wrong: string[] = [];
      let compared = 0;
      for (const [name, labels] of documented) {
        if (labels.length === 0 || !exported.has(name)) continue;
        compared++;
        const sample = new RegExp(`^mybuncache_${name}(?:_bucket|_sum|_count)?\\{([^}]*)\\}`, "m").exec(text);
        const actual = sample === null ? [] : [...sample[1]!.matchAll(/([a-z_]+)="/g)].map((m) => m[1]!).filter((l) => !["group", "store", "class", "le"].includes(l));
        if (actual.toSorted().join(",") !== labels.toSorted().join(",")) wrong.push(`${name}: documented {${labels}}, exported {${actual}}`);
      }
      expect(wrong).toEqual([]);
      expect(compared).toBeGreaterThan(3); // (6 today: a parse that found no labels would compare none and pass)
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

const sec = (ms: number): string => `${ms / 1000} s`;
const thousands = (n: number): string => n.toLocaleString("en-US");

/** LIMITS: [document, what it says, written from the constant it states]. */
const LIMITS: [string, string][] = [
  ["README.md", `OVERLOADED: ${thousands(DEFAULT_MAX_LOADS)} loads already under way`],
  ["docs/running.md", `one that sends nothing is closed after ${sec(REJECTED_LINGER_MS)}`],
  ["docs/running.md", `past ${MAX_REJECTED_OPEN} refused ones open at once`],
  ["docs/running.md", `(\`ulimit -n\`) less ${FD_RESERVE}`],
  ["docs/running.md", `closed once it has taken none for ${sec(SEND_STALL_MS)}`],
  ["docs/running.md", `its import is not done in ${sec(MAX_IMPORT_MS)}`],
  ["docs/running.md", `logged at WARN after ${sec(IMPORT_WARN_MS)}`],
  ["docs/running.md", `one that has not finished its handshake ${sec(HANDSHAKE_MS)} after it opened is closed`],
  ["docs/running.md", `at most ${ADMIN_MAX_CONNECTIONS} connections at once`],
  ["docs/running.md", `0 = off, else at least ${MIN_GC_HEADROOM_BYTES / 1024 / 1024}mb`],
  ["docs/running.md", `may be at most ${MAX_TIMER_MS} ms`],
  ["docs/running.md", `any other not done after ${sec(DRAIN_MS)}`],
  ["docs/running.md", `cuts it (reset) ${sec(LINGER_MS)} after its FIN`],
  ["docs/running.md", `one over 1 MiB or over ${MAX_MEMBERS} members`],
  ["docs/running.md", `a Kubernetes headless service; at most ${MAX_MEMBERS})`],
  ["docs/running.md", `${MAX_LATE_LOAD_WAITS} load timeouts in all at most`],
  ["docs/running.md", `at least ${MIN_TOKEN_CHARS} characters, at most ${MAX_TOKEN_BYTES} bytes`],
  ["docs/running.md", `one that has not authenticated ${sec(AUTH_MS)} after it opened is closed, as is one whose first call passes ${PRE_AUTH_BYTES / 1024} KiB`],
  ["docs/operations.md", `At most ${ADMIN_MAX_CONNECTIONS} admin connections are open at once`],
  ["docs/operations.md", `because ${MAX_SAME_HASH} keys already shared its 32-bit hash`],
  ["docs/operations.md", `touched every ${sec(LOCK_REFRESH_MS)}`],
  ["docs/operations.md", `once it is ${sec(LOCK_STALE_MS)} old`],
  ["docs/operations.md", `or ${MIN_BLOCK_ITEM_BYTES / 1024 / 1024} MiB if that is more`],
  ["docs/wire.md", `Frame ≤ \`--max-frame-size\` (${thousands(DEFAULT_MAX_FRAME_BYTES)} B, Thrift's default); nesting ≤ ${DEFAULT_MAX_DEPTH}`],
  ["docs/wire.md", `key over \`--max-key-size\` (${DEFAULT_MAX_KEY_BYTES} B)`],
  ["docs/wire.md", `quotes the group's first ${QUOTED_NAME_BYTES} bytes`],
  ["docs/wire.md", `(${DEFAULT_MULTI_LOAD_WINDOW}, or half the loader pool's places)`],
];

describe("limits", () => {
  test.each(LIMITS)("%s: %s", async (path, phrase) => {
    // (lines joined: a phrase may be wrapped)
    expect((await read(path)).replace(/\s+/g, " ")).toContain(phrase);
  });
});
