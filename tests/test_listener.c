/* The listener, seen through a server service: binding, bind errors,
 * max_sessions, spreading connections over the loops of a core, and running
 * out of file descriptors (in a child process with a low RLIMIT_NOFILE). */
#include "fixture.h"

#include <inttypes.h>
#include <string.h>

#ifndef _WIN32
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>
#endif

#include "common.h" /* cport__mem_fail_after, cport__mem_live, sockets */


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
  /* Start may be tried again; the loop is still taken. */
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


/* Another socket of the same user must not take a running server's address
 * and port, even with SO_REUSEADDR: on Windows that option lets a bind share
 * any port that was not bound with SO_EXCLUSIVEADDRUSE, and the newcomer
 * then gets some of the connections. Unix refuses it for a listening
 * socket already. */
static void test_listener_port_is_not_shared_with_reuseaddr(void** state) {
  fixture_t* fx = *state;
  uv_os_sock_t s;
  int on = 1;
  int rc;
  fixture_start_server(fx);
  s = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
  assert_true(s != (uv_os_sock_t)-1);
  assert_int_equal(setsockopt(s, SOL_SOCKET, SO_REUSEADDR, (const char*)&on,
                              (int)sizeof(on)),
                   0);
  rc = bind(s, cport_addr_sockaddr(&fx->server_addr),
            (int)sizeof(struct sockaddr_in));
  cport__socket_close(s);
  if (rc == 0)
    fail_msg("a second socket with SO_REUSEADDR bound the server's port %d",
             cport_addr_port(&fx->server_addr));
#ifdef _WIN32
  {
    /* Wine refuses that bind with or without the option (Linux decides
     * underneath), so the option itself is checked too, on a socket from
     * the one function that makes the listener's sockets. */
    struct sockaddr_in any;
    uv_os_sock_t l;
    BOOL exclusive = FALSE;
    int len = (int)sizeof(exclusive);
    assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &any), 0);
    assert_int_equal(cport__socket_listen((const struct sockaddr*)&any, 1, 0, &l),
                     0);
    rc =
        getsockopt(l, SOL_SOCKET, SO_EXCLUSIVEADDRUSE, (char*)&exclusive, &len);
    cport__socket_close(l);
    assert_int_equal(rc, 0);
    assert_true(exclusive);
  }
#endif
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


/* ---- spreading connections over the loops ---- */

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
  /* In turn over all four loops, the listener's own included. */
  for (i = 0; i < SPREAD_PORTS; i++)
    assert_int_equal(atomic_load(&sp.per_port[i]), SPREAD_CONNS / SPREAD_PORTS);
  assert_int_equal(cport_service_stats(server, &st), 0);
  assert_int_equal(st.connected, SPREAD_CONNS);
  assert_int_equal(st.active, SPREAD_CONNS);
  assert_int_equal(st.peak, SPREAD_CONNS);
  assert_int_equal(st.bytes_in, 4 * SPREAD_CONNS);
  assert_int_equal(cport_service_session_count(server), SPREAD_CONNS);
  /* A stop reaches every loop, and reports once all have stopped. */
  assert_int_equal(cport_service_stop(server, 5000, spread_stopped), 0);
  assert_true(spread_drive(&sp, &sp.stopped, 1));
  assert_int_equal(atomic_load(&sp.disconnected), SPREAD_CONNS);
  assert_int_equal(cport_service_session_count(server), 0);
  spread_destroy(&sp, server, client);
  assert_int_equal(atomic_load(&sp.wrong_thread), 0);
  assert_int_equal(cport__mem_live(), baseline);
}

/* The same with one thread per loop: each session's callbacks run on its
 * own loop's thread (and ThreadSanitizer watches the hand-offs). */
static void test_listener_spread_sessions_run_on_their_loop_threads(
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
  spread_stop_running(&sp, server, client);
  for (i = 0; i < SPREAD_PORTS; i++) ported += atomic_load(&sp.per_port[i]) > 0;
  assert_int_equal(ported, SPREAD_PORTS);
  assert_int_equal(atomic_load(&sp.disconnected), SPREAD_CONNS);
  assert_int_equal(atomic_load(&sp.wrong_thread), 0);
  spread_destroy(&sp, server, client);
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
  /* Neither a spreading nor a one-loop server may share the loop: cport's
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
  /* And the other way round: a one-loop server first, a spreading one
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
  spread_destroy(&sp, server, client);
}


static void test_listener_spread_destroy_without_stop_frees_every_loop(
    void** state) {
  spread_t sp;
  cport_service_t* server;
  cport_service_t* client;
  long baseline = cport__mem_live();
  int i;
  (void)state;
  spread_start(&sp, &server, &client, 0, SPREAD_CONNS, 1);
  assert_true(spread_drive(&sp, &sp.received, 4 * SPREAD_CONNS));
  /* No stop: every loop's sessions are closed at once, each reports once,
   * and the parts go with their last close callback. */
  cport_service_destroy(server);
  assert_true(spread_drive(&sp, &sp.disconnected, SPREAD_CONNS));
  for (i = 0; i < 10; i++) {
    unsigned k;
    for (k = 0; k < SPREAD_PORTS; k++) cport_core_dispatch(sp.core, k, 1);
  }
  assert_int_equal(atomic_load(&sp.disconnected), SPREAD_CONNS);
  spread_destroy(&sp, NULL, client);
  assert_int_equal(cport__mem_live(), baseline);
}


static void test_listener_spread_counts_max_sessions_over_all_loops(
    void** state) {
  spread_t sp;
  cport_service_t* server;
  cport_service_t* client;
  cport_service_stats_t st;
  uint64_t deadline;
  (void)state;
  spread_start(&sp, &server, &client, 5, 8, 1);
  /* Sessions on every loop count against one limit: 5 served, 3 refused. */
  deadline = uv_hrtime() + (uint64_t)FIXTURE_TIMEOUT_MS * 1000000u;
  do {
    unsigned i;
    for (i = 0; i < SPREAD_PORTS; i++) cport_core_dispatch(sp.core, i, 1);
    assert_int_equal(cport_service_stats(server, &st), 0);
  } while ((st.connected < 5 || st.rejected < 3) && uv_hrtime() < deadline);
  assert_int_equal(st.connected, 5);
  assert_int_equal(st.rejected, 3);
  assert_int_equal(atomic_load(&sp.connected), 5);
  spread_destroy(&sp, server, client);
}


/* A spreading server at max_sessions must serve exactly max_sessions. A
 * connection on its way to a part is counted once: by the listener while
 * it travels, by its session once adopted. Waves of exactly max_sessions
 * peers connect at once, so the listener accepts the last of each wave
 * while the parts' threads adopt the ones before it; a connection counted
 * twice for a moment refuses that last one. */
#define WAVE_PORTS 3
#define WAVE_SIZE 20
#define WAVE_ROUNDS 200

typedef struct wave_s {
  cport_core_t* core; /* the server's, run by its own threads */
  cport_service_t* server;
  cport_service_t* client; /* the peers, on the fixture's loop */
  atomic_int server_connected;
  atomic_int server_disconnected;
  int client_connected; /* the fixture's thread only */
  int client_disconnected;
  int round;
  signal_t done; /* barrier jobs and on_stopped */
} wave_t;


static void wave_server_connected(cport_session_t* s) {
  wave_t* w = cport_service_get_data(cport_session_service(s));
  atomic_fetch_add(&w->server_connected, 1);
}


static void wave_server_disconnected(cport_session_t* s,
                                     int code,
                                     const char* cause) {
  wave_t* w = cport_service_get_data(cport_session_service(s));
  (void)code;
  (void)cause;
  atomic_fetch_add(&w->server_disconnected, 1);
}


static void wave_client_connected(cport_session_t* s) {
  wave_t* w = cport_service_get_data(cport_session_service(s));
  w->client_connected++;
}


static void wave_client_disconnected(cport_session_t* s,
                                     int code,
                                     const char* cause) {
  wave_t* w = cport_service_get_data(cport_session_service(s));
  (void)code;
  (void)cause;
  w->client_disconnected++;
}


