/* The core: creation and options, cport_core_dispatch() on the test's
 * thread, cport_core_run() threads, and embedding on an application's loop.
 *
 * Cross-thread waits go through signal_t (a counter under a mutex with a
 * uv_cond_timedwait() deadline). cport_core_join() and cport_core_destroy()
 * block until the loop thread exits, so the tests call them through
 * call_bounded(): a helper thread makes the call while the owner waits with a
 * deadline. The owner is blocked meanwhile, so the calls stay one at a time
 * as the "Thread: owner" contract asks; the helper only turns a join that
 * never returns into a failure with a message instead of a hang. */
#include "fixture.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "common.h" /* cport__mem_live */

#define NS_PER_MS 1000000u


/* ---- blocking calls with a deadline ---- */

typedef struct bounded_call_s {
  void (*fn)(cport_core_t* core, int* rc);
  cport_core_t* core;
  int rc;
  signal_t done;
  uv_thread_t thread;
} bounded_call_t;


static void bounded_call_main(void* arg) {
  bounded_call_t* c = arg;
  c->fn(c->core, &c->rc);
  signal_raise(&c->done);
}


/* Run fn(core) on a helper thread and wait for it; fail after the deadline.
 * On a timeout the helper (stuck in cport) and its record are leaked on
 * purpose: freeing what a live thread uses would only add a crash. */
static int call_bounded(void (*fn)(cport_core_t* core, int* rc),
                        cport_core_t* core,
                        const char* what) {
  bounded_call_t* c = calloc(1, sizeof(*c));
  int rc;
  assert_non_null(c);
  c->fn = fn;
  c->core = core;
  signal_init(&c->done);
  assert_int_equal(uv_thread_create(&c->thread, bounded_call_main, c), 0);
  if (!signal_wait(&c->done, 1, FIXTURE_TIMEOUT_MS))
    fail_msg("%s did not return within %d ms", what, FIXTURE_TIMEOUT_MS);
  assert_int_equal(uv_thread_join(&c->thread), 0);
  rc = c->rc;
  signal_destroy(&c->done);
  free(c);
  return rc;
}


static void do_join(cport_core_t* core, int* rc) {
  *rc = cport_core_join(core);
}


static void do_destroy(cport_core_t* core, int* rc) {
  cport_core_destroy(core);
  *rc = 0;
}


static void join_bounded(cport_core_t* core) {
  assert_int_equal(call_bounded(do_join, core, "cport_core_join"), 0);
}


/* ---- handles the tests add to a loop ---- */

typedef struct probe_s {
  uv_timer_t timer;
  uv_async_t async;
  signal_t fired;
  cport_core_t* core;
  int stop_core_in_callback;
  int stop_rc;
  int closed;
} probe_t;


static void probe_init(probe_t* p, cport_core_t* core) {
  memset(p, 0, sizeof(*p));
  signal_init(&p->fired);
  p->core = core;
  p->stop_rc = 1; /* not called yet */
}


static void probe_fire(probe_t* p) {
  if (p->stop_core_in_callback)
    p->stop_rc = cport_core_stop(p->core);
  signal_raise(&p->fired);
}


static void probe_timer_cb(uv_timer_t* t) {
  probe_fire(t->data);
}


static void probe_async_cb(uv_async_t* a) {
  probe_fire(a->data);
}


static void probe_close_cb(uv_handle_t* h) {
  probe_t* p = h->data;
  p->closed++;
}


static void probe_start_timer(probe_t* p, uint64_t timeout_ms) {
  assert_int_equal(uv_timer_init(cport_core_uv_loop(p->core, 0), &p->timer), 0);
  p->timer.data = p;
  assert_int_equal(uv_timer_start(&p->timer, probe_timer_cb, timeout_ms, 0), 0);
}


static void probe_init_async(probe_t* p) {
  assert_int_equal(
      uv_async_init(cport_core_uv_loop(p->core, 0), &p->async, probe_async_cb), 0);
  p->async.data = p;
}


/* Close `h` (a probe's handle) while no thread runs the core, dispatching
 * until its close callback has run. */
static void probe_close(probe_t* p, uv_handle_t* h) {
  uint64_t deadline = uv_hrtime() + (uint64_t)FIXTURE_TIMEOUT_MS * NS_PER_MS;
  int before = p->closed;
  uv_close(h, probe_close_cb);
  while (p->closed == before) {
    if (uv_hrtime() >= deadline)
      fail_msg("close callback did not run within %d ms", FIXTURE_TIMEOUT_MS);
    assert_true(cport_core_dispatch(p->core, 0, 10) >= 0);
  }
}


static void probe_destroy(probe_t* p) {
  signal_destroy(&p->fired);
}


/* ---- creation and options ---- */

static void test_core_create_with_null_opts_has_one_loop(void** state) {
  cport_core_t* core = NULL;
  (void)state;
  assert_int_equal(cport_core_create(&core, NULL), 0);
  assert_non_null(core);
  assert_int_equal(cport_core_loops(core), 1);
  assert_non_null(cport_core_uv_loop(core, 0));
  /* A fresh core has no work: dispatch says so. */
  assert_int_equal(cport_core_dispatch(core, 0, 0), 0);
  cport_core_destroy(core);
}


static void test_core_create_with_initialized_opts(void** state) {
  cport_core_opts_t opts;
  cport_core_t* core = NULL;
  (void)state;
  cport_core_opts_init(&opts);
  opts.ignore_sigpipe = 0;
  assert_int_equal(cport_core_create(&core, &opts), 0);
  assert_non_null(core);
  assert_int_equal(cport_core_loops(core), 1);
  cport_core_destroy(core);
}


static void test_core_create_rejects_null_out(void** state) {
  cport_core_opts_t opts;
  (void)state;
  assert_int_equal(cport_core_create(NULL, NULL), UV_EINVAL);
  cport_core_opts_init(&opts);
  assert_int_equal(cport_core_create(NULL, &opts), UV_EINVAL);
}


static void test_core_create_rejects_zero_loops(void** state) {
  cport_core_opts_t opts;
  cport_core_t* core = NULL;
  (void)state;
  cport_core_opts_init(&opts);
  opts.loops = 0;
  assert_int_equal(cport_core_create(&core, &opts), UV_EINVAL);
  assert_null(core);
}


static void test_core_create_checks_the_loop_count(void** state) {
  cport_core_opts_t opts;
  cport_core_t* core = NULL;
  uv_loop_t app_loop;
  (void)state;
  cport_core_opts_init(&opts);
  opts.loops = 3;
  assert_int_equal(cport_core_create(&core, &opts), 0);
  assert_int_equal(cport_core_loops(core), 3);
  /* One loop per loop. */
  assert_ptr_not_equal(cport_core_uv_loop(core, 0), cport_core_uv_loop(core, 1));
  assert_ptr_not_equal(cport_core_uv_loop(core, 1), cport_core_uv_loop(core, 2));
  assert_null(cport_core_uv_loop(core, 3));
  cport_core_destroy(core);
  core = NULL;
  opts.loops = CPORT_CORE_MAX_LOOPS + 1;
  assert_int_equal(cport_core_create(&core, &opts), UV_EINVAL);
  opts.loops = UINT_MAX;
  assert_int_equal(cport_core_create(&core, &opts), UV_EINVAL);
  assert_null(core);
  /* An embedded core has the application's one loop. */
  assert_int_equal(uv_loop_init(&app_loop), 0);
  opts.loops = 2;
  opts.uv_loop = &app_loop;
  assert_int_equal(cport_core_create(&core, &opts), UV_EINVAL);
  assert_null(core);
  assert_int_equal(uv_loop_close(&app_loop), 0);
}


/* ---- cport_core_post ---- */

enum { POST_PORTS = 3, POST_THREADS = 4, POST_JOBS = 400 };

/* What one loop saw; only that loop's thread writes it while running. */
typedef struct post_port_s {
  uv_thread_t thread;
  int seen;
  int other_thread; /* a job ran on a thread other than the first one */
  int out_of_order;
  int last_seq[POST_THREADS];
} post_port_t;

typedef struct post_run_s {
  cport_core_t* core;
  post_port_t ports[POST_PORTS];
  signal_t done; /* raised once per job */
} post_run_t;

typedef struct post_job_s {
  post_run_t* run;
  unsigned port;
  int poster;
  int seq;
} post_job_t;

static void post_job_fn(void* arg) {
  post_job_t* job = arg;
  post_port_t* pp = &job->run->ports[job->port];
  uv_thread_t self = uv_thread_self();
  if (pp->seen++ == 0)
    pp->thread = self;
  else if (!uv_thread_equal(&pp->thread, &self))
    pp->other_thread = 1;
  if (job->seq != pp->last_seq[job->poster] + 1)
    pp->out_of_order = 1;
  pp->last_seq[job->poster] = job->seq;
  signal_raise(&job->run->done);
}

typedef struct poster_s {
  post_run_t* run;
  int index;
  post_job_t* jobs; /* POST_PORTS * POST_JOBS */
  int failed;
} poster_t;

