#include "fixture.h"

#include "service_internal.h" /* cport__loop_is_mine */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _WIN32
#include <windows.h>
#endif

#include "common.h" /* cport__mem_live */


void bytes_append(bytes_t* b, const void* data, size_t len) {
  if (len == 0)
    return;
  if (b->len + len > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + len) cap *= 2;
    b->data = realloc(b->data, cap);
    assert_non_null(b->data);
    b->cap = cap;
  }
  memcpy(b->data + b->len, data, len);
  b->len += len;
}


void bytes_free(bytes_t* b) {
  free(b->data);
  memset(b, 0, sizeof(*b));
}


void fill_pattern(uint8_t* buf, size_t len, uint32_t seed) {
  uint32_t x = seed * 2654435761u + 1;
  size_t i;
  for (i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    buf[i] = (uint8_t)x;
  }
}


/* ---- recorder callbacks ---- */

rec_session_t* rec_of(cport_session_t* s) {
  return cport_session_user(s);
}


static void rec_free(rec_session_t* r) {
  bytes_free(&r->received);
  bytes_free(&r->last_call);
}


static cport_session_t** rec_last_slot(fixture_t* fx, cport_session_t* s) {
  return cport_session_service(s) == fx->client ? &fx->last_client
                                                : &fx->last_server;
}


/* Drop the fixture's reference on a remembered session. */
static void rec_forget(cport_session_t** slot) {
  cport_session_t* old = *slot;
  if (old == NULL)
    return;
  *slot = NULL;
  /* Its record is freed here if on_disconnected already ran, or there. */
  if (rec_of(old)->disconnected)
    rec_free(rec_of(old));
  cport_session_unref(old);
}


static void rec_on_connected(cport_session_t* s) {
  rec_session_t* r = cport_session_user(s);
  fixture_t* fx = cport_service_get_data(cport_session_service(s));
  cport_session_t** slot = rec_last_slot(fx, s);
  r->fx = fx;
  r->connected++;
  fx->connected++;
  rec_forget(slot);
  cport_session_ref(s);
  *slot = s;
}


static size_t rec_on_recv(cport_session_t* s, const uint8_t* data, size_t len) {
  rec_session_t* r = cport_session_user(s);
  fixture_t* fx = r->fx;
  size_t take = len;
  r->calls++;
  r->last_call.len = 0;
  bytes_append(&r->last_call, data, len);
  switch (cport_session_service(s) == fx->client ? fx->client_mode : fx->mode) {
    case RECV_ECHO:
      if (cport_session_send(s, data, len) != 0)
        return 0;
      break;
    case RECV_CONSUME:
      break;
    case RECV_PARTIAL:
      if (take > fx->consume_max)
        take = fx->consume_max;
      break;
    case RECV_NOTHING:
      take = 0;
      break;
    case RECV_DISCONNECT:
      bytes_append(&r->received, data, len);
      cport_session_disconnect(s, "test asked");
      return len;
    case RECV_OVERCONSUME:
      return len + 1;
    case RECV_FLOOD_ONCE:
      if (r->calls == 1) {
        uint8_t* flood = calloc(1, fx->flood_len);
        assert_non_null(flood);
        assert_int_equal(cport_session_send(s, flood, fx->flood_len), 0);
        free(flood);
        return 0;
      }
      break;
  }
  bytes_append(&r->received, data, take);
  return take;
}


static void rec_on_send(cport_session_t* s, size_t len) {
  rec_session_t* r = cport_session_user(s);
  r->sent += len;
  r->fx->sent += len;
}


static void rec_on_disconnected(cport_session_t* s,
                                int code,
                                const char* cause) {
  rec_session_t* r = cport_session_user(s);
  fixture_t* fx = r->fx;
  r->disconnected++;
  r->code = code;
  fx->disconnected++;
  fx->last_code = code;
  fx->count_in_disconnect =
      cport_service_session_count(cport_session_service(s));
  snprintf(fx->last_cause, sizeof(fx->last_cause), "%s", cause);
  /* The records of a remembered session stay for the test to read. */
  if (s != fx->last_server && s != fx->last_client)
    rec_free(r);
}


static void rec_on_connect_failed(cport_service_t* svc, int code) {
  fixture_t* fx = cport_service_get_data(svc);
  fx->connect_failed++;
  fx->last_connect_error = code;
}


