/* Tests for cport_core_stop_on_signals(): SIGTERM stops the services
 * gracefully and then the core, a second signal stops the core at once,
 * every loop of a core is covered, an embedded application's loop ends,
 * and a watch that never fired costs nothing at cport_core_destroy().
 *
 * A helper thread (the "killer") sends the signals with kill(), as an
 * operator would, once the core runs; it is also the watchdog that stops
 * the core if the signal's stop does not end it in time, so that a broken
 * stop fails the test instead of hanging it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"

#ifndef _WIN32
#include <signal.h>
#include <unistd.h>

#include "common.h"

/* A stop deadline far beyond the watchdog's wait: a core that stopped in
 * time stopped because its services had, not because the deadline passed. */
#define LONG_DEADLINE_MS (20 * FIXTURE_TIMEOUT_MS)

/* ---- the killer thread ---- */

typedef struct killer_s {
  signal_t running;  /* raised from inside the running loop */
  signal_t handled;  /* raised by on_signal */
  signal_t returned; /* raised by the test once the loop has returned */
  int kills;         /* 1, or 2 for a second signal after on_signal */
  atomic_int timed_out;
  /* The watchdog: end the loop another way. */
  void (*rescue)(struct killer_s* k);
  cport_core_t* core;
  uv_async_t* app_async; /* embedded test: wakes the application's loop */
  uv_thread_t thread;
  /* on_signal's record (loop 0's thread). */
  int on_signal_calls;
  int on_signal_signum;
  cport_core_t* on_signal_core;
  peer_t* resume; /* a peer on_signal starts reading again */
} killer_t;


static void killer_main(void* arg) {
  killer_t* k = arg;
  if (!signal_wait(&k->running, 1, FIXTURE_TIMEOUT_MS))
    goto rescue;
  assert_int_equal(kill(getpid(), SIGTERM), 0);
  /* The second signal only once the first has been handled, so that the
   * kernel cannot merge the two. */
  if (k->kills > 1 && signal_wait(&k->handled, 1, FIXTURE_TIMEOUT_MS))
    assert_int_equal(kill(getpid(), SIGTERM), 0);
  if (signal_wait(&k->returned, 1, FIXTURE_TIMEOUT_MS))
    return;
rescue:
  atomic_store(&k->timed_out, 1);
  k->rescue(k);
}


static void killer_stop_core(killer_t* k) {
  (void)cport_core_stop(k->core);
}


static void killer_init(killer_t* k, cport_core_t* core, int kills) {
  memset(k, 0, sizeof(*k));
  signal_init(&k->running);
  signal_init(&k->handled);
  signal_init(&k->returned);
  k->kills = kills;
  k->core = core;
  k->rescue = killer_stop_core;
  atomic_init(&k->timed_out, 0);
}


static void killer_start(killer_t* k) {
  assert_int_equal(uv_thread_create(&k->thread, killer_main, k), 0);
}


/* The loop has returned: let the thread end, and check it did not have to
 * step in. */
static void killer_finish(killer_t* k) {
  signal_raise(&k->returned);
  assert_int_equal(uv_thread_join(&k->thread), 0);
  assert_int_equal(atomic_load(&k->timed_out), 0);
  signal_destroy(&k->running);
  signal_destroy(&k->handled);
  signal_destroy(&k->returned);
}


/* A job: the loop runs now. */
static void killer_running_job(void* arg) {
  signal_raise(&((killer_t*)arg)->running);
}


static void killer_on_signal(cport_core_t* core, int signum, void* arg) {
  killer_t* k = arg;
  k->on_signal_calls++;
  k->on_signal_signum = signum;
  k->on_signal_core = core;
  if (k->resume != NULL)
    peer_resume_reading(k->resume);
  signal_raise(&k->handled);
}


/* Watch the signals with killer_on_signal and a long deadline, and run the
 * core here until the killer's signal ends the run (`announce`: a job
 * tells the killer that the loop runs; otherwise a callback does). */