static void wave_stopped(cport_service_t* svc) {
  wave_t* w = cport_service_get_data(svc);
  signal_raise(&w->done);
}


static void wave_stop_job(void* arg) {
  wave_t* w = arg;
  assert_int_equal(cport_service_stop(w->server, 5000, wave_stopped), 0);
}


static void wave_barrier_job(void* arg) {
  wave_t* w = arg;
  signal_raise(&w->done);
}


static int wave_disconnect(cport_session_t* s, void* arg) {
  (void)arg;
  (void)cport_session_disconnect(s, NULL);
  return 0;
}


/* Every peer of the round is connected, and the server has served or
 * refused each. */
static int pred_wave_settled(void* arg) {
  wave_t* w = arg;
  cport_service_stats_t st;
  int target = w->round * WAVE_SIZE;
  assert_int_equal(cport_service_stats(w->server, &st), 0);
  return w->client_connected >= target &&
         atomic_load(&w->server_connected) + (int)st.rejected >= target;
}


static int pred_wave_gone(void* arg) {
  wave_t* w = arg;
  int target = w->round * WAVE_SIZE;
  return w->client_disconnected >= target &&
         atomic_load(&w->server_disconnected) >= target;
}


static int pred_wave_refused_one(void* arg) {
  wave_t* w = arg;
  cport_service_stats_t st;
  assert_int_equal(cport_service_stats(w->server, &st), 0);
  return st.rejected >= 1 &&
         w->client_disconnected >= (WAVE_ROUNDS - 1) * WAVE_SIZE + 1;
}


static void test_listener_spread_max_sessions_admits_full_waves(void** state) {
  fixture_t* fx = *state;
  wave_t w;
  cport_core_opts_t copts;
  cport_service_opts_t o;
  cport_service_stats_t st;
  cport_addr_t addr;
  int refused_round = 0;
  int before;
  memset(&w, 0, sizeof(w));
  signal_init(&w.done);
  cport_core_opts_init(&copts);
  copts.loops = WAVE_PORTS;
  assert_int_equal(cport_core_create(&w.core, &copts), 0);
  assert_int_equal(cport_addr_parse(&addr, "127.0.0.1", 0), 0);
  cport_service_opts_init(&o);
  o.cbs.on_connected = wave_server_connected;
  o.cbs.on_disconnected = wave_server_disconnected;
  o.max_sessions = WAVE_SIZE;
  o.data = &w;
  assert_int_equal(
      cport_service_create(&w.server, w.core, CPORT_SERVICE_SERVER, &addr, &o),
      0);
  assert_int_equal(cport_service_start(w.server), 0);
  assert_int_equal(cport_service_local_addr(w.server, &addr), 0);
  cport_service_opts_init(&o);
  o.cbs.on_connected = wave_client_connected;
  o.cbs.on_disconnected = wave_client_disconnected;
  o.connect_count = WAVE_SIZE;
  o.data = &w;
  assert_int_equal(cport_service_create(&w.client, fx->core,
                                        CPORT_SERVICE_CLIENT, &addr, &o),
                   0);
  /* One thread per loop, so that hand-offs run while the listener
   * accepts. */
  assert_int_equal(cport_core_run(w.core), 0);

  for (w.round = 1; w.round <= WAVE_ROUNDS; w.round++) {
    int barrier = signal_count(&w.done);
    unsigned i;
    /* The whole wave at once, into the listener's backlog together. */
    if (w.round == 1)
      assert_int_equal(cport_service_start(w.client), 0);
    else
      assert_int_equal(cport_service_connect(w.client, WAVE_SIZE), 0);
    assert_true(
        fixture_run_until(fx, pred_wave_settled, &w, FIXTURE_TIMEOUT_MS));
    if (atomic_load(&w.server_connected) != w.round * WAVE_SIZE) {
      refused_round = w.round;
      break;
    }
    if (w.round == WAVE_ROUNDS)
      break;
    assert_int_equal(cport_service_foreach(w.client, wave_disconnect, NULL), 0);
    assert_true(fixture_run_until(fx, pred_wave_gone, &w, FIXTURE_TIMEOUT_MS));
    /* A job runs after the close callback it queued behind: every loop has
     * let go of the wave's sessions before the next wave comes. */
    for (i = 0; i < WAVE_PORTS; i++)
      assert_int_equal(cport_core_post(w.core, i, wave_barrier_job, &w), 0);
    assert_true(signal_wait(&w.done, barrier + WAVE_PORTS, FIXTURE_TIMEOUT_MS));
  }

  if (refused_round == 0) {
    /* Full now: one more is refused, and the sessions stay as they are. */
    assert_int_equal(cport_service_connect(w.client, 1), 0);
    assert_true(
        fixture_run_until(fx, pred_wave_refused_one, &w, FIXTURE_TIMEOUT_MS));
  }
  assert_int_equal(cport_service_stats(w.server, &st), 0);

  before = signal_count(&w.done);
  assert_int_equal(cport_core_post(w.core, 0, wave_stop_job, &w), 0);
  assert_true(signal_wait(&w.done, before + 1, FIXTURE_TIMEOUT_MS));
  assert_int_equal(cport_core_stop(w.core), 0);
  assert_int_equal(cport_core_join(w.core), 0);
  cport_service_destroy(w.client);
  cport_service_destroy(w.server);
  cport_core_destroy(w.core);
  signal_destroy(&w.done);

  if (refused_round != 0)
    fail_msg("wave %d of %d peers: %" PRIu64 " refused below max_sessions",
             refused_round, WAVE_SIZE, st.rejected);
  assert_int_equal(st.rejected, 1);
  assert_int_equal(st.connected, WAVE_ROUNDS * WAVE_SIZE);
  assert_int_equal(atomic_load(&w.server_connected), WAVE_ROUNDS * WAVE_SIZE);
}


/* ---- running out of file descriptors ----
 *
 * A child process of this executable (--child-emfile PORTS) serves echo
 * under a low RLIMIT_NOFILE, so that its sessions use up its descriptors
 * and accept() fails with EMFILE; the test, in this process, is its
 * peers. On EMFILE the listener stops polling for a while, on a core of
 * one loop as of several. It must neither spin (the child's CPU time stays
 * far below the time it spent out of descriptors) nor stop for good (a
 * newcomer is served once descriptors are free again), and the session
 * that already exists must be served throughout. */

#ifndef _WIN32

/* The child's descriptor limit: stdio, each loop and a few dozen
 * sessions. */
#define EMFILE_CHILD_NOFILE 48
/* Peers the test opens at once: more than the child can hold. */
#define EMFILE_EXTRA 80
/* How long the test keeps the child out of descriptors. */
#define EMFILE_PHASE_MS 1000
/* Pace of peer A's echoes during that time, so that the child's CPU time
 * measures its listener rather than our traffic. */
#define EMFILE_ECHO_EVERY_MS 20
/* The child's CPU time over its whole life must stay below this. A
 * listener that polled a socket it cannot accept from would burn a core for
 * the whole phase (EMFILE_PHASE_MS and more), and at least a third of one on
 * a machine busy with other tests; a listener that backs off uses a few ms
 * (under 15 with TSan). */
#define EMFILE_CPU_MAX_MS 300
/* Each wait in the child gives up after this long (exit 3), so that it
 * never outlives a crashed test for long. */
#define EMFILE_CHILD_LIMIT_MS 30000
/* The test's bound for one echo, and for getting a newcomer served. */
#define EMFILE_ECHO_WAIT_MS 2000
#define EMFILE_RECOVER_MS 5000


/* -- the child -- */

typedef struct emfile_child_s {
  cport_core_t* core;
  cport_service_t* svc;
  signal_t stopped;
} emfile_child_t;


static void emfile_child_fail(const char* what, int rc) {
  fprintf(stderr, "child-emfile: %s: %s\n", what, cport_strerror(rc));
  _exit(2);
}


static size_t emfile_child_recv(cport_session_t* s,
                                const uint8_t* data,
                                size_t len) {
  return cport_session_send(s, data, len) == 0 ? len : 0;
}


