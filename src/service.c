/* Services (the lecture's Service, ServerService, ClientService): the set of
 * sessions that share callbacks, limits and a listener or a target address.
 *
 * Design notes: stopping and destroying are asynchronous because libuv
 * closes handles asynchronously. A stop closes the listener and starts a
 * graceful disconnect of every session; the service's one timer bounds how
 * long flushing may take. Every close callback (sessions, listener) calls
 * cport__service_check_done(), which reports on_stopped once nothing is
 * open, and frees the service once a destroy is pending and its timer is
 * closed too. */
#include <string.h>

#include "listener_internal.h"
#include "session_internal.h"


void cport_service_opts_init(cport_service_opts_t* opts) {
  if (opts == NULL)
    return;
  memset(opts, 0, sizeof(*opts));
  opts->max_sessions = 10000;
  opts->connect_count = 1;
  opts->recv_buffer_limit = 256 * 1024;
  opts->send_queue_limit = 1024 * 1024;
  opts->send_queue_policy = CPORT_SENDQ_PAUSE_READ;
  opts->backlog = 511;
  opts->tcp_nodelay = 1;
}


static void service_timer_close_cb(uv_handle_t* handle) {
  cport_service_t* svc = handle->data;
  svc->timer_closed = 1;
  cport__service_check_done(svc);
}


int cport_service_create(cport_service_t** out,
                         cport_core_t* core,
                         cport_service_kind_t kind,
                         const cport_addr_t* addr,
                         const cport_service_opts_t* opts) {
  cport_service_t* svc;
  cport__port_t* port;
  int rc;
  if (out == NULL || core == NULL || addr == NULL || opts == NULL)
    return UV_EINVAL;
  if (kind != CPORT_SERVICE_SERVER && kind != CPORT_SERVICE_CLIENT)
    return UV_EINVAL;
  if (cport_addr_sockaddr(addr) == NULL)
    return UV_EINVAL;
  if (opts->recv_buffer_limit == 0 || opts->send_queue_limit == 0 ||
      opts->backlog <= 0)
    return UV_EINVAL;
  if (opts->send_queue_policy != CPORT_SENDQ_PAUSE_READ &&
      opts->send_queue_policy != CPORT_SENDQ_DISCONNECT)
    return UV_EINVAL;
  if (kind == CPORT_SERVICE_CLIENT && opts->connect_count == 0)
    return UV_EINVAL;
  port = cport__core_port(core, opts->port);
  if (port == NULL)
    return UV_EINVAL;
  svc = cport__calloc(1, sizeof(*svc));
  if (svc == NULL)
    return UV_ENOMEM;
  rc = uv_timer_init(port->loop, &svc->timer);
  if (rc != 0) {
    cport__free(svc);
    return rc;
  }
  svc->timer.data = svc;
  svc->core = core;
  svc->port = port;
  svc->kind = kind;
  svc->addr = *addr;
  svc->opts = *opts;
  svc->data = opts->data;
  atomic_init(&svc->holds, 1);
  *out = svc;
  return 0;
}


int cport_service_start(cport_service_t* svc) {
  int rc;
  if (svc == NULL || svc->started || svc->stopping)
    return UV_EINVAL;
  CPORT__ASSERT_ON_PORT(svc->port);
  if (svc->kind == CPORT_SERVICE_SERVER) {
    rc = cport__listener_start(svc);
    if (rc != 0)
      return rc;
    svc->started = 1;
    return 0;
  }
  svc->started = 1;
  return cport_service_connect(svc, svc->opts.connect_count);
}


int cport_service_connect(cport_service_t* svc, unsigned n) {
  unsigned i;
  int rc;
  if (svc == NULL || n == 0 || svc->kind != CPORT_SERVICE_CLIENT ||
      !svc->started || svc->stopping)
    return UV_EINVAL;
  CPORT__ASSERT_ON_PORT(svc->port);
  for (i = 0; i < n; i++) {
    cport_session_t* s = cport__session_new(svc);
    if (s == NULL) {
      svc->stats.connect_failed++;
      return UV_ENOMEM;
    }
    rc = cport__session_connect(s);
    if (rc != 0) {
      svc->stats.connect_failed++;
      return rc;
    }
  }
  return 0;
}


int cport__service_is_full(const cport_service_t* svc) {
  /* Sessions still closing hold a socket too, so they count. */
  return svc->opts.max_sessions != 0 &&
         svc->nsessions >= svc->opts.max_sessions;
}


