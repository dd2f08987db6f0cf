/* What session.c and listener.c may know of a service.
 *
 * struct cport_service_s is service.c's alone. Other files see its first
 * member, the view below: settings fixed at creation (any thread may read
 * them), the counters the service's loop writes, and the timeouts of its
 * sessions. Everything else (the session list, the lifecycle, the
 * listener, the parts of a spreading server) changes only through the
 * functions declared here. */
#ifndef CPORT_SERVICE_INTERNAL_H
#define CPORT_SERVICE_INTERNAL_H

#include "core_internal.h"
#include "stats.h"
#include "timeouts.h"

/* Where the parts of a session block lie: the struct, the idle entry when
 * idle_timeout_ms is set (at idle_off, else 0), the client area of a
 * client whose reconnect policy resets (reconnect_reset_ms; at client_off,
 * else 0), the TLS part of a TLS service (at tls_off, else 0), the PROXY
 * part of a server reading PROXY headers (at proxy_off, else 0), then the
 * user area (at user_off, else 0), `footprint` bytes in
 * all. */
typedef struct cport__session_layout_s {
  /* A local endpoint's sessions: a uv_pipe_t, not a uv_tcp_t, and a
   * local part (the peer's credentials) at local_off. */
  int local;
  size_t local_off;
  size_t idle_off;
  size_t client_off;
  size_t tls_off;   /* TLS services' part (session.c), else 0 */
  size_t proxy_off; /* PROXY protocol servers' part (session.c), else 0 */
  size_t user_off;
  size_t footprint;
} cport__session_layout_t;

typedef struct cport__service_view_s {
  /* Fixed at creation. A spreading server (cport_service_opts_t.spread on a
   * core of several loops) is a root, the service the application created,
   * plus one hidden part per other loop, each a service of its own on its
   * loop; `root` is the service the application sees (itself for a root and
   * for every service that does not spread). */
  cport__loop_t* lp;
  cport_service_t* root;
  cport_service_kind_t kind;
  cport_service_opts_t opts;
  cport__session_layout_t layout;
  /* Written by the service's loop only (stats.h). */
  cport__stats_t stats;
  /* The timeouts of the service's sessions on its loop; loop only. */
  cport__timeouts_t timeouts;
  /* TLS clients: the last session a server gave, which the next connect
   * offers (tls_internal.h); loop only. */
  void* tls_resume;
  /* PROXY protocol servers: the balancers trusted to send headers
   * (opts.proxy_trusted, parsed; NULL: any), the root's, shared by its
   * parts; fixed at creation. */
  const struct cport__proxy_net_s* proxy_nets;
  size_t proxy_nnets;
  /* The service in its core's registry (core_internal.h): a service the
   * application created is registered from cport_service_create() to
   * cport_service_destroy(); a part never is. */
  cport__core_entry_t entry;
} cport__service_view_t;

/* The view is the first member of struct cport_service_s (checked in
 * service.c). */
static inline cport__service_view_t* cport__service_view(
    const cport_service_t* svc) {
  return (cport__service_view_t*)(void*)svc;
}

#define CPORT__SVC_STAT_ADD(svc, field, n) \
  CPORT__STAT_ADD(&cport__service_view(svc)->stats, field, n)
#define CPORT__SVC_STAT_SUB(svc, field, n) \
  CPORT__STAT_SUB(&cport__service_view(svc)->stats, field, n)

/* ---- sessions (session.c) ---- */

/* A new session of `svc` joins its list (`node` is the session's link).
 * A server's session takes over the max_sessions slot of the socket it
 * adopts (cport__service_hand_off). Thread: the service's loop. */
void cport__service_attach(cport_service_t* svc, cport__qnode_t* node);

/* A session's handle has closed (after its on_disconnected): it leaves the
 * list, a server's session gives its max_sessions slot back, and a stop or
 * destroy waiting for it may complete. Thread: the service's loop. */
void cport__service_detach(cport_service_t* svc, cport__qnode_t* node);

/* Non-zero if the service still takes new sessions: it runs, and no stop
 * or destroy has begun on its root, whichever loop the root runs on. Read
 * last thing before on_connected, so that a session accepted on one loop
 * just before its root was stopped on another is closed unreported.
 * Thread: the service's loop. */
int cport__service_admit(cport_service_t* svc);

/* How far the service the application sees (the root) is from running,
 * read on any of its loops: its sessions' callbacks stop with it, on every
 * loop at once, not when the stop or destroy reaches their loop. */
