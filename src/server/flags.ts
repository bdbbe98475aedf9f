/**
 * parseArgs reads the flags of `node.ts` into a `NodeConfig` (config.ts), starting from its
 * `DEFAULTS`, or throws `ConfigError` with a message that names the flag and what it expected.
 * Every flag is a `case` of its switch (a test reads them from this file to check that usage.ts
 * lists each); the syntax of their values (sizes, durations, group specs) is flag-values.ts, and
 * the checks across flags, once all are read, config-checks.ts.
 */
import { readFileSync } from "node:fs";
import { ConfigError, DEFAULTS, type NodeConfig } from "./config.ts";
import { checkConfig } from "./config-checks.ts";
import {
  parseGroup, parseDialMember, parseInteger, parseLoadTimeout, parseMember, parseSize, parseSwitch, parseTimer, parseTimerAtLeast, parseTtl,
} from "./flag-values.ts";
import { LOG_LEVELS, type LogLevel } from "./log.ts";

/** MIN_GC_HEADROOM_BYTES: a smaller headroom would have the memory watch collect at every check. */
export const MIN_GC_HEADROOM_BYTES = 8 * 1024 * 1024;

/** MIN_SNAPSHOT_INTERVAL_MS: a shorter --snapshot-interval would rewrite the whole cache back to back. */
const MIN_SNAPSHOT_INTERVAL_MS = 1000;

export type ParseResult = { kind: "run"; config: NodeConfig } | { kind: "help" } | { kind: "version" };

function readTokenFile(path: string): string {
  try {
    return readFileSync(path, "utf8").trim();
  } catch (e) {
    throw new ConfigError(`--auth-token-file ${path}: ${(e as Error).message}`);
  }
}

