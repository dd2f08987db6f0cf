/* TLS sessions: contexts, the handshake, plaintext both ways over the
 * same Session API, verification, and the ways TLS layers over libuv
 * have gone wrong before. Certificates are made at test time
 * (tls_certs.c); everything runs on loopback. */
#include <string.h>

#include <openssl/err.h>

#include "fixture.h"
#include "tls_certs.h"

static tls_certs_t certs;

static int certs_setup(void** state) {
  (void)state;
  return tls_certs_make(&certs);
}


static int certs_teardown(void** state) {
  (void)state;
  tls_certs_free(&certs);
  return 0;
}


/* A server context presenting `cert`/`key`. */
static cport_tls_t* server_ctx(const char* cert, const char* key) {
  cport_tls_opts_t o;
  cport_tls_t* t = NULL;
  cport_tls_opts_init(&o);
  o.cert_pem = cert;
  o.key_pem = key;
  assert_int_equal(cport_tls_create(&t, CPORT_TLS_SERVER, &o), 0);
  return t;
}


/* A client context trusting the test CA. */
static cport_tls_t* client_ctx(void) {
  cport_tls_opts_t o;
  cport_tls_t* t = NULL;
  cport_tls_opts_init(&o);
  o.ca_pem = certs.ca;
  assert_int_equal(cport_tls_create(&t, CPORT_TLS_CLIENT, &o), 0);
  return t;
}


/* Start the fixture's server with `srv` and one client with `cli` (the
 * fixture's services take their own references). */
static void start_pair(fixture_t* fx, cport_tls_t* srv, cport_tls_t* cli) {
  fx->opts.tls = srv;
  fixture_start_server(fx);
  fx->opts.tls = cli;
  fixture_start_client(fx, &fx->server_addr, 1);
  fx->opts.tls = NULL;
  cport_tls_unref(srv);
  cport_tls_unref(cli);
}


static void test_tls_echo_after_handshake(void** state) {
  fixture_t* fx = *state;
  enum { N = 1 << 20 };
  uint8_t* data = malloc(N);
  char subject[256];
  rec_session_t* rc;
  assert_non_null(data);
  fill_pattern(data, N, 17);
  start_pair(fx, server_ctx(certs.server, certs.server_key), client_ctx());
  fixture_wait_int(fx, &fx->connected, 2, FIXTURE_TIMEOUT_MS);
  /* on_connected came after the handshake: its results are there. */
  assert_true(cport_session_is_tls(fx->last_client));
  assert_string_equal(cport_session_tls_version(fx->last_client), "TLSv1.3");
  assert_non_null(cport_session_tls_cipher(fx->last_server));
  assert_null(cport_session_tls_alpn(fx->last_server));
  /* 127.0.0.1 is verified as an address and not sent by SNI. */
  assert_null(cport_session_tls_sni(fx->last_server));
  assert_int_equal(cport_session_tls_peer_subject(fx->last_client, subject,
                                                  sizeof(subject)),
                   0);
  assert_non_null(strstr(subject, "CN=localhost"));
  assert_int_equal(cport_session_tls_peer_subject(fx->last_server, subject,
                                                  sizeof(subject)),
                   UV_ENOENT);
  /* Plaintext in, plaintext out, byte-exact through the echo. */
  assert_int_equal(cport_session_send(fx->last_client, data, N), 0);
  rc = rec_of(fx->last_client);
  fixture_wait_size(fx, &rc->received.len, N, FIXTURE_TIMEOUT_MS);
  assert_memory_equal(rc->received.data, data, N);
  free(data);
}


/* on_connect_failed of a client to a server presenting `cert`. */
static int connect_error_with(fixture_t* fx, const char* cert,
                              const char* key) {
  start_pair(fx, server_ctx(cert, key), client_ctx());
  fixture_wait_int(fx, &fx->connect_failed, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(fx->connected, 0);
  return fx->last_connect_error;
}


static void test_tls_client_refuses_wrong_name(void** state) {
  assert_int_equal(connect_error_with(*state, certs.other, certs.other_key),
                   CPORT_ETLSNAME);
}


static void test_tls_client_refuses_unknown_ca(void** state) {
  assert_int_equal(
      connect_error_with(*state, certs.stranger, certs.stranger_key),
      CPORT_ETLSCA);
}


static void test_tls_client_refuses_expired(void** state) {
  assert_int_equal(
      connect_error_with(*state, certs.expired, certs.expired_key),
      CPORT_ETLSEXPIRED);
}


int main(void) {
  const struct CMUnitTest tests[] = {
      FIXTURE_TEST(test_tls_echo_after_handshake),
      FIXTURE_TEST(test_tls_client_refuses_wrong_name),
      FIXTURE_TEST(test_tls_client_refuses_unknown_ca),
      FIXTURE_TEST(test_tls_client_refuses_expired),
  };
  return cmocka_run_group_tests(tests, certs_setup, certs_teardown);
}
