/**
 * AccessControl checks the shared auth token of a node's Thrift port.
 *
 * A node with a token accepts nothing but `Auth` on a new connection: the right token opens the
 * connection; a wrong one, or any other call first, is answered `CacheError UNAUTHORIZED` and the
 * connection closed. The comparison runs in constant time: both the expected and the offered
 * token are hashed with SHA-256 and the digests compared with `timingSafeEqual`, so neither the
 * position of the first wrong byte nor the token's length shows in the answer time. Peers send
 * the same token (CacheClient's `authToken`).
 */
import { createHash, timingSafeEqual } from "node:crypto";

/** MIN_TOKEN_CHARS and MAX_TOKEN_BYTES bound the token (a connection's first call, Auth, must stay small: PRE_AUTH_BYTES). */
export const MIN_TOKEN_CHARS = 16;
export const MAX_TOKEN_BYTES = 4096;

/** tokenFault says what is wrong with an auth token (too short, too long), or undefined. */
export function tokenFault(token: string): string | undefined {
  if (token.length < MIN_TOKEN_CHARS) return `the auth token must have at least ${MIN_TOKEN_CHARS} characters`;
  if (Buffer.byteLength(token) > MAX_TOKEN_BYTES) return `the auth token must have at most ${MAX_TOKEN_BYTES} bytes`;
  return undefined;
}

export class AccessControl {
  private readonly digest: Buffer;

  constructor(token: string) {
    const fault = tokenFault(token);
    if (fault !== undefined) throw new RangeError(fault);
    this.digest = createHash("sha256").update(token).digest();
  }

  /** accepts tells whether buf[off, off+len) is the token, in constant time. */
  accepts(buf: Uint8Array, off: number, len: number): boolean {
    const offered = createHash("sha256").update(buf.subarray(off, off + len)).digest();
    return timingSafeEqual(offered, this.digest);
  }
}
