/* Sessions (the lecture's Session): one TCP connection with its receive
 * buffer, its send requests and its reference count.
 *
 * Design notes
 *
 * References. The libuv handle holds one reference from creation until its
 * close callback; every pending request (write, shutdown, connect) holds one
 * until its callback has run (the lecture's `owner = shared_from_this()`);
 * the application holds the ones it took with cport_session_ref(). Memory is
 * freed when the count reaches zero, which can only happen after the close
 * callback, so libuv never touches freed memory.
 *
 * States. INIT -> (CONNECTING ->) CONNECTED -> SHUTTING -> CLOSED. SHUTTING
 * means a uv_shutdown is pending: libuv completes it after every queued write
 * has reached the kernel, which gives the graceful flush for free. CLOSED
 * means uv_close has been called; pending writes then complete with
 * UV_ECANCELED before the close callback, which runs on_disconnected, so
 * on_send never follows on_disconnected.
 *
 * Receive. Reads land in the port's shared chunk (core_internal.h) and
 * on_recv, or the packet layer in front of on_packet, sees them there,
 * without a copy. Only bytes left unconsumed are copied into the session's
 * receive buffer (recv_buf.h), which grows up to the limit and is freed
 * again as soon as it is empty.
 *
 * Send. Each send is one request that owns a copy of the bytes (the
 * lecture's SendEvent, send_req.h), taken from the port's pool. When nothing
 * is queued the bytes are written at once with uv_try_write and the request
 * goes straight back to the pool: no callback to wait for, no allocation.
 * What the kernel does not take at once, and every send made while a write
 * is in flight, waits in the session's pending list; when the write in
 * flight completes, the whole list leaves in one uv_write with one buffer
 * per request (gather), still in call order. A service with on_send always
 * goes through uv_write, because on_send must not run inside the send call
 * that caused it.
 *
 * Memory. An idle session is the uv_tcp_t plus about a hundred bytes: the
 * connect and shutdown requests, the receive buffer and the send requests
 * are allocated only while in use. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "log_internal.h"
#include "packet_internal.h"
#include "recv_buf.h"
#include "session_internal.h"

/* Longest cause text kept from cport_session_disconnect(). */
#define SESSION_CAUSE_MAX 255

enum { S_INIT, S_CONNECTING, S_CONNECTED, S_SHUTTING, S_CLOSED };

#define SESSION_XCLOSED (~(SIZE_MAX >> 1))

struct cport_session_s {
  /* First member, so the handle's address is the session's; the handle's
   * `data` points at the service (NULL once the session has left it), which
   * saves each session a pointer of its own. */
  uv_tcp_t tcp;
  cport_session_t* prev;
  cport_session_t* next;
  uint64_t id;
  atomic_int refs;
  int code;
  /* All in one unsigned: compilers with Microsoft's bit-field layout
   * (MSVC, MinGW) start a new unit whenever the declared type changes. */
  unsigned state : 3;
  unsigned reported_connected : 1;
  unsigned reading : 1;
  unsigned paused : 1;  /* reading stopped by the send queue limit */
  unsigned in_recv : 1; /* inside on_recv: its sends may pause reading */
  unsigned has_user : 1;
  /* uv_writes in flight; more than one only while a graceful close flushes
   * the pending list. */
  unsigned writes : 16;
  /* The peer's sockaddr_in or sockaddr_in6, kept in 28 bytes (a
   * cport_addr_t would be padded to 32) that fill the word before the
   * pointers. */
  uint32_t peer[7];
  char* cause;
  cport__rbuf_t* rbuf; /* NULL while nothing is kept */
  /* Bytes accepted by send and not yet written. Only the port's thread
   * writes it; other threads read it for the send queue limit. */
  atomic_size_t queued;
  /* Bytes sent from other threads that the port has not taken yet, plus
   * SESSION_XCLOSED while the session takes no sends (before on_connected,
   * and from the start of its disconnect). */
  atomic_size_t xsend;
  /* Sends not yet handed to libuv, oldest first: a circular list reached
   * through its newest entry, so that one pointer holds it. */
  cport__send_req_t* pending;
};

/* The user area follows the struct, aligned for any type. A union of the
 * widest types stands in for max_align_t, which MSVC's C mode lacks. */
typedef union session_align_u {
  long double ld;
  long long ll;
  void* p;
  void (*fn)(void);
} session_align_t;

#define SESSION_ALIGN _Alignof(session_align_t)

/* The session's service, valid as long as the session's memory is: the
 * session holds the service (service_internal.h). */
#define SVC(s) ((cport_service_t*)(s)->tcp.data)

/* `queued` has one writer, the port's thread, so plain loads and stores
 * suffice there; they are atomic only for the readers on other threads. */
static size_t session_queued(const cport_session_t* s) {
  return atomic_load_explicit(&s->queued, memory_order_relaxed);
}


/* The service's queued_bytes gauge follows every session's count. */
static void session_queue_add(cport_session_t* s, size_t n) {
  atomic_store_explicit(&s->queued, session_queued(s) + n,
                        memory_order_relaxed);
  CPORT__STAT_ADD(SVC(s), queued_bytes, n);
}


static void session_queue_sub(cport_session_t* s, size_t n) {
  atomic_store_explicit(&s->queued, session_queued(s) - n,
                        memory_order_relaxed);
  CPORT__STAT_SUB(SVC(s), queued_bytes, n);
}


/* Bytes other threads have sent that the port has not taken yet. */
static size_t session_xbytes(const cport_session_t* s) {
  return atomic_load_explicit(&s->xsend, memory_order_acquire) &
         ~SESSION_XCLOSED;
}

static atomic_uint_fast64_t next_session_id = 1;

static void session_free(cport_session_t* s) {
  cport_service_t* svc = SVC(s);
  cport__recv_clear(&s->rbuf);
  cport__free(s->cause);
  cport__free(s);
  cport__service_release(svc);
}


void cport_session_ref(cport_session_t* s) {
  if (s != NULL)
    atomic_fetch_add(&s->refs, 1);
}


