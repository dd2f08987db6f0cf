/* The stop on signals: SIGINT and SIGTERM (Ctrl-C and Ctrl-Break on
 * Windows) stop every service of the core gracefully, then the core.
 *
 * Design notes
 *
 * The watch is an extension of the core (core_internal.h): the core lists
 * the services the application created, and closes the watch in
 * cport_core_destroy(). Its handles (two uv_signal_t and a deadline timer)
 * live on loop 0 and are unreferenced, so that they neither keep an
 * embedded application's loop alive nor make cport_core_dispatch() report
 * work.
 *
 * On the first signal loop 0 walks the registry under its lock and posts a
 * stop to each service's loop (the entry's message, each posted once); a
 * hold on the service keeps its memory until the message has run, whatever
 * its loop did meanwhile. `pending` counts the services whose stop has not
 * ended, plus one for the walk itself, so that a quick service cannot end
 * the wait before the walk is over. A service's stop ends with its
 * on_stopped, with its destroy (whose pending on_stopped never comes: the
 * registry's entry_gone hook), or at once when cport_service_stop() refuses
 * (stopping already, destroyed). Each entry's ext_state says, on the
 * service's loop only, that its on_stopped is still awaited, so that each
 * service ends its part once. The last to end posts `all_stopped` to loop
 * 0, which stops the core; the deadline timer does the same first if the
 * services take longer. */
#include <signal.h>
#include <stdlib.h>

#include "core_internal.h"
#include "log_internal.h"
#include "service_internal.h"
#include "timeouts.h"

/* The second signal: Ctrl-Break where libuv maps it (Windows), SIGTERM
 * elsewhere (Windows never raises it for a console). */
#ifdef SIGBREAK
#define SIGNALS_SECOND SIGBREAK
#define SIGNALS_SECOND_NAME "SIGBREAK"
#else
#define SIGNALS_SECOND SIGTERM
#define SIGNALS_SECOND_NAME "SIGTERM"
#endif

typedef enum {
  WATCH_IDLE,     /* no signal yet */
  WATCH_STOPPING, /* the services are stopping */
  WATCH_DONE      /* the core was stopped (or, embedded, the watch closed) */
} watch_state_t;

/* An entry's ext_state (core_internal.h). */
enum { ENTRY_QUIET = 0, ENTRY_AWAITED = 1 };

typedef struct watch_s {
  cport__core_ext_t ext; /* first: the core knows the watch by it */
  cport_core_t* core;
  cport__loop_t* lp; /* loop 0 */
  uv_signal_t sig[2];
  uv_timer_t deadline_timer;
  int handles;      /* initialised and not yet closed */
  int handles_shut; /* uv_close() called on them */
  int closing;      /* cport_core_destroy() is done with the watch */
  watch_state_t state;
  int deadline_ms;
  uint64_t deadline; /* cport__clock_ms() time; read by every loop */
  void (*on_signal)(cport_core_t* core, int signum, void* arg);
  void* arg;
  atomic_size_t pending;
  cport__msg_t all_stopped;
} watch_t;


static void watch_free(watch_t* w) {
  cport_core_t* core = w->core;
  cport__free(w);
  cport__core_release(core);
}


static void watch_close_cb(uv_handle_t* handle) {
  watch_t* w = handle->data;
  if (--w->handles == 0 && w->closing)
    watch_free(w);
}


/* Close whatever handles are open (once). The memory goes with the last
 * close callback once the core is done with the watch. */
static void watch_shut(watch_t* w) {
  int i;
  if (w->handles_shut)
    return;
  w->handles_shut = 1;
  for (i = 0; i < 2; i++)
    if (w->sig[i].data != NULL)
      uv_close((uv_handle_t*)&w->sig[i], watch_close_cb);
  if (w->deadline_timer.data != NULL)
    uv_close((uv_handle_t*)&w->deadline_timer, watch_close_cb);
}


/* The stop is over: every service has stopped, the deadline has passed, or
 * a second signal came. Thread: loop 0. */
