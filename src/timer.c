/* Timers (include/cport/timer.h).
 *
 * Design notes
 *
 * A timer is one heap block: its uv_timer_t, the two mailbox entries that
 * carry a start and a cancel from another thread, and up to two
 * references. The loop holds one until the uv_timer_t has closed (or until
 * the start finds the timer cancelled, or its core being destroyed, and
 * never opens it); the application's handle is the other, given back by
 * cport_timer_cancel() (a fire-and-forget timer has none). The block goes
 * with the last reference, and with it the block's hold on the core's
 * memory, so a handle kept past cport_core_destroy() still points at
 * something.
 *
 * `flags` is the only field another thread writes. cport_timer_cancel()
 * sets CANCELLED; the loop sets CLOSED once the uv_timer_t is closing or
 * will never open. The loop reads CANCELLED right before each call of fn,
 * so a cancel from another thread stops every run that has not begun yet,
 * and the entry it queues only closes the handle. A cancel that finds
 * CLOSED has nothing left to ask of the loop and posts nothing: that is
 * what makes it safe after cport_core_destroy(), which closes every open
 * timer of every loop.
 *
 * Time. Planned times are on cport__clock_ms(): the start call's time plus
 * delay_ms, then plus repeat_ms for each further run. libuv counts from
 * uv_now(), which reads the same monotonic clock (coarser, and cached per
 * round), so the uv_timer_t is set for max(planned, uv_now()) on the loop's
 * clock. That is an absolute time, which a stale uv_now() cannot make
 * early, and for timers armed in start order it never decreases, so equal
 * planned times keep their start order (libuv runs equal timeouts in start
 * order). Should the loop's clock ever run ahead of cport__clock_ms(), the
 * callback finds its run not yet due and waits out the rest. */
#include <stdatomic.h>

#include "core_internal.h"
#include "log_internal.h"
#include "timeouts.h"

enum {
  TIMER_CANCELLED = 1, /* cport_timer_cancel() was called */
  TIMER_CLOSED = 2     /* the loop is done: nothing to ask of it */
};

/* Where the loop side is; loop-only. */
typedef enum {
  TIMER_PENDING, /* the start has not reached the loop */
  TIMER_OPEN,    /* uv_timer_t initialised, in the loop's live list */
  TIMER_DONE     /* closing, or never opened */
} timer_phase_t;

struct cport_timer_s {
  uv_timer_t handle;
  cport__msg_t start_msg;
  cport__msg_t cancel_msg;
  cport__qnode_t node; /* in the loop's live list while open */
  cport__loop_t* lp;
  cport_core_t* core;
  void (*fn)(cport_timer_t* t, void* arg);
  void* arg;
  uint64_t due; /* planned time of the next run, on cport__clock_ms() */
  uint64_t repeat_ms;
  timer_phase_t phase;
  atomic_int flags;
  atomic_int refs;
};


static uint64_t add_sat(uint64_t a, uint64_t b) {
  return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}


