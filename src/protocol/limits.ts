// ProtocolLimits: every bound the decoder enforces, in one object passed in by the server.
//
// All limits are checked before anything is allocated or grown, and before bytes are waited
// for: a length or count that can never fit in the frame is an error at once, not "need more".
// The defaults follow Thrift (16,384,000-byte frames, depth 64) and memcached (250-byte keys,
// 1 MiB values); the server sets `maxValueBytes` from the store's max item size.

export interface ProtocolLimits {
  /** Largest frame (framed/header: the length field; buffered: the whole message). */
  readonly maxFrameBytes: number;
  /** Deepest nesting of structs and containers, counted from the message's argument struct. */
  readonly maxDepth: number;
  /** Longest key; longer → cache-level INVALID_ARGUMENT (not a protocol error). */
  readonly maxKeyBytes: number;
  /** Longest value; longer → cache-level VALUE_TOO_LARGE. */
  readonly maxValueBytes: number;
}

export const DEFAULT_MAX_FRAME_BYTES = 16_384_000;
export const DEFAULT_MAX_DEPTH = 64;
export const DEFAULT_MAX_KEY_BYTES = 250;
export const DEFAULT_MAX_VALUE_BYTES = 1_048_576;

/**
 * IDLE_KEEP_BYTES: what each of a connection's growable buffers (its partial-message buffer, the
 * chunk it was served from, its key list, its own output buffer) may keep once everything it sent
 * is served and its replies are taken; a larger one is let go. memcached shrinks an idle
 * connection's read buffer so too: an idle connection is counted nowhere (not in --max-buffered),
 * so what it keeps times --max-connections is what idle clients can make a node hold.
 */
export const IDLE_KEEP_BYTES = 16 * 1024;

/**
 * fittedSize is the size a growable buffer of `capacity` bytes holding `held` moves to, or 0 to
 * keep it: past `keepBytes`, once it holds a quarter of it or less, twice what it holds
 * (`keepBytes` at least). A factor of two each way, so a buffer near a size does not flap; what
 * counts toward --max-buffered is what it holds, so the buffer must not stay at its peak.
 */
export function fittedSize(capacity: number, held: number, keepBytes: number): number {
  return capacity <= keepBytes || held * 4 > capacity ? 0 : Math.max(keepBytes, held * 2);
}

export const DEFAULT_LIMITS: ProtocolLimits = Object.freeze({
  maxFrameBytes: DEFAULT_MAX_FRAME_BYTES,
  maxDepth: DEFAULT_MAX_DEPTH,
  maxKeyBytes: DEFAULT_MAX_KEY_BYTES,
  maxValueBytes: DEFAULT_MAX_VALUE_BYTES,
});

/**
 * resolveLimits fills the defaults into a partial limits object and validates it: every limit
 * must be a positive safe integer, and the frame limit must fit a signed i32 length field.
 */
export function resolveLimits(partial?: Partial<ProtocolLimits>): ProtocolLimits {
  const limits: ProtocolLimits = Object.freeze({ ...DEFAULT_LIMITS, ...partial });
  check("maxFrameBytes", limits.maxFrameBytes, 0x7fffffff);
  check("maxDepth", limits.maxDepth, 10_000);
  // The argument struct, the request struct, and a GetMulti's key list or a SetMulti's map: below
  // 3 the buffered transport's scanner refused those while the framed decoder (which reads them
  // without a depth check) served them.
  if (limits.maxDepth < 3) throw new RangeError("ProtocolLimits.maxDepth must be at least 3 (argument struct + request struct + key list)");
  check("maxKeyBytes", limits.maxKeyBytes, 0x7fffffff);
  check("maxValueBytes", limits.maxValueBytes, 0x7fffffff);
  return limits;
}

function check(name: string, value: number, max: number): void {
  if (!Number.isSafeInteger(value) || value < 1 || value > max) {
    throw new RangeError(`ProtocolLimits.${name} must be an integer in [1, ${max}], got ${value}`);
  }
}
