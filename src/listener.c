/* The listener: binds, listens and
 * turns each accepted connection into a session of its service, or closes
 * it at once when the service is at max_sessions.
 *
 * One way to accept, for every server. libuv cannot accept into a handle
 * of another loop, and a spreading server (service_internal.h) puts each
 * connection on another loop. Accepting with libuv and re-opening the
 * socket elsewhere would work on Unix, but on Windows uv_accept has
 * already tied the socket to the listener's completion port (a socket gets
 * one, for life), and the worker loop would fall back to libuv's slow
 * emulated IOCP. So the listener owns a plain listening socket, watches it
 * with uv_poll_t, accepts with accept(), and hands the raw socket to the
 * service, whose uv_tcp_open on the chosen loop is the first to tie it to
 * a loop: the same code on epoll, kqueue and IOCP. The service decides
 * which loop takes each one (cport__service_hand_off: in turn, the
 * listener's own loop included; a server that does not spread has only
 * that one).
 *
 * libuv's own uv_listen would do for a server on one loop, but it cannot
 * pause: out of descriptors it closes a reserve descriptor to accept and
 * drop the waiting connections, and once another thread of the process
 * has taken that descriptor in between, it retries accept() inside one
 * callback for as long as descriptors stay short, starving the loop. This
 * listener pauses instead (LISTENER_BACKOFF_MS).
 *
 * The same plain socket is what makes inherited sockets easy: one that
 * systemd or a parent process made and listens on already is adopted as
 * it is (opts.listen_fd), and SO_REUSEPORT is one more option before the
 * bind. A Unix domain socket is one more kind of plain socket
 * (cport__socket_listen_local), and its sessions adopt theirs with
 * uv_pipe_open.
 *
 * Windows named pipes are not sockets: there the listener is libuv's
 * uv_pipe_t server, and each client is accepted into a session on the
 * listener's own loop (cport__service_accept). */
#include <stdio.h>
#include <string.h>

#include "listener_internal.h"
#include "log_internal.h"

