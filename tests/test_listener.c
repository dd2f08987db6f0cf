/* The listener, seen through a server service: binding, bind errors,
 * max_sessions, and spreading connections over the ports of a core. */
#include "fixture.h"

#include <string.h>

#include "common.h" /* cport__mem_fail_after, cport__mem_live */


static int pred_peer_done(void* arg) {
  peer_t* p = arg;
  return p->eof || p->error != 0;
}


static void test_listener_max_sessions_rejects_and_keeps_serving(void** state) {
  fixture_t* fx = *state;
  cport_service_stats_t st;
  peer_t* a;
  peer_t* b;
  peer_t* c;
  peer_t* d;
  fx->opts.max_sessions = 2;
  fixture_start_server(fx);
  a = peer_connect(fx, &fx->server_addr, 0);
  b = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &fx->connected, 2, FIXTURE_TIMEOUT_MS);
  /* The third is accepted by the kernel, then closed by cport at once. */
  c = peer_connect(fx, &fx->server_addr, 1);
  assert_true(fixture_run_until(fx, pred_peer_done, c, FIXTURE_TIMEOUT_MS));
  assert_int_equal(cport_service_stats(fx->server, &st), 0);
  assert_int_equal(st.rejected, 1);
  assert_int_equal(st.active, 2);
  assert_int_equal(fx->connected, 2);
  /* Existing sessions are unaffected. */
  peer_write(a, "still", 5);
  fixture_wait_size(fx, &a->received.len, 5, FIXTURE_TIMEOUT_MS);
  /* When one leaves, a newcomer gets its place. */
  peer_destroy(b);
  fixture_wait_int(fx, &fx->disconnected, 1, FIXTURE_TIMEOUT_MS);
  d = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &fx->connected, 3, FIXTURE_TIMEOUT_MS);
  peer_write(d, "in", 2);
  fixture_wait_size(fx, &d->received.len, 2, FIXTURE_TIMEOUT_MS);
  assert_int_equal(cport_service_session_count(fx->server), 2);
  peer_destroy(a);
  peer_destroy(c);
  peer_destroy(d);
}


static void test_listener_bind_in_use_returns_eaddrinuse(void** state) {
  fixture_t* fx = *state;
  cport_service_t* second = NULL;
  cport_service_opts_t o;
  cport_addr_t addr;
  fixture_start_server(fx);
  cport_service_opts_init(&o);
  assert_int_equal(cport_service_create(&second, fx->core, CPORT_SERVICE_SERVER,
                                        &fx->server_addr, &o),
                   0);
  assert_int_equal(cport_service_start(second), UV_EADDRINUSE);
  assert_int_equal(cport_service_local_addr(second, &addr), UV_ENOTCONN);
  /* Start may be tried again; the port is still taken. */
  assert_int_equal(cport_service_start(second), UV_EADDRINUSE);
  cport_service_destroy(second);
  /* The first server is unharmed. */
  {
    peer_t* p = peer_connect(fx, &fx->server_addr, 0);
    peer_write(p, "ok", 2);
    fixture_wait_size(fx, &p->received.len, 2, FIXTURE_TIMEOUT_MS);
    peer_destroy(p);
  }
}


static void test_listener_bind_to_foreign_address_fails(void** state) {
  fixture_t* fx = *state;
  /* 192.0.2.1 (TEST-NET-1) is on no interface here: binding fails without
   * a packet being sent. */
  cport_service_t* svc =
      fixture_create_service(fx, CPORT_SERVICE_SERVER, "192.0.2.1", NULL);
  assert_int_equal(cport_service_start(svc), UV_EADDRNOTAVAIL);
  cport_service_destroy(svc);
}


static int pred_two_bytes_in(void* arg) {
  cport_service_stats_t st;
  assert_int_equal(cport_service_stats(arg, &st), 0);
  return st.bytes_in == 2;
}


