/* Timers: one-shot and repeating runs, cancel from the loop, from fn and
 * from other threads, fire-and-forget, ordering, destroy with timers still
 * pending, handles kept past cport_core_destroy(), embedded cores.
 *
 * Most tests drive a core of one loop with cport_core_dispatch() on the
 * test's thread, so fn runs on the test thread. Times are read with
 * cport__clock_ms(), the clock timers are planned on; only lower bounds
 * are exact, upper bounds only catch a hang. Every test ends with the
 * allocation count back at its start: a timer left behind fails it. */
#include "fixture.h"

#include <string.h>

#include "common.h"   /* cport__mem_live, cport__mem_fail_after */
#include "timeouts.h" /* cport__clock_ms */

#define HAMMER_THREADS 4
#define HAMMER_TIMERS 200 /* per thread */


/* ---- helpers ---- */

static cport_core_t* core_new(void) {
  cport_core_t* core = NULL;
  assert_int_equal(cport_core_create(&core, NULL), 0);
  return core;
}


/* What a timer's fn records. */
typedef struct rec_s {
  atomic_int runs;
  int cancel_at; /* fn cancels its own handle on this run (0: never) */
  cport_timer_t* self;
  uint64_t at[16];  /* cport__clock_ms() of the first runs */
  uint64_t spin_ms; /* the first run keeps the loop busy this long */
} rec_t;


static void rec_fn(cport_timer_t* t, void* arg) {
  rec_t* r = arg;
  int n = atomic_fetch_add(&r->runs, 1) + 1;
  if (n <= 16)
    r->at[n - 1] = cport__clock_ms();
  if (n == 1 && r->spin_ms > 0) {
    /* A long fn: the busy loop misses the next periods. */
    uint64_t until = cport__clock_ms() + r->spin_ms;
    while (cport__clock_ms() < until) {
    }
  }
  if (n == r->cancel_at) {
    assert_ptr_equal(t, r->self);
    assert_int_equal(cport_timer_cancel(t), 0);
  }
}


/* Dispatch loop 0 until *counter reaches target; fail after the
 * deadline. */
static void wait_runs(cport_core_t* core, atomic_int* counter, int target) {
  uint64_t deadline = cport__clock_ms() + FIXTURE_TIMEOUT_MS;
  while (atomic_load(counter) < target) {
    if (cport__clock_ms() > deadline)
      fail_msg("%d runs of %d after %d ms", atomic_load(counter), target,
               FIXTURE_TIMEOUT_MS);
    (void)cport_core_dispatch(core, 0, 50);
  }
}


/* Run loop 0 until a one-shot of `ms` started now has run: the later
 * timers of a test are then due too, and what has not run by then never
 * will. */
static void wait_past(cport_core_t* core, uint64_t ms) {
  rec_t marker;
  memset(&marker, 0, sizeof(marker));
  assert_int_equal(cport_timer_start(core, 0, ms, 0, rec_fn, &marker, NULL), 0);
  wait_runs(core, &marker.runs, 1);
}


/* ---- one-shot and repeating ---- */

static void test_timer_one_shot_runs_once_after_its_delay(void** state) {
  cport_core_t* core = core_new();
  cport_timer_t* t = NULL;
  rec_t r;
  uint64_t start;
  (void)state;
  memset(&r, 0, sizeof(r));
  start = cport__clock_ms();
  assert_int_equal(cport_timer_start(core, 0, 30, 0, rec_fn, &r, &t), 0);
  assert_non_null(t);
  wait_runs(core, &r.runs, 1);
  assert_true(r.at[0] >= start + 30);
  assert_true(r.at[0] < start + FIXTURE_TIMEOUT_MS);
  wait_past(core, 40);
  assert_int_equal(atomic_load(&r.runs), 1);
  /* The handle goes back after the run too. */
  assert_int_equal(cport_timer_cancel(t), 0);
  cport_core_destroy(core);
}


