/* tcp_peer: a misbehaving TCP client for tests/examples_test.sh, written on
 * plain libuv so that it shares no code with cport.
 *
 *   tcp_peer halfclose PORT BYTES  send BYTES, shut down the write side,
 *                                  read until EOF; exit 0 if exactly the
 *                                  bytes sent came back
 *   tcp_peer noread PORT SECONDS   send as fast as possible for SECONDS
 *                                  without ever reading; exit 0
 *   tcp_peer pingpong PORT SECONDS CONNS
 *                                  keep CONNS connections going for
 *                                  SECONDS: each sends PINGPONG_MESSAGES
 *                                  numbered messages, one at a time, checks
 *                                  each echo, closes, and a new one takes
 *                                  its place; then prints one "pingpong:"
 *                                  line of counts and exits 1 if any
 *                                  connect was refused, any connection
 *                                  reset, any message lost, duplicated or
 *                                  out of order (a restart under load,
 *                                  tests/proxy_peers_test.sh); SIGINT
 *                                  ends the run before SECONDS
 *   tcp_peer deaf PORT SECONDS     listen on [::1]:PORT and never accept:
 *                                  two connections of its own fill the
 *                                  queue, so that a further connect gets
 *                                  no answer at all (a broken IPv6 route,
 *                                  tests/resolve_test.sh); prints
 *                                  "deaf: ready" then, exits 0 after
 *                                  SECONDS
 *
 * Always connects to 127.0.0.1. Exits 3 on any network error, 2 on bad
 * arguments, and after at most 60 s in any case. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#if defined(__linux__)
#include <netinet/in.h>
#include <netinet/tcp.h> /* TCP_INFO */
#include <sys/socket.h>
#endif

typedef struct peer_s {
  uv_loop_t* loop;
  uv_tcp_t tcp;
  uv_connect_t connect;
  uv_write_t write;
  uv_shutdown_t shutdown;
  uv_timer_t timer;
  int noread;
  size_t bytes;
  unsigned char* out;
  size_t got;
  int mismatch;
  int eof;
  int error;
} peer_t;

static peer_t peer;


static void pattern(unsigned char* buf, size_t len) {
  size_t i;
  for (i = 0; i < len; i++) buf[i] = (unsigned char)(i * 7 + i / 251);
}


static void stop_all(void) {
  uv_close((uv_handle_t*)&peer.tcp, NULL);
  uv_close((uv_handle_t*)&peer.timer, NULL);
}


static void on_alloc(uv_handle_t* h, size_t size, uv_buf_t* buf) {
  static char chunk[65536];
  (void)h;
  (void)size;
  buf->base = chunk;
  buf->len = sizeof(chunk);
}


static void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  (void)s;
  if (n == UV_EOF) {
    peer.eof = 1;
    stop_all();
  } else if (n < 0) {
    peer.error = (int)n;
    stop_all();
  } else if (n > 0) {
    if (peer.got + (size_t)n > peer.bytes ||
        memcmp(buf->base, peer.out + peer.got, (size_t)n) != 0)
      peer.mismatch = 1;
    peer.got += (size_t)n;
  }
}


static void on_shutdown(uv_shutdown_t* req, int status) {
  (void)req;
  if (status != 0) {
    peer.error = status;
    stop_all();
  }
}


static void write_more(void);


static void on_write(uv_write_t* req, int status) {
  (void)req;
  if (status != 0) {
    if (!uv_is_closing((uv_handle_t*)&peer.tcp)) {
      peer.error = status;
      stop_all();
    }
    return;
  }
  if (peer.noread)
    write_more();
  else
    uv_shutdown(&peer.shutdown, (uv_stream_t*)&peer.tcp, on_shutdown);
}


static void write_more(void) {
  uv_buf_t buf = uv_buf_init((char*)peer.out, (unsigned int)peer.bytes);
  if (uv_write(&peer.write, (uv_stream_t*)&peer.tcp, &buf, 1, on_write) != 0) {
    peer.error = UV_EPIPE;
    stop_all();
  }
}


static void on_connect(uv_connect_t* req, int status) {
  (void)req;
  if (status != 0) {
    peer.error = status;
    stop_all();
    return;
  }
  if (!peer.noread)
    uv_read_start((uv_stream_t*)&peer.tcp, on_alloc, on_read);
  write_more();
}


