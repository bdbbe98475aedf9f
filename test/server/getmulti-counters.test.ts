/**
 * Review: GetMulti on a group with a loader counts every key's lookup twice when no key needs a
 * load (loadMisses looks each key up, then writeGetMulti looks it up again "counted").
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { CacheNode } from "../../src/server/cache-node.ts";
import { LogSink, apacheClient, types } from "../server/support.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

describe("GetMulti counters on a read-through group", () => {
  test("one GetMulti of 2 stored keys counts 2 gets and 2 hits", async () => {
    await using node = CacheNode.start({ port: 0, groups: [{ name: "users", ttlMs: 0, admission: "always" }] }, {
      logger: new LogSink().logger,
      loaders: { users: (key) => `user ${key}` },
    });
    const c = await apacheClient(node.port);
    try {
      for (const key of ["a", "b"]) {
        await c.client.Set(new types.SetRequest({ group: "users", key, value: Buffer.from(key), ttl: 0 }));
      }
      const before = { ...node.groups.byName("users")!.counters };
      await c.client.GetMulti(new types.GetMultiRequest({ group: "users", keys: ["a", "b"] }));
      const after = node.groups.byName("users")!.counters;
      expect({ gets: after.gets - before.gets, hits: after.hits - before.hits }).toEqual({ gets: 2, hits: 2 });
    } finally {
      c.close();
    }
  });

  test("a key asked twice counts one get and is answered once (a map's keys are unique), with a loader or without", async () => {
    await using node = CacheNode.start({ port: 0, groups: [{ name: "users", ttlMs: 0, admission: "always" }, { name: "plain", ttlMs: 0 }] }, {
      logger: new LogSink().logger,
      loaders: { users: (key) => `user ${key}` },
    });
    const c = await apacheClient(node.port);
    try {
      for (const group of ["users", "plain"]) {
        await c.client.Set(new types.SetRequest({ group, key: "a", value: Buffer.from("a"), ttl: 0 }));
        const before = { ...node.groups.byName(group)!.counters };
        const r = await c.client.GetMulti(new types.GetMultiRequest({ group, keys: ["a", "b", "a", "b", "a"] }));
        const after = node.groups.byName(group)!.counters;
        expect(Object.keys(r.values).sort()).toEqual(group === "users" ? ["a", "b"] : ["a"]);
        expect({ gets: after.gets - before.gets, hits: after.hits - before.hits }).toEqual({ gets: 2, hits: 1 });
      }
    } finally {
      c.close();
    }
  });
});