static void timer_release(cport_timer_t* t) {
  cport_core_t* core;
  if (atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
    return;
  core = t->core;
  cport__free(t);
  cport__core_release(core);
}


static void timer_close_cb(uv_handle_t* handle) {
  /* May run after cport_core_destroy() returned (an embedded core): touch
   * nothing but the timer. */
  timer_release(cport__container_of(handle, cport_timer_t, handle));
}


/* The loop is done with `t`: close its handle if it is open. Thread: loop. */
static void timer_close(cport_timer_t* t) {
  if (t->phase != TIMER_OPEN)
    return;
  t->phase = TIMER_DONE;
  atomic_fetch_or_explicit(&t->flags, TIMER_CLOSED, memory_order_acq_rel);
  cport__queue_remove(&t->lp->timers.live, &t->node);
  uv_close((uv_handle_t*)&t->handle, timer_close_cb);
}


/* cport__clock_ms(), read once per value of uv_now(): every timer of one
 * round of due timers is judged against the same instant (see
 * cport__loop_timers_t). */
static uint64_t timer_now(cport__loop_timers_t* lt, uv_loop_t* loop) {
  uint64_t loop_ms = uv_now(loop);
  if (lt->pass_now_ms == 0 || lt->pass_loop_ms != loop_ms) {
    lt->pass_loop_ms = loop_ms;
    lt->pass_now_ms = cport__clock_ms();
  }
  return lt->pass_now_ms;
}


/* The first planned time after `now`. Runs that come too late for their
 * time (a busy loop, or fn running longer than a period) are skipped, not
 * run back to back; the times stay on the grid of the first run. */
static uint64_t timer_next(uint64_t due, uint64_t period, uint64_t now) {
  uint64_t next = add_sat(due, period);
  if (next > now)
    return next;
  return add_sat(now - (now - next) % period, period);
}


static void timer_fire_cb(uv_timer_t* handle);

/* Set the handle for t->due. Thread: loop. */
static void timer_schedule(cport_timer_t* t) {
  uint64_t loop_ms = uv_now(t->handle.loop);
  /* Cannot fail: the handle is open and the callback set. */
  (void)uv_timer_start(&t->handle, timer_fire_cb,
                       t->due > loop_ms ? t->due - loop_ms : 0, 0);
}


static void timer_fire_cb(uv_timer_t* handle) {
  cport_timer_t* t = cport__container_of(handle, cport_timer_t, handle);
  uint64_t now = timer_now(&t->lp->timers, handle->loop);
  if (now < t->due) {
    /* The loop's clock ran ahead of ours: not due yet. At least 1 ms, so
     * that libuv does not run it again in this same round. */
    (void)uv_timer_start(handle, timer_fire_cb, t->due - now, 0);
    return;
  }
  if (!(atomic_load_explicit(&t->flags, memory_order_acquire) &
        TIMER_CANCELLED))
    t->fn(t, t->arg);
  /* The loop's reference keeps `t` alive whatever fn did. A cancel from fn
   * has closed it already, and timer_close() does nothing twice. */
  if (t->repeat_ms == 0 ||
      (atomic_load_explicit(&t->flags, memory_order_acquire) &
       TIMER_CANCELLED)) {
    timer_close(t);
    return;
  }
  /* A fresh reading: fn may have run for a while. */
  t->due = timer_next(t->due, t->repeat_ms, cport__clock_ms());
  timer_schedule(t);
}


/* The start reaches the loop: open and set the handle, unless the timer
 * was cancelled meanwhile or the core is being destroyed. Thread: loop. */
static void timer_open(cport_timer_t* t) {
  cport__loop_timers_t* lt = &t->lp->timers;
  if (lt->closed || (atomic_load_explicit(&t->flags, memory_order_acquire) &
                     TIMER_CANCELLED)) {
    t->phase = TIMER_DONE;
    atomic_fetch_or_explicit(&t->flags, TIMER_CLOSED, memory_order_acq_rel);
    timer_release(t);
    return;
  }
  /* Cannot fail (libuv 1.44 returns 0 on every platform). */
  (void)uv_timer_init(t->lp->loop, &t->handle);
  t->phase = TIMER_OPEN;
  cport__queue_push(&lt->live, &t->node);
  timer_schedule(t);
}


static void timer_start_run(cport__msg_t* m, const cport__msg_t* next) {
  (void)next;
  timer_open(cport__container_of(m, cport_timer_t, start_msg));
}


/* A cancel from another thread reaches the loop; it carries the handle's
 * reference. */
static void timer_cancel_run(cport__msg_t* m, const cport__msg_t* next) {
  cport_timer_t* t = cport__container_of(m, cport_timer_t, cancel_msg);
  (void)next;
  timer_close(t);
  timer_release(t);
}


int cport_timer_start(cport_core_t* core,
                      unsigned loop,
                      uint64_t delay_ms,
                      uint64_t repeat_ms,
                      void (*fn)(cport_timer_t* t, void* arg),
                      void* arg,
                      cport_timer_t** out) {
  cport__loop_t* lp = cport__core_loop(core, loop);
  uint64_t now = cport__clock_ms();
  cport_timer_t* t;
  if (core == NULL || fn == NULL)
    return cport__einval("cport_timer_start", "%s is NULL",
                         core == NULL ? "core" : "fn");
  if (lp == NULL)
    return cport__einval("cport_timer_start", "loop %u: the core has %u", loop,
                         cport_core_loops(core));
  if (out == NULL && repeat_ms != 0)
    return cport__einval("cport_timer_start",
                         "out is NULL for a repeating timer (repeat_ms "
                         "%llu): it could never be cancelled",
                         (unsigned long long)repeat_ms);
  t = cport__calloc(1, sizeof(*t));
  if (t == NULL)
    return UV_ENOMEM;
  t->lp = lp;
  t->core = core;
  t->fn = fn;
  t->arg = arg;
  t->due = add_sat(now, delay_ms);
  t->repeat_ms = repeat_ms;
  t->phase = TIMER_PENDING;
  t->start_msg.run = timer_start_run;
  t->cancel_msg.run = timer_cancel_run;
  atomic_init(&t->flags, 0);
  atomic_init(&t->refs, out != NULL ? 2 : 1);
  cport__core_hold(core);
  if (out != NULL)
    *out = t;
  /* Either way the same timer_open(): only the hand-over differs. */
  if (cport__loop_direct(lp))
    timer_open(t);
  else
    cport__loop_post(lp, &t->start_msg);
  return 0;
}


int cport_timer_cancel(cport_timer_t* t) {
  int prev;
  if (t == NULL)
    return UV_EINVAL;
  prev = atomic_fetch_or_explicit(&t->flags, TIMER_CANCELLED,
                                  memory_order_acq_rel);
  if (prev & TIMER_CLOSED) {
    timer_release(t);
    return 0;
  }
  if (cport__loop_is_mine(t->lp)) {
    /* A start still queued finds CANCELLED and never opens the handle. */
    timer_close(t);
    timer_release(t);
    return 0;
  }
  cport__loop_post(t->lp, &t->cancel_msg);
  return 0;
}


void cport__loop_timers_close(cport__loop_timers_t* lt) {
  cport__qnode_t* n;
  lt->closed = 1;
  while ((n = cport__queue_head(&lt->live)) != NULL)
    timer_close(cport__container_of(n, cport_timer_t, node));
}
