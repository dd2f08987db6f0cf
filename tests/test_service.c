/* Services: client connects, counting and iteration, stop and destroy,
 * argument checks, broadcast. */
#include "fixture.h"

#include <stdlib.h>
#include <string.h>

#ifndef _WIN32
#include <sys/resource.h>
#endif

#include "common.h" /* cport__mem_live */


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
  /* A port that was just listening and is closed now: refused. */
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


static void test_service_rejects_invalid_options(void** state) {
  fixture_t* fx = *state;
  cport_service_opts_t o;
  cport_service_opts_init(&o);
  assert_int_equal(create_rc(fx, CPORT_SERVICE_SERVER, &o), 0);
  assert_int_equal(create_rc(fx, CPORT_SERVICE_CLIENT, &o), 0);
  assert_int_equal(create_rc(fx, (cport_service_kind_t)3, &o), UV_EINVAL);
  assert_int_equal(create_rc(fx, CPORT_SERVICE_SERVER, NULL), UV_EINVAL);
  o.port = 1; /* the core has one port */
  assert_int_equal(create_rc(fx, CPORT_SERVICE_SERVER, &o), UV_EINVAL);
  cport_service_opts_init(&o);
  o.recv_buffer_limit = 0;
  assert_int_equal(create_rc(fx, CPORT_SERVICE_SERVER, &o), UV_EINVAL);
  cport_service_opts_init(&o);
  o.send_queue_limit = 0;
  assert_int_equal(create_rc(fx, CPORT_SERVICE_SERVER, &o), UV_EINVAL);
  cport_service_opts_init(&o);
  o.send_queue_policy = (cport_sendq_policy_t)7;
  assert_int_equal(create_rc(fx, CPORT_SERVICE_SERVER, &o), UV_EINVAL);
  cport_service_opts_init(&o);
  o.backlog = 0;
  assert_int_equal(create_rc(fx, CPORT_SERVICE_SERVER, &o), UV_EINVAL);
  cport_service_opts_init(&o);
  o.connect_count = 0;
  assert_int_equal(create_rc(fx, CPORT_SERVICE_CLIENT, &o), UV_EINVAL);
  cport_service_opts_init(&o);
  o.reconnect = (cport_reconnect_t)9;
  assert_int_equal(create_rc(fx, CPORT_SERVICE_CLIENT, &o), UV_EINVAL);
  cport_service_opts_init(&o);
  o.reconnect = CPORT_RECONNECT_FIXED;
  o.reconnect_delay_ms = 0;
  assert_int_equal(create_rc(fx, CPORT_SERVICE_CLIENT, &o), UV_EINVAL);
  cport_service_opts_init(&o);
  o.reconnect = CPORT_RECONNECT_EXPONENTIAL;
  o.reconnect_jitter_pct = 101;
  assert_int_equal(create_rc(fx, CPORT_SERVICE_CLIENT, &o), UV_EINVAL);
  o.reconnect_jitter_pct = 100;
  assert_int_equal(create_rc(fx, CPORT_SERVICE_CLIENT, &o), 0);
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
 * get no answer at all (Linux and the BSDs drop the SYN). */
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
      cport__socket_listen(cport_addr_sockaddr(addr), 0, &d->listener), 0);
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
#ifdef _WIN32
  /* Windows (and wine) refuse a connect to a full backlog with a reset, so
   * it fails with ECONNREFUSED before any timeout; loopback offers no
   * address that stays silent there. */
  print_message("skipped on Windows: no silent loopback address\n");
  skip();
#endif
  deaf_start(fx, &deaf, &addr);
  fx->opts.connect_timeout_ms = 200;
  start = uv_hrtime();
  fixture_start_client(fx, &addr, 1);
  fixture_wait_int(fx, &fx->connect_failed, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(fx->last_connect_error, UV_ETIMEDOUT);
  assert_true(ms_since(start) >= 190); /* ms rounding */
  assert_true(ms_since(start) < 5000);
  assert_int_equal(fx->connected, 0);
  deaf_stop(fx, &deaf);
}


/* A free port on loopback: bound once, then released. */
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
  /* The server comes up on that port; the next attempt gets through. */
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
  assert_true(ms_since(start) < 2000);
  assert_int_equal(fx->connect_failed, 3);
  /* The teardown checks that the pending reconnects left nothing behind. */
}

/* A graceful disconnect that cannot flush is cut off at
 * disconnect_timeout_ms, keeping its own code. */
static void test_service_disconnect_timeout_forces_a_stuck_flush(void** state) {
  fixture_t* fx = *state;
  cport_service_stats_t st;
  uint64_t start;
  peer_t* p;
  FIXTURE_SKIP_UNDER_WINE(
      "the uv_write queue to a peer that stopped reading still drains under "
      "wine, so the flush never gets stuck");
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
  fixture_stop_service(fx, fx->server, 300);
  /* By the deadline, with room for a loaded machine. */
  print_message("stop of %d sessions took %llu ms\n", n + (stuck != NULL),
                (unsigned long long)ms_since(start));
  assert_true(ms_since(start) < 300 + 2000);
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

/* One buffer to 500 sessions spread over 4 ports, broadcast from a thread
 * that runs none of them: every session gets it whole, and the buffer,
 * whose only references are the writes', is freed once (ASan) with nothing
 * left behind. */
static void test_service_broadcast_reaches_every_port_and_frees_once(
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

/* From a thread that runs every port, the broadcast happens during the
 * call; a session that is disconnecting is skipped. */
static void test_service_broadcast_on_own_ports_sends_during_the_call(
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


int main(void) {
  const struct CMUnitTest tests[] = {
#define T FIXTURE_TEST
      T(test_service_idle_timeout_ends_silent_sessions),
      T(test_service_connect_timeout_reports_etimedout),
      T(test_service_reconnects_to_a_server_that_starts_late),
      T(test_service_stop_cancels_pending_reconnects),
      T(test_service_disconnect_timeout_forces_a_stuck_flush),
      T(test_service_stop_with_deadline_during_thousands_of_transfers),
      T(test_service_flood_past_max_sessions_leaves_sessions_served),
      T(test_service_broadcast_reaches_every_port_and_frees_once),
      T(test_service_broadcast_on_own_ports_sends_during_the_call),
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
#undef T
  };
  return cmocka_run_group_tests_name("service", tests, NULL, NULL);
}
