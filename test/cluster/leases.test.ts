/**
 * Read leases (src/cluster/leases.ts) without sockets: a member's Leases and an owner's Vouches
 * on a clock the test moves, then a Cluster of stub peers: what a member's mirror may answer
 * under, and how long an owner's write waits for a member it vouched for.
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { Cluster, type PeerClient } from "../../src/cluster/cluster.ts";
import { Leases, MIN_RENEW_MS, Vouches } from "../../src/cluster/leases.ts";
import type { PingResult } from "../../src/client/results.ts";
import { CacheError, ERROR_CODE } from "../../src/protocol/errors.ts";
import { until } from "../client/support.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

describe("Leases (a member's)", () => {
  test("a lease runs from when the ping was sent; 0 keeps what was granted; no field (an older owner) stops the checks", () => {
    let now = 1_000;
    const leases = new Leases(() => now);
    leases.add("o:1", true);
    leases.add("old:1", false);
    expect([leases.holds("o:1"), leases.holds("old:1"), leases.holds("stranger:1")]).toEqual([false, true, false]);
    leases.granted("o:1", 990, 500); // sent at 990: held until 1,490
    now = 1_489;
    expect(leases.holds("o:1")).toBe(true);
    leases.granted("o:1", 1_400, 0); // not vouched: what was granted still holds
    expect(leases.holds("o:1")).toBe(true);
    now = 1_490;
    expect(leases.holds("o:1")).toBe(false);
    leases.granted("o:1", 1_300, 500); // a late reply to an older ping: until 1,800
    expect(leases.holds("o:1")).toBe(true);
    leases.granted("o:1", 1_000, 500); // an even older one never shortens it
    now = 1_799;
    expect(leases.holds("o:1")).toBe(true);
    leases.granted("o:1", 1_700, undefined); // answered as an older node: not checked any more
    now = 1e9;
    expect(leases.holds("o:1")).toBe(true);
    leases.granted("o:1", now, 0); // leases again (upgraded): checked, none held yet
    expect(leases.holds("o:1")).toBe(false);
    leases.forget("o:1");
    leases.granted("o:1", now, 500); // (a reply after it left the list grants nothing)
    expect(leases.holds("o:1")).toBe(false);
  });

  test("renew: one ask in flight per owner, the lease counted from before it was sent; a failed ask grants nothing", async () => {
    let now = 0;
    const leases = new Leases(() => now);
    leases.add("o:1", true);
    const asks: PromiseWithResolvers<number | undefined>[] = [];
    const ask = (): Promise<number | undefined> => {
      const a = Promise.withResolvers<number | undefined>();
      asks.push(a);
      return a.promise;
    };
    leases.renew("o:1", ask);
    now = 100;
    leases.renew("o:1", ask); // in flight: not asked again
    expect(asks.length).toBe(1);
    asks[0]!.resolve(250);
    await asks[0]!.promise;
    await Bun.sleep(0);
    expect(leases.holds("o:1")).toBe(true); // until 0 + 250
    now = 250;
    expect(leases.holds("o:1")).toBe(false);
    leases.renew("o:1", ask);
    asks[1]!.reject(new Error("timeout"));
    await Bun.sleep(0);
    expect(leases.holds("o:1")).toBe(false);
    leases.renew("o:1", ask); // asked again
    expect(asks.length).toBe(3);
  });

  test("renewed only while used: unused for the idle span, renewals stop; the next use (a Get that tried a copy, a copy made) asks again at once", async () => {
    let now = 0;
    const woken: string[] = [];
    const leases = new Leases(() => now, 250, (owner) => woken.push(owner)); // (idle span: 4 leases of 250 ms)
    leases.add("o:1", true); // (counted as used when listed)
    let asks = 0;
    const ask = async (): Promise<number> => (asks++, 250);
    const renew = async (at: number): Promise<boolean> => {
      now = at;
      const asked = leases.renew("o:1", ask);
      await Bun.sleep(0); // (its reply)
      return asked;
    };
    expect(await renew(0)).toBe(true);
    expect(await renew(999)).toBe(true); // (listed 999 ms ago)
    expect(await renew(1_000)).toBe(false); // unused for the idle span: stopped
    expect([asks, leases.renewing("o:1")]).toEqual([2, false]);
    expect(await renew(1_200)).toBe(false);
    expect(leases.holds("o:1")).toBe(true); // (what was granted still holds: to 999 + 250)
    expect(woken).toEqual(["o:1"]); // that Get woke it
    expect(leases.renewing("o:1")).toBe(true);
    expect(await renew(1_300)).toBe(true);
    expect(await renew(2_199)).toBe(true); // (used at 1,200)
    expect(await renew(2_200)).toBe(false);
    now = 3_000;
    expect(leases.holds("o:1")).toBe(false); // its last lease ran out (2,199 + 250): a lease miss, forwarded
    expect(leases.holds("o:1")).toBe(false);
    expect(woken).toEqual(["o:1", "o:1"]); // woken once
    expect(await renew(3_000)).toBe(true);
    expect(leases.holds("o:1")).toBe(true); // the Gets after the reply hold it
    expect(await renew(4_000)).toBe(false); // (used at 3,000)
    leases.use("o:1"); // a copy made: asked for again
    expect([woken.length, leases.renewing("o:1")]).toEqual([3, true]);
    expect(await renew(4_999)).toBe(true);
    leases.use("stranger:1"); // (not tracked: nothing)
    expect(woken.length).toBe(3);
  });

  test("idle, nothing is held past what was granted; a reply to an ask sent before the owner left and was listed again grants nothing", async () => {
    let now = 0;
    const leases = new Leases(() => now, 500);
    leases.add("o:1", true);
    const late = Promise.withResolvers<number | undefined>();
    expect(leases.renew("o:1", () => late.promise)).toBe(true);
    leases.forget("o:1");
    leases.add("o:1", true);
    late.resolve(500);
    await Bun.sleep(0);
    expect(leases.holds("o:1")).toBe(false);
    expect(leases.renew("o:1", async () => 500)).toBe(true); // (the new entry asks for itself)
    await Bun.sleep(0);
    for (const at of [2_000, 2_500]) {
      now = at;
      leases.renew("o:1", async () => 500); // idle from 2,000 on (4 leases of 500 ms; used at 0)
      await Bun.sleep(0);
    }
    now = 499;
    expect(leases.holds("o:1")).toBe(true);
    now = 500;
    expect(leases.holds("o:1")).toBe(false); // never past sentAt + leaseMs, asking or not
  });
});

describe("renewals follow each owner's lease, not the member's", () => {
  /**
   * run drives `leases` as Cluster does, on the test's clock: a tick at each time renewDue names
   * (never within MIN_RENEW_MS of the last), each ask answered at once with `grant` ms; a Get
   * every ms (`holds`). Returns how many of those Gets held the lease, and how many asks went.
   */
  async function run(clock: { now: number }, leases: Leases, grant: number, endAt: number) {
    let asks = 0;
    let held = 0;
    let gets = 0;
    let tickAt = clock.now;
    while (clock.now < endAt) {
      if (clock.now >= tickAt) {
        const next = leases.renewDue((owner) => void leases.renew(owner, async () => (asks++, grant)));
        await Bun.sleep(0); // (the replies)
        tickAt = Math.max(next, clock.now + MIN_RENEW_MS);
      }
      gets++;
      if (leases.holds("o:1")) held++;
      clock.now++;
    }
    return { held, gets, asks };
  }

  test("an owner granting a far shorter lease (50 ms) than the member's own (1 s): renewed every 12.5 ms, held throughout while used", async () => {
    const clock = { now: 0 };
    const sooner: number[] = [];
    const leases = new Leases(() => clock.now, 1_000, () => {}, (at) => sooner.push(at));
    leases.add("o:1", true);
    expect(leases.renewDue(() => void leases.renew("o:1", async () => 50))).toBe(250); // (before a grant: a quarter of its own)
    await Bun.sleep(0);
    expect([leases.dueAt("o:1"), sooner]).toEqual([12.5, [12.5]]); // the grant moves it
    const { held, gets, asks } = await run(clock, leases, 50, 1_000);
    // (Before: asked every 250 ms, each lease of 50 ms ran out 200 ms before the next: 1 Get in 5 held it.)
    expect(held).toBe(gets);
    expect(asks).toBeGreaterThanOrEqual(70);
    expect(asks).toBeLessThanOrEqual(81);
  });

  test("a longer lease (4 s) than the member's own (250 ms): asked every second, not every 62.5 ms", async () => {
    const clock = { now: 0 };
    const leases = new Leases(() => clock.now, 250);
    leases.add("o:1", true);
    const { held, gets, asks } = await run(clock, leases, 4_000, 10_000);
    expect(held).toBe(gets);
    expect(asks).toBeLessThanOrEqual(11);
  });

  test("a tiny lease (hostile or misconfigured: 0.01 ms) is asked for at most every MIN_RENEW_MS, never a flood", async () => {
    const clock = { now: 0 };
    const leases = new Leases(() => clock.now, 1_000);
    leases.add("o:1", true);
    const { asks } = await run(clock, leases, 0.01, 1_000);
    expect(asks).toBeLessThanOrEqual(1_000 / MIN_RENEW_MS + 1);
    expect(asks).toBeGreaterThan(100);
  });

  test("idle after 4 of the owner's leases unused (50 ms: 200 ms), not the member's (1 s); the next use wakes it", async () => {
    const clock = { now: 0 };
    const woken: string[] = [];
    const leases = new Leases(() => clock.now, 1_000, (owner) => woken.push(owner));
    leases.add("o:1", true);
    const renewOne = (owner: string): void => void leases.renew(owner, async () => 50);
    for (; clock.now <= 300; clock.now += MIN_RENEW_MS) {
      leases.renewDue(renewOne);
      await Bun.sleep(0);
    }
    expect([leases.renewing("o:1"), leases.dueAt("o:1")]).toEqual([false, Infinity]);
    expect(leases.holds("o:1")).toBe(false); // (the last lease ran out)
    expect([woken, leases.renewing("o:1"), leases.dueAt("o:1")]).toEqual([["o:1"], true, 305]);
  });
});

