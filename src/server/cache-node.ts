/**
 * CacheNode is one running MyBunCache node: its groups and its Thrift port.
 *
 * `startNode(config)` splits the node's memory among the groups, builds them, and listens. The
 * node owns no process-wide state (signals and exit belong to `node.ts`), so tests start several
 * nodes in one process on port 0 and close them with `await using`.
 */
import { Group, Groups } from "../cluster/group.ts";
import { resolveLimits } from "../protocol/limits.ts";
import { CacheServer } from "./cache-server.ts";
import { ConfigError, DEFAULTS, type GroupSpec, type NodeConfig } from "./config.ts";
import { Logger } from "./log.ts";

export interface NodeDeps {
  clock?: () => number;
  logger?: Logger;
}

export class CacheNode {
  readonly config: NodeConfig;
  readonly groups: Groups;
  readonly server: CacheServer;
  readonly logger: Logger;

  private constructor(config: NodeConfig, groups: Groups, server: CacheServer, logger: Logger) {
    this.config = config;
    this.groups = groups;
    this.server = server;
    this.logger = logger;
  }

  get port(): number {
    return this.server.port;
  }

  get address(): string {
    return `${this.server.host}:${this.server.port}`;
  }

  async close(): Promise<void> {
    await this.server.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  static start(partial: Partial<NodeConfig> = {}, deps: NodeDeps = {}): CacheNode {
    const config: NodeConfig = { ...DEFAULTS, ...partial };
    const clock = deps.clock ?? Date.now;
    const logger = deps.logger ?? new Logger(config.logLevel, config.logJson);
    const groups = new Groups();
    for (const spec of splitMemory(config)) {
      groups.add(new Group({
        name: spec.name,
        memory: spec.memory!,
        defaultTtlMs: spec.ttlMs,
        store: { maxItemSize: config.maxItemSize, clock },
      }));
    }
    const limits = resolveLimits({
      maxFrameBytes: config.maxFrameSize,
      maxKeyBytes: config.maxKeySize,
      maxValueBytes: config.maxItemSize,
    });
    const server = new CacheServer(groups, {
      host: config.host,
      port: config.port,
      maxConnections: config.maxConnections,
      maxOutputBytes: config.maxOutputBytes,
      limits,
      expiryIntervalMs: config.expiryIntervalMs,
      expiryBudget: config.expiryBudget,
      drainTimeoutMs: 5_000,
      clock,
      logger,
    });
    return new CacheNode(config, groups, server, logger);
  }
}

/** splitMemory gives each group its memory: explicit sizes first, an equal share of the rest. */
export function splitMemory(config: NodeConfig): Required<GroupSpec>[] {
  const specs: GroupSpec[] = config.groups.length > 0 ? config.groups : [{ name: "default", ttlMs: 0 }];
  const fixed = specs.reduce((sum, g) => sum + (g.memory ?? 0), 0);
  const open = specs.filter((g) => g.memory === undefined).length;
  if (open > 0 && fixed >= config.memory) {
    throw new ConfigError(`groups with explicit sizes use ${fixed} B of --memory ${config.memory} B, leaving nothing for the others`);
  }
  if (fixed > config.memory) {
    throw new ConfigError(`groups with explicit sizes need ${fixed} B, more than --memory ${config.memory} B: raise --memory`);
  }
  const share = open > 0 ? Math.floor((config.memory - fixed) / open) : 0;
  return specs.map((g) => ({ name: g.name, ttlMs: g.ttlMs, memory: g.memory ?? share }));
}