export function parseArgs(argv: readonly string[], env: Record<string, string | undefined> = process.env): ParseResult {
  const c: NodeConfig = { ...DEFAULTS, groups: [] };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const eq = arg.indexOf("=");
    const flag = eq > 0 ? arg.slice(0, eq) : arg;
    const inline = eq > 0 ? arg.slice(eq + 1) : undefined;
    const value = (): string => {
      if (inline !== undefined) return inline;
      const v = argv[++i];
      if (v === undefined) throw new ConfigError(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case "--help":
      case "-h":
        return { kind: "help" };
      case "--version":
        return { kind: "version" };
      case "--port":
        c.port = parseInteger(flag, value(), 0, 65535);
        break;
      case "--host":
        c.host = value();
        if (c.host.trim() === "") throw new ConfigError(`${flag} needs an address or name to listen on`);
        break;
      case "--memory":
        c.memory = parseSize(flag, value());
        break;
      case "--group":
        c.groups.push(parseGroup(value()));
        break;
      case "--max-item-size":
        c.maxItemSize = parseSize(flag, value());
        break;
      case "--max-key-size":
        c.maxKeySize = parseInteger(flag, value(), 1, 65535);
        break;
      case "--max-frame-size":
        c.maxFrameSize = parseSize(flag, value());
        break;
      case "--max-connections":
        c.maxConnections = parseInteger(flag, value(), 1, 1_000_000);
        break;
      case "--max-output":
        c.maxOutputBytes = parseSize(flag, value());
        break;
      case "--expiry-interval":
        c.expiryIntervalMs = parseTimerAtLeast(flag, value(), 1, "active expiry runs on this timer");
        break;
      case "--expiry-budget":
        c.expiryBudget = parseInteger(flag, value(), 1, 1e9);
        break;
      case "--log-level": {
        const v = value();
        if (!(LOG_LEVELS as readonly string[]).includes(v)) throw new ConfigError(`--log-level must be one of ${LOG_LEVELS.join(", ")}, got '${v}'`);
        c.logLevel = v as LogLevel;
        break;
      }
      case "--log-json":
        c.logJson = parseSwitch(flag, inline);
        break;
      case "--loaders":
        c.loaders = value();
        break;
      case "--loader-threads":
        c.loaderThreads = parseInteger(flag, value(), 1, 1024);
        break;
      case "--loader-concurrency":
        c.loaderConcurrency = parseInteger(flag, value(), 1, 10_000);
        break;
      case "--loader-queue":
        c.loaderQueue = parseInteger(flag, value(), 0, 1_000_000);
        break;
      case "--max-loads":
        c.maxLoads = parseInteger(flag, value(), 1, 1_000_000);
        break;
      case "--load-timeout":
        c.loadTimeoutMs = parseLoadTimeout(flag, value());
        break;
      case "--self":
        c.self = parseMember(flag, value());
        break;
      case "--peers":
        c.peers = value().split(",").filter((p) => p.trim() !== "").map((p) => parseDialMember(flag, p.trim()));
        // (`--peers=` from an unset variable would make a clustered node of no members, quietly taking a mirror share)
        if (c.peers.length === 0) throw new ConfigError(`${flag} needs at least one member (host:port, comma-separated)`);
        break;
      case "--peers-file":
        c.peersFile = value();
        // (as `--peers=`: an unset variable would make a clustered node of no members)
        if (c.peersFile.trim() === "") throw new ConfigError(`${flag} needs a file path`);
        break;
      case "--peers-dns":
        c.peersDns = parseDialMember(flag, value());
        break;
      case "--peers-dns-interval":
        c.peersDnsIntervalMs = parseTimerAtLeast(flag, value(), 100, "the name is looked up on this timer");
        break;
      case "--vnodes":
        c.vnodes = parseInteger(flag, value(), 1, 10_000);
        break;
      case "--mirror-share": {
        const v = value();
        const f = v.trim() === "" ? NaN : Number(v);
        if (!(f >= 0 && f < 1)) throw new ConfigError(`--mirror-share expects a fraction in [0, 1), got '${v}'`);
        c.mirrorShare = f;
        break;
      }
      case "--mirror-ttl":
        c.mirrorTtlMs = parseTtl(flag, value(), parseTimer);
        break;
      case "--peer-timeout":
        c.peerTimeoutMs = parseTimerAtLeast(flag, value(), 1, "a call to a peer needs a deadline");
        break;
      case "--peer-connections":
        c.peerConnections = parseInteger(flag, value(), 1, 64);
        break;
      case "--auth-token":
        c.authToken = value();
        break;
      case "--auth-token-file":
        c.authTokenFile = value();
        c.authToken = readTokenFile(c.authTokenFile);
        break;
      case "--tls-cert":
        c.tlsCert = value();
        break;
      case "--tls-key":
        c.tlsKey = value();
        break;
      case "--tls-ca":
        c.tlsCa = value();
        break;
      case "--insecure":
        c.insecure = parseSwitch(flag, inline);
        break;
      case "--idle-timeout":
        // (0 is "never": 0.4ms, rounded to 0, is refused, not taken as never)
        c.idleTimeoutMs = parseTtl(flag, value(), parseTimer);
        break;
      case "--seed-errors":
        c.seedErrors = parseSwitch(flag, inline);
        break;
      case "--max-requests-per-event":
        c.maxRequestsPerEvent = parseInteger(flag, value(), 1, 1_000_000);
        break;
      case "--max-buffered":
        c.maxBufferedBytes = parseSize(flag, value());
        break;
      case "--gc-headroom": {
        const v = value();
        // 0 in any spelling (0, 0mb, 0.0) switches the watch off; otherwise at least 8 MiB, so
        // it cannot collect at every check.
        c.gcHeadroomBytes = /^0+(\.0+)?\s*(b|k|kb|m|mb|g|gb)?$/i.test(v.trim()) ? 0 : parseSize(flag, v);
        if (c.gcHeadroomBytes !== 0 && c.gcHeadroomBytes < MIN_GC_HEADROOM_BYTES) {
          throw new ConfigError(`${flag} must be 0 (off) or at least 8mb, got '${v}'`);
        }
        break;
      }
      case "--admin-port":
        c.adminPort = parseInteger(flag, value(), 0, 65535);
        break;
      case "--snapshot":
        c.snapshot = value();
        // (`--snapshot=` from an unset variable: the node ran, then failed its only write at shutdown)
        if (c.snapshot.trim() === "") throw new ConfigError(`${flag} needs a file path`);
        break;
      case "--snapshot-interval": {
        const text = value();
        c.snapshotIntervalMs = parseTimer(flag, text);
        // (0 is "only at shutdown"; 0.4ms, rounded to 0, is not)
        if (c.snapshotIntervalMs < MIN_SNAPSHOT_INTERVAL_MS && !/^0*(\.0*)?\s*[a-z]*$/i.test(text.trim())) {
          throw new ConfigError(`${flag} must be 0 (only at shutdown) or at least 1s: each write is of the whole cache`);
        }
        break;
      }
      default:
        // (Its value not repeated: `--auth_token=SECRET`, a typo, went to the log whole.)
        throw new ConfigError(`unknown flag '${inline === undefined ? arg : `${flag}=…`}' (see --help)`);
    }
  }
  checkConfig(c, env);
  return { kind: "run", config: c };
}