static void emfile_child_stopped(cport_service_t* svc) {
  emfile_child_t* c = cport_service_get_data(svc);
  signal_raise(&c->stopped);
  (void)cport_core_stop(c->core);
}


static void emfile_child_stop_job(void* arg) {
  emfile_child_t* c = arg;
  int rc = cport_service_stop(c->svc, 1000, emfile_child_stopped);
  if (rc != 0)
    emfile_child_fail("cport_service_stop", rc);
}


/* Block until stdin ends (the test closed its end); 0 after `timeout_ms`. */
static int emfile_child_wait_stdin_eof(int timeout_ms) {
  uint64_t deadline = uv_hrtime() + (uint64_t)timeout_ms * 1000000u;
  char buf[256];
  for (;;) {
    struct pollfd pfd;
    uint64_t now = uv_hrtime();
    ssize_t n;
    int rc;
    if (now >= deadline)
      return 0;
    pfd.fd = 0;
    pfd.events = POLLIN;
    pfd.revents = 0;
    rc = poll(&pfd, 1, (int)((deadline - now) / 1000000u) + 1);
    if (rc <= 0)
      continue; /* EINTR or the deadline: checked above */
    n = read(0, buf, sizeof(buf));
    if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
      return 1; /* EOF, or the test is gone */
  }
}


static long emfile_child_cpu_ms(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0)
    return -1;
  return (long)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000 +
         (long)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
}


/* --child-emfile PORTS: an echo server on a core of PORTS loops, run by
 * cport_core_run, under a low descriptor limit. Prints "port N", serves
 * until stdin ends, stops, prints its counters and CPU time, exits 0. */
static int child_emfile_main(const char* ports_text) {
  static emfile_child_t c;
  cport_core_opts_t copts;
  cport_service_opts_t o;
  cport_service_stats_t st;
  cport_addr_t addr;
  struct rlimit rl;
  int ports = atoi(ports_text);
  int rc;
  if (ports < 1 || ports > 2)
    emfile_child_fail("PORTS must be 1 or 2", UV_EINVAL);
  /* Before the core exists, so that its loops' descriptors are taken under
   * the limit and only the sessions run into it. */
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    emfile_child_fail("getrlimit", -errno);
  if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < EMFILE_CHILD_NOFILE)
    emfile_child_fail("hard RLIMIT_NOFILE below the child's limit", UV_EINVAL);
  rl.rlim_cur = EMFILE_CHILD_NOFILE;
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
    emfile_child_fail("setrlimit", -errno);
  signal_init(&c.stopped);
  cport_core_opts_init(&copts);
  copts.loops = (unsigned)ports;
  if ((rc = cport_core_create(&c.core, &copts)) != 0)
    emfile_child_fail("cport_core_create", rc);
  if ((rc = cport_addr_parse(&addr, "127.0.0.1", 0)) != 0)
    emfile_child_fail("cport_addr_parse", rc);
  cport_service_opts_init(&o);
  o.cbs.on_recv = emfile_child_recv;
  o.data = &c;
  if ((rc = cport_service_create(&c.svc, c.core, CPORT_SERVICE_SERVER, &addr,
                                 &o)) != 0)
    emfile_child_fail("cport_service_create", rc);
  if ((rc = cport_service_start(c.svc)) != 0)
    emfile_child_fail("cport_service_start", rc);
  if ((rc = cport_service_local_addr(c.svc, &addr)) != 0)
    emfile_child_fail("cport_service_local_addr", rc);
  printf("port %d\n", cport_addr_port(&addr));
  fflush(stdout);
  if ((rc = cport_core_run(c.core)) != 0)
    emfile_child_fail("cport_core_run", rc);
  if (!emfile_child_wait_stdin_eof(EMFILE_CHILD_LIMIT_MS)) {
    fprintf(stderr, "child-emfile: stdin did not end within %d ms\n",
            EMFILE_CHILD_LIMIT_MS);
    _exit(3);
  }
  if ((rc = cport_core_post(c.core, 0, emfile_child_stop_job, &c)) != 0)
    emfile_child_fail("cport_core_post", rc);
  if (!signal_wait(&c.stopped, 1, EMFILE_CHILD_LIMIT_MS)) {
    fprintf(stderr, "child-emfile: the stop did not end within %d ms\n",
            EMFILE_CHILD_LIMIT_MS);
    _exit(3);
  }
  (void)cport_core_join(c.core);
  (void)cport_service_stats(c.svc, &st);
  printf("accept_errors=%" PRIu64 " connected=%" PRIu64
         " cpu_ms=%ld peak=%" PRIu64 "\n",
         st.accept_errors, st.connected, emfile_child_cpu_ms(), st.peak);
  fflush(stdout);
  cport_service_destroy(c.svc);
  cport_core_destroy(c.core);
  signal_destroy(&c.stopped);
  return 0;
}


/* -- the test: raw libuv peers and the child's pipes on the fixture's loop.
 * Nothing here fails the test before emfile_cleanup has killed the child
 * and closed every handle, so the fixture's teardown still finds a clean
 * loop. -- */

typedef struct epeer_s {
  uv_tcp_t tcp;
  uv_connect_t connect;
  int connected;
  int connect_error;
  int eof;
  int error;
  int closed;
  size_t received;
} epeer_t;

typedef struct emfile_s {
  fixture_t* fx;
  uv_process_t proc;
  uv_pipe_t in;  /* the child's stdin: closing it asks the child to stop */
  uv_pipe_t out; /* the child's stdout */
  int handles;   /* proc, in and out, once initialised */
  int closed;    /* their close callbacks */
  int exited;
  int64_t status;
  int term_signal;
  bytes_t text; /* what the child printed */
  int out_ended;
  epeer_t* a;
  epeer_t* b;
  epeer_t* extra[EMFILE_EXTRA];
} emfile_t;


static void emfile_handle_closed(uv_handle_t* h) {
  emfile_t* e = h->data;
  e->closed++;
}


static void emfile_exit_cb(uv_process_t* proc, int64_t status, int sig) {
  emfile_t* e = proc->data;
  e->exited = 1;
  e->status = status;
  e->term_signal = sig;
  uv_close((uv_handle_t*)proc, emfile_handle_closed);
}


static void emfile_alloc_cb(uv_handle_t* h, size_t suggested, uv_buf_t* buf) {
  static char chunk[4096];
  (void)h;
  (void)suggested;
  buf->base = chunk;
  buf->len = sizeof(chunk);
}


static void emfile_out_read_cb(uv_stream_t* stream,
                               ssize_t nread,
                               const uv_buf_t* buf) {
  emfile_t* e = stream->data;
  if (nread > 0)
    bytes_append(&e->text, buf->base, (size_t)nread);
  else if (nread < 0)
    e->out_ended = 1;
}


static void epeer_closed_cb(uv_handle_t* h) {
  epeer_t* p = h->data;
  p->closed = 1;
}


static void epeer_read_cb(uv_stream_t* stream,
                          ssize_t nread,
                          const uv_buf_t* buf) {
  epeer_t* p = stream->data;
  (void)buf;
  if (nread > 0)
    p->received += (size_t)nread;
  else if (nread == UV_EOF)
    p->eof = 1;
  else if (nread < 0)
    p->error = (int)nread;
}


static void epeer_connect_cb(uv_connect_t* req, int status) {
  epeer_t* p = req->handle->data;
  if (status != 0) {
    p->connect_error = status;
    return;
  }
  p->connected = 1;
  if (uv_read_start((uv_stream_t*)&p->tcp, emfile_alloc_cb, epeer_read_cb) != 0)
    p->error = UV_EIO;
}


/* Start connecting a peer, without waiting; NULL only without memory. */
static epeer_t* epeer_start(emfile_t* e, const cport_addr_t* addr) {
  epeer_t* p = calloc(1, sizeof(*p));
  int rc;
  if (p == NULL)
    return NULL;
  /* AF_UNSPEC: no socket yet, so this cannot fail. */
  (void)uv_tcp_init(e->fx->loop, &p->tcp);
  p->tcp.data = p;
  rc = uv_tcp_connect(&p->connect, &p->tcp, cport_addr_sockaddr(addr),
                      epeer_connect_cb);
  if (rc != 0)
    p->connect_error = rc;
  return p;
}


