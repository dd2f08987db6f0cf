/* cport: timers, a function run on one of the core's loops after a delay,
 * once or repeatedly, started and cancelled from any thread.
 *
 *   static void tick(cport_timer_t* t, void* arg) { world_update(arg); }
 *   cport_timer_t* t;
 *   cport_timer_start(core, 0, 100, 100, tick, world, &t);  // every 100 ms
 *   ...
 *   cport_timer_cancel(t);
 *
 * Times are on one monotonic clock in milliseconds. A run never comes
 * before its planned time: the start call's time plus delay_ms, then plus
 * repeat_ms for each further run, so a repeating timer does not drift. A
 * run that comes too late for its time is not made up afterwards: if the
 * loop was busy, or fn took longer than a period, the next run is the first
 * planned time after fn returned. Timers of one loop whose planned times
 * are equal run in the order their starts reached the loop; for starts
 * made by one thread, the order of the calls. */
#ifndef CPORT_TIMER_H
#define CPORT_TIMER_H

#include <stdint.h>

#include "cport/core.h"
#include "cport/export.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cport_timer_s cport_timer_t;

/* Run fn(t, arg) on `loop`'s thread delay_ms after this call, then every
 * repeat_ms while repeat_ms is not 0, until cport_timer_cancel(). A pending
 * timer keeps its loop alive (cport_core_dispatch() returns 1; an embedded
 * core's application loop does not run out of work). Timers of a core that
 * is being destroyed never run again: cport_core_destroy() closes them all,
 * those started while it runs (from jobs or callbacks) included.
 * Ownership: `arg` stays the caller's; cport only passes it to fn. `*out`
 *            is the caller's handle: give it back with cport_timer_cancel()
 *            exactly once, also after a one-shot has run. With `out` NULL (a
 *            one-shot only) the timer is fire-and-forget: it runs once and
 *            frees itself, and cannot be cancelled.
 * Thread:    any, including fn itself, jobs and other callbacks. From the
 *            loop's owner with nothing queued in the loop's mailbox the
 *            timer starts at once; otherwise the start is queued to the loop
 *            like a job, and the delay still counts from this call.
 * Callback:  fn runs on the loop's thread (the application's loop when
 *            embedded), with the handle *out received (also for a
 *            fire-and-forget timer, where it is valid during fn only).
 * Returns:   0; UV_EINVAL for NULL `core` or `fn`, a bad loop index, or a
 *            repeating timer with NULL `out` (nothing could stop it);
 *            UV_ENOMEM. On error nothing runs and `*out` is left unchanged. */
CPORT_API int cport_timer_start(cport_core_t* core,
                                unsigned loop,
                                uint64_t delay_ms,
                                uint64_t repeat_ms,
                                void (*fn)(cport_timer_t* t, void* arg),
                                void* arg,
                                cport_timer_t** out);

/* Stop the timer and give back the handle cport_timer_start() returned in
 * `*out`; `t` is invalid afterwards.
 * On the loop's owner thread (fn itself included, so a repeating timer may
 * cancel itself) fn never runs again once this returns. From another thread
 * no run of fn begins after this returns: the most that may happen is one
 * run that had already begun, still in progress on the loop's thread when
 * this returns. Closing the timer is queued to the loop like a job.
 * Also safe after cport_core_destroy() has returned (the timer then holds
 * the core's memory until this call), but not concurrently with it.
 * Ownership: takes back `t`; its memory goes once the loop is done with it.
 * Thread:    any, including fn itself, jobs and other callbacks.
 * Returns:   0; UV_EINVAL for NULL. */
CPORT_API int cport_timer_cancel(cport_timer_t* t);

#ifdef __cplusplus
}
#endif
#endif /* CPORT_TIMER_H */
