/**
 * Node configuration: `parseArgs` (every flag, sizes, durations, group specs, errors, help and
 * version) and `splitMemory` (how --memory is shared among groups). Table-driven.
 */
import { totalmem } from "node:os";
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { splitMemory } from "../../src/server/node-groups.ts";
import { ConfigError, DEFAULTS, VERSION, type GroupSpec, type NodeConfig } from "../../src/server/config.ts";
import { parseArgs } from "../../src/server/flags.ts";
import { USAGE } from "../../src/server/usage.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const KIB = 1024;
const MIB = 1024 * 1024;
const GIB = 1024 * MIB;

/** run parses argv and returns the config, failing the test if it is not a "run" result. */
function run(argv: string[]): NodeConfig {
  const r = parseArgs(argv);
  if (r.kind !== "run") throw new Error(`expected a run config, got ${r.kind}`);
  return r.config;
}

/** refusal returns the ConfigError message parseArgs throws for argv (fails if it does not). */
function refusal(argv: string[]): string {
  try {
    parseArgs(argv);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as ConfigError).message;
  }
  throw new Error(`parseArgs(${JSON.stringify(argv)}) did not throw`);
}

describe("parseArgs flags", () => {
  test("no flags gives the defaults and no groups", () => {
    expect(run([])).toEqual({ ...DEFAULTS, groups: [] });
  });

  test("the defaults object is not shared with the result", () => {
    run(["--group", "x"]).groups.push({ name: "y", ttlMs: 0 });
    expect(DEFAULTS.groups).toEqual([]);
    expect(run([]).groups).toEqual([]);
  });

  const FLAGS: [string[], Partial<NodeConfig>][] = [
    [["--port", "8002"], { port: 8002 }],
    [["--port", "0"], { port: 0 }],
    [["--port", "65535"], { port: 65535 }],
    [["--port=9000"], { port: 9000 }],
    [["--host", "127.0.0.2"], { host: "127.0.0.2" }],
    [["--host", "::1"], { host: "::1" }],
    [["--host", "::ffff:127.0.0.1"], { host: "::ffff:127.0.0.1" }],
    [["--host=::1"], { host: "::1" }],
    [["--memory", "128mb"], { memory: 128 * MIB }],
    [["--max-item-size", "2mb"], { maxItemSize: 2 * MIB }],
    [["--max-item-size", "64"], { maxItemSize: 64 }],
    [["--max-key-size", "1024"], { maxKeySize: 1024 }],
    [["--max-frame-size", "2mb"], { maxFrameSize: 2 * MIB }],
    [["--max-frame-size", "64k", "--max-item-size", "32k"], { maxFrameSize: 64 * KIB, maxItemSize: 32 * KIB }],
    [["--max-connections", "5"], { maxConnections: 5 }],
    [["--max-loads", "64"], { maxLoads: 64 }],
    [["--max-output", "256k"], { maxOutputBytes: 256 * KIB }],
    [["--expiry-interval", "250ms"], { expiryIntervalMs: 250 }],
    [["--expiry-interval", "2"], { expiryIntervalMs: 2000 }],
    [["--expiry-budget", "10"], { expiryBudget: 10 }],
    [["--log-level", "debug"], { logLevel: "debug" }],
    [["--log-level", "silent"], { logLevel: "silent" }],
    [["--log-json"], { logJson: true }],
    [["--port", "1", "--port", "2"], { port: 2 }], // last one wins
    [["--loaders", "examples/sqlite-loaders.ts"], { loaders: "examples/sqlite-loaders.ts" }],
    [["--loader-threads", "4"], { loaderThreads: 4 }],
    [["--loader-queue", "0"], { loaderQueue: 0 }],
    [["--loader-concurrency", "1"], { loaderConcurrency: 1 }],
    [["--load-timeout", "2s"], { loadTimeoutMs: 2000 }],
    [["--self", "10.0.0.5:8001"], { self: "10.0.0.5:8001" }],
    [["--peers", "a:1,b:2,[::1]:3"], { peers: ["a:1", "b:2", "[::1]:3"] }],
    // A link-local IPv6 member with its zone: Bun connects through the interface it names.
    [["--peers", "[fe80::1%eth0]:8001,[fe80::2%eth0]:8001", "--self", "[fe80::1%eth0]:8001"], { peers: ["[fe80::1%eth0]:8001", "[fe80::2%eth0]:8001"], self: "[fe80::1%eth0]:8001" }],
    [["--peers-file", "peers.txt"], { peersFile: "peers.txt" }],
    [["--peers-dns", "cache.svc:8001", "--peers-dns-interval", "2s"], { peersDns: "cache.svc:8001", peersDnsIntervalMs: 2000 }],
    [["--vnodes", "100", "--mirror-share", "0.25"], { vnodes: 100, mirrorShare: 0.25 }],
    [["--mirror-ttl", "2s"], { mirrorTtlMs: 2_000 }],
    [["--mirror-ttl", "0"], { mirrorTtlMs: 0 }],
    [["--peer-timeout", "250ms", "--peer-connections", "4"], { peerTimeoutMs: 250, peerConnections: 4 }],
    [["--auth-token", "0123456789abcdef"], { authToken: "0123456789abcdef" }],
    [["--admin-port", "9100"], { adminPort: 9100 }],
    [["--snapshot", "/var/lib/cache.snap", "--snapshot-interval", "5m"], { snapshot: "/var/lib/cache.snap", snapshotIntervalMs: 300_000 }],
    [["--snapshot", "/var/lib/cache.snap", "--snapshot-interval", "0s"], { snapshot: "/var/lib/cache.snap", snapshotIntervalMs: 0 }],
    [["--snapshot", "/var/lib/cache.snap", "--peers", "a:1,b:2"], { snapshot: "/var/lib/cache.snap", peers: ["a:1", "b:2"] }],
    [["--host", "0.0.0.0", "--auth-token", "0123456789abcdef"], { host: "0.0.0.0", authToken: "0123456789abcdef" }],
    [["--host", "0.0.0.0", "--insecure"], { host: "0.0.0.0", insecure: true }],
    [["--host", "localhost"], { host: "localhost" }],
    [["--tls-cert", "c.pem", "--tls-key", "k.pem"], { tlsCert: "c.pem", tlsKey: "k.pem" }],
    [["--gc-headroom", "0"], { gcHeadroomBytes: 0 }],
    [["--seed-errors=false"], { seedErrors: false }],
    [["--gc-headroom", "0mb"], { gcHeadroomBytes: 0 }],
    [["--gc-headroom", "8mb"], { gcHeadroomBytes: 8 * MIB }],
    [["--idle-timeout", "30s", "--max-requests-per-event", "64", "--max-buffered", "256mb"], { idleTimeoutMs: 30_000, maxRequestsPerEvent: 64, maxBufferedBytes: 256 * MIB }],
  ];
  test.each(FLAGS)("%p", (argv, expected) => {
    expect(run(argv)).toEqual({ ...DEFAULTS, groups: [], ...expected });
  });

  test("all flags together", () => {
    const c = run([
      "--port", "7001", "--host", "10.0.0.1", "--memory", "1g", "--group", "a:100mb:1h", "--group", "b",
      "--max-item-size", "512k", "--max-key-size", "100", "--max-frame-size", "4mb", "--max-connections", "99",
      "--max-output", "8mb", "--expiry-interval", "1s", "--expiry-budget", "50", "--log-level", "warn", "--log-json",
      "--insecure", "--gc-headroom", "32mb", "--loader-concurrency", "4", "--seed-errors", "--max-loads", "300",
    ]);
    expect(c).toEqual({
      host: "10.0.0.1", port: 7001, memory: GIB,
      groups: [{ name: "a", memory: 100 * MIB, ttlMs: 3_600_000 }, { name: "b", memory: undefined, ttlMs: 0 }],
      maxItemSize: 512 * KIB, maxKeySize: 100, maxFrameSize: 4 * MIB, maxConnections: 99, maxOutputBytes: 8 * MIB,
      expiryIntervalMs: 1000, expiryBudget: 50, logLevel: "warn", logJson: true,
      loaderThreads: DEFAULTS.loaderThreads, loaderConcurrency: 4, loaderQueue: DEFAULTS.loaderQueue, maxLoads: 300, loadTimeoutMs: DEFAULTS.loadTimeoutMs,
      peersDnsIntervalMs: DEFAULTS.peersDnsIntervalMs, mirrorShare: DEFAULTS.mirrorShare, mirrorTtlMs: DEFAULTS.mirrorTtlMs,
      peerTimeoutMs: DEFAULTS.peerTimeoutMs, peerConnections: DEFAULTS.peerConnections,
      insecure: true, idleTimeoutMs: 0, seedErrors: true, maxRequestsPerEvent: DEFAULTS.maxRequestsPerEvent, maxBufferedBytes: DEFAULTS.maxBufferedBytes,
      snapshotIntervalMs: 0, gcHeadroomBytes: 32 * MIB,
    });
  });
});