static void epeer_close(epeer_t* p) {
  if (p != NULL && !uv_is_closing((uv_handle_t*)&p->tcp))
    uv_close((uv_handle_t*)&p->tcp, epeer_closed_cb);
}


static int epeer_gone(const epeer_t* p) {
  return p->eof || p->error != 0 || p->connect_error != 0;
}


static int pred_epeer_settled(void* arg) {
  epeer_t* p = arg;
  return p->connected || epeer_gone(p);
}


typedef struct epeer_write_s {
  uv_write_t req;
  char byte;
} epeer_write_t;


static void epeer_write_cb(uv_write_t* req, int status) {
  (void)status; /* a failed write shows as a missing echo */
  free(req);
}


typedef struct echo_wait_s {
  epeer_t* p;
  size_t target;
} echo_wait_t;


static int pred_echo(void* arg) {
  echo_wait_t* w = arg;
  return w->p->received >= w->target || epeer_gone(w->p);
}


/* Send one byte and wait up to `timeout_ms` for it to come back. */
static int epeer_echo(emfile_t* e, epeer_t* p, int timeout_ms) {
  epeer_write_t* w = malloc(sizeof(*w));
  echo_wait_t wait = {p, p->received + 1};
  uv_buf_t buf;
  if (w == NULL)
    return 0;
  w->byte = 'e';
  buf = uv_buf_init(&w->byte, 1);
  if (uv_write(&w->req, (uv_stream_t*)&p->tcp, &buf, 1, epeer_write_cb) != 0) {
    free(w);
    return 0;
  }
  return fixture_run_until(e->fx, pred_echo, &wait, timeout_ms) &&
         p->received >= wait.target;
}


static int emfile_lines(const emfile_t* e) {
  int n = 0;
  size_t i;
  for (i = 0; i < e->text.len; i++) n += e->text.data[i] == '\n';
  return n;
}


static int pred_port_line(void* arg) {
  emfile_t* e = arg;
  return emfile_lines(e) >= 1 || e->exited;
}


static int pred_child_done(void* arg) {
  emfile_t* e = arg;
  return e->exited && (emfile_lines(e) >= 2 || e->out_ended);
}


static int pred_extras_settled(void* arg) {
  emfile_t* e = arg;
  int i;
  for (i = 0; i < EMFILE_EXTRA; i++)
    if (e->extra[i] != NULL && !pred_epeer_settled(e->extra[i]))
      return 0;
  return 1;
}


static int pred_epeer_closed(void* arg) {
  epeer_t* p = arg;
  return p->closed;
}


static int pred_extras_closed(void* arg) {
  emfile_t* e = arg;
  int i;
  for (i = 0; i < EMFILE_EXTRA; i++)
    if (e->extra[i] != NULL && !e->extra[i]->closed)
      return 0;
  return 1;
}


static int pred_all_closed(void* arg) {
  emfile_t* e = arg;
  int i;
  if (e->closed < e->handles)
    return 0;
  if ((e->a != NULL && !e->a->closed) || (e->b != NULL && !e->b->closed))
    return 0;
  for (i = 0; i < EMFILE_EXTRA; i++)
    if (e->extra[i] != NULL && !e->extra[i]->closed)
      return 0;
  return 1;
}


static void emfile_free_peer(epeer_t** p) {
  free(*p);
  *p = NULL;
}


/* Kill the child if it still runs, close every handle, free the peers.
 * Returns 0 if something did not close in time. */
static int emfile_cleanup(emfile_t* e) {
  int ok;
  int i;
  if (e->handles > 0 && !e->exited)
    (void)uv_process_kill(&e->proc, SIGKILL);
  if (e->handles > 1) {
    if (!uv_is_closing((uv_handle_t*)&e->in))
      uv_close((uv_handle_t*)&e->in, emfile_handle_closed);
    if (!uv_is_closing((uv_handle_t*)&e->out))
      uv_close((uv_handle_t*)&e->out, emfile_handle_closed);
  }
  epeer_close(e->a);
  epeer_close(e->b);
  for (i = 0; i < EMFILE_EXTRA; i++) epeer_close(e->extra[i]);
  ok = fixture_run_until(e->fx, pred_all_closed, e, FIXTURE_TIMEOUT_MS);
  if (!ok)
    return 0; /* leave the memory to a loop that may still use it */
  emfile_free_peer(&e->a);
  emfile_free_peer(&e->b);
  for (i = 0; i < EMFILE_EXTRA; i++) emfile_free_peer(&e->extra[i]);
  bytes_free(&e->text);
  return 1;
}


/* Fail the test, but stop the child and close every handle first. */
#define EMFILE_REQUIRE(e, cond, ...)                   \
  do {                                                 \
    if (!(cond)) {                                     \
      if (!emfile_cleanup(e))                          \
        print_error("(and a handle did not close)\n"); \
      print_error(__VA_ARGS__);                        \
      print_error("\n");                               \
      fail();                                          \
    }                                                  \
  } while (0)


static void emfile_spawn(emfile_t* e, int ports) {
  static char exe[4096];
  size_t exe_len = sizeof(exe);
  char ports_text[8];
  char* args[4];
  uv_process_options_t po;
  uv_stdio_container_t stdio[3];
  int rc;
  assert_int_equal(uv_exepath(exe, &exe_len), 0);
  snprintf(ports_text, sizeof(ports_text), "%d", ports);
  args[0] = exe;
  args[1] = "--child-emfile";
  args[2] = ports_text;
  args[3] = NULL;
  assert_int_equal(uv_pipe_init(e->fx->loop, &e->in, 0), 0);
  e->in.data = e;
  assert_int_equal(uv_pipe_init(e->fx->loop, &e->out, 0), 0);
  e->out.data = e;
  memset(&po, 0, sizeof(po));
  memset(stdio, 0, sizeof(stdio));
  stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
  stdio[0].data.stream = (uv_stream_t*)&e->in;
  stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[1].data.stream = (uv_stream_t*)&e->out;
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = 2;
  po.file = exe;
  po.args = args;
  po.exit_cb = emfile_exit_cb;
  po.stdio = stdio;
  po.stdio_count = 3;
  e->proc.data = e;
  rc = uv_spawn(e->fx->loop, &e->proc, &po);
  e->handles = 3;
  if (rc != 0) {
    /* The handle was initialised and must be closed all the same. */
    e->exited = 1;
    uv_close((uv_handle_t*)&e->proc, emfile_handle_closed);
  }
  EMFILE_REQUIRE(e, rc == 0, "uv_spawn: %s", uv_strerror(rc));
  rc =
      uv_read_start((uv_stream_t*)&e->out, emfile_alloc_cb, emfile_out_read_cb);
  EMFILE_REQUIRE(e, rc == 0, "reading the child's stdout: %s", uv_strerror(rc));
}


