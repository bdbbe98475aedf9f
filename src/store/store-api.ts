/**
 * The Store's public vocabulary: its options (and the default page size they imply), the results
 * of `set`/`fill`, and its figures (a plain struct of counters plus the figures read at stats
 * time). Kept apart from the engine so callers and the engine's helpers share one definition.
 */
import type { ClassStats } from "./store-stats.ts";

/** Results of `set` and `fill`. */
export const SET_OK = 0;
export const SET_TOO_LARGE = 1;
export const SET_NO_MEMORY = 2;
export const SET_REJECTED = 3;
export const SET_INVALID_TTL = 4;
export type SetResult = typeof SET_OK | typeof SET_TOO_LARGE | typeof SET_NO_MEMORY | typeof SET_REJECTED | typeof SET_INVALID_TTL;

export const MIB = 1024 * 1024;
/** MAX_KEY_BYTES is the longest key the store can hold (the key length is a Uint16). */
export const MAX_KEY_BYTES = 65535;

export interface StoreOptions {
  /** memory is the total byte budget: slab pages plus metadata. */
  memory: number;
  /** maxItemSize bounds one item's chunk: 4-byte header + key + value (memcached's -I). Default 1 MiB. */
  maxItemSize?: number;
  /**
   * pageSize is the slab page size; at least maxItemSize. Default: 1 MiB, or for a store of less
   * than 64 MiB a 64th of its memory (at least 64 KiB: `defaultPageSize`), made at least its
   * largest item.
   */
  pageSize?: number;
  /** minChunk is the smallest chunk size. Default 48. */
  minChunk?: number;
  /** growthFactor is the ratio between consecutive chunk sizes. Default 1.25. */
  growthFactor?: number;
  /** clock returns the current time in ms. Default `monotonicMs` (store/clock.ts: not moved by a step of the wall clock). */
  clock?: () => number;
  /** admissionK is LRU-K's K for read fills. Default 2; 1 admits everything. */
  admissionK?: number;
  /** admissionHistory is how many distinct not-yet-admitted keys LRU-K remembers. Default 4096. */
  admissionHistory?: number;
  /** initialItems is the item table's first capacity. Default 1024. */
  initialItems?: number;
  /** hashSeed seeds the key hash. Default: drawn at random for the store (against hash flooding). */
  hashSeed?: number;
}

/** MIN_DEFAULT_PAGE is the smallest default page: 64 KiB. */
const MIN_DEFAULT_PAGE = 64 * 1024;

/**
 * defaultPageSize is the page size of a store of `memory` bytes when its options name none: 1 MiB
 * (memcached's), or the largest power of two up to a 64th of a smaller store's memory, at least
 * 64 KiB (the store makes it at least its largest item). A page belongs to one size class at a
 * time, so a store of few pages holding values of many sizes has fewer pages than classes in use
 * and moves them from class to class, each move evicting a page of items: with 1 MiB pages a 16 MiB
 * store of 100 B–1 KiB values (10 classes) held 14,975 items of 30,000 keys and hit 54 %, with
 * 256 KiB pages 22,041 and 76 % (memcached -m 16: 75 %; bench/RESULTS.md, session 17). So a small
 * store whose items are small (its `maxItemSize`: `--max-item-size`, a group's `maxitem=`, a
 * mirror's) gets small pages.
 */
export function defaultPageSize(memory: number): number {
  return Math.min(MIB, sixtyFourthOf(memory));
}

/**
 * sixtyFourthOf is the largest power of two up to a 64th of `memory`, at least 64 KiB: a small
 * store's default page (`defaultPageSize`, at most 1 MiB) and a mirror's largest item (Group).
 */
export function sixtyFourthOf(memory: number): number {
  let size = MIN_DEFAULT_PAGE;
  while (size * 2 * 64 <= memory) size *= 2;
  return size;
}

/** StoreCounters are the store's running totals, a plain struct of numbers. */
export class StoreCounters {
  hits = 0; // gets that found a live item
  misses = 0; // gets that found nothing (or an expired item)
  sets = 0; // successful set and fill calls
  deletes = 0; // delete calls that removed an item
  evictions = 0; // live items removed to make room (LRU tail or page move); an expired one counts in expiredActive
  collisionEvictions = 0; // live items removed for a new key past the most keys one hash may hold
  expiredLazy = 0; // expired items removed when read
  expiredActive = 0; // expired items removed by expire(), or to make room (before any live item)
  admissionsRejected = 0; // fills refused by LRU-K
  tooLarge = 0; // sets refused because the item exceeds the largest class
  noMemory = 0; // sets refused because no chunk could be made free
  clears = 0; // clear calls
  tableShrinks = 0; // times the item table and its index were made smaller (most of their ids free)
}

export interface StoreStats extends StoreCounters {
  items: number;
  /** bytesUsed is the chunk bytes held by live items (what they cost in pages). */
  bytesUsed: number;
  /** dataBytes is the key and value bytes of live items. */
  dataBytes: number;
  pageBytes: number;
  metaBytes: number;
  capacity: number;
  /** pageSize is the slab page size; maxItemSize the largest item (4-byte header + key + value). */
  pageSize: number;
  maxItemSize: number;
  pageMoves: number;
  /** pageReleases counts pages given back to the pool so the item table could grow. */
  pageReleases: number;
  /** pageRescues counts items a page move or release copied to a free chunk of their class elsewhere instead of evicting. */
  pageRescues: number;
  heapSize: number;
  /** itemCapacity is how many items the item table holds before it must grow (its ids). */
  itemCapacity: number;
  classes: ClassStats[];
}