struct cport__listener_s {
  cport_service_t* svc; /* NULL once detached from a failed start */
  uv_os_sock_t sock;
  uv_poll_t poll;
  /* The pause after running out of descriptors or memory. */
  uv_timer_t backoff;
  int open_handles; /* poll and backoff until their close callbacks */
  int closing;
  int keep_sock; /* an inherited socket whose start failed: the caller's */
  /* A Unix domain socket's file, removed when the listener closes if it
   * is still the one made (NULL: TCP, an abstract name). */
  char* path;
  cport__file_id_t file;
#ifdef _WIN32
  uv_pipe_t pipe; /* a named pipe server: instead of `sock` and `poll` */
  int is_pipe;
#endif
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


/* An accept failed: warn, at most once a second. */
static void listener_warn(cport__listener_t* l, int rc, int pausing) {
  char then[48] = "";
  uint64_t now = cport__clock_ms();
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


/* The listening socket goes (unless it is the caller's), and a Unix
 * socket's file with it (if it is still the one made); then `l`. */
static void listener_free(cport__listener_t* l) {
#ifdef _WIN32
  if (!l->keep_sock && !l->is_pipe)
    cport__socket_close(l->sock);
#else
  if (!l->keep_sock)
    cport__socket_close(l->sock);
  if (l->path != NULL)
    cport__socket_unlink_local(l->path, &l->file);
#endif
  cport__free(l->path);
  cport__free(l);
}


static void listener_handle_closed(cport__listener_t* l) {
  cport_service_t* svc = l->svc;
  if (--l->open_handles > 0)
    return;
  /* The watcher is closed: the socket may go. */
  listener_free(l);
  if (svc != NULL)
    cport__service_listener_closed(svc);
}


static void listener_close_cb(uv_handle_t* handle) {
  listener_handle_closed(handle->data);
}


static void listener_poll_cb(uv_poll_t* handle, int status, int events);

static void listener_backoff_cb(uv_timer_t* timer) {
  cport__listener_t* l = timer->data;
  if (!l->closing)
    (void)uv_poll_start(&l->poll, UV_READABLE, listener_poll_cb);
}


static void listener_pause(cport__listener_t* l) {
  uv_poll_stop(&l->poll);
  uv_timer_start(&l->backoff, listener_backoff_cb, LISTENER_BACKOFF_MS, 0);
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
    listener_pause(l);
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
      if (pause)
        listener_pause(l);
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


#ifdef _WIN32
static void listener_pipe_cb(uv_stream_t* server, int status) {
  cport__listener_t* l = server->data;
  cport_service_t* root = l->svc;
  if (status < 0) {
    CPORT__SVC_STAT_ADD(root, accept_errors, 1);
    listener_warn(l, status, 0);
    return;
  }
  /* Accepted either way, a full service's to be closed at once: a pipe
   * instance left unaccepted would stay with libuv. */
  if (cport__service_is_full(root)) {
    CPORT__SVC_STAT_ADD(root, rejected, 1);
    cport__service_accept(root, server, 1);
    return;
  }
  cport__service_accept(root, server, 0);
}


/* A named pipe server on the service's loop. */
static int listener_start_pipe(cport__listener_t* l,
                               const cport__service_view_t* v,
                               const char* name) {
  int rc = uv_pipe_init(v->lp->loop, &l->pipe, 0);
  if (rc != 0)
    return rc;
  l->is_pipe = 1;
  l->pipe.data = l;
  (void)uv_timer_init(v->lp->loop, &l->backoff); /* cannot fail */
  l->backoff.data = l;
  l->open_handles = 2;
  rc = uv_pipe_bind(&l->pipe, name);
  if (rc == 0)
    rc = uv_listen((uv_stream_t*)&l->pipe, v->opts.backlog, listener_pipe_cb);
  return rc;
}
#endif


int cport__listener_start(cport_service_t* svc, cport__listener_t** out) {
  const cport__service_view_t* v = cport__service_view(svc);
  const char* path = cport_addr_path(cport__service_addr(svc));
  cport__listener_t* l;
  int rc;
  l = cport__calloc(1, sizeof(*l));
  if (l == NULL)
    return UV_ENOMEM;
  l->svc = svc;
#ifdef _WIN32
  if (path != NULL) {
    rc = listener_start_pipe(l, v, path);
    if (rc != 0) {
      if (!l->is_pipe) {
        cport__free(l);
        return rc;
      }
      l->svc = NULL; /* detached, as below */
      cport__listener_close(l);
      return rc;
    }
    *out = l;
    return 0;
  }
#endif
  /* On Unix a bind error such as EADDRINUSE may only show at listen(); both
   * come back to the caller. An inherited socket is bound and listening
   * already (its backlog is its maker's). A Unix socket's path is kept,
   * to remove its file on stop. */
#ifndef _WIN32
  if (path != NULL) {
    l->path = cport__strndup(path, strlen(path));
    rc = l->path == NULL ? UV_ENOMEM
                         : cport__socket_listen_local(path, v->opts.backlog,
                                                      v->opts.unix_mode,
                                                      &l->sock, &l->file);
  }
#endif
  if (path == NULL)
    rc = v->opts.listen_fd != -1
             ? cport__socket_adopt(v->opts.listen_fd, &l->sock)
             : cport__socket_listen(
                   cport_addr_sockaddr(cport__service_addr(svc)),
                   v->opts.backlog,
                   (v->opts.reuse_port ? CPORT__LISTEN_REUSEPORT : 0u) |
                       (v->opts.ipv6_only ? CPORT__LISTEN_V6ONLY : 0u),
                   &l->sock);
  if (rc != 0) {
    cport__free(l->path);
    cport__free(l);
    return rc;
  }
  /* Until the start has succeeded an inherited socket stays the
   * caller's, who may try again. */
  l->keep_sock = v->opts.listen_fd != -1;
  rc = uv_poll_init_socket(v->lp->loop, &l->poll, l->sock);
  if (rc != 0) {
    listener_free(l);
    return rc;
  }
  l->poll.data = l;
  (void)uv_timer_init(v->lp->loop, &l->backoff); /* cannot fail */
  l->backoff.data = l;
  l->open_handles = 2;
  rc = uv_poll_start(&l->poll, UV_READABLE, listener_poll_cb);
  if (rc != 0) {
    /* Detached: its close callbacks must not touch a service that may be
     * started again or destroyed before they run. */
    l->svc = NULL;
    cport__listener_close(l);
    return rc;
  }
  l->keep_sock = 0;
  *out = l;
  return 0;
}


int cport_listen_fds(int unset_env) {
  return cport__platform_listen_fds(unset_env);
}


void cport__listener_close(cport__listener_t* l) {
  if (l == NULL || l->closing)
    return;
  l->closing = 1;
#ifdef _WIN32
  if (l->is_pipe) {
    uv_close((uv_handle_t*)&l->pipe, listener_close_cb);
    uv_close((uv_handle_t*)&l->backoff, listener_close_cb);
    return;
  }
#endif
  uv_close((uv_handle_t*)&l->poll, listener_close_cb);
  uv_close((uv_handle_t*)&l->backoff, listener_close_cb);
}


int cport__listener_addr(const cport__listener_t* l, cport_addr_t* out) {
  struct sockaddr_storage ss;
  int rc;
  const cport_addr_t* addr =
      l->svc != NULL ? cport__service_addr(l->svc) : NULL;
  if (addr != NULL && cport_addr_path(addr) != NULL) {
    *out = *addr;
    return 0;
  }
  rc = cport__socket_name(l->sock, &ss);
  if (rc != 0)
    return rc;
  return cport_addr_from_sockaddr(out, (struct sockaddr*)&ss);
}
