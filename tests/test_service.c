/* Services: client connects, counting and iteration, stop and destroy,
 * argument checks, broadcast. */
#include "fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef _WIN32
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>
#endif

#include "common.h"           /* cport__mem_live */
#include "service_internal.h" /* a spreading server's hand-offs */


static void settle(fixture_t* fx) {
  int i;
  for (i = 0; i < 20; i++) cport_core_dispatch(fx->core, 0, 1);
}


static int count_cb(cport_session_t* s, void* arg) {
  int* n = arg;
  assert_non_null(cport_session_user(s));
  (*n)++;
  return 0;
}


static int stop_at_third_cb(cport_session_t* s, void* arg) {
  int* n = arg;
  (void)s;
  return ++(*n) == 3 ? 42 : 0;
}


static void test_service_client_connects_n_sessions(void** state) {
  fixture_t* fx = *state;
  cport_service_stats_t st;
  int n = 0;
  fixture_start_server(fx);
  fixture_start_client(fx, &fx->server_addr, 10);
  fixture_wait_int(fx, &fx->connected, 20, FIXTURE_TIMEOUT_MS);
  assert_int_equal(cport_service_session_count(fx->server), 10);
  assert_int_equal(cport_service_session_count(fx->client), 10);
  assert_int_equal(cport_service_foreach(fx->client, count_cb, &n), 0);
  assert_int_equal(n, 10);
  n = 0;
  assert_int_equal(cport_service_foreach(fx->server, stop_at_third_cb, &n), 42);
  assert_int_equal(n, 3);
  /* More connects on demand. */
  assert_int_equal(cport_service_connect(fx->client, 2), 0);
  fixture_wait_int(fx, &fx->connected, 24, FIXTURE_TIMEOUT_MS);
  assert_int_equal(cport_service_stats(fx->client, &st), 0);
  assert_int_equal(st.connected, 12);
  assert_int_equal(st.active, 12);
  assert_int_equal(st.peak, 12);
  assert_int_equal(st.connect_failed, 0);
}


static void test_service_user_area_is_zeroed_and_per_session(void** state) {
  fixture_t* fx = *state;
  cport_session_t* first;
  fixture_start_server(fx);
  fixture_start_client(fx, &fx->server_addr, 1);
  fixture_wait_int(fx, &fx->connected, 2, FIXTURE_TIMEOUT_MS);
  first = fx->last_server;
  cport_session_ref(first);
  assert_int_equal(cport_service_connect(fx->client, 1), 0);
  fixture_wait_int(fx, &fx->connected, 4, FIXTURE_TIMEOUT_MS);
  assert_ptr_not_equal(cport_session_user(first),
                       cport_session_user(fx->last_server));
  /* The recorder only wrote connected/fx; the rest started at zero. */
  assert_int_equal(rec_of(fx->last_server)->sent, 0);
  assert_int_equal(rec_of(fx->last_server)->calls, 0);
  assert_null(rec_of(fx->last_server)->received.data);
  assert_int_equal(rec_of(fx->last_server)->connected, 1);
  cport_session_unref(first);
}


static size_t user_null_recv(cport_session_t* s, const uint8_t* d, size_t n) {
  int* seen = cport_service_get_data(cport_session_service(s));
  (void)d;
  assert_null(cport_session_user(s));
  *seen += (int)n;
  return n;
}


static void test_service_without_user_area_gives_null(void** state) {
  fixture_t* fx = *state;
  cport_service_t* svc = NULL;
  cport_service_opts_t o;
  cport_addr_t addr;
  int seen = 0;
  peer_t* p;
  cport_service_opts_init(&o);
  o.cbs.on_recv = user_null_recv;
  o.data = &seen;
  svc = fixture_create_service(fx, CPORT_SERVICE_SERVER, "127.0.0.1", &o);
  assert_int_equal(cport_service_start(svc), 0);
  assert_int_equal(cport_service_local_addr(svc, &addr), 0);
  p = peer_connect(fx, &addr, 0);
  peer_write(p, "abc", 3);
  fixture_wait_int(fx, &seen, 3, FIXTURE_TIMEOUT_MS);
  peer_destroy(p);
  cport_service_destroy(svc);
}


static void test_service_connect_failure_reported(void** state) {
  fixture_t* fx = *state;
  cport_service_stats_t st;
  cport_addr_t closed;
  /* A loop that was just listening and is closed now: refused. */
  fixture_start_server(fx);
  closed = fx->server_addr;
  fixture_stop_service(fx, fx->server, 0);
  cport_service_destroy(fx->server);
  fx->server = NULL;
  fixture_start_client(fx, &closed, 3);
  fixture_wait_int(fx, &fx->connect_failed, 3, FIXTURE_TIMEOUT_MS);
  assert_int_equal(fx->last_connect_error, UV_ECONNREFUSED);
  assert_int_equal(fx->connected, 0);
  assert_int_equal(cport_service_stats(fx->client, &st), 0);
  assert_int_equal(st.connect_failed, 3);
  settle(fx);
  /* No on_disconnected for a session that never connected. */
  assert_int_equal(fx->disconnected, 0);
}


static void test_service_stop_disconnects_everyone_once(void** state) {
  fixture_t* fx = *state;
  peer_t* peers[5];
  peer_t* late;
  int i;
  fixture_start_server(fx);
  for (i = 0; i < 5; i++) peers[i] = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &fx->connected, 5, FIXTURE_TIMEOUT_MS);
  fixture_stop_service(fx, fx->server, 1000);
  assert_int_equal(fx->disconnected, 5);
  assert_int_equal(fx->last_code, CPORT_ESTOPPED);
  assert_int_equal(cport_service_session_count(fx->server), 0);
  for (i = 0; i < 5; i++) {
    fixture_wait_int(fx, &peers[i]->eof, 1, FIXTURE_TIMEOUT_MS);
    peer_destroy(peers[i]);
  }
  assert_int_equal(cport_service_stop(fx->server, 0, NULL), UV_EALREADY);
  settle(fx);
  assert_int_equal(fx->stopped, 1);
  assert_int_equal(fx->disconnected, 5);
  /* Not listening any more. */
  late = peer_connect(fx, &fx->server_addr, 1);
  assert_int_equal(late->connect_error, UV_ECONNREFUSED);
  peer_destroy(late);
  assert_int_equal(cport_service_start(fx->server), UV_EINVAL);
}


static void test_service_stop_flushes_before_closing(void** state) {
  fixture_t* fx = *state;
  const size_t len = 1024 * 1024;
  uint8_t* payload = malloc(len);
  peer_t* p;
  assert_non_null(payload);
  fill_pattern(payload, len, 7);
  fx->opts.send_queue_limit = 2 * len;
  fixture_start_server(fx);
  p = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &fx->connected, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(cport_session_send(fx->last_server, payload, len), 0);
  assert_int_equal(cport_service_stop(fx->server, 5000, NULL), 0);
  fixture_wait_int(fx, &p->eof, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(p->received.len, len);
  assert_memory_equal(p->received.data, payload, len);
  peer_destroy(p);
  free(payload);
}


static void test_service_stop_deadline_cuts_off_peer_that_never_reads(
    void** state) {
  fixture_t* fx = *state;
  uint64_t start;
  peer_t* p;
  fx->opts.send_queue_limit = 2 * FIXTURE_STUCK_BYTES;
  fixture_start_server(fx);
  p = fixture_connect_stuck_peer(fx);
  start = uv_hrtime();
  fixture_stop_service(fx, fx->server, 100);
  /* Returned by the deadline (with a wide margin for a loaded machine). */
  assert_true(uv_hrtime() - start < 5000u * 1000000u);
  assert_int_equal(fx->disconnected, 1);
  assert_int_equal(fx->last_code, CPORT_ESTOPPED);
  assert_true(rec_of(fx->last_server)->sent < FIXTURE_STUCK_BYTES);
  peer_destroy(p);
}


static void test_service_stop_cancels_pending_connects(void** state) {
  fixture_t* fx = *state;
  fixture_start_server(fx);
  fixture_start_client(fx, &fx->server_addr, 3);
  /* In the same round as the connects: none has completed yet. */
  fixture_stop_service(fx, fx->client, 1000);
  assert_int_equal(fx->connect_failed, 3);
  assert_int_equal(fx->last_connect_error, UV_ECANCELED);
  assert_int_equal(cport_service_connect(fx->client, 1), UV_EINVAL);
}


static void test_service_destroy_cancels_pending_connects(void** state) {
  fixture_t* fx = *state;
  fixture_start_server(fx);
  fixture_start_client(fx, &fx->server_addr, 3);
  cport_service_destroy(fx->client);
  fx->client = NULL;
  fixture_wait_int(fx, &fx->connect_failed, 3, FIXTURE_TIMEOUT_MS);
  assert_int_equal(fx->last_connect_error, UV_ECANCELED);
  assert_int_equal(fx->stopped, 0);
}


static void test_service_stop_with_nothing_open_reports_later(void** state) {
  fixture_t* fx = *state;
  cport_service_t* svc;
  cport_service_opts_t o;
  cport_service_opts_init(&o);
  o.data = fx;
  svc = fixture_create_service(fx, CPORT_SERVICE_SERVER, "127.0.0.1", &o);
  fixture_stop_service(fx, svc, 1000);
  assert_int_equal(fx->stopped, 1);
  cport_service_destroy(svc);
}


static void destroy_on_stopped(cport_service_t* svc) {
  fixture_t* fx = cport_service_get_data(svc);
  fx->stopped++;
  cport_service_destroy(svc);
  fx->server = NULL;
}


static void test_service_destroy_inside_on_stopped(void** state) {
  fixture_t* fx = *state;
  peer_t* p;
  fixture_start_server(fx);
  p = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &fx->connected, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(cport_service_stop(fx->server, 1000, destroy_on_stopped), 0);
  fixture_wait_int(fx, &fx->stopped, 1, FIXTURE_TIMEOUT_MS);
  assert_null(fx->server);
  assert_int_equal(fx->disconnected, 1);
  peer_destroy(p);
}


static void test_service_destroy_while_running_closes_sessions(void** state) {
  fixture_t* fx = *state;
  peer_t* a;
  peer_t* b;
  fixture_start_server(fx);
  a = peer_connect(fx, &fx->server_addr, 0);
  b = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &fx->connected, 2, FIXTURE_TIMEOUT_MS);
  cport_service_destroy(fx->server);
  fx->server = NULL;
  fixture_wait_int(fx, &fx->disconnected, 2, FIXTURE_TIMEOUT_MS);
  assert_int_equal(fx->last_code, CPORT_ESTOPPED);
  assert_int_equal(fx->stopped, 0);
  peer_destroy(a);
  peer_destroy(b);
}


