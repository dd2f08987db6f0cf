/* Sessions: one TCP connection with its receive
 * buffer, its send queue and its reference count.
 *
 * Design notes
 *
 * References. The libuv handle holds one reference from creation until its
 * close callback; every pending request (write, shutdown, connect) and
 * every mailbox entry for the session holds one until it has run, so the
 * session outlives any I/O still under way; the application holds the ones
 * it took with cport_session_ref(). Memory is freed when the count reaches
 * zero, which can only happen after the close callback, so libuv never
 * touches freed memory. The block holds its service, which holds its core,
 * so a reference kept past cport_core_destroy() still finds its loop.
 *
 * States. INIT -> (CONNECTING ->) (PROXY ->) (HANDSHAKE ->) CONNECTED ->
 * (FLUSHING ->) SHUTTING -> CLOSED. FLUSHING means a graceful disconnect waits for its turn in the
 * loop's mailbox, behind sends posted before it began (session_shutdown).
 * SHUTTING means a uv_shutdown is pending: libuv completes it after every
 * queued write has reached the kernel, which gives the graceful flush for
 * free. CLOSED
 * means uv_close has been called; pending writes then complete with
 * UV_ECANCELED before the close callback, which runs on_disconnected, so
 * on_send never follows on_disconnected. The states and flags in the
 * bit-field are the loop's alone; what other threads read is atomic
 * (`refs`, `pending`) or fixed before on_connected (`id`, `peer`).
 *
 * Receive. Reads land in the loop's shared chunk (core_internal.h) and
 * on_recv, or the packet layer in front of on_packet, sees them there,
 * without a copy. Only bytes left unconsumed are copied into the session's
 * receive buffer (recv_buf.h), which grows up to the limit and is freed
 * again as soon as it is empty. A packet service hands on_packet at most
 * packet_budget packets per loop round: a session that used its budget
 * keeps the rest there, stops reading and waits for its turn in the loop's
 * mailbox (`yielded`, CPORT__OP_RESUME), so that one peer's flood of tiny
 * requests does not hold the loop.
 *
 * Send: one path. Every send, from any thread, passes the same admission
 * (session_admit: connected? under the limit?), gets a request that owns a
 * copy of the bytes or a reference to a shared buffer (send_req.h), and
 * enters the session's send queue through
 * session_push(). Only the hand-over differs: a call that may act on the
 * loop at once (cport__port_direct: the owner's, with nothing posted before
 * it still waiting) pushes the request itself; any other call posts it to
 * the loop's mailbox, which pushes it in call order, behind every job,
 * broadcast and disconnect posted before it. Disconnects take the same two
 * ways. A direct send into an empty queue is first tried with
 * uv_try_write, and a request the kernel took whole goes straight back to
 * the loop's pool: no callback, no allocation. A service with on_send
 * always writes through uv_write, because on_send must not run inside the
 * send call that caused it.
 *
 * Send queue. Requests stay in the queue, oldest first, until their write
 * has completed. While the session runs, at most one uv_write is in flight:
 * it carries up to SESSION_GATHER_MAX requests from the head of the queue
 * (gather), and its callback hands the next ones. A graceful disconnect
 * hands libuv all of the rest at once, as it must before uv_shutdown.
 *
 * Memory. An idle session is the uv_tcp_t plus 104 bytes: the connect and
 * shutdown requests, the receive buffer and the send requests are allocated
 * only while in use. */
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "log_internal.h"
#include "packet_internal.h"
#include "proxy_internal.h"
#include "recv_buf.h"
#include "session_internal.h"
#include "tls_internal.h"

/* Longest cause text kept from cport_session_disconnect(). */
#define SESSION_CAUSE_MAX 255

/* Most buffers one uv_write carries; the rest of the queue follows in the
 * next one. libuv copies the array, so it can live on the stack. */
#define SESSION_GATHER_MAX 64

/* PROXY: an accepted connection whose PROXY protocol header is not read
 * yet. HANDSHAKE: a TLS session whose connection is up, before
 * on_connected. */
enum {
  S_INIT,
  S_CONNECTING,
  S_PROXY,
  S_HANDSHAKE,
  S_CONNECTED,
  S_FLUSHING,
  S_SHUTTING,
  S_CLOSED
};

/* The flags of `pending`, above any byte count. CLOSED: sends are refused
 * with UV_ENOTCONN (before on_connected, and from the call that began a
 * disconnect). KILLED: a forced close for the send queue limit is posted
 * to the loop, so later refusals post nothing more. */
#define SEND_CLOSED (~(SIZE_MAX >> 1))
#define SEND_KILLED (SEND_CLOSED >> 1)
#define SEND_FLAGS (SEND_CLOSED | SEND_KILLED)

/* The idle timeout's entry, in the session block when idle_timeout_ms is
 * set. `unsent` is what libuv still had to write when the timeout last
 * expired, or SIZE_MAX after activity: a write the peer takes slowly is
 * progress too, though its callback only comes once all of it has gone.
 * (What the kernel holds is not looked at: the peer gets it after a
 * graceful close as well.) */
typedef struct session_idle_s {
  cport__timed_t timed;
  size_t unsent;
} session_idle_t;

struct cport_session_s {
  /* In the service's list (service.c links it). */
  cport__qnode_t link;
  uint64_t id;
  atomic_int refs;
  int code;
  /* The loop's alone. All in one unsigned: compilers with Microsoft's
   * bit-field layout (MSVC, MinGW) start a new unit whenever the declared
   * type changes. */
  unsigned state : 3;
  unsigned reported_connected : 1;
  unsigned reading : 1;
  unsigned paused : 1;  /* reading stopped by the send queue limit */
  unsigned in_recv : 1; /* inside on_recv: its sends may pause reading */
  unsigned writing : 1; /* a uv_write is in flight */
  unsigned yielded : 1; /* packet_budget used up: CPORT__OP_RESUME posted */
  /* The peer's sockaddr_in or sockaddr_in6, written before on_connected and
   * never after, kept in 28 bytes (a cport_addr_t would be padded to 32)
   * that fill the word before the pointers. */
  uint32_t peer[7];
  char* cause;
  cport__rbuf_t* rbuf; /* NULL while nothing is kept */
  /* Bytes of sends admitted and not yet written (in the mailbox, in the
   * send queue, in flight), plus the SEND_* flags. Any thread adds its
   * send's bytes before it queues them, so concurrent senders see each
   * other against the limit. */
  atomic_size_t pending;
  /* Requests not yet written, oldest first: those handed to libuv, then
   * those waiting for the write in flight. */
  cport__queue_t sendq;
  /* The libuv handle: a uv_tcp_t, or a uv_pipe_t for a local endpoint
   * (a Unix domain socket, a Windows named pipe). Last, so that the block
   * of a local service is sized for a uv_pipe_t and a TCP session pays
   * nothing for it (cport__session_layout): the uv_pipe_t (SESSION_PIPE)
   * may extend past the struct's end. The handle's `data` points at the service, which saves
   * each session a pointer of its own. */
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
  } io;
};

/* The session of one of its handle's callbacks. */
#define SESSION_OF(h) \
  ((cport_session_t*)((char*)(h) - offsetof(struct cport_session_s, io)))

/* The uv_pipe_t of a local service's session. */
#define SESSION_PIPE(s) ((uv_pipe_t*)(void*)&(s)->io)

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
#define SVC(s) ((cport_service_t*)(s)->io.handle.data)
#define VIEW(s) cport__service_view(SVC(s))

static atomic_uint_fast64_t next_session_id = 1;

/* Bytes admitted and not yet written. */
static size_t session_queued(const cport_session_t* s) {
  return cport__atomic_load_const(atomic_size_t, &s->pending,
                                  memory_order_acquire) &
         ~SEND_FLAGS;
}


static void session_unqueue(cport_session_t* s, size_t n) {
  atomic_fetch_sub_explicit(&s->pending, n, memory_order_acq_rel);
}


static cport__send_req_t* req_of(cport__qnode_t* n) {
  return cport__container_of(n, cport__send_req_t, msg.node);
}


static cport__tls_conn_t* session_conn(const cport_session_t* s);
static void session_proxy_free(cport_session_t* s);

