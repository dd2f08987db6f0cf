/* Internal view of a service, shared by service.c, session.c and
 * listener.c. */
#ifndef CPORT_SERVICE_INTERNAL_H
#define CPORT_SERVICE_INTERNAL_H

#include "core_internal.h"

typedef struct cport__listener_s cport__listener_t;

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
   * asynchronous when nothing was open. */
  uv_timer_t timer;
  int timer_closed;
  /* Every session not yet closed, connecting ones included, oldest first;
   * `nsessions` counts them, stats.active only the connected ones. */
  cport_session_t* head;
  cport_session_t* tail;
  size_t nsessions;
  cport_service_stats_t stats;
  /* One for the service itself, dropped once a destroy has closed
   * everything, plus one per session block, dropped when the block is
   * freed, which the last cport_session_unref() may do on any thread. A
   * session can therefore always reach its service and port. */
  atomic_size_t holds;
  int released;
};

/* Called by a session's close callback after on_disconnected, and by the
 * listener's close callback: completes a stop or a deferred destroy. */
void cport__service_check_done(cport_service_t* svc);

/* Take or drop a hold on the service's memory (see `holds`). Thread:
 * any. */
void cport__service_hold(cport_service_t* svc);
void cport__service_release(cport_service_t* svc);

/* Called by the listener for a connection past max_sessions. */
int cport__service_is_full(const cport_service_t* svc);

#endif /* CPORT_SERVICE_INTERNAL_H */