static void emfile_run(fixture_t* fx, int ports) {
  emfile_t* e = calloc(1, sizeof(*e));
  cport_addr_t addr;
  uint64_t t0;
  uint64_t t1;
  uint64_t accept_errors = 0;
  uint64_t connected = 0;
  uint64_t peak = 0;
  long cpu_ms = -1;
  long phase_ms;
  long recover_ms;
  int port = 0;
  int rounds = 0;
  int attempts = 0;
  int served = 0;
  int up = 0;
  int dropped = 0;
  int failed = 0;
  int i;
  assert_non_null(e);
  e->fx = fx;
  emfile_spawn(e, ports);
  fixture_run_until(fx, pred_port_line, e, FIXTURE_TIMEOUT_MS);
  EMFILE_REQUIRE(e, emfile_lines(e) >= 1,
                 "the child printed no port (exited %d, status %d, signal %d)",
                 e->exited, (int)e->status, e->term_signal);
  bytes_append(&e->text, "", 1); /* a C string for sscanf */
  e->text.len--;
  EMFILE_REQUIRE(e, sscanf((char*)e->text.data, "port %d", &port) == 1,
                 "the child printed no port");
  assert_int_equal(cport_addr_parse(&addr, "127.0.0.1", port), 0);

  /* 1. Peer A is a session before the flood. */
  e->a = epeer_start(e, &addr);
  EMFILE_REQUIRE(e, e->a != NULL, "out of memory");
  fixture_run_until(fx, pred_epeer_settled, e->a, FIXTURE_TIMEOUT_MS);
  EMFILE_REQUIRE(e, e->a->connected && !epeer_gone(e->a),
                 "peer A did not connect: %s",
                 uv_strerror(e->a->connect_error));
  EMFILE_REQUIRE(e, epeer_echo(e, e->a, EMFILE_ECHO_WAIT_MS),
                 "no echo to peer A before the flood");

  /* 2. More peers than the child has descriptors for, connecting at once;
   * some may not get through, which is no failure. */
  t0 = uv_hrtime();
  for (i = 0; i < EMFILE_EXTRA; i++) {
    e->extra[i] = epeer_start(e, &addr);
    EMFILE_REQUIRE(e, e->extra[i] != NULL, "out of memory");
  }
  fixture_run_until(fx, pred_extras_settled, e, EMFILE_PHASE_MS);

  /* 3. Out of descriptors, peer A is still served. */
  while (uv_hrtime() - t0 < (uint64_t)EMFILE_PHASE_MS * 1000000u) {
    uint64_t next = uv_hrtime() + (uint64_t)EMFILE_ECHO_EVERY_MS * 1000000u;
    EMFILE_REQUIRE(e, epeer_echo(e, e->a, EMFILE_ECHO_WAIT_MS),
                   "peer A got no echo within %d ms while the child was out "
                   "of descriptors (round %d)",
                   EMFILE_ECHO_WAIT_MS, rounds);
    rounds++;
    while (uv_hrtime() < next) cport_core_dispatch(fx->core, 0, 1);
  }
  t1 = uv_hrtime();
  phase_ms = (long)((t1 - t0) / 1000000u);
  for (i = 0; i < EMFILE_EXTRA; i++) {
    epeer_t* p = e->extra[i];
    up += p->connected;
    dropped += p->connected && epeer_gone(p);
    failed += p->connect_error != 0;
  }

  /* 4. The flood leaves. */
  for (i = 0; i < EMFILE_EXTRA; i++) epeer_close(e->extra[i]);
  EMFILE_REQUIRE(
      e, fixture_run_until(fx, pred_extras_closed, e, FIXTURE_TIMEOUT_MS),
      "the extra peers did not close within %d ms", FIXTURE_TIMEOUT_MS);

  /* 5. A newcomer is served again. While the child still closes the
   * flood's sessions it may refuse or drop the first tries. */
  t1 = uv_hrtime();
  while (!served && uv_hrtime() - t1 < (uint64_t)EMFILE_RECOVER_MS * 1000000u) {
    attempts++;
    e->b = epeer_start(e, &addr);
    EMFILE_REQUIRE(e, e->b != NULL, "out of memory");
    fixture_run_until(fx, pred_epeer_settled, e->b, EMFILE_ECHO_WAIT_MS);
    if (e->b->connected && !epeer_gone(e->b))
      served = epeer_echo(e, e->b, EMFILE_ECHO_WAIT_MS);
    if (!served) {
      epeer_close(e->b);
      EMFILE_REQUIRE(
          e, fixture_run_until(fx, pred_epeer_closed, e->b, FIXTURE_TIMEOUT_MS),
          "a peer did not close within %d ms", FIXTURE_TIMEOUT_MS);
      emfile_free_peer(&e->b);
    }
  }
  recover_ms = (long)((uv_hrtime() - t1) / 1000000u);
  EMFILE_REQUIRE(e, served,
                 "no new peer was served within %d ms (%d attempts) after "
                 "the flood left: the listener did not accept again",
                 EMFILE_RECOVER_MS, attempts);
  EMFILE_REQUIRE(e, epeer_echo(e, e->a, EMFILE_ECHO_WAIT_MS),
                 "peer A got no echo after the recovery");

  /* 6. Closing its stdin stops the child, which reports. */
  uv_close((uv_handle_t*)&e->in, emfile_handle_closed);
  fixture_run_until(fx, pred_child_done, e, FIXTURE_TIMEOUT_MS);
  EMFILE_REQUIRE(e, e->exited, "the child did not exit within %d ms",
                 FIXTURE_TIMEOUT_MS);
  EMFILE_REQUIRE(e, e->status == 0 && e->term_signal == 0,
                 "the child exited with status %d, signal %d", (int)e->status,
                 e->term_signal);
  bytes_append(&e->text, "", 1);
  e->text.len--;
  {
    const char* line = memchr(e->text.data, '\n', e->text.len);
    EMFILE_REQUIRE(
        e,
        line != NULL && sscanf(line + 1,
                               "accept_errors=%" SCNu64 " connected=%" SCNu64
                               " cpu_ms=%ld peak=%" SCNu64,
                               &accept_errors, &connected, &cpu_ms, &peak) == 4,
        "the child printed no counters: \"%s\"", (char*)e->text.data);
  }
  print_message(
      "%d port(s): out of descriptors for %ld ms (peer A echoed %d times), "
      "child cpu %ld ms; accept_errors %" PRIu64 ", connected %" PRIu64
      ", peak %" PRIu64
      "; extra peers up %d, dropped %d, failed %d; a newcomer served after "
      "%ld ms (%d attempts)\n",
      ports, phase_ms, rounds, cpu_ms, accept_errors, connected, peak, up,
      dropped, failed, recover_ms, attempts);
  assert_true(emfile_cleanup(e));
  free(e);

  /* 7. It did run out of descriptors, ... */
  if (accept_errors < 1)
    fail_msg("the child never failed an accept (peak %" PRIu64
             " sessions): it never ran out of descriptors, so nothing was "
             "tested",
             peak);
  /* Backing off leaves the waiting peers in the backlog. */
  assert_int_equal(dropped, 0);
  assert_true(connected >= 2);
  /* ... and did not spin meanwhile. */
  assert_true(phase_ms >= EMFILE_PHASE_MS);
  if (cpu_ms >= EMFILE_CPU_MAX_MS)
    fail_msg(
        "the child used %ld ms of CPU in %ld ms out of descriptors: "
        "its listener spins",
        cpu_ms, phase_ms);
}


/* ---- a one-loop listener out of descriptors beside a busy loop ----
 *
 * A child process of this executable (--child-accept-spin) runs a core of
 * two loops under a soft RLIMIT_NOFILE of SPIN_NOFILE: a server that does
 * not spread on port 0, and on loop 1 a client service whose sessions the
 * server ends at once and which connects again a millisecond later, so
 * that loop 1's thread keeps opening and closing sockets while loop 0 runs
 * out of descriptors. Whatever trick a listener might play with a reserve
 * descriptor, loop 1's thread can take that descriptor in between; the
 * listener must still pause rather than retry accept() at once. The child
 * measures for SPIN_WINDOW_MS: a timer on port 0 must keep firing, and the
 * failed accepts must stay few. It reports by its exit code (SPIN_EXIT_*);
 * the test kills it if it does not exit in time. */

#define SPIN_NOFILE 64
/* Loop 1's clients: with the server's end of each, more descriptors than
 * the limit leaves. */
#define SPIN_CLIENTS 40
#define SPIN_WINDOW_MS 2000
#define SPIN_TICK_MS 10
/* A quarter of the ticks the window holds: a starved loop gets few or
 * none, a busy machine still gives more. */
#define SPIN_TICKS_MIN 50
/* A listener that pauses LISTENER_BACKOFF_MS (100 ms) after each failure
 * fails some 20 times in the window; one that spins, millions. */
