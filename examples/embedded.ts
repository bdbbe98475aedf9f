/**
 * MyBunCache embedded in a Bun program: a read-through group in front of a slow lookup, then the
 * same group served to Thrift clients by a node in the same process.
 *
 *   bun run examples/embedded.ts
 *
 * The seed's Go usage, for comparison:
 *   g := NewGroupWithTTL("users", 2<<10, GetterFunc(func(key string) ([]byte, error) {...}), 5)
 *   v, err := g.Get("key");  g.Set("key", []byte("value"), 10)
 */
import { Group } from "../src/cluster/group.ts";
import { CacheError } from "../src/protocol/errors.ts";
import { CacheNode } from "../src/server/cache-node.ts";

const text = (b: Uint8Array): string => new TextDecoder().decode(b);

// A "database" that is slow and counts its queries.
let queries = 0;
async function findUser(id: string): Promise<string | null> {
  queries++;
  await Bun.sleep(20);
  return Number(id) > 0 && Number(id) <= 100 ? JSON.stringify({ id: Number(id), name: `user ${id}` }) : null;
}

// 1. A group: 16 MiB, values live 5 s, loaded values admitted at once (default is LRU-K, K = 2).
const users = new Group({ name: "users", memory: 16 * 1024 * 1024, defaultTtlMs: 5_000, admission: "always", loader: findUser });

const [a, b] = await Promise.all([users.get("42"), users.get("42")]); // one query for both (singleflight)
console.log("get 42:", text(a), "| same bytes:", text(a) === text(b), "| queries:", queries);
console.log("get 42 again (a hit):", text(await users.get("42")), "| queries:", queries);

users.set("override", "set by the program", 10_000); // explicit set, 10 s TTL: always readable back
console.log("get override:", text(await users.get("override")));
console.log("delete override:", users.delete("override"));

try {
  await users.get("1000");
} catch (e) {
  if (!(e instanceof CacheError)) throw e;
  console.log("get 1000:", `CacheError code ${e.code} (${e.message})`);
}
const s = users.stats();
console.log("stats:", { gets: s.gets, hits: s.hits, loads: s.loads, loadsDeduped: s.loadsDeduped, items: s.items });

// 2. The same loader behind a node: Thrift clients on port 8001-style sockets, here a free port.
await using node = CacheNode.start({ port: 0, logLevel: "warn" }, { loaders: { users: findUser } });
console.log(`node serving groups [${node.groups.all().map((g) => g.name).join(", ")}] on ${node.address}`);
// `await using` closes the node (stops accepting, flushes replies) when this scope ends.
