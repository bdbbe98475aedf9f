/**
 * How a clustered node reaches its peers: `peerClient` makes its client of one peer (a CacheClient
 * with the node's limits, auth token and TLS, its writes on a connection of their own, the peer's
 * health and protocol faults logged), and `membershipSource` reads its member list from --peers,
 * --peers-file or --peers-dns. CacheNode's start wires them into the node's Cluster.
 */
import { CacheClient } from "../client/cache-client.ts";
import type { PeerClient } from "../cluster/cluster.ts";
import { isIP } from "node:net";
import { DnsMembers, FileMembers, StaticMembers, type MembershipSource, type Resolver } from "../cluster/membership.ts";
import { memberAddress, memberAddressOf } from "../cluster/member-id.ts";
import { longestLoadTimeoutMs, type NodeConfig } from "./config.ts";
import type { Logger } from "./log.ts";

/**
 * peerClient makes this node's client of peer `id`, dialled as `dialAs` spells it (a name's
 * trailing dot kept: member-id.ts); it logs the peer marked down (and why) and up again (`up` is
 * told), and each reply of the peer's that broke the protocol (`protocolError` counts it).
 */
export function peerClient(
  id: string, dialAs: string, self: string, config: NodeConfig, tls: { ca: string } | undefined, logger: Logger, protocolError: () => void, up: () => void,
): PeerClient {
  return new CacheClient({
    ...memberAddressOf(dialAs),
    connections: config.peerConnections,
    timeoutMs: config.peerTimeoutMs,
    // A PeerGet may wait for the owner's load: as long as a load may take, while the owner answers.
    loadWaitMs: longestLoadTimeoutMs(config),
    authToken: config.authToken,
    sender: self,
    tls,
    limits: { maxFrameBytes: config.maxFrameSize, maxKeyBytes: config.maxKeySize, maxValueBytes: config.maxItemSize },
    writeAtTurnEnd: true, // a turn's forwards to this peer in one write (bench/RESULTS.md, cluster)
    writeConnection: true, // a write never waits behind a PeerGet that loads (CacheClient.pick)
    onHealth: (state, reason) => {
      if (state === "up") {
        logger.info("peer up again", { peer: id });
        up();
      } else if (state === "down") logger.warn("peer marked down", { peer: id, reason });
      else logger.warn("peer still down, failing another way", { peer: id, reason });
    },
    onProtocolError: (reason) => {
      protocolError();
      logger.error("peer reply broke the protocol: connection dropped", { peer: id, reason });
    },
  });
}

export function membershipSource(config: NodeConfig, logger: Logger, resolve: Resolver | undefined): MembershipSource {
  if (config.peersFile !== undefined) return new FileMembers(config.peersFile, logger);
  if (config.peersDns !== undefined) {
    const { host, port } = memberAddressOf(config.peersDns); // (a trailing dot kept: the name is looked up as written)
    // A dual-stack answer's members are the addresses of this node's own family (DnsMembers).
    const family = isIP(memberAddress(config.self ?? "")?.host ?? config.host) || undefined;
    return new DnsMembers(host, port, config.peersDnsIntervalMs, logger, resolve, family);
  }
  return new StaticMembers(config.peers ?? [], logger);
}
