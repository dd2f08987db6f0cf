/* Services (servers and clients): the set of
 * sessions that share callbacks, limits and a listener or a target address.
 *
 * Design notes
 *
 * Lifecycle. One state per service, changed only by the named transitions
 * below (service_set_state): CREATED -> (STARTING ->) RUNNING -> STOPPING
 * -> STOPPED, and DESTROYING from any of them. Stopping and destroying are
 * asynchronous because libuv closes handles asynchronously: a stop closes
 * the listener and starts a graceful disconnect of every session, and the
 * stop timer bounds how long flushing may take. Whatever closes (a session,
 * the listener, a reconnect timer, a part's stop, the service's own two
 * timers) calls service_check_done(), which reports on_stopped once nothing
 * is open, and drops the service's own hold once a destroy has closed
 * everything; the memory goes with the last hold.
 *
 * Spreading servers. A libuv handle belongs to one loop, so a server that
 * serves on several loops has one part per other loop
 * (service_internal.h): a hidden service that only adopts the sockets the
 * listener hands it. Everything the root asks of a part travels through
 * the part loop's mailbox, in order with everything else posted there:
 * start, then the hand-offs, then stop or destroy; a part's stop reports
 * back through the root's mailbox. The root's state is atomic so that a
 * part sees a stop or destroy the moment it is made: a connection handed
 * off before it is closed unreported, never connected after it. */
#include <stdlib.h>
#include <string.h>

#include "addr_internal.h"
#include "listener_internal.h"
#include "log_internal.h"
#include "proxy_internal.h"
#include "session_internal.h"
#include "tls_internal.h"

typedef enum {
  SVC_CREATED,    /* not started */
  SVC_STARTING,   /* a part whose start message has not run yet */
  SVC_RUNNING,    /* listening, or connecting and connected */
  SVC_DRAINING,   /* drain called: sessions go on, on_stopped to come */
  SVC_STOPPING,   /* stop called: sessions flushing, on_stopped to come */
  SVC_STOPPED,    /* on_stopped (or a drain's callback) reported */
  SVC_DESTROYING  /* destroy called: closing, memory to be released */
} svc_state_t;

/* A message between a spreading server's root and one of its parts, kept
 * in the part so that sending it cannot fail. Each is posted at most once
 * (start and stop once each, destroy once, a part's stop report once), so
 * a message is never rewritten while its loop may be reading it. */
typedef struct part_msg_s {
  cport__msg_t msg;
  cport_service_t* part;
  uint64_t deadline; /* stop only: the root's, on cport__clock_ms() */
} part_msg_t;

typedef struct reconnect_s reconnect_t;

struct cport_service_s {
  /* First: what session.c and listener.c see (service_internal.h). */
  cport__service_view_t view;
  cport_core_t* core;
  cport_addr_t addr;
  void* data;
  /* svc_state_t. Written on the service's loop only; atomic because the
   * parts of a spreading server read their root's. */
  atomic_int state;
  /* The stop's callback, or the drain's until a stop takes over; and the
   * signal watch's, which waits for a drain (cport__service_join_drain). */
  void (*on_stopped)(cport_service_t* svc);
  void (*on_joined)(cport_service_t* svc);
  int released; /* the service's own hold is gone */
  cport__listener_t* listener;
  /* Stop deadline, and the zero-delay kick that makes on_stopped
   * asynchronous when nothing was open. */
  uv_timer_t stop_timer;
  /* The stop timer and view.timeouts' tick while they are initialised and
   * not yet closed. */
  int handles;
  /* Every session of this loop not yet closed, connecting ones included,
   * oldest first. */
  cport__queue_t sessions;
  size_t nsessions;
  /* Clients: reconnects waiting for their delay, each with a timer of its
   * own, counted until their timers have closed. */
  cport__queue_t reconnects;
  size_t nreconnects;
  /* Clients on a host name: connect attempts (cport__attempt_t) until
   * their lookup has returned and their timer has closed. */
  cport__queue_t attempts;
  size_t nattempts;
  /* Servers on a host name: the address cport_service_start() bound. */
  cport_addr_t listen_addr;
  uint64_t rng; /* reconnect jitter */
  /* One for the service itself, dropped once a destroy has closed
   * everything, plus one per session block, message or hand-off in flight
   * and, in a root, one per part. */
  atomic_size_t holds;

  /* Spreading servers: the root's parts, and the parts whose stop is not
   * reported yet; the next loop to take a connection (0: the root's). */
  cport_service_t** parts;
  unsigned nparts;
  unsigned parts_running;
  unsigned turn;
  /* A part's messages (part_msg_t). */
  part_msg_t msg_start;   /* root -> part */
  part_msg_t msg_drain;   /* root -> part, with the deadline */
  part_msg_t msg_stop;    /* root -> part, with the deadline */
  part_msg_t msg_destroy; /* root -> part */
  part_msg_t msg_stopped; /* part -> root */
  /* Root only, updated from every part's thread. `open`: a server's
   * connections, for max_sessions, each counted once, from its hand-off
   * (on the root's loop) until its session's handle has closed or its
   * adoption has failed (on the loop that adopts it). */
  atomic_size_t open;
  atomic_size_t handing; /* accepted, on the way to a part (for tests) */
  atomic_uint_least64_t active;
  atomic_uint_least64_t peak;
};

/* session.c and listener.c reach the view by casting the service. */
_Static_assert(offsetof(struct cport_service_s, view) == 0,
               "the view must be the first member of a service");

/* Every per-loop counter is a field of the public stats struct too. */
#define SVC_STAT_CHECK(name)                                     \
  _Static_assert(sizeof(((cport_service_stats_t*)0)->name) == 8, \
                 "stats.h and cport_service_stats_t disagree");
CPORT__STATS(SVC_STAT_CHECK)
#undef SVC_STAT_CHECK


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
  opts->reconnect_reset_ms = 5000;
  cport_packet_format_init(&opts->packet);
  opts->packet_budget = 1024;
  opts->tls_handshake_timeout_ms = 10000;
  opts->proxy_timeout_ms = 3000;
  opts->proxy_max_header = 4096;
  opts->listen_fd = -1;
  opts->connect_attempt_delay_ms = 250;
}


/* ---- state ---- */

static svc_state_t service_state(const cport_service_t* svc) {
  return (svc_state_t)cport__atomic_load_const(atomic_int, &svc->state,
                                               memory_order_acquire);
}


static void service_set_state(cport_service_t* svc, svc_state_t state) {
  /* Sequentially consistent: a part's check of its root's state before
   * on_connected is ordered with it. */
  atomic_store(&svc->state, (int)state);
}


static int service_is_part(const cport_service_t* svc) {
  return svc->view.root != svc;
}


/* Nothing of the service is open any more. */
static int service_is_idle(const cport_service_t* svc) {
  return svc->nsessions == 0 && svc->listener == NULL &&
         svc->parts_running == 0 && svc->nreconnects == 0 &&
         svc->nattempts == 0;
}


static void service_check_done(cport_service_t* svc) {
  svc_state_t state = service_state(svc);
  if (!service_is_idle(svc))
    return;
  if (state == SVC_STOPPING || state == SVC_DRAINING) {
    void (*joined)(cport_service_t*) = svc->on_joined;
    service_set_state(svc, SVC_STOPPED);
    if (svc->handles > 0)
      uv_timer_stop(&svc->stop_timer);
    svc->on_joined = NULL;
    if (joined != NULL)
      joined(svc); /* first: on_stopped may destroy the service */
    if (svc->on_stopped != NULL)
      svc->on_stopped(svc); /* may call cport_service_destroy() */
    return;
  }
  if (state == SVC_DESTROYING && svc->handles == 0 && !svc->released) {
    svc->released = 1;
    cport__service_release(svc);
  }
}


/* ---- creation ---- */

static void service_timer_close_cb(uv_handle_t* handle) {
  cport_service_t* svc = handle->data;
  svc->handles--;
  service_check_done(svc);
}


static void service_timeout_expired(cport__timeouts_t* t,
                                    cport__timeout_kind_t kind,
                                    cport__timed_t* e) {
  cport__session_timed_out(t->owner, kind, e);
}


/* The stop timer and the session timeouts, on the service's own loop.
 * Cannot fail for a live loop. */
