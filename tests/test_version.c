/* cport_version() and the version macros: the running library's text is
 * the header's, and the number and the text agree with the three parts.
 * Also what the build says of TLS (cport_tls_library). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "cport/cport.h"


static void test_version_text_matches_the_macros(void** state) {
  char expected[32];
  const char* v = cport_version();
  (void)state;
  assert_non_null(v);
  snprintf(expected, sizeof(expected), "%d.%d.%d", CPORT_VERSION_MAJOR,
           CPORT_VERSION_MINOR, CPORT_VERSION_PATCH);
  assert_string_equal(v, expected);
  assert_string_equal(v, CPORT_VERSION_STRING);
}


static void test_version_text_is_static(void** state) {
  (void)state;
  /* The same pointer every time: static text, nothing to free. */
  assert_ptr_equal(cport_version(), cport_version());
}


static void test_version_hex_orders_the_parts(void** state) {
  (void)state;
  assert_int_equal((CPORT_VERSION_HEX >> 16) & 0xff, CPORT_VERSION_MAJOR);
  assert_int_equal((CPORT_VERSION_HEX >> 8) & 0xff, CPORT_VERSION_MINOR);
  assert_int_equal(CPORT_VERSION_HEX & 0xff, CPORT_VERSION_PATCH);
#if CPORT_VERSION_HEX < 0x000400
#error "CPORT_VERSION_HEX must be usable in #if"
#endif
}


/* A build with TLS names its OpenSSL; one without refuses every TLS call
 * with CPORT_ENOTLS (the MinGW build under wine has no OpenSSL). */
static void test_version_tls_library_matches_the_build(void** state) {
  cport_tls_opts_t o;
  cport_tls_t* t = (cport_tls_t*)&o; /* must be reset to NULL */
  (void)state;
  cport_tls_opts_init(&o);
  if (cport_tls_available()) {
    assert_non_null(strstr(cport_tls_library(), "OpenSSL 3"));
    return;
  }
  assert_string_equal(cport_tls_library(), "none");
  assert_int_equal(cport_tls_create(&t, CPORT_TLS_SERVER, &o), CPORT_ENOTLS);
  assert_null(t);
  assert_int_equal(cport_tls_add_name(NULL, "x", NULL), CPORT_ENOTLS);
  assert_string_equal(cport_strerror(CPORT_ENOTLS),
                      "cport was built without TLS");
}


int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_version_text_matches_the_macros),
      cmocka_unit_test(test_version_text_is_static),
      cmocka_unit_test(test_version_hex_orders_the_parts),
      cmocka_unit_test(test_version_tls_library_matches_the_build),
  };
  return cmocka_run_group_tests_name("version", tests, NULL, NULL);
}