void cport_session_unref(cport_session_t* s) {
  if (s != NULL && atomic_fetch_sub(&s->refs, 1) == 1)
    session_free(s);
}


static void session_unlink(cport_session_t* s) {
  cport_service_t* svc = SVC(s);
  if (s->prev != NULL)
    s->prev->next = s->next;
  else
    svc->head = s->next;
  if (s->next != NULL)
    s->next->prev = s->prev;
  else
    svc->tail = s->prev;
  s->prev = s->next = NULL;
  svc->nsessions--;
  atomic_fetch_sub(&svc->root->open, 1);
}


void cport__session_layout(cport_service_t* svc) {
  /* Only what the service uses is there: without an idle timeout or a user
   * area the struct's own size is enough, since rounding it up to the user
   * area's alignment would cost every idle session. */
  size_t end = sizeof(struct cport_session_s);
  svc->idle_off = 0;
  if (svc->opts.idle_timeout_ms > 0) {
    svc->idle_off = (end + _Alignof(cport__timed_t) - 1) /
                    _Alignof(cport__timed_t) * _Alignof(cport__timed_t);
    end = svc->idle_off + sizeof(cport__timed_t);
  }
  svc->user_off = 0;
  if (svc->opts.user_size > 0) {
    svc->user_off = (end + SESSION_ALIGN - 1) / SESSION_ALIGN * SESSION_ALIGN;
    end = svc->user_off + svc->opts.user_size;
  }
  svc->footprint = end;
}


size_t cport__session_footprint(const cport_service_t* svc) {
  return svc->footprint;
}


cport_session_t* cport__session_new(cport_service_t* svc) {
  cport_session_t* s;
  s = cport__calloc(1, cport__session_footprint(svc));
  if (s == NULL)
    return NULL;
  if (uv_tcp_init(svc->port->loop, &s->tcp) != 0) {
    cport__free(s);
    return NULL;
  }
  s->tcp.data = svc;
  cport__service_hold(svc);
  atomic_init(&s->queued, 0);
  atomic_init(&s->xsend, SESSION_XCLOSED);
  s->id = atomic_fetch_add(&next_session_id, 1);
  s->state = S_INIT;
  s->has_user = svc->opts.user_size > 0;
  atomic_init(&s->refs, 1); /* the handle's, released by the close callback */
  s->prev = svc->tail;
  if (svc->tail != NULL)
    svc->tail->next = s;
  else
    svc->head = s;
  svc->tail = s;
  svc->nsessions++;
  atomic_fetch_add(&svc->root->open, 1);
  return s;
}


uv_tcp_t* cport__session_tcp(cport_session_t* s) {
  return &s->tcp;
}


int cport__session_is_paused(const cport_session_t* s) {
  return s->paused;
}


int cport__session_was_connected(const cport_session_t* s) {
  return s->reported_connected;
}


cport_session_t* cport__session_next(cport_session_t* s) {
  return s->next;
}


/* ---- pending sends ---- */

static void session_pending_push(cport_session_t* s, cport__send_req_t* r) {
  if (s->pending == NULL) {
    r->next = r;
  } else {
    r->next = s->pending->next;
    s->pending->next = r;
  }
  s->pending = r;
}


/* Unlink the whole pending list and return its oldest entry; the list it
 * returns ends with NULL. */
static cport__send_req_t* session_pending_take(cport_session_t* s) {
  cport__send_req_t* first;
  if (s->pending == NULL)
    return NULL;
  first = s->pending->next;
  s->pending->next = NULL;
  s->pending = NULL;
  return first;
}


/* Drop sends that never reached libuv (the session is closing at once). */
static void session_pending_drop(cport_session_t* s) {
  cport__send_pool_t* pool = &SVC(s)->port->send_pool;
  cport__send_req_t* r = session_pending_take(s);
  while (r != NULL) {
    cport__send_req_t* next = r->next;
    session_queue_sub(s, r->len);
    cport__send_req_put(pool, r);
    r = next;
  }
}


static int session_flush(cport_session_t* s);


/* ---- timeouts: one timer per service and port, three lists ---- */

/* A connect, with what its timeout and the reconnect policy need. */
typedef struct session_connect_s {
  uv_connect_t req;
  cport__timed_t timed; /* in svc->connecting while connect_timeout_ms */
  unsigned attempts;    /* failed attempts in a row before this one */
  int timed_out;
} session_connect_t;

/* A graceful disconnect's shutdown, timed by disconnect_timeout_ms. */
typedef struct session_shutdown_s {
  uv_shutdown_t req;
  cport__timed_t timed; /* in svc->closing */
} session_shutdown_t;

static void timed_push(cport__timed_list_t* l,
                       cport__timed_t* e,
                       uint64_t now) {
  e->since = now;
  e->next = NULL;
  e->prev = l->tail;
  if (l->tail != NULL)
    l->tail->next = e;
  else
    l->head = e;
  l->tail = e;
  e->linked = 1;
}


static void timed_remove(cport__timed_list_t* l, cport__timed_t* e) {
  if (!e->linked)
    return;
  if (e->prev != NULL)
    e->prev->next = e->next;
  else
    l->head = e->next;
  if (e->next != NULL)
    e->next->prev = e->prev;
  else
    l->tail = e->prev;
  e->prev = e->next = NULL;
  e->linked = 0;
}


static cport__timed_t* session_idle_entry(const cport_service_t* svc,
                                          cport_session_t* s) {
  return (cport__timed_t*)((char*)s + svc->idle_off);
}


static cport_session_t* session_of_idle_entry(const cport_service_t* svc,
                                              cport__timed_t* e) {
  return (cport_session_t*)((char*)e - svc->idle_off);
}


/* The clock of the timed lists, in milliseconds. Not the loop's cached
 * time: after a long callback (or a long stretch of the application's own
 * work between dispatches) that lags, and a timeout started then would
 * expire early. Bytes arriving still stamp sessions with the loop's time
 * (session_touch), which costs nothing and lags by one round at most. */
static uint64_t session_clock_ms(void) {
  return uv_hrtime() / 1000000u;
}


