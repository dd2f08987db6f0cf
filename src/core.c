/* The core and its loops: the libuv loops, the threads that run them.
 *
 * Design notes: a loop is a uv_loop_t plus the handles cport needs on it
 * (a wake-up async and a timer that bounds cport_core_dispatch). The async
 * is unreferenced while no cport thread runs the loop, so that it neither
 * keeps an application's embedded loop alive nor makes dispatch report work
 * that is not there; cport_core_run() references it so that each loop thread
 * blocks in uv_run() until cport_core_stop(). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core_internal.h"
#include "log_internal.h"

struct cport_core_s {
  unsigned nloops;
  int embedded;
  /* Handles still to be closed before the core's memory may go. */
  int closing_handles;
  atomic_int running;
  atomic_int stopping;
  /* One for the core itself, dropped when cport_core_destroy() has closed
   * its handles, plus one per service (cport__core_hold). */
  atomic_size_t holds;
  cport__loop_t* loops;
};


void cport_core_opts_init(cport_core_opts_t* opts) {
  if (opts == NULL)
    return;
  memset(opts, 0, sizeof(*opts));
  opts->loops = 1;
  opts->uv_loop = NULL;
  opts->ignore_sigpipe = 1;
}


/* A job of cport_core_post(): the application's function and argument. */
typedef struct core_job_s {
  cport__msg_t msg;
  void (*fn)(void* arg);
  void* arg;
} core_job_t;


static void core_job_run(cport__msg_t* m, const cport__msg_t* next) {
  core_job_t* job = cport__container_of(m, core_job_t, msg);
  (void)next;
  job->fn(job->arg);
  cport__free(job);
}


/* Run every entry posted so far, in order; each entry's owner (a job, a
 * session, a service) does the work, so the core knows none of them.
 * Entries posted meanwhile (by these entries too) wait for the next wake-up,
 * so that a job that posts itself again cannot starve the loop.
 * Thread: the loop's. Returns the number of entries run. */
static size_t loop_drain(cport__loop_t* lp) {
  cport__queue_t batch = {NULL, NULL};
  cport__qnode_t* n;
  size_t ran = 0;
  int was_draining = lp->draining;
  if (atomic_load_explicit(&lp->mail, memory_order_acquire) == 0)
    return 0;
  uv_mutex_lock(&lp->lock);
  cport__queue_move(&lp->mailbox, &batch);
  atomic_store_explicit(&lp->mail, 0, memory_order_release);
  uv_mutex_unlock(&lp->lock);
  lp->draining = 1;
  while ((n = cport__queue_pop(&batch)) != NULL) {
    cport__msg_t* m = cport__container_of(n, cport__msg_t, node);
    const cport__qnode_t* next = cport__queue_head(&batch);
    m->run(m, next != NULL ? cport__container_of(next, cport__msg_t, node)
                           : NULL);
    ran++;
  }
  lp->draining = was_draining;
  return ran;
}


static void loop_wakeup_cb(uv_async_t* handle) {
  cport__loop_t* lp = cport__container_of(handle, cport__loop_t, wakeup);
  (void)loop_drain(lp);
  /* Only cport's own loop threads are stopped: never an application's loop
   * that cport_core_run() did not start. */
  if (atomic_load(&lp->core->stopping) && atomic_load(&lp->core->running))
    uv_stop(lp->loop);
}


static void loop_dispatch_timer_cb(uv_timer_t* handle) {
  /* uv_run runs due timers before it polls. When the deadline has already
   * passed by then, this callback runs first and the poll would wait with no
   * timer left to end it; uv_stop makes that poll return at once. */
  uv_stop(handle->loop);
}


static void core_free(cport_core_t* core) {
  unsigned i;
  for (i = 0; i < core->nloops; i++) {
    cport__free(core->loops[i].read_chunk);
    cport__send_pool_clear(&core->loops[i].send_pool);
    uv_mutex_destroy(&core->loops[i].lock);
  }
  cport__free(core->loops);
  cport__free(core);
}


void cport__core_hold(cport_core_t* core) {
  atomic_fetch_add_explicit(&core->holds, 1, memory_order_relaxed);
}


void cport__core_release(cport_core_t* core) {
  if (atomic_fetch_sub_explicit(&core->holds, 1, memory_order_acq_rel) == 1)
    core_free(core);
}


/* An embedded core's handles close in the application's loop, in an order
 * libuv chooses: the core's hold goes with the last of them, and the memory
 * with the last hold, which may be a session's whose close callback comes
 * later still. */
