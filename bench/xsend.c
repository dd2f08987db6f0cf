/* xsend: the cross-thread send benchmark.
 *
 *   xsend --mode cport|lecture [--threads T] [--sessions S] [--loops P]
 *         [--size BYTES] [--seconds D | --messages M] [--sendq-limit BYTES]
 *         [--nap-us N]
 *
 * T producer threads send small messages round-robin over S TCP
 * connections to a sink in the same process, which reads and checks every
 * byte. Prints one line:
 *
 *   mode= threads= sessions= loops= size= seconds= msgs= msg/s= cpu_s=
 *   cpu_us_per_msg= writes= sends_per_write= retries= errors=
 *
 * Design notes
 *
 * Modes. `cport`: S client sessions of a cport core with P loops (one
 * client service per loop, the sessions split evenly), so every send comes
 * from a thread that is not the session's loop: cport copies it into a
 * request, queues it to the loop (one lock, one uv_async_t wake-up) and the
 * loop writes the session's queued sends in one gathered uv_write.
 * `lecture`: the lecture's design as the baseline: S plain blocking
 * sockets, each with a mutex; every send takes the socket's mutex, does one
 * send() of the message and unlocks (a system call per message). Both
 * modes set TCP_NODELAY, as cport does by default.
 *
 * Producers. Producer p starts at session p * S / T and moves one session
 * on after every attempt. A send that cport refuses with CPORT_ESENDQ (the
 * session has --sendq-limit bytes queued: the loops are behind) is counted
 * as a retry, the producer naps --nap-us (100 us), the way a blocking
 * send() sleeps in the kernel when the socket buffer is full, and offers
 * the same message to the next session. Without the nap (--nap-us 0) the
 * producers spin through full queues and take the CPU the loops need to
 * empty them. Every loop stops at a deadline: --seconds, or 60 s with
 * --messages (then unsent messages are errors).
 *
 * The sink uses neither libuv nor cport: one thread, plain non-blocking
 * sockets, epoll on Linux and poll() elsewhere (-DXSEND_USE_POLL selects
 * poll() on Linux too). Each message starts with a 16-byte header: a magic
 * number, the producer's index and the producer's sequence number, which
 * counts only accepted messages, so producer p's numbers are exactly
 * 0..n_p-1; the last byte repeats the sequence number's low byte. Sends
 * are atomic in both modes (cport keeps one send's bytes together; the
 * lecture holds the mutex across the whole send), so every stream is a
 * sequence of whole messages. The sink checks each header, that each
 * producer's numbers rise on every connection (order per sender, which
 * cport promises across threads), and at the end that producer p's
 * messages number n_p and sum to n_p (n_p - 1) / 2, and that the byte total
 * equals what the producers were told was accepted.
 *
 * Timing. The window opens when the producers are released (every
 * connection is up and accepted) and closes when the sink has received the
 * last accepted byte, so msg/s counts delivered messages, not messages
 * parked in a queue or a socket buffer. cpu_s is the whole process's user
 * and system time over the window (getrusage): producers, cport's loop
 * threads and the sink. The sink is counted in both modes alike, but its
 * cost per message is not alike: it reads whatever the kernel holds, many
 * messages per recv() from gathered writes, one when sends arrive one by
 * one. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "cport/cport.h"
#include "example_args.h"

#if defined(__linux__) && !defined(XSEND_USE_POLL)
#define XSEND_EPOLL 1
#include <sys/epoll.h>
#else
#define XSEND_EPOLL 0
#include <poll.h>
#endif

/* Where MSG_NOSIGNAL is missing SO_NOSIGPIPE and SIG_IGN do its job. */
#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif

#define NS_PER_S UINT64_C(1000000000)
#define NS_PER_MS UINT64_C(1000000)

#define MAX_THREADS 256L
#define MAX_SESSIONS 10000L
#define MAX_SIZE 65536L
#define MAX_MESSAGES 1000000000L
#define MAX_SECONDS 3600.0

#define HEADER_SIZE 16
#define MAGIC UINT32_C(0x78736e64) /* "xsnd" */
#define LISTEN_ID UINT32_MAX
#define RECV_BUF_SIZE (256 * 1024)
/* Reads per ready connection per wake-up, so that one busy connection
 * cannot starve the others (the poller is level-triggered). */
#define READS_PER_EVENT 4
#define EVENT_BATCH 256
#define SINK_TICK_MS 50
#define FD_SPARE 64

/* A producer checks the clock once every this many attempts. */
#define CLOCK_EVERY 16
#define MAX_NAP_US 999999L /* nanosleep's tv_nsec stays below 1 s */

#define SETUP_LIMIT_NS (10 * NS_PER_S)
#define MESSAGES_LIMIT_NS (60 * NS_PER_S)
#define DRAIN_LIMIT_NS (30 * NS_PER_S)
#define DRAIN_STALL_NS (2 * NS_PER_S)
#define DRAIN_TICK_NS (100 * NS_PER_MS)
#define SEND_TIMEOUT_S 10

typedef enum xsend_mode_e { MODE_CPORT, MODE_LECTURE } xsend_mode_t;

typedef struct opts_s {
  xsend_mode_t mode;
  long threads;
  long sessions;
  long ports;
  long size;
  double seconds;
  int seconds_set;
  long messages;    /* per producer; 0: run for `seconds` */
  long sendq_limit; /* 0: cport's default */
  long nap_us;      /* after a refused send; 0: none */
} opts_t;

/* ---- the sink ---- */