static void session_tick_cb(uv_timer_t* timer);

/* Make sure the tick fires by `deadline` (session_clock_ms time). The lists
 * only grow at their tails, with deadlines no earlier than their heads', so
 * this is needed only when an entry lands in an empty list. */
static void session_arm_tick(cport_service_t* svc, uint64_t deadline) {
  uint64_t now;
  uint64_t delay;
  if (!svc->tick_ready || svc->tick_closed)
    return;
  now = session_clock_ms();
  /* uv_timer_start counts from the loop's time, which may lag: the tick
   * may then come early, finds nothing due, and arms itself again. */
  delay = deadline > now ? deadline - now : 0;
  if (!uv_is_active((uv_handle_t*)&svc->tick) ||
      uv_timer_get_due_in(&svc->tick) > delay)
    uv_timer_start(&svc->tick, session_tick_cb, delay, 0);
}


static void session_timed_add(cport_service_t* svc,
                              cport__timed_list_t* l,
                              cport__timed_t* e,
                              unsigned timeout_ms) {
  uint64_t now = session_clock_ms();
  int was_empty = l->head == NULL;
  timed_push(l, e, now);
  if (was_empty)
    session_arm_tick(svc, now + timeout_ms);
}


/* Due time of a list's head, or UINT64_MAX. */
static uint64_t timed_due(const cport__timed_list_t* l, unsigned timeout_ms) {
  return l->head != NULL ? l->head->since + timeout_ms : UINT64_MAX;
}


void cport__session_tick(cport_service_t* svc) {
  const cport_service_opts_t* o = &svc->opts;
  uint64_t now = session_clock_ms();
  uint64_t next;
  /* Each close unlinks the entry it closes (at once, or through its
   * request's callback), so every loop below ends. */
  while (timed_due(&svc->connecting, o->connect_timeout_ms) <= now) {
    session_connect_t* c =
        cport__container_of(svc->connecting.head, session_connect_t, timed);
    timed_remove(&svc->connecting, &c->timed);
    c->timed_out = 1;
    /* Closing the handle cancels the connect; its callback reports
     * UV_ETIMEDOUT. */
    cport__session_close(c->req.data, UV_ETIMEDOUT, NULL, CPORT__CLOSE_FORCE);
  }
  while (timed_due(&svc->closing, o->disconnect_timeout_ms) <= now) {
    session_shutdown_t* d =
        cport__container_of(svc->closing.head, session_shutdown_t, timed);
    cport_session_t* s = d->req.data;
    timed_remove(&svc->closing, &d->timed);
    CPORT__STAT_ADD(svc, disconnect_timeouts, 1);
    cport__log(CPORT_LOG_INFO,
               "session %llu: could not flush its disconnect in %u ms "
               "(the peer does not read); closed",
               (unsigned long long)s->id, o->disconnect_timeout_ms);
    cport__session_close(s, s->code, NULL, CPORT__CLOSE_FORCE);
  }
  while (timed_due(&svc->idle, o->idle_timeout_ms) <= now) {
    cport_session_t* s = session_of_idle_entry(svc, svc->idle.head);
    cport__log(CPORT_LOG_DEBUG, "session %llu: idle for %u ms",
               (unsigned long long)s->id, o->idle_timeout_ms);
    /* Unlinks the entry; a graceful close, so queued sends still leave
     * (bounded by disconnect_timeout_ms). */
    cport__session_close(s, CPORT_EIDLE, NULL, CPORT__CLOSE_GRACEFUL);
  }
  next = timed_due(&svc->connecting, o->connect_timeout_ms);
  if (timed_due(&svc->closing, o->disconnect_timeout_ms) < next)
    next = timed_due(&svc->closing, o->disconnect_timeout_ms);
  if (timed_due(&svc->idle, o->idle_timeout_ms) < next)
    next = timed_due(&svc->idle, o->idle_timeout_ms);
  if (next != UINT64_MAX)
    session_arm_tick(svc, next);
}


static void session_tick_cb(uv_timer_t* timer) {
  cport__session_tick(timer->data);
}


/* Bytes arrived: the session goes to the back of the idle list. */
static void session_touch(cport_session_t* s) {
  cport_service_t* svc = SVC(s);
  cport__timed_t* e;
  if (svc->idle_off == 0)
    return;
  e = session_idle_entry(svc, s);
  if (e->linked && e != svc->idle.tail) {
    timed_remove(&svc->idle, e);
    timed_push(&svc->idle, e, uv_now(svc->port->loop));
  } else if (e->linked) {
    e->since = uv_now(svc->port->loop);
  }
}


/* ---- close ---- */

/* stats.disconnects_*, by the code a connected session ended with. */
static void session_count_disconnect(cport_service_t* svc, int code) {
  switch (code) {
    case UV_EOF:
      CPORT__STAT_ADD(svc, disconnects_peer, 1);
      break;
    case CPORT_EIDLE:
      CPORT__STAT_ADD(svc, disconnects_idle, 1);
      break;
    case CPORT_ESENDQ:
      CPORT__STAT_ADD(svc, disconnects_backpressure, 1);
      break;
    case CPORT_ERECVFULL:
    case CPORT_ECONSUMED:
    case CPORT_EPACKET:
    case CPORT_EPACKETSIZE:
      CPORT__STAT_ADD(svc, disconnects_protocol, 1);
      break;
    case CPORT_ELOCAL:
    case CPORT_ESTOPPED:
      CPORT__STAT_ADD(svc, disconnects_local, 1);
      break;
    case UV_ECONNRESET:
    case UV_ECONNABORTED:
    case UV_EPIPE:
    case UV_ETIMEDOUT:
    case UV_ENETDOWN:
    case UV_ENETUNREACH:
    case UV_EHOSTUNREACH:
    case UV_EHOSTDOWN:
    case UV_ECONNREFUSED:
      CPORT__STAT_ADD(svc, disconnects_reset, 1);
      break;
    default:
      CPORT__STAT_ADD(svc, disconnects_other, 1);
      break;
  }
}


