/* cport_addr_t: parsing, formatting, conversion and resolution.
 *
 * Every rejected input is also checked to leave `out` untouched, because the
 * header promises that `out` is written only on success. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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
  const unsigned char* p = (const unsigned char*)a;
  size_t i;
  for (i = 0; i < sizeof(*a); i++) {
    if (p[i] != ADDR_POISON)
      return 0;
  }
  return 1;
}


/* The reference for host name syntax, written apart from addr.c's: RFC
 * 1123 labels (1..63 of [A-Za-z0-9-], no hyphen at either end), at most
 * 253 characters with an optional trailing dot, the last label not all
 * digits. */
static int ref_name_ok(const char* text) {
  char copy[300];
  size_t len = strlen(text);
  char* label;
  char* dot;
  int last_numeric = 1;
  if (len == 0 || len > 253 || strcmp(text, ".") == 0)
    return 0;
  memcpy(copy, text, len + 1);
  if (copy[len - 1] == '.')
    copy[len - 1] = '\0';
  for (label = copy;; label = dot + 1) {
    size_t n;
    size_t i;
    dot = strchr(label, '.');
    n = dot != NULL ? (size_t)(dot - label) : strlen(label);
    if (n == 0 || n > 63 || label[0] == '-' || label[n - 1] == '-')
      return 0;
    last_numeric = 1;
    for (i = 0; i < n; i++) {
      if (strchr("abcdefghijklmnopqrstuvwxyz"
                 "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-",
                 label[i]) == NULL)
        return 0;
      if (label[i] < '0' || label[i] > '9')
        last_numeric = 0;
    }
    if (dot == NULL)
      break;
  }
  return !last_numeric;
}


/* `a` holds host name `name` and `port`, as every accessor reports it. */
static void expect_name_is(const cport_addr_t* a, const char* name, int port) {
  char text[CPORT_ADDR_STRLEN];
  char want[CPORT_ADDR_STRLEN];
  assert_int_equal(cport_addr_is_name(a), 1);
  assert_non_null(cport_addr_host(a));
  assert_string_equal(cport_addr_host(a), name);
  assert_int_equal(cport_addr_port(a), port);
  assert_int_equal(cport_addr_family(a), 0);
  assert_null(cport_addr_sockaddr(a));
  assert_int_equal(cport_addr_format_host(a, text, sizeof(text)), 0);
  assert_string_equal(text, name);
  snprintf(want, sizeof(want), "%s:%d", name, port);
  assert_int_equal(cport_addr_format(a, text, sizeof(text)), 0);
  assert_string_equal(text, want);
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


/* ---- host names ---- */

static void test_addr_parse_keeps_host_names(void** state) {
  static const char* const names[] = {"localhost",
                                      "example.com",
                                      "a.b.c.d",
                                      "garbage",
                                      "db-1.internal",
                                      "LOCALHOST",
                                      "localhost.",
                                      "x",
                                      "1a",
                                      "123.example",
                                      "xn--bcher-kva.ch",
                                      "nosuchhost.invalid",
                                      "0x7f"};
  cport_addr_t a;
  cport_addr_t copy;
  size_t i;
  (void)state;
  for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
    addr_poison(&a);
    expect_parse_ok(&a, names[i], 7000);
    expect_name_is(&a, names[i], 7000);
    /* A plain value: a copy is as good as the original. */
    copy = a;
    expect_name_is(&copy, names[i], 7000);
  }
  expect_parse_ok(&a, "localhost", 0);
  expect_name_is(&a, "localhost", 0);
  expect_parse_ok(&a, "localhost", 65535);
  expect_name_is(&a, "localhost", 65535);
  expect_hostport_ok(&a, "localhost:7000");
  expect_name_is(&a, "localhost", 7000);
  expect_hostport_ok(&a, "db-1.example.com:0");
  expect_name_is(&a, "db-1.example.com", 0);
}


