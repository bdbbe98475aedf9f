/**
 * listenError says why a port could not be opened: which one (the flag that names it, the
 * address) and the cause in words, not Bun's "Failed to listen at 127.0.0.1" that names neither.
 */
import { hostPort } from "../bytes/bytes.ts";
const CAUSES: Record<string, string> = {
  EADDRINUSE: "the address is in use (another process listens on it)",
  EACCES: "permission denied (ports below 1024 need privileges)",
  EADDRNOTAVAIL: "no interface of this host has that address",
};

export function listenError(what: string, host: string, port: number, e: unknown): Error {
  const code = (e as { code?: unknown } | null)?.code;
  const cause = typeof code === "string" && code !== "" ? (CAUSES[code] ?? code) : e instanceof Error ? e.message : String(e);
  return new Error(`cannot listen on ${hostPort(host, port)} for ${what}: ${cause}`, { cause: e });
}