static void poster_main(void* arg) {
  poster_t* p = arg;
  int seq;
  unsigned port;
  for (seq = 1; seq <= POST_JOBS; seq++) {
    for (port = 0; port < POST_PORTS; port++) {
      post_job_t* job = &p->jobs[(size_t)(seq - 1) * POST_PORTS + port];
      job->run = p->run;
      job->port = port;
      job->poster = p->index;
      job->seq = seq;
      if (cport_core_post(p->run->core, port, post_job_fn, job) != 0)
        p->failed = 1;
    }
  }
}

static void test_core_post_runs_jobs_on_each_loop_thread_in_order(
    void** state) {
  cport_core_opts_t opts;
  post_run_t run;
  poster_t posters[POST_THREADS];
  uv_thread_t threads[POST_THREADS];
  const int total = POST_THREADS * POST_PORTS * POST_JOBS;
  int i;
  unsigned port;
  (void)state;
  memset(&run, 0, sizeof(run));
  signal_init(&run.done);
  cport_core_opts_init(&opts);
  opts.loops = POST_PORTS;
  assert_int_equal(cport_core_create(&run.core, &opts), 0);
  assert_int_equal(cport_core_run(run.core), 0);
  /* Several threads post at once; each one's jobs must run in its order. */
  for (i = 0; i < POST_THREADS; i++) {
    posters[i].run = &run;
    posters[i].index = i;
    posters[i].failed = 0;
    posters[i].jobs =
        calloc((size_t)POST_PORTS * POST_JOBS, sizeof(post_job_t));
    assert_non_null(posters[i].jobs);
    assert_int_equal(uv_thread_create(&threads[i], poster_main, &posters[i]),
                     0);
  }
  for (i = 0; i < POST_THREADS; i++) uv_thread_join(&threads[i]);
  if (!signal_wait(&run.done, total, FIXTURE_TIMEOUT_MS))
    fail_msg("%d of %d posted jobs ran", signal_count(&run.done), total);
  /* Each loop has a thread of its own, and none is the caller's. Compared
   * while the threads live: on Windows a joined thread's identity is gone. */
  for (port = 0; port < POST_PORTS; port++) {
    post_port_t* pp = &run.ports[port];
    uv_thread_t self = uv_thread_self();
    assert_false(uv_thread_equal(&pp->thread, &self));
    if (port > 0)
      assert_false(uv_thread_equal(&pp->thread, &run.ports[port - 1].thread));
  }
  assert_int_equal(cport_core_stop(run.core), 0);
  join_bounded(run.core);
  for (i = 0; i < POST_THREADS; i++) {
    assert_false(posters[i].failed);
    free(posters[i].jobs);
  }
  for (port = 0; port < POST_PORTS; port++) {
    post_port_t* pp = &run.ports[port];
    assert_int_equal(pp->seen, POST_THREADS * POST_JOBS);
    assert_false(pp->other_thread);
    assert_false(pp->out_of_order);
  }
  cport_core_destroy(run.core);
  signal_destroy(&run.done);
}


static void count_job(void* arg) {
  (*(int*)arg)++;
}


static void test_core_post_rejects_bad_arguments(void** state) {
  fixture_t* fx = *state;
  int n = 0;
  assert_int_equal(cport_core_post(NULL, 0, count_job, &n), UV_EINVAL);
  assert_int_equal(cport_core_post(fx->core, 1, count_job, &n), UV_EINVAL);
  assert_int_equal(cport_core_post(fx->core, 0, NULL, &n), UV_EINVAL);
  cport__mem_fail_after(0);
  assert_int_equal(cport_core_post(fx->core, 0, count_job, &n), UV_ENOMEM);
  cport__mem_fail_after(-1);
  assert_int_equal(cport_core_dispatch(fx->core, 0, 0), 0);
  assert_int_equal(n, 0);
}


static void test_core_post_runs_at_the_next_dispatch(void** state) {
  fixture_t* fx = *state;
  int n = 0;
  assert_int_equal(cport_core_post(fx->core, 0, count_job, &n), 0);
  assert_int_equal(cport_core_post(fx->core, 0, count_job, &n), 0);
  assert_int_equal(n, 0); /* never inside the post */
  /* Nothing else is alive on the loop: the dispatch itself runs them. */
  cport_core_dispatch(fx->core, 0, 0);
  assert_int_equal(n, 2);
  cport_core_dispatch(fx->core, 0, 0);
  assert_int_equal(n, 2); /* each once */
}


static void test_core_destroy_runs_jobs_still_queued(void** state) {
  cport_core_t* core = NULL;
  int n = 0;
  (void)state;
  assert_int_equal(cport_core_create(&core, NULL), 0);
  assert_int_equal(cport_core_post(core, 0, count_job, &n), 0);
  cport_core_destroy(core);
  assert_int_equal(n, 1);
}


/* ---- a service on another loop ---- */

typedef struct two_ports_s {
  int echoed;
} two_ports_t;

static size_t echo_recv(cport_session_t* s, const uint8_t* data, size_t len) {
  return cport_session_send(s, data, len) == 0 ? len : 0;
}

static void hello_connected(cport_session_t* s) {
  assert_int_equal(cport_session_send(s, "hello", 5), 0);
}

static size_t hello_recv(cport_session_t* s, const uint8_t* data, size_t len) {
  two_ports_t* t = cport_service_get_data(cport_session_service(s));
  if (len == 5 && memcmp(data, "hello", 5) == 0)
    t->echoed++;
  return len;
}

static void test_core_services_on_two_loops_talk(void** state) {
  cport_core_opts_t copts;
  cport_service_opts_t o;
  cport_core_t* core = NULL;
  cport_service_t* server = NULL;
  cport_service_t* client = NULL;
  cport_addr_t addr;
  two_ports_t t = {0};
  int i;
  (void)state;
  cport_core_opts_init(&copts);
  copts.loops = 2;
  assert_int_equal(cport_core_create(&core, &copts), 0);
  assert_int_equal(cport_addr_parse(&addr, "127.0.0.1", 0), 0);
  cport_service_opts_init(&o);
  o.cbs.on_recv = echo_recv;
  o.loop = 1;
  assert_int_equal(
      cport_service_create(&server, core, CPORT_SERVICE_SERVER, &addr, &o), 0);
  assert_int_equal(cport_service_start(server), 0);
  assert_int_equal(cport_service_local_addr(server, &addr), 0);
  cport_service_opts_init(&o);
  o.cbs.on_connected = hello_connected;
  o.cbs.on_recv = hello_recv;
  o.data = &t;
  o.loop = 0;
  assert_int_equal(
      cport_service_create(&client, core, CPORT_SERVICE_CLIENT, &addr, &o), 0);
  assert_int_equal(cport_service_start(client), 0);
  /* One thread drives both loops in turn (bounded: 2000 x 2 ms). */
  for (i = 0; i < 2000 && t.echoed == 0; i++) {
    cport_core_dispatch(core, 0, 1);
    cport_core_dispatch(core, 1, 1);
  }
  assert_int_equal(t.echoed, 1);
  cport_service_destroy(client);
  cport_service_destroy(server);
  cport_core_destroy(core);
}


#ifndef _WIN32
#include <signal.h>

static void app_sigpipe_handler(int sig) {
  (void)sig;
}


/* SIGPIPE's disposition is process-wide, so the three cases run in one test,
 * in order: opted out, an application handler, the default. */
static void test_core_sigpipe_ignored_only_when_default(void** state) {
  cport_core_opts_t opts;
  cport_core_t* core = NULL;
  struct sigaction sa;
  struct sigaction saved;
  (void)state;
  assert_int_equal(sigaction(SIGPIPE, NULL, &saved), 0);
  signal(SIGPIPE, SIG_DFL);
  cport_core_opts_init(&opts);
  opts.ignore_sigpipe = 0;
  assert_int_equal(cport_core_create(&core, &opts), 0);
  cport_core_destroy(core);
  assert_int_equal(sigaction(SIGPIPE, NULL, &sa), 0);
  assert_true(sa.sa_handler == SIG_DFL);
  /* An application's own handler is kept. */
  signal(SIGPIPE, app_sigpipe_handler);
  assert_int_equal(cport_core_create(&core, NULL), 0);
  cport_core_destroy(core);
  assert_int_equal(sigaction(SIGPIPE, NULL, &sa), 0);
  assert_true(sa.sa_handler == app_sigpipe_handler);
  /* The default action, which would kill the process, is replaced. */
  signal(SIGPIPE, SIG_DFL);
  assert_int_equal(cport_core_create(&core, NULL), 0);
  cport_core_destroy(core);
  assert_int_equal(sigaction(SIGPIPE, NULL, &sa), 0);
  assert_true(sa.sa_handler == SIG_IGN);
  assert_int_equal(sigaction(SIGPIPE, &saved, NULL), 0);
}
#else
static void test_core_sigpipe_ignored_only_when_default(void** state) {
  (void)state;
  print_message(
      "skipped on Windows: there is no SIGPIPE; a write to a "
      "vanished peer fails with WSAECONNRESET instead\n");
  skip();
}
#endif


static void test_core_opts_init_sets_defaults(void** state) {
  cport_core_opts_t opts;
  (void)state;
  memset(&opts, 0xff, sizeof(opts));
  cport_core_opts_init(&opts);
  assert_int_equal(opts.loops, 1);
  assert_null(opts.uv_loop);
  assert_int_not_equal(opts.ignore_sigpipe, 0);
  cport_core_opts_init(NULL); /* must not crash */
}