static void fixture_apply_callbacks(fixture_t* fx, cport_service_opts_t* o) {
  *o = fx->opts;
  o->cbs.on_connected = rec_on_connected;
  o->cbs.on_recv = rec_on_recv;
  o->cbs.on_send = fx->no_on_send ? NULL : rec_on_send;
  o->cbs.on_disconnected = rec_on_disconnected;
  o->cbs.on_connect_failed = rec_on_connect_failed;
  o->user_size = sizeof(rec_session_t);
  o->data = fx;
}


int fixture_setup(void** state) {
  fixture_t* fx = calloc(1, sizeof(*fx));
  assert_non_null(fx);
  fx->mem_baseline = cport__mem_live();
  assert_int_equal(cport_core_create(&fx->core, NULL), 0);
  fx->loop = cport_core_uv_loop(fx->core, 0);
  cport_service_opts_init(&fx->opts);
  fx->mode = RECV_ECHO;
  fx->client_mode = RECV_CONSUME;
  fx->consume_max = SIZE_MAX;
  *state = fx;
  return 0;
}


static void fixture_on_stopped(cport_service_t* svc) {
  fixture_t* fx = cport_service_get_data(svc);
  fx->stopped++;
}


void fixture_stop_service(fixture_t* fx,
                          cport_service_t* svc,
                          int deadline_ms) {
  int before = fx->stopped;
  assert_int_equal(cport_service_stop(svc, deadline_ms, fixture_on_stopped), 0);
  fixture_wait_int(fx, &fx->stopped, before + 1, FIXTURE_TIMEOUT_MS);
}


int fixture_teardown(void** state) {
  fixture_t* fx = *state;
  if (fx->server != NULL)
    cport_service_destroy(fx->server);
  if (fx->client != NULL)
    cport_service_destroy(fx->client);
  /* Destroy ran every on_disconnected (with the closes), so forgetting now
   * frees the remembered records too. */
  /* Let the close callbacks run so the services are freed. A peer the test
   * forgot would keep the loop alive, hence the bound. */
  {
    uint64_t deadline = uv_hrtime() + (uint64_t)FIXTURE_TIMEOUT_MS * 1000000u;
    while (cport_core_dispatch(fx->core, 0, 10) > 0)
      assert_true(uv_hrtime() < deadline);
  }
  rec_forget(&fx->last_server);
  rec_forget(&fx->last_client);
  cport_core_destroy(fx->core);
  assert_int_equal(cport__mem_live(), fx->mem_baseline);
  free(fx);
  return 0;
}


cport_service_t* fixture_create_service(fixture_t* fx,
                                        cport_service_kind_t kind,
                                        const char* host,
                                        const cport_service_opts_t* o) {
  cport_service_opts_t defaults;
  cport_service_t* svc = NULL;
  cport_addr_t addr;
  if (o == NULL) {
    cport_service_opts_init(&defaults);
    o = &defaults;
  }
  assert_int_equal(cport_addr_parse(&addr, host, 0), 0);
  assert_int_equal(cport_service_create(&svc, fx->core, kind, &addr, o), 0);
  return svc;
}


void fixture_start_server(fixture_t* fx) {
  fixture_start_server_at(fx, NULL);
}


void fixture_start_server_at(fixture_t* fx, const cport_addr_t* addr) {
  cport_service_opts_t o;
  cport_addr_t any;
  fixture_apply_callbacks(fx, &o);
  assert_int_equal(cport_addr_parse(&any, "127.0.0.1", 0), 0);
  /* An inherited socket (opts.listen_fd) comes with its address. */
  if (addr == NULL && o.listen_fd == -1)
    addr = &any;
  assert_int_equal(
      cport_service_create(&fx->server, fx->core, CPORT_SERVICE_SERVER, addr,
                           &o),
      0);
  assert_int_equal(cport_service_start(fx->server), 0);
  assert_int_equal(cport_service_local_addr(fx->server, &fx->server_addr), 0);
  /* A local endpoint has no port. */
  if (cport_addr_path(&fx->server_addr) == NULL)
    assert_true(cport_addr_port(&fx->server_addr) > 0);
}


void fixture_start_client(fixture_t* fx, const cport_addr_t* addr, unsigned n) {
  cport_service_opts_t o;
  fixture_apply_callbacks(fx, &o);
  o.connect_count = n;
  assert_int_equal(cport_service_create(&fx->client, fx->core,
                                        CPORT_SERVICE_CLIENT, addr, &o),
                   0);
  assert_int_equal(cport_service_start(fx->client), 0);
}