static void test_service_stats_count_bytes(void** state) {
  fixture_t* fx = *state;
  cport_service_stats_t st;
  peer_t* p;
  fixture_start_server(fx);
  p = peer_connect(fx, &fx->server_addr, 0);
  peer_write(p, "0123456789", 10);
  fixture_wait_size(fx, &p->received.len, 10, FIXTURE_TIMEOUT_MS);
  fixture_wait_size(fx, &fx->sent, 10, FIXTURE_TIMEOUT_MS);
  assert_int_equal(cport_service_stats(fx->server, &st), 0);
  assert_int_equal(st.bytes_in, 10);
  assert_int_equal(st.bytes_out, 10);
  assert_int_equal(st.connected, 1);
  assert_int_equal(st.active, 1);
  peer_destroy(p);
  fixture_wait_int(fx, &fx->disconnected, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(cport_service_stats(fx->server, &st), 0);
  assert_int_equal(st.active, 0);
  assert_int_equal(st.peak, 1);
}


/* cport_service_create's return for a server (or client) with `o`; a
 * service it did create is destroyed again. */
static int create_rc(fixture_t* fx,
                     cport_service_kind_t kind,
                     const cport_service_opts_t* o) {
  cport_service_t* svc = NULL;
  cport_addr_t addr;
  int rc;
  assert_int_equal(cport_addr_parse(&addr, "127.0.0.1", 0), 0);
  rc = cport_service_create(&svc, fx->core, kind, &addr, o);
  if (rc != 0)
    assert_null(svc);
  cport_service_destroy(svc);
  return rc;
}


static size_t never_recv(cport_session_t* s, const uint8_t* d, size_t n) {
  (void)s;
  (void)d;
  (void)n;
  return n; /* never called: the service is refused */
}

static void never_packet(cport_session_t* s,
                         unsigned id,
                         const uint8_t* d,
                         size_t n) {
  (void)s;
  (void)id;
  (void)d;
  (void)n; /* never called: the service is refused */
}


/* create_rc() for a refused option: UV_EINVAL and exactly one warn line
 * naming the function and `what` (the field, its value, the rule). */
static void expect_refused(fixture_t* fx,
                           cport_service_kind_t kind,
                           const cport_service_opts_t* o,
                           const char* what) {
  char lines[1024];
  int n;
  int rc;
  (void)log_capture_take(lines, sizeof(lines));
  rc = create_rc(fx, kind, o);
  n = log_capture_take(lines, sizeof(lines));
  if (rc != UV_EINVAL)
    fail_msg("create with %s returned %d, expected UV_EINVAL", what, rc);
  if (n != 1 || strstr(lines, "cport_service_create: ") != lines ||
      strstr(lines, what) == NULL)
    fail_msg("create with %s logged %d line(s): \"%s\"", what, n, lines);
}


static void test_service_rejects_invalid_options(void** state) {
  fixture_t* fx = *state;
  cport_service_opts_t o;
  char lines[256];
  cport_service_opts_init(&o);
  log_capture_begin(CPORT_LOG_WARN);
  assert_int_equal(create_rc(fx, CPORT_SERVICE_SERVER, &o), 0);
  assert_int_equal(create_rc(fx, CPORT_SERVICE_CLIENT, &o), 0);
  assert_int_equal(log_capture_take(lines, sizeof(lines)), 0);
  expect_refused(fx, (cport_service_kind_t)3, &o, "kind 3: must be");
  expect_refused(fx, CPORT_SERVICE_SERVER, NULL, "opts is NULL");
  o.loop = 7000; /* a TCP port by mistake: the core has one loop */
  expect_refused(fx, CPORT_SERVICE_SERVER, &o,
                 "opts.loop 7000: the core has 1 loop");
  cport_service_opts_init(&o);
  o.recv_buffer_limit = 0;
  expect_refused(fx, CPORT_SERVICE_SERVER, &o, "opts.recv_buffer_limit 0");
  cport_service_opts_init(&o);
  o.send_queue_limit = 0;
  expect_refused(fx, CPORT_SERVICE_SERVER, &o, "opts.send_queue_limit 0");
  cport_service_opts_init(&o);
  o.send_queue_policy = (cport_sendq_policy_t)7;
  expect_refused(fx, CPORT_SERVICE_SERVER, &o, "opts.send_queue_policy 7");
  cport_service_opts_init(&o);
  o.backlog = 0;
  expect_refused(fx, CPORT_SERVICE_SERVER, &o, "opts.backlog 0");
  cport_service_opts_init(&o);
  o.connect_count = 0;
  expect_refused(fx, CPORT_SERVICE_CLIENT, &o, "opts.connect_count 0");
  cport_service_opts_init(&o);
  o.reconnect = (cport_reconnect_t)9;
  expect_refused(fx, CPORT_SERVICE_CLIENT, &o, "opts.reconnect 9");
  cport_service_opts_init(&o);
  o.reconnect = CPORT_RECONNECT_FIXED;
  o.reconnect_delay_ms = 0;
  expect_refused(fx, CPORT_SERVICE_CLIENT, &o, "opts.reconnect_delay_ms 0");
  cport_service_opts_init(&o);
  o.reconnect = CPORT_RECONNECT_EXPONENTIAL;
  o.reconnect_jitter_pct = 101;
  expect_refused(fx, CPORT_SERVICE_CLIENT, &o,
                 "opts.reconnect_jitter_pct 101: must be 0 to 100");
  o.reconnect_jitter_pct = 100;
  assert_int_equal(create_rc(fx, CPORT_SERVICE_CLIENT, &o), 0);
  cport_service_opts_init(&o);
  o.cbs.on_recv = never_recv;
  o.cbs.on_packet = never_packet;
  expect_refused(fx, CPORT_SERVICE_SERVER, &o,
                 "on_recv and on_packet are both set");
  cport_service_opts_init(&o);
  o.packet.length_size = 3;
  expect_refused(fx, CPORT_SERVICE_SERVER, &o, "opts.packet.length_size 3");
  cport_service_opts_init(&o);
  o.packet.max_packet = 1;
  expect_refused(fx, CPORT_SERVICE_SERVER, &o, "opts.packet.max_packet 1");
  cport_service_opts_init(&o);
  o.user_size = SIZE_MAX;
  expect_refused(fx, CPORT_SERVICE_SERVER, &o, "opts.user_size");
  log_capture_end();
}


static void test_service_rejects_invalid_arguments(void** state) {
  fixture_t* fx = *state;
  cport_service_t* svc = NULL;
  cport_service_opts_t o;
  cport_addr_t addr;
  cport_addr_t unset;
  memset(&unset, 0, sizeof(unset));
  assert_int_equal(cport_addr_parse(&addr, "127.0.0.1", 0), 0);
  cport_service_opts_init(&o);
  assert_int_equal(
      cport_service_create(NULL, fx->core, CPORT_SERVICE_SERVER, &addr, &o),
      UV_EINVAL);
  assert_int_equal(
      cport_service_create(&svc, NULL, CPORT_SERVICE_SERVER, &addr, &o),
      UV_EINVAL);
  assert_int_equal(
      cport_service_create(&svc, fx->core, CPORT_SERVICE_SERVER, NULL, &o),
      UV_EINVAL);
  assert_int_equal(
      cport_service_create(&svc, fx->core, CPORT_SERVICE_SERVER, &unset, &o),
      UV_EINVAL);
  assert_null(svc);
  /* A valid server, misused. */
  svc = fixture_create_service(fx, CPORT_SERVICE_SERVER, "127.0.0.1", NULL);
  assert_int_equal(cport_service_connect(svc, 1), UV_EINVAL);
  assert_int_equal(cport_service_stop(svc, -1, NULL), UV_EINVAL);
  assert_int_equal(cport_service_start(NULL), UV_EINVAL);
  assert_int_equal(cport_service_stop(NULL, 0, NULL), UV_EINVAL);
  assert_int_equal(cport_service_foreach(svc, NULL, NULL), UV_EINVAL);
  assert_int_equal(cport_service_stats(svc, NULL), UV_EINVAL);
  assert_int_equal(cport_service_session_count(NULL), 0);
  assert_ptr_equal(cport_service_core(svc), fx->core);
  cport_service_set_data(svc, fx);
  assert_ptr_equal(cport_service_get_data(svc), fx);
  cport_service_destroy(svc);
  cport_service_destroy(NULL);
}


/* ---- calls from the wrong thread ---- */

typedef struct wrong_thread_s {
  fixture_t* fx;
  cport_service_t* svc; /* a started server on loop 0 */
  cport_session_t* s;   /* one of its sessions, referenced */
  int rc_create, rc_start, rc_stop, rc_connect, rc_local;
  size_t pending;
  char lines[4096];
  int nlines;
} wrong_thread_t;

/* Every loop-only call, from a thread that does not run loop 0. */
static void wrong_thread_main(void* arg) {
  wrong_thread_t* w = arg;
  cport_service_t* other = NULL;
  cport_service_opts_t o;
  cport_addr_t addr;
  cport_addr_t local;
  cport_service_opts_init(&o);
  (void)cport_addr_parse(&addr, "127.0.0.1", 0);
  w->rc_create = cport_service_create(&other, w->fx->core, CPORT_SERVICE_SERVER,
                                      &addr, &o);
  w->rc_start = cport_service_start(w->svc);
  w->rc_stop = cport_service_stop(w->svc, 0, NULL);
  w->rc_connect = cport_service_connect(w->fx->client, 1);
  w->rc_local = cport_service_local_addr(w->svc, &local);
  w->pending = cport_session_pending_bytes(w->s);
  cport_service_set_data(w->svc, w);
  cport_service_destroy(w->svc);
  w->nlines = log_capture_take(w->lines, sizeof(w->lines));
}


/* Loop-only functions called from another thread return
 * CPORT_EWRONGTHREAD in every build (0.4 returned 0 in Release builds and
 * raced the loop), log one error line each naming the function and the
 * fix, and leave the service as it was. */
static void test_service_loop_only_calls_refuse_other_threads(void** state) {
  fixture_t* fx = *state;
  wrong_thread_t w;
  uv_thread_t th;
  peer_t* p;
  rec_session_t* rec;
  static const char* const fns[] = {
      "cport_service_create: ",     "cport_service_start: ",
      "cport_service_stop: ",       "cport_service_connect: ",
      "cport_service_local_addr: ", "cport_session_pending_bytes: ",
      "cport_service_set_data: ",   "cport_service_destroy: "};
  size_t i;
  memset(&w, 0, sizeof(w));
  w.fx = fx;
  fixture_start_server(fx);
  w.svc = fx->server;
  fixture_start_client(fx, &fx->server_addr, 1);
  fixture_wait_int(fx, &fx->connected, 2, FIXTURE_TIMEOUT_MS);
  assert_non_null(fx->last_server);
  w.s = fx->last_server;
  cport_session_ref(w.s);
  assert_ptr_equal(cport_service_get_data(fx->server), fx);
  log_capture_begin(CPORT_LOG_WARN);
  assert_int_equal(uv_thread_create(&th, wrong_thread_main, &w), 0);
  assert_int_equal(uv_thread_join(&th), 0);
  log_capture_end();
  assert_int_equal(w.rc_create, CPORT_EWRONGTHREAD);
  assert_int_equal(w.rc_start, CPORT_EWRONGTHREAD);
  assert_int_equal(w.rc_stop, CPORT_EWRONGTHREAD);
  assert_int_equal(w.rc_connect, CPORT_EWRONGTHREAD);
  assert_int_equal(w.rc_local, CPORT_EWRONGTHREAD);
  assert_int_equal(w.pending, 0);
  assert_int_equal(w.nlines, (int)(sizeof(fns) / sizeof(fns[0])));
  for (i = 0; i < sizeof(fns) / sizeof(fns[0]); i++) {
    const char* at = strstr(w.lines, fns[i]);
    if (at == NULL || strstr(at, "cport_core_post()") == NULL ||
        strstr(at, "loop 0") == NULL)
      fail_msg("no line for %s in:\n%s", fns[i], w.lines);
  }
  /* Nothing happened: the service still serves, with its old data. */
  assert_ptr_equal(cport_service_get_data(fx->server), fx);
  p = peer_connect(fx, &fx->server_addr, 0);
  peer_write(p, "ping", 4);
  fixture_wait_size(fx, &p->received.len, 4, FIXTURE_TIMEOUT_MS);
  rec = rec_of(w.s);
  assert_int_equal(rec->disconnected, 0);
  cport_session_unref(w.s);
  peer_destroy(p);
}


/* ---- timeouts ---- */

static uint64_t ms_since(uint64_t start_ns) {
  return (uv_hrtime() - start_ns) / 1000000u;
}

/* Dispatch for `ms` milliseconds (dispatch returns at the first event, so
 * one call is not a wait). */
static void run_for(fixture_t* fx, unsigned ms) {
  uint64_t end = uv_hrtime() + (uint64_t)ms * 1000000u;
  while (uv_hrtime() < end) cport_core_dispatch(fx->core, 0, 5);
}

/* A silent peer is ended by the idle timeout; one that trickles a byte
 * now and then is not. */
static void test_service_idle_timeout_ends_silent_sessions(void** state) {
  fixture_t* fx = *state;
  cport_service_stats_t st;
  uint64_t start;
  peer_t* silent;
  peer_t* trickle;
  int i;
  fx->mode = RECV_CONSUME;
  fx->opts.idle_timeout_ms = 150;
  fixture_start_server(fx);
  trickle = peer_connect(fx, &fx->server_addr, 0);
  silent = peer_connect(fx, &fx->server_addr, 0);
  start = uv_hrtime();
  fixture_wait_int(fx, &fx->connected, 2, FIXTURE_TIMEOUT_MS);
  /* A byte every 40 ms, for 600 ms: four times the timeout. */
  for (i = 0; i < 15; i++) {
    peer_write(trickle, "t", 1);
    run_for(fx, 40);
  }
  assert_int_equal(silent->eof, 1);
  assert_true(ms_since(start) >= 140); /* ms rounding */
  assert_int_equal(fx->disconnected, 1);
  assert_int_equal(fx->last_code, CPORT_EIDLE);
  assert_string_equal(fx->last_cause, "idle timeout");
  /* The trickling peer outlived the timeout several times over. */
  assert_int_equal(trickle->eof, 0);
  assert_int_equal(cport_service_stats(fx->server, &st), 0);
  assert_int_equal(st.disconnects_idle, 1);
  assert_int_equal(cport_service_session_count(fx->server), 1);
  /* Once it falls silent too, it goes the same way. */
  fixture_wait_int(fx, &trickle->eof, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(fx->disconnected, 2);
  peer_destroy(trickle);
  peer_destroy(silent);
}


/* A listening socket that nobody accepts from (not even libuv, which would
 * take one connection off the queue), its backlog filled: further connects
 * get no answer at all (Linux and the BSDs drop the SYN). Not on Windows,
 * see test_service_connect_timeout_reports_etimedout. */
#ifndef _WIN32
typedef struct deaf_s {
  uv_os_sock_t listener;
  uv_tcp_t fillers[2];
  uv_connect_t reqs[2];
  int connected;
  int closed;
} deaf_t;

static void deaf_connect_cb(uv_connect_t* req, int status) {
  deaf_t* d = req->handle->data;
  if (status == 0)
    d->connected++;
}

static void deaf_close_cb(uv_handle_t* handle) {
  deaf_t* d = handle->data;
  d->closed++;
}

static void deaf_start(fixture_t* fx, deaf_t* d, cport_addr_t* addr) {
  struct sockaddr_storage ss;
  int i;
  memset(d, 0, sizeof(*d));
  assert_int_equal(cport_addr_parse(addr, "127.0.0.1", 0), 0);
  assert_int_equal(
      cport__socket_listen(cport_addr_sockaddr(addr), 0, 0, &d->listener), 0);
  assert_int_equal(cport__socket_name(d->listener, &ss), 0);
  assert_int_equal(cport_addr_from_sockaddr(addr, (struct sockaddr*)&ss), 0);
  for (i = 0; i < 2; i++) {
    assert_int_equal(uv_tcp_init(fx->loop, &d->fillers[i]), 0);
    d->fillers[i].data = d;
    assert_int_equal(uv_tcp_connect(&d->reqs[i], &d->fillers[i],
                                    cport_addr_sockaddr(addr), deaf_connect_cb),
                     0);
  }
  /* The first fills the queue (listen backlog 0 holds one). */
  fixture_wait_int(fx, &d->connected, 1, FIXTURE_TIMEOUT_MS);
}

static void deaf_stop(fixture_t* fx, deaf_t* d) {
  int i;
  for (i = 0; i < 2; i++) uv_close((uv_handle_t*)&d->fillers[i], deaf_close_cb);
  fixture_wait_int(fx, &d->closed, 2, FIXTURE_TIMEOUT_MS);
  cport__socket_close(d->listener);
}

static void test_service_connect_timeout_reports_etimedout(void** state) {
  fixture_t* fx = *state;
  cport_addr_t addr;
  deaf_t deaf;
  uint64_t start;
  deaf_start(fx, &deaf, &addr);
  fx->opts.connect_timeout_ms = 200;
  start = uv_hrtime();
  fixture_start_client(fx, &addr, 1);
  fixture_wait_int(fx, &fx->connect_failed, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(fx->last_connect_error, UV_ETIMEDOUT);
  assert_true(ms_since(start) >= 190); /* ms rounding */
  /* Far below the system's own connect timeout (minutes). */
  assert_true(ms_since(start) < 30000);
  assert_int_equal(fx->connected, 0);
  deaf_stop(fx, &deaf);
}
#else
/* Windows (and wine) refuse a connect to a full backlog with a reset, so it
 * fails with ECONNREFUSED before any timeout; loopback offers no address that
 * stays silent there. Its own function, because cmocka 2's skip() does not
 * return: code after it is unreachable (MSVC C4702). */
static void test_service_connect_timeout_reports_etimedout(void** state) {
  (void)state;
  print_message("skipped on Windows: no silent loopback address\n");
  skip();
}
#endif


/* A free loop on loopback: bound once, then released. */
static void free_port(fixture_t* fx, cport_addr_t* addr) {
  cport_service_t* svc =
      fixture_create_service(fx, CPORT_SERVICE_SERVER, "127.0.0.1", NULL);
  assert_int_equal(cport_service_start(svc), 0);
  assert_int_equal(cport_service_local_addr(svc, addr), 0);
  cport_service_destroy(svc);
  cport_core_dispatch(fx->core, 0, 0);
}

static void test_service_reconnects_to_a_server_that_starts_late(void** state) {
  fixture_t* fx = *state;
  const int failures = fixture_under_wine() ? 2 : 3;
  cport_service_stats_t st;
  cport_addr_t addr;
  uint64_t start;
  int i;
  free_port(fx, &addr);
  fx->opts.reconnect = CPORT_RECONNECT_EXPONENTIAL;
  fx->opts.reconnect_delay_ms = 20;
  fx->opts.reconnect_max_ms = 80;
  fx->opts.reconnect_jitter_pct = 0;
  start = uv_hrtime();
  fixture_start_client(fx, &addr, 1);
  /* Refused, again and again, each failure reported. */
  fixture_wait_int(fx, &fx->connect_failed, failures, FIXTURE_TIMEOUT_MS);
  assert_int_equal(fx->last_connect_error, UV_ECONNREFUSED);
  /* Delays 40, 80 (the cap) after the first failures: some time passed.
   * Not checked under wine, where the second failure was seen to arrive
   * sooner than the 40 ms timer allows (not yet understood; Linux and
   * macOS check it). */
  if (!fixture_under_wine())
    assert_true(ms_since(start) >= 40);
  assert_int_equal(fx->connected, 0);
  /* The server comes up on that loop; the next attempt gets through. */
  fixture_start_server_at(fx, &addr);
  fixture_wait_int(fx, &fx->connected, 2, FIXTURE_TIMEOUT_MS);
  assert_int_equal(cport_service_stats(fx->client, &st), 0);
  assert_true(st.reconnects >= (uint64_t)failures);
  assert_int_equal(st.connect_failed, (uint64_t)fx->connect_failed);
  assert_int_equal(st.connected, 1);
  /* A lost session comes back too. */
  assert_int_equal(cport_session_disconnect(fx->last_server, "bounce"), 0);
  fixture_wait_int(fx, &fx->connected, 4, FIXTURE_TIMEOUT_MS);
  assert_int_equal(cport_service_stats(fx->client, &st), 0);
  assert_int_equal(st.connected, 2);
  assert_int_equal(st.disconnects_peer, 1);
  /* A session the application disconnects itself does not. */
  assert_int_equal(cport_session_disconnect(fx->last_client, "done"), 0);
  fixture_wait_int(fx, &fx->disconnected, 4, FIXTURE_TIMEOUT_MS);
  for (i = 0; i < 20; i++) cport_core_dispatch(fx->core, 0, 5);
  assert_int_equal(fx->connected, 4);
  assert_int_equal(cport_service_session_count(fx->client), 0);
}

static void test_service_stop_cancels_pending_reconnects(void** state) {
  fixture_t* fx = *state;
  cport_addr_t addr;
  uint64_t start;
  free_port(fx, &addr);
  fx->opts.reconnect = CPORT_RECONNECT_FIXED;
  fx->opts.reconnect_delay_ms = 60000; /* far beyond the test */
  fixture_start_client(fx, &addr, 3);
  fixture_wait_int(fx, &fx->connect_failed, 3, FIXTURE_TIMEOUT_MS);
  /* Three reconnects wait a minute each; the stop must not. */
  start = uv_hrtime();
  fixture_stop_service(fx, fx->client, 1000);
  /* Far below the minute the reconnects wait. */
  assert_true(ms_since(start) < 30000);
  assert_int_equal(fx->connect_failed, 3);
  /* The teardown checks that the pending reconnects left nothing behind. */
}

/* ---- reconnect delays, as the policy logs them ---- */

/* Every "client: reconnecting in N ms (attempt K)" line, in order. */
#define DELAYS_MAX 1024

typedef struct delays_s {
  int count; /* lines seen, also those past DELAYS_MAX */
  unsigned ms[DELAYS_MAX];
  unsigned attempt[DELAYS_MAX];
} delays_t;

/* Static, so that a test that fails before delays_stop() leaves the hook
 * writing somewhere harmless. */
static delays_t delays;

static void delays_log(cport_log_level_t level, const char* msg, void* arg) {
  delays_t* d = arg;
  unsigned ms;
  unsigned attempt;
  (void)level;
  if (sscanf(msg, "client: reconnecting in %u ms (attempt %u)", &ms,
             &attempt) != 2)
    return;
  if (d->count < DELAYS_MAX) {
    d->ms[d->count] = ms;
    d->attempt[d->count] = attempt;
  }
  d->count++;
}

static void delays_start(void) {
  memset(&delays, 0, sizeof(delays));
  cport_set_log(delays_log, &delays, CPORT_LOG_INFO);
}

static void delays_stop(void) {
  cport_set_log(NULL, NULL, CPORT_LOG_WARN);
}

/* The lines seen so far all lie within [lo, hi]; returns how many lie
 * below `hi` (jitter that still moves delays at the cap). */
static int delays_check(int from, unsigned lo, unsigned hi, unsigned attempt) {
  int below = 0;
  int i;
  for (i = from; i < delays.count && i < DELAYS_MAX; i++) {
    if (delays.attempt[i] < attempt)
      continue;
    if (delays.ms[i] < lo || delays.ms[i] > hi)
      fail_msg("attempt %u: %u ms, outside [%u, %u]", delays.attempt[i],
               delays.ms[i], lo, hi);
    if (delays.ms[i] < hi)
      below++;
  }
  return below;
}

/* service.h: reconnect_max_ms is the longest delay, jitter included, and
 * jitter still moves the delays that reach it (downwards). 0.4.1 added the
 * jitter after the cap: up to 150 ms here. */
static void test_service_reconnect_delays_never_exceed_the_cap(void** state) {
  fixture_t* fx = *state;
  cport_addr_t addr;
  int from;
  free_port(fx, &addr);
  delays_start();
  /* Exponential: 10, 20, 40, 80, then the cap, each +-50 %. */
  fx->opts.reconnect = CPORT_RECONNECT_EXPONENTIAL;
  fx->opts.reconnect_delay_ms = 10;
  fx->opts.reconnect_max_ms = 100;
  fx->opts.reconnect_jitter_pct = 50;
  fixture_start_client(fx, &addr, 20);
  fixture_wait_int(fx, &delays.count, 300, FIXTURE_TIMEOUT_MS);
  (void)delays_check(0, 1, 100, 1);
  /* From the fifth attempt on, the base is the cap: 50 to 100 ms. */
  assert_true(delays_check(0, 50, 100, 5) > 0);
  cport_service_destroy(fx->client);
  fx->client = NULL;
  /* Fixed at the cap: 50 to 100 ms as well. */
  from = delays.count;
  fx->opts.reconnect = CPORT_RECONNECT_FIXED;
  fx->opts.reconnect_delay_ms = 100;
  fixture_start_client(fx, &addr, 20);
  fixture_wait_int(fx, &delays.count, from + 100, FIXTURE_TIMEOUT_MS);
  assert_true(delays_check(from, 50, 100, 1) > 0);
  delays_stop();
}


#ifndef _WIN32
/* Counts of a client with callbacks of its own (no recorder). Static, as
 * the teardown destroys the service after the test has returned. */
typedef struct retry_rec_s {
  int connected;
  int failed;
  int last_error;
  int stopped_at_failure; /* the fixture's on_stopped count then */
} retry_rec_t;

static retry_rec_t retry_rec;

static void retry_on_connected(cport_session_t* s) {
  (void)s;
  retry_rec.connected++;
}

static void retry_on_connect_failed(cport_service_t* svc, int code) {
  fixture_t* fx = cport_service_get_data(svc);
  retry_rec.failed++;
  retry_rec.last_error = code;
  retry_rec.stopped_at_failure = fx->stopped;
}

/* Create a client of `count` sessions to the fixture's server, under a
 * fixed 20 ms policy without jitter, and start it while socket() fails
 * with EMFILE: the descriptor limit is lowered to the lowest free
 * descriptor for the call, nothing else. Returns what the start returned. */
static int start_without_descriptors(fixture_t* fx,
                                     cport_service_t** out,
                                     unsigned count) {
  cport_service_opts_t o;
  struct rlimit saved;
  struct rlimit low;
  int lowest;
  int rc;
  cport_service_opts_init(&o);
  o.cbs.on_connected = retry_on_connected;
  o.cbs.on_connect_failed = retry_on_connect_failed;
  o.data = fx; /* fixture_stop_service's on_stopped reads it */
  o.connect_count = count;
  o.reconnect = CPORT_RECONNECT_FIXED;
  o.reconnect_delay_ms = 20;
  o.reconnect_jitter_pct = 0;
  assert_int_equal(cport_service_create(out, fx->core, CPORT_SERVICE_CLIENT,
                                        &fx->server_addr, &o),
                   0);
  lowest = open("/dev/null", O_RDONLY);
  assert_true(lowest >= 0);
  close(lowest);
  assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved), 0);
  low = saved;
  low.rlim_cur = (rlim_t)lowest;
  assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
  rc = cport_service_start(*out);
  /* Restored before any check, so that a failure leaves none low. */
  assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);
  return rc;
}
#endif