static void loop_embedded_close_cb(uv_handle_t* handle) {
  cport_core_t* core = handle->data;
  if (--core->closing_handles == 0)
    cport__core_release(core);
}


static void loop_owned_close_cb(uv_handle_t* handle) {
  cport_core_t* core = handle->data;
  core->closing_handles--;
}


static int loop_init(cport_core_t* core, unsigned index, uv_loop_t* loop) {
  cport__loop_t* lp = &core->loops[index];
  int rc;
  lp->core = core;
  lp->index = index;
  atomic_init(&lp->owner, cport__thread_token());
  atomic_init(&lp->mail, 0);
  rc = uv_mutex_init(&lp->lock);
  if (rc != 0)
    return rc;
  if (loop != NULL) {
    lp->loop = loop;
  } else {
    rc = uv_loop_init(&lp->own_loop);
    if (rc != 0) {
      uv_mutex_destroy(&lp->lock);
      return rc;
    }
    lp->loop = &lp->own_loop;
  }
  rc = uv_async_init(lp->loop, &lp->wakeup, loop_wakeup_cb);
  if (rc != 0)
    goto fail_loop;
  uv_unref((uv_handle_t*)&lp->wakeup);
  rc = uv_timer_init(lp->loop, &lp->dispatch_timer);
  if (rc != 0)
    goto fail_async;
  lp->wakeup.data = core;
  lp->dispatch_timer.data = core;
  return 0;

fail_async:
  uv_close((uv_handle_t*)&lp->wakeup, NULL);
  uv_run(lp->loop, UV_RUN_NOWAIT);
fail_loop:
  if (loop == NULL)
    uv_loop_close(&lp->own_loop);
  uv_mutex_destroy(&lp->lock);
  return rc;
}


/* Undo port_init() for a core whose creation failed: no service has used
 * the loop. */
static void loop_abandon(cport__loop_t* lp) {
  lp->core->closing_handles = 2;
  uv_close((uv_handle_t*)&lp->wakeup, loop_owned_close_cb);
  uv_close((uv_handle_t*)&lp->dispatch_timer, loop_owned_close_cb);
  while (lp->core->closing_handles > 0) uv_run(lp->loop, UV_RUN_NOWAIT);
  (void)uv_loop_close(lp->loop);
  uv_mutex_destroy(&lp->lock);
}


int cport_core_create(cport_core_t** out, const cport_core_opts_t* opts) {
  cport_core_opts_t defaults;
  cport_core_t* core;
  unsigned i;
  int rc;
  if (out == NULL)
    return UV_EINVAL;
  if (opts == NULL) {
    cport_core_opts_init(&defaults);
    opts = &defaults;
  }
  /* An embedded core has the application's one loop to run on. */
  if (opts->loops == 0 || opts->loops > CPORT_CORE_MAX_LOOPS ||
      (opts->uv_loop != NULL && opts->loops != 1))
    return UV_EINVAL;
  core = cport__calloc(1, sizeof(*core));
  if (core == NULL)
    return UV_ENOMEM;
  core->nloops = opts->loops;
  core->embedded = opts->uv_loop != NULL;
  atomic_init(&core->holds, 1);
  core->loops = cport__calloc(core->nloops, sizeof(*core->loops));
  if (core->loops == NULL) {
    cport__free(core);
    return UV_ENOMEM;
  }
  for (i = 0; i < core->nloops; i++) {
    rc = loop_init(core, i, opts->uv_loop);
    if (rc != 0) {
      while (i-- > 0) loop_abandon(&core->loops[i]);
      cport__free(core->loops);
      cport__free(core);
      return rc;
    }
  }
  if (opts->ignore_sigpipe)
    cport__platform_ignore_sigpipe();
  *out = core;
  return 0;
}


/* Run every mailbox until all are empty: jobs that post jobs (to their own
 * loop or another) run too, each once. Thread: the owner of every loop. */
static void core_drain_all(cport_core_t* core) {
  size_t ran;
  do {
    unsigned i;
    ran = 0;
    for (i = 0; i < core->nloops; i++) ran += loop_drain(&core->loops[i]);
  } while (ran > 0);
}