static void test_listener_ipv6_loopback(void** state) {
  fixture_t* fx = *state;
  cport_service_t* svc;
  cport_addr_t bound;
  char text[CPORT_ADDR_STRLEN];
  int rc;
  peer_t* p;
  /* Default options: no callbacks at all. */
  svc = fixture_create_service(fx, CPORT_SERVICE_SERVER, "::1", NULL);
  rc = cport_service_start(svc);
  if (rc == UV_EADDRNOTAVAIL || rc == UV_EAFNOSUPPORT) {
    cport_service_destroy(svc);
    skip(); /* no IPv6 on this machine */
  }
  assert_int_equal(rc, 0);
  assert_int_equal(cport_service_local_addr(svc, &bound), 0);
  assert_int_equal(cport_addr_family(&bound), 6);
  assert_int_equal(cport_addr_format_host(&bound, text, sizeof(text)), 0);
  assert_string_equal(text, "::1");
  /* Without an on_recv, the session consumes and drops what arrives. */
  p = peer_connect(fx, &bound, 0);
  peer_write(p, "v6", 2);
  assert_true(
      fixture_run_until(fx, pred_two_bytes_in, svc, FIXTURE_TIMEOUT_MS));
  assert_int_equal(cport_service_session_count(svc), 1);
  peer_destroy(p);
  cport_service_destroy(svc);
}


static void test_listener_local_addr_errors(void** state) {
  fixture_t* fx = *state;
  cport_addr_t addr;
  cport_service_t* svc =
      fixture_create_service(fx, CPORT_SERVICE_SERVER, "127.0.0.1", NULL);
  assert_int_equal(cport_service_local_addr(svc, &addr), UV_ENOTCONN);
  assert_int_equal(cport_service_local_addr(NULL, &addr), UV_EINVAL);
  assert_int_equal(cport_service_local_addr(svc, NULL), UV_EINVAL);
  assert_int_equal(cport_service_start(svc), 0);
  assert_int_equal(cport_service_start(svc), UV_EINVAL);
  assert_int_equal(cport_service_local_addr(svc, &addr), 0);
  assert_true(cport_addr_port(&addr) > 0);
  cport_service_destroy(svc);
}


static void test_listener_rejects_while_out_of_memory(void** state) {
  fixture_t* fx = *state;
  cport_service_stats_t st;
  peer_t* p;
  fixture_start_server(fx);
  cport__mem_fail_after(0);
  p = peer_connect(fx, &fx->server_addr, 1);
  assert_true(fixture_run_until(fx, pred_peer_done, p, FIXTURE_TIMEOUT_MS));
  cport__mem_fail_after(-1);
  assert_int_equal(cport_service_stats(fx->server, &st), 0);
  assert_true(st.accept_errors >= 1);
  assert_int_equal(fx->connected, 0);
  peer_destroy(p);
  /* Memory back: serving again. */
  p = peer_connect(fx, &fx->server_addr, 0);
  peer_write(p, "ok", 2);
  fixture_wait_size(fx, &p->received.len, 2, FIXTURE_TIMEOUT_MS);
  peer_destroy(p);
}


/* ---- spreading connections over the ports ---- */

