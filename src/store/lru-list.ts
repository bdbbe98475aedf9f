/**
 * LruList keeps one intrusive doubly-linked recency list per size class.
 *
 * The links live in the item records (`W_PREV`, `W_NEXT` of the ItemTable; -1 is nil), so
 * linking, unlinking and bumping allocate nothing and touch only the records involved.
 * `head[c]` is class c's most recently used item and `tail[c]` its least recently used one:
 * eviction takes the tail of the class that needs a chunk.
 */
import { NIL, STRIDE, W_NEXT, W_PREV, type ItemId, type ItemTable } from "./item-table.ts";

export class LruList {
  readonly head: Int32Array;
  readonly tail: Int32Array;
  readonly length: Int32Array;
  private readonly items: ItemTable;

  constructor(classes: number, items: ItemTable) {
    this.head = new Int32Array(classes).fill(NIL);
    this.tail = new Int32Array(classes).fill(NIL);
    this.length = new Int32Array(classes);
    this.items = items;
  }

  prev(id: ItemId): ItemId {
    return this.items.w[id * STRIDE + W_PREV]!;
  }

  next(id: ItemId): ItemId {
    return this.items.w[id * STRIDE + W_NEXT]!;
  }

  /** pushHead links `id` as the most recent item of class `cls`. */
  pushHead(cls: number, id: ItemId): void {
    const w = this.items.w;
    const h = this.head[cls]!;
    w[id * STRIDE + W_PREV] = NIL;
    w[id * STRIDE + W_NEXT] = h;
    if (h !== NIL) w[h * STRIDE + W_PREV] = id;
    else this.tail[cls] = id;
    this.head[cls] = id;
    this.length[cls]!++;
  }

  /** unlink removes `id` from class `cls`'s list. */
  unlink(cls: number, id: ItemId): void {
    const w = this.items.w;
    const r = id * STRIDE;
    const p = w[r + W_PREV]!;
    const n = w[r + W_NEXT]!;
    if (p !== NIL) w[p * STRIDE + W_NEXT] = n;
    else this.head[cls] = n;
    if (n !== NIL) w[n * STRIDE + W_PREV] = p;
    else this.tail[cls] = p;
    w[r + W_PREV] = NIL;
    w[r + W_NEXT] = NIL;
    this.length[cls]!--;
  }

  /** bump makes `id` the most recent item of class `cls`. */
  bump(cls: number, id: ItemId): void {
    if (this.head[cls] === id) return;
    this.unlink(cls, id);
    this.pushHead(cls, id);
  }

  reset(): void {
    this.head.fill(NIL);
    this.tail.fill(NIL);
    this.length.fill(0);
  }
}