#define SPIN_ACCEPT_ERRORS_MAX 200
/* The child's own bound for its stop, and the test's for the child. */
#define SPIN_CHILD_STOP_MS 10000
#define SPIN_CHILD_WAIT_MS (SPIN_WINDOW_MS + 2 * SPIN_CHILD_STOP_MS)

enum {
  SPIN_EXIT_OK = 0,
  SPIN_EXIT_SPUN = 1,    /* too many failed accepts, or too few ticks */
  SPIN_EXIT_SETUP = 2,   /* a call failed before the window */
  SPIN_EXIT_STOP = 3,    /* the stop did not end in time */
  SPIN_EXIT_UNTESTED = 4 /* it never ran out of descriptors */
};

typedef struct spin_child_s {
  cport_core_t* core;
  cport_service_t* server;
  cport_service_t* client;
  uv_timer_t tick;   /* loop 0, every SPIN_TICK_MS */
  uv_timer_t window; /* loop 1, once after SPIN_WINDOW_MS */
  atomic_int ticks;
  /* Taken when the window ends, on loop 1's thread. */
  int ticks_seen;
  uint64_t accept_errors;
  signal_t events; /* the window's end, then each service's on_stopped */
} spin_child_t;

static spin_child_t spin_child;


static void spin_child_fail(const char* what, int rc) {
  fprintf(stderr, "child-accept-spin: %s: %s\n", what, cport_strerror(rc));
  _exit(SPIN_EXIT_SETUP);
}


static void spin_child_tick_cb(uv_timer_t* timer) {
  (void)timer;
  atomic_fetch_add(&spin_child.ticks, 1);
}


static void spin_child_window_cb(uv_timer_t* timer) {
  cport_service_stats_t st;
  (void)cport_service_stats(spin_child.server, &st);
  spin_child.accept_errors = st.accept_errors;
  spin_child.ticks_seen = atomic_load(&spin_child.ticks);
  uv_close((uv_handle_t*)timer, NULL);
  signal_raise(&spin_child.events);
}


static void spin_child_server_connected(cport_session_t* s) {
  /* The client comes back: its sockets keep opening and closing. */
  (void)cport_session_disconnect(s, NULL);
}


static void spin_child_stopped(cport_service_t* svc) {
  (void)svc;
  signal_raise(&spin_child.events);
}


static void spin_child_stop_server_job(void* arg) {
  (void)arg;
  uv_close((uv_handle_t*)&spin_child.tick, NULL);
  if (cport_service_stop(spin_child.server, 1000, spin_child_stopped) != 0)
    _exit(SPIN_EXIT_STOP);
}


static void spin_child_stop_client_job(void* arg) {
  (void)arg;
  if (cport_service_stop(spin_child.client, 1000, spin_child_stopped) != 0)
    _exit(SPIN_EXIT_STOP);
}


static int child_accept_spin_main(void) {
  spin_child_t* c = &spin_child;
  cport_core_opts_t copts;
  cport_service_opts_t o;
  cport_addr_t addr;
  struct rlimit rl;
  int rc;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    spin_child_fail("getrlimit", -errno);
  rl.rlim_cur = SPIN_NOFILE;
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
    spin_child_fail("setrlimit", -errno);
  signal_init(&c->events);
  cport_core_opts_init(&copts);
  copts.loops = 2;
  if ((rc = cport_core_create(&c->core, &copts)) != 0)
    spin_child_fail("cport_core_create", rc);
  if ((rc = cport_addr_parse(&addr, "127.0.0.1", 0)) != 0)
    spin_child_fail("cport_addr_parse", rc);
  cport_service_opts_init(&o);
  o.cbs.on_connected = spin_child_server_connected;
  o.spread = 0;
  if ((rc = cport_service_create(&c->server, c->core, CPORT_SERVICE_SERVER,
                                 &addr, &o)) != 0)
    spin_child_fail("cport_service_create (server)", rc);
  if ((rc = cport_service_start(c->server)) != 0)
    spin_child_fail("cport_service_start (server)", rc);
  if ((rc = cport_service_local_addr(c->server, &addr)) != 0)
    spin_child_fail("cport_service_local_addr", rc);
  cport_service_opts_init(&o);
  o.loop = 1;
  o.connect_count = SPIN_CLIENTS;
  o.reconnect = CPORT_RECONNECT_FIXED;
  o.reconnect_delay_ms = 1;
  o.reconnect_jitter_pct = 0;
  if ((rc = cport_service_create(&c->client, c->core, CPORT_SERVICE_CLIENT,
                                 &addr, &o)) != 0)
    spin_child_fail("cport_service_create (client)", rc);
  if ((rc = cport_service_start(c->client)) != 0)
    spin_child_fail("cport_service_start (client)", rc);
  if ((rc = uv_timer_init(cport_core_uv_loop(c->core, 0), &c->tick)) != 0 ||
      (rc = uv_timer_start(&c->tick, spin_child_tick_cb, SPIN_TICK_MS,
                           SPIN_TICK_MS)) != 0)
    spin_child_fail("the tick timer", rc);
  if ((rc = uv_timer_init(cport_core_uv_loop(c->core, 1), &c->window)) != 0 ||
      (rc = uv_timer_start(&c->window, spin_child_window_cb, SPIN_WINDOW_MS,
                           0)) != 0)
    spin_child_fail("the window timer", rc);
  if ((rc = cport_core_run(c->core)) != 0)
    spin_child_fail("cport_core_run", rc);
  if (!signal_wait(&c->events, 1, SPIN_WINDOW_MS + SPIN_CHILD_STOP_MS)) {
    fprintf(stderr, "child-accept-spin: port 1 starved too\n");
    _exit(SPIN_EXIT_SPUN);
  }
  fprintf(stderr,
          "child-accept-spin: %d ticks of %d ms and %" PRIu64
          " failed accepts in %d ms\n",
          c->ticks_seen, SPIN_TICK_MS, c->accept_errors, SPIN_WINDOW_MS);
  /* A spinning loop 0 runs no job: no orderly stop then. */
  if (c->ticks_seen < SPIN_TICKS_MIN ||
      c->accept_errors >= SPIN_ACCEPT_ERRORS_MAX)
    _exit(SPIN_EXIT_SPUN);
  if (c->accept_errors == 0)
    _exit(SPIN_EXIT_UNTESTED);
  if (cport_core_post(c->core, 0, spin_child_stop_server_job, NULL) != 0 ||
      cport_core_post(c->core, 1, spin_child_stop_client_job, NULL) != 0 ||
      !signal_wait(&c->events, 3, SPIN_CHILD_STOP_MS))
    _exit(SPIN_EXIT_STOP);
  (void)cport_core_stop(c->core);
  (void)cport_core_join(c->core);
  cport_service_destroy(c->client);
  cport_service_destroy(c->server);
  cport_core_destroy(c->core);
  signal_destroy(&c->events);
  return SPIN_EXIT_OK;
}


/* -- the test: spawn the child, wait for its exit, kill it if it hangs -- */

typedef struct spin_s {
  uv_process_t proc;
  int exited;
  int closed;
  int64_t status;
  int term_signal;
} spin_t;


static void spin_closed_cb(uv_handle_t* h) {
  spin_t* sp = h->data;
  sp->closed = 1;
}


static void spin_exit_cb(uv_process_t* proc, int64_t status, int sig) {
  spin_t* sp = proc->data;
  sp->exited = 1;
  sp->status = status;
  sp->term_signal = sig;
  uv_close((uv_handle_t*)proc, spin_closed_cb);
}


static int pred_spin_exited(void* arg) {
  spin_t* sp = arg;
  return sp->exited;
}


static int pred_spin_closed(void* arg) {
  spin_t* sp = arg;
  return sp->closed;
}