int fixture_run_until(fixture_t* fx,
                      int (*pred)(void* arg),
                      void* arg,
                      int timeout_ms) {
  uint64_t deadline = uv_hrtime() + (uint64_t)timeout_ms * 1000000u;
  while (!pred(arg)) {
    if (uv_hrtime() >= deadline)
      return 0;
    cport_core_dispatch(fx->core, 0, 10);
  }
  return 1;
}


typedef struct wait_int_s {
  const int* counter;
  int target;
} wait_int_t;


static int pred_int(void* arg) {
  wait_int_t* w = arg;
  return *w->counter >= w->target;
}


/* Run the fixture until pred(arg), for as long as *progress keeps changing:
 * 0 once it has not changed for `stall_ms`, or after 20 times that in all.
 * A slow machine (sanitizers, ctest -j8 on two cores) only makes the wait
 * longer; a hang still fails. */
static int fixture_run_while_moving(fixture_t* fx,
                                    int (*pred)(void* arg),
                                    void* arg,
                                    const volatile void* progress,
                                    size_t progress_size,
                                    int stall_ms) {
  uint64_t now = uv_hrtime();
  uint64_t moved = now;
  uint64_t give_up = now + 20 * (uint64_t)stall_ms * 1000000u;
  size_t last = 0;
  memcpy(&last, (const void*)progress, progress_size);
  while (!fixture_run_until(fx, pred, arg, 100)) {
    size_t seen = 0;
    memcpy(&seen, (const void*)progress, progress_size);
    now = uv_hrtime();
    if (seen != last) {
      last = seen;
      moved = now;
    } else if (now - moved >= (uint64_t)stall_ms * 1000000u) {
      return 0;
    }
    if (now >= give_up)
      return 0;
  }
  return 1;
}


void fixture_wait_int(fixture_t* fx,
                      const int* counter,
                      int target,
                      int timeout_ms) {
  wait_int_t w = {counter, target};
  if (!fixture_run_while_moving(fx, pred_int, &w, counter, sizeof(*counter),
                                timeout_ms))
    fail_msg("counter %d stopped short of %d (no change for %d ms)",
             *counter, target, timeout_ms);
}


typedef struct wait_size_s {
  const size_t* counter;
  size_t target;
} wait_size_t;


static int pred_size(void* arg) {
  wait_size_t* w = arg;
  return *w->counter >= w->target;
}


void fixture_wait_size(fixture_t* fx,
                       const size_t* counter,
                       size_t target,
                       int timeout_ms) {
  wait_size_t w = {counter, target};
  if (!fixture_run_while_moving(fx, pred_size, &w, counter, sizeof(*counter),
                                timeout_ms))
    fail_msg("count %zu stopped short of %zu (no change for %d ms)", *counter,
             target, timeout_ms);
}


/* ---- peers ---- */

static void peer_alloc_cb(uv_handle_t* h, size_t suggested, uv_buf_t* buf) {
  static char chunk[65536];
  (void)h;
  (void)suggested;
  buf->base = chunk;
  buf->len = sizeof(chunk);
}


static void peer_read_cb(uv_stream_t* stream,
                         ssize_t nread,
                         const uv_buf_t* buf) {
  peer_t* p = stream->data;
  if (nread > 0) {
    bytes_append(&p->received, buf->base, (size_t)nread);
  } else if (nread == UV_EOF) {
    p->eof = 1;
  } else if (nread < 0) {
    p->error = (int)nread;
  }
}


static void peer_connect_cb(uv_connect_t* req, int status) {
  peer_t* p = req->handle->data;
  if (status != 0) {
    p->connect_error = status;
    return;
  }
  p->connected = 1;
  if (uv_read_start((uv_stream_t*)&p->tcp, peer_alloc_cb, peer_read_cb) == 0)
    p->reading = 1;
}


static int pred_peer_connect(void* arg) {
  peer_t* p = arg;
  return p->connected || p->connect_error != 0;
}


peer_t* peer_connect(fixture_t* fx, const cport_addr_t* addr, int allow_fail) {
  peer_t* p = calloc(1, sizeof(*p));
  assert_non_null(p);
  p->fx = fx;
  assert_int_equal(uv_tcp_init(fx->loop, &p->tcp), 0);
  p->tcp.data = p;
  assert_int_equal(uv_tcp_connect(&p->connect, &p->tcp,
                                  cport_addr_sockaddr(addr), peer_connect_cb),
                   0);
  assert_true(fixture_run_until(fx, pred_peer_connect, p, FIXTURE_TIMEOUT_MS));
  if (!allow_fail)
    assert_int_equal(p->connect_error, 0);
  return p;
}


