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
  /* The services the application created (core_internal.h), and the
   * extension that watches them; both under `registry_lock`, because
   * services on different loops come and go on their loops' threads. */
  uv_mutex_t registry_lock;
  cport__queue_t registry;
  cport__core_ext_t* ext;
};


/* The core whose loop the calling thread is running right now (inside
 * uv_run, so inside one of its callbacks or jobs), or NULL: the
 * owner-only calls that would wait for that loop, or free it, refuse to
 * run there. */
static CPORT__THREAD_LOCAL cport_core_t* tls_running;


/* The thread check of the core's owner-only functions: 0, or one error
 * line and CPORT_EWRONGTHREAD. Run, join and destroy wait for the core's
 * loops to stop, and destroy frees them: from inside one of those loops
 * they would wait for themselves or free the loop under its own feet. */
static int core_check_owner(cport_core_t* core, const char* fn) {
  if (tls_running == core) {
    cport__log(CPORT_LOG_ERROR,
               "%s: called from a callback or job running on the core's own "
               "loop; call it on the thread that runs the core once "
               "cport_core_run_here() has returned (stop it with "
               "cport_core_stop(), which any callback may call)",
               fn);
    return CPORT_EWRONGTHREAD;
  }
  return 0;
}


/* Mark the calling thread as running the core's loops (their callbacks
 * and jobs) until core_leave(), for core_check_owner(). Returns what to
 * restore: the core marked before, for nested cores. */
static cport_core_t* core_enter(cport_core_t* core) {
  cport_core_t* outer = tls_running;
  tls_running = core;
  return outer;
}