static void session_close_cb(uv_handle_t* handle) {
  cport_session_t* s = (cport_session_t*)handle;
  cport_service_t* svc = SVC(s);
  cport__recv_clear(&s->rbuf);
  session_pending_drop(s);
  if (s->reported_connected) {
    /* Counted as live until its on_disconnected has returned, like the
     * session list that cport_service_foreach walks. */
    if (svc->opts.cbs.on_disconnected != NULL)
      svc->opts.cbs.on_disconnected(
          s, s->code, s->cause != NULL ? s->cause : cport_strerror(s->code));
    cport__service_active_add(svc->root, -1);
    session_count_disconnect(svc, s->code);
    /* A lost client session comes back under the reconnect policy; one the
     * application or a stop ended does not. */
    if (svc->kind == CPORT_SERVICE_CLIENT && s->code != CPORT_ELOCAL &&
        s->code != CPORT_ESTOPPED)
      cport__service_reconnect_later(svc, 0);
  }
  session_unlink(s);
  cport__service_check_done(svc);
  cport_session_unref(s);
}


static void session_shutdown_cb(uv_shutdown_t* req, int status) {
  session_shutdown_t* d = cport__container_of(req, session_shutdown_t, req);
  cport_session_t* s = req->data;
  (void)status; /* closing either way; the session's code is already set */
  timed_remove(&SVC(s)->closing, &d->timed);
  cport__free(d);
  if (s->state == S_SHUTTING) {
    s->state = S_CLOSED;
    uv_close((uv_handle_t*)&s->tcp, session_close_cb);
  }
  cport_session_unref(s);
}


/* Flush, then shut down the write side. Returns 0 when the shutdown is
 * pending, non-zero when the session must be closed at once instead. */
static int session_shutdown(cport_session_t* s) {
  cport_service_t* svc = SVC(s);
  session_shutdown_t* d;
  /* libuv refuses writes once a shutdown is queued, and completes the
   * shutdown only after the writes queued before it: hand it every pending
   * send first. */
  if (s->pending != NULL && session_flush(s) != 0)
    return -1;
  d = cport__calloc(1, sizeof(*d));
  if (d == NULL)
    return -1;
  d->req.data = s;
  cport_session_ref(s);
  if (uv_shutdown(&d->req, (uv_stream_t*)&s->tcp, session_shutdown_cb) != 0) {
    cport_session_unref(s);
    cport__free(d);
    return -1;
  }
  /* Nothing to flush: the shutdown completes in the next round anyway. */
  if (svc->opts.disconnect_timeout_ms > 0 && s->writes > 0)
    session_timed_add(svc, &svc->closing, &d->timed,
                      svc->opts.disconnect_timeout_ms);
  return 0;
}


void cport__session_close(cport_session_t* s,
                          int code,
                          const char* cause,
                          cport__close_mode_t mode) {
  if (s->state == S_CLOSED)
    return;
  if (s->state == S_SHUTTING) {
    if (mode == CPORT__CLOSE_FORCE) {
      s->state = S_CLOSED;
      uv_close((uv_handle_t*)&s->tcp, session_close_cb);
    }
    return;
  }
  /* Other threads' sends fail from now on. */
  atomic_fetch_or_explicit(&s->xsend, SESSION_XCLOSED, memory_order_release);
  /* A closing session is timed by its disconnect, no longer by silence. */
  if (SVC(s)->idle_off != 0)
    timed_remove(&SVC(s)->idle, session_idle_entry(SVC(s), s));
  s->code = code;
  if (cause != NULL)
    s->cause = cport__strndup(cause, SESSION_CAUSE_MAX);
  if (s->reading) {
    uv_read_stop((uv_stream_t*)&s->tcp);
    s->reading = 0;
  }
  if (mode == CPORT__CLOSE_GRACEFUL && s->state == S_CONNECTED) {
    s->state = S_SHUTTING;
    if (session_shutdown(s) == 0)
      return;
  }
  s->state = S_CLOSED;
  uv_close((uv_handle_t*)&s->tcp, session_close_cb);
}


/* Queue `r` (an operation on `s`) to the port's thread and wake it. The
 * request holds a reference to `s` until the port has taken it. */
static void session_post(cport_session_t* s, cport__send_req_t* r) {
  cport__port_t* port = SVC(s)->port;
  r->req.data = s;
  r->next = NULL;
  cport_session_ref(s);
  uv_mutex_lock(&port->lock);
  if (port->sends_tail != NULL)
    port->sends_tail->next = r;
  else
    port->sends_head = r;
  port->sends_tail = r;
  uv_mutex_unlock(&port->lock);
  (void)uv_async_send(&port->wakeup);
}


static void session_disconnect_here(cport_session_t* s, const char* cause) {
  if (s->state == S_CONNECTED || s->state == S_CONNECTING || s->state == S_INIT)
    cport__session_close(s, CPORT_ELOCAL,
                         cause != NULL ? cause : cport_strerror(CPORT_ELOCAL),
                         CPORT__CLOSE_GRACEFUL);
}


int cport_session_disconnect(cport_session_t* s, const char* cause) {
  cport__send_req_t* r;
  size_t n;
  if (s == NULL)
    return UV_EINVAL;
  if (cport__port_is_mine(SVC(s)->port)) {
    /* Sends other threads made before this call leave first. */
    if (session_xbytes(s) != 0)
      cport__port_take_sends(SVC(s)->port);
    session_disconnect_here(s, cause);
    return 0;
  }
  if (atomic_load_explicit(&s->xsend, memory_order_acquire) & SESSION_XCLOSED)
    return 0; /* already disconnecting, or never connected */
  n = cause != NULL ? strlen(cause) : 0;
  if (n > SESSION_CAUSE_MAX)
    n = SESSION_CAUSE_MAX;
  r = cport__send_req_alloc(n + 1);
  if (r == NULL)
    return UV_ENOMEM;
  r->op = CPORT__OP_DISCONNECT;
  r->len = (uint32_t)n;
  if (n > 0)
    memcpy(r->data, cause, n);
  r->data[n] = 0;
  session_post(s, r);
  return 0;
}


/* ---- receive ---- */

