// MyBunCache wire contract.
//
// Wire-compatible with MyGoCache's Kitex service `GroupCache`: every method name, the single
// argument struct at field id 1 (`req`), the result at field id 0 (`success`), and every field id
// and type of the seed's structs are kept exactly. Extensions only ADD: optional fields with new
// ids, the declared exception `CacheError` (result field 1), and new methods. A client generated
// from the seed's original IDL keeps working: it ignores the optional fields it does not know. A
// `CacheError` reaches it as a result field it does not know: Apache's generated clients report
// "unknown result", but Kitex's return no value and no error. For such clients the node takes
// `--seed-errors`: errors of the seven methods then go as the seed sent them, a
// TApplicationException INTERNAL_ERROR whose message names the code ("NOT_FOUND (1): key not found").
//
// TTL: `ttl` is in seconds (the seed's unit). 0 means the group's default TTL; a negative value is
// INVALID_ARGUMENT. When the optional `ttlMs` is present it overrides `ttl` (milliseconds, same
// rules: 0 = group default, negative = INVALID_ARGUMENT). A group default of 0 means no expiry.
//
// Peer methods (`Peer*`) are what nodes of a cluster call on each other: the peer variants take
// and return the seed methods' structs, are served from the receiving node only and are NEVER
// forwarded again, so nodes whose member lists disagree cannot loop. A node forwards a client's
// Get/Set/Delete to the key's owner with PeerGet/PeerSet/PeerDelete; the owner answers PeerGet
// with `ttlRemainingMs` whenever the value expires, so a mirror never outlives it. Replies come
// in request order on a connection, except those of PeerGet and PeerGetMulti: one that waits for
// a load is sent when the load settles, after later replies (match them by seqid, as Thrift
// clients that pipeline do); the calls before and after it are answered meanwhile.
//
// `Auth` opens a connection when the node has an auth token: until a connection has sent the
// right token, every other call is answered `CacheError UNAUTHORIZED` and the connection closed.
// `NodeStats` returns the node's main figures (a subset of the admin port's /metrics) as a flat map,
// for tooling that only speaks Thrift; the seed's `Stats` keeps its four counters.

namespace go mybuncache
namespace js mybuncache

enum ErrorCode {
  NOT_FOUND = 1,
  UNKNOWN_GROUP = 2,
  INVALID_ARGUMENT = 3,
  VALUE_TOO_LARGE = 4,
  NO_MEMORY = 5,
  LOAD_FAILED = 6,
  PEER_UNAVAILABLE = 7,
  OVERLOADED = 8,
  UNAUTHORIZED = 9,
}

exception CacheError {
  1: ErrorCode code,
  2: string message,
}

struct Request {
  1: string group,
  2: string key,
}

// ttlRemainingMs: absent when the value has no expiry; 0 when none of its time is left (unlike a
// Set's ttl, where 0 means the group's default: do not copy one into the other unchecked). A Get
// a non-owner answers from its mirror gives the copy's life: the owner's, capped at the node's
// --mirror-ttl when that is set (how long this answer may be trusted, never longer).
struct Response {
  1: binary value,
  2: optional i64 ttlRemainingMs,
}

struct SetRequest {
  1: string group,
  2: string key,
  3: binary value,
  4: i64 ttl,
  5: optional i64 ttlMs,
}

struct SetResponse {
  1: bool success,
}

struct DeleteRequest {
  1: string group,
  2: string key,
}

struct DeleteResponse {
  1: bool success,
}

struct ClearRequest {
  1: string group,
}

struct ClearResponse {
  1: bool success,
}

struct StatsRequest {
  1: string group,
}

struct StatsResponse {
  1: i64 itemCount,
  2: i64 hitCount,
  3: i64 missCount,
  4: i64 totalCount,
}

struct GetMultiRequest {
  1: string group,
  2: list<string> keys,
}

struct GetMultiResponse {
  1: map<string, binary> values,
}

struct SetMultiRequest {
  1: string group,
  2: map<string, binary> values,
  3: i64 ttl,
  4: optional i64 ttlMs,
}

struct SetMultiResponse {
  1: bool success,
}

struct PeerInvalidateRequest {
  1: string group,
  // keys whose mirrored copies the receiver drops
  2: list<string> keys,
  // true: drop every mirrored copy of the group (after a Clear)
  3: optional bool all,
}

struct PeerInvalidateResponse {
  // how many mirrored copies were dropped
  1: i64 dropped,
}

struct PingRequest {
  // the caller's node id (host:port): a node's peer client sends it first on every connection,
  // with seqid -2, so the receiver knows which member the connection is (which members may hold
  // copies of its keys, and who forwarded a write: it acknowledges writes once those members
  // dropped theirs). Only that first ping names the connection, and only with a member's id.
  1: optional string sender,
  // lease: the caller checks read leases (a node's peer client renews them every quarter of a
  // lease): it answers Gets of the receiver's keys from its copies only while the receiver
  // vouches for it (PingResponse.leaseMs). Absent (an older node): no lease is given or needed.
  2: optional bool lease,
}

struct PingResponse {
  // the receiver's node id (host:port)
  1: string nodeId,
  2: i64 uptimeMs,
  // leaseMs, answered to a ping that asked for a lease: the receiver vouches that, for this many
  // ms from when the caller sent the ping (by the caller's monotonic clock), it will not
  // acknowledge a write of its keys without the caller's answer to that write's PeerInvalidate;
  // 0: it does not vouch (an invalidation to the caller unanswered, or the caller lagging or
  // asked to drop its mirrors). Absent (an older node, or not asked): the caller checks no lease
  // for the receiver's keys, as before leases.
  3: optional i64 leaseMs,
}

struct AuthRequest {
  1: string token,
}

struct AuthResponse {
  1: bool success,
}

struct NodeStatsRequest {
}

struct NodeStatsResponse {
  // figure name → value, e.g. "server.requests", "group.default.hits", "cluster.forwarded"
  1: map<string, i64> figures,
}

service GroupCache {
  Response Get(1: Request req) throws (1: CacheError err),
  SetResponse Set(1: SetRequest req) throws (1: CacheError err),
  DeleteResponse Delete(1: DeleteRequest req) throws (1: CacheError err),
  ClearResponse Clear(1: ClearRequest req) throws (1: CacheError err),
  StatsResponse Stats(1: StatsRequest req) throws (1: CacheError err),
  GetMultiResponse GetMulti(1: GetMultiRequest req) throws (1: CacheError err),
  SetMultiResponse SetMulti(1: SetMultiRequest req) throws (1: CacheError err),

  AuthResponse Auth(1: AuthRequest req) throws (1: CacheError err),
  NodeStatsResponse NodeStats(1: NodeStatsRequest req) throws (1: CacheError err),

  // Peer methods: served by the receiving node only, never forwarded.
  PeerInvalidateResponse PeerInvalidate(1: PeerInvalidateRequest req) throws (1: CacheError err),
  PingResponse PeerPing(1: PingRequest req) throws (1: CacheError err),
  Response PeerGet(1: Request req) throws (1: CacheError err),
  SetResponse PeerSet(1: SetRequest req) throws (1: CacheError err),
  DeleteResponse PeerDelete(1: DeleteRequest req) throws (1: CacheError err),
  ClearResponse PeerClear(1: ClearRequest req) throws (1: CacheError err),
  StatsResponse PeerStats(1: StatsRequest req) throws (1: CacheError err),
  GetMultiResponse PeerGetMulti(1: GetMultiRequest req) throws (1: CacheError err),
  SetMultiResponse PeerSetMulti(1: SetMultiRequest req) throws (1: CacheError err),
}