static void test_addr_parse_rejects_bad_host_names(void** state) {
  char host[300];
  (void)state;
  expect_parse_einval("[localhost]", 80);
  expect_hostport_einval("[localhost]:80");
  expect_parse_einval("local host", 80);
  expect_parse_einval("localhost ", 80);
  expect_parse_einval(" localhost", 80);
  expect_parse_einval("local\thost", 80);
  expect_parse_einval("localhost\n", 80);
  expect_parse_einval("local\x01host", 80);
  expect_parse_einval("local\x7fhost", 80);
  expect_parse_einval("caf\xc3\xa9.example", 80); /* not punycode */
  expect_parse_einval("under_score.example", 80);
  expect_parse_einval("-lead.example", 80);
  expect_parse_einval("trail-.example", 80);
  expect_parse_einval("a..b", 80);
  expect_parse_einval(".a", 80);
  expect_parse_einval(".", 80);
  expect_parse_einval("a.b..", 80);
  expect_parse_einval("host/path", 80);
  expect_parse_einval("user@host", 80);
  expect_parse_einval("localhost", -1);
  expect_parse_einval("localhost", 65536);
  expect_hostport_einval("localhost");
  expect_hostport_einval("localhost:");
  expect_hostport_einval("localhost:http");
  expect_hostport_einval(":80");
  /* A last label of digits only reads as a bad IPv4 address. */
  expect_parse_einval("example.123", 80);
  expect_parse_einval("1.2.3.256", 80);
  /* Labels of 63 characters pass, 64 do not. */
  memset(host, 'a', 63);
  host[63] = '\0';
  expect_parse_ok(&(cport_addr_t){0}, host, 80);
  memset(host, 'a', 64);
  host[64] = '\0';
  expect_parse_einval(host, 80);
  memcpy(host + 64, ".com", 5);
  expect_parse_einval(host, 80);
}


/* 253 characters in all at most, a trailing dot included. */
static void test_addr_parse_host_name_length_limit(void** state) {
  char host[300];
  char text[310];
  cport_addr_t a;
  size_t i;
  (void)state;
  /* "aaa...a.aaa...a." : labels of 49 and a separator, 250 characters,
   * then up to the limit and one past it. */
  for (i = 0; i < 250; i++) host[i] = (i % 50 == 49) ? '.' : 'a';
  memcpy(host + 250, "bcd", 4); /* 253 */
  expect_parse_ok(&a, host, 80);
  expect_name_is(&a, host, 80);
  snprintf(text, sizeof(text), "%s:65535", host);
  expect_hostport_ok(&a, text);
  expect_name_is(&a, host, 65535);
  /* The longest text fits CPORT_ADDR_STRLEN, and a byte less does not. */
  assert_int_equal(cport_addr_format(&a, text, strlen(host) + 7), 0);
  assert_int_equal(cport_addr_format(&a, text, strlen(host) + 6), UV_ENOSPC);
  assert_string_equal(text, "");
  assert_true(strlen(host) + 7 <= CPORT_ADDR_STRLEN);
  host[253] = '.'; /* 254 with the trailing dot */
  host[254] = '\0';
  expect_parse_einval(host, 80);
  host[253] = 'e';
  expect_parse_einval(host, 80);
  memset(host, 'a', 299);
  host[299] = '\0';
  expect_parse_einval(host, 80);
}


/* A numeric host is never taken for a name, and a name never leaves a
 * socket address behind. */