static void killer_run_here(killer_t* k, cport_core_t* core, int announce) {
  assert_int_equal(
      cport_core_stop_on_signals(core, LONG_DEADLINE_MS, killer_on_signal, k),
      0);
  if (announce)
    assert_int_equal(cport_core_post(core, 0, killer_running_job, k), 0);
  killer_start(k);
  assert_int_equal(cport_core_run_here(core), 0);
  killer_finish(k);
}


/* ---- set-up: every test leaves the default dispositions behind ---- */

static int signal_disposition_is_default(int signum) {
  struct sigaction sa;
  assert_int_equal(sigaction(signum, NULL, &sa), 0);
  return sa.sa_handler == SIG_DFL;
}


/* After a test's own teardown (`rc`): cport_core_destroy() closed the
 * watch, so libuv gave the signals back. Whatever the test did, the next
 * one starts from the defaults. */
static int sig_defaults_back(int rc) {
  int int_default = signal_disposition_is_default(SIGINT);
  int term_default = signal_disposition_is_default(SIGTERM);
  (void)signal(SIGINT, SIG_DFL);
  (void)signal(SIGTERM, SIG_DFL);
  assert_true(int_default);
  assert_true(term_default);
  return rc;
}

static int sig_teardown(void** state) {
  return sig_defaults_back(fixture_teardown(state));
}

/* For the tests that make their own cores. */
static int sig_mem_teardown(void** state) {
  return sig_defaults_back(mem_teardown(state));
}

#define SIG_TEST(name) \
  cmocka_unit_test_setup_teardown(name, fixture_setup, sig_teardown)
#define SIG_CORE_TEST(name) \
  cmocka_unit_test_setup_teardown(name, mem_setup, sig_mem_teardown)


/* ---- arguments, and a watch that never fires ---- */

static void test_signal_args_and_destroy_without_signal(void** state) {
  fixture_t* fx = *state;
  peer_t* p;
  assert_int_equal(cport_core_stop_on_signals(NULL, 0, NULL, NULL), UV_EINVAL);
  assert_int_equal(cport_core_stop_on_signals(fx->core, -1, NULL, NULL),
                   UV_EINVAL);
  assert_int_equal(cport_core_stop_on_signals(fx->core, 1000, NULL, NULL), 0);
  assert_int_equal(cport_core_stop_on_signals(fx->core, 5, NULL, NULL),
                   UV_EBUSY);
  assert_false(signal_disposition_is_default(SIGINT));
  assert_false(signal_disposition_is_default(SIGTERM));
  /* A service and a session, destroyed without any signal: the teardown's
   * cport_core_destroy() closes the watch and finds no memory left. */
  fixture_start_server(fx);
  p = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &fx->connected, 1, FIXTURE_TIMEOUT_MS);
  /* The watch does not keep the loop alive on its own. */
  peer_destroy(p);
  fixture_wait_int(fx, &fx->disconnected, 1, FIXTURE_TIMEOUT_MS);
  cport_service_destroy(fx->server);
  fx->server = NULL;
  {
    uint64_t deadline = uv_hrtime() + (uint64_t)FIXTURE_TIMEOUT_MS * 1000000u;
    while (cport_core_dispatch(fx->core, 0, 10) > 0)
      assert_true(uv_hrtime() < deadline);
  }
}


static void doomed_disconnected(cport_session_t* s,
                                int code,
                                const char* cause) {
  int* ended = cport_service_get_data(cport_session_service(s));
  (void)cause;
  *ended = code;
  cport_service_destroy(cport_session_service(s));
}


/* A service destroyed before the signal is not touched; one destroyed
 * while it stops (its on_stopped then never comes) is not waited for; a
 * client created but never started stops too. */
