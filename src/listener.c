/* The listener (the lecture's Listener with AcceptEx): binds, listens and
 * turns each accepted connection into a session of its service, or closes
 * it at once when the service is at max_sessions.
 *
 * Two ways to accept. A service on one port listens with libuv (uv_listen,
 * uv_accept): nothing is faster or more portable. A spreading server
 * (service_internal.h) must put each connection on another loop, and libuv
 * cannot accept into a handle of another loop. Accepting with libuv and
 * re-opening the socket elsewhere would work on Unix, but on Windows
 * uv_accept has already tied the socket to the listener's completion port
 * (a socket gets one, for life), and the worker loop would fall back to
 * libuv's slow emulated IOCP. So a spreading listener owns a plain
 * listening socket, watches it with uv_poll_t, accepts with accept(), and
 * hands the raw socket to the chosen port, whose uv_tcp_open is the first
 * to tie it to a loop: the same code on epoll, kqueue and IOCP. The
 * service decides which port takes each one (cport__service_hand_off:
 * in turn, the listener's own port included). */
#include <stdlib.h>
#include <string.h>

#include "listener_internal.h"
#include "log_internal.h"
#include "session_internal.h"

struct cport__listener_s {
  uv_tcp_t tcp;
  /* Rejecting a connection means accepting it into a handle and closing
   * that. libuv stops polling a listening socket while an accepted
   * connection waits for uv_accept, so a rejection must never depend on a
   * successful allocation: this spare handle serves when malloc fails. */
  uv_tcp_t spare;
  int spare_busy;
  /* A rejection waiting for the spare (its counter), or NULL. */
  atomic_uint_least64_t* pending_reject;
  int open_handles;     /* tcp, plus spare while it closes */
  cport_service_t* svc; /* NULL once detached from a failed start */
  int closing;
  /* Spreading: the socket, its watcher, and the pause after running out
   * of descriptors. */
  int spread;
  uv_os_sock_t sock;
  uv_poll_t poll;
  uv_timer_t backoff;
  /* Accept failures are logged at most once a second (EMFILE comes in
   * floods); the ones in between are counted into the next line. */
  uint64_t warned_ms;
  unsigned unlogged;
};

/* Connections accepted per readiness before other handles get a turn. */
#define LISTENER_ACCEPT_BATCH 64
/* Pause after accept failed for want of descriptors or memory: the socket
 * stays readable then, and polling it again at once would spin. */
#define LISTENER_BACKOFF_MS 100

static void listener_reject(cport__listener_t* l,
                            atomic_uint_least64_t* counter);


/* An accept failed: warn, at most once a second. */
static void listener_warn(cport__listener_t* l, int rc, int pausing) {
  char then[48] = "";
  uint64_t now = uv_hrtime() / 1000000u;
  char addr[CPORT_ADDR_STRLEN] = "?";
  if (!cport__log_enabled(CPORT_LOG_WARN))
    return;
  if (l->warned_ms != 0 && now - l->warned_ms < 1000) {
    l->unlogged++;
    return;
  }
  {
    cport_addr_t bound;
    if (cport__listener_addr(l, &bound) == 0)
      (void)cport_addr_format(&bound, addr, sizeof(addr));
  }
  if (pausing)
    snprintf(then, sizeof(then), "; pausing accepts for %d ms",
             LISTENER_BACKOFF_MS);
  if (l->unlogged > 0)
    cport__log(CPORT_LOG_WARN,
               "listener %s: accept failed: %s%s (%u more since the last "
               "report)",
               addr, cport_strerror(rc), then, l->unlogged);
  else
    cport__log(CPORT_LOG_WARN, "listener %s: accept failed: %s%s", addr,
               cport_strerror(rc), then);
  l->warned_ms = now;
  l->unlogged = 0;
}


static void listener_handle_closed(cport__listener_t* l) {
  cport_service_t* svc = l->svc;
  if (--l->open_handles > 0)
    return;
  /* The watcher is closed: the socket may go. */
  if (l->spread)
    cport__socket_close(l->sock);
  cport__free(l);
  if (svc != NULL)
    cport__service_listener_closed(svc);
}


