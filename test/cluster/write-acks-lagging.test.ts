/**
 * A member that stops answering invalidations (its connection alive: hung, not down) is lagging
 * once a write's wait for its answer ran out (Cluster.invalidate): later writes still tell it but
 * do not wait for it, until it answers a call again; it is asked to drop its mirrors (askDrops),
 * since writes were acknowledged without its answer. What the owner notes of a member is
 * forgotten when the member leaves the list.
 */
import { afterEach, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import { METHOD_PEER_INVALIDATE } from "../../src/protocol/request.ts";
import { StubServer, type StubCall, serve, until } from "../client/support.ts";
import { LogSink } from "../server/support.ts";
import { fetchedBy, keysOf } from "../support/cluster-members.ts";
import { freePorts } from "../support/node-process.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)


const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).reverse().map((x) => x.close().catch(() => {})));
});

/**
 * Member is a stub member that serves every call at once, but PeerInvalidate as `invalidations`
 * says: "answer" (after `delayMs`; an invalidation of all, a drop ask, after `askDelayMs`), "hold" (kept in `held` until `release`) or "ignore" (never).
 * `told` lists the invalidations of keys it received, each with the members the owner counted
 * lagging when it did; `asked` counts the invalidations of all it received (drop asks),
 * `dropped` those it answered; `probed`, the invalidations of no key (probes of a lagging member).
 */
interface Member {
  id: string;
  invalidations: "answer" | "hold" | "ignore";
  delayMs: number;
  askDelayMs: number;
  told: { keys: string[]; lagging: readonly string[] }[];
  asked: number;
  dropped: number;
  probed: number;
  /** onAnswer hears each invalidation of keys as it is answered. */
  onAnswer: (keys: string[]) => void;
  release(): void;
}

/**
 * withMember starts node N with one other member, a stub (Member), once N knows the stub dropped
 * its copies of N's previous run; `count` keys of N's are handed out to the stub (it fetched them
 * as a member does, PeerGet on a connection naming it, so writes of them wait for its answer).
 */
async function withMember(count: number): Promise<{ n: CacheNode; m: Member; keys: string[] }> {
  const stub = new StubServer();
  open.push({ close: async () => stub.close() });
  const [pn] = freePorts(1) as [number];
  const ids = [`127.0.0.1:${pn}`, `127.0.0.1:${stub.port}`];
  const n = CacheNode.start(
    { port: pn, host: "127.0.0.1", peers: ids, logLevel: "silent", groups: [{ name: "g", ttlMs: 0 }] },
    { logger: new LogSink().logger },
  );
  open.push(n);
  const held: StubCall[] = [];
  const answer = (c: StubCall): void => {
    stub.write(c.conn, serve(c, stub));
    if (c.all) m.dropped++;
    else if (c.keys.length > 0) m.onAnswer(c.keys);
  };
  const m: Member = {
    id: ids[1]!,
    invalidations: "answer",
    delayMs: 0,
    askDelayMs: 0,
    told: [],
    asked: 0,
    dropped: 0,
    probed: 0,
    onAnswer: () => {},
    release: () => held.splice(0).forEach(answer),
  };
  stub.handler = (c, st) => {
    if (c.method !== METHOD_PEER_INVALIDATE) return serve(c, st);
    if (c.all) m.asked++;
    else if (c.keys.length === 0) m.probed++;
    else m.told.push({ keys: c.keys, lagging: n.cluster!.laggingMembers });
    if (m.invalidations === "hold") held.push(c);
    else if (m.invalidations === "answer") setTimeout(() => answer(c), c.all ? m.askDelayMs : m.delayMs);
    return null;
  };
  await until(() => n.cluster!.startConfirmed, 5_000);
  const keys = keysOf(n, ids[0]!, "k", count);
  const app = client(n.port);
  const fetcher = new CacheClient({ host: "127.0.0.1", port: n.port, timeoutMs: 5000, sender: m.id });
  open.push(fetcher);
  for (const k of keys) {
    await app.set("g", k, "v0");
    await fetchedBy(fetcher, k);
  }
  m.told.length = 0;
  m.asked = m.dropped = 0; // (the drop ask of the start, answered)
  return { n, m, keys };
}

