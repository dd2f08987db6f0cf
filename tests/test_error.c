/* cport_strerror() and cport_err_name(): cport's own codes, libuv's codes,
 * success and unknown codes. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <limits.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "cport/cport.h"

typedef struct code_entry_s {
  int code;
  const char* name;
  const char* text;
} code_entry_t;

/* Built from the same X-macros as the library, so that a code added to a
 * map is tested without editing this file. */
static const code_entry_t cport_codes[] = {
#define ENTRY(name, value, text) {CPORT_##name, #name, text},
    CPORT_ERRNO_MAP(ENTRY)
#undef ENTRY
};

static const code_entry_t uv_codes[] = {
#define ENTRY(name, text) {UV_##name, #name, text},
    UV_ERRNO_MAP(ENTRY)
#undef ENTRY
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))


static void test_error_cport_codes_have_their_text(void** state) {
  size_t i;
  (void)state;
  assert_true(COUNT(cport_codes) > 0);
  for (i = 0; i < COUNT(cport_codes); i++) {
    const char* text = cport_strerror(cport_codes[i].code);
    assert_non_null(text);
    if (strcmp(text, cport_codes[i].text) != 0)
      fail_msg("cport_strerror(CPORT_%s) is \"%s\", expected \"%s\"",
               cport_codes[i].name, text, cport_codes[i].text);
    assert_true(text[0] != '\0');
    assert_string_not_equal(text, "unknown error");
  }
}


static void test_error_cport_codes_have_their_name(void** state) {
  size_t i;
  (void)state;
  for (i = 0; i < COUNT(cport_codes); i++) {
    const char* name = cport_err_name(cport_codes[i].code);
    assert_non_null(name);
    if (strcmp(name, cport_codes[i].name) != 0)
      fail_msg("cport_err_name(%d) is \"%s\", expected \"%s\"",
               cport_codes[i].code, name, cport_codes[i].name);
  }
  /* Spot checks against literal spellings, independent of the X-macro. */
  assert_string_equal(cport_err_name(CPORT_ESENDQ), "ESENDQ");
  assert_string_equal(cport_err_name(CPORT_ELOCAL), "ELOCAL");
  assert_string_equal(cport_strerror(CPORT_ESTOPPED), "service stopped");
}


static void test_error_cport_codes_are_distinct(void** state) {
  size_t i;
  size_t j;
  (void)state;
  for (i = 0; i < COUNT(cport_codes); i++) {
    for (j = i + 1; j < COUNT(cport_codes); j++) {
      assert_int_not_equal(cport_codes[i].code, cport_codes[j].code);
      assert_string_not_equal(cport_strerror(cport_codes[i].code),
                              cport_strerror(cport_codes[j].code));
      assert_string_not_equal(cport_err_name(cport_codes[i].code),
                              cport_err_name(cport_codes[j].code));
    }
  }
}


static void test_error_cport_codes_are_in_the_5000_block(void** state) {
  size_t i;
  size_t j;
  (void)state;
  for (i = 0; i < COUNT(cport_codes); i++) {
    int code = cport_codes[i].code;
    if (code > -5000 || code <= -6000)
      fail_msg("CPORT_%s is %d, outside -5000..-5999", cport_codes[i].name,
               code);
    /* No libuv code may share the value, or `code == UV_x` would lie. */
    for (j = 0; j < COUNT(uv_codes); j++) {
      if (uv_codes[j].code == code)
        fail_msg("CPORT_%s collides with UV_%s (%d)", cport_codes[i].name,
                 uv_codes[j].name, code);
    }
  }
}


static void test_error_uv_codes_pass_through(void** state) {
  size_t i;
  (void)state;
  assert_string_equal(cport_strerror(UV_EADDRINUSE), "address already in use");
  assert_string_equal(cport_err_name(UV_EADDRINUSE), "EADDRINUSE");
  assert_string_equal(cport_err_name(UV_EOF), "EOF");
  assert_string_equal(cport_strerror(UV_ECONNREFUSED), "connection refused");
  for (i = 0; i < COUNT(uv_codes); i++) {
    const char* text = cport_strerror(uv_codes[i].code);
    const char* name = cport_err_name(uv_codes[i].code);
    assert_non_null(text);
    assert_non_null(name);
    if (strcmp(text, uv_codes[i].text) != 0)
      fail_msg("cport_strerror(UV_%s) is \"%s\", expected \"%s\"",
               uv_codes[i].name, text, uv_codes[i].text);
    if (strcmp(name, uv_codes[i].name) != 0)
      fail_msg("cport_err_name(UV_%s) is \"%s\"", uv_codes[i].name, name);
  }
}


static void test_error_uv_codes_match_libuv_texts(void** state) {
  (void)state;
  /* For codes libuv knows, uv_strerror() returns static text too. */
  assert_string_equal(cport_strerror(UV_EINVAL), uv_strerror(UV_EINVAL));
  assert_string_equal(cport_strerror(UV_ENOMEM), uv_strerror(UV_ENOMEM));
  assert_string_equal(cport_err_name(UV_ECANCELED), uv_err_name(UV_ECANCELED));
}


