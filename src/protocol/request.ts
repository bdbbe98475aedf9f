// Request: the one mutable, reusable decoded request of a connection, and the method ids.
//
// The decoder fills it in place for every message, so a request costs no allocation. Byte
// fields are (start, length) ranges into `buffer` — the input view of the message, valid until
// the connection's FrameReader is called again. Fields absent from the message read as empty
// ranges (start 0, length 0) and zero numbers, as Thrift defaults them.
//
// Memory layout of the multi-key fields (GetMulti keys, SetMulti entries): `items` is an
// Int32Array of 4 int32 per entry — keyStart, keyLength, valueStart, valueLength (the value
// pair is 0,0 for GetMulti) — with `itemCount` entries in use. It grows by doubling, only
// after the count was checked against the bytes left in the frame.
//
// Cache-level refusals found while decoding (key longer than the limit, value too large,
// negative TTL) do not throw: `errorCode` is set to the IDL ErrorCode (0 = none) and
// `errorMessage` to a constant string; the first refusal wins. The message is still parsed to
// its end, so the stream stays in sync and the server answers with a CacheError reply.

import { HeaderInfo } from "./header-transport.ts";
import { IDLE_KEEP_BYTES } from "./limits.ts";

/** Method ids. METHOD_UNKNOWN keeps the name's byte range for the UNKNOWN_METHOD reply. */
export const METHOD_UNKNOWN = 0;
export const METHOD_GET = 1;
export const METHOD_SET = 2;
export const METHOD_DELETE = 3;
export const METHOD_CLEAR = 4;
export const METHOD_STATS = 5;
export const METHOD_GET_MULTI = 6;
export const METHOD_SET_MULTI = 7;
/** Peer-only methods: never forwarded. PeerInvalidate drops mirrors; PeerPing checks liveness. */
export const METHOD_PEER_INVALIDATE = 8;
export const METHOD_PEER_PING = 9;
/**
 * INTRO_SEQID marks the PeerPing a node's peer client sends first on every connection, naming
 * its member (PingRequest field 1): the only PeerPing whose sender names the connection.
 */
export const INTRO_SEQID = -2;
/**
 * Peer variants of the seed's methods (same argument and result structs), served from the
 * receiving node only: a node forwards a client's call to the key's owner with these, and the
 * owner never forwards them again (so nodes that disagree about the ring cannot loop).
 * `METHOD_PEER_GET + (m - METHOD_GET)` is the peer variant of seed method m.
 */
export const METHOD_PEER_GET = 10;
export const METHOD_PEER_SET = 11;
export const METHOD_PEER_DELETE = 12;
export const METHOD_PEER_CLEAR = 13;
export const METHOD_PEER_STATS = 14;
export const METHOD_PEER_GET_MULTI = 15;
export const METHOD_PEER_SET_MULTI = 16;
const PEER_SHIFT = METHOD_PEER_GET - METHOD_GET;
/** Auth opens a connection to a node with an auth token; NodeStats returns the node's figures. */
export const METHOD_AUTH = 17;
export const METHOD_NODE_STATS = 18;

/** METHOD_NAMES[id] is the wire name of a known method (index 0 is the empty string). */
export const METHOD_NAMES: readonly string[] = Object.freeze([
  "", "Get", "Set", "Delete", "Clear", "Stats", "GetMulti", "SetMulti", "PeerInvalidate", "PeerPing",
  "PeerGet", "PeerSet", "PeerDelete", "PeerClear", "PeerStats", "PeerGetMulti", "PeerSetMulti", "Auth", "NodeStats",
]);

/** baseMethod maps a peer variant to its seed method (PeerGet → Get); other ids map to themselves. */
export function baseMethod(id: number): number {
  return id >= METHOD_PEER_GET && id <= METHOD_PEER_SET_MULTI ? id - PEER_SHIFT : id;
}

/** peerMethod maps a seed method to its peer variant (Get → PeerGet). */
export function peerMethod(id: number): number {
  return id >= METHOD_GET && id <= METHOD_SET_MULTI ? id + PEER_SHIFT : id;
}

/** isPeerMethod tells whether `id` is served locally only (a peer variant or a peer-only method). */
export function isPeerMethod(id: number): boolean {
  return id >= METHOD_PEER_INVALIDATE && id <= METHOD_PEER_SET_MULTI;
}

/** Wire bytes of each known method name, precomputed once (read-only by convention). */
export const METHOD_NAME_BYTES: readonly Uint8Array[] = Object.freeze(METHOD_NAMES.map((name) => new TextEncoder().encode(name)));

/**
 * matchMethod returns the method id whose name equals `buf[start, start+length)`, comparing
 * bytes against the precomputed names (no string is built), or METHOD_UNKNOWN.
 */
export function matchMethod(buf: Uint8Array, start: number, length: number): number {
  for (let id = 1; id < METHOD_NAME_BYTES.length; id++) {
    const name = METHOD_NAME_BYTES[id]!;
    if (name.length !== length) continue;
    let i = 0;
    while (i < length && buf[start + i] === name[i]) i++;
    if (i === length) return id;
  }
  return METHOD_UNKNOWN;
}

const EMPTY = new Uint8Array(0);

