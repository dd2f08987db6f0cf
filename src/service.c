/* Services (the lecture's Service, ServerService, ClientService): the set of
 * sessions that share callbacks, limits and a listener or a target address.
 *
 * Design notes: stopping and destroying are asynchronous because libuv
 * closes handles asynchronously. A stop closes the listener and starts a
 * graceful disconnect of every session; the service's one timer bounds how
 * long flushing may take. Every close callback (sessions, listener) calls
 * cport__service_check_done(), which reports on_stopped once nothing is
 * open, and drops the service's own hold once a destroy is pending and its
 * timer is closed too; the memory goes with the last hold.
 *
 * Spreading servers. A libuv handle belongs to one loop, so a server that
 * serves on several ports has one part per other port (service_internal.h):
 * a hidden service that only adopts the sockets the listener hands it.
 * Everything the root does to its parts goes through cport_core_post() to
 * the part's port, in order: start (timer set-up), then the hand-offs, then
 * stop or destroy; a part's on_stopped posts back to the root. */
#include <stdlib.h>
#include <string.h>

#include "listener_internal.h"
#include "log_internal.h"
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
  opts->spread = 1;
  opts->disconnect_timeout_ms = 30000;
  opts->reconnect = CPORT_RECONNECT_NONE;
  opts->reconnect_delay_ms = 1000;
  opts->reconnect_max_ms = 30000;
  opts->reconnect_jitter_pct = 20;
  cport_packet_format_init(&opts->packet);
}


/* Both timers (the stop timer and the tick) close on destroy; the second
 * close callback completes it. */
static void service_timer_close_cb(uv_handle_t* handle) {
  cport_service_t* svc = handle->data;
  if (--svc->timers_open > 0)
    return;
  svc->timer_closed = 1;
  cport__service_check_done(svc);
}


/* The stop timer and the tick, on the service's own loop. Cannot fail for
 * a live loop. */
static int service_timers_init(cport_service_t* svc) {
  int rc = uv_timer_init(svc->port->loop, &svc->timer);
  if (rc != 0)
    return rc;
  rc = uv_timer_init(svc->port->loop, &svc->tick);
  if (rc != 0) {
    uv_close((uv_handle_t*)&svc->timer, NULL);
    return rc;
  }
  svc->timer.data = svc;
  svc->tick.data = svc;
  svc->timer_ready = 1;
  svc->tick_ready = 1;
  svc->timers_open = 2;
  return 0;
}


static void service_init(cport_service_t* svc,
                         cport_core_t* core,
                         cport__port_t* port,
                         cport_service_kind_t kind,
                         const cport_addr_t* addr,
                         const cport_service_opts_t* opts) {
  svc->core = core;
  svc->port = port;
  svc->kind = kind;
  svc->addr = *addr;
  svc->opts = *opts;
  svc->data = opts->data;
  svc->root = svc;
  svc->rng = uv_hrtime() ^ (uint64_t)(uintptr_t)svc;
  atomic_init(&svc->holds, 1);
  cport__session_layout(svc);
}


/* The parts of a spreading server: one per port other than the root's. */
static int service_create_parts(cport_service_t* root) {
  unsigned n = cport_core_ports(root->core);
  unsigned i;
  if (n < 2 || root->kind != CPORT_SERVICE_SERVER || !root->opts.spread)
    return 0;
  root->parts = cport__calloc(n - 1, sizeof(*root->parts));
  if (root->parts == NULL)
    return UV_ENOMEM;
  for (i = 0; i < n; i++) {
    cport_service_t* part;
    if (i == root->port->index)
      continue;
    part = cport__calloc(1, sizeof(*part));
    if (part == NULL)
      return UV_ENOMEM;
    service_init(part, root->core, cport__core_port(root->core, i), root->kind,
                 &root->addr, &root->opts);
    part->root = root;
    cport__service_hold(root);
    root->parts[root->nparts++] = part;
  }
  return 0;
}