/* docs/design.md: a connect that cannot even start is left to the
 * reconnect policy. 0.4.1 returned it from cport_service_start and never
 * retried it. */
static void test_service_connect_that_cannot_start_is_retried(void** state) {
#ifdef _WIN32
  (void)state;
  print_message("skipped: Windows has no RLIMIT_NOFILE\n");
  skip();
#else
  fixture_t* fx = *state;
  cport_service_stats_t st;
  cport_service_t* stopped = NULL;
  fixture_start_server(fx);
  memset(&retry_rec, 0, sizeof(retry_rec));
  delays_start();
  /* Handed to the policy: started, and reported later, not inside the
   * call. */
  assert_int_equal(start_without_descriptors(fx, &fx->client, 2), 0);
  assert_int_equal(retry_rec.failed, 0);
  fixture_wait_int(fx, &retry_rec.connected, 2, FIXTURE_TIMEOUT_MS);
  /* Each failure reported and counted once, then retried once. */
  assert_int_equal(retry_rec.failed, 2);
  assert_int_equal(retry_rec.last_error, UV_EMFILE);
  assert_int_equal(cport_service_stats(fx->client, &st), 0);
  assert_int_equal(st.connect_failed, 2);
  assert_int_equal(st.reconnects, 2);
  assert_int_equal(st.connected, 2);
  /* Retried as the second attempt, like any failed connect. */
  assert_int_equal(delays.count, 2);
  assert_int_equal(delays.attempt[0], 2);
  assert_int_equal(delays.ms[0], 20);
  /* A stop before the report: still reported, once, before on_stopped,
   * and not retried. */
  assert_int_equal(start_without_descriptors(fx, &stopped, 1), 0);
  fixture_stop_service(fx, stopped, 0);
  assert_int_equal(retry_rec.failed, 3);
  assert_int_equal(retry_rec.last_error, UV_EMFILE);
  assert_int_equal(retry_rec.stopped_at_failure, fx->stopped - 1);
  assert_int_equal(cport_service_stats(stopped, &st), 0);
  assert_int_equal(st.connect_failed, 1);
  assert_int_equal(st.reconnects, 0);
  cport_service_destroy(stopped);
  settle(fx);
  assert_int_equal(retry_rec.failed, 3);
  assert_int_equal(delays.count, 2);
  delays_stop();
#endif
}