static void test_listener_spreads_connections_round_robin(void** state) {
  spread_t sp;
  cport_service_t* server;
  cport_service_t* client;
  cport_service_stats_t st;
  long baseline = cport__mem_live();
  unsigned i;
  (void)state;
  spread_start(&sp, &server, &client, 0, SPREAD_CONNS, 1);
  assert_true(spread_drive(&sp, &sp.received, 4 * SPREAD_CONNS));
  /* In turn over all four ports, the listener's own included. */
  for (i = 0; i < SPREAD_PORTS; i++)
    assert_int_equal(atomic_load(&sp.per_port[i]), SPREAD_CONNS / SPREAD_PORTS);
  assert_int_equal(cport_service_stats(server, &st), 0);
  assert_int_equal(st.connected, SPREAD_CONNS);
  assert_int_equal(st.active, SPREAD_CONNS);
  assert_int_equal(st.peak, SPREAD_CONNS);
  assert_int_equal(st.bytes_in, 4 * SPREAD_CONNS);
  assert_int_equal(cport_service_session_count(server), SPREAD_CONNS);
  /* A stop reaches every port, and reports once all have stopped. */
  assert_int_equal(cport_service_stop(server, 5000, spread_stopped), 0);
  assert_true(spread_drive(&sp, &sp.stopped, 1));
  assert_int_equal(atomic_load(&sp.disconnected), SPREAD_CONNS);
  assert_int_equal(cport_service_session_count(server), 0);
  cport_service_destroy(client);
  cport_service_destroy(server);
  cport_core_destroy(sp.core);
  signal_destroy(&sp.done);
  assert_int_equal(atomic_load(&sp.wrong_thread), 0);
  assert_int_equal(cport__mem_live(), baseline);
}

/* The same with one thread per port: each session's callbacks run on its
 * own port's thread (and ThreadSanitizer watches the hand-offs). */
static void test_listener_spread_sessions_run_on_their_port_threads(
    void** state) {
  spread_t sp;
  cport_service_t* server;
  cport_service_t* client;
  long baseline = cport__mem_live();
  unsigned i;
  int ported = 0;
  (void)state;
  spread_start(&sp, &server, &client, 0, SPREAD_CONNS, 1);
  assert_int_equal(cport_core_run(sp.core), 0);
  assert_true(signal_wait(&sp.done, 1, FIXTURE_TIMEOUT_MS));
  assert_int_equal(cport_core_post(sp.core, 0, spread_stop_job, server), 0);
  assert_true(signal_wait(&sp.done, 2, FIXTURE_TIMEOUT_MS));
  assert_int_equal(cport_core_post(sp.core, 1, spread_stop_job, client), 0);
  assert_true(signal_wait(&sp.done, 3, FIXTURE_TIMEOUT_MS));
  assert_int_equal(cport_core_stop(sp.core), 0);
  assert_int_equal(cport_core_join(sp.core), 0);
  for (i = 0; i < SPREAD_PORTS; i++) ported += atomic_load(&sp.per_port[i]) > 0;
  assert_int_equal(ported, SPREAD_PORTS);
  assert_int_equal(atomic_load(&sp.disconnected), SPREAD_CONNS);
  assert_int_equal(atomic_load(&sp.wrong_thread), 0);
  cport_service_destroy(client);
  cport_service_destroy(server);
  cport_core_destroy(sp.core);
  signal_destroy(&sp.done);
  assert_int_equal(cport__mem_live(), baseline);
}

static void test_listener_spread_bind_in_use_returns_eaddrinuse(void** state) {
  spread_t sp;
  cport_service_t* server;
  cport_service_t* client;
  cport_service_t* second[2];
  cport_service_opts_t o;
  cport_addr_t addr;
  int i;
  (void)state;
  spread_start(&sp, &server, &client, 0, 1, 1);
  assert_int_equal(cport_service_local_addr(server, &addr), 0);
  /* Neither a spreading nor a one-port server may share the port: cport's
   * own listening socket has SO_REUSEADDR only (Unix), never SO_REUSEPORT. */
  for (i = 0; i < 2; i++) {
    cport_service_opts_init(&o);
    o.spread = i;
    assert_int_equal(cport_service_create(&second[i], sp.core,
                                          CPORT_SERVICE_SERVER, &addr, &o),
                     0);
    assert_int_equal(cport_service_start(second[i]), UV_EADDRINUSE);
    cport_service_destroy(second[i]);
  }
  /* And the other way round: a one-port server first, a spreading one
   * second. */
  cport_service_opts_init(&o);
  o.spread = 0;
  assert_int_equal(cport_addr_parse(&addr, "127.0.0.1", 0), 0);
  assert_int_equal(cport_service_create(&second[0], sp.core,
                                        CPORT_SERVICE_SERVER, &addr, &o),
                   0);
  assert_int_equal(cport_service_start(second[0]), 0);
  assert_int_equal(cport_service_local_addr(second[0], &addr), 0);
  cport_service_opts_init(&o);
  assert_int_equal(cport_service_create(&second[1], sp.core,
                                        CPORT_SERVICE_SERVER, &addr, &o),
                   0);
  assert_int_equal(cport_service_start(second[1]), UV_EADDRINUSE);
  cport_service_destroy(second[1]);
  cport_service_destroy(second[0]);
  cport_service_destroy(client);
  cport_service_destroy(server);
  cport_core_destroy(sp.core);
  signal_destroy(&sp.done);
}


