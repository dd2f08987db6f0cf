/* bench_libevent_tls: a libevent 2.1 TLS echo server on OpenSSL
 * bufferevents, as a reference point for cport's TLS benchmark.
 *
 *   bench_libevent_tls --tls-cert FILE --tls-key FILE [--host ADDR]
 *                      [--port N] [--threads N]
 *
 * Design notes: libevent_echo.c built with BENCH_TLS, so the two servers
 * differ only where TLS must: each accepted socket is wrapped by
 * bufferevent_openssl_socket_new() in the accepting state, the read
 * callback still moves the (plaintext) input onto the output buffer, which
 * the bufferevent encrypts, and the same pause and resume thresholds apply.
 * TLS 1.3 only with TLS_AES_128_GCM_SHA256 and otherwise OpenSSL's defaults
 * (server_tls_context() in server_common.h). EOF, a peer that closes without
 * close_notify and errors all just free the bufferevent, which frees the SSL
 * and closes the socket (BEV_OPT_CLOSE_ON_FREE). */
#define BENCH_TLS 1
#define PROG "bench_libevent_tls"
#include "libevent_echo.c"