void cport_core_destroy(cport_core_t* core) {
  unsigned i;
  int busy = 0;
  if (core == NULL)
    return;
  cport_core_stop(core);
  cport_core_join(core);
  /* Entries nobody ran yet run now, on the owner's thread, which is the
   * loops' thread while none runs them. */
  core_drain_all(core);
  core->closing_handles = 2 * (int)core->nloops;
  for (i = 0; i < core->nloops; i++) {
    uv_close_cb cb =
        core->embedded ? loop_embedded_close_cb : loop_owned_close_cb;
    uv_close((uv_handle_t*)&core->loops[i].wakeup, cb);
    uv_close((uv_handle_t*)&core->loops[i].dispatch_timer, cb);
  }
  if (core->embedded)
    return; /* the last close callback drops the core's hold */
  /* Every loop runs until its handles are closed, those of services
   * destroyed just before included (their on_disconnected runs here), and
   * only then is any loop closed: a close callback on one loop may post to
   * another (a part's report to its root). Not UV_RUN_DEFAULT: a handle
   * someone forgot (a listener, a signal watcher) would make that wait
   * forever. */
  while (core->closing_handles > 0) {
    for (i = 0; i < core->nloops; i++)
      uv_run(core->loops[i].loop, UV_RUN_NOWAIT);
    core_drain_all(core);
  }
  for (i = 0; i < core->nloops; i++)
    uv_run(core->loops[i].loop, UV_RUN_NOWAIT);
  core_drain_all(core);
  for (i = 0; i < core->nloops; i++)
    busy |= uv_loop_close(core->loops[i].loop) != 0;
  /* A loop that still holds a live service's handles cannot be freed
   * without libuv touching freed memory later: leaking it is the only safe
   * answer to that usage error. */
  if (!busy)
    cport__core_release(core);
}


/* An owner no thread matches: while a loop thread starts or exits, calls
 * from every other thread are queued, never run beside it. */
#define PORT_NO_OWNER ((uintptr_t)1)

static void loop_set_owner(cport__loop_t* lp, uintptr_t token) {
  atomic_store_explicit(&lp->owner, token, memory_order_release);
}


int cport_core_dispatch(cport_core_t* core,
                        unsigned loop_index,
                        int timeout_ms) {
  cport__loop_t* lp = cport__core_loop(core, loop_index);
  int alive;
  if (lp == NULL)
    return UV_EINVAL;
  if (atomic_load(&core->running))
    return UV_EBUSY;
  loop_set_owner(lp, cport__thread_token());
  /* The wake-up handle is unreferenced while no cport thread runs the loop,
   * so a loop with nothing else alive would not poll for it. */
  (void)loop_drain(lp);
  if (timeout_ms == 0) {
    uv_run(lp->loop, UV_RUN_NOWAIT);
  } else if (timeout_ms < 0) {
    uv_run(lp->loop, UV_RUN_ONCE);
  } else {
    uv_update_time(lp->loop);
    uv_timer_start(&lp->dispatch_timer, loop_dispatch_timer_cb,
                   (uint64_t)timeout_ms, 0);
    uv_run(lp->loop, UV_RUN_ONCE);
    uv_timer_stop(&lp->dispatch_timer);
  }
  alive = uv_loop_alive(lp->loop);
  return alive ? 1 : 0;
}


static void loop_thread_main(void* arg) {
  cport__loop_t* lp = arg;
  loop_set_owner(lp, cport__thread_token());
  /* uv_run returns after uv_stop(); the flag tells a real stop from a stop
   * requested before this thread reached uv_run. */
  while (!atomic_load(&lp->core->stopping))
    uv_run(lp->loop, UV_RUN_DEFAULT);
  loop_set_owner(lp, PORT_NO_OWNER);
}


/* Start a thread for each loop from `first` on. On failure the threads
 * already started are stopped and joined, and the core is idle again. */
static int core_start(cport_core_t* core, unsigned first) {
  unsigned i;
  int rc;
  if (core == NULL || core->embedded)
    return UV_EINVAL;
  if (atomic_load(&core->running))
    return UV_EBUSY;
  atomic_store(&core->stopping, 0);
  atomic_store(&core->running, 1);
  for (i = first; i < core->nloops; i++) {
    cport__loop_t* lp = &core->loops[i];
    uv_ref((uv_handle_t*)&lp->wakeup);
    loop_set_owner(lp, PORT_NO_OWNER);
    rc = uv_thread_create(&lp->thread, loop_thread_main, lp);
    if (rc != 0) {
      uv_unref((uv_handle_t*)&lp->wakeup);
      cport_core_stop(core);
      cport_core_join(core);
      return rc;
    }
    lp->thread_started = 1;
  }
  return 0;
}


int cport_core_run(cport_core_t* core) {
  return core_start(core, 0);
}


