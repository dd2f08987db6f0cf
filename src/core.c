/* The core and its ports (the lecture's IocpCore and ThreadManager).
 *
 * Design notes: a port is a uv_loop_t plus the handles cport needs on it
 * (a wake-up async and a timer that bounds cport_core_dispatch). The async
 * is unreferenced while no cport thread runs the port, so that it neither
 * keeps an application's embedded loop alive nor makes dispatch report work
 * that is not there; cport_core_run() references it so that each port thread
 * blocks in uv_run() until cport_core_stop(). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core_internal.h"
#include "log_internal.h"

struct cport_core_s {
  unsigned nports;
  int embedded;
  /* Handles still to be closed before the core's memory may go. */
  int closing_handles;
  atomic_int running;
  atomic_int stopping;
  /* One for the core itself, dropped when cport_core_destroy() has closed
   * its handles, plus one per service (cport__core_hold). */
  atomic_size_t holds;
  cport__port_t* ports;
};


void cport_core_opts_init(cport_core_opts_t* opts) {
  if (opts == NULL)
    return;
  memset(opts, 0, sizeof(*opts));
  opts->ports = 1;
  opts->loop = NULL;
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
 * Thread: the port's. Returns the number of entries run. */
static size_t port_drain(cport__port_t* port) {
  cport__queue_t batch = {NULL, NULL};
  cport__qnode_t* n;
  size_t ran = 0;
  int was_draining = port->draining;
  if (atomic_load_explicit(&port->mail, memory_order_acquire) == 0)
    return 0;
  uv_mutex_lock(&port->lock);
  cport__queue_move(&port->mailbox, &batch);
  atomic_store_explicit(&port->mail, 0, memory_order_release);
  uv_mutex_unlock(&port->lock);
  port->draining = 1;
  while ((n = cport__queue_pop(&batch)) != NULL) {
    cport__msg_t* m = cport__container_of(n, cport__msg_t, node);
    const cport__qnode_t* next = cport__queue_head(&batch);
    m->run(m, next != NULL ? cport__container_of(next, cport__msg_t, node)
                           : NULL);
    ran++;
  }
  port->draining = was_draining;
  return ran;
}


static void port_wakeup_cb(uv_async_t* handle) {
  cport__port_t* port = cport__container_of(handle, cport__port_t, wakeup);
  (void)port_drain(port);
  /* Only cport's own port threads are stopped: never an application's loop
   * that cport_core_run() did not start. */
  if (atomic_load(&port->core->stopping) && atomic_load(&port->core->running))
    uv_stop(port->loop);
}


static void port_dispatch_timer_cb(uv_timer_t* handle) {
  /* uv_run runs due timers before it polls. When the deadline has already
   * passed by then, this callback runs first and the poll would wait with no
   * timer left to end it; uv_stop makes that poll return at once. */
  uv_stop(handle->loop);
}


static void core_free(cport_core_t* core) {
  unsigned i;
  for (i = 0; i < core->nports; i++) {
    cport__free(core->ports[i].read_chunk);
    cport__send_pool_clear(&core->ports[i].send_pool);
    uv_mutex_destroy(&core->ports[i].lock);
  }
  cport__free(core->ports);
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
static void port_embedded_close_cb(uv_handle_t* handle) {
  cport_core_t* core = handle->data;
  if (--core->closing_handles == 0)
    cport__core_release(core);
}


static void port_owned_close_cb(uv_handle_t* handle) {
  cport_core_t* core = handle->data;
  core->closing_handles--;
}


static int port_init(cport_core_t* core, unsigned index, uv_loop_t* loop) {
  cport__port_t* port = &core->ports[index];
  int rc;
  port->core = core;
  port->index = index;
  atomic_init(&port->owner, cport__thread_token());
  atomic_init(&port->mail, 0);
  rc = uv_mutex_init(&port->lock);
  if (rc != 0)
    return rc;
  if (loop != NULL) {
    port->loop = loop;
  } else {
    rc = uv_loop_init(&port->own_loop);
    if (rc != 0) {
      uv_mutex_destroy(&port->lock);
      return rc;
    }
    port->loop = &port->own_loop;
  }
  rc = uv_async_init(port->loop, &port->wakeup, port_wakeup_cb);
  if (rc != 0)
    goto fail_loop;
  uv_unref((uv_handle_t*)&port->wakeup);
  rc = uv_timer_init(port->loop, &port->dispatch_timer);
  if (rc != 0)
    goto fail_async;
  port->wakeup.data = core;
  port->dispatch_timer.data = core;
  return 0;

fail_async:
  uv_close((uv_handle_t*)&port->wakeup, NULL);
  uv_run(port->loop, UV_RUN_NOWAIT);
fail_loop:
  if (loop == NULL)
    uv_loop_close(&port->own_loop);
  uv_mutex_destroy(&port->lock);
  return rc;
}


/* Undo port_init() for a core whose creation failed: no service has used
 * the port. */
static void port_abandon(cport__port_t* port) {
  port->core->closing_handles = 2;
  uv_close((uv_handle_t*)&port->wakeup, port_owned_close_cb);
  uv_close((uv_handle_t*)&port->dispatch_timer, port_owned_close_cb);
  while (port->core->closing_handles > 0) uv_run(port->loop, UV_RUN_NOWAIT);
  (void)uv_loop_close(port->loop);
  uv_mutex_destroy(&port->lock);
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
  if (opts->ports == 0 || opts->ports > CPORT_CORE_MAX_PORTS ||
      (opts->loop != NULL && opts->ports != 1))
    return UV_EINVAL;
  core = cport__calloc(1, sizeof(*core));
  if (core == NULL)
    return UV_ENOMEM;
  core->nports = opts->ports;
  core->embedded = opts->loop != NULL;
  atomic_init(&core->holds, 1);
  core->ports = cport__calloc(core->nports, sizeof(*core->ports));
  if (core->ports == NULL) {
    cport__free(core);
    return UV_ENOMEM;
  }
  for (i = 0; i < core->nports; i++) {
    rc = port_init(core, i, opts->loop);
    if (rc != 0) {
      while (i-- > 0) port_abandon(&core->ports[i]);
      cport__free(core->ports);
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
 * port or another) run too, each once. Thread: the owner of every port. */
static void core_drain_all(cport_core_t* core) {
  size_t ran;
  do {
    unsigned i;
    ran = 0;
    for (i = 0; i < core->nports; i++) ran += port_drain(&core->ports[i]);
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
   * ports' thread while none runs them. */
  core_drain_all(core);
  core->closing_handles = 2 * (int)core->nports;
  for (i = 0; i < core->nports; i++) {
    uv_close_cb cb =
        core->embedded ? port_embedded_close_cb : port_owned_close_cb;
    uv_close((uv_handle_t*)&core->ports[i].wakeup, cb);
    uv_close((uv_handle_t*)&core->ports[i].dispatch_timer, cb);
  }
  if (core->embedded)
    return; /* the last close callback drops the core's hold */
  /* Every loop runs until its handles are closed, those of services
   * destroyed just before included (their on_disconnected runs here), and
   * only then is any loop closed: a close callback on one port may post to
   * another (a part's report to its root). Not UV_RUN_DEFAULT: a handle
   * someone forgot (a listener, a signal watcher) would make that wait
   * forever. */
  while (core->closing_handles > 0) {
    for (i = 0; i < core->nports; i++)
      uv_run(core->ports[i].loop, UV_RUN_NOWAIT);
    core_drain_all(core);
  }
  for (i = 0; i < core->nports; i++)
    uv_run(core->ports[i].loop, UV_RUN_NOWAIT);
  core_drain_all(core);
  for (i = 0; i < core->nports; i++)
    busy |= uv_loop_close(core->ports[i].loop) != 0;
  /* A loop that still holds a live service's handles cannot be freed
   * without libuv touching freed memory later: leaking it is the only safe
   * answer to that usage error. */
  if (!busy)
    cport__core_release(core);
}


/* An owner no thread matches: while a port thread starts or exits, calls
 * from every other thread are queued, never run beside it. */
#define PORT_NO_OWNER ((uintptr_t)1)

static void port_set_owner(cport__port_t* port, uintptr_t token) {
  atomic_store_explicit(&port->owner, token, memory_order_release);
}


int cport_core_dispatch(cport_core_t* core,
                        unsigned port_index,
                        int timeout_ms) {
  cport__port_t* port = cport__core_port(core, port_index);
  int alive;
  if (port == NULL)
    return UV_EINVAL;
  if (atomic_load(&core->running))
    return UV_EBUSY;
  port_set_owner(port, cport__thread_token());
  /* The wake-up handle is unreferenced while no cport thread runs the port,
   * so a loop with nothing else alive would not poll for it. */
  (void)port_drain(port);
  if (timeout_ms == 0) {
    uv_run(port->loop, UV_RUN_NOWAIT);
  } else if (timeout_ms < 0) {
    uv_run(port->loop, UV_RUN_ONCE);
  } else {
    uv_update_time(port->loop);
    uv_timer_start(&port->dispatch_timer, port_dispatch_timer_cb,
                   (uint64_t)timeout_ms, 0);
    uv_run(port->loop, UV_RUN_ONCE);
    uv_timer_stop(&port->dispatch_timer);
  }
  alive = uv_loop_alive(port->loop);
  return alive ? 1 : 0;
}


static void port_thread_main(void* arg) {
  cport__port_t* port = arg;
  port_set_owner(port, cport__thread_token());
  /* uv_run returns after uv_stop(); the flag tells a real stop from a stop
   * requested before this thread reached uv_run. */
  while (!atomic_load(&port->core->stopping))
    uv_run(port->loop, UV_RUN_DEFAULT);
  port_set_owner(port, PORT_NO_OWNER);
}


/* Start a thread for each port from `first` on. On failure the threads
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
  for (i = first; i < core->nports; i++) {
    cport__port_t* port = &core->ports[i];
    uv_ref((uv_handle_t*)&port->wakeup);
    port_set_owner(port, PORT_NO_OWNER);
    rc = uv_thread_create(&port->thread, port_thread_main, port);
    if (rc != 0) {
      uv_unref((uv_handle_t*)&port->wakeup);
      cport_core_stop(core);
      cport_core_join(core);
      return rc;
    }
    port->thread_started = 1;
  }
  return 0;
}


int cport_core_run(cport_core_t* core) {
  return core_start(core, 0);
}


int cport_core_run_here(cport_core_t* core) {
  cport__port_t* port;
  int rc = core_start(core, 1);
  if (rc != 0)
    return rc;
  /* Port 0 is this thread's, as a started thread's port is its own; the
   * referenced wake-up keeps uv_run waiting when the loop has nothing else,
   * until cport_core_stop() makes port_wakeup_cb stop it. */
  port = &core->ports[0];
  uv_ref((uv_handle_t*)&port->wakeup);
  port_set_owner(port, cport__thread_token());
  while (!atomic_load(&core->stopping)) uv_run(port->loop, UV_RUN_DEFAULT);
  uv_unref((uv_handle_t*)&port->wakeup);
  return cport_core_join(core);
}


int cport_core_stop(cport_core_t* core) {
  unsigned i;
  if (core == NULL)
    return UV_EINVAL;
  if (core->embedded)
    return 0; /* no thread of cport's to stop */
  atomic_store(&core->stopping, 1);
  for (i = 0; i < core->nports; i++) uv_async_send(&core->ports[i].wakeup);
  return 0;
}


int cport_core_join(cport_core_t* core) {
  unsigned i;
  if (core == NULL)
    return UV_EINVAL;
  for (i = 0; i < core->nports; i++) {
    cport__port_t* port = &core->ports[i];
    if (port->thread_started) {
      uv_thread_join(&port->thread);
      port->thread_started = 0;
      uv_unref((uv_handle_t*)&port->wakeup);
    }
    /* The ports are the joiner's now, those whose thread never started
     * included. */
    if (atomic_load(&core->running))
      port_set_owner(port, cport__thread_token());
  }
  atomic_store(&core->running, 0);
  atomic_store(&core->stopping, 0);
  return 0;
}


int cport_core_post(cport_core_t* core,
                    unsigned port_index,
                    void (*fn)(void* arg),
                    void* arg) {
  cport__port_t* port = cport__core_port(core, port_index);
  core_job_t* job;
  if (port == NULL || fn == NULL)
    return UV_EINVAL;
  job = cport__malloc(sizeof(*job));
  if (job == NULL)
    return UV_ENOMEM;
  job->msg.run = core_job_run;
  job->fn = fn;
  job->arg = arg;
  cport__port_post(port, &job->msg);
  return 0;
}


void cport__port_post(cport__port_t* port, cport__msg_t* m) {
  uv_mutex_lock(&port->lock);
  cport__queue_push(&port->mailbox, &m->node);
  /* Every writer holds the lock: a load and a store, no locked
   * instruction. */
  atomic_store_explicit(
      &port->mail, atomic_load_explicit(&port->mail, memory_order_relaxed) + 1,
      memory_order_release);
  uv_mutex_unlock(&port->lock);
  /* The entry is queued whatever this returns (libuv 1.44 always returns
   * 0): reporting an error now would invite the caller to free it. */
  (void)uv_async_send(&port->wakeup);
}


unsigned cport_core_ports(const cport_core_t* core) {
  return core == NULL ? 0 : core->nports;
}


uv_loop_t* cport_core_loop(cport_core_t* core, unsigned port_index) {
  cport__port_t* port = cport__core_port(core, port_index);
  return port == NULL ? NULL : port->loop;
}


cport__port_t* cport__core_port(cport_core_t* core, unsigned index) {
  if (core == NULL || index >= core->nports)
    return NULL;
  return &core->ports[index];
}


char* cport__port_read_chunk(cport__port_t* port) {
  if (port->read_chunk == NULL)
    port->read_chunk = cport__malloc(CPORT__READ_CHUNK);
  return port->read_chunk;
}


uintptr_t cport__thread_token(void) {
  static CPORT__THREAD_LOCAL char marker;
  return (uintptr_t)&marker;
}


int cport__port_is_mine(cport__port_t* port) {
  uintptr_t owner = atomic_load_explicit(&port->owner, memory_order_acquire);
  return owner == cport__thread_token();
}


#ifndef NDEBUG
void cport__assert_on_port(cport__port_t* port) {
  if (!cport__port_is_mine(port)) {
    cport__log(CPORT_LOG_ERROR,
               "port-only function called from a thread that does not run "
               "port %u",
               port->index);
    abort();
  }
}
#endif
