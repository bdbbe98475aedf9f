/**
 * The soak's well-behaved clients: pipelining workers and connection churners, both on the public
 * CacheClient, both checking every reply against the Ledger.
 *
 * A worker owns the keys whose index ≡ its number (mod workers) in each group and runs `lanes`
 * concurrent call loops on one CacheClient of several connections: gets, sets with the group's
 * default TTL, sets with a short explicit TTL, deletes, GetMulti and SetMulti, over a key space
 * larger than the node's memory, skewed so a hot tenth gets most of the traffic (hits happen).
 * A churner connects, makes a few calls on its own keys, closes, and repeats.
 *
 * Errors: a CacheError NOT_FOUND on a get is a miss, not an error (in the read-through group the
 * ledger judges whether the loader could have answered it); any other rejection is counted
 * as an error of the client kind (and the written key becomes unknown in the ledger).
 */
import { CacheClient } from "../../src/client/cache-client.ts";
import { CacheError, ERROR_CODE } from "../../src/protocol/errors.ts";
import { Prng } from "../../test/support/prng.ts";
import { Ledger, encodeValue, type Verdict } from "./ledger.ts";

export interface GroupPlan {
  name: string;
  /** keys in the group's key space */
  keys: number;
  /** the group's default TTL in ms (0 = none), as the node was started with */
  defaultTtlMs: number;
  /** share of the worker's calls that go to this group */
  share: number;
  minValue: number;
  maxValue: number;
  /** readThrough: the group has the soak's loader (loader.ts; see Ledger.judge) */
  readThrough?: boolean;
}

/** KindStats are one client kind's figures. */
export class KindStats {
  ops = 0; // calls completed (or, for hostile kinds, actions done)
  errors = 0; // well-behaved kinds: failed calls
  readonly counts: Record<string, number> = {};
  readonly samples: string[] = [];

  count(what: string, n = 1): void {
    this.counts[what] = (this.counts[what] ?? 0) + n;
  }

  error(what: string): void {
    this.errors++;
    if (this.samples.length < 10) this.samples.push(what);
  }
}

export interface Stop {
  readonly until: number;
  stopped: boolean;
}
const running = (s: Stop): boolean => !s.stopped && Date.now() < s.until;

/** Reads tally their verdicts per group, so missing keys can be matched with evictions. */
export type Verdicts = Map<string, Record<Verdict, number>>;
export function tallyVerdict(v: Verdicts, group: string, verdict: Verdict): void {
  let r = v.get(group);
  if (r === undefined) v.set(group, (r = { hit: 0, loaded: 0, raced: 0, expired: 0, missing: 0, absent: 0, unknown: 0, violation: 0 }));
  r[verdict]++;
}

/** describe names a call's failure for the soaks' reports. */
export function describe(e: unknown): string {
  return e instanceof CacheError ? `CacheError ${e.code}: ${e.message}` : e instanceof Error ? e.message : String(e);
}
/** isMiss: the call was answered NOT_FOUND. */
export const isMiss = (e: unknown): boolean => e instanceof CacheError && e.code === ERROR_CODE.NOT_FOUND;

/** Worker drives one CacheClient's lanes over its share of the keys. */
export class Worker {
  private readonly rng: Prng;
  private version = 0;

  constructor(
    private readonly id: number,
    private readonly workers: number,
    private readonly groups: readonly GroupPlan[],
    private readonly ledger: Ledger,
    private readonly stats: KindStats,
    private readonly verdicts: Verdicts,
    seed: number,
    private readonly keyPrefix = "w",
  ) {
    this.rng = new Prng(seed);
  }

  async run(client: CacheClient, lanes: number, stop: Stop): Promise<void> {
    await Promise.all(Array.from({ length: lanes }, () => this.lane(client, stop)));
  }

  /** oneCall makes one random call; used by lanes and churners. */
  async oneCall(client: CacheClient): Promise<void> {
    const plan = this.pickGroup();
    const r = this.rng.next();
    if (r < 0.4) return this.get(client, plan);
    if (r < 0.55) return this.set(client, plan, undefined);
    if (r < 0.65) return this.set(client, plan, 500 + this.rng.int(7_500));
    if (r < 0.7) return this.remove(client, plan);
    if (r < 0.85) return this.getMulti(client, plan);
    return this.setMulti(client, plan);
  }