static void test_core_loops_and_uv_loop_reject_bad_arguments(void** state) {
  fixture_t* fx = *state;
  assert_int_equal(cport_core_loops(fx->core), 1);
  assert_int_equal(cport_core_loops(NULL), 0);
  assert_non_null(cport_core_uv_loop(fx->core, 0));
  assert_ptr_equal(cport_core_uv_loop(fx->core, 0), fx->loop);
  assert_null(cport_core_uv_loop(fx->core, 1));
  assert_null(cport_core_uv_loop(fx->core, UINT_MAX));
  assert_null(cport_core_uv_loop(NULL, 0));
}


static void test_core_null_arguments_are_rejected(void** state) {
  (void)state;
  cport_core_destroy(NULL); /* must not crash */
  assert_int_equal(cport_core_stop(NULL), UV_EINVAL);
  assert_int_equal(cport_core_join(NULL), UV_EINVAL);
  assert_int_equal(cport_core_run(NULL), UV_EINVAL);
  assert_int_equal(cport_core_run_here(NULL), UV_EINVAL);
  assert_int_equal(cport_core_dispatch(NULL, 0, 0), UV_EINVAL);
}


/* ---- cport_core_dispatch ---- */

static void test_core_dispatch_rejects_bad_loop(void** state) {
  fixture_t* fx = *state;
  assert_int_equal(cport_core_dispatch(fx->core, 1, 0), UV_EINVAL);
  assert_int_equal(cport_core_dispatch(fx->core, UINT_MAX, 0), UV_EINVAL);
  assert_int_equal(cport_core_dispatch(fx->core, 1, -1), UV_EINVAL);
  assert_int_equal(cport_core_dispatch(NULL, 0, 50), UV_EINVAL);
}


static void test_core_dispatch_poll_returns_promptly(void** state) {
  fixture_t* fx = *state;
  uint64_t start = uv_hrtime();
  assert_int_equal(cport_core_dispatch(fx->core, 0, 0), 0);
  /* Generous bound: it must not wait for events, not be fast (a loaded
   * machine may hold the thread off the CPU for a while). */
  assert_true(uv_hrtime() - start < 10000 * (uint64_t)NS_PER_MS);
}


static void test_core_dispatch_waits_for_timeout_without_events(void** state) {
  fixture_t* fx = *state;
  uint64_t start = uv_hrtime();
  uint64_t elapsed;
  int rc = cport_core_dispatch(fx->core, 0, 50);
  elapsed = uv_hrtime() - start;
  /* cport's own timer that bounds the wait is no work of the loop. */
  assert_int_equal(rc, 0);
  if (elapsed < 40 * (uint64_t)NS_PER_MS)
    fail_msg("dispatch(50 ms) returned after %llu ms",
             (unsigned long long)(elapsed / NS_PER_MS));
  assert_true(elapsed < 5000 * (uint64_t)NS_PER_MS);
}


static void test_core_dispatch_reports_pending_work(void** state) {
  fixture_t* fx = *state;
  probe_t p;
  uint64_t start;
  uint64_t elapsed;
  probe_init(&p, fx->core);
  probe_start_timer(&p, 60000);
  start = uv_hrtime();
  /* The timer is far off: dispatch times out but reports it as work. */
  assert_int_equal(cport_core_dispatch(fx->core, 0, 50), 1);
  elapsed = uv_hrtime() - start;
  assert_true(elapsed >= 40 * (uint64_t)NS_PER_MS);
  assert_true(elapsed < 5000 * (uint64_t)NS_PER_MS);
  assert_int_equal(signal_count(&p.fired), 0);
  assert_int_equal(cport_core_dispatch(fx->core, 0, 0), 1);
  probe_close(&p, (uv_handle_t*)&p.timer);
  assert_int_equal(cport_core_dispatch(fx->core, 0, 0), 0);
  probe_destroy(&p);
}


static void test_core_dispatch_runs_timer_callback(void** state) {
  fixture_t* fx = *state;
  uint64_t deadline = uv_hrtime() + (uint64_t)FIXTURE_TIMEOUT_MS * NS_PER_MS;
  probe_t p;
  int rc = 1;
  probe_init(&p, fx->core);
  probe_start_timer(&p, 5);
  assert_int_equal(cport_core_dispatch(fx->core, 0, 0), 1);
  while (signal_count(&p.fired) == 0) {
    if (uv_hrtime() >= deadline)
      fail_msg("timer did not fire within %d ms", FIXTURE_TIMEOUT_MS);
    rc = cport_core_dispatch(fx->core, 0, 100);
    assert_true(rc >= 0);
  }
  assert_int_equal(signal_count(&p.fired), 1);
  /* The callback ran inside dispatch, on the calling thread. */
  assert_true(signal_raised_on_this_thread(&p.fired));
  /* A one-shot timer that has fired is no more work. */
  assert_int_equal(rc, 0);
  probe_close(&p, (uv_handle_t*)&p.timer);
  probe_destroy(&p);
}


static void test_core_dispatch_returns_after_first_event(void** state) {
  fixture_t* fx = *state;
  probe_t p;
  uint64_t start;
  uint64_t elapsed;
  probe_init(&p, fx->core);
  probe_start_timer(&p, 10);
  start = uv_hrtime();
  /* The timeout is an upper bound: the timer ends the wait long before. */
  assert_true(cport_core_dispatch(fx->core, 0, 60000) >= 0);
  elapsed = uv_hrtime() - start;
  assert_int_equal(signal_count(&p.fired), 1);
  assert_true(elapsed < 30000 * (uint64_t)NS_PER_MS);
  probe_close(&p, (uv_handle_t*)&p.timer);
  probe_destroy(&p);
}


static void stale_watchdog_cb(uv_timer_t* t) {
  (void)t;
}


static void stale_watchdog_close_cb(uv_handle_t* h) {
  *(int*)h->data = 1;
}


static void test_core_dispatch_timeout_holds_when_loop_time_is_stale(
    void** state) {
  fixture_t* fx = *state;
  /* Static: a failed assertion leaves the test before the close. */
  static uv_timer_t watchdog;
  int closed = 0;
  uint64_t spin_until;
  uint64_t start;
  uint64_t elapsed;
  /* A listener keeps the loop alive, so an unbounded poll would block. */
  fixture_start_server(fx);
  assert_int_equal(uv_timer_init(fx->loop, &watchdog), 0);
  assert_int_equal(uv_timer_start(&watchdog, stale_watchdog_cb, 60000, 0), 0);
  assert_true(cport_core_dispatch(fx->core, 0, 0) >= 0);
  /* Work done outside the loop (a long callback, say) leaves the loop's
   * cached time behind the clock. */
  spin_until = uv_hrtime() + 20 * (uint64_t)NS_PER_MS;
  while (uv_hrtime() < spin_until) {
  }
  start = uv_hrtime();
  assert_true(cport_core_dispatch(fx->core, 0, 5) >= 0);
  elapsed = uv_hrtime() - start;
  /* Far below the watchdog's minute, which a poll without the bound would
   * wait for. */
  if (elapsed >= 20000 * (uint64_t)NS_PER_MS)
    fail_msg("dispatch(5 ms) took %llu ms",
             (unsigned long long)(elapsed / NS_PER_MS));
  watchdog.data = &closed;
  uv_close((uv_handle_t*)&watchdog, stale_watchdog_close_cb);
  fixture_wait_int(fx, &closed, 1, FIXTURE_TIMEOUT_MS);
}


/* ---- cport_core_run ---- */

static void test_core_run_fires_async_on_loop_thread(void** state) {
  fixture_t* fx = *state;
  probe_t p;
  probe_init(&p, fx->core);
  probe_init_async(&p);
  assert_int_equal(cport_core_run(fx->core), 0);
  assert_int_equal(uv_async_send(&p.async), 0);
  if (!signal_wait(&p.fired, 1, FIXTURE_TIMEOUT_MS))
    fail_msg("async callback did not run within %d ms", FIXTURE_TIMEOUT_MS);
  assert_false(signal_raised_on_this_thread(&p.fired));
  assert_int_equal(cport_core_stop(fx->core), 0);
  join_bounded(fx->core);
  probe_close(&p, (uv_handle_t*)&p.async);
  assert_int_equal(signal_count(&p.fired), 1);
  probe_destroy(&p);
}


static void test_core_run_fires_timer_added_before_run(void** state) {
  fixture_t* fx = *state;
  probe_t p;
  probe_init(&p, fx->core);
  probe_start_timer(&p, 1);
  assert_int_equal(cport_core_run(fx->core), 0);
  if (!signal_wait(&p.fired, 1, FIXTURE_TIMEOUT_MS))
    fail_msg("timer callback did not run within %d ms", FIXTURE_TIMEOUT_MS);
  assert_false(signal_raised_on_this_thread(&p.fired));
  assert_int_equal(cport_core_stop(fx->core), 0);
  join_bounded(fx->core);
  probe_close(&p, (uv_handle_t*)&p.timer);
  probe_destroy(&p);
}


