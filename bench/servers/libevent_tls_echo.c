/* bench_libevent_tls: a libevent 2.1 TLS echo server on OpenSSL
 * bufferevents, as a reference point for cport's TLS benchmark.
 *
 *   bench_libevent_tls --tls-cert FILE --tls-key FILE [--host ADDR]
 *                      [--port N] [--threads N]
 *
 * Design notes: libevent_echo.c with each accepted socket wrapped by
 * bufferevent_openssl_socket_new() in the accepting state; the read
 * callback moves the plaintext input onto the output buffer, which the
 * bufferevent encrypts, and the same pause at a megabyte queued and resume
 * at half of it apply. TLS 1.3 only with TLS_AES_128_GCM_SHA256 and
 * otherwise OpenSSL's defaults (server_tls_context() in server_common.h).
 * A peer may close without close_notify ("dirty shutdown"): that, EOF and
 * errors all just free the bufferevent, which frees the SSL and closes the
 * socket (BEV_OPT_CLOSE_ON_FREE). */
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/ssl.h>

#include "server_common.h"

#define PROG "bench_libevent_tls"
#define PAUSE_BYTES (1024 * 1024)
#define RESUME_BYTES (PAUSE_BYTES / 2)
#define IO_CHUNK (64 * 1024)

/* Static so that what they own stays reachable for leak checkers at exit. */
static struct event_base* base;
static SSL_CTX* tls_ctx;


static void event_cb(struct bufferevent* bev, short what, void* arg) {
  /* Besides EOF and errors (no timeouts are set), the completed handshake
   * comes here as BEV_EVENT_CONNECTED, which ends nothing. */
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


static void accept_cb(struct evconnlistener* listener,
                      evutil_socket_t fd,
                      struct sockaddr* sa,
                      int socklen,
                      void* arg) {
  struct bufferevent* bev;
  SSL* ssl;
  int one = 1;
  (void)listener;
  (void)sa;
  (void)socklen;
  (void)arg;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  ssl = SSL_new(tls_ctx);
  if (ssl == NULL) {
    evutil_closesocket(fd);
    return;
  }
  bev = bufferevent_openssl_socket_new(base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                       BEV_OPT_CLOSE_ON_FREE);
  if (bev == NULL) {
    SSL_free(ssl);
    evutil_closesocket(fd);
    return;
  }
  bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
  /* As in libevent_echo.c: 64 KiB per write; reads stay capped at 4 KiB by
   * libevent 2.1 (EVBUFFER_MAX_READ). */
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
  tls_ctx = server_tls_context(PROG);
  if (tls_ctx == NULL) {
    freeaddrinfo(ai);
    return 1;
  }
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