static int service_timers_init(cport_service_t* svc) {
  const cport_service_opts_t* o = &svc->view.opts;
  unsigned ms[CPORT__TIMEOUT_KINDS];
  int rc = uv_timer_init(svc->view.lp->loop, &svc->stop_timer);
  if (rc != 0)
    return rc;
  ms[CPORT__TIMEOUT_CONNECT] = o->connect_timeout_ms;
  ms[CPORT__TIMEOUT_FLUSH] = o->disconnect_timeout_ms;
  ms[CPORT__TIMEOUT_IDLE] = o->idle_timeout_ms;
  ms[CPORT__TIMEOUT_HANDSHAKE] = o->tls_handshake_timeout_ms;
  ms[CPORT__TIMEOUT_PROXY] = o->proxy_timeout_ms;
  rc = cport__timeouts_init(&svc->view.timeouts, svc->view.lp->loop, ms,
                            service_timeout_expired, svc);
  if (rc != 0) {
    uv_close((uv_handle_t*)&svc->stop_timer, NULL);
    return rc;
  }
  svc->stop_timer.data = svc;
  svc->handles = 2;
  return 0;
}


static void service_init(cport_service_t* svc,
                         cport_core_t* core,
                         cport__loop_t* lp,
                         cport_service_kind_t kind,
                         const cport_addr_t* addr,
                         const cport_service_opts_t* opts,
                         const cport__session_layout_t* layout) {
  svc->view.lp = lp;
  svc->view.root = svc;
  svc->view.kind = kind;
  svc->view.opts = *opts;
  svc->view.layout = *layout;
  svc->core = core;
  svc->addr = *addr;
  svc->data = opts->data;
  svc->rng = uv_hrtime() ^ (uint64_t)(uintptr_t)svc;
  atomic_init(&svc->state, SVC_CREATED);
  atomic_init(&svc->holds, 1);
  cport__core_hold(core);
}


/* The parts of a spreading server: one per loop other than the root's. */
static int service_create_parts(cport_service_t* root) {
  unsigned n = cport_core_loops(root->core);
  unsigned i;
  if (n < 2 || root->view.kind != CPORT_SERVICE_SERVER ||
      !root->view.opts.spread)
    return 0;
#ifdef _WIN32
  /* A named pipe stays on the loop that accepted it
   * (cport__service_accept). */
  if (root->view.layout.local)
    return 0;
#endif
  root->parts = cport__calloc(n - 1, sizeof(*root->parts));
  if (root->parts == NULL)
    return UV_ENOMEM;
  for (i = 0; i < n; i++) {
    cport_service_t* part;
    if (i == root->view.lp->index)
      continue;
    part = cport__calloc(1, sizeof(*part));
    if (part == NULL)
      return UV_ENOMEM;
    service_init(part, root->core, cport__core_loop(root->core, i),
                 root->view.kind, &root->addr, &root->view.opts,
                 &root->view.layout);
    part->view.root = root;
    cport__service_hold(root);
    root->parts[root->nparts++] = part;
  }
  return 0;
}


static void service_tls_drop(cport_service_t* svc);

/* Undo a creation that failed: nothing was posted or opened. */
static void service_free_unused(cport_service_t* svc) {
  while (svc->nparts > 0) {
    cport_service_t* part = svc->parts[--svc->nparts];
    cport__core_release(part->core);
    cport__free(part);
  }
  cport__free(svc->parts);
  service_tls_drop(svc);
  cport__core_release(svc->core);
  cport__free(svc);
}


#define SERVICE_EINVAL(...) cport__einval("cport_service_create", __VA_ARGS__)

/* The options for running behind a balancer: the PROXY protocol, an
 * inherited socket, SO_REUSEPORT. */
static int service_check_deploy(cport_service_kind_t kind,
                                const cport_service_opts_t* opts) {
  int server = kind == CPORT_SERVICE_SERVER;
  if ((unsigned)opts->proxy_protocol > CPORT_PROXY_ANY)
    return SERVICE_EINVAL("opts.proxy_protocol %d: must be CPORT_PROXY_OFF, "
                          "_V1, _V2 or _ANY",
                          (int)opts->proxy_protocol);
  if ((unsigned)opts->proxy_send > CPORT_PROXY_V2)
    return SERVICE_EINVAL("opts.proxy_send %d: must be CPORT_PROXY_OFF, _V1 "
                          "or _V2",
                          (int)opts->proxy_send);
  if (!server && opts->proxy_protocol != CPORT_PROXY_OFF)
    return SERVICE_EINVAL("opts.proxy_protocol: only servers read PROXY "
                          "headers (clients send them: opts.proxy_send)");
  if (server && opts->proxy_send != CPORT_PROXY_OFF)
    return SERVICE_EINVAL("opts.proxy_send: only clients send PROXY headers "
                          "(servers read them: opts.proxy_protocol)");
  if (opts->proxy_trusted != NULL && opts->proxy_protocol == CPORT_PROXY_OFF)
    return SERVICE_EINVAL("opts.proxy_trusted is set but opts.proxy_protocol "
                          "is CPORT_PROXY_OFF");
  if (opts->proxy_max_header < 16)
    return SERVICE_EINVAL("opts.proxy_max_header %llu: must be at least 16",
                          (unsigned long long)opts->proxy_max_header);
  if (opts->listen_fd < -1)
    return SERVICE_EINVAL("opts.listen_fd %lld: must be a descriptor or -1",
                          (long long)opts->listen_fd);
  if (!server && (opts->listen_fd != -1 || opts->reuse_port))
    return SERVICE_EINVAL("opts.%s: only servers listen",
                          opts->reuse_port ? "reuse_port" : "listen_fd");
  if (opts->listen_fd != -1 && opts->reuse_port)
    return SERVICE_EINVAL("opts.reuse_port applies to a socket cport binds, "
                          "not to opts.listen_fd's");
  return 0;
}


/* What a local endpoint (a Unix domain socket, a named pipe) has no use
 * for: logged and returned as UV_EINVAL, or 0. */
static int service_check_local(cport_service_kind_t kind,
                               const cport_addr_t* addr,
                               const cport_service_opts_t* opts) {
  const char* path = cport_addr_path(addr);
  int local = path != NULL;
  if (!local) {
    if (opts->unix_mode != 0)
      return SERVICE_EINVAL("opts.unix_mode is for a server on a Unix "
                            "domain socket path (addr \"unix:/path\")");
    return 0;
  }
  if (opts->proxy_protocol != CPORT_PROXY_OFF ||
      opts->proxy_send != CPORT_PROXY_OFF)
    return SERVICE_EINVAL("opts.proxy_%s: the PROXY protocol names IP "
                          "endpoints; %s is local",
                          opts->proxy_send != CPORT_PROXY_OFF ? "send"
                                                              : "protocol",
                          path);
  if (kind == CPORT_SERVICE_CLIENT && opts->tls != NULL &&
      opts->tls_name == NULL)
    return SERVICE_EINVAL("opts.tls_name: a TLS client of %s must name the "
                          "server to verify (a path is no host name)",
                          path);
  if (opts->reuse_port || opts->ipv6_only)
    return SERVICE_EINVAL("opts.%s applies to TCP, not to %s",
                          opts->reuse_port ? "reuse_port" : "ipv6_only", path);
  if (opts->unix_mode != 0 &&
      (kind != CPORT_SERVICE_SERVER || path[0] == '@' ||
       cport_addr_kind(addr) != CPORT_ADDR_UNIX))
    return SERVICE_EINVAL("opts.unix_mode 0%o: only a server's Unix socket "
                          "file has a mode (%s)",
                          opts->unix_mode, path);
  if (opts->unix_mode > 0777)
    return SERVICE_EINVAL("opts.unix_mode 0%o: permission bits are at most "
                          "0777 (no setuid, setgid or sticky bits)",
                          opts->unix_mode);
  return 0;
}


/* The first option that cport_service_create() refuses, logged and
 * returned as UV_EINVAL, or 0. */