static void test_core_dispatch_while_running_returns_ebusy(void** state) {
  fixture_t* fx = *state;
  uint64_t start;
  assert_int_equal(cport_core_run(fx->core), 0);
  start = uv_hrtime();
  assert_int_equal(cport_core_dispatch(fx->core, 0, 0), UV_EBUSY);
  assert_int_equal(cport_core_dispatch(fx->core, 0, 5000), UV_EBUSY);
  /* Refused at once, without waiting out the timeout. */
  assert_true(uv_hrtime() - start < 2500 * (uint64_t)NS_PER_MS);
  assert_int_equal(cport_core_stop(fx->core), 0);
  join_bounded(fx->core);
  /* Once joined, the test thread may drive the loop again. */
  assert_int_equal(cport_core_dispatch(fx->core, 0, 0), 0);
}


static void test_core_run_twice_returns_ebusy(void** state) {
  fixture_t* fx = *state;
  assert_int_equal(cport_core_run(fx->core), 0);
  assert_int_equal(cport_core_run(fx->core), UV_EBUSY);
  assert_int_equal(cport_core_run_here(fx->core), UV_EBUSY);
  assert_int_equal(cport_core_stop(fx->core), 0);
  /* Stopped but not joined: the thread may still run, so still busy. */
  assert_int_equal(cport_core_run(fx->core), UV_EBUSY);
  assert_int_equal(cport_core_stop(fx->core), 0); /* twice is fine */
  join_bounded(fx->core);
}


static void test_core_stop_from_loop_callback_ends_run(void** state) {
  fixture_t* fx = *state;
  probe_t p;
  probe_init(&p, fx->core);
  p.stop_core_in_callback = 1;
  probe_start_timer(&p, 1);
  assert_int_equal(cport_core_run(fx->core), 0);
  if (!signal_wait(&p.fired, 1, FIXTURE_TIMEOUT_MS))
    fail_msg("timer callback did not run within %d ms", FIXTURE_TIMEOUT_MS);
  /* No cport_core_stop() from this thread: the callback's must suffice. */
  join_bounded(fx->core);
  assert_int_equal(p.stop_rc, 0);
  probe_close(&p, (uv_handle_t*)&p.timer);
  probe_destroy(&p);
}


static void test_core_run_again_after_join(void** state) {
  fixture_t* fx = *state;
  probe_t p;
  probe_init(&p, fx->core);
  probe_init_async(&p);

  assert_int_equal(cport_core_run(fx->core), 0);
  assert_int_equal(uv_async_send(&p.async), 0);
  if (!signal_wait(&p.fired, 1, FIXTURE_TIMEOUT_MS))
    fail_msg("first run: no callback within %d ms", FIXTURE_TIMEOUT_MS);
  assert_int_equal(cport_core_stop(fx->core), 0);
  join_bounded(fx->core);

  assert_int_equal(cport_core_run(fx->core), 0);
  assert_int_equal(uv_async_send(&p.async), 0);
  if (!signal_wait(&p.fired, 2, FIXTURE_TIMEOUT_MS))
    fail_msg("second run: no callback within %d ms", FIXTURE_TIMEOUT_MS);
  assert_false(signal_raised_on_this_thread(&p.fired));
  assert_int_equal(cport_core_stop(fx->core), 0);
  join_bounded(fx->core);

  probe_close(&p, (uv_handle_t*)&p.async);
  probe_destroy(&p);
}


static void test_core_stop_before_run_does_not_cancel_next_run(void** state) {
  fixture_t* fx = *state;
  probe_t p;
  probe_init(&p, fx->core);
  probe_init_async(&p);
  /* Nothing runs yet: stop and join are harmless no-ops. */
  assert_int_equal(cport_core_stop(fx->core), 0);
  assert_int_equal(cport_core_join(fx->core), 0);
  assert_int_equal(cport_core_run(fx->core), 0);
  /* The loop thread must still be serving the loop. */
  assert_int_equal(uv_async_send(&p.async), 0);
  if (!signal_wait(&p.fired, 1, FIXTURE_TIMEOUT_MS))
    fail_msg("no callback within %d ms after run", FIXTURE_TIMEOUT_MS);
  assert_int_equal(cport_core_stop(fx->core), 0);
  join_bounded(fx->core);
  probe_close(&p, (uv_handle_t*)&p.async);
  probe_destroy(&p);
}


static void test_core_join_without_run_returns_zero(void** state) {
  fixture_t* fx = *state;
  assert_int_equal(cport_core_join(fx->core), 0);
  assert_int_equal(cport_core_join(fx->core), 0);
}


typedef struct inside_s {
  cport_core_t* core;
  int ran;
  int rc_join;
  int rc_run;
  int rc_run_here;
  char lines[2048];
  int nlines;
} inside_t;

/* A job on the core's own loop calls what would wait for that loop or
 * free it. */
static void inside_job(void* arg) {
  inside_t* in = arg;
  (void)log_capture_take(in->lines, sizeof(in->lines));
  in->rc_join = cport_core_join(in->core);
  in->rc_run = cport_core_run(in->core);
  in->rc_run_here = cport_core_run_here(in->core);
  cport_core_destroy(in->core);
  in->nlines = log_capture_take(in->lines, sizeof(in->lines));
  in->ran++;
}

/* Join, run and destroy from a job that cport_core_dispatch() runs return
 * CPORT_EWRONGTHREAD (destroy: does nothing) in every build, with one
 * error line each naming the function; the core goes on working. */
static void test_core_owner_calls_refuse_its_own_loop(void** state) {
  fixture_t* fx = *state;
  inside_t in;
  int after = 0;
  static const char* const fns[] = {"cport_core_join: ", "cport_core_run: ",
                                    "cport_core_run_here: ",
                                    "cport_core_destroy: "};
  size_t i;
  memset(&in, 0, sizeof(in));
  in.core = fx->core;
  log_capture_begin(CPORT_LOG_WARN);
  assert_int_equal(cport_core_post(fx->core, 0, inside_job, &in), 0);
  fixture_wait_int(fx, &in.ran, 1, FIXTURE_TIMEOUT_MS);
  log_capture_end();
  assert_int_equal(in.rc_join, CPORT_EWRONGTHREAD);
  assert_int_equal(in.rc_run, CPORT_EWRONGTHREAD);
  assert_int_equal(in.rc_run_here, CPORT_EWRONGTHREAD);
  assert_int_equal(in.nlines, 4);
  for (i = 0; i < sizeof(fns) / sizeof(fns[0]); i++)
    if (strstr(in.lines, fns[i]) == NULL)
      fail_msg("no line for %s in:\n%s", fns[i], in.lines);
  assert_int_equal(cport_core_post(fx->core, 0, count_job, &after), 0);
  fixture_wait_int(fx, &after, 1, FIXTURE_TIMEOUT_MS);
}


/* cport_core_create's refusals each log one line naming the field. */
static void test_core_create_logs_each_refusal(void** state) {
  cport_core_t* core = NULL;
  cport_core_opts_t opts;
  char lines[1024];
  uv_loop_t app_loop;
  (void)state;
  log_capture_begin(CPORT_LOG_WARN);
  cport_core_opts_init(&opts);
  opts.loops = 0;
  assert_int_equal(cport_core_create(&core, &opts), UV_EINVAL);
  assert_int_equal(log_capture_take(lines, sizeof(lines)), 1);
  assert_non_null(strstr(lines, "cport_core_create: opts.loops 0: must be 1 to 256"));
  opts.loops = 2;
  opts.uv_loop = &app_loop; /* never touched: refused first */
  assert_int_equal(cport_core_create(&core, &opts), UV_EINVAL);
  assert_int_equal(log_capture_take(lines, sizeof(lines)), 1);
  assert_non_null(strstr(lines, "opts.loops 2: must be 1 with opts.uv_loop"));
  assert_int_equal(cport_core_create(NULL, NULL), UV_EINVAL);
  assert_int_equal(log_capture_take(lines, sizeof(lines)), 1);
  assert_non_null(strstr(lines, "cport_core_create: out is NULL"));
  log_capture_end();
  assert_null(core);
}


static void test_core_destroy_stops_running_threads(void** state) {
  cport_core_t* core = NULL;
  (void)state;
  assert_int_equal(cport_core_create(&core, NULL), 0);
  assert_int_equal(cport_core_run(core), 0);
  /* Destroy stops and joins by itself; mem_teardown proves it freed all. */
  assert_int_equal(call_bounded(do_destroy, core, "cport_core_destroy"), 0);
}


/* ---- cport_core_run_here ---- */

#define HERE_PORTS 3

/* What the jobs of a cport_core_run_here() test saw. Each job runs once, on
 * its loop; the watchdog, an unreferenced timer on port 0, stops the core if
 * the test's own stop never comes. */
typedef struct here_run_s {
  cport_core_t* core;
  uv_thread_t caller;
  uv_timer_t watchdog;
  int watchdog_fired;
  signal_t ran;
  int on_caller[HERE_PORTS];
  int nested_run_rc;
  int nested_dispatch_rc;
  int stop_in_job;
} here_run_t;

typedef struct here_job_s {
  here_run_t* run;
  unsigned port;
} here_job_t;


static void here_watchdog_cb(uv_timer_t* t) {
  here_run_t* run = t->data;
  run->watchdog_fired = 1;
  cport_core_stop(run->core);
}


