/**
 * Groups is a node's table of groups (CacheNode makes one; the server, its timers and the
 * snapshot read it): a plain array, searched by name bytes without building a string (`find`,
 * once per request), for the few groups a node serves. Names are unique (`add` refuses a second).
 */
import type { Group } from "./group.ts";

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
      if (list[g]!.nameIs(buf, start, len)) return list[g];
    }
    return undefined;
  }

  byName(name: string): Group | undefined {
    return this.list.find((g) => g.name === name);
  }

  all(): readonly Group[] {
    return this.list;
  }

  /** dropCopies empties every group's mirror (`Group.dropCopies`). */
  dropCopies(): void {
    for (const g of this.list) g.dropCopies();
  }
}