static void service_close_sessions(cport_service_t* svc,
                                   int code,
                                   cport__close_mode_t mode) {
  cport_session_t* s = svc->head;
  while (s != NULL) {
    /* Closing never unlinks synchronously (only the close callback does),
     * so the next pointer stays valid. */
    cport_session_t* next = cport__session_next(s);
    cport__session_close(s, code, NULL, mode);
    s = next;
  }
}


static void service_deadline_cb(uv_timer_t* timer) {
  cport_service_t* svc = timer->data;
  /* Sessions still flushing to a peer that does not read are cut off. */
  service_close_sessions(svc, CPORT_ESTOPPED, CPORT__CLOSE_FORCE);
  cport__service_check_done(svc);
}


int cport_service_stop(cport_service_t* svc,
                       int deadline_ms,
                       void (*on_stopped)(cport_service_t* svc)) {
  if (svc == NULL || deadline_ms < 0)
    return UV_EINVAL;
  if (svc->stopping || svc->destroy_pending)
    return UV_EALREADY;
  CPORT__ASSERT_ON_PORT(svc->port);
  svc->stopping = 1;
  svc->on_stopped = on_stopped;
  cport__listener_close(svc->listener);
  service_close_sessions(svc, CPORT_ESTOPPED, CPORT__CLOSE_GRACEFUL);
  /* With nothing open, the timer's first tick reports on_stopped, so the
   * callback never runs inside this call. */
  uv_timer_start(&svc->timer, service_deadline_cb,
                 (svc->nsessions == 0 && svc->listener == NULL)
                     ? 0
                     : (uint64_t)deadline_ms,
                 0);
  return 0;
}


static int service_is_idle(const cport_service_t* svc) {
  return svc->nsessions == 0 && svc->listener == NULL;
}


void cport__service_check_done(cport_service_t* svc) {
  if (!service_is_idle(svc))
    return;
  if (svc->stopping && !svc->stopped_reported && !svc->destroy_pending) {
    svc->stopped_reported = 1;
    if (!svc->timer_closed)
      uv_timer_stop(&svc->timer);
    if (svc->on_stopped != NULL)
      svc->on_stopped(svc); /* may call cport_service_destroy() */
    return;
  }
  if (svc->destroy_pending && svc->timer_closed && !svc->released) {
    svc->released = 1;
    cport__service_release(svc);
  }
}


void cport__service_hold(cport_service_t* svc) {
  atomic_fetch_add_explicit(&svc->holds, 1, memory_order_relaxed);
}


void cport__service_release(cport_service_t* svc) {
  if (atomic_fetch_sub_explicit(&svc->holds, 1, memory_order_acq_rel) == 1)
    cport__free(svc);
}


void cport_service_destroy(cport_service_t* svc) {
  if (svc == NULL || svc->destroy_pending)
    return;
  CPORT__ASSERT_ON_PORT(svc->port);
  svc->destroy_pending = 1;
  svc->stopping = 1;
  cport__listener_close(svc->listener);
  service_close_sessions(svc, CPORT_ESTOPPED, CPORT__CLOSE_FORCE);
  /* The service is freed by the last close callback: this timer's, or a
   * session's or the listener's if they close later. */
  uv_close((uv_handle_t*)&svc->timer, service_timer_close_cb);
}


int cport_service_local_addr(const cport_service_t* svc, cport_addr_t* out) {
  if (svc == NULL || out == NULL || svc->kind != CPORT_SERVICE_SERVER)
    return UV_EINVAL;
  if (svc->listener == NULL || svc->stopping)
    return UV_ENOTCONN;
  return cport__listener_addr(svc->listener, out);
}


size_t cport_service_session_count(const cport_service_t* svc) {
  return svc == NULL ? 0 : (size_t)svc->stats.active;
}


int cport_service_foreach(cport_service_t* svc,
                          int (*fn)(cport_session_t* s, void* arg),
                          void* arg) {
  cport_session_t* s;
  int rc = 0;
  if (svc == NULL || fn == NULL)
    return UV_EINVAL;
  for (s = svc->head; s != NULL; s = cport__session_next(s)) {
    if (!cport__session_was_connected(s))
      continue; /* a client session still connecting */
    rc = fn(s, arg);
    if (rc != 0)
      break;
  }
  return rc;
}


int cport_service_stats(const cport_service_t* svc,
                        cport_service_stats_t* out) {
  if (svc == NULL || out == NULL)
    return UV_EINVAL;
  *out = svc->stats;
  return 0;
}


void cport_service_set_data(cport_service_t* svc, void* data) {
  if (svc != NULL)
    svc->data = data;
}


void* cport_service_get_data(const cport_service_t* svc) {
  return svc == NULL ? NULL : svc->data;
}


cport_core_t* cport_service_core(const cport_service_t* svc) {
  return svc == NULL ? NULL : svc->core;
}
