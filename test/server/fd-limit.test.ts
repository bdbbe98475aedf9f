/**
 * --max-connections past the open-file limit: the node could not accept the connections it allows
 * (clients timed out instead of getting OVERLOADED, and the accept loop spun on EMFILE), so it
 * lowers the limit to fit, with a warning, as Redis does for maxclients.
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
import { FD_RESERVE, fitConnections, openFilesLimit } from "../../src/server/fd-limit.ts";
import { Logger } from "../../src/server/log.ts";
import { ROOT } from "../support/node-process.ts";
import { LogSink, RawSocket, startNode } from "./support.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const LIMITS = `Limit                     Soft Limit           Hard Limit           Units
Max processes             96141                96141                processes
Max open files            1024                 4096                 files
Max locked memory         8388608              8388608              bytes
`;

describe("the open-file limit", () => {
  test("is read from /proc/self/limits (the soft limit); unlimited or absent is unknown", () => {
    expect(openFilesLimit(LIMITS)).toBe(1024);
    expect(openFilesLimit(LIMITS.replace("1024                 4096", "unlimited            unlimited"))).toBeUndefined();
    expect(openFilesLimit("")).toBeUndefined();
    if (process.platform === "linux") expect(openFilesLimit()).toBeGreaterThan(0);
  });

  test("--max-connections is lowered to fit it, with a warning; within it, kept", () => {
    const lines: string[] = [];
    const logger = new Logger("info", false, (line) => void lines.push(line));
    expect(fitConnections(10_000, 1024, logger)).toBe(1024 - FD_RESERVE);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain("--max-connections lowered");
    expect(fitConnections(500, 1024, logger)).toBe(500);
    expect(fitConnections(10_000, undefined, logger)).toBe(10_000);
    expect(fitConnections(10, 20, logger)).toBe(1);
    expect(fitConnections(1000, 1024, logger, 2 * 99)).toBe(1024 - FD_RESERVE - 198); // 100 members, 2 connections each
    expect(lines).toHaveLength(3);
  });

  test("a node started under `ulimit -n 256` says so, and serves", async () => {
    const proc = Bun.spawn(["bash", "-c", "ulimit -n 256 && exec bun run node.ts --port 0"], { cwd: ROOT, stdout: "ignore", stderr: "pipe" });
    try {
      const reader = proc.stderr.getReader();
      let log = "";
      let port = 0;
      while (port === 0) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`node exited: ${log}`);
        log += new TextDecoder().decode(value);
        const m = /listening on [^\s]+:(\d+)/.exec(log);
        if (m) port = Number(m[1]);
      }
      expect(log).toContain("--max-connections lowered");
      expect(log).toContain(`maxConnections=${256 - FD_RESERVE}`);
      await using client = new CacheClient({ host: "127.0.0.1", port, timeoutMs: 2000 });
      await client.set("default", "k", "v");
      expect(new TextDecoder().decode((await client.get("default", "k")).value)).toBe("v");
    } finally {
      proc.kill();
      await proc.exited;
    }
  });
});

describe("connections over the limit", () => {
  test("are logged one line a second at most, with how many were refused since", async () => {
    // One line per connection: a client opening connections in a loop filled the log as fast.
    const sink = new LogSink();
    await using node = startNode({ maxConnections: 1 }, { logger: sink.logger });
    const sockets = [await RawSocket.connect(node.port)];
    for (let i = 0; i < 20; i++) sockets.push(await RawSocket.connect(node.port));
    const deadline = Date.now() + 2000;
    while (node.server.counters.connectionsRejected < 20 && Date.now() < deadline) await Bun.sleep(5);
    expect(node.server.counters.connectionsRejected).toBe(20);
    expect(sink.lines.filter((l) => l.includes("connection over the limit"))).toHaveLength(1);
    for (const s of sockets) s.close();
  });
});
