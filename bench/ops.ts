/**
 * Ops builds the timed bodies shared by bench/store.bench.ts and bench/alloc.ts: one operation of
 * a workload per call, given the draw number j (callers wrap j with `seqMask`).
 *
 * Byte-keyed bodies pass (key arena, offset, length) like the server will; string-keyed bodies
 * hand a rival the precomputed key string. A set rewrites a key with its own value (same length,
 * so our store overwrites in place); the mix draws get or set from the workload's `isSet`.
 * The closures share their bytecode across caches (JSC links one code block per function
 * expression), so each cache is reached through the same, polymorphic, call site: equal for all.
 */
import type { CacheImpl, StringKeyed } from "./impls/cache-impl.ts";
import { KEY_BYTES, type Workload } from "./workload.ts";

export type Op = (j: number) => number | boolean;

export type OpName = "get-hit" | "set-overwrite" | "mix 90/10";
export const OP_NAMES: readonly OpName[] = ["get-hit", "set-overwrite", "mix 90/10"];

/** byteOp returns the body of operation `name` on a byte-keyed cache; results land in `out`. */
export function byteOp(name: OpName, c: CacheImpl, w: Workload, out: Uint8Array): Op {
  const { keys, values, valOff, valLen, seq, isSet } = w;
  switch (name) {
    case "get-hit":
      return (j) => c.get(keys, seq[j]! * KEY_BYTES, KEY_BYTES, out);
    case "set-overwrite":
      return (j) => {
        const k = seq[j]!;
        return c.set(keys, k * KEY_BYTES, KEY_BYTES, values, valOff[k]!, valLen[k]!);
      };
    case "mix 90/10":
      return (j) => {
        const k = seq[j]!;
        return isSet[j] === 1
          ? c.set(keys, k * KEY_BYTES, KEY_BYTES, values, valOff[k]!, valLen[k]!)
          : c.get(keys, k * KEY_BYTES, KEY_BYTES, out);
      };
  }
}

/** stringOp is byteOp for a rival given ready-made string keys. */
export function stringOp(name: OpName, c: StringKeyed, w: Workload, out: Uint8Array): Op {
  const { keyStrings, values, valOff, valLen, seq, isSet } = w;
  switch (name) {
    case "get-hit":
      return (j) => c.getString(keyStrings[seq[j]!]!, out);
    case "set-overwrite":
      return (j) => {
        const k = seq[j]!;
        return c.setString(keyStrings[k]!, values, valOff[k]!, valLen[k]!);
      };
    case "mix 90/10":
      return (j) => {
        const k = seq[j]!;
        return isSet[j] === 1
          ? c.setString(keyStrings[k]!, values, valOff[k]!, valLen[k]!)
          : c.getString(keyStrings[k]!, out);
      };
  }
}
