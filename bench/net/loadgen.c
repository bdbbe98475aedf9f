// loadgen.c — the C twin of load-client.ts: a lean epoll load generator, so that the benchmark
// measures the servers and not the client. Same flags, same workload, same JSON result line.
//
//   gcc -O2 -o loadgen bench/net/loadgen.c -lpthread
//   ./loadgen --port 9000 [--protocol thrift|memcache --connections 50 --keys 10000 --get-ratio 0.9
//             --value-size 100 --depth 16 --duration 5 --warmup 1 --threads 1 --seed 1 --no-prefill]
//
// Request table: every key is `key:NNNNNN`, so all Get frames have one length and all Set frames
// another; they sit back to back in `gets` / `sets` (stride get_len / set_len), built once before
// timing. Thrift: framed strict binary `GroupCache.Get/Set` calls; memcache: the binary protocol.
//
// Per connection (`struct conn`): an output buffer of depth × largest frame (unsent bytes belong to
// outstanding requests, so compacting always makes room), a ring of send times (replies come back
// in order on one connection), and a reply scanner that judges each reply by a short header sample
// (length, message type, result field id / magic, status) read in place, copied into `hdr` only
// when it straddles two reads, and skips the rest of the frame in bulk, across reads. All requests a connection may send go out in ONE write(); a partial
// write arms EPOLLOUT. Each thread owns an epoll set, its connections, a 256 KiB read buffer and a
// preallocated log-linear latency histogram (same buckets as histogram.ts); the threads share
// nothing but the fixed start/end times of the measured window, so no locks. Thread 0 (the main
// thread) prints {"event":"start"} / {"event":"end"} around the window and reads getrusage there.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { THRIFT_CALL = 1, THRIFT_REPLY = 2, T_STOP = 0, T_I64 = 10, T_STRING = 11, T_STRUCT = 12 };
enum { MC_REQUEST = 0x80, MC_RESPONSE = 0x81, MC_GET = 0x00, MC_SET = 0x01, MC_HEADER = 24 };
enum { SUB_BITS = 5, LINEAR = 64, BUCKETS = (32 - SUB_BITS) * (1 << SUB_BITS) + LINEAR / 2 };
enum { HDR_MAX = 64, PREFILL_CONNS = 8, MAX_EVENTS = 128 };
#ifndef READ_BUF
#define READ_BUF (256 * 1024) // -DREAD_BUF=7 splits every reply across reads (tests the slow path)
#endif
#define MAX_NS 0xffffffffull
#define NS 1000000000ull

static struct {
  const char *host; int port, thrift, conns, keys, value_size, depth, threads, prefill; unsigned seed;
  double get_ratio, duration, warmup;
} opt = { "127.0.0.1", 0, 1, 50, 10000, 100, 16, 1, 1, 1, 0.9, 5, 1 };

static uint8_t *gets, *sets;
static size_t get_len, set_len;
static uint64_t t_start = UINT64_MAX, t_end = UINT64_MAX; // the measured window, monotonic ns

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}
static void die(const char *what) { perror(what); exit(1); }

// ---- frames (built once; big-endian writers over a caller's buffer) ----
static uint8_t *u8(uint8_t *p, unsigned v) { *p = (uint8_t)v; return p + 1; }
static uint8_t *u16(uint8_t *p, unsigned v) { p[0] = v >> 8; p[1] = v; return p + 2; }
static uint8_t *u32(uint8_t *p, uint32_t v) { p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v; return p + 4; }
static uint8_t *bytes(uint8_t *p, const void *b, size_t n) { memcpy(p, b, n); return p + n; }
static uint8_t *str(uint8_t *p, const void *b, size_t n) { return bytes(u32(p, n), b, n); }
static uint8_t *field(uint8_t *p, unsigned type, unsigned id) { return u16(u8(p, type), id); }
static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3]; }

