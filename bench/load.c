/* load: a load client for TCP echo servers.
 *
 *   load (--port P [--host ADDR] | --unix PATH) [--conns N] [--size S]
 *        [--pipeline K] [--seconds D | --messages M] [--warmup W]
 *        [--server-pid PID] [--idle [--hold SECONDS]]
 *        [--tls [--handshakes [--resume]]]
 *
 * Builds on its own: cc -std=c11 -O2 bench/load.c -o load
 * and with TLS:      cc -std=c11 -O2 -DLOAD_TLS=1 bench/load.c -o load -lssl
 *                    -lcrypto
 *
 * Design notes
 *
 * It uses neither libuv nor cport, so it favours no server it measures:
 * plain non-blocking BSD sockets and one thread, driven by epoll on Linux
 * and by poll() elsewhere. -DLOAD_USE_POLL selects poll() on Linux too, so
 * that path can be tested where it is not the default.
 *
 * Message contents. Every message is a window of S bytes into one shared
 * pseudo-random pattern of S + 64 KiB bytes; message m of connection c
 * starts at (hash(c) + m * PATTERN_STEP) mod 64 KiB. Sending and checking
 * then need no buffer per connection (10 000 idle connections stay cheap)
 * and a check is one memcmp. The step is odd, so any 65 536 consecutive
 * messages of one connection start at different offsets: a dropped,
 * duplicated or reordered message within a pipeline window changes the
 * bytes. Because the pattern is random, a stream that lost or gained a few
 * bytes, or bytes meant for another connection, mismatches within a byte
 * or two (unless two connections' offsets collide, 1 in 65 536).
 *
 * In flight. Message m's send time is taken when its first byte goes to
 * the kernel and kept in slot m % K of the connection's ring of K
 * timestamps. Message m may start only after message m - K has come back,
 * so no slot is overwritten while its message is out. Echoed bytes are
 * checked in order; a message completes with its S-th byte. The echo can
 * never run ahead of what was sent, so a server that sends extra bytes is
 * caught even when they would match.
 *
 * Timing. Traffic starts once every connection is up. Nothing is counted
 * during the warm-up; a message counts if it completes inside the measured
 * window, whose length is the one reported. Every run has a hard deadline.
 * When a run ends normally, a connection whose oldest message has waited
 * more than 10 s counts as stalled, and so does one waiting more than 2 s
 * if no message at all came back in the window or the server has sent
 * nothing on any connection for the last 2 s: a server that accepts but
 * never answers, or stops answering, then shows up as errors, not as a
 * quiet low rate. A tighter
 * limit would flag working servers: 1000 connections x 16 x 64 KiB start
 * with a 1 GiB burst whose slowest echo took ~5 s against echo_server.
 *
 * TLS (--tls, compiled in with LOAD_TLS and OpenSSL 3). The same sockets,
 * poller and checks, with an OpenSSL client on each socket (SSL_set_fd):
 * TLS 1.3 only, TLS_AES_128_GCM_SHA256, no certificate verification (the
 * server's certificate is a throw-away one), SNI "localhost". The handshake
 * runs non-blocking from the poller and counts as connecting, so the limit
 * on connects in flight bounds handshakes too. SSL_write takes one message
 * (or its unsent rest) at a time, with partial writes on; reads use
 * OpenSSL's read-ahead, so one recv() can bring several records, and the
 * records already read are drained before waiting again. The client's CPU
 * is not measured, only the server's.
 *
 * --unix PATH: the same over a Unix domain stream socket, to compare local
 * endpoints with TCP on loopback; no TLS over it. Such a connect() never
 * waits: it succeeds at once or, with the listener's backlog full, fails
 * with EAGAIN (Linux) or ECONNREFUSED (the BSDs and macOS). The connection
 * is then tried again 1 ms later, as a TCP client's SYN would be, so a
 * thousand connections opened in a burst do not count as refused. A refusal
 * before any connection is up is an error, not a full backlog: a path with
 * no listener fails at once.
 *
 * --handshakes: each of the N connection slots connects, completes a full
 * handshake, echoes one message of S bytes, sends close_notify and closes,
 * then starts again at once. A cycle counts when its echo completes inside
 * the window; the latency shown is the whole cycle's, from connect(). With
 * --resume each slot offers the session ticket its previous connection
 * received (SSL_set_session; tickets arrive after a TLS 1.3 handshake, so
 * the new-session callback keeps the latest), and the summary says how many
 * handshakes the server resumed (SSL_session_reused). The window then opens
 * only once every slot has completed its first, full cycle. */
#if defined(__linux__)
#define _GNU_SOURCE
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef LOAD_TLS
#define LOAD_TLS 0
#endif
#if LOAD_TLS
#include <openssl/err.h>
#include <openssl/ssl.h>
#endif

#if defined(__linux__) && !defined(LOAD_USE_POLL)
#define LOAD_EPOLL 1
#include <sys/epoll.h>
#else
#define LOAD_EPOLL 0
#include <poll.h>
#endif

/* macOS has no clock_getcpuclockid(); there --server-pid reports nothing. */
#if defined(_POSIX_CPUTIME) && (_POSIX_CPUTIME >= 0)
#define LOAD_CPU_CLOCK 1
#else
#define LOAD_CPU_CLOCK 0
#endif

/* Where MSG_NOSIGNAL is missing SO_NOSIGPIPE and SIG_IGN do its job. */
#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif

#if defined(__GNUC__) || defined(__clang__)
#define LOAD_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define LOAD_PRINTF(f, a)
#endif

#define NS_PER_S UINT64_C(1000000000)
#define NS_PER_MS UINT64_C(1000000)

#define MAX_CONNS 200000L
#define MAX_SIZE (16L * 1024 * 1024)
#define MAX_PIPELINE 65536L
/* conns x pipeline timestamps: 128 MiB, far past any sane run. */
#define MAX_RING_SLOTS (16L * 1024 * 1024)
#define MAX_MESSAGES UINT64_C(1000000000000000)
#define MAX_SECONDS 1e6

/* Overflowing a listen backlog costs a 1 s SYN retry. Backlogs are often
 * 511 or more, so 256 handshakes at a time stay inside them while the
 * server keeps accepting (see connects_pending for --idle). */
#define CONNECTS_IN_FLIGHT 256
#define PATTERN_SPAN 65536u
#define PATTERN_STEP 40503u
#define RECV_BUF_SIZE (256 * 1024)
#define IOV_BATCH 64
#define EVENT_BATCH 1024
#define FD_SPARE 16
#define ERRORS_SHOWN 5

#define HARD_EXTRA_NS (10 * NS_PER_S)
#define MESSAGES_LIMIT_NS (60 * NS_PER_S)
#define IDLE_SETUP_NS (60 * NS_PER_S)
#define STALL_NS (10 * NS_PER_S)
#define STALL_DEAD_NS (2 * NS_PER_S)
/* --unix: how long a connect refused by a full backlog waits to retry. */
#define UNIX_RETRY_NS NS_PER_MS
/* --unix: the room for a path and its terminating zero. */
#define UNIX_PATH_LEN sizeof(((struct sockaddr_un*)0)->sun_path)
/* OpenSSL's read-ahead buffer outside --idle: a 64 KiB message's four
 * records in one recv(). */
#define TLS_READ_BUF (64 * 1024 + 1024)

/* Log-linear latency histogram in nanoseconds: values below 64 are exact,
 * above that each power of two splits into 64 buckets (1.6% wide). */
#define HIST_SUB_BITS 6
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_MAX_BITS 38 /* 2^38 ns, about 275 s; longer is clamped */
#define HIST_BUCKETS ((HIST_MAX_BITS - HIST_SUB_BITS + 1) * HIST_SUB)

enum { CONN_NEW, CONN_CONNECTING, CONN_UP, CONN_DEAD };
enum { WANT_READ = 1, WANT_WRITE = 2 };
enum { EV_READ = 1, EV_WRITE = 2, EV_ERROR = 4 };
enum { PHASE_CONNECT, PHASE_WARMUP, PHASE_MEASURE, PHASE_HOLD, PHASE_DONE };
enum {
  ERR_CONNECT,
  ERR_CLOSED,
  ERR_IO,
  ERR_DATA,
  ERR_STALLED,
  ERR_UNFINISHED,
  ERR_TLS,
  ERR_KINDS
};