typedef struct sink_conn_s {
  int fd;
  int open;
  int corrupt;        /* a check failed: the rest is counted, not parsed */
  uint32_t fill;      /* bytes of a partial message in `partial` */
  uint8_t* partial;   /* `size` bytes */
  uint64_t* next_seq; /* per producer: lowest sequence number still valid */
} sink_conn_t;

typedef struct sink_s {
  uint32_t size;
  uint32_t nproducers;
  uint32_t nconns;
  int lfd;
  uint16_t port;
  sink_conn_t* conns;
  uint32_t accepted;
  uint8_t* rbuf;
#if XSEND_EPOLL
  int epfd;
  struct epoll_event events[EVENT_BATCH];
#else
  struct pollfd* fds; /* slot i is connection i; the last, the listener */
#endif
  /* Only the sink thread writes these; read after it has been joined. */
  uint64_t rx_bytes;
  uint64_t* msgs;    /* per producer */
  uint64_t* seq_sum; /* per producer */
  uint64_t bad;      /* messages that failed a check */
  uint64_t lost;     /* connections closed before the end */
  uint64_t extra;    /* connections past the expected count */
  /* Published by the sink for the waiting main thread. */
  atomic_uint_fast64_t rx_pub;
  atomic_uint_fast64_t target; /* UINT64_MAX until the producers are done */
  atomic_uint accepted_pub;
  atomic_int closing; /* the run is over: a closed connection is expected */
  atomic_int stop;
  uint64_t deadline_ns;
  uv_mutex_t lock;
  uv_cond_t cond;
  int reached;      /* under lock */
  uint64_t done_ns; /* under lock: when the last byte arrived */
  uv_thread_t thread;
} sink_t;

/* ---- the run ---- */

typedef struct lecture_conn_s {
  int fd;
  uv_mutex_t lock;
} lecture_conn_t;

struct bench_s;

typedef struct producer_s {
  struct bench_s* b;
  uint32_t id;
  uv_thread_t thread;
  uint8_t* msg;
  uint64_t sent; /* messages accepted */
  uint64_t retries;
  uint64_t errors;
  int first_error;
} producer_t;

typedef struct bench_s {
  const opts_t* o;
  uint32_t nsessions;
  uint32_t size;
  sink_t sink;
  producer_t* producers;
  /* The start gate: producers wait for `go`, so that they all start at
   * once, after the window has opened. */
  uv_mutex_t gate_lock;
  uv_cond_t gate_cond;
  int go;           /* under gate_lock */
  uint64_t stop_ns; /* written before `go` */
  int (*send_fn)(struct bench_s* b, uint32_t i, const uint8_t* msg, size_t len);
  /* lecture */
  lecture_conn_t* lconns;
  /* cport */
  cport_core_t* core;
  cport_service_t** svcs;     /* one per loop; NULL for a loop with none */
  cport_session_t** sessions; /* a reference each, taken in on_connected */
  uv_mutex_t lock;
  uv_cond_t cond;
  uint32_t connected;        /* under lock */
  uint32_t connect_failed;   /* under lock */
  atomic_int finishing;      /* disconnects from now on are the teardown's */
  atomic_uint_fast64_t lost; /* sessions disconnected during the run */
} bench_t;


static uint64_t now_ns(void) {
  return uv_hrtime();
}


static double cpu_seconds(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0)
    return 0;
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}


static int set_nonblocking(int fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0)
    return -1;
  return 0;
}


static int set_nodelay(int fd) {
  int one = 1;
  return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}


/* ---- sink: message checks ---- */

static void sink_check(sink_t* k, sink_conn_t* c, const uint8_t* m) {
  uint32_t magic;
  uint32_t producer;
  uint64_t seq;
  memcpy(&magic, m, 4);
  memcpy(&producer, m + 4, 4);
  memcpy(&seq, m + 8, 8);
  if (magic != MAGIC || producer >= k->nproducers ||
      seq < c->next_seq[producer] ||
      (k->size > HEADER_SIZE && m[k->size - 1] != (uint8_t)seq)) {
    if (k->bad == 0)
      fprintf(stderr,
              "xsend: sink: bad message on connection %u: magic %08" PRIx32
              " producer %" PRIu32 " seq %" PRIu64 "\n",
              (unsigned)(c - k->conns), magic, producer, seq);
    k->bad++;
    c->corrupt = 1;
    return;
  }
  c->next_seq[producer] = seq + 1;
  k->msgs[producer]++;
  k->seq_sum[producer] += seq;
}


static void sink_consume(sink_t* k,
                         sink_conn_t* c,
                         const uint8_t* p,
                         size_t n) {
  size_t size = k->size;
  if (c->corrupt)
    return;
  if (c->fill > 0) {
    size_t take = size - c->fill < n ? size - c->fill : n;
    memcpy(c->partial + c->fill, p, take);
    c->fill += (uint32_t)take;
    p += take;
    n -= take;
    if (c->fill < size)
      return;
    c->fill = 0;
    sink_check(k, c, c->partial);
  }
  while (n >= size && !c->corrupt) {
    sink_check(k, c, p);
    p += size;
    n -= size;
  }
  if (n > 0 && !c->corrupt) {
    memcpy(c->partial, p, n);
    c->fill = (uint32_t)n;
  }
}


/* ---- sink: poller ---- */

static int sink_watch(sink_t* k, int fd, uint32_t id) {
#if XSEND_EPOLL
  struct epoll_event ev;
  memset(&ev, 0, sizeof(ev));
  ev.events = EPOLLIN;
  ev.data.u32 = id;
  return epoll_ctl(k->epfd, EPOLL_CTL_ADD, fd, &ev);
#else
  uint32_t slot = id == LISTEN_ID ? k->nconns : id;
  k->fds[slot].fd = fd;
  k->fds[slot].events = POLLIN;
  return 0;
#endif
}


