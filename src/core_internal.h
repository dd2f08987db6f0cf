/* Internal view of the core: what listeners, sessions and services need to
 * know about the loop they live on, and the loop's mailbox. */
#ifndef CPORT_CORE_INTERNAL_H
#define CPORT_CORE_INTERNAL_H

#include <stdatomic.h>

#include "common.h"
#include "msg.h" /* the mailbox's entries */
#include "queue.h"
#include "send_req.h"
#include "timer_internal.h"

/* Size of the receive chunk shared by all sessions of a loop. libuv calls
 * alloc_cb right before each read and read_cb right after it, on the loop's
 * thread, so one chunk per loop serves every session and an idle session
 * holds no receive memory at all. */
#define CPORT__READ_CHUNK (64 * 1024)

typedef struct cport__loop_s {
  cport_core_t* core;
  unsigned index;
  uv_loop_t* loop;
  uv_loop_t own_loop;
  /* Wakes the loop's thread from any thread. uv_async_send coalesces, so
   * every wake-up takes the whole mailbox. */
  uv_async_t wakeup;
  /* Guards `mailbox`, the only state other threads touch. */
  uv_mutex_t lock;
  /* One FIFO for everything: jobs, sends, disconnects, broadcasts, service
   * messages between loops. One queue means one order, so a job posted
   * between two sends runs between them. */
  cport__queue_t mailbox;
  /* Entries posted and not yet taken by the loop: read without the lock by
   * the owner, to learn whether a call of its own may act at once. */
  atomic_size_t mail;
  /* Owner only: non-zero while the loop runs the entries it took, when an
   * owner's call acts in the place of the entry that made it. */
  int draining;
  /* Bounds cport_core_dispatch()'s wait. */
  uv_timer_t dispatch_timer;
  uv_thread_t thread;
  int thread_started;
  /* The thread that drives the loop (cport__thread_token()): the one that
   * created the core, then the last to call cport_core_dispatch() on it, a
   * loop thread of cport_core_run() while it runs, the caller of
   * cport_core_join() after; no thread at all while a loop thread starts or
   * exits. */
  atomic_uintptr_t owner;
  char* read_chunk;
  /* Free send requests of this loop's sessions (send_req.h). */
  cport__send_pool_t send_pool;
  /* Host name lookups (uv_getaddrinfo) of client services still under way
   * on this loop; loop only. libuv cannot interrupt one that has begun, so
   * cport_core_destroy() waits for them before it closes the loop. */
  unsigned lookups;
  /* The loop's timers (timer.c). */
  cport__loop_timers_t timers;
} cport__loop_t;

/* A value unique to the calling thread among live threads. */
uintptr_t cport__thread_token(void);

/* Non-zero if the calling thread is the loop's owner. */
int cport__loop_is_mine(cport__loop_t* lp);

/* Non-zero if a call of the calling thread may act on the loop at once:
 * the thread owns the loop and nothing posted before this call waits in
 * the mailbox (or the loop is running the mailbox entry that made the
 * call, which is where the call belongs). Otherwise the call must post
 * what it does, so that it happens after what was posted before it.
 * Thread: any. */
/* The second half of cport__port_direct(), for a caller that knows it owns
 * the loop. */
static inline int cport__loop_quiet(cport__loop_t* lp) {
  return lp->draining ||
         atomic_load_explicit(&lp->mail, memory_order_acquire) == 0;
}

static inline int cport__loop_direct(cport__loop_t* lp) {
  return cport__loop_is_mine(lp) && cport__loop_quiet(lp);
}

/* Append `m` (run set; the entry is the caller's until it has run) to the
 * loop's mailbox and wake the loop. Cannot fail. Thread: any. */
void cport__loop_post(cport__loop_t* lp, cport__msg_t* m);

/* Thread: any. Returns NULL for a bad index. */
cport__loop_t* cport__core_loop(cport_core_t* core, unsigned index);

/* Take or drop a hold on the core's memory: every service holds its core,
 * so that sessions and services that outlive cport_core_destroy() (through
 * references the application keeps) still find their loop. The memory is
 * freed when the core is destroyed and the last hold is dropped. Thread:
 * any. */
void cport__core_hold(cport_core_t* core);
void cport__core_release(cport_core_t* core);

/* The loop's shared receive chunk, allocated on first use.
 * Returns NULL on allocation failure. */
CPORT__NODISCARD char* cport__loop_read_chunk(cport__loop_t* lp);

/* The check of every loop-only public function, in every build: 0 when
 * the calling thread owns `lp`; otherwise one error line naming `fn`, the
 * loop and the fix, and CPORT_EWRONGTHREAD. Costs one atomic load and a
 * compare. Thread: any. */
int cport__loop_check(cport__loop_t* lp, const char* fn);

#endif /* CPORT_CORE_INTERNAL_H */