/* A server that accepts and closes at once while `flap` is set; otherwise
 * it keeps its first session (`kept`, referenced) and ignores the rest. */
typedef struct flapper_s {
  int flap;
  int accepted;
  cport_session_t* kept;
} flapper_t;

static flapper_t flapper;

static void flapper_on_connected(cport_session_t* s) {
  flapper.accepted++;
  if (flapper.flap) {
    assert_int_equal(cport_session_disconnect(s, "flap"), 0);
  } else if (flapper.kept == NULL) {
    cport_session_ref(s);
    flapper.kept = s;
  }
}

/* Start the flapping server (the fixture's, for the teardown) and a client
 * of one session to it under exponential reconnect from 5 ms, without
 * jitter. */
static void flapper_start(fixture_t* fx) {
  cport_service_opts_t o;
  memset(&flapper, 0, sizeof(flapper));
  flapper.flap = 1;
  cport_service_opts_init(&o);
  o.cbs.on_connected = flapper_on_connected;
  fx->server =
      fixture_create_service(fx, CPORT_SERVICE_SERVER, "127.0.0.1", &o);
  assert_int_equal(cport_service_start(fx->server), 0);
  assert_int_equal(cport_service_local_addr(fx->server, &fx->server_addr), 0);
  fx->opts.reconnect = CPORT_RECONNECT_EXPONENTIAL;
  fx->opts.reconnect_delay_ms = 5;
  fx->opts.reconnect_max_ms = 10000;
  fx->opts.reconnect_jitter_pct = 0;
}

/* A session shorter than reconnect_reset_ms (default 5000) counts as one
 * more failed attempt, so a server that accepts and drops at once meets
 * the back-off. 0.4.1 reconnected every 5 ms, as attempt 1, for ever. */
static void test_service_reconnect_backs_off_from_a_flapping_server(
    void** state) {
  fixture_t* fx = *state;
  int i;
  flapper_start(fx);
  delays_start();
  fixture_start_client(fx, &fx->server_addr, 1);
  fixture_wait_int(fx, &delays.count, 4, FIXTURE_TIMEOUT_MS);
  /* The first session came from attempt 1; each lost one adds one. */
  for (i = 0; i < 4; i++) {
    assert_int_equal(delays.attempt[i], (unsigned)i + 2);
    assert_int_equal(delays.ms[i], 5u << (i + 1));
  }
  delays_stop();
}


static int latest_attempt_at_least_3(void* arg) {
  (void)arg;
  return delays.count > 0 && delays.count <= DELAYS_MAX &&
         delays.attempt[delays.count - 1] >= 3;
}

typedef struct kept_wait_s {
  fixture_t* fx;
  uint64_t since;
  uint64_t ms;
} kept_wait_t;

/* The server kept a session, and every client session before it has
 * ended: the one live client session is the kept one's other end. */
static int kept_is_the_only_session(void* arg) {
  kept_wait_t* w = arg;
  return flapper.kept != NULL && w->fx->connected == flapper.accepted &&
         w->fx->disconnected == w->fx->connected - 1;
}

static int time_has_passed(void* arg) {
  kept_wait_t* w = arg;
  return uv_hrtime() - w->since >= w->ms * 1000000u;
}

/* A session that stayed up reconnect_reset_ms starts the back-off over. */
static void test_service_reconnect_resets_after_a_session_that_stayed_up(
    void** state) {
  fixture_t* fx = *state;
  kept_wait_t w;
  int before;
  flapper_start(fx);
  fx->opts.reconnect_reset_ms = 100;
  delays_start();
  fixture_start_client(fx, &fx->server_addr, 1);
  /* Flapping: the attempts grow (a session slower than 100 ms would
   * start them over, which only takes longer). */
  if (!fixture_run_until(fx, latest_attempt_at_least_3, NULL,
                         FIXTURE_TIMEOUT_MS))
    fail_msg("%d reconnects, the attempts never reached 3", delays.count);
  flapper.flap = 0;
  w.fx = fx;
  if (!fixture_run_until(fx, kept_is_the_only_session, &w, FIXTURE_TIMEOUT_MS))
    fail_msg("no session kept");
  /* Both ends have reported on_connected, so the session is up at least
   * as long as measured from here. */
  before = delays.count;
  w.since = uv_hrtime();
  w.ms = 100;
  assert_true(fixture_run_until(fx, time_has_passed, &w, FIXTURE_TIMEOUT_MS));
  assert_int_equal(delays.count, before);
  assert_int_equal(cport_session_disconnect(flapper.kept, "enough"), 0);
  cport_session_unref(flapper.kept);
  fixture_wait_int(fx, &delays.count, before + 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(delays.attempt[before], 1);
  assert_int_equal(delays.ms[before], 5);
  delays_stop();
}

/* A graceful disconnect that cannot flush is cut off at
 * disconnect_timeout_ms, keeping its own code. */
static void test_service_disconnect_timeout_forces_a_stuck_flush(void** state) {
  fixture_t* fx = *state;
  cport_service_stats_t st;
  uint64_t start;
  peer_t* p;
  FIXTURE_SKIP_UNDER_WINE(FIXTURE_WINE_DRAINS_STUCK_WRITES);
  fx->opts.send_queue_limit = 2 * FIXTURE_STUCK_BYTES;
  fx->opts.disconnect_timeout_ms = 150;
  fixture_start_server(fx);
  p = fixture_connect_stuck_peer(fx);
  assert_int_equal(cport_service_stats(fx->server, &st), 0);
  assert_true(st.queued_bytes > 0);
  start = uv_hrtime();
  assert_int_equal(cport_session_disconnect(fx->last_server, "bye"), 0);
  fixture_wait_int(fx, &fx->disconnected, 1, FIXTURE_TIMEOUT_MS);
  assert_true(ms_since(start) >= 140); /* ms rounding */
  assert_int_equal(fx->last_code, CPORT_ELOCAL);
  assert_string_equal(fx->last_cause, "bye");
  assert_int_equal(cport_service_stats(fx->server, &st), 0);
  assert_int_equal(st.disconnect_timeouts, 1);
  assert_int_equal(st.disconnects_local, 1);
  assert_int_equal(st.queued_bytes, 0);
  peer_destroy(p);
}


static void raise_descriptor_limit(void);

static int kick_cb(cport_session_t* s, void* arg) {
  (void)cport_session_send(s, arg, 4096);
  return 0;
}

/* Thousands of sessions in mid ping-pong, and one peer that never reads:
 * a stop returns by its deadline, every session reports once, and nothing
 * is left behind (the teardown's count; ASan). */
static void test_service_stop_with_deadline_during_thousands_of_transfers(
    void** state) {
  fixture_t* fx = *state;
  const int n = fixture_under_wine() ? 300 : 2000;
  static uint8_t msg[4096];
  cport_service_stats_t st;
  uint64_t start;
  peer_t* stuck = NULL;
  raise_descriptor_limit();
  fx->mode = RECV_ECHO;
  fx->client_mode = RECV_ECHO;
  fx->opts.send_queue_limit = 2 * FIXTURE_STUCK_BYTES;
  /* All connects start at once: a short backlog would drop SYNs, and the
   * retries take seconds. */
  fx->opts.backlog = 4096;
  fixture_start_server(fx);
  if (!fixture_under_wine()) /* wine drains a peer that does not read */
    stuck = fixture_connect_stuck_peer(fx);
  fixture_start_client(fx, &fx->server_addr, (unsigned)n);
  fixture_wait_int(fx, &fx->connected, 2 * n + (stuck != NULL),
                   FIXTURE_TIMEOUT_MS);
  memset(msg, 'm', sizeof(msg));
  assert_int_equal(cport_service_foreach(fx->client, kick_cb, msg), 0);
  run_for(fx, 100);
  assert_int_equal(fx->disconnected, 0);
  start = uv_hrtime();
  /* The peer that never reads cannot flush: only the deadline ends it, so
   * on_stopped arriving at all is the proof (no wall-clock limit, which a
   * loaded machine breaks). */
  fixture_stop_service(fx, fx->server, 300);
  print_message("stop of %d sessions took %llu ms\n", n + (stuck != NULL),
                (unsigned long long)ms_since(start));
  assert_int_equal(cport_service_stats(fx->server, &st), 0);
  assert_int_equal(st.active, 0);
  assert_int_equal(
      st.disconnects_local + st.disconnects_peer + st.disconnects_reset,
      (uint64_t)(n + (stuck != NULL)));
  assert_int_equal(cport_service_session_count(fx->server), 0);
  fixture_stop_service(fx, fx->client, 1000);
  /* Every session of both services reported exactly once. */
  assert_int_equal(fx->disconnected, 2 * n + (stuck != NULL));
  if (stuck != NULL)
    peer_destroy(stuck);
}


static int peer_ended(void* arg) {
  peer_t* p = arg;
  return p->eof || p->error != 0 || p->closed;
}

/* A flood of connections past max_sessions: each refused at once and
 * counted, while a session already open goes on echoing, byte for byte. */
static void test_service_flood_past_max_sessions_leaves_sessions_served(
    void** state) {
  fixture_t* fx = *state;
  enum { FLOOD = 100, MAX = 5 };
  peer_t* flood[FLOOD];
  cport_service_stats_t st;
  uint8_t msg[256];
  peer_t* a;
  size_t echoed = 0;
  int i;
  fx->opts.max_sessions = MAX;
  fixture_start_server(fx);
  a = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &fx->connected, 1, FIXTURE_TIMEOUT_MS);
  fill_pattern(msg, sizeof(msg), 11);
  for (i = 0; i < FLOOD; i++) {
    flood[i] = peer_connect(fx, &fx->server_addr, 1);
    if (i >= MAX - 1) /* past the limit: closed at once */
      assert_true(
          fixture_run_until(fx, peer_ended, flood[i], FIXTURE_TIMEOUT_MS));
    if (i % 10 == 0) { /* the open session is served all along */
      peer_write(a, msg, sizeof(msg));
      echoed += sizeof(msg);
      fixture_wait_size(fx, &a->received.len, echoed, FIXTURE_TIMEOUT_MS);
    }
  }
  assert_int_equal(cport_service_stats(fx->server, &st), 0);
  assert_int_equal(st.connected, MAX);
  assert_int_equal(st.rejected, FLOOD - (MAX - 1));
  assert_int_equal(cport_service_session_count(fx->server), MAX);
  for (i = 0; i < (int)(echoed / sizeof(msg)); i++)
    assert_memory_equal(a->received.data + (size_t)i * sizeof(msg), msg,
                        sizeof(msg));
  for (i = 0; i < FLOOD; i++) peer_destroy(flood[i]);
  peer_destroy(a);
}


/* ---- broadcast ---- */

#define BCAST_CONNS 500
#define BCAST_LEN 1000

/* BCAST_CONNS connections are twice as many sockets in this process. */
static void raise_descriptor_limit(void) {
#ifndef _WIN32
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 4096 &&
      rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max < 4096 ? rl.rlim_max : 4096;
    (void)setrlimit(RLIMIT_NOFILE, &rl);
  }
#endif
}

/* One buffer to 500 sessions spread over 4 loops, broadcast from a thread
 * that runs none of them: every session gets it whole, and the buffer,
 * whose only references are the writes', is freed once (ASan) with nothing
 * left behind. */