static const char* const error_names[ERR_KINDS] = {
    "connect", "closed", "io", "data", "stalled", "unfinished", "tls"};

#define SIGNAL_ID UINT32_MAX

typedef struct opts_s {
  const char* host;
  int host_set;
  long port;
  const char* unix_path; /* NULL: TCP to host and port */
  long conns;
  long size;
  long pipeline;
  double seconds;
  int seconds_set;
  uint64_t messages; /* 0: measure for `seconds` */
  double warmup;
  long server_pid; /* 0: none */
  int idle;
  double hold;
  int hold_set;
  int tls;
  int handshakes;
  int resume;
} opts_t;

typedef struct conn_s {
  int fd;
  uint32_t id;
  uint32_t base;     /* pattern offset of message 0 */
  uint32_t send_off; /* bytes of message `next` already sent */
  uint32_t recv_off; /* bytes of message `done` already echoed */
  uint8_t state;
  uint8_t watch; /* WANT_* currently registered with the poller */
  uint64_t next; /* messages wholly sent */
  uint64_t done; /* messages wholly echoed and checked */
#if LOAD_TLS
  SSL* ssl;           /* NULL without --tls, and until connect() completes */
  SSL_SESSION* sess;  /* --resume: the latest ticket of this slot */
  uint8_t cycled;     /* --handshakes: a cycle of this slot has completed */
  uint64_t started;   /* --handshakes: when this cycle's connect began */
#endif
} conn_t;

typedef struct hist_s {
  uint64_t counts[HIST_BUCKETS];
  uint64_t n;
  uint64_t max;
} hist_t;

typedef struct poller_s {
#if LOAD_EPOLL
  int epfd;
  struct epoll_event events[EVENT_BATCH];
#else
  struct pollfd* fds; /* slot i is connection i; the last, the signal pipe */
  nfds_t nfds;
#endif
} poller_t;

typedef struct run_s {
  const opts_t* o;
  struct sockaddr_storage addr;
  socklen_t addrlen;
  char target[128];  /* "HOST port P" or "unix:PATH", for messages */
  uint64_t retry_at; /* --unix: no connect before this, backlog full */
  conn_t* conns;
  uint32_t nconns;
  uint32_t size;
  uint32_t depth; /* ring slots per connection: K, or 1 with --idle */
  uint64_t* ring;
  uint8_t* pattern;
  uint8_t* rbuf;
  uint64_t msg_limit; /* messages per connection: 1 with --idle */
  poller_t poller;
  int phase;
  int sending;
  uint32_t launched;
  uint32_t connecting;
  uint32_t alive;
  uint32_t echoed; /* --idle: live connections whose echo came back */
  uint64_t t_start;
  uint64_t warm_end;
  uint64_t meas_start;
  uint64_t meas_end;
  uint64_t meas_stop;
  int measured_window; /* meas_start..meas_stop is set */
  uint64_t hard_deadline;
  /* Bytes received on any connection, what the loop saw of it last, and
   * when that changed: how long the server has been silent. */
  uint64_t rx_bytes;
  uint64_t rx_seen;
  uint64_t last_rx;
  uint64_t measured;
  hist_t hist;
  uint64_t errors;
  uint64_t error_kinds[ERR_KINDS];
  int timed_out;
  int interrupted;
  int cpu_ok;
#if LOAD_CPU_CLOCK
  clockid_t cpu_clock;
#endif
  uint64_t cpu_start;
  uint64_t cpu_stop;
#if LOAD_TLS
  SSL_CTX* tls_ctx;  /* NULL without --tls */
  uint64_t resumed;  /* --handshakes: measured cycles that resumed */
  uint32_t cycled;   /* --handshakes: slots with a completed cycle */
#endif
} run_t;

static volatile sig_atomic_t got_signal;
static int signal_pipe[2] = {-1, -1};


static void on_event(run_t* r, uint32_t id, unsigned ev);


static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}


static uint64_t seconds_to_ns(double s) {
  return (uint64_t)(s * 1e9 + 0.5);
}


static void on_signal(int signo) {
  int saved = errno;
  got_signal = signo;
  /* The pipe wakes a poller that is about to block, which a flag alone
   * cannot do without a race. A full pipe already holds a wake-up. */
  if (write(signal_pipe[1], "", 1) < 0) {
  }
  errno = saved;
}


/* ---- histogram ---- */

static unsigned msb64(uint64_t v) {
#if defined(__GNUC__) || defined(__clang__)
  return 63u - (unsigned)__builtin_clzll(v);
#else
  unsigned n = 0;
  while (v >>= 1) n++;
  return n;
#endif
}


static void hist_record(hist_t* h, uint64_t v) {
  size_t i;
  if (v >= (UINT64_C(1) << HIST_MAX_BITS))
    v = (UINT64_C(1) << HIST_MAX_BITS) - 1;
  if (v < HIST_SUB) {
    i = (size_t)v;
  } else {
    unsigned shift = msb64(v) - HIST_SUB_BITS;
    i = (size_t)(shift + 1) * HIST_SUB + (size_t)((v >> shift) - HIST_SUB);
  }
  h->counts[i]++;
  h->n++;
  if (v > h->max)
    h->max = v;
}


/* The middle of the bucket holding the value of rank ceil(q * n), so the
 * error is half a bucket; never above the true maximum. */
static uint64_t hist_quantile(const hist_t* h, double q) {
  uint64_t rank;
  uint64_t seen = 0;
  size_t i;
  if (h->n == 0)
    return 0;
  rank = (uint64_t)(q * (double)h->n);
  if ((double)rank < q * (double)h->n)
    rank++;
  if (rank == 0)
    rank = 1;
  for (i = 0; i < HIST_BUCKETS; i++) {
    seen += h->counts[i];
    if (seen >= rank)
      break;
  }
  if (i < HIST_SUB) {
    return i;
  } else {
    unsigned shift = (unsigned)(i / HIST_SUB) - 1;
    uint64_t low = (uint64_t)(HIST_SUB + i % HIST_SUB) << shift;
    uint64_t mid = low + (((uint64_t)1 << shift) >> 1);
    return mid < h->max ? mid : h->max;
  }
}


/* ---- poller ---- */

static int poller_open(run_t* r) {
  poller_t* p = &r->poller;
#if LOAD_EPOLL
  struct epoll_event ev;
  p->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (p->epfd < 0)
    return -1;
  memset(&ev, 0, sizeof(ev));
  ev.events = EPOLLIN;
  ev.data.u32 = SIGNAL_ID;
  return epoll_ctl(p->epfd, EPOLL_CTL_ADD, signal_pipe[0], &ev);
#else
  nfds_t i;
  p->nfds = (nfds_t)r->nconns + 1;
  p->fds = calloc(p->nfds, sizeof(*p->fds));
  if (p->fds == NULL)
    return -1;
  for (i = 0; i < p->nfds; i++)
    p->fds[i].fd = -1; /* poll() skips negative descriptors */
  p->fds[r->nconns].fd = signal_pipe[0];
  p->fds[r->nconns].events = POLLIN;
  return 0;
#endif
}


static void poller_close(run_t* r) {
#if LOAD_EPOLL
  if (r->poller.epfd >= 0)
    close(r->poller.epfd);
#else
  free(r->poller.fds);
#endif
}


static int poller_watch(run_t* r, conn_t* c, unsigned want) {
#if LOAD_EPOLL
  struct epoll_event ev;
  int op;
  if (want == c->watch)
    return 0;
  memset(&ev, 0, sizeof(ev));
  ev.events = ((want & WANT_READ) ? EPOLLIN : 0u) |
              ((want & WANT_WRITE) ? EPOLLOUT : 0u);
  ev.data.u32 = c->id;
  op = c->watch == 0 ? EPOLL_CTL_ADD
                     : (want == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD);
  if (epoll_ctl(r->poller.epfd, op, c->fd, &ev) != 0)
    return -1;
#else
  struct pollfd* pfd = &r->poller.fds[c->id];
  pfd->fd = want != 0 ? c->fd : -1;
  pfd->events = (short)(((want & WANT_READ) ? POLLIN : 0) |
                        ((want & WANT_WRITE) ? POLLOUT : 0));
#endif
  c->watch = (uint8_t)want;
  return 0;
}