static void here_job(void* arg) {
  here_job_t* job = arg;
  here_run_t* run = job->run;
  uv_thread_t self = uv_thread_self();
  run->on_caller[job->port] = uv_thread_equal(&self, &run->caller) ? 1 : -1;
  if (job->port == 0) {
    /* The core is running: neither may start it again from inside. */
    run->nested_run_rc = cport_core_run_here(run->core);
    run->nested_dispatch_rc = cport_core_dispatch(run->core, 0, 0);
    if (run->stop_in_job)
      cport_core_stop(run->core);
  }
  signal_raise(&run->ran);
}


static void here_run_init(here_run_t* run, unsigned ports) {
  cport_core_opts_t opts;
  memset(run, 0, sizeof(*run));
  signal_init(&run->ran);
  run->caller = uv_thread_self();
  cport_core_opts_init(&opts);
  opts.loops = ports;
  assert_int_equal(cport_core_create(&run->core, &opts), 0);
  assert_int_equal(uv_timer_init(cport_core_uv_loop(run->core, 0), &run->watchdog),
                   0);
  run->watchdog.data = run;
  assert_int_equal(
      uv_timer_start(&run->watchdog, here_watchdog_cb, FIXTURE_TIMEOUT_MS, 0),
      0);
  uv_unref((uv_handle_t*)&run->watchdog);
}


static void here_run_destroy(here_run_t* run) {
  assert_false(run->watchdog_fired);
  uv_close((uv_handle_t*)&run->watchdog, NULL);
  cport_core_destroy(run->core);
  signal_destroy(&run->ran);
}


static void test_core_run_here_runs_loop_on_caller_until_stop(void** state) {
  here_run_t run;
  here_job_t job;
  (void)state;
  here_run_init(&run, 1);
  run.stop_in_job = 1;
  job.run = &run;
  job.port = 0;
  /* Posted before the run: the wake-up is pending when the loop starts. */
  assert_int_equal(cport_core_post(run.core, 0, here_job, &job), 0);
  assert_int_equal(cport_core_run_here(run.core), 0);
  assert_int_equal(signal_count(&run.ran), 1);
  assert_int_equal(run.on_caller[0], 1);
  assert_int_equal(run.nested_run_rc, UV_EBUSY);
  assert_int_equal(run.nested_dispatch_rc, UV_EBUSY);
  /* Returned and not running: this thread drives the loop again. */
  assert_int_equal(cport_core_dispatch(run.core, 0, 0), 0);
  here_run_destroy(&run);
}


typedef struct here_stopper_s {
  here_run_t* run;
  int waited;
} here_stopper_t;


static void here_stopper_main(void* arg) {
  here_stopper_t* st = arg;
  st->waited = signal_wait(&st->run->ran, HERE_PORTS, FIXTURE_TIMEOUT_MS);
  cport_core_stop(st->run->core);
}


static void test_core_run_here_starts_other_loops_and_stops_from_any_thread(
    void** state) {
  here_run_t run;
  here_job_t jobs[HERE_PORTS];
  here_stopper_t stopper;
  uv_thread_t thread;
  unsigned port;
  (void)state;
  here_run_init(&run, HERE_PORTS);
  for (port = 0; port < HERE_PORTS; port++) {
    jobs[port].run = &run;
    jobs[port].port = port;
    assert_int_equal(cport_core_post(run.core, port, here_job, &jobs[port]), 0);
  }
  stopper.run = &run;
  stopper.waited = 0;
  assert_int_equal(uv_thread_create(&thread, here_stopper_main, &stopper), 0);
  assert_int_equal(cport_core_run_here(run.core), 0);
  assert_int_equal(uv_thread_join(&thread), 0);
  assert_true(stopper.waited);
  /* Loop 0 ran here; the others on threads of their own, joined by now. */
  assert_int_equal(run.on_caller[0], 1);
  for (port = 1; port < HERE_PORTS; port++)
    assert_int_equal(run.on_caller[port], -1);
  /* A second run starts cleanly after the first one's stop. */
  run.stop_in_job = 1;
  assert_int_equal(cport_core_post(run.core, 0, here_job, &jobs[0]), 0);
  assert_int_equal(cport_core_run_here(run.core), 0);
  assert_int_equal(signal_count(&run.ran), HERE_PORTS + 1);
  here_run_destroy(&run);
}


/* ---- embedding on an application's loop ---- */

/* An unreferenced timer that ends a uv_run() that would otherwise block
 * forever, without itself keeping the loop alive. */
typedef struct watchdog_s {
  uv_timer_t timer;
  int fired;
  int closed;
} watchdog_t;


static void watchdog_cb(uv_timer_t* t) {
  watchdog_t* w = t->data;
  w->fired++;
  uv_stop(t->loop);
}


static void watchdog_close_cb(uv_handle_t* h) {
  watchdog_t* w = h->data;
  w->closed = 1;
}


static void watchdog_start(watchdog_t* w,
                           uv_loop_t* loop,
                           uint64_t timeout_ms,
                           uint64_t repeat_ms) {
  memset(w, 0, sizeof(*w));
  assert_int_equal(uv_timer_init(loop, &w->timer), 0);
  w->timer.data = w;
  assert_int_equal(
      uv_timer_start(&w->timer, watchdog_cb, timeout_ms, repeat_ms), 0);
  uv_unref((uv_handle_t*)&w->timer);
}


/* Run `loop` without blocking until nothing is left on it, then close it.
 * Close callbacks (cport's included) run during these rounds. */
static void app_loop_drain_and_close(uv_loop_t* loop) {
  uint64_t deadline = uv_hrtime() + (uint64_t)FIXTURE_TIMEOUT_MS * NS_PER_MS;
  while (uv_run(loop, UV_RUN_NOWAIT) != 0) {
    if (uv_hrtime() >= deadline)
      fail_msg("application loop still busy after %d ms", FIXTURE_TIMEOUT_MS);
  }
  assert_int_equal(uv_loop_close(loop), 0);
}


static void test_core_embedded_uses_app_loop(void** state) {
  uv_loop_t loop;
  cport_core_opts_t opts;
  cport_core_t* core = NULL;
  watchdog_t w;
  uint64_t start;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  cport_core_opts_init(&opts);
  opts.uv_loop = &loop;
  assert_int_equal(cport_core_create(&core, &opts), 0);
  assert_ptr_equal(cport_core_uv_loop(core, 0), &loop);
  assert_int_equal(cport_core_loops(core), 1);
  /* The application drives an embedded loop; cport starts no thread. */
  assert_int_equal(cport_core_run(core), UV_EINVAL);
  assert_int_equal(cport_core_run_here(core), UV_EINVAL);

  /* cport's handles must not keep the application's loop alive. */
  assert_int_equal(uv_loop_alive(&loop), 0);
  watchdog_start(&w, &loop, 5000, 0);
  start = uv_hrtime();
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(w.fired, 0);
  assert_true(uv_hrtime() - start < 2500 * (uint64_t)NS_PER_MS);

  uv_close((uv_handle_t*)&w.timer, watchdog_close_cb);
  cport_core_destroy(core);
  app_loop_drain_and_close(&loop);
  assert_int_equal(w.closed, 1);
}


typedef struct app_timer_s {
  uv_timer_t timer;
  int fired;
} app_timer_t;


static void app_timer_cb(uv_timer_t* t) {
  app_timer_t* a = t->data;
  a->fired++;
}


/* cport_core_stop() asks the threads of cport_core_run() to return; an
 * embedded core has none, so the application's own uv_run() must go on. */
static void test_core_stop_on_embedded_core_does_not_stop_app_loop(
    void** state) {
  uv_loop_t loop;
  cport_core_opts_t opts;
  cport_core_t* core = NULL;
  app_timer_t a;
  watchdog_t w;
  uint64_t deadline = uv_hrtime() + (uint64_t)FIXTURE_TIMEOUT_MS * NS_PER_MS;
  int fired_in_first_run;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  cport_core_opts_init(&opts);
  opts.uv_loop = &loop;
  assert_int_equal(cport_core_create(&core, &opts), 0);
  memset(&a, 0, sizeof(a));
  assert_int_equal(uv_timer_init(&loop, &a.timer), 0);
  a.timer.data = &a;
  assert_int_equal(uv_timer_start(&a.timer, app_timer_cb, 30, 0), 0);

  assert_int_equal(cport_core_stop(core), 0);
  /* The timer is the loop's only referenced work: uv_run returns once it
   * has fired. The watchdog bounds the run if cport kept the loop alive. */
  watchdog_start(&w, &loop, 5000, 0);
  (void)uv_run(&loop, UV_RUN_DEFAULT);
  fired_in_first_run = a.fired;
  /* Clean up before asserting, so that a failure does not leak into the
   * next tests: let a timer that was cut short fire. Each round ends at
   * the latest when that 30 ms timer fires. */
  while (a.fired == 0 && uv_hrtime() < deadline)
    (void)uv_run(&loop, UV_RUN_ONCE);
  uv_close((uv_handle_t*)&a.timer, NULL);
  uv_close((uv_handle_t*)&w.timer, watchdog_close_cb);
  cport_core_destroy(core);
  app_loop_drain_and_close(&loop);
  assert_int_equal(w.fired, 0);
  if (fired_in_first_run != 1)
    fail_msg(
        "uv_run(UV_RUN_DEFAULT) returned before the application's "
        "timer fired (fired %d times): cport_core_stop() stopped the "
        "embedding loop",
        fired_in_first_run);
}