static void test_service_broadcast_reaches_every_loop_and_frees_once(
    void** state) {
  spread_t sp;
  cport_service_t* server;
  cport_service_t* client;
  cport_buf_t* buf;
  long baseline = cport__mem_live();
  unsigned i;
  (void)state;
  raise_descriptor_limit();
  spread_start(&sp, &server, &client, 0, BCAST_CONNS, 0);
  assert_true(spread_drive(&sp, &sp.connected, BCAST_CONNS));
  assert_true(spread_drive(&sp, &sp.client_connected, BCAST_CONNS));
  for (i = 0; i < SPREAD_PORTS; i++)
    assert_true(atomic_load(&sp.per_port[i]) > 0);
  atomic_store(&sp.expect, BCAST_CONNS * BCAST_LEN);
  assert_int_equal(cport_buf_create(&buf, BCAST_LEN), 0);
  memset(cport_buf_data(buf), 'b', BCAST_LEN);
  assert_int_equal(cport_core_run(sp.core), 0);
  assert_int_equal(cport_service_broadcast(server, buf), 0);
  cport_buf_unref(buf);
  assert_true(signal_wait(&sp.done, 1, FIXTURE_TIMEOUT_MS));
  assert_int_equal(atomic_load(&sp.received), BCAST_CONNS * BCAST_LEN);
  spread_stop_running(&sp, server, client);
  assert_int_equal(atomic_load(&sp.wrong_thread), 0);
  spread_destroy(&sp, server, client);
  assert_int_equal(cport__mem_live(), baseline);
}

/* From a thread that runs every loop, the broadcast happens during the
 * call; a session that is disconnecting is skipped. */
static void test_service_broadcast_on_own_loops_sends_during_the_call(
    void** state) {
  fixture_t* fx = *state;
  cport_buf_t* buf;
  peer_t* a;
  peer_t* b;
  fx->mode = RECV_CONSUME;
  fixture_start_server(fx);
  a = peer_connect(fx, &fx->server_addr, 0);
  b = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &fx->connected, 2, FIXTURE_TIMEOUT_MS);
  assert_int_equal(cport_session_disconnect(fx->last_server, "leaving"), 0);
  assert_int_equal(cport_buf_from(&buf, "news", 4), 0);
  assert_int_equal(cport_service_broadcast(fx->server, buf), 0);
  cport_buf_unref(buf);
  fixture_wait_size(fx, &a->received.len, 4, FIXTURE_TIMEOUT_MS);
  fixture_wait_int(fx, &b->eof, 1, FIXTURE_TIMEOUT_MS);
  settle(fx);
  assert_memory_equal(a->received.data, "news", 4);
  assert_int_equal(b->received.len, 0);
  assert_int_equal(cport_service_broadcast(NULL, buf), UV_EINVAL);
  assert_int_equal(cport_service_broadcast(fx->server, NULL), UV_EINVAL);
  peer_destroy(a);
  peer_destroy(b);
}


/* ---- audit regressions ---- */

typedef struct big_user_s {
  size_t user_size;
  int connected;
  int zeroed;
  int disconnected;
} big_user_t;


static void big_user_connected(cport_session_t* s) {
  big_user_t* b = cport_service_get_data(cport_session_service(s));
  uint8_t* user = cport_session_user(s);
  size_t i;
  b->connected++;
  b->zeroed = user != NULL;
  for (i = 0; user != NULL && i < b->user_size; i++)
    if (user[i] != 0)
      b->zeroed = 0;
  /* All of it is the application's (ASan checks the bounds). */
  if (user != NULL)
    memset(user, 0xA5, b->user_size);
}


static void big_user_disconnected(cport_session_t* s,
                                  int code,
                                  const char* cause) {
  big_user_t* b = cport_service_get_data(cport_session_service(s));
  (void)code;
  (void)cause;
  b->disconnected++;
}


/* service.h, cport_service_create(): options that cannot work are refused
 * with UV_EINVAL, and session.h, cport_session_user(): the user area is
 * "`user_size` bytes given in the service options". A user_size so large
 * that the session block's size (struct + user area) cannot be computed
 * must be refused at create, not wrap around to a block smaller than the
 * area it promises. A large but sane size still works, whole and zeroed. */
static void test_audit_service_rejects_user_size_that_overflows(void** state) {
  fixture_t* fx = *state;
  static const size_t huge[] = {SIZE_MAX, SIZE_MAX - 8, SIZE_MAX - 64,
                                SIZE_MAX - 4096, SIZE_MAX / 2 + 1};
  const size_t sane = 1024u * 1024;
  cport_service_opts_t o;
  cport_service_t* svc = NULL;
  cport_addr_t addr;
  big_user_t b;
  char accepted[512] = "";
  peer_t* p;
  size_t i;
  int kind;
  for (kind = CPORT_SERVICE_SERVER; kind <= CPORT_SERVICE_CLIENT; kind++) {
    for (i = 0; i < sizeof(huge) / sizeof(huge[0]); i++) {
      int rc;
      cport_service_opts_init(&o);
      o.user_size = huge[i];
      rc = create_rc(fx, (cport_service_kind_t)kind, &o);
      if (rc != UV_EINVAL) {
        size_t at = strlen(accepted);
        snprintf(accepted + at, sizeof(accepted) - at,
                 "%s%s user_size %#zx: %d", at ? "; " : "",
                 kind == CPORT_SERVICE_SERVER ? "server" : "client", huge[i],
                 rc);
      }
    }
  }
  /* A megabyte per session is a lot, but it works. */
  memset(&b, 0, sizeof(b));
  b.user_size = sane;
  cport_service_opts_init(&o);
  o.cbs.on_connected = big_user_connected;
  o.cbs.on_disconnected = big_user_disconnected;
  o.user_size = sane;
  o.data = &b;
  assert_int_equal(cport_addr_parse(&addr, "127.0.0.1", 0), 0);
  assert_int_equal(
      cport_service_create(&svc, fx->core, CPORT_SERVICE_SERVER, &addr, &o), 0);
  assert_int_equal(cport_service_start(svc), 0);
  assert_int_equal(cport_service_local_addr(svc, &addr), 0);
  p = peer_connect(fx, &addr, 0);
  fixture_wait_int(fx, &b.connected, 1, FIXTURE_TIMEOUT_MS);
  peer_destroy(p);
  fixture_wait_int(fx, &b.disconnected, 1, FIXTURE_TIMEOUT_MS);
  cport_service_destroy(svc);
  assert_true(b.zeroed);
  if (accepted[0] != '\0')
    fail_msg("cport_service_create must return UV_EINVAL (%d), returned: %s",
             UV_EINVAL, accepted);
}


/* ---- a spreading server's hand-off racing a destroy or a stop ---- */

typedef struct handoff_rig_s {
  int connected[2]; /* on_connected, by loop */
  int disconnected;
  int disconnected_unconnected; /* on_disconnected without on_connected */
  int stopped;
} handoff_rig_t;


static void handoff_connected(cport_session_t* s) {
  handoff_rig_t* h = cport_service_get_data(cport_session_service(s));
  int* seen = cport_session_user(s);
  *seen = 1;
  h->connected[cport_session_loop(s) & 1]++;
}


static void handoff_disconnected(cport_session_t* s,
                                 int code,
                                 const char* cause) {
  handoff_rig_t* h = cport_service_get_data(cport_session_service(s));
  int* seen = cport_session_user(s);
  (void)code;
  (void)cause;
  h->disconnected++;
  if (!*seen)
    h->disconnected_unconnected++;
}


static void handoff_stopped(cport_service_t* svc) {
  handoff_rig_t* h = cport_service_get_data(svc);
  h->stopped++;
}


/* A connection the listener (loop 0) has accepted and handed to loop 1,
 * where it waits in the loop's job queue: the root's count of connections
 * "accepted, on the way to a part" (service_internal.h). */
static size_t handoff_in_transit(cport_service_t* svc) {
  return cport__service_handing(svc);
}


/* Both of the server core's loops and the fixture's (the peers') from this
 * thread, until pred(arg) or the deadline; 0 on timeout. */
static int handoff_drive(fixture_t* fx,
                         cport_core_t* core,
                         unsigned ports,
                         int (*pred)(void* arg),
                         void* arg) {
  uint64_t deadline = uv_hrtime() + (uint64_t)FIXTURE_TIMEOUT_MS * 1000000u;
  unsigned i;
  while (!pred(arg)) {
    if (uv_hrtime() >= deadline)
      return 0;
    for (i = 0; i < ports; i++) cport_core_dispatch(core, i, 1);
    cport_core_dispatch(fx->core, 0, 1);
  }
  return 1;
}


typedef struct handoff_wait_s {
  handoff_rig_t* h;
  cport_service_t* svc;
  peer_t* p1;
  peer_t* p2;
  int want_stopped;
} handoff_wait_t;


static int handoff_first_on_port0(void* arg) {
  handoff_wait_t* w = arg;
  return w->h->connected[0] >= 1;
}


static int handoff_second_in_transit(void* arg) {
  handoff_wait_t* w = arg;
  return handoff_in_transit(w->svc) >= 1;
}


static int handoff_all_over(void* arg) {
  handoff_wait_t* w = arg;
  return peer_ended(w->p1) && peer_ended(w->p2) &&
         (!w->want_stopped || w->h->stopped >= 1);
}


static int handoff_cores_idle(void* arg) {
  cport_core_t* core = arg;
  return cport_core_dispatch(core, 0, 0) == 0 &&
         cport_core_dispatch(core, 1, 0) == 0;
}


/* One run: the 1st connection lives on port 0, the 2nd is accepted and
 * handed to loop 1, which is not dispatched until loop 0 has destroyed (or
 * stopped) the service. Fills `out` with what went wrong, "" if nothing. */
static void handoff_case(fixture_t* fx, int stop, char* out, size_t size) {
  cport_core_opts_t copts;
  cport_service_opts_t o;
  cport_core_t* core = NULL;
  cport_service_t* svc = NULL;
  cport_addr_t addr;
  handoff_rig_t h;
  handoff_wait_t w;
  int i;
  memset(&h, 0, sizeof(h));
  cport_core_opts_init(&copts);
  copts.loops = 2;
  assert_int_equal(cport_core_create(&core, &copts), 0);
  cport_service_opts_init(&o);
  o.cbs.on_connected = handoff_connected;
  o.cbs.on_disconnected = handoff_disconnected;
  o.user_size = sizeof(int);
  o.data = &h;
  assert_int_equal(cport_addr_parse(&addr, "127.0.0.1", 0), 0);
  assert_int_equal(
      cport_service_create(&svc, core, CPORT_SERVICE_SERVER, &addr, &o), 0);
  assert_int_equal(cport_service_start(svc), 0);
  assert_int_equal(cport_service_local_addr(svc, &addr), 0);
  /* Loop 1 takes its part's start, then is left alone. */
  cport_core_dispatch(core, 1, 0);

  memset(&w, 0, sizeof(w));
  w.h = &h;
  w.svc = svc;
  w.p1 = peer_connect(fx, &addr, 0);
  for (i = 0; i < 100 && !handoff_first_on_port0(&w); i++)
    cport_core_dispatch(core, 0, 100);
  assert_int_equal(h.connected[0], 1);
  w.p2 = peer_connect(fx, &addr, 0);
  for (i = 0; i < 100 && !handoff_second_in_transit(&w); i++)
    cport_core_dispatch(core, 0, 100);
  assert_int_equal(handoff_in_transit(svc), 1);
  assert_int_equal(h.connected[1], 0);

  if (stop) {
    assert_int_equal(cport_service_stop(svc, 1000, handoff_stopped), 0);
  } else {
    cport_service_destroy(svc);
  }
  w.want_stopped = stop;
  if (!handoff_drive(fx, core, 2, handoff_all_over, &w))
    snprintf(out, size, "timed out (peers ended: %d %d, on_stopped %d)",
             peer_ended(w.p1), peer_ended(w.p2), h.stopped);
  else
    out[0] = '\0';
  if (stop)
    cport_service_destroy(svc);
  assert_true(handoff_drive(fx, core, 2, handoff_cores_idle, core));
  peer_destroy(w.p1);
  peer_destroy(w.p2);
  cport_core_destroy(core);

  if (out[0] == '\0' && h.connected[1] != 0)
    snprintf(out, size, "on_connected on loop 1 %d time(s) after %s returned",
             h.connected[1], stop ? "cport_service_stop" : "destroy");
  if (out[0] == '\0' && h.disconnected_unconnected != 0)
    snprintf(out, size, "on_disconnected for a session never connected");
  if (out[0] == '\0' && (h.connected[0] != 1 || h.disconnected != 1))
    snprintf(out, size, "on_connected %d+%d, on_disconnected %d (want 1+0, 1)",
             h.connected[0], h.connected[1], h.disconnected);
  if (out[0] == '\0' && stop && h.stopped != 1)
    snprintf(out, size, "on_stopped ran %d times", h.stopped);
}


/* service.h, cport_service_destroy(): "Sessions on the other loops a server
 * spreads over are closed when those loops next wake", and the callbacks a
 * destroy leaves are on_disconnected for sessions that were connected; and
 * cport_service_stop(): it closes the listener and disconnects every
 * session. A connection the listener on port 0 accepted and handed to loop
 * 1 just before must not become a session there (no on_connected after the
 * call returned, and so no on_disconnected for it either); after a stop,
 * on_stopped still arrives. Loop 1 is driven only after the call, so the
 * hand-off is certainly queued behind it. */
