/* cport: sessions (one TCP connection each).
 *
 * A session is one TCP connection, accepted by a server service or opened by
 * a client service. The application never creates one directly; it reacts to
 * the service's callbacks (cport_session_cbs_t in service.h) and acts on the
 * session with the functions below.
 *
 * Lifetime: a session's memory, including its user area, lives while anyone
 * holds a reference: its libuv handle until closed, every pending request,
 * and every cport_session_ref() of the application. on_disconnected runs
 * exactly once for every session that reached on_connected, after its last
 * on_send, and no callback of that session runs after it.
 *
 * Callbacks never run inside a call: no function below calls back into the
 * application before it returns (a close it starts reports on_disconnected
 * later, from the loop), so they may be called while holding a lock
 * that callbacks also take.
 *
 * Threads: every callback of a session runs on its loop's thread. Sends,
 * disconnects, references and the read-only queries marked "any" may come
 * from any thread that holds a reference (cport_session_ref(), taken on the
 * loop thread, in on_connected say). They act in the order in which the
 * calls returned, whichever threads made them, and in order with the jobs
 * and broadcasts posted to the same loop (core.h): from any other thread
 * they are queued to the loop's mailbox (one lock, one uv_async_t wake-up)
 * and act there; from the loop's own thread they act at once, unless
 * something posted before them still waits in the mailbox, in which case
 * they are queued behind it. A loop's thread is the one that runs it: a
 * thread of cport_core_run(), the caller of cport_core_run_here() for loop
 * 0, or the thread that last called cport_core_dispatch() on it (at first,
 * the one that created the core). */
#ifndef CPORT_SESSION_H
#define CPORT_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "cport/addr.h"
#include "cport/buf.h"
#include "cport/export.h"
#include "cport/proxy.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cport_session_s cport_session_t;
typedef struct cport_service_s cport_service_t;

/* Queue `len` bytes from `data` for sending on `s`. The bytes are copied
 * into one write request that owns them until the kernel has them;
 * requests are recycled per loop, so a warm session sends without malloc.
 * When nothing is queued the bytes are written
 * during the call; what the kernel does not take at once, and every send
 * made while a write is in flight, is queued and leaves with the other
 * queued sends in one gathered write. Bytes leave in the order of the send
 * calls, across all threads: a send made after another thread's send, job
 * or broadcast returned leaves after what that call sent, whichever thread
 * makes it. on_send reports each
 * completed send with its length, always from a later callback, never inside
 * this call (a service with on_send therefore always writes through
 * uv_write's callback).
 * From another thread the bytes are copied into a request of their own and
 * queued to the loop; the loop appends them to the session's queue when it
 * wakes, and every send it takes for the session at once leaves in one
 * gathered write.
 * Ownership: `data` is copied before return; the caller keeps it.
 * Thread:    any, holding a reference (see the top of this file).
 * The limit is checked before a send is added, so the queue can exceed
 * send_queue_limit by at most one send (by one send per thread sending at
 * that moment, from other threads). Each send counts the memory it holds
 * (see cport_session_queued_bytes), not only its bytes.
 * Returns:   0; UV_EINVAL for NULL `s`, NULL `data`, `len` 0 or `len` over
 *            UINT32_MAX (a libuv buffer's size);
 *            UV_ENOTCONN before on_connected or once a disconnect has begun
 *            (from the moment cport_session_disconnect(), or a stop or
 *            destroy of its service, returned, on any thread; a send that
 *            races the disconnect may return 0 and then be dropped with the
 *            session's other queued sends);
 *            CPORT_ESENDQ if the session's queue already holds the service's
 *            send_queue_limit or more (nothing is queued; under
 *            CPORT_SENDQ_DISCONNECT the session is also closed at once with
 *            that cause and a TCP reset, and its queued sends are dropped
 *            without on_send;
 *            when the call cannot act at once the close is queued, once
 *            per session however many sends are refused, and tried again
 *            at the next refusal if even that request cannot be
 *            allocated);
 *            UV_ENOMEM (the session is unharmed); or a libuv write error, in
 *            which case the session is being closed. */