typedef struct peer_write_s {
  uv_write_t req;
  peer_t* peer;
  size_t len;
  char data[];
} peer_write_t;


static void peer_write_cb(uv_write_t* req, int status) {
  peer_write_t* w = (peer_write_t*)req;
  if (status == 0)
    w->peer->written += w->len;
  else if (w->peer->error == 0)
    w->peer->error = status;
  free(w);
}


void peer_write(peer_t* p, const void* data, size_t len) {
  peer_write_t* w = malloc(sizeof(*w) + len);
  uv_buf_t buf;
  assert_non_null(w);
  w->peer = p;
  w->len = len;
  memcpy(w->data, data, len);
  buf = uv_buf_init(w->data, (unsigned int)len);
  assert_int_equal(
      uv_write(&w->req, (uv_stream_t*)&p->tcp, &buf, 1, peer_write_cb), 0);
}


static void peer_shutdown_cb(uv_shutdown_t* req, int status) {
  (void)req;
  (void)status;
}


void peer_shutdown(peer_t* p) {
  assert_int_equal(
      uv_shutdown(&p->shutdown, (uv_stream_t*)&p->tcp, peer_shutdown_cb), 0);
}


static void peer_close_cb(uv_handle_t* h) {
  peer_t* p = h->data;
  p->closed = 1;
}


void peer_reset(peer_t* p) {
  assert_int_equal(uv_tcp_close_reset(&p->tcp, peer_close_cb), 0);
}


void peer_stop_reading(peer_t* p) {
  if (p->reading)
    uv_read_stop((uv_stream_t*)&p->tcp);
  p->reading = 0;
}


int fixture_spawn_self(fixture_t* fx,
                       uv_process_t* proc,
                       const char* const* args,
                       uv_exit_cb exit_cb) {
  static char exe[4096];
  size_t exe_len = sizeof(exe);
  char* argv[6];
  uv_process_options_t po;
  uv_stdio_container_t stdio[3];
  int n = 0;
  assert_int_equal(uv_exepath(exe, &exe_len), 0);
  argv[n++] = exe;
  while (n < 5 && args[n - 1] != NULL) {
    argv[n] = (char*)args[n - 1];
    n++;
  }
  assert_null(args[n - 1]);
  argv[n] = NULL;
  memset(&po, 0, sizeof(po));
  memset(stdio, 0, sizeof(stdio));
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = UV_INHERIT_FD;
  stdio[1].data.fd = 1;
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = 2;
  po.file = exe;
  po.args = argv;
  po.exit_cb = exit_cb;
  po.stdio = stdio;
  po.stdio_count = 3;
  return uv_spawn(fx->loop, proc, &po);
}


peer_t* fixture_connect_stuck_peer(fixture_t* fx) {
  uint8_t* payload = calloc(1, FIXTURE_STUCK_BYTES);
  peer_t* p;
  int before = fx->connected;
  assert_non_null(payload);
  p = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &fx->connected, before + 1, FIXTURE_TIMEOUT_MS);
  peer_stop_reading(p);
  assert_int_equal(
      cport_session_send(fx->last_server, payload, FIXTURE_STUCK_BYTES), 0);
  free(payload);
  return p;
}


void peer_resume_reading(peer_t* p) {
  if (!p->reading)
    assert_int_equal(
        uv_read_start((uv_stream_t*)&p->tcp, peer_alloc_cb, peer_read_cb), 0);
  p->reading = 1;
}


void peer_destroy(peer_t* p) {
  if (!uv_is_closing((uv_handle_t*)&p->tcp))
    uv_close((uv_handle_t*)&p->tcp, peer_close_cb);
  fixture_wait_int(p->fx, &p->closed, 1, FIXTURE_TIMEOUT_MS);
  bytes_free(&p->received);
  free(p);
}


int fixture_under_wine(void) {
#ifdef _WIN32
  /* Wine's ntdll exports its version; Windows' does not. */
  HMODULE ntdll = GetModuleHandleA("ntdll.dll");
  return ntdll != NULL && GetProcAddress(ntdll, "wine_get_version") != NULL;
#else
  return 0;
#endif
}


/* ---- cross-thread signalling ---- */

void signal_init(signal_t* s) {
  memset(s, 0, sizeof(*s));
  assert_int_equal(uv_mutex_init(&s->mu), 0);
  assert_int_equal(uv_cond_init(&s->cv), 0);
}