/* ---- a stop ends the callbacks on every loop at once ---- */

typedef struct phase_rig_s {
  cport_session_t* remote; /* the session on loop 1, referenced */
  int stop_returned;
  int recv_after_stop;
  int disconnected;
  int stopped;
} phase_rig_t;


static void phase_connected(cport_session_t* s) {
  phase_rig_t* r = cport_service_get_data(cport_session_service(s));
  if (cport_session_loop(s) == 1 && r->remote == NULL) {
    cport_session_ref(s);
    r->remote = s;
  }
}


static size_t phase_recv(cport_session_t* s, const uint8_t* data, size_t len) {
  phase_rig_t* r = cport_service_get_data(cport_session_service(s));
  (void)data;
  if (r->stop_returned)
    r->recv_after_stop++;
  return len;
}


static void phase_disconnected(cport_session_t* s,
                               int code,
                               const char* cause) {
  phase_rig_t* r = cport_service_get_data(cport_session_service(s));
  (void)code;
  (void)cause;
  r->disconnected++;
}


static void phase_stopped(cport_service_t* svc) {
  phase_rig_t* r = cport_service_get_data(svc);
  r->stopped++;
}


static int phase_remote_connected(void* arg) {
  return ((phase_rig_t*)arg)->remote != NULL;
}


typedef struct phase_wait_s {
  phase_rig_t* r;
  peer_t* p1;
  peer_t* p2;
} phase_wait_t;


static int phase_all_over(void* arg) {
  phase_wait_t* w = arg;
  return w->r->stopped == 1 && w->r->disconnected == 2 && peer_ended(w->p1) &&
         peer_ended(w->p2);
}


/* A spreading server on two loops, driven from this thread: once
 * cport_service_stop() has returned on port 0, the session on loop 1 (whose
 * loop has not taken the stop yet) refuses sends and reports no more bytes
 * (service.h: on every loop at once). */
static void test_service_stop_ends_callbacks_on_every_loop(void** state) {
  fixture_t* fx = *state;
  cport_core_opts_t copts;
  cport_service_opts_t o;
  cport_core_t* core = NULL;
  cport_service_t* svc = NULL;
  cport_addr_t addr;
  phase_rig_t r;
  phase_wait_t w;
  memset(&r, 0, sizeof(r));
  cport_core_opts_init(&copts);
  copts.loops = 2;
  assert_int_equal(cport_core_create(&core, &copts), 0);
  cport_service_opts_init(&o);
  o.cbs.on_connected = phase_connected;
  o.cbs.on_recv = phase_recv;
  o.cbs.on_disconnected = phase_disconnected;
  o.data = &r;
  assert_int_equal(cport_addr_parse(&addr, "127.0.0.1", 0), 0);
  assert_int_equal(
      cport_service_create(&svc, core, CPORT_SERVICE_SERVER, &addr, &o), 0);
  assert_int_equal(cport_service_start(svc), 0);
  assert_int_equal(cport_service_local_addr(svc, &addr), 0);
  /* The 1st connection stays on port 0, the 2nd goes to loop 1. */
  memset(&w, 0, sizeof(w));
  w.r = &r;
  w.p1 = peer_connect(fx, &addr, 0);
  w.p2 = peer_connect(fx, &addr, 0);
  assert_true(handoff_drive(fx, core, 2, phase_remote_connected, &r));
  assert_true(cport_session_is_connected(r.remote));

  assert_int_equal(cport_service_stop(svc, 5000, phase_stopped), 0);
  r.stop_returned = 1;
  /* Loop 1 has not run since: the session there is already ended for the
   * application. */
  assert_int_equal(cport_session_send(r.remote, "late", 4), UV_ENOTCONN);
  assert_int_equal(cport_session_is_connected(r.remote), 0);
  peer_write(w.p2, "more", 4);
  assert_true(handoff_drive(fx, core, 2, phase_all_over, &w));
  assert_int_equal(r.recv_after_stop, 0);
  assert_int_equal(w.p2->received.len, 0);

  cport_session_unref(r.remote);
  cport_service_destroy(svc);
  assert_true(handoff_drive(fx, core, 2, handoff_cores_idle, core));
  peer_destroy(w.p1);
  peer_destroy(w.p2);
  cport_core_destroy(core);
}


static void test_audit_spread_handoff_after_destroy_or_stop(void** state) {
  fixture_t* fx = *state;
  char destroy_err[160];
  char stop_err[160];
  handoff_case(fx, 0, destroy_err, sizeof(destroy_err));
  handoff_case(fx, 1, stop_err, sizeof(stop_err));
  if (destroy_err[0] != '\0' || stop_err[0] != '\0')
    fail_msg("destroy: %s; stop: %s", destroy_err[0] ? destroy_err : "ok",
             stop_err[0] ? stop_err : "ok");
}


/* ---- a stop and a destroy right after it, under cport_core_run ---- */

#define STOP_RACE_ROUNDS 20

typedef struct stop_race_s {
  cport_core_t* core;
  atomic_int probe; /* set by a job on loop 1, read relaxed on port 0 */
  int rc;
  signal_t done;
} stop_race_t;


static void stop_race_probe_job(void* arg) {
  stop_race_t* r = arg;
  /* Relaxed on purpose: the waiting loop learns that loop 1 got this far
   * without any happens-before edge that would hide a race from TSan. */
  atomic_store_explicit(&r->probe, 1, memory_order_relaxed);
}


static void stop_race_note(stop_race_t* r, int rc) {
  if (r->rc == 0)
    r->rc = rc;
}


static void stop_race_round_job(void* arg) {
  stop_race_t* r = arg;
  cport_service_opts_t o;
  cport_service_t* svc = NULL;
  cport_addr_t addr;
  uint64_t deadline = uv_hrtime() + (uint64_t)FIXTURE_TIMEOUT_MS * 1000000u;
  cport_service_opts_init(&o);
  stop_race_note(r, cport_addr_parse(&addr, "127.0.0.1", 0));
  stop_race_note(
      r, cport_service_create(&svc, r->core, CPORT_SERVICE_SERVER, &addr, &o));
  if (svc != NULL) {
    stop_race_note(r, cport_service_start(svc));
    atomic_store_explicit(&r->probe, 0, memory_order_relaxed);
    stop_race_note(r, cport_service_stop(svc, 50, NULL));
    /* Queued on loop 1 behind the part's stop. Loop 0 waits for it without
     * sleeping and without synchronising with loop 1: what an application
     * gets when its destroy comes a moment after its stop. */
    stop_race_note(r, cport_core_post(r->core, 1, stop_race_probe_job, r));
    while (!atomic_load_explicit(&r->probe, memory_order_relaxed) &&
           uv_hrtime() < deadline) {
    }
    cport_service_destroy(svc);
  }
  signal_raise(&r->done);
}


/* service.h: cport_service_stop() and cport_service_destroy() are "Thread:
 * loop" calls on the service's loop, and a spreading server does the rest
 * on its other loops by itself; nothing there tells the application to
 * synchronise those loops. A stop (deadline 50 ms) and then a destroy, both
 * from a job on port 0 while loop 1 already runs the part's stop: TSan must
 * see no race between the loops (the part's stop deadline is written by the
 * root on port 0 and read by the part's stop on loop 1). */
static void test_audit_stop_then_destroy_spread_server_has_no_race(
    void** state) {
  cport_core_opts_t copts;
  stop_race_t r;
  int round;
  (void)state;
  memset(&r, 0, sizeof(r));
  signal_init(&r.done);
  cport_core_opts_init(&copts);
  copts.loops = 2;
  assert_int_equal(cport_core_create(&r.core, &copts), 0);
  assert_int_equal(cport_core_run(r.core), 0);
  for (round = 0; round < STOP_RACE_ROUNDS && r.rc == 0; round++) {
    assert_int_equal(cport_core_post(r.core, 0, stop_race_round_job, &r), 0);
    if (!signal_wait(&r.done, round + 1, FIXTURE_TIMEOUT_MS))
      fail_msg("round %d did not finish", round);
  }
  assert_int_equal(cport_core_stop(r.core), 0);
  assert_int_equal(cport_core_join(r.core), 0);
  cport_core_destroy(r.core);
  signal_destroy(&r.done);
  assert_int_equal(r.rc, 0);
}


/* ---- host names ---- */

/* A resolver that takes longer than this for "nosuchhost.invalid" is taken
 * for one that hangs (no network, a DNS server that never answers): the
 * tests that need an answer are skipped with that reason. */
#define NAME_PROBE_MS 3000

typedef struct name_probe_s {
  int done;
  int status;
} name_probe_t;

static void name_probe_cb(uv_getaddrinfo_t* req,
                          int status,
                          struct addrinfo* res) {
  name_probe_t* p = req->data;
  p->done = 1;
  p->status = status;
  uv_freeaddrinfo(res);
}

static void name_probe_timer_cb(uv_timer_t* timer) {
  (void)timer;
}

/* Whether the system resolver answers for `host` within NAME_PROBE_MS. A
 * lookup that hangs keeps its private loop, reachable here, for ever. */
static int resolver_answers(const char* host) {
  static uv_loop_t* stuck;
  static uv_getaddrinfo_t stuck_req;
  static name_probe_t stuck_probe;
  uv_loop_t* loop;
  uv_timer_t timer;
  uint64_t deadline = uv_hrtime() + (uint64_t)NAME_PROBE_MS * 1000000u;
  if (stuck != NULL)
    return 0;
  loop = malloc(sizeof(*loop));
  assert_non_null(loop);
  assert_int_equal(uv_loop_init(loop), 0);
  memset(&stuck_probe, 0, sizeof(stuck_probe));
  stuck_req.data = &stuck_probe;
  assert_int_equal(
      uv_getaddrinfo(loop, &stuck_req, name_probe_cb, host, NULL, NULL), 0);
  assert_int_equal(uv_timer_init(loop, &timer), 0);
  uv_timer_start(&timer, name_probe_timer_cb, 50, 50);
  while (!stuck_probe.done && uv_hrtime() < deadline) uv_run(loop, UV_RUN_ONCE);
  uv_close((uv_handle_t*)&timer, NULL);
  if (!stuck_probe.done) {
    stuck = loop;
    print_message("skipped: the resolver gave no answer for %s in %d ms\n",
                  host, NAME_PROBE_MS);
    return 0;
  }
  uv_run(loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(loop), 0);
  free(loop);
  return 1;
}

static int is_eai(int code) {
  return strncmp(uv_err_name(code), "EAI_", 4) == 0;
}

static void name_parse(cport_addr_t* a, const char* host, int port) {
  assert_int_equal(cport_addr_parse(a, host, port), 0);
  assert_int_equal(cport_addr_is_name(a), 1);
}


/* A client on "localhost" reaches a server bound on 127.0.0.1 only, in one
 * attempt, whatever the resolver returns first (where it answers ::1
 * first, that address is refused and the next one tried). */
static void test_service_client_on_localhost_reaches_ipv4_server(void** state) {
  fixture_t* fx = *state;
  cport_service_stats_t st;
  cport_addr_t name;
  cport_addr_t peer;
  char text[CPORT_ADDR_STRLEN];
  uint64_t lookups = cport__service_lookups();
  fixture_start_server(fx);
  name_parse(&name, "localhost", cport_addr_port(&fx->server_addr));
  fixture_start_client(fx, &name, 2);
  fixture_wait_int(fx, &fx->connected, 4, FIXTURE_TIMEOUT_MS);
  assert_int_equal(fx->connect_failed, 0);
  assert_int_equal(cport__service_lookups() - lookups, 2);
  assert_int_equal(cport_session_peer_addr(fx->last_client, &peer), 0);
  assert_int_equal(cport_addr_format(&peer, text, sizeof(text)), 0);
  assert_int_equal(cport_addr_port(&peer), cport_addr_port(&fx->server_addr));
  assert_string_equal(
      cport_addr_format_host(&peer, text, sizeof(text)) == 0 ? text : "",
      "127.0.0.1");
  assert_int_equal(cport_service_stats(fx->client, &st), 0);
  assert_int_equal(st.connected, 2);
  assert_int_equal(st.connect_failed, 0);
}


/* A client on "localhost" at `port` whose attempts try `first` before
 * the addresses the lookup returns (the test hook stays set until the
 * test clears it). */
static void start_client_after(fixture_t* fx,
                               const cport_addr_t* first,
                               int port) {
  cport_addr_t name;
  cport__service_test_first_address(cport_addr_sockaddr(first));
  name_parse(&name, "localhost", port);
  fixture_start_client(fx, &name, 1);
}


/* The first address an attempt gets is refused: the next one is tried in
 * the same attempt, and nothing of the refused one is reported. */