  private async lane(client: CacheClient, stop: Stop): Promise<void> {
    while (running(stop)) await this.oneCall(client);
  }

  private pickGroup(): GroupPlan {
    let r = this.rng.next();
    for (const g of this.groups) if ((r -= g.share) < 0) return g;
    return this.groups[this.groups.length - 1]!;
  }

  /** key returns one of this worker's keys: 70 % from the hot tenth of its share. */
  private key(plan: GroupPlan): string {
    const share = Math.max(1, Math.floor(plan.keys / this.workers));
    const j = this.rng.next() < 0.7 ? this.rng.int(Math.max(1, share >> 3)) : this.rng.int(share);
    return `${this.keyPrefix}${this.id + this.workers * j}`;
  }

  /** freeKey returns a key with no write in flight, or null after a few tries. */
  private freeKey(plan: GroupPlan): string | null {
    for (let i = 0; i < 4; i++) {
      const k = this.key(plan);
      if (!this.ledger.busy(`${plan.name}/${k}`)) return k;
    }
    return null;
  }

  private value(plan: GroupPlan, key: string): [number, Uint8Array] {
    const v = ++this.version * this.workers + this.id; // unique per worker, so per key
    return [v, encodeValue(key, v, plan.minValue + this.rng.int(plan.maxValue - plan.minValue + 1))];
  }

  private async get(client: CacheClient, plan: GroupPlan): Promise<void> {
    const key = this.key(plan);
    const id = `${plan.name}/${key}`;
    const epoch = this.ledger.epochOf(id);
    const sentAt = Date.now();
    let value: Uint8Array | undefined;
    try {
      value = (await client.get(plan.name, key)).value;
    } catch (e) {
      if (!isMiss(e)) return this.stats.error(`get ${id}: ${describe(e)}`);
    }
    this.stats.ops++;
    this.stats.count(value === undefined ? "get miss" : "get hit");
    tallyVerdict(this.verdicts, plan.name, this.ledger.judge(id, key, value, epoch, sentAt, Date.now(), plan.readThrough));
  }

  private async getMulti(client: CacheClient, plan: GroupPlan): Promise<void> {
    const keys = [...new Set(Array.from({ length: 4 + this.rng.int(13) }, () => this.key(plan)))];
    const epochs = keys.map((k) => this.ledger.epochOf(`${plan.name}/${k}`));
    const sentAt = Date.now();
    let found: Map<string, Uint8Array>;
    try {
      found = await client.getMulti(plan.name, keys);
    } catch (e) {
      return this.stats.error(`getMulti ${plan.name} ×${keys.length}: ${describe(e)}`);
    }
    const recvAt = Date.now();
    this.stats.ops++;
    this.stats.count("getMulti keys", keys.length);
    this.stats.count("getMulti found", found.size);
    keys.forEach((k, i) => tallyVerdict(this.verdicts, plan.name, this.ledger.judge(`${plan.name}/${k}`, k, found.get(k), epochs[i]!, sentAt, recvAt, plan.readThrough)));
  }

  private async set(client: CacheClient, plan: GroupPlan, ttlMs: number | undefined): Promise<void> {
    const key = this.freeKey(plan);
    if (key === null) return this.get(client, plan);
    const id = `${plan.name}/${key}`;
    const [version, value] = this.value(plan, key);
    this.ledger.beginWrite(id);
    const sentAt = Date.now();
    let ok = true;
    try {
      await client.set(plan.name, key, value, ttlMs);
    } catch (e) {
      ok = false;
      this.stats.error(`set ${id}: ${describe(e)}`);
    }
    this.ledger.endWrite(id, ok, { version, sentAt, ackAt: Date.now(), ttlMs: ttlMs ?? plan.defaultTtlMs, deleted: false });
    if (ok) {
      this.stats.ops++;
      this.stats.count(ttlMs === undefined ? "set" : "set ttl");
    }
  }