static void spin_run(fixture_t* fx) {
  static const char* const args[] = {"--child-accept-spin", NULL};
  spin_t sp;
  int rc;
  memset(&sp, 0, sizeof(sp));
  sp.proc.data = &sp;
  rc = fixture_spawn_self(fx, &sp.proc, args, spin_exit_cb);
  if (rc != 0) {
    /* The handle was initialised and must be closed all the same. */
    uv_close((uv_handle_t*)&sp.proc, spin_closed_cb);
    assert_true(
        fixture_run_until(fx, pred_spin_closed, &sp, FIXTURE_TIMEOUT_MS));
    fail_msg("uv_spawn: %s", uv_strerror(rc));
  }
  if (!fixture_run_until(fx, pred_spin_exited, &sp, SPIN_CHILD_WAIT_MS)) {
    /* Stuck, perhaps inside one callback of loop 0 for ever. */
    (void)uv_process_kill(&sp.proc, SIGKILL);
    assert_true(
        fixture_run_until(fx, pred_spin_closed, &sp, FIXTURE_TIMEOUT_MS));
    fail_msg("the child did not exit within %d ms and was killed",
             SPIN_CHILD_WAIT_MS);
  }
  assert_true(fixture_run_until(fx, pred_spin_closed, &sp, FIXTURE_TIMEOUT_MS));
  if (sp.term_signal != 0)
    fail_msg("the child died of signal %d", sp.term_signal);
  switch (sp.status) {
    case SPIN_EXIT_OK:
      return;
    case SPIN_EXIT_SPUN:
      fail_msg(
          "port 0 was starved or its listener failed too often (the "
          "child's line above): it spins out of descriptors");
      break;
    case SPIN_EXIT_UNTESTED:
      fail_msg("the child never ran out of descriptors: nothing was tested");
      break;
    case SPIN_EXIT_STOP:
      fail_msg("the child's services did not stop within %d ms",
               SPIN_CHILD_STOP_MS);
      break;
    default:
      fail_msg("the child failed to set up (status %d)", (int)sp.status);
  }
}

#endif /* _WIN32 */


static void test_listener_out_of_descriptors_one_loop_recovers(void** state) {
#ifdef _WIN32
  (void)state;
  print_message("skipped: Windows has no RLIMIT_NOFILE\n");
  skip();
#else
  emfile_run(*state, 1);
#endif
}


static void test_listener_out_of_descriptors_spread_backs_off(void** state) {
#ifdef _WIN32
  (void)state;
  print_message("skipped: Windows has no RLIMIT_NOFILE\n");
  skip();
#else
  emfile_run(*state, 2);
#endif
}


static void test_listener_one_loop_backs_off_beside_a_loop_taking_descriptors(
    void** state) {
#ifdef _WIN32
  (void)state;
  print_message("skipped: Windows has no RLIMIT_NOFILE\n");
  skip();
#else
  spin_run(*state);
#endif
}

#ifndef _WIN32
/* The spreading tests hold both ends of SPREAD_CONNS connections in this
 * process, more than a soft descriptor limit of 256 (macOS, some CI
 * runners) allows. Raise the soft limit as far as the hard one lets; what
 * still falls short shows as a failed test with UV_EMFILE. */
#define LISTENER_TEST_NOFILE (2 * SPREAD_CONNS + 256)

static void raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
      rl.rlim_cur >= LISTENER_TEST_NOFILE)
    return;
  rl.rlim_cur =
      rl.rlim_max != RLIM_INFINITY && rl.rlim_max < LISTENER_TEST_NOFILE
          ? rl.rlim_max
          : LISTENER_TEST_NOFILE;
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < LISTENER_TEST_NOFILE)
    print_message(
        "note: descriptor limit %lu, below the %d the spreading "
        "tests need\n",
        (unsigned long)rl.rlim_cur, LISTENER_TEST_NOFILE);
}
#endif


/* "::" takes IPv4 clients too unless opts.ipv6_only. */
static void test_listener_ipv6_any_takes_both_families(void** state) {
  fixture_t* fx = *state;
  int only;
  for (only = 0; only <= 1; only++) {
    cport_service_opts_t o;
    cport_service_t* svc = NULL;
    cport_addr_t any;
    cport_addr_t bound;
    cport_addr_t to;
    peer_t* p4;
    peer_t* p6;
    int rc;
    cport_service_opts_init(&o);
    o.ipv6_only = only;
    assert_int_equal(cport_addr_parse(&any, "::", 0), 0);
    assert_int_equal(
        cport_service_create(&svc, fx->core, CPORT_SERVICE_SERVER, &any, &o),
        0);
    rc = cport_service_start(svc);
    if (rc == UV_EADDRNOTAVAIL || rc == UV_EAFNOSUPPORT) {
      cport_service_destroy(svc);
      skip(); /* no IPv6 on this machine */
    }
    assert_int_equal(rc, 0);
    assert_int_equal(cport_service_local_addr(svc, &bound), 0);
    assert_int_equal(cport_addr_parse(&to, "::1", cport_addr_port(&bound)), 0);
    p6 = peer_connect(fx, &to, 0);
    assert_int_equal(cport_addr_parse(&to, "127.0.0.1", cport_addr_port(&bound)),
                     0);
    p4 = peer_connect(fx, &to, 1);
    if (only)
      assert_int_equal(p4->connect_error, UV_ECONNREFUSED);
    else
      assert_int_equal(p4->connect_error, 0);
    peer_destroy(p4);
    peer_destroy(p6);
    cport_service_destroy(svc);
  }
}


/* ---- inherited and shared sockets ---- */

/* A listening socket on 127.0.0.1, made the way a parent process would;
 * `addr` gets its address. */
static uv_os_sock_t inherited_socket(cport_addr_t* addr) {
  struct sockaddr_storage ss;
  uv_os_sock_t sock;
  assert_int_equal(cport_addr_parse(addr, "127.0.0.1", 0), 0);
  assert_int_equal(
      cport__socket_listen(cport_addr_sockaddr(addr), 16, 0, &sock), 0);
  assert_int_equal(cport__socket_name(sock, &ss), 0);
  assert_int_equal(cport_addr_from_sockaddr(addr, (struct sockaddr*)&ss), 0);
  return sock;
}


static void test_listener_adopts_an_inherited_socket(void** state) {
  fixture_t* fx = *state;
  cport_addr_t addr;
  cport_addr_t bound;
  uv_os_sock_t sock = inherited_socket(&addr);
  peer_t* early;
  peer_t* p;
  /* A connection that came while nobody accepted waits in the socket's
   * queue, as during a restart: the new server takes it. */
  early = peer_connect(fx, &addr, 0);
  fx->opts.listen_fd = (int64_t)sock;
  fixture_start_server_at(fx, NULL);
  assert_int_equal(cport_service_local_addr(fx->server, &bound), 0);
  assert_int_equal(cport_addr_port(&bound), cport_addr_port(&addr));
  fixture_wait_int(fx, &fx->connected, 1, FIXTURE_TIMEOUT_MS);
  p = peer_connect(fx, &addr, 0);
  peer_write(p, "ping", 4);
  fixture_wait_size(fx, &p->received.len, 4, FIXTURE_TIMEOUT_MS);
  peer_write(early, "pong", 4);
  fixture_wait_size(fx, &early->received.len, 4, FIXTURE_TIMEOUT_MS);
  peer_destroy(p);
  peer_destroy(early);
  /* The service owned it: stopping closed it. */
  fixture_stop_service(fx, fx->server, 1000);
  p = peer_connect(fx, &addr, 1);
  assert_int_equal(p->connect_error, UV_ECONNREFUSED);
  peer_destroy(p);
}