static void test_core_dispatch_on_embedded_core_runs_app_loop(void** state) {
  uv_loop_t loop;
  cport_core_opts_t opts;
  cport_core_t* core = NULL;
  app_timer_t a;
  uint64_t deadline = uv_hrtime() + (uint64_t)FIXTURE_TIMEOUT_MS * NS_PER_MS;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  cport_core_opts_init(&opts);
  opts.uv_loop = &loop;
  assert_int_equal(cport_core_create(&core, &opts), 0);
  memset(&a, 0, sizeof(a));
  assert_int_equal(uv_timer_init(&loop, &a.timer), 0);
  a.timer.data = &a;
  assert_int_equal(uv_timer_start(&a.timer, app_timer_cb, 5, 0), 0);
  /* The application's timer is the loop's work, and dispatch runs it. */
  assert_int_equal(cport_core_dispatch(core, 0, 0), 1);
  while (a.fired == 0 && uv_hrtime() < deadline)
    assert_true(cport_core_dispatch(core, 0, 100) >= 0);
  assert_int_equal(a.fired, 1);
  assert_int_equal(cport_core_dispatch(core, 0, 0), 0);
  uv_close((uv_handle_t*)&a.timer, NULL);
  cport_core_destroy(core);
  app_loop_drain_and_close(&loop);
}


typedef struct embed_server_s {
  int connected;
  int disconnected;
  int last_code;
  size_t received;
} embed_server_t;


static embed_server_t* embed_of(cport_session_t* s) {
  return cport_service_get_data(cport_session_service(s));
}


static void embed_on_connected(cport_session_t* s) {
  embed_of(s)->connected++;
}


static size_t embed_on_recv(cport_session_t* s,
                            const uint8_t* data,
                            size_t len) {
  (void)data;
  embed_of(s)->received += len;
  return len;
}


static void embed_on_disconnected(cport_session_t* s,
                                  int code,
                                  const char* cause) {
  embed_server_t* e = embed_of(s);
  (void)cause;
  e->disconnected++;
  e->last_code = code;
}


typedef struct app_client_s {
  uv_tcp_t tcp;
  uv_connect_t connect;
  uv_write_t write;
  int connected;
  int connect_status;
  int written;
  int closed;
} app_client_t;


static void app_client_connect_cb(uv_connect_t* req, int status) {
  app_client_t* c = req->data;
  c->connect_status = status;
  c->connected = 1;
}


static void app_client_write_cb(uv_write_t* req, int status) {
  app_client_t* c = req->data;
  c->written = status == 0 ? 1 : -1;
}


static void app_client_close_cb(uv_handle_t* h) {
  app_client_t* c = h->data;
  c->closed = 1;
}


/* Run the application loop one round at a time until `*counter` reaches
 * `target`; the caller's repeating watchdog bounds each round. */
static void app_run_until(uv_loop_t* loop,
                          const int* counter,
                          int target,
                          const char* what) {
  uint64_t deadline = uv_hrtime() + (uint64_t)FIXTURE_TIMEOUT_MS * NS_PER_MS;
  while (*counter < target) {
    if (uv_hrtime() >= deadline)
      fail_msg("timed out after %d ms waiting for %s", FIXTURE_TIMEOUT_MS,
               what);
    (void)uv_run(loop, UV_RUN_ONCE);
  }
}


/* Connect `c`, a plain libuv client on the application's loop, to `to` and
 * run the loop until the connect has completed, successfully. */
static void app_client_connect(uv_loop_t* loop,
                               app_client_t* c,
                               const cport_addr_t* to) {
  memset(c, 0, sizeof(*c));
  assert_int_equal(uv_tcp_init(loop, &c->tcp), 0);
  c->tcp.data = c;
  c->connect.data = c;
  assert_int_equal(uv_tcp_connect(&c->connect, &c->tcp,
                                  cport_addr_sockaddr(to),
                                  app_client_connect_cb),
                   0);
  app_run_until(loop, &c->connected, 1, "the client's connect");
  assert_int_equal(c->connect_status, 0);
}


static void test_core_embedded_server_accepts_libuv_client(void** state) {
  uv_loop_t loop;
  cport_core_opts_t copts;
  cport_service_opts_t sopts;
  cport_core_t* core = NULL;
  cport_service_t* svc = NULL;
  cport_service_stats_t stats;
  cport_addr_t bind_addr;
  cport_addr_t local;
  embed_server_t e;
  app_client_t c;
  watchdog_t tick;
  uv_buf_t buf;
  static char ping[] = "ping";
  (void)state;

  assert_int_equal(uv_loop_init(&loop), 0);
  cport_core_opts_init(&copts);
  copts.uv_loop = &loop;
  assert_int_equal(cport_core_create(&core, &copts), 0);
  assert_ptr_equal(cport_core_uv_loop(core, 0), &loop);

  memset(&e, 0, sizeof(e));
  cport_service_opts_init(&sopts);
  sopts.cbs.on_connected = embed_on_connected;
  sopts.cbs.on_recv = embed_on_recv;
  sopts.cbs.on_disconnected = embed_on_disconnected;
  sopts.data = &e;
  assert_int_equal(cport_addr_parse(&bind_addr, "127.0.0.1", 0), 0);
  assert_int_equal(cport_service_create(&svc, core, CPORT_SERVICE_SERVER,
                                        &bind_addr, &sopts),
                   0);
  assert_int_equal(cport_service_start(svc), 0);
  assert_int_equal(cport_service_local_addr(svc, &local), 0);
  assert_int_equal(cport_addr_family(&local), 4);
  assert_true(cport_addr_port(&local) > 0);

  /* Bounds every uv_run(UV_RUN_ONCE) below to about 10 ms. */
  watchdog_start(&tick, &loop, 10, 10);

  app_client_connect(&loop, &c, &local);
  app_run_until(&loop, &e.connected, 1, "the server's on_connected");
  assert_int_equal(cport_service_session_count(svc), 1);

  /* Reads are driven by the application's loop too. */
  buf = uv_buf_init(ping, 4);
  c.write.data = &c;
  assert_int_equal(
      uv_write(&c.write, (uv_stream_t*)&c.tcp, &buf, 1, app_client_write_cb),
      0);
  app_run_until(&loop, &c.written, 1, "the client's write");
  assert_int_equal(c.written, 1);
  {
    uint64_t deadline = uv_hrtime() + (uint64_t)FIXTURE_TIMEOUT_MS * NS_PER_MS;
    while (e.received < 4) {
      if (uv_hrtime() >= deadline)
        fail_msg("server received %zu of 4 bytes", e.received);
      (void)uv_run(&loop, UV_RUN_ONCE);
    }
  }
  assert_int_equal(e.received, 4);
  assert_int_equal(cport_service_stats(svc, &stats), 0);
  assert_int_equal(stats.connected, 1);
  assert_int_equal(stats.active, 1);
  assert_int_equal(e.disconnected, 0);

  /* Tear down with the session still open: it is closed by the destroy. */
  cport_service_destroy(svc);
  cport_core_destroy(core);
  uv_close((uv_handle_t*)&c.tcp, app_client_close_cb);
  uv_close((uv_handle_t*)&tick.timer, watchdog_close_cb);
  app_loop_drain_and_close(&loop);
  assert_int_equal(c.closed, 1);
  assert_int_equal(tick.closed, 1);
  assert_int_equal(e.connected, 1);
  assert_int_equal(e.disconnected, 1);
  assert_int_equal(e.last_code, CPORT_ESTOPPED);
}


/* ---- audit regressions ---- */

typedef struct audit_embed_s {
  cport_session_t* session; /* the server's latest session */
  int connected;
  int disconnected;
  int last_code;
} audit_embed_t;


static audit_embed_t* audit_embed_of(cport_session_t* s) {
  return cport_service_get_data(cport_session_service(s));
}


static void audit_embed_connected(cport_session_t* s) {
  audit_embed_t* a = audit_embed_of(s);
  a->session = s;
  a->connected++;
}


static void audit_embed_disconnected(cport_session_t* s,
                                     int code,
                                     const char* cause) {
  audit_embed_t* a = audit_embed_of(s);
  (void)cause;
  a->disconnected++;
  a->last_code = code;
  a->session = NULL;
}


/* core.h, cport_core_destroy(): every service destroyed first, then "An
 * embedded core closes its handles on the application's loop and its memory
 * is released by that loop's next iteration: run the loop (for example
 * uv_run(loop, UV_RUN_NOWAIT)) before uv_loop_close()". The session that the
 * service's destroy closed still has a write in flight (a peer that never
 * reads) and a send queued behind it; its close callbacks run in those same
 * rounds, and must not find the loop's memory (its request pool) already
 * freed. The loop then closes, nothing leaks (the teardown's count), and
 * on_disconnected ran once. */
