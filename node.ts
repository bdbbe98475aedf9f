/**
 * node.ts — the command line: argv → config → a running node. No cache logic lives here.
 *
 *   bun run node.ts --port 8001
 *
 * SIGINT/SIGTERM: stop accepting, flush what is owed, exit 0. A second signal exits at once.
 * SIGHUP: re-read the peers file.
 */
import { CacheNode } from "./src/server/cache-node.ts";
import { ConfigError, VERSION, parseArgs } from "./src/server/config.ts";
import { USAGE } from "./src/server/usage.ts";

async function main(): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs(process.argv.slice(2));
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    console.error(`mybuncache: ${e.message}`);
    process.exit(2);
  }
  if (parsed.kind === "help") return console.log(USAGE);
  if (parsed.kind === "version") return console.log(`mybuncache ${VERSION}`);
  let node: CacheNode;
  try {
    node = await CacheNode.open(parsed.config);
  } catch (e) {
    console.error(`mybuncache: cannot start: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(1);
  }
  const groups = node.groups.all().map((g) => `${g.name}=${(g.store.capacity / 1048576).toFixed(1)}MiB${g.loader ? "+loader" : ""}`).join(",");
  const { authToken, ...shown } = node.config;
  node.logger.info(`mybuncache ${VERSION} listening on ${node.address}`, { groups, pid: process.pid });
  node.logger.info("effective config", { ...shown, groups: undefined, auth: authToken === undefined ? "off" : "token" });
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) process.exit(1);
    stopping = true;
    node.logger.info("shutting down", { signal });
    node.close().then(() => process.exit(0));
  };
  process.on("SIGINT", () => stop("SIGINT"));
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGHUP", () => {
    node.logger.info("SIGHUP: re-reading the peers");
    node.reloadPeers();
  });
}

await main();