static void test_listener_refuses_what_is_no_listening_socket(void** state) {
  fixture_t* fx = *state;
  cport_service_opts_t o;
  cport_service_t* svc = NULL;
  cport_addr_t addr;
  uv_os_sock_t sock = inherited_socket(&addr);
  cport_service_opts_init(&o);
  /* An address as well as a socket: which one? */
  o.listen_fd = (int64_t)sock;
  assert_int_equal(cport_service_create(&svc, fx->core, CPORT_SERVICE_SERVER,
                                        &addr, &o),
                   UV_EINVAL);
  o.listen_fd = -2;
  assert_int_equal(cport_service_create(&svc, fx->core, CPORT_SERVICE_SERVER,
                                        NULL, &o),
                   UV_EINVAL);
  o.listen_fd = (int64_t)sock;
  o.reuse_port = 1;
  assert_int_equal(cport_service_create(&svc, fx->core, CPORT_SERVICE_SERVER,
                                        NULL, &o),
                   UV_EINVAL);
  o.reuse_port = 0;
  assert_int_equal(cport_service_create(&svc, fx->core, CPORT_SERVICE_CLIENT,
                                        NULL, &o),
                   UV_EINVAL);
  assert_null(svc);
  cport__socket_close(sock);
#ifndef _WIN32
  {
    int fds[2];
    int bound;
    struct sockaddr_in sin;
    /* A pipe, then a socket that is bound but not listening: refused at
     * start, and left open for the caller. */
    assert_int_equal(pipe(fds), 0);
    o.listen_fd = fds[0];
    assert_int_equal(cport_service_create(&svc, fx->core, CPORT_SERVICE_SERVER,
                                          NULL, &o),
                     0);
    assert_int_equal(cport_service_start(svc), UV_ENOTSOCK);
    assert_true(fcntl(fds[0], F_GETFD) != -1);
    cport_service_destroy(svc);
    close(fds[0]);
    close(fds[1]);
    bound = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(bound >= 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(bound, (struct sockaddr*)&sin, sizeof(sin)), 0);
    o.listen_fd = bound;
    assert_int_equal(cport_service_create(&svc, fx->core, CPORT_SERVICE_SERVER,
                                          NULL, &o),
                     0);
    assert_int_equal(cport_service_start(svc), UV_EINVAL);
    assert_true(fcntl(bound, F_GETFD) != -1);
    /* Listening now: the same service starts on it. */
    assert_int_equal(listen(bound, 4), 0);
    assert_int_equal(cport_service_start(svc), 0);
    cport_service_destroy(svc);
    o.listen_fd = 100000; /* no such descriptor */
    assert_int_equal(cport_service_create(&svc, fx->core, CPORT_SERVICE_SERVER,
                                          NULL, &o),
                     0);
    assert_int_equal(cport_service_start(svc), UV_EBADF);
    cport_service_destroy(svc);
  }
#endif
}


#ifndef _WIN32
static void settle_loop(fixture_t* fx) {
  int i;
  for (i = 0; i < 20; i++) cport_core_dispatch(fx->core, 0, 1);
}
#endif


static void test_listener_reuse_port_is_opt_in(void** state) {
  fixture_t* fx = *state;
  cport_service_opts_t o;
  cport_service_t* second = NULL;
  int rc;
  fx->opts.reuse_port = 1;
  cport_service_opts_init(&o);
  o.reuse_port = 1;
#ifdef _WIN32
  {
    cport_addr_t addr;
    assert_int_equal(cport_addr_parse(&addr, "127.0.0.1", 0), 0);
    rc = cport_service_create(&second, fx->core, CPORT_SERVICE_SERVER, &addr,
                              &o);
    assert_int_equal(rc, 0);
    assert_int_equal(cport_service_start(second), UV_ENOTSUP);
    cport_service_destroy(second);
  }
#else
  (void)rc;
  {
    cport_service_stats_t a;
    cport_service_stats_t b;
    peer_t* peers[32];
    int i;
    fixture_start_server(fx);
    /* A second server that also asks: the same port. */
    o.user_size = sizeof(rec_session_t);
    assert_int_equal(cport_service_create(&second, fx->core,
                                          CPORT_SERVICE_SERVER,
                                          &fx->server_addr, &o),
                     0);
    assert_int_equal(cport_service_start(second), 0);
    for (i = 0; i < 32; i++) peers[i] = peer_connect(fx, &fx->server_addr, 0);
    assert_int_equal(cport_service_stats(fx->server, &a), 0);
    assert_int_equal(cport_service_stats(second, &b), 0);
    /* Every connection was taken by one of the two (Linux spreads them;
     * macOS gives them to one). */
    for (i = 0; i < 32 && a.connected + b.connected < 32; i++) {
      settle_loop(fx);
      assert_int_equal(cport_service_stats(fx->server, &a), 0);
      assert_int_equal(cport_service_stats(second, &b), 0);
    }
    assert_int_equal(a.connected + b.connected, 32);
#ifdef __linux__
    assert_true(a.connected > 0 && b.connected > 0);
#endif
    for (i = 0; i < 32; i++) peer_destroy(peers[i]);
    cport_service_destroy(second);
    second = NULL;
    /* One that does not ask is refused, as always. */
    o.reuse_port = 0;
    assert_int_equal(cport_service_create(&second, fx->core,
                                          CPORT_SERVICE_SERVER,
                                          &fx->server_addr, &o),
                     0);
    assert_int_equal(cport_service_start(second), UV_EADDRINUSE);
    cport_service_destroy(second);
  }
#endif
}


#ifndef _WIN32
static void test_listener_listen_fds_reads_systemd_variables(void** state) {
  char pid[32];
  (void)state;
  snprintf(pid, sizeof(pid), "%ld", (long)getpid());
  /* Meant for this process. */
  assert_int_equal(setenv("LISTEN_PID", pid, 1), 0);
  assert_int_equal(setenv("LISTEN_FDS", "2", 1), 0);
  assert_int_equal(cport_listen_fds(0), 2);
  assert_non_null(getenv("LISTEN_FDS"));
  assert_int_equal(cport_listen_fds(1), 2);
  assert_null(getenv("LISTEN_FDS"));
  assert_null(getenv("LISTEN_PID"));
  assert_int_equal(cport_listen_fds(0), 0);
  /* Meant for the parent that passed the variables down. */
  assert_int_equal(setenv("LISTEN_PID", "1", 1), 0);
  assert_int_equal(setenv("LISTEN_FDS", "1", 1), 0);
  assert_int_equal(cport_listen_fds(1), 0);
  assert_int_equal(setenv("LISTEN_PID", pid, 1), 0);
  assert_int_equal(setenv("LISTEN_FDS", "two", 1), 0);
  assert_int_equal(cport_listen_fds(1), UV_EINVAL);
  assert_null(getenv("LISTEN_FDS"));
}
#endif


int main(int argc, char** argv) {
#ifndef _WIN32
  if (argc == 3 && strcmp(argv[1], "--child-emfile") == 0)
    return child_emfile_main(argv[2]);
  if (argc == 2 && strcmp(argv[1], "--child-accept-spin") == 0)
    return child_accept_spin_main();
  raise_nofile();
#else
  (void)argc;
  (void)argv;
#endif
  const struct CMUnitTest tests[] = {
#define T FIXTURE_TEST
      T(test_listener_max_sessions_rejects_and_keeps_serving),
      T(test_listener_bind_in_use_returns_eaddrinuse),
      T(test_listener_port_is_not_shared_with_reuseaddr),
      T(test_listener_bind_to_foreign_address_fails),
      T(test_listener_ipv6_loopback),
      T(test_listener_local_addr_errors),
      T(test_listener_rejects_while_out_of_memory),
      T(test_listener_spreads_connections_round_robin),
      T(test_listener_spread_sessions_run_on_their_loop_threads),
      T(test_listener_spread_counts_max_sessions_over_all_loops),
      T(test_listener_spread_max_sessions_admits_full_waves),
      T(test_listener_spread_bind_in_use_returns_eaddrinuse),
      T(test_listener_spread_destroy_without_stop_frees_every_loop),
      T(test_listener_out_of_descriptors_one_loop_recovers),
      T(test_listener_out_of_descriptors_spread_backs_off),
      T(test_listener_one_loop_backs_off_beside_a_loop_taking_descriptors),
      T(test_listener_ipv6_any_takes_both_families),
      T(test_listener_adopts_an_inherited_socket),
      T(test_listener_refuses_what_is_no_listening_socket),
      T(test_listener_reuse_port_is_opt_in),
#ifndef _WIN32
      T(test_listener_listen_fds_reads_systemd_variables),
#endif
#undef T
  };
  return cmocka_run_group_tests_name("listener", tests, NULL, NULL);
}