static void test_audit_embedded_destroy_with_write_in_flight(void** state) {
  const size_t big_len = 16u * 1024 * 1024;
  uv_loop_t loop;
  cport_core_opts_t copts;
  cport_service_opts_t sopts;
  cport_core_t* core = NULL;
  cport_service_t* svc = NULL;
  cport_addr_t addr;
  audit_embed_t a;
  app_client_t c;
  watchdog_t tick;
  uint8_t* big;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  cport_core_opts_init(&copts);
  copts.uv_loop = &loop;
  assert_int_equal(cport_core_create(&core, &copts), 0);
  memset(&a, 0, sizeof(a));
  cport_service_opts_init(&sopts);
  sopts.cbs.on_connected = audit_embed_connected;
  sopts.cbs.on_disconnected = audit_embed_disconnected;
  sopts.send_queue_limit = 4 * big_len;
  sopts.data = &a;
  assert_int_equal(cport_addr_parse(&addr, "127.0.0.1", 0), 0);
  assert_int_equal(
      cport_service_create(&svc, core, CPORT_SERVICE_SERVER, &addr, &sopts), 0);
  assert_int_equal(cport_service_start(svc), 0);
  assert_int_equal(cport_service_local_addr(svc, &addr), 0);
  /* Bounds every uv_run(UV_RUN_ONCE) below to about 10 ms. */
  watchdog_start(&tick, &loop, 10, 10);

  /* A client on the application's loop that never reads. */
  app_client_connect(&loop, &c, &addr);
  app_run_until(&loop, &a.connected, 1, "the server's on_connected");

  /* More than the kernel takes at once: the rest is a write in flight, and
   * the next send waits behind it. */
  big = calloc(1, big_len);
  assert_non_null(big);
  assert_int_equal(cport_session_send(a.session, big, big_len), 0);
  free(big);
  assert_true(cport_session_queued_bytes(a.session) > 0);
  assert_int_equal(cport_session_send(a.session, "tail", 4), 0);

  /* The documented teardown. */
  cport_service_destroy(svc);
  uv_close((uv_handle_t*)&c.tcp, app_client_close_cb);
  uv_close((uv_handle_t*)&tick.timer, watchdog_close_cb);
  cport_core_destroy(core);
  app_loop_drain_and_close(&loop);
  assert_int_equal(c.closed, 1);
  assert_int_equal(a.connected, 1);
  assert_int_equal(a.disconnected, 1);
  assert_int_equal(a.last_code, CPORT_ESTOPPED);
}


/* Sends, jobs and broadcasts made by one thread that does not run the loop,
 * while the loop is busy (gated in a job under cport_core_run) or not
 * dispatched at all. The rig: a core of two loops, a server on port 0 that
 * spreads its two sessions over both loops, and a client service on loop 1
 * whose sessions record what they receive. */
#define ORDER_PORTS 2
#define ORDER_CONNS 2

typedef struct order_rig_s order_rig_t;

typedef struct order_job_s {
  order_rig_t* rig;
  int index; /* of the server session to send to */
} order_job_t;

typedef struct order_client_s {
  uint8_t got[16];
  size_t len;
} order_client_t;

struct order_rig_s {
  cport_core_t* core;
  cport_service_t* server;
  cport_service_t* client;
  int running; /* cport_core_run drives the loops, not this thread */
  int broadcast;
  /* Referenced sessions, each stored on its loop's thread in a slot of its
   * own (`slots`) before the count below it is raised. */
  cport_session_t* servers[ORDER_CONNS];
  cport_session_t* clients[ORDER_CONNS];
  atomic_int server_slots;
  atomic_int client_slots;
  atomic_int nservers;
  atomic_int nclients;
  atomic_int received; /* bytes all client sessions got */
  atomic_int job_rc;   /* first failure of a job's send */
  signal_t progress;   /* raised on each of the counters above */
  signal_t gate_entered;
  signal_t gate_open;
  order_job_t jobs[ORDER_CONNS];
  cport_buf_t* b;
  int calls_rc; /* first failure of the calling thread */
};


static order_rig_t* order_of(cport_session_t* s) {
  return cport_service_get_data(cport_session_service(s));
}


static void order_server_connected(cport_session_t* s) {
  order_rig_t* r = order_of(s);
  int i = atomic_fetch_add(&r->server_slots, 1);
  if (i < ORDER_CONNS) {
    cport_session_ref(s);
    r->servers[i] = s;
  }
  atomic_fetch_add(&r->nservers, 1);
  signal_raise(&r->progress);
}


static void order_client_connected(cport_session_t* s) {
  order_rig_t* r = order_of(s);
  int i = atomic_fetch_add(&r->client_slots, 1);
  if (i < ORDER_CONNS) {
    cport_session_ref(s);
    r->clients[i] = s;
  }
  atomic_fetch_add(&r->nclients, 1);
  signal_raise(&r->progress);
}


static size_t order_client_recv(cport_session_t* s,
                                const uint8_t* data,
                                size_t len) {
  order_rig_t* r = order_of(s);
  order_client_t* c = cport_session_user(s);
  size_t n = len < sizeof(c->got) - c->len ? len : sizeof(c->got) - c->len;
  memcpy(c->got + c->len, data, n);
  c->len += n;
  atomic_fetch_add(&r->received, (int)len);
  signal_raise(&r->progress);
  return len;
}


/* Wait until `*counter` reaches `target`, driving both loops from this
 * thread unless cport_core_run drives them. 0 on timeout. */
static int order_wait(order_rig_t* r, atomic_int* counter, int target) {
  uint64_t deadline = uv_hrtime() + (uint64_t)FIXTURE_TIMEOUT_MS * NS_PER_MS;
  unsigned i;
  while (atomic_load(counter) < target) {
    uint64_t now = uv_hrtime();
    if (now >= deadline)
      return 0;
    if (r->running) {
      int seen = signal_count(&r->progress);
      if (atomic_load(counter) >= target)
        break;
      (void)signal_wait(&r->progress, seen + 1,
                        (int)((deadline - now) / NS_PER_MS) + 1);
    } else {
      for (i = 0; i < ORDER_PORTS; i++) cport_core_dispatch(r->core, i, 1);
    }
  }
  return 1;
}


static void order_gate_job(void* arg) {
  order_rig_t* r = arg;
  signal_raise(&r->gate_entered);
  /* Bounded: a test that never opens the gate fails on its own wait. */
  (void)signal_wait(&r->gate_open, 1, FIXTURE_TIMEOUT_MS);
}


static void order_send_b_job(void* arg) {
  order_job_t* j = arg;
  int rc = cport_session_send(j->rig->servers[j->index], "B", 1);
  if (rc != 0)
    atomic_store(&j->rig->job_rc, rc);
}


static void order_note(int* first, int rc) {
  if (*first == 0)
    *first = rc;
}


/* The thread that is not the loop's: A, then B (a job per session, or one
 * broadcast), then C, to every server session. */
static void order_caller_main(void* arg) {
  order_rig_t* r = arg;
  int i;
  for (i = 0; i < ORDER_CONNS; i++)
    order_note(&r->calls_rc, cport_session_send(r->servers[i], "A", 1));
  if (r->broadcast) {
    order_note(&r->calls_rc, cport_service_broadcast(r->server, r->b));
  } else {
    for (i = 0; i < ORDER_CONNS; i++)
      order_note(&r->calls_rc,
                 cport_core_post(r->core, cport_session_loop(r->servers[i]),
                                 order_send_b_job, &r->jobs[i]));
  }
  for (i = 0; i < ORDER_CONNS; i++)
    order_note(&r->calls_rc, cport_session_send(r->servers[i], "C", 1));
}


/* One case: what each client session received, as "ABC/ABC", in `out`. */
static void order_case(int running, int broadcast, char* out, size_t size) {
  cport_core_opts_t copts;
  cport_service_opts_t o;
  cport_addr_t addr;
  order_rig_t r;
  uv_thread_t caller;
  int i;
  memset(&r, 0, sizeof(r));
  r.running = running;
  r.broadcast = broadcast;
  signal_init(&r.progress);
  signal_init(&r.gate_entered);
  signal_init(&r.gate_open);
  for (i = 0; i < ORDER_CONNS; i++) {
    r.jobs[i].rig = &r;
    r.jobs[i].index = i;
  }
  assert_int_equal(cport_buf_from(&r.b, "B", 1), 0);
  cport_core_opts_init(&copts);
  copts.loops = ORDER_PORTS;
  assert_int_equal(cport_core_create(&r.core, &copts), 0);
  assert_int_equal(cport_addr_parse(&addr, "127.0.0.1", 0), 0);
  cport_service_opts_init(&o);
  o.cbs.on_connected = order_server_connected;
  o.data = &r;
  assert_int_equal(
      cport_service_create(&r.server, r.core, CPORT_SERVICE_SERVER, &addr, &o),
      0);
  assert_int_equal(cport_service_start(r.server), 0);
  assert_int_equal(cport_service_local_addr(r.server, &addr), 0);
  cport_service_opts_init(&o);
  o.cbs.on_connected = order_client_connected;
  o.cbs.on_recv = order_client_recv;
  o.user_size = sizeof(order_client_t);
  o.connect_count = ORDER_CONNS;
  o.loop = 1;
  o.data = &r;
  assert_int_equal(
      cport_service_create(&r.client, r.core, CPORT_SERVICE_CLIENT, &addr, &o),
      0);
  assert_int_equal(cport_service_start(r.client), 0);
  if (running)
    assert_int_equal(cport_core_run(r.core), 0);
  if (!order_wait(&r, &r.nservers, ORDER_CONNS) ||
      !order_wait(&r, &r.nclients, ORDER_CONNS))
    fail_msg("the %d connections did not come up", ORDER_CONNS);
  assert_int_equal(atomic_load(&r.nservers), ORDER_CONNS);
  /* One session on each loop. */
  assert_int_not_equal(cport_session_loop(r.servers[0]),
                       cport_session_loop(r.servers[1]));

  /* Under cport_core_run every loop is held inside a job while the other
   * thread makes its calls; otherwise nobody dispatches meanwhile. */
  if (running) {
    for (i = 0; i < ORDER_PORTS; i++)
      assert_int_equal(cport_core_post(r.core, (unsigned)i, order_gate_job, &r),
                       0);
    assert_true(signal_wait(&r.gate_entered, ORDER_PORTS, FIXTURE_TIMEOUT_MS));
  }
  assert_int_equal(uv_thread_create(&caller, order_caller_main, &r), 0);
  assert_int_equal(uv_thread_join(&caller), 0);
  signal_raise(&r.gate_open);
  if (!order_wait(&r, &r.received, 3 * ORDER_CONNS))
    fail_msg("the clients received %d of %d bytes", atomic_load(&r.received),
             3 * ORDER_CONNS);
  assert_int_equal(r.calls_rc, 0);
  assert_int_equal(atomic_load(&r.job_rc), 0);

  /* Joined on this thread, which then owns the loops again (services are
   * destroyed on their loop's owner). */
  if (running) {
    assert_int_equal(cport_core_stop(r.core), 0);
    assert_int_equal(cport_core_join(r.core), 0);
  }
  out[0] = '\0';
  for (i = 0; i < ORDER_CONNS; i++) {
    order_client_t* c = cport_session_user(r.clients[i]);
    size_t at = strlen(out);
    snprintf(out + at, size - at, "%s%.*s", i > 0 ? "/" : "", (int)c->len,
             (const char*)c->got);
  }
  for (i = 0; i < ORDER_CONNS; i++) {
    cport_session_unref(r.servers[i]);
    cport_session_unref(r.clients[i]);
  }
  cport_buf_unref(r.b);
  cport_service_destroy(r.client);
  cport_service_destroy(r.server);
  cport_core_destroy(r.core);
  signal_destroy(&r.gate_open);
  signal_destroy(&r.gate_entered);
  signal_destroy(&r.progress);
}