CPORT_API int cport_session_send(cport_session_t* s,
                                 const void* data,
                                 size_t len);

/* Queue the bytes of the shared buffer `buf` for sending on `s`, without
 * copying them: the write request holds a reference to `buf` until the
 * kernel has the bytes (a shared buffer instead of a copy). One buffer may
 * be sent to any number of sessions, on any loops, at once; see
 * cport_service_broadcast(). Everything else is as for
 * cport_session_send(): order across threads, gathering, the limit and
 * its policy, on_send with the buffer's length.
 * Ownership: the caller keeps its own reference and may drop it as soon as
 *            this returns. On success the session holds one more until the
 *            bytes are written (none when the kernel took them all during
 *            the call); on failure it holds none.
 * Thread:    any, holding a reference to `s` (and to `buf`).
 * Returns:   as cport_session_send(); UV_EINVAL for NULL `s` or `buf`. */
CPORT_API int cport_session_send_buf(cport_session_t* s, cport_buf_t* buf);

/* Disconnect gracefully: stop reading,
 * let every queued send reach the kernel, shut down the write side, then
 * close. on_disconnected follows with code CPORT_ELOCAL and `cause` as its
 * text. Idempotent: a second call, or a call after the peer has gone, does
 * nothing. Safe inside any callback of any session. Sends made before the
 * call, on any thread, are flushed first.
 * Ownership: `cause` is copied (at most 255 bytes); it may be NULL.
 * Thread:    any, holding a reference. From another thread (or while
 *            earlier requests wait in the loop's mailbox) the disconnect is
 *            queued behind everything posted to the loop before it and
 *            happens when the loop takes it; sends made after this returns
 *            are refused at once (UV_ENOTCONN). A session not connected yet
 *            is left alone.
 * Returns:   0, also when a disconnect was already under way;
 *            UV_EINVAL for NULL `s`; UV_ENOMEM (only when the disconnect
 *            must be queued: the request could not be allocated, nothing
 *            happens). */
CPORT_API int cport_session_disconnect(cport_session_t* s, const char* cause);

/* Take a reference: the session's memory and user area stay valid until the
 * matching cport_session_unref(), even after on_disconnected.
 * Thread: any (the count is atomic). Accepts NULL. */
CPORT_API void cport_session_ref(cport_session_t* s);

/* Drop a reference taken with cport_session_ref(). The last reference frees
 * the session. Thread: any. Accepts NULL. */
CPORT_API void cport_session_unref(cport_session_t* s);

/* The per-session user area: `user_size` bytes given in the service options,
 * zero-filled when the session is created, aligned for any type.
 * Thread:  any, while a reference is held or inside a callback.
 * Returns: NULL for NULL `s` or when user_size was 0. */
CPORT_API void* cport_session_user(cport_session_t* s);

/* The service this session belongs to. A service's memory outlives every
 * reference to its sessions, so the pointer stays valid while `s` is.
 * Thread:  any, while a reference is held or inside a callback.
 * Returns: the service; NULL for NULL `s`. */
CPORT_API cport_service_t* cport_session_service(cport_session_t* s);

/* A number unique among the sessions of one process, never 0; handy for
 * logs. Thread: any. Returns 0 for NULL. */
CPORT_API uint64_t cport_session_id(const cport_session_t* s);

/* The index of the core's loop the session lives on: every callback of the
 * session runs on that loop's thread. Handy for per-loop state that needs
 * no lock (a server spreads its sessions over the loops, see
 * cport_service_opts_t.spread).
 * Thread: any, holding a reference. Returns 0 for NULL. */
CPORT_API unsigned cport_session_loop(const cport_session_t* s);

/* Non-zero between on_connected and the start of a disconnect (or a stop or
 * destroy of its service): while it says 0, sends return UV_ENOTCONN.
 * Thread: any, holding a reference (from another thread the answer may be
 * outdated by the time it is read). */
CPORT_API int cport_session_is_connected(const cport_session_t* s);

