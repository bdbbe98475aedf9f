/**
 * RingPurges removes from the groups' main stores the items of keys other members own, after each
 * ring change (Group.dropNotOwned, a slice at a time).
 *
 * Each purge tests keys against the ring of its own change (a copy: Cluster.ownedHere), never
 * the ring of the moment, and runs to its end even when another change comes: a member that
 * joins and leaves again while a purge runs may have taken writes of keys that come back here,
 * and a copy kept here would then be served stale. (A key written here after such a member left
 * may be dropped by the older purge too: a cache may lose a value, not serve an old one.)
 */
import type { Group } from "./group.ts";

/** Owned tells whether this node owns key[off, off+len) under one ring (Cluster.ownedHere). */
export type Owned = (key: Uint8Array, off: number, len: number) => boolean;

export interface RingPurgeLogger {
  info(msg: string, fields?: Record<string, unknown>): void;
}

export class RingPurges {
  constructor(private readonly logger: RingPurgeLogger) {}

  /**
   * changed starts the purge for a new ring (`owned`): it drops each group's mirror, makes the
   * loads under way stale, and removes the items of keys owned elsewhere. Resolves when done.
   */
  changed(owned: Owned, groups: readonly Group[], sliceItems?: number): Promise<void> {
    return Promise.all(groups.map((g) => {
      // Copies made under the old ring may miss the new owners' invalidations; loads under way may
      // be of keys others own now; and so may items of the main store.
      g.dropCopies();
      g.allWritten();
      return g.dropNotOwned(owned, sliceItems).then((items) => {
        if (items > 0) this.logger.info("items of keys other members own now dropped", { group: g.name, items });
      });
    })).then(() => undefined);
  }
}
