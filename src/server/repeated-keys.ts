/**
 * repeatedKeys marks the entries of a multi-key request (GetMulti, PeerGetMulti) whose key an
 * earlier entry of it names already: its reply is a Thrift map, whose keys are unique (the seed
 * answered a Go map), so a key asked twice is looked up, counted, loaded and answered once.
 * (Written once per entry, a key repeated a thousand times made a reply a thousand values long,
 * and could pass the frame limit where the seed answered one.)
 *
 * Returns flags by entry index (1 = repeated), or null when no key repeats. The flags and the
 * table are module scratch, kept up to SCRATCH_SLOTS: read them before the next call (the callers
 * write their reply in the same synchronous run).
 */
import { bytesEqual } from "../bytes/bytes.ts";
import type { Request } from "../protocol/request.ts";
import { hashBytes } from "../store/hash.ts";

/** SCRATCH_SLOTS bounds the table kept between calls (a larger request gets one of its own). */
const SCRATCH_SLOTS = 1 << 16;
/**
 * SEED is drawn once a process: with a known one, a client could choose keys whose hashes share
 * a slot, and one GetMulti of 50,000 of them held the loop 6 s (quadratic probing). MurmurHash3
 * has multicollisions whatever the seed, so the probing is bounded too: past PROBES_PER_KEY a
 * key on average, the check gives up and the keys are answered as asked (repeats and all; the
 * frame limit still bounds the reply).
 */
const SEED = crypto.getRandomValues(new Int32Array(1))[0]!;
const PROBES_PER_KEY = 16;
let scratchSlots = new Int32Array(64);
let scratchFlags = new Uint8Array(32);

export function repeatedKeys(req: Request): Uint8Array | null {
  return markRepeated(req, SEED);
}

/** markRepeated is `repeatedKeys` with the hash seed given (tests choose colliding keys for one). */
export function markRepeated(req: Pick<Request, "itemCount" | "items" | "buffer">, seed: number): Uint8Array | null {
  const n = req.itemCount;
  if (n < 2) return null;
  let size = 64;
  while (size < n * 2) size *= 2;
  let slots: Int32Array;
  if (size > SCRATCH_SLOTS) slots = new Int32Array(size);
  else {
    if (scratchSlots.length < size) scratchSlots = new Int32Array(size);
    slots = scratchSlots;
    slots.fill(0, 0, size);
  }
  if (scratchFlags.length < n) scratchFlags = new Uint8Array(n > SCRATCH_SLOTS ? n : Math.max(n, scratchFlags.length * 2));
  const flags = scratchFlags;
  flags.fill(0, 0, n);
  const mask = size - 1;
  const buf = req.buffer;
  const items = req.items;
  let any = false;
  let probes = PROBES_PER_KEY * n + 64;
  for (let i = 0; i < n; i++) {
    const ks = items[i * 4]!;
    const kl = items[i * 4 + 1]!;
    let s = hashBytes(buf, ks, kl, seed) & mask;
    for (;;) {
      if (--probes < 0) return null; // (a flood of colliding keys: see SEED)
      const e = slots[s]!;
      if (e === 0) {
        slots[s] = i + 1;
        break;
      }
      const j = e - 1;
      if (items[j * 4 + 1] === kl && bytesEqual(buf, items[j * 4]!, buf, ks, kl)) {
        flags[i] = 1;
        any = true;
        break;
      }
      s = (s + 1) & mask;
    }
  }
  if (flags.length > SCRATCH_SLOTS) scratchFlags = new Uint8Array(32); // (not kept: the caller has it)
  return any ? flags : null;
}
