/* cport_addr_t: parsing, formatting, conversion and resolution.
 *
 * Every rejected input is also checked to leave `out` untouched, because the
 * header promises that `out` is written only on success. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "cport/cport.h"

/* Filler that no successful parse can produce (its family is 0xA5A5). */
#define ADDR_POISON 0xA5


static void addr_poison(cport_addr_t* a) {
  memset(a, ADDR_POISON, sizeof(*a));
}


static int addr_is_poisoned(const cport_addr_t* a) {
  size_t i;
  for (i = 0; i < sizeof(a->u.bytes); i++) {
    if (a->u.bytes[i] != ADDR_POISON)
      return 0;
  }
  return 1;
}


static void expect_parse_ok(cport_addr_t* out, const char* host, int port) {
  int rc = cport_addr_parse(out, host, port);
  if (rc != 0)
    fail_msg("cport_addr_parse(\"%s\", %d) returned %d (%s), expected 0", host,
             port, rc, cport_err_name(rc));
}


static void expect_parse_einval(const char* host, int port) {
  cport_addr_t a;
  int rc;
  addr_poison(&a);
  rc = cport_addr_parse(&a, host, port);
  if (rc != UV_EINVAL)
    fail_msg("cport_addr_parse(\"%s\", %d) returned %d (%s), expected EINVAL",
             host != NULL ? host : "(null)", port, rc, cport_err_name(rc));
  if (!addr_is_poisoned(&a))
    fail_msg("cport_addr_parse(\"%s\", %d) failed but wrote to out",
             host != NULL ? host : "(null)", port);
}


static void expect_hostport_ok(cport_addr_t* out, const char* text) {
  int rc = cport_addr_parse_hostport(out, text);
  if (rc != 0)
    fail_msg("cport_addr_parse_hostport(\"%s\") returned %d (%s), expected 0",
             text, rc, cport_err_name(rc));
}


static void expect_hostport_einval(const char* text) {
  cport_addr_t a;
  int rc;
  addr_poison(&a);
  rc = cport_addr_parse_hostport(&a, text);
  if (rc != UV_EINVAL)
    fail_msg(
        "cport_addr_parse_hostport(\"%s\") returned %d (%s), expected "
        "EINVAL",
        text != NULL ? text : "(null)", rc, cport_err_name(rc));
  if (!addr_is_poisoned(&a))
    fail_msg("cport_addr_parse_hostport(\"%s\") failed but wrote to out",
             text != NULL ? text : "(null)");
}


static void expect_format(const cport_addr_t* a, const char* expected) {
  char buf[CPORT_ADDR_STRLEN];
  assert_int_equal(cport_addr_format(a, buf, sizeof(buf)), 0);
  assert_string_equal(buf, expected);
}


static void expect_format_host(const cport_addr_t* a, const char* expected) {
  char buf[CPORT_ADDR_STRLEN];
  assert_int_equal(cport_addr_format_host(a, buf, sizeof(buf)), 0);
  assert_string_equal(buf, expected);
}


/* ---- cport_addr_parse: accepted hosts ---- */

static void test_addr_parse_accepts_ipv4_loopback(void** state) {
  cport_addr_t a;
  const struct sockaddr* sa;
  (void)state;
  addr_poison(&a);
  expect_parse_ok(&a, "127.0.0.1", 7777);
  assert_int_equal(cport_addr_family(&a), 4);
  assert_int_equal(cport_addr_port(&a), 7777);
  sa = cport_addr_sockaddr(&a);
  assert_non_null(sa);
  assert_int_equal(sa->sa_family, AF_INET);
  expect_format_host(&a, "127.0.0.1");
  expect_format(&a, "127.0.0.1:7777");
}


static void test_addr_parse_accepts_ipv6_loopback(void** state) {
  cport_addr_t a;
  const struct sockaddr* sa;
  (void)state;
  addr_poison(&a);
  expect_parse_ok(&a, "::1", 7777);
  assert_int_equal(cport_addr_family(&a), 6);
  assert_int_equal(cport_addr_port(&a), 7777);
  sa = cport_addr_sockaddr(&a);
  assert_non_null(sa);
  assert_int_equal(sa->sa_family, AF_INET6);
  expect_format_host(&a, "::1");
  expect_format(&a, "[::1]:7777");
}


