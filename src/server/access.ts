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

export class AccessControl {
  private readonly digest: Buffer;

  constructor(token: string) {
    if (token.length < 16) throw new RangeError("the auth token must have at least 16 characters");
    this.digest = createHash("sha256").update(token).digest();
  }

  /** accepts tells whether buf[off, off+len) is the token, in constant time. */
  accepts(buf: Uint8Array, off: number, len: number): boolean {
    const offered = createHash("sha256").update(buf.subarray(off, off + len)).digest();
    return timingSafeEqual(offered, this.digest);
  }
}