static void session_alloc_cb(uv_handle_t* handle,
                             size_t suggested,
                             uv_buf_t* buf) {
  cport_session_t* s = (cport_session_t*)handle;
  char* chunk = cport__port_read_chunk(SVC(s)->port);
  (void)suggested;
  /* A zero-length buffer makes libuv report UV_ENOBUFS to read_cb. */
  buf->base = chunk;
  buf->len = chunk != NULL ? CPORT__READ_CHUNK : 0;
}


/* Call on_recv. Returns 0 with the bytes consumed in `*consumed`, or
 * CPORT__RECV_STOP if the session must stop delivering (it was
 * disconnected, or on_recv broke its contract). */
static int session_consume_raw(void* ctx,
                               const uint8_t* data,
                               size_t len,
                               size_t* consumed) {
  cport_session_t* s = ctx;
  *consumed = len;
  if (SVC(s)->opts.cbs.on_recv != NULL) {
    s->in_recv = 1;
    *consumed = SVC(s)->opts.cbs.on_recv(s, data, len);
    s->in_recv = 0;
  }
  if (*consumed > len) {
    cport__session_close(s, CPORT_ECONSUMED, NULL, CPORT__CLOSE_GRACEFUL);
    return CPORT__RECV_STOP;
  }
  if (s->state != S_CONNECTED)
    return CPORT__RECV_STOP;
  return 0;
}


/* One whole packet: on_packet, whose sends may pause reading like
 * on_recv's. Stops delivery once the session is paused or ending. */
static int session_on_packet(void* ctx,
                             unsigned id,
                             const uint8_t* payload,
                             size_t len) {
  cport_session_t* s = ctx;
  cport_service_t* svc = SVC(s);
  CPORT__STAT_ADD(svc, packets_in, 1);
  s->in_recv = 1;
  svc->opts.cbs.on_packet(s, id, payload, len);
  s->in_recv = 0;
  return s->state != S_CONNECTED || s->paused;
}


static int session_consume_packets(void* ctx,
                                   const uint8_t* data,
                                   size_t len,
                                   size_t* consumed) {
  cport_session_t* s = ctx;
  int rc;
  /* A pause holds back the packets already received, not just new reads,
   * so that on_packet's replies wait for the queue to drain. */
  *consumed = 0;
  if (s->paused)
    return 0;
  rc = cport__packet_consume(&SVC(s)->opts.packet, data, len, session_on_packet,
                             s, consumed);
  if (rc != 0) {
    cport__session_close(s, rc, NULL, CPORT__CLOSE_GRACEFUL);
    return CPORT__RECV_STOP;
  }
  if (s->state != S_CONNECTED)
    return CPORT__RECV_STOP;
  return 0;
}


static size_t session_need_packet(void* ctx, const uint8_t* data, size_t len) {
  cport_session_t* s = ctx;
  return cport__packet_need(&SVC(s)->opts.packet, data, len);
}


static const cport__recv_ops_t session_raw_ops = {session_consume_raw, NULL};
static const cport__recv_ops_t session_packet_ops = {session_consume_packets,
                                                     session_need_packet};


/* Hand `len` new bytes (0: only the kept ones, again) to the consumer. */
static void session_deliver(cport_session_t* s,
                            const uint8_t* data,
                            size_t len) {
  cport_service_t* svc = SVC(s);
  int rc;
  if (svc->opts.cbs.on_packet != NULL) {
    /* At most one partial packet, plus one read held back by a pause (the
     * sum saturates where size_t has 32 bits). */
    size_t max = svc->opts.packet.max_packet;
    size_t limit =
        max > SIZE_MAX - CPORT__READ_CHUNK ? SIZE_MAX : max + CPORT__READ_CHUNK;
    rc = cport__recv_feed(&s->rbuf, limit, data, len, &session_packet_ops, s);
  } else {
    rc = cport__recv_feed(&s->rbuf, svc->opts.recv_buffer_limit, data, len,
                          &session_raw_ops, s);
  }
  if (rc == CPORT_ERECVFULL)
    cport__session_close(s, rc, NULL, CPORT__CLOSE_GRACEFUL);
  else if (rc == UV_ENOMEM)
    cport__session_close(s, rc, NULL, CPORT__CLOSE_FORCE);
}


static void session_read_cb(uv_stream_t* stream,
                            ssize_t nread,
                            const uv_buf_t* buf) {
  cport_session_t* s = (cport_session_t*)stream;
  if (nread == 0)
    return; /* EAGAIN */
  if (nread < 0) {
    /* A peer that closes its write side still gets every byte queued for
     * it: flush, then close. Any other error ends the session at once. */
    cport__session_close(
        s, (int)nread, NULL,
        nread == UV_EOF ? CPORT__CLOSE_GRACEFUL : CPORT__CLOSE_FORCE);
    return;
  }
  CPORT__STAT_ADD(SVC(s), bytes_in, (uint64_t)nread);
  if (s->state == S_CONNECTED) {
    session_touch(s);
    session_deliver(s, (const uint8_t*)buf->base, (size_t)nread);
  }
}


/* Reading pauses only while on_recv is what fills the queue (an echo, a
 * request's reply). Sends made anywhere else never stop reading: the peer
 * may be waiting for us to read before it reads in turn, and two peers
 * that both wait would hang (a client that sends more than the limit in
 * one call to an echo server, say). Those sends are bounded by
 * CPORT_ESENDQ alone. */
static void session_pause_if_over_limit(cport_session_t* s) {
  const cport_service_opts_t* o = &SVC(s)->opts;
  if (s->reading && s->in_recv &&
      o->send_queue_policy == CPORT_SENDQ_PAUSE_READ &&
      session_queued(s) >= o->send_queue_limit) {
    uv_read_stop((uv_stream_t*)&s->tcp);
    s->reading = 0;
    s->paused = 1;
    CPORT__STAT_ADD(SVC(s), pauses, 1);
  }
}