/* Called before close(). epoll drops a closed descriptor by itself, and
 * the events of this batch carry the connection id, not the descriptor, so
 * a reused descriptor number cannot be mistaken for this connection. */
static void poller_forget(run_t* r, conn_t* c) {
#if !LOAD_EPOLL
  r->poller.fds[c->id].fd = -1;
#else
  (void)r;
#endif
  c->watch = 0;
}


static void drain_signal_pipe(void) {
  char buf[64];
  while (read(signal_pipe[0], buf, sizeof(buf)) > 0) {
  }
}


/* Waits up to timeout_ms (-1: forever) and dispatches what is ready. */
static void poller_wait(run_t* r, int timeout_ms) {
#if LOAD_EPOLL
  int n = epoll_wait(r->poller.epfd, r->poller.events, EVENT_BATCH, timeout_ms);
  int i;
  if (n < 0) {
    if (errno != EINTR) {
      fprintf(stderr, "load: epoll_wait: %s\n", strerror(errno));
      got_signal = -1;
    }
    return;
  }
  for (i = 0; i < n; i++) {
    uint32_t bits = r->poller.events[i].events;
    uint32_t id = r->poller.events[i].data.u32;
    unsigned ev = ((bits & EPOLLIN) ? EV_READ : 0u) |
                  ((bits & EPOLLOUT) ? EV_WRITE : 0u) |
                  ((bits & (EPOLLERR | EPOLLHUP)) ? EV_ERROR : 0u);
    if (id == SIGNAL_ID)
      drain_signal_pipe();
    else
      on_event(r, id, ev);
  }
#else
  int n = poll(r->poller.fds, r->poller.nfds, timeout_ms);
  nfds_t i;
  if (n < 0) {
    if (errno != EINTR) {
      fprintf(stderr, "load: poll: %s\n", strerror(errno));
      got_signal = -1;
    }
    return;
  }
  for (i = 0; i < r->poller.nfds && n > 0; i++) {
    short bits = r->poller.fds[i].revents;
    unsigned ev;
    if (bits == 0)
      continue;
    n--;
    if (i == r->nconns) {
      drain_signal_pipe();
      continue;
    }
    ev = ((bits & POLLIN) ? EV_READ : 0u) | ((bits & POLLOUT) ? EV_WRITE : 0u) |
         ((bits & (POLLERR | POLLHUP | POLLNVAL)) ? EV_ERROR : 0u);
    on_event(r, (uint32_t)i, ev);
  }
#endif
}


static int timeout_until(uint64_t now, uint64_t deadline) {
  uint64_t ms;
  if (deadline <= now)
    return 0;
  /* Rounded up, so the wait never ends just short of the deadline. */
  ms = (deadline - now + NS_PER_MS - 1) / NS_PER_MS;
  return ms > INT_MAX ? INT_MAX : (int)ms;
}


/* ---- server CPU time ---- */

static int cpu_read(run_t* r, uint64_t* out) {
#if LOAD_CPU_CLOCK
  struct timespec ts;
  if (clock_gettime(r->cpu_clock, &ts) != 0)
    return -1;
  *out = (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
  return 0;
#else
  (void)r;
  (void)out;
  return -1;
#endif
}


static void cpu_open(run_t* r) {
#if LOAD_CPU_CLOCK
  int rc = clock_getcpuclockid((pid_t)r->o->server_pid, &r->cpu_clock);
  if (rc == 0) {
    r->cpu_ok = 1;
    return;
  }
  fprintf(stderr, "load: no CPU clock for pid %ld: %s\n", r->o->server_pid,
          strerror(rc));
#else
  fprintf(stderr, "load: --server-pid is not supported on this system\n");
#endif
}


/* ---- phases ---- */

static void start_measure(run_t* r, uint64_t now) {
  r->phase = PHASE_MEASURE;
  r->meas_start = now;
  r->meas_end =
      r->o->messages != 0 ? UINT64_MAX : now + seconds_to_ns(r->o->seconds);
  if (r->cpu_ok && cpu_read(r, &r->cpu_start) != 0) {
    fprintf(stderr, "load: cannot read the server's CPU time: %s\n",
            strerror(errno));
    r->cpu_ok = 0;
  }
}


static void finish(run_t* r, uint64_t now) {
  if (r->phase == PHASE_MEASURE) {
    r->meas_stop = now;
    r->measured_window = 1;
    if (r->cpu_ok && cpu_read(r, &r->cpu_stop) != 0) {
      fprintf(stderr, "load: cannot read the server's CPU time: %s\n",
              strerror(errno));
      r->cpu_ok = 0;
    }
  }
  r->phase = PHASE_DONE;
}


/* With --resume the window waits until every slot has had its one full
 * handshake, so that every handshake it counts can resume. */
static int warmed_up(const run_t* r) {
#if LOAD_TLS
  return !r->o->resume || r->cycled == r->nconns;
#else
  (void)r;
  return 1;
#endif
}


static void tick(run_t* r, uint64_t now) {
  if (r->phase == PHASE_WARMUP && now >= r->warm_end && warmed_up(r))
    start_measure(r, now);
  if (r->phase == PHASE_MEASURE && now >= r->meas_end)
    finish(r, now);
  if (r->phase != PHASE_DONE && r->phase != PHASE_HOLD &&
      now >= r->hard_deadline) {
    r->timed_out = 1;
    finish(r, now);
  }
}


/* ---- connections ---- */

static uint32_t hash32(uint32_t x) {
  uint64_t z = (uint64_t)x * UINT64_C(0x9e3779b97f4a7c15);
  z ^= z >> 30;
  z *= UINT64_C(0xbf58476d1ce4e5b9);
  z ^= z >> 27;
  z *= UINT64_C(0x94d049bb133111eb);
  z ^= z >> 31;
  return (uint32_t)z;
}


static const uint8_t* message_bytes(const run_t* r,
                                    const conn_t* c,
                                    uint64_t m) {
  /* Only m mod 2^16 matters, so wrapping the 32-bit product is harmless. */
  uint32_t off = (c->base + (uint32_t)m * PATTERN_STEP) & (PATTERN_SPAN - 1);
  return r->pattern + off;
}


static uint64_t* ring_slot(const run_t* r, const conn_t* c, uint64_t m) {
  return &r->ring[(size_t)c->id * r->depth + (size_t)(m % r->depth)];
}


static void conn_close(run_t* r, conn_t* c) {
#if LOAD_TLS
  if (c->ssl != NULL) {
    SSL_free(c->ssl);
    c->ssl = NULL;
  }
#endif
  if (c->fd >= 0) {
    poller_forget(r, c);
    close(c->fd);
    c->fd = -1;
  }
  if (c->state == CONN_CONNECTING)
    r->connecting--;
  if (c->state == CONN_UP) {
    r->alive--;
    if (r->o->idle && c->done > 0)
      r->echoed--;
  }
  c->state = CONN_DEAD;
}


static void conn_error(run_t* r, conn_t* c, int kind, const char* fmt, ...)
    LOAD_PRINTF(4, 5);

static void conn_error(run_t* r, conn_t* c, int kind, const char* fmt, ...) {
  va_list ap;
  r->errors++;
  r->error_kinds[kind]++;
  /* A dead server fails every connection the same way; a few lines say
   * enough, and the totals by kind follow at the end. */
  if (r->errors <= ERRORS_SHOWN) {
    fprintf(stderr, "load: connection %" PRIu32 ": ", c->id);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
  } else if (r->errors == ERRORS_SHOWN + 1) {
    fprintf(stderr, "load: more errors; only counting them now\n");
  }
  conn_close(r, c);
}


static void conn_send(run_t* r, conn_t* c);
#if LOAD_TLS
static void tls_send(run_t* r, conn_t* c);
static void tls_begin(run_t* r, conn_t* c);
static int cycle_done(run_t* r, conn_t* c, uint64_t now);
#endif


/* conn_send(), or its TLS twin on a TLS connection. */
static void conn_send_any(run_t* r, conn_t* c) {
#if LOAD_TLS
  if (c->ssl != NULL) {
    tls_send(r, c);
    return;
  }
#endif
  conn_send(r, c);
}


static void conn_up(run_t* r, conn_t* c) {
  r->connecting--;
  r->alive++;
  c->state = CONN_UP;
  if (poller_watch(r, c, WANT_READ) != 0) {
    conn_error(r, c, ERR_IO, "poller: %s", strerror(errno));
    return;
  }
  if (r->sending)
    conn_send_any(r, c);
}


/* The TCP connection is up: with --tls the handshake starts, which counts
 * as connecting until it completes. */
static void conn_established(run_t* r, conn_t* c) {
#if LOAD_TLS
  if (r->tls_ctx != NULL) {
    tls_begin(r, c);
    return;
  }
#endif
  conn_up(r, c);
}


/* Returns: 0, or 1 when a Unix socket's backlog was full: the socket is
 * closed again and `c` is as it was, to be started again later. */
static int conn_start(run_t* r, conn_t* c) {
  int one = 1;
  int flags;
  const int local = r->addr.ss_family == AF_UNIX;
  int fd = socket(r->addr.ss_family, SOCK_STREAM, 0);
  if (fd < 0) {
    conn_error(r, c, ERR_CONNECT, "socket: %s", strerror(errno));
    return 0;
  }
  c->fd = fd;
  c->state = CONN_CONNECTING;
  r->connecting++;
#if LOAD_TLS
  c->started = now_ns();
#endif
  flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0 ||
      (!local &&
       setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0)) {
    conn_error(r, c, ERR_CONNECT, "socket options: %s", strerror(errno));
    return 0;
  }
#ifdef SO_NOSIGPIPE
  if (setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof(one)) != 0) {
    conn_error(r, c, ERR_CONNECT, "SO_NOSIGPIPE: %s", strerror(errno));
    return 0;
  }
