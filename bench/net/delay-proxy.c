// delay-proxy: a TCP proxy on 127.0.0.1 that holds every chunk it reads for DELAY_US microseconds
// before passing it on, in both directions: a network round trip for a benchmark on one machine
// (cluster.sh puts it between two nodes with DELAY_US=...). One thread, epoll with nanosecond
// timeouts (epoll_pwait2); chunks are kept in order per direction; a FIN is passed on as one.
//   delay-proxy LISTEN_PORT TARGET_PORT DELAY_US
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct chunk { struct chunk *next; int64_t due; size_t len, off; char data[]; } chunk;
typedef struct side { int fd; struct side *peer; chunk *head, *tail; } side;
static int64_t now_ns(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1000000000LL + t.tv_nsec; }
static int64_t delay_ns;
static side *sides[65536];
static int nsides;

static void nb(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); int one = 1; setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); }

int main(int argc, char **argv) {
  int lport = atoi(argv[1]), tport = atoi(argv[2]);
  delay_ns = atoll(argv[3]) * 1000;
  int ls = socket(AF_INET, SOCK_STREAM, 0); int one = 1; setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(lport), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  if (bind(ls, (void *)&a, sizeof a) || listen(ls, 512)) { perror("listen"); return 1; }
  int ep = epoll_create1(0);
  struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
  epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
  static char buf[65536];
  for (;;) {
    // next due time
    int64_t next = -1, t = now_ns();
    for (int i = 0; i < nsides; i++) if (sides[i] && sides[i]->head && (next < 0 || sides[i]->head->due < next)) next = sides[i]->head->due;
    struct timespec to, *top = NULL;
    if (next >= 0) { int64_t d = next - t; if (d < 0) d = 0; to.tv_sec = d / 1000000000LL; to.tv_nsec = d % 1000000000LL; top = &to; }
    struct epoll_event evs[256];
    int n = epoll_pwait2(ep, evs, 256, top, NULL);
    for (int i = 0; i < n; i++) {
      side *s = evs[i].data.ptr;
      if (s == NULL) { // accept
        int c = accept(ls, NULL, NULL); if (c < 0) continue;
        int u = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in ta = { .sin_family = AF_INET, .sin_port = htons(tport), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        if (connect(u, (void *)&ta, sizeof ta)) { close(c); close(u); continue; }
        nb(c); nb(u);
        side *x = calloc(1, sizeof *x), *y = calloc(1, sizeof *y);
        x->fd = c; y->fd = u; x->peer = y; y->peer = x;
        sides[nsides++] = x; sides[nsides++] = y;
        struct epoll_event e1 = { .events = EPOLLIN, .data.ptr = x }, e2 = { .events = EPOLLIN, .data.ptr = y };
        epoll_ctl(ep, EPOLL_CTL_ADD, c, &e1); epoll_ctl(ep, EPOLL_CTL_ADD, u, &e2);
        continue;
      }
      ssize_t r = read(s->fd, buf, sizeof buf);
      if (r <= 0) { if (r < 0 && errno == EAGAIN) continue; epoll_ctl(ep, EPOLL_CTL_DEL, s->fd, NULL); shutdown(s->peer->fd, SHUT_WR); continue; }
      chunk *ch = malloc(sizeof *ch + r); ch->next = NULL; ch->due = now_ns() + delay_ns; ch->len = r; ch->off = 0; memcpy(ch->data, buf, r);
      // queue on the peer side (data read from s goes to s->peer)
      side *d = s->peer;
      if (d->tail) d->tail->next = ch; else d->head = ch;
      d->tail = ch;
    }
    t = now_ns();
    for (int i = 0; i < nsides; i++) {
      side *d = sides[i];
      while (d && d->head && d->head->due <= t) {
        chunk *ch = d->head;
        ssize_t w = write(d->fd, ch->data + ch->off, ch->len - ch->off);
        if (w < 0) break;
        ch->off += w;
        if (ch->off < ch->len) break;
        d->head = ch->next; if (!d->head) d->tail = NULL; free(ch);
      }
    }
  }
}
