/**
 * ClusterClient is a ring-aware client: it computes each key's owner with the same ring as the
 * nodes (src/cluster/ring.ts: MurmurHash3 points, the same vnode count) and sends the call
 * straight to that node, saving the forwarding hop. It uses the ordinary methods, so a node that
 * disagrees about the ring still serves the call correctly (it forwards it), and the owner's
 * writes still invalidate the other nodes' mirrors.
 *
 * Multi-key calls are split by owner, sent in parallel, and merged. `setMembers` follows a
 * membership change (clients of departed members are closed).
 *
 * An owner that is down (its client marked it so after failed calls) is not asked again until it
 * answers a probe: its keys' calls go to another member instead, which forwards them or, the
 * owner being unreachable, loads Gets itself (groupcache's fallback), as for any client that is
 * not ring-aware. A read (Get, a GetMulti's part) that fails PEER_UNAVAILABLE is asked once more
 * through another member (`orElsewhere`). A write (Set, Delete, a SetMulti's part, Clear) is made
 * once: its failure is the caller's to handle (see `orElsewhere` for why).
 */
import { canonicalMember, dialSpelling, memberAddressOf } from "../cluster/member-id.ts";
import { Ring } from "../cluster/ring.ts";
import { cellBitsFor } from "../cluster/ring-cells.ts";
import { CacheError, ERROR_CODE } from "../protocol/errors.ts";
import { CacheClient, type ClientOptions, type GetResult } from "./cache-client.ts";
import { unavailable } from "./results.ts";

export interface ClusterClientOptions {
  /** members are the nodes' ids, `host:port`, as they know each other (a name's trailing dot is kept to dial it, not in the id). */
  members: readonly string[];
  /** vnodes must match the nodes' --vnodes (default: the ring's default). */
  vnodes?: number;
  /** client sets the options of each node's CacheClient (host and port come from the id). */
  client?: Omit<ClientOptions, "host" | "port">;
}

const utf8 = new TextEncoder();

export class ClusterClient {
  private readonly ring: Ring;
  private readonly clients = new Map<string, CacheClient>();
  private readonly clientOptions: Omit<ClientOptions, "host" | "port">;
  private closed = false;

  constructor(opts: ClusterClientOptions) {
    this.ring = new Ring(opts.vnodes === undefined ? {} : { vnodes: opts.vnodes });
    this.clientOptions = opts.client ?? {};
    this.setMembers(opts.members);
  }

  /**
   * setMembers follows a new member list (ignored once closed). A member id no client can be made
   * for (a port out of range), or more members than a ring holds (65,536), throws RangeError, and
   * nothing changes.
   */
  setMembers(members: readonly string[]): void {
    if (this.closed) return;
    // Canonical ids (member-id.ts), as the nodes read them: the ring hashes ids, so a member
    // written otherwise here than in the nodes' lists would own other keys. Each is dialled as
    // first written (a name's trailing dot kept: dialSpelling).
    const dialAs = new Map<string, string>();
    for (const written of members) {
      const id = canonicalMember(written) ?? written; // (one that is not an id throws below)
      if (!dialAs.has(id)) dialAs.set(id, dialSpelling(written) ?? written);
    }
    const next = new Set(dialAs.keys());
    cellBitsFor(next.size); // a list the ring cannot hold throws now, before a client is closed or made
    // Clients first: a bad id (a port out of range) throws here, with nothing changed.
    const made = new Map<string, CacheClient>();
    try {
      for (const id of next) {
        if (this.ring.has(id)) continue;
        made.set(id, new CacheClient({ ...this.clientOptions, ...memberAddressOf(dialAs.get(id)!) }));
      }
    } catch (e) {
      for (const c of made.values()) void c.close();
      throw e;
    }
    for (const id of this.ring.nodes) {
      if (next.has(id)) continue;
      void this.clients.get(id)?.close();
      this.clients.delete(id);
    }
    for (const [id, client] of made) this.clients.set(id, client);
    this.ring.setMembers(next); // in one pass (one add per member is O(V) each)
  }

  /** ownerOf names the node that owns `key`. */
  ownerOf(key: string | Uint8Array): string {
    const k = typeof key === "string" ? utf8.encode(key) : key;
    const owner = this.ring.owner(k);
    if (owner === undefined) throw new Error("ClusterClient has no members");
    return owner;
  }

  async get(group: string, key: string | Uint8Array): Promise<GetResult> {
    return this.orElsewhere(this.clientFor(key), (c) => c.get(group, key));
  }