typedef enum {
  CPORT__PHASE_RUNNING,    /* or not started yet */
  CPORT__PHASE_STOPPING,   /* stop called: no more on_recv or on_packet */
  CPORT__PHASE_DESTROYING  /* destroy called: only on_disconnected */
} cport__service_phase_t;

cport__service_phase_t cport__service_phase(const cport_service_t* svc);

/* A session of the root's reached on_connected (+1) or ended (-1). Thread:
 * the service's loop. */
void cport__service_active_add(cport_service_t* svc, int delta);

/* The signal watch (signal.c): `cb` runs once, on the service's loop,
 * when the drain under way ends (or the stop that took it over), just
 * before the drain's own callback. Returns 0, or UV_EINVAL when the
 * service is not draining. Thread: the service's loop. */
int cport__service_join_drain(cport_service_t* svc,
                              void (*cb)(cport_service_t* svc));

/* Take or drop a hold on the service's memory: every session block holds
 * its service until freed, which the last cport_session_unref() may do on
 * any thread. Thread: any. */
void cport__service_hold(cport_service_t* svc);
void cport__service_release(cport_service_t* svc);

/* A client connect failed or a connected client session ended: schedule
 * the next connect per the reconnect policy, `attempts` being the failures
 * in a row so far. Thread: the service's loop. */
void cport__service_reconnect_later(cport_service_t* svc, unsigned attempts);

/* A client connect that followed `attempts` failures in a row failed with
 * `code`: count it, report on_connect_failed, and, unless `code` is
 * UV_ECANCELED, schedule the next attempt. Thread: the service's loop. */
void cport__service_connect_failed(cport_service_t* svc,
                                   unsigned attempts,
                                   int code);

/* A connect attempt of a client service on a host name (service.c): the
 * lookup, then one session per address in turn until one connects. */
typedef struct cport__attempt_s cport__attempt_t;

/* The connect of attempt `a`'s session failed with `code` (the session is
 * closed): try the next address, or report the attempt failed. Thread:
 * the service's loop. */
void cport__attempt_failed(cport__attempt_t* a, cport_session_t* s, int code);

/* Attempt `a`'s session connected, before its on_connected: the attempt
 * is over. Thread: the service's loop. */
void cport__attempt_connected(cport__attempt_t* a, cport_session_t* s);

/* Host name lookups client services have started, process-wide (for
 * tests: every connect attempt to a name looks it up again). Thread:
 * any. */
uint64_t cport__service_lookups(void);

/* Test hook: every host name attempt tries `sa` (copied) before the
 * addresses its lookup returned; NULL: none. Thread: none may run. */
void cport__service_test_first_address(const struct sockaddr* sa);

/* ---- the listener (listener.c) ---- */

/* The address the service listens on or connects to: for a server on a
 * host name, the address cport_service_start() found for it; for a client
 * on a host name, the name. */
const cport_addr_t* cport__service_addr(const cport_service_t* svc);

/* Non-zero when the root is at max_sessions: its connections not closed
 * yet, those on their way to a part included, each counted once. Thread:
 * the root's loop, just before cport__service_hand_off(). */
int cport__service_is_full(cport_service_t* root);

/* The listener accepted `sock` below max_sessions: take a slot for it
 * and give it to the next loop in turn (the root's own included; the only
 * one of a server that does not spread), whose session then holds the
 * slot until its handle has closed. Closes the socket, and gives the slot
 * back, if that fails. Thread: the root's loop. */
void cport__service_hand_off(cport_service_t* root, uv_os_sock_t sock);

#ifdef _WIN32
/* A Windows named pipe server: a client waits on `server`, the
 * listener's handle; take a slot and accept it into a session on the
 * root's own loop (a pipe belongs to the completion port of the loop that
 * accepted it, so named pipe servers do not spread). With `reject` (at
 * max_sessions) the session is closed at once, unreported. Thread: the
 * root's loop. */
void cport__service_accept(cport_service_t* root,
                           uv_stream_t* server,
                           int reject);
#endif

/* The listener's handles have all closed. Thread: the service's loop. */
void cport__service_listener_closed(cport_service_t* svc);

/* Connections accepted and on their way to a part (for tests; they are
 * in the max_sessions count already). */
size_t cport__service_handing(cport_service_t* root);

/* Sessions of `svc` on its loop not closed yet, connecting ones included
 * (for tests: a client's race). Thread: the service's loop. */
size_t cport__service_open(const cport_service_t* svc);

#endif /* CPORT_SERVICE_INTERNAL_H */
