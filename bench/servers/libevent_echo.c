/* bench_libevent: a libevent 2.1 echo server built on bufferevents, as a
 * reference point for the cport benchmark.
 *
 *   bench_libevent [--host ADDR] [--port N] [--threads N]
 *
 * Design notes: an evconnlistener accepts; each connection is a socket
 * bufferevent whose read callback moves the input chains onto the output
 * buffer (evbuffer_add_buffer relinks them, nothing is copied). An idle
 * connection holds no buffer, because empty evbuffers own no chains.
 * Reading is disabled while a megabyte is queued to the peer; a write
 * callback, installed only for that pause so that ordinary writes pay no
 * callback, enables it again when the output drains to half a megabyte
 * (the write low watermark). These are the thresholds cport uses.
 * libevent_tls_echo.c builds this file again with BENCH_TLS: each socket
 * is then wrapped in an OpenSSL bufferevent, and nothing else changes. */
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#ifdef BENCH_TLS
#include <event2/bufferevent_ssl.h>
#include <openssl/ssl.h>
#endif

#include "server_common.h"

#ifndef PROG
#define PROG "bench_libevent"
#endif
#define PAUSE_BYTES (1024 * 1024)
#define RESUME_BYTES (PAUSE_BYTES / 2)
#define IO_CHUNK (64 * 1024)

/* Static so that what they own stays reachable for leak checkers at exit. */
static struct event_base* base;
#ifdef BENCH_TLS
static SSL_CTX* tls_ctx;
#endif


static void event_cb(struct bufferevent* bev, short what, void* arg) {
  /* Only EOF and errors get here: no timeouts are set. Over TLS, also the
   * completed handshake, as BEV_EVENT_CONNECTED, which ends nothing. */
  (void)arg;
  if (what & BEV_EVENT_CONNECTED)
    return;
  bufferevent_free(bev);
}


static void read_cb(struct bufferevent* bev, void* arg);


static void resume_cb(struct bufferevent* bev, void* arg) {
  (void)arg;
  bufferevent_setcb(bev, read_cb, NULL, event_cb, NULL);
  if (bufferevent_enable(bev, EV_READ) != 0)
    bufferevent_free(bev);
}


static void read_cb(struct bufferevent* bev, void* arg) {
  struct evbuffer* out = bufferevent_get_output(bev);
  (void)arg;
  if (evbuffer_add_buffer(out, bufferevent_get_input(bev)) != 0) {
    bufferevent_free(bev);
    return;
  }
  if (evbuffer_get_length(out) >= PAUSE_BYTES) {
    bufferevent_disable(bev, EV_READ);
    bufferevent_setcb(bev, read_cb, resume_cb, event_cb, NULL);
  }
}


/* A bufferevent that owns `fd` (and over TLS an SSL in the accepting
 * state); NULL, with `fd` closed, when there is none. */
static struct bufferevent* new_bufferevent(evutil_socket_t fd) {
  struct bufferevent* bev;
#ifdef BENCH_TLS
  SSL* ssl = SSL_new(tls_ctx);
  if (ssl == NULL) {
    evutil_closesocket(fd);
    return NULL;
  }
  bev = bufferevent_openssl_socket_new(base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                       BEV_OPT_CLOSE_ON_FREE);
  if (bev == NULL) {
    SSL_free(ssl);
    evutil_closesocket(fd);
    return NULL;
  }
  /* A peer that closes without close_notify just ends its connection. */
  bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
#else
  bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
  if (bev == NULL)
    evutil_closesocket(fd);
#endif
  return bev;
}


static void accept_cb(struct evconnlistener* listener,
                      evutil_socket_t fd,
                      struct sockaddr* sa,
                      int socklen,
                      void* arg) {
  struct bufferevent* bev;
  int one = 1;
  (void)listener;
  (void)sa;
  (void)socklen;
  (void)arg;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  bev = new_bufferevent(fd);
  if (bev == NULL)
    return;
  /* Bufferevents move at most 16 KiB per write and per read by default.
   * Raising both to 64 KiB matches the other servers' buffer; it takes
   * effect on writes, but in 2.1 every read stays capped at 4 KiB by
   * EVBUFFER_MAX_READ in buffer.c, which only 2.2 lets this call lift. */
  bufferevent_set_max_single_read(bev, IO_CHUNK);
  bufferevent_set_max_single_write(bev, IO_CHUNK);
  bufferevent_setwatermark(bev, EV_WRITE, RESUME_BYTES, 0);
  bufferevent_setcb(bev, read_cb, NULL, event_cb, NULL);
  if (bufferevent_enable(bev, EV_READ) != 0)
    bufferevent_free(bev);
}


static void signal_cb(evutil_socket_t signum, short what, void* arg) {
  (void)signum;
  (void)what;
  (void)arg;
  event_base_loopbreak(base);
}


int main(int argc, char** argv) {
  struct addrinfo* ai = server_parse_args(PROG, argc, argv);
  struct evconnlistener* listener;
  struct event* sigint;
  struct event* sigterm;
  struct sockaddr_storage bound;
  socklen_t len = sizeof(bound);

  /* A peer that resets while a write is in flight must not kill us. */
  signal(SIGPIPE, SIG_IGN);
#ifdef BENCH_TLS
  tls_ctx = server_tls_context(PROG);
  if (tls_ctx == NULL) {
    freeaddrinfo(ai);
    return 1;
  }
#endif
  base = event_base_new();
  if (base == NULL) {
    fprintf(stderr, PROG ": cannot create an event base\n");
    freeaddrinfo(ai);
    return 1;
  }
  listener = evconnlistener_new_bind(base, accept_cb, NULL,
                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE,
                                     511, ai->ai_addr, (int)ai->ai_addrlen);
  if (listener == NULL) {
    /* Read the error first: formatting may touch errno. */
    const char* why = evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR());
    char text[SERVER_ADDR_STRLEN];
    server_format_addr(ai->ai_addr, text, sizeof(text));
    fprintf(stderr, PROG ": cannot listen on %s: %s\n", text, why);
    freeaddrinfo(ai);
    return 1;
  }
  freeaddrinfo(ai);

  sigint = evsignal_new(base, SIGINT, signal_cb, NULL);
  sigterm = evsignal_new(base, SIGTERM, signal_cb, NULL);
  if (sigint == NULL || sigterm == NULL || event_add(sigint, NULL) != 0 ||
      event_add(sigterm, NULL) != 0) {
    fprintf(stderr, PROG ": cannot watch signals\n");
    return 1;
  }

  getsockname(evconnlistener_get_fd(listener), (struct sockaddr*)&bound, &len);
  server_announce((struct sockaddr*)&bound);

  /* A stop leaves connections open: the process exits right after, and
   * the kernel closes them faster than a graceful walk would. */
  event_base_dispatch(base);
  return 0;
}