/* Called before close(); epoll drops a closed descriptor by itself. */
static void sink_forget(sink_t* k, uint32_t id) {
#if XSEND_EPOLL
  (void)k;
  (void)id;
#else
  k->fds[id].fd = -1;
#endif
}


static void sink_close_conn(sink_t* k, sink_conn_t* c, const char* why) {
  if (!atomic_load(&k->closing)) {
    if (k->lost == 0)
      fprintf(stderr, "xsend: sink: connection %u lost: %s\n",
              (unsigned)(c - k->conns), why);
    k->lost++;
  }
  sink_forget(k, (uint32_t)(c - k->conns));
  close(c->fd);
  c->fd = -1;
  c->open = 0;
}


static void sink_accept(sink_t* k) {
  for (;;) {
    sink_conn_t* c;
    int fd = accept(k->lfd, NULL, NULL);
    if (fd < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
          errno != ECONNABORTED) {
        fprintf(stderr, "xsend: sink: accept: %s\n", strerror(errno));
        k->lost++;
      }
      return;
    }
    if (k->accepted == k->nconns) {
      k->extra++;
      close(fd);
      continue;
    }
    c = &k->conns[k->accepted];
    if (set_nonblocking(fd) != 0 || sink_watch(k, fd, k->accepted) != 0) {
      fprintf(stderr, "xsend: sink: %s\n", strerror(errno));
      k->lost++;
      close(fd);
      continue;
    }
    c->fd = fd;
    c->open = 1;
    k->accepted++;
    atomic_store(&k->accepted_pub, k->accepted);
    if (k->accepted == k->nconns) {
      uv_mutex_lock(&k->lock);
      uv_cond_broadcast(&k->cond);
      uv_mutex_unlock(&k->lock);
    }
  }
}


static void sink_read(sink_t* k, sink_conn_t* c) {
  int i;
  for (i = 0; i < READS_PER_EVENT && c->open; i++) {
    ssize_t n = recv(c->fd, k->rbuf, RECV_BUF_SIZE, 0);
    if (n > 0) {
      k->rx_bytes += (uint64_t)n;
      sink_consume(k, c, k->rbuf, (size_t)n);
      if ((size_t)n < RECV_BUF_SIZE)
        break;
    } else if (n == 0) {
      sink_close_conn(k, c, "closed by the sender");
    } else if (errno == EINTR) {
      continue;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      break;
    } else {
      sink_close_conn(k, c, strerror(errno));
    }
  }
}


/* Tells the main thread once every accepted byte is in. The sequentially
 * consistent pair rx_pub/target makes sure that the sink or the main
 * thread (sink_wait_total) sees the other's store. */
static void sink_publish(sink_t* k) {
  atomic_store(&k->rx_pub, k->rx_bytes);
  if (k->rx_bytes >= atomic_load(&k->target)) {
    uv_mutex_lock(&k->lock);
    if (!k->reached) {
      k->reached = 1;
      k->done_ns = now_ns();
      uv_cond_broadcast(&k->cond);
    }
    uv_mutex_unlock(&k->lock);
  }
}


static void sink_wait_events(sink_t* k) {
#if XSEND_EPOLL
  int n = epoll_wait(k->epfd, k->events, EVENT_BATCH, SINK_TICK_MS);
  int i;
  if (n < 0) {
    if (errno != EINTR) {
      fprintf(stderr, "xsend: sink: epoll_wait: %s\n", strerror(errno));
      k->lost++;
      atomic_store(&k->stop, 1);
    }
    return;
  }
  for (i = 0; i < n; i++) {
    uint32_t id = k->events[i].data.u32;
    if (id == LISTEN_ID)
      sink_accept(k);
    else if (k->conns[id].open)
      sink_read(k, &k->conns[id]);
  }
#else
  nfds_t nfds = (nfds_t)k->nconns + 1;
  nfds_t i;
  int n = poll(k->fds, nfds, SINK_TICK_MS);
  if (n < 0) {
    if (errno != EINTR) {
      fprintf(stderr, "xsend: sink: poll: %s\n", strerror(errno));
      k->lost++;
      atomic_store(&k->stop, 1);
    }
    return;
  }
  for (i = 0; i < nfds && n > 0; i++) {
    if (k->fds[i].revents == 0)
      continue;
    n--;
    if (i == k->nconns)
      sink_accept(k);
    else if (k->conns[i].open)
      sink_read(k, &k->conns[i]);
  }
#endif
}


static void sink_thread(void* arg) {
  sink_t* k = arg;
  while (!atomic_load(&k->stop)) {
    if (now_ns() >= k->deadline_ns) {
      fprintf(stderr, "xsend: sink: hard time limit reached\n");
      k->lost++;
      break;
    }
    sink_wait_events(k);
    sink_publish(k);
  }
}