static int service_check_opts(cport_service_kind_t kind,
                              const cport_service_opts_t* opts) {
  const cport_packet_format_t* fmt = &opts->packet;
  if (opts->recv_buffer_limit == 0)
    return SERVICE_EINVAL("opts.recv_buffer_limit 0: must be at least 1");
  if (opts->send_queue_limit == 0)
    return SERVICE_EINVAL("opts.send_queue_limit 0: must be at least 1");
  if (opts->backlog <= 0)
    return SERVICE_EINVAL("opts.backlog %d: must be at least 1",
                          opts->backlog);
  if (opts->send_queue_policy != CPORT_SENDQ_PAUSE_READ &&
      opts->send_queue_policy != CPORT_SENDQ_DISCONNECT)
    return SERVICE_EINVAL(
        "opts.send_queue_policy %d: must be CPORT_SENDQ_PAUSE_READ or "
        "CPORT_SENDQ_DISCONNECT",
        (int)opts->send_queue_policy);
  if (kind == CPORT_SERVICE_CLIENT && opts->connect_count == 0)
    return SERVICE_EINVAL("opts.connect_count 0: a client needs at least 1");
  if (opts->reconnect != CPORT_RECONNECT_NONE &&
      opts->reconnect != CPORT_RECONNECT_FIXED &&
      opts->reconnect != CPORT_RECONNECT_EXPONENTIAL)
    return SERVICE_EINVAL(
        "opts.reconnect %d: must be CPORT_RECONNECT_NONE, _FIXED or "
        "_EXPONENTIAL",
        (int)opts->reconnect);
  if (opts->reconnect != CPORT_RECONNECT_NONE &&
      opts->reconnect_delay_ms == 0)
    return SERVICE_EINVAL(
        "opts.reconnect_delay_ms 0: must be at least 1 with a reconnect "
        "policy");
  if (opts->reconnect != CPORT_RECONNECT_NONE &&
      opts->reconnect_jitter_pct > 100)
    return SERVICE_EINVAL("opts.reconnect_jitter_pct %u: must be 0 to 100",
                          opts->reconnect_jitter_pct);
  if (opts->cbs.on_recv != NULL && opts->cbs.on_packet != NULL)
    return SERVICE_EINVAL(
        "opts.cbs: on_recv and on_packet are both set; a packet service "
        "(on_packet) takes no on_recv");
  if (fmt->length_size != 2 && fmt->length_size != 4)
    return SERVICE_EINVAL("opts.packet.length_size %u: must be 2 or 4",
                          fmt->length_size);
  if (cport_packet_format_check(fmt) != 0)
    return SERVICE_EINVAL(
        "opts.packet.max_packet %llu: must hold the header (%u bytes) and "
        "be at most 4 GiB - 1",
        (unsigned long long)fmt->max_packet,
        fmt->length_size + (fmt->has_id ? 2u : 0u));
  if (opts->tls != NULL &&
      cport__tls_role(opts->tls) !=
          (kind == CPORT_SERVICE_SERVER ? CPORT_TLS_SERVER : CPORT_TLS_CLIENT))
    return SERVICE_EINVAL(
        "opts.tls: a %s needs a context made with %s",
        kind == CPORT_SERVICE_SERVER ? "server" : "client",
        kind == CPORT_SERVICE_SERVER ? "CPORT_TLS_SERVER" : "CPORT_TLS_CLIENT");
  if (opts->tls_name != NULL &&
      (opts->tls_name[0] == '\0' || strlen(opts->tls_name) > 253))
    return SERVICE_EINVAL("opts.tls_name \"%.40s\": must be 1 to 253 bytes",
                          opts->tls_name);
  return service_check_deploy(kind, opts);
}


/* What a root service owns of its TLS options: a reference to the
 * context, its copy of tls_name and a client's last session. Parts share
 * the root's. */
static int service_tls_take(cport_service_t* svc) {
  cport_service_opts_t* o = &svc->view.opts;
  if (o->tls == NULL) {
    o->tls_name = NULL;
    return 0;
  }
  if (o->tls_name != NULL) {
    o->tls_name = cport__strndup(o->tls_name, 253);
    if (o->tls_name == NULL)
      return UV_ENOMEM;
  }
  cport_tls_ref(o->tls);
  cport__tls_freeze(o->tls);
  return 0;
}


static void service_tls_drop(cport_service_t* svc) {
  cport_service_opts_t* o = &svc->view.opts;
  cport__tls_resume_free(svc->view.tls_resume);
  cport__free((char*)o->tls_name);
  cport_tls_unref(o->tls);
  o->tls = NULL;
  o->tls_name = NULL;
  cport__free((void*)svc->view.proxy_nets);
  svc->view.proxy_nets = NULL;
}


/* A root's list of trusted balancers, parsed once; the text is not kept
 * (it is the caller's). */
static int service_proxy_take(cport_service_t* svc) {
  cport_service_opts_t* o = &svc->view.opts;
  cport__proxy_net_t* nets;
  const char* cause = NULL;
  int rc;
  if (o->proxy_trusted == NULL)
    return 0;
  rc = cport__proxy_nets_parse(o->proxy_trusted, &nets,
                               &svc->view.proxy_nnets, &cause);
  if (rc == UV_EINVAL)
    return SERVICE_EINVAL("opts.proxy_trusted \"%.80s\": %s",
                          o->proxy_trusted, cause != NULL ? cause : "invalid");
  if (rc != 0)
    return rc;
  svc->view.proxy_nets = nets;
  o->proxy_trusted = NULL;
  return 0;
}


int cport_service_create(cport_service_t** out,
                         cport_core_t* core,
                         cport_service_kind_t kind,
                         const cport_addr_t* addr,
                         const cport_service_opts_t* opts) {
  cport__session_layout_t layout;
  cport_service_t* svc;
  cport__loop_t* lp;
  int rc;
  static const cport_addr_t unset; /* an adopted socket's: none */
  int adopt = opts != NULL && opts->listen_fd != -1;
  if (addr == NULL && adopt)
    addr = &unset;
  if (out == NULL || core == NULL || addr == NULL || opts == NULL)
    return SERVICE_EINVAL("%s is NULL", out == NULL    ? "out"
                                        : core == NULL ? "core"
                                        : addr == NULL ? "addr"
                                                       : "opts");
  if (kind != CPORT_SERVICE_SERVER && kind != CPORT_SERVICE_CLIENT)
    return SERVICE_EINVAL(
        "kind %d: must be CPORT_SERVICE_SERVER or CPORT_SERVICE_CLIENT",
        (int)kind);
  if (adopt && cport_addr_kind(addr) != CPORT_ADDR_NONE)
    return SERVICE_EINVAL("addr: set together with opts.listen_fd (give "
                          "one: the socket is already bound)");
  if (!adopt && cport_addr_kind(addr) == CPORT_ADDR_NONE)
    return SERVICE_EINVAL("addr: not set (fill it with cport_addr_parse())");
  rc = service_check_opts(kind, opts);
  if (rc == 0)
    rc = service_check_local(kind, addr, opts);
  if (rc != 0)
    return rc;
  /* A user area so large that a session block's size would wrap. */
  rc = cport__session_layout(kind, opts, cport_addr_path(addr) != NULL,
                             &layout);
  if (rc != 0)
    return rc;
  lp = cport__core_loop(core, opts->loop);
  if (lp == NULL)
    return SERVICE_EINVAL("opts.loop %u: the core has %u loop%s", opts->loop,
                          cport_core_loops(core),
                          cport_core_loops(core) == 1 ? "" : "s");
  rc = cport__loop_check(lp, "cport_service_create");
  if (rc != 0)
    return rc;
  svc = cport__calloc(1, sizeof(*svc));
  if (svc == NULL)
    return UV_ENOMEM;
  service_init(svc, core, lp, kind, addr, opts, &layout);
  rc = service_tls_take(svc);
  if (rc != 0) {
    svc->view.opts.tls = NULL; /* nothing taken */
    service_free_unused(svc);
    return rc;
  }
  rc = service_proxy_take(svc);
  if (rc != 0) {
    service_free_unused(svc);
    return rc;
  }
  rc = service_create_parts(svc);
  if (rc == 0)
    rc = service_timers_init(svc);
  if (rc != 0) {
    service_free_unused(svc);
    return rc;
  }
  cport__core_register(core, &svc->view.entry);
  *out = svc;
  return 0;
}


/* ---- parts: messages run on each part's own loop ---- */

static int service_stop_here(cport_service_t* svc,
                             uint64_t deadline,
                             void (*on_stopped)(cport_service_t* svc));
static void service_destroy_here(cport_service_t* svc);

static void part_start_run(cport__msg_t* m, const cport__msg_t* next) {
  cport_service_t* part = cport__container_of(m, part_msg_t, msg)->part;
  (void)next;
  /* Cannot fail for a live loop; a part without timers still adopts and
   * stops, only without deadlines of its own. */
  (void)service_timers_init(part);
  service_set_state(part, SVC_RUNNING);
}


static void root_part_stopped_run(cport__msg_t* m, const cport__msg_t* next) {
  cport_service_t* part = cport__container_of(m, part_msg_t, msg)->part;
  cport_service_t* root = part->view.root;
  (void)next;
  /* 0 already when the root was destroyed meanwhile. */
  if (root->parts_running > 0) {
    root->parts_running--;
    service_check_done(root);
  }
  cport__service_release(part); /* the message's; the part holds the root */
}


/* A part's on_stopped: tell the root, on the root's loop. */
static void part_stopped(cport_service_t* part) {
  cport__service_hold(part);
  part->msg_stopped.msg.run = root_part_stopped_run;
  part->msg_stopped.part = part;
  cport__loop_post(part->view.root->view.lp, &part->msg_stopped.msg);
}


static void part_stop_run(cport__msg_t* m, const cport__msg_t* next) {
  part_msg_t* pm = cport__container_of(m, part_msg_t, msg);
  (void)next;
  /* A part that drained empty before the stop came has reported: its one
   * msg_stopped may not be posted twice. */
  if (service_state(pm->part) == SVC_STOPPED)
    return;
  if (service_stop_here(pm->part, pm->deadline, part_stopped) != 0)
    part_stopped(pm->part);
}


