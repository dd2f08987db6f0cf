/* TLS inside cport: the context (tls.c) and one connection's engine
 * (tls_conn.c), for session.c and service.c.
 *
 * The engine never touches a socket: libuv owns it. The session gives the
 * engine the ciphertext it read (cport__tls_conn_input), asks for plaintext
 * (cport__tls_conn_read) and hands plaintext to encrypt
 * (cport__tls_conn_write); every call may leave ciphertext to send, which
 * the session takes as one block (cport__tls_conn_take) and writes with
 * uv_write. Ciphertext is read straight from the bytes the session gives,
 * without a copy, through a BIO of cport's own; only what OpenSSL has not
 * taken when the session stops asking is copied and kept
 * (cport__tls_conn_keep). Each call clears the thread's OpenSSL error
 * queue before it starts and leaves it empty when it returns.
 *
 * Built without TLS (tls_none.c) no context can be created, so none of
 * the connection functions is ever called. */
#ifndef CPORT_TLS_INTERNAL_H
#define CPORT_TLS_INTERNAL_H

#include "common.h"
#include "queue.h"

/* Returned by the engine when it needs more ciphertext to go on. */
#define CPORT__TLS_WANT 1

/* ---- contexts (tls.c) ---- */

/* The context's role. Thread: any. */
cport_tls_role_t cport__tls_role(const cport_tls_t* tls);

/* Mark the context as in use by a service: its SNI map no longer changes
 * (cport_tls_add_name then returns UV_EBUSY). Thread: any. */
void cport__tls_freeze(cport_tls_t* tls);

/* OpenSSL's SSL_CTX of the context, as void* so that only the TLS files
 * include OpenSSL's headers. */
void* cport__tls_ctx(const cport_tls_t* tls);

/* Non-zero if a client context does not verify (CPORT_TLS_VERIFY_NONE);
 * the first call for the context also logs a warning. Thread: any. */
int cport__tls_insecure(cport_tls_t* tls);

/* ---- one connection (tls_conn.c) ---- */

typedef struct cport__tls_conn_s cport__tls_conn_t;

/* A block of ciphertext to write. The session owns it once taken, and
 * uses `req` for its uv_write. */
typedef struct cport__tls_out_s {
  uv_write_t req;
  cport__qnode_t node; /* in a pool's free list */
  /* The session's: how many queued plaintext sends the block completes,
   * and the plaintext bytes it carries of sends that never queued. */
  uint32_t nplain;
  uint32_t direct;
  uint32_t len;
  uint32_t cap;
  uint8_t data[];
} cport__tls_out_t;

/* Free ciphertext blocks of one loop, by size class (the largest holds
 * a 64 KiB send's records), so that a steady stream of writes reuses the
 * same memory: a block freed to malloc and taken again made glibc hand
 * the top of its heap back to the system and fault it in anew, which
 * tripled the CPU of a 64 KiB echo. Each class keeps at most
 * CPORT__TLS_POOL_BYTES of free blocks; bigger blocks are not kept. A
 * zero-filled pool is empty. Thread: its loop's. */
#define CPORT__TLS_POOL_CLASSES 4
#define CPORT__TLS_POOL_BYTES (512 * 1024)

typedef struct cport__tls_pool_s {
  cport__queue_t free[CPORT__TLS_POOL_CLASSES];
  size_t bytes[CPORT__TLS_POOL_CLASSES];
} cport__tls_pool_t;

/* Free every block the pool keeps (the loop is going away). */
void cport__tls_pool_clear(cport__tls_pool_t* pool);

/* Give a block from cport__tls_conn_take() back: kept in `pool` (NULL:
 * none) when its class has room, freed otherwise. Accepts NULL. */
void cport__tls_out_put(cport__tls_pool_t* pool, cport__tls_out_t* o);

/* A new connection over `tls`, whose blocks come from `pool` (NULL: from
 * malloc alone) while it runs; cport__tls_conn_free() never touches the
 * pool. Clients: `peer` (or NULL) is the server's name, sent by SNI and
 * verified in its certificate, or its IP address (as text), verified and
 * not sent. `resume` (or NULL) is a client service's slot for the last
 * session it was given, offered by this connection and replaced when a
 * newer one arrives (cport__tls_resume_free frees it); it must outlive
 * the connection, and only the thread that runs the connection may use
 * it. Returns 0, UV_ENOMEM or CPORT_ETLS. */