static void test_timer_repeat_runs_until_cancelled(void** state) {
  cport_core_t* core = core_new();
  cport_timer_t* t = NULL;
  rec_t r;
  uint64_t start;
  int i;
  int runs;
  (void)state;
  memset(&r, 0, sizeof(r));
  start = cport__clock_ms();
  assert_int_equal(cport_timer_start(core, 0, 10, 5, rec_fn, &r, &t), 0);
  wait_runs(core, &r.runs, 5);
  /* Run k comes no earlier than its planned time. */
  for (i = 0; i < 5; i++) assert_true(r.at[i] >= start + 10 + (uint64_t)i * 5);
  assert_int_equal(cport_timer_cancel(t), 0);
  runs = atomic_load(&r.runs);
  wait_past(core, 30);
  assert_int_equal(atomic_load(&r.runs), runs);
  cport_core_destroy(core);
}


static void test_timer_repeat_skips_missed_periods(void** state) {
  cport_core_t* core = core_new();
  cport_timer_t* t = NULL;
  rec_t r;
  uint64_t planned;
  (void)state;
  memset(&r, 0, sizeof(r));
  r.spin_ms = 35; /* the first run overruns three periods of 10 ms */
  planned = cport__clock_ms() + 5;
  assert_int_equal(cport_timer_start(core, 0, 5, 10, rec_fn, &r, &t), 0);
  wait_runs(core, &r.runs, 2);
  /* Not the missed periods back to back (planned + 10, + 20, + 30), but
   * the first period after fn returned, on the grid of the first run. */
  assert_true(r.at[1] >= planned + 40);
  assert_int_equal(cport_timer_cancel(t), 0);
  cport_core_destroy(core);
}


/* ---- cancel ---- */

static void test_timer_cancel_before_it_runs_stops_it(void** state) {
  cport_core_t* core = core_new();
  cport_timer_t* once = NULL;
  cport_timer_t* every = NULL;
  rec_t r;
  (void)state;
  memset(&r, 0, sizeof(r));
  assert_int_equal(cport_timer_start(core, 0, 5, 0, rec_fn, &r, &once), 0);
  assert_int_equal(cport_timer_start(core, 0, 5, 5, rec_fn, &r, &every), 0);
  assert_int_equal(cport_timer_cancel(once), 0);
  assert_int_equal(cport_timer_cancel(every), 0);
  wait_past(core, 30);
  assert_int_equal(atomic_load(&r.runs), 0);
  cport_core_destroy(core);
}


static void test_timer_cancel_from_inside_fn(void** state) {
  cport_core_t* core = core_new();
  rec_t every;
  rec_t once;
  (void)state;
  memset(&every, 0, sizeof(every));
  memset(&once, 0, sizeof(once));
  every.cancel_at = 3;
  once.cancel_at = 1;
  assert_int_equal(
      cport_timer_start(core, 0, 1, 1, rec_fn, &every, &every.self), 0);
  assert_int_equal(cport_timer_start(core, 0, 1, 0, rec_fn, &once, &once.self),
                   0);
  wait_runs(core, &every.runs, 3);
  wait_past(core, 20);
  assert_int_equal(atomic_load(&every.runs), 3);
  assert_int_equal(atomic_load(&once.runs), 1);
  cport_core_destroy(core);
}


typedef struct remote_cancel_s {
  cport_core_t* core;
  cport_timer_t* t;
  rec_t r;
  int rc;
} remote_cancel_t;


static void remote_cancel_main(void* arg) {
  remote_cancel_t* fc = arg;
  fc->rc = cport_timer_start(fc->core, 0, 10000, 0, rec_fn, &fc->r, &fc->t);
  if (fc->rc == 0)
    fc->rc = cport_timer_cancel(fc->t);
}


/* Start and cancel from a thread that is not the loop's: both are queued,
 * and the run never begins. */
