/**
 * ClusterClient is a ring-aware client: it computes each key's owner with the same ring as the
 * nodes (src/cluster/ring.ts: MurmurHash3 points, the same vnode count) and sends the call
 * straight to that node, saving the forwarding hop. It uses the ordinary methods, so a node that
 * disagrees about the ring still serves the call correctly (it forwards it), and the owner's
 * writes still invalidate the other nodes' mirrors.
 *
 * Multi-key calls are split by owner, sent in parallel, and merged. `setMembers` follows a
 * membership change (clients of departed members are closed).
 */
import { Ring } from "../cluster/ring.ts";
import { CacheClient, type ClientOptions, type GetResult } from "./cache-client.ts";

export interface ClusterClientOptions {
  /** members are the nodes' ids, `host:port`, as they know each other. */
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

  constructor(opts: ClusterClientOptions) {
    this.ring = new Ring(opts.vnodes === undefined ? {} : { vnodes: opts.vnodes });
    this.clientOptions = opts.client ?? {};
    this.setMembers(opts.members);
  }

  /** setMembers follows a new member list. */
  setMembers(members: readonly string[]): void {
    const next = new Set(members);
    for (const id of this.ring.nodes) {
      if (next.has(id)) continue;
      this.ring.remove(id);
      void this.clients.get(id)?.close();
      this.clients.delete(id);
    }
    for (const id of next) {
      if (this.ring.has(id)) continue;
      this.ring.add(id);
      const colon = id.lastIndexOf(":");
      this.clients.set(id, new CacheClient({ ...this.clientOptions, host: id.slice(0, colon).replace(/^\[|\]$/g, ""), port: Number(id.slice(colon + 1)) }));
    }
  }

  /** ownerOf names the node that owns `key`. */
  ownerOf(key: string | Uint8Array): string {
    const k = typeof key === "string" ? utf8.encode(key) : key;
    const owner = this.ring.owner(k);
    if (owner === undefined) throw new Error("ClusterClient has no members");
    return owner;
  }

  get(group: string, key: string | Uint8Array): Promise<GetResult> {
    return this.clientFor(key).get(group, key);
  }

  set(group: string, key: string | Uint8Array, value: string | Uint8Array, ttlMs?: number): Promise<void> {
    return this.clientFor(key).set(group, key, value, ttlMs);
  }

  delete(group: string, key: string | Uint8Array): Promise<boolean> {
    return this.clientFor(key).delete(group, key);
  }

  /** clear empties the group on every node (any node would spread it; this asks one). */
  clear(group: string): Promise<void> {
    return this.anyClient().clear(group);
  }

  async getMulti(group: string, keys: readonly (string | Uint8Array)[]): Promise<Map<string, Uint8Array>> {
    const parts = await Promise.all([...this.split(keys, (k) => k)].map(([id, ks]) => this.clients.get(id)!.getMulti(group, ks)));
    const merged = new Map<string, Uint8Array>();
    for (const part of parts) for (const [k, v] of part) merged.set(k, v);
    return merged;
  }

  async setMulti(group: string, entries: Iterable<[string | Uint8Array, string | Uint8Array]>, ttlMs?: number): Promise<void> {
    const parts = this.split([...entries], ([k]) => k);
    await Promise.all([...parts].map(([id, es]) => this.clients.get(id)!.setMulti(group, es, ttlMs)));
  }

  async close(): Promise<void> {
    const clients = [...this.clients.values()];
    this.clients.clear();
    await Promise.all(clients.map((c) => c.close()));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private clientFor(key: string | Uint8Array): CacheClient {
    return this.clients.get(this.ownerOf(key))!;
  }

  private anyClient(): CacheClient {
    const first = this.clients.values().next();
    if (first.done) throw new Error("ClusterClient has no members");
    return first.value;
  }

  private split<T>(items: readonly T[], keyOf: (item: T) => string | Uint8Array): Map<string, T[]> {
    const byOwner = new Map<string, T[]>();
    for (const item of items) {
      const owner = this.ownerOf(keyOf(item));
      const list = byOwner.get(owner);
      if (list === undefined) byOwner.set(owner, [item]);
      else list.push(item);
    }
    return byOwner;
  }
}
