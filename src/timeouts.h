/* Timeouts of one service's sessions on one loop: connects
 * (connect_timeout_ms), graceful disconnects still flushing
 * (disconnect_timeout_ms), silent sessions (idle_timeout_ms), TLS
 * handshakes (tls_handshake_timeout_ms) and PROXY protocol headers
 * (proxy_timeout_ms).
 *
 * One timer serves any number of sessions. Each kind has one timeout for
 * the whole service, so a list kept in start order is also in deadline
 * order: entries join at the tail, only the head can be due, and the timer
 * is set for the earliest head. The entries live in the objects they time
 * (the connect request, the shutdown request, the session block), so
 * starting a timeout never allocates. */
#ifndef CPORT_TIMEOUTS_H
#define CPORT_TIMEOUTS_H

#include "common.h"
#include "queue.h"

/* The one clock of cport's deadlines, in milliseconds: the timeouts here
 * and a stop's deadline. Not the loop's cached time (uv_now), which lags
 * after a long callback, or a long stretch of the application's own work
 * between dispatches: a timeout started or restarted then would expire
 * early. Thread: any. */
uint64_t cport__clock_ms(void);

typedef enum {
  CPORT__TIMEOUT_CONNECT,
  CPORT__TIMEOUT_FLUSH,
  CPORT__TIMEOUT_IDLE,
  CPORT__TIMEOUT_HANDSHAKE,
  CPORT__TIMEOUT_PROXY,
  CPORT__TIMEOUT_KINDS
} cport__timeout_kind_t;

/* An entry: `since` is when its timeout started (ms). Zero-filled is
 * unlinked. */
typedef struct cport__timed_s {
  cport__qnode_t node;
  uint64_t since;
} cport__timed_t;

typedef struct cport__timeouts_s cport__timeouts_t;

/* Entry `e` of `kind` is due; it has been unlinked. Runs from the timer,
 * on the loop's thread. */
typedef void (*cport__timeout_fn)(cport__timeouts_t* t,
                                  cport__timeout_kind_t kind,
                                  cport__timed_t* e);

struct cport__timeouts_s {
  uv_timer_t tick; /* `data` is the owner's, for the close callback */
  int open;        /* initialised, not closing */
  unsigned ms[CPORT__TIMEOUT_KINDS];
  cport__queue_t lists[CPORT__TIMEOUT_KINDS];
  cport__timeout_fn expired;
  void* owner; /* for `expired` */
};

/* Set up the timer on `loop`; `ms` gives each kind's timeout (0: never).
 * Returns 0 or a libuv error (none for a live loop). Thread: the loop's. */
CPORT__NODISCARD int cport__timeouts_init(cport__timeouts_t* t,
                                          uv_loop_t* loop,
                                          const unsigned ms[],
                                          cport__timeout_fn expired,
                                          void* owner);

/* Close the timer; `cb` runs when libuv has closed it, with `data` as the
 * handle's data. Entries left in the lists are forgotten (their objects
 * are closing too). Thread: the loop's. */
void cport__timeouts_close(cport__timeouts_t* t, void* data, uv_close_cb cb);

/* Start `e`'s timeout of `kind` now. Does nothing when that kind's timeout
 * is 0. Thread: the loop's. */
void cport__timeouts_add(cport__timeouts_t* t,
                         cport__timeout_kind_t kind,
                         cport__timed_t* e);

/* Start a linked `e` again from now (idle sessions that made progress);
 * does nothing when `e` is not running. */
void cport__timeouts_touch(cport__timeouts_t* t,
                           cport__timeout_kind_t kind,
                           cport__timed_t* e);

/* Stop `e`'s timeout; safe when it is not running. */
void cport__timeouts_remove(cport__timeouts_t* t,
                            cport__timeout_kind_t kind,
                            cport__timed_t* e);

#endif /* CPORT_TIMEOUTS_H */