/** frame writes the Get (is_set = 0) or Set request for key `i` into `o` and returns its length. */
static size_t frame(uint8_t *o, int i, int is_set, const uint8_t *value) {
  char key[16];
  int kl = snprintf(key, sizeof key, "key:%06d", i);
  uint8_t *p = o;
  if (opt.thrift) {
    p = str(u32(u32(p, 0), 0x80010000u | THRIFT_CALL), is_set ? "Set" : "Get", 3);
    p = field(u32(p, i), T_STRUCT, 1);
    p = str(field(p, T_STRING, 1), "default", 7);
    p = str(field(p, T_STRING, 2), key, kl);
    if (is_set) {
      p = str(field(p, T_STRING, 3), value, opt.value_size);
      p = u32(u32(field(p, T_I64, 4), 0), 0);
    }
    p = u8(u8(p, T_STOP), T_STOP);
    u32(o, (uint32_t)(p - o - 4));
  } else {
    int extras = is_set ? 8 : 0, vlen = is_set ? opt.value_size : 0;
    p = u16(u8(u8(p, MC_REQUEST), is_set ? MC_SET : MC_GET), kl);
    p = u16(u8(u8(p, extras), 0), 0);
    p = u32(u32(u32(u32(p, extras + kl + vlen), i), 0), 0);
    memset(p, 0, extras); // flags 0, expiry 0
    p = bytes(bytes(p + extras, key, kl), value, vlen);
  }
  return (size_t)(p - o);
}

static void build_table(void) {
  uint8_t *value = malloc(opt.value_size + 1), *tmp = malloc(opt.value_size + 256);
  get_len = frame(tmp, 0, 0, value);
  set_len = frame(tmp, 0, 1, value);
  gets = malloc(get_len * opt.keys);
  sets = malloc(set_len * opt.keys);
  if (!gets || !sets) die("malloc");
  for (int i = 0; i < opt.keys; i++) {
    for (int j = 0; j < opt.value_size; j++) value[j] = 97 + (i + j) % 26; // valueFor() in frames.ts
    frame(gets + i * get_len, i, 0, value);
    frame(sets + i * set_len, i, 1, value);
  }
  free(value);
  free(tmp);
}

// ---- latency histogram (layout in histogram.ts) ----
static int bucket_of(uint64_t ns) {
  uint32_t v = ns >= MAX_NS ? (uint32_t)MAX_NS : (uint32_t)ns;
  if (v < LINEAR) return v;
  int shift = 31 - __builtin_clz(v) - SUB_BITS;
  return (shift << SUB_BITS) + (int)(v >> shift);
}
static double bucket_low(int i) {
  if (i < LINEAR) return i;
  return (double)((i & ((1 << SUB_BITS) - 1)) + (1 << SUB_BITS)) * (double)(1ull << ((i >> SUB_BITS) - 1));
}
/** percentile returns the midpoint (ns) of the bucket holding quantile q, as histogram.ts does. */
static double percentile(const uint64_t *h, uint64_t total, double q) {
  if (total == 0) return 0;
  double r = q * (double)total;
  uint64_t rank = (uint64_t)r < r ? (uint64_t)r + 1 : (uint64_t)r, seen = 0;
  if (rank < 1) rank = 1;
  for (int i = 0; i < BUCKETS; i++)
    if ((seen += h[i]) >= rank) return (bucket_low(i) + (i + 1 < BUCKETS ? bucket_low(i + 1) : MAX_NS)) / 2;
  return MAX_NS;
}

// ---- connections and the event loop ----
struct conn {
  int fd, blocked;            // blocked: a partial write waits for EPOLLOUT
  uint8_t *out;               // depth × max frame
  size_t out_start, out_end;
  uint64_t *sent_at;          // ring of depth send times
  int head, outstanding;
  uint8_t hdr[HDR_MAX];       // header sample of a reply split across reads
  int hdr_fill;
  int in_body, verdict;       // sample judged (0 ok, 1 CacheError / status, 2 error); skipping the rest
  uint64_t left;              // bytes of the current reply after the sample
};

struct worker {
  int ep, nconns, prefill, stopping;
  struct conn *conns;
  uint32_t rng;
  int prefill_next;
  long outstanding;           // sum over conns
  uint64_t ops, errors, misses, closed, hist[BUCKETS];
  uint8_t *rbuf;
  pthread_t tid;
};

/** pick returns the next request as key * 2 + is_set, or -1 when prefill has set every key. */
static int pick(struct worker *w) {
  if (w->prefill) return w->prefill_next < opt.keys ? w->prefill_next++ * 2 + 1 : -1;
  uint32_t x = w->rng; // xorshift32, then a second mix for the get/set draw, as load-client.ts
  x ^= x << 13; x ^= x >> 17; x ^= x << 5;
  w->rng = x;
  int is_set = (double)(uint32_t)(x * 0x85ebca6bu) / 4294967296.0 >= opt.get_ratio;
  return (int)(x % (uint32_t)opt.keys) * 2 + is_set;
}