/** client is an application's client of one connection, served in order, timing out after the default peer timeout. */
function client(port: number): CacheClient {
  const c = new CacheClient({ host: "127.0.0.1", port, connections: 1, timeoutMs: 1000 });
  open.push(c);
  return c;
}

/** expectWaitedFor writes `key` through `app` and expects the member's answer to its invalidation before the acknowledgement. */
async function expectWaitedFor(m: Member, app: CacheClient, key: string): Promise<void> {
  const events: string[] = [];
  m.onAnswer = (told) => void events.push(`member answered ${told.join(",")}`);
  await app.set("g", key, "v2");
  events.push(`write of ${key} acknowledged`);
  expect(events).toEqual([`member answered ${key}`, `write of ${key} acknowledged`]);
}

/** setAll pipelines a Set of each key on `app`'s one connection: what each came to ("ok" or its error). */
function setAll(app: CacheClient, keys: readonly string[], value: string): Promise<string[]> {
  return Promise.all(keys.map((k) => app.set("g", k, value).then(() => "ok", (e: unknown) => String(e))));
}

test("a member that stops answering costs the wait to one write, not to each: Sets pipelined on one connection all succeed", async () => {
  const { n, m, keys } = await withMember(8);
  m.invalidations = "hold";
  // Served in order, each Set waiting half a peer timeout would take 4 s in all: the client
  // (timing out after 1 s) would fail 6 of them.
  expect(await setAll(client(n.port), keys, "v1")).toEqual(keys.map(() => "ok"));
  // Each was told (after it was acknowledged, for all but the first); the first was waited for,
  // and marked the member lagging before the next was told.
  await until(() => m.told.length === keys.length);
  const lagging = new Map(m.told.map((t) => [t.keys.join(","), t.lagging]));
  expect(keys.map((k) => lagging.get(k))).toEqual(keys.map((_, i) => (i === 0 ? [] : [m.id])));
  expect(n.cluster!.laggingMembers).toEqual([m.id]);
}, 15_000);

test("a lagging member that answers again is waited for again", async () => {
  const { n, m, keys } = await withMember(5);
  const [k, ...others] = keys as [string, ...string[]];
  const app = client(n.port);
  m.invalidations = "hold";
  expect(await setAll(app, others, "v1")).toEqual(others.map(() => "ok"));
  expect(n.cluster!.laggingMembers).toEqual([m.id]);
  m.invalidations = "answer";
  m.release(); // its answers come (and its drop ask's, askDrops)
  await until(() => n.cluster!.laggingMembers.length === 0);
  m.delayMs = 100;
  await expectWaitedFor(m, app, k);
}, 15_000);

test("a member that answers slower than a write waits stays lagging: its late answers do not make writes wait for it again (review: it flipped back and forth, each flip costing a write the whole wait)", async () => {
  const { n, m, keys } = await withMember(2);
  const [k1, k2] = keys as [string, string];
  const app = client(n.port);
  m.delayMs = m.askDelayMs = 700; // a write waits 500 ms (half the default peer timeout)
  const late = Promise.withResolvers<void>();
  m.onAnswer = () => late.resolve();
  await app.set("g", k1, "v1");
  expect(n.cluster!.laggingMembers).toEqual([m.id]);
  await late.promise; // its answer, 700 ms after it was told
  await until(() => m.dropped > 0, 5_000); // and its answer to the drop ask it is owed, as late
  await Bun.sleep(100);
  expect(n.cluster!.laggingMembers).toEqual([m.id]);
  await app.set("g", k2, "v2");
  await until(() => m.told.length === 2); // (told after the write was acknowledged)
  expect(m.told.map((t) => t.lagging)).toEqual([[], [m.id]]); // the second write did not wait for it
}, 15_000);

