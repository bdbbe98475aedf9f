/**
 * Member ids as they come in besides the lists: a peer's own id on its connections (its intro
 * PeerPing's sender) is read into the canonical spelling as the lists are (review: it was compared
 * as written, so a member whose --self an older node spelt otherwise was not recognised, and every
 * member counted as a holder of what it fetched).
 */
import { afterEach, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
import { leasesHeld, startMembers } from "../support/cluster-members.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((x) => x.close()));
});

/** leaseFor asks node `port` for a lease on a connection whose intro PeerPing names `sender`: > 0 when it vouches for that member. */
async function leaseFor(port: number, sender: string): Promise<number> {
  const c = new CacheClient({ host: "127.0.0.1", port, timeoutMs: 5_000, connections: 1, sender });
  open.push(c);
  return (await c.ping(undefined, true)).leaseMs ?? -1;
}

test("a peer's intro PeerPing that spells its id otherwise than the list (an older node's --self) names that member", async () => {
  const m = startMembers(2, open);
  const [a, b] = [m.nodes[0]!, m.nodes[1]!];
  const bId = m.ids[1]!;
  const [host, port] = [bId.slice(0, bId.lastIndexOf(":")), bId.slice(bId.lastIndexOf(":") + 1)];
  expect(a.cluster!.members).toContain(bId);
  await leasesHeld(m.nodes, m.ids); // (A vouches for B once its start's drop asks settled)
  // As written in the list, the member is vouched for: the baseline the other spellings must meet.
  expect(await leaseFor(a.port, bId)).toBeGreaterThan(0);
  // The same member spelt with a leading zero in its port, as a node of a version that kept
  // --self as written would send it.
  expect(await leaseFor(a.port, `${host}:0${port}`)).toBeGreaterThan(0);
  // Not a member, or not an id at all (compared as written, and nothing thrown): no lease.
  expect(await leaseFor(a.port, "127.0.0.2:1")).toBe(0);
  expect(await leaseFor(a.port, "not a member id")).toBe(0);
  expect(await leaseFor(a.port, `${host}:0${port}`)).toBeGreaterThan(0); // (the node still serves)
  expect(b.cluster!.members).toContain(bId);
});
