/**
 * The checks of a parsed config across its flags, for flags.ts: what cannot run together (a frame
 * too small for the largest item, --tls-ca without --tls-cert, a snapshot with moving members,
 * more --memory than the machine has, a non-loopback address without an auth token, ...). Each
 * refusal is a `ConfigError` that names the flags and what they need.
 */
import { readFileSync, statSync } from "node:fs";
import { isIP } from "node:net";
import { totalmem } from "node:os";
import { ConfigError, type NodeConfig } from "./config.ts";
import { tokenFault } from "./access.ts";

/** FRAME_OVERHEAD_BYTES bounds a Set call's bytes besides its key and value (names, headers, ttl). */
const FRAME_OVERHEAD_BYTES = 1024;

/**
 * checkConfig refuses a config whose flags do not go together; first it takes the auth token from
 * MYBUNCACHE_AUTH_TOKEN in `env` when no flag gave one.
 */
export function checkConfig(c: NodeConfig, env: Record<string, string | undefined>): void {
  if (c.maxItemSize < 64) throw new ConfigError(`--max-item-size must be at least 64 bytes`);
  for (const g of c.groups) {
    if (g.maxItemSize !== undefined && !(g.maxItemSize >= 64 && g.maxItemSize <= c.maxItemSize)) {
      throw new ConfigError(`--group ${g.name} maxitem must be from 64 bytes to --max-item-size (${c.maxItemSize}), got ${g.maxItemSize}`);
    }
  }
  const ram = machineMemoryBytes();
  if (c.memory > ram) {
    throw new ConfigError(`--memory ${c.memory} B is more than this machine's memory (${ram} B): the node could never hold it`);
  }
  // (Trimmed as a token file is: a secret exposed as a variable often ends in a newline.)
  if (c.authToken === undefined && env.MYBUNCACHE_AUTH_TOKEN) c.authToken = env.MYBUNCACHE_AUTH_TOKEN.trim();
  const tokenFaulty = c.authToken === undefined ? undefined : tokenFault(c.authToken);
  if (tokenFaulty !== undefined) throw new ConfigError(tokenFaulty);
  if ((c.tlsCert === undefined) !== (c.tlsKey === undefined)) throw new ConfigError("--tls-cert and --tls-key go together");
  if (c.tlsCa !== undefined && c.tlsCert === undefined) {
    throw new ConfigError("--tls-ca checks the peers of a node that speaks TLS: it needs --tls-cert and --tls-key (alone it would be ignored, and peers dialed without TLS)");
  }
  if (!c.insecure && c.authToken === undefined && !isLoopback(c.host)) {
    throw new ConfigError(`refusing to serve ${c.host} without an auth token: set --auth-token-file (or MYBUNCACHE_AUTH_TOKEN), or pass --insecure`);
  }
  if (c.snapshotIntervalMs > 0 && c.snapshot === undefined) throw new ConfigError("--snapshot-interval needs --snapshot (the file to write)");
  const sources = [c.peers, c.peersFile, c.peersDns].filter((x) => x !== undefined).length;
  if (sources > 1) throw new ConfigError("use one of --peers, --peers-file and --peers-dns");
  checkSnapshotMembership(c);
  if (c.maxFrameSize > 0x7fffffff) throw new ConfigError(`--max-frame-size must be below 2 GiB`);
  // A Set of the largest item must fit one frame, or it could only be refused by closing the
  // connection (a frame over the limit is a protocol error) instead of VALUE_TOO_LARGE.
  const frameNeeds = c.maxItemSize + c.maxKeySize + FRAME_OVERHEAD_BYTES;
  if (c.maxFrameSize < frameNeeds) {
    throw new ConfigError(
      `--max-frame-size ${c.maxFrameSize} cannot carry a Set of the largest item: it must be at least ` +
        `--max-item-size + --max-key-size + ${FRAME_OVERHEAD_BYTES} = ${frameNeeds}`,
    );
  }
  // Likewise a frame the node accepts must fit what its connections may hold: past the cap, a
  // client's legal Set could only be answered by closing its connection. (A cold multi-key
  // request holds more than its frame while its loads run: running.md says to leave room.)
  if (c.maxBufferedBytes < c.maxFrameSize) {
    throw new ConfigError(`--max-buffered ${c.maxBufferedBytes} is less than one frame the node accepts: it must be at least --max-frame-size (${c.maxFrameSize})`);
  }
  const names = new Set<string>();
  for (const g of c.groups) {
    if (names.has(g.name)) throw new ConfigError(`group '${g.name}' defined twice`);
    names.add(g.name);
  }
}

/**
 * secretFileWarning says what is wrong with the permissions of a secret file `path` (the auth
 * token file, the TLS key), or undefined: other users than its owner may read or change it (any
 * bit of 0o077, as ssh refuses for a private key). The node starts anyway, with a warning.
 */
export function secretFileWarning(path: string): { file: string; mode: string } | undefined {
  let mode: number;
  try {
    mode = statSync(path).mode & 0o777;
  } catch {
    return undefined; // (read already; gone since: nothing to say about it)
  }
  return (mode & 0o077) === 0 ? undefined : { file: path, mode: `0${mode.toString(8)}` };
}

/**
 * isLoopback tells whether a --host value only accepts local connections: `localhost`, or an
 * address (not a name: `127.attacker.example` may resolve anywhere) in 127.0.0.0/8, or ::1.
 */
export function isLoopback(host: string): boolean {
  if (host === "localhost") return true;
  const v = isIP(host);
  if (v === 4) return host.startsWith("127.");
  if (v === 6) return host === "::1" || host === "0:0:0:0:0:0:0:1" || /^::ffff:127\./i.test(host);
  return false;
}

/**
 * checkSnapshotMembership refuses a snapshot on a node whose members can change (--peers-file,
 * --peers-dns): while it was away its keys had other owners, which took their writes, and the
 * snapshot would bring back the values those replaced (ring purges drop what a running node holds
 * of such keys; a restart has nothing to purge against). With a fixed --peers list the keys of a
 * node that is down have no other owner (writes to them fail), so its snapshot is still current.
 */
export function checkSnapshotMembership(c: Pick<NodeConfig, "snapshot" | "peersFile" | "peersDns">): void {
  if (c.snapshot === undefined || (c.peersFile === undefined && c.peersDns === undefined)) return;
  throw new ConfigError(
    `--snapshot cannot be used with ${c.peersFile !== undefined ? "--peers-file" : "--peers-dns"}: while this node was away ` +
      "other members owned its keys and took their writes, which its snapshot would undo; use a fixed --peers list, or no snapshot",
  );
}

/**
 * machineMemoryBytes is the memory this process can have: the machine's, or its cgroup's limit
 * when that is lower (a container). --memory above it is refused.
 */
function machineMemoryBytes(): number {
  let bytes = totalmem();
  for (const path of ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]) {
    try {
      const limit = Number(readFileSync(path, "utf8").trim());
      if (Number.isFinite(limit) && limit > 0 && limit < bytes) bytes = limit;
    } catch {
      // not in a cgroup with a memory limit (or not Linux)
    }
  }
  return bytes;
}