static void drop(struct worker *w, struct conn *c) {
  if (c->fd < 0) return;
  epoll_ctl(w->ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  c->fd = -1;
  if (!w->stopping) w->closed++;
  w->outstanding -= c->outstanding;
  c->outstanding = 0;
}

static void flush(struct worker *w, struct conn *c) {
  if (c->out_end == c->out_start || c->fd < 0) return;
  ssize_t n = write(c->fd, c->out + c->out_start, c->out_end - c->out_start);
  if (n < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK) { w->errors++; drop(w, c); return; }
    n = 0;
  }
  c->out_start += (size_t)n;
  int blocked = c->out_start < c->out_end;
  if (!blocked) c->out_start = c->out_end = 0;
  if (blocked != c->blocked) {
    struct epoll_event ev = { .events = EPOLLIN | (blocked ? EPOLLOUT : 0), .data.ptr = c };
    epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->blocked = blocked;
  }
}

/** fill tops the connection up to depth outstanding requests and writes them in one call. */
static void fill(struct worker *w, struct conn *c, uint64_t now) {
  size_t cap = (size_t)opt.depth * (set_len > get_len ? set_len : get_len);
  while (!w->stopping && c->outstanding < opt.depth && c->fd >= 0) {
    int code = pick(w);
    if (code < 0) break;
    size_t len = code & 1 ? set_len : get_len;
    const uint8_t *src = (code & 1 ? sets : gets) + (size_t)(code >> 1) * len;
    if (c->out_end + len > cap) {
      memmove(c->out, c->out + c->out_start, c->out_end - c->out_start);
      c->out_end -= c->out_start;
      c->out_start = 0;
    }
    memcpy(c->out + c->out_end, src, len);
    c->out_end += len;
    c->sent_at[(c->head + c->outstanding) % opt.depth] = now;
    c->outstanding++;
    w->outstanding++;
  }
  if (!c->blocked) flush(w, c);
}

/** sample_need is how many leading bytes of a reply decide it (given its fixed prefix), or -1. */
static int sample_need(const uint8_t *h) {
  if (!opt.thrift) return MC_HEADER;
  uint32_t name = be32(h + 8);
  return name > HDR_MAX - 19 ? -1 : (int)(19 + name); // len, version, name, seqid, field type + id
}

/** judge reads a reply's sample `h` (need bytes): sets the verdict and the bytes left; 0 if corrupt. */
static int judge(struct conn *c, const uint8_t *h, int need) {
  uint64_t total = opt.thrift ? 4ull + be32(h) : MC_HEADER + (uint64_t)be32(h + 8);
  if (need < 0 || total < (uint64_t)need) return 0; // cannot resynchronise
  if (opt.thrift) {
    const uint8_t *f = h + need - 3; // result field header
    c->verdict = h[4] != 0x80 || h[5] != 0x01 || h[7] != THRIFT_REPLY || f[0] == T_STOP ? 2 : f[1] | f[2] ? 1 : 0;
  } else c->verdict = h[0] != MC_RESPONSE ? 2 : h[6] | h[7] ? 1 : 0; // magic, status
  c->left = total - (uint64_t)need;
  c->in_body = 1;
  return 1;
}

/** complete counts a finished reply by its verdict (1 = CacheError / status) and records its latency. */
static void complete(struct worker *w, struct conn *c, uint64_t now) {
  c->in_body = 0;
  if (c->verdict == 2) w->errors++;
  else if (c->verdict == 1) w->misses++;
  if (c->outstanding == 0) { w->errors++; return; } // a reply nobody asked for
  if (now >= t_start && now < t_end) {
    w->hist[bucket_of(now - c->sent_at[c->head])]++;
    w->ops++;
  }
  c->head = c->head + 1 == opt.depth ? 0 : c->head + 1;
  c->outstanding--;
  w->outstanding--;
}

/** scan walks one read's bytes: replies wholly inside are judged in place, split headers via hdr. */
static int scan(struct worker *w, struct conn *c, const uint8_t *b, size_t end, uint64_t now) {
  size_t p = 0;
  const int prefix = opt.thrift ? 12 : MC_HEADER;
  while (p < end) {
    if (c->in_body) {
      size_t take = c->left < end - p ? (size_t)c->left : end - p;
      p += take;
      c->left -= take;
      if (c->left > 0) break;
    } else if (c->hdr_fill == 0 && end - p >= (size_t)prefix && end - p >= (size_t)sample_need(b + p)) {
      int need = sample_need(b + p); // fast path: the sample is here, no copy
      if (!judge(c, b + p, need)) return 0;
      p += (size_t)need;
      if (c->left > 0) continue;
    } else { // the header straddles reads: gather it in hdr
      int want = c->hdr_fill < prefix ? prefix : sample_need(c->hdr);
      if (want < 0) return 0;
      size_t take = (size_t)(want - c->hdr_fill) < end - p ? (size_t)(want - c->hdr_fill) : end - p;
      memcpy(c->hdr + c->hdr_fill, b + p, take);
      c->hdr_fill += (int)take;
      p += take;
      if (c->hdr_fill < prefix) continue;
      int need = sample_need(c->hdr);
      if (need < 0) return 0;
      if (c->hdr_fill < need) continue;
      c->hdr_fill = 0;
      if (!judge(c, c->hdr, need)) return 0;
      if (c->left > 0) continue;
    }
    complete(w, c, now);
  }
  return 1;
}