void signal_destroy(signal_t* s) {
  uv_cond_destroy(&s->cv);
  uv_mutex_destroy(&s->mu);
}


void signal_raise(signal_t* s) {
  uv_mutex_lock(&s->mu);
  s->count++;
  s->thread = uv_thread_self();
  uv_cond_broadcast(&s->cv);
  uv_mutex_unlock(&s->mu);
}


/* Wait until the count reaches `target`; 0 on timeout. */
int signal_wait(signal_t* s, int target, int timeout_ms) {
  uint64_t deadline = uv_hrtime() + (uint64_t)timeout_ms * 1000000u;
  int reached;
  uv_mutex_lock(&s->mu);
  while (s->count < target) {
    uint64_t now = uv_hrtime();
    if (now >= deadline)
      break;
    (void)uv_cond_timedwait(&s->cv, &s->mu, deadline - now);
  }
  reached = s->count >= target;
  uv_mutex_unlock(&s->mu);
  return reached;
}


int signal_count(signal_t* s) {
  int n;
  uv_mutex_lock(&s->mu);
  n = s->count;
  uv_mutex_unlock(&s->mu);
  return n;
}


int signal_raised_on_this_thread(signal_t* s) {
  uv_thread_t self = uv_thread_self();
  int same;
  uv_mutex_lock(&s->mu);
  same = uv_thread_equal(&self, &s->thread);
  uv_mutex_unlock(&s->mu);
  return same;
}


/* ---- a core of several loops ---- */


static spread_t* spread_of(cport_session_t* s) {
  /* A part's session still reports the application's service. */
  return cport_service_get_data(cport_session_service(s));
}

static void spread_check_thread(spread_t* sp, cport_session_t* s) {
  if (!cport__loop_is_mine(cport__core_loop(sp->core, cport_session_loop(s))))
    atomic_fetch_add(&sp->wrong_thread, 1);
}

static void spread_server_connected(cport_session_t* s) {
  spread_t* sp = spread_of(s);
  spread_check_thread(sp, s);
  atomic_fetch_add(&sp->per_port[cport_session_loop(s)], 1);
  atomic_fetch_add(&sp->connected, 1);
}

static size_t spread_server_recv(cport_session_t* s,
                                 const uint8_t* data,
                                 size_t len) {
  spread_check_thread(spread_of(s), s);
  return cport_session_send(s, data, len) == 0 ? len : 0;
}

static void spread_server_disconnected(cport_session_t* s,
                                       int code,
                                       const char* cause) {
  spread_t* sp = spread_of(s);
  (void)code;
  (void)cause;
  spread_check_thread(sp, s);
  atomic_fetch_add(&sp->disconnected, 1);
}

static void spread_client_connected(cport_session_t* s) {
  spread_t* sp = spread_of(s);
  atomic_fetch_add(&sp->client_connected, 1);
  /* May fail for a connection the server refuses at once. */
  if (sp->ping)
    (void)cport_session_send(s, "ping", 4);
}

static size_t spread_client_recv(cport_session_t* s,
                                 const uint8_t* data,
                                 size_t len) {
  spread_t* sp = spread_of(s);
  (void)data;
  if (atomic_fetch_add(&sp->received, (int)len) + (int)len ==
      atomic_load(&sp->expect))
    signal_raise(&sp->done);
  return len;
}

void spread_stopped(cport_service_t* svc) {
  spread_t* sp = cport_service_get_data(svc);
  atomic_fetch_add(&sp->stopped, 1);
  signal_raise(&sp->done);
}

void spread_stop_job(void* arg) {
  cport_service_t* svc = arg;
  assert_int_equal(cport_service_stop(svc, 5000, spread_stopped), 0);
}

void spread_start(spread_t* sp,
                  cport_service_t** server,
                  cport_service_t** client,
                  unsigned max_sessions,
                  unsigned conns,
                  int ping) {
  cport_core_opts_t copts;
  cport_service_opts_t o;
  cport_addr_t addr;
  memset(sp, 0, sizeof(*sp));
  signal_init(&sp->done);
  sp->ping = ping;
  atomic_store(&sp->expect, ping ? 4 * (int)conns : -1);
  cport_core_opts_init(&copts);
  copts.loops = SPREAD_PORTS;
  assert_int_equal(cport_core_create(&sp->core, &copts), 0);
  assert_int_equal(cport_addr_parse(&addr, "127.0.0.1", 0), 0);
  cport_service_opts_init(&o);
  o.cbs.on_connected = spread_server_connected;
  o.cbs.on_recv = spread_server_recv;
  o.cbs.on_disconnected = spread_server_disconnected;
  o.max_sessions = max_sessions;
  o.data = sp;
  assert_int_equal(
      cport_service_create(server, sp->core, CPORT_SERVICE_SERVER, &addr, &o),
      0);
  assert_int_equal(cport_service_start(*server), 0);
  assert_int_equal(cport_service_local_addr(*server, &addr), 0);
  cport_service_opts_init(&o);
  o.cbs.on_connected = spread_client_connected;
  o.cbs.on_recv = spread_client_recv;
  o.connect_count = conns;
  o.loop = 1;
  o.data = sp;
  assert_int_equal(
      cport_service_create(client, sp->core, CPORT_SERVICE_CLIENT, &addr, &o),
      0);
  assert_int_equal(cport_service_start(*client), 0);
}

