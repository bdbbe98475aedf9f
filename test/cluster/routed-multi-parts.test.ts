/**
 * Review: a routed GetMulti or SetMulti forwarded all of an owner's keys in one PeerGetMulti or
 * PeerSetMulti. A request within the frame limit whose keys an owner had all became a call a few
 * bytes over it (the longer Peer* name; a SetMulti's TTL in ms too), which the node's peer client
 * refused ("call larger than the frame limit", VALUE_TOO_LARGE); and an owner with a smaller
 * --max-frame-size read a large part as a protocol error and closed the peer connection, failing
 * every call on it. Now an owner's keys go in parts of at most 1 MiB and half the frame limit
 * (routed-parts.ts), read from the request.
 */
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { CacheClient } from "../../src/client/cache-client.ts";
import { CallWriter } from "../../src/protocol/call-writer.ts";
import { METHOD_SET_MULTI } from "../../src/protocol/request.ts";
import { CacheNode } from "../../src/server/cache-node.ts";
import type { NodeConfig } from "../../src/server/config.ts";
import { LogSink, getMultiCall } from "../server/support.ts";
import { freePorts } from "../support/node-process.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((x) => x.close()));
});

const utf8 = new TextEncoder();

/** twoMembers starts members A and B, each with its own settings; returns A, B's id and a client of A. */
function twoMembers(configA: Partial<NodeConfig>, configB: Partial<NodeConfig>): { a: CacheNode; idB: string; viaA: CacheClient; portB: number } {
  const [pa, pb] = freePorts(2) as [number, number];
  const ids = [`127.0.0.1:${pa}`, `127.0.0.1:${pb}`];
  const start = (port: number, config: Partial<NodeConfig>): CacheNode => {
    const n = CacheNode.start({ port, host: "127.0.0.1", peers: ids, logLevel: "silent", peerTimeoutMs: 5000, ...config }, { logger: new LogSink().logger });
    open.push(n);
    return n;
  };
  const a = start(pa, configA);
  start(pb, configB);
  const viaA = new CacheClient({ host: "127.0.0.1", port: pa, timeoutMs: 10_000, limits: { maxFrameBytes: 64 << 20 } });
  open.push(viaA);
  return { a, idB: ids[1]!, viaA, portB: pb };
}

/** ownedKey is the first key `<pad><i>` of exactly `length` bytes that `node` gives to member `id`. */
function ownedKey(node: CacheNode, id: string, length: number, pad: string, taken: Set<string>): string {
  for (let i = 0; ; i++) {
    const tail = String(i);
    const k = pad.repeat(length - tail.length).slice(0, length - tail.length) + tail;
    if (k.length === length && !taken.has(k) && node.cluster!.owner(utf8.encode(k), 0, k.length) === id) return k;
  }
}

/** frameLength is the frame length of a GetMulti of `keys` in group "default" (as CacheClient writes it). */
function frameLength(keys: string[]): number {
  return getMultiCall(1, "default", keys.map((k) => utf8.encode(k))).length - 4;
}

/** setMultiLength is the frame length of a SetMulti of `entries` in group "default", no TTL given (as CacheClient writes it). */
function setMultiLength(entries: [string, string][]): number {
  const w = new CallWriter();
  w.begin(METHOD_SET_MULTI, 1);
  w.text(1, "default");
  w.mapBegin(2, entries.length);
  for (const [k, v] of entries) {
    w.element(k);
    w.element(v);
  }
  w.ttl(3, undefined);
  return w.end();
}

describe("routed multi-key requests go to an owner in parts", () => {
  test("a GetMulti that fills the frame limit, all of whose keys another member owns, is answered", async () => {
    const limit = 8192;
    const config = { maxFrameSize: limit, maxItemSize: 1024 };
    const { a, idB, viaA, portB } = twoMembers(config, config);
    const keys: string[] = [];
    const taken = new Set<string>();
    while (frameLength(keys) + 4 + 40 <= limit) {
      const k = ownedKey(a, idB, 40, "k", taken);
      taken.add(k);
      keys.push(k);
    }
    const last = limit - frameLength(keys) - 4; // a last key that makes the frame exactly the limit
    keys.push(ownedKey(a, idB, last, "z", taken));
    expect(frameLength(keys)).toBe(limit);
    const owner = new CacheClient({ host: "127.0.0.1", port: portB, timeoutMs: 5000 });
    open.push(owner);
    await owner.set("default", keys[0]!, "first", 0, { peer: true });
    await owner.set("default", keys.at(-1)!, "last", 0, { peer: true });

    const found = await viaA.getMulti("default", keys);
    expect(found.size).toBe(2);
    expect(new TextDecoder().decode(found.get(keys[0]!))).toBe("first");
    expect(new TextDecoder().decode(found.get(keys.at(-1)!))).toBe("last");
  });

  test("a SetMulti that fills the frame limit, all of whose keys another member owns, is stored", async () => {
    const limit = 8192;
    const config = { maxFrameSize: limit, maxItemSize: 1024 };
    const { a, idB, viaA, portB } = twoMembers(config, config);
    const entries: [string, string][] = [];
    const taken = new Set<string>();
    while (setMultiLength(entries) + 4 + 40 + 4 + 8 + 200 <= limit) {
      const k = ownedKey(a, idB, 40, "s", taken);
      taken.add(k);
      entries.push([k, "value-00"]);
    }
    const k = ownedKey(a, idB, 40, "s", taken);
    entries.push([k, "v".repeat(limit - setMultiLength(entries) - 4 - 40 - 4)]); // a last value that makes the frame exactly the limit
    expect(setMultiLength(entries)).toBe(limit);
    const keys = entries.map(([key]) => key);
    const owner = new CacheClient({ host: "127.0.0.1", port: portB, timeoutMs: 5000 });
    open.push(owner);
    await viaA.setMulti("default", entries); // (no TTL: the call carries the seconds only, and A's part both)
    const got = await owner.peerGetMulti("default", keys);
    expect(got.keys.length).toBe(keys.length);
  });

  test("an owner with a smaller frame limit (2 MiB) gets a 3 MB GetMulti's keys in parts it takes", async () => {
    const { a, idB, viaA, portB } = twoMembers({}, { maxFrameSize: 2 << 20 });
    const keys: string[] = [];
    for (let i = 0; keys.length < 3 * 1024 * 1024 / 24; i++) {
      const k = `key-of-twenty-bytes-${i}`.slice(0, 20) + i;
      if (a.cluster!.owner(utf8.encode(k), 0, k.length) === idB) keys.push(k);
    }
    const owner = new CacheClient({ host: "127.0.0.1", port: portB, timeoutMs: 5000 });
    open.push(owner);
    await owner.set("default", keys[7]!, "seven", 0, { peer: true });
    const found = await viaA.getMulti("default", keys);
    expect(found.size).toBe(1);
    expect(new TextDecoder().decode(found.get(keys[7]!))).toBe("seven");
    // The peer connections still serve: a routed Get right after.
    expect(new TextDecoder().decode((await viaA.get("default", keys[7]!)).value)).toBe("seven");
  });
});