static void test_addr_parse_accepts_bracketed_ipv6(void** state) {
  cport_addr_t bracketed;
  cport_addr_t bare;
  (void)state;
  expect_parse_ok(&bracketed, "[::1]", 7777);
  expect_parse_ok(&bare, "::1", 7777);
  assert_int_equal(cport_addr_family(&bracketed), 6);
  assert_int_equal(cport_addr_port(&bracketed), 7777);
  /* Brackets are syntax only: the result is the same address. */
  assert_memory_equal(&bracketed, &bare, sizeof(bare));
  expect_format(&bracketed, "[::1]:7777");
}


static void test_addr_parse_accepts_explicit_wildcards(void** state) {
  cport_addr_t a;
  (void)state;
  expect_parse_ok(&a, "0.0.0.0", 0);
  assert_int_equal(cport_addr_family(&a), 4);
  assert_int_equal(cport_addr_port(&a), 0);
  expect_format(&a, "0.0.0.0:0");

  expect_parse_ok(&a, "::", 80);
  assert_int_equal(cport_addr_family(&a), 6);
  assert_int_equal(cport_addr_port(&a), 80);
  expect_format(&a, "[::]:80");

  expect_parse_ok(&a, "[::]", 81);
  assert_int_equal(cport_addr_family(&a), 6);
  expect_format(&a, "[::]:81");
}


static void test_addr_parse_accepts_port_bounds(void** state) {
  cport_addr_t a;
  (void)state;
  expect_parse_ok(&a, "10.0.0.1", 0);
  assert_int_equal(cport_addr_port(&a), 0);
  expect_parse_ok(&a, "10.0.0.1", 65535);
  assert_int_equal(cport_addr_port(&a), 65535);
  expect_format(&a, "10.0.0.1:65535");
  expect_parse_ok(&a, "2001:db8::1", 65535);
  assert_int_equal(cport_addr_port(&a), 65535);
  expect_format(&a, "[2001:db8::1]:65535");
}


static void test_addr_parse_accepts_ipv6_with_scope(void** state) {
  cport_addr_t a;
  (void)state;
  /* The interface may not exist here; the address must parse regardless. */
  expect_parse_ok(&a, "fe80::1%1", 443);
  assert_int_equal(cport_addr_family(&a), 6);
  assert_int_equal(cport_addr_port(&a), 443);
  expect_format_host(&a, "fe80::1");
}