/* core.h: from a thread that is not the owner, "cport_core_post(), ... and
 * the session functions marked so in session.h (sends, disconnects,
 * references) ... are queued to the loop and happen there, in the order in
 * which the calls returned"; service.h, cport_service_broadcast: the other
 * loops get it "in order with that loop's other work". One thread sends "A",
 * posts a job that sends "B" (or broadcasts "B"), and sends "C": every
 * session's peer must get "ABC". Both with the loops dispatched from the
 * test's thread after the calls, and under cport_core_run with each loop
 * busy in a job during them. */
static void test_audit_sends_jobs_and_broadcasts_keep_call_order(void** state) {
  static const struct {
    int running;
    int broadcast;
    const char* name;
  } cases[] = {
      {0, 0, "dispatch, job"},
      {0, 1, "dispatch, broadcast"},
      {1, 0, "cport_core_run, job"},
      {1, 1, "cport_core_run, broadcast"},
  };
  const char* want = "ABC/ABC";
  char got[4][64];
  char report[512] = "";
  size_t i;
  (void)state;
  for (i = 0; i < 4; i++)
    order_case(cases[i].running, cases[i].broadcast, got[i], sizeof(got[i]));
  for (i = 0; i < 4; i++) {
    if (strcmp(got[i], want) != 0) {
      size_t at = strlen(report);
      snprintf(report + at, sizeof(report) - at, "%s%s: got %s", at ? "; " : "",
               cases[i].name, got[i]);
    }
  }
  if (report[0] != '\0')
    fail_msg("each peer must receive %s in call order (%s)", want, report);
}


typedef struct audit_jobs_s {
  cport_core_t* core;
  int a; /* loop 0; posts b to loop 0 */
  int b;
  int c; /* loop 1; posts d to loop 0 */
  int d;
  int post_rc;
} audit_jobs_t;


static void audit_job_b(void* arg) {
  ((audit_jobs_t*)arg)->b++;
}


static void audit_job_d(void* arg) {
  ((audit_jobs_t*)arg)->d++;
}


static void audit_job_a(void* arg) {
  audit_jobs_t* j = arg;
  int rc = cport_core_post(j->core, 0, audit_job_b, j);
  j->a++;
  if (rc != 0)
    j->post_rc = rc;
}


static void audit_job_c(void* arg) {
  audit_jobs_t* j = arg;
  int rc = cport_core_post(j->core, 0, audit_job_d, j);
  j->c++;
  if (rc != 0)
    j->post_rc = rc;
}


/* core.h, cport_core_post(): "Jobs still queued when the core is destroyed
 * run inside cport_core_destroy(), on the owner's thread", and each job runs
 * once. That includes the jobs that those jobs post while destroy runs
 * them: one on port 0 posting to loop 0, one on loop 1 posting to loop 0
 * (a loop whose jobs destroy has already run). None may be dropped (the
 * teardown's count and LSan see a dropped job as a leak). */
static void test_audit_destroy_runs_jobs_posted_by_jobs(void** state) {
  cport_core_opts_t opts;
  audit_jobs_t j;
  (void)state;
  memset(&j, 0, sizeof(j));
  cport_core_opts_init(&opts);
  opts.loops = 2;
  assert_int_equal(cport_core_create(&j.core, &opts), 0);
  assert_int_equal(cport_core_post(j.core, 0, audit_job_a, &j), 0);
  assert_int_equal(cport_core_post(j.core, 1, audit_job_c, &j), 0);
  cport_core_destroy(j.core);
  assert_int_equal(j.post_rc, 0);
  assert_int_equal(j.a, 1);
  assert_int_equal(j.c, 1);
  if (j.b != 1 || j.d != 1)
    fail_msg(
        "jobs posted to loop 0 while cport_core_destroy ran jobs: the one "
        "from loop 0's job ran %d times, the one from loop 1's job %d times "
        "(want 1 and 1)",
        j.b, j.d);
}


#define CORE_TEST(fn) \
  cmocka_unit_test_setup_teardown(fn, mem_setup, mem_teardown)
#define FX_TEST FIXTURE_TEST


int main(void) {
  const struct CMUnitTest tests[] = {
      CORE_TEST(test_core_create_with_null_opts_has_one_loop),
      CORE_TEST(test_core_create_with_initialized_opts),
      CORE_TEST(test_core_create_rejects_null_out),
      CORE_TEST(test_core_create_rejects_zero_loops),
      CORE_TEST(test_core_create_checks_the_loop_count),
      CORE_TEST(test_core_post_runs_jobs_on_each_loop_thread_in_order),
      FX_TEST(test_core_post_rejects_bad_arguments),
      FX_TEST(test_core_post_runs_at_the_next_dispatch),
      CORE_TEST(test_core_destroy_runs_jobs_still_queued),
      CORE_TEST(test_core_services_on_two_loops_talk),
      CORE_TEST(test_core_opts_init_sets_defaults),
      CORE_TEST(test_core_sigpipe_ignored_only_when_default),
      FX_TEST(test_core_loops_and_uv_loop_reject_bad_arguments),
      CORE_TEST(test_core_null_arguments_are_rejected),
      FX_TEST(test_core_dispatch_rejects_bad_loop),
      FX_TEST(test_core_dispatch_poll_returns_promptly),
      FX_TEST(test_core_dispatch_waits_for_timeout_without_events),
      FX_TEST(test_core_dispatch_reports_pending_work),
      FX_TEST(test_core_dispatch_runs_timer_callback),
      FX_TEST(test_core_dispatch_returns_after_first_event),
      FX_TEST(test_core_dispatch_timeout_holds_when_loop_time_is_stale),
      FX_TEST(test_core_run_fires_async_on_loop_thread),
      FX_TEST(test_core_run_fires_timer_added_before_run),
      FX_TEST(test_core_dispatch_while_running_returns_ebusy),
      FX_TEST(test_core_run_twice_returns_ebusy),
      FX_TEST(test_core_stop_from_loop_callback_ends_run),
      FX_TEST(test_core_run_again_after_join),
      FX_TEST(test_core_stop_before_run_does_not_cancel_next_run),
      FX_TEST(test_core_join_without_run_returns_zero),
      FX_TEST(test_core_owner_calls_refuse_its_own_loop),
      FX_TEST(test_core_create_logs_each_refusal),
      CORE_TEST(test_core_destroy_stops_running_threads),
      CORE_TEST(test_core_run_here_runs_loop_on_caller_until_stop),
      CORE_TEST(
          test_core_run_here_starts_other_loops_and_stops_from_any_thread),
      CORE_TEST(test_core_embedded_uses_app_loop),
      CORE_TEST(test_core_stop_on_embedded_core_does_not_stop_app_loop),
      CORE_TEST(test_core_dispatch_on_embedded_core_runs_app_loop),
      CORE_TEST(test_core_embedded_server_accepts_libuv_client),
      CORE_TEST(test_audit_embedded_destroy_with_write_in_flight),
      CORE_TEST(test_audit_sends_jobs_and_broadcasts_keep_call_order),
      CORE_TEST(test_audit_destroy_runs_jobs_posted_by_jobs),
  };
  return cmocka_run_group_tests_name("core", tests, NULL, NULL);
}