static void test_timer_cancel_from_another_thread(void** state) {
  cport_core_t* core = core_new();
  remote_cancel_t fc;
  uv_thread_t thread;
  (void)state;
  memset(&fc, 0, sizeof(fc));
  fc.core = core;
  assert_int_equal(uv_thread_create(&thread, remote_cancel_main, &fc), 0);
  assert_int_equal(uv_thread_join(&thread), 0);
  assert_int_equal(fc.rc, 0);
  wait_past(core, 5); /* the loop takes both entries */
  assert_int_equal(atomic_load(&fc.r.runs), 0);
  cport_core_destroy(core);
}


static void remote_cancel_only_main(void* arg) {
  remote_cancel_t* fc = arg;
  fc->rc = cport_timer_cancel(fc->t);
}


/* A run already due when another thread cancels: a round of libuv runs
 * due timers before it takes the mailbox, and only the flag stops it. */
static void test_timer_cancel_from_another_thread_stops_a_due_run(
    void** state) {
  cport_core_t* core = core_new();
  remote_cancel_t fc;
  uv_thread_t thread;
  (void)state;
  memset(&fc, 0, sizeof(fc));
  assert_int_equal(cport_timer_start(core, 0, 0, 1, rec_fn, &fc.r, &fc.t), 0);
  assert_int_equal(uv_thread_create(&thread, remote_cancel_only_main, &fc), 0);
  assert_int_equal(uv_thread_join(&thread), 0);
  assert_int_equal(fc.rc, 0);
  /* Not cport_core_dispatch(), which takes the mailbox first. */
  (void)uv_run(cport_core_uv_loop(core, 0), UV_RUN_NOWAIT);
  wait_past(core, 5);
  assert_int_equal(atomic_load(&fc.r.runs), 0);
  cport_core_destroy(core);
}


/* ---- fire-and-forget and ordering ---- */

static void test_timer_fire_and_forget_runs_and_frees_itself(void** state) {
  cport_core_t* core = core_new();
  rec_t r;
  long live;
  (void)state;
  memset(&r, 0, sizeof(r));
  live = cport__mem_live();
  assert_int_equal(cport_timer_start(core, 0, 0, 0, rec_fn, &r, NULL), 0);
  wait_runs(core, &r.runs, 1);
  /* The close callback runs in the same round; one more to be sure. */
  (void)cport_core_dispatch(core, 0, 0);
  assert_int_equal(cport__mem_live(), live);
  cport_core_destroy(core);
}


static int order_seen[64];
static int order_n;


static void order_fn(cport_timer_t* t, void* arg) {
  (void)t;
  if (order_n < 64)
    order_seen[order_n] = (int)(intptr_t)arg;
  order_n++;
}


static void test_timer_equal_deadlines_run_in_start_order(void** state) {
  cport_core_t* core = core_new();
  intptr_t i;
  (void)state;
  order_n = 0;
  for (i = 0; i < 64; i++)
    assert_int_equal(
        cport_timer_start(core, 0, 10, 0, order_fn, (void*)i, NULL), 0);
  wait_past(core, 20);
  assert_int_equal(order_n, 64);
  for (i = 0; i < 64; i++) assert_int_equal(order_seen[i], (int)i);
  cport_core_destroy(core);
}


/* ---- four threads at once on one loop ---- */

/* Timers of one thread run in the order the thread started them: each run
 * checks that its sequence number is the next of its thread's. */
typedef struct hammer_s hammer_t;

typedef struct hammer_thread_s {
  hammer_t* h;
  int index;
  cport_timer_t* kept[HAMMER_TIMERS]; /* handles of one-shots expected */
  int nkept;
  int last_seq;    /* loop-only: the latest run's sequence number */
  atomic_int runs; /* runs of one-shots expected to run */
  int expected;    /* written before the thread starts its timers */
  int rc;
} hammer_thread_t;

struct hammer_s {
  cport_core_t* core;
  hammer_thread_t threads[HAMMER_THREADS];
  atomic_int out_of_order;
  atomic_int cancelled_ran;
  atomic_int repeat_runs;
  signal_t ran; /* raised once per expected one-shot run */
};