describe("a member's Cluster renews on its owner's lease", () => {
  test("the owner's lease (40 ms) is a 25th of the member's (1 s): the member holds it nearly throughout (before: about a sixth of the time)", async () => {
    const cluster = new Cluster({ self: "me:1", connect: () => stubPeer({ lease: () => 40 }), logger: quiet, peerTimeoutMs: 4_000 });
    cluster.setMembers(["me:1", "o:1"]);
    expect(cluster.leaseMs).toBe(1_000);
    cluster.startRenewingLeases();
    await until(() => cluster.leaseHeld("o:1"));
    let held = 0;
    let gets = 0;
    for (const end = performance.now() + 500; performance.now() < end; gets++) {
      if (cluster.leaseHeld("o:1")) held++;
      await Bun.sleep(2);
    }
    expect(held / gets).toBeGreaterThan(0.8); // (a margin for a busy machine's late timers)
    await cluster.close();
  });
});

describe("Vouches (an owner's)", () => {
  test("a lease is half the longest wait; vouched while no invalidation is unanswered, or the oldest is under a lease old", () => {
    let now = 0;
    const v = new Vouches(1_000, () => now);
    expect(v.leaseMs).toBe(500);
    expect(v.cutoff("m:1", 1_000)).toBe(1_000); // never asked: waited for as before leases
    expect(v.vouch("m:1", true)).toBe(500);
    expect(v.cutoff("m:1", 1_000)).toBe(500);
    now = 100;
    const t = v.sent("m:1");
    now = 599;
    expect(v.vouch("m:1", true)).toBe(500); // its oldest unanswered is 499 ms old: a lease to 1,099 ends before its wait does (1,100)
    expect(v.cutoff("m:1", 1_100)).toBe(1_099);
    now = 601;
    expect(v.vouch("m:1", true)).toBe(0); // 501 ms old: not any more
    v.settled("m:1", t);
    expect(v.vouch("m:1", true)).toBe(500);
    expect(v.vouch("m:1", false)).toBe(0); // lagging or owed a drop
  });

  test("a write acknowledged without the member's answer: no lease until every invalidation sent it so far has settled; a drop ask in flight: none either", () => {
    let now = 0;
    const v = new Vouches(1_000, () => now);
    v.vouch("m:1", true);
    const first = v.sent("m:1");
    v.abandon("m:1");
    const later = v.sent("m:1");
    expect(v.vouch("m:1", true)).toBe(0);
    v.settled("m:1", first);
    expect(v.vouch("m:1", true)).toBe(500); // (only a young one left, sent after the abandon)
    v.settled("m:1", later);
    v.abandon("m:1"); // nothing unanswered: nothing to wait for
    expect(v.vouch("m:1", true)).toBe(500);
    v.block("m:1");
    v.block("m:1");
    v.unblock("m:1");
    expect(v.vouch("m:1", true)).toBe(0);
    v.unblock("m:1");
    expect(v.vouch("m:1", true)).toBe(500);
    now = 10;
    v.introduced("m:1"); // a new connection of it: waited for as before leases until it asks again
    expect(v.cutoff("m:1", 900)).toBe(900);
    expect(v.vouch("m:1", false)).toBe(0);
    expect(v.cutoff("m:1", 900)).toBe(500); // (its last lease, from 0, still counts)
  });

  test("a member never vouched for since this node started: counted as vouched for at the start (a lease of the previous run may not have run out)", () => {
    let now = 5_000;
    const v = new Vouches(1_000, () => now);
    now = 5_100;
    expect(v.vouch("m:1", false)).toBe(0);
    expect(v.cutoff("m:1", 6_100)).toBe(5_500);
    now = 5_600;
    expect(v.cutoff("m:1", 6_600)).toBe(5_500); // (past: a write is acknowledged without it at once)
  });
});