test("a member that stays slow is asked to drop its mirrors once, then only probed (review: its whole mirror was dropped every second while it lagged)", async () => {
  const { n, m, keys } = await withMember(1);
  const app = client(n.port);
  m.delayMs = m.askDelayMs = 700;
  await app.set("g", keys[0]!, "v1");
  expect(n.cluster!.laggingMembers).toEqual([m.id]);
  await until(() => m.probed >= 2, 5_000); // probed twice after its drop ask was answered
  expect([m.asked, m.dropped]).toEqual([1, 1]);
  expect(n.cluster!.laggingMembers).toEqual([m.id]); // the probes' answers came late too
}, 15_000);

test("a member slow once, then prompt, is found prompt again with no write to tell it of: the next write waits for it (review: it stayed lagging until then, and that write did not wait)", async () => {
  const { n, m, keys } = await withMember(2);
  const [k1, k2] = keys as [string, string];
  const app = client(n.port);
  m.delayMs = m.askDelayMs = 700; // one slow spell: the write's invalidation and the first drop ask answered late
  await app.set("g", k1, "v1");
  expect(n.cluster!.laggingMembers).toEqual([m.id]);
  await until(() => m.dropped > 0, 5_000);
  m.delayMs = m.askDelayMs = 0; // prompt from now on; no write comes
  await until(() => n.cluster!.laggingMembers.length === 0, 5_000); // it is probed, and a probe is answered in time
  m.delayMs = 50;
  await expectWaitedFor(m, app, k2);
}, 15_000);

test("a member marked lagging is asked to drop its mirrors once it answers, and asked again once an ask it left unanswered timed out", async () => {
  const { n, m, keys } = await withMember(2);
  const [k1, k2] = keys as [string, string];
  const app = client(n.port);
  // Its answer comes after the write was acknowledged, within the peer timeout: no call failed,
  // it is owed the drop ask for having lagged.
  m.invalidations = "hold";
  await app.set("g", k1, "v1");
  expect(n.cluster!.laggingMembers).toEqual([m.id]);
  m.invalidations = "answer";
  m.release();
  await until(() => m.dropped > 0, 5_000);
  // Lagging again, it leaves the drop ask it is sent unanswered: once that times out it is asked
  // again, and answers.
  await until(() => n.cluster!.laggingMembers.length === 0 && n.cluster!.owedMembers.length === 0);
  const [asked, dropped] = [m.asked, m.dropped];
  m.invalidations = "ignore";
  await app.set("g", k2, "v2");
  expect(n.cluster!.laggingMembers).toEqual([m.id]);
  await until(() => m.asked > asked, 5_000); // the drop ask, ignored
  m.invalidations = "answer";
  await until(() => m.dropped > dropped, 8_000);
}, 20_000);

test("a member removed from the list is no longer noted as owed a drop ask, lagging, or confirmed", async () => {
  const { n, m, keys } = await withMember(1);
  const cluster = n.cluster!;
  m.invalidations = "hold";
  await client(n.port).set("g", keys[0]!, "v1");
  expect(cluster.laggingMembers).toEqual([m.id]);
  expect(cluster.handOuts.startHeldBy(m.id)).toBe(false); // confirmed at the start
  const errors = cluster.counters.peerErrors;
  expect(cluster.setMembers([cluster.self])).toBe(true);
  expect([cluster.laggingMembers, cluster.owedMembers]).toEqual([[], []]);
  expect(cluster.handOuts.startHeldBy(m.id)).toBe(true); // back, it would have to confirm anew
  // The calls its closed client fails (its invalidation's, a drop ask's) owe it nothing.
  await until(() => cluster.counters.peerErrors > errors);
  expect(cluster.owedMembers).toEqual([]);
}, 15_000);