static void test_signal_destroyed_services(void** state) {
  fixture_t* fx = *state;
  cport_service_opts_t o;
  cport_addr_t addr;
  killer_t k;
  peer_t* p;
  int ended = 0;
  cport_service_t* gone =
      fixture_create_service(fx, CPORT_SERVICE_SERVER, "127.0.0.1", NULL);
  cport_service_t* idle =
      fixture_create_service(fx, CPORT_SERVICE_CLIENT, "127.0.0.1", NULL);
  cport_service_t* doomed;
  cport_service_destroy(gone);
  cport_service_opts_init(&o);
  o.data = &ended;
  o.cbs.on_disconnected = doomed_disconnected;
  doomed = fixture_create_service(fx, CPORT_SERVICE_SERVER, "127.0.0.1", &o);
  assert_int_equal(cport_service_start(doomed), 0);
  assert_int_equal(cport_service_local_addr(doomed, &addr), 0);
  p = peer_connect(fx, &addr, 0);
  while (cport_service_session_count(doomed) == 0)
    assert_true(cport_core_dispatch(fx->core, 0, FIXTURE_TIMEOUT_MS) >= 0);
  killer_init(&k, fx->core, 1);
  killer_run_here(&k, fx->core, 1);
  assert_int_equal(k.on_signal_calls, 1);
  assert_int_equal(ended, CPORT_ESTOPPED);
  /* Stopped by the signal: a stop now is one too many. */
  assert_int_equal(cport_service_stop(idle, 0, NULL), UV_EALREADY);
  cport_service_destroy(idle);
  peer_destroy(p);
}


/* ---- the graceful stop ---- */

#define GRACEFUL_SENDS 4
#define GRACEFUL_SEND_BYTES (2u * 1024 * 1024)

static void test_signal_sigterm_stops_gracefully(void** state) {
  fixture_t* fx = *state;
  size_t total = (size_t)GRACEFUL_SENDS * GRACEFUL_SEND_BYTES;
  uint8_t* payload = malloc(total);
  killer_t k;
  peer_t* p;
  int i;
  assert_non_null(payload);
  fill_pattern(payload, total, 7);
  fx->opts.send_queue_limit = 4 * total;
  fixture_start_server(fx);
  p = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &fx->connected, 1, FIXTURE_TIMEOUT_MS);
  /* The peer reads nothing until the signal: the bytes wait in the
   * session's send queue. */
  peer_stop_reading(p);
  for (i = 0; i < GRACEFUL_SENDS; i++)
    assert_int_equal(
        cport_session_send(fx->last_server,
                           payload + (size_t)i * GRACEFUL_SEND_BYTES,
                           GRACEFUL_SEND_BYTES),
        0);
  assert_true(cport_session_queued_bytes(fx->last_server) > 0);

  killer_init(&k, fx->core, 1);
  k.resume = p;
  killer_run_here(&k, fx->core, 1);

  assert_int_equal(k.on_signal_calls, 1);
  assert_int_equal(k.on_signal_signum, SIGTERM);
  assert_ptr_equal(k.on_signal_core, fx->core);
  /* The core stopped because the service had stopped: its session had
   * flushed and ended, with the stop's code. */
  assert_int_equal(fx->disconnected, 1);
  assert_int_equal(rec_of(fx->last_server)->code, CPORT_ESTOPPED);
  assert_int_equal(cport_service_session_count(fx->server), 0);
  /* The peer gets every byte queued before the signal, then the FIN. */
  fixture_wait_int(fx, &p->eof, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(p->received.len, total);
  assert_memory_equal(p->received.data, payload, total);
  assert_int_equal(p->error, 0);
  free(payload);
  bytes_free(&p->received);
  peer_destroy(p);
}


/* ---- a drain begun by on_signal ---- */

static fixture_t* drain_fx;
static peer_t* drain_peer;

static void drain_done(cport_service_t* svc) {
  (void)svc;
  drain_fx->stopped += 100;
}


static void drain_on_signal(cport_core_t* core, int signum, void* arg) {
  killer_t* k = arg;
  killer_on_signal(core, signum, arg);
  (void)k;
  assert_int_equal(cport_service_drain(drain_fx->server, LONG_DEADLINE_MS,
                                       drain_done),
                   0);
  /* The session goes on after the signal, then ends by itself. */
  peer_write(drain_peer, "late", 4);
  peer_shutdown(drain_peer);
}