static void on_readable(struct worker *w, struct conn *c) {
  for (int reads = 0; reads < 8; reads++) { // bounded, so one busy connection cannot starve the rest
    ssize_t n = read(c->fd, w->rbuf, READ_BUF);
    if (n <= 0) {
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      if (n < 0) w->errors++;
      drop(w, c);
      return;
    }
    uint64_t now = now_ns();
    if (!scan(w, c, w->rbuf, (size_t)n, now)) { w->errors++; drop(w, c); return; }
    fill(w, c, now);
    if ((size_t)n < READ_BUF) return; // drained; a full buffer means more may be waiting
  }
}

static void open_conns(struct worker *w) {
  w->ep = epoll_create1(0);
  w->rbuf = malloc(READ_BUF);
  w->conns = calloc(w->nconns, sizeof *w->conns);
  size_t cap = (size_t)opt.depth * (set_len > get_len ? set_len : get_len);
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(opt.port) };
  if (w->ep < 0 || !w->rbuf || !w->conns || inet_pton(AF_INET, opt.host, &sa.sin_addr) != 1) die("setup");
  for (int i = 0; i < w->nconns; i++) {
    struct conn *c = &w->conns[i];
    c->out = malloc(cap);
    c->sent_at = calloc(opt.depth, sizeof *c->sent_at);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (!c->out || !c->sent_at || c->fd < 0) die("socket");
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("connect");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK) < 0) die("fcntl");
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
    if (epoll_ctl(w->ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
  }
}

static uint64_t cpu_ns(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru); // all threads
  return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * NS + (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000;
}
static uint64_t cpu0, cpu1, wall0, wall1; // read by the main thread at the window's edges

/** run drives one worker's connections until the window is over (or prefill is done). */
static void *run(void *arg) {
  struct worker *w = arg;
  int main_thread = pthread_equal(pthread_self(), w->tid), started = 0, ended = 0;
  struct epoll_event evs[MAX_EVENTS];
  uint64_t now = now_ns(), deadline = w->prefill ? now + 30 * NS : t_end + 2 * NS;
  for (int i = 0; i < w->nconns; i++) fill(w, &w->conns[i], now);
  for (;;) {
    now = now_ns();
    if (main_thread && !started && now >= t_start) {
      started = 1; wall0 = now; cpu0 = cpu_ns();
      printf("{\"event\":\"start\"}\n"); fflush(stdout);
    }
    if (now >= t_end && !w->stopping) {
      w->stopping = 1;
      if (main_thread && !ended) {
        ended = 1; wall1 = now; cpu1 = cpu_ns();
        printf("{\"event\":\"end\"}\n"); fflush(stdout);
      }
    }
    if (w->outstanding == 0 && (w->stopping || (w->prefill && w->prefill_next >= opt.keys))) break;
    if (now >= deadline) break;
    int n = epoll_wait(w->ep, evs, MAX_EVENTS, 5);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    for (int i = 0; i < n; i++) {
      struct conn *c = evs[i].data.ptr;
      if ((evs[i].events & EPOLLOUT) && c->fd >= 0) flush(w, c);
      if ((evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) && c->fd >= 0) on_readable(w, c);
    }
  }
  w->stopping = 1;
  for (int i = 0; i < w->nconns; i++) drop(w, &w->conns[i]);
  close(w->ep);
  return NULL;
}

static void usage(const char *bad) {
  fprintf(stderr, "loadgen: bad or missing option %s\nusage: loadgen --port P [--host H --protocol thrift|memcache "
    "--connections 50 --keys 10000 --get-ratio 0.9 --value-size 100 --depth 16 --duration 5 --warmup 1 "
    "--threads 1 --seed 1 --no-prefill]\n", bad);
  exit(2);
}

