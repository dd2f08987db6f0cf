/* The listener (the lecture's Listener with AcceptEx): binds, listens and
 * turns each accepted connection into a session of its service, or closes
 * it at once when the service is at max_sessions. */
#include <string.h>

#include "listener_internal.h"
#include "session_internal.h"

struct cport__listener_s {
  uv_tcp_t tcp;
  /* Rejecting a connection means accepting it into a handle and closing
   * that. libuv stops polling a listening socket while an accepted
   * connection waits for uv_accept, so a rejection must never depend on a
   * successful allocation: this spare handle serves when malloc fails. */
  uv_tcp_t spare;
  int spare_busy;
  uint64_t* pending_reject; /* a rejection waiting for the spare, or NULL */
  int open_handles;         /* tcp, plus spare while it closes */
  cport_service_t* svc;     /* NULL once detached from a failed start */
  int closing;
};

static void listener_reject(cport__listener_t* l, uint64_t* counter);


static void listener_handle_closed(cport__listener_t* l) {
  cport_service_t* svc = l->svc;
  if (--l->open_handles > 0)
    return;
  cport__free(l);
  if (svc != NULL) {
    svc->listener = NULL;
    cport__service_check_done(svc);
  }
}


static void listener_close_cb(uv_handle_t* handle) {
  listener_handle_closed(handle->data);
}


static void spare_close_cb(uv_handle_t* handle) {
  cport__listener_t* l = handle->data;
  uint64_t* pending = l->pending_reject;
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
static void listener_reject(cport__listener_t* l, uint64_t* counter) {
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
    (*counter)++;
  else
    l->svc->stats.accept_errors++;
  uv_close((uv_handle_t*)tmp, close_cb);
}


static void listener_connection_cb(uv_stream_t* server, int status) {
  cport__listener_t* l = server->data;
  cport_service_t* svc = l->svc;
  cport_session_t* s;
  int rc;
  if (status < 0) {
    svc->stats.accept_errors++;
    return;
  }
  if (cport__service_is_full(svc)) {
    listener_reject(l, &svc->stats.rejected);
    return;
  }
  s = cport__session_new(svc);
  if (s == NULL) {
    /* Out of memory: refuse this one rather than leave it in the backlog. */
    listener_reject(l, &svc->stats.accept_errors);
    return;
  }
  rc = uv_accept(server, (uv_stream_t*)cport__session_tcp(s));
  if (rc != 0) {
    svc->stats.accept_errors++;
    cport__session_close(s, rc, NULL, CPORT__CLOSE_FORCE);
    return;
  }
  cport__session_start(s);
}


int cport__listener_start(cport_service_t* svc) {
  cport__listener_t* l;
  int rc;
  l = cport__calloc(1, sizeof(*l));
  if (l == NULL)
    return UV_ENOMEM;
  rc = uv_tcp_init(svc->port->loop, &l->tcp);
  if (rc != 0) {
    cport__free(l);
    return rc;
  }
  l->tcp.data = l;
  l->svc = svc;
  l->open_handles = 1;
  /* On Unix a bind error such as EADDRINUSE may only show at listen(); both
   * come back to the caller. */
  rc = uv_tcp_bind(&l->tcp, cport_addr_sockaddr(&svc->addr), 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t*)&l->tcp, svc->opts.backlog,
                   listener_connection_cb);
  if (rc != 0) {
    /* Detached: its close callback must not touch a service that may be
     * started again or destroyed before the callback runs. */
    l->svc = NULL;
    l->closing = 1;
    uv_close((uv_handle_t*)&l->tcp, listener_close_cb);
    return rc;
  }
  svc->listener = l;
  return 0;
}


void cport__listener_close(cport__listener_t* l) {
  if (l == NULL || l->closing)
    return;
  l->closing = 1;
  uv_close((uv_handle_t*)&l->tcp, listener_close_cb);
}


int cport__listener_addr(const cport__listener_t* l, cport_addr_t* out) {
  struct sockaddr_storage ss;
  int len = (int)sizeof(ss);
  int rc = uv_tcp_getsockname(&l->tcp, (struct sockaddr*)&ss, &len);
  if (rc != 0)
    return rc;
  return cport_addr_from_sockaddr(out, (struct sockaddr*)&ss);
}