/**
 * stubPeer is a peer client whose invalidations wait in `pending` until the test answers them (or,
 * with `fail`, fail after that many ms; with `fail: "cue"`, fail when the test calls their entry
 * in `pending`), and that pings as `lease` says (undefined: an older node).
 */
function stubPeer(opts: { lease?: () => number | undefined; ping?: boolean; fail?: number | "cue" }): PeerClient & { pending: (() => void)[] } {
  const pending: (() => void)[] = [];
  const lost = () => new CacheError(ERROR_CODE.PEER_UNAVAILABLE, "connection lost");
  const peer = {
    isDown: false,
    pending,
    invalidate: () => new Promise<number>((resolve, reject) => {
      if (opts.fail === "cue") pending.push(() => reject(lost()));
      else if (opts.fail !== undefined) setTimeout(() => reject(lost()), opts.fail);
      else pending.push(() => resolve(0));
    }),
    close: async () => {},
    ...(opts.ping === false ? {} : {
      ping: async (): Promise<PingResult> => {
        const leaseMs = opts.lease?.();
        return { nodeId: "o:1", uptimeMs: 1, ...(leaseMs === undefined ? {} : { leaseMs }) };
      },
    }),
  };
  return peer as unknown as PeerClient & { pending: (() => void)[] };
}