static void session_read_start(cport_session_t* s) {
  int rc;
  if (s->reading || s->state != S_CONNECTED)
    return;
  rc = uv_read_start((uv_stream_t*)&s->tcp, session_alloc_cb, session_read_cb);
  if (rc != 0) {
    cport__session_close(s, rc, NULL, CPORT__CLOSE_FORCE);
    return;
  }
  s->reading = 1;
}


void cport__session_start(cport_session_t* s) {
  cport_service_t* svc = SVC(s);
  struct sockaddr_storage peer;
  int len = (int)sizeof(peer);
  if (uv_tcp_getpeername(&s->tcp, (struct sockaddr*)&peer, &len) == 0 &&
      (size_t)len <= sizeof(s->peer))
    memcpy(s->peer, &peer, (size_t)len);
  if (svc->opts.tcp_nodelay)
    (void)uv_tcp_nodelay(&s->tcp, 1); /* best effort, like libuv's own */
  if (svc->opts.tcp_keepalive_s > 0)
    (void)uv_tcp_keepalive(&s->tcp, 1, svc->opts.tcp_keepalive_s);
  if (svc->idle_off != 0)
    session_timed_add(svc, &svc->idle, session_idle_entry(svc, s),
                      svc->opts.idle_timeout_ms);
  s->state = S_CONNECTED;
  s->reported_connected = 1;
  /* on_connected may hand the session to other threads. */
  atomic_fetch_and_explicit(&s->xsend, ~SESSION_XCLOSED, memory_order_release);
  CPORT__STAT_ADD(svc, connected, 1);
  cport__service_active_add(svc->root, 1);
  if (svc->opts.cbs.on_connected != NULL)
    svc->opts.cbs.on_connected(s);
  session_read_start(s);
}


/* ---- connect (client services) ---- */

static void session_connect_cb(uv_connect_t* req, int status) {
  session_connect_t* c = cport__container_of(req, session_connect_t, req);
  cport_session_t* s = req->data;
  cport_service_t* svc = SVC(s);
  unsigned attempts = c->attempts;
  int timed_out = c->timed_out;
  timed_remove(&svc->connecting, &c->timed);
  cport__free(c);
  if (status == 0 && s->state == S_CONNECTING) {
    cport__session_start(s);
  } else {
    if (timed_out)
      status = UV_ETIMEDOUT;
    else if (status == 0)
      status = UV_ECANCELED; /* closed while the connect was completing */
    CPORT__STAT_ADD(svc, connect_failed, 1);
    if (svc->opts.cbs.on_connect_failed != NULL)
      svc->opts.cbs.on_connect_failed(svc, status);
    cport__session_close(s, status, NULL, CPORT__CLOSE_FORCE);
    if (status != UV_ECANCELED)
      cport__service_reconnect_later(svc, attempts + 1);
  }
  cport_session_unref(s);
}


int cport__session_connect(cport_session_t* s, unsigned attempts) {
  cport_service_t* svc = SVC(s);
  session_connect_t* c;
  int rc = UV_ENOMEM;
  s->state = S_CONNECTING;
  c = cport__calloc(1, sizeof(*c));
  if (c != NULL) {
    c->req.data = s;
    c->attempts = attempts;
    cport_session_ref(s);
    rc = uv_tcp_connect(&c->req, &s->tcp, cport_addr_sockaddr(&svc->addr),
                        session_connect_cb);
    if (rc == 0) {
      if (svc->opts.connect_timeout_ms > 0)
        session_timed_add(svc, &svc->connecting, &c->timed,
                          svc->opts.connect_timeout_ms);
      return 0;
    }
    cport_session_unref(s);
    cport__free(c);
  }
  cport__session_close(s, rc, NULL, CPORT__CLOSE_FORCE);
  return rc;
}


/* ---- send ---- */

/* Most buffers one uv_write carries; the rest of the pending list follows
 * in the next one. libuv copies the array, so it can live on the stack. */
#define SESSION_GATHER_MAX 64

static void session_write_cb(uv_write_t* req, int status) {
  cport__send_req_t* r = cport__container_of(req, cport__send_req_t, req);
  cport_session_t* s = (cport_session_t*)req->handle;
  cport_service_t* svc = SVC(s);
  cport__send_pool_t* pool = &svc->port->send_pool;
  size_t limit = svc->opts.send_queue_limit;
  uint32_t n = r->nbatch;
  while (n-- > 0) {
    cport__send_req_t* next = r->next;
    session_queue_sub(s, r->len);
    if (status == 0) {
      CPORT__STAT_ADD(svc, bytes_out, r->len);
      if (svc->opts.cbs.on_send != NULL)
        svc->opts.cbs.on_send(s, r->len);
    }
    cport__send_req_put(pool, r);
    r = next;
  }
  s->writes--;
  if (status != 0 && status != UV_ECANCELED)
    cport__session_close(s, status, NULL, CPORT__CLOSE_FORCE);
  /* Sends made while this write was in flight (on_send's included) leave
   * together now. */
  if (s->pending != NULL && s->writes == 0 && s->state == S_CONNECTED) {
    int rc = session_flush(s);
    if (rc != 0)
      cport__session_close(s, rc, NULL, CPORT__CLOSE_FORCE);
  }
  if (s->paused && session_queued(s) <= limit / 2) {
    s->paused = 0;
    session_read_start(s);
    /* on_recv may have kept bytes because its send hit the limit; they must
     * not wait for bytes the peer may never send. */
    if (s->reading && s->rbuf != NULL)
      session_deliver(s, NULL, 0);
  }
  cport_session_unref(s);
}


/* Hand the pending list to libuv, SESSION_GATHER_MAX requests per uv_write.
 * Returns 0, or a libuv error; then what libuv refused is pending again, for
 * the caller's close to drop. */