describe("sizes", () => {
  const SIZES: [string, number][] = [
    ["1048576", MIB],
    ["512", 512],
    ["512b", 512],
    ["512k", 512 * KIB],
    ["512kb", 512 * KIB],
    ["64m", 64 * MIB],
    ["64mb", 64 * MIB],
    ["64MB", 64 * MIB],
    ["1g", GIB],
    ["2gb", 2 * GIB],
    ["1.5mb", 1.5 * MIB],
    [" 32mb ", 32 * MIB],
  ];
  test.each(SIZES)("--memory %p is %p bytes", (text, bytes) => {
    expect(run(["--memory", text]).memory).toBe(bytes);
  });
});

describe("durations (group TTL)", () => {
  const DURATIONS: [string, number][] = [
    ["250ms", 250],
    ["30s", 30_000],
    ["30", 30_000], // plain = seconds
    ["5m", 300_000],
    ["1h", 3_600_000],
    ["1.5s", 1500],
    ["0", 0],
  ];
  test.each(DURATIONS)("--group g:1mb:%p has ttl %p ms", (text, ms) => {
    expect(run(["--group", `g:1mb:${text}`]).groups).toEqual([{ name: "g", memory: MIB, ttlMs: ms }]);
  });
});

describe("--group NAME[:SIZE[:TTL[:OPTIONS]]]", () => {
  const GROUPS: [string, GroupSpec][] = [
    ["users", { name: "users", memory: undefined, ttlMs: 0 }],
    ["users:32mb", { name: "users", memory: 32 * MIB, ttlMs: 0 }],
    ["users:32mb:30s", { name: "users", memory: 32 * MIB, ttlMs: 30_000 }],
    ["users::30s", { name: "users", memory: undefined, ttlMs: 30_000 }], // size left to the share
    ["a.b-c_9:1k", { name: "a.b-c_9", memory: KIB, ttlMs: 0 }],
    ["users:::admit=always", { name: "users", memory: undefined, ttlMs: 0, admission: "always" }],
    ["users:8mb:1m:admit=lru-k=3,negttl=5s,timeout=250ms", {
      name: "users", memory: 8 * MIB, ttlMs: 60_000, admission: "lru-k", admissionK: 3, negativeTtlMs: 5_000, loadTimeoutMs: 250,
    }],
    ["users:::admit=lru-k", { name: "users", memory: undefined, ttlMs: 0, admission: "lru-k" }],
    ["users:::multi=8,timeout=1s", { name: "users", memory: undefined, ttlMs: 0, multiLoadWindow: 8, loadTimeoutMs: 1_000 }],
    ["small:16mb::maxitem=64k", { name: "small", memory: 16 * MIB, ttlMs: 0, maxItemSize: 64 * KIB }],
  ];
  test.each(GROUPS)("%p", (spec, expected) => {
    expect(run(["--group", spec]).groups).toEqual([expected]);
  });

  test("repeated --group flags keep their order", () => {
    expect(run(["--group", "b", "--group=a:1mb", "--group", "c::1m"]).groups.map((g) => g.name)).toEqual(["b", "a", "c"]);
  });
});