#endif
  if (connect(fd, (const struct sockaddr*)&r->addr, r->addrlen) == 0) {
    conn_established(r, c);
    return 0;
  }
  if (local && (errno == EAGAIN || (errno == ECONNREFUSED && r->alive > 0))) {
    close(fd);
    c->fd = -1;
    c->state = CONN_NEW;
    r->connecting--;
    return 1;
  }
  /* After EINTR a non-blocking connect carries on asynchronously. */
  if (errno != EINPROGRESS && errno != EINTR) {
    conn_error(r, c, ERR_CONNECT, "connect: %s", strerror(errno));
    return 0;
  }
  if (poller_watch(r, c, WANT_WRITE) != 0)
    conn_error(r, c, ERR_IO, "poller: %s", strerror(errno));
  return 0;
}


static void conn_connected(run_t* r, conn_t* c) {
  int err = 0;
  socklen_t len = sizeof(err);
  if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
    err = errno;
  if (err != 0) {
    conn_error(r, c, ERR_CONNECT, "connect: %s", strerror(err));
    return;
  }
  conn_established(r, c);
}


/* A finished handshake only means the connection waits in the server's
 * accept queue. With --idle the echo proves it was accepted, so until then
 * it stays pending: that bounds the accept queue, not just the handshakes
 * (the load mode sends nothing before every connection is up). */
static uint32_t connects_pending(const run_t* r) {
  return r->connecting + (r->o->idle ? r->alive - r->echoed : 0);
}


static void launch_connects(run_t* r) {
  if (r->retry_at != 0) {
    if (now_ns() < r->retry_at)
      return;
    r->retry_at = 0;
  }
  while (r->launched < r->nconns && connects_pending(r) < CONNECTS_IN_FLIGHT) {
    if (conn_start(r, &r->conns[r->launched]) != 0) {
      r->retry_at = now_ns() + UNIX_RETRY_NS;
      return;
    }
    r->launched++;
  }
}


/* The poller's wake-up time, brought forward to a connect retry. */
static uint64_t retry_wake(const run_t* r, uint64_t wake) {
  return r->retry_at != 0 && r->retry_at < wake ? r->retry_at : wake;
}


/* Sends whatever the window allows: the rest of a partly sent message,
 * then new ones while fewer than K are out, many per system call. */
static void conn_send(run_t* r, conn_t* c) {
  const uint32_t size = r->size;
  for (;;) {
    struct iovec iov[IOV_BATCH];
    struct msghdr msg;
    size_t niov = 0;
    size_t total = 0;
    size_t left;
    uint64_t m = c->next;
    uint32_t off = c->send_off;
    uint64_t now;
    ssize_t n;

    while (niov < IOV_BATCH) {
      if (off == 0 && (m - c->done >= r->depth || m >= r->msg_limit))
        break;
      /* sendmsg() only reads the pattern; iov_base is just not const. */
      iov[niov].iov_base = (void*)(message_bytes(r, c, m) + off);
      iov[niov].iov_len = size - off;
      total += size - off;
      niov++;
      m++;
      off = 0;
    }
    if (niov == 0)
      break;

    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = iov;
    msg.msg_iovlen = (int)niov;
    now = now_ns();
    n = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
          errno == ENOBUFS)
        goto blocked;
      conn_error(r, c, ERR_IO, "send: %s", strerror(errno));
      return;
    }
    for (left = (size_t)n; left > 0;) {
      size_t take = size - c->send_off;
      if (take > left)
        take = left;
      if (c->send_off == 0)
        *ring_slot(r, c, c->next) = now;
      c->send_off += (uint32_t)take;
      left -= take;
      if (c->send_off == size) {
        c->next++;
        c->send_off = 0;
      }
    }
    /* A short write means the socket buffer is full: trying again now
     * would only return EAGAIN. */
    if ((size_t)n < total)
      goto blocked;
    if (niov < IOV_BATCH)
      break;
  }
  if (poller_watch(r, c, WANT_READ) != 0)
    conn_error(r, c, ERR_IO, "poller: %s", strerror(errno));
  return;

blocked:
  if (poller_watch(r, c, WANT_READ | WANT_WRITE) != 0)
    conn_error(r, c, ERR_IO, "poller: %s", strerror(errno));
}


/* Returns non-zero when the run is over. */
static int conn_complete(run_t* r, conn_t* c, uint64_t now) {
  uint64_t sent_at = *ring_slot(r, c, c->done);
  c->done++;
  c->recv_off = 0;
#if LOAD_TLS
  if (r->o->handshakes)
    return cycle_done(r, c, now);
#endif
  if (r->o->idle) {
    if (c->done == 1)
      r->echoed++;
    return 0;
  }
  tick(r, now);
  if (r->phase != PHASE_MEASURE)
    return r->phase == PHASE_DONE;
  hist_record(&r->hist, now - sent_at);
  r->measured++;
  if (r->o->messages != 0 && r->measured >= r->o->messages)
    finish(r, now);
  return r->phase == PHASE_DONE;
}


/* Checks `len` echoed bytes at `p` against what was sent and completes the
 * messages they end.
 * Returns non-zero when the connection died or the run is over. */
static int conn_check(run_t* r, conn_t* c, const uint8_t* p, size_t len) {
  const uint32_t size = r->size;
  uint64_t sent_pos = c->next * size + c->send_off;
  uint64_t recv_pos = c->done * size + c->recv_off;
  uint64_t now = 0;

  r->rx_bytes += len;
  if (recv_pos + len > sent_pos) {
    conn_error(r, c, ERR_DATA,
               "received %" PRIu64 " bytes but only %" PRIu64 " were sent",
               recv_pos + len, sent_pos);
    return 1;
  }
  while (len > 0) {
    size_t take = size - c->recv_off;
    const uint8_t* want = message_bytes(r, c, c->done) + c->recv_off;
    if (take > len)
      take = len;
    if (memcmp(p, want, take) != 0) {
      size_t i = 0;
      while (p[i] == want[i]) i++;
      conn_error(r, c, ERR_DATA,
                 "message %" PRIu64 " byte %zu is 0x%02x, sent 0x%02x", c->done,
                 c->recv_off + i, p[i], want[i]);
      return 1;
    }
    c->recv_off += (uint32_t)take;
    p += take;
    len -= take;
    if (c->recv_off == size) {
      /* One clock read per recv(): what arrived together completes
       * together. */
      if (now == 0)
        now = now_ns();
      if (conn_complete(r, c, now) != 0)
        return 1;
    }
  }
  return 0;
}


