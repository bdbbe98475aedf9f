/**
 * LruList keeps one intrusive doubly-linked recency list per size class.
 *
 * Links are two `Int32Array`s indexed by item id (`prev`, `next`; -1 is nil), so linking,
 * unlinking and bumping allocate nothing. `head[c]` is class c's most recently used item and
 * `tail[c]` its least recently used one: eviction takes the tail of the class that needs a chunk.
 */
import { NIL, type ItemId } from "./item-table.ts";

export const LRU_BYTES_PER_ITEM = 8;

export class LruList {
  prev = new Int32Array(0);
  next = new Int32Array(0);
  readonly head: Int32Array;
  readonly tail: Int32Array;
  readonly length: Int32Array;

  constructor(classes: number, cap: number) {
    this.head = new Int32Array(classes).fill(NIL);
    this.tail = new Int32Array(classes).fill(NIL);
    this.length = new Int32Array(classes);
    this.grow(cap);
  }

  /** pushHead links `id` as the most recent item of class `cls`. */
  pushHead(cls: number, id: ItemId): void {
    const h = this.head[cls]!;
    this.prev[id] = NIL;
    this.next[id] = h;
    if (h !== NIL) this.prev[h] = id;
    else this.tail[cls] = id;
    this.head[cls] = id;
    this.length[cls]!++;
  }

  /** unlink removes `id` from class `cls`'s list. */
  unlink(cls: number, id: ItemId): void {
    const p = this.prev[id]!;
    const n = this.next[id]!;
    if (p !== NIL) this.next[p] = n;
    else this.head[cls] = n;
    if (n !== NIL) this.prev[n] = p;
    else this.tail[cls] = p;
    this.prev[id] = NIL;
    this.next[id] = NIL;
    this.length[cls]!--;
  }

  /** bump makes `id` the most recent item of class `cls`. */
  bump(cls: number, id: ItemId): void {
    if (this.head[cls] === id) return;
    this.unlink(cls, id);
    this.pushHead(cls, id);
  }

  grow(cap: number): void {
    const prev = new Int32Array(cap).fill(NIL);
    const next = new Int32Array(cap).fill(NIL);
    prev.set(this.prev);
    next.set(this.next);
    this.prev = prev;
    this.next = next;
  }

  reset(): void {
    this.head.fill(NIL);
    this.tail.fill(NIL);
    this.length.fill(0);
    this.prev.fill(NIL);
    this.next.fill(NIL);
  }
}