static void service_free_parts(cport_service_t* root) {
  while (root->nparts > 0) cport__free(root->parts[--root->nparts]);
  cport__free(root->parts);
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
  if (opts->reconnect != CPORT_RECONNECT_NONE &&
      opts->reconnect != CPORT_RECONNECT_FIXED &&
      opts->reconnect != CPORT_RECONNECT_EXPONENTIAL)
    return UV_EINVAL;
  if (opts->reconnect != CPORT_RECONNECT_NONE &&
      (opts->reconnect_delay_ms == 0 || opts->reconnect_jitter_pct > 100))
    return UV_EINVAL;
  if ((opts->cbs.on_recv != NULL && opts->cbs.on_packet != NULL) ||
      cport_packet_format_check(&opts->packet) != 0)
    return UV_EINVAL;
  port = cport__core_port(core, opts->port);
  if (port == NULL)
    return UV_EINVAL;
  svc = cport__calloc(1, sizeof(*svc));
  if (svc == NULL)
    return UV_ENOMEM;
  service_init(svc, core, port, kind, addr, opts);
  rc = service_create_parts(svc);
  if (rc == 0)
    rc = service_timers_init(svc);
  if (rc != 0) {
    service_free_parts(svc);
    cport__free(svc);
    return rc;
  }
  *out = svc;
  return 0;
}


/* ---- parts: jobs run on each part's own port ---- */

static void part_start_job(void* arg) {
  cport_service_t* part = arg;
  /* Cannot fail for a live loop; a part without timers still adopts and
   * stops, only without deadlines of its own. */
  (void)service_timers_init(part);
  part->started = 1;
}


static void root_part_stopped_job(void* arg) {
  cport_service_t* part = arg;
  cport_service_t* root = part->root;
  /* 0 already when the root was destroyed meanwhile. */
  if (root->parts_running > 0) {
    root->parts_running--;
    cport__service_check_done(root);
  }
  cport__service_release(part); /* the job's; the part holds the root */
}


/* A part's on_stopped: tell the root, on the root's port. The job lives
 * in the part, which it holds until it has run. */
static void part_stopped(cport_service_t* part) {
  cport__service_hold(part);
  part->job_stopped.fn = root_part_stopped_job;
  part->job_stopped.arg = part;
  part->job_stopped.callers = 1;
  cport__port_post(part->root->port, &part->job_stopped);
}


static void part_stop_job(void* arg) {
  cport_service_t* part = arg;
  if (cport_service_stop(part, part->stop_deadline_ms, part_stopped) != 0)
    part_stopped(part);
}


static void part_destroy_job(void* arg) {
  cport_service_t* part = arg;
  if (part->timer_ready) {
    cport_service_destroy(part);
  } else {
    /* Never started: nothing of it lives on the loop. */
    part->released = 1;
    cport__service_release(part);
  }
}


/* Post one of each part's own jobs to the part's port, behind whatever
 * was posted to it before (hand-offs included). */
static void service_post_parts(cport_service_t* root,
                               size_t job_offset,
                               void (*fn)(void*)) {
  unsigned i;
  for (i = 0; i < root->nparts; i++) {
    cport_service_t* part = root->parts[i];
    cport__job_t* job = (cport__job_t*)((char*)part + job_offset);
    part->stop_deadline_ms = root->stop_deadline_ms;
    job->fn = fn;
    job->arg = part;
    job->callers = 1;
    cport__port_post(part->port, job);
  }
}


int cport_service_start(cport_service_t* svc) {
  int rc;
  if (svc == NULL || svc->started || svc->stopping || svc->root != svc)
    return UV_EINVAL;
  CPORT__ASSERT_ON_PORT(svc->port);
  if (svc->kind == CPORT_SERVICE_SERVER) {
    rc = cport__listener_start(svc);
    if (rc != 0)
      return rc;
    svc->started = 1;
    svc->parts_running = svc->nparts;
    service_post_parts(svc, offsetof(cport_service_t, job_start),
                       part_start_job);
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
      CPORT__STAT_ADD(svc, connect_failed, 1);
      return UV_ENOMEM;
    }
    rc = cport__session_connect(s, 0);
    if (rc != 0) {
      CPORT__STAT_ADD(svc, connect_failed, 1);
      return rc;
    }
  }
  return 0;
}


int cport__service_is_full(const cport_service_t* root) {
  /* Sessions still closing hold a socket too, so they count, and so do
   * connections on their way to a part. */
  return root->opts.max_sessions != 0 &&
         atomic_load(&root->open) + atomic_load(&root->handing) >=
             root->opts.max_sessions;
}


void cport__service_adopt(cport_service_t* svc, uv_os_sock_t sock) {
  cport_session_t* s;
  int rc;
  if (svc->stopping) {
    /* Accepted just before a stop: too late to serve. */
    cport__socket_close(sock);
    return;
  }
  s = cport__session_new(svc);
  if (s == NULL) {
    CPORT__STAT_ADD(svc, accept_errors, 1);
    cport__socket_close(sock);
    return;
  }
  rc = uv_tcp_open(cport__session_tcp(s), sock);
  if (rc != 0) {
    CPORT__STAT_ADD(svc, accept_errors, 1);
    cport__socket_close(sock);
    cport__session_close(s, rc, NULL, CPORT__CLOSE_FORCE);
    return;
  }
  cport__session_start(s);
}