/* The test's record: `arg` of hammer_fn holds only numbers, so that no fn
 * touches another thread's stack. */
static hammer_t* hammer_current;

/* Sequence numbers: thread index * 10000 + i, packed into `arg`. */
static void hammer_fn(cport_timer_t* t, void* arg) {
  intptr_t v = (intptr_t)arg;
  hammer_thread_t* ht;
  hammer_t* h;
  int seq = (int)(v % 10000);
  (void)t;
  h = hammer_current;
  ht = &h->threads[v / 10000];
  if (seq <= ht->last_seq)
    atomic_fetch_add(&h->out_of_order, 1);
  ht->last_seq = seq;
  atomic_fetch_add(&ht->runs, 1);
  signal_raise(&h->ran);
}

static void cancelled_fn(cport_timer_t* t, void* arg) {
  (void)t;
  atomic_fetch_add(&((hammer_t*)arg)->cancelled_ran, 1);
}


static void repeat_fn(cport_timer_t* t, void* arg) {
  (void)t;
  atomic_fetch_add(&((hammer_t*)arg)->repeat_runs, 1);
}


static void hammer_main(void* arg) {
  hammer_thread_t* ht = arg;
  hammer_t* h = ht->h;
  cport_timer_t* rep[HAMMER_TIMERS / 5 + 1];
  int nrep = 0;
  int i;
  uint64_t deadline;
  for (i = 0; i < HAMMER_TIMERS && ht->rc == 0; i++) {
    void* tag = (void*)(intptr_t)(ht->index * 10000 + i);
    cport_timer_t* t = NULL;
    switch (i % 5) {
      case 0: /* fire-and-forget */
        ht->rc = cport_timer_start(h->core, 0, 2, 0, hammer_fn, tag, NULL);
        break;
      case 1: /* cancelled long before it is due: never runs */
        ht->rc = cport_timer_start(h->core, 0, 60000, 0, cancelled_fn, h, &t);
        if (ht->rc == 0)
          ht->rc = cport_timer_cancel(t);
        break;
      case 2: /* repeating, cancelled below, runs not counted */
        ht->rc = cport_timer_start(h->core, 0, 1, 1, repeat_fn, h, &t);
        if (ht->rc == 0)
          rep[nrep++] = t;
        break;
      default: /* kept, given back once it has run */
        ht->rc = cport_timer_start(h->core, 0, 2, 0, hammer_fn, tag, &t);
        if (ht->rc == 0)
          ht->kept[ht->nkept++] = t;
        break;
    }
  }
  for (i = 0; i < nrep && ht->rc == 0; i++) ht->rc = cport_timer_cancel(rep[i]);
  /* Give back the kept handles once this thread's timers have all run (a
   * cancel after the run: only the handle is left). */
  deadline = cport__clock_ms() + FIXTURE_TIMEOUT_MS;
  while (atomic_load(&ht->runs) < ht->expected &&
         cport__clock_ms() < deadline) {
    (void)signal_wait(&h->ran, signal_count(&h->ran) + 1, 100);
  }
  for (i = 0; i < ht->nkept && ht->rc == 0; i++)
    ht->rc = cport_timer_cancel(ht->kept[i]);
}