static int session_flush(cport_session_t* s) {
  uv_buf_t bufs[SESSION_GATHER_MAX];
  cport__send_req_t* r = session_pending_take(s);
  int rc = 0;
  while (r != NULL) {
    cport__send_req_t* first = r;
    uint32_t n = 0;
    while (r != NULL && n < SESSION_GATHER_MAX) {
      bufs[n++] = uv_buf_init((char*)cport__send_req_bytes(r) + r->off,
                              r->len - r->off);
      r = r->next;
    }
    first->nbatch = n;
    cport_session_ref(s);
    rc =
        uv_write(&first->req, (uv_stream_t*)&s->tcp, bufs, n, session_write_cb);
    if (rc != 0) {
      cport_session_unref(s);
      /* The batch is still linked to the rest: put it all back, in order,
       * so that the close drops it. */
      while (first != NULL) {
        cport__send_req_t* next = first->next;
        session_pending_push(s, first);
        first = next;
      }
      return rc;
    }
    CPORT__STAT_ADD(SVC(s), writes, 1);
    s->writes++;
  }
  return 0;
}


/* Non-zero if [data, data + len) lies in the port's read chunk. Compared as
 * integers: the bytes may belong to any object. */
static int session_in_read_chunk(const cport__port_t* port,
                                 const void* data,
                                 size_t len) {
  uintptr_t chunk = (uintptr_t)port->read_chunk;
  uintptr_t p = (uintptr_t)data;
  return chunk != 0 && p >= chunk && p - chunk <= CPORT__READ_CHUNK &&
         len <= CPORT__READ_CHUNK - (p - chunk);
}


/* CPORT_SENDQ_DISCONNECT: a send found the queue at the limit. */
static void session_close_sendq(cport_session_t* s) {
  cport__session_close(s, CPORT_ESENDQ, NULL, CPORT__CLOSE_FORCE);
}


/* The bytes of a send: `hlen` header bytes (a packet's), then `len` of
 * data. */
static void session_copy_parts(uint8_t* to,
                               const uint8_t* head,
                               size_t hlen,
                               const void* data,
                               size_t len) {
  if (hlen > 0)
    memcpy(to, head, hlen);
  if (len > 0)
    memcpy(to + hlen, data, len);
}


/* A send from a thread that does not drive the session's port: checked
 * and copied here, queued to the port, which appends it to the session's
 * pending list in the order the calls returned (the port's lock orders
 * them). */
static int session_send_from_afar(cport_session_t* s,
                                  const uint8_t* head,
                                  size_t hlen,
                                  const void* data,
                                  size_t len,
                                  cport_buf_t* shared) {
  cport_service_t* svc = SVC(s);
  cport__send_req_t* r;
  size_t before;
  len += hlen;
  /* Counted before the checks, so that concurrent senders see each other's
   * bytes against the limit. */
  before = atomic_fetch_add_explicit(&s->xsend, len, memory_order_acq_rel);
  if (before & SESSION_XCLOSED) {
    atomic_fetch_sub_explicit(&s->xsend, len, memory_order_relaxed);
    return UV_ENOTCONN;
  }
  if (before + session_queued(s) >= svc->opts.send_queue_limit) {
    atomic_fetch_sub_explicit(&s->xsend, len, memory_order_relaxed);
    if (svc->opts.send_queue_policy == CPORT_SENDQ_DISCONNECT) {
      r = cport__send_req_alloc(0);
      if (r != NULL) {
        r->op = CPORT__OP_SENDQ;
        session_post(s, r);
      }
    }
    return CPORT_ESENDQ;
  }
  r = cport__send_req_alloc(shared != NULL ? 0 : len);
  if (r == NULL) {
    atomic_fetch_sub_explicit(&s->xsend, len, memory_order_relaxed);
    return UV_ENOMEM;
  }
  r->len = (uint32_t)len;
  if (shared != NULL) {
    cport_buf_ref(shared);
    r->buf = shared;
  } else {
    session_copy_parts(r->data, head, hlen, data, len - hlen);
  }
  session_post(s, r);
  return 0;
}


/* Take one request another thread queued for `s`. `flush` is non-zero when
 * the next queued request is for another session: the sends taken for `s`
 * so far then leave together. */
static void session_take_op(cport_session_t* s,
                            cport__send_req_t* r,
                            int flush) {
  cport_service_t* svc = SVC(s);
  int rc;
  switch ((cport__send_op_t)r->op) {
    case CPORT__OP_SEND:
      if (s->state != S_CONNECTED) {
        /* Disconnected since the call: dropped like the pending sends of a
         * forced close. */
        atomic_fetch_sub_explicit(&s->xsend, r->len, memory_order_relaxed);
        cport__send_req_put(&svc->port->send_pool, r);
        return;
      }
      session_pending_push(s, r);
      /* Added to `queued` before it leaves `xsend`, so that other threads
       * never see the total dip below the truth. */
      session_queue_add(s, r->len);
      atomic_fetch_sub_explicit(&s->xsend, r->len, memory_order_relaxed);
      CPORT__STAT_ADD(svc, sends, 1);
      if (flush && s->writes == 0) {
        rc = session_flush(s);
        if (rc != 0)
          cport__session_close(s, rc, NULL, CPORT__CLOSE_FORCE);
      }
      return;
    case CPORT__OP_DISCONNECT:
      session_disconnect_here(s, r->len > 0 ? (const char*)r->data : NULL);
      break;
    case CPORT__OP_SENDQ:
      session_close_sendq(s);
      break;
  }
  cport__free(r);
}


void cport__port_take_sends(cport__port_t* port) {
  cport__send_req_t* r;
  uv_mutex_lock(&port->lock);
  r = port->sends_head;
  port->sends_head = port->sends_tail = NULL;
  uv_mutex_unlock(&port->lock);
  while (r != NULL) {
    cport__send_req_t* next = r->next;
    cport_session_t* s = r->req.data;
    session_take_op(s, r, next == NULL || next->req.data != s);
    cport_session_unref(s); /* the queued request's */
    r = next;
  }
}


/* Send `hlen` bytes at `head` (a packet header, or none) and `len` bytes
 * at `data` as one request; when `shared` is not NULL the bytes are that
 * buffer's (and hlen is 0), and requests reference it instead of copying
 * them. */