static int service_drain_here(cport_service_t* svc,
                              uint64_t deadline,
                              void (*on_drained)(cport_service_t* svc));

static void part_drain_run(cport__msg_t* m, const cport__msg_t* next) {
  part_msg_t* pm = cport__container_of(m, part_msg_t, msg);
  (void)next;
  if (service_drain_here(pm->part, pm->deadline, part_stopped) != 0)
    part_stopped(pm->part);
}


static void part_destroy_run(cport__msg_t* m, const cport__msg_t* next) {
  cport_service_t* part = cport__container_of(m, part_msg_t, msg)->part;
  (void)next;
  service_destroy_here(part);
}


/* Post one of each part's own messages to the part's loop, behind whatever
 * was posted to it before (hand-offs included). */
static void service_post_parts(cport_service_t* root,
                               size_t msg_offset,
                               void (*run)(cport__msg_t*, const cport__msg_t*),
                               uint64_t deadline) {
  unsigned i;
  for (i = 0; i < root->nparts; i++) {
    cport_service_t* part = root->parts[i];
    part_msg_t* pm = (part_msg_t*)((char*)part + msg_offset);
    pm->msg.run = run;
    pm->part = part;
    pm->deadline = deadline;
    cport__loop_post(part->view.lp, &pm->msg);
  }
}


/* ---- start and connect ---- */

/* A server on a host name: look it up and listen on the first address
 * that binds. The lookup blocks, on the owner's thread, once, before the
 * service serves anything; a client's never does (service_attempt_start). */
static int service_listen_named(cport_service_t* svc) {
  struct addrinfo* list;
  const struct addrinfo* ai;
  int rc = cport__addr_lookup(cport_addr_host(&svc->addr), &list);
  if (rc != 0)
    return rc;
  rc = UV_EAI_NONAME;
  for (ai = cport__addr_next_inet(list); ai != NULL;
       ai = cport__addr_next_inet(ai->ai_next)) {
    rc = cport__addr_from_lookup(&svc->listen_addr, ai->ai_addr,
                                 cport_addr_port(&svc->addr));
    if (rc == 0)
      rc = cport__listener_start(svc, &svc->listener);
    if (rc == 0)
      break;
  }
  uv_freeaddrinfo(list);
  return rc;
}


static int service_attempt_start(cport_service_t* svc, unsigned attempts);

/* One connect attempt: a session to the numeric address, or a lookup of
 * the host name first. Returns 0, or the error of a connect that could not
 * start. */
static int service_connect_one(cport_service_t* svc, unsigned attempts) {
  cport_session_t* s;
  if (cport_addr_is_name(&svc->addr))
    return service_attempt_start(svc, attempts);
  s = cport__session_new(svc);
  return s != NULL ? cport__session_connect(s, attempts) : UV_ENOMEM;
}


int cport_service_start(cport_service_t* svc) {
  unsigned i;
  int rc;
  if (svc == NULL || service_is_part(svc))
    return cport__einval("cport_service_start", "svc is NULL");
  rc = cport__loop_check(svc->view.lp, "cport_service_start");
  if (rc != 0)
    return rc;
  if (service_state(svc) != SVC_CREATED)
    return cport__einval("cport_service_start",
                         "the service was already started or stopped");
  if (svc->view.kind == CPORT_SERVICE_SERVER) {
    rc = cport_addr_is_name(&svc->addr)
             ? service_listen_named(svc)
             : cport__listener_start(svc, &svc->listener);
    if (rc != 0)
      return rc;
    service_set_state(svc, SVC_RUNNING);
    svc->parts_running = svc->nparts;
    /* Nothing runs a part before its start message, so the root may set
     * its state. */
    for (i = 0; i < svc->nparts; i++)
      service_set_state(svc->parts[i], SVC_STARTING);
    service_post_parts(svc, offsetof(cport_service_t, msg_start),
                       part_start_run, 0);
    return 0;
  }
  service_set_state(svc, SVC_RUNNING);
  return cport_service_connect(svc, svc->view.opts.connect_count);
}


static int service_connect_failed_later(cport_service_t* svc, int code);

int cport_service_connect(cport_service_t* svc, unsigned n) {
  unsigned i;
  int rc;
  if (svc == NULL || n == 0 || svc->view.kind != CPORT_SERVICE_CLIENT)
    return cport__einval("cport_service_connect", "%s",
                         svc == NULL ? "svc is NULL"
                         : n == 0    ? "n 0: must be at least 1"
                                     : "svc is a server; only clients connect");
  rc = cport__loop_check(svc->view.lp, "cport_service_connect");
  if (rc != 0)
    return rc;
  if (service_state(svc) != SVC_RUNNING)
    return cport__einval("cport_service_connect",
                         "the service is not running (start it first; a "
                         "draining one connects no more)");
  for (i = 0; i < n; i++) {
    rc = service_connect_one(svc, 0);
    /* Under a policy a connect that cannot start fails like any other,
     * reported after the call; only one the policy cannot take is
     * returned. */
    if (rc != 0 && service_connect_failed_later(svc, rc) != 0) {
      CPORT__SVC_STAT_ADD(svc, connect_failed, 1);
      return rc;
    }
  }
  return 0;
}


/* ---- sessions ---- */

/* An accepted connection gives back the slot its hand-off took. */
static void service_slot_release(cport_service_t* svc) {
  atomic_fetch_sub(&svc->view.root->open, 1);
}


void cport__service_attach(cport_service_t* svc, cport__qnode_t* node) {
  /* A server's session takes over the slot of the socket it adopts, so
   * that the connection is never counted twice (service_adopt). */
  cport__queue_push(&svc->sessions, node);
  svc->nsessions++;
}


void cport__service_detach(cport_service_t* svc, cport__qnode_t* node) {
  cport__queue_remove(&svc->sessions, node);
  svc->nsessions--;
  if (svc->view.kind == CPORT_SERVICE_SERVER)
    service_slot_release(svc);
  service_check_done(svc);
}


int cport__service_admit(cport_service_t* svc) {
  /* A part's root may be stopped on another thread at any moment; its
   * state is read last thing before on_connected. */
  svc_state_t state = service_state(svc);
  /* A draining service still serves the connections it had accepted. */
  return (state == SVC_RUNNING || state == SVC_DRAINING) &&
         cport__service_phase(svc) == CPORT__PHASE_RUNNING;
}


cport__service_phase_t cport__service_phase(const cport_service_t* svc) {
  switch (service_state(svc->view.root)) {
    case SVC_STOPPING:
    case SVC_STOPPED:
      return CPORT__PHASE_STOPPING;
    case SVC_DESTROYING:
      return CPORT__PHASE_DESTROYING;
    default:
      return CPORT__PHASE_RUNNING;
  }
}


