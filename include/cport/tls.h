/* cport: TLS for services (OpenSSL 3).
 *
 * A TLS context holds what every connection of one side shares: the
 * certificate chain and key, the trusted CAs, the verification mode, the
 * ALPN list, the lowest protocol version, session tickets, and for servers
 * the contexts to use for other SNI names. Give it to a service in
 * cport_service_opts_t.tls; nothing else changes: on_connected runs once
 * the handshake has completed, on_recv and on_packet get plaintext, and
 * every send function (any thread, shared buffers, broadcast, packets)
 * takes plaintext. libuv keeps the socket; TLS runs over memory, so it
 * works the same on every libuv backend (IOCP included).
 *
 * Typical server and client:
 *
 *   cport_tls_opts_t t;
 *   cport_tls_opts_init(&t);
 *   t.cert_file = "server.pem";     // chain, leaf first
 *   t.key_file = "server.key";
 *   cport_tls_create(&tls, CPORT_TLS_SERVER, &t);
 *   o.tls = tls;                    // the service takes a reference
 *
 *   cport_tls_opts_init(&t);
 *   t.ca_file = "ca.pem";           // or none: the system's store
 *   cport_tls_create(&tls, CPORT_TLS_CLIENT, &t);
 *   o.tls = tls;                    // verifies the certificate and the
 *                                   // service's host name (SNI sent too)
 *
 * Built without OpenSSL (CPORT_WITH_TLS off), cport_tls_create() returns
 * CPORT_ENOTLS and the rest works as before. */
#ifndef CPORT_TLS_H
#define CPORT_TLS_H

#include <stddef.h>

#include "cport/export.h"
#include "cport/session.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cport_tls_s cport_tls_t;

typedef enum cport_tls_role_e {
  CPORT_TLS_SERVER = 1, /* for server services: presents a certificate */
  CPORT_TLS_CLIENT = 2  /* for client services: verifies the server's */
} cport_tls_role_t;

typedef enum cport_tls_verify_e {
  /* Clients: CPORT_TLS_VERIFY_PEER. Servers: no client certificate asked. */
  CPORT_TLS_VERIFY_DEFAULT = 0,
  /* Clients: accept any certificate and any name. Only for tests and
   * closed networks: anyone on the path can read and change the traffic.
   * Each client session that connects this way logs a warning once per
   * context. Servers: the same as the default. */
  CPORT_TLS_VERIFY_NONE = 1,
  /* Clients: the server's chain must lead to a trusted CA, be valid now,
   * and name the host (cport_service_opts_t.tls_name, else the service's
   * host name, else its IP address). Servers: ask for a client
   * certificate and verify it when one is sent. */
  CPORT_TLS_VERIFY_PEER = 2,
  /* Servers: a verified client certificate is required. Clients: as
   * CPORT_TLS_VERIFY_PEER. */
  CPORT_TLS_VERIFY_REQUIRE = 3
} cport_tls_verify_t;

/* Protocol versions, as on the wire. */
#define CPORT_TLS_1_2 0x0303
#define CPORT_TLS_1_3 0x0304

typedef struct cport_tls_opts_s {
  /* The certificate chain (PEM, leaf first) and its private key (PEM), from
   * files or from memory (NUL-terminated text; memory wins when both are
   * set). Servers need both; a client sets them to present a client
   * certificate. Default NULL. */
  const char* cert_file;
  const char* key_file;
  const char* cert_pem;
  const char* key_pem;
  /* Trusted CAs (PEM) to verify the peer with, from a file or memory.
   * Default NULL: clients then trust the system's store (OpenSSL's default
   * paths, or SSL_CERT_FILE / SSL_CERT_DIR); servers that verify need one
   * of these. */
  const char* ca_file;
  const char* ca_pem;
  /* Non-zero: trust the system's store as well as ca_file / ca_pem.
   * Default 0 (only when neither is set, clients use it). */
  int system_ca;
  cport_tls_verify_t verify; /* default CPORT_TLS_VERIFY_DEFAULT */
  /* ALPN protocols in order of preference, comma-separated
   * ("h2,http/1.1"); each 1 to 255 bytes. A server picks the first of its
   * own list that the client offers, and refuses the handshake (alert
   * no_application_protocol) when the client offers ALPN but none of
   * these; a client sends the list. Default NULL: no ALPN. */
  const char* alpn;
  /* Lowest protocol version: CPORT_TLS_1_2 (the default) or
   * CPORT_TLS_1_3. The highest is always TLS 1.3. */
  int min_version;
  /* Non-zero (the default): servers issue session tickets, so returning
   * clients resume without a full handshake; 0 issues none (servers) or
   * asks for none (clients). Client services always offer the last
   * session they were given on their next connect (reconnects too). */
  int session_tickets;
  /* OpenSSL cipher lists: `ciphers` for TLS 1.2 and below
   * (SSL_CTX_set_cipher_list), `ciphersuites` for TLS 1.3
   * (SSL_CTX_set_ciphersuites). Default NULL: OpenSSL's defaults. */
  const char* ciphers;
  const char* ciphersuites;
} cport_tls_opts_t;