static void watch_finish(watch_t* w) {
  if (w->state == WATCH_DONE)
    return;
  w->state = WATCH_DONE;
  uv_timer_stop(&w->deadline_timer);
  (void)cport_core_stop(w->core);
  /* An embedded core has no thread of cport's to stop: the application's
   * loop ends when nothing of it is active any more, the watch included. */
  if (cport__core_embedded(w->core))
    watch_shut(w);
}


static void watch_all_stopped_run(cport__msg_t* m, const cport__msg_t* next) {
  watch_t* w = cport__container_of(m, watch_t, all_stopped);
  (void)next;
  watch_finish(w);
}


/* One service's stop has ended. Thread: that service's loop (or loop 0 for
 * the walk's own count). */
static void watch_one_done(watch_t* w) {
  if (atomic_fetch_sub_explicit(&w->pending, 1, memory_order_acq_rel) != 1)
    return;
  /* On loop 0 at once: an embedded application's loop may end in this very
   * round (the wake-up is unreferenced), before a posted message ran. */
  if (cport__loop_is_mine(w->lp))
    watch_finish(w);
  else
    cport__loop_post(w->lp, &w->all_stopped);
}


static cport_service_t* entry_service(cport__core_entry_t* e) {
  cport__service_view_t* view =
      cport__container_of(e, cport__service_view_t, entry);
  return (cport_service_t*)(void*)view;
}


static watch_t* watch_of(cport_core_t* core) {
  return cport__container_of(cport__core_ext(core), watch_t, ext);
}


static void watch_service_stopped(cport_service_t* svc) {
  cport__core_entry_t* e = &cport__service_view(svc)->entry;
  if (e->ext_state == ENTRY_AWAITED) {
    e->ext_state = ENTRY_QUIET;
    watch_one_done(watch_of(cport_service_core(svc)));
  }
}


/* The stop, on the service's own loop. */
static void watch_stop_run(cport__msg_t* m, const cport__msg_t* next) {
  cport__core_entry_t* e = cport__container_of(m, cport__core_entry_t, ext_msg);
  cport_service_t* svc = entry_service(e);
  watch_t* w = watch_of(cport_service_core(svc));
  uint64_t now = cport__clock_ms();
  int rc = UV_EALREADY;
  (void)next;
  /* Destroyed after the walk posted this: nothing of it may be touched but
   * the memory the hold keeps. */
  if (cport__service_phase(svc) != CPORT__PHASE_DESTROYING) {
    e->ext_state = ENTRY_AWAITED;
    /* A drain (begun by on_signal, say) is what the application chose:
     * waited for, within the deadline, not cut short by a stop. */
    if (cport_service_is_draining(svc))
      rc = cport__service_join_drain(svc, watch_service_stopped);
    else
      rc = cport_service_stop(svc,
                              w->deadline > now ? (int)(w->deadline - now) : 0,
                              watch_service_stopped);
  }
  if (rc != 0) {
    e->ext_state = ENTRY_QUIET;
    watch_one_done(w);
  }
  cport__service_release(svc);
}


/* The walk over the registry, under its lock: a registered service holds
 * its own memory, so the hold taken here is safe. */
static void watch_post_stop(cport__core_entry_t* e, void* arg) {
  watch_t* w = arg;
  cport_service_t* svc = entry_service(e);
  cport__service_hold(svc);
  atomic_fetch_add_explicit(&w->pending, 1, memory_order_relaxed);
  e->ext_msg.run = watch_stop_run;
  cport__loop_post(cport__service_view(svc)->lp, &e->ext_msg);
}


static void watch_deadline_cb(uv_timer_t* timer) {
  watch_finish(timer->data);
}


static const char* watch_signal_name(int signum) {
  return signum == SIGINT ? "SIGINT" : SIGNALS_SECOND_NAME;
}