static void parse(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--no-prefill")) { opt.prefill = 0; continue; }
    if (i + 1 >= argc) usage(a);
    const char *v = argv[++i];
    if (!strcmp(a, "--host")) opt.host = v;
    else if (!strcmp(a, "--port")) opt.port = atoi(v);
    else if (!strcmp(a, "--protocol")) { opt.thrift = !strcmp(v, "thrift"); if (!opt.thrift && strcmp(v, "memcache")) usage(v); }
    else if (!strcmp(a, "--connections")) opt.conns = atoi(v);
    else if (!strcmp(a, "--keys")) opt.keys = atoi(v);
    else if (!strcmp(a, "--get-ratio")) opt.get_ratio = atof(v);
    else if (!strcmp(a, "--value-size")) opt.value_size = atoi(v);
    else if (!strcmp(a, "--depth")) opt.depth = atoi(v);
    else if (!strcmp(a, "--duration")) opt.duration = atof(v);
    else if (!strcmp(a, "--warmup")) opt.warmup = atof(v);
    else if (!strcmp(a, "--threads")) opt.threads = atoi(v);
    else if (!strcmp(a, "--seed")) opt.seed = (unsigned)atoi(v);
    else usage(a);
  }
  if (opt.port <= 0 || opt.conns < 1 || opt.keys < 1 || opt.keys > 1000000 || opt.depth < 1 || opt.value_size < 0 ||
      opt.threads < 1 || opt.threads > opt.conns || opt.duration <= 0 || opt.warmup < 0) usage("(values)");
}

int main(int argc, char **argv) {
  parse(argc, argv);
  alarm((unsigned)(opt.warmup + opt.duration) + 60); // bounded run time, whatever the server does
  build_table();
  if (opt.prefill) { // Set every key once over a few connections, so the gets of the run hit
    struct worker *p = calloc(1, sizeof *p);
    p->nconns = PREFILL_CONNS;
    p->prefill = 1;
    p->tid = pthread_self();
    t_start = t_end = UINT64_MAX;
    open_conns(p);
    run(p);
    if (p->errors + p->misses + p->closed > 0 || p->prefill_next < opt.keys || p->outstanding > 0) {
      fprintf(stderr, "loadgen: prefill failed: %llu errors, %llu misses, %llu closed, %d of %d keys\n",
        (unsigned long long)p->errors, (unsigned long long)p->misses, (unsigned long long)p->closed, p->prefill_next, opt.keys);
      return 1;
    }
  }
  struct worker *ws = calloc(opt.threads, sizeof *ws);
  for (int t = 0; t < opt.threads; t++) {
    ws[t].nconns = opt.conns / opt.threads + (t < opt.conns % opt.threads);
    ws[t].rng = ((opt.seed + (unsigned)t) * 0x9e3779b1u) | 1;
    open_conns(&ws[t]);
  }
  t_start = now_ns() + (uint64_t)(opt.warmup * NS);
  t_end = t_start + (uint64_t)(opt.duration * NS);
  ws[0].tid = pthread_self();
  for (int t = 1; t < opt.threads; t++)
    if (pthread_create(&ws[t].tid, NULL, run, &ws[t]) != 0) die("pthread_create");
  run(&ws[0]);
  uint64_t ops = 0, errors = 0, misses = 0, *hist = ws[0].hist;
  for (int t = 0; t < opt.threads; t++) {
    if (t > 0) {
      pthread_join(ws[t].tid, NULL);
      for (int i = 0; i < BUCKETS; i++) hist[i] += ws[t].hist[i];
    }
    ops += ws[t].ops;
    errors += ws[t].errors + ws[t].closed;
    misses += ws[t].misses;
  }
  double seconds = opt.duration, cpu_s = (double)(cpu1 - cpu0) / NS, wall_s = (double)(wall1 - wall0) / NS;
  printf("{\"ops_per_s\":%.0f,\"p50_us\":%.1f,\"p99_us\":%.1f,\"errors\":%llu,\"misses\":%llu,\"client_cpu_s\":%.3f,"
    "\"client_cpu_pct\":%.0f,\"processes\":1,\"threads\":%d,\"connections\":%d,\"depth\":%d,\"value_size\":%d,"
    "\"get_ratio\":%g,\"seconds\":%.2f,\"client\":\"c\"}\n",
    (double)ops / seconds, percentile(hist, ops, 0.5) / 1e3, percentile(hist, ops, 0.99) / 1e3,
    (unsigned long long)errors, (unsigned long long)misses, cpu_s, wall_s > 0 ? cpu_s / wall_s * 100 : 0,
    opt.threads, opt.conns, opt.depth, opt.value_size, opt.get_ratio, seconds);
  return 0;
}