static void test_addr_parse_accepts_full_length_ipv6(void** state) {
  cport_addr_t a;
  char buf[CPORT_ADDR_STRLEN];
  (void)state;
  expect_parse_ok(&a, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);
  expect_format(&a, "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
  /* CPORT_ADDR_STRLEN is documented to always suffice. */
  assert_int_equal(cport_addr_format(&a, buf, CPORT_ADDR_STRLEN), 0);
}


/* ---- cport_addr_parse: rejected input ---- */

static void test_addr_parse_rejects_null_arguments(void** state) {
  cport_addr_t a;
  (void)state;
  assert_int_equal(cport_addr_parse(NULL, "127.0.0.1", 80), UV_EINVAL);
  expect_parse_einval(NULL, 80);
  addr_poison(&a);
  assert_int_equal(cport_addr_parse(&a, NULL, 80), UV_EINVAL);
  assert_true(addr_is_poisoned(&a));
}


static void test_addr_parse_rejects_empty_host(void** state) {
  (void)state;
  expect_parse_einval("", 80);
  expect_parse_einval("[]", 80);
  expect_parse_einval("", 0);
}


static void test_addr_parse_rejects_host_names(void** state) {
  (void)state;
  /* Names are cport_addr_resolve()'s job, never looked up by parse. */
  expect_parse_einval("localhost", 80);
  expect_parse_einval("example.com", 80);
  expect_parse_einval("[localhost]", 80);
}


static void test_addr_parse_rejects_malformed_ipv4(void** state) {
  (void)state;
  expect_parse_einval("1.2.3", 80);
  expect_parse_einval("256.1.1.1", 80);
  expect_parse_einval("1.2.3.256", 80);
  expect_parse_einval("1.2.3.4 ", 80);
  expect_parse_einval(" 1.2.3.4", 80);
  expect_parse_einval("1.2.3.4\n", 80);
  expect_parse_einval("1.2.3.4.5", 80);
  expect_parse_einval("1..2.3", 80);
  expect_parse_einval("1.2.3.-4", 80);
  expect_parse_einval("1.2.3.4/24", 80);
  expect_parse_einval("a.b.c.d", 80);
  expect_parse_einval("1.2.3.4:80", 80);
}


static void test_addr_parse_rejects_malformed_ipv6(void** state) {
  (void)state;
  expect_parse_einval(":::", 80);
  expect_parse_einval("1:2:3:4:5:6:7:8:9", 80);
  expect_parse_einval("::g", 80);
  expect_parse_einval("12345::1", 80);
  expect_parse_einval("1::2::3", 80);
  expect_parse_einval("::1 ", 80);
  expect_parse_einval("[::1", 80);
  expect_parse_einval("::1]", 80);
  expect_parse_einval("[[::1]]", 80);
  expect_parse_einval("[::1]x", 80);
  expect_parse_einval("x[::1]", 80);
  expect_parse_einval("[::1]:80", 80);
}


static void test_addr_parse_rejects_bracketed_ipv4_and_bad_scopes(
    void** state) {
  (void)state;
  /* Brackets are for IPv6 only. */
  expect_parse_einval("[1.2.3.4]", 80);
  /* An empty scope, and a scope naming no interface. */
  expect_parse_einval("::1%", 80);
  expect_parse_einval("fe80::1%no-such-interface0", 80);
  expect_hostport_einval("[1.2.3.4]:80");
  expect_hostport_einval("[::1%]:80");
}


static void test_addr_parse_rejects_garbage(void** state) {
  (void)state;
  expect_parse_einval("garbage", 80);
  expect_parse_einval("[", 80);
  expect_parse_einval("]", 80);
  expect_parse_einval("%lo", 80);
  expect_parse_einval("\x01\x02\x03", 80);
  expect_parse_einval("\xff\xfe", 80);
  expect_parse_einval(" ", 80);
}


/* uv_ip6_addr() cuts the part before '%' to 39 characters, so text past a
 * valid address could be dropped silently instead of rejected. */
static void test_addr_parse_rejects_garbage_before_ipv6_scope(void** state) {
  (void)state;
  expect_parse_einval("0000:0000:0000:0000:0000:0000:0000:0001XYZ%1", 80);
}


static void test_addr_parse_rejects_overlong_host(void** state) {
  char host[1024];
  (void)state;
  /* Longer than any numeric host, at the parser's limit and far past it. */
  memset(host, '1', 81);
  host[81] = '\0';
  expect_parse_einval(host, 80);
  memset(host, '1', sizeof(host) - 1);
  host[sizeof(host) - 1] = '\0';
  expect_parse_einval(host, 80);
  /* A valid address followed by a long tail is not a prefix match. */
  memset(host, ' ', sizeof(host) - 1);
  memcpy(host, "127.0.0.1", 9);
  expect_parse_einval(host, 80);
  host[0] = '[';
  memcpy(host + 1, "::1", 3);
  memset(host + 4, '0', sizeof(host) - 6);
  host[sizeof(host) - 2] = ']';
  expect_parse_einval(host, 80);
}


static void test_addr_parse_rejects_port_out_of_range(void** state) {
  (void)state;
  expect_parse_einval("127.0.0.1", -1);
  expect_parse_einval("127.0.0.1", 65536);
  expect_parse_einval("::1", -1);
  expect_parse_einval("::1", 65536);
  expect_parse_einval("127.0.0.1", INT_MIN);
  expect_parse_einval("127.0.0.1", INT_MAX);
}


static void test_addr_parse_failure_leaves_out_unchanged(void** state) {
  cport_addr_t a;
  cport_addr_t before;
  (void)state;
  /* A valid address first, so a stray partial write would show. */
  expect_parse_ok(&a, "10.1.2.3", 1234);
  before = a;
  assert_int_equal(cport_addr_parse(&a, "1.2.3", 80), UV_EINVAL);
  assert_memory_equal(&a, &before, sizeof(a));
  assert_int_equal(cport_addr_parse(&a, "::1", 65536), UV_EINVAL);
  assert_memory_equal(&a, &before, sizeof(a));
  assert_int_equal(cport_addr_parse(&a, "", 80), UV_EINVAL);
  assert_memory_equal(&a, &before, sizeof(a));
  assert_int_equal(cport_addr_parse_hostport(&a, "[::1]:99999"), UV_EINVAL);
  assert_memory_equal(&a, &before, sizeof(a));
  assert_int_equal(cport_addr_parse_hostport(&a, "1.2.3.4:"), UV_EINVAL);
  assert_memory_equal(&a, &before, sizeof(a));
  assert_int_equal(cport_addr_resolve(&a, "", 80), UV_EINVAL);
  assert_memory_equal(&a, &before, sizeof(a));
  assert_int_equal(cport_addr_resolve(&a, "127.0.0.1", 65536), UV_EINVAL);
  assert_memory_equal(&a, &before, sizeof(a));
  assert_int_equal(cport_addr_port(&a), 1234);
}


/* ---- cport_addr_parse_hostport ---- */

static void test_addr_hostport_parses_ipv4(void** state) {
  cport_addr_t a;
  cport_addr_t expected;
  (void)state;
  expect_hostport_ok(&a, "127.0.0.1:7777");
  expect_parse_ok(&expected, "127.0.0.1", 7777);
  assert_memory_equal(&a, &expected, sizeof(a));
  assert_int_equal(cport_addr_family(&a), 4);
  assert_int_equal(cport_addr_port(&a), 7777);
}


static void test_addr_hostport_parses_bracketed_ipv6(void** state) {
  cport_addr_t a;
  cport_addr_t expected;
  (void)state;
  expect_hostport_ok(&a, "[::1]:7777");
  expect_parse_ok(&expected, "::1", 7777);
  assert_memory_equal(&a, &expected, sizeof(a));
  assert_int_equal(cport_addr_family(&a), 6);
  assert_int_equal(cport_addr_port(&a), 7777);
}


static void test_addr_hostport_accepts_port_bounds(void** state) {
  cport_addr_t a;
  (void)state;
  expect_hostport_ok(&a, "127.0.0.1:0");
  assert_int_equal(cport_addr_port(&a), 0);
  expect_hostport_ok(&a, "127.0.0.1:65535");
  assert_int_equal(cport_addr_port(&a), 65535);
  expect_hostport_ok(&a, "[::]:65535");
  assert_int_equal(cport_addr_port(&a), 65535);
  assert_int_equal(cport_addr_family(&a), 6);
}


static void test_addr_hostport_rejects_missing_port(void** state) {
  (void)state;
  expect_hostport_einval("[::1]");
  expect_hostport_einval("[::1]:");
  expect_hostport_einval("1.2.3.4");
  expect_hostport_einval("1.2.3.4:");
}


static void test_addr_hostport_rejects_unbracketed_ipv6(void** state) {
  (void)state;
  expect_hostport_einval("::1:80");
  expect_hostport_einval("::1");
  expect_hostport_einval("fe80::1:443");
  expect_hostport_einval("2001:db8::1:80");
}


static void test_addr_hostport_rejects_bad_port(void** state) {
  (void)state;
  expect_hostport_einval("1.2.3.4:+80");
  expect_hostport_einval("1.2.3.4:-80");
  expect_hostport_einval("1.2.3.4:80x");
  expect_hostport_einval("1.2.3.4: 80");
  expect_hostport_einval("1.2.3.4:80 ");
  expect_hostport_einval("1.2.3.4:0x50");
  expect_hostport_einval("1.2.3.4:99999");
  expect_hostport_einval("1.2.3.4:65536");
  expect_hostport_einval("1.2.3.4:4294967376"); /* 2^32 + 80 */
  expect_hostport_einval("[::1]:80x");
  expect_hostport_einval("[::1]:99999");
  expect_hostport_einval("[::1]:-1");
}


static void test_addr_hostport_rejects_empty_host(void** state) {
  (void)state;
  expect_hostport_einval(":80");
  expect_hostport_einval("[]:80");
  expect_hostport_einval(":");
  expect_hostport_einval("");
}


static void test_addr_hostport_rejects_malformed_host(void** state) {
  (void)state;
  expect_hostport_einval("localhost:80");
  expect_hostport_einval("1.2.3:80");
  expect_hostport_einval("256.1.1.1:80");
  expect_hostport_einval("[::1]x:80");
  expect_hostport_einval("[::1:80");
  expect_hostport_einval("]:80");
  expect_hostport_einval("1.2.3.4]:80");
  expect_hostport_einval("[1.2.3.4:80");
  expect_hostport_einval("[::g]:80");
  expect_hostport_einval("garbage");
}


static void test_addr_hostport_rejects_overlong_text(void** state) {
  char text[512];
  (void)state;
  memset(text, '1', sizeof(text) - 4);
  memcpy(text + sizeof(text) - 4, ":80", 4);
  expect_hostport_einval(text);
  text[0] = '[';
  memset(text + 1, ':', sizeof(text) - 6);
  memcpy(text + sizeof(text) - 5, "]:80", 5);
  expect_hostport_einval(text);
}


static void test_addr_hostport_rejects_null(void** state) {
  cport_addr_t a;
  (void)state;
  assert_int_equal(cport_addr_parse_hostport(NULL, "127.0.0.1:80"), UV_EINVAL);
  addr_poison(&a);
  assert_int_equal(cport_addr_parse_hostport(&a, NULL), UV_EINVAL);
  assert_true(addr_is_poisoned(&a));
}


/* ---- formatting ---- */

static void test_addr_format_roundtrips_ipv4(void** state) {
  cport_addr_t a;
  cport_addr_t b;
  char buf[CPORT_ADDR_STRLEN];
  (void)state;
  expect_parse_ok(&a, "192.168.100.200", 7777);
  assert_int_equal(cport_addr_format(&a, buf, sizeof(buf)), 0);
  assert_string_equal(buf, "192.168.100.200:7777");
  expect_hostport_ok(&b, buf);
  assert_memory_equal(&a, &b, sizeof(a));
  expect_format_host(&b, "192.168.100.200");
}


static void test_addr_format_roundtrips_ipv6(void** state) {
  cport_addr_t a;
  cport_addr_t b;
  char buf[CPORT_ADDR_STRLEN];
  (void)state;
  expect_hostport_ok(&a, "[::1]:7777");
  assert_int_equal(cport_addr_format(&a, buf, sizeof(buf)), 0);
  assert_string_equal(buf, "[::1]:7777");
  expect_hostport_ok(&b, buf);
  assert_memory_equal(&a, &b, sizeof(a));

  /* Formatting yields the canonical compressed form. */
  expect_parse_ok(&a, "2001:0db8:0000:0000:0000:0000:0000:0042", 443);
  expect_format(&a, "[2001:db8::42]:443");
  expect_format_host(&a, "2001:db8::42");
  assert_int_equal(cport_addr_format(&a, buf, sizeof(buf)), 0);
  expect_hostport_ok(&b, buf);
  assert_memory_equal(&a, &b, sizeof(a));
}


static void test_addr_format_reports_enospc_for_small_buffers(void** state) {
  cport_addr_t a;
  char buf[CPORT_ADDR_STRLEN];
  (void)state;
  expect_parse_ok(&a, "127.0.0.1", 7777);
  /* "127.0.0.1:7777" is 14 characters and needs 15 bytes. */
  memset(buf, 'X', sizeof(buf));
  assert_int_equal(cport_addr_format(&a, buf, 14), UV_ENOSPC);
  assert_int_equal(buf[0], '\0');
  memset(buf, 'X', sizeof(buf));
  assert_int_equal(cport_addr_format(&a, buf, 1), UV_ENOSPC);
  assert_int_equal(buf[0], '\0');
  memset(buf, 'X', sizeof(buf));
  assert_int_equal(cport_addr_format(&a, buf, 15), 0);
  assert_string_equal(buf, "127.0.0.1:7777");
  /* With size 0 nothing may be written at all. */
  memset(buf, 'X', sizeof(buf));
  assert_int_equal(cport_addr_format(&a, buf, 0), UV_ENOSPC);
  assert_int_equal(buf[0], 'X');

  /* "127.0.0.1" needs 10 bytes. */
  memset(buf, 'X', sizeof(buf));
  assert_int_equal(cport_addr_format_host(&a, buf, 9), UV_ENOSPC);
  assert_int_equal(buf[0], '\0');
  memset(buf, 'X', sizeof(buf));
  assert_int_equal(cport_addr_format_host(&a, buf, 10), 0);
  assert_string_equal(buf, "127.0.0.1");
  memset(buf, 'X', sizeof(buf));
  assert_int_equal(cport_addr_format_host(&a, buf, 0), UV_ENOSPC);
  assert_int_equal(buf[0], 'X');

  /* "[::1]:7777" needs 11 bytes, "::1" needs 4. */
  expect_parse_ok(&a, "::1", 7777);
  memset(buf, 'X', sizeof(buf));
  assert_int_equal(cport_addr_format(&a, buf, 10), UV_ENOSPC);
  assert_int_equal(buf[0], '\0');
  assert_int_equal(cport_addr_format(&a, buf, 11), 0);
  assert_string_equal(buf, "[::1]:7777");
  memset(buf, 'X', sizeof(buf));
  assert_int_equal(cport_addr_format_host(&a, buf, 3), UV_ENOSPC);
  assert_int_equal(buf[0], '\0');
  assert_int_equal(cport_addr_format_host(&a, buf, 4), 0);
  assert_string_equal(buf, "::1");
}


static void test_addr_format_rejects_null_and_unset(void** state) {
  cport_addr_t unset;
  cport_addr_t a;
  char buf[CPORT_ADDR_STRLEN];
  (void)state;
  memset(&unset, 0, sizeof(unset));
  expect_parse_ok(&a, "127.0.0.1", 80);
  assert_int_equal(cport_addr_format(&unset, buf, sizeof(buf)), UV_EINVAL);
  assert_int_equal(cport_addr_format_host(&unset, buf, sizeof(buf)), UV_EINVAL);
  assert_int_equal(cport_addr_format(NULL, buf, sizeof(buf)), UV_EINVAL);
  assert_int_equal(cport_addr_format_host(NULL, buf, sizeof(buf)), UV_EINVAL);
  assert_int_equal(cport_addr_format(&a, NULL, sizeof(buf)), UV_EINVAL);
  assert_int_equal(cport_addr_format_host(&a, NULL, sizeof(buf)), UV_EINVAL);
}


/* ---- accessors ---- */

static void test_addr_accessors_reject_unset_address(void** state) {
  cport_addr_t unset;
  (void)state;
  memset(&unset, 0, sizeof(unset));
  assert_null(cport_addr_sockaddr(&unset));
  assert_null(cport_addr_sockaddr(NULL));
  assert_int_equal(cport_addr_port(&unset), UV_EINVAL);
  assert_int_equal(cport_addr_port(NULL), UV_EINVAL);
  assert_int_equal(cport_addr_family(&unset), UV_EINVAL);
  assert_int_equal(cport_addr_family(NULL), UV_EINVAL);
}


static void test_addr_sockaddr_points_into_addr(void** state) {
  cport_addr_t a;
  const struct sockaddr_in* sin;
  (void)state;
  expect_parse_ok(&a, "10.20.30.40", 5000);
  sin = (const struct sockaddr_in*)cport_addr_sockaddr(&a);
  assert_ptr_equal(sin, (const void*)&a);
  assert_int_equal(sin->sin_family, AF_INET);
  /* The port is in network byte order, as the socket API expects. */
  assert_int_equal(((const uint8_t*)&sin->sin_port)[0], 5000 >> 8);
  assert_int_equal(((const uint8_t*)&sin->sin_port)[1], 5000 & 0xff);
}


/* ---- cport_addr_from_sockaddr ---- */

static void test_addr_from_sockaddr_copies_ipv4(void** state) {
  struct sockaddr_in sin;
  cport_addr_t a;
  (void)state;
  assert_int_equal(uv_ip4_addr("10.1.2.3", 4242, &sin), 0);
  addr_poison(&a);
  assert_int_equal(cport_addr_from_sockaddr(&a, (struct sockaddr*)&sin), 0);
  assert_int_equal(cport_addr_family(&a), 4);
  assert_int_equal(cport_addr_port(&a), 4242);
  expect_format(&a, "10.1.2.3:4242");
}


static void test_addr_from_sockaddr_copies_ipv6(void** state) {
  struct sockaddr_in6 sin6;
  cport_addr_t a;
  (void)state;
  assert_int_equal(uv_ip6_addr("2001:db8::7", 1, &sin6), 0);
  addr_poison(&a);
  assert_int_equal(cport_addr_from_sockaddr(&a, (struct sockaddr*)&sin6), 0);
  assert_int_equal(cport_addr_family(&a), 6);
  assert_int_equal(cport_addr_port(&a), 1);
  expect_format(&a, "[2001:db8::7]:1");
}


static void test_addr_from_sockaddr_rejects_unsupported_family(void** state) {
  struct sockaddr_storage ss;
  cport_addr_t a;
  (void)state;
  memset(&ss, 0, sizeof(ss));
  ss.ss_family = AF_UNSPEC;
  addr_poison(&a);
  assert_int_equal(cport_addr_from_sockaddr(&a, (struct sockaddr*)&ss),
                   UV_EINVAL);
  assert_true(addr_is_poisoned(&a));
  ss.ss_family = 0x7777; /* no such family */
  assert_int_equal(cport_addr_from_sockaddr(&a, (struct sockaddr*)&ss),
                   UV_EINVAL);
  assert_true(addr_is_poisoned(&a));
  assert_int_equal(cport_addr_from_sockaddr(&a, NULL), UV_EINVAL);
  assert_int_equal(cport_addr_from_sockaddr(NULL, (struct sockaddr*)&ss),
                   UV_EINVAL);
  assert_true(addr_is_poisoned(&a));
}


/* ---- cport_addr_resolve ---- */

static void test_addr_resolve_accepts_numeric_hosts(void** state) {
  cport_addr_t a;
  (void)state;
  assert_int_equal(cport_addr_resolve(&a, "127.0.0.1", 8080), 0);
  expect_format(&a, "127.0.0.1:8080");
  assert_int_equal(cport_addr_resolve(&a, "::1", 8081), 0);
  expect_format(&a, "[::1]:8081");
}


static void test_addr_resolve_finds_localhost(void** state) {
  cport_addr_t a;
  char host[CPORT_ADDR_STRLEN];
  int rc;
  int family;
  (void)state;
  addr_poison(&a);
  /* Answered from the hosts file: no network involved. */
  rc = cport_addr_resolve(&a, "localhost", 80);
  assert_int_equal(rc, 0);
  family = cport_addr_family(&a);
  assert_true(family == 4 || family == 6);
  assert_int_equal(cport_addr_port(&a), 80);
  assert_int_equal(cport_addr_format_host(&a, host, sizeof(host)), 0);
  if (family == 4)
    assert_memory_equal(host, "127.", 4);
  else
    assert_string_equal(host, "::1");
}


static void test_addr_resolve_rejects_bad_arguments(void** state) {
  cport_addr_t a;
  (void)state;
  addr_poison(&a);
  assert_int_equal(cport_addr_resolve(&a, "", 80), UV_EINVAL);
  assert_int_equal(cport_addr_resolve(&a, NULL, 80), UV_EINVAL);
  assert_int_equal(cport_addr_resolve(&a, "127.0.0.1", -1), UV_EINVAL);
  assert_int_equal(cport_addr_resolve(&a, "127.0.0.1", 65536), UV_EINVAL);
  assert_true(addr_is_poisoned(&a));
  assert_int_equal(cport_addr_resolve(NULL, "127.0.0.1", 80), UV_EINVAL);
}


int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_addr_parse_accepts_ipv4_loopback),
      cmocka_unit_test(test_addr_parse_accepts_ipv6_loopback),
      cmocka_unit_test(test_addr_parse_accepts_bracketed_ipv6),
      cmocka_unit_test(test_addr_parse_accepts_explicit_wildcards),
      cmocka_unit_test(test_addr_parse_accepts_port_bounds),
      cmocka_unit_test(test_addr_parse_accepts_ipv6_with_scope),
      cmocka_unit_test(test_addr_parse_accepts_full_length_ipv6),
      cmocka_unit_test(test_addr_parse_rejects_null_arguments),
      cmocka_unit_test(test_addr_parse_rejects_empty_host),
      cmocka_unit_test(test_addr_parse_rejects_host_names),
      cmocka_unit_test(test_addr_parse_rejects_malformed_ipv4),
      cmocka_unit_test(test_addr_parse_rejects_malformed_ipv6),
      cmocka_unit_test(test_addr_parse_rejects_bracketed_ipv4_and_bad_scopes),
      cmocka_unit_test(test_addr_parse_rejects_garbage),
      cmocka_unit_test(test_addr_parse_rejects_garbage_before_ipv6_scope),
      cmocka_unit_test(test_addr_parse_rejects_overlong_host),
      cmocka_unit_test(test_addr_parse_rejects_port_out_of_range),
      cmocka_unit_test(test_addr_parse_failure_leaves_out_unchanged),
      cmocka_unit_test(test_addr_hostport_parses_ipv4),
      cmocka_unit_test(test_addr_hostport_parses_bracketed_ipv6),
      cmocka_unit_test(test_addr_hostport_accepts_port_bounds),
      cmocka_unit_test(test_addr_hostport_rejects_missing_port),
      cmocka_unit_test(test_addr_hostport_rejects_unbracketed_ipv6),
      cmocka_unit_test(test_addr_hostport_rejects_bad_port),
      cmocka_unit_test(test_addr_hostport_rejects_empty_host),
      cmocka_unit_test(test_addr_hostport_rejects_malformed_host),
      cmocka_unit_test(test_addr_hostport_rejects_overlong_text),
      cmocka_unit_test(test_addr_hostport_rejects_null),
      cmocka_unit_test(test_addr_format_roundtrips_ipv4),
      cmocka_unit_test(test_addr_format_roundtrips_ipv6),
      cmocka_unit_test(test_addr_format_reports_enospc_for_small_buffers),
      cmocka_unit_test(test_addr_format_rejects_null_and_unset),
      cmocka_unit_test(test_addr_accessors_reject_unset_address),
      cmocka_unit_test(test_addr_sockaddr_points_into_addr),
      cmocka_unit_test(test_addr_from_sockaddr_copies_ipv4),
      cmocka_unit_test(test_addr_from_sockaddr_copies_ipv6),
      cmocka_unit_test(test_addr_from_sockaddr_rejects_unsupported_family),
      cmocka_unit_test(test_addr_resolve_accepts_numeric_hosts),
      cmocka_unit_test(test_addr_resolve_finds_localhost),
      cmocka_unit_test(test_addr_resolve_rejects_bad_arguments),
  };
  return cmocka_run_group_tests_name("addr", tests, NULL, NULL);
}