static int sink_open(sink_t* k,
                     uint32_t nconns,
                     uint32_t nproducers,
                     uint32_t size) {
  struct sockaddr_in a;
  socklen_t alen = sizeof(a);
  uint32_t i;
  k->size = size;
  k->nproducers = nproducers;
  k->nconns = nconns;
  k->lfd = -1;
#if XSEND_EPOLL
  k->epfd = -1;
#endif
  atomic_init(&k->rx_pub, 0);
  atomic_init(&k->target, UINT64_MAX);
  atomic_init(&k->accepted_pub, 0);
  atomic_init(&k->closing, 0);
  atomic_init(&k->stop, 0);
  if (uv_mutex_init(&k->lock) != 0 || uv_cond_init(&k->cond) != 0)
    return -1;
  k->conns = calloc(nconns, sizeof(*k->conns));
  k->rbuf = malloc(RECV_BUF_SIZE);
  k->msgs = calloc(nproducers, sizeof(*k->msgs));
  k->seq_sum = calloc(nproducers, sizeof(*k->seq_sum));
  if (k->conns == NULL || k->rbuf == NULL || k->msgs == NULL ||
      k->seq_sum == NULL)
    return -1;
  for (i = 0; i < nconns; i++) {
    k->conns[i].fd = -1;
    k->conns[i].partial = malloc(size);
    k->conns[i].next_seq = calloc(nproducers, sizeof(uint64_t));
    if (k->conns[i].partial == NULL || k->conns[i].next_seq == NULL)
      return -1;
  }
#if XSEND_EPOLL
  k->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (k->epfd < 0)
    return -1;
#else
  k->fds = calloc((size_t)nconns + 1, sizeof(*k->fds));
  if (k->fds == NULL)
    return -1;
  for (i = 0; i <= nconns; i++)
    k->fds[i].fd = -1; /* poll() skips negative descriptors */
#endif
  k->lfd = socket(AF_INET, SOCK_STREAM, 0);
  if (k->lfd < 0)
    return -1;
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  if (bind(k->lfd, (struct sockaddr*)&a, sizeof(a)) != 0 ||
      listen(k->lfd, SOMAXCONN) != 0 ||
      getsockname(k->lfd, (struct sockaddr*)&a, &alen) != 0 ||
      set_nonblocking(k->lfd) != 0 || sink_watch(k, k->lfd, LISTEN_ID) != 0)
    return -1;
  k->port = ntohs(a.sin_port);
  return 0;
}


static void sink_close(sink_t* k) {
  uint32_t i;
  if (k->conns != NULL) {
    for (i = 0; i < k->nconns; i++) {
      if (k->conns[i].fd >= 0)
        close(k->conns[i].fd);
      free(k->conns[i].partial);
      free(k->conns[i].next_seq);
    }
  }
  if (k->lfd >= 0)
    close(k->lfd);
#if XSEND_EPOLL
  if (k->epfd >= 0)
    close(k->epfd);
#else
  free(k->fds);
#endif
  free(k->conns);
  free(k->rbuf);
  free(k->msgs);
  free(k->seq_sum);
}


/* Waits until the sink has accepted every connection, or `deadline`. */
static int sink_wait_accepted(sink_t* k, uint64_t deadline) {
  int ok;
  uv_mutex_lock(&k->lock);
  for (;;) {
    uint64_t now;
    ok = atomic_load(&k->accepted_pub) == k->nconns;
    now = now_ns();
    if (ok || now >= deadline)
      break;
    (void)uv_cond_timedwait(&k->cond, &k->lock, deadline - now);
  }
  uv_mutex_unlock(&k->lock);
  return ok;
}


/* Sets the byte total the producers were promised and waits for the sink
 * to reach it: at most DRAIN_LIMIT_NS, and DRAIN_STALL_NS without a new
 * byte, so that a lost byte fails the run quickly. Returns 1 and the
 * arrival time of the last byte, or 0. */
static int sink_wait_total(sink_t* k, uint64_t total, uint64_t* done_ns) {
  uint64_t deadline = now_ns() + DRAIN_LIMIT_NS;
  uint64_t seen = UINT64_MAX;
  uint64_t seen_ns = 0;
  int ok;
  atomic_store(&k->target, total);
  uv_mutex_lock(&k->lock);
  if (!k->reached && atomic_load(&k->rx_pub) >= total) {
    k->reached = 1;
    k->done_ns = now_ns();
  }
  for (;;) {
    uint64_t now = now_ns();
    uint64_t rx = atomic_load(&k->rx_pub);
    uint64_t wait = deadline - now;
    if (rx != seen) {
      seen = rx;
      seen_ns = now;
    }
    if (k->reached || now >= deadline || now - seen_ns >= DRAIN_STALL_NS)
      break;
    if (wait > DRAIN_TICK_NS)
      wait = DRAIN_TICK_NS;
    (void)uv_cond_timedwait(&k->cond, &k->lock, wait);
  }
  ok = k->reached;
  *done_ns = k->done_ns;
  uv_mutex_unlock(&k->lock);
  return ok;
}


/* ---- producers ---- */

static void nap(long ns) {
  struct timespec ts;
  ts.tv_sec = 0;
  ts.tv_nsec = ns;
  (void)nanosleep(&ts, NULL);
}


static void producer_thread(void* arg) {
  producer_t* p = arg;
  bench_t* b = p->b;
  uint64_t limit = (uint64_t)b->o->messages;
  uint32_t n = b->nsessions;
  uint32_t i = (uint32_t)((uint64_t)p->id * n / b->o->threads);
  uint64_t attempts = 0;
  uv_mutex_lock(&b->gate_lock);
  while (!b->go) uv_cond_wait(&b->gate_cond, &b->gate_lock);
  uv_mutex_unlock(&b->gate_lock);
  for (;;) {
    int rc;
    if (limit != 0 && p->sent == limit)
      break;
    if (attempts++ % CLOCK_EVERY == 0 && now_ns() >= b->stop_ns) {
      if (limit != 0) {
        fprintf(stderr,
                "xsend: producer %" PRIu32 ": %" PRIu64 " of %" PRIu64
                " messages sent by the time limit\n",
                p->id, p->sent, limit);
        p->errors++;
      }
      break;
    }
    memcpy(p->msg + 8, &p->sent, 8);
    if (b->size > HEADER_SIZE)
      p->msg[b->size - 1] = (uint8_t)p->sent;
    rc = b->send_fn(b, i, p->msg, b->size);
    if (++i == n)
      i = 0;
    if (rc == 0) {
      p->sent++;
    } else if (rc == CPORT_ESENDQ) {
      p->retries++;
      if (b->o->nap_us > 0)
        nap(b->o->nap_us * 1000);
    } else {
      p->errors++;
      p->first_error = rc;
      break;
    }
  }
}


