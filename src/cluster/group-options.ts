/**
 * GroupOptions are what a Group is made with: its name and memory, its TTLs, its loader and the
 * admission of loaded values, the bounds on its loads, its store's engine options, and in a
 * cluster the mirror's share and life. Group's constructor checks them and fills in the defaults.
 */
import type { StoreOptions } from "../store/store.ts";
import type { LoadBound } from "./load-bound.ts";
import type { Loader } from "./loader.ts";

export type AdmissionPolicy = "lru-k" | "always";

export interface GroupOptions {
  name: string;
  /** memory is this group's byte budget (slab pages plus metadata). */
  memory: number;
  /** defaultTtlMs applies when a set or a load asks for TTL 0; 0 here means no expiry. */
  defaultTtlMs?: number;
  /** loader fetches missing keys; without one the group is a plain key-value store. */
  loader?: Loader;
  /** admission decides whether loaded values are stored: LRU-K (default, K = admissionK) or always. */
  admission?: AdmissionPolicy;
  /** admissionK is LRU-K's K (default 2). */
  admissionK?: number;
  /** negativeTtlMs caches "not found" from the loader for this long; 0 (default) = off. */
  negativeTtlMs?: number;
  /** loadTimeoutMs bounds how long callers wait for the loader (default 10 s). */
  loadTimeoutMs?: number;
  /**
   * loadsAhead bounds the loads started ahead of their Get's turn (server/look-ahead.ts) that run
   * at once (default: a bound of the group's own, none). A node whose loads run in its worker
   * pool gives its pool's groups one bound of half the pool: one client pipelining cold Gets had
   * every place taken by its own loads ahead, and other clients' Gets were refused OVERLOADED.
   */
  loadsAhead?: LoadBound;
  /**
   * loads bounds the loads (loader calls, after singleflight) under way at once; a miss that would
   * start one more is refused OVERLOADED (default: a bound of the group's own, DEFAULT_MAX_LOADS).
   * A node's groups share one (--max-loads): see load-bound.ts for why.
   */
  loads?: LoadBound;
  /**
   * multiLoadWindow is how many loads one multi-key request (GetMulti) runs at once (default
   * DEFAULT_MULTI_LOAD_WINDOW); its other misses start as those settle (server/multi-loads.ts).
   */
  multiLoadWindow?: number;
  /** store passes engine options through (max item size, clock, ...). */
  store?: Omit<StoreOptions, "memory" | "admissionK">;
  /**
   * mirrorMemory, in a cluster, is the share of `memory` kept for hot copies of keys owned by
   * other nodes (filled through LRU-K admission); 0 or absent = no mirror.
   */
  mirrorMemory?: number;
  /**
   * mirrorTtlMs caps the life of a mirrored copy (0 or absent: its own TTL only). The owner's
   * invalidations are sent once, not retried: a copy that missed one is stale for at most this.
   */
  mirrorTtlMs?: number;
}