const quiet = { info() {}, warn() {} };

describe("a member's mirror answers under its owner's lease", () => {
  test("vouched: held; not vouched: not; an owner answering as an older node, or a client that cannot ask: not checked", async () => {
    for (const [name, opts, held] of [
      ["vouches", { lease: () => 10_000 }, true],
      ["does not vouch", { lease: () => 0 }, false],
      ["an older node (no field)", { lease: () => undefined }, true],
      ["a client without ping", { ping: false }, true],
    ] as const) {
      const cluster = new Cluster({ self: "me:1", connect: () => stubPeer(opts), logger: quiet });
      cluster.setMembers(["me:1", "o:1"]);
      expect(cluster.leaseHeld("o:1")).toBe(true); // (not renewing yet: no checks)
      cluster.startRenewingLeases();
      await Bun.sleep(5);
      expect([name, cluster.leaseHeld("o:1")]).toEqual([name, held]);
      await cluster.close();
    }
  });

  test("idle: no lease pings once its copies went unused for 4 leases; a Get that tries one (a lease miss) asks again at once, and the next Gets hold the lease", async () => {
    let pings = 0;
    const cluster = new Cluster({ self: "me:1", connect: () => stubPeer({ lease: () => (pings++, 10) }), logger: quiet, peerTimeoutMs: 40 });
    cluster.setMembers(["me:1", "o:1"]);
    expect(cluster.leaseMs).toBe(10); // (renewed every 5 ms, MIN_RENEW_MS; idle after 16 renewals, 80 ms, unused)
    cluster.startRenewingLeases();
    await until(() => !cluster.leases.renewing("o:1"), 2_000);
    const sent = cluster.counters.leasePingsSent;
    expect(sent).toBeGreaterThan(1);
    await Bun.sleep(50); // (20 renewals' worth)
    expect([cluster.counters.leasePingsSent, pings]).toEqual([sent, sent]);
    expect(cluster.leaseHeld("o:1")).toBe(false); // its last lease ran out: forwarded
    await Promise.resolve(); // (the ask goes once the Get is served: a microtask)
    expect(cluster.counters.leasePingsSent).toBe(sent + 1);
    await until(() => cluster.leaseHeld("o:1"));
    await cluster.close();
  });
});