static void test_addr_parse_name_and_number_do_not_mix(void** state) {
  cport_addr_t a;
  (void)state;
  expect_parse_ok(&a, "localhost", 80);
  expect_parse_ok(&a, "127.0.0.1", 81);
  assert_int_equal(cport_addr_is_name(&a), 0);
  assert_null(cport_addr_host(&a));
  assert_int_equal(cport_addr_family(&a), 4);
  assert_int_equal(cport_addr_port(&a), 81);
  expect_parse_ok(&a, "::1", 82);
  assert_int_equal(cport_addr_is_name(&a), 0);
  assert_null(cport_addr_host(&a));
  memset(&a, 0, sizeof(a));
  assert_int_equal(cport_addr_is_name(&a), 0);
  assert_null(cport_addr_host(&a));
  assert_int_equal(cport_addr_is_name(NULL), 0);
  assert_null(cport_addr_host(NULL));
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
  /* Longer than any numeric host (45 characters), a little and far. */
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
  expect_hostport_einval("1.2.3:80");
  expect_hostport_einval("256.1.1.1:80");
  expect_hostport_einval("[::1]x:80");
  expect_hostport_einval("[::1:80");
  expect_hostport_einval("]:80");
  expect_hostport_einval("1.2.3.4]:80");
  expect_hostport_einval("[1.2.3.4:80");
  expect_hostport_einval("[::g]:80");
  expect_hostport_einval("garb age");
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
  /* The loop is in network byte order, as the socket API expects. */
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

/* ---- exactness: a host is read whole, or refused ---- */

/* Where the loopback interface has a well-known name (Linux), scopes are
 * also written by name; elsewhere only numeric scopes are used. */
#if defined(__linux__)
#define ADDR_LOOPBACK_IF "lo"
#endif

/* Deterministic, so a failure names a text that can be replayed. */
static uint32_t addr_rand_state = 0x2545f491u;


static uint32_t addr_rand(void) {
  uint32_t x = addr_rand_state;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  addr_rand_state = x;
  return x;
}


static const char* addr_bytes_text(int family,
                                   const unsigned char* bytes,
                                   char* buf,
                                   size_t size) {
  if (uv_inet_ntop(family, bytes, buf, size) != 0)
    snprintf(buf, size, "(unprintable)");
  return buf;
}


#ifdef ADDR_LOOPBACK_IF
/* The index libuv itself gives the name (if_nametoindex). */
static uint32_t addr_loopback_scope(void) {
  struct sockaddr_in6 ref;
  assert_int_equal(uv_ip6_addr("::1%" ADDR_LOOPBACK_IF, 0, &ref), 0);
  assert_int_not_equal(ref.sin6_scope_id, 0);
  return ref.sin6_scope_id;
}
#endif


/* `a` holds exactly `bytes` (4 for IPv4, 16 for IPv6), `loop` and, for
 * IPv6, `scope_id`. `what` names the call for the failure message. */
static void expect_addr_is(const cport_addr_t* a,
                           int family,
                           const unsigned char* bytes,
                           int port,
                           uint32_t scope_id,
                           const char* what) {
  char got[64];
  char want[64];
  const struct sockaddr* sa = cport_addr_sockaddr(a);
  const unsigned char* have;
  if (sa == NULL || sa->sa_family != family)
    fail_msg("%s: wrong address family", what);
  if (family == AF_INET)
    have = (const unsigned char*)&((const struct sockaddr_in*)sa)->sin_addr;
  else
    have = (const unsigned char*)&((const struct sockaddr_in6*)sa)->sin6_addr;
  if (memcmp(have, bytes, family == AF_INET ? 4 : 16) != 0)
    fail_msg("%s: parsed as %s, expected %s", what,
             addr_bytes_text(family, have, got, sizeof(got)),
             addr_bytes_text(family, bytes, want, sizeof(want)));
  if (cport_addr_port(a) != port)
    fail_msg("%s: port %d, expected %d", what, cport_addr_port(a), port);
  if (family == AF_INET6 &&
      ((const struct sockaddr_in6*)sa)->sin6_scope_id != scope_id)
    fail_msg("%s: scope %lu, expected %lu", what,
             (unsigned long)((const struct sockaddr_in6*)sa)->sin6_scope_id,
             (unsigned long)scope_id);
}


/* `host` (an IPv6 literal, perhaps with a scope) parses to exactly `bytes`
 * and `scope_id`, bare, bracketed and as "[host]:port"; formatting the
 * result and parsing it back gives the same address (without the scope,
 * which formatting leaves out). */
static void expect_ip6_exact(const char* host,
                             const unsigned char* bytes,
                             uint32_t scope_id) {
  char text[256];
  char what[300];
  char formatted[CPORT_ADDR_STRLEN];
  cport_addr_t a;
  cport_addr_t b;
  int rc;
  addr_poison(&a);
  rc = cport_addr_parse(&a, host, 4321);
  if (rc != 0)
    fail_msg("cport_addr_parse(\"%s\") returned %d (%s), expected 0", host, rc,
             cport_err_name(rc));
  snprintf(what, sizeof(what), "cport_addr_parse(\"%s\")", host);
  expect_addr_is(&a, AF_INET6, bytes, 4321, scope_id, what);

  snprintf(text, sizeof(text), "[%s]", host);
  addr_poison(&b);
  expect_parse_ok(&b, text, 4321);
  assert_memory_equal(&a, &b, sizeof(a));
  snprintf(text, sizeof(text), "[%s]:4321", host);
  addr_poison(&b);
  expect_hostport_ok(&b, text);
  assert_memory_equal(&a, &b, sizeof(a));

  assert_int_equal(cport_addr_format(&a, formatted, sizeof(formatted)), 0);
  addr_poison(&b);
  expect_hostport_ok(&b, formatted);
  snprintf(what, sizeof(what), "\"%s\" formatted as \"%s\", read back", host,
           formatted);
  expect_addr_is(&b, AF_INET6, bytes, 4321, 0, what);
}


/* The reference reads `host` with uv_inet_pton on the NUL-terminated text,
 * which sees every character. With `scope` (valid, naming `scope_id`)
 * appended, cport must give exactly the reference's address in every form
 * (bare, bracketed, host:port), or refuse it when the reference does. */
static void expect_exact_or_refused(const char* host,
                                    const char* scope,
                                    uint32_t scope_id) {
  char text[512];
  char what[600];
  unsigned char ref[16];
  cport_addr_t a;
  cport_addr_t b;
  int v6 = strchr(host, ':') != NULL;
  int family = v6 ? AF_INET6 : AF_INET;
  /* A scope belongs to IPv6 only. */
  int ref_ok = uv_inet_pton(family, host, ref) == 0 && (v6 || *scope == '\0');
  int rc;

  snprintf(text, sizeof(text), "%s%s", host, scope);
  addr_poison(&a);
  rc = cport_addr_parse(&a, text, 80);
  if (!ref_ok && ref_name_ok(text)) {
    /* Not an address, but a host name ("255.255.255.25a"). */
    if (rc != 0)
      fail_msg("cport_addr_parse(\"%s\") returned %d, expected a name", text,
               rc);
    expect_name_is(&a, text, 80);
    return;
  }
  if (!ref_ok) {
    if (rc != UV_EINVAL || !addr_is_poisoned(&a))
      fail_msg("cport_addr_parse(\"%s\") returned %d (%s), expected EINVAL",
               text, rc, cport_err_name(rc));
  } else {
    if (rc != 0)
      fail_msg("cport_addr_parse(\"%s\") returned %d (%s), expected 0", text,
               rc, cport_err_name(rc));
    snprintf(what, sizeof(what), "cport_addr_parse(\"%s\")", text);
    expect_addr_is(&a, family, ref, 80, scope_id, what);
  }

  snprintf(text, sizeof(text), "[%s%s]", host, scope);
  addr_poison(&b);
  rc = cport_addr_parse(&b, text, 80);
  if (ref_ok && v6) {
    if (rc != 0)
      fail_msg("cport_addr_parse(\"%s\") returned %d, expected 0", text, rc);
    assert_memory_equal(&a, &b, sizeof(a));
  } else if (rc != UV_EINVAL || !addr_is_poisoned(&b)) {
    fail_msg("cport_addr_parse(\"%s\") returned %d, expected EINVAL", text, rc);
  }

  snprintf(text, sizeof(text), v6 ? "[%s%s]:80" : "%s%s:80", host, scope);
  addr_poison(&b);
  rc = cport_addr_parse_hostport(&b, text);
  if (ref_ok) {
    if (rc != 0)
      fail_msg("cport_addr_parse_hostport(\"%s\") returned %d, expected 0",
               text, rc);
    assert_memory_equal(&a, &b, sizeof(a));
  } else if (rc != UV_EINVAL || !addr_is_poisoned(&b)) {
    fail_msg("cport_addr_parse_hostport(\"%s\") returned %d, expected EINVAL",
             text, rc);
  }
}


/* uv_ip6_addr() keeps only 39 characters before '%': the first host lost
 * the last digit of its IPv4 part, the second (45 characters, valid) was
 * refused. */
static void test_addr_parse_reads_whole_ipv6_before_scope(void** state) {
  static const unsigned char mapped_11[16] = {0, 0, 0,    0,    0,  0, 0, 0,
                                              0, 0, 0xff, 0xff, 11, 2, 3, 255};
  static const unsigned char mapped_127[16] = {
      0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 100, 100, 100};
  (void)state;
  expect_ip6_exact("0000:0000:0000:0000:0000:ffff:11.2.3.255%1", mapped_11, 1);
  expect_ip6_exact("0000:0000:0000:0000:0000:ffff:127.100.100.100%1",
                   mapped_127, 1);
  expect_ip6_exact("0000:0000:0000:0000:0000:ffff:127.100.100.100%4294967295",
                   mapped_127, UINT32_MAX);
  expect_ip6_exact("0000:0000:0000:0000:0000:ffff:127.100.100.100", mapped_127,
                   0);
#ifdef ADDR_LOOPBACK_IF
  expect_ip6_exact("0000:0000:0000:0000:0000:ffff:11.2.3.255%lo", mapped_11,
                   addr_loopback_scope());
  expect_ip6_exact("0000:0000:0000:0000:0000:ffff:127.100.100.100%lo",
                   mapped_127, addr_loopback_scope());
#endif
  /* One character more than the longest IPv6 text: nothing valid is that
   * long, so it is refused, not read in part. */
  expect_parse_einval("0000:0000:0000:0000:0000:ffff:127.100.100.1000%1", 80);
  expect_parse_einval("00000:0000:0000:0000:0000:ffff:127.100.100.100%1", 80);
  expect_hostport_einval(
      "[0000:0000:0000:0000:0000:ffff:127.100.100.1000%1]:80");
}


/* A numeric scope is the whole decimal number or an error: not a prefix
 * (atoi), and not a value clamped to the range of `unsigned long`, which
 * is 32 bits on Windows. */
static void test_addr_parse_reads_whole_scope(void** state) {
  static const unsigned char fe80_1[16] = {0xfe, 0x80, 0, 0, 0, 0, 0, 0,
                                           0,    0,    0, 0, 0, 0, 0, 1};
  (void)state;
  expect_ip6_exact("fe80::1%0", fe80_1, 0);
  expect_ip6_exact("fe80::1%7", fe80_1, 7);
  expect_ip6_exact("fe80::1%4294967295", fe80_1, UINT32_MAX);
  expect_ip6_exact("fe80::1%0004294967295", fe80_1, UINT32_MAX);
  expect_ip6_exact("fe80::1%00000000001", fe80_1, 1);
  expect_parse_einval("fe80::1%4294967296", 80);
  expect_parse_einval("fe80::1%9999999999", 80);
  expect_parse_einval("fe80::1%18446744073709551617", 80); /* 2^64 + 1 */
  expect_parse_einval("fe80::1%1abc", 80);
  expect_parse_einval("fe80::1%1 ", 80);
  expect_parse_einval("fe80::1% 1", 80);
  expect_parse_einval("fe80::1%+1", 80);
  expect_parse_einval("fe80::1%-1", 80);
  expect_parse_einval("fe80::1%0x1", 80);
  expect_parse_einval("fe80::1%1%1", 80);
  expect_parse_einval("fe80::1%%1", 80);
  expect_hostport_einval("[fe80::1%4294967296]:80");
  expect_hostport_einval("[fe80::1%1abc]:80");
  /* A scope is for IPv6 only. */
  expect_parse_einval("127.0.0.1%1", 80);
  expect_hostport_einval("127.0.0.1%1:80");
#ifdef ADDR_LOOPBACK_IF
  expect_ip6_exact("fe80::1%" ADDR_LOOPBACK_IF, fe80_1, addr_loopback_scope());
  expect_parse_einval("fe80::1%" ADDR_LOOPBACK_IF "x", 80);
  expect_parse_einval("fe80::1%" ADDR_LOOPBACK_IF " ", 80);
#endif
}


/* Writes one valid spelling of the address `b` into `out`: each group
 * with 1 to 4 hex digits (leading zeros as `pad` says: 0 fewest, 1 all
 * four, 2 at random), "::" for a random run of zero groups if `compress`,
 * the last 32 bits as a dotted quad if `quad`, upper-case hex if `upper`. */
static void addr_spell_ip6(const unsigned char* b,
                           int quad,
                           int pad,
                           int compress,
                           int upper,
                           char* out,
                           size_t size) {
  int groups = quad ? 6 : 8;
  int cs = -1; /* "::" replaces groups [cs, ce) */
  int ce = -1;
  int i;
  size_t n = 0;
  if (compress) {
    int start = (int)(addr_rand() % (uint32_t)groups);
    for (i = 0; i < groups; i++) {
      int g = (start + i) % groups;
      if (b[2 * g] == 0 && b[2 * g + 1] == 0) {
        cs = g;
        break;
      }
    }
    if (cs >= 0) {
      ce = cs + 1;
      while (ce < groups && b[2 * ce] == 0 && b[2 * ce + 1] == 0 &&
             addr_rand() % 4 != 0)
        ce++;
    }
  }
  for (i = 0; i < groups;) {
    unsigned value = (unsigned)(b[2 * i] << 8 | b[2 * i + 1]);
    int width = value > 0xfff ? 4 : value > 0xff ? 3 : value > 0xf ? 2 : 1;
    if (i == cs) {
      n += (size_t)snprintf(out + n, size - n, "::");
      i = ce;
      continue;
    }
    if (pad == 1)
      width = 4;
    else if (pad == 2)
      width += (int)(addr_rand() % (uint32_t)(5 - width));
    n += (size_t)snprintf(out + n, size - n,
                          i > 0 && i != ce ? (upper ? ":%0*X" : ":%0*x")
                                           : (upper ? "%0*X" : "%0*x"),
                          width, value);
    i++;
  }
  if (quad)
    snprintf(out + n, size - n, "%s%u.%u.%u.%u", ce == groups ? "" : ":", b[12],
             b[13], b[14], b[15]);
}


/* Many valid spellings of many addresses (leading zeros, all eight groups,
 * "::", embedded IPv4 with 1- to 3-digit parts, upper case), each with and
 * without a scope: each parses to the bytes it spells. */
static void test_addr_parse_ipv6_spellings_sweep(void** state) {
  static const unsigned char fixed[][16] = {
      {0},
      {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
       0xff, 0xff, 0xff, 0xff},
      {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1},
      {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 11, 2, 3, 255},
      {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 100, 100, 100},
      {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4},
      {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 9, 10, 99, 100},
      {0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1},
      {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x42},
      {0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x0f, 0xed, 0xcb, 0xa9,
       0x87, 0x65, 0x43, 0x21},
  };
  const char* scopes[] = {"", "%0", "%1", "%4294967295", NULL};
  uint32_t scope_ids[] = {0, 0, 1, UINT32_MAX, 0};
  size_t nscopes = 4;
  unsigned char b[16];
  char host[64];
  char text[96];
  unsigned char ref[16];
  size_t v;
  size_t s;
  int form;
  int i;
  (void)state;
#ifdef ADDR_LOOPBACK_IF
  scopes[nscopes] = "%" ADDR_LOOPBACK_IF;
  scope_ids[nscopes] = addr_loopback_scope();
  nscopes++;
#endif
  for (v = 0; v < 400; v++) {
    if (v < sizeof(fixed) / sizeof(fixed[0])) {
      memcpy(b, fixed[v], sizeof(b));
    } else {
      for (i = 0; i < 16; i += 2) {
        /* Zero groups often, so that "::" has runs to replace. */
        uint32_t r = addr_rand();
        b[i] = r % 3 == 0 ? 0 : (unsigned char)(r >> 8);
        b[i + 1] = r % 3 == 0 ? 0 : (unsigned char)(r >> 16);
        /* Small values, so that groups and IPv4 parts have few digits. */
        if (r % 5 == 1)
          b[i] = 0;
        if (r % 7 == 1)
          b[i + 1] = (unsigned char)(r >> 24) % 10;
      }
    }
    for (form = 0; form < 24; form++) {
      addr_spell_ip6(b, form & 1, (form >> 1) % 3, form / 6 % 2, form / 12,
                     host, sizeof(host));
      /* The generator itself is checked against the reference. */
      if (uv_inet_pton(AF_INET6, host, ref) != 0 ||
          memcmp(ref, b, sizeof(b)) != 0)
        fail_msg("test generator wrote \"%s\", which is not the address", host);
      for (s = 0; s < nscopes; s++) {
        snprintf(text, sizeof(text), "%s%s", host, scopes[s]);
        expect_ip6_exact(text, b, scope_ids[s]);
      }
    }
  }
}


/* Every prefix and every one-character extension of long spellings, so
 * the lengths around libuv's limits (39 characters kept by uv_ip6_addr
 * before '%', 45 in the longest IPv6 text, 46 in INET6_ADDRSTRLEN) are all
 * visited, as well as long tails: each reads exactly or is refused. */
static void test_addr_parse_lengths_near_limits_are_exact_or_refused(
    void** state) {
  static const char* const bases[] = {
      "0000:0000:0000:0000:0000:ffff:127.100.100.100",
      "0000:0000:0000:0000:0000:ffff:11.2.3.255",
      "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
      "0000:0000:0000:0000:0000:0000:0000:0001",
      "1234:5678:9abc:def0:1234:5678:9abc:def0",
      "::ffff:1.2.3.4",
      "255.255.255.255",
      "10.200.3.40",
  };
  static const char extra[] = "0123456789abcdefABCDEF:.gx ";
  const char* scopes[] = {"", "%1", "%4294967295", NULL};
  uint32_t scope_ids[] = {0, 1, UINT32_MAX, 0};
  size_t nscopes = 3;
  char host[256];
  size_t bi;
  size_t len;
  size_t e;
  size_t s;
  (void)state;
#ifdef ADDR_LOOPBACK_IF
  scopes[nscopes] = "%" ADDR_LOOPBACK_IF;
  scope_ids[nscopes] = addr_loopback_scope();
  nscopes++;
#endif
  for (bi = 0; bi < sizeof(bases) / sizeof(bases[0]); bi++) {
    size_t blen = strlen(bases[bi]);
    for (len = 0; len <= blen; len++) {
      memcpy(host, bases[bi], len);
      host[len] = '\0';
      for (s = 0; s < nscopes; s++)
        expect_exact_or_refused(host, scopes[s], scope_ids[s]);
      for (e = 0; e + 1 < sizeof(extra); e++) {
        host[len] = extra[e];
        host[len + 1] = '\0';
        for (s = 0; s < nscopes; s++)
          expect_exact_or_refused(host, scopes[s], scope_ids[s]);
      }
    }
    /* Long tails of digits: past every buffer a parser might cut at. */
    memcpy(host, bases[bi], blen);
    for (len = blen + 1; len < 200; len++) {
      host[len - 1] = '0';
      host[len] = '\0';
      for (s = 0; s < nscopes; s++)
        expect_exact_or_refused(host, scopes[s], scope_ids[s]);
    }
  }
}


/* A loop is its whole decimal text, leading zeros allowed, or an error. */
static void test_addr_hostport_port_is_exact_or_refused(void** state) {
  static const char* const ports[] = {"0",
                                      "1",
                                      "80",
                                      "65535",
                                      "65536",
                                      "99999",
                                      "70000",
                                      "65545",
                                      "65635",
                                      "4294967376",
                                      "18446744073709551696"};
  char text[128];
  cport_addr_t a;
  size_t p;
  int zeros;
  (void)state;
  for (p = 0; p < sizeof(ports) / sizeof(ports[0]); p++) {
    unsigned long long value = strtoull(ports[p], NULL, 10);
    int ok = strlen(ports[p]) <= 5 && value <= 65535;
    for (zeros = 0; zeros < 30; zeros++) {
      int form;
      for (form = 0; form < 2; form++) {
        int n =
            snprintf(text, sizeof(text), "%s:", form ? "[::1]" : "127.0.0.1");
        memset(text + n, '0', (size_t)zeros);
        snprintf(text + n + zeros, sizeof(text) - (size_t)(n + zeros), "%s",
                 ports[p]);
        if (ok) {
          expect_hostport_ok(&a, text);
          assert_int_equal(cport_addr_port(&a), (int)value);
        } else {
          expect_hostport_einval(text);
        }
      }
    }
  }
}


/* ---- local endpoints ---- */

/* Parse `text` with parse_hostport, format it back, and compare. */
static void local_round_trip(const char* text,
                             cport_addr_kind_t kind,
                             const char* path) {
  cport_addr_t a;
  char out[CPORT_ADDR_STRLEN];
  addr_poison(&a);
  assert_int_equal(cport_addr_parse_hostport(&a, text), 0);
  assert_int_equal(cport_addr_kind(&a), kind);
  assert_string_equal(cport_addr_path(&a), path);
  assert_null(cport_addr_sockaddr(&a));
  assert_null(cport_addr_host(&a));
  assert_false(cport_addr_is_name(&a));
  assert_int_equal(cport_addr_port(&a), 0);
  assert_int_equal(cport_addr_family(&a), 0);
  assert_int_equal(cport_addr_format(&a, out, sizeof(out)), 0);
  assert_string_equal(out, text);
  assert_int_equal(cport_addr_format_host(&a, out, sizeof(out)), 0);
  assert_string_equal(out, path);
  /* Too small a buffer: refused, empty. */
  assert_int_equal(cport_addr_format(&a, out, strlen(text)), UV_ENOSPC);
  assert_string_equal(out, "");
}


static void test_addr_local_endpoints_parse_and_format(void** state) {
  cport_addr_t a;
  (void)state;
#ifdef _WIN32
  local_round_trip("pipe:\\\\.\\pipe\\app", CPORT_ADDR_PIPE,
                   "\\\\.\\pipe\\app");
  assert_int_equal(cport_addr_parse_hostport(&a, "unix:/tmp/x"), UV_ENOTSUP);
  assert_int_equal(cport_addr_parse_local(&a, "app"), UV_EINVAL);
  assert_int_equal(cport_addr_parse_local(&a, "\\\\.\\pipe\\"),
                   UV_EINVAL);
  assert_int_equal(cport_addr_unix_path_max(), 0);
#else
  local_round_trip("unix:/run/app.sock", CPORT_ADDR_UNIX, "/run/app.sock");
  local_round_trip("unix:rel/app.sock", CPORT_ADDR_UNIX, "rel/app.sock");
  local_round_trip("unix:./@at", CPORT_ADDR_UNIX, "./@at");
  assert_int_equal(cport_addr_parse_hostport(&a, "pipe:\\\\.\\pipe\\x"),
                   UV_ENOTSUP);
#if defined(__linux__)
  local_round_trip("unix:@app", CPORT_ADDR_UNIX, "@app");
  assert_int_equal(cport_addr_parse_local(&a, "@"), UV_EINVAL);
#else
  assert_int_equal(cport_addr_parse_local(&a, "@app"), UV_ENOTSUP);
#endif
#endif
  /* Refusals leave `out` untouched. */
  addr_poison(&a);
  assert_int_equal(cport_addr_parse_local(&a, ""), UV_EINVAL);
  assert_int_equal(cport_addr_parse_local(&a, NULL), UV_EINVAL);
  assert_int_equal(cport_addr_parse_local(NULL, "/x"), UV_EINVAL);
#ifdef _WIN32
  assert_int_equal(cport_addr_parse_hostport(&a, "pipe:"), UV_EINVAL);
#else
  assert_int_equal(cport_addr_parse_hostport(&a, "unix:"), UV_EINVAL);
#endif
  assert_true(addr_is_poisoned(&a));
  /* Other kinds say what they are; NULL and unset are NONE. */
  assert_int_equal(cport_addr_parse(&a, "127.0.0.1", 1), 0);
  assert_int_equal(cport_addr_kind(&a), CPORT_ADDR_INET);
  assert_null(cport_addr_path(&a));
  assert_int_equal(cport_addr_parse(&a, "localhost", 1), 0);
  assert_int_equal(cport_addr_kind(&a), CPORT_ADDR_NAME);
  assert_null(cport_addr_path(&a));
  memset(&a, 0, sizeof(a));
  assert_int_equal(cport_addr_kind(&a), CPORT_ADDR_NONE);
  assert_int_equal(cport_addr_kind(NULL), CPORT_ADDR_NONE);
  assert_null(cport_addr_path(NULL));
}


/* The longest path is kept whole; one byte more is refused with
 * UV_ENAMETOOLONG, never cut short. */
static void test_addr_local_path_length_is_exact(void** state) {
  char path[CPORT_ADDR_NAME_MAX + 8];
  cport_addr_t a;
  size_t max;
  (void)state;
#ifdef _WIN32
  max = CPORT_ADDR_NAME_MAX;
  memset(path, 'p', sizeof(path));
  memcpy(path, "\\\\.\\pipe\\", 9);
#else
  max = cport_addr_unix_path_max();
#if defined(__linux__)
  assert_int_equal(max, 107);
#elif defined(__APPLE__)
  assert_int_equal(max, 103);
#endif
  memset(path, 'p', sizeof(path));
  path[0] = '/';
#endif
  path[max] = '\0';
  assert_int_equal(cport_addr_parse_local(&a, path), 0);
  assert_int_equal(strlen(cport_addr_path(&a)), max);
  path[max] = 'p';
  path[max + 1] = '\0';
  addr_poison(&a);
  assert_int_equal(cport_addr_parse_local(&a, path), UV_ENAMETOOLONG);
  assert_true(addr_is_poisoned(&a));
#if defined(__linux__)
  /* An abstract name has no NUL: its '@' takes the NUL's byte. */
  path[0] = '@';
  path[max + 1] = '\0';
  assert_int_equal(cport_addr_parse_local(&a, path), 0);
  path[max + 1] = 'p';
  path[max + 2] = '\0';
  assert_int_equal(cport_addr_parse_local(&a, path), UV_ENAMETOOLONG);
#endif
}


int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_addr_parse_accepts_ipv4_loopback),
      cmocka_unit_test(test_addr_local_endpoints_parse_and_format),
      cmocka_unit_test(test_addr_local_path_length_is_exact),
      cmocka_unit_test(test_addr_parse_accepts_ipv6_loopback),
      cmocka_unit_test(test_addr_parse_accepts_bracketed_ipv6),
      cmocka_unit_test(test_addr_parse_accepts_explicit_wildcards),
      cmocka_unit_test(test_addr_parse_accepts_port_bounds),
      cmocka_unit_test(test_addr_parse_accepts_ipv6_with_scope),
      cmocka_unit_test(test_addr_parse_accepts_full_length_ipv6),
      cmocka_unit_test(test_addr_parse_rejects_null_arguments),
      cmocka_unit_test(test_addr_parse_rejects_empty_host),
      cmocka_unit_test(test_addr_parse_keeps_host_names),
      cmocka_unit_test(test_addr_parse_rejects_bad_host_names),
      cmocka_unit_test(test_addr_parse_host_name_length_limit),
      cmocka_unit_test(test_addr_parse_name_and_number_do_not_mix),
      cmocka_unit_test(test_addr_parse_rejects_malformed_ipv4),
      cmocka_unit_test(test_addr_parse_rejects_malformed_ipv6),
      cmocka_unit_test(test_addr_parse_rejects_bracketed_ipv4_and_bad_scopes),
      cmocka_unit_test(test_addr_parse_rejects_garbage),
      cmocka_unit_test(test_addr_parse_rejects_garbage_before_ipv6_scope),
      cmocka_unit_test(test_addr_parse_rejects_overlong_host),
      cmocka_unit_test(test_addr_parse_rejects_port_out_of_range),
      cmocka_unit_test(test_addr_parse_failure_leaves_out_unchanged),
      cmocka_unit_test(test_addr_parse_reads_whole_ipv6_before_scope),
      cmocka_unit_test(test_addr_parse_reads_whole_scope),
      cmocka_unit_test(test_addr_parse_ipv6_spellings_sweep),
      cmocka_unit_test(
          test_addr_parse_lengths_near_limits_are_exact_or_refused),
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
      cmocka_unit_test(test_addr_hostport_port_is_exact_or_refused),
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