static void listener_close_cb(uv_handle_t* handle) {
  listener_handle_closed(handle->data);
}


static void spare_close_cb(uv_handle_t* handle) {
  cport__listener_t* l = handle->data;
  atomic_uint_least64_t* pending = l->pending_reject;
  l->spare_busy = 0;
  l->pending_reject = NULL;
  if (pending != NULL && !l->closing)
    listener_reject(l, pending);
  listener_handle_closed(l);
}


static void reject_close_cb(uv_handle_t* handle) {
  cport__free(handle);
}


/* Accept and close at once, so that the peer sees the refusal now instead of
 * waiting in the backlog, and the backlog keeps room for later peers. */
static void listener_reject(cport__listener_t* l,
                            atomic_uint_least64_t* counter) {
  uv_tcp_t* tmp;
  uv_close_cb close_cb = reject_close_cb;
  if (!l->spare_busy) {
    tmp = &l->spare;
    l->spare_busy = 1;
    l->open_handles++;
    close_cb = spare_close_cb;
  } else {
    tmp = cport__malloc(sizeof(*tmp));
    if (tmp == NULL) {
      /* Retried from the spare's close callback, in this loop round. */
      l->pending_reject = counter;
      return;
    }
  }
  /* uv_tcp_init creates no socket for AF_UNSPEC and cannot fail here. */
  (void)uv_tcp_init(l->tcp.loop, tmp);
  tmp->data = l;
  if (uv_accept((uv_stream_t*)&l->tcp, (uv_stream_t*)tmp) == 0)
    atomic_store_explicit(
        counter, atomic_load_explicit(counter, memory_order_relaxed) + 1,
        memory_order_relaxed);
  else
    CPORT__SVC_STAT_ADD(l->svc, accept_errors, 1);
  uv_close((uv_handle_t*)tmp, close_cb);
}


static void listener_connection_cb(uv_stream_t* server, int status) {
  cport__listener_t* l = server->data;
  cport_service_t* svc = l->svc;
  cport_session_t* s;
  int rc;
  if (status < 0) {
    /* libuv has already dropped what it could not accept (EMFILE). */
    CPORT__SVC_STAT_ADD(svc, accept_errors, 1);
    listener_warn(l, status, 0);
    return;
  }
  if (cport__service_is_full(svc)) {
    listener_reject(l, &cport__service_view(svc)->stats.rejected);
    return;
  }
  s = cport__session_new(svc);
  if (s == NULL) {
    /* Out of memory: refuse this one rather than leave it in the backlog. */
    listener_reject(l, &cport__service_view(svc)->stats.accept_errors);
    return;
  }
  rc = uv_accept(server, (uv_stream_t*)cport__session_tcp(s));
  if (rc != 0) {
    CPORT__SVC_STAT_ADD(svc, accept_errors, 1);
    cport__session_close(s, rc, NULL, CPORT__CLOSE_FORCE);
    return;
  }
  cport__session_start(s);
}


/* ---- spreading: accept() on a plain socket, hand it to a port ---- */

static void listener_poll_cb(uv_poll_t* handle, int status, int events);

static void listener_backoff_cb(uv_timer_t* timer) {
  cport__listener_t* l = timer->data;
  if (!l->closing)
    (void)uv_poll_start(&l->poll, UV_READABLE, listener_poll_cb);
}


static void listener_poll_cb(uv_poll_t* handle, int status, int events) {
  cport__listener_t* l = handle->data;
  cport_service_t* root = l->svc;
  int i;
  (void)events;
  if (status < 0) {
    /* libuv has stopped watching the socket; try again after a pause. */
    CPORT__SVC_STAT_ADD(root, accept_errors, 1);
    listener_warn(l, status, 1);
    uv_poll_stop(&l->poll);
    uv_timer_start(&l->backoff, listener_backoff_cb, LISTENER_BACKOFF_MS, 0);
    return;
  }
  for (i = 0; i < LISTENER_ACCEPT_BATCH; i++) {
    uv_os_sock_t sock;
    int rc = cport__socket_accept(l->sock, &sock);
    if (rc == UV_EAGAIN)
      return;
    if (rc != 0) {
      int pause = rc == UV_EMFILE || rc == UV_ENFILE || rc == UV_ENOBUFS ||
                  rc == UV_ENOMEM;
      CPORT__SVC_STAT_ADD(root, accept_errors, 1);
      listener_warn(l, rc, pause);
      if (pause) {
        uv_poll_stop(&l->poll);
        uv_timer_start(&l->backoff, listener_backoff_cb, LISTENER_BACKOFF_MS,
                       0);
      }
      return;
    }
    if (cport__service_is_full(root)) {
      /* Closed at once: the peer learns now, the backlog keeps room. */
      cport__socket_close(sock);
      CPORT__SVC_STAT_ADD(root, rejected, 1);
      continue;
    }
    cport__service_hand_off(root, sock);
  }
}