/* Fill `opts` with the defaults listed above. Thread: any. */
CPORT_API void cport_tls_opts_init(cport_tls_opts_t* opts);

/* Create a TLS context for `role`.
 * Ownership: `opts` and the strings it points to are read during the call
 *            only; `*out` holds one reference, dropped with
 *            cport_tls_unref(). Each service given the context holds one
 *            more, so it may be dropped as soon as the services are
 *            created.
 * Thread:    any.
 * Returns:   0; UV_EINVAL for NULL arguments, an unknown role, verify mode
 *            or min_version, a server without a certificate or key, a
 *            verifying server without CAs, an ALPN entry empty or over 255
 *            bytes (each logs a warn line naming the option); CPORT_ETLS
 *            when OpenSSL refuses a file, a PEM text, a key that does not
 *            match its certificate, or a cipher list (logged with
 *            OpenSSL's reason); CPORT_ENOTLS when cport was built without
 *            TLS; UV_ENOMEM. */
CPORT_API int cport_tls_create(cport_tls_t** out,
                               cport_tls_role_t role,
                               const cport_tls_opts_t* opts);

/* Servers: use `ctx` (a server context) for connections whose client
 * asks for `name` by SNI, instead of `tls`. `name` is a host name, matched
 * without regard to case, or "*.example.com" for any one label in front
 * of example.com. A client that sends no SNI, or a name not listed, gets
 * `tls` itself.
 * Ownership: `name` is copied; `tls` takes a reference to `ctx`.
 * Thread:    any, before `tls` is given to a service (the map is read by
 *            every loop without a lock afterwards).
 * Returns:   0; UV_EINVAL for NULL, a client context on either side, an
 *            empty or too long name, or `ctx` equal to `tls`; UV_EBUSY once
 *            `tls` was given to a service; UV_EEXIST for a name already
 *            listed; CPORT_ENOTLS; UV_ENOMEM. */
CPORT_API int cport_tls_add_name(cport_tls_t* tls,
                                 const char* name,
                                 cport_tls_t* ctx);

/* Take or drop a reference. The last cport_tls_unref() frees the context
 * (after every service and session using it is gone).
 * Thread: any. Accept NULL. */
CPORT_API void cport_tls_ref(cport_tls_t* tls);
CPORT_API void cport_tls_unref(cport_tls_t* tls);

/* Non-zero when cport was built with TLS. Thread: any. */
CPORT_API int cport_tls_available(void);

/* The TLS library cport runs with, "OpenSSL 3.0.19 27 Jan 2026", or
 * "none". Ownership: static text. Thread: any. */
CPORT_API const char* cport_tls_library(void);

/* ---- sessions of a TLS service ----
 * What the handshake settled, fixed before on_connected and never changed
 * after, so any thread holding a reference may ask. On a session without
 * TLS, or before on_connected, the strings are NULL and the numbers 0. */

/* Non-zero if the session runs over TLS. Thread: any. */
CPORT_API int cport_session_is_tls(const cport_session_t* s);

/* The protocol version, "TLSv1.3" or "TLSv1.2" (static text).
 * Thread: any. */
CPORT_API const char* cport_session_tls_version(const cport_session_t* s);

/* The cipher suite's name, "TLS_AES_128_GCM_SHA256" (static text).
 * Thread: any. */
CPORT_API const char* cport_session_tls_cipher(const cport_session_t* s);

/* The ALPN protocol both sides agreed on, or NULL when none was. Valid
 * while a reference to `s` is held. Thread: any. */
CPORT_API const char* cport_session_tls_alpn(const cport_session_t* s);

/* Servers: the host name the client asked for by SNI, or NULL. Clients:
 * the name sent. Valid while a reference to `s` is held. Thread: any. */
CPORT_API const char* cport_session_tls_sni(const cport_session_t* s);

/* Non-zero if the session resumed an earlier one (a ticket or a cached
 * session) instead of a full handshake. Thread: any. */
CPORT_API int cport_session_tls_resumed(const cport_session_t* s);

/* The peer certificate's subject, one line ("CN=example.com,O=Example"),
 * into `out` (NUL-terminated, `len` bytes at most).
 * Thread:  any, holding a reference.
 * Returns: 0; UV_EINVAL for NULL or len 0; UV_ENOENT when the peer sent no
 *          certificate (a client of a server that does not ask);
 *          UV_ENOTCONN before on_connected; CPORT_ENOTLS for a session
 *          without TLS; UV_ENOBUFS when `out` is too small (it then holds
 *          the start of the subject). */
CPORT_API int cport_session_tls_peer_subject(const cport_session_t* s,
                                             char* out,
                                             size_t len);

#ifdef __cplusplus
}
#endif
#endif /* CPORT_TLS_H */