describe("on/off flags", () => {
  const run = (argv: string[]) => {
    const r = parseArgs(argv, {});
    if (r.kind !== "run") throw new Error("not a run");
    return r.config;
  };
  test("given alone they are on; =false, =no, =off, =0 turn them off, and =true etc. on", () => {
    expect([run(["--insecure"]).insecure, run(["--log-json"]).logJson]).toEqual([true, true]);
    for (const off of ["false", "no", "off", "0", "FALSE"]) {
      expect(run([`--insecure=${off}`]).insecure).toBe(false);
      expect(run([`--log-json=${off}`]).logJson).toBe(false);
    }
    for (const on of ["true", "yes", "on", "1"]) expect(run([`--insecure=${on}`, "--host", "0.0.0.0"]).insecure).toBe(true);
    // --insecure=false is not --insecure: a public address still needs a token.
    expect(() => run(["--insecure=false", "--host", "0.0.0.0"])).toThrow("without an auth token");
  });

  test("a timer of up to 24.8 days is accepted; the group TTL is not a timer and may be longer", () => {
    expect(run(["--snapshot", "/tmp/x.snap", "--snapshot-interval", "596h"]).snapshotIntervalMs).toBe(596 * 3_600_000);
    expect(run(["--group", "a:1mb:600h"]).groups[0]!.ttlMs).toBe(600 * 3_600_000);
  });
});

