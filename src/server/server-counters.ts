/**
 * ServerCounters are the Thrift port's running totals (CacheServer and the modules serving its
 * connections add to them): a plain struct of numbers, each with a trailing comment, read at call
 * time by NodeStats (figures.ts), the admin port's /stats and /metrics (metrics.ts).
 */
export class ServerCounters {
  connectionsCurrent = 0; // open connections
  connectionsTotal = 0; // connections accepted since start
  connectionsRejected = 0; // connections past maxConnections
  connectionsRejectedCut = 0; // of those, cut at once without a reply: MAX_REJECTED_OPEN refused were open already
  requests = 0; // requests decoded (all methods)
  protocolErrors = 0; // connections closed for malformed input
  internalErrors = 0; // unexpected exceptions contained to a connection
  bytesIn = 0; // bytes received
  bytesOut = 0; // bytes written
  pauses = 0; // times a connection's reading was paused (output bound, yielded turn, waiting backlog)
  yields = 0; // times a connection yielded its turn after maxRequestsPerEvent requests
  unauthorized = 0; // connections closed for a missing or wrong auth token
  evictedUnauthenticated = 0; // connections not authenticated yet closed at maxConnections to let a new one in (evictUnauthenticated)
  idleClosed = 0; // connections closed by the idle timeout
  lingerCut = 0; // connections the node had ended, cut because their clients had not closed after LINGER_MS, or for a newcomer at maxConnections
  handshakeTimeouts = 0; // TLS connections closed for not finishing their handshake in time
  bufferCapClosed = 0; // connections closed because all connections' buffers passed the cap
  bufferedBytes = 0; // bytes all connections hold now (partial input + queued output)
  warmedRequests = 0; // Gets and Sets served from a batch whose memory the store warmed first, each counted once (call-runs.ts)
  turnWrites = 0; // connection writes made at the end of a turn, together with others', from the shared buffer (writeShared)
  turnFlushes = 0; // times the shared buffer's waiting replies were written (turnWrites / turnFlushes: the batching)
  earlyFlushes = 0; // of those, written before the end of the turn because the buffer passed SHARED_FLUSH_BYTES
  stalls = 0; // times a clustered node's event loop was found stalled and its mirrors dropped (`stalled`)
  detachedReplies = 0; // PeerGet / PeerGetMulti replies that waited for a load without holding up their connection (detach)
}