  /**
   * orElsewhere makes a read `call` through `client`, and if that fails PEER_UNAVAILABLE, once
   * more through another member that is up. That is whether the member was not reached (a
   * timeout, a failed connect, a lost connection, marked down) or answered that it could not
   * serve the call (a Thrift exception, no result, its own PEER_UNAVAILABLE: say, a member whose ring
   * differs forwarded it to an owner it could not reach, and has no loader): the other member
   * forwards the read to its owner and, that owner failing it in any of these ways, loads it
   * itself (routed-get.ts, routed-multi.ts: as for any client), so the retry can succeed where the
   * first call could not. A read changes nothing, so asking twice is harmless (a load the first
   * call started on the owner is joined by the forwarded second).
   *
   * Writes never come here. One the owner answered would be forwarded to that same owner; one
   * not answered (a timeout) may have been applied, and a retry could land after a newer write
   * of the key from elsewhere: the caller, who knows what it wrote, decides.
   */
  private async orElsewhere<T>(client: CacheClient, call: (c: CacheClient) => Promise<T>): Promise<T> {
    try {
      return await call(client);
    } catch (e) {
      if (!(e instanceof CacheError && e.code === ERROR_CODE.PEER_UNAVAILABLE)) throw e;
      const other = this.otherThan(client);
      if (other === undefined) throw e;
      return call(other);
    }
  }

  async set(group: string, key: string | Uint8Array, value: string | Uint8Array, ttlMs?: number): Promise<void> {
    return this.clientFor(key).set(group, key, value, ttlMs);
  }

  async delete(group: string, key: string | Uint8Array): Promise<boolean> {
    return this.clientFor(key).delete(group, key);
  }

  /** clear empties the group on every node (any node would spread it; this asks one that is up). */
  async clear(group: string): Promise<void> {
    this.checkOpen();
    const any = this.otherThan(undefined);
    if (any === undefined) throw new Error("ClusterClient has no members");
    return any.clear(group);
  }

  /**
   * getMulti asks each owner for its keys; a part whose owner is not reached goes once more
   * through another member, as `get` does (which forwards them, or loads them itself).
   */
  async getMulti(group: string, keys: readonly (string | Uint8Array)[]): Promise<Map<string, Uint8Array>> {
    const parts = await Promise.all([...this.split(keys, (k) => k)].map(([client, ks]) => this.orElsewhere(client, (c) => c.getMulti(group, ks))));
    const merged = new Map<string, Uint8Array>();
    for (const part of parts) for (const [k, v] of part) merged.set(k, v);
    return merged;
  }

  async setMulti(group: string, entries: Iterable<[string | Uint8Array, string | Uint8Array]>, ttlMs?: number): Promise<void> {
    const parts = this.split([...entries], ([k]) => k);
    await Promise.all([...parts].map(([client, es]) => client.setMulti(group, es, ttlMs)));
  }

  async close(): Promise<void> {
    this.closed = true;
    const clients = [...this.clients.values()];
    this.clients.clear();
    await Promise.all(clients.map((c) => c.close()));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** clientFor is the client a call for `key` goes to: its owner's, or another's while the owner is down. */
  private clientFor(key: string | Uint8Array): CacheClient {
    this.checkOpen();
    const owner = this.clients.get(this.ownerOf(key))!;
    return owner.isDown ? (this.otherThan(owner) ?? owner) : owner;
  }

  /**
   * otherThan returns a client of a member that is up, after `client`'s member in the member
   * list (so a down member's keys go to one node, not to all), or undefined if no other is up.
   */
  private otherThan(client: CacheClient | undefined): CacheClient | undefined {
    const all = [...this.clients.values()];
    const from = client === undefined ? -1 : all.indexOf(client);
    for (let i = 1; i <= all.length; i++) {
      const c = all[(from + i + all.length) % all.length]!;
      if (c !== client && !c.isDown) return c;
    }
    return undefined;
  }

  private checkOpen(): void {
    if (this.closed) throw unavailable("client closed");
  }

  private split<T>(items: readonly T[], keyOf: (item: T) => string | Uint8Array): Map<CacheClient, T[]> {
    const byOwner = new Map<CacheClient, T[]>();
    for (const item of items) {
      const owner = this.clientFor(keyOf(item));
      const list = byOwner.get(owner);
      if (list === undefined) byOwner.set(owner, [item]);
      else list.push(item);
    }
    return byOwner;
  }
}