static void core_leave(cport_core_t* outer) {
  tls_running = outer;
}


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
    cport__free(core->loops[i].plain_chunk);
    cport__send_pool_clear(&core->loops[i].send_pool);
    cport__tls_pool_clear(&core->loops[i].tls_pool);
    uv_mutex_destroy(&core->loops[i].lock);
  }
  uv_mutex_destroy(&core->registry_lock);
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
    return cport__einval("cport_core_create", "out is NULL");
  if (opts == NULL) {
    cport_core_opts_init(&defaults);
    opts = &defaults;
  }
  if (opts->loops == 0 || opts->loops > CPORT_CORE_MAX_LOOPS)
    return cport__einval("cport_core_create",
                         "opts.loops %u: must be 1 to %u", opts->loops,
                         (unsigned)CPORT_CORE_MAX_LOOPS);
  /* An embedded core has the application's one loop to run on. */
  if (opts->uv_loop != NULL && opts->loops != 1)
    return cport__einval("cport_core_create",
                         "opts.loops %u: must be 1 with opts.uv_loop (an "
                         "embedded core runs on the application's one loop)",
                         opts->loops);
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
  rc = uv_mutex_init(&core->registry_lock);
  if (rc != 0) {
    cport__free(core->loops);
    cport__free(core);
    return rc;
  }
  for (i = 0; i < core->nloops; i++) {
    rc = loop_init(core, i, opts->uv_loop);
    if (rc != 0) {
      while (i-- > 0) loop_abandon(&core->loops[i]);
      uv_mutex_destroy(&core->registry_lock);
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
  cport_core_t* outer;
  unsigned i;
  int busy = 0;
  if (core == NULL)
    return;
  /* Destroying under a running loop would free it under its own thread:
   * refused, and the core is left as it was (the application's bug is
   * logged; leaking beats corrupting memory). */
  if (core_check_owner(core, "cport_core_destroy") != 0)
    return;
  cport_core_stop(core);
  cport_core_join(core);
  /* The callbacks and jobs that run below may not destroy it again. */
  outer = core_enter(core);
  /* Timers never run again, those that reach a loop from now on included;
   * their handles close with the core's. */
  for (i = 0; i < core->nloops; i++)
    cport__loop_timers_close(&core->loops[i].timers);
  /* Entries nobody ran yet run now, on the owner's thread, which is the
   * loops' thread while none runs them. */
  core_drain_all(core);
  /* Before the core's own handles, so that the extension's close callbacks
   * run in the same loop rounds below. */
  if (core->ext != NULL)
    core->ext->close(core->ext);
  core->closing_handles = 2 * (int)core->nloops;
  for (i = 0; i < core->nloops; i++) {
    uv_close_cb cb =
        core->embedded ? loop_embedded_close_cb : loop_owned_close_cb;
    uv_close((uv_handle_t*)&core->loops[i].wakeup, cb);
    uv_close((uv_handle_t*)&core->loops[i].dispatch_timer, cb);
  }
  if (core->embedded) {
    core_leave(outer);
    return; /* the last close callback drops the core's hold */
  }
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
  /* A host name lookup of a service destroyed during it cannot be cut
   * short once begun: its callback, which frees the service, comes when
   * the system resolver returns. */
  for (i = 0; i < core->nloops; i++) {
    while (core->loops[i].lookups > 0) {
      uv_run(core->loops[i].loop, UV_RUN_ONCE);
      core_drain_all(core);
    }
  }
  core_leave(outer);
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
#define LOOP_NO_OWNER ((uintptr_t)1)

static void loop_set_owner(cport__loop_t* lp, uintptr_t token) {
  atomic_store_explicit(&lp->owner, token, memory_order_release);
}


int cport_core_dispatch(cport_core_t* core,
                        unsigned loop_index,
                        int timeout_ms) {
  cport__loop_t* lp = cport__core_loop(core, loop_index);
  cport_core_t* outer;
  int alive;
  if (core == NULL)
    return cport__einval("cport_core_dispatch", "core is NULL");
  if (lp == NULL)
    return cport__einval("cport_core_dispatch", "loop %u: the core has %u",
                         loop_index, core->nloops);
  if (atomic_load(&core->running))
    return UV_EBUSY;
  loop_set_owner(lp, cport__thread_token());
  outer = core_enter(core);
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
  core_leave(outer);
  alive = uv_loop_alive(lp->loop);
  return alive ? 1 : 0;
}


static void loop_thread_main(void* arg) {
  cport__loop_t* lp = arg;
  loop_set_owner(lp, cport__thread_token());
  (void)core_enter(lp->core);
  /* uv_run returns after uv_stop(); the flag tells a real stop from a stop
   * requested before this thread reached uv_run. */
  while (!atomic_load(&lp->core->stopping))
    uv_run(lp->loop, UV_RUN_DEFAULT);
  core_leave(NULL);
  loop_set_owner(lp, LOOP_NO_OWNER);
}


/* Start a thread for each loop from `first` on. On failure the threads
 * already started are stopped and joined, and the core is idle again. */
static int core_start(cport_core_t* core, unsigned first, const char* fn) {
  unsigned i;
  int rc;
  if (core == NULL)
    return cport__einval(fn, "core is NULL");
  if (core->embedded)
    return cport__einval(fn,
                         "the core is embedded (opts.uv_loop): the "
                         "application runs that loop");
  if (atomic_load(&core->running))
    return UV_EBUSY;
  rc = core_check_owner(core, fn);
  if (rc != 0)
    return rc;
  atomic_store(&core->stopping, 0);
  atomic_store(&core->running, 1);
  for (i = first; i < core->nloops; i++) {
    cport__loop_t* lp = &core->loops[i];
    uv_ref((uv_handle_t*)&lp->wakeup);
    loop_set_owner(lp, LOOP_NO_OWNER);
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
  return core_start(core, 0, "cport_core_run");
}


int cport_core_run_here(cport_core_t* core) {
  cport__loop_t* lp;
  cport_core_t* outer;
  int rc = core_start(core, 1, "cport_core_run_here");
  if (rc != 0)
    return rc;
  /* Loop 0 is this thread's, as a started thread's loop is its own; the
   * referenced wake-up keeps uv_run waiting when the loop has nothing else,
   * until cport_core_stop() makes port_wakeup_cb stop it. */
  lp = &core->loops[0];
  uv_ref((uv_handle_t*)&lp->wakeup);
  loop_set_owner(lp, cport__thread_token());
  outer = core_enter(core);
  while (!atomic_load(&core->stopping))
    uv_run(lp->loop, UV_RUN_DEFAULT);
  core_leave(outer);
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
  int rc;
  if (core == NULL)
    return cport__einval("cport_core_join", "core is NULL");
  /* A loop thread joining would wait for itself. */
  rc = core_check_owner(core, "cport_core_join");
  if (rc != 0)
    return rc;
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
  if (core == NULL || fn == NULL)
    return cport__einval("cport_core_post", "%s is NULL",
                         core == NULL ? "core" : "fn");
  if (lp == NULL)
    return cport__einval("cport_core_post", "loop %u: the core has %u",
                         loop_index, core->nloops);
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


void cport__core_register(cport_core_t* core, cport__core_entry_t* e) {
  uv_mutex_lock(&core->registry_lock);
  cport__queue_push(&core->registry, &e->node);
  uv_mutex_unlock(&core->registry_lock);
}


void cport__core_unregister(cport_core_t* core, cport__core_entry_t* e) {
  cport__core_ext_t* ext;
  int linked;
  uv_mutex_lock(&core->registry_lock);
  /* A destroy called again from the service's own callbacks finds the
   * entry gone already. */
  linked = cport__queue_linked(&core->registry, &e->node);
  if (linked)
    cport__queue_remove(&core->registry, &e->node);
  ext = core->ext;
  uv_mutex_unlock(&core->registry_lock);
  /* Outside the lock: the hook may post to another loop. The extension
   * lives until cport_core_destroy(), after every service is gone. */
  if (linked && ext != NULL)
    ext->entry_gone(ext, e);
}


void cport__core_each_entry(cport_core_t* core,
                            void (*fn)(cport__core_entry_t* e, void* arg),
                            void* arg) {
  cport__qnode_t* n;
  uv_mutex_lock(&core->registry_lock);
  for (n = cport__queue_head(&core->registry); n != NULL; n = n->next)
    fn(cport__container_of(n, cport__core_entry_t, node), arg);
  uv_mutex_unlock(&core->registry_lock);
}


int cport__core_set_ext(cport_core_t* core, cport__core_ext_t* ext) {
  int rc = 0;
  uv_mutex_lock(&core->registry_lock);
  if (ext != NULL && core->ext != NULL)
    rc = UV_EBUSY;
  else
    core->ext = ext;
  uv_mutex_unlock(&core->registry_lock);
  return rc;
}


cport__core_ext_t* cport__core_ext(cport_core_t* core) {
  cport__core_ext_t* ext;
  uv_mutex_lock(&core->registry_lock);
  ext = core->ext;
  uv_mutex_unlock(&core->registry_lock);
  return ext;
}


int cport__core_embedded(const cport_core_t* core) {
  return core->embedded;
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


char* cport__loop_plain_chunk(cport__loop_t* lp) {
  if (lp->plain_chunk == NULL)
    lp->plain_chunk = cport__malloc(CPORT__READ_CHUNK);
  return lp->plain_chunk;
}


uintptr_t cport__thread_token(void) {
  static CPORT__THREAD_LOCAL char marker;
  return (uintptr_t)&marker;
}


int cport__loop_is_mine(cport__loop_t* lp) {
  uintptr_t owner = atomic_load_explicit(&lp->owner, memory_order_acquire);
  return owner == cport__thread_token();
}


int cport__loop_check(cport__loop_t* lp, const char* fn) {
  if (cport__loop_is_mine(lp))
    return 0;
  cport__log(CPORT_LOG_ERROR,
             "%s: called from a thread that does not run loop %u; call it "
             "from that loop's callbacks, or post a job there with "
             "cport_core_post()",
             fn, lp->index);
  return CPORT_EWRONGTHREAD;
}