static int listener_start_spread(cport__listener_t* l) {
  cport_service_t* svc = l->svc;
  const cport__service_view_t* v = cport__service_view(svc);
  int rc = cport__socket_listen(cport_addr_sockaddr(cport__service_addr(svc)),
                                v->opts.backlog, &l->sock);
  if (rc != 0)
    return rc;
  rc = uv_poll_init_socket(v->port->loop, &l->poll, l->sock);
  if (rc != 0) {
    cport__socket_close(l->sock);
    return rc;
  }
  l->spread = 1;
  l->poll.data = l;
  l->open_handles = 1;
  (void)uv_timer_init(v->port->loop, &l->backoff); /* cannot fail */
  l->backoff.data = l;
  l->open_handles = 2;
  rc = uv_poll_start(&l->poll, UV_READABLE, listener_poll_cb);
  if (rc != 0) {
    l->svc = NULL;
    l->closing = 1;
    uv_close((uv_handle_t*)&l->poll, listener_close_cb);
    uv_close((uv_handle_t*)&l->backoff, listener_close_cb);
  }
  return rc;
}


int cport__listener_start(cport_service_t* svc, cport__listener_t** out) {
  const cport__service_view_t* v = cport__service_view(svc);
  cport__listener_t* l;
  int rc;
  l = cport__calloc(1, sizeof(*l));
  if (l == NULL)
    return UV_ENOMEM;
  l->svc = svc;
  if (cport__service_spreads(svc)) {
    rc = listener_start_spread(l);
    if (rc != 0) {
      if (!l->closing)
        cport__free(l); /* nothing was opened */
      return rc;
    }
    *out = l;
    return 0;
  }
  rc = uv_tcp_init(v->port->loop, &l->tcp);
  if (rc != 0) {
    cport__free(l);
    return rc;
  }
  l->tcp.data = l;
  l->open_handles = 1;
  /* On Unix a bind error such as EADDRINUSE may only show at listen(); both
   * come back to the caller. */
  rc = uv_tcp_bind(&l->tcp, cport_addr_sockaddr(cport__service_addr(svc)), 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t*)&l->tcp, v->opts.backlog,
                   listener_connection_cb);
  if (rc != 0) {
    /* Detached: its close callback must not touch a service that may be
     * started again or destroyed before the callback runs. */
    l->svc = NULL;
    l->closing = 1;
    uv_close((uv_handle_t*)&l->tcp, listener_close_cb);
    return rc;
  }
  *out = l;
  return 0;
}


void cport__listener_close(cport__listener_t* l) {
  if (l == NULL || l->closing)
    return;
  l->closing = 1;
  if (l->spread) {
    uv_close((uv_handle_t*)&l->poll, listener_close_cb);
    uv_close((uv_handle_t*)&l->backoff, listener_close_cb);
    return;
  }
  uv_close((uv_handle_t*)&l->tcp, listener_close_cb);
}


int cport__listener_addr(const cport__listener_t* l, cport_addr_t* out) {
  struct sockaddr_storage ss;
  int len = (int)sizeof(ss);
  int rc = l->spread ? cport__socket_name(l->sock, &ss)
                     : uv_tcp_getsockname(&l->tcp, (struct sockaddr*)&ss, &len);
  if (rc != 0)
    return rc;
  return cport_addr_from_sockaddr(out, (struct sockaddr*)&ss);
}
