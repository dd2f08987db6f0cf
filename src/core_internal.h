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
#include "tls_internal.h"

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
  /* Owner only: non-zero while an entry runs application callbacks that
   * the application did not post (cport__loop_callbacks_begin), when
   * entries of the batch taken still wait behind it. */
  int behind;
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
  /* TLS sessions' plaintext, decrypted from the read chunk: as large,
   * allocated the first time one is needed. */
  char* plain_chunk;
  /* Free send requests of this loop's sessions (send_req.h). */
  cport__send_pool_t send_pool;
  /* Free ciphertext blocks of its TLS sessions (tls_internal.h). */
  cport__tls_pool_t tls_pool;
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
/* The second half of cport__loop_direct(), for a caller that knows it owns
 * the loop. */
static inline int cport__loop_quiet(cport__loop_t* lp) {
  return lp->draining ||
         (!lp->behind &&
          atomic_load_explicit(&lp->mail, memory_order_acquire) == 0);
}

/* Around application callbacks that a mailbox entry runs although the
 * application did not post it (a session's packets held back by its
 * packet_budget): the calls they make belong where they are made, as from
 * an I/O callback, not in the entry's place, so they act at once only when
 * nothing waits, in the mailbox or behind the entry (`next`, the entry
 * that follows it in the batch). Returns what cport__loop_callbacks_end()
 * restores. Thread: the loop's owner, inside the entry's run hook. */
static inline int cport__loop_callbacks_begin(cport__loop_t* lp,
                                              const void* next) {
  int was_draining = lp->draining;
  lp->draining = 0;
  lp->behind = next != NULL;
  return was_draining;
}

static inline void cport__loop_callbacks_end(cport__loop_t* lp,
                                             int was_draining) {
  lp->draining = was_draining;
  lp->behind = 0;
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

/* ---- the core's registry of services ----
 * The core lists the services the application created (not the hidden
 * parts of a spreading server), so that a stop on signals (signal.c) can
 * reach them. It knows nothing else of them: an entry is a link, and the
 * extension's own fields, which only the extension writes. */
typedef struct cport__core_entry_s {
  cport__qnode_t node; /* in the registry, under the core's registry lock */
  /* The extension's: a message it posts to the entry's loop (at most once),
   * and a state that only the entry's loop reads and writes. */
  cport__msg_t ext_msg;
  int ext_state;
} cport__core_entry_t;

/* Something added to a core that cport_core_destroy() must close, and that
 * hears of services leaving the registry: the stop on signals. At most one
 * per core. */
typedef struct cport__core_ext_s cport__core_ext_t;
struct cport__core_ext_s {
  /* `e` left the registry. Thread: the entry's loop (inside
   * cport_service_destroy). */
  void (*entry_gone)(cport__core_ext_t* ext, cport__core_entry_t* e);
  /* The core is being destroyed: close every handle, and free the
   * extension once they have closed. Thread: owner, after the mailboxes
   * were drained and before the core's own handles close. */
  void (*close)(cport__core_ext_t* ext);
};

/* Add `e` to the registry (a service was created), or take it out (it is
 * being destroyed; an entry not in it is left alone) and tell the
 * extension. Thread: the entry's loop. */
void cport__core_register(cport_core_t* core, cport__core_entry_t* e);
void cport__core_unregister(cport_core_t* core, cport__core_entry_t* e);

/* Call `fn` for every registered entry, oldest first, under the registry
 * lock: `fn` must not register, unregister or block. Thread: any. */
void cport__core_each_entry(cport_core_t* core,
                            void (*fn)(cport__core_entry_t* e, void* arg),
                            void* arg);

/* Install `ext` (or remove it, for NULL). Returns 0, or UV_EBUSY when one
 * is installed already. Thread: owner. */
int cport__core_set_ext(cport_core_t* core, cport__core_ext_t* ext);

/* The installed extension, or NULL. Thread: any. */
cport__core_ext_t* cport__core_ext(cport_core_t* core);

/* Non-zero for a core embedded on an application's loop. Thread: any. */
int cport__core_embedded(const cport_core_t* core);

/* The loop's shared receive chunk, allocated on first use.
 * Returns NULL on allocation failure. */
CPORT__NODISCARD char* cport__loop_read_chunk(cport__loop_t* lp);

/* The loop's plaintext chunk for TLS sessions (CPORT__READ_CHUNK bytes),
 * allocated on first use. Returns NULL on allocation failure. */
CPORT__NODISCARD char* cport__loop_plain_chunk(cport__loop_t* lp);

/* The check of every loop-only public function, in every build: 0 when
 * the calling thread owns `lp`; otherwise one error line naming `fn`, the
 * loop and the fix, and CPORT_EWRONGTHREAD. Costs one atomic load and a
 * compare. Thread: any. */
int cport__loop_check(cport__loop_t* lp, const char* fn);

#endif /* CPORT_CORE_INTERNAL_H */
