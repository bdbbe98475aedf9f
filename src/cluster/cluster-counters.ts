/**
 * ClusterCounters: the node's cluster totals (forwarding, peer loads and errors, mirror hits and
 * lease misses and lease pings, invalidations, member lists), a plain struct of numbers, one per
 * field, owned by Cluster (`counters`), bumped by the routing (server/routed-*.ts, dispatch.ts,
 * foreign-keys.ts, mirror-copies.ts) and the write waits (write-waits.ts), read by figures.ts and
 * metrics.ts.
 */

/** ClusterCounters are the node's cluster totals, a plain struct of numbers. */
export class ClusterCounters {
  forwarded = 0; // client calls sent on to the owner of their key(s)
  peerLoads = 0; // gets answered by the owner peer
  peerErrors = 0; // forwarded calls that failed: not answered (timeout, peer down, connection lost), or answered PEER_UNAVAILABLE, a Thrift exception, or a write refused without a reason (the member is up: only the unanswered count toward marking it down)
  fallbackLoads = 0; // gets loaded locally because the owner could not be reached or failed the call (PEER_UNAVAILABLE, a Thrift exception)
  prefetchesSent = 0; // gets of a waiting connection forwarded ahead of their turn (server/prefetch.ts)
  prefetchesUsed = 0; // forwarded gets answered from such a prefetch
  mirrorHits = 0; // gets answered from this node's mirror of a key owned elsewhere
  mirrorLeaseMisses = 0; // gets of keys owned elsewhere that a copy here (mirror, answer fetched ahead) held but did not answer: no lease from the owner (leases.ts), forwarded
  leasePingsSent = 0; // PeerPings asking another member for a read lease (leases.ts: renewed only while this node's copies of its keys are used)
  mirrorFills = 0; // values copied into the mirror
  invalidationsSent = 0; // PeerInvalidate calls sent
  invalidationsReceived = 0; // PeerInvalidate calls served
  membershipChanges = 0; // member lists applied
  foreignWrites = 0; // peer writes of keys this node's member list gives to another member: dropped, not stored, refused
  foreignReads = 0; // keys of peer Gets this node's member list gives to another member: answered, not stored
  peerProtocolErrors = 0; // peer replies that broke the protocol (malformed, or to a seqid not in flight): their connections dropped
}