static void test_error_zero_is_success(void** state) {
  const char* name;
  (void)state;
  assert_string_equal(cport_strerror(0), "success");
  name = cport_err_name(0);
  assert_non_null(name);
  assert_true(name[0] != '\0');
  assert_string_not_equal(name, "UNKNOWN");
}


static int code_is_defined(int code) {
  size_t i;
  for (i = 0; i < COUNT(cport_codes); i++) {
    if (cport_codes[i].code == code)
      return 1;
  }
  for (i = 0; i < COUNT(uv_codes); i++) {
    if (uv_codes[i].code == code)
      return 1;
  }
  return 0;
}


/* The cport names of libuv's codes equal libuv's own on this system (the
 * POSIX values come from <errno.h>, the Windows ones are fixed: both
 * checked here, on Linux and under wine), and name themselves. */
static void test_error_uv_code_names_equal_libuv(void** state) {
  static const struct {
    int cport;
    int uv;
    const char* name;
  } same[] = {
#define SAME(name) {CPORT_##name, UV_##name, #name}
      SAME(EOF),        SAME(EAI_AGAIN),    SAME(EAI_NONAME),
      SAME(EACCES),     SAME(EADDRINUSE),   SAME(EADDRNOTAVAIL),
      SAME(EAGAIN),     SAME(EALREADY),     SAME(EBUSY),
      SAME(ECANCELED),  SAME(ECONNABORTED), SAME(ECONNREFUSED),
      SAME(ECONNRESET), SAME(EHOSTUNREACH), SAME(EINVAL),
      SAME(EMFILE),     SAME(ENETUNREACH),  SAME(ENOENT),
      SAME(ENOMEM),
      SAME(ENOTCONN),   SAME(EPIPE),        SAME(ETIMEDOUT),
#undef SAME
  };
  size_t i;
  (void)state;
  for (i = 0; i < COUNT(same); i++) {
    if (same[i].cport != same[i].uv)
      fail_msg("CPORT_%s is %d, libuv's UV_%s %d", same[i].name, same[i].cport,
               same[i].name, same[i].uv);
    assert_string_equal(cport_err_name(same[i].cport), same[i].name);
  }
}


static void test_error_unknown_codes_are_reported_as_unknown(void** state) {
  /* -5999 is the enum's end marker, not a code; -5020 is the next free one. */
  static const int unknown[] = {-123456, 12345, 1,       -5999,  -5020,
                                -6000,   -4999, INT_MIN, INT_MAX};
  size_t i;
  (void)state;
  for (i = 0; i < COUNT(unknown); i++) {
    /* Guard the test itself: a code that became defined is no probe. */
    if (code_is_defined(unknown[i]))
      fail_msg("%d is a defined code; pick another unknown one", unknown[i]);
    const char* text = cport_strerror(unknown[i]);
    const char* name = cport_err_name(unknown[i]);
    if (text == NULL || strcmp(text, "unknown error") != 0)
      fail_msg("cport_strerror(%d) is \"%s\", expected \"unknown error\"",
               unknown[i], text != NULL ? text : "(null)");
    if (name == NULL || strcmp(name, "UNKNOWN") != 0)
      fail_msg("cport_err_name(%d) is \"%s\", expected \"UNKNOWN\"", unknown[i],
               name != NULL ? name : "(null)");
  }
}


static void test_error_texts_are_static(void** state) {
  (void)state;
  /* Static text has one address; a text allocated per call (as
   * uv_strerror() does for unknown codes) would not. */
  assert_ptr_equal(cport_strerror(-123456), cport_strerror(-654321));
  assert_ptr_equal(cport_err_name(-123456), cport_err_name(-654321));
  assert_ptr_equal(cport_strerror(CPORT_ESENDQ), cport_strerror(CPORT_ESENDQ));
  assert_ptr_equal(cport_strerror(UV_EOF), cport_strerror(UV_EOF));
}


int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_error_cport_codes_have_their_text),
      cmocka_unit_test(test_error_cport_codes_have_their_name),
      cmocka_unit_test(test_error_cport_codes_are_distinct),
      cmocka_unit_test(test_error_cport_codes_are_in_the_5000_block),
      cmocka_unit_test(test_error_uv_codes_pass_through),
      cmocka_unit_test(test_error_uv_codes_match_libuv_texts),
      cmocka_unit_test(test_error_zero_is_success),
      cmocka_unit_test(test_error_uv_code_names_equal_libuv),
      cmocka_unit_test(test_error_unknown_codes_are_reported_as_unknown),
      cmocka_unit_test(test_error_texts_are_static),
  };
  return cmocka_run_group_tests_name("error", tests, NULL, NULL);
}
