/**
 * node.ts as a real process: `bun run node.ts --port 0 ...` prints one ready line with its
 * address, serves the stock Apache client, shuts down cleanly on SIGTERM and SIGINT, and
 * refuses bad command lines with a clear message and exit code.
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { VERSION } from "../../src/server/config.ts";
import { RawSocket, apacheClient, roundTrip, types } from "./support.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const ROOT = join(import.meta.dir, "../..");
const READY = /listening on 127\.0\.0\.1:(\d+)/;

/**
 * NodeProcess is a spawned node.ts whose stdout and stderr go to files, read as they grow. (Not
 * pipes: about one run in ten, the parent's read of a pipe stalled after the child's first line,
 * so `exit` waited for the rest of a process that had exited 0 until the test timed out.)
 */
class NodeProcess implements AsyncDisposable {
  readonly proc: ReturnType<typeof spawnNode>;
  private readonly dir = mkdtempSync(join(tmpdir(), "node-cli-"));

  constructor(args: string[]) {
    this.proc = spawnNode(args, this.dir);
  }

  /** stderr is what the node has written to stderr so far. */
  get stderr(): string {
    return readFileSync(join(this.dir, "stderr"), "utf8");
  }

  /** ready resolves with the port of the ready line, or fails if the process exits first. */
  async ready(ms = 10_000): Promise<number> {
    const deadline = Date.now() + ms;
    for (;;) {
      const m = READY.exec(this.stderr);
      if (m) return Number(m[1]);
      if (this.proc.exitCode !== null) throw new Error(`node exited ${this.proc.exitCode} before ready: ${this.stderr}`);
      if (Date.now() > deadline) throw new Error(`no ready line within ${ms} ms: ${this.stderr}`);
      await Bun.sleep(25);
    }
  }

  /** exit waits for the process to end, and returns its code and all it wrote. */
  async exit(): Promise<{ code: number; stdout: string; stderr: string }> {
    const code = await this.proc.exited;
    return { code, stdout: readFileSync(join(this.dir, "stdout"), "utf8"), stderr: this.stderr };
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.proc.exitCode === null) this.proc.kill("SIGKILL");
    await this.proc.exited;
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function spawnNode(args: string[], dir: string) {
  return Bun.spawn([process.execPath, "run", "node.ts", ...args], {
    cwd: ROOT,
    stdin: "ignore",
    stdout: Bun.file(join(dir, "stdout")),
    stderr: Bun.file(join(dir, "stderr")),
    env: { ...process.env, NO_COLOR: "1" },
  });
}

/** runToExit runs node.ts with `args` and returns how it ended. */
async function runToExit(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  await using node = new NodeProcess(args);
  return await node.exit();
}

describe("node.ts serves and shuts down", () => {
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    test(`one ready line, a Set/Get from the stock client, then ${signal} exits 0`, async () => {
      await using node = new NodeProcess(["--port", "0"]);
      const port = await node.ready();
      expect(port).toBeGreaterThan(0);
      expect(node.stderr.split("\n").filter((l) => READY.test(l)).length).toBe(1);
      expect(node.stderr).toContain(`mybuncache ${VERSION}`);
      expect(node.stderr).toContain("default="); // the group list of the ready line
      expect(await roundTrip(port)).toBe("ok");

      // An idle connection must not hold up the shutdown; it is closed by the server.
      const idle = await RawSocket.connect(port);
      node.proc.kill(signal);
      const { code, stderr } = await node.exit();
      expect(code).toBe(0);
      expect(stderr).toContain("shutting down");
      expect(stderr).toContain(`signal=${signal}`);
      await idle.closed;
      // Nothing listens any more.
      expect(await Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {} } }).then(() => "connected", () => "refused")).toBe("refused");
    });
  }

  test("--group a:32mb:30s --group b starts with both groups and no 'default'", async () => {
    await using node = new NodeProcess(["--port", "0", "--group", "a:32mb:30s", "--group", "b"]);
    const port = await node.ready();
    expect(node.stderr).toMatch(/groups=a=32\.0MiB,b=32\.0MiB/);
    const { client, close } = await apacheClient(port);
    try {
      await expect(client.Get(new types.Request({ group: "default", key: "k" }))).rejects.toMatchObject({ code: 2 });
      await expect(client.Get(new types.Request({ group: "nope", key: "k" }))).rejects.toMatchObject({ code: 2 });
      await expect(client.Get(new types.Request({ group: "b", key: "k" }))).rejects.toMatchObject({ code: 1 });
      await expect(client.Get(new types.Request({ group: "a", key: "k" }))).rejects.toMatchObject({ code: 1 });
      // Group a's default TTL (30 s) applies to a set with ttl 0; group b has none.
      await client.Set(new types.SetRequest({ group: "a", key: "k", value: Buffer.from("va"), ttl: 0 }));
      await client.Set(new types.SetRequest({ group: "b", key: "k", value: Buffer.from("vb"), ttl: 0 }));
      const a = await client.Get(new types.Request({ group: "a", key: "k" }));
      expect(a.value.toString()).toBe("va");
      const ttl = Number(a.ttlRemainingMs);
      expect(ttl).toBeGreaterThan(25_000);
      expect(ttl).toBeLessThanOrEqual(30_000);
      const b = await client.Get(new types.Request({ group: "b", key: "k" }));
      expect(b.value.toString()).toBe("vb");
      expect(b.ttlRemainingMs).toBeNull();
    } finally {
      close();
    }
    node.proc.kill("SIGTERM");
    expect((await node.exit()).code).toBe(0);
  });
});

