/* The timers of one loop (timer.c), as the loop keeps them: the core
 * embeds one of these in each loop and closes them when it is destroyed. */
#ifndef CPORT_TIMER_INTERNAL_H
#define CPORT_TIMER_INTERNAL_H

#include <stdint.h>

#include "queue.h"

/* A zero-filled value is ready. Loop-only: every field is read and written
 * on the loop's owner thread. */
typedef struct cport__loop_timers_s {
  /* Timers whose uv_timer_t is open, in the order they were armed. */
  cport__queue_t live;
  /* The core is being destroyed: a timer that reaches the loop from now on
   * is never armed. */
  int closed;
  /* cport__clock_ms() as first read while uv_now() was `pass_loop_ms`:
   * every timer of one round of due timers is judged against the same
   * instant, so that an early wake-up cannot put a later-started timer
   * ahead of an earlier one with the same planned time. */
  uint64_t pass_loop_ms;
  uint64_t pass_now_ms;
} cport__loop_timers_t;

/* Close every live timer of the loop and refuse new ones: none of them runs
 * again. Their close callbacks run in a later round of the loop. Thread:
 * the loop's owner (cport_core_destroy). */
void cport__loop_timers_close(cport__loop_timers_t* lt);

#endif /* CPORT_TIMER_INTERNAL_H */