int cport_core_run_here(cport_core_t* core) {
  cport__loop_t* lp;
  int rc = core_start(core, 1);
  if (rc != 0)
    return rc;
  /* Loop 0 is this thread's, as a started thread's loop is its own; the
   * referenced wake-up keeps uv_run waiting when the loop has nothing else,
   * until cport_core_stop() makes port_wakeup_cb stop it. */
  lp = &core->loops[0];
  uv_ref((uv_handle_t*)&lp->wakeup);
  loop_set_owner(lp, cport__thread_token());
  while (!atomic_load(&core->stopping)) uv_run(lp->loop, UV_RUN_DEFAULT);
  uv_unref((uv_handle_t*)&lp->wakeup);
  return cport_core_join(core);
}


int cport_core_stop(cport_core_t* core) {
  unsigned i;
  if (core == NULL)
    return UV_EINVAL;
  if (core->embedded)
    return 0; /* no thread of cport's to stop */
  atomic_store(&core->stopping, 1);
  for (i = 0; i < core->nloops; i++) uv_async_send(&core->loops[i].wakeup);
  return 0;
}


int cport_core_join(cport_core_t* core) {
  unsigned i;
  if (core == NULL)
    return UV_EINVAL;
  for (i = 0; i < core->nloops; i++) {
    cport__loop_t* lp = &core->loops[i];
    if (lp->thread_started) {
      uv_thread_join(&lp->thread);
      lp->thread_started = 0;
      uv_unref((uv_handle_t*)&lp->wakeup);
    }
    /* The loops are the joiner's now, those whose thread never started
     * included. */
    if (atomic_load(&core->running))
      loop_set_owner(lp, cport__thread_token());
  }
  atomic_store(&core->running, 0);
  atomic_store(&core->stopping, 0);
  return 0;
}


int cport_core_post(cport_core_t* core,
                    unsigned loop_index,
                    void (*fn)(void* arg),
                    void* arg) {
  cport__loop_t* lp = cport__core_loop(core, loop_index);
  core_job_t* job;
  if (lp == NULL || fn == NULL)
    return UV_EINVAL;
  job = cport__malloc(sizeof(*job));
  if (job == NULL)
    return UV_ENOMEM;
  job->msg.run = core_job_run;
  job->fn = fn;
  job->arg = arg;
  cport__loop_post(lp, &job->msg);
  return 0;
}


void cport__loop_post(cport__loop_t* lp, cport__msg_t* m) {
  uv_mutex_lock(&lp->lock);
  cport__queue_push(&lp->mailbox, &m->node);
  /* Every writer holds the lock: a load and a store, no locked
   * instruction. */
  atomic_store_explicit(
      &lp->mail, atomic_load_explicit(&lp->mail, memory_order_relaxed) + 1,
      memory_order_release);
  uv_mutex_unlock(&lp->lock);
  /* The entry is queued whatever this returns (libuv 1.44 always returns
   * 0): reporting an error now would invite the caller to free it. */
  (void)uv_async_send(&lp->wakeup);
}


unsigned cport_core_loops(const cport_core_t* core) {
  return core == NULL ? 0 : core->nloops;
}


uv_loop_t* cport_core_uv_loop(cport_core_t* core, unsigned loop_index) {
  cport__loop_t* lp = cport__core_loop(core, loop_index);
  return lp == NULL ? NULL : lp->loop;
}


cport__loop_t* cport__core_loop(cport_core_t* core, unsigned index) {
  if (core == NULL || index >= core->nloops)
    return NULL;
  return &core->loops[index];
}


char* cport__loop_read_chunk(cport__loop_t* lp) {
  if (lp->read_chunk == NULL)
    lp->read_chunk = cport__malloc(CPORT__READ_CHUNK);
  return lp->read_chunk;
}


uintptr_t cport__thread_token(void) {
  static CPORT__THREAD_LOCAL char marker;
  return (uintptr_t)&marker;
}


int cport__loop_is_mine(cport__loop_t* lp) {
  uintptr_t owner = atomic_load_explicit(&lp->owner, memory_order_acquire);
  return owner == cport__thread_token();
}


#ifndef NDEBUG
void cport__assert_on_loop(cport__loop_t* lp) {
  if (!cport__loop_is_mine(lp)) {
    cport__log(CPORT_LOG_ERROR,
               "loop-only function called from a thread that does not run "
               "loop %u",
               lp->index);
    abort();
  }
}
#endif
