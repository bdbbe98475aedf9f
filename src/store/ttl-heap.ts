/**
 * TtlHeap is a flat-array binary min-heap of (expiry, item), ordered by expiry.
 *
 * Layout: `exp` (Float64Array) and `item` (Int32Array) hold the heap in array order (children of
 * slot i at 2i+1 and 2i+2); `pos` (Int32Array, indexed by item id) holds each item's slot or -1,
 * so removing or re-timing an arbitrary item is O(log n) instead of a scan. Only items with a
 * finite expiry are in the heap. The heap array grows by doubling, independently of the item
 * table, since most caches hold few items with a TTL or nearly all of them.
 */
import { NIL, type ItemId } from "./item-table.ts";

export const HEAP_BYTES_PER_ITEM = 4; // pos; each heap slot adds 12 more

export class TtlHeap {
  size = 0;
  exp = new Float64Array(0);
  item = new Int32Array(0);
  pos = new Int32Array(0);

  constructor(itemCap: number, heapCap: number) {
    this.growItems(itemCap);
    this.growHeap(heapCap);
  }

  /** has tells whether `id` is in the heap. */
  has(id: ItemId): boolean {
    return this.pos[id]! !== NIL;
  }

  /** minExpiry is the earliest expiry, or Infinity when the heap is empty. */
  minExpiry(): number {
    return this.size === 0 ? Infinity : this.exp[0]!;
  }

  /** minItem is the item with the earliest expiry, or -1. */
  minItem(): ItemId {
    return this.size === 0 ? NIL : this.item[0]!;
  }

  /** needsRoom tells whether a push would have to grow the heap array first. */
  needsRoom(): boolean {
    return this.size === this.exp.length;
  }

  /** push inserts `id` with `expiry`; the caller ensures room (`needsRoom`/`growHeap`). */
  push(id: ItemId, expiry: number): void {
    const i = this.size++;
    this.exp[i] = expiry;
    this.item[i] = id;
    this.pos[id] = i;
    this.up(i);
  }

  /** update re-times an item already in the heap. */
  update(id: ItemId, expiry: number): void {
    const i = this.pos[id]!;
    const old = this.exp[i]!;
    this.exp[i] = expiry;
    if (expiry < old) this.up(i);
    else this.down(i);
  }

  /** remove takes `id` out of the heap, if it is in it. */
  remove(id: ItemId): void {
    const i = this.pos[id]!;
    if (i === NIL) return;
    this.pos[id] = NIL;
    const last = --this.size;
    if (i === last) return;
    this.exp[i] = this.exp[last]!;
    this.item[i] = this.item[last]!;
    this.pos[this.item[i]!] = i;
    if (i > 0 && this.exp[i]! < this.exp[(i - 1) >> 1]!) this.up(i);
    else this.down(i);
  }

  growItems(cap: number): void {
    const pos = new Int32Array(cap).fill(NIL);
    pos.set(this.pos);
    this.pos = pos;
  }

  growHeap(cap: number): void {
    const exp = new Float64Array(cap);
    const item = new Int32Array(cap);
    exp.set(this.exp.subarray(0, this.size));
    item.set(this.item.subarray(0, this.size));
    this.exp = exp;
    this.item = item;
  }

  reset(): void {
    this.size = 0;
    this.pos.fill(NIL);
  }

  byteSize(): number {
    return this.pos.length * HEAP_BYTES_PER_ITEM + this.exp.length * 12;
  }

  private up(i: number): void {
    const e = this.exp[i]!;
    const id = this.item[i]!;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const pe = this.exp[parent]!;
      if (pe <= e) break;
      this.exp[i] = pe;
      const pid = this.item[parent]!;
      this.item[i] = pid;
      this.pos[pid] = i;
      i = parent;
    }
    this.exp[i] = e;
    this.item[i] = id;
    this.pos[id] = i;
  }

  private down(i: number): void {
    const n = this.size;
    const e = this.exp[i]!;
    const id = this.item[i]!;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= n) break;
      if (child + 1 < n && this.exp[child + 1]! < this.exp[child]!) child++;
      const ce = this.exp[child]!;
      if (ce >= e) break;
      this.exp[i] = ce;
      const cid = this.item[child]!;
      this.item[i] = cid;
      this.pos[cid] = i;
      i = child;
    }
    this.exp[i] = e;
    this.item[i] = id;
    this.pos[id] = i;
  }
}