void cport__service_active_add(cport_service_t* svc, int delta) {
  cport_service_t* root = svc->view.root;
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


void cport__service_hold(cport_service_t* svc) {
  atomic_fetch_add_explicit(&svc->holds, 1, memory_order_relaxed);
}


void cport__service_release(cport_service_t* svc) {
  cport_service_t* root;
  cport_core_t* core;
  if (atomic_fetch_sub_explicit(&svc->holds, 1, memory_order_acq_rel) != 1)
    return;
  root = svc->view.root;
  core = svc->core;
  if (root == svc) {
    cport__free(svc->parts);
    service_tls_drop(svc);
  }
  cport__free(svc);
  /* A part holds its root, whose sessions' service it reports; every
   * service holds its core. */
  if (root != svc)
    cport__service_release(root);
  cport__core_release(core);
}


static void service_close_sessions(cport_service_t* svc,
                                   int code,
                                   cport__close_mode_t mode) {
  cport__qnode_t* n = cport__queue_head(&svc->sessions);
  while (n != NULL) {
    /* Closing never unlinks synchronously (only the close callback does),
     * so the next pointer stays valid. */
    cport__qnode_t* next = n->next;
    cport__session_close(cport__session_of(n), code, NULL, mode);
    n = next;
  }
}


/* ---- the listener ---- */

const cport_addr_t* cport__service_addr(const cport_service_t* svc) {
  if (svc->view.kind == CPORT_SERVICE_SERVER && cport_addr_is_name(&svc->addr))
    return &svc->listen_addr;
  return &svc->addr;
}


int cport__service_is_full(cport_service_t* root) {
  /* Sessions still closing hold a socket too, so they count, and so do
   * connections on their way to a part. Only the root's loop adds to
   * `open`, right after this check, so the count never passes the limit. */
  return root->view.opts.max_sessions != 0 &&
         atomic_load(&root->open) >= root->view.opts.max_sessions;
}


size_t cport__service_handing(cport_service_t* root) {
  return atomic_load(&root->handing);
}


size_t cport__service_open(const cport_service_t* svc) {
  return svc->nsessions;
}


void cport__service_listener_closed(cport_service_t* svc) {
  svc->listener = NULL;
  service_check_done(svc);
}


/* Make an accepted socket a session of `svc` (the root or a part) on its
 * loop and start it; the session takes over the socket's slot. Closes the
 * socket, and gives the slot back, when that fails or the service no
 * longer takes sessions. With `server` (a Windows named pipe server's
 * handle) the session accepts the waiting client from it instead, and
 * `sock` is not used. Thread: svc's loop. */
static void service_adopt(cport_service_t* svc,
                          uv_os_sock_t sock,
                          uv_stream_t* server) {
  cport_session_t* s;
  int rc;
  if (!cport__service_admit(svc)) {
    /* Accepted just before a stop or destroy: too late to serve. */
    if (server == NULL)
      cport__socket_close(sock);
    service_slot_release(svc);
    return;
  }
  s = cport__session_new(svc);
  if (s == NULL) {
    CPORT__SVC_STAT_ADD(svc, accept_errors, 1);
    if (server == NULL)
      cport__socket_close(sock);
    service_slot_release(svc);
    return;
  }
  rc = server != NULL ? cport__session_accept(s, server)
                      : cport__session_open(s, sock);
  if (rc != 0) {
    /* The session gives the slot back when its handle has closed. */
    CPORT__SVC_STAT_ADD(svc, accept_errors, 1);
    if (server == NULL)
      cport__socket_close(sock);
    cport__session_close(s, rc, NULL, CPORT__CLOSE_FORCE);
    return;
  }
  cport__session_start(s);
}


#ifdef _WIN32
void cport__service_accept(cport_service_t* root,
                           uv_stream_t* server,
                           int reject) {
  cport_session_t* s;
  atomic_fetch_add(&root->open, 1);
  if (!reject) {
    service_adopt(root, (uv_os_sock_t)0, server);
    return;
  }
  /* Taken from the pipe only to be closed: never started, never
   * reported; the slot comes back when its handle has closed. */
  s = cport__session_new(root);
  if (s == NULL) {
    service_slot_release(root);
    return;
  }
  if (cport__session_accept(s, server) != 0)
    CPORT__SVC_STAT_ADD(root, accept_errors, 1);
  cport__session_close(s, CPORT_ESTOPPED, NULL, CPORT__CLOSE_FORCE);
}
#endif


typedef struct handoff_s {
  cport__msg_t msg;
  cport_service_t* part;
  uv_os_sock_t sock;
} handoff_t;

static void handoff_run(cport__msg_t* m, const cport__msg_t* next) {
  handoff_t* h = cport__container_of(m, handoff_t, msg);
  cport_service_t* part = h->part;
  (void)next;
  service_adopt(part, h->sock, NULL);
  atomic_fetch_sub(&part->view.root->handing, 1);
  cport__free(h);
  cport__service_release(part); /* the hand-off's */
}


void cport__service_hand_off(cport_service_t* root, uv_os_sock_t sock) {
  unsigned turn = root->turn;
  cport_service_t* part;
  handoff_t* h;
  root->turn = turn + 1 > root->nparts ? 0 : turn + 1;
  /* The slot this connection holds until its session has closed. */
  atomic_fetch_add(&root->open, 1);
  if (turn == 0) {
    service_adopt(root, sock, NULL);
    return;
  }
  part = root->parts[turn - 1];
  h = cport__malloc(sizeof(*h));
  if (h == NULL) {
    CPORT__SVC_STAT_ADD(root, accept_errors, 1);
    cport__socket_close(sock);
    service_slot_release(root);
    return;
  }
  h->msg.run = handoff_run;
  h->part = part;
  h->sock = sock;
  cport__service_hold(part);
  atomic_fetch_add(&root->handing, 1);
  cport__loop_post(part->view.lp, &h->msg);
}


/* ---- reconnect (client services) ---- */

struct reconnect_s {
  uv_timer_t timer;
  cport__qnode_t node; /* in svc->reconnects */
  cport_service_t* svc;
  unsigned attempts; /* failed attempts in a row so far */
  /* Non-zero: the code of a connect that could not start, which the timer
   * reports instead of connecting (service_connect_failed_later). */
  int failed;
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


/* The wait before the attempt that follows `attempts` failures in a row:
 * the base (reconnect_delay_ms, doubled per failure under EXPONENTIAL),
 * moved at random by up to the jitter either way, but never past the cap
 * (the larger of reconnect_max_ms and reconnect_delay_ms), whatever the
 * policy, nor below 1 ms. At the cap the jitter can only shorten the wait,
 * so clients that lost the same server still spread out there. */
static uint64_t service_reconnect_delay(cport_service_t* svc,
                                        unsigned attempts) {
  const cport_service_opts_t* o = &svc->view.opts;
  uint64_t delay = o->reconnect_delay_ms;
  uint64_t cap = o->reconnect_max_ms > delay ? o->reconnect_max_ms : delay;
  uint64_t span;
  uint64_t lo;
  uint64_t hi;
  if (o->reconnect == CPORT_RECONNECT_EXPONENTIAL) {
    while (attempts-- > 0 && delay < cap) delay *= 2;
    if (delay > cap)
      delay = cap;
  }
  span = delay * o->reconnect_jitter_pct / 100;
  lo = delay - span > 0 ? delay - span : 1;
  hi = delay + span < cap ? delay + span : cap;
  if (hi <= lo)
    return lo;
  return lo + service_random(svc) % (hi - lo + 1);
}


/* A reconnect entry of `svc`, its timer initialised but not started; NULL
 * without memory. */
static reconnect_t* service_reconnect_new(cport_service_t* svc,
                                          unsigned attempts) {
  reconnect_t* r = cport__calloc(1, sizeof(*r));
  if (r == NULL)
    return NULL;
  (void)uv_timer_init(svc->view.lp->loop, &r->timer); /* cannot fail */
  r->timer.data = r;
  r->svc = svc;
  r->attempts = attempts;
  cport__queue_push(&svc->reconnects, &r->node);
  svc->nreconnects++;
  return r;
}


static void service_reconnect_close_cb(uv_handle_t* handle) {
  reconnect_t* r = handle->data;
  cport_service_t* svc = r->svc;
  /* A stop or destroy came before the report of a connect that could not
   * start: it is still reported, once, and schedules nothing, as the
   * service no longer runs. Before the count drops, so that on_stopped
   * follows it. */
  if (r->failed != 0)
    cport__service_connect_failed(svc, r->attempts, r->failed);
  cport__free(r);
  svc->nreconnects--;
  service_check_done(svc);
}


static void service_reconnect_cb(uv_timer_t* timer) {
  reconnect_t* r = timer->data;
  cport_service_t* svc = r->svc;
  int rc = r->failed;
  cport__queue_remove(&svc->reconnects, &r->node);
  r->failed = 0; /* reported here, not by the close callback */
  if (rc == 0) {
    CPORT__SVC_STAT_ADD(svc, reconnects, 1);
    rc = service_connect_one(svc, r->attempts);
  }
  /* A connect that could not even start fails like any other attempt. */
  if (rc != 0)
    cport__service_connect_failed(svc, r->attempts, rc);
  uv_close((uv_handle_t*)&r->timer, service_reconnect_close_cb);
}


void cport__service_connect_failed(cport_service_t* svc,
                                   unsigned attempts,
                                   int code) {
  CPORT__SVC_STAT_ADD(svc, connect_failed, 1);
  if (svc->view.opts.cbs.on_connect_failed != NULL)
    svc->view.opts.cbs.on_connect_failed(svc, code); /* may stop or destroy */
  if (code != UV_ECANCELED)
    cport__service_reconnect_later(svc, attempts + 1);
}


/* cport_service_connect could not start a connect (`code`). Under a
 * policy it becomes a first attempt that failed: reported by the timer in
 * the loop's next round, never inside the call (whose caller may not
 * expect callbacks), then retried. Returns 0 once the policy has it;
 * UV_EINVAL without a policy, UV_ENOMEM without memory for the entry. */
static int service_connect_failed_later(cport_service_t* svc, int code) {
  reconnect_t* r;
  if (svc->view.opts.reconnect == CPORT_RECONNECT_NONE)
    return UV_EINVAL;
  r = service_reconnect_new(svc, 0);
  if (r == NULL)
    return UV_ENOMEM;
  r->failed = code;
  uv_timer_start(&r->timer, service_reconnect_cb, 0, 0);
  return 0;
}


void cport__service_reconnect_later(cport_service_t* svc, unsigned attempts) {
  reconnect_t* r;
  uint64_t delay;
  if (svc->view.kind != CPORT_SERVICE_CLIENT ||
      svc->view.opts.reconnect == CPORT_RECONNECT_NONE ||
      service_state(svc) != SVC_RUNNING)
    return;
  r = service_reconnect_new(svc, attempts);
  if (r == NULL)
    return; /* no memory: this slot stays down, the others go on */
  delay = service_reconnect_delay(svc, attempts);
  cport__log(CPORT_LOG_INFO, "client: reconnecting in %llu ms (attempt %u)",
             (unsigned long long)delay, attempts + 1);
  /* From now, not from the loop's cached time, which may lag by a long
   * round and would shorten the wait. Reconnects are rare enough. */
  uv_update_time(svc->view.lp->loop);
  uv_timer_start(&r->timer, service_reconnect_cb, delay, 0);
}


/* Stop and destroy: no more reconnects. */
static void service_cancel_reconnects(cport_service_t* svc) {
  cport__qnode_t* n;
  while ((n = cport__queue_pop(&svc->reconnects)) != NULL) {
    reconnect_t* r = cport__container_of(n, reconnect_t, node);
    uv_close((uv_handle_t*)&r->timer, service_reconnect_close_cb);
  }
}


/* ---- connects to a host name (client services) ---- */

/* One connect attempt to a host name: the lookup, on libuv's thread pool
 * (uv_getaddrinfo; the loop never blocks), then the IPv4 and IPv6
 * addresses it returned, each by a session of its own (a socket can
 * neither connect again after a failed connect nor change family), raced
 * as RFC 8305 (Happy Eyeballs) says: the families interleaved, starting
 * with the lookup's first; the next address tried connect_attempt_delay_ms
 * after the previous one began, or at once when it fails; the first to
 * connect wins and the others are closed. A blackholed IPv6 route then
 * costs a quarter of a second, not a connect timeout. The timer bounds
 * the whole attempt, lookup included, by connect_timeout_ms, and paces the
 * race. Every attempt looks the name up again, so a changed DNS answer is
 * seen by the next reconnect.
 *
 * An attempt stays in svc->attempts, which keeps the service from being
 * idle (no on_stopped, no release), until its lookup has returned and its
 * timer has closed. A stop or destroy cancels a lookup not yet begun; one
 * under way cannot be interrupted, so its callback, with its result or
 * UV_EAI_CANCELED, is awaited (the loop's `lookups` count makes
 * cport_core_destroy() wait too). */
/* Most connects one attempt races at once; the next address waits for
 * one of them to fail. */
#define ATTEMPT_RACE_MAX 8

struct cport__attempt_s {
  uv_getaddrinfo_t req;
  uv_timer_t timer;
  cport__qnode_t node; /* in svc->attempts */
  cport_service_t* svc;
  struct addrinfo* list; /* the lookup's result */
  /* Its IPv4 and IPv6 addresses in the order they are tried. */
  const struct addrinfo** order;
  size_t norder;
  size_t next; /* the next of them to try */
  /* The sessions connecting now, each to one address. */
  cport_session_t* racing[ATTEMPT_RACE_MAX];
  unsigned nracing;
  uint64_t deadline; /* connect_timeout_ms's end (cport__clock_ms), or 0 */
  uint64_t next_at;  /* when the next address is due, or 0 */
  unsigned attempts; /* failed attempts in a row before this */
  int last;          /* the error of the last address tried */
  int timed_out;
  unsigned test_first : 1; /* the test hook's address is still to try */
  unsigned looking_up : 1; /* the lookup's callback is still to come */
  unsigned over : 1;       /* the outcome is reported (or connected) */
  unsigned closed : 1;     /* the timer's close callback has run */
};

static atomic_uint_least64_t service_lookups_started;

/* Test hook: an address every attempt tries before the lookup's, as a
 * resolver that answers with an address nobody listens on first would
 * make it (family 0: none). Set between tests only. */
static struct sockaddr_storage service_test_first;


uint64_t cport__service_lookups(void) {
  return (uint64_t)atomic_load(&service_lookups_started);
}


void cport__service_test_first_address(const struct sockaddr* sa) {
  memset(&service_test_first, 0, sizeof(service_test_first));
  if (sa != NULL)
    memcpy(&service_test_first, sa,
           sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                     : sizeof(struct sockaddr_in));
}


static void attempt_free_if_done(cport__attempt_t* a) {
  cport_service_t* svc = a->svc;
  /* Losers of the race report their end to `a` too. */
  if (a->looking_up || !a->closed || a->nracing > 0)
    return;
  cport__queue_remove(&svc->attempts, &a->node);
  svc->nattempts--;
  if (a->list != NULL)
    uv_freeaddrinfo(a->list);
  cport__free(a->order);
  cport__free(a);
  service_check_done(svc);
}


static void attempt_timer_close_cb(uv_handle_t* handle) {
  cport__attempt_t* a = handle->data;
  a->closed = 1;
  attempt_free_if_done(a);
}


/* The outcome is known: the timer goes; the memory follows once the
 * lookup has returned too. */
static void attempt_end(cport__attempt_t* a) {
  if (a->over)
    return;
  a->over = 1;
  uv_close((uv_handle_t*)&a->timer, attempt_timer_close_cb);
}


static void attempt_fail(cport__attempt_t* a, int code) {
  attempt_end(a);
  /* May stop or destroy the service; `a` lives until its timer's close
   * callback, in a later round. */
  cport__service_connect_failed(a->svc, a->attempts, code);
}


/* Start connecting a session to `to`; 0, or the error (a->last). */
static int attempt_connect(cport__attempt_t* a, const struct sockaddr* to) {
  cport_session_t* s = cport__session_new(a->svc);
  a->last = s != NULL ? cport__session_connect_to(s, a->attempts, to, a)
                      : UV_ENOMEM;
  if (a->last == 0)
    a->racing[a->nracing++] = s;
  return a->last;
}


static void attempt_timer_cb(uv_timer_t* timer);

/* Set the timer for whichever comes first: the next address's turn or
 * the attempt's deadline. */
static void attempt_arm(cport__attempt_t* a) {
  uint64_t due = a->deadline;
  uint64_t now;
  if (a->next_at != 0 && (due == 0 || a->next_at < due))
    due = a->next_at;
  if (due == 0) {
    uv_timer_stop(&a->timer);
    return;
  }
  now = cport__clock_ms();
  uv_update_time(a->svc->view.lp->loop);
  uv_timer_start(&a->timer, attempt_timer_cb, due > now ? due - now : 0, 0);
}


/* Start the next address (or the next that can be started) while a
 * place in the race is free, and time the one after it; when none is
 * left and nothing races, the attempt fails with the last error. */
static void attempt_next(cport__attempt_t* a) {
  cport_service_t* svc = a->svc;
  unsigned delay = svc->view.opts.connect_attempt_delay_ms;
  int started = 0;
  a->next_at = 0;
  if (a->test_first && a->nracing < ATTEMPT_RACE_MAX) {
    a->test_first = 0;
    started = attempt_connect(a, (const struct sockaddr*)&service_test_first) ==
              0;
  }
  while (!started && a->next < a->norder && a->nracing < ATTEMPT_RACE_MAX) {
    cport_addr_t to;
    const struct addrinfo* ai = a->order[a->next++];
    started = cport__addr_from_lookup(&to, ai->ai_addr,
                                      cport_addr_port(&svc->addr)) == 0 &&
              attempt_connect(a, cport_addr_sockaddr(&to)) == 0;
  }
  if (a->nracing == 0) {
    attempt_fail(a, a->last != 0 ? a->last : UV_EAI_NONAME);
    return;
  }
  /* 0: one address at a time, the next only when this one has failed. */
  if (started && delay > 0 && a->next < a->norder)
    a->next_at = cport__clock_ms() + delay;
  attempt_arm(a);
}


/* The lookup's IPv4 and IPv6 addresses, families alternating from the
 * first one's (RFC 8305, section 4), each family in the lookup's order
 * (which is the system's preference, RFC 6724). Returns 0 or UV_ENOMEM. */
static int attempt_order(cport__attempt_t* a) {
  const struct addrinfo* ai;
  const struct addrinfo* fam[2] = {NULL, NULL};
  size_t n = 0;
  int first;
  int turn;
  for (ai = cport__addr_next_inet(a->list); ai != NULL;
       ai = cport__addr_next_inet(ai->ai_next))
    n++;
  if (n == 0)
    return 0;
  a->order = cport__malloc(n * sizeof(*a->order));
  if (a->order == NULL)
    return UV_ENOMEM;
  first = cport__addr_next_inet(a->list)->ai_family;
  fam[0] = cport__addr_next_inet(a->list);
  for (ai = fam[0]; ai != NULL && ai->ai_family == first;
       ai = cport__addr_next_inet(ai->ai_next)) {
  }
  fam[1] = ai; /* the first of the other family, or NULL */
  for (turn = 0; a->norder < n; turn ^= 1) {
    const struct addrinfo** cur = &fam[turn];
    int want = turn == 0 ? first : (*cur != NULL ? (*cur)->ai_family : 0);
    if (*cur == NULL)
      continue;
    a->order[a->norder++] = *cur;
    /* The next of the same family. */
    for (ai = cport__addr_next_inet((*cur)->ai_next);
         ai != NULL && ai->ai_family != want;
         ai = cport__addr_next_inet(ai->ai_next)) {
    }
    *cur = ai;
  }
  return 0;
}


static void attempt_lookup_cb(uv_getaddrinfo_t* req,
                              int status,
                              struct addrinfo* res) {
  cport__attempt_t* a = cport__container_of(req, cport__attempt_t, req);
  cport_service_t* svc = a->svc;
  svc->view.lp->lookups--;
  a->looking_up = 0;
  a->list = res;
  if (a->over) {
    /* Timed out before: reported then. */
    attempt_free_if_done(a);
  } else if (service_state(svc) != SVC_RUNNING) {
    attempt_fail(a, UV_ECANCELED);
  } else if (status != 0) {
    attempt_fail(a, status);
  } else if (attempt_order(a) != 0) {
    attempt_fail(a, UV_ENOMEM);
  } else {
    a->test_first = service_test_first.ss_family != 0;
    attempt_next(a);
  }
}


/* The next address's turn, or the attempt's deadline. */
static void attempt_timer_cb(uv_timer_t* timer) {
  cport__attempt_t* a = timer->data;
  unsigned i;
  if (a->deadline == 0 || cport__clock_ms() < a->deadline) {
    if (a->next_at != 0 && !a->looking_up)
      attempt_next(a);
    else
      attempt_arm(a);
    return;
  }
  a->timed_out = 1;
  if (a->nracing > 0) {
    /* Their connect callbacks report, through cport__attempt_failed(). */
    cport_session_t* racing[ATTEMPT_RACE_MAX];
    unsigned n = a->nracing;
    memcpy(racing, a->racing, n * sizeof(racing[0]));
    for (i = 0; i < n; i++)
      cport__session_close(racing[i], UV_ETIMEDOUT, NULL, CPORT__CLOSE_FORCE);
    return;
  }
  /* Still looking up: reported now, however long the resolver takes. */
  (void)uv_cancel((uv_req_t*)&a->req);
  attempt_fail(a, UV_ETIMEDOUT);
}


static int service_attempt_start(cport_service_t* svc, unsigned attempts) {
  cport__loop_t* lp = svc->view.lp;
  unsigned timeout_ms = svc->view.opts.connect_timeout_ms;
  struct addrinfo hints;
  cport__attempt_t* a = cport__calloc(1, sizeof(*a));
  int rc;
  if (a == NULL)
    return UV_ENOMEM;
  a->svc = svc;
  a->attempts = attempts;
  cport__addr_hints(&hints);
  rc = uv_getaddrinfo(lp->loop, &a->req, attempt_lookup_cb,
                      cport_addr_host(&svc->addr), NULL, &hints);
  if (rc != 0) {
    cport__free(a);
    return rc;
  }
  atomic_fetch_add(&service_lookups_started, 1);
  lp->lookups++;
  a->looking_up = 1;
  (void)uv_timer_init(lp->loop, &a->timer); /* cannot fail */
  a->timer.data = a;
  cport__queue_push(&svc->attempts, &a->node);
  svc->nattempts++;
  if (timeout_ms > 0) {
    a->deadline = cport__clock_ms() + timeout_ms;
    attempt_arm(a);
  }
  return 0;
}


/* `s` is no longer in the race. */
static void attempt_unrace(cport__attempt_t* a, cport_session_t* s) {
  unsigned i;
  for (i = 0; i < a->nracing; i++)
    if (a->racing[i] == s) {
      a->racing[i] = a->racing[--a->nracing];
      return;
    }
}


void cport__attempt_failed(cport__attempt_t* a, cport_session_t* s, int code) {
  attempt_unrace(a, s);
  if (a->over) {
    /* A loser of the race, closed when another won. */
    attempt_free_if_done(a);
    return;
  }
  if (a->timed_out)
    code = UV_ETIMEDOUT;
  else if (service_state(a->svc) == SVC_RUNNING && code != UV_ECANCELED) {
    /* The next address at once, without waiting for its turn. */
    a->last = code;
    attempt_next(a);
    return;
  }
  /* Timed out, stopped or destroyed: reported once the last has ended. */
  if (a->nracing == 0)
    attempt_fail(a, code);
}


void cport__attempt_connected(cport__attempt_t* a, cport_session_t* s) {
  cport_session_t* losers[ATTEMPT_RACE_MAX];
  unsigned n;
  unsigned i;
  attempt_unrace(a, s);
  n = a->nracing;
  memcpy(losers, a->racing, n * sizeof(losers[0]));
  attempt_end(a);
  for (i = 0; i < n; i++)
    cport__session_close(losers[i], UV_ECANCELED, NULL, CPORT__CLOSE_FORCE);
}


/* Stop and destroy: an attempt still under way ends with UV_ECANCELED,
 * reported by its lookup's callback or, for a session connecting, by its
 * connect's (closed with the others). */
static void service_cancel_attempts(cport_service_t* svc) {
  cport__qnode_t* n;
  for (n = cport__queue_head(&svc->attempts); n != NULL; n = n->next) {
    cport__attempt_t* a = cport__container_of(n, cport__attempt_t, node);
    if (a->over)
      continue;
    uv_timer_stop(&a->timer);
    if (a->looking_up)
      (void)uv_cancel((uv_req_t*)&a->req);
  }
}


/* ---- stop and destroy ---- */

static void service_deadline_cb(uv_timer_t* timer) {
  cport_service_t* svc = timer->data;
  /* Sessions still flushing to a peer that does not read are cut off. */
  service_close_sessions(svc, CPORT_ESTOPPED, CPORT__CLOSE_FORCE);
  service_check_done(svc);
}


/* What a stop and a drain both begin with: the new state, the callback
 * their end reports, and nothing new from now on (the listener closed,
 * reconnects and lookups cancelled). */
static void service_end_begin(cport_service_t* svc,
                              svc_state_t state,
                              void (*on_end)(cport_service_t* svc)) {
  service_set_state(svc, state);
  svc->on_stopped = on_end;
  cport__listener_close(svc->listener);
  service_cancel_reconnects(svc);
  service_cancel_attempts(svc);
}


/* Run `cb` on the stop timer at `deadline` (cport__clock_ms time), or in
 * the loop's next round when nothing is open any more: the callbacks a
 * stop or drain reports never run inside the call that began it. */
static void service_deadline_at(cport_service_t* svc,
                                uint64_t deadline,
                                uv_timer_cb cb) {
  uint64_t now;
  if (svc->handles == 0) {
    service_check_done(svc);
    return;
  }
  /* libuv's timers count from the loop's cached time, which lags after a
   * long callback: brought up to date, so that the deadline is not cut
   * short by the lag. */
  now = cport__clock_ms();
  uv_update_time(svc->view.lp->loop);
  uv_timer_start(&svc->stop_timer, cb,
                 service_is_idle(svc) || deadline <= now ? 0 : deadline - now,
                 0);
}


/* Stop `svc` on its own loop (a root, or a part by its root's message),
 * cutting off what still flushes at `deadline` (cport__clock_ms time): the
 * root's deadline, counted from its stop call, for every part alike. */
static int service_stop_here(cport_service_t* svc,
                             uint64_t deadline,
                             void (*on_stopped)(cport_service_t* svc)) {
  svc_state_t was = service_state(svc);
  if (was == SVC_STOPPING || was == SVC_STOPPED || was == SVC_DESTROYING)
    return UV_EALREADY;
  service_end_begin(svc, SVC_STOPPING, on_stopped);
  service_close_sessions(svc, CPORT_ESTOPPED, CPORT__CLOSE_GRACEFUL);
  if (was != SVC_CREATED)
    service_post_parts(svc, offsetof(cport_service_t, msg_stop), part_stop_run,
                       deadline);
  service_deadline_at(svc, deadline, service_deadline_cb);
  return 0;
}


/* The drain's deadline: whatever is still open ends, gracefully, as
 * drained (flushing bounded by disconnect_timeout_ms). */
static void service_drain_deadline_cb(uv_timer_t* timer) {
  cport_service_t* svc = timer->data;
  service_close_sessions(svc, CPORT_EDRAINED, CPORT__CLOSE_GRACEFUL);
  service_check_done(svc);
}


/* Client connects not through yet: cancelled, since a draining service
 * makes no new sessions (their attempts report UV_ECANCELED). */
static void service_close_connecting(cport_service_t* svc) {
  cport__qnode_t* n = cport__queue_head(&svc->sessions);
  while (n != NULL) {
    cport__qnode_t* next = n->next;
    cport_session_t* s = cport__session_of(n);
    if (!cport__session_was_connected(s))
      cport__session_close(s, CPORT_ESTOPPED, NULL, CPORT__CLOSE_FORCE);
    n = next;
  }
}


/* Drain `svc` on its own loop (a root, or a part by its root's message):
 * nothing new, the sessions left alone until `deadline`. */
static int service_drain_here(cport_service_t* svc,
                              uint64_t deadline,
                              void (*on_drained)(cport_service_t* svc)) {
  if (service_state(svc) != SVC_RUNNING)
    return UV_EALREADY;
  service_end_begin(svc, SVC_DRAINING, on_drained);
  if (svc->view.kind == CPORT_SERVICE_CLIENT)
    service_close_connecting(svc);
  service_post_parts(svc, offsetof(cport_service_t, msg_drain), part_drain_run,
                     deadline);
  service_deadline_at(svc, deadline, service_drain_deadline_cb);
  return 0;
}


/* What cport_service_stop() and cport_service_drain() (`fn`) check of
 * their arguments and their caller's thread. */
static int service_end_check(const cport_service_t* svc,
                             int deadline_ms,
                             const char* fn) {
  if (svc == NULL || service_is_part(svc))
    return cport__einval(fn, "svc is NULL");
  if (deadline_ms < 0)
    return cport__einval(fn, "deadline_ms %d: must be 0 or more", deadline_ms);
  return cport__loop_check(svc->view.lp, fn);
}


int cport_service_drain(cport_service_t* svc,
                        int deadline_ms,
                        void (*on_drained)(cport_service_t* svc)) {
  int rc = service_end_check(svc, deadline_ms, "cport_service_drain");
  if (rc != 0)
    return rc;
  if (service_state(svc) == SVC_CREATED)
    return cport__einval("cport_service_drain",
                         "the service was never started");
  return service_drain_here(svc, cport__clock_ms() + (uint64_t)deadline_ms,
                            on_drained);
}


int cport__service_join_drain(cport_service_t* svc,
                              void (*cb)(cport_service_t* svc)) {
  if (service_state(svc) != SVC_DRAINING)
    return UV_EINVAL;
  svc->on_joined = cb;
  return 0;
}


int cport_service_is_draining(const cport_service_t* svc) {
  return svc != NULL && service_state(svc->view.root) == SVC_DRAINING;
}


int cport_service_stop(cport_service_t* svc,
                       int deadline_ms,
                       void (*on_stopped)(cport_service_t* svc)) {
  int rc = service_end_check(svc, deadline_ms, "cport_service_stop");
  if (rc != 0)
    return rc;
  return service_stop_here(svc, cport__clock_ms() + (uint64_t)deadline_ms,
                           on_stopped);
}


/* Destroy `svc` on its own loop (a root, or a part by its root's
 * message). */
static void service_destroy_here(cport_service_t* svc) {
  svc_state_t was = service_state(svc);
  if (was == SVC_DESTROYING)
    return;
  service_set_state(svc, SVC_DESTROYING);
  cport__listener_close(svc->listener);
  service_cancel_reconnects(svc);
  service_cancel_attempts(svc);
  service_close_sessions(svc, CPORT_ESTOPPED, CPORT__CLOSE_FORCE);
  /* Parts stopping still report back, to a root that is no longer
   * interested; their messages hold it. */
  svc->parts_running = 0;
  service_post_parts(svc, offsetof(cport_service_t, msg_destroy),
                     part_destroy_run, 0);
  if (svc->handles > 0) {
    /* The service's own hold is dropped by the last close callback: these
     * timers', or a session's or the listener's if they close later. */
    cport__timeouts_close(&svc->view.timeouts, svc, service_timer_close_cb);
    uv_close((uv_handle_t*)&svc->stop_timer, service_timer_close_cb);
  } else {
    /* A part never started: nothing of it lives on the loop. */
    service_check_done(svc);
  }
}


void cport_service_destroy(cport_service_t* svc) {
  if (svc == NULL || service_is_part(svc))
    return;
  /* From another thread the destroy would race the loop's callbacks:
   * refused and logged, the service left running. */
  if (cport__loop_check(svc->view.lp, "cport_service_destroy") != 0)
    return;
  cport__core_unregister(svc->core, &svc->view.entry);
  service_destroy_here(svc);
}


/* ---- queries ---- */

int cport_service_local_addr(const cport_service_t* svc, cport_addr_t* out) {
  svc_state_t state;
  int rc;
  if (svc == NULL || out == NULL || svc->view.kind != CPORT_SERVICE_SERVER)
    return UV_EINVAL;
  rc = cport__loop_check(svc->view.lp, "cport_service_local_addr");
  if (rc != 0)
    return rc;
  state = service_state(svc);
  if (svc->listener == NULL || state != SVC_RUNNING)
    return UV_ENOTCONN;
  return cport__listener_addr(svc->listener, out);
}


size_t cport_service_session_count(const cport_service_t* svc) {
  return svc == NULL ? 0 : (size_t)atomic_load(&svc->view.root->active);
}


/* Visit the live sessions of one service (root or part). */
static int service_foreach_here(cport_service_t* svc,
                                int (*fn)(cport_session_t* s, void* arg),
                                void* arg) {
  cport__qnode_t* n;
  int rc = 0;
  for (n = cport__queue_head(&svc->sessions); n != NULL; n = n->next) {
    cport_session_t* s = cport__session_of(n);
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
  /* Only the loops the calling thread runs: the others' lists are theirs. */
  if (cport__loop_is_mine(svc->view.lp))
    rc = service_foreach_here(svc, fn, arg);
  for (i = 0; i < svc->nparts && rc == 0; i++)
    if (cport__loop_is_mine(svc->parts[i]->view.lp))
      rc = service_foreach_here(svc->parts[i], fn, arg);
  return rc;
}


/* ---- broadcast ---- */

typedef struct broadcast_s {
  cport__msg_t msg;
  cport_service_t* svc; /* root or part, held until the message has run */
  cport_buf_t* buf;     /* one reference */
} broadcast_t;

static int broadcast_send(cport_session_t* s, void* arg) {
  /* A session whose queue is full misses it (or is closed, under
   * CPORT_SENDQ_DISCONNECT); the others go on. */
  (void)cport_session_send_buf(s, arg);
  return 0;
}


static void broadcast_run(cport__msg_t* m, const cport__msg_t* next) {
  broadcast_t* b = cport__container_of(m, broadcast_t, msg);
  (void)next;
  (void)service_foreach_here(b->svc, broadcast_send, b->buf);
  cport_buf_unref(b->buf);
  cport__service_release(b->svc);
  cport__free(b);
}


/* Send `buf` to the sessions of one part (or the root): at once when this
 * thread may act on the loop now, else through the loop's mailbox, in
 * order with everything posted there before. */
static int broadcast_to(cport_service_t* svc, cport_buf_t* buf) {
  broadcast_t* b;
  if (cport__loop_direct(svc->view.lp))
    return service_foreach_here(svc, broadcast_send, buf);
  b = cport__malloc(sizeof(*b));
  if (b == NULL)
    return UV_ENOMEM;
  b->msg.run = broadcast_run;
  b->svc = svc;
  b->buf = buf;
  cport_buf_ref(buf);
  cport__service_hold(svc);
  cport__loop_post(svc->view.lp, &b->msg);
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


/* ---- stats and data ---- */

static void service_stats_add(const cport_service_t* svc,
                              cport_service_stats_t* out) {
#define SVC_STAT_SUM(name)                         \
  out->name += (uint64_t)cport__atomic_load_const( \
      atomic_uint_least64_t, &svc->view.stats.name, memory_order_relaxed);
  CPORT__STATS(SVC_STAT_SUM)
#undef SVC_STAT_SUM
}


int cport_service_stats(const cport_service_t* svc,
                        cport_service_stats_t* out) {
  unsigned i;
  if (svc == NULL || out == NULL)
    return UV_EINVAL;
  memset(out, 0, sizeof(*out));
  service_stats_add(svc, out);
  for (i = 0; i < svc->nparts; i++) service_stats_add(svc->parts[i], out);
  out->active = (uint64_t)cport__atomic_load_const(
      atomic_uint_least64_t, &svc->active, memory_order_seq_cst);
  out->peak = (uint64_t)cport__atomic_load_const(
      atomic_uint_least64_t, &svc->peak, memory_order_seq_cst);
  return 0;
}


void cport_service_set_data(cport_service_t* svc, void* data) {
  if (svc != NULL && cport__loop_check(svc->view.lp,
                                       "cport_service_set_data") == 0)
    svc->data = data;
}


void* cport_service_get_data(const cport_service_t* svc) {
  return svc == NULL ? NULL : svc->data;
}


cport_core_t* cport_service_core(const cport_service_t* svc) {
  return svc == NULL ? NULL : svc->core;
}