/* ---- lecture mode ---- */

static int lecture_send(bench_t* b,
                        uint32_t i,
                        const uint8_t* msg,
                        size_t len) {
  lecture_conn_t* c = &b->lconns[i];
  size_t off = 0;
  int rc = 0;
  uv_mutex_lock(&c->lock);
  while (off < len) {
    ssize_t n = send(c->fd, msg + off, len - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += (size_t)n;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      /* EAGAIN here is SO_SNDTIMEO: the sink stopped reading. */
      rc = n < 0 ? uv_translate_sys_error(errno) : UV_EOF;
      break;
    }
  }
  uv_mutex_unlock(&c->lock);
  return rc;
}


static int lecture_open(bench_t* b) {
  struct sockaddr_in a;
  struct timeval tv;
  uint32_t i;
  b->lconns = calloc(b->nsessions, sizeof(*b->lconns));
  if (b->lconns == NULL)
    return -1;
  for (i = 0; i < b->nsessions; i++) b->lconns[i].fd = -1;
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(b->sink.port);
  tv.tv_sec = SEND_TIMEOUT_S;
  tv.tv_usec = 0;
  for (i = 0; i < b->nsessions; i++) {
    lecture_conn_t* c = &b->lconns[i];
    if (uv_mutex_init(&c->lock) != 0)
      return -1;
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0 || set_nodelay(c->fd) != 0 ||
        setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0)
      return -1;
#ifdef SO_NOSIGPIPE
    {
      int one = 1;
      if (setsockopt(c->fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof(one)) != 0)
        return -1;
    }
#endif
    if (connect(c->fd, (struct sockaddr*)&a, sizeof(a)) != 0)
      return -1;
  }
  return 0;
}


static void lecture_close(bench_t* b) {
  uint32_t i;
  if (b->lconns == NULL)
    return;
  for (i = 0; i < b->nsessions; i++) {
    if (b->lconns[i].fd >= 0) {
      close(b->lconns[i].fd);
      uv_mutex_destroy(&b->lconns[i].lock);
    }
  }
  free(b->lconns);
}


/* ---- cport mode ---- */

static int cport_send(bench_t* b, uint32_t i, const uint8_t* msg, size_t len) {
  return cport_session_send(b->sessions[i], msg, len);
}


static void on_connected(cport_session_t* s) {
  bench_t* b = cport_service_get_data(cport_session_service(s));
  uv_mutex_lock(&b->lock);
  if (b->connected < b->nsessions) {
    cport_session_ref(s); /* for the producers, dropped in cport_close() */
    b->sessions[b->connected++] = s;
  }
  uv_cond_broadcast(&b->cond);
  uv_mutex_unlock(&b->lock);
}


static void on_disconnected(cport_session_t* s, int code, const char* cause) {
  bench_t* b = cport_service_get_data(cport_session_service(s));
  if (atomic_load(&b->finishing))
    return;
  if (atomic_fetch_add(&b->lost, 1) == 0)
    fprintf(stderr, "xsend: session %" PRIu64 " disconnected: %s (%s)\n",
            cport_session_id(s), cause, cport_strerror(code));
}


static void on_connect_failed(cport_service_t* svc, int code) {
  bench_t* b = cport_service_get_data(svc);
  uv_mutex_lock(&b->lock);
  if (b->connect_failed++ == 0)
    fprintf(stderr, "xsend: connect failed: %s\n", cport_strerror(code));
  uv_cond_broadcast(&b->cond);
  uv_mutex_unlock(&b->lock);
}


/* Creates and starts one client service per loop, then the loop threads,
 * and waits until every session is up (or has failed). */
static int cport_open(bench_t* b) {
  cport_core_opts_t co;
  cport_addr_t addr;
  uint32_t nports = (uint32_t)b->o->ports;
  uint64_t deadline;
  uint32_t p;
  int ok;
  int rc;
  b->svcs = calloc(nports, sizeof(*b->svcs));
  b->sessions = calloc(b->nsessions, sizeof(*b->sessions));
  if (b->svcs == NULL || b->sessions == NULL)
    return UV_ENOMEM;
  cport_core_opts_init(&co);
  co.loops = nports;
  rc = cport_core_create(&b->core, &co);
  if (rc == 0)
    rc = cport_addr_parse(&addr, "127.0.0.1", b->sink.port);
  /* Services are created and started while this thread still owns every
   * loop, that is before cport_core_run(). */
  for (p = 0; p < nports && rc == 0; p++) {
    cport_service_opts_t so;
    uint32_t count = b->nsessions / nports + (p < b->nsessions % nports);
    if (count == 0)
      continue;
    cport_service_opts_init(&so);
    so.cbs.on_connected = on_connected;
    so.cbs.on_disconnected = on_disconnected;
    so.cbs.on_connect_failed = on_connect_failed;
    so.connect_count = count;
    so.loop = p;
    so.data = b;
    if (b->o->sendq_limit != 0)
      so.send_queue_limit = (size_t)b->o->sendq_limit;
    rc = cport_service_create(&b->svcs[p], b->core, CPORT_SERVICE_CLIENT, &addr,
                              &so);
    if (rc == 0)
      rc = cport_service_start(b->svcs[p]);
  }
  if (rc == 0)
    rc = cport_core_run(b->core);
  if (rc != 0)
    return rc;
  deadline = now_ns() + SETUP_LIMIT_NS;
  uv_mutex_lock(&b->lock);
  for (;;) {
    uint64_t now = now_ns();
    if (b->connected + b->connect_failed >= b->nsessions || now >= deadline)
      break;
    (void)uv_cond_timedwait(&b->cond, &b->lock, deadline - now);
  }
  ok = b->connected == b->nsessions;
  uv_mutex_unlock(&b->lock);
  return ok ? 0 : UV_ETIMEDOUT;
}