static void session_free(cport_session_t* s) {
  cport_service_t* svc = SVC(s);
  cport__tls_conn_free(session_conn(s));
  session_proxy_free(s);
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


/* What a client session's end tells the reconnect policy: a session that
 * did not stay up reconnect_reset_ms is one more failed attempt of the
 * connect that made it. */
typedef struct session_client_s {
  uint64_t connected_ms; /* cport__clock_ms() when the connect completed */
  unsigned attempts;     /* failed attempts in a row before that connect */
} session_client_t;

/* A local endpoint's part of the block: the peer's credentials, written
 * before on_connected and never after. */
typedef struct session_local_s {
  cport_peer_cred_t cred;
} session_local_t;

static session_local_t* session_local(const cport_session_t* s) {
  size_t off = VIEW(s)->layout.local_off;
  return off == 0 ? NULL : (session_local_t*)((char*)s + off);
}

/* A TLS session's part of the block (services with opts.tls): its
 * connection's engine, made when the connection is up, and the handshake's
 * timeout. */
typedef struct session_tls_s {
  cport__tls_conn_t* conn;
  cport__timed_t timed; /* while tls_handshake_timeout_ms runs */
  unsigned attempts;    /* client: failed attempts before its connect */
  int handshaking;      /* begun, not completed */
} session_tls_t;

/* The session's TLS part, or NULL for a plain TCP service. */
static session_tls_t* session_tls(const cport_session_t* s) {
  size_t off = VIEW(s)->layout.tls_off;
  return off == 0 ? NULL : (session_tls_t*)((char*)s + off);
}

/* The session's TLS engine, or NULL (plain TCP, or not up yet). */
static cport__tls_conn_t* session_conn(const cport_session_t* s) {
  session_tls_t* t = session_tls(s);
  return t == NULL ? NULL : t->conn;
}


/* The PROXY part of a server's session block (opts.proxy_protocol): the
 * header while it arrives, then what it said. Written before on_connected
 * and never after, so any thread holding a reference may read it. */
typedef struct session_proxy_s {
  cport__timed_t timed; /* while proxy_timeout_ms runs */
  uint8_t* partial;     /* a header's first bytes, while incomplete */
  size_t have;          /* bytes in `partial` */
  uint8_t* tlvs;        /* the v2 TLVs, copied */
  size_t tlvs_len;
  /* The TCP peer (the balancer) when the header named a client, whose
   * address then replaces it in `peer`; and the header's destination. */
  uint32_t via[7];
  uint32_t dst[7];
  uint8_t version; /* 1 or 2 once read; 0 before */
  uint8_t local;   /* a LOCAL or UNKNOWN header: the real endpoints hold */
} session_proxy_t;

static session_proxy_t* session_proxy(const cport_session_t* s) {
  size_t off = VIEW(s)->layout.proxy_off;
  return off == 0 ? NULL : (session_proxy_t*)((char*)s + off);
}


int cport__session_layout(cport_service_kind_t kind,
                          const cport_service_opts_t* opts,
                          int local,
                          cport__session_layout_t* out) {
  /* Only what the service uses is there: without an idle timeout or a user
   * area the struct's own size is enough, since rounding it up to the user
   * area's alignment would cost every idle session. */
  size_t end = sizeof(struct cport_session_s);
  out->local = local;
  out->local_off = 0;
  if (local) {
    size_t pipe_end = offsetof(struct cport_session_s, io) + sizeof(uv_pipe_t);
    if (pipe_end > end)
      end = pipe_end;
    out->local_off = (end + _Alignof(session_local_t) - 1) /
                     _Alignof(session_local_t) * _Alignof(session_local_t);
    end = out->local_off + sizeof(session_local_t);
  }
  out->idle_off = 0;
  if (opts->idle_timeout_ms > 0) {
    out->idle_off = (end + _Alignof(session_idle_t) - 1) /
                    _Alignof(session_idle_t) * _Alignof(session_idle_t);
    end = out->idle_off + sizeof(session_idle_t);
  }
  out->client_off = 0;
  if (kind == CPORT_SERVICE_CLIENT && opts->reconnect != CPORT_RECONNECT_NONE &&
      opts->reconnect_reset_ms > 0) {
    out->client_off = (end + _Alignof(session_client_t) - 1) /
                      _Alignof(session_client_t) * _Alignof(session_client_t);
    end = out->client_off + sizeof(session_client_t);
  }
  out->tls_off = 0;
  if (opts->tls != NULL) {
    out->tls_off = (end + _Alignof(session_tls_t) - 1) /
                   _Alignof(session_tls_t) * _Alignof(session_tls_t);
    end = out->tls_off + sizeof(session_tls_t);
  }
  out->proxy_off = 0;
  if (kind == CPORT_SERVICE_SERVER && opts->proxy_protocol != CPORT_PROXY_OFF) {
    out->proxy_off = (end + _Alignof(session_proxy_t) - 1) /
                     _Alignof(session_proxy_t) * _Alignof(session_proxy_t);
    end = out->proxy_off + sizeof(session_proxy_t);
  }
  out->user_off = 0;
  if (opts->user_size > 0) {
    /* The sum below must not wrap, and no object may be larger than
     * PTRDIFF_MAX (pointer differences within it must work). */
    if (opts->user_size > (size_t)PTRDIFF_MAX - end - SESSION_ALIGN)
      return cport__einval("cport_service_create",
                           "opts.user_size %llu: too large for a session "
                           "block (at most PTRDIFF_MAX less %llu)",
                           (unsigned long long)opts->user_size,
                           (unsigned long long)(end + SESSION_ALIGN));
    out->user_off = (end + SESSION_ALIGN - 1) / SESSION_ALIGN * SESSION_ALIGN;
    end = out->user_off + opts->user_size;
  }
  out->footprint = end;
  return 0;
}


size_t cport__session_footprint(const cport_service_t* svc) {
  return cport__service_view(svc)->layout.footprint;
}


cport_session_t* cport__session_new(cport_service_t* svc) {
  const cport__service_view_t* v = cport__service_view(svc);
  cport_session_t* s = cport__calloc(1, v->layout.footprint);
  int rc;
  if (s == NULL)
    return NULL;
  rc = v->layout.local ? uv_pipe_init(v->lp->loop, SESSION_PIPE(s), 0)
                       : uv_tcp_init(v->lp->loop, &s->io.tcp);
  if (rc != 0) {
    cport__free(s);
    return NULL;
  }
  s->io.handle.data = svc;
  if (v->layout.local) {
    session_local_t* l = session_local(s);
    l->cred.pid = l->cred.uid = l->cred.gid = -1;
  }
  cport__service_hold(svc);
  atomic_init(&s->pending, SEND_CLOSED);
  s->id = atomic_fetch_add(&next_session_id, 1);
  s->state = S_INIT;
  atomic_init(&s->refs, 1); /* the handle's, released by the close callback */
  cport__service_attach(svc, &s->link);
  return s;
}


cport_session_t* cport__session_of(cport__qnode_t* node) {
  return cport__container_of(node, cport_session_t, link);
}


int cport__session_open(cport_session_t* s, uv_os_sock_t sock) {
  if (VIEW(s)->layout.local)
    return uv_pipe_open(SESSION_PIPE(s), (uv_file)sock);
  return uv_tcp_open(&s->io.tcp, sock);
}


uv_handle_t* cport__session_handle(cport_session_t* s) {
  return &s->io.handle;
}


int cport__session_accept(cport_session_t* s, uv_stream_t* server) {
  return uv_accept(server, &s->io.stream);
}


int cport__session_is_paused(const cport_session_t* s) {
  return s->paused;
}


int cport__session_was_connected(const cport_session_t* s) {
  return s->reported_connected;
}


static session_idle_t* session_idle(cport_session_t* s) {
  return (session_idle_t*)((char*)s + VIEW(s)->layout.idle_off);
}


/* Bytes moved, one way or the other: the session goes to the back of the
 * idle list. */
static void session_touch(cport_session_t* s) {
  cport__service_view_t* v = VIEW(s);
  session_idle_t* idle;
  if (v->layout.idle_off == 0)
    return;
  idle = session_idle(s);
  cport__timeouts_touch(&v->timeouts, CPORT__TIMEOUT_IDLE, &idle->timed);
  idle->unsent = SIZE_MAX;
}


/* ---- send queue ---- */

/* Drop the sends that never reached libuv (the session has closed; every
 * write handed to libuv has completed by then). */
static void session_sendq_drop(cport_session_t* s) {
  cport__send_pool_t* pool = &VIEW(s)->lp->send_pool;
  cport__qnode_t* n;
  while ((n = cport__queue_pop(&s->sendq)) != NULL) {
    cport__send_req_t* r = req_of(n);
    size_t charge = cport__send_req_charge(r);
    session_unqueue(s, charge);
    CPORT__SVC_STAT_SUB(SVC(s), queued_bytes, charge);
    cport__send_req_put(pool, r);
  }
}


static void session_write_cb(uv_write_t* req, int status);
static void session_tls_write_cb(uv_write_t* req, int status);

/* TLS: write the ciphertext the engine has made, as one block that
 * completes `nplain` requests from the head of the send queue (0 for
 * handshake records, tickets, KeyUpdate replies and close_notify), or
 * carries `direct` bytes of a send that never queued. The
 * block counts in `pending` until written, like the plaintext it carries.
 * Blocks leave in the order they were made: libuv writes a stream's
 * requests in order. Returns 0, or a libuv error (the session must then be
 * closed). */
static int session_tls_flush(cport_session_t* s,
                             uint32_t nplain,
                             uint32_t direct) {
  cport__tls_out_t* o = cport__tls_conn_take(session_conn(s));
  cport__tls_pool_t* pool = &VIEW(s)->lp->tls_pool;
  size_t off = 0;
  uv_buf_t buf;
  int rc;
  if (o == NULL)
    return 0;
  buf = uv_buf_init((char*)o->data, o->len);
  if (nplain == 0) {
    /* No send completes with this block, so no callback is owed: the
     * kernel usually takes it now, and it goes straight back to the pool
     * (libuv refuses with UV_EAGAIN while earlier writes wait, so the
     * order holds). Left in flight, a block per session between a write
     * and its callback made a busy loop hold one per session. */
    rc = uv_try_write(&s->io.stream, &buf, 1);
    if (rc < 0 && rc != UV_EAGAIN) {
      cport__tls_out_put(pool, o);
      return rc;
    }
    if (rc > 0) {
      off = (size_t)rc;
      session_touch(s);
    }
    if (off == o->len) {
      CPORT__SVC_STAT_ADD(SVC(s), writes, 1);
      CPORT__SVC_STAT_ADD(SVC(s), bytes_out, direct);
      cport__tls_out_put(pool, o);
      return 0;
    }
    buf = uv_buf_init((char*)o->data + off, (unsigned int)(o->len - off));
  }
  o->nplain = nplain;
  o->direct = direct;
  atomic_fetch_add_explicit(&s->pending, o->len, memory_order_acq_rel);
  CPORT__SVC_STAT_ADD(SVC(s), queued_bytes, o->len);
  cport_session_ref(s);
  rc = uv_write(&o->req, &s->io.stream, &buf, 1, session_tls_write_cb);
  if (rc != 0) {
    cport_session_unref(s);
    session_unqueue(s, o->len);
    CPORT__SVC_STAT_SUB(SVC(s), queued_bytes, o->len);
    cport__tls_out_put(pool, o);
    return rc;
  }
  CPORT__SVC_STAT_ADD(SVC(s), writes, 1);
  if (nplain > 0)
    s->writing = 1;
  return 0;
}


/* TLS: encrypt `count` queued requests from `n` on into one block and
 * write it. Returns 0, or an error after which the session must be
 * closed. */
static int session_tls_write(cport_session_t* s,
                             cport__qnode_t* n,
                             uint32_t count) {
  cport__tls_conn_t* conn = session_conn(s);
  cport__qnode_t* m = n;
  size_t total = 0;
  uint32_t i;
  int rc;
  for (i = 0; i < count; i++, m = m->next)
    total += req_of(m)->len - req_of(m)->off;
  rc = cport__tls_conn_reserve(conn, total);
  if (rc != 0)
    return rc;
  for (i = 0; i < count; i++, n = n->next) {
    cport__send_req_t* r = req_of(n);
    rc = cport__tls_conn_write(conn, cport__send_req_bytes(r) + r->off,
                               r->len - r->off);
    if (rc != 0)
      return rc;
  }
  return session_tls_flush(s, count, 0);
}


/* Hand libuv the queued requests from `n` on, SESSION_GATHER_MAX per
 * uv_write: one write, or with `all` every one of them. Returns 0, or a
 * libuv error; what libuv refused stays queued, for the caller's close to
 * drop. */
static int session_write_from(cport_session_t* s, cport__qnode_t* n, int all) {
  uv_buf_t bufs[SESSION_GATHER_MAX];
  while (n != NULL && session_conn(s) != NULL) {
    cport__send_req_t* first = req_of(n);
    uint32_t count = 0;
    int rc;
    cport__qnode_t* m = n;
    while (m != NULL && count < SESSION_GATHER_MAX) {
      count++;
      m = m->next;
    }
    first->nbatch = count;
    rc = session_tls_write(s, n, count);
    if (rc != 0)
      return rc;
    n = m;
    if (!all)
      return 0;
  }
  while (n != NULL) {
    cport__send_req_t* first = req_of(n);
    uint32_t count = 0;
    int rc;
    while (n != NULL && count < SESSION_GATHER_MAX) {
      cport__send_req_t* r = req_of(n);
      bufs[count++] = uv_buf_init((char*)cport__send_req_bytes(r) + r->off,
                                  r->len - r->off);
      n = n->next;
    }
    first->nbatch = count;
    cport_session_ref(s);
    rc = uv_write(&first->req, &s->io.stream, bufs, count,
                  session_write_cb);
    if (rc != 0) {
      cport_session_unref(s);
      return rc;
    }
    CPORT__SVC_STAT_ADD(SVC(s), writes, 1);
    s->writing = 1;
    if (!all)
      break;
  }
  return 0;
}


/* Start the next write if none is in flight. Returns 0 or a libuv error
 * (the session must then be closed). */
static int session_kick(cport_session_t* s) {
  if (s->writing || cport__queue_empty(&s->sendq))
    return 0;
  return session_write_from(s, cport__queue_head(&s->sendq), 0);
}


/* The one way into a session's send queue, for every send whichever way
 * it came: `r` joins the queue (its bytes already counted in `pending`) and
 * leaves with the next write; with `kick` that write starts now if none is
 * in flight. Returns 0, or a libuv error after which the session is being
 * closed. */
static int session_push(cport_session_t* s, cport__send_req_t* r, int kick) {
  int rc;
  cport__queue_push(&s->sendq, &r->msg.node);
  CPORT__SVC_STAT_ADD(SVC(s), queued_bytes, cport__send_req_charge(r));
  if (!kick)
    return 0;
  rc = session_kick(s);
  if (rc != 0)
    cport__session_close(s, rc, NULL, CPORT__CLOSE_FORCE);
  return rc;
}


static void session_pause_if_over_limit(cport_session_t* s);
static void session_read_start(cport_session_t* s);
static void session_tls_drain(cport_session_t* s);
static void session_deliver(cport_session_t* s,
                            const uint8_t* data,
                            size_t len);

/* `n` requests from the head of the send queue have been written (or
 * failed with `status`); n is 0 for a TLS block of the engine's own. */
static void session_written(cport_session_t* s, uint32_t n, int status) {
  cport_service_t* svc = SVC(s);
  cport__service_view_t* v = cport__service_view(svc);
  cport__queue_t done = {NULL, NULL};
  size_t bytes = 0;
  size_t charge = 0;
  cport__qnode_t* node;
  int report;
  int data = n > 0;
  /* libuv completes a stream's writes in order, so this write's requests
   * are the oldest in the queue. They leave it before on_send runs: a send
   * made there joins the queue behind what is still unwritten. */
  while (n-- > 0) {
    cport__send_req_t* r = req_of(cport__queue_pop(&s->sendq));
    bytes += r->len;
    charge += cport__send_req_charge(r);
    cport__queue_push(&done, &r->msg.node);
  }
  session_unqueue(s, charge);
  CPORT__SVC_STAT_SUB(svc, queued_bytes, charge);
  if (status == 0) {
    CPORT__SVC_STAT_ADD(svc, bytes_out, bytes);
    session_touch(s);
  }
  /* Bytes that reached the kernel are reported, also during a forced
   * close, but no on_send runs once the service's destroy has returned,
   * whichever loop made it: checked before each call, since a destroy on
   * another loop may come between two. */
  report = status == 0 && v->opts.cbs.on_send != NULL;
  while ((node = cport__queue_pop(&done)) != NULL) {
    cport__send_req_t* r = req_of(node);
    if (report && cport__service_phase(svc) != CPORT__PHASE_DESTROYING)
      v->opts.cbs.on_send(s, r->len);
    cport__send_req_put(&v->lp->send_pool, r);
  }
  if (data)
    s->writing = 0;
  if (status != 0 && status != UV_ECANCELED)
    cport__session_close(s, status, NULL, CPORT__CLOSE_FORCE);
  /* Sends made while this write was in flight (on_send's included) leave
   * together now. A session that is shutting down has handed libuv
   * everything already. */
  if (s->state == S_CONNECTED || s->state == S_FLUSHING) {
    int rc = session_kick(s);
    if (rc != 0)
      cport__session_close(s, rc, NULL, CPORT__CLOSE_FORCE);
  }
  if (s->paused && session_queued(s) <= v->opts.send_queue_limit / 2) {
    s->paused = 0;
    session_read_start(s);
    /* on_recv may have kept bytes because its send hit the limit; they must
     * not wait for bytes the peer may never send. */
    if (s->reading && s->rbuf != NULL)
      session_deliver(s, NULL, 0);
    /* Nor may the plaintext and ciphertext TLS still holds. */
    session_tls_drain(s);
  }
}


static void session_write_cb(uv_write_t* req, int status) {
  cport__send_req_t* first = cport__container_of(req, cport__send_req_t, req);
  cport_session_t* s = SESSION_OF(req->handle);
  session_written(s, first->nbatch, status);
  cport_session_unref(s);
}


static void session_tls_write_cb(uv_write_t* req, int status) {
  cport__tls_out_t* o = cport__container_of(req, cport__tls_out_t, req);
  cport_session_t* s = SESSION_OF(req->handle);
  uint32_t nplain = o->nplain;
  session_unqueue(s, o->len);
  CPORT__SVC_STAT_SUB(SVC(s), queued_bytes, o->len);
  if (status == 0)
    CPORT__SVC_STAT_ADD(SVC(s), bytes_out, o->direct);
  cport__tls_out_put(&VIEW(s)->lp->tls_pool, o);
  session_written(s, nplain, status);
  cport_session_unref(s);
}


/* ---- close ---- */

/* A connect, with what its timeout and the reconnect policy need. */
typedef struct session_connect_s {
  uv_connect_t req;
  cport__timed_t timed; /* while connect_timeout_ms runs */
  unsigned attempts;    /* failed attempts in a row before this one */
  int timed_out;
} session_connect_t;

/* A connect to one address of a host name's attempt, which times it and
 * takes its outcome. Only clients on a host name use this larger request,
 * so a numeric connect allocates what it always did. */
typedef struct session_connect_to_s {
  session_connect_t c;
  cport__attempt_t* attempt;
} session_connect_to_t;

/* A connect to a local endpoint. On Unix the socket is connected here
 * (connect() on a Unix domain socket completes or fails at once) and the
 * outcome reaches session_connect_cb through the loop's mailbox, never
 * inside the call that began it, as libuv's own connects do. Made here
 * rather than by uv_pipe_connect because libuv before 1.46 cannot name a
 * Linux abstract socket, and so that paths and abstract names take one
 * way, the one the listener's sockets take. On Windows uv_pipe_connect
 * connects a named pipe (it waits for a busy pipe's next instance). */
typedef struct session_connect_local_s {
  session_connect_t c;
  cport__msg_t msg;
  int status;
} session_connect_local_t;

/* Each request is freed through its session_connect_t. */
_Static_assert(offsetof(session_connect_to_t, c) == 0,
               "the connect must be the first member");
_Static_assert(offsetof(session_connect_local_t, c) == 0,
               "the connect must be the first member");

/* A graceful disconnect's shutdown, timed by disconnect_timeout_ms; `msg`
 * posts it behind what waits in the loop's mailbox (S_FLUSHING). */
typedef struct session_shutdown_s {
  uv_shutdown_t req;
  cport__timed_t timed;
  cport__msg_t msg;
} session_shutdown_t;

/* stats.disconnects_*, by the code a connected session ended with. */
static void session_count_disconnect(cport_service_t* svc, int code) {
  switch (code) {
    case UV_EOF:
      CPORT__SVC_STAT_ADD(svc, disconnects_peer, 1);
      break;
    case CPORT_EIDLE:
      CPORT__SVC_STAT_ADD(svc, disconnects_idle, 1);
      break;
    case CPORT_ESENDQ:
      CPORT__SVC_STAT_ADD(svc, disconnects_backpressure, 1);
      break;
    case CPORT_ERECVFULL:
    case CPORT_ECONSUMED:
    case CPORT_EPACKET:
    case CPORT_EPACKETSIZE:
    case CPORT_ETLS:
      CPORT__SVC_STAT_ADD(svc, disconnects_protocol, 1);
      break;
    case CPORT_ELOCAL:
    case CPORT_ESTOPPED:
    case CPORT_EDRAINED:
      CPORT__SVC_STAT_ADD(svc, disconnects_local, 1);
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
    case CPORT_ETLSTRUNCATED:
      CPORT__SVC_STAT_ADD(svc, disconnects_reset, 1);
      break;
    default:
      CPORT__SVC_STAT_ADD(svc, disconnects_other, 1);
      break;
  }
}


/* The failed attempts in a row that the reconnect after lost client
 * session `s` follows: none once it stayed up reconnect_reset_ms, else one
 * more than before its connect, so that a server that accepts and drops at
 * once meets the back-off rather than a reconnect every
 * reconnect_delay_ms. */
static unsigned session_lost_attempts(const cport_session_t* s) {
  const cport__service_view_t* v = VIEW(s);
  const session_client_t* c;
  if (v->layout.client_off == 0)
    return 0;
  c = (const session_client_t*)((const char*)s + v->layout.client_off);
  if (cport__clock_ms() - c->connected_ms >= v->opts.reconnect_reset_ms)
    return 0;
  return c->attempts + 1;
}


static void session_tls_ended(cport_session_t* s);

static void session_close_cb(uv_handle_t* handle) {
  cport_session_t* s = SESSION_OF(handle);
  cport_service_t* svc = SVC(s);
  const cport__service_view_t* v = cport__service_view(svc);
  cport__recv_clear(&s->rbuf);
  session_sendq_drop(s);
  if (s->reported_connected) {
    /* Counted as live until its on_disconnected has returned, like the
     * session list that cport_service_foreach walks. */
    if (v->opts.cbs.on_disconnected != NULL)
      v->opts.cbs.on_disconnected(
          s, s->code, s->cause != NULL ? s->cause : cport_strerror(s->code));
    cport__service_active_add(svc, -1);
    session_count_disconnect(svc, s->code);
    /* A lost client session comes back under the reconnect policy; one the
     * application or a stop ended does not. */
    if (v->kind == CPORT_SERVICE_CLIENT && s->code != CPORT_ELOCAL &&
        s->code != CPORT_ESTOPPED)
      cport__service_reconnect_later(svc, session_lost_attempts(s));
  } else if (session_tls(s) != NULL && session_tls(s)->handshaking) {
    session_tls_ended(s);
  }
  cport__service_detach(svc, &s->link);
  cport_session_unref(s);
}


static void session_shutdown_cb(uv_shutdown_t* req, int status) {
  session_shutdown_t* d = cport__container_of(req, session_shutdown_t, req);
  cport_session_t* s = req->data;
  (void)status; /* closing either way; the session's code is already set */
  cport__timeouts_remove(&VIEW(s)->timeouts, CPORT__TIMEOUT_FLUSH, &d->timed);
  cport__free(d);
  if (s->state == S_SHUTTING) {
    s->state = S_CLOSED;
    uv_close(&s->io.handle, session_close_cb);
  }
  cport_session_unref(s);
}


/* Hand libuv every queued send, then shut down the write side: d's
 * shutdown. Returns 0 when the shutdown is pending; non-zero when the
 * session must be closed at once instead (`d` is then freed). */
static int session_shutdown_now(cport_session_t* s, session_shutdown_t* d) {
  cport__timeouts_t* t = &VIEW(s)->timeouts;
  cport__qnode_t* n = cport__queue_head(&s->sendq);
  /* libuv refuses writes once a shutdown is queued, and completes the
   * shutdown only after the writes queued before it: hand it every queued
   * send first, behind the write in flight. */
  if (s->writing) {
    uint32_t skip = req_of(n)->nbatch;
    while (skip-- > 0) n = n->next;
  }
  /* TLS: the peer learns the end is deliberate (close_notify) after the
   * last byte, not from the FIN alone, which an attacker could forge. */
  if ((n != NULL && session_write_from(s, n, 1) != 0) ||
      (session_conn(s) != NULL &&
       (cport__tls_conn_close_notify(session_conn(s)) != 0 ||
        session_tls_flush(s, 0, 0) != 0)) ||
      uv_shutdown(&d->req, &s->io.stream, session_shutdown_cb) != 0) {
    cport__timeouts_remove(t, CPORT__TIMEOUT_FLUSH, &d->timed);
    cport__free(d);
    return -1;
  }
  s->state = S_SHUTTING;
  cport_session_ref(s); /* the shutdown request's */
  /* Nothing to flush: the shutdown completes in the next round anyway. A
   * flush that waited for the mailbox is timed from its start. (A TLS
   * session's close_notify is not waited for: it is one small record.) */
  if (cport__queue_empty(&s->sendq))
    cport__timeouts_remove(t, CPORT__TIMEOUT_FLUSH, &d->timed);
  else if (!cport__queue_linked(&t->lists[CPORT__TIMEOUT_FLUSH], &d->timed.node))
    cport__timeouts_add(t, CPORT__TIMEOUT_FLUSH, &d->timed);
  return 0;
}


/* The deferred shutdown's turn in the mailbox: every send posted before
 * the disconnect began has joined the send queue by now. */
static void session_flushed_run(cport__msg_t* m, const cport__msg_t* next) {
  session_shutdown_t* d = cport__container_of(m, session_shutdown_t, msg);
  cport_session_t* s = d->req.data;
  (void)next;
  if (s->state != S_FLUSHING) {
    /* Closed by force meanwhile. */
    cport__timeouts_remove(&VIEW(s)->timeouts, CPORT__TIMEOUT_FLUSH,
                           &d->timed);
    cport__free(d);
  } else if (session_shutdown_now(s, d) != 0) {
    s->state = S_CLOSED;
    uv_close(&s->io.handle, session_close_cb);
  }
  cport_session_unref(s); /* the entry's */
}


/* Begin a graceful close: flush, then shut down the write side. Sends
 * posted to the loop before the disconnect began (on any thread, the
 * owner's too) still wait in the mailbox when it is not empty: the
 * shutdown then takes its place behind them (S_FLUSHING), so they are
 * flushed as well. Returns 0 when the close is under way, non-zero when
 * the session must be closed at once instead. */
static int session_shutdown(cport_session_t* s) {
  cport__service_view_t* v = VIEW(s);
  session_shutdown_t* d = cport__calloc(1, sizeof(*d));
  if (d == NULL)
    return -1;
  d->req.data = s;
  if (cport__loop_direct(v->lp))
    return session_shutdown_now(s, d);
  s->state = S_FLUSHING;
  cport__timeouts_add(&v->timeouts, CPORT__TIMEOUT_FLUSH, &d->timed);
  d->msg.run = session_flushed_run;
  cport_session_ref(s); /* the entry's */
  cport__loop_post(v->lp, &d->msg);
  return 0;
}


/* Close the handle now: queued writes complete with UV_ECANCELED, then
 * session_close_cb runs. RESET first tells the kernel to drop what it holds
 * for the peer (SO_LINGER 0); where libuv cannot (its shutdown is pending),
 * a plain close. */
static void session_close_handle(cport_session_t* s, cport__close_mode_t mode) {
  s->state = S_CLOSED;
  if (mode == CPORT__CLOSE_RESET && !VIEW(s)->layout.local &&
      uv_tcp_close_reset(&s->io.tcp, session_close_cb) == 0)
    return;
  uv_close(&s->io.handle, session_close_cb);
}


void cport__session_close(cport_session_t* s,
                          int code,
                          const char* cause,
                          cport__close_mode_t mode) {
  cport__service_view_t* v = VIEW(s);
  if (s->state == S_CLOSED)
    return;
  if (s->state == S_SHUTTING || s->state == S_FLUSHING) {
    if (mode != CPORT__CLOSE_GRACEFUL)
      session_close_handle(s, s->state == S_FLUSHING ? mode
                                                     : CPORT__CLOSE_FORCE);
    return;
  }
  /* Sends fail from now on, on every thread. */
  atomic_fetch_or_explicit(&s->pending, SEND_CLOSED, memory_order_acq_rel);
  /* A closing session is timed by its disconnect, no longer by silence
   * or its handshake. */
  if (v->layout.idle_off != 0)
    cport__timeouts_remove(&v->timeouts, CPORT__TIMEOUT_IDLE,
                           &session_idle(s)->timed);
  if (v->layout.tls_off != 0)
    cport__timeouts_remove(&v->timeouts, CPORT__TIMEOUT_HANDSHAKE,
                           &session_tls(s)->timed);
  if (v->layout.proxy_off != 0)
    cport__timeouts_remove(&v->timeouts, CPORT__TIMEOUT_PROXY,
                           &session_proxy(s)->timed);
  s->code = code;
  if (cause != NULL)
    s->cause = cport__strndup(cause, SESSION_CAUSE_MAX);
  if (s->reading) {
    uv_read_stop(&s->io.stream);
    s->reading = 0;
  }
  if (mode == CPORT__CLOSE_GRACEFUL && s->state == S_CONNECTED &&
      session_shutdown(s) == 0)
    return;
  session_close_handle(s, mode);
}


static void session_proxy_refuse(cport_session_t* s,
                                 int code,
                                 const char* cause);

void cport__session_timed_out(cport_service_t* svc,
                              cport__timeout_kind_t kind,
                              cport__timed_t* e) {
  const cport__service_view_t* v = cport__service_view(svc);
  cport_session_t* s;
  switch (kind) {
    case CPORT__TIMEOUT_CONNECT: {
      session_connect_t* c = cport__container_of(e, session_connect_t, timed);
      c->timed_out = 1;
      /* Closing the handle cancels the connect; its callback reports
       * UV_ETIMEDOUT. */
      cport__session_close(c->req.data, UV_ETIMEDOUT, NULL,
                           CPORT__CLOSE_FORCE);
      break;
    }
    case CPORT__TIMEOUT_FLUSH:
      s = cport__container_of(e, session_shutdown_t, timed)->req.data;
      CPORT__SVC_STAT_ADD(svc, disconnect_timeouts, 1);
      cport__log(CPORT_LOG_INFO,
                 "session %llu: could not flush its disconnect in %u ms "
                 "(the peer does not read); closed",
                 (unsigned long long)s->id, v->opts.disconnect_timeout_ms);
      cport__session_close(s, s->code, NULL, CPORT__CLOSE_FORCE);
      break;
    case CPORT__TIMEOUT_IDLE: {
      session_idle_t* idle = cport__container_of(e, session_idle_t, timed);
      size_t unsent;
      s = (cport_session_t*)((char*)idle - v->layout.idle_off);
      unsent = uv_stream_get_write_queue_size(&s->io.stream);
      if (unsent > 0 && unsent < idle->unsent) {
        /* Still being taken, slowly (or, the first time after activity,
         * perhaps): not idle. One more period shows whether it moves. */
        cport__timeouts_add(&VIEW(s)->timeouts, CPORT__TIMEOUT_IDLE, e);
        idle->unsent = unsent;
        break;
      }
      cport__log(CPORT_LOG_DEBUG, "session %llu: idle for %u ms%s",
                 (unsigned long long)s->id, v->opts.idle_timeout_ms,
                 unsent > 0 ? ", its peer reading nothing" : "");
      /* Silent both ways: a graceful close, so queued sends still leave
       * (bounded by disconnect_timeout_ms). Bytes stuck behind a peer that
       * reads nothing would only hold memory until then: reset. */
      cport__session_close(
          s, CPORT_EIDLE, NULL,
          unsent > 0 ? CPORT__CLOSE_RESET : CPORT__CLOSE_GRACEFUL);
      break;
    }
    case CPORT__TIMEOUT_HANDSHAKE:
      s = (cport_session_t*)((char*)cport__container_of(e, session_tls_t,
                                                        timed) -
                             v->layout.tls_off);
      cport__log(CPORT_LOG_DEBUG,
                 "session %llu: TLS handshake not complete after %u ms",
                 (unsigned long long)s->id, v->opts.tls_handshake_timeout_ms);
      cport__session_close(s, UV_ETIMEDOUT, "TLS handshake timed out",
                           CPORT__CLOSE_FORCE);
      break;
    case CPORT__TIMEOUT_PROXY:
      s = (cport_session_t*)((char*)cport__container_of(e, session_proxy_t,
                                                        timed) -
                             v->layout.proxy_off);
      session_proxy_refuse(s, UV_ETIMEDOUT, "PROXY header not complete in time");
      break;
    default:
      break;
  }
}


/* ---- requests through the mailbox ---- */

static void session_disconnect_here(cport_session_t* s, const char* cause) {
  if (s->state == S_CONNECTED || s->state == S_HANDSHAKE ||
      s->state == S_PROXY || s->state == S_CONNECTING || s->state == S_INIT)
    cport__session_close(s, CPORT_ELOCAL,
                         cause != NULL ? cause : cport_strerror(CPORT_ELOCAL),
                         CPORT__CLOSE_GRACEFUL);
}


static void session_msg_run(cport__msg_t* m, const cport__msg_t* next);

/* Post `r` (what its op asks of `s`) to the session's loop. The entry
 * holds a reference to `s` until it has run. */
static void session_post(cport_session_t* s, cport__send_req_t* r) {
  r->req.data = s;
  r->msg.run = session_msg_run;
  cport_session_ref(s);
  cport__loop_post(VIEW(s)->lp, &r->msg);
}


/* Non-zero if mailbox entry `m` is a send to `s`. */
static int session_msg_is_send_to(const cport__msg_t* m,
                                  const cport_session_t* s) {
  const cport__send_req_t* r;
  if (m == NULL || m->run != session_msg_run)
    return 0;
  r = cport__container_of(m, cport__send_req_t, msg);
  return r->op == CPORT__OP_SEND && r->req.data == s;
}


/* The loop runs a request another call posted for a session. */
static void session_msg_run(cport__msg_t* m, const cport__msg_t* next) {
  cport__send_req_t* r = cport__container_of(m, cport__send_req_t, msg);
  cport_session_t* s = r->req.data;
  switch ((cport__send_op_t)r->op) {
    case CPORT__OP_SEND:
      /* A session flushing its disconnect takes the sends posted before
       * the disconnect began: their entries come before its shutdown's. */
      if (s->state != S_CONNECTED && s->state != S_FLUSHING) {
        /* Disconnected since the call: dropped like the queued sends of a
         * forced close. */
        session_unqueue(s, cport__send_req_charge(r));
        cport__send_req_put(&VIEW(s)->lp->send_pool, r);
        break;
      }
      CPORT__SVC_STAT_ADD(SVC(s), sends, 1);
      /* Consecutive sends to one session leave in one gathered write. */
      (void)session_push(s, r, !session_msg_is_send_to(next, s));
      break;
    case CPORT__OP_DISCONNECT:
      session_disconnect_here(s, r->len > 0 ? (const char*)r->data : NULL);
      cport__free(r);
      break;
    case CPORT__OP_SENDQ:
      cport__session_close(s, CPORT_ESENDQ, NULL, CPORT__CLOSE_RESET);
      cport__free(r);
      break;
    case CPORT__OP_RESUME:
      s->yielded = 0;
      cport__send_req_put(&VIEW(s)->lp->send_pool, r);
      /* A send-queue pause holds the kept packets until its own resume. */
      if (s->state != S_CONNECTED || s->paused)
        break;
      {
        /* The packets were held back, not posted: calls on_packet makes
         * come after the sends other threads made before them. */
        int was = cport__loop_callbacks_begin(VIEW(s)->lp, next);
        if (s->rbuf != NULL)
          session_deliver(s, NULL, 0); /* may use up the budget again */
        session_read_start(s);
        session_tls_drain(s); /* what TLS still holds, likewise */
        cport__loop_callbacks_end(VIEW(s)->lp, was);
      }
      break;
  }
  cport_session_unref(s); /* the entry's */
}


int cport_session_disconnect(cport_session_t* s, const char* cause) {
  cport__send_req_t* r;
  size_t n;
  if (s == NULL)
    return UV_EINVAL;
  if (cport__loop_direct(VIEW(s)->lp)) {
    session_disconnect_here(s, cause);
    return 0;
  }
  if (atomic_load_explicit(&s->pending, memory_order_acquire) & SEND_CLOSED)
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
  /* Sends made after this call returns are refused at once, on every
   * thread: they would otherwise leave after the disconnect's flush. */
  if (atomic_fetch_or_explicit(&s->pending, SEND_CLOSED,
                               memory_order_acq_rel) &
      SEND_CLOSED) {
    cport__free(r); /* another call got there first */
    return 0;
  }
  session_post(s, r);
  return 0;
}


/* ---- receive ---- */

static void session_alloc_cb(uv_handle_t* handle,
                             size_t suggested,
                             uv_buf_t* buf) {
  cport_session_t* s = SESSION_OF(handle);
  char* chunk = cport__loop_read_chunk(VIEW(s)->lp);
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
  /* As for packets: the receive buffer may call on_recv more than once per
   * read. */
  if (cport__service_phase(SVC(s)) != CPORT__PHASE_RUNNING)
    return CPORT__RECV_STOP;
  if (VIEW(s)->opts.cbs.on_recv != NULL) {
    s->in_recv = 1;
    *consumed = VIEW(s)->opts.cbs.on_recv(s, data, len);
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


/* One delivery of bytes to a packet session, with its packet_budget. */
typedef struct session_feed_s {
  cport_session_t* s;
  unsigned left;   /* packets on_packet may still get this round */
  int exhausted;   /* the budget is used up */
} session_feed_t;

/* One whole packet: on_packet, whose sends may pause reading like
 * on_recv's. Stops delivery once the session is paused or ending, or has
 * had its packet_budget for this round. */
static int session_on_packet(void* ctx,
                             unsigned id,
                             const uint8_t* payload,
                             size_t len) {
  session_feed_t* feed = ctx;
  cport_session_t* s = feed->s;
  /* A stop or destroy made on another loop meanwhile ends delivery between
   * two packets of one read, as it does between reads. */
  if (cport__service_phase(SVC(s)) != CPORT__PHASE_RUNNING)
    return 1;
  CPORT__SVC_STAT_ADD(SVC(s), packets_in, 1);
  s->in_recv = 1;
  VIEW(s)->opts.cbs.on_packet(s, id, payload, len);
  s->in_recv = 0;
  /* The packet layer counts a packet taken once this is called, so the
   * budget is checked after the call, not before. */
  if (--feed->left == 0)
    feed->exhausted = 1;
  return s->state != S_CONNECTED || s->paused || feed->exhausted;
}


static int session_consume_packets(void* ctx,
                                   const uint8_t* data,
                                   size_t len,
                                   size_t* consumed) {
  session_feed_t* feed = ctx;
  cport_session_t* s = feed->s;
  int rc;
  /* A pause holds back the packets already received, not just new reads,
   * so that on_packet's replies wait for the queue to drain. */
  *consumed = 0;
  if (s->paused)
    return 0;
  rc = cport__packet_consume(&VIEW(s)->opts.packet, data, len, session_on_packet,
                             feed, consumed);
  if (rc != 0) {
    cport__session_close(s, rc, NULL, CPORT__CLOSE_GRACEFUL);
    return CPORT__RECV_STOP;
  }
  if (s->state != S_CONNECTED)
    return CPORT__RECV_STOP;
  return 0;
}


static size_t session_need_packet(void* ctx, const uint8_t* data, size_t len) {
  session_feed_t* feed = ctx;
  return cport__packet_need(&VIEW(feed->s)->opts.packet, data, len);
}


static const cport__recv_ops_t session_raw_ops = {session_consume_raw, NULL};
static const cport__recv_ops_t session_packet_ops = {session_consume_packets,
                                                     session_need_packet};


/* The session used up its packet_budget with whole packets kept: stop
 * reading and come back for them through the loop's mailbox, behind what
 * the loop has to do meanwhile (other sessions' reads in this round
 * included). Returns 0, or UV_ENOMEM when the request cannot be made. */
static int session_yield(cport_session_t* s) {
  cport__send_req_t* r;
  if (s->yielded)
    return 0;
  /* The loop's own thread: a pooled block, no malloc per yield. */
  r = cport__send_req_get(&VIEW(s)->lp->send_pool, 0);
  if (r == NULL)
    return UV_ENOMEM;
  r->op = CPORT__OP_RESUME;
  s->yielded = 1;
  if (s->reading) {
    uv_read_stop(&s->io.stream);
    s->reading = 0;
  }
  session_post(s, r);
  return 0;
}


/* Hand `len` new bytes (0: only the kept ones, again) to the consumer. */
static void session_deliver(cport_session_t* s,
                            const uint8_t* data,
                            size_t len) {
  const cport__service_view_t* v = VIEW(s);
  int rc;
  /* A stop or destroy made on another loop reaches this one later; the
   * service's callbacks end with the call, so received bytes wait in
   * neither on_recv nor the buffer for it. */
  if (cport__service_phase(SVC(s)) != CPORT__PHASE_RUNNING)
    return;
  if (v->opts.cbs.on_packet != NULL) {
    /* At most one partial packet, plus one read held back by a pause or
     * the budget (the sum saturates where size_t has 32 bits). */
    size_t max = v->opts.packet.max_packet;
    size_t limit =
        max > SIZE_MAX - CPORT__READ_CHUNK ? SIZE_MAX : max + CPORT__READ_CHUNK;
    session_feed_t feed;
    feed.s = s;
    for (;;) {
      feed.left = v->opts.packet_budget > 0 ? v->opts.packet_budget : UINT_MAX;
      feed.exhausted = 0;
      rc = cport__recv_feed(&s->rbuf, limit, data, len, &session_packet_ops,
                            &feed);
      if (rc != 0 || !feed.exhausted || s->state != S_CONNECTED ||
          s->rbuf == NULL || session_yield(s) == 0)
        break;
      /* No memory to come back later: the next budget's worth now. */
      data = NULL;
      len = 0;
    }
  } else {
    rc = cport__recv_feed(&s->rbuf, v->opts.recv_buffer_limit, data, len,
                          &session_raw_ops, s);
  }
  if (rc == CPORT_ERECVFULL)
    cport__session_close(s, rc, NULL, CPORT__CLOSE_GRACEFUL);
  else if (rc == UV_ENOMEM)
    cport__session_close(s, rc, NULL, CPORT__CLOSE_FORCE);
}


static void session_tls_eof(cport_session_t* s);
static void session_tls_input(cport_session_t* s,
                              const uint8_t* data,
                              size_t len);
static void session_proxy_input(cport_session_t* s,
                                const uint8_t* data,
                                size_t len);

static void session_read_cb(uv_stream_t* stream,
                            ssize_t nread,
                            const uv_buf_t* buf) {
  cport_session_t* s = SESSION_OF(stream);
  if (nread == 0)
    return; /* EAGAIN */
  if (nread < 0) {
    /* A peer that closes its write side still gets every byte queued for
     * it: flush, then close. Any other error ends the session at once. */
    if (nread == UV_EOF && session_conn(s) != NULL)
      session_tls_eof(s);
    else
      cport__session_close(
          s, (int)nread, NULL,
          nread == UV_EOF ? CPORT__CLOSE_GRACEFUL : CPORT__CLOSE_FORCE);
    return;
  }
  if (s->state == S_PROXY) {
    session_proxy_input(s, (const uint8_t*)buf->base, (size_t)nread);
    return;
  }
  if (session_conn(s) != NULL) {
    session_touch(s);
    session_tls_input(s, (const uint8_t*)buf->base, (size_t)nread);
    return;
  }
  CPORT__SVC_STAT_ADD(SVC(s), bytes_in, (uint64_t)nread);
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
  const cport_service_opts_t* o = &VIEW(s)->opts;
  if (s->reading && s->in_recv &&
      o->send_queue_policy == CPORT_SENDQ_PAUSE_READ &&
      session_queued(s) >= o->send_queue_limit) {
    uv_read_stop(&s->io.stream);
    s->reading = 0;
    s->paused = 1;
    CPORT__SVC_STAT_ADD(SVC(s), pauses, 1);
  }
}


static void session_read_start(cport_session_t* s) {
  int rc;
  /* A session that used up its packet budget reads again when it comes
   * back for the packets it kept (CPORT__OP_RESUME). */
  if (s->reading || s->yielded ||
      (s->state != S_CONNECTED && s->state != S_HANDSHAKE &&
       s->state != S_PROXY))
    return;
  rc = uv_read_start(&s->io.stream, session_alloc_cb, session_read_cb);
  if (rc != 0) {
    cport__session_close(s, rc, NULL, CPORT__CLOSE_FORCE);
    return;
  }
  s->reading = 1;
}


static void session_established(cport_session_t* s);
static void session_tls_begin(cport_session_t* s);
static void session_up(cport_session_t* s);
static void session_proxy_begin(cport_session_t* s);
static int session_proxy_send(cport_session_t* s);

/* A local endpoint's session is up: its peer's credentials, then TLS or
 * on_connected. Its peer address is the endpoint itself
 * (cport_session_peer_addr), so nothing is read for it. */
static void session_local_start(cport_session_t* s) {
  const cport__service_view_t* v = VIEW(s);
  session_local_t* l = session_local(s);
  uv_os_fd_t fd;
  /* Best effort: a platform that does not say leaves -1, and the
   * connection itself is not at fault. */
  if (uv_fileno(&s->io.handle, &fd) == 0)
    (void)cport__platform_peer_cred(fd, v->kind == CPORT_SERVICE_SERVER,
                                    &l->cred);
  session_up(s);
}

void cport__session_start(cport_session_t* s) {
  cport_service_t* svc = SVC(s);
  cport__service_view_t* v = cport__service_view(svc);
  struct sockaddr_storage peer;
  int len = (int)sizeof(peer);
  int rc;
  if (!cport__service_admit(svc)) {
    /* Stopped or destroyed, maybe on another loop, since the connection
     * was accepted: never reported. */
    cport__session_close(s, CPORT_ESTOPPED, NULL, CPORT__CLOSE_FORCE);
    return;
  }
  if (v->layout.local) {
    session_local_start(s);
    return;
  }
  rc = uv_tcp_getpeername(&s->io.tcp, (struct sockaddr*)&peer, &len);
  if (rc != 0 && v->kind == CPORT_SERVICE_CLIENT) {
    /* The peer is the address the client connected to: the service's, or
     * the one of a host name's that cport__session_connect_to() kept. */
    const struct sockaddr* to = cport_addr_sockaddr(cport__service_addr(svc));
    if (to == NULL)
      to = (const struct sockaddr*)(const void*)s->peer;
    len = to->sa_family == AF_INET6 ? (int)sizeof(struct sockaddr_in6)
                                    : (int)sizeof(struct sockaddr_in);
    memcpy(&peer, to, (size_t)len);
    rc = 0;
  }
  if (rc != 0 || (size_t)len > sizeof(s->peer)) {
    /* An accepted connection whose peer is already gone (reset before the
     * session could start): nothing to report, cport_session_peer_addr()
     * could not answer. */
    CPORT__SVC_STAT_ADD(svc, accept_errors, 1);
    cport__session_close(s, rc != 0 ? rc : UV_EINVAL, NULL,
                         CPORT__CLOSE_FORCE);
    return;
  }
  memcpy(s->peer, &peer, (size_t)len);
  if (v->opts.tcp_nodelay)
    (void)uv_tcp_nodelay(&s->io.tcp, 1); /* best effort, like libuv's own */
  if (v->opts.tcp_keepalive_s > 0)
    (void)uv_tcp_keepalive(&s->io.tcp, 1, v->opts.tcp_keepalive_s);
  if (v->layout.proxy_off != 0) {
    session_proxy_begin(s);
    return;
  }
  if (v->opts.proxy_send != CPORT_PROXY_OFF && session_proxy_send(s) != 0)
    return;
  session_up(s);
}


/* The connection is ready for the application's protocol: TLS's
 * handshake first, or on_connected at once. */
static void session_up(cport_session_t* s) {
  if (VIEW(s)->layout.tls_off != 0)
    session_tls_begin(s);
  else
    session_established(s);
}


/* The session is up (after its TLS handshake, if any): report
 * on_connected and read. */
static void session_established(cport_session_t* s) {
  cport_service_t* svc = SVC(s);
  cport__service_view_t* v = cport__service_view(svc);
  if (v->layout.idle_off != 0)
    cport__timeouts_add(&v->timeouts, CPORT__TIMEOUT_IDLE,
                        &session_idle(s)->timed);
  s->state = S_CONNECTED;
  s->reported_connected = 1;
  /* on_connected may hand the session to other threads. */
  atomic_fetch_and_explicit(&s->pending, ~SEND_CLOSED, memory_order_acq_rel);
  CPORT__SVC_STAT_ADD(svc, connected, 1);
  cport__service_active_add(svc, 1);
  if (v->opts.cbs.on_connected != NULL)
    v->opts.cbs.on_connected(s);
  session_read_start(s);
}


/* ---- TLS ---- */

/* Most plaintext one round of session_tls_pump() decrypts before it hands
 * it on: the chunk, or less for tests (cport__session_test_tls_fill), so
 * that a pause leaves plaintext in the engine without a 64 KiB read. */
static size_t session_tls_fill = CPORT__READ_CHUNK;

void cport__session_test_tls_fill(size_t n) {
  session_tls_fill = n == 0 || n > CPORT__READ_CHUNK ? CPORT__READ_CHUNK : n;
}


/* Close a session whose TLS engine failed with `rc`, with the engine's
 * reason as the cause. */
static void session_tls_close(cport_session_t* s, int rc) {
  const char* cause = cport__tls_conn_cause(session_conn(s));
  if (s->state == S_HANDSHAKE)
    cport__log(CPORT_LOG_DEBUG, "session %llu: TLS handshake failed: %s",
               (unsigned long long)s->id,
               cause != NULL ? cause : cport_strerror(rc));
  cport__session_close(s, rc, rc == UV_ENOMEM ? NULL : cause,
                       CPORT__CLOSE_FORCE);
}


/* The handshake has completed: on_connected, unless the service stopped
 * meanwhile. */
static void session_tls_done(cport_session_t* s) {
  cport_service_t* svc = SVC(s);
  session_tls_t* t = session_tls(s);
  t->handshaking = 0;
  cport__timeouts_remove(&VIEW(s)->timeouts, CPORT__TIMEOUT_HANDSHAKE,
                         &t->timed);
  CPORT__SVC_STAT_ADD(svc, tls_handshakes, 1);
  if (cport__tls_conn_resumed(t->conn))
    CPORT__SVC_STAT_ADD(svc, tls_resumed, 1);
  if (!cport__service_admit(svc)) {
    cport__session_close(s, CPORT_ESTOPPED, NULL, CPORT__CLOSE_FORCE);
    return;
  }
  session_established(s);
}


/* Run the engine on what it holds: the handshake, then plaintext for the
 * consumer for as long as the session reads (a send-queue pause or a used
 * packet budget stops it; session_tls_drain goes on later), writing what
 * the engine makes on the way (handshake records, KeyUpdate replies). */
static void session_tls_pump(cport_session_t* s) {
  cport__tls_conn_t* conn = session_conn(s);
  uint8_t* chunk;
  int rc, w;
  if (s->state == S_HANDSHAKE) {
    rc = cport__tls_conn_handshake(conn);
    w = session_tls_flush(s, 0, 0);
    if (rc != 0 && rc != CPORT__TLS_WANT) {
      session_tls_close(s, rc);
      return;
    }
    if (w != 0) {
      cport__session_close(s, w, NULL, CPORT__CLOSE_FORCE);
      return;
    }
    if (rc == CPORT__TLS_WANT)
      return;
    session_tls_done(s);
  }
  chunk = (uint8_t*)cport__loop_plain_chunk(VIEW(s)->lp);
  if (chunk == NULL && s->state == S_CONNECTED) {
    cport__session_close(s, UV_ENOMEM, NULL, CPORT__CLOSE_FORCE);
    return;
  }
  while (s->state == S_CONNECTED && s->reading) {
    size_t got = 0;
    size_t n;
    /* Fill the chunk, record by record, so that on_recv sees what one
     * read brought in one call, as over TCP. */
    while (got < session_tls_fill &&
           (rc = cport__tls_conn_read(conn, chunk + got,
                                      session_tls_fill - got, &n)) == 0)
      got += n;
    w = session_tls_flush(s, 0, 0);
    if (got > 0) {
      CPORT__SVC_STAT_ADD(SVC(s), bytes_in, (uint64_t)got);
      session_deliver(s, chunk, got);
    }
    if (s->state != S_CONNECTED)
      return;
    if (w != 0) {
      cport__session_close(s, w, NULL, CPORT__CLOSE_FORCE);
      return;
    }
    if (rc == CPORT__TLS_WANT)
      return;
    if (rc == UV_EOF) {
      /* close_notify: the peer's deliberate end, like a FIN over TCP. */
      cport__session_close(s, UV_EOF, NULL, CPORT__CLOSE_GRACEFUL);
      return;
    }
    if (rc != 0) {
      session_tls_close(s, rc);
      return;
    }
  }
}


/* The connection is up: start the handshake (a client sends its hello
 * now), timed by tls_handshake_timeout_ms. */
static void session_tls_begin(cport_session_t* s) {
  cport__service_view_t* v = VIEW(s);
  session_tls_t* t = session_tls(s);
  char host[CPORT_ADDR_STRLEN];
  const char* peer = NULL;
  void** resume = NULL;
  int rc;
  if (v->kind == CPORT_SERVICE_CLIENT) {
    const cport_addr_t* a = cport__service_addr(SVC(s));
    peer = v->opts.tls_name;
    /* A local endpoint's client always has tls_name (service_check_local):
     * a path is no name to verify. */
    if (peer == NULL && cport_addr_is_name(a))
      peer = cport_addr_host(a);
    else if (peer == NULL && cport_addr_format_host(a, host, sizeof(host)) == 0)
      peer = host;
    resume = &v->tls_resume;
    (void)cport__tls_insecure(v->opts.tls); /* warns once per context */
  }
  /* From here on, an end before on_connected is a failed handshake. */
  t->handshaking = 1;
  s->state = S_HANDSHAKE;
  rc = cport__tls_conn_new(&t->conn, v->opts.tls, &v->lp->tls_pool, peer,
                           resume);
  if (rc != 0) {
    cport__session_close(s, rc, NULL, CPORT__CLOSE_FORCE);
    return;
  }
  cport__timeouts_add(&v->timeouts, CPORT__TIMEOUT_HANDSHAKE, &t->timed);
  session_read_start(s);
  if (s->state == S_HANDSHAKE)
    session_tls_pump(s);
}


/* Ciphertext `data` was read: run the engine on it, and keep what it
 * could not take yet (the session paused) once `data` goes back to the
 * loop's read chunk. */
static void session_tls_input(cport_session_t* s,
                              const uint8_t* data,
                              size_t len) {
  cport__tls_conn_t* conn = session_conn(s);
  cport__tls_conn_input(conn, data, len);
  session_tls_pump(s);
  if (s->state != S_CONNECTED && s->state != S_HANDSHAKE) {
    cport__tls_conn_input(conn, NULL, 0); /* ending: nobody reads it */
    return;
  }
  if (cport__tls_conn_keep(conn) != 0)
    cport__session_close(s, UV_ENOMEM, NULL, CPORT__CLOSE_FORCE);
}


/* Reading resumes: what the engine holds goes first, since the socket may
 * have nothing more to wake the session with. */
static void session_tls_drain(cport_session_t* s) {
  cport__tls_conn_t* conn = session_conn(s);
  if (conn != NULL && s->reading && cport__tls_conn_has_input(conn))
    session_tls_pump(s);
}


/* The peer closed the TCP connection. After its close_notify the session
 * is closing already; without one the data may have been cut short by
 * anyone on the path, which the cause says. */
static void session_tls_eof(cport_session_t* s) {
  if (s->state == S_HANDSHAKE)
    cport__session_close(s, CPORT_ETLS,
                         "TLS: the peer closed during the handshake",
                         CPORT__CLOSE_FORCE);
  else
    cport__session_close(s, CPORT_ETLSTRUNCATED, NULL, CPORT__CLOSE_GRACEFUL);
}


/* A session whose handshake began ended before on_connected: a client's
 * connect attempt failed (a stop or destroy cancelled it); a server's
 * connection goes unreported but counted. */
static void session_tls_ended(cport_session_t* s) {
  cport_service_t* svc = SVC(s);
  int code = s->code;
  if (code == CPORT_ESTOPPED || code == CPORT_ELOCAL)
    code = UV_ECANCELED;
  else
    CPORT__SVC_STAT_ADD(svc, tls_failures, 1);
  if (VIEW(s)->kind == CPORT_SERVICE_CLIENT)
    cport__service_connect_failed(svc, session_tls(s)->attempts, code);
}


/* ---- the PROXY protocol ---- */

/* A kept sockaddr (`peer`, or one of the PROXY part's) copied out where it
 * is aligned for any socket address: the kept bytes are only 4-byte
 * aligned. All zero (no address family) until written. */
static void session_kept_sockaddr(const uint32_t kept[7],
                                  struct sockaddr_storage* ss) {
  memset(ss, 0, sizeof(*ss));
  memcpy(ss, kept, 7 * sizeof(uint32_t));
}


static void session_proxy_free(cport_session_t* s) {
  session_proxy_t* p = session_proxy(s);
  if (p == NULL)
    return;
  cport__free(p->partial);
  cport__free(p->tlvs);
  p->partial = NULL;
  p->tlvs = NULL;
}


/* A connection whose header was refused, or did not come in time: closed
 * before on_connected, counted, and logged for whoever debugs a balancer's
 * configuration. */
static void session_proxy_refuse(cport_session_t* s,
                                 int code,
                                 const char* cause) {
  char from[CPORT_ADDR_STRLEN] = "?";
  cport_addr_t a;
  if (code == CPORT_EPROXYUNTRUSTED)
    CPORT__SVC_STAT_ADD(SVC(s), proxy_untrusted, 1);
  else
    CPORT__SVC_STAT_ADD(SVC(s), proxy_errors, 1);
  if (cport__log_enabled(CPORT_LOG_DEBUG) &&
      cport_session_peer_addr(s, &a) == 0)
    (void)cport_addr_format(&a, from, sizeof(from));
  cport__log(CPORT_LOG_DEBUG, "session %llu from %s: %s: %s",
             (unsigned long long)s->id, from, cport_strerror(code), cause);
  cport__session_close(s, code, cause, CPORT__CLOSE_FORCE);
}


/* The most bytes a header may take before it is complete: a v1 line is
 * bounded by its own rule whatever proxy_max_header says. */
static size_t session_proxy_cap(const cport_service_opts_t* o) {
  size_t cap = o->proxy_max_header > CPORT_PROXY_V1_MAX ? o->proxy_max_header
                                                        : CPORT_PROXY_V1_MAX;
  return cap < CPORT_PROXY_V2_MAX ? cap : CPORT_PROXY_V2_MAX;
}


/* An accepted connection of a PROXY server: refused at once from an
 * address not trusted to send headers, else read for its header, timed by
 * proxy_timeout_ms. */
static void session_proxy_begin(cport_session_t* s) {
  cport__service_view_t* v = VIEW(s);
  const cport__service_view_t* root = cport__service_view(v->root);
  struct sockaddr_storage peer;
  s->state = S_PROXY;
  session_kept_sockaddr(s->peer, &peer);
  if (root->proxy_nets != NULL &&
      !cport__proxy_nets_match(root->proxy_nets, root->proxy_nnets,
                               (const struct sockaddr*)&peer)) {
    session_proxy_refuse(s, CPORT_EPROXYUNTRUSTED,
                         "PROXY header from an address not in "
                         "opts.proxy_trusted");
    return;
  }
  cport__timeouts_add(&v->timeouts, CPORT__TIMEOUT_PROXY,
                      &session_proxy(s)->timed);
  session_read_start(s);
}


/* Keep what header `h` says. The client's address takes the TCP peer's
 * place, which stays available as the balancer's. */
static int session_proxy_apply(cport_session_t* s,
                               const cport_proxy_header_t* h) {
  session_proxy_t* p = session_proxy(s);
  if (h->tlvs_len > 0) {
    p->tlvs = cport__malloc(h->tlvs_len);
    if (p->tlvs == NULL)
      return UV_ENOMEM;
    memcpy(p->tlvs, h->tlvs, h->tlvs_len);
    p->tlvs_len = h->tlvs_len;
  }
  p->version = (uint8_t)h->version;
  p->local = h->local != 0;
  if (!p->local) {
    const struct sockaddr* src = cport_addr_sockaddr(&h->src);
    const struct sockaddr* dst = cport_addr_sockaddr(&h->dst);
    size_t len = src->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                            : sizeof(struct sockaddr_in);
    memcpy(p->via, s->peer, sizeof(p->via));
    memset(s->peer, 0, sizeof(s->peer));
    memcpy(s->peer, src, len);
    memcpy(p->dst, dst, len);
  }
  return 0;
}


/* Bytes arrived before the header was complete. Nothing reaches TLS or
 * the application before it is: what follows it in the same read goes on
 * from there once the session is up. */
static void session_proxy_input(cport_session_t* s,
                                const uint8_t* data,
                                size_t len) {
  const cport_service_opts_t* o = &VIEW(s)->opts;
  session_proxy_t* p = session_proxy(s);
  size_t cap = session_proxy_cap(o);
  size_t before = p->have;
  const uint8_t* bytes = data;
  size_t avail = len;
  cport_proxy_header_t h;
  const char* cause = NULL;
  size_t used = 0;
  int rc;
  if (before > 0) {
    /* The header's first bytes came in earlier reads. */
    size_t take = len < cap - before ? len : cap - before;
    memcpy(p->partial + before, data, take);
    p->have += take;
    bytes = p->partial;
    avail = p->have;
  }
  rc = cport_proxy_parse(bytes, avail, o->proxy_protocol, o->proxy_max_header,
                         &h, &used, &cause);
  if (rc == CPORT_EAGAIN && avail >= cap)
    rc = CPORT_EPROXYSIZE; /* cannot happen while the parser keeps `max` */
  if (rc == CPORT_EAGAIN) {
    if (before == 0) {
      p->partial = cport__malloc(cap);
      if (p->partial == NULL) {
        cport__session_close(s, UV_ENOMEM, NULL, CPORT__CLOSE_FORCE);
        return;
      }
      memcpy(p->partial, data, len);
      p->have = len;
    }
    return;
  }
  if (rc != 0) {
    session_proxy_refuse(s, rc, cause != NULL ? cause : cport_strerror(rc));
    return;
  }
  rc = session_proxy_apply(s, &h);
  cport__free(p->partial); /* h.tlvs may point into it: applied first */
  p->partial = NULL;
  p->have = 0;
  if (rc != 0) {
    cport__session_close(s, rc, NULL, CPORT__CLOSE_FORCE);
    return;
  }
  cport__timeouts_remove(&VIEW(s)->timeouts, CPORT__TIMEOUT_PROXY, &p->timed);
  CPORT__SVC_STAT_ADD(SVC(s), proxy_headers, 1);
  if (!cport__service_admit(SVC(s))) {
    /* Stopped on another loop while the header came: never reported. */
    cport__session_close(s, CPORT_ESTOPPED, NULL, CPORT__CLOSE_FORCE);
    return;
  }
  /* The header was complete with this read, so it ends inside it. */
  data += used - before;
  len -= used - before;
  session_up(s);
  if (len == 0)
    return;
  if (session_conn(s) != NULL) {
    if (s->state == S_HANDSHAKE || s->state == S_CONNECTED) {
      session_touch(s);
      session_tls_input(s, data, len);
    }
  } else if (s->state == S_CONNECTED) {
    CPORT__SVC_STAT_ADD(SVC(s), bytes_in, (uint64_t)len);
    session_touch(s);
    session_deliver(s, data, len);
  }
}


/* A client's header, written before anything else (TLS's hello
 * included) when the kernel cannot take it at once. */
typedef struct session_proxy_out_s {
  uv_write_t req;
  uint8_t bytes[CPORT_PROXY_V1_MAX];
} session_proxy_out_t;

static void session_proxy_sent_cb(uv_write_t* req, int status) {
  cport_session_t* s = req->data;
  cport__free(cport__container_of(req, session_proxy_out_t, req));
  if (status < 0 && status != UV_ECANCELED)
    cport__session_close(s, status, NULL, CPORT__CLOSE_FORCE);
  cport_session_unref(s);
}


/* Clients with opts.proxy_send: a header naming the connection's own
 * endpoints. libuv refuses uv_try_write while a write is queued, so
 * whatever the session writes next leaves after it. Returns 0, or the
 * error the attempt failed with (the session is then closed and the
 * attempt reported). */
static int session_proxy_send(cport_session_t* s) {
  const cport__service_view_t* v = VIEW(s);
  struct sockaddr_storage local;
  int namelen = (int)sizeof(local);
  cport_addr_t src;
  cport_addr_t dst;
  session_proxy_out_t* out;
  uint8_t hdr[CPORT_PROXY_V1_MAX];
  uv_buf_t buf;
  int n;
  int rc = uv_tcp_getsockname(&s->io.tcp, (struct sockaddr*)&local, &namelen);
  if (rc == 0)
    rc = cport_addr_from_sockaddr(&src, (const struct sockaddr*)&local);
  if (rc == 0)
    rc = cport_session_peer_addr(s, &dst);
  n = rc != 0 ? rc
              : cport_proxy_encode(hdr, sizeof(hdr), v->opts.proxy_send, &src,
                                   &dst, NULL, 0, 0);
  if (n > 0) {
    buf = uv_buf_init((char*)hdr, (unsigned)n);
    rc = uv_try_write(&s->io.stream, &buf, 1);
    if (rc == n)
      return 0;
    if (rc >= 0 || rc == UV_EAGAIN) {
      size_t done = rc > 0 ? (size_t)rc : 0;
      out = cport__malloc(sizeof(*out));
      rc = UV_ENOMEM;
      if (out != NULL) {
        memcpy(out->bytes, hdr + done, (size_t)n - done);
        buf = uv_buf_init((char*)out->bytes, (unsigned)((size_t)n - done));
        out->req.data = s;
        rc = uv_write(&out->req, &s->io.stream, &buf, 1,
                      session_proxy_sent_cb);
        if (rc == 0) {
          cport_session_ref(s); /* the request's */
          return 0;
        }
        cport__free(out);
      }
    }
  } else {
    rc = n;
  }
  cport__session_close(s, rc, "could not send the PROXY header",
                       CPORT__CLOSE_FORCE);
  /* Not up yet: a failed attempt of its connect. */
  cport__service_connect_failed(SVC(s), 0, rc);
  return rc;
}


/* ---- connect (client services) ---- */

static void session_connect_cb(uv_connect_t* req, int status) {
  session_connect_t* c = cport__container_of(req, session_connect_t, req);
  cport_session_t* s = req->data;
  cport_service_t* svc = SVC(s);
  unsigned attempts = c->attempts;
  int timed_out = c->timed_out;
  cport__attempt_t* a =
      cport_addr_is_name(cport__service_addr(svc))
          ? cport__container_of(c, session_connect_to_t, c)->attempt
          : NULL;
  cport__timeouts_remove(&cport__service_view(svc)->timeouts,
                         CPORT__TIMEOUT_CONNECT, &c->timed);
  cport__free(c);
  if (status == 0 && s->state == S_CONNECTING) {
    size_t off = cport__service_view(svc)->layout.client_off;
    if (off != 0) {
      session_client_t* area = (session_client_t*)((char*)s + off);
      area->connected_ms = cport__clock_ms();
      area->attempts = attempts;
    }
    if (a != NULL)
      cport__attempt_connected(a, s);
    if (session_tls(s) != NULL)
      session_tls(s)->attempts = attempts;
    cport__session_start(s);
  } else {
    if (timed_out)
      status = UV_ETIMEDOUT;
    else if (status == 0)
      status = UV_ECANCELED; /* closed while the connect was completing */
    cport__session_close(s, status, NULL, CPORT__CLOSE_FORCE);
    if (a != NULL)
      cport__attempt_failed(a, s, status); /* the next one, or the report */
    else
      cport__service_connect_failed(svc, attempts, status);
  }
  cport_session_unref(s);
}


#ifndef _WIN32
static void session_connect_local_run(cport__msg_t* m,
                                      const cport__msg_t* next) {
  session_connect_local_t* l =
      cport__container_of(m, session_connect_local_t, msg);
  (void)next;
  session_connect_cb(&l->c.req, l->status);
}
#endif


/* Begin `c`'s connect of a local session `s` to its service's endpoint;
 * the outcome comes to session_connect_cb. Returns 0 (a failure to
 * connect is reported there, as libuv reports it). */
static int session_connect_local(cport_session_t* s, session_connect_t* c) {
  const char* path = cport_addr_path(cport__service_addr(SVC(s)));
#ifdef _WIN32
  uv_pipe_connect(&c->req, SESSION_PIPE(s), path, session_connect_cb);
#else
  session_connect_local_t* l =
      cport__container_of(c, session_connect_local_t, c);
  uv_os_sock_t sock;
  l->status = cport__socket_connect_local(path, &sock);
  if (l->status == 0) {
    l->status = uv_pipe_open(SESSION_PIPE(s), (uv_file)sock);
    if (l->status != 0)
      cport__socket_close(sock);
  }
  l->msg.run = session_connect_local_run;
  cport__loop_post(VIEW(s)->lp, &l->msg);
#endif
  return 0;
}


/* Connect `s` to `to` (NULL: its local endpoint) with request `c` (NULL:
 * out of memory), timed by connect_timeout_ms when `timed`. On failure the
 * session is closed and `c` freed. */
static int session_connect_with(cport_session_t* s,
                                session_connect_t* c,
                                unsigned attempts,
                                const struct sockaddr* to,
                                int timed) {
  int rc = UV_ENOMEM;
  s->state = S_CONNECTING;
  if (c != NULL) {
    c->req.data = s;
    c->attempts = attempts;
    cport_session_ref(s);
    rc = to == NULL
             ? session_connect_local(s, c)
             : uv_tcp_connect(&c->req, &s->io.tcp, to, session_connect_cb);
    if (rc == 0) {
      if (timed)
        cport__timeouts_add(&VIEW(s)->timeouts, CPORT__TIMEOUT_CONNECT,
                            &c->timed);
      return 0;
    }
    cport_session_unref(s);
    cport__free(c);
  }
  cport__session_close(s, rc, NULL, CPORT__CLOSE_FORCE);
  return rc;
}


int cport__session_connect(cport_session_t* s, unsigned attempts) {
  session_connect_t* c = cport__calloc(
      1, VIEW(s)->layout.local ? sizeof(session_connect_local_t) : sizeof(*c));
  return session_connect_with(s, c, attempts,
                              cport_addr_sockaddr(cport__service_addr(SVC(s))),
                              1);
}


int cport__session_connect_to(cport_session_t* s,
                              unsigned attempts,
                              const struct sockaddr* to,
                              cport__attempt_t* a) {
  session_connect_to_t* t = cport__calloc(1, sizeof(*t));
  /* Kept as the peer, should getpeername() fail once connected
   * (cport__session_start); nobody reads it before on_connected. */
  memcpy(s->peer, to,
         to->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                   : sizeof(struct sockaddr_in));
  if (t != NULL)
    t->attempt = a;
  return session_connect_with(s, t != NULL ? &t->c : NULL, attempts, to, 0);
}


/* ---- send ---- */

/* Non-zero if [data, data + len) lies in the loop's read chunk. Compared as
 * integers: the bytes may belong to any object. */
static int session_in_read_chunk(const cport__loop_t* lp,
                                 const void* data,
                                 size_t len) {
  uintptr_t chunk = (uintptr_t)lp->read_chunk;
  uintptr_t p = (uintptr_t)data;
  return chunk != 0 && p >= chunk && p - chunk <= CPORT__READ_CHUNK &&
         len <= CPORT__READ_CHUNK - (p - chunk);
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


/* What one send asks for: `hlen` bytes at `head` (a packet header, or
 * none), then `len` bytes at `data`; or, with `shared`, that buffer's bytes
 * (hlen is then 0), which requests reference instead of copying. */
typedef struct session_bytes_s {
  const uint8_t* head;
  size_t hlen;
  const void* data;
  size_t len;
  cport_buf_t* shared;
} session_bytes_t;

static size_t session_bytes_len(const session_bytes_t* b) {
  return b->hlen + b->len;
}


/* Bytes a request for `b` holds itself: none for a shared buffer. */
static size_t session_room(const session_bytes_t* b) {
  return b->shared != NULL ? 0 : session_bytes_len(b);
}


/* The admission every send passes, whichever thread makes it: refused with
 * UV_ENOTCONN once a disconnect has begun (or before on_connected, or once
 * the service is stopping), with
 * CPORT_ESENDQ when `queued` bytes already reach the limit. */
static int session_admit(cport_session_t* s, size_t pending) {
  /* A stop or destroy of the service, made on any loop, ends its sessions:
   * a send after it returned would only be dropped when the stop reaches
   * this session's loop. */
  if ((pending & SEND_CLOSED) ||
      cport__service_phase(SVC(s)) != CPORT__PHASE_RUNNING)
    return UV_ENOTCONN;
  if ((pending & ~SEND_FLAGS) >= VIEW(s)->opts.send_queue_limit)
    return CPORT_ESENDQ;
  return 0;
}


/* A send was refused for the limit: apply the policy. Under
 * CPORT_SENDQ_DISCONNECT the session is closed, at once when this call may
 * act on the loop, else by one request posted for the session however many
 * sends are refused. Under CPORT_SENDQ_PAUSE_READ a send made in on_recv
 * stops reading (on_recv keeps its bytes). Returns CPORT_ESENDQ. */
static int session_refuse(cport_session_t* s, int direct) {
  const cport__service_view_t* v = VIEW(s);
  if (v->opts.send_queue_policy == CPORT_SENDQ_DISCONNECT) {
    if (direct) {
      cport__session_close(s, CPORT_ESENDQ, NULL, CPORT__CLOSE_RESET);
    } else if (!(atomic_fetch_or_explicit(&s->pending, SEND_KILLED,
                                          memory_order_acq_rel) &
                 SEND_KILLED)) {
      cport__send_req_t* r = cport__send_req_alloc(0);
      if (r == NULL) {
        /* The next refusal tries again. */
        atomic_fetch_and_explicit(&s->pending, ~SEND_KILLED,
                                  memory_order_acq_rel);
      } else {
        r->op = CPORT__OP_SENDQ;
        session_post(s, r);
      }
    }
  } else if (cport__loop_is_mine(v->lp)) {
    session_pause_if_over_limit(s);
  }
  return CPORT_ESENDQ;
}


/* A request holding the send's bytes (copied, or a reference to the shared
 * buffer): from the loop's pool on the loop's thread (`mine`), else
 * allocated.
 * Returns NULL when out of memory. */
static cport__send_req_t* session_request(cport_session_t* s,
                                          const session_bytes_t* b,
                                          int copy,
                                          int mine) {
  cport__loop_t* lp = VIEW(s)->lp;
  size_t room = session_room(b);
  cport__send_req_t* r = mine ? cport__send_req_get(&lp->send_pool, room)
                              : cport__send_req_alloc(room);
  if (r == NULL)
    return NULL;
  r->len = (uint32_t)session_bytes_len(b);
  if (b->shared != NULL) {
    cport_buf_ref(b->shared);
    r->buf = b->shared;
  } else if (copy) {
    session_copy_parts(r->data, b->head, b->hlen, b->data, b->len);
  }
  return r;
}


/* TLS's direct write: nothing is queued or in flight, so the bytes are
 * encrypted now, straight from the caller's memory (a packet's header and
 * payload copied into one pooled request first, so that they make one
 * record as on the queued path), and their ciphertext written as a block
 * of its own: no request waits in the queue, as over TCP when the kernel
 * takes a send whole. Room for the ciphertext (and the header's copy) is
 * made before any byte is encrypted, so that UV_ENOMEM leaves the session
 * unharmed. Returns 0, or an error after which the session is being
 * closed. */
static int session_tls_send_direct(cport_session_t* s,
                                   const session_bytes_t* b) {
  cport__loop_t* lp = VIEW(s)->lp;
  cport__tls_conn_t* conn = session_conn(s);
  size_t len = session_bytes_len(b);
  const void* src = b->data;
  cport__send_req_t* r = NULL;
  int rc = cport__tls_conn_reserve(conn, len);
  if (rc != 0)
    return rc;
  if (b->hlen > 0) {
    r = session_request(s, b, 1, 1);
    if (r == NULL)
      return UV_ENOMEM;
    src = r->data;
  }
  CPORT__SVC_STAT_ADD(SVC(s), sends, 1);
  rc = cport__tls_conn_write(conn, src, len);
  if (r != NULL)
    cport__send_req_put(&lp->send_pool, r);
  if (rc == 0)
    rc = session_tls_flush(s, 0, (uint32_t)len);
  if (rc != 0) {
    cport__session_close(s, rc, cport__tls_conn_cause(conn),
                         CPORT__CLOSE_FORCE);
    return rc;
  }
  session_touch(s);
  session_pause_if_over_limit(s);
  return 0;
}


/* A send made where it may act at once (cport__port_direct). Into an empty
 * queue the bytes are first offered to the kernel during the call. */
static int session_send_direct(cport_session_t* s, const session_bytes_t* b) {
  cport_service_t* svc = SVC(s);
  cport__service_view_t* v = cport__service_view(svc);
  size_t len = session_bytes_len(b);
  size_t pending = atomic_load_explicit(&s->pending, memory_order_acquire);
  cport__send_req_t* r;
  int rc = session_admit(s, pending);
  if (rc != 0)
    return rc == CPORT_ESENDQ ? session_refuse(s, 1) : rc;
  if ((pending & ~SEND_FLAGS) == 0 && v->opts.cbs.on_send == NULL &&
      v->layout.tls_off != 0)
    return session_tls_send_direct(s, b);
  /* The request comes first, even when a direct write may not need it: a
   * send that cannot get one must fail before any byte has left, so that
   * UV_ENOMEM queues nothing and leaves the session unharmed. */
  r = session_request(s, b, 0, 1);
  if (r == NULL)
    return UV_ENOMEM;
  CPORT__SVC_STAT_ADD(svc, sends, 1);
  if ((pending & ~SEND_FLAGS) == 0 && v->opts.cbs.on_send == NULL) {
    /* Nothing queued: the kernel usually takes it all now. Bytes that lie
     * in the loop's read chunk (an echo or a relay from on_recv) are
     * cport's own shared buffer, which stays put for the whole call: the
     * request refers to them there and copies only what the kernel leaves.
     * A cport_buf_t is never copied. Any other bytes are copied first, as
     * the model wants. */
    int in_chunk = b->shared == NULL && b->hlen == 0 &&
                   session_in_read_chunk(v->lp, b->data, len);
    const uint8_t* src =
        b->shared != NULL || in_chunk ? (const uint8_t*)b->data : r->data;
    uv_buf_t buf = uv_buf_init((char*)src, (unsigned int)len);
    if (b->shared == NULL && !in_chunk)
      session_copy_parts(r->data, b->head, b->hlen, b->data, b->len);
    rc = uv_try_write(&s->io.stream, &buf, 1);
    CPORT__SVC_STAT_ADD(svc, writes, 1);
    if (rc > 0)
      session_touch(s);
    if (rc >= 0 && (size_t)rc == len) {
      CPORT__SVC_STAT_ADD(svc, bytes_out, len);
      cport__send_req_put(&v->lp->send_pool, r);
      return 0;
    }
    if (rc < 0 && rc != UV_EAGAIN) {
      cport__send_req_put(&v->lp->send_pool, r);
      cport__session_close(s, rc, NULL, CPORT__CLOSE_FORCE);
      return rc;
    }
    if (rc > 0)
      r->off = (uint32_t)rc;
    /* Only the bytes [off, len) are ever written from now on. */
    if (in_chunk)
      memcpy(r->data + r->off, src + r->off, len - r->off);
  } else if (b->shared == NULL) {
    session_copy_parts(r->data, b->head, b->hlen, b->data, b->len);
  }
  atomic_fetch_add_explicit(&s->pending, cport__send_req_charge(r),
                            memory_order_acq_rel);
  rc = session_push(s, r, 1);
  if (rc != 0)
    return rc;
  session_pause_if_over_limit(s);
  return 0;
}


/* A send that must follow what was posted before it: checked and counted
 * here, posted to the loop, which pushes it in call order. */
static int session_send_posted(cport_session_t* s,
                               const session_bytes_t* b,
                               int mine) {
  /* What session_request() will allocate, counted before the check, so
   * that concurrent senders see each other's sends against the limit. */
  size_t cost = cport__send_req_cost(
      session_room(b), b->shared != NULL ? session_bytes_len(b) : 0, mine);
  cport__send_req_t* r;
  size_t before =
      atomic_fetch_add_explicit(&s->pending, cost, memory_order_acq_rel);
  int rc = session_admit(s, before);
  if (rc != 0) {
    session_unqueue(s, cost);
    return rc == CPORT_ESENDQ ? session_refuse(s, 0) : rc;
  }
  r = session_request(s, b, 1, mine);
  if (r == NULL) {
    session_unqueue(s, cost);
    return UV_ENOMEM;
  }
  r->op = CPORT__OP_SEND;
  session_post(s, r);
  if (mine)
    session_pause_if_over_limit(s);
  return 0;
}


static int session_send(cport_session_t* s, const session_bytes_t* b) {
  cport__loop_t* lp = VIEW(s)->lp;
  int mine = cport__loop_is_mine(lp);
  if (mine && cport__loop_quiet(lp)) /* cport__port_direct() */
    return session_send_direct(s, b);
  return session_send_posted(s, b, mine);
}


int cport_session_send(cport_session_t* s, const void* data, size_t len) {
  session_bytes_t b = {NULL, 0, data, len, NULL};
  if (s == NULL || data == NULL || len == 0)
    return UV_EINVAL;
  /* uv_buf_t lengths are 32-bit on Windows. */
  if (len > UINT32_MAX)
    return UV_EINVAL;
  return session_send(s, &b);
}


int cport_session_send_buf(cport_session_t* s, cport_buf_t* buf) {
  session_bytes_t b;
  if (s == NULL || buf == NULL)
    return UV_EINVAL;
  b.head = NULL;
  b.hlen = 0;
  b.data = cport_buf_data(buf);
  b.len = cport_buf_len(buf);
  b.shared = buf;
  return session_send(s, &b);
}


int cport_session_send_packet(cport_session_t* s,
                              unsigned id,
                              const void* payload,
                              size_t len) {
  uint8_t header[CPORT__PACKET_HEADER_MAX];
  session_bytes_t b;
  int hlen;
  if (s == NULL || (payload == NULL && len > 0))
    return UV_EINVAL;
  hlen = cport__packet_header(&VIEW(s)->opts.packet, id, len, header);
  if (hlen < 0)
    return hlen;
  /* A packet is at most UINT32_MAX bytes (cport_packet_format_check). */
  b.head = header;
  b.hlen = (size_t)hlen;
  b.data = payload;
  b.len = len;
  b.shared = NULL;
  return session_send(s, &b);
}


/* ---- accessors ---- */

void* cport_session_user(cport_session_t* s) {
  const cport__service_view_t* v;
  if (s == NULL)
    return NULL;
  /* Only settings fixed at creation: any thread may call this. */
  v = VIEW(s);
  return v->opts.user_size > 0 ? (char*)s + v->layout.user_off : NULL;
}


cport_service_t* cport_session_service(cport_session_t* s) {
  /* A spreading server's part is cport's own business. */
  return s == NULL ? NULL : VIEW(s)->root;
}


uint64_t cport_session_id(const cport_session_t* s) {
  return s == NULL ? 0 : s->id;
}


unsigned cport_session_loop(const cport_session_t* s) {
  return s == NULL ? 0 : VIEW(s)->lp->index;
}


int cport_session_is_connected(const cport_session_t* s) {
  /* The same test as a send's admission. */
  return s != NULL &&
         !(cport__atomic_load_const(atomic_size_t, &s->pending,
                                    memory_order_acquire) &
           SEND_CLOSED) &&
         cport__service_phase(SVC(s)) == CPORT__PHASE_RUNNING;
}


/* The kept sockaddr `kept` as an address; UV_ENOTCONN while unwritten. */
static int session_addr_of(const uint32_t kept[7], cport_addr_t* out) {
  struct sockaddr_storage ss;
  session_kept_sockaddr(kept, &ss);
  return cport_addr_from_sockaddr(out, (struct sockaddr*)&ss) != 0
             ? UV_ENOTCONN
             : 0;
}


int cport_session_peer_addr(const cport_session_t* s, cport_addr_t* out) {
  if (s == NULL || out == NULL)
    return UV_EINVAL;
  /* A local endpoint is both ends' name: the peer's own is empty (a
   * client socket is not bound). */
  if (VIEW(s)->layout.local) {
    *out = *cport__service_addr(SVC(s));
    return 0;
  }
  /* Written before on_connected (the client's, once a PROXY header named
   * one) and never after, so any thread holding a reference may read it. */
  return session_addr_of(s->peer, out);
}


/* A session whose PROXY header named a client, or NULL. */
static const session_proxy_t* session_proxied(const cport_session_t* s) {
  const session_proxy_t* p = session_proxy(s);
  return p != NULL && p->version != 0 && !p->local ? p : NULL;
}


int cport_session_peer_cred(const cport_session_t* s, cport_peer_cred_t* out) {
  const session_local_t* l;
  if (s == NULL || out == NULL)
    return UV_EINVAL;
  l = session_local(s);
  if (l == NULL)
    return UV_ENOTSUP;
  /* Written before on_connected, never after (-1s until then). */
  *out = l->cred;
  return 0;
}


int cport_session_local_addr(const cport_session_t* s, cport_addr_t* out) {
  struct sockaddr_storage ss;
  int len = (int)sizeof(ss);
  int rc;
  if (s == NULL || out == NULL)
    return UV_EINVAL;
  rc = cport__loop_check(VIEW(s)->lp, "cport_session_local_addr");
  if (rc != 0)
    return rc;
  if (!s->reported_connected)
    return UV_ENOTCONN;
  if (session_proxied(s) != NULL)
    return session_addr_of(session_proxied(s)->dst, out);
  if (VIEW(s)->layout.local)
    return cport_session_peer_addr(s, out);
  rc = uv_tcp_getsockname(&s->io.tcp, (struct sockaddr*)&ss, &len);
  if (rc != 0)
    return rc;
  return cport_addr_from_sockaddr(out, (struct sockaddr*)&ss);
}


int cport_session_proxy_addr(const cport_session_t* s, cport_addr_t* out) {
  if (s == NULL || out == NULL)
    return UV_EINVAL;
  if (session_proxied(s) != NULL)
    return session_addr_of(session_proxied(s)->via, out);
  return cport_session_peer_addr(s, out);
}


int cport_session_proxy(const cport_session_t* s, cport_proxy_header_t* out) {
  const session_proxy_t* p;
  if (s == NULL || out == NULL)
    return UV_EINVAL;
  p = session_proxy(s);
  if (p == NULL || p->version == 0)
    return CPORT_ENOENT;
  memset(out, 0, sizeof(*out));
  out->version = p->version;
  out->local = p->local;
  if (!p->local) {
    (void)session_addr_of(s->peer, &out->src);
    (void)session_addr_of(p->dst, &out->dst);
  }
  out->tlvs = p->tlvs;
  out->tlvs_len = p->tlvs_len;
  return 0;
}


size_t cport_session_queued_bytes(const cport_session_t* s) {
  return s == NULL ? 0 : session_queued(s);
}


size_t cport_session_pending_bytes(const cport_session_t* s) {
  if (s == NULL ||
      cport__loop_check(VIEW(s)->lp, "cport_session_pending_bytes") != 0)
    return 0;
  return s->rbuf == NULL ? 0 : s->rbuf->len;
}


/* ---- TLS queries ---- */

int cport_session_is_tls(const cport_session_t* s) {
  return s != NULL && VIEW(s)->layout.tls_off != 0;
}


/* The engine of a TLS session; NULL for NULL, plain TCP, or before the
 * connection was up. */
static const cport__tls_conn_t* session_conn_of(const cport_session_t* s) {
  return s == NULL ? NULL : session_conn(s);
}


const char* cport_session_tls_version(const cport_session_t* s) {
  const cport__tls_conn_t* c = session_conn_of(s);
  return c == NULL ? NULL : cport__tls_conn_version(c);
}


const char* cport_session_tls_cipher(const cport_session_t* s) {
  const cport__tls_conn_t* c = session_conn_of(s);
  return c == NULL ? NULL : cport__tls_conn_cipher(c);
}


const char* cport_session_tls_alpn(const cport_session_t* s) {
  const cport__tls_conn_t* c = session_conn_of(s);
  return c == NULL ? NULL : cport__tls_conn_alpn(c);
}


const char* cport_session_tls_sni(const cport_session_t* s) {
  const cport__tls_conn_t* c = session_conn_of(s);
  return c == NULL ? NULL : cport__tls_conn_sni(c);
}


int cport_session_tls_resumed(const cport_session_t* s) {
  const cport__tls_conn_t* c = session_conn_of(s);
  return c != NULL && cport__tls_conn_resumed(c);
}


int cport_session_tls_peer_subject(const cport_session_t* s,
                                   char* out,
                                   size_t len) {
  const cport__tls_conn_t* c;
  if (s == NULL || out == NULL || len == 0)
    return UV_EINVAL;
  if (!cport_session_is_tls(s))
    return CPORT_ENOTLS;
  c = session_conn(s);
  return c == NULL ? UV_ENOTCONN : cport__tls_conn_peer_subject(c, out, len);
}