const INITIAL_ITEM_WORDS = 64;
/**
 * KEEP_ITEM_WORDS: larger `items` (over IDLE_KEEP_BYTES, 1,024 keys) are dropped once served
 * (`releaseItems`): kept up to 1 MiB, 200 idle connections that had each sent a GetMulti of
 * 60,000 keys held 190 MB of them (review). A connection pipelining larger GetMultis makes its
 * list again for each, at most once a request (`ensureItems` goes straight to the count): about
 * 1 ns a key (2 µs at 2,000 keys, 10 µs at 10,000, 110 µs at 100,000), under 1 % of serving such
 * GetMultis of hits, and keys/s were the same within the noise (bench/getmulti-pipeline.ts).
 */
const KEEP_ITEM_WORDS = IDLE_KEEP_BYTES / 4;

export class Request {
  /** The input the ranges below index into. */
  buffer: Uint8Array = EMPTY;
  /** Transport the request came in (TRANSPORT_*); the reply goes out in the same. */
  transport = 0;
  /** THeader/TTHeader fields (flags, seqid, info headers); reset for other transports. */
  readonly header = new HeaderInfo();

  /** True once the message header (version, name, seqid) was read; replies need it. */
  headerRead = false;
  messageType = 0;
  /** ONEWAY call: the server must not reply. */
  oneway = false;
  seqid = 0;
  method = METHOD_UNKNOWN;
  nameStart = 0;
  nameLength = 0;

  groupStart = 0;
  groupLength = 0;
  keyStart = 0;
  keyLength = 0;
  valueStart = 0;
  valueLength = 0;
  /** `ttl` field, seconds (0 = group default). */
  ttlSeconds = 0;
  /** True when the optional `ttlMs` field was present; it then overrides ttlSeconds. */
  hasTtlMs = false;
  ttlMs = 0;

  /** GetMulti keys / SetMulti entries: 4 int32 per entry (see header). */
  itemCount = 0;
  items = new Int32Array(INITIAL_ITEM_WORDS);

  /** PeerInvalidate: `all` drops every mirror of the group (after a Clear). */
  all = false;
  /** PeerPing: `lease` asks the receiver to vouch for the caller (PingResponse.leaseMs: Cluster.vouch). */
  lease = false;

  /** Cache-level refusal found while decoding: ErrorCode number, 0 when none. */
  errorCode = 0;
  errorMessage = "";

  /**
   * heldBytes: what serving this request holds while it waits for its loads (a GetMulti's copies
   * of its hits, the values loaded so far: server/multi-loads.ts), kept with `hold`.
   */
  heldBytes = 0;
  /**
   * holder, when set, is told of each change of `heldBytes` (the server counts it toward
   * --max-buffered) and answers whether the request is still wanted: false once its connection
   * is closed (by the buffer cap, say), so what it would still load is not.
   */
  holder: ((delta: number) => boolean) | null = null;

  /** hold adds `delta` bytes to what the request holds; false: the request is no longer wanted. */
  hold(delta: number): boolean {
    this.heldBytes += delta;
    return this.holder === null || this.holder(delta);
  }

  /** reset clears the per-message fields (the header and transport are set by the decoder). */
  reset(): void {
    this.headerRead = false;
    this.messageType = 0;
    this.oneway = false;
    this.seqid = 0;
    this.method = METHOD_UNKNOWN;
    this.nameStart = this.nameLength = 0; // (not heldBytes: the server releases it with `hold` when the reply is written)
    this.resetArgs();
  }

  /** resetArgs clears what the request struct sets (a repeated one replaces all of it). */
  resetArgs(): void {
    this.groupStart = this.groupLength = 0;
    this.keyStart = this.keyLength = 0;
    this.valueStart = this.valueLength = 0;
    this.ttlSeconds = 0;
    this.hasTtlMs = false;
    this.ttlMs = 0;
    this.itemCount = 0;
    this.all = false;
    this.lease = false;
    this.errorCode = 0;
    this.errorMessage = "";
  }

  /** releaseBuffer drops the request's views of the message it was read from (it is served). */
  releaseBuffer(): void {
    this.buffer = EMPTY;
    this.header.cursor.reset(EMPTY, 0, 0, false);
  }

  /**
   * releaseItems drops `items` grown past KEEP_ITEM_WORDS by a huge multi-key request, once it is
   * served (a connection would otherwise hold 16 bytes per key of the largest it ever sent), and
   * the header's info entries grown the same way (HeaderInfo.release).
   */
  releaseItems(): void {
    if (this.items.length > KEEP_ITEM_WORDS) {
      this.items = new Int32Array(INITIAL_ITEM_WORDS);
      this.itemCount = 0; // (the count goes with the entries)
    }
    this.header.release();
  }

  /**
   * effectiveTtlMs returns the requested TTL in milliseconds: `ttlMs` when present, else
   * `ttlSeconds * 1000`. 0 means the group's default. (Negative values were refused already.)
   */
  effectiveTtlMs(): number {
    return this.hasTtlMs ? this.ttlMs : this.ttlSeconds * 1000;
  }

  /** refuse records the first cache-level refusal of this request. */
  refuse(code: number, message: string): void {
    if (this.errorCode === 0) {
      this.errorCode = code;
      this.errorMessage = message;
    }
  }

  /** ensureItems makes room for `count` entries (the caller checked count against the frame). */
  ensureItems(count: number): void {
    if (count * 4 <= this.items.length) return;
    this.items = new Int32Array(Math.max(count * 4, this.items.length * 2));
  }
}