/* Returns non-zero when the connection died or the run is over. */
static int conn_recv(run_t* r, conn_t* c) {
  ssize_t n = recv(c->fd, r->rbuf, RECV_BUF_SIZE, 0);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
      return 0;
    conn_error(r, c, ERR_IO, "recv: %s", strerror(errno));
    return 1;
  }
  if (n == 0) {
    conn_error(r, c, ERR_CLOSED,
               "closed by the server after %" PRIu64 " messages", c->done);
    return 1;
  }
  return conn_check(r, c, r->rbuf, (size_t)n);
}


/* ---- TLS ---- */

#if LOAD_TLS

/* What OpenSSL's error queue says, or errno's text; clears the queue. */
static const char* tls_why(int saved_errno) {
  static char text[256];
  unsigned long e = ERR_get_error();
  if (e != 0) {
    ERR_error_string_n(e, text, sizeof(text));
    ERR_clear_error();
    return text;
  }
  return saved_errno != 0 ? strerror(saved_errno) : "connection closed";
}


/* Tickets arrive after a TLS 1.3 handshake; each replaces the last. */
static int tls_new_session(SSL* ssl, SSL_SESSION* sess) {
  conn_t* c = SSL_get_app_data(ssl);
  if (c->sess != NULL)
    SSL_SESSION_free(c->sess);
  c->sess = sess;
  return 1; /* the slot keeps the reference */
}


static int tls_setup(run_t* r) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  long mode = SSL_MODE_ENABLE_PARTIAL_WRITE |
              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER;
  if (ctx == NULL)
    return -1;
  r->tls_ctx = ctx;
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256") != 1)
    return -1;
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  /* A server that closes without close_notify reads as a plain EOF. */
  SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_set_read_ahead(ctx, 1);
  if (r->o->idle)
    /* 10 000 held connections would otherwise keep 34 KiB each here. */
    mode |= SSL_MODE_RELEASE_BUFFERS;
  else
    SSL_CTX_set_default_read_buffer_len(ctx, TLS_READ_BUF);
  SSL_CTX_set_mode(ctx, mode);
  if (r->o->resume) {
    SSL_CTX_set_session_cache_mode(
        ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, tls_new_session);
  }
  return 0;
}


static void tls_cleanup(run_t* r) {
  uint32_t i;
  for (i = 0; i < r->nconns && r->conns != NULL; i++)
    if (r->conns[i].sess != NULL)
      SSL_SESSION_free(r->conns[i].sess);
  SSL_CTX_free(r->tls_ctx);
}


/* Drives the handshake as far as the socket allows. */
static void tls_handshake(run_t* r, conn_t* c) {
  int rc = SSL_do_handshake(c->ssl);
  int saved = errno;
  unsigned want;
  if (rc == 1) {
    conn_up(r, c);
    return;
  }
  switch (SSL_get_error(c->ssl, rc)) {
    case SSL_ERROR_WANT_READ:
      want = WANT_READ;
      break;
    case SSL_ERROR_WANT_WRITE:
      want = WANT_READ | WANT_WRITE;
      break;
    default:
      conn_error(r, c, ERR_TLS, "handshake: %s", tls_why(saved));
      return;
  }
  if (poller_watch(r, c, want) != 0)
    conn_error(r, c, ERR_IO, "poller: %s", strerror(errno));
}


static void tls_begin(run_t* r, conn_t* c) {
  c->ssl = SSL_new(r->tls_ctx);
  if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1 ||
      SSL_set_tlsext_host_name(c->ssl, "localhost") != 1) {
    conn_error(r, c, ERR_TLS, "SSL_new: %s", tls_why(errno));
    return;
  }
  SSL_set_app_data(c->ssl, c);
  SSL_set_connect_state(c->ssl);
  if (r->o->resume && c->sess != NULL)
    SSL_set_session(c->ssl, c->sess);
  tls_handshake(r, c);
}


/* conn_send() over TLS: one message, or its unsent rest, per SSL_write.
 * A write that would block is retried with the same bytes, as OpenSSL
 * requires. */
static void tls_send(run_t* r, conn_t* c) {
  const uint32_t size = r->size;
  unsigned want = WANT_READ;
  for (;;) {
    uint64_t m = c->next;
    uint32_t off = c->send_off;
    uint64_t now;
    int n;
    if (off == 0 && (m - c->done >= r->depth || m >= r->msg_limit))
      break;
    now = now_ns();
    n = SSL_write(c->ssl, message_bytes(r, c, m) + off, (int)(size - off));
    if (n <= 0) {
      int saved = errno;
      int e = SSL_get_error(c->ssl, n);
      if (e == SSL_ERROR_WANT_WRITE) {
        want = WANT_READ | WANT_WRITE;
        break;
      }
      if (e == SSL_ERROR_WANT_READ)
        break;
      conn_error(r, c, ERR_IO, "TLS write: %s", tls_why(saved));
      return;
    }
    if (off == 0)
      *ring_slot(r, c, m) = now;
    c->send_off += (uint32_t)n;
    if (c->send_off == size) {
      c->next++;
      c->send_off = 0;
    }
  }
  if (poller_watch(r, c, want) != 0)
    conn_error(r, c, ERR_IO, "poller: %s", strerror(errno));
}


/* conn_recv() over TLS: reads until OpenSSL holds nothing more, so records
 * that one read-ahead brought in are not left waiting for the socket.
 * Returns non-zero when the connection died or the run is over. */
static int tls_recv(run_t* r, conn_t* c) {
  for (;;) {
    int n = SSL_read(c->ssl, r->rbuf, RECV_BUF_SIZE);
    if (n <= 0) {
      int saved = errno;
      int e = SSL_get_error(c->ssl, n);
      /* WANT_WRITE (a key update blocked on a full socket) is picked up by
       * the next SSL_write, which tls_send() makes right after. */
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return 0;
      if (e == SSL_ERROR_ZERO_RETURN ||
          (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && saved == 0)) {
        conn_error(r, c, ERR_CLOSED,
                   "closed by the server after %" PRIu64 " messages",
                   c->done);
        return 1;
      }
      conn_error(r, c, ERR_IO, "TLS read: %s", tls_why(saved));
      return 1;
    }
    if (conn_check(r, c, r->rbuf, (size_t)n) != 0)
      return 1;
    if (!SSL_has_pending(c->ssl))
      return 0;
  }
}


/* --handshakes: a slot's echo came back; counts the cycle, closes with
 * close_notify and starts the slot's next connection.
 * Returns non-zero: this connection is gone either way. */
static int cycle_done(run_t* r, conn_t* c, uint64_t now) {
  int reused = SSL_session_reused(c->ssl);
  /* With --resume, the last slot's first cycle opens the window: it is not
   * counted in it, being a full handshake. */
  int counts = c->cycled || !r->o->resume;
  if (!c->cycled) {
    c->cycled = 1;
    r->cycled++;
  }
  tick(r, now);
  if (r->phase == PHASE_MEASURE && counts) {
    hist_record(&r->hist, now - c->started);
    r->measured++;
    if (reused)
      r->resumed++;
    if (r->o->messages != 0 && r->measured >= r->o->messages)
      finish(r, now);
  }
  /* Queues close_notify without waiting for the server's. */
  SSL_shutdown(c->ssl);
  ERR_clear_error();
  conn_close(r, c);
  c->next = 0;
  c->done = 0;
  c->send_off = 0;
  c->recv_off = 0;
  /* Over TCP only (--unix has no TLS), so never a retry. */
  if (r->phase != PHASE_DONE)
    (void)conn_start(r, c);
  return 1;
}


/* Cycles that began more than STALL_NS ago (2 s when none completed, or
 * the server fell silent) at a normal end: a server that accepts but never
 * finishes a handshake shows up as errors. */
static void fail_stalled_cycles(run_t* r, uint64_t now) {
  uint64_t limit = r->measured == 0 || now - r->last_rx > STALL_DEAD_NS
                       ? STALL_DEAD_NS
                       : STALL_NS;
  uint32_t i;
  for (i = 0; i < r->nconns; i++) {
    conn_t* c = &r->conns[i];
    if (c->state == CONN_DEAD || c->state == CONN_NEW)
      continue;
    if (now - c->started > limit)
      conn_error(r, c, ERR_STALLED, "cycle unfinished for %.1f s",
                 (double)(now - c->started) / 1e9);
  }
}

