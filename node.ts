/**
 * node.ts — the command line: argv → config → a running node. No cache logic lives here.
 *
 *   bun run node.ts --port 8001
 *
 * SIGINT/SIGTERM: stop accepting, flush what is owed, exit 0 (1 when the final snapshot failed). A
 * second signal exits at once with 1 (a snapshot write under way is abandoned, its temporary file
 * removed, and a snapshot not yet rewritten is moved aside). SIGHUP: re-read the peers (on a node
 * without peers it is logged and ignored).
 *
 * A promise rejected with no handler (a bug: ours, or of code the loaders module started in this
 * thread) is logged as an internal error and counted (`internal_errors`), and the node goes on.
 * Bun's default, exiting, would drop every client and the whole cache for a failure that touched
 * one request at most: what the server's own guards do for a connection's fault.
 */
import { CacheNode } from "./src/server/cache-node.ts";
import { ConfigError, VERSION, isClustered } from "./src/server/config.ts";
import { parseArgs } from "./src/server/flags.ts";
import { errorText } from "./src/protocol/errors.ts";
import { USAGE } from "./src/server/usage.ts";

/** NO_PEERS: what SIGHUP, the peers' reload signal, does on a node without peers. */
const NO_PEERS = "no peers to re-read (the node has no --peers, --peers-file or --peers-dns); ignored";

async function main(): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs(process.argv.slice(2));
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    console.error(`mybuncache: ${e.message}`);
    process.exit(2);
  }
  // The token is read: it is not left in the environment, which the loader threads get a copy of
  // (the loaders module's code, its dependencies, and whatever they start, could read it there).
  delete process.env.MYBUNCACHE_AUTH_TOKEN;
  if (parsed.kind === "help") return console.log(USAGE);
  if (parsed.kind === "version") return console.log(`mybuncache ${VERSION}`);
  // The signals are handled from the start: a snapshot may take a while to load, and SIGHUP's
  // default action would end the node. Stopped while starting, it exits at once (nothing was
  // served, and the snapshot is not written over); a SIGHUP then is moot (the peers are read
  // when it listens).
  let node: CacheNode | undefined;
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) {
      node?.abandonSnapshot(); // the one on disk would undo the writes taken since: moved aside
      process.exit(1);
    }
    stopping = true;
    if (node === undefined) {
      console.error(`mybuncache: ${signal} while starting; exiting`);
      process.exit(0);
    }
    const n = node;
    n.logger.info("shutting down", { signal });
    // A failed final snapshot exits 1: the old one was moved aside (CacheNode.finalSnapshotFailed).
    void n.close().then(() => process.exit(n.finalSnapshotFailed ? 1 : 0));
  };
  process.on("unhandledRejection", (reason: unknown) => {
    const stack = reason instanceof Error ? reason.stack : undefined;
    if (node === undefined) return console.error(`mybuncache: internal error: unhandled rejection: ${errorText(reason)}`);
    node.server.counters.internalErrors++;
    node.logger.error("internal error: unhandled rejection; the node goes on", { error: errorText(reason), stack });
  });
  process.on("SIGINT", () => stop("SIGINT"));
  process.on("SIGTERM", () => stop("SIGTERM"));
  const peered = isClustered(parsed.config);
  process.on("SIGHUP", () => {
    if (node === undefined) {
      return console.error(`mybuncache: SIGHUP while starting: ${peered ? "the peers are read once the node listens" : NO_PEERS}`);
    }
    if (!peered) return node.logger.info(`SIGHUP: ${NO_PEERS}`);
    node.logger.info("SIGHUP: re-reading the peers");
    node.reloadPeers();
  });
  try {
    node = await CacheNode.open(parsed.config);
  } catch (e) {
    console.error(`mybuncache: cannot start: ${errorText(e)}`);
    process.exit(1);
  }
  const groups = node.groups.all().map((g) => `${g.name}=${(g.store.capacity / 1048576).toFixed(1)}MiB${g.loader ? "+loader" : ""}`).join(",");
  const { authToken, ...shown } = node.config;
  node.logger.info(`mybuncache ${VERSION} listening on ${node.address}`, { groups, pid: process.pid });
  // The ports bound, not those asked for (0 = any free port).
  const ports = { port: node.port, ...(node.admin === undefined ? {} : { adminPort: node.admin.port }) };
  node.logger.info("effective config", { ...shown, ...ports, groups: undefined, auth: authToken === undefined ? "off" : "token" });
}

await main();