static void on_timer(uv_timer_t* t) {
  (void)t;
  if (!peer.noread)
    peer.error = UV_ETIMEDOUT;
  stop_all();
}


/* ---- pingpong ---- */

#define PINGPONG_MESSAGES 10
#define PINGPONG_MAX_CONNS 64
#define PINGPONG_LEN 16 /* "0000001:0000001\n" */

typedef struct slot_s {
  uv_tcp_t tcp;
  uv_connect_t connect;
  uv_write_t write;
  char sent[PINGPONG_LEN + 1];
  char got[PINGPONG_LEN];
  size_t have;      /* bytes of the current echo received */
  unsigned serial;  /* the connection's number */
  unsigned message; /* the message in flight, 1..PINGPONG_MESSAGES */
  int open;         /* tcp initialised and not yet closed */
} slot_t;

static struct {
  struct sockaddr_in addr;
  uv_timer_t run_timer;  /* SECONDS: no new connections after it */
  uv_timer_t hard_timer; /* SECONDS + 20: give up */
  uv_signal_t sigint;    /* ends the run early, as SECONDS would */
  slot_t slots[PINGPONG_MAX_CONNS];
  unsigned conns;
  unsigned open;
  unsigned next_serial;
  int running;
  unsigned long connections, messages, refused, resets, lost, duplicated;
} pp;

static void pp_start(slot_t* sl);


static void pp_slot_closed(uv_handle_t* h) {
  slot_t* sl = h->data;
  sl->open = 0;
  pp.open--;
  if (pp.running) {
    pp_start(sl);
  } else if (pp.open == 0) {
    uv_close((uv_handle_t*)&pp.run_timer, NULL);
    uv_close((uv_handle_t*)&pp.hard_timer, NULL);
    uv_close((uv_handle_t*)&pp.sigint, NULL);
  }
}


/* End the slot's connection; `lost` messages did not come back. */
static void pp_end(slot_t* sl, unsigned lost) {
  pp.lost += lost;
  if (!uv_is_closing((uv_handle_t*)&sl->tcp))
    uv_close((uv_handle_t*)&sl->tcp, pp_slot_closed);
}


static void pp_on_write(uv_write_t* req, int status) {
  slot_t* sl = req->data;
  if (status != 0 && !uv_is_closing((uv_handle_t*)&sl->tcp)) {
    fprintf(stderr, "tcp_peer: connection %u: write: %s\n", sl->serial,
            uv_err_name(status));
    pp.resets++;
    pp_end(sl, 1);
  }
}


static void pp_send(slot_t* sl) {
  uv_buf_t buf;
  snprintf(sl->sent, sizeof(sl->sent), "%07u:%07u\n", sl->serial % 10000000,
           sl->message);
  sl->have = 0;
  buf = uv_buf_init(sl->sent, PINGPONG_LEN);
  sl->write.data = sl;
  if (uv_write(&sl->write, (uv_stream_t*)&sl->tcp, &buf, 1, pp_on_write) != 0) {
    pp.resets++;
    pp_end(sl, 1);
  }
}


static void pp_on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  slot_t* sl = s->data;
  size_t i;
  if (n < 0) {
    /* EOF or an error before the last echo: the message in flight is
     * lost; an error is a reset too. */
    fprintf(stderr, "tcp_peer: connection %u: %s after %u of %d echoes\n",
            sl->serial, uv_err_name((int)n), sl->message - 1,
            PINGPONG_MESSAGES);
    if (n != UV_EOF)
      pp.resets++;
    pp_end(sl, 1);
    return;
  }
  for (i = 0; i < (size_t)n; i++) {
    if (sl->have == PINGPONG_LEN || sl->message > PINGPONG_MESSAGES) {
      /* More than was sent: a duplicate. */
      pp.duplicated++;
      pp_end(sl, 0);
      return;
    }
    sl->got[sl->have++] = buf->base[i];
  }
  if (sl->have < PINGPONG_LEN)
    return;
  if (memcmp(sl->got, sl->sent, PINGPONG_LEN) != 0) {
    fprintf(stderr, "tcp_peer: connection %u: sent %.15s, got %.15s\n",
            sl->serial, sl->sent, sl->got);
    pp.duplicated++;
    pp_end(sl, 0);
    return;
  }
  pp.messages++;
  if (sl->message == PINGPONG_MESSAGES) {
    pp.connections++;
    pp_end(sl, 0);
    return;
  }
  sl->message++;
  pp_send(sl);
}