void cport__service_active_add(cport_service_t* root, int delta) {
  uint_least64_t now;
  uint_least64_t peak;
  if (delta < 0) {
    atomic_fetch_sub(&root->active, 1);
    return;
  }
  now = atomic_fetch_add(&root->active, 1) + 1;
  peak = atomic_load(&root->peak);
  while (now > peak && !atomic_compare_exchange_weak(&root->peak, &peak, now)) {
  }
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


static int service_is_idle(const cport_service_t* svc) {
  return svc->nsessions == 0 && svc->listener == NULL &&
         svc->parts_running == 0 && svc->nreconnects == 0;
}


/* ---- reconnect (client services) ---- */

struct cport__reconnect_s {
  uv_timer_t timer;
  cport_service_t* svc;
  cport__reconnect_t* prev;
  cport__reconnect_t* next;
  unsigned attempts; /* failed attempts in a row so far */
};


/* xorshift64: jitter needs no more than that, and no shared state. */
static uint64_t service_random(cport_service_t* svc) {
  uint64_t x = svc->rng != 0 ? svc->rng : 0x9e3779b97f4a7c15u;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  svc->rng = x;
  return x;
}


static uint64_t service_reconnect_delay(cport_service_t* svc,
                                        unsigned attempts) {
  const cport_service_opts_t* o = &svc->opts;
  uint64_t delay = o->reconnect_delay_ms;
  uint64_t span;
  if (o->reconnect == CPORT_RECONNECT_EXPONENTIAL) {
    uint64_t cap = o->reconnect_max_ms > delay ? o->reconnect_max_ms : delay;
    while (attempts-- > 0 && delay < cap) delay *= 2;
    if (delay > cap)
      delay = cap;
  }
  span = delay * o->reconnect_jitter_pct / 100;
  if (span > 0) {
    delay = delay - span + service_random(svc) % (2 * span + 1);
    if (delay == 0)
      delay = 1;
  }
  return delay;
}


static void service_reconnect_unlink(cport__reconnect_t* r) {
  cport_service_t* svc = r->svc;
  if (r->prev != NULL)
    r->prev->next = r->next;
  else
    svc->reconnects = r->next;
  if (r->next != NULL)
    r->next->prev = r->prev;
  r->prev = r->next = NULL;
}


static void service_reconnect_close_cb(uv_handle_t* handle) {
  cport__reconnect_t* r = handle->data;
  cport_service_t* svc = r->svc;
  cport__free(r);
  svc->nreconnects--;
  cport__service_check_done(svc);
}


static void service_reconnect_cb(uv_timer_t* timer) {
  cport__reconnect_t* r = timer->data;
  cport_service_t* svc = r->svc;
  cport_session_t* s;
  int rc = UV_ENOMEM;
  service_reconnect_unlink(r);
  CPORT__STAT_ADD(svc, reconnects, 1);
  s = cport__session_new(svc);
  if (s != NULL)
    rc = cport__session_connect(s, r->attempts);
  if (rc != 0) {
    /* Could not even start: reported like a failed attempt, and tried
     * again later. */
    CPORT__STAT_ADD(svc, connect_failed, 1);
    if (svc->opts.cbs.on_connect_failed != NULL)
      svc->opts.cbs.on_connect_failed(svc, rc);
    cport__service_reconnect_later(svc, r->attempts + 1);
  }
  uv_close((uv_handle_t*)&r->timer, service_reconnect_close_cb);
}


void cport__service_reconnect_later(cport_service_t* svc, unsigned attempts) {
  cport__reconnect_t* r;
  uint64_t delay;
  if (svc->kind != CPORT_SERVICE_CLIENT ||
      svc->opts.reconnect == CPORT_RECONNECT_NONE || svc->stopping)
    return;
  r = cport__calloc(1, sizeof(*r));
  if (r == NULL)
    return; /* no memory: this slot stays down, the others go on */
  (void)uv_timer_init(svc->port->loop, &r->timer); /* cannot fail */
  r->timer.data = r;
  r->svc = svc;
  r->attempts = attempts;
  r->next = svc->reconnects;
  if (r->next != NULL)
    r->next->prev = r;
  svc->reconnects = r;
  svc->nreconnects++;
  delay = service_reconnect_delay(svc, attempts);
  cport__log(CPORT_LOG_INFO, "client: reconnecting in %llu ms (attempt %u)",
             (unsigned long long)delay, attempts + 1);
  /* From now, not from the loop's cached time, which may lag by a long
   * round and would shorten the wait. Reconnects are rare enough. */
  uv_update_time(svc->port->loop);
  uv_timer_start(&r->timer, service_reconnect_cb, delay, 0);
}


/* Stop and destroy: no more reconnects. */
static void service_cancel_reconnects(cport_service_t* svc) {
  while (svc->reconnects != NULL) {
    cport__reconnect_t* r = svc->reconnects;
    service_reconnect_unlink(r);
    uv_close((uv_handle_t*)&r->timer, service_reconnect_close_cb);
  }
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
  svc->stop_deadline_ms = deadline_ms;
  cport__listener_close(svc->listener);
  service_cancel_reconnects(svc);
  service_close_sessions(svc, CPORT_ESTOPPED, CPORT__CLOSE_GRACEFUL);
  if (svc->started)
    service_post_parts(svc, offsetof(cport_service_t, job_stop), part_stop_job);
  /* With nothing open, the timer's first tick reports on_stopped, so the
   * callback never runs inside this call. */
  if (svc->timer_ready)
    uv_timer_start(&svc->timer, service_deadline_cb,
                   service_is_idle(svc) ? 0 : (uint64_t)deadline_ms, 0);
  else
    cport__service_check_done(svc);
  return 0;
}


void cport__service_check_done(cport_service_t* svc) {
  if (!service_is_idle(svc))
    return;
  if (svc->stopping && !svc->stopped_reported && !svc->destroy_pending) {
    svc->stopped_reported = 1;
    if (svc->timer_ready && !svc->timer_closed)
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
  cport_service_t* root;
  if (atomic_fetch_sub_explicit(&svc->holds, 1, memory_order_acq_rel) != 1)
    return;
  root = svc->root;
  if (root == svc) {
    cport__free(svc->parts);
    cport__free(svc);
    return;
  }
  /* A part holds its root, whose sessions' service it reports. */
  cport__free(svc);
  cport__service_release(root);
}


void cport_service_destroy(cport_service_t* svc) {
  if (svc == NULL || svc->destroy_pending)
    return;
  CPORT__ASSERT_ON_PORT(svc->port);
  svc->destroy_pending = 1;
  svc->stopping = 1;
  cport__listener_close(svc->listener);
  service_cancel_reconnects(svc);
  service_close_sessions(svc, CPORT_ESTOPPED, CPORT__CLOSE_FORCE);
  /* Parts stopping still report back, to a root that is no longer
   * interested; their jobs hold it. */
  svc->parts_running = 0;
  service_post_parts(svc, offsetof(cport_service_t, job_destroy),
                     part_destroy_job);
  /* The service's own hold is dropped by the last close callback: these
   * timers', or a session's or the listener's if they close later. */
  svc->tick_closed = 1;
  uv_close((uv_handle_t*)&svc->timer, service_timer_close_cb);
  uv_close((uv_handle_t*)&svc->tick, service_timer_close_cb);
}


int cport_service_local_addr(const cport_service_t* svc, cport_addr_t* out) {
  if (svc == NULL || out == NULL || svc->kind != CPORT_SERVICE_SERVER)
    return UV_EINVAL;
  if (svc->listener == NULL || svc->stopping)
    return UV_ENOTCONN;
  return cport__listener_addr(svc->listener, out);
}


size_t cport_service_session_count(const cport_service_t* svc) {
  return svc == NULL ? 0 : (size_t)atomic_load(&svc->root->active);
}


/* Visit the live sessions of one service (root or part). */
static int service_foreach_here(cport_service_t* svc,
                                int (*fn)(cport_session_t* s, void* arg),
                                void* arg) {
  cport_session_t* s;
  int rc = 0;
  for (s = svc->head; s != NULL; s = cport__session_next(s)) {
    if (!cport__session_was_connected(s))
      continue; /* a client session still connecting */
    rc = fn(s, arg);
    if (rc != 0)
      break;
  }
  return rc;
}


int cport_service_foreach(cport_service_t* svc,
                          int (*fn)(cport_session_t* s, void* arg),
                          void* arg) {
  unsigned i;
  int rc = 0;
  if (svc == NULL || fn == NULL)
    return UV_EINVAL;
  /* Only the ports the calling thread runs: the others' lists are theirs. */
  if (cport__port_is_mine(svc->port))
    rc = service_foreach_here(svc, fn, arg);
  for (i = 0; i < svc->nparts && rc == 0; i++)
    if (cport__port_is_mine(svc->parts[i]->port))
      rc = service_foreach_here(svc->parts[i], fn, arg);
  return rc;
}


/* ---- broadcast ---- */

typedef struct broadcast_s {
  cport__job_t job;
  cport_service_t* svc; /* root or part, held until the job has run */
  cport_buf_t* buf;     /* one reference */
} broadcast_t;

static int broadcast_send(cport_session_t* s, void* arg) {
  /* A session whose queue is full misses it (or is closed, under
   * CPORT_SENDQ_DISCONNECT); the others go on. */
  (void)cport_session_send_buf(s, arg);
  return 0;
}


static void broadcast_job(void* arg) {
  broadcast_t* b = arg;
  (void)service_foreach_here(b->svc, broadcast_send, b->buf);
  cport_buf_unref(b->buf);
  cport__service_release(b->svc);
  cport__free(b);
}


/* Send `buf` to the sessions of one part (or the root): at once on this
 * thread's own ports, else by a job on the part's port. */
static int broadcast_to(cport_service_t* svc, cport_buf_t* buf) {
  broadcast_t* b;
  if (cport__port_is_mine(svc->port))
    return service_foreach_here(svc, broadcast_send, buf);
  b = cport__malloc(sizeof(*b));
  if (b == NULL)
    return UV_ENOMEM;
  b->job.fn = broadcast_job;
  b->job.arg = b;
  b->job.callers = 1;
  b->svc = svc;
  b->buf = buf;
  cport_buf_ref(buf);
  cport__service_hold(svc);
  cport__port_post(svc->port, &b->job);
  return 0;
}


int cport_service_broadcast(cport_service_t* svc, cport_buf_t* buf) {
  unsigned i;
  int rc;
  if (svc == NULL || buf == NULL)
    return UV_EINVAL;
  rc = broadcast_to(svc, buf);
  for (i = 0; i < svc->nparts; i++) {
    int part_rc = broadcast_to(svc->parts[i], buf);
    if (rc == 0)
      rc = part_rc;
  }
  return rc;
}


#define STAT_GET(svc, field) \
  ((uint64_t)atomic_load_explicit(&(svc)->stats.field, memory_order_relaxed))

static void service_stats_add(const cport_service_t* svc,
                              cport_service_stats_t* out) {
  out->connected += STAT_GET(svc, connected);
  out->rejected += STAT_GET(svc, rejected);
  out->accept_errors += STAT_GET(svc, accept_errors);
  out->connect_failed += STAT_GET(svc, connect_failed);
  out->bytes_in += STAT_GET(svc, bytes_in);
  out->bytes_out += STAT_GET(svc, bytes_out);
  out->sends += STAT_GET(svc, sends);
  out->packets_in += STAT_GET(svc, packets_in);
  out->writes += STAT_GET(svc, writes);
  out->pauses += STAT_GET(svc, pauses);
  out->queued_bytes += STAT_GET(svc, queued_bytes);
  out->reconnects += STAT_GET(svc, reconnects);
  out->disconnect_timeouts += STAT_GET(svc, disconnect_timeouts);
  out->disconnects_peer += STAT_GET(svc, disconnects_peer);
  out->disconnects_reset += STAT_GET(svc, disconnects_reset);
  out->disconnects_idle += STAT_GET(svc, disconnects_idle);
  out->disconnects_backpressure += STAT_GET(svc, disconnects_backpressure);
  out->disconnects_protocol += STAT_GET(svc, disconnects_protocol);
  out->disconnects_local += STAT_GET(svc, disconnects_local);
  out->disconnects_other += STAT_GET(svc, disconnects_other);
}


int cport_service_stats(const cport_service_t* svc,
                        cport_service_stats_t* out) {
  unsigned i;
  if (svc == NULL || out == NULL)
    return UV_EINVAL;
  memset(out, 0, sizeof(*out));
  service_stats_add(svc, out);
  for (i = 0; i < svc->nparts; i++) service_stats_add(svc->parts[i], out);
  out->active = (uint64_t)atomic_load(&svc->active);
  out->peak = (uint64_t)atomic_load(&svc->peak);
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