static void test_service_client_on_name_tries_the_next_address(void** state) {
  fixture_t* fx = *state;
  cport_service_stats_t st;
  cport_addr_t refused;
  free_port(fx, &refused);
  fixture_start_server(fx);
  start_client_after(fx, &refused, cport_addr_port(&fx->server_addr));
  fixture_wait_int(fx, &fx->connected, 2, FIXTURE_TIMEOUT_MS);
  cport__service_test_first_address(NULL);
  assert_int_equal(fx->connect_failed, 0);
  assert_int_equal(cport_service_stats(fx->client, &st), 0);
  assert_int_equal(st.connected, 1);
  assert_int_equal(st.connect_failed, 0);
  settle(fx);
  assert_int_equal(fx->disconnected, 0);
}


/* Every address refused: one failure for the attempt, with the last
 * address's error. */
static void test_service_client_on_name_fails_once_when_all_refuse(
    void** state) {
  fixture_t* fx = *state;
  cport_service_stats_t st;
  cport_addr_t refused;
  free_port(fx, &refused);
  start_client_after(fx, &refused, cport_addr_port(&refused));
  fixture_wait_int(fx, &fx->connect_failed, 1, FIXTURE_TIMEOUT_MS);
  cport__service_test_first_address(NULL);
  settle(fx);
  assert_int_equal(fx->connect_failed, 1);
  assert_int_equal(fx->last_connect_error, UV_ECONNREFUSED);
  assert_int_equal(cport_service_stats(fx->client, &st), 0);
  assert_int_equal(st.connect_failed, 1);
  assert_int_equal(fx->connected, 0);
}


/* A name that does not exist fails each attempt with a UV_EAI_* code, and
 * every reconnect looks it up again. */
static void test_service_client_on_unknown_name_looks_up_each_attempt(
    void** state) {
  fixture_t* fx = *state;
  cport_service_stats_t st;
  cport_addr_t name;
  uint64_t lookups;
  if (!resolver_answers("nosuchhost.invalid"))
    skip();
  lookups = cport__service_lookups();
  fx->opts.reconnect = CPORT_RECONNECT_FIXED;
  fx->opts.reconnect_delay_ms = 10;
  fx->opts.reconnect_jitter_pct = 0;
  name_parse(&name, "nosuchhost.invalid", 7000);
  fixture_start_client(fx, &name, 1);
  fixture_wait_int(fx, &fx->connect_failed, 3, FIXTURE_TIMEOUT_MS);
  if (!is_eai(fx->last_connect_error))
    fail_msg("on_connect_failed got %s, expected a UV_EAI_* code",
             uv_err_name(fx->last_connect_error));
  fixture_stop_service(fx, fx->client, 0);
  assert_int_equal(cport_service_stats(fx->client, &st), 0);
  /* One lookup per attempt: the failed ones, and one the stop may have
   * cancelled (reported as UV_ECANCELED, counted as failed too). */
  assert_int_equal(cport__service_lookups() - lookups, st.connect_failed);
  assert_true(st.connect_failed >= 3);
  assert_int_equal(st.reconnects, st.connect_failed - 1);
  assert_int_equal(fx->connected, 0);
}


/* connect_timeout_ms bounds the attempt as a whole: an address that never
 * answers uses it up, and the attempt fails once, with UV_ETIMEDOUT. */
static void test_service_client_on_name_times_out_as_a_whole(void** state) {
#ifdef _WIN32
  (void)state;
  print_message("skipped on Windows: no silent loopback address\n");
  skip();
#else
  fixture_t* fx = *state;
  cport_addr_t silent;
  cport_addr_t name;
  deaf_t deaf;
  uint64_t start;
  deaf_start(fx, &deaf, &silent);
  fx->opts.connect_timeout_ms = 200;
  name_parse(&name, "localhost", cport_addr_port(&silent));
  start = uv_hrtime();
  fixture_start_client(fx, &name, 1);
  fixture_wait_int(fx, &fx->connect_failed, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(fx->last_connect_error, UV_ETIMEDOUT);
  assert_true(ms_since(start) >= 190); /* ms rounding */
  assert_true(ms_since(start) < 30000);
  settle(fx);
  assert_int_equal(fx->connect_failed, 1);
  assert_int_equal(fx->connected, 0);
  deaf_stop(fx, &deaf);
#endif
}


typedef struct name_order_s {
  int failed;
  int code;
  int stopped_before; /* on_stopped had run when on_connect_failed did */
  int stopped;
} name_order_t;

static void name_order_failed(cport_service_t* svc, int code) {
  name_order_t* o = cport_service_get_data(svc);
  o->failed++;
  o->code = code;
  o->stopped_before = o->stopped;
}

static void name_order_stopped(cport_service_t* svc) {
  name_order_t* o = cport_service_get_data(svc);
  o->stopped++;
}

static cport_service_t* name_client(fixture_t* fx,
                                    cport_core_t* core,
                                    const char* host,
                                    name_order_t* order) {
  cport_service_opts_t o;
  cport_service_t* svc = NULL;
  cport_addr_t name;
  (void)fx;
  cport_service_opts_init(&o);
  o.cbs.on_connect_failed = name_order_failed;
  o.data = order;
  name_parse(&name, host, 7000);
  assert_int_equal(
      cport_service_create(&svc, core, CPORT_SERVICE_CLIENT, &name, &o), 0);
  assert_int_equal(cport_service_start(svc), 0);
  return svc;
}

static int name_order_stopped_once(void* arg) {
  return ((name_order_t*)arg)->stopped > 0;
}

static int name_order_failed_once(void* arg) {
  return ((name_order_t*)arg)->failed > 0;
}


/* A stop while the name is looked up: on_connect_failed(UV_ECANCELED)
 * once, then on_stopped; nothing is left behind. */
static void test_service_stop_during_lookup_cancels_once(void** state) {
  fixture_t* fx = *state;
  name_order_t order;
  cport_service_t* svc;
  memset(&order, 0, sizeof(order));
  svc = name_client(fx, fx->core, "localhost", &order);
  assert_int_equal(cport_service_stop(svc, 1000, name_order_stopped), 0);
  assert_int_equal(order.failed, 0); /* never inside the call */
  assert_true(fixture_run_until(fx, name_order_stopped_once, &order,
                                FIXTURE_TIMEOUT_MS));
  assert_int_equal(order.failed, 1);
  assert_int_equal(order.code, UV_ECANCELED);
  assert_int_equal(order.stopped_before, 0);
  settle(fx);
  assert_int_equal(order.failed, 1);
  assert_int_equal(order.stopped, 1);
  cport_service_destroy(svc);
}


/* A destroy while the name is looked up: on_connect_failed(UV_ECANCELED)
 * once; the memory goes once the lookup has returned. */
static void test_service_destroy_during_lookup_cancels_once(void** state) {
  fixture_t* fx = *state;
  name_order_t order;
  cport_service_t* svc;
  memset(&order, 0, sizeof(order));
  svc = name_client(fx, fx->core, "localhost", &order);
  cport_service_destroy(svc);
  assert_true(fixture_run_until(fx, name_order_failed_once, &order,
                                FIXTURE_TIMEOUT_MS));
  settle(fx);
  assert_int_equal(order.failed, 1);
  assert_int_equal(order.code, UV_ECANCELED);
}


/* A core destroyed right after its client, its lookup perhaps still
 * under way: the core waits for it, and nothing leaks. */
static void test_service_core_destroy_waits_for_a_lookup(void** state) {
  long before = cport__mem_live();
  cport_core_t* core;
  name_order_t order;
  cport_service_t* svc;
  (void)state;
  memset(&order, 0, sizeof(order));
  assert_int_equal(cport_core_create(&core, NULL), 0);
  svc = name_client(NULL, core, "localhost", &order);
  cport_service_destroy(svc);
  cport_core_destroy(core);
  assert_int_equal(order.failed, 1);
  assert_int_equal(order.code, UV_ECANCELED);
  assert_int_equal(cport__mem_live(), before);
}


/* A server on "localhost" port 0 binds a loopback address and serves. */
static void test_service_server_on_localhost_accepts(void** state) {
  fixture_t* fx = *state;
  cport_addr_t name;
  cport_addr_t bound;
  char host[CPORT_ADDR_STRLEN];
  name_parse(&name, "localhost", 0);
  fixture_start_server_at(fx, &name);
  assert_int_equal(cport_service_local_addr(fx->server, &bound), 0);
  assert_int_equal(cport_addr_is_name(&bound), 0);
  assert_true(cport_addr_port(&bound) > 0);
  assert_int_equal(cport_addr_format_host(&bound, host, sizeof(host)), 0);
  assert_true(strcmp(host, "127.0.0.1") == 0 || strcmp(host, "::1") == 0);
  fixture_start_client(fx, &bound, 1);
  fixture_wait_int(fx, &fx->connected, 2, FIXTURE_TIMEOUT_MS);
}


/* A server on a name that does not resolve: start returns the resolver's
 * code and leaves the service startable never, destroyable always. */
static void test_service_server_on_unknown_name_fails_start(void** state) {
  fixture_t* fx = *state;
  cport_service_opts_t o;
  cport_service_t* svc = NULL;
  cport_addr_t name;
  int rc;
  if (!resolver_answers("nosuchhost.invalid"))
    skip();
  cport_service_opts_init(&o);
  name_parse(&name, "nosuchhost.invalid", 0);
  assert_int_equal(
      cport_service_create(&svc, fx->core, CPORT_SERVICE_SERVER, &name, &o), 0);
  rc = cport_service_start(svc);
  if (!is_eai(rc))
    fail_msg("start returned %s, expected a UV_EAI_* code", uv_err_name(rc));
  assert_int_equal(cport_service_local_addr(svc, &name), UV_ENOTCONN);
  cport_service_destroy(svc);
}


/* Happy Eyeballs: the first address never answers; the next one is
 * started connect_attempt_delay_ms later and wins, long before the connect
 * timeout, and the loser is closed unreported. */
static void test_service_client_on_name_races_past_a_silent_address(
    void** state) {
#ifdef _WIN32
  (void)state;
  print_message("skipped on Windows: no silent loopback address\n");
  skip();
#else
  fixture_t* fx = *state;
  cport_service_stats_t st;
  cport_addr_t silent;
  deaf_t deaf;
  deaf_start(fx, &deaf, &silent);
  fx->opts.connect_timeout_ms = 120000; /* far beyond the test's wait */
  fixture_start_server(fx);
  start_client_after(fx, &silent, cport_addr_port(&fx->server_addr));
  fixture_wait_int(fx, &fx->connected, 2, FIXTURE_TIMEOUT_MS);
  cport__service_test_first_address(NULL);
  assert_int_equal(cport_session_send(fx->last_client, "he", 2), 0);
  fixture_wait_size(fx, &rec_of(fx->last_client)->received.len, 2,
                    FIXTURE_TIMEOUT_MS);
  settle(fx);
  assert_int_equal(fx->connect_failed, 0);
  assert_int_equal(cport_service_stats(fx->client, &st), 0);
  assert_int_equal(st.connected, 1);
  assert_int_equal(st.connect_failed, 0);
  fixture_stop_service(fx, fx->client, 1000);
  deaf_stop(fx, &deaf);
#endif
}


/* connect_attempt_delay_ms 0: one address at a time, so the silent one
 * holds the attempt until the timeout, which covers the whole attempt. */
static void test_service_client_on_name_without_a_race_waits_its_turn(
    void** state) {
#ifdef _WIN32
  (void)state;
  print_message("skipped on Windows: no silent loopback address\n");
  skip();
#else
  fixture_t* fx = *state;
  cport_addr_t silent;
  deaf_t deaf;
  deaf_start(fx, &deaf, &silent);
  fx->opts.connect_timeout_ms = 300;
  fx->opts.connect_attempt_delay_ms = 0;
  fixture_start_server(fx);
  start_client_after(fx, &silent, cport_addr_port(&fx->server_addr));
  fixture_wait_int(fx, &fx->connect_failed, 1, FIXTURE_TIMEOUT_MS);
  cport__service_test_first_address(NULL);
  assert_int_equal(fx->last_connect_error, UV_ETIMEDOUT);
  assert_int_equal(fx->connected, 0);
  settle(fx);
  assert_int_equal(fx->connect_failed, 1);
  deaf_stop(fx, &deaf);
#endif
}


#ifndef _WIN32
static int pred_two_racing(void* arg) {
  return cport__service_open(arg) == 2;
}
#endif


/* Two silent addresses race: the attempt reports once, whatever ends it
 * (the timeout, a stop, a destroy), after both connects have ended. */
static void test_service_client_race_of_silent_addresses_reports_once(
    void** state) {
#ifdef _WIN32
  (void)state;
  print_message("skipped on Windows: no silent loopback address\n");
  skip();
#else
  fixture_t* fx = *state;
  cport_service_stats_t st;
  cport_addr_t silent1;
  cport_addr_t silent2;
  deaf_t deaf1;
  deaf_t deaf2;
  int how;
  deaf_start(fx, &deaf1, &silent1);
  deaf_start(fx, &deaf2, &silent2);
  for (how = 0; how < 3; how++) {
    int before = fx->connect_failed;
    fx->opts.connect_timeout_ms = how == 0 ? 600 : 120000;
    fx->opts.connect_attempt_delay_ms = 20;
    start_client_after(fx, &silent1, cport_addr_port(&silent2));
    /* Both raced: the second started 20 ms after the first. */
    assert_true(
        fixture_run_until(fx, pred_two_racing, fx->client, FIXTURE_TIMEOUT_MS));
    if (how == 1) {
      assert_int_equal(cport_service_stop(fx->client, 1000, NULL), 0);
    } else if (how == 2) {
      cport_service_destroy(fx->client);
      fx->client = NULL;
    }
    fixture_wait_int(fx, &fx->connect_failed, before + 1, FIXTURE_TIMEOUT_MS);
    assert_int_equal(fx->last_connect_error,
                     how == 0 ? UV_ETIMEDOUT : UV_ECANCELED);
    settle(fx);
    assert_int_equal(fx->connect_failed, before + 1);
    assert_int_equal(fx->connected, 0);
    if (fx->client != NULL) {
      assert_int_equal(cport_service_stats(fx->client, &st), 0);
      assert_int_equal(st.connect_failed, 1);
      cport_service_destroy(fx->client);
      fx->client = NULL;
    }
    settle(fx);
  }
  cport__service_test_first_address(NULL);
  deaf_stop(fx, &deaf2);
  deaf_stop(fx, &deaf1);
#endif
}


/* ---- draining ---- */

static void drained_cb(cport_service_t* svc) {
  fixture_t* fx = cport_service_get_data(svc);
  fx->stopped += 100; /* told apart from fixture_stop_service's +1 */
}


static void test_service_drain_serves_open_sessions_and_refuses_new_ones(
    void** state) {
  fixture_t* fx = *state;
  peer_t* p[2];
  peer_t* late;
  int i;
  fx->opts.data = fx;
  fixture_start_server(fx);
  for (i = 0; i < 2; i++) p[i] = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &fx->connected, 2, FIXTURE_TIMEOUT_MS);
  assert_int_equal(cport_service_is_draining(fx->server), 0);
  assert_int_equal(cport_service_drain(fx->server, 60000, drained_cb), 0);
  assert_int_equal(cport_service_is_draining(fx->server), 1);
  assert_int_equal(cport_service_drain(fx->server, 0, drained_cb),
                   UV_EALREADY);
  settle(fx);
  /* The listener is closed at once: a health check finds it down. */
  late = peer_connect(fx, &fx->server_addr, 1);
  assert_int_equal(late->connect_error, UV_ECONNREFUSED);
  peer_destroy(late);
  /* The sessions already up go on, both ways. */
  for (i = 0; i < 2; i++) {
    peer_write(p[i], "ping", 4);
    fixture_wait_size(fx, &p[i]->received.len, 4, FIXTURE_TIMEOUT_MS);
  }
  assert_int_equal(fx->stopped, 0);
  peer_destroy(p[0]);
  fixture_wait_int(fx, &fx->disconnected, 1, FIXTURE_TIMEOUT_MS);
  settle(fx);
  assert_int_equal(fx->stopped, 0); /* one session is still open */
  peer_destroy(p[1]);
  fixture_wait_int(fx, &fx->stopped, 100, FIXTURE_TIMEOUT_MS);
  /* Drained by themselves: the peers' own ends, not the deadline. */
  assert_int_equal(fx->last_code, UV_EOF);
  assert_int_equal(cport_service_is_draining(fx->server), 0);
  assert_int_equal(cport_service_stop(fx->server, 0, NULL), UV_EALREADY);
  settle(fx);
  assert_int_equal(fx->stopped, 100);
}