  private async remove(client: CacheClient, plan: GroupPlan): Promise<void> {
    const key = this.freeKey(plan);
    if (key === null) return this.get(client, plan);
    const id = `${plan.name}/${key}`;
    this.ledger.beginWrite(id);
    const sentAt = Date.now();
    let ok = true;
    try {
      await client.delete(plan.name, key);
    } catch (e) {
      ok = false;
      this.stats.error(`delete ${id}: ${describe(e)}`);
    }
    this.ledger.endWrite(id, ok, { version: 0, sentAt, ackAt: Date.now(), ttlMs: 0, deleted: true });
    if (ok) {
      this.stats.ops++;
      this.stats.count("delete");
    }
  }

  private async setMulti(client: CacheClient, plan: GroupPlan): Promise<void> {
    const keys = [...new Set(Array.from({ length: 2 + this.rng.int(7) }, () => this.key(plan)))].filter((k) => !this.ledger.busy(`${plan.name}/${k}`));
    if (keys.length === 0) return this.get(client, plan);
    const ttlMs = this.rng.next() < 0.5 ? undefined : 500 + this.rng.int(7_500);
    const entries = keys.map((k) => [k, ...this.value(plan, k)] as const);
    for (const k of keys) this.ledger.beginWrite(`${plan.name}/${k}`);
    const sentAt = Date.now();
    let ok = true;
    try {
      await client.setMulti(plan.name, entries.map(([k, , v]) => [k, v]), ttlMs);
    } catch (e) {
      ok = false;
      this.stats.error(`setMulti ${plan.name} ×${keys.length}: ${describe(e)}`);
    }
    const ackAt = Date.now();
    for (const [k, version] of entries) {
      this.ledger.endWrite(`${plan.name}/${k}`, ok, { version, sentAt, ackAt, ttlMs: ttlMs ?? plan.defaultTtlMs, deleted: false });
    }
    if (ok) {
      this.stats.ops++;
      this.stats.count("setMulti keys", keys.length);
    }
  }
}

/**
 * churn connects (`connect` makes a client of one connection; it may draw from the churner's
 * `rng`), makes 1–5 calls with `worker`, closes, and repeats until stopped.
 */
export async function churn(worker: Worker, connect: (rng: Prng) => CacheClient, stats: KindStats, stop: Stop, seed: number): Promise<void> {
  const rng = new Prng(seed);
  while (running(stop)) {
    const client = connect(rng);
    try {
      const calls = 1 + rng.int(5);
      for (let i = 0; i < calls && running(stop); i++) await worker.oneCall(client);
    } finally {
      await client.close();
    }
    stats.count("connections");
  }
}

/**
 * readBack reads every key `ledger` has an entry for through `client`, in GetMulti batches of 100
 * keys of one group over `parallel` loops, and hands each key's answer to `judge` (undefined: not
 * found) with the batch's send and receive times; a batch that fails goes to `failed`.
 */
export async function readBack(
  ledger: Ledger, client: Pick<CacheClient, "getMulti">, parallel: number,
  judge: (group: string, key: string, value: Uint8Array | undefined, sentAt: number, recvAt: number) => void,
  failed: (group: string, e: unknown) => void,
): Promise<void> {
  const byGroup = new Map<string, string[]>();
  for (const id of ledger.entries.keys()) {
    const slash = id.indexOf("/");
    const group = id.slice(0, slash);
    if (!byGroup.has(group)) byGroup.set(group, []);
    byGroup.get(group)!.push(id.slice(slash + 1));
  }
  const batches: [string, string[]][] = [];
  for (const [group, keys] of byGroup) for (let i = 0; i < keys.length; i += 100) batches.push([group, keys.slice(i, i + 100)]);
  let next = 0;
  await Promise.all(Array.from({ length: parallel }, async () => {
    while (next < batches.length) {
      const [group, keys] = batches[next++]!;
      const sentAt = Date.now();
      let found: Map<string, Uint8Array>;
      try {
        found = await client.getMulti(group, keys);
      } catch (e) {
        failed(group, e);
        continue;
      }
      const recvAt = Date.now();
      for (const k of keys) judge(group, k, found.get(k), sentAt, recvAt);
    }
  }));
}