#endif /* LOAD_TLS */


static void on_event(run_t* r, uint32_t id, unsigned ev) {
  conn_t* c = &r->conns[id];
  if (r->phase == PHASE_DONE)
    return;
  if (c->state == CONN_CONNECTING) {
#if LOAD_TLS
    if (c->ssl != NULL) {
      tls_handshake(r, c);
      return;
    }
#endif
    conn_connected(r, c);
    return;
  }
  /* A connection that died earlier in this batch. */
  if (c->state != CONN_UP)
    return;
#if LOAD_TLS
  if (c->ssl != NULL) {
    if ((ev & (EV_READ | EV_ERROR)) != 0 && tls_recv(r, c) != 0)
      return;
    if (r->sending)
      tls_send(r, c);
    return;
  }
#endif
  if ((ev & (EV_READ | EV_ERROR)) != 0 && conn_recv(r, c) != 0)
    return;
  if (r->sending)
    conn_send(r, c);
}


/* Counts every connection still open (or never opened) as an error, once
 * a time limit cut the run short. With `spare_echoed`, --idle setup spares
 * the connections whose echo already came back: they are ready to hold. */
static void fail_unfinished(run_t* r, int spare_echoed) {
  uint32_t i;
  for (i = 0; i < r->nconns; i++) {
    conn_t* c = &r->conns[i];
    if (c->state == CONN_DEAD)
      continue;
    if (spare_echoed && c->state == CONN_UP && c->done > 0)
      continue;
    conn_error(r, c, ERR_UNFINISHED,
               c->state == CONN_UP ? "unfinished at the time limit"
                                   : "not connected by the time limit");
  }
}


static void fail_stalled(run_t* r, uint64_t now) {
  /* A server silent on every connection for 2 s is not merely busy. */
  uint64_t limit = r->measured == 0 || now - r->last_rx > STALL_DEAD_NS
                       ? STALL_DEAD_NS
                       : STALL_NS;
  uint32_t i;
  for (i = 0; i < r->nconns; i++) {
    conn_t* c = &r->conns[i];
    uint64_t waited;
    if (c->state != CONN_UP || (c->next == c->done && c->send_off == 0))
      continue;
    waited = now - *ring_slot(r, c, c->done);
    if (waited > limit)
      conn_error(r, c, ERR_STALLED, "no echo for %.1f s", (double)waited / 1e9);
  }
}


static void close_all(run_t* r) {
  uint32_t i;
  for (i = 0; i < r->nconns; i++) conn_close(r, &r->conns[i]);
}


/* ---- modes ---- */

static void start_run(run_t* r, uint64_t now) {
  uint32_t i;
  if (!r->o->handshakes)
    fprintf(stderr,
            "load: %" PRIu32 " of %" PRIu32 " connections up in %.3f s\n",
            r->alive, r->nconns, (double)(now - r->t_start) / 1e9);
  r->sending = 1;
  r->last_rx = now;
  if (r->o->warmup > 0) {
    r->phase = PHASE_WARMUP;
    r->warm_end = now + seconds_to_ns(r->o->warmup);
  } else {
    start_measure(r, now);
  }
  for (i = 0; i < r->nconns && r->phase != PHASE_DONE; i++)
    if (r->conns[i].state == CONN_UP)
      conn_send_any(r, &r->conns[i]);
}


/* Ping-pong once every connection is up; with --handshakes every slot
 * cycles from the start instead, and is started again as each cycle ends. */
static void run_load(run_t* r) {
  const int cycles = r->o->handshakes;
  r->hard_deadline =
      r->t_start +
      (r->o->messages != 0
           ? MESSAGES_LIMIT_NS
           : seconds_to_ns(r->o->warmup + r->o->seconds) + HARD_EXTRA_NS);
  if (cycles)
    start_run(r, r->t_start);
  for (;;) {
    uint64_t now = now_ns();
    uint64_t wake;
    if (got_signal) {
      r->interrupted = 1;
      finish(r, now);
      break;
    }
    tick(r, now);
    if (r->rx_bytes != r->rx_seen) {
      r->rx_seen = r->rx_bytes;
      r->last_rx = now;
    }
    if (r->phase == PHASE_CONNECT) {
      launch_connects(r);
      if (r->launched == r->nconns && r->connecting == 0)
        start_run(r, now);
    } else if (cycles) {
      launch_connects(r);
    }
    /* Cycling slots are between connections, not closed, while any
     * connects. */
    if (r->phase != PHASE_CONNECT && r->phase != PHASE_DONE && r->alive == 0 &&
        (!cycles || (r->launched == r->nconns && r->connecting == 0))) {
      fprintf(stderr, "load: every connection is closed\n");
      finish(r, now);
    }
    if (r->phase == PHASE_DONE)
      break;
    wake = r->hard_deadline;
    if (r->phase == PHASE_WARMUP && r->warm_end < wake)
      wake = r->warm_end;
    if (r->phase == PHASE_MEASURE && r->meas_end < wake)
      wake = r->meas_end;
    poller_wait(r, timeout_until(now, retry_wake(r, wake)));
  }
  if (r->interrupted)
    fprintf(stderr, "load: interrupted\n");
  if (r->timed_out) {
    fprintf(stderr, "load: hard time limit reached\n");
    fail_unfinished(r, 0);
  } else if (cycles) {
#if LOAD_TLS
    fail_stalled_cycles(r, now_ns());
#endif
  } else {
    fail_stalled(r, now_ns());
  }
}


static void run_idle(run_t* r) {
  uint64_t setup_deadline = r->t_start + IDLE_SETUP_NS;
  uint64_t hold_end = 0;
  r->sending = 1;
  for (;;) {
    uint64_t now = now_ns();
    if (got_signal) {
      r->interrupted = 1;
      fprintf(stderr, "load: interrupted before every connection was up\n");
      return;
    }
    launch_connects(r);
    if (r->launched == r->nconns && r->connecting == 0 && r->echoed == r->alive)
      break;
    if (now >= setup_deadline) {
      fprintf(stderr, "load: setup time limit reached\n");
      r->timed_out = 1;
      fail_unfinished(r, 1);
      break;
    }
    poller_wait(r, timeout_until(now, retry_wake(r, setup_deadline)));
  }
  fprintf(stderr,
          "load: %" PRIu32 " of %" PRIu32
          " connections up and echoed in %.3f s\n",
          r->alive, r->nconns, (double)(now_ns() - r->t_start) / 1e9);
  printf("ready conns=%" PRIu32 "\n", r->alive);
  fflush(stdout);

  r->phase = PHASE_HOLD;
  if (r->o->hold_set)
    hold_end = now_ns() + seconds_to_ns(r->o->hold);
  while (!got_signal) {
    int timeout = -1;
    if (r->alive == 0) {
      fprintf(stderr, "load: every connection is closed\n");
      break;
    }
    if (r->o->hold_set) {
      uint64_t now = now_ns();
      if (now >= hold_end)
        break;
      timeout = timeout_until(now, hold_end);
    }
    poller_wait(r, timeout);
  }
}


/* ---- setup ---- */