typedef struct cport_totals_s {
  uint64_t sends;
  uint64_t writes;
} cport_totals_t;


/* Stops the loop threads, reads the counters (this thread owns the loops
 * again after the join) and tears everything down. */
static void cport_close(bench_t* b, cport_totals_t* t) {
  uint32_t p;
  uint32_t i;
  atomic_store(&b->finishing, 1);
  if (b->core != NULL) {
    cport_core_stop(b->core);
    cport_core_join(b->core);
  }
  for (p = 0; b->svcs != NULL && p < (uint32_t)b->o->ports; p++) {
    cport_service_stats_t st;
    if (b->svcs[p] == NULL)
      continue;
    if (t != NULL && cport_service_stats(b->svcs[p], &st) == 0) {
      t->sends += st.sends;
      t->writes += st.writes;
    }
    cport_service_destroy(b->svcs[p]);
  }
  for (i = 0; b->sessions != NULL && i < b->connected; i++)
    cport_session_unref(b->sessions[i]);
  cport_core_destroy(b->core);
  free(b->svcs);
  free(b->sessions);
}


/* ---- setup ---- */

static void usage(FILE* out) {
  fprintf(
      out,
      "usage: xsend --mode cport|lecture [--threads T] [--sessions S] "
      "[--loops P]\n"
      "             [--size BYTES] [--seconds D | --messages M] "
      "[--sendq-limit BYTES]\n"
      "             [--nap-us N]\n"
      "T producer threads send messages round-robin over S connections to a "
      "sink in\nthe same process that checks every byte. Prints one line:\n"
      "  mode= threads= sessions= loops= size= seconds= msgs= msg/s= cpu_s=\n"
      "  cpu_us_per_msg= writes= sends_per_write= retries= errors=\n"
      "  --mode cport     cport client sessions on P loops; sends from the "
      "producers\n"
      "                   are queued to the loops and gathered\n"
      "  --mode lecture   blocking sockets, a mutex and one send() per "
      "message\n"
      "  --threads T      producer threads, 1 to 256 (default 4)\n"
      "  --sessions S     connections, 1 to 10000 (default 64)\n"
      "  --loops P        cport mode: loops, 1 to 256 (default 2)\n"
      "  --size BYTES     message size, 16 to 65536 (default 64)\n"
      "  --seconds D      send for D seconds (default 3)\n"
      "  --messages M     send M messages per producer instead (at most 60 s)\n"
      "  --sendq-limit B  cport mode: send_queue_limit (default cport's)\n"
      "  --nap-us N       cport mode: sleep after a refused send (default "
      "100; 0: none)\n"
      "Exit status: 0 with no errors and at least one message, 1 otherwise, "
      "2 on\nbad arguments.\n");
}


static int bad_usage(const char* what, const char* value) {
  fprintf(stderr, "xsend: %s%s%s\n", what, value != NULL ? " " : "",
          value != NULL ? value : "");
  usage(stderr);
  return 2;
}


/* NaN fails the comparisons. */
static int parse_seconds(const char* text, double* out) {
  char* end = NULL;
  double v;
  if (text == NULL || ((*text < '0' || *text > '9') && *text != '.'))
    return -1;
  errno = 0;
  v = strtod(text, &end);
  if (errno != 0 || *end != '\0' || !(v > 0 && v <= MAX_SECONDS))
    return -1;
  *out = v;
  return 0;
}


/* Returns -1 to go on, or an exit status. */
static int parse_args(int argc, char** argv, opts_t* o) {
  int mode_set = 0;
  int i;
  memset(o, 0, sizeof(*o));
  o->threads = 4;
  o->sessions = 64;
  o->ports = 2;
  o->size = 64;
  o->seconds = 3;
  o->nap_us = 100;
  /* Every option takes a value, so options come in pairs. */
  for (i = 1; i < argc; i += 2) {
    const char* a = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : NULL;
    int bad;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout);
      return 0;
    }
    if (v == NULL)
      return bad_usage("option needs a value:", a);
    if (strcmp(a, "--mode") == 0) {
      bad = 0;
      mode_set = 1;
      if (strcmp(v, "cport") == 0)
        o->mode = MODE_CPORT;
      else if (strcmp(v, "lecture") == 0)
        o->mode = MODE_LECTURE;
      else
        bad = 1;
    } else if (strcmp(a, "--threads") == 0) {
      bad = example_parse_long(v, 1, MAX_THREADS, &o->threads);
    } else if (strcmp(a, "--sessions") == 0) {
      bad = example_parse_long(v, 1, MAX_SESSIONS, &o->sessions);
    } else if (strcmp(a, "--loops") == 0) {
      bad = example_parse_long(v, 1, CPORT_CORE_MAX_LOOPS, &o->ports);
    } else if (strcmp(a, "--size") == 0) {
      bad = example_parse_long(v, HEADER_SIZE, MAX_SIZE, &o->size);
    } else if (strcmp(a, "--seconds") == 0) {
      bad = parse_seconds(v, &o->seconds);
      o->seconds_set = 1;
    } else if (strcmp(a, "--messages") == 0) {
      bad = example_parse_long(v, 1, MAX_MESSAGES, &o->messages);
    } else if (strcmp(a, "--sendq-limit") == 0) {
      bad = example_parse_long(v, 1, LONG_MAX, &o->sendq_limit);
    } else if (strcmp(a, "--nap-us") == 0) {
      bad = example_parse_long(v, 0, MAX_NAP_US, &o->nap_us);
    } else {
      return bad_usage("unknown option", a);
    }
    if (bad) {
      fprintf(stderr, "xsend: bad value '%s' for %s\n", v, a);
      usage(stderr);
      return 2;
    }
  }
  if (!mode_set)
    return bad_usage("--mode is required", NULL);
  if (o->seconds_set && o->messages != 0)
    return bad_usage("give --seconds or --messages, not both", NULL);
  return -1;
}


