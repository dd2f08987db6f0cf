/* cport: the core and its loops (libuv loops and the threads that run them).
 *
 * A core owns one or more *loops*. A loop is one libuv loop driven by one
 * thread at a time; every listener and session lives on exactly one loop and
 * all its callbacks run on that loop's thread. The core either owns its loops
 * (cport_core_run() then starts one thread per loop, or the application
 * drives a loop itself with cport_core_dispatch()), or is embedded on an
 * application's existing uv_loop_t, which the application keeps running.
 * A server spreads its connections over every loop of its core (see
 * cport_service_opts_t.spread).
 *
 * "Thread: loop" in these headers means the loop's *owner*: at first the
 * thread that created the core; then the last thread that called
 * cport_core_dispatch() on the loop (during and after the call); a loop
 * thread of cport_core_run() while it runs (no thread at all while it starts
 * or exits); the caller of cport_core_run_here() for loop 0 while it runs;
 * and the thread that called cport_core_join() after it. For an
 * embedded core, create it (or dispatch it once) on the thread that runs the
 * application's loop, so that this thread is the owner.
 *
 * Safe from any thread: cport_core_post(), cport_core_stop(),
 * cport_service_broadcast() and the session functions marked so in
 * session.h (sends, disconnects, references). What they ask of a loop
 * happens in the order in which the calls returned, whichever threads made
 * them: each loop has one queue (its mailbox) for jobs, sends, disconnects
 * and broadcasts alike. A call from a thread that is not the owner joins
 * the mailbox; a call on the owner acts at once when nothing posted before
 * it still waits there, and joins the mailbox behind it otherwise (a job
 * runs in its place in the mailbox, so what a job does acts there).
 *
 * Lifetime: a service holds its core's memory, and a session its service's,
 * so a session reference the application keeps past cport_core_destroy()
 * stays safe to use: cport_session_unref() frees it (and, with the last
 * such reference, the core's memory); the sends return UV_ENOTCONN,
 * cport_session_disconnect() returns 0, and cport_session_id(), _port(),
 * _user(), _peer_addr(), _is_connected() (0) and _queued_bytes() (0) keep
 * answering. Nothing else may be called on its service or core. */
#ifndef CPORT_CORE_H
#define CPORT_CORE_H

#include "cport/export.h"