static void usage(FILE* out) {
  fprintf(
      out,
      "usage: load (--port P [--host ADDR] | --unix PATH) [--conns N] "
      "[--size S]\n"
      "            [--pipeline K] [--seconds D | --messages M] [--warmup W]\n"
      "            [--server-pid PID] [--idle [--hold SECONDS]]\n"
      "            [--tls [--handshakes [--resume]]]\n"
      "Loads a TCP (or Unix domain socket) echo server and checks every "
      "echoed byte.\nPrints one line:\n"
      "  conns= size= pipeline= seconds= msgs= msg/s= MiB/s= p50_us= "
      "p99_us= max_us=\n"
      "  errors= [server_cpu_s= cpu_us_per_msg=]\n"
      "or with --handshakes:\n"
      "  conns= size= seconds= handshakes= hs/s= resumed= p50_us= p99_us= "
      "max_us=\n"
      "  errors= [server_cpu_s= cpu_us_per_handshake=]\n"
      "  --port P          server port (required without --unix)\n"
      "  --host ADDR       server IPv4 or IPv6 address (default 127.0.0.1)\n"
      "  --unix PATH       connect to the Unix domain stream socket PATH "
      "instead;\n"
      "                    not with --tls\n"
      "  --conns N         connections, 1 to 200000 (default 1)\n"
      "  --size S          message bytes, 1 to 16777216 (default 64)\n"
      "  --pipeline K      messages in flight per connection (default 1)\n"
      "  --seconds D       seconds to measure (default 3)\n"
      "  --messages M      measure until M messages complete (at most 60 s "
      "in all)\n"
      "  --warmup W        unmeasured seconds first (default 0.2)\n"
      "  --server-pid PID  also report that process's CPU time while "
      "measuring\n"
      "  --idle            open N connections, echo S bytes once on each, "
      "print\n"
      "                    \"ready conns=N\" and hold them until SIGINT or "
      "SIGTERM\n"
      "  --hold SECONDS    with --idle: hold this long at most\n"
      "  --tls             TLS 1.3 (TLS_AES_128_GCM_SHA256) on every "
      "connection,\n"
      "                    the server's certificate not verified\n"
      "  --handshakes      with --tls: each connection connects, "
      "handshakes, echoes\n"
      "                    S bytes once, closes, and starts again; "
      "counts cycles\n"
      "  --resume          with --handshakes: resume the previous "
      "connection's session\n"
      "  --help            show this and exit\n"
      "A run stops after W + D + 10 s whatever happens (60 s with "
      "--messages);\n"
      "connections still busy then count as errors, as do, at a normal end, "
      "those\n"
      "waiting for an echo for over 10 s (2 s if no echo came back in the "
      "window).\n"
      "SIGINT or SIGTERM ends a run early; the line then covers what was "
      "measured.\n"
      "--idle uses only --port, --host, --unix, --conns, --size and --tls.\n"
      "Exit status: 0 with no errors and (unless --idle) at least one "
      "message,\n"
      "1 otherwise, 2 on bad arguments.\n");
}


/* Strict decimal parsing: the whole value must be a number in range. */
static int parse_long(const char* text, long min, long max, long* out) {
  char* end = NULL;
  long v;
  if (*text < '0' || *text > '9')
    return -1;
  errno = 0;
  v = strtol(text, &end, 10);
  if (errno != 0 || *end != '\0' || v < min || v > max)
    return -1;
  *out = v;
  return 0;
}


static int parse_u64(const char* text,
                     uint64_t min,
                     uint64_t max,
                     uint64_t* out) {
  char* end = NULL;
  unsigned long long v;
  if (*text < '0' || *text > '9')
    return -1;
  errno = 0;
  v = strtoull(text, &end, 10);
  if (errno != 0 || *end != '\0' || v < min || v > max)
    return -1;
  *out = (uint64_t)v;
  return 0;
}


/* `positive` rejects zero. NaN fails both comparisons. */
static int parse_seconds(const char* text, int positive, double* out) {
  char* end = NULL;
  double v;
  if ((*text < '0' || *text > '9') && *text != '.')
    return -1;
  errno = 0;
  v = strtod(text, &end);
  if (errno != 0 || *end != '\0' || !(v >= 0 && v <= MAX_SECONDS) ||
      (positive && !(v > 0)))
    return -1;
  *out = v;
  return 0;
}


static int bad_usage(const char* fmt, const char* arg) {
  fputs("load: ", stderr);
  fprintf(stderr, fmt, arg);
  fputc('\n', stderr);
  usage(stderr);
  return 2;
}


/* Returns -1 to go on, or an exit status. */
static int parse_args(int argc, char** argv, opts_t* o) {
  int i;
  memset(o, 0, sizeof(*o));
  o->host = "127.0.0.1";
  o->conns = 1;
  o->size = 64;
  o->pipeline = 1;
  o->seconds = 3;
  o->warmup = 0.2;
  for (i = 1; i < argc; i++) {
    const char* a = argv[i];
    const char* v;
    int bad;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout);
      return 0;
    }
    if (strcmp(a, "--idle") == 0) {
      o->idle = 1;
      continue;
    }
    if (strcmp(a, "--tls") == 0) {
      o->tls = 1;
      continue;
    }
    if (strcmp(a, "--handshakes") == 0) {
      o->handshakes = 1;
      continue;
    }
    if (strcmp(a, "--resume") == 0) {
      o->resume = 1;
      continue;
    }
    if (strcmp(a, "--port") != 0 && strcmp(a, "--host") != 0 &&
        strcmp(a, "--conns") != 0 && strcmp(a, "--size") != 0 &&
        strcmp(a, "--pipeline") != 0 && strcmp(a, "--seconds") != 0 &&
        strcmp(a, "--messages") != 0 && strcmp(a, "--warmup") != 0 &&
        strcmp(a, "--server-pid") != 0 && strcmp(a, "--hold") != 0 &&
        strcmp(a, "--unix") != 0)
      return bad_usage("unknown option '%s'", a);
    if (i + 1 >= argc)
      return bad_usage("%s needs a value", a);
    v = argv[++i];
    if (strcmp(a, "--port") == 0) {
      bad = parse_long(v, 1, 65535, &o->port);
    } else if (strcmp(a, "--host") == 0) {
      o->host = v;
      o->host_set = 1;
      bad = 0;
    } else if (strcmp(a, "--unix") == 0) {
      o->unix_path = v;
      bad = *v == '\0' || strlen(v) >= UNIX_PATH_LEN;
    } else if (strcmp(a, "--conns") == 0) {
      bad = parse_long(v, 1, MAX_CONNS, &o->conns);
    } else if (strcmp(a, "--size") == 0) {
      bad = parse_long(v, 1, MAX_SIZE, &o->size);
    } else if (strcmp(a, "--pipeline") == 0) {
      bad = parse_long(v, 1, MAX_PIPELINE, &o->pipeline);
    } else if (strcmp(a, "--seconds") == 0) {
      bad = parse_seconds(v, 1, &o->seconds);
      o->seconds_set = 1;
    } else if (strcmp(a, "--messages") == 0) {
      bad = parse_u64(v, 1, MAX_MESSAGES, &o->messages);
    } else if (strcmp(a, "--warmup") == 0) {
      bad = parse_seconds(v, 0, &o->warmup);
    } else if (strcmp(a, "--server-pid") == 0) {
      bad = parse_long(v, 1, INT_MAX, &o->server_pid);
    } else {
      bad = parse_seconds(v, 1, &o->hold);
      o->hold_set = 1;
    }
    if (bad) {
      fprintf(stderr, "load: bad value '%s' for %s\n", v, a);
      usage(stderr);
      return 2;
    }
  }
  if (o->unix_path != NULL) {
    if (o->port != 0 || o->host_set)
      return bad_usage("%s goes with neither --port nor --host", "--unix");
    if (o->tls)
      return bad_usage("%s: no TLS over a Unix domain socket", "--unix");
  } else if (o->port == 0) {
    return bad_usage("%s is required (or --unix PATH)", "--port");
  }
  if (o->seconds_set && o->messages != 0)
    return bad_usage("%s: give --seconds or --messages, not both",
                     "--messages");
  if (o->hold_set && !o->idle)
    return bad_usage("%s only goes with --idle", "--hold");
  if (!o->idle && o->conns * o->pipeline > MAX_RING_SLOTS)
    return bad_usage("%s: conns x pipeline is over 16777216", "--pipeline");
#if !LOAD_TLS
  if (o->tls)
    return bad_usage("%s: this bench_load was built without OpenSSL 3 "
                     "(install libssl-dev and build it again)",
                     "--tls");
#endif
  if (o->handshakes && !o->tls)
    return bad_usage("%s only goes with --tls", "--handshakes");
  if (o->handshakes && (o->idle || o->pipeline != 1))
    return bad_usage("%s goes with neither --idle nor --pipeline",
                     "--handshakes");
  if (o->resume && !o->handshakes)
    return bad_usage("%s only goes with --handshakes", "--resume");
  return -1;
}


static int parse_host(run_t* r, const char* host, long port) {
  struct sockaddr_in* a4 = (struct sockaddr_in*)&r->addr;
  struct sockaddr_in6* a6 = (struct sockaddr_in6*)&r->addr;
  memset(&r->addr, 0, sizeof(r->addr));
  snprintf(r->target, sizeof(r->target), "%s port %ld", host, port);
  if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    r->addrlen = sizeof(*a4);
    return 0;
  }
  if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons((uint16_t)port);
    r->addrlen = sizeof(*a6);
    return 0;
  }
  return -1;
}