static void test_listener_spread_destroy_without_stop_frees_every_port(
    void** state) {
  spread_t sp;
  cport_service_t* server;
  cport_service_t* client;
  long baseline = cport__mem_live();
  int i;
  (void)state;
  spread_start(&sp, &server, &client, 0, SPREAD_CONNS, 1);
  assert_true(spread_drive(&sp, &sp.received, 4 * SPREAD_CONNS));
  /* No stop: every port's sessions are closed at once, each reports once,
   * and the parts go with their last close callback. */
  cport_service_destroy(server);
  assert_true(spread_drive(&sp, &sp.disconnected, SPREAD_CONNS));
  for (i = 0; i < 10; i++) {
    unsigned k;
    for (k = 0; k < SPREAD_PORTS; k++) cport_core_dispatch(sp.core, k, 1);
  }
  assert_int_equal(atomic_load(&sp.disconnected), SPREAD_CONNS);
  cport_service_destroy(client);
  cport_core_destroy(sp.core);
  signal_destroy(&sp.done);
  assert_int_equal(cport__mem_live(), baseline);
}


static void test_listener_spread_counts_max_sessions_over_all_ports(
    void** state) {
  spread_t sp;
  cport_service_t* server;
  cport_service_t* client;
  cport_service_stats_t st;
  uint64_t deadline;
  (void)state;
  spread_start(&sp, &server, &client, 5, 8, 1);
  /* Sessions on every port count against one limit: 5 served, 3 refused. */
  deadline = uv_hrtime() + (uint64_t)FIXTURE_TIMEOUT_MS * 1000000u;
  do {
    unsigned i;
    for (i = 0; i < SPREAD_PORTS; i++) cport_core_dispatch(sp.core, i, 1);
    assert_int_equal(cport_service_stats(server, &st), 0);
  } while ((st.connected < 5 || st.rejected < 3) && uv_hrtime() < deadline);
  assert_int_equal(st.connected, 5);
  assert_int_equal(st.rejected, 3);
  assert_int_equal(atomic_load(&sp.connected), 5);
  cport_service_destroy(client);
  cport_service_destroy(server);
  cport_core_destroy(sp.core);
  signal_destroy(&sp.done);
}

int main(void) {
  const struct CMUnitTest tests[] = {
#define T FIXTURE_TEST
      T(test_listener_max_sessions_rejects_and_keeps_serving),
      T(test_listener_bind_in_use_returns_eaddrinuse),
      T(test_listener_bind_to_foreign_address_fails),
      T(test_listener_ipv6_loopback),
      T(test_listener_local_addr_errors),
      T(test_listener_rejects_while_out_of_memory),
      T(test_listener_spreads_connections_round_robin),
      T(test_listener_spread_sessions_run_on_their_port_threads),
      T(test_listener_spread_counts_max_sessions_over_all_ports),
      T(test_listener_spread_bind_in_use_returns_eaddrinuse),
      T(test_listener_spread_destroy_without_stop_frees_every_port),
#undef T
  };
  return cmocka_run_group_tests_name("listener", tests, NULL, NULL);
}