describe("an owner's write waits for a member it vouched for until that lease ends", () => {
  /**
   * owner makes a cluster of this node and member m:1 (peer timeout 2 s: waits 1 s at most, leases
   * of 500 ms: wide enough that a late timer or a collection on a busy machine moves no verdict).
   */
  function owner(fail?: number | "cue") {
    const peer = stubPeer(fail === undefined ? {} : { fail });
    const cluster = new Cluster({ self: "o:1", connect: () => peer, logger: quiet, peerTimeoutMs: 2000, mirrorTtlMs: 10_000 });
    cluster.setMembers(["o:1", "m:1"]);
    cluster.handOuts.confirm("m:1"); // (no copies of a previous run)
    const group = { name: "g", nameBytes: new TextEncoder().encode("g") };
    const key = new TextEncoder().encode("k");
    cluster.handOuts.note(group.nameBytes, key, 0, key.length, "m:1", 10_000); // m:1 may hold a copy
    return { cluster, peer, write: () => cluster.invalidate(group, [key]) };
  }

  test("a member that never asked: the write waits the whole 1 s, then marks it lagging", async () => {
    const { cluster, write } = owner();
    const t0 = performance.now();
    await write();
    expect(performance.now() - t0).toBeGreaterThanOrEqual(995);
    expect(cluster.laggingMembers).toEqual(["m:1"]);
    await cluster.close();
  });

  test("vouched for just now: acknowledged once the lease (500 ms) has run out, not lagging yet; no lease until it answers", async () => {
    const { cluster, peer, write } = owner();
    expect(cluster.pinged("m:1", false, true)).toBe(500);
    const t0 = performance.now();
    await write();
    const waited = performance.now() - t0;
    expect(waited).toBeGreaterThanOrEqual(500);
    expect(waited).toBeLessThan(950);
    expect(cluster.laggingMembers).toEqual([]);
    expect(cluster.pinged("m:1", false, true)).toBe(0); // abandoned: no lease while that invalidation is unanswered
    for (const answer of peer.pending.splice(0)) answer();
    await Bun.sleep(0);
    expect(cluster.pinged("m:1", false, true)).toBe(500);
    await cluster.close();
  });

  test("its answer comes first: acknowledged then", async () => {
    const { cluster, peer, write } = owner();
    cluster.pinged("m:1", false, true);
    const t0 = performance.now();
    const acked = write();
    await Bun.sleep(10);
    for (const answer of peer.pending.splice(0)) answer();
    await acked;
    expect(performance.now() - t0).toBeLessThan(450);
    await cluster.close();
  });

  test("it asked but holds no lease (refused: an invalidation was unanswered): acknowledged at once", async () => {
    const { cluster, write } = owner();
    cluster.pinged("m:1", false, true);
    const held = write(); // (unanswered from now on)
    await Bun.sleep(600); // its lease ran out while the first write waited
    await held;
    expect(cluster.pinged("m:1", false, true)).toBe(0);
    expect(write()).toBeUndefined();
    await cluster.close();
  });

  test("a lease given while the write waits (its invalidation young) moves the write's end, never past its longest wait", async () => {
    const { cluster, write } = owner();
    cluster.pinged("m:1", false, true);
    const t0 = performance.now();
    const acked = write();
    await Bun.sleep(300);
    expect(cluster.pinged("m:1", false, true)).toBe(500); // the invalidation is ~300 ms old: a lease to ~800 ends before its wait (1,000)
    await Bun.sleep(250);
    expect(cluster.pinged("m:1", false, true)).toBe(0); // ~550 ms old: not any more
    await acked;
    const waited = performance.now() - t0;
    expect(waited).toBeGreaterThanOrEqual(800);
    expect(waited).toBeLessThan(1000);
    await cluster.close();
  });

  test("its invalidation fails (connection lost) while it holds a lease: no answer, so the write waits for the lease's end", async () => {
    const { cluster, write } = owner(10);
    cluster.pinged("m:1", false, true);
    const t0 = performance.now();
    await write();
    const waited = performance.now() - t0;
    expect(waited).toBeGreaterThanOrEqual(500);
    expect(waited).toBeLessThan(950);
    expect(cluster.owedMembers).toEqual(["m:1"]);
    expect(cluster.laggingMembers).toEqual([]);
    expect(cluster.pinged("m:1", false, true)).toBe(0); // (owed: no lease until it dropped its mirrors)
    await cluster.close();
  });

  // The owner's start counts as a vouch for a member it never vouched for (Vouches.startedAt: it
  // may hold a lease from the owner's previous run), so "at once" needs an owner a lease old. This
  // case once asserted "at once" on a fresh owner and passed only because the write's clock
  // started a fraction of a ms after the owner's: on a loaded machine the wait read 500 ms.
  test("its invalidation fails, one that never asked: an owner started under a lease ago waits until a lease after its start; an older one acknowledges on the failure, as before leases", async () => {
    const before = performance.now();
    const fresh = owner(10);
    await fresh.write();
    expect(performance.now() - before).toBeGreaterThanOrEqual(500);
    expect(fresh.cluster.laggingMembers).toEqual([]);
    await fresh.cluster.close();

    const { cluster, peer, write } = owner("cue");
    const started = performance.now();
    await until(() => performance.now() - started > 500, 5_000); // (a lease after its start)
    let acked = false;
    void write()!.then(() => (acked = true));
    await Bun.sleep(0);
    expect(acked).toBe(false); // (waits for the call)
    peer.pending.shift()!(); // the connection is lost
    await Bun.sleep(0);
    expect(acked).toBe(true);
    expect(cluster.owedMembers).toEqual(["m:1"]);
    expect(cluster.laggingMembers).toEqual([]);
    expect(cluster.pinged("m:1", false, true)).toBe(0); // (owed: no lease until it dropped its mirrors)
    await cluster.close();
  });
});