static void test_signal_waits_for_a_drain_begun_in_on_signal(void** state) {
  fixture_t* fx = *state;
  killer_t k;
  fixture_start_server(fx);
  drain_fx = fx;
  drain_peer = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &fx->connected, 1, FIXTURE_TIMEOUT_MS);
  killer_init(&k, fx->core, 1);
  assert_int_equal(
      cport_core_stop_on_signals(fx->core, LONG_DEADLINE_MS, drain_on_signal,
                                 &k),
      0);
  assert_int_equal(cport_core_post(fx->core, 0, killer_running_job, &k), 0);
  killer_start(&k);
  assert_int_equal(cport_core_run_here(fx->core), 0);
  killer_finish(&k);
  /* The core stopped once the drain was over, not by stopping the
   * service: the session ended with its peer's FIN, after its echo. */
  assert_int_equal(fx->stopped, 100);
  assert_int_equal(fx->disconnected, 1);
  assert_int_equal(rec_of(fx->last_server)->code, UV_EOF);
  fixture_wait_int(fx, &drain_peer->eof, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(drain_peer->received.len, 4);
  assert_memory_equal(drain_peer->received.data, "late", 4);
  peer_destroy(drain_peer);
}


/* ---- a second signal ---- */

static void test_signal_second_signal_stops_at_once(void** state) {
  fixture_t* fx = *state;
  killer_t k;
  peer_t* p;
  FIXTURE_SKIP_UNDER_WINE(FIXTURE_WINE_DRAINS_STUCK_WRITES);
  fx->opts.send_queue_limit = 2 * FIXTURE_STUCK_BYTES;
  fixture_start_server(fx);
  /* A peer that never reads: the graceful stop could only end at its
   * deadline, much later than the watchdog waits. */
  p = fixture_connect_stuck_peer(fx);
  killer_init(&k, fx->core, 2);
  killer_run_here(&k, fx->core, 1);
  /* on_signal for the first signal only; the session still flushes. */
  assert_int_equal(k.on_signal_calls, 1);
  assert_int_equal(fx->disconnected, 0);
  assert_true(cport_session_queued_bytes(fx->last_server) > 0);
  /* The teardown's destroy cuts it off. */
  cport_service_destroy(fx->server);
  fx->server = NULL;
  fixture_wait_int(fx, &fx->disconnected, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(rec_of(fx->last_server)->code, CPORT_ESTOPPED);
  peer_destroy(p);
}


/* ---- a server and its clients on one core ---- */

/* Start a server on loop 0 of `core` (spread over every loop it has) and a
 * client service of `conns` sessions on `client_loop` connected to it,
 * both with `data` as their user pointer. */
static void start_pair(cport_core_t* core,
                       void* data,
                       const cport_session_cbs_t* server_cbs,
                       const cport_session_cbs_t* client_cbs,
                       unsigned client_loop,
                       unsigned conns,
                       cport_service_t** server,
                       cport_service_t** client) {
  cport_service_opts_t so;
  cport_addr_t addr;
  cport_service_opts_init(&so);
  so.data = data;
  so.cbs = *server_cbs;
  assert_int_equal(cport_addr_parse(&addr, "127.0.0.1", 0), 0);
  assert_int_equal(
      cport_service_create(server, core, CPORT_SERVICE_SERVER, &addr, &so), 0);
  assert_int_equal(cport_service_start(*server), 0);
  assert_int_equal(cport_service_local_addr(*server, &addr), 0);
  so.cbs = *client_cbs;
  so.connect_count = conns;
  so.loop = client_loop;
  assert_int_equal(
      cport_service_create(client, core, CPORT_SERVICE_CLIENT, &addr, &so), 0);
  assert_int_equal(cport_service_start(*client), 0);
}


/* ---- several loops ---- */

#define MULTI_LOOPS 3
#define MULTI_CONNS 9

typedef struct multi_s {
  killer_t* k;
  atomic_int server_connected;
  atomic_int server_disconnected;
  atomic_int client_connected;
  atomic_int client_disconnected;
  atomic_int per_loop[MULTI_LOOPS];
  atomic_int wrong_code;
  atomic_int up; /* on_connected of either side */
} multi_t;


/* The signal comes once both ends of every connection are up: a client's
 * connect completes before the server has accepted it. */
static void multi_up(multi_t* m) {
  if (atomic_fetch_add(&m->up, 1) + 1 == 2 * MULTI_CONNS)
    signal_raise(&m->k->running);
}


static void multi_server_connected(cport_session_t* s) {
  multi_t* m = cport_service_get_data(cport_session_service(s));
  atomic_fetch_add(&m->per_loop[cport_session_loop(s) % MULTI_LOOPS], 1);
  atomic_fetch_add(&m->server_connected, 1);
  multi_up(m);
}


static void multi_client_connected(cport_session_t* s) {
  multi_t* m = cport_service_get_data(cport_session_service(s));
  atomic_fetch_add(&m->client_connected, 1);
  multi_up(m);
}


/* Either side may see the other's FIN before its own stop reaches it. */
static int multi_code_ok(int code) {
  return code == CPORT_ESTOPPED || code == UV_EOF;
}


static void multi_server_disconnected(cport_session_t* s,
                                      int code,
                                      const char* cause) {
  multi_t* m = cport_service_get_data(cport_session_service(s));
  (void)cause;
  if (!multi_code_ok(code))
    atomic_store(&m->wrong_code, code);
  atomic_fetch_add(&m->server_disconnected, 1);
}


static void multi_client_disconnected(cport_session_t* s,
                                      int code,
                                      const char* cause) {
  multi_t* m = cport_service_get_data(cport_session_service(s));
  (void)cause;
  if (!multi_code_ok(code))
    atomic_store(&m->wrong_code, code);
  atomic_fetch_add(&m->client_disconnected, 1);
}


static void test_signal_stops_every_loop(void** state) {
  cport_core_opts_t co;
  cport_session_cbs_t server_cbs = {0};
  cport_session_cbs_t client_cbs = {0};
  cport_core_t* core;
  cport_service_t* server = NULL;
  cport_service_t* client = NULL;
  killer_t k;
  multi_t m;
  int i;
  (void)state;
  memset(&m, 0, sizeof(m));
  m.k = &k;
  cport_core_opts_init(&co);
  co.loops = MULTI_LOOPS;
  assert_int_equal(cport_core_create(&core, &co), 0);
  killer_init(&k, core, 1);

  /* A server on loop 0 spread over every loop, and its clients on loop 2. */
  server_cbs.on_connected = multi_server_connected;
  server_cbs.on_disconnected = multi_server_disconnected;
  client_cbs.on_connected = multi_client_connected;
  client_cbs.on_disconnected = multi_client_disconnected;
  start_pair(core, &m, &server_cbs, &client_cbs, 2, MULTI_CONNS, &server,
             &client);

  killer_run_here(&k, core, 0);

  assert_int_equal(k.on_signal_calls, 1);
  assert_int_equal(atomic_load(&m.server_connected), MULTI_CONNS);
  for (i = 0; i < MULTI_LOOPS; i++)
    assert_true(atomic_load(&m.per_loop[i]) > 0);
  /* Both services stopped, on every loop, before the core did. */
  assert_int_equal(atomic_load(&m.server_disconnected), MULTI_CONNS);
  assert_int_equal(atomic_load(&m.client_disconnected), MULTI_CONNS);
  assert_int_equal(atomic_load(&m.wrong_code), 0);
  assert_int_equal(cport_service_session_count(server), 0);
  assert_int_equal(cport_service_session_count(client), 0);
  assert_int_equal(cport_service_stop(server, 0, NULL), UV_EALREADY);
  assert_int_equal(cport_service_stop(client, 0, NULL), UV_EALREADY);

  cport_service_destroy(client);
  cport_service_destroy(server);
  cport_core_destroy(core);
}


/* ---- an embedded core ---- */

typedef struct embed_s {
  int server_disconnected;
  int server_code;
  int client_connected;
  int client_disconnected;
  int up;
  killer_t* k;
} embed_t;


/* The signal comes once both ends are up. */
static void embed_connected(cport_session_t* s) {
  embed_t* e = cport_service_get_data(cport_session_service(s));
  if (++e->up == 2)
    signal_raise(&e->k->running);
}


static void embed_client_connected(cport_session_t* s) {
  embed_t* e = cport_service_get_data(cport_session_service(s));
  e->client_connected++;
  embed_connected(s);
}


static void embed_server_disconnected(cport_session_t* s,
                                      int code,
                                      const char* cause) {
  embed_t* e = cport_service_get_data(cport_session_service(s));
  (void)cause;
  e->server_disconnected++;
  e->server_code = code;
}


static void embed_client_disconnected(cport_session_t* s,
                                      int code,
                                      const char* cause) {
  embed_t* e = cport_service_get_data(cport_session_service(s));
  (void)code;
  (void)cause;
  e->client_disconnected++;
}


static void embed_rescue_cb(uv_async_t* handle) {
  uv_stop(handle->loop);
}


static void embed_rescue(killer_t* k) {
  (void)uv_async_send(k->app_async);
}


static void test_signal_embedded_loop_ends(void** state) {
  uv_loop_t loop;
  uv_async_t rescue;
  cport_core_opts_t co;
  cport_session_cbs_t server_cbs = {0};
  cport_session_cbs_t client_cbs = {0};
  cport_core_t* core;
  cport_service_t* server = NULL;
  cport_service_t* client = NULL;
  killer_t k;
  embed_t e;
  (void)state;
  memset(&e, 0, sizeof(e));
  e.k = &k;
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(uv_async_init(&loop, &rescue, embed_rescue_cb), 0);
  uv_unref((uv_handle_t*)&rescue);
  cport_core_opts_init(&co);
  co.uv_loop = &loop;
  assert_int_equal(cport_core_create(&core, &co), 0);
  killer_init(&k, core, 1);
  k.rescue = embed_rescue;
  k.app_async = &rescue;

  server_cbs.on_connected = embed_connected;
  server_cbs.on_disconnected = embed_server_disconnected;
  client_cbs.on_connected = embed_client_connected;
  client_cbs.on_disconnected = embed_client_disconnected;
  start_pair(core, &e, &server_cbs, &client_cbs, 0, 1, &server, &client);
  assert_int_equal(
      cport_core_stop_on_signals(core, LONG_DEADLINE_MS, killer_on_signal, &k),
      0);
  killer_start(&k);
  /* The application's own loop: it ends by itself once the services have
   * stopped and the watch has closed. */
  (void)uv_run(&loop, UV_RUN_DEFAULT);
  killer_finish(&k);

  assert_int_equal(k.on_signal_calls, 1);
  assert_int_equal(e.client_connected, 1);
  assert_int_equal(e.client_disconnected, 1);
  assert_int_equal(e.server_disconnected, 1);
  assert_true(e.server_code == CPORT_ESTOPPED || e.server_code == UV_EOF);
  /* libuv gave the signals back when the watch closed, before any
   * destroy. */
  assert_true(signal_disposition_is_default(SIGINT));
  assert_true(signal_disposition_is_default(SIGTERM));

  cport_service_destroy(client);
  cport_service_destroy(server);
  cport_core_destroy(core);
  uv_close((uv_handle_t*)&rescue, NULL);
  (void)uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
}


int main(void) {
  const struct CMUnitTest tests[] = {
      SIG_TEST(test_signal_args_and_destroy_without_signal),
      SIG_TEST(test_signal_destroyed_services),
      SIG_TEST(test_signal_sigterm_stops_gracefully),
      SIG_TEST(test_signal_second_signal_stops_at_once),
      SIG_TEST(test_signal_waits_for_a_drain_begun_in_on_signal),
      SIG_CORE_TEST(test_signal_stops_every_loop),
      SIG_CORE_TEST(test_signal_embedded_loop_ends),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

#else /* _WIN32 */

int main(void) {
  /* Ctrl-C and Ctrl-Break reach a process as console control events, which
   * a test could only raise with GenerateConsoleCtrlEvent() on a console it
   * shares; wine's test runs have none to deliver them through. */
  printf(
      "test_signal: skipped on Windows: console control events cannot be "
      "raised for this process under the test runner\n");
  return 0;
}

#endif