static void test_timer_four_threads_start_and_cancel_at_once(void** state) {
  static hammer_t h;
  uv_thread_t threads[HAMMER_THREADS];
  int i;
  int expected = 0;
  (void)state;
  memset(&h, 0, sizeof(h));
  hammer_current = &h;
  signal_init(&h.ran);
  h.core = core_new();
  for (i = 0; i < HAMMER_THREADS; i++) {
    int k;
    h.threads[i].h = &h;
    h.threads[i].index = i;
    h.threads[i].last_seq = -1;
    for (k = 0; k < HAMMER_TIMERS; k++)
      if (k % 5 != 1 && k % 5 != 2)
        h.threads[i].expected++;
    expected += h.threads[i].expected;
  }
  assert_int_equal(cport_core_run(h.core), 0);
  for (i = 0; i < HAMMER_THREADS; i++)
    assert_int_equal(uv_thread_create(&threads[i], hammer_main, &h.threads[i]),
                     0);
  for (i = 0; i < HAMMER_THREADS; i++) {
    assert_int_equal(uv_thread_join(&threads[i]), 0);
    assert_int_equal(h.threads[i].rc, 0);
  }
  assert_true(signal_wait(&h.ran, expected, FIXTURE_TIMEOUT_MS));
  assert_int_equal(cport_core_stop(h.core), 0);
  assert_int_equal(cport_core_join(h.core), 0);
  cport_core_destroy(h.core);
  assert_int_equal(signal_count(&h.ran), expected);
  for (i = 0; i < HAMMER_THREADS; i++)
    assert_int_equal(atomic_load(&h.threads[i].runs), h.threads[i].expected);
  assert_int_equal(atomic_load(&h.out_of_order), 0);
  assert_int_equal(atomic_load(&h.cancelled_ran), 0);
  signal_destroy(&h.ran);
}


/* ---- destroy ---- */

typedef struct remote_start_s {
  cport_core_t* core;
  rec_t* r;
  cport_timer_t* t;
  int rc;
} remote_start_t;


static void remote_start_main(void* arg) {
  remote_start_t* fs = arg;
  fs->rc = cport_timer_start(fs->core, 0, 0, 0, rec_fn, fs->r, &fs->t);
  if (fs->rc == 0)
    fs->rc = cport_timer_start(fs->core, 0, 0, 0, rec_fn, fs->r, NULL);
}


static void test_timer_destroy_runs_no_pending_timer(void** state) {
  cport_core_t* core = core_new();
  cport_timer_t* every = NULL;
  cport_timer_t* later = NULL;
  remote_start_t fs;
  uv_thread_t thread;
  rec_t r;
  (void)state;
  memset(&r, 0, sizeof(r));
  memset(&fs, 0, sizeof(fs));
  /* Open on the loop, due at once but never dispatched. */
  assert_int_equal(cport_timer_start(core, 0, 0, 1, rec_fn, &r, &every), 0);
  assert_int_equal(cport_timer_start(core, 0, 5000, 0, rec_fn, &r, &later), 0);
  assert_int_equal(cport_timer_start(core, 0, 0, 0, rec_fn, &r, NULL), 0);
  /* Still in the mailbox when the destroy begins. */
  fs.core = core;
  fs.r = &r;
  assert_int_equal(uv_thread_create(&thread, remote_start_main, &fs), 0);
  assert_int_equal(uv_thread_join(&thread), 0);
  assert_int_equal(fs.rc, 0);
  cport_core_destroy(core);
  assert_int_equal(atomic_load(&r.runs), 0);
  /* The kept handles hold the core's memory until they are given back. */
  assert_true(mem_live_since_setup() > 0);
  assert_int_equal(cport_timer_cancel(every), 0);
  assert_int_equal(cport_timer_cancel(later), 0);
  assert_int_equal(cport_timer_cancel(fs.t), 0);
}


static void test_timer_cancel_after_core_destroy_is_safe(void** state) {
  cport_core_t* core = core_new();
  cport_timer_t* ran = NULL;
  cport_timer_t* pending = NULL;
  rec_t r;
  (void)state;
  memset(&r, 0, sizeof(r));
  assert_int_equal(cport_timer_start(core, 0, 0, 0, rec_fn, &r, &ran), 0);
  assert_int_equal(cport_timer_start(core, 0, 5000, 0, rec_fn, &r, &pending),
                   0);
  wait_runs(core, &r.runs, 1);
  cport_core_destroy(core);
  /* In either order: the last one frees the core's memory (teardown). */
  assert_int_equal(cport_timer_cancel(pending), 0);
  assert_int_equal(cport_timer_cancel(ran), 0);
  assert_int_equal(atomic_load(&r.runs), 1);
}