static void test_service_drain_deadline_ends_sessions_as_drained(
    void** state) {
  fixture_t* fx = *state;
  const size_t len = 256 * 1024;
  uint8_t* payload = malloc(len);
  cport_service_stats_t st;
  peer_t* p;
  assert_non_null(payload);
  fill_pattern(payload, len, 3);
  fx->opts.data = fx;
  fx->opts.send_queue_limit = 2 * len;
  fixture_start_server(fx);
  p = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &fx->connected, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(cport_service_drain(fx->server, 50, drained_cb), 0);
  /* Still served during the drain: a send goes out in full before the
   * drained session's graceful end. */
  assert_int_equal(cport_session_send(fx->last_server, payload, len), 0);
  fixture_wait_int(fx, &fx->stopped, 100, FIXTURE_TIMEOUT_MS);
  assert_int_equal(fx->disconnected, 1);
  assert_int_equal(fx->last_code, CPORT_EDRAINED);
  assert_string_equal(fx->last_cause, cport_strerror(CPORT_EDRAINED));
  fixture_wait_int(fx, &p->eof, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(p->error, 0); /* a FIN, not a reset */
  assert_int_equal(p->received.len, len);
  assert_memory_equal(p->received.data, payload, len);
  assert_int_equal(cport_service_stats(fx->server, &st), 0);
  assert_int_equal(st.disconnects_local, 1);
  peer_destroy(p);
  free(payload);
}


static void test_service_stop_takes_over_a_drain(void** state) {
  fixture_t* fx = *state;
  peer_t* p;
  fx->opts.data = fx;
  fixture_start_server(fx);
  p = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &fx->connected, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(cport_service_drain(fx->server, 60000, drained_cb), 0);
  settle(fx);
  fixture_stop_service(fx, fx->server, 1000);
  assert_int_equal(fx->stopped, 1); /* on_stopped, not the drain's */
  assert_int_equal(fx->last_code, CPORT_ESTOPPED);
  settle(fx);
  assert_int_equal(fx->stopped, 1);
  peer_destroy(p);
}


static void test_service_drain_refuses_bad_calls(void** state) {
  fixture_t* fx = *state;
  cport_service_t* svc =
      fixture_create_service(fx, CPORT_SERVICE_SERVER, "127.0.0.1", NULL);
  assert_int_equal(cport_service_drain(NULL, 0, NULL), UV_EINVAL);
  assert_int_equal(cport_service_drain(svc, -1, NULL), UV_EINVAL);
  /* Never started: nothing to drain. */
  assert_int_equal(cport_service_drain(svc, 0, NULL), UV_EINVAL);
  assert_int_equal(cport_service_is_draining(NULL), 0);
  cport_service_destroy(svc);
}


static void test_service_drained_client_makes_no_new_connects(void** state) {
  fixture_t* fx = *state;
  cport_service_stats_t st;
  fx->opts.data = fx;
  fx->opts.reconnect = CPORT_RECONNECT_FIXED;
  fx->opts.reconnect_delay_ms = 1;
  fx->opts.reconnect_reset_ms = 0;
  fixture_start_server(fx);
  fixture_start_client(fx, &fx->server_addr, 1);
  fixture_wait_int(fx, &fx->connected, 2, FIXTURE_TIMEOUT_MS);
  assert_int_equal(cport_service_drain(fx->client, 60000, drained_cb), 0);
  assert_int_equal(cport_service_connect(fx->client, 1), UV_EINVAL);
  /* The server ends the client's session: no reconnect follows it, and
   * the client's drain is complete. */
  assert_int_equal(cport_session_disconnect(fx->last_server, "bye"), 0);
  fixture_wait_int(fx, &fx->stopped, 100, FIXTURE_TIMEOUT_MS);
  settle(fx);
  assert_int_equal(cport_service_stats(fx->client, &st), 0);
  assert_int_equal(st.reconnects, 0);
  assert_int_equal(fx->connect_failed, 0);
}


static void test_service_drain_spread_server_ends_every_loop_once(
    void** state) {
  spread_t sp;
  cport_service_t* server = NULL;
  cport_service_t* client = NULL;
  cport_service_stats_t st;
  (void)state;
  spread_start(&sp, &server, &client, 0, 8, 1);
  assert_true(spread_drive(&sp, &sp.received, 8 * 4));
  assert_int_equal(cport_service_drain(server, 100, spread_stopped), 0);
  assert_true(spread_drive(&sp, &sp.stopped, 1));
  assert_int_equal(atomic_load(&sp.disconnected), 8);
  assert_int_equal(cport_service_stats(server, &st), 0);
  assert_int_equal(st.disconnects_local, 8);
  assert_int_equal(cport_service_stop(server, 0, NULL), UV_EALREADY);
  spread_destroy(&sp, server, client);
}


static void test_service_stop_after_parts_drained_reports_once(void** state) {
  spread_t sp;
  cport_service_t* server = NULL;
  cport_service_t* client = NULL;
  int i;
  (void)state;
  /* One connection, on the root's loop: the three other loops drain empty
   * at once and report to the root, whose loop does not run meanwhile, so
   * their reports still wait in its mailbox when the stop reaches them. A
   * second report would post the same message again. */
  spread_start(&sp, &server, &client, 0, 1, 1);
  assert_true(spread_drive(&sp, &sp.received, 4));
  assert_int_equal(cport_service_drain(server, 60000, spread_stopped), 0);
  for (i = 0; i < 100; i++) {
    unsigned l;
    for (l = 1; l < SPREAD_PORTS; l++) cport_core_dispatch(sp.core, l, 0);
    if (i == 49)
      assert_int_equal(cport_service_stop(server, 1000, spread_stopped), 0);
  }
  assert_int_equal(atomic_load(&sp.stopped), 0);
  assert_true(spread_drive(&sp, &sp.stopped, 1));
  for (i = 0; i < 50; i++) {
    unsigned l;
    for (l = 0; l < SPREAD_PORTS; l++) cport_core_dispatch(sp.core, l, 0);
  }
  assert_int_equal(atomic_load(&sp.stopped), 1);
  assert_int_equal(atomic_load(&sp.disconnected), 1);
  spread_destroy(&sp, server, client);
}


int main(void) {
  const struct CMUnitTest tests[] = {
#define T FIXTURE_TEST
      T(test_service_idle_timeout_ends_silent_sessions),
      T(test_service_connect_timeout_reports_etimedout),
      T(test_service_reconnects_to_a_server_that_starts_late),
      T(test_service_stop_cancels_pending_reconnects),
      T(test_service_reconnect_delays_never_exceed_the_cap),
      T(test_service_connect_that_cannot_start_is_retried),
      T(test_service_reconnect_backs_off_from_a_flapping_server),
      T(test_service_reconnect_resets_after_a_session_that_stayed_up),
      T(test_service_disconnect_timeout_forces_a_stuck_flush),
      T(test_service_stop_with_deadline_during_thousands_of_transfers),
      T(test_service_flood_past_max_sessions_leaves_sessions_served),
      T(test_service_broadcast_reaches_every_loop_and_frees_once),
      T(test_service_broadcast_on_own_loops_sends_during_the_call),
      T(test_service_client_connects_n_sessions),
      T(test_service_user_area_is_zeroed_and_per_session),
      T(test_service_without_user_area_gives_null),
      T(test_service_connect_failure_reported),
      T(test_service_stop_disconnects_everyone_once),
      T(test_service_stop_flushes_before_closing),
      T(test_service_stop_deadline_cuts_off_peer_that_never_reads),
      T(test_service_stop_cancels_pending_connects),
      T(test_service_destroy_cancels_pending_connects),
      T(test_service_stop_with_nothing_open_reports_later),
      T(test_service_destroy_inside_on_stopped),
      T(test_service_destroy_while_running_closes_sessions),
      T(test_service_stats_count_bytes),
      T(test_service_rejects_invalid_options),
      T(test_service_rejects_invalid_arguments),
      T(test_service_loop_only_calls_refuse_other_threads),
      T(test_audit_service_rejects_user_size_that_overflows),
      T(test_audit_spread_handoff_after_destroy_or_stop),
      T(test_service_stop_ends_callbacks_on_every_loop),
      T(test_audit_stop_then_destroy_spread_server_has_no_race),
      T(test_service_client_on_localhost_reaches_ipv4_server),
      T(test_service_client_on_name_tries_the_next_address),
      T(test_service_client_on_name_fails_once_when_all_refuse),
      T(test_service_client_on_unknown_name_looks_up_each_attempt),
      T(test_service_client_on_name_times_out_as_a_whole),
      T(test_service_client_on_name_races_past_a_silent_address),
      T(test_service_client_on_name_without_a_race_waits_its_turn),
      T(test_service_client_race_of_silent_addresses_reports_once),
      T(test_service_stop_during_lookup_cancels_once),
      T(test_service_destroy_during_lookup_cancels_once),
      T(test_service_core_destroy_waits_for_a_lookup),
      T(test_service_server_on_localhost_accepts),
      T(test_service_server_on_unknown_name_fails_start),
      T(test_service_drain_serves_open_sessions_and_refuses_new_ones),
      T(test_service_drain_deadline_ends_sessions_as_drained),
      T(test_service_stop_takes_over_a_drain),
      T(test_service_drain_refuses_bad_calls),
      T(test_service_drained_client_makes_no_new_connects),
      T(test_service_drain_spread_server_ends_every_loop_once),
      T(test_service_stop_after_parts_drained_reports_once),
#undef T
  };
  return cmocka_run_group_tests_name("service", tests, NULL, NULL);
}
