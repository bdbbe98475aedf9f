/**
 * Fetches one key with the stock Apache Thrift client generated from thrift/cache.thrift by the
 * official compiler (`bash thrift/gen.sh` writes it to test/gen/; the test run does it too).
 *
 *   bun run examples/thrift-get.ts [--port 8001] [--host 127.0.0.1] [--buffered] GROUP KEY
 *
 * Prints the value, or the CacheError code and message (a node with --seed-errors: the server
 * exception's); exits 1 on an error.
 */
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const thrift = require("thrift");
const GroupCache = require("../test/gen/cache/GroupCache.js");
const types = require("../test/gen/cache/cache_types.js");

const args = process.argv.slice(2);
let port = 8001;
let host = "127.0.0.1";
let buffered = false;
const rest: string[] = [];
for (let i = 0; i < args.length; i++) {
  const a = args[i]!;
  if (a === "--port") port = Number(args[++i]);
  else if (a === "--host") host = args[++i]!;
  else if (a === "--buffered") buffered = true;
  else rest.push(a);
}
const [group, key] = rest;
if (group === undefined || key === undefined) {
  console.error("usage: bun run examples/thrift-get.ts [--port N] [--host H] [--buffered] GROUP KEY");
  process.exit(2);
}

const conn = thrift.createConnection(host, port, {
  transport: buffered ? thrift.TBufferedTransport : thrift.TFramedTransport,
  protocol: thrift.TBinaryProtocol,
});
conn.on("error", (e: Error) => {
  console.error(`connection error: ${e.message}`);
  process.exit(1);
});
// The Apache client leaves a call pending for good when its connection closes unanswered (a TLS
// port, a node cut short): without this the script waited, spinning a core, until killed.
let answered = false;
conn.on("close", () => {
  if (answered) return;
  console.error("connection closed before a reply (a TLS port, or not a node of this contract?)");
  process.exit(1);
});
const client = thrift.createClient(GroupCache, conn);
try {
  const r = await client.Get(new types.Request({ group, key }));
  answered = true;
  console.log(r.value.toString());
} catch (e) {
  answered = true;
  process.exitCode = 1;
  if (e instanceof thrift.Thrift.TApplicationException) {
    // (a node started with --seed-errors answers errors so: INTERNAL_ERROR naming the code)
    const { type, message } = e as { type: number; message: string };
    const name = Object.entries(thrift.Thrift.TApplicationExceptionType).find(([, n]) => n === type)?.[0];
    console.error(`server exception ${name ?? "type"} (${type}): ${message}`);
  } else {
    const err = e as { code?: number; message?: string };
    console.error(`CacheError code ${err.code}: ${err.message}`);
  }
} finally {
  conn.end();
}