describe("errors name the flag and what it expected", () => {
  // [argv, substrings the message must contain]
  const ERRORS: [string[], string[]][] = [
    [["--bogus"], ["unknown flag", "--bogus", "--help"]],
    [["--port", "1", "-p"], ["unknown flag", "-p"]],
    [["8001"], ["unknown flag", "8001"]],
    [["--port"], ["--port", "needs a value"]],
    [["--memory"], ["--memory", "needs a value"]],
    [["--group"], ["--group", "needs a value"]],
    [["--port", "65536"], ["--port", "[0, 65535]", "65536"]],
    [["--port", "-1"], ["--port", "-1"]],
    [["--port", "http"], ["--port", "http"]],
    [["--port", "80.5"], ["--port", "80.5"]],
    [["--port", ""], ["--port"]],
    [["--max-connections", "0"], ["--max-connections", "0"]],
    [["--max-loads", "0"], ["--max-loads", "0"]],
    [["--max-key-size", "70000"], ["--max-key-size", "70000"]],
    [["--expiry-budget", "x"], ["--expiry-budget", "x"]],
    [["--memory", "lots"], ["--memory", "size", "lots"]],
    [["--memory", "64tb"], ["--memory", "64tb"]],
    [["--memory", "-64mb"], ["--memory", "-64mb"]],
    [["--memory", "0"], ["--memory", "positive", "0"]],
    [["--memory", "0.5"], ["--memory", "0.5"]],
    [["--memory", ""], ["--memory"]],
    [["--max-output", "1x"], ["--max-output", "1x"]],
    [["--max-item-size", "32"], ["--max-item-size", "64"]],
    [["--max-frame-size", "2g"], ["--max-frame-size", "2 GiB"]],
    [["--max-frame-size", "1mb"], ["--max-frame-size 1048576", "largest item", "1049850"]], // 1 MiB + 250 + 1024
    [["--max-frame-size", "4k", "--max-item-size", "64k"], ["--max-frame-size 4096", "66810"]],
    [["--expiry-interval", "soon"], ["--expiry-interval", "duration", "soon"]],
    [["--expiry-interval", "-1s"], ["--expiry-interval", "-1s"]],
    [["--expiry-interval", "5d"], ["--expiry-interval", "5d"]],
    [["--group", ""], ["--group", "NAME[:SIZE[:TTL[:OPTIONS]]]"]],
    [["--group", ":1mb"], ["--group", ":1mb"]],
    [["--group", "a:1mb:1s:admit=always:extra"], ["--group", "a:1mb:1s:admit=always:extra"]],
    [["--group", "a:1mb:1s:extra"], ["--group a", "unknown option 'extra'"]],
    [["--group", "a:::admit=sometimes"], ["--group a", "admit", "sometimes"]],
    [["--group", "a:::admit=lru-k=0"], ["admit=lru-k=K", "0"]],
    [["--group", "a:::negttl=soon"], ["negttl", "soon"]],
    [["--group", "a:::multi=0"], ["--group a multi", "0"]],
    [["--group", "a:::multi=lots"], ["--group a multi", "lots"]],
    [["--group", "a:::maxitem=2mb"], ["--group a maxitem", "--max-item-size", "2097152"]],
    [["--group", "a:::maxitem=32"], ["--group a maxitem", "32"]],
    [["--group", "a:::maxitem=big"], ["--group a maxitem", "big"]],
    [["--loader-threads", "0"], ["--loader-threads", "0"]],
    [["--loader-concurrency", "0"], ["--loader-concurrency", "0"]],
    [["--peers", "a:1,nope"], ["--peers", "host:port", "nope"]],
    [["--peers", "[fe80::1%]:8001"], ["--peers", "host:port", "[fe80::1%]:8001"]],
    [["--peers", "[fe80::1%eth/0]:8001"], ["--peers", "host:port", "[fe80::1%eth/0]:8001"]],
    [["--self", "a:99999"], ["--self", "a:99999"]],
    [["--peers", "a:1", "--peers-file", "f"], ["one of --peers, --peers-file and --peers-dns"]],
    [["--mirror-share", "1"], ["--mirror-share", "1"]],
    [["--host", "0.0.0.0"], ["refusing to serve 0.0.0.0 without an auth token", "--insecure"]],
    // Flags that would do nothing, or from an unset variable (review: accepted silently).
    [["--snapshot-interval", "5s"], ["--snapshot-interval needs --snapshot"]],
    [["--peers-file="], ["--peers-file needs a file path"]],
    [["--host="], ["--host needs an address or name to listen on"]],
    // A name that only looks like a loopback address may resolve anywhere (review: taken as loopback).
    [["--host", "127.attacker.example"], ["refusing to serve 127.attacker.example without an auth token"]],
    [["--host", "127.0.0.1.nip.io"], ["without an auth token"]],
    [["--auth-token", "short"], ["at least 16 characters"]],
    [["--tls-cert", "c.pem"], ["--tls-cert and --tls-key go together"]],
    [["--tls-ca", "ca.pem"], ["--tls-ca", "needs --tls-cert and --tls-key"]],
    [["--auth-token-file", "/nonexistent/token"], ["--auth-token-file", "/nonexistent/token"]],
    [["--load-timeout", "x"], ["--load-timeout", "x"]],
    [["--group", "has space"], ["group name", "has space"]],
    [["--group", "a/b"], ["group name", "a/b"]],
    [["--group", "a:big"], ["--group size", "big"]],
    [["--group", "a:0"], ["--group size", "0"]],
    [["--group", "a:1mb:forever"], ["--group ttl", "forever"]],
    [["--group", "a", "--group", "b", "--group", "a:1mb"], ["group 'a' defined twice"]],
    [["--log-level", "verbose"], ["--log-level", "debug, info, warn, error, silent", "verbose"]],
    [["--log-level", "INFO"], ["--log-level", "INFO"]],
    [["--gc-headroom", "1k"], ["--gc-headroom", "0 (off) or at least 8mb", "1k"]],
    [["--gc-headroom", "lots"], ["--gc-headroom", "lots"]],
    [["--gc-headroom", "0xyz"], ["--gc-headroom", "0xyz"]],
    [["--mirror-share="], ["--mirror-share", "fraction"]],
    [["--mirror-share", " "], ["--mirror-share", "fraction"]],
    [["--insecure=maybe"], ["--insecure", "true/false", "maybe"]],
    [["--log-json=2"], ["--log-json", "true/false", "2"]],
    // A longer timer would fire after 1 ms, over and over for an interval.
    [["--snapshot-interval", "600h"], ["--snapshot-interval", "2147483647 ms", "600h"]],
    [["--load-timeout", "25d"], ["--load-timeout", "25d"]],
    [["--load-timeout", "597h"], ["--load-timeout", "2147483647 ms", "597h"]],
    [["--expiry-interval", "597h"], ["--expiry-interval", "2147483647 ms"]],
    [["--peers-dns-interval", "597h"], ["--peers-dns-interval", "2147483647 ms"]],
    [["--peer-timeout", "597h"], ["--peer-timeout", "2147483647 ms"]],
    [["--idle-timeout", "597h"], ["--idle-timeout", "2147483647 ms"]],
    [["--group", "a:::timeout=597h"], ["--group a timeout", "2147483647 ms"]],
    // Hostile values a review found accepted: a bound the machine can never hold, a TTL that
    // overflowed to "no expiry", a snapshot rewritten back to back, a member port 0.
    [["--memory", `${Math.ceil(totalmem() / 1024 ** 3) + 1}g`], ["--memory", "more than this machine's memory"]],
    [["--group", `a:1mb:${"9".repeat(400)}`], ["--group ttl", "too long"]],
    [["--group", "a:1mb:0:negttl=99999999999999999999h"], ["negttl", "too long"]],
    [["--snapshot-interval", "1ms"], ["--snapshot-interval", "at least 1s"]],
    // A member that left the ring and comes back from its snapshot would undo the writes its keys'
    // interim owners took (review: served the value a later acknowledged Set replaced).
    [["--snapshot", "/tmp/x.snap", "--peers-file", "/tmp/peers"], ["--snapshot cannot be used with --peers-file", "--peers"]],
    [["--snapshot", "/tmp/x.snap", "--peers-dns", "cache:8001"], ["--snapshot cannot be used with --peers-dns"]],
    [["--snapshot-interval", "0.4ms"], ["--snapshot-interval", "at least 1s"]],
    [["--self", "x:0"], ["--self", "port of 1..65535", "x:0"]],
    [["--peers", "127.0.0.1:8001,h:0"], ["--peers", "port of 1..65535", "h:0"]],
    // Values that look like "off" or "unset" (review: each was taken as something else, silently).
    [["--snapshot="], ["--snapshot needs a file path"]],
    [["--snapshot", " "], ["--snapshot needs a file path"]],
    [["--peers="], ["--peers needs at least one member"]],
    [["--peers", ","], ["--peers needs at least one member"]],
    [["--load-timeout", "0"], ["--load-timeout must be at least 1ms", "'0'"]],
    // Refused, not silently raised (review: 0 became 1 ms, 10ms became 100 ms).
    [["--expiry-interval", "0"], ["--expiry-interval must be at least 1ms (active expiry runs on this timer), got '0'"]],
    [["--peers-dns-interval", "10ms"], ["--peers-dns-interval must be at least 100ms", "got '10ms'"]],
    [["--peer-timeout", "0"], ["--peer-timeout must be at least 1ms (a call to a peer needs a deadline), got '0'"]],
    [["--load-timeout", "0.4ms"], ["--load-timeout must be at least 1ms"]],
    [["--group", "a:::timeout=0"], ["--group a timeout must be at least 1ms"]],
    // A TTL under 1 ms rounded to 0, which means none: no expiry, no negative caching, no cap on
    // mirrored copies (review: 0.4ms kept the group's values for good).
    [["--group", "a:1mb:0.4ms"], ["--group ttl must be at least 1ms or 0", "'0.4ms'"]],
    [["--group", "a:1mb:0:negttl=0.0001s"], ["--group a negttl must be at least 1ms or 0", "'0.0001s'"]],
    [["--mirror-ttl", "0.2ms"], ["--mirror-ttl must be at least 1ms or 0", "'0.2ms'"]],
    // So did an idle timeout: 0 is "never" (review: --idle-timeout 0.4ms closed nothing, ever).
    [["--idle-timeout", "0.4ms"], ["--idle-timeout must be at least 1ms or 0", "'0.4ms'"]],
    [["--max-buffered", "64k"], ["--max-buffered 65536", "at least --max-frame-size (16384000)"]],
  ];
  test.each(ERRORS)("%p", (argv, parts) => {
    const message = refusal(argv);
    for (const part of parts) expect(message).toContain(part);
  });
});

