/* Internal view of the core: what listeners, sessions and services need to
 * know about the port they live on. */
#ifndef CPORT_CORE_INTERNAL_H
#define CPORT_CORE_INTERNAL_H

#include <stdatomic.h>

#include "common.h"
#include "send_req.h"

/* Size of the receive chunk shared by all sessions of a port. libuv calls
 * alloc_cb right before each read and read_cb right after it, on the port's
 * thread, so one chunk per port serves every session and an idle session
 * holds no receive memory at all. */
#define CPORT__READ_CHUNK (64 * 1024)

/* A function posted to a port with cport_core_post() (the job is freed
 * after it ran) or cport__port_post() (the job is the caller's). */
typedef struct cport__job_s {
  struct cport__job_s* next;
  void (*fn)(void* arg);
  void* arg;
  int callers;
} cport__job_t;

typedef struct cport__port_s {
  cport_core_t* core;
  unsigned index;
  uv_loop_t* loop;
  uv_loop_t own_loop;
  /* Wakes the port's thread from any thread (cport_core_stop,
   * cport_core_post, sends from other threads). uv_async_send coalesces, so
   * every wake-up drains both queues whole. */
  uv_async_t wakeup;
  /* Guards the two queues below, the only state other threads touch. */
  uv_mutex_t lock;
  /* Posted jobs, oldest first. */
  cport__job_t* jobs_head;
  cport__job_t* jobs_tail;
  /* Sends and disconnects made on other threads (send_req.h), oldest first:
   * one queue for every session of the port, so that one lock orders them
   * all. */
  cport__send_req_t* sends_head;
  cport__send_req_t* sends_tail;
  /* Bounds cport_core_dispatch()'s wait. */
  uv_timer_t dispatch_timer;
  uv_thread_t thread;
  int thread_started;
  /* The thread that drives the port (cport__thread_token()): the one that
   * created the core, then the last to call cport_core_dispatch() on it, a
   * port thread of cport_core_run() while it runs, the caller of
   * cport_core_join() after; no thread at all while a port thread starts or
   * exits. Calls from this thread act at once; sends and disconnects from
   * others are queued to it. */
  atomic_uintptr_t owner;
  char* read_chunk;
  /* Free send requests of this port's sessions (send_req.h). */
  cport__send_pool_t send_pool;
} cport__port_t;

struct cport_core_s {
  unsigned nports;
  int embedded;
  /* Handles still to be closed before an embedded core can be freed. */
  int closing_handles;
  atomic_int running;
  atomic_int stopping;
  cport__port_t* ports;
};

/* A value unique to the calling thread among live threads. */
uintptr_t cport__thread_token(void);

/* Non-zero if the calling thread is the port's owner. */
int cport__port_is_mine(cport__port_t* port);

/* Queue `job` (fn and arg set, memory the caller's until it has run) to
 * run on the port's thread, like cport_core_post() but without allocating,
 * so it cannot fail. Thread: any. */
void cport__port_post(cport__port_t* port, cport__job_t* job);

/* Hand the sends and disconnects queued by other threads to their sessions,
 * in order (session.c). Thread: the port's. */
void cport__port_take_sends(cport__port_t* port);

/* Thread: any. Returns NULL for a bad index. */
cport__port_t* cport__core_port(cport_core_t* core, unsigned index);

/* The port's shared receive chunk, allocated on first use.
 * Returns NULL on allocation failure. */
CPORT__NODISCARD char* cport__port_read_chunk(cport__port_t* port);

#ifndef NDEBUG
/* Abort if a thread other than the port's owner calls a port-only
 * function. */
void cport__assert_on_port(cport__port_t* port);
#define CPORT__ASSERT_ON_PORT(port) cport__assert_on_port(port)
#else
#define CPORT__ASSERT_ON_PORT(port) ((void)0)
#endif

#endif /* CPORT_CORE_INTERNAL_H */