/* parse_args() checked that the path fits. */
static void set_unix_path(run_t* r, const char* path) {
  struct sockaddr_un* un = (struct sockaddr_un*)&r->addr;
  memset(&r->addr, 0, sizeof(r->addr));
  un->sun_family = AF_UNIX;
  memcpy(un->sun_path, path, strlen(path) + 1);
  r->addrlen = (socklen_t)sizeof(*un);
  snprintf(r->target, sizeof(r->target), "unix:%s", path);
}


static int raise_fd_limit(long conns) {
  struct rlimit rl;
  rlim_t need = (rlim_t)conns + FD_SPARE;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
    fprintf(stderr, "load: getrlimit: %s\n", strerror(errno));
    return -1;
  }
  if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need)
    return 0;
  if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
    fprintf(stderr,
            "load: %ld connections need %llu descriptors; the hard limit "
            "is %llu (ulimit -Hn)\n",
            conns, (unsigned long long)need, (unsigned long long)rl.rlim_max);
    return -1;
  }
  rl.rlim_cur = need;
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
    fprintf(stderr, "load: cannot raise the descriptor limit to %llu: %s\n",
            (unsigned long long)need, strerror(errno));
    return -1;
  }
  return 0;
}


static int setup_signals(void) {
  struct sigaction sa;
  int i;
  if (pipe(signal_pipe) != 0)
    return -1;
  for (i = 0; i < 2; i++) {
    int flags = fcntl(signal_pipe[i], F_GETFL);
    if (flags < 0 || fcntl(signal_pipe[i], F_SETFL, flags | O_NONBLOCK) != 0)
      return -1;
  }
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = SIG_IGN;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGPIPE, &sa, NULL) != 0)
    return -1;
  sa.sa_handler = on_signal;
  if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0)
    return -1;
  return 0;
}


/* Deterministic, so two runs send the same bytes. */
static void fill_pattern(uint8_t* p, size_t len) {
  uint64_t x = UINT64_C(0x2545f4914f6cdd1d);
  size_t i;
  for (i = 0; i < len; i++) {
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    p[i] = (uint8_t)((x * UINT64_C(0x2545f4914f6cdd1d)) >> 56);
  }
}


static void print_summary(const run_t* r) {
  double secs =
      r->measured_window ? (double)(r->meas_stop - r->meas_start) / 1e9 : 0.0;
  double rate = secs > 0 ? (double)r->measured / secs : 0.0;
  double mib =
      secs > 0 ? (double)r->measured * (double)r->size / 1048576.0 / secs : 0.0;
  const char* per = "msg";
  if (r->o->handshakes) {
    per = "handshake";
    printf("conns=%" PRIu32 " size=%" PRIu32 " seconds=%.2f handshakes=%" PRIu64
           " hs/s=%.0f resumed=%" PRIu64,
           r->nconns, r->size, secs, r->measured, rate,
#if LOAD_TLS
           r->resumed
#else
           UINT64_C(0)
#endif
    );
  } else {
    printf("conns=%" PRIu32 " size=%" PRIu32
           " pipeline=%ld seconds=%.2f"
           " msgs=%" PRIu64 " msg/s=%.0f MiB/s=%.2f",
           r->nconns, r->size, r->o->pipeline, secs, r->measured, rate, mib);
  }
  printf(" p50_us=%.1f p99_us=%.1f max_us=%.1f errors=%" PRIu64,
         (double)hist_quantile(&r->hist, 0.50) / 1e3,
         (double)hist_quantile(&r->hist, 0.99) / 1e3, (double)r->hist.max / 1e3,
         r->errors);
  if (r->cpu_ok && r->measured_window) {
    double cpu = (double)(r->cpu_stop - r->cpu_start) / 1e9;
    if (r->measured > 0)
      printf(" server_cpu_s=%.3f cpu_us_per_%s=%.2f", cpu, per,
             cpu * 1e6 / (double)r->measured);
    else
      printf(" server_cpu_s=%.3f cpu_us_per_%s=nan", cpu, per);
  }
  printf("\n");
  fflush(stdout);
}


static void print_errors(const run_t* r) {
  int k;
  if (r->errors == 0)
    return;
  fprintf(stderr, "load: %" PRIu64 " errors:", r->errors);
  for (k = 0; k < ERR_KINDS; k++)
    if (r->error_kinds[k] != 0)
      fprintf(stderr, " %s=%" PRIu64, error_names[k], r->error_kinds[k]);
  fputc('\n', stderr);
}


int main(int argc, char** argv) {
  static run_t run; /* the histogram makes it too big for the stack */
  run_t* r = &run;
  opts_t o;
  size_t ring_slots;
  size_t pattern_len;
  uint32_t i;
  int status = parse_args(argc, argv, &o);

  if (status >= 0)
    return status;
  r->o = &o;
  if (o.unix_path != NULL)
    set_unix_path(r, o.unix_path);
  else if (parse_host(r, o.host, o.port) != 0)
    return bad_usage("bad --host '%s': not an IPv4 or IPv6 address", o.host);
  if (raise_fd_limit(o.conns) != 0)
    return 2;
  if (setup_signals() != 0) {
    fprintf(stderr, "load: signal setup: %s\n", strerror(errno));
    return 1;
  }

  r->nconns = (uint32_t)o.conns;
  r->size = (uint32_t)o.size;
  r->depth = o.idle ? 1 : (uint32_t)o.pipeline;
  r->msg_limit = o.idle || o.handshakes ? 1 : UINT64_MAX;
  ring_slots = (size_t)r->nconns * r->depth;
  pattern_len = (size_t)r->size + PATTERN_SPAN;
  r->conns = calloc(r->nconns, sizeof(*r->conns));
  r->ring = calloc(ring_slots, sizeof(*r->ring));
  r->pattern = malloc(pattern_len);
  r->rbuf = malloc(RECV_BUF_SIZE);
#if LOAD_EPOLL
  r->poller.epfd = -1;
#endif
  if (r->conns == NULL || r->ring == NULL || r->pattern == NULL ||
      r->rbuf == NULL || poller_open(r) != 0) {
    fprintf(stderr, "load: setup: %s\n", strerror(errno));
    status = 1;
    goto done;
  }
  fill_pattern(r->pattern, pattern_len);
  for (i = 0; i < r->nconns; i++) {
    r->conns[i].fd = -1;
    r->conns[i].id = i;
    r->conns[i].base = hash32(i) & (PATTERN_SPAN - 1);
  }
  if (o.server_pid != 0 && !o.idle)
    cpu_open(r);
#if LOAD_TLS
  if (o.tls && tls_setup(r) != 0) {
    fprintf(stderr, "load: TLS setup: %s\n", tls_why(errno));
    status = 1;
    goto done;
  }
#endif

  r->t_start = now_ns();
  r->phase = PHASE_CONNECT;
  if (o.idle) {
    fprintf(stderr, "load: opening %" PRIu32 " idle connections to %s\n",
            r->nconns, r->target);
    run_idle(r);
    close_all(r);
    print_errors(r);
    status = r->errors == 0 && !r->interrupted ? 0 : 1;
  } else {
    if (o.handshakes)
      fprintf(stderr,
              "load: %" PRIu32 " connections to %s, %s handshakes, "
              "%" PRIu32 " bytes each\n",
              r->nconns, r->target, o.resume ? "resumed" : "full", r->size);
    else
      fprintf(stderr,
              "load: %" PRIu32 " connections to %s, %" PRIu32
              " bytes, pipeline %" PRIu32 "\n",
              r->nconns, r->target, r->size, r->depth);
    run_load(r);
    close_all(r);
    print_summary(r);
    print_errors(r);
    status = r->errors == 0 && r->measured > 0 ? 0 : 1;
  }

done:
#if LOAD_TLS
  if (r->tls_ctx != NULL)
    tls_cleanup(r);
#endif
  poller_close(r);
  free(r->conns);
  free(r->ring);
  free(r->pattern);
  free(r->rbuf);
  return status;
}