/* Two descriptors per connection (ours and the sink's). */
static int raise_fd_limit(long sessions) {
  struct rlimit rl;
  rlim_t need = (rlim_t)sessions * 2 + FD_SPARE;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return -1;
  if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need)
    return 0;
  if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
    fprintf(stderr, "xsend: %ld sessions need %llu descriptors (ulimit -Hn)\n",
            sessions, (unsigned long long)need);
    return -1;
  }
  rl.rlim_cur = need;
  return setrlimit(RLIMIT_NOFILE, &rl);
}


/* Producer p's checks against what the sink counted; returns the number of
 * problems found. */
static uint64_t check_sink(const bench_t* b, uint64_t total_bytes) {
  const sink_t* k = &b->sink;
  uint64_t problems = 0;
  uint32_t p;
  if (k->rx_bytes != total_bytes) {
    fprintf(stderr,
            "xsend: sink received %" PRIu64 " bytes, %" PRIu64 " accepted\n",
            k->rx_bytes, total_bytes);
    problems++;
  }
  for (p = 0; p < (uint32_t)b->o->threads; p++) {
    uint64_t n = b->producers[p].sent;
    /* 0 + 1 + ... + (n - 1), halving whichever factor is even. */
    uint64_t sum = n % 2 == 0 ? n / 2 * (n == 0 ? 0 : n - 1) : (n - 1) / 2 * n;
    if (k->msgs[p] != n || k->seq_sum[p] != sum) {
      fprintf(stderr,
              "xsend: producer %" PRIu32 ": %" PRIu64
              " messages accepted, the sink counted %" PRIu64
              " (sequence sum %" PRIu64 ", expected %" PRIu64 ")\n",
              p, n, k->msgs[p], k->seq_sum[p], sum);
      problems++;
    }
  }
  if (k->bad != 0) {
    fprintf(stderr, "xsend: %" PRIu64 " bad messages\n", k->bad);
    problems += k->bad;
  }
  if (k->lost != 0) {
    fprintf(stderr, "xsend: sink lost %" PRIu64 " connections\n", k->lost);
    problems += k->lost;
  }
  if (k->extra != 0) {
    fprintf(stderr, "xsend: sink got %" PRIu64 " unexpected connections\n",
            k->extra);
    problems += k->extra;
  }
  return problems;
}