CPORT__NODISCARD int cport__tls_conn_new(cport__tls_conn_t** out,
                                         cport_tls_t* tls,
                                         cport__tls_pool_t* pool,
                                         const char* peer,
                                         void** resume);

/* Clients: make OpenSSL hand the connections of `ssl_ctx` (an SSL_CTX*)
 * the sessions servers send, for their resumption slot. */
void cport__tls_conn_setup_ctx(void* ssl_ctx);

/* Free the connection and whatever it still holds. Accepts NULL. Thread:
 * the one that ran it, or any once nothing else uses it. */
void cport__tls_conn_free(cport__tls_conn_t* c);

/* Ciphertext `data` (len bytes) that the next calls may read, until the
 * next cport__tls_conn_input() or cport__tls_conn_keep(). Bytes kept from
 * before come first. */
void cport__tls_conn_input(cport__tls_conn_t* c,
                           const uint8_t* data,
                           size_t len);

/* Copy what the input of cport__tls_conn_input() still holds into the
 * connection, so that the caller's bytes may go. Returns 0 or UV_ENOMEM. */
CPORT__NODISCARD int cport__tls_conn_keep(cport__tls_conn_t* c);

/* Non-zero if the connection holds ciphertext or plaintext not read yet:
 * a session that stopped reading must drain it when it reads again, since
 * no more bytes from the socket may come to wake it. */
int cport__tls_conn_has_input(const cport__tls_conn_t* c);

/* Drive the handshake on. Returns 0 once it has completed (the session's
 * queries then answer), CPORT__TLS_WANT while it needs more ciphertext,
 * or an error: CPORT_ETLSNAME, CPORT_ETLSCA, CPORT_ETLSEXPIRED,
 * CPORT_ETLSVERIFY, CPORT_ETLS (with cport__tls_conn_cause), UV_ENOMEM. */
CPORT__NODISCARD int cport__tls_conn_handshake(cport__tls_conn_t* c);

/* Read up to `cap` bytes of plaintext into `buf`. Returns 0 with `*n` > 0
 * bytes read, CPORT__TLS_WANT when none is ready, UV_EOF once the peer's
 * close_notify has come, CPORT_ETLS (a protocol error or alert; see
 * cport__tls_conn_cause) or UV_ENOMEM. */
CPORT__NODISCARD int cport__tls_conn_read(cport__tls_conn_t* c,
                                          uint8_t* buf,
                                          size_t cap,
                                          size_t* n);

/* Make room for the ciphertext of `len` bytes of plaintext about to be
 * written, so that one block takes a whole gather without growing, and
 * a write of those bytes cannot fail for memory. Returns 0 or UV_ENOMEM
 * (nothing was written). */
CPORT__NODISCARD int cport__tls_conn_reserve(cport__tls_conn_t* c,
                                             size_t len);

/* Encrypt `len` bytes (at most INT_MAX). Returns 0, UV_ENOMEM or
 * CPORT_ETLS. */
CPORT__NODISCARD int cport__tls_conn_write(cport__tls_conn_t* c,
                                           const void* data,
                                           size_t len);

/* Make the close_notify alert (once; nothing before the handshake has
 * completed). Returns 0 or UV_ENOMEM. */
int cport__tls_conn_close_notify(cport__tls_conn_t* c);

/* The ciphertext made since the last call, as one block the caller now
 * owns, or NULL when there is none. */
cport__tls_out_t* cport__tls_conn_take(cport__tls_conn_t* c);


/* Why the last call failed, as text ("TLS: tlsv1 alert unknown ca");
 * NULL when nothing failed. Valid until the connection is freed. */
const char* cport__tls_conn_cause(const cport__tls_conn_t* c);

/* What the handshake settled (NULL or 0 before it completed). Fixed once
 * it has, so any thread may read them. */
const char* cport__tls_conn_version(const cport__tls_conn_t* c);
const char* cport__tls_conn_cipher(const cport__tls_conn_t* c);
const char* cport__tls_conn_alpn(const cport__tls_conn_t* c);
const char* cport__tls_conn_sni(const cport__tls_conn_t* c);
int cport__tls_conn_resumed(const cport__tls_conn_t* c);
int cport__tls_conn_peer_subject(const cport__tls_conn_t* c,
                                 char* out,
                                 size_t len);

/* Free a client service's resumption slot (see cport__tls_conn_new).
 * Accepts NULL. */
void cport__tls_resume_free(void* resume);

#endif /* CPORT_TLS_INTERNAL_H */