static void pp_on_connect(uv_connect_t* req, int status) {
  slot_t* sl = req->data;
  if (status != 0) {
    fprintf(stderr, "tcp_peer: connection %u: connect: %s\n", sl->serial,
            uv_err_name(status));
    pp.refused++;
    pp_end(sl, 0);
    return;
  }
  uv_read_start((uv_stream_t*)&sl->tcp, on_alloc, pp_on_read);
  pp_send(sl);
}


static void pp_start(slot_t* sl) {
  uv_tcp_init(peer.loop, &sl->tcp);
  sl->tcp.data = sl;
  sl->open = 1;
  pp.open++;
  sl->serial = ++pp.next_serial;
  sl->message = 1;
  sl->connect.data = sl;
  if (uv_tcp_connect(&sl->connect, &sl->tcp, (const struct sockaddr*)&pp.addr,
                     pp_on_connect) != 0) {
    pp.refused++;
    pp_end(sl, 0);
  }
}


static void pp_on_run_timer(uv_timer_t* t) {
  (void)t;
  pp.running = 0; /* the connections open finish their messages */
  uv_signal_stop(&pp.sigint);
}


static void pp_on_sigint(uv_signal_t* h, int signum) {
  (void)h;
  (void)signum;
  pp.running = 0;
}


static void pp_on_hard_timer(uv_timer_t* t) {
  unsigned i;
  (void)t;
  fprintf(stderr, "tcp_peer: %u connections still open 20 s after the end\n",
          pp.open);
  for (i = 0; i < pp.conns; i++)
    if (pp.slots[i].open)
      pp_end(&pp.slots[i], 1);
}


static int pingpong(long port, long seconds, long conns) {
  unsigned i;
  if (conns <= 0 || conns > PINGPONG_MAX_CONNS)
    return 2;
  if (uv_ip4_addr("127.0.0.1", (int)port, &pp.addr) != 0)
    return 2;
  peer.loop = uv_default_loop();
  pp.conns = (unsigned)conns;
  pp.running = 1;
  uv_timer_init(peer.loop, &pp.run_timer);
  uv_timer_init(peer.loop, &pp.hard_timer);
  uv_timer_start(&pp.run_timer, pp_on_run_timer, (uint64_t)seconds * 1000, 0);
  uv_timer_start(&pp.hard_timer, pp_on_hard_timer,
                 (uint64_t)seconds * 1000 + 20000, 0);
  uv_signal_init(peer.loop, &pp.sigint);
  uv_signal_start(&pp.sigint, pp_on_sigint, SIGINT);
  for (i = 0; i < pp.conns; i++) pp_start(&pp.slots[i]);
  uv_run(peer.loop, UV_RUN_DEFAULT);
  printf(
      "pingpong: connections=%lu messages=%lu refused=%lu resets=%lu "
      "lost=%lu duplicated=%lu\n",
      pp.connections, pp.messages, pp.refused, pp.resets, pp.lost,
      pp.duplicated);
  return pp.connections > 0 && pp.refused == 0 && pp.resets == 0 &&
                 pp.lost == 0 && pp.duplicated == 0
             ? 0
             : 1;
}


/* ---- deaf: an address whose connects get no answer ---- */

typedef struct deaf_s {
  uv_tcp_t listener;
  uv_tcp_t fillers[2];
  uv_connect_t reqs[2];
  uv_timer_t timer;
  int connected;
} deaf_t;

static deaf_t deaf;

static void deaf_on_connect(uv_connect_t* req, int status);

static void deaf_connect(int i) {
  struct sockaddr_storage ss;
  int len = (int)sizeof(ss);
  uv_tcp_getsockname(&deaf.listener, (struct sockaddr*)&ss, &len);
  uv_tcp_init(uv_default_loop(), &deaf.fillers[i]);
  uv_tcp_connect(&deaf.reqs[i], &deaf.fillers[i], (const struct sockaddr*)&ss,
                 deaf_on_connect);
}

/* Never accepted: libuv holds the first connection (and stops accepting),
 * then the second fills the kernel's queue. One at a time, so that the
 * second does not meet the queue while the first still waits in it. */
static void deaf_on_connection(uv_stream_t* server, int status) {
  (void)server;
  if (status == 0)
    deaf_connect(1);
}

/* Non-zero once the kernel holds the second connection in the queue: its
 * connect completes at the SYN-ACK, a moment before the server side
 * queues it, and a connect in that moment would still be answered. */