int main(int argc, char** argv) {
  static bench_t bench;
  bench_t* b = &bench;
  opts_t o;
  cport_totals_t totals = {0, 0};
  uint64_t t_start = 0;
  uint64_t t_end = 0;
  uint64_t msgs = 0;
  uint64_t retries = 0;
  uint64_t errors = 0;
  uint64_t writes;
  uint32_t started = 0;
  double cpu_start = 0;
  double cpu_end = 0;
  double secs;
  int sink_started = 0;
  int status = parse_args(argc, argv, &o);
  uint32_t i;
  int rc;

  if (status >= 0)
    return status;
  if (raise_fd_limit(o.sessions) != 0)
    return 2;
  signal(SIGPIPE, SIG_IGN);
  b->o = &o;
  b->nsessions = (uint32_t)o.sessions;
  b->size = (uint32_t)o.size;
  atomic_init(&b->finishing, 0);
  atomic_init(&b->lost, 0);
  if (uv_mutex_init(&b->lock) != 0 || uv_cond_init(&b->cond) != 0 ||
      uv_mutex_init(&b->gate_lock) != 0 || uv_cond_init(&b->gate_cond) != 0)
    return 1;
  status = 1;

  if (sink_open(&b->sink, b->nsessions, (uint32_t)o.threads, b->size) != 0) {
    fprintf(stderr, "xsend: sink setup: %s\n", strerror(errno));
    goto done;
  }
  b->sink.deadline_ns =
      now_ns() + SETUP_LIMIT_NS + DRAIN_LIMIT_NS +
      (o.messages != 0 ? MESSAGES_LIMIT_NS : (uint64_t)(o.seconds * 1e9)) +
      10 * NS_PER_S;
  if (uv_thread_create(&b->sink.thread, sink_thread, &b->sink) != 0) {
    fprintf(stderr, "xsend: cannot start the sink thread\n");
    goto done;
  }
  sink_started = 1;

  if (o.mode == MODE_CPORT)
    fprintf(stderr,
            "xsend: cport, %ld producer threads, %ld sessions on %ld loops, "
            "%ld bytes\n",
            o.threads, o.sessions, o.ports, o.size);
  else
    fprintf(stderr,
            "xsend: lecture, %ld producer threads, %ld sockets, %ld bytes\n",
            o.threads, o.sessions, o.size);
  if (o.mode == MODE_CPORT) {
    b->send_fn = cport_send;
    rc = cport_open(b);
    if (rc != 0) {
      fprintf(stderr, "xsend: cport setup: %s\n", cport_strerror(rc));
      goto done;
    }
  } else {
    b->send_fn = lecture_send;
    if (lecture_open(b) != 0) {
      fprintf(stderr, "xsend: lecture setup: %s\n", strerror(errno));
      goto done;
    }
  }
  if (!sink_wait_accepted(&b->sink, now_ns() + SETUP_LIMIT_NS)) {
    fprintf(stderr, "xsend: the sink accepted %u of %u connections\n",
            atomic_load(&b->sink.accepted_pub), b->nsessions);
    goto done;
  }

  b->producers = calloc((size_t)o.threads, sizeof(*b->producers));
  if (b->producers == NULL)
    goto done;
  for (i = 0; i < (uint32_t)o.threads; i++) {
    producer_t* p = &b->producers[i];
    uint32_t j;
    uint32_t magic = MAGIC;
    p->b = b;
    p->id = i;
    p->msg = malloc(b->size);
    if (p->msg == NULL)
      goto done;
    for (j = HEADER_SIZE; j < b->size; j++) p->msg[j] = (uint8_t)(j * 131u + i);
    memcpy(p->msg, &magic, 4);
    memcpy(p->msg + 4, &i, 4);
  }
  for (i = 0; i < (uint32_t)o.threads; i++) {
    if (uv_thread_create(&b->producers[i].thread, producer_thread,
                         &b->producers[i]) != 0)
      break;
    started++;
  }
  if (started < (uint32_t)o.threads) {
    /* A stop time in the past sends the ones started straight home. */
    fprintf(stderr, "xsend: cannot start the producer threads\n");
    b->stop_ns = 0;
    errors++;
  } else {
    cpu_start = cpu_seconds();
    t_start = now_ns();
    b->stop_ns = t_start + (o.messages != 0 ? MESSAGES_LIMIT_NS
                                            : (uint64_t)(o.seconds * 1e9));
  }
  uv_mutex_lock(&b->gate_lock);
  b->go = 1;
  uv_cond_broadcast(&b->gate_cond);
  uv_mutex_unlock(&b->gate_lock);
  for (i = 0; i < started; i++) {
    producer_t* p = &b->producers[i];
    uv_thread_join(&p->thread);
    msgs += p->sent;
    retries += p->retries;
    errors += p->errors;
    if (p->first_error != 0)
      fprintf(stderr, "xsend: producer %" PRIu32 " stopped: %s\n", i,
              cport_strerror(p->first_error));
  }
  if (started < (uint32_t)o.threads)
    goto done;

  if (!sink_wait_total(&b->sink, msgs * b->size, &t_end)) {
    fprintf(stderr, "xsend: the sink stopped short of the byte total\n");
    t_end = now_ns();
    errors++;
  }
  cpu_end = cpu_seconds();

  /* From here on a closed connection is the teardown's doing. */
  atomic_store(&b->sink.closing, 1);
  if (o.mode == MODE_CPORT) {
    errors += atomic_load(&b->lost);
    cport_close(b, &totals);
    b->core = NULL;
    writes = totals.writes;
    if (totals.sends != msgs) {
      fprintf(stderr,
              "xsend: cport counted %" PRIu64 " sends, producers %" PRIu64 "\n",
              totals.sends, msgs);
      errors++;
    }
  } else {
    lecture_close(b);
    b->lconns = NULL;
    writes = msgs;
  }
  atomic_store(&b->sink.stop, 1);
  uv_thread_join(&b->sink.thread);
  sink_started = 0;
  errors += check_sink(b, msgs * b->size);

  secs = t_end > t_start ? (double)(t_end - t_start) / 1e9 : 0;
  printf(
      "mode=%s threads=%ld sessions=%ld loops=%ld size=%ld seconds=%.2f"
      " msgs=%" PRIu64
      " msg/s=%.0f cpu_s=%.3f cpu_us_per_msg=%.3f"
      " writes=%" PRIu64 " sends_per_write=%.2f retries=%" PRIu64
      " errors=%" PRIu64 "\n",
      o.mode == MODE_CPORT ? "cport" : "lecture", o.threads, o.sessions,
      o.mode == MODE_CPORT ? o.ports : 0L, o.size, secs, msgs,
      secs > 0 ? (double)msgs / secs : 0.0, cpu_end - cpu_start,
      msgs > 0 ? (cpu_end - cpu_start) * 1e6 / (double)msgs : 0.0, writes,
      writes > 0 ? (double)msgs / (double)writes : 0.0, retries, errors);
  fflush(stdout);
  status = errors == 0 && msgs > 0 ? 0 : 1;

done:
  if (o.mode == MODE_CPORT && b->core != NULL)
    cport_close(b, NULL);
  lecture_close(b);
  if (sink_started) {
    atomic_store(&b->sink.closing, 1);
    atomic_store(&b->sink.stop, 1);
    uv_thread_join(&b->sink.thread);
  }
  sink_close(&b->sink);
  if (b->producers != NULL)
    for (i = 0; i < (uint32_t)o.threads; i++) free(b->producers[i].msg);
  free(b->producers);
  return status;
}
