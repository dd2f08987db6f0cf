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

/* A function posted to a port with cport_core_post(). */
typedef struct cport__job_s {
  struct cport__job_s* next;
  void (*fn)(void* arg);
  void* arg;
} cport__job_t;

typedef struct cport__port_s {
  cport_core_t* core;
  unsigned index;
  uv_loop_t* loop;
  uv_loop_t own_loop;
  /* Wakes the port's thread from any thread (cport_core_stop,
   * cport_core_post). uv_async_send coalesces, so every wake-up drains the
   * whole job queue. */
  uv_async_t wakeup;
  /* Posted jobs, oldest first; the lock is the only state other threads
   * touch. */
  uv_mutex_t jobs_lock;
  cport__job_t* jobs_head;
  cport__job_t* jobs_tail;
  /* Bounds cport_core_dispatch()'s wait. */
  uv_timer_t dispatch_timer;
  uv_thread_t thread;
  int thread_started;
  /* Debug check for the "Thread: port" contract: the thread driving the port
   * right now, if any. */
  atomic_int has_runner;
  uv_thread_t runner;
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

/* Thread: any. Returns NULL for a bad index. */
cport__port_t* cport__core_port(cport_core_t* core, unsigned index);

/* The port's shared receive chunk, allocated on first use.
 * Returns NULL on allocation failure. */
CPORT__NODISCARD char* cport__port_read_chunk(cport__port_t* port);

#ifndef NDEBUG
/* Abort if a thread other than the one driving the port calls a port-only
 * function. Loops nobody is driving right now (set-up, embedding) pass. */
void cport__assert_on_port(cport__port_t* port);
#define CPORT__ASSERT_ON_PORT(port) cport__assert_on_port(port)
#else
#define CPORT__ASSERT_ON_PORT(port) ((void)0)
#endif

#endif /* CPORT_CORE_INTERNAL_H */