int spread_drive(spread_t* sp, atomic_int* counter, int target) {
  uint64_t deadline = uv_hrtime() + (uint64_t)FIXTURE_TIMEOUT_MS * 1000000u;
  unsigned i;
  while (atomic_load(counter) < target) {
    if (uv_hrtime() >= deadline)
      return 0;
    for (i = 0; i < SPREAD_PORTS; i++) cport_core_dispatch(sp->core, i, 1);
  }
  return 1;
}


void spread_stop_running(spread_t* sp,
                         cport_service_t* server,
                         cport_service_t* client) {
  int before = signal_count(&sp->done);
  assert_int_equal(cport_core_post(sp->core, 0, spread_stop_job, server), 0);
  assert_int_equal(cport_core_post(sp->core, 1, spread_stop_job, client), 0);
  assert_true(signal_wait(&sp->done, before + 2, FIXTURE_TIMEOUT_MS));
  assert_int_equal(cport_core_stop(sp->core), 0);
  assert_int_equal(cport_core_join(sp->core), 0);
}


void spread_destroy(spread_t* sp,
                    cport_service_t* server,
                    cport_service_t* client) {
  cport_service_destroy(client);
  cport_service_destroy(server);
  cport_core_destroy(sp->core);
  signal_destroy(&sp->done);
}


/* ---- log capture ---- */

static uv_once_t log_cap_once = UV_ONCE_INIT;
static struct {
  uv_mutex_t lock;
  char text[8192];
  size_t len;
  int lines;
} log_cap;

static void log_cap_init(void) {
  if (uv_mutex_init(&log_cap.lock) != 0)
    abort();
}

static void log_cap_fn(cport_log_level_t level, const char* msg, void* arg) {
  size_t n = strlen(msg);
  (void)level;
  (void)arg;
  uv_mutex_lock(&log_cap.lock);
  if (log_cap.len + n + 2 < sizeof(log_cap.text)) {
    memcpy(log_cap.text + log_cap.len, msg, n);
    log_cap.len += n;
    log_cap.text[log_cap.len++] = '\n';
    log_cap.text[log_cap.len] = '\0';
  }
  log_cap.lines++;
  uv_mutex_unlock(&log_cap.lock);
}

void log_capture_begin(cport_log_level_t level) {
  uv_once(&log_cap_once, log_cap_init);
  uv_mutex_lock(&log_cap.lock);
  log_cap.len = 0;
  log_cap.text[0] = '\0';
  log_cap.lines = 0;
  uv_mutex_unlock(&log_cap.lock);
  cport_set_log(log_cap_fn, NULL, level);
}

int log_capture_take(char* out, size_t cap) {
  int lines;
  uv_mutex_lock(&log_cap.lock);
  if (cap > 0) {
    size_t n = log_cap.len < cap - 1 ? log_cap.len : cap - 1;
    memcpy(out, log_cap.text, n);
    out[n] = '\0';
  }
  lines = log_cap.lines;
  log_cap.len = 0;
  log_cap.text[0] = '\0';
  log_cap.lines = 0;
  uv_mutex_unlock(&log_cap.lock);
  return lines;
}

void log_capture_end(void) {
  cport_set_log(NULL, NULL, CPORT_LOG_WARN);
}


/* ---- memory of tests without a fixture ---- */

static long mem_baseline;

int mem_setup(void** state) {
  (void)state;
  mem_baseline = cport__mem_live();
  return 0;
}

int mem_teardown(void** state) {
  (void)state;
  assert_int_equal(cport__mem_live(), mem_baseline);
  return 0;
}

long mem_live_since_setup(void) {
  return cport__mem_live() - mem_baseline;
}
