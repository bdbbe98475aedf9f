/**
 * HandOuts (src/cluster/hand-outs.ts) on a clock of its own: until when, and by which members,
 * keys may be held; and Group.copyTtl, which ages a copy's cap from when its Get was sent.
 */
import { expect, test, setDefaultTimeout } from "bun:test";
import { EVERY_MEMBER, HandOuts, SLACK_MS } from "../../src/cluster/hand-outs.ts";
import { Group } from "../../src/cluster/group.ts";
import { MIB } from "../../src/store/store.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const utf8 = new TextEncoder();
const G = utf8.encode("g");
const key = (k: string): [Uint8Array, number, number] => [utf8.encode(k), 0, k.length];

function table(mirrorTtlMs: number): { h: HandOuts; now: { ms: number } } {
  const now = { ms: 1_000 };
  return { h: new HandOuts(mirrorTtlMs, () => now.ms), now };
}

test("after a start every member may hold copies until it confirms, for a copy's life at most; then only what was handed out", () => {
  const { h, now } = table(10_000);
  expect(h.holders(G, ...key("a"))).toBe(0);
  expect([h.starting, h.startHeldBy("m1:1"), h.startHeldBy("m2:2")]).toEqual([true, true, true]);
  h.confirm("m1:1"); // it dropped its mirrors
  expect([h.startHeldBy("m1:1"), h.startHeldBy("m2:2")]).toEqual([false, true]);
  now.ms += 10_000 + SLACK_MS;
  expect([h.starting, h.startHeldBy("m2:2")]).toEqual([false, false]);
  expect(h.holders(G, ...key("a"))).toBe(0);
  h.note(G, ...key("a"), "m1:1", 10_000);
  h.note(G, ...key("a"), "m2:2", 10_000);
  expect(h.holders(G, ...key("a"))).toBe((h.bitOf("m1:1") | h.bitOf("m2:2")) >>> 0);
  expect(h.holders(G, ...key("b"))).toBe(0);
  expect(h.holders(utf8.encode("other"), ...key("a"))).toBe(0);
  now.ms += 10_000 + SLACK_MS - 1;
  expect(h.holders(G, ...key("a"))).not.toBe(0);
  now.ms += 1;
  expect(h.holders(G, ...key("a"))).toBe(0);
  // Expired: the next answer starts a new set of members.
  h.note(G, ...key("a"), "m2:2", 10_000);
  expect(h.holders(G, ...key("a"))).toBe(h.bitOf("m2:2"));
  // A connection that did not name its member marks every member.
  h.note(G, ...key("c"), undefined, 10_000);
  expect(h.holders(G, ...key("c"))).toBe(EVERY_MEMBER);
});

test("with no mirror TTL a key once handed out stays held, and so does a start's until confirmed; a member list change counts every key held", () => {
  const { h, now } = table(0);
  now.ms += 1e9;
  expect(h.startHeldBy("m1:1")).toBe(true);
  h.confirm("m1:1");
  expect(h.startHeldBy("m1:1")).toBe(false);
  const { h: capped, now: later } = table(1_000);
  later.ms += 1_000 + SLACK_MS;
  capped.note(G, ...key("a"), "m1:1", 0); // a group whose copies live as long as their values
  later.ms += 1e9;
  expect(capped.holders(G, ...key("a"))).toBe(capped.bitOf("m1:1"));
  expect(capped.holders(G, ...key("b"))).toBe(0);
  capped.assumeAll(); // the member list changed
  expect(capped.holders(G, ...key("b"))).toBe(EVERY_MEMBER);
  later.ms += 1_000 + SLACK_MS;
  expect(capped.holders(G, ...key("b"))).toBe(0);
});

test("a copy's cap is the mirror TTL less the time since its Get was sent; none left, it is not kept", () => {
  const g = new Group({ name: "g", memory: 8 * MIB, mirrorMemory: 2 * MIB, mirrorTtlMs: 10_000 });
  expect(g.copyTtl(-1)).toBe(10_000);
  expect(g.copyTtl(-1, 4_000)).toBe(6_000);
  expect(g.copyTtl(3_000, 4_000)).toBe(3_000);
  expect(g.copyTtl(-1, 10_000)).toBe(-1);
  const uncapped = new Group({ name: "u", memory: 8 * MIB, mirrorMemory: 2 * MIB, mirrorTtlMs: 0 });
  expect(uncapped.copyTtl(-1, 1e9)).toBe(0);
  expect(uncapped.copyTtl(5_000, 1e9)).toBe(5_000);
});
