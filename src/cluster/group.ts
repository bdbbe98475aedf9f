/**
 * Group is one named cache: its own store (memory share), default TTL, and counters.
 *
 * A group without a loader is a plain key-value store: a get miss is NOT_FOUND. (Read-through
 * loading, singleflight and admission of loaded values build on this type.) Groups belong to a
 * node object, never to a module-level registry, so several nodes can live in one process.
 *
 * Keys and values cross this API as byte ranges, like the store's, so the server can pass views
 * of its receive buffer. Expected outcomes are return codes, never exceptions.
 */
import { Store, type StoreOptions } from "../store/store.ts";

export interface GroupOptions {
  name: string;
  /** memory is this group's byte budget (slab pages plus metadata). */
  memory: number;
  /** defaultTtlMs applies when a set asks for TTL 0; 0 here means no expiry. */
  defaultTtlMs?: number;
  /** store passes engine options through (max item size, clock, admission, ...). */
  store?: Omit<StoreOptions, "memory">;
}

/** GroupCounters are the group's running totals, a plain struct of numbers. */
export class GroupCounters {
  gets = 0; // Get calls and GetMulti keys looked up
  hits = 0; // of those, found in the store
  misses = 0; // of those, not found
  sets = 0; // Set calls and SetMulti entries stored
  setErrors = 0; // sets refused (too large, no memory, bad ttl)
  deletes = 0; // Delete calls that removed a live item
}

export class Group {
  readonly name: string;
  readonly nameBytes: Uint8Array;
  readonly store: Store;
  readonly defaultTtlMs: number;
  readonly counters = new GroupCounters();

  constructor(opts: GroupOptions) {
    if (opts.name.length === 0) throw new RangeError("a group needs a name");
    this.name = opts.name;
    this.nameBytes = new TextEncoder().encode(opts.name);
    this.defaultTtlMs = opts.defaultTtlMs ?? 0;
    if (!(this.defaultTtlMs >= 0)) throw new RangeError(`group ${opts.name}: default TTL must be >= 0`);
    this.store = new Store({ ...opts.store, memory: opts.memory });
  }

  /** ttlFor maps a requested TTL (0 = group default) to the TTL given to the store. */
  ttlFor(requestedMs: number): number {
    return requestedMs === 0 ? this.defaultTtlMs : requestedMs;
  }

  /** lookup returns the item id of a live key (counting a get, hit or miss), or -1. */
  lookup(key: Uint8Array, off: number, len: number): number {
    this.counters.gets++;
    const id = this.store.get(key, off, len);
    if (id < 0) this.counters.misses++;
    else this.counters.hits++;
    return id;
  }
}

/** Groups is a node's table of groups, found by name bytes without building a string. */
export class Groups {
  private readonly list: Group[] = [];

  add(group: Group): Group {
    if (this.byName(group.name) !== undefined) throw new Error(`group ${group.name} defined twice`);
    this.list.push(group);
    return group;
  }

  /** find returns the group named buf[start, start+len), or undefined. */
  find(buf: Uint8Array, start: number, len: number): Group | undefined {
    const list = this.list;
    for (let g = 0; g < list.length; g++) {
      const group = list[g]!;
      const name = group.nameBytes;
      if (name.length !== len) continue;
      let i = 0;
      while (i < len && name[i] === buf[start + i]) i++;
      if (i === len) return group;
    }
    return undefined;
  }

  byName(name: string): Group | undefined {
    return this.list.find((g) => g.name === name);
  }

  all(): readonly Group[] {
    return this.list;
  }
}
