/**
 * The open-file limit and the client connections it leaves room for: `fitConnections` lowers
 * --max-connections to the process's soft limit on open files (`openFilesLimit`), less FD_RESERVE
 * for everything but client connections and the descriptors of the node's connections to its peers.
 */
import { readFileSync } from "node:fs";
import type { Logger } from "./log.ts";

/**
 * FD_RESERVE: file descriptors kept for all but client connections: the admin port's connections
 * (3 each, ADMIN_MAX_CONNECTIONS of them: admin-gate.ts), loader threads, snapshot and log files,
 * listeners. (Peers are counted apart.)
 */
export const FD_RESERVE = 128;

/**
 * fitConnections lowers --max-connections to what the process's open-file limit allows, less
 * FD_RESERVE and `peerFds` (the node's connections to its peers), with a warning (as Redis does
 * for maxclients). Past that limit the node cannot accept at all: clients
 * time out instead of getting OVERLOADED, and the accept loop spins on EMFILE.
 */
export function fitConnections(requested: number, openFiles: number | undefined, logger: Logger, peerFds = 0): number {
  const reserve = FD_RESERVE + peerFds;
  if (openFiles === undefined || requested + reserve <= openFiles) return requested;
  const fitted = Math.max(1, openFiles - reserve);
  logger.warn("--max-connections lowered to fit the open-file limit (raise `ulimit -n` to allow more)", {
    requested, openFiles, reserved: reserve, maxConnections: fitted,
  });
  return fitted;
}

/** openFilesLimit is the process's soft limit on open files (/proc/self/limits), or undefined when unknown or unlimited. */
export function openFilesLimit(limits?: string): number | undefined {
  let text = limits;
  if (text === undefined) {
    try {
      text = readFileSync("/proc/self/limits", "utf8");
    } catch {
      return undefined; // not Linux
    }
  }
  const m = /^Max open files\s+(\d+)\s/m.exec(text);
  return m === null ? undefined : Number(m[1]);
}
