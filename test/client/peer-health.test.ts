/**
 * PeerHealth: down after maxFailures failures in a row, up at the first reply, and, while down,
 * a failure whose reason was not yet reported is offered to `onStillDown` every time until the
 * client reports it (the client rate-limits its reports: an offer it turns down must come again).
 */
import { describe, expect, test, setDefaultTimeout } from "bun:test";
import { PeerHealth } from "../../src/client/peer-health.ts";

setDefaultTimeout(30_000); // per file: bun drops a preload's default after the first file (test/setup.ts)

describe("PeerHealth", () => {
  test("down after maxFailures in a row with the reason; a reply in between starts the count again; up at a reply", () => {
    const events: string[] = [];
    const h = new PeerHealth(3, () => events.push(`down: ${h.lastFailure}`), () => events.push("up"));
    h.failed("a");
    h.failed("a");
    h.succeeded();
    h.failed("b");
    h.failed("b");
    expect(h.down).toBe(false);
    h.failed("c");
    expect(h.down).toBe(true);
    h.succeeded();
    expect(events).toEqual(["down: c", "up"]);
    expect(h.counters.downs).toBe(1);
  });

  test("while down, a new reason is offered until it is reported, then not again", () => {
    let allow = true;
    const offers: string[] = [];
    const h: PeerHealth = new PeerHealth(1, () => {}, () => {}, () => {
      offers.push(h.lastFailure);
      if (allow) h.reportedFailure = h.lastFailure; // what CacheClient does when its rate limit lets it report
    });
    h.failed("refused"); // down, reported as the reason
    h.failed("refused");
    expect(offers).toEqual([]);
    h.failed("closed"); // reported
    allow = false;
    h.failed("tls"); // turned down (rate limit)…
    h.failed("tls"); // …so offered again
    allow = true;
    h.failed("tls"); // reported now
    h.failed("tls");
    expect(offers).toEqual(["closed", "tls", "tls", "tls"]);
  });
});
