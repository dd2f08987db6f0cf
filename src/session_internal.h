/* Internal view of a session for service.c and listener.c. */
#ifndef CPORT_SESSION_INTERNAL_H
#define CPORT_SESSION_INTERNAL_H

#include "service_internal.h"

/* How a session ends: GRACEFUL flushes queued sends and shuts down the write
 * side before closing; FORCE closes at once and cancels queued sends. */
typedef enum { CPORT__CLOSE_GRACEFUL, CPORT__CLOSE_FORCE } cport__close_mode_t;

/* Allocate a session of `svc` with its TCP handle initialised on the
 * service's port and link it into the service. The handle holds the first
 * reference. Returns NULL on allocation or handle failure. */
cport_session_t* cport__session_new(cport_service_t* svc);

/* The session's TCP handle, for uv_accept() by the listener. */
uv_tcp_t* cport__session_tcp(cport_session_t* s);

/* The connection is up (accepted, or connected): report on_connected and
 * start reading. */
void cport__session_start(cport_session_t* s);

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

/* Non-zero once on_connected has run (also while disconnecting). */
int cport__session_was_connected(const cport_session_t* s);

/* Non-zero while reading is stopped by the send queue limit (for tests and
 * stats). */
int cport__session_is_paused(const cport_session_t* s);

/* Bytes one session of `svc` allocates while idle (for tests). */
size_t cport__session_footprint(const cport_service_t* svc);

/* Send `hlen` header bytes and `len` payload bytes (hlen + len at most
 * UINT32_MAX, at least 1) as one request: cport_session_send() for a
 * packet. Thread: any, holding a reference. Returns as cport_session_send. */
int cport__session_send_parts(cport_session_t* s,
                              const uint8_t* head,
                              size_t hlen,
                              const void* data,
                              size_t len);

/* The header layout of the session's service (opts.packet). */
const cport_packet_format_t* cport__session_packet_format(
    const cport_session_t* s);

/* Next session in the service's list. */
cport_session_t* cport__session_next(cport_session_t* s);

#endif /* CPORT_SESSION_INTERNAL_H */