static int session_send(cport_session_t* s,
                        const uint8_t* head,
                        size_t hlen,
                        const void* data,
                        size_t len,
                        cport_buf_t* shared) {
  cport_service_t* svc = SVC(s);
  cport__send_req_t* r;
  int rc;
  if (!cport__port_is_mine(svc->port))
    return session_send_from_afar(s, head, hlen, data, len, shared);
  len += hlen;
  /* Sends other threads made before this call leave first. */
  if (session_xbytes(s) != 0)
    cport__port_take_sends(svc->port);
  if (s->state != S_CONNECTED)
    return UV_ENOTCONN;
  if (session_queued(s) >= svc->opts.send_queue_limit) {
    if (svc->opts.send_queue_policy == CPORT_SENDQ_DISCONNECT)
      session_close_sendq(s);
    else
      session_pause_if_over_limit(s); /* on_recv will keep its bytes */
    return CPORT_ESENDQ;
  }
  /* The request comes first, even when a direct write may not need it: a
   * send that cannot get one must fail before any byte has left, so that
   * UV_ENOMEM queues nothing and leaves the session unharmed. */
  r = cport__send_req_get(&svc->port->send_pool, shared != NULL ? 0 : len);
  if (r == NULL)
    return UV_ENOMEM;
  r->len = (uint32_t)len;
  CPORT__STAT_ADD(svc, sends, 1);
  if (session_queued(s) == 0 && svc->opts.cbs.on_send == NULL) {
    /* Nothing queued: the kernel usually takes it all now. Bytes that lie
     * in the port's read chunk (an echo or a relay from on_recv) are
     * cport's own shared buffer, which stays put for the whole call: the
     * request refers to them there and copies only what the kernel leaves.
     * A cport_buf_t is never copied. Any other bytes are copied first, as
     * the model wants. */
    int in_chunk = shared == NULL && hlen == 0 &&
                   session_in_read_chunk(svc->port, data, len);
    const uint8_t* src =
        shared != NULL || in_chunk ? (const uint8_t*)data : r->data;
    uv_buf_t buf = uv_buf_init((char*)src, (unsigned int)len);
    if (shared == NULL && !in_chunk)
      session_copy_parts(r->data, head, hlen, data, len - hlen);
    rc = uv_try_write((uv_stream_t*)&s->tcp, &buf, 1);
    CPORT__STAT_ADD(svc, writes, 1);
    if (rc >= 0 && (size_t)rc == len) {
      CPORT__STAT_ADD(svc, bytes_out, len);
      cport__send_req_put(&svc->port->send_pool, r);
      return 0;
    }
    if (rc < 0 && rc != UV_EAGAIN) {
      cport__send_req_put(&svc->port->send_pool, r);
      cport__session_close(s, rc, NULL, CPORT__CLOSE_FORCE);
      return rc;
    }
    if (rc > 0)
      r->off = (uint32_t)rc;
    /* Only the bytes [off, len) are ever written from now on. */
    if (in_chunk)
      memcpy(r->data + r->off, src + r->off, len - r->off);
  } else if (shared == NULL) {
    session_copy_parts(r->data, head, hlen, data, len - hlen);
  }
  if (shared != NULL) {
    cport_buf_ref(shared);
    r->buf = shared;
  }
  session_pending_push(s, r);
  session_queue_add(s, len);
  if (s->writes == 0) {
    rc = session_flush(s);
    if (rc != 0) {
      cport__session_close(s, rc, NULL, CPORT__CLOSE_FORCE);
      return rc;
    }
  }
  session_pause_if_over_limit(s);
  return 0;
}


int cport_session_send(cport_session_t* s, const void* data, size_t len) {
  if (s == NULL || data == NULL || len == 0)
    return UV_EINVAL;
  /* uv_buf_t lengths are 32-bit on Windows. */
  if (len > UINT32_MAX)
    return UV_EINVAL;
  return session_send(s, NULL, 0, data, len, NULL);
}


int cport__session_send_parts(cport_session_t* s,
                              const uint8_t* head,
                              size_t hlen,
                              const void* data,
                              size_t len) {
  /* A packet is at most UINT32_MAX bytes (cport_packet_format_check). */
  return session_send(s, head, hlen, data, len, NULL);
}


const cport_packet_format_t* cport__session_packet_format(
    const cport_session_t* s) {
  return &SVC(s)->opts.packet;
}


int cport_session_send_buf(cport_session_t* s, cport_buf_t* buf) {
  if (s == NULL || buf == NULL)
    return UV_EINVAL;
  return session_send(s, NULL, 0, cport_buf_data(buf), cport_buf_len(buf), buf);
}


/* ---- accessors ---- */

void* cport_session_user(cport_session_t* s) {
  if (s == NULL || !s->has_user)
    return NULL;
  return (char*)s + SVC(s)->user_off;
}


cport_service_t* cport_session_service(cport_session_t* s) {
  /* A spreading server's part is cport's own business. */
  return s == NULL ? NULL : SVC(s)->root;
}


uint64_t cport_session_id(const cport_session_t* s) {
  return s == NULL ? 0 : s->id;
}


unsigned cport_session_port(const cport_session_t* s) {
  return s == NULL ? 0 : SVC(s)->port->index;
}


int cport_session_is_connected(const cport_session_t* s) {
  return s != NULL && !(atomic_load_explicit(&s->xsend, memory_order_acquire) &
                        SESSION_XCLOSED);
}


int cport_session_peer_addr(const cport_session_t* s, cport_addr_t* out) {
  struct sockaddr_storage peer;
  if (s == NULL || out == NULL)
    return UV_EINVAL;
  /* Copied out first: the kept bytes are only 4-byte aligned. */
  memset(&peer, 0, sizeof(peer));
  memcpy(&peer, s->peer, sizeof(s->peer));
  if (!s->reported_connected ||
      cport_addr_from_sockaddr(out, (struct sockaddr*)&peer) != 0)
    return UV_ENOTCONN;
  return 0;
}


size_t cport_session_queued_bytes(const cport_session_t* s) {
  return s == NULL ? 0 : session_queued(s) + session_xbytes(s);
}


size_t cport_session_pending_bytes(const cport_session_t* s) {
  return s == NULL || s->rbuf == NULL ? 0 : s->rbuf->len;
}