/* The peer's address: for a session whose PROXY protocol header named a
 * client (opts.proxy_protocol), the client's, from the header. For a
 * session of a local endpoint (a Unix domain socket or a named pipe) the
 * endpoint itself, which both ends share (a client's own socket has no
 * name); cport_session_peer_cred() says who the peer is.
 * Thread: any, while a reference is held.
 * Returns: 0; UV_EINVAL for NULL; UV_ENOTCONN before the connection is up
 *          (a TCP session's). */
CPORT_API int cport_session_peer_addr(const cport_session_t* s,
                                      cport_addr_t* out);

/* Who is at the other end of a local endpoint: -1 where the platform does
 * not say. */
typedef struct cport_peer_cred_s {
  int64_t pid; /* the peer's process: Linux, macOS, Windows */
  int64_t uid; /* its user: Unix */
  int64_t gid; /* its group: Unix */
} cport_peer_cred_t;

/* The credentials of a local session's peer, as the kernel gave them when
 * the connection was made (SO_PEERCRED on Linux; getpeereid and
 * LOCAL_PEERPID on macOS; getpeereid on the BSDs; the named pipe's other
 * process on Windows): a server's client process, or a client's server.
 * Thread:  any, while a reference is held; before on_connected every
 *          field is -1.
 * Returns: 0 and `*out`; UV_EINVAL for NULL; UV_ENOTSUP for a TCP
 *          session. */
CPORT_API int cport_session_peer_cred(const cport_session_t* s,
                                      cport_peer_cred_t* out);

/* The address the peer connected to: for a session whose PROXY header
 * named a client, the destination it gives (the balancer's front end, as
 * the client saw it), else the socket's own local address (asked of the
 * system: the socket belongs to the loop).
 * Thread:  loop (from another thread: CPORT_EWRONGTHREAD, logged).
 * Returns: 0; UV_EINVAL for NULL; UV_ENOTCONN before on_connected; a
 *          libuv error when the system cannot tell (the socket is
 *          gone). */
CPORT_API int cport_session_local_addr(const cport_session_t* s,
                                       cport_addr_t* out);

/* The address at the other end of the TCP connection itself: the
 * balancer's for a session whose PROXY header named a client, else the
 * same as cport_session_peer_addr().
 * Thread:  any, while a reference is held.
 * Returns: as cport_session_peer_addr(). */
CPORT_API int cport_session_proxy_addr(const cport_session_t* s,
                                       cport_addr_t* out);

/* The PROXY protocol header the session began with (opts.proxy_protocol):
 * its version, whether it was a LOCAL one (a health check: the real
 * endpoints hold), the addresses it gave, and its TLVs, to read with
 * cport_proxy_tlv() (the ALPN and host name the balancer's TLS saw, its
 * client certificate's CN, a unique id, custom ones).
 * Ownership: `out->tlvs` points into the session: valid while a reference
 *            is held.
 * Thread:    any, while a reference is held, from on_connected on.
 * Returns:   0; UV_EINVAL for NULL; CPORT_ENOENT for a session of a
 *            service without opts.proxy_protocol (or not connected). */
CPORT_API int cport_session_proxy(const cport_session_t* s,
                                  cport_proxy_header_t* out);

/* Memory held by the sends accepted and not yet written, those other
 * threads sent included: what send_queue_limit is compared with. Each send
 * counts its bytes plus its request: the request's header (about 240 bytes
 * on 64-bit systems) and the room for its bytes, rounded up to the pool's
 * size class on the loop's thread (64 bytes at least, else at most four
 * times them); a shared buffer counts its length and a header. At least
 * the bytes queued, and 0 when nothing is.
 * Thread: any, holding a reference. Returns 0 for NULL. */
CPORT_API size_t cport_session_queued_bytes(const cport_session_t* s);

/* Bytes received that on_recv has not consumed yet (0 from on_disconnected
 * on, when they are discarded).
 * Thread: loop (from another thread: 0, and an error line). Returns 0 for
 * NULL. */
CPORT_API size_t cport_session_pending_bytes(const cport_session_t* s);

#ifdef __cplusplus
}
#endif
#endif /* CPORT_SESSION_H */
