/* Internal view of a session for service.c and listener.c. */
#ifndef CPORT_SESSION_INTERNAL_H
#define CPORT_SESSION_INTERNAL_H

#include "service_internal.h"

/* How a session ends: GRACEFUL flushes queued sends and shuts down the write
 * side before closing; FORCE closes at once and cancels queued sends; RESET
 * is FORCE with a TCP reset, for a peer that does not read: the kernel then
 * drops the bytes it still holds for the peer too, instead of keeping them
 * (and the socket, in FIN-WAIT-1) while it retries. A session already
 * shutting down has no reset left (libuv refuses it then) and is closed as
 * by FORCE. */
typedef enum {
  CPORT__CLOSE_GRACEFUL,
  CPORT__CLOSE_FORCE,
  CPORT__CLOSE_RESET
} cport__close_mode_t;

/* Where the parts of a session block of a service of `kind` with `opts`
 * lie; `local`: its address is a local endpoint. Returns 0, or UV_EINVAL
 * when the block's size would not fit a size_t (user_size near
 * SIZE_MAX). */
CPORT__NODISCARD int cport__session_layout(cport_service_kind_t kind,
                                           const cport_service_opts_t* opts,
                                           int local,
                                           cport__session_layout_t* out);

/* Allocate a session of `svc` with its TCP handle initialised on the
 * service's loop and attach it to the service. The handle holds the first
 * reference. Returns NULL on allocation or handle failure. */
cport_session_t* cport__session_new(cport_service_t* svc);

/* The session whose service-list link is `node`. */
cport_session_t* cport__session_of(cport__qnode_t* node);

/* Adopt the connected socket `sock` (accepted by the listener) as the
 * session's handle: uv_tcp_open, or uv_pipe_open for a local endpoint.
 * Returns 0 or a libuv error (the socket is then still the caller's). */
CPORT__NODISCARD int cport__session_open(cport_session_t* s,
                                         uv_os_sock_t sock);

/* The session's libuv handle (for tests). */
uv_handle_t* cport__session_handle(cport_session_t* s);

/* A Windows named pipe server's listening handle: accept the waiting
 * client into the session's handle. Returns 0 or a libuv error. */
CPORT__NODISCARD int cport__session_accept(cport_session_t* s,
                                           uv_stream_t* server);

/* The connection is up (accepted, or connected): report on_connected and
 * start reading, or close the session unreported if the service no longer
 * takes sessions (cport__service_admit). */
void cport__session_start(cport_session_t* s);

/* Connect client session `s` to `to`, one address of host name attempt
 * `a`: as cport__session_connect(), but the outcome goes to `a`
 * (cport__attempt_failed, cport__attempt_connected), and `a` times the
 * attempt as a whole. `to` is read during the call only. */
CPORT__NODISCARD int cport__session_connect_to(cport_session_t* s,
                                               unsigned attempts,
                                               const struct sockaddr* to,
                                               cport__attempt_t* a);

/* Start a client connect to the service's address; `attempts` counts the
 * failed attempts in a row before this one (for the reconnect policy).
 * Returns 0 or a libuv error; on error the session has been closed (no
 * callback is reported). */
CPORT__NODISCARD int cport__session_connect(cport_session_t* s,
                                            unsigned attempts);

/* End the session with `code`. The first code and cause win; a FORCE close
 * also upgrades a graceful one that is still flushing. `cause` may be NULL
 * (then the text of `code` is used) and is copied. */
void cport__session_close(cport_session_t* s,
                          int code,
                          const char* cause,
                          cport__close_mode_t mode);

/* A timeout of one of `svc`'s sessions expired (timeouts.h): `e` is the
 * entry of the connect, the flushing disconnect or the idle session.
 * Thread: the service's loop. */
void cport__session_timed_out(cport_service_t* svc,
                              cport__timeout_kind_t kind,
                              cport__timed_t* e);

/* Non-zero once on_connected has run (also while disconnecting). */
int cport__session_was_connected(const cport_session_t* s);

/* Non-zero while reading is stopped by the send queue limit (for tests and
 * stats). */
int cport__session_is_paused(const cport_session_t* s);

/* Test hook: decrypt at most `n` bytes of plaintext per round of a TLS
 * session's engine before handing them on (0: the whole chunk, the
 * default), so that a pause leaves plaintext inside TLS. Thread: none may
 * run a loop. */
void cport__session_test_tls_fill(size_t n);

/* Bytes one session of `svc` allocates while idle (for tests). */
size_t cport__session_footprint(const cport_service_t* svc);

#endif /* CPORT_SESSION_INTERNAL_H */