describe("node.ts command-line errors", () => {
  test("--help prints the usage on stdout and exits 0", async () => {
    const { code, stdout, stderr } = await runToExit(["--help"]);
    expect(code).toBe(0);
    expect(stdout).toContain("Usage: bun run node.ts");
    expect(stdout).toContain("--group NAME[:SIZE[:TTL[:OPTIONS]]]");
    expect(stdout).toContain("--loaders PATH");
    expect(stderr).not.toMatch(READY);
  });

  test("--version prints the version and exits 0", async () => {
    const { code, stdout } = await runToExit(["--version"]);
    expect(code).toBe(0);
    expect(stdout.trim()).toBe(`mybuncache ${VERSION}`);
  });

  const BAD: [string[], string[]][] = [
    [["--bogus"], ["unknown flag", "--bogus"]],
    [["--port"], ["--port", "needs a value"]],
    [["--port", "99999"], ["--port", "99999"]],
    [["--memory", "lots"], ["--memory", "lots"]],
    [["--group", "a", "--group", "a"], ["group 'a' defined twice"]],
    [["--log-level", "loud"], ["--log-level", "loud"]],
  ];
  /** refused runs the node with `args`, and checks it exits `code` before listening, its message starting `prefix` and naming `parts`. */
  async function refused(args: string[], code: number, prefix: string, parts: string[]): Promise<void> {
    const run = await runToExit(["--port", "0", ...args]);
    expect(run.code).toBe(code);
    expect(run.stderr).toStartWith(prefix);
    for (const part of parts) expect(run.stderr).toContain(part);
    expect(run.stderr).not.toMatch(READY);
  }
  test.each(BAD)("%p exits 2 with a message naming the flag", (args, parts) => refused(args, 2, "mybuncache: ", parts));

  // What only starting finds (a file a flag names, a host name, the ports) exits 1: docs/running.md, "Exit codes".
  const START: [string[], string[]][] = [
    [["--host", "no-such-host.invalid", "--insecure"], ["no-such-host.invalid", "the host name could not be resolved"]],
    [["--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"], ["--tls-cert", "/nonexistent/cert.pem"]],
  ];
  test.each(START)("%p exits 1: cannot start, saying why", (args, parts) => refused(args, 1, "mybuncache: cannot start: ", parts));

  test("--memory 1k is too small: exits non-zero and says why", async () => {
    const { code, stderr } = await runToExit(["--port", "0", "--memory", "1k"]);
    expect(code).not.toBe(0);
    expect(stderr).toContain("cannot start");
    expect(stderr).toContain("group 'default'");
    expect(stderr).toContain("too small");
    expect(stderr).not.toMatch(READY);
  });

  test("a port already in use exits non-zero and says so", async () => {
    await using taken = new NodeProcess(["--port", "0"]);
    const port = await taken.ready();
    const { code, stderr } = await runToExit(["--port", String(port)]);
    expect(code).not.toBe(0);
    expect(stderr).toContain("cannot start");
    expect(stderr).not.toMatch(READY);
    taken.proc.kill("SIGTERM");
    expect((await taken.exit()).code).toBe(0);
  });
});