static void watch_signal_cb(uv_signal_t* handle, int signum) {
  watch_t* w = handle->data;
  if (w->state != WATCH_IDLE) {
    /* The second signal: the user does not want to wait. After the stop
     * is over (the application has not destroyed the core yet) it stops
     * the core again, which does no harm. */
    cport__log(CPORT_LOG_INFO, "%s again: stopping the core at once",
               watch_signal_name(signum));
    w->state = WATCH_STOPPING;
    watch_finish(w);
    return;
  }
  w->state = WATCH_STOPPING;
  cport__log(CPORT_LOG_INFO,
             "%s: stopping the services (deadline %d ms), then the core",
             watch_signal_name(signum), w->deadline_ms);
  if (w->on_signal != NULL)
    w->on_signal(w->core, signum, w->arg);
  w->deadline = cport__clock_ms() + (uint64_t)w->deadline_ms;
  uv_update_time(w->lp->loop);
  uv_timer_start(&w->deadline_timer, watch_deadline_cb,
                 (uint64_t)w->deadline_ms, 0);
  atomic_store_explicit(&w->pending, 1, memory_order_relaxed);
  cport__core_each_entry(w->core, watch_post_stop, w);
  watch_one_done(w);
}


static void watch_entry_gone(cport__core_ext_t* ext, cport__core_entry_t* e) {
  /* Destroyed while its stop was under way: its on_stopped will not come. */
  if (e->ext_state == ENTRY_AWAITED) {
    e->ext_state = ENTRY_QUIET;
    watch_one_done(cport__container_of(ext, watch_t, ext));
  }
}


static void watch_close(cport__core_ext_t* ext) {
  watch_t* w = cport__container_of(ext, watch_t, ext);
  w->closing = 1;
  watch_shut(w);
  if (w->handles == 0)
    watch_free(w);
}


/* Initialise and start the handles; on failure close those initialised. */
static int watch_open(watch_t* w) {
  static const int signums[2] = {SIGINT, SIGNALS_SECOND};
  uv_loop_t* loop = w->lp->loop;
  int rc;
  int i;
  rc = uv_timer_init(loop, &w->deadline_timer);
  if (rc != 0)
    return rc;
  w->deadline_timer.data = w;
  w->handles++;
  uv_unref((uv_handle_t*)&w->deadline_timer);
  for (i = 0; i < 2; i++) {
    rc = uv_signal_init(loop, &w->sig[i]);
    if (rc != 0)
      return rc;
    w->sig[i].data = w;
    w->handles++;
    rc = uv_signal_start(&w->sig[i], watch_signal_cb, signums[i]);
    if (rc != 0)
      return rc;
    uv_unref((uv_handle_t*)&w->sig[i]);
  }
  return 0;
}


int cport_core_stop_on_signals(cport_core_t* core,
                               int deadline_ms,
                               void (*on_signal)(cport_core_t* core,
                                                 int signum,
                                                 void* arg),
                               void* arg) {
  cport__loop_t* lp = cport__core_loop(core, 0);
  watch_t* w;
  int rc;
  if (lp == NULL)
    return cport__einval("cport_core_stop_on_signals", "core is NULL");
  if (deadline_ms < 0)
    return cport__einval("cport_core_stop_on_signals",
                         "deadline_ms %d: must be 0 or more", deadline_ms);
  rc = cport__loop_check(lp, "cport_core_stop_on_signals");
  if (rc != 0)
    return rc;
  w = cport__calloc(1, sizeof(*w));
  if (w == NULL)
    return UV_ENOMEM;
  w->ext.entry_gone = watch_entry_gone;
  w->ext.close = watch_close;
  w->core = core;
  w->lp = lp;
  w->deadline_ms = deadline_ms;
  w->on_signal = on_signal;
  w->arg = arg;
  w->all_stopped.run = watch_all_stopped_run;
  atomic_init(&w->pending, 0);
  rc = cport__core_set_ext(core, &w->ext);
  if (rc != 0) {
    cport__free(w);
    return rc;
  }
  /* The watch's close callbacks may run after cport_core_destroy() has
   * returned (embedded core): the core's memory stays until they have. */
  cport__core_hold(core);
  rc = watch_open(w);
  if (rc != 0) {
    (void)cport__core_set_ext(core, NULL);
    watch_close(&w->ext);
  }
  return rc;
}