#ifdef __cplusplus
extern "C" {
#endif

struct uv_loop_s;

typedef struct cport_core_s cport_core_t;

/* Most loops one core may have. */
#define CPORT_CORE_MAX_LOOPS 256

typedef struct cport_core_opts_s {
  /* Number of loops: 1 to CPORT_CORE_MAX_LOOPS, and 1 when embedding.
   * Default 1. */
  unsigned loops;
  /* Embed: run loop 0 on this application-owned loop instead of a loop of
   * cport's own. The application keeps driving the loop (uv_run) on its own
   * thread; cport starts no thread. Default NULL. */
  struct uv_loop_s* uv_loop;
  /* Non-zero (the default): on POSIX systems, if SIGPIPE still has its
   * default action when the core is created, set it to SIG_IGN, because libuv
   * writes with write()/writev(), and a peer that vanishes mid-write would
   * otherwise kill the process. 0 leaves signal handling to the application,
   * which must then ignore or handle SIGPIPE itself. */
  int ignore_sigpipe;
} cport_core_opts_t;

/* Fill `opts` with defaults.
 * Thread: any. */
CPORT_API void cport_core_opts_init(cport_core_opts_t* opts);

/* Create a core. `opts` may be NULL for the defaults.
 * Ownership: `opts` is read during the call only; `*out` is the caller's and
 *            is released with cport_core_destroy().
 * Thread:    any; the creating thread becomes the core's owner.
 * Returns:   0; UV_EINVAL for NULL `out`, loops 0 or over
 *            CPORT_CORE_MAX_LOOPS, or an embedding `uv_loop` with loops other
 *            than 1; UV_ENOMEM; a libuv error from loop set-up. */
CPORT_API int cport_core_create(cport_core_t** out,
                                const cport_core_opts_t* opts);

/* Destroy a core. Accepts NULL. Stops and joins loop threads first, then
 * runs the loop until cport's handles are closed; the callbacks of
 * services destroyed just before (their on_disconnected) run inside this
 * call, on the calling thread.
 * Every service on the core must have been destroyed, and the application's
 * own handles on cport_core_uv_loop() closed, before. If a handle is still open
 * the call does not wait for it: it returns and leaks the core, because
 * freeing the loop under a live handle would corrupt memory. Jobs and other
 * requests still queued run first, those that jobs post meanwhile (to any
 * loop) included, until every loop's queue is empty.
 * An embedded core closes its handles on the application's loop and its
 * memory is released by that loop's next iteration, after the close
 * callbacks of the sessions of services destroyed before: run the loop (for
 * example uv_run(loop, UV_RUN_NOWAIT)) before uv_loop_close().
 * The memory itself goes when the last session reference the application
 * kept is dropped too (see the top of this file).
 * Thread:  owner, never from a callback or job of the core's own loops:
 *          there it logs an error line and returns without destroying
 *          anything (CPORT_EWRONGTHREAD, in every build).
 * Blocks:  until the loop threads have exited. */
CPORT_API void cport_core_destroy(cport_core_t* core);

/* Run one round of completions on `loop` from the calling thread: wait up
 * to `timeout_ms` for at least one event, run the callbacks of what
 * completed, return.
 * `timeout_ms` < 0 waits without limit, 0 only polls.
 * Thread:    any thread, but one at a time per loop, and never while
 *            cport_core_run() drives the core. The calling thread is the loop
 *            thread for the duration of the call. On an embedded core this
 *            runs the application's loop once, like uv_run(UV_RUN_ONCE).
 * Callback:  all callbacks of the loop's objects run inside this call.
 * Returns:   1 if the loop still has active handles or requests, 0 if it has
 *            none (waiting again would only time out); UV_EINVAL for NULL or
 *            a bad loop index; UV_EBUSY while cport_core_run() or
 *            cport_core_run_here() runs the core. */
CPORT_API int cport_core_dispatch(cport_core_t* core,
                                  unsigned loop,
                                  int timeout_ms);

/* Start one thread per loop, each running its loop until
 * cport_core_stop(). Returns at once.
 * Thread:  owner.
 * Returns: 0; UV_EINVAL for NULL or for an embedded core (the application
 *          drives that loop); UV_EBUSY if already running;
 *          CPORT_EWRONGTHREAD (logged) from a callback or job that
 *          cport_core_dispatch() runs; a libuv error if a
 *          thread cannot be started (threads already started are stopped). */
CPORT_API int cport_core_run(cport_core_t* core);

/* Run the core on the calling thread until cport_core_stop(): loop 0 here,
 * like uv_run(UV_RUN_DEFAULT) or Asio's io_context::run(), and each other
 * loop on a thread started as by cport_core_run(). A one-loop core then needs
 * no thread besides the caller's. Returns after cport_core_stop() (from a
 * callback, a job, or another thread) once the other loops' threads have
 * exited, as cport_core_join() would; the caller is then the owner of every
 * loop again.
 * Thread:  owner, never from a loop's own callback. The calling thread is
 *          loop 0's thread until the call returns.
 * Blocks:  until cport_core_stop().
 * Returns: 0 after cport_core_stop(); UV_EINVAL for NULL or for an embedded
 *          core; UV_EBUSY if the core is already running;
 *          CPORT_EWRONGTHREAD (logged) from a callback or job that
 *          cport_core_dispatch() runs; a libuv error if a
 *          thread cannot be started (threads already started are stopped and
 *          joined, and loop 0 is not run). */
CPORT_API int cport_core_run_here(cport_core_t* core);

/* Ask every loop thread started by cport_core_run() or
 * cport_core_run_here() (loop 0 on the caller's thread included) to return
 * after its current round of callbacks. Does not wait: use cport_core_join().
 * Safe from any thread, including a loop's own callbacks, and more than
 * once. Services are not stopped by this: stop them first if their sessions
 * should be disconnected gracefully. On an embedded core it does nothing: the
 * application's loop is the application's to stop.
 * Thread:  any.
 * Returns: 0; UV_EINVAL for NULL. */
CPORT_API int cport_core_stop(cport_core_t* core);

/* Wait for the threads started by cport_core_run() to exit (after
 * cport_core_stop()). Afterwards the core may be run again or destroyed.
 * Thread:  owner, never from a loop's own callback.
 * Blocks:  until every loop thread has returned.
 * Returns: 0 (also when nothing was running); UV_EINVAL for NULL;
 *          CPORT_EWRONGTHREAD (logged) from a callback or job of the core's
 *          own loops, where it would wait for itself. */
CPORT_API int cport_core_join(cport_core_t* core);

/* Run `fn(arg)` on `loop`'s thread: a job.
 * Jobs posted to one loop run in the order in which the posts returned,
 * each once, in order with the sends, disconnects and broadcasts posted to
 * the same loop (see the top of this file), from a wake-up of the loop's
 * loop (a uv_async_t, which coalesces: one wake-up runs everything queued
 * so far; what those jobs post waits for the next). Under
 * cport_core_run() that is the loop's thread; a loop driven with
 * cport_core_dispatch() runs its jobs at the start of the next dispatch (or
 * in a wake-up during it); an embedded core runs them in the application's
 * loop. Jobs still queued when the core is destroyed run inside
 * cport_core_destroy(), on the owner's thread, those posted by them too.
 * Ownership: `arg` stays the caller's; cport only passes it to `fn`.
 * Thread:    any, including a loop's own callbacks and jobs.
 * Returns:   0; UV_EINVAL for NULL `core` or `fn` or a bad loop index;
 *            UV_ENOMEM (the job is not queued). */
CPORT_API int cport_core_post(cport_core_t* core,
                              unsigned loop,
                              void (*fn)(void* arg),
                              void* arg);

/* Thread: any. Returns: the number of loops, 0 for NULL. */
CPORT_API unsigned cport_core_loops(const cport_core_t* core);

/* The libuv loop behind `loop`, for adding the application's own handles
 * (timers, signals) to it. Those handles follow the loop's thread rules.
 * Ownership: the loop belongs to the core (or to the application, when
 *            embedded); never close it.
 * Thread:    any.
 * Returns:   NULL for NULL core or a bad loop index. */
CPORT_API struct uv_loop_s* cport_core_uv_loop(cport_core_t* core,
                                               unsigned loop);

/* Stop gracefully on SIGINT or SIGTERM (on Windows: Ctrl-C and
 * Ctrl-Break, SIGINT and SIGBREAK, which libuv maps from console control
 * events), without libuv handles of the application's own.
 * On the first of those signals, on loop 0's thread: one `info` log line,
 * `on_signal(core, signum, arg)` (may be NULL), then every service of the
 * core not destroyed by then is stopped as by
 * cport_service_stop(svc, deadline_ms, ...), each on its own loop's thread,
 * clients and services not started included; services created afterwards
 * are not. A service draining by then (cport_service_drain, which
 * on_signal may call to drain rather than stop) is not stopped: its drain
 * is waited for. When every one of them has stopped or drained (or was
 * destroyed meanwhile),
 * or `deadline_ms` after the signal, whichever comes first,
 * cport_core_stop() makes cport_core_run_here(), or cport_core_run() and
 * cport_core_join(), return. A service that was already stopping (stopped
 * by the application) is not waited for. A second signal while the
 * services stop calls cport_core_stop() at once; on_signal runs for the
 * first signal only. The application then destroys its services and the
 * core as usual.
 * Embedded core: cport_core_stop() does nothing there, so when the
 * services have stopped (or at the deadline, or at a second signal) the
 * watch closes its handles instead, and the application's loop ends once
 * nothing else of it is active; a signal after that has its default
 * action again.
 * The watch's handles live on loop 0 and do not keep it alive (they are
 * unreferenced); they belong to the core, and cport_core_destroy() closes
 * them: the application closes nothing.
 * Ownership: `arg` stays the caller's; cport only passes it to on_signal.
 * Thread:    owner of loop 0.
 * Callback:  on_signal runs on loop 0's thread.
 * Returns:   0; UV_EINVAL for NULL `core` or a negative `deadline_ms`;
 *            CPORT_EWRONGTHREAD (logged) from a thread that does not run
 *            loop 0; UV_EBUSY when the core watches signals already (the first
 *            settings stay); UV_ENOMEM; a libuv error from
 *            uv_signal_init() or uv_signal_start() (nothing is left
 *            watching). */
CPORT_API int cport_core_stop_on_signals(cport_core_t* core,
                                         int deadline_ms,
                                         void (*on_signal)(cport_core_t* core,
                                                           int signum,
                                                           void* arg),
                                         void* arg);

#ifdef __cplusplus
}
#endif
#endif /* CPORT_CORE_H */