/* ---- embedded ---- */

static void test_timer_runs_on_an_embedded_loop(void** state) {
  uv_loop_t loop;
  cport_core_opts_t o;
  cport_core_t* core = NULL;
  cport_timer_t* kept = NULL;
  rec_t r;
  rec_t never;
  int rounds = 0;
  (void)state;
  memset(&r, 0, sizeof(r));
  memset(&never, 0, sizeof(never));
  assert_int_equal(uv_loop_init(&loop), 0);
  cport_core_opts_init(&o);
  o.uv_loop = &loop;
  assert_int_equal(cport_core_create(&core, &o), 0);
  assert_int_equal(cport_timer_start(core, 0, 5, 0, rec_fn, &r, NULL), 0);
  assert_int_equal(cport_timer_start(core, 0, 60000, 0, rec_fn, &never, &kept),
                   0);
  /* The application runs its own loop; the timer keeps it busy until it
   * has run. */
  while (atomic_load(&r.runs) < 1 && rounds++ < 1000)
    (void)uv_run(&loop, UV_RUN_ONCE);
  assert_int_equal(atomic_load(&r.runs), 1);
  cport_core_destroy(core);
  assert_int_equal(cport_timer_cancel(kept), 0);
  /* The close callbacks run in the application's next round. */
  (void)uv_run(&loop, UV_RUN_NOWAIT);
  assert_int_equal(uv_loop_close(&loop), 0);
  assert_int_equal(atomic_load(&never.runs), 0);
}


/* ---- bad arguments ---- */

static void noop_fn(cport_timer_t* t, void* arg) {
  (void)t;
  (void)arg;
}


static void test_timer_rejects_bad_arguments(void** state) {
  cport_core_t* core = core_new();
  cport_timer_t* sentinel = (cport_timer_t*)&sentinel;
  cport_timer_t* t = sentinel;
  (void)state;
  assert_int_equal(cport_timer_start(NULL, 0, 1, 0, noop_fn, NULL, &t),
                   UV_EINVAL);
  assert_int_equal(cport_timer_start(core, 0, 1, 0, NULL, NULL, &t), UV_EINVAL);
  assert_int_equal(cport_timer_start(core, 1, 1, 0, noop_fn, NULL, &t),
                   UV_EINVAL);
  /* A repeating timer nobody could stop. */
  assert_int_equal(cport_timer_start(core, 0, 1, 1, noop_fn, NULL, NULL),
                   UV_EINVAL);
  cport__mem_fail_after(0);
  assert_int_equal(cport_timer_start(core, 0, 1, 0, noop_fn, NULL, &t),
                   UV_ENOMEM);
  cport__mem_fail_after(-1);
  assert_ptr_equal(t, sentinel);
  assert_int_equal(cport_timer_cancel(NULL), UV_EINVAL);
  cport_core_destroy(core);
}


int main(void) {
#define T(name) cmocka_unit_test_setup_teardown(name, mem_setup, mem_teardown)
  const struct CMUnitTest tests[] = {
      T(test_timer_one_shot_runs_once_after_its_delay),
      T(test_timer_repeat_runs_until_cancelled),
      T(test_timer_repeat_skips_missed_periods),
      T(test_timer_cancel_before_it_runs_stops_it),
      T(test_timer_cancel_from_inside_fn),
      T(test_timer_cancel_from_another_thread),
      T(test_timer_cancel_from_another_thread_stops_a_due_run),
      T(test_timer_fire_and_forget_runs_and_frees_itself),
      T(test_timer_equal_deadlines_run_in_start_order),
      T(test_timer_four_threads_start_and_cancel_at_once),
      T(test_timer_destroy_runs_no_pending_timer),
      T(test_timer_cancel_after_core_destroy_is_safe),
      T(test_timer_runs_on_an_embedded_loop),
      T(test_timer_rejects_bad_arguments),
  };
#undef T
  return cmocka_run_group_tests_name("timer", tests, NULL, NULL);
}
