/**
 * Helpers for tests that run real `bun run node.ts` processes: free loopback ports, and a node
 * process started and awaited until its ready line, with its log kept.
 */
import { join } from "node:path";

export const ROOT = join(import.meta.dir, "../..");

/** freePorts finds `n` loopback ports that are free now (listen on 0, note the port, close). */
export function freePorts(n: number): number[] {
  // All held open until the last is picked: closed one by one, the kernel could hand out the same
  // port twice (seen: a soak's three nodes got two ports, one twice, and one failed to listen).
  // Nor is a port this process handed out before given again (a restarted node reuses its own).
  const held: { port: number; stop(closeActive?: boolean): void }[] = [];
  const ports: number[] = [];
  try {
    for (let tries = 0; ports.length < n; tries++) {
      const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
      held.push(l);
      if (handedOut.has(l.port) && tries < 100) continue;
      handedOut.add(l.port);
      ports.push(l.port);
    }
  } finally {
    for (const l of held) l.stop(true);
  }
  return ports;
}

/** handedOut: the ports freePorts gave this process. */
const handedOut = new Set<number>();

export interface NodeProcess {
  proc: ReturnType<typeof Bun.spawn>;
  port: number;
  /** log is everything the node wrote to stderr so far. */
  log(): string;
}

/**
 * spawnNode starts `bun run node.ts ARGS` and resolves once it prints its ready line; with
 * `openFiles`, under that limit of open files (`ulimit -n`; ARGS must then need no quoting).
 */
export async function spawnNode(args: string[], env: Record<string, string> = {}, openFiles?: number): Promise<NodeProcess> {
  const command = openFiles === undefined
    ? ["bun", "run", "node.ts", ...args]
    : ["bash", "-c", `ulimit -n ${openFiles} && exec bun run node.ts ${args.join(" ")}`];
  const proc = Bun.spawn(command, {
    cwd: ROOT, stdout: "ignore", stderr: "pipe", env: { ...process.env, ...env },
  });
  const reader = proc.stderr.getReader();
  let log = "";
  let port = 0;
  while (port === 0) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`node exited before listening: ${log}`);
    log += new TextDecoder().decode(value);
    const m = /listening on [^\s]+:(\d+)/.exec(log);
    if (m) port = Number(m[1]);
  }
  void (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      log += new TextDecoder().decode(value);
    }
  })();
  return { proc, port, log: () => log };
}
