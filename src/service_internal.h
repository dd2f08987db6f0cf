/* Internal view of a service, shared by service.c, session.c and
 * listener.c. */
#ifndef CPORT_SERVICE_INTERNAL_H
#define CPORT_SERVICE_INTERNAL_H

#include "core_internal.h"

typedef struct cport__listener_s cport__listener_t;

/* Counters of one service. Each is written by one thread only, the
 * service's port, with a plain load and store (no locked instruction on
 * the hot path), and read by cport_service_stats() on any thread. */
typedef struct cport__stats_s {
  atomic_uint_least64_t connected;
  atomic_uint_least64_t rejected;
  atomic_uint_least64_t accept_errors;
  atomic_uint_least64_t connect_failed;
  atomic_uint_least64_t bytes_in;
  atomic_uint_least64_t bytes_out;
  atomic_uint_least64_t sends;
  atomic_uint_least64_t packets_in;
  atomic_uint_least64_t writes;
  atomic_uint_least64_t pauses;
  atomic_uint_least64_t queued_bytes;
  atomic_uint_least64_t reconnects;
  atomic_uint_least64_t disconnect_timeouts;
  atomic_uint_least64_t disconnects_peer;
  atomic_uint_least64_t disconnects_reset;
  atomic_uint_least64_t disconnects_idle;
  atomic_uint_least64_t disconnects_backpressure;
  atomic_uint_least64_t disconnects_protocol;
  atomic_uint_least64_t disconnects_local;
  atomic_uint_least64_t disconnects_other;
} cport__stats_t;

#define CPORT__STAT_SUB(svc, field, n)                                       \
  atomic_store_explicit(                                                     \
      &(svc)->stats.field,                                                   \
      atomic_load_explicit(&(svc)->stats.field, memory_order_relaxed) - (n), \
      memory_order_relaxed)

/* An entry of a list kept in time order: `since` is the loop time (ms) at
 * which the entry's timeout started. The lists of one service have
 * constant timeouts, so appending keeps them sorted and only the heads can
 * be due. */
typedef struct cport__timed_s {
  struct cport__timed_s* prev;
  struct cport__timed_s* next;
  uint64_t since;
  int linked;
} cport__timed_t;

typedef struct cport__timed_list_s {
  cport__timed_t* head;
  cport__timed_t* tail;
} cport__timed_list_t;

typedef struct cport__reconnect_s cport__reconnect_t;

#define CPORT__STAT_ADD(svc, field, n)                                       \
  atomic_store_explicit(                                                     \
      &(svc)->stats.field,                                                   \
      atomic_load_explicit(&(svc)->stats.field, memory_order_relaxed) + (n), \
      memory_order_relaxed)

struct cport_service_s {
  cport_core_t* core;
  cport__port_t* port;
  cport_service_kind_t kind;
  cport_addr_t addr;
  cport_service_opts_t opts;
  void* data;
  int started;
  int stopping;
  int stopped_reported;
  int destroy_pending;
  void (*on_stopped)(cport_service_t* svc);
  cport__listener_t* listener;
  /* Stop deadline, and the zero-delay kick that makes on_stopped
   * asynchronous when nothing was open. A spreading server's other ports
   * initialise theirs on their own thread when the server starts. */
  uv_timer_t timer;
  int timer_ready;
  int timer_closed;
  /* Every session of this port not yet closed, connecting ones included,
   * oldest first; `nsessions` counts them. */
  cport_session_t* head;
  cport_session_t* tail;
  size_t nsessions;
  cport__stats_t stats;
  /* Timeouts of this port's sessions: one timer for three lists. Connected
   * sessions by last activity (idle_timeout_ms; the entry lives in the
   * session block, see idle_off), connecting ones by start
   * (connect_timeout_ms; in the connect request), and flushing ones by the
   * start of their disconnect (disconnect_timeout_ms; in the shutdown
   * request). */
  uv_timer_t tick;
  int tick_ready;
  int tick_closed;
  int timers_open; /* stop timer and tick, until their close callbacks */
  cport__timed_list_t idle;
  cport__timed_list_t connecting;
  cport__timed_list_t closing;
  /* Layout of a session block: the struct, the idle entry when
   * idle_timeout_ms is set (at idle_off, else 0), then the user area (at
   * user_off), `footprint` bytes in all. */
  size_t idle_off;
  size_t user_off;
  size_t footprint;
  /* Clients: reconnects waiting for their delay, each with a timer of its
   * own; `nreconnects` counts them until their timers have closed. */
  cport__reconnect_t* reconnects;
  size_t nreconnects;
  uint64_t rng; /* reconnect jitter */
  /* One for the service itself, dropped once a destroy has closed
   * everything, plus one per session block, dropped when the block is
   * freed, which the last cport_session_unref() may do on any thread. A
   * session can therefore always reach its service and port. A spreading
   * server's parts each hold the root too. */
  atomic_size_t holds;
  int released;

  /* Spreading servers (cport_service_opts_t.spread on a core of several
   * ports): the service the application created is the root, on
   * opts.port; it owns the listener and one hidden part per other port,
   * a service of its own that adopts the connections the listener hands
   * it and keeps them on that port's thread. Sessions of a part report the
   * root as their service. For every other service root is itself and
   * there are no parts. */
  cport_service_t* root;
  cport_service_t** parts;
  unsigned nparts;
  unsigned parts_running; /* root: parts whose stop is not reported yet */
  /* A part's messages between its port and the root's, each sent at most
   * once, kept here so that sending them cannot fail. */
  cport__job_t job_start;   /* root -> part */
  cport__job_t job_stop;    /* root -> part, with stop_deadline_ms */
  cport__job_t job_destroy; /* root -> part */
  cport__job_t job_stopped; /* part -> root */
  int stop_deadline_ms;
  /* Root only, updated from every part's thread. */
  atomic_size_t open;    /* sessions not closed yet, for max_sessions */
  atomic_size_t handing; /* accepted, on the way to a part */
  atomic_uint_least64_t active;
  atomic_uint_least64_t peak;
};

/* Called by a session's close callback after on_disconnected, and by the
 * listener's close callback: completes a stop or a deferred destroy. */
void cport__service_check_done(cport_service_t* svc);

/* Take or drop a hold on the service's memory (see `holds`). Thread:
 * any. */
void cport__service_hold(cport_service_t* svc);
void cport__service_release(cport_service_t* svc);

/* A session of the root's reached on_connected (+1) or ended (-1). Thread:
 * any part's. */
void cport__service_active_add(cport_service_t* root, int delta);

/* The tick timer fired: close what has timed out (session.c). Thread: the
 * service's port. */
void cport__session_tick(cport_service_t* svc);

/* Compute the service's session layout (session.c). */
void cport__session_layout(cport_service_t* svc);

/* A client connect failed or a connected client session ended (code):
 * schedule the next connect per the reconnect policy, `attempts` being the
 * failures in a row so far. Thread: the service's port. */
void cport__service_reconnect_later(cport_service_t* svc, unsigned attempts);

/* Called by the listener for a connection past max_sessions. */
int cport__service_is_full(const cport_service_t* root);

/* Make an accepted socket a session of `svc` (the root or a part) on its
 * port and start it; closes the socket on failure. Thread: svc's port. */
void cport__service_adopt(cport_service_t* svc, uv_os_sock_t sock);

#endif /* CPORT_SERVICE_INTERNAL_H */