static int deaf_queue_full(void) {
#if defined(__linux__)
  struct tcp_info info;
  socklen_t len = sizeof(info);
  uv_os_fd_t fd;
  if (uv_fileno((uv_handle_t*)&deaf.listener, &fd) != 0 ||
      getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0)
    return 1;
  return info.tcpi_unacked >= 1; /* a listener's: its accept queue */
#else
  return 1;
#endif
}

static void deaf_on_poll(uv_timer_t* timer) {
  if (!deaf_queue_full())
    return;
  uv_timer_stop(timer);
  printf("deaf: ready\n");
  fflush(stdout);
}

static uv_timer_t deaf_poll;

static void deaf_on_connect(uv_connect_t* req, int status) {
  (void)req;
  if (status == 0 && ++deaf.connected == 2) {
    uv_timer_init(uv_default_loop(), &deaf_poll);
    uv_timer_start(&deaf_poll, deaf_on_poll, 0, 5);
  }
}

static void deaf_on_timer(uv_timer_t* timer) {
  (void)timer;
  uv_stop(uv_default_loop());
}

static int deaf_main(long port, long seconds) {
  struct sockaddr_in6 addr;
  uv_loop_t* loop = uv_default_loop();
  if (uv_ip6_addr("::1", (int)port, &addr) != 0)
    return 2;
  uv_tcp_init(loop, &deaf.listener);
  if (uv_tcp_bind(&deaf.listener, (const struct sockaddr*)&addr, 0) != 0 ||
      uv_listen((uv_stream_t*)&deaf.listener, 0, deaf_on_connection) != 0) {
    fprintf(stderr, "tcp_peer: cannot listen on [::1]:%ld\n", port);
    return 3;
  }
  deaf_connect(0);
  uv_timer_init(loop, &deaf.timer);
  uv_timer_start(&deaf.timer, deaf_on_timer, (uint64_t)seconds * 1000, 0);
  uv_run(loop, UV_RUN_DEFAULT);
  return deaf.connected == 2 ? 0 : 3;
}


int main(int argc, char** argv) {
  struct sockaddr_in addr;
  long port;
  long amount;
  if (argc == 5 && strcmp(argv[1], "pingpong") == 0) {
    port = strtol(argv[2], NULL, 10);
    amount = strtol(argv[3], NULL, 10);
    if (port <= 0 || port > 65535 || amount <= 0 || amount > 30)
      return 2;
    return pingpong(port, amount, strtol(argv[4], NULL, 10));
  }
  if (argc != 4)
    return 2;
  port = strtol(argv[2], NULL, 10);
  amount = strtol(argv[3], NULL, 10);
  if (port <= 0 || port > 65535 || amount <= 0)
    return 2;
  if (strcmp(argv[1], "deaf") == 0)
    return amount > 60 ? 2 : deaf_main(port, amount);
  if (strcmp(argv[1], "noread") == 0) {
    peer.noread = 1;
    peer.bytes = 65536;
  } else if (strcmp(argv[1], "halfclose") == 0) {
    peer.bytes = (size_t)amount;
  } else {
    return 2;
  }
  peer.out = malloc(peer.bytes);
  if (peer.out == NULL)
    return 3;
  pattern(peer.out, peer.bytes);
  if (uv_ip4_addr("127.0.0.1", (int)port, &addr) != 0)
    return 2;
  peer.loop = uv_default_loop();
  uv_tcp_init(peer.loop, &peer.tcp);
  uv_timer_init(peer.loop, &peer.timer);
  uv_timer_start(&peer.timer, on_timer,
                 peer.noread ? (uint64_t)amount * 1000 : 60000, 0);
  uv_tcp_connect(&peer.connect, &peer.tcp, (const struct sockaddr*)&addr,
                 on_connect);
  uv_run(peer.loop, UV_RUN_DEFAULT);
  free(peer.out);
  if (peer.error != 0) {
    fprintf(stderr, "tcp_peer: %s\n", uv_strerror(peer.error));
    return 3;
  }
  if (!peer.noread && (!peer.eof || peer.mismatch || peer.got != peer.bytes)) {
    fprintf(stderr, "tcp_peer: got %zu of %zu bytes back%s\n", peer.got,
            peer.bytes, peer.mismatch ? ", not equal" : "");
    return 1;
  }
  return 0;
}
