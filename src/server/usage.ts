/**
 * USAGE is the text of `node.ts --help`: every flag with its default. Kept beside flags.ts,
 * which parses the same flags; a test checks that every flag parseArgs knows is listed here.
 */
import { DEFAULT_VNODES } from "../cluster/ring.ts";
import { DEFAULTS } from "./config.ts";

export const USAGE = `Usage: bun run node.ts [flags]

MyBunCache node: a groupcache-style cache serving the Thrift GroupCache service.

Flags:
  --port N               TCP port for the Thrift service (default ${DEFAULTS.port}; 0 = any free port)
  --host ADDR            address to bind (default ${DEFAULTS.host})
  --memory SIZE          total memory for all groups: slab pages plus metadata (default 64mb; at
                         most the machine's memory)
  --group NAME[:SIZE[:TTL[:OPTIONS]]]
                         define a group (repeatable). SIZE is its memory (default: an equal share
                         of what the other groups leave; when every group has one, what they leave
                         is unused, with a warning); TTL its default TTL (default 0 = none).
                         OPTIONS, comma-separated, apply to groups with a loader:
                           admit=lru-k | admit=lru-k=K | admit=always  (loaded values; default lru-k=2)
                           negttl=DUR   cache "not found" (and "too large") for DUR (default off)
                           timeout=DUR  loader timeout for this group (default --load-timeout)
                           multi=N      loads one GetMulti runs at once (default: half the
                                        loader pool's places, at most 32)
                         and to any group:
                           maxitem=SIZE its largest item (default --max-item-size); a group under
                                        64mb with small items gets small pages with it, and holds
                                        more items of many sizes
                         Without any --group or loader, one group named "default" gets all the memory.
  --loaders PATH         a module whose exported functions \`async (key: string) => Uint8Array |
                         string | null\` are loaders: each export becomes a read-through group of the
                         same name (a --group of that name sets its size, TTL and options)
  --loader-threads N     worker threads running loaders (default ${DEFAULTS.loaderThreads})
  --loader-concurrency N loads each thread runs at once: an async loader's thread serves others
                         while it waits (default ${DEFAULTS.loaderConcurrency}; 1 = one at a time)
  --loader-queue N       loads that may wait for a place; more are answered OVERLOADED (default ${DEFAULTS.loaderQueue})
  --max-loads N          loads under way at once, all groups together, in the worker pool or
                         in-process; a miss that would start one more is answered OVERLOADED
                         (default ${DEFAULTS.maxLoads})
  --load-timeout DUR     callers get LOAD_FAILED after this (default 10s); a late value still fills the cache
  --self HOST:PORT       this node's id as its peers reach it (default: --host:--port)
  --peers A:P,B:P,...    cluster members (this node may be listed); keys are spread over a
                         consistent-hash ring and each is loaded by its owner only
  --peers-file PATH      members, one host:port per line; re-read on change and on SIGHUP
  --peers-dns NAME:PORT  members: every A/AAAA record of NAME on PORT, re-resolved periodically
  --peers-dns-interval DUR  how often (default 5s)
  --vnodes N             virtual nodes per member on the ring (default ${DEFAULT_VNODES}; every node and
                         ring-aware client must use the same)
  --mirror-share F       part of each group's memory for hot copies of keys owned elsewhere (default 0.125; 0 = none)
  --mirror-ttl DUR       longest a hot copy is kept, bounding how stale a copy whose invalidation was lost can be (default 10s; 0 = its own TTL)
  --peer-timeout DUR     per forwarded call; then the owner counts as unreachable (default 1s); a Get
                         the owner is loading waits on while the owner still answers (up to the
                         longest load timeout more)
  --peer-connections N   connections to each peer (default 2)
  --auth-token TOKEN     require this token (the Auth call) first on every connection; peers send it
                         too. Better: --auth-token-file PATH or the MYBUNCACHE_AUTH_TOKEN env var
                         (not visible in ps). At least 16 characters, at most 4096 bytes.
  --auth-token-file PATH read the token from a file
  --tls-cert PATH        serve the Thrift port over TLS with this PEM certificate (and --tls-key);
  --tls-key PATH         peers are dialed over TLS too
  --tls-ca PATH          certificates to check peers against (default: this node's own --tls-cert)
  --insecure[=BOOL]      allow a non-loopback --host without an auth token (refused otherwise);
                         --insecure=false (or no, off, 0) leaves it refused
  --idle-timeout DUR     close connections idle this long (default 0 = never)
  --seed-errors[=BOOL]   answer errors of Get, Set, Delete, Clear, Stats, GetMulti and SetMulti as
                         the seed did, a Thrift application exception (INTERNAL_ERROR, message
                         "NOT_FOUND (1): key not found"), not the CacheError of result field 1: for
                         clients generated from the seed's IDL (docs/wire.md)
  --max-requests-per-event N
                         requests served for one connection before others get a turn (default ${DEFAULTS.maxRequestsPerEvent})
  --max-buffered SIZE    bytes all connections together may hold in the server (default 1g)
  --gc-headroom SIZE     garbage allowed above the retained memory before a full collection
                         (default 64m; 0 = off; else at least 8m)
  --admin-port N         HTTP port on --host for /metrics (Prometheus), /healthz, /stats and
                         POST /memory/purge
  --snapshot PATH        load items from PATH at start; write them there at shutdown (and periodically);
                         not with --peers-file/--peers-dns (docs/operations.md)
  --snapshot-interval DUR  also write the snapshot this often, at least 1s (default 0 = only at shutdown)
  --max-item-size SIZE   largest item (4-byte header + key + value) (default 1mb)
  --max-key-size N       longest key in bytes (default ${DEFAULTS.maxKeySize}, as memcached)
  --max-frame-size SIZE  largest Thrift frame accepted (default ${DEFAULTS.maxFrameSize})
  --max-connections N    connections served at once; more are answered OVERLOADED (default ${DEFAULTS.maxConnections});
                         with a token, a new one first closes the oldest connection not authenticated yet
  --max-output SIZE      queued reply bytes per connection before its input pauses (default 16mb)
  --expiry-interval DUR  active expiry timer period (default 100ms)
  --expiry-budget N      items expired per group per tick at most; the rest (64 at least) shrinks a mostly free item table (default ${DEFAULTS.expiryBudget})
  --log-level LEVEL      debug | info | warn | error | silent (default info)
  --log-json[=BOOL]      log JSON lines
  -h, --help             print this help
  --version              print the version

Sizes: 512, 64k, 64kb, 64m, 64mb, 1g (powers of 1024). Durations: 250ms, 30s, 5m, 1h, or seconds.`;