describe("--help and --version", () => {
  const SPECIAL: [string[], "help" | "version"][] = [
    [["--help"], "help"],
    [["-h"], "help"],
    [["--version"], "version"],
    [["--port", "1", "--help"], "help"],
    [["--version", "--bogus"], "version"], // it answers before reading the rest
  ];
  test.each(SPECIAL)("%p", (argv, kind) => {
    expect(parseArgs(argv)).toEqual({ kind });
  });

  test("USAGE documents every flag parseArgs accepts", async () => {
    // Every `case "--flag":` of the parser, read from its source, so a new flag cannot be missed.
    const source = await Bun.file(new URL("../../src/server/flags.ts", import.meta.url)).text();
    const flags = [...source.matchAll(/case "(--[a-z-]+)":/g)].map((m) => m[1]!);
    expect(flags.length).toBeGreaterThan(40);
    const missing = flags.filter((flag) => !new RegExp(`(^|\\s)${flag}(\\[|\\s|$)`, "m").test(USAGE));
    expect(missing).toEqual([]);
  });

  test("VERSION is the package version", async () => {
    const pkg = await Bun.file(new URL("../../package.json", import.meta.url)).json();
    expect(VERSION).toBe(pkg.version);
  });
});

describe("splitMemory", () => {
  const config = (memory: number, groups: NodeConfig["groups"]): NodeConfig => ({ ...DEFAULTS, memory, groups });

  const SPLITS: [string, NodeConfig, { name: string; memory: number; ttlMs: number }[]][] = [
    ["no groups: one 'default' group gets everything", config(64 * MIB, []), [{ name: "default", memory: 64 * MIB, ttlMs: 0 }]],
    ["one shared group gets everything", config(64 * MIB, [{ name: "a", ttlMs: 5 }]), [{ name: "a", memory: 64 * MIB, ttlMs: 5 }]],
    ["shared groups split evenly", config(60 * MIB, [{ name: "a", ttlMs: 0 }, { name: "b", ttlMs: 0 }, { name: "c", ttlMs: 0 }]),
      [{ name: "a", memory: 20 * MIB, ttlMs: 0 }, { name: "b", memory: 20 * MIB, ttlMs: 0 }, { name: "c", memory: 20 * MIB, ttlMs: 0 }]],
    ["an uneven split rounds down", config(10, [{ name: "a", ttlMs: 0 }, { name: "b", ttlMs: 0 }, { name: "c", ttlMs: 0 }]),
      [{ name: "a", memory: 3, ttlMs: 0 }, { name: "b", memory: 3, ttlMs: 0 }, { name: "c", memory: 3, ttlMs: 0 }]],
    ["explicit sizes first, the rest shared",
      config(64 * MIB, [{ name: "a", memory: 32 * MIB, ttlMs: 30_000 }, { name: "b", ttlMs: 0 }, { name: "c", memory: 8 * MIB, ttlMs: 0 }, { name: "d", ttlMs: 0 }]),
      [{ name: "a", memory: 32 * MIB, ttlMs: 30_000 }, { name: "b", memory: 12 * MIB, ttlMs: 0 }, { name: "c", memory: 8 * MIB, ttlMs: 0 }, { name: "d", memory: 12 * MIB, ttlMs: 0 }]],
    ["explicit sizes that use exactly --memory", config(64 * MIB, [{ name: "a", memory: 48 * MIB, ttlMs: 0 }, { name: "b", memory: 16 * MIB, ttlMs: 0 }]),
      [{ name: "a", memory: 48 * MIB, ttlMs: 0 }, { name: "b", memory: 16 * MIB, ttlMs: 0 }]],
  ];
  test.each(SPLITS)("%s", (_name, cfg, expected) => {
    const split = splitMemory(cfg);
    expect(split).toEqual(expected);
    expect(split.reduce((n, g) => n + g.memory, 0)).toBeLessThanOrEqual(cfg.memory);
  });

  // --memory is "total memory for all groups" (USAGE): no split may hand out more than that.
  const OVER: [string, NodeConfig, string[]][] = [
    ["explicit sizes leave nothing for a shared group", config(64 * MIB, [{ name: "a", memory: 64 * MIB, ttlMs: 0 }, { name: "b", ttlMs: 0 }]),
      ["leaving nothing", `${64 * MIB}`]],
    ["explicit sizes above --memory with a shared group", config(64 * MIB, [{ name: "a", memory: 100 * MIB, ttlMs: 0 }, { name: "b", ttlMs: 0 }]),
      ["leaving nothing", `${100 * MIB}`]],
    ["explicit sizes alone above --memory", config(64 * MIB, [{ name: "a", memory: 48 * MIB, ttlMs: 0 }, { name: "b", memory: 48 * MIB, ttlMs: 0 }]),
      [`${96 * MIB}`, `${64 * MIB}`]],
  ];
  test.each(OVER)("over-allocation is refused: %s", (_name, cfg, parts) => {
    let message = "";
    try {
      const split = splitMemory(cfg);
      message = `no error; split = ${JSON.stringify(split)}`;
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      message = (e as Error).message;
    }
    for (const part of parts) expect(message).toContain(part);
  });

  test("splitMemory of a parsed command line", () => {
    const cfg = run(["--memory", "96mb", "--group", "a:32mb:30s", "--group", "b"]);
    expect(splitMemory(cfg)).toEqual([{ name: "a", memory: 32 * MIB, ttlMs: 30_000 }, { name: "b", memory: 64 * MIB, ttlMs: 0 }]);
  });
});
