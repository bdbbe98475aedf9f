/**
 * listenError says why a port could not be opened: which one (the flag that names it, the
 * address) and the cause in words, not Bun's "Failed to listen at 127.0.0.1" that names neither.
 */
import { isIP } from "node:net";
import { hostPort } from "../bytes/bytes.ts";
import { errorText } from "../protocol/errors.ts";
const UNRESOLVED = "the host name could not be resolved (--host takes an address, or a name this host resolves)";
const CAUSES: Record<string, string> = {
  EADDRINUSE: "the address is in use (another process listens on it)",
  EACCES: "permission denied (ports below 1024 need privileges)",
  EADDRNOTAVAIL: "no interface of this host has that address",
  ENOTFOUND: UNRESOLVED,
};

export function listenError(what: string, host: string, port: number, e: unknown): Error {
  return new Error(`cannot listen on ${hostPort(host, port)} for ${what}: ${causeOf(host, e)}`, { cause: e });
}

function causeOf(host: string, e: unknown): string {
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code === "string" && code !== "") return CAUSES[code] ?? code;
  // Bun.listen's error for a name that did not resolve has no code ("Failed to listen at NAME":
  // getaddrinfo sets no errno); a name that resolved and could not be bound has the bind's.
  if (isIP(host) === 0) return UNRESOLVED;
  return errorText(e);
}
