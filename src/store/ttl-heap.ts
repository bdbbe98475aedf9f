/**
 * TtlHeap is a flat-array binary min-heap of items ordered by expiry.
 *
 * Layout: `slots` (Int32Array) holds item ids in heap order (children of slot i at 2i+1 and
 * 2i+2). Each item's expiry and its slot (`W_HEAP`, -1 when absent) live in its ItemTable record,
 * so removing or re-timing an arbitrary item is O(log n) with no scan. Keeping only ids here (not
 * (expiry, id) pairs) costs a record read per comparison but saves 8 bytes per item of reserved
 * metadata; the heap is off the read path (sets with a TTL and the expiry timer only). Only items
 * with a finite expiry are in it. The slot array is reserved, like the item table's records, for
 * as many ids as the table's buffer holds (`ItemTable.reserved`): backed lazily, it costs memory
 * only as far as the heap has reached, and it never grows by a copy (doubling it copied every
 * slot: 122 ms of one set at 11.7 M items with a TTL). Past the reservation it doubles as before.
 * When the item table shrinks, `fit` copies the slots in use into a fresh reservation, so the
 * pages the larger heap touched go back with the old array.
 */
import { F_EXPIRY, F_STRIDE, NIL, STRIDE, W_HEAP, type ItemId, type ItemTable } from "./item-table.ts";

export const HEAP_BYTES_PER_ITEM = 4;

export class TtlHeap {
  size = 0;
  slots: Int32Array;
  private readonly items: ItemTable;

  constructor(items: ItemTable, initialSlots: number) {
    this.items = items;
    this.slots = new Int32Array(Math.max(initialSlots, items.reserved));
  }

  /** has tells whether `id` is in the heap. */
  has(id: ItemId): boolean {
    return this.items.w[id * STRIDE + W_HEAP]! !== NIL;
  }

  /** minExpiry is the earliest expiry, or Infinity when the heap is empty. */
  minExpiry(): number {
    return this.size === 0 ? Infinity : this.expiryOf(this.slots[0]!);
  }

  /** minItem is the item with the earliest expiry, or -1. */
  minItem(): ItemId {
    return this.size === 0 ? NIL : this.slots[0]!;
  }

  /** push inserts `id`, whose expiry is already in its record. */
  push(id: ItemId): void {
    if (this.size === this.slots.length) this.grow();
    const i = this.size++;
    this.slots[i] = id;
    this.up(i);
  }

  /** update restores heap order after `id`'s expiry changed from `oldExpiry`. */
  update(id: ItemId, oldExpiry: number): void {
    const i = this.items.w[id * STRIDE + W_HEAP]!;
    if (this.expiryOf(id) < oldExpiry) this.up(i);
    else this.down(i);
  }

  /** remove takes `id` out of the heap, if it is in it. */
  remove(id: ItemId): void {
    const w = this.items.w;
    const i = w[id * STRIDE + W_HEAP]!;
    if (i === NIL) return;
    w[id * STRIDE + W_HEAP] = NIL;
    const last = --this.size;
    if (i === last) return;
    const moved = this.slots[last]!;
    this.slots[i] = moved;
    w[moved * STRIDE + W_HEAP] = i;
    if (i > 0 && this.expiryOf(moved) < this.expiryOf(this.slots[(i - 1) >> 1]!)) this.up(i);
    else this.down(i);
  }

  /** reset empties the heap, its slots fitted to the item table (which a clear has reset first). */
  reset(): void {
    this.size = 0;
    this.fit(this.items.cap);
  }

  /**
   * fit gives back the memory of slots past the first `cap` (the item table shrank to `cap` ids):
   * the slots in use move to a fresh reservation, or to an array of `cap` without one.
   */
  fit(cap: number): void {
    const slots = new Int32Array(Math.max(cap, this.size, this.items.reserved));
    slots.set(this.slots.subarray(0, this.size));
    this.slots = slots;
  }

  private expiryOf(id: ItemId): number {
    return this.items.f[id * F_STRIDE + F_EXPIRY]!;
  }

  private grow(): void {
    const slots = new Int32Array(Math.max(16, this.items.reserved, Math.min(this.items.cap, this.slots.length * 2)));
    slots.set(this.slots.subarray(0, this.size));
    this.slots = slots;
  }

  private up(i: number): void {
    const w = this.items.w;
    const id = this.slots[i]!;
    const e = this.expiryOf(id);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const pid = this.slots[parent]!;
      if (this.expiryOf(pid) <= e) break;
      this.slots[i] = pid;
      w[pid * STRIDE + W_HEAP] = i;
      i = parent;
    }
    this.slots[i] = id;
    w[id * STRIDE + W_HEAP] = i;
  }

  private down(i: number): void {
    const w = this.items.w;
    const n = this.size;
    const id = this.slots[i]!;
    const e = this.expiryOf(id);
    for (;;) {
      let child = 2 * i + 1;
      if (child >= n) break;
      let cid = this.slots[child]!;
      let ce = this.expiryOf(cid);
      if (child + 1 < n) {
        const rid = this.slots[child + 1]!;
        const re = this.expiryOf(rid);
        if (re < ce) {
          child++;
          cid = rid;
          ce = re;
        }
      }
      if (ce >= e) break;
      this.slots[i] = cid;
      w[cid * STRIDE + W_HEAP] = i;
      i = child;
    }
    this.slots[i] = id;
    w[id * STRIDE + W_HEAP] = i;
  }
}
