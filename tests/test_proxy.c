/* The PROXY protocol module: v1 and v2 headers parsed whole, byte by byte
 * and next to other bytes, every refusal with its code, the encoder
 * through the parser, TLV lookup, CRC32C, and the allow-list. */
#include "fixture.h"

#include <stdlib.h>
#include <string.h>

#include "common.h" /* cport__mem_fail_after */
#include "proxy_internal.h"

static const uint8_t v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* A TLS 1.x ClientHello's first bytes: a handshake record. */
static const uint8_t client_hello[] = {0x16, 0x03, 0x01, 0x00, 0xF4, 0x01,
                                       0x00, 0x00, 0xF0, 0x03, 0x03};


/* ---- helpers ---- */

/* A header under construction. */
typedef struct hb_s {
  uint8_t b[2048];
  size_t n;
} hb_t;

static void hb_put(hb_t* h, const void* p, size_t n) {
  assert_true(h->n + n <= sizeof(h->b));
  memcpy(h->b + h->n, p, n);
  h->n += n;
}

static void hb_u8(hb_t* h, unsigned v) {
  uint8_t b = (uint8_t)v;
  hb_put(h, &b, 1);
}

static void hb_u16(hb_t* h, unsigned v) {
  hb_u8(h, v >> 8);
  hb_u8(h, v & 0xFF);
}

/* A v2 preamble with its length to be set by hb_end. */
static void hb_v2(hb_t* h, unsigned ver_cmd, unsigned fam) {
  h->n = 0;
  hb_put(h, v2_sig, sizeof(v2_sig));
  hb_u8(h, ver_cmd);
  hb_u8(h, fam);
  hb_u16(h, 0);
}

static void hb_tlv(hb_t* h, unsigned type, const void* v, size_t n) {
  hb_u8(h, type);
  hb_u16(h, (unsigned)n);
  if (n > 0)
    hb_put(h, v, n);
}

static void hb_end(hb_t* h) {
  h->b[14] = (uint8_t)((h->n - 16) >> 8);
  h->b[15] = (uint8_t)(h->n - 16);
}

/* The v2 TCP4 header of the specification's example, 1.2.3.4:1111 to
 * 5.6.7.8:2222, with no TLVs yet. */
static void hb_tcp4(hb_t* h) {
  static const uint8_t a[12] = {1, 2, 3, 4, 5, 6, 7, 8, 0x04, 0x57, 0x08, 0xAE};
  hb_v2(h, 0x21, 0x11);
  hb_put(h, a, sizeof(a));
}

/* CRC32C bit by bit, apart from proxy.c's table. */
static uint32_t ref_crc32c(const uint8_t* p, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  size_t i;
  int k;
  for (i = 0; i < n; i++) {
    c ^= p[i];
    for (k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
  }
  return ~c;
}

/* Append a CRC32C TLV and fill it, as a balancer would. */
static void hb_crc(hb_t* h) {
  uint32_t c;
  size_t at;
  hb_u8(h, CPORT_PROXY_TLV_CRC32C);
  hb_u16(h, 4);
  at = h->n;
  hb_u16(h, 0);
  hb_u16(h, 0);
  hb_end(h);
  c = ref_crc32c(h->b, h->n);
  h->b[at] = (uint8_t)(c >> 24);
  h->b[at + 1] = (uint8_t)(c >> 16);
  h->b[at + 2] = (uint8_t)(c >> 8);
  h->b[at + 3] = (uint8_t)c;
}

/* Parse a copy of the `len` bytes in a block of exactly that size, so that
 * AddressSanitizer sees any read past them. The header is not kept. */
static int parse_exact(const void* data,
                       size_t len,
                       cport_proxy_t accept,
                       size_t max,
                       size_t* used,
                       const char** cause) {
  cport_proxy_header_t h;
  size_t u = 0;
  const char* why = NULL;
  uint8_t* copy = malloc(len > 0 ? len : 1);
  int rc;
  assert_non_null(copy);
  if (len > 0)
    memcpy(copy, data, len);
  rc = cport_proxy_parse(copy, len, accept, max, &h, &u, &why);
  free(copy);
  if (rc == CPORT_EPROXY || rc == CPORT_EPROXYSIZE)
    assert_non_null(why); /* every refusal says why */
  if (used != NULL)
    *used = u;
  if (cause != NULL)
    *cause = why;
  return rc;
}

static int parse_str(const char* s, cport_proxy_t accept) {
  return parse_exact(s, strlen(s), accept, 0, NULL, NULL);
}

/* `h` is refused with CPORT_EPROXY for the reason `why`. */
static void assert_refused(const hb_t* h, const char* why) {
  const char* cause = NULL;
  assert_int_equal(parse_exact(h->b, h->n, CPORT_PROXY_V2, 0, NULL, &cause),
                   CPORT_EPROXY);
  assert_string_equal(cause, why);
}

static void assert_addr(const cport_addr_t* a, const char* want) {
  char buf[CPORT_ADDR_STRLEN];
  assert_int_equal(cport_addr_format(a, buf, sizeof(buf)), 0);
  assert_string_equal(buf, want);
}

static int addr_unset(const cport_addr_t* a) {
  return cport_addr_sockaddr(a) == NULL;
}

/* Every prefix of `p` (`n` bytes, a whole header) is a valid beginning,
 * which writes nothing; all of it, followed by other bytes, is a header of
 * exactly `n` bytes. */
static void assert_prefixes_wait(const uint8_t* p, size_t n) {
  size_t k;
  uint8_t* more = malloc(n + sizeof(client_hello));
  cport_proxy_header_t h;
  size_t used;
  assert_non_null(more);
  for (k = 0; k < n; k++) {
    memset(&h, 0xA5, sizeof(h));
    used = 12345;
    {
      uint8_t* copy = malloc(k > 0 ? k : 1);
      int rc;
      assert_non_null(copy);
      memcpy(copy, p, k);
      rc = cport_proxy_parse(copy, k, CPORT_PROXY_ANY, 0, &h, &used, NULL);
      free(copy);
      if (rc != CPORT_EAGAIN)
        fail_msg("prefix of %u bytes of %u: %d", (unsigned)k, (unsigned)n, rc);
    }
    assert_int_equal(used, 12345);
    assert_int_equal(((uint8_t*)&h)[0], 0xA5);
  }
  memcpy(more, p, n);
  memcpy(more + n, client_hello, sizeof(client_hello));
  assert_int_equal(cport_proxy_parse(more, n + sizeof(client_hello),
                                     CPORT_PROXY_ANY, 0, &h, &used, NULL),
                   0);
  assert_int_equal(used, n);
  assert_memory_equal(more + n, client_hello, sizeof(client_hello));
  free(more);
}


/* ---- CRC32C ---- */

static void test_proxy_crc32c_gives_the_check_value(void** state) {
  static const char nine[] = "123456789";
  (void)state;
  assert_int_equal(cport__crc32c(0, nine, 9), 0xE3069283u);
  assert_int_equal(cport__crc32c(0, "", 0), 0);
  /* A sum goes on from where an earlier one stopped. */
  assert_int_equal(cport__crc32c(cport__crc32c(0, nine, 4), nine + 4, 5),
                   0xE3069283u);
  assert_int_equal(cport__crc32c(0, nine, 9),
                   ref_crc32c((const uint8_t*)nine, 9));
}


/* ---- version 1 ---- */

static void test_proxy_v1_tcp4_gives_both_addresses(void** state) {
  static const char line[] =
      "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
  cport_proxy_header_t h;
  size_t used = 0;
  const uint8_t* v;
  size_t vlen;
  (void)state;
  assert_int_equal(
      cport_proxy_parse(line, strlen(line), CPORT_PROXY_V1, 0, &h, &used, NULL),
      0);
  assert_int_equal(used, strlen(line));
  assert_int_equal(h.version, 1);
  assert_int_equal(h.local, 0);
  assert_addr(&h.src, "192.168.0.1:56324");
  assert_addr(&h.dst, "192.168.0.11:443");
  assert_null(h.tlvs);
  assert_int_equal(h.tlvs_len, 0);
  assert_int_equal(cport_proxy_tlv(&h, CPORT_PROXY_TLV_ALPN, &v, &vlen),
                   CPORT_ENOENT);
  /* The extremes of the port range. */
  assert_int_equal(parse_str("PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n",
                             CPORT_PROXY_V1),
                   0);
}

static void test_proxy_v1_tcp6_gives_both_addresses(void** state) {
  static const char line[] =
      "PROXY TCP6 2001:db8::1 ::ffff:10.0.0.1 65535 0\r\nxyz";
  static const char full[] =
      "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
      "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
  cport_proxy_header_t h;
  size_t used = 0;
  (void)state;
  assert_int_equal(cport_proxy_parse(line, strlen(line), CPORT_PROXY_ANY, 0, &h,
                                     &used, NULL),
                   0);
  assert_int_equal(used, strlen(line) - 3);
  assert_int_equal(h.version, 1);
  assert_int_equal(h.local, 0);
  assert_addr(&h.src, "[2001:db8::1]:65535");
  assert_addr(&h.dst, "[::ffff:10.0.0.1]:0");
  assert_int_equal(cport_addr_family(&h.src), 6);
  /* The longest line the grammar allows here is 104 bytes. */
  assert_int_equal(parse_str(full, CPORT_PROXY_V1), 0);
}

static void test_proxy_v1_unknown_names_no_client(void** state) {
  static const char* const good[] = {
      "PROXY UNKNOWN\r\n",
      "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
      "PROXY UNKNOWN \r\n",
      "PROXY UNKNOWN  anything\tat all\x01\xff\r\n",
  };
  size_t i;
  (void)state;
  for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
    cport_proxy_header_t h;
    size_t used = 0;
    assert_int_equal(cport_proxy_parse(good[i], strlen(good[i]), CPORT_PROXY_V1,
                                       0, &h, &used, NULL),
                     0);
    assert_int_equal(used, strlen(good[i]));
    assert_int_equal(h.version, 1);
    assert_int_equal(h.local, 1);
    assert_true(addr_unset(&h.src));
    assert_true(addr_unset(&h.dst));
  }
}

static void test_proxy_v1_refuses_every_malformed_line(void** state) {
  static const char* const bad[] = {
      "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
      "PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", /* two spaces */
      "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
      "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
      "PROXY TCP4 1.2.3.4 5.6.7.8  1 2\r\n",
      "PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n",
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", /* space before CRLF */
      "PROXY\tTCP4 1.2.3.4 5.6.7.8 1 2\r\n",
      "PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n",
      "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
      "PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
      "PROXY TCP4\r\n",
      "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
      "PROXY UNKNOWNX\r\n",
      "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", /* leading zero */
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 00\r\n",
      "PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", /* sign */
      "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
      "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", /* out of range */
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 123456\r\n",
      "PROXY TCP4 1.2.3.4 5.6.7.8 0x1 2\r\n",
      "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", /* no destination port */
      "PROXY TCP4 1.2.3.4 5.6.7.8\r\n",
      "PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n", /* bad addresses */
      "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
      "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
      "PROXY TCP4 1.2.3.4 5.6.7.8.9 1 2\r\n",
      "PROXY TCP4 ::1 ::1 1 2\r\n", /* the other family */
      "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
      "PROXY TCP6 ::1 fe80::1%1 1 2\r\n",
      "PROXY TCP6 [::1] ::1 1 2\r\n",
      "PROXY TCP6 :::1 ::1 1 2\r\n",
      "PROXY TCP4 localhost 5.6.7.8 1 2\r\n",
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",  /* LF without CR */
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", /* CR without LF */
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n",
      "PROXY UNKNOWN\rX",
      "PROXY UNKNOWN xx\r\r\n",
  };
  size_t i;
  (void)state;
  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    const char* cause = NULL;
    int rc =
        parse_exact(bad[i], strlen(bad[i]), CPORT_PROXY_ANY, 0, NULL, &cause);
    if (rc != CPORT_EPROXY)
      fail_msg("line %u (%s) gave %d", (unsigned)i, bad[i], rc);
    assert_non_null(cause);
  }
}

static void test_proxy_v1_without_crlf_in_107_bytes_is_refused(void** state) {
  char line[200];
  size_t used = 0;
  size_t k;
  const char* cause = NULL;
  (void)state;
  memset(line, 'a', sizeof(line));
  memcpy(line, "PROXY UNKNOWN ", 14);
  for (k = 1; k < CPORT_PROXY_V1_MAX; k++)
    assert_int_equal(parse_exact(line, k, CPORT_PROXY_V1, 0, NULL, NULL),
                     CPORT_EAGAIN);
  assert_int_equal(
      parse_exact(line, CPORT_PROXY_V1_MAX, CPORT_PROXY_V1, 0, NULL, &cause),
      CPORT_EPROXY);
  assert_string_equal(cause, "no CRLF in 107 bytes");
  assert_int_equal(
      parse_exact(line, sizeof(line), CPORT_PROXY_V1, 0, NULL, NULL),
      CPORT_EPROXY);
  /* A line of exactly 107 bytes is taken; its CR one byte later is not,
   * whatever `max` says. */
  memcpy(line + 105, "\r\n", 2);
  assert_int_equal(parse_exact(line, 107, CPORT_PROXY_V1, 16, &used, NULL), 0);
  assert_int_equal(used, 107);
  memset(line + 105, 'a', 2);
  memcpy(line + 106, "\r\n", 2);
  assert_int_equal(parse_exact(line, 108, CPORT_PROXY_V1, 0, NULL, NULL),
                   CPORT_EPROXY);
  /* An address too long for its family is refused before 107 bytes. */
  assert_int_equal(parse_str("PROXY TCP4 1111111111111111", CPORT_PROXY_V1),
                   CPORT_EPROXY);
}

static void test_proxy_v1_malformed_byte_is_refused_where_it_is(void** state) {
  /* Each line is refused at its last byte, and waits one byte before. */
  static const char* const lines[] = {
      "PROXY TCP4 1.2.3.4 5.6.7.8 00",
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 00",
      "PROXY TCP4 1.2.3.4 5.6.7.8 65536",
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ",
      "PROXY TCP4 1.2.3.4 5.6.7.8 +",
      "PROXY TCP4 1.2.3.4 5.6.7.8  ",
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rx",
      "PROXY TCP4 1.2.3.4:",
      "PROXY TCP4 1.2.3. ",
      "PROXY TCP6 ::1 g",
      "PROXY TCP7",
      "PROXY UNKNOWNx",
      "PROXY TCP4 1111111111111111",
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
  };
  size_t i;
  (void)state;
  for (i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
    size_t n = strlen(lines[i]);
    int whole = parse_exact(lines[i], n, CPORT_PROXY_ANY, 0, NULL, NULL);
    int before = parse_exact(lines[i], n - 1, CPORT_PROXY_ANY, 0, NULL, NULL);
    if (before != CPORT_EAGAIN || whole != CPORT_EPROXY)
      fail_msg("%s: %d then %d", lines[i], before, whole);
  }
}

static void test_proxy_plain_tcp_and_tls_are_refused_after_one_byte(
    void** state) {
  static const char get[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  static const cport_proxy_t modes[] = {CPORT_PROXY_V1, CPORT_PROXY_V2,
                                        CPORT_PROXY_ANY};
  size_t i;
  (void)state;
  for (i = 0; i < 3; i++) {
    assert_int_equal(parse_exact(get, 1, modes[i], 0, NULL, NULL),
                     CPORT_EPROXY);
    assert_int_equal(parse_exact(get, strlen(get), modes[i], 0, NULL, NULL),
                     CPORT_EPROXY);
    assert_int_equal(parse_exact(client_hello, 1, modes[i], 0, NULL, NULL),
                     CPORT_EPROXY);
    assert_int_equal(parse_exact(client_hello, sizeof(client_hello), modes[i],
                                 0, NULL, NULL),
                     CPORT_EPROXY);
  }
  /* "POST" shares its first byte with "PROXY " and is refused at its
   * second; nothing at all is a valid beginning. */
  assert_int_equal(parse_exact("P", 1, CPORT_PROXY_ANY, 0, NULL, NULL),
                   CPORT_EAGAIN);
  assert_int_equal(parse_exact("PO", 2, CPORT_PROXY_ANY, 0, NULL, NULL),
                   CPORT_EPROXY);
  assert_int_equal(parse_exact("", 0, CPORT_PROXY_ANY, 0, NULL, NULL),
                   CPORT_EAGAIN);
  /* A CRLF line (0x0D, then 0x0A, then text) is refused at its third. */
  assert_int_equal(parse_exact("\r\nX", 3, CPORT_PROXY_ANY, 0, NULL, NULL),
                   CPORT_EPROXY);
}

static void test_proxy_accept_limits_the_versions_read(void** state) {
  static const char v1[] = "PROXY UNKNOWN\r\n";
  hb_t h;
  cport_proxy_header_t out;
  size_t used;
  (void)state;
  hb_v2(&h, 0x20, 0x00);
  hb_end(&h);
  assert_int_equal(parse_exact(h.b, h.n, CPORT_PROXY_V2, 0, NULL, NULL), 0);
  assert_int_equal(parse_exact(h.b, h.n, CPORT_PROXY_ANY, 0, NULL, NULL), 0);
  assert_int_equal(parse_exact(h.b, 1, CPORT_PROXY_V1, 0, NULL, NULL),
                   CPORT_EPROXY);
  assert_int_equal(parse_str(v1, CPORT_PROXY_V1), 0);
  assert_int_equal(parse_exact(v1, 1, CPORT_PROXY_V2, 0, NULL, NULL),
                   CPORT_EPROXY);
  /* Bad arguments. */
  assert_int_equal(
      cport_proxy_parse(v1, 15, CPORT_PROXY_OFF, 0, &out, &used, NULL),
      UV_EINVAL);
  assert_int_equal(
      cport_proxy_parse(v1, 15, (cport_proxy_t)7, 0, &out, &used, NULL),
      UV_EINVAL);
  assert_int_equal(
      cport_proxy_parse(NULL, 15, CPORT_PROXY_ANY, 0, &out, &used, NULL),
      UV_EINVAL);
  assert_int_equal(
      cport_proxy_parse(v1, 15, CPORT_PROXY_ANY, 0, NULL, &used, NULL),
      UV_EINVAL);
  assert_int_equal(
      cport_proxy_parse(v1, 15, CPORT_PROXY_ANY, 0, &out, NULL, NULL),
      UV_EINVAL);
}


/* ---- version 2 ---- */

static void test_proxy_v2_tcp4_gives_addresses_and_tlvs(void** state) {
  hb_t h;
  cport_proxy_header_t out;
  size_t used = 0;
  (void)state;
  hb_tcp4(&h);
  hb_tlv(&h, CPORT_PROXY_TLV_ALPN, "h2", 2);
  hb_tlv(&h, CPORT_PROXY_TLV_NOOP, NULL, 0);
  hb_end(&h);
  assert_int_equal(
      cport_proxy_parse(h.b, h.n, CPORT_PROXY_V2, 0, &out, &used, NULL), 0);
  assert_int_equal(used, h.n);
  assert_int_equal(out.version, 2);
  assert_int_equal(out.local, 0);
  assert_addr(&out.src, "1.2.3.4:1111");
  assert_addr(&out.dst, "5.6.7.8:2222");
  assert_ptr_equal(out.tlvs, h.b + 28);
  assert_int_equal(out.tlvs_len, 8);
}

static void test_proxy_v2_tcp6_gives_addresses(void** state) {
  hb_t h;
  cport_proxy_header_t out;
  size_t used = 0;
  uint8_t a[36];
  (void)state;
  memset(a, 0, sizeof(a));
  a[0] = 0x20;
  a[1] = 0x01;
  a[2] = 0x0d;
  a[3] = 0xb8;
  a[15] = 1;
  a[31] = 1;    /* ::1 */
  a[32] = 0xFF; /* port 65535 */
  a[33] = 0xFF;
  a[35] = 80;
  hb_v2(&h, 0x21, 0x21);
  hb_put(&h, a, sizeof(a));
  hb_end(&h);
  assert_int_equal(
      cport_proxy_parse(h.b, h.n, CPORT_PROXY_ANY, 0, &out, &used, NULL), 0);
  assert_int_equal(used, 52);
  assert_int_equal(out.local, 0);
  assert_addr(&out.src, "[2001:db8::1]:65535");
  assert_addr(&out.dst, "[::1]:80");
  assert_null(out.tlvs);
  assert_int_equal(out.tlvs_len, 0);
}

static void test_proxy_v2_local_unspec_and_unix_name_no_client(void** state) {
  static const struct {
    unsigned ver_cmd, fam;
    size_t addr;
  } forms[] = {
      {0x20, 0x00, 0},   /* LOCAL, as HAProxy's health checks */
      {0x20, 0x11, 12},  /* LOCAL: the family is discarded */
      {0x20, 0x22, 36},  /* ... even a datagram one */
      {0x21, 0x00, 0},   /* PROXY UNSPEC */
      {0x21, 0x31, 216}, /* PROXY UNIX stream */
  };
  size_t i;
  (void)state;
  for (i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
    hb_t h;
    uint8_t zero[216];
    cport_proxy_header_t out;
    size_t used = 0;
    const uint8_t* v;
    size_t vlen;
    memset(zero, 7, sizeof(zero));
    hb_v2(&h, forms[i].ver_cmd, forms[i].fam);
    hb_put(&h, zero, forms[i].addr);
    hb_tlv(&h, CPORT_PROXY_TLV_AUTHORITY, "example.com", 11);
    hb_end(&h);
    assert_int_equal(
        cport_proxy_parse(h.b, h.n, CPORT_PROXY_ANY, 0, &out, &used, NULL), 0);
    assert_int_equal(used, h.n);
    assert_int_equal(out.version, 2);
    assert_int_equal(out.local, 1);
    assert_true(addr_unset(&out.src));
    assert_true(addr_unset(&out.dst));
    /* The TLVs start after the family's addresses. */
    assert_int_equal(
        cport_proxy_tlv(&out, CPORT_PROXY_TLV_AUTHORITY, &v, &vlen), 0);
    assert_int_equal(vlen, 11);
    assert_memory_equal(v, "example.com", 11);
  }
}

static void test_proxy_v2_refuses_bad_version_command_and_family(void** state) {
  static const struct {
    unsigned ver_cmd, fam;
    size_t at; /* refused as soon as this many bytes are there */
    const char* cause;
  } bad[] = {
      {0x11, 0x11, 13, "bad v2 version"},
      {0x31, 0x11, 13, "bad v2 version"},
      {0x01, 0x11, 13, "bad v2 version"},
      {0x22, 0x11, 13, "bad v2 command"},
      {0x2F, 0x11, 13, "bad v2 command"},
      {0x21, 0x41, 14, "bad v2 address family"},
      {0x21, 0x13, 14, "bad v2 address family"},
      {0x21, 0x10, 14, "bad v2 address family"},
      {0x21, 0x01, 14, "bad v2 address family"},
      {0x21, 0x12, 14, "datagram family on a stream connection"},
      {0x21, 0x22, 14, "datagram family on a stream connection"},
      {0x21, 0x32, 14, "datagram family on a stream connection"},
  };
  size_t i;
  (void)state;
  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    hb_t h;
    uint8_t zero[216];
    const char* cause = NULL;
    memset(zero, 0, sizeof(zero));
    hb_v2(&h, bad[i].ver_cmd, bad[i].fam);
    hb_put(&h, zero, sizeof(zero));
    hb_end(&h);
    assert_int_equal(
        parse_exact(h.b, bad[i].at - 1, CPORT_PROXY_ANY, 0, NULL, NULL),
        CPORT_EAGAIN);
    assert_int_equal(
        parse_exact(h.b, bad[i].at, CPORT_PROXY_ANY, 0, NULL, &cause),
        CPORT_EPROXY);
    assert_string_equal(cause, bad[i].cause);
    assert_int_equal(parse_exact(h.b, h.n, CPORT_PROXY_ANY, 0, NULL, NULL),
                     CPORT_EPROXY);
  }
}

static void test_proxy_v2_signature_is_checked_byte_by_byte(void** state) {
  hb_t h;
  size_t i;
  (void)state;
  hb_v2(&h, 0x20, 0x00);
  hb_end(&h);
  for (i = 1; i < 12; i++) {
    uint8_t b = h.b[i];
    h.b[i] ^= 0x40;
    assert_int_equal(parse_exact(h.b, i + 1, CPORT_PROXY_ANY, 0, NULL, NULL),
                     CPORT_EPROXY);
    h.b[i] = b;
  }
  assert_int_equal(parse_exact(h.b, h.n, CPORT_PROXY_ANY, 0, NULL, NULL), 0);
}

static void test_proxy_v2_short_address_block_is_refused(void** state) {
  static const struct {
    unsigned fam;
    size_t addr;
  } forms[] = {{0x11, 12}, {0x21, 36}, {0x31, 216}};
  size_t i;
  (void)state;
  for (i = 0; i < 3; i++) {
    hb_t h;
    uint8_t zero[216];
    const char* cause = NULL;
    memset(zero, 0, sizeof(zero));
    hb_v2(&h, 0x21, forms[i].fam);
    hb_put(&h, zero, forms[i].addr - 1);
    hb_end(&h);
    /* Known at 16 bytes, without waiting for the body. */
    assert_int_equal(parse_exact(h.b, 16, CPORT_PROXY_ANY, 0, NULL, &cause),
                     CPORT_EPROXY);
    assert_string_equal(cause, "v2 address block too short for its family");
    hb_u8(&h, 0);
    hb_end(&h);
    assert_int_equal(parse_exact(h.b, h.n, CPORT_PROXY_ANY, 0, NULL, NULL), 0);
  }
}

static void test_proxy_v2_tlvs_must_fill_the_header_exactly(void** state) {
  hb_t h;
  static const uint8_t ssl_short[4] = {1, 0, 0, 0};
  static const uint8_t ssl_overrun[9] = {1, 0, 0, 0, 0, 0x21, 0, 2, 'x'};
  (void)state;
  /* A TLV whose length runs past the header. */
  hb_tcp4(&h);
  hb_tlv(&h, CPORT_PROXY_TLV_ALPN, "h2", 2);
  h.b[h.n - 3] = 3;
  hb_end(&h);
  assert_refused(&h, "TLV overruns the v2 header");
  /* One or two bytes left over: no room for a TLV's type and length. */
  hb_tcp4(&h);
  hb_tlv(&h, CPORT_PROXY_TLV_ALPN, "h2", 2);
  hb_u16(&h, 0x0400);
  hb_end(&h);
  assert_refused(&h, "TLV header overruns the v2 header");
  hb_tcp4(&h);
  hb_u8(&h, 4);
  hb_end(&h);
  assert_int_equal(parse_exact(h.b, h.n, CPORT_PROXY_V2, 0, NULL, NULL),
                   CPORT_EPROXY);
  /* An SSL TLV too short for its flags and verify result, and one whose
   * sub-TLV runs past it. */
  hb_tcp4(&h);
  hb_tlv(&h, CPORT_PROXY_TLV_SSL, ssl_short, sizeof(ssl_short));
  hb_end(&h);
  assert_refused(&h, "SSL TLV shorter than 5 bytes");
  hb_tcp4(&h);
  hb_tlv(&h, CPORT_PROXY_TLV_SSL, ssl_overrun, sizeof(ssl_overrun));
  hb_end(&h);
  assert_refused(&h, "SSL sub-TLV overruns its TLV");
  /* Fixed, it is taken. */
  {
    hb_t g;
    static const uint8_t ssl_ok[9] = {1, 0, 0, 0, 0, 0x21, 0, 1, 'x'};
    hb_tcp4(&g);
    hb_tlv(&g, CPORT_PROXY_TLV_SSL, ssl_ok, sizeof(ssl_ok));
    hb_end(&g);
    assert_int_equal(parse_exact(g.b, g.n, CPORT_PROXY_V2, 0, NULL, NULL), 0);
  }
}

static int count_tlv(unsigned type,
                     const uint8_t* value,
                     size_t len,
                     void* arg) {
  size_t* n = arg;
  (void)type;
  (void)value;
  (void)len;
  (*n)++;
  return 0;
}

static void test_proxy_v2_with_200_bytes_of_tlvs_parses(void** state) {
  hb_t h;
  uint8_t value[47];
  cport_proxy_header_t out;
  size_t used = 0;
  size_t n = 0;
  unsigned i;
  (void)state;
  hb_tcp4(&h);
  for (i = 0; i < 4; i++) { /* 4 x (3 + 47) = 200 bytes */
    memset(value, (int)i, sizeof(value));
    hb_tlv(&h, 0xE0 + i, value, sizeof(value));
  }
  hb_end(&h);
  assert_int_equal(h.n, 16 + 12 + 200);
  assert_prefixes_wait(h.b, h.n);
  assert_int_equal(
      cport_proxy_parse(h.b, h.n, CPORT_PROXY_V2, 0, &out, &used, NULL), 0);
  assert_int_equal(out.tlvs_len, 200);
  assert_int_equal(cport_proxy_tlv_foreach(&out, count_tlv, &n), 0);
  assert_int_equal(n, 4);
}

static void test_proxy_v2_preamble_over_max_is_refused_at_16_bytes(
    void** state) {
  hb_t h;
  const char* cause = NULL;
  size_t k;
  (void)state;
  hb_v2(&h, 0x21, 0x11);
  h.b[14] = 0xFF; /* 65535 bytes announced, 64 KiB in all */
  h.b[15] = 0xFF;
  for (k = 1; k < 16; k++)
    assert_int_equal(parse_exact(h.b, k, CPORT_PROXY_ANY, 4096, NULL, NULL),
                     CPORT_EAGAIN);
  assert_int_equal(parse_exact(h.b, 16, CPORT_PROXY_ANY, 4096, NULL, &cause),
                   CPORT_EPROXYSIZE);
  assert_string_equal(cause, "v2 header longer than the limit");
  /* Under the default limit (the format's own) it waits for the body. */
  assert_int_equal(parse_exact(h.b, 16, CPORT_PROXY_ANY, 0, NULL, NULL),
                   CPORT_EAGAIN);
  /* A header of exactly `max` bytes is taken, one byte over is not. */
  hb_tcp4(&h);
  hb_tlv(&h, CPORT_PROXY_TLV_NOOP, "abc", 3);
  hb_end(&h);
  assert_int_equal(parse_exact(h.b, h.n, CPORT_PROXY_ANY, h.n, NULL, NULL), 0);
  assert_int_equal(parse_exact(h.b, h.n, CPORT_PROXY_ANY, h.n - 1, NULL, NULL),
                   CPORT_EPROXYSIZE);
}

static void test_proxy_v2_crc32c_must_match(void** state) {
  hb_t h;
  const char* cause = NULL;
  cport_proxy_header_t out;
  size_t used;
  const uint8_t* v;
  size_t vlen;
  size_t i;
  (void)state;
  hb_tcp4(&h);
  hb_tlv(&h, CPORT_PROXY_TLV_ALPN, "h2", 2);
  hb_crc(&h);
  assert_int_equal(
      cport_proxy_parse(h.b, h.n, CPORT_PROXY_V2, 0, &out, &used, NULL), 0);
  assert_int_equal(cport_proxy_tlv(&out, CPORT_PROXY_TLV_CRC32C, &v, &vlen), 0);
  assert_int_equal(vlen, 4);
  assert_prefixes_wait(h.b, h.n);
  /* Any byte changed, the checksum's own included, is caught. */
  for (i = 12; i < h.n; i++) {
    if (i == 14 || i == 15 || i == h.n - 7)
      continue; /* the length, or the checksum's type: another header */
    h.b[i] ^= 0x01;
    if (parse_exact(h.b, h.n, CPORT_PROXY_V2, 0, NULL, &cause) != CPORT_EPROXY)
      fail_msg("byte %u flipped, and the header was taken", (unsigned)i);
    h.b[i] ^= 0x01;
  }
  h.b[h.n - 1] ^= 0x80;
  assert_refused(&h, "CRC32C mismatch");
  /* A CRC32C TLV of another length; two of them. */
  hb_tcp4(&h);
  hb_tlv(&h, CPORT_PROXY_TLV_CRC32C, "abc", 3);
  hb_end(&h);
  assert_refused(&h, "CRC32C TLV not 4 bytes");
  hb_tcp4(&h);
  hb_tlv(&h, CPORT_PROXY_TLV_CRC32C, "abcd", 4);
  hb_crc(&h);
  assert_refused(&h, "two CRC32C TLVs");
}


/* ---- byte by byte, and next to other bytes ---- */

static void test_proxy_every_prefix_waits_and_the_whole_stops_at_its_end(
    void** state) {
  static const char* const v1[] = {
      "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
      "PROXY TCP6 2001:db8::1 ::ffff:10.0.0.1 65535 0\r\n",
      "PROXY UNKNOWN\r\n",
      "PROXY UNKNOWN whatever 1 2 3\r\n",
  };
  static const uint8_t ssl[] = {0x07, 0,   0,   0,   0,   0x21, 0, 7, 'T', 'L',
                                'S',  'v', '1', '.', '3', 0x22, 0, 2, 'c', 'n'};
  hb_t h;
  size_t i;
  (void)state;
  for (i = 0; i < sizeof(v1) / sizeof(v1[0]); i++)
    assert_prefixes_wait((const uint8_t*)v1[i], strlen(v1[i]));
  hb_v2(&h, 0x20, 0x00);
  hb_end(&h);
  assert_prefixes_wait(h.b, h.n);
  hb_tcp4(&h);
  hb_tlv(&h, CPORT_PROXY_TLV_ALPN, "h2", 2);
  hb_tlv(&h, CPORT_PROXY_TLV_SSL, ssl, sizeof(ssl));
  hb_crc(&h);
  assert_prefixes_wait(h.b, h.n);
}

static void test_proxy_header_then_client_hello_uses_only_the_header(
    void** state) {
  static const char line[] = "PROXY TCP4 10.1.2.3 10.0.0.1 40000 443\r\n";
  uint8_t buf[128];
  cport_proxy_header_t out;
  size_t used = 0;
  hb_t h;
  (void)state;
  memcpy(buf, line, strlen(line));
  memcpy(buf + strlen(line), client_hello, sizeof(client_hello));
  assert_int_equal(cport_proxy_parse(buf, strlen(line) + sizeof(client_hello),
                                     CPORT_PROXY_ANY, 0, &out, &used, NULL),
                   0);
  assert_int_equal(used, strlen(line));
  hb_tcp4(&h);
  hb_end(&h);
  hb_put(&h, client_hello, sizeof(client_hello));
  assert_int_equal(
      cport_proxy_parse(h.b, h.n, CPORT_PROXY_ANY, 0, &out, &used, NULL), 0);
  assert_int_equal(used, 28);
  assert_null(out.tlvs);
}


/* ---- TLVs ---- */

typedef struct seen_s {
  unsigned types[8];
  size_t n;
  size_t stop_at;
} seen_t;

static int record_tlv(unsigned type,
                      const uint8_t* value,
                      size_t len,
                      void* arg) {
  seen_t* s = arg;
  (void)value;
  (void)len;
  s->types[s->n++] = type;
  return s->n == s->stop_at ? 42 : 0;
}

static void test_proxy_tlv_finds_the_first_of_a_type_and_ssl_subtlvs(
    void** state) {
  static const uint8_t ssl[] = {0x07, 0,   0,    0,   0,   0x21, 0,    7,  'T',
                                'L',  'S', 'v',  '1', '.', '3',  0x22, 0,  2,
                                'c',  'n', 0x25, 0,   3,   'R',  'S',  'A'};
  hb_t h;
  cport_proxy_header_t out;
  size_t used;
  const uint8_t* v = NULL;
  size_t vlen = 0;
  seen_t seen;
  (void)state;
  hb_tcp4(&h);
  hb_tlv(&h, CPORT_PROXY_TLV_ALPN, "h2", 2);
  hb_tlv(&h, CPORT_PROXY_TLV_SSL, ssl, sizeof(ssl));
  hb_tlv(&h, CPORT_PROXY_TLV_ALPN, "http/1.1", 8);
  hb_tlv(&h, 0xE5, NULL, 0);
  hb_end(&h);
  assert_int_equal(
      cport_proxy_parse(h.b, h.n, CPORT_PROXY_V2, 0, &out, &used, NULL), 0);
  assert_int_equal(cport_proxy_tlv(&out, CPORT_PROXY_TLV_ALPN, &v, &vlen), 0);
  assert_int_equal(vlen, 2);
  assert_memory_equal(v, "h2", 2);
  assert_int_equal(cport_proxy_tlv(&out, CPORT_PROXY_TLV_SSL, &v, &vlen), 0);
  assert_int_equal(vlen, sizeof(ssl));
  assert_int_equal(v[0], CPORT_PROXY_SSL_CLIENT_SSL |
                             CPORT_PROXY_SSL_CLIENT_CERT_CONN |
                             CPORT_PROXY_SSL_CLIENT_CERT_SESS);
  assert_int_equal(
      cport_proxy_tlv(&out, CPORT_PROXY_TLV_SSL_VERSION, &v, &vlen), 0);
  assert_int_equal(vlen, 7);
  assert_memory_equal(v, "TLSv1.3", 7);
  assert_int_equal(cport_proxy_tlv(&out, CPORT_PROXY_TLV_SSL_CN, &v, &vlen), 0);
  assert_memory_equal(v, "cn", 2);
  assert_int_equal(
      cport_proxy_tlv(&out, CPORT_PROXY_TLV_SSL_KEY_ALG, &v, &vlen), 0);
  assert_memory_equal(v, "RSA", 3);
  assert_int_equal(cport_proxy_tlv(&out, 0xE5, &v, &vlen), 0);
  assert_int_equal(vlen, 0);
  assert_int_equal(cport_proxy_tlv(&out, CPORT_PROXY_TLV_SSL_CIPHER, &v, &vlen),
                   CPORT_ENOENT);
  assert_int_equal(cport_proxy_tlv(&out, CPORT_PROXY_TLV_NETNS, &v, &vlen),
                   CPORT_ENOENT);
  assert_int_equal(cport_proxy_tlv(NULL, 1, &v, &vlen), UV_EINVAL);
  assert_int_equal(cport_proxy_tlv(&out, 1, NULL, &vlen), UV_EINVAL);
  assert_int_equal(cport_proxy_tlv(&out, 1, &v, NULL), UV_EINVAL);

  /* foreach: in order, the SSL TLV whole, stopped by a non-zero answer. */
  memset(&seen, 0, sizeof(seen));
  assert_int_equal(cport_proxy_tlv_foreach(&out, record_tlv, &seen), 0);
  assert_int_equal(seen.n, 4);
  assert_int_equal(seen.types[0], CPORT_PROXY_TLV_ALPN);
  assert_int_equal(seen.types[1], CPORT_PROXY_TLV_SSL);
  assert_int_equal(seen.types[2], CPORT_PROXY_TLV_ALPN);
  assert_int_equal(seen.types[3], 0xE5);
  memset(&seen, 0, sizeof(seen));
  seen.stop_at = 2;
  assert_int_equal(cport_proxy_tlv_foreach(&out, record_tlv, &seen), 42);
  assert_int_equal(seen.n, 2);
  assert_int_equal(cport_proxy_tlv_foreach(NULL, record_tlv, &seen), UV_EINVAL);
  assert_int_equal(cport_proxy_tlv_foreach(&out, NULL, &seen), UV_EINVAL);

  /* A SSL sub-type without an SSL TLV, and a v1 header: none. */
  hb_tcp4(&h);
  hb_tlv(&h, CPORT_PROXY_TLV_ALPN, "h2", 2);
  hb_end(&h);
  assert_int_equal(
      cport_proxy_parse(h.b, h.n, CPORT_PROXY_V2, 0, &out, &used, NULL), 0);
  assert_int_equal(
      cport_proxy_tlv(&out, CPORT_PROXY_TLV_SSL_VERSION, &v, &vlen),
      CPORT_ENOENT);
  assert_int_equal(cport_proxy_parse("PROXY UNKNOWN\r\n", 15, CPORT_PROXY_V1, 0,
                                     &out, &used, NULL),
                   0);
  assert_int_equal(cport_proxy_tlv(&out, CPORT_PROXY_TLV_ALPN, &v, &vlen),
                   CPORT_ENOENT);
  memset(&seen, 0, sizeof(seen));
  assert_int_equal(cport_proxy_tlv_foreach(&out, record_tlv, &seen), 0);
  assert_int_equal(seen.n, 0);
}


/* ---- the encoder ---- */

static void round_trip(cport_proxy_t version,
                       const char* src,
                       int sport,
                       const char* dst,
                       int dport,
                       const void* tlvs,
                       size_t tlvs_len,
                       int crc) {
  uint8_t buf[1024];
  cport_addr_t s;
  cport_addr_t d;
  cport_proxy_header_t out;
  size_t used = 0;
  char want[CPORT_ADDR_STRLEN];
  int n;
  if (src != NULL) {
    assert_int_equal(cport_addr_parse(&s, src, sport), 0);
    assert_int_equal(cport_addr_parse(&d, dst, dport), 0);
  }
  n = cport_proxy_encode(buf, sizeof(buf), version, src ? &s : NULL,
                         dst ? &d : NULL, tlvs, tlvs_len, crc);
  assert_true(n > 0);
  if (version == CPORT_PROXY_V1)
    assert_true(n <= CPORT_PROXY_V1_MAX);
  assert_prefixes_wait(buf, (size_t)n);
  /* Exactly n bytes are needed: one fewer is too few. */
  assert_int_equal(
      cport_proxy_encode(buf, (size_t)n - 1, version, src ? &s : NULL,
                         dst ? &d : NULL, tlvs, tlvs_len, crc),
      UV_ENOSPC);
  n = cport_proxy_encode(buf, (size_t)n, version, src ? &s : NULL,
                         dst ? &d : NULL, tlvs, tlvs_len, crc);
  assert_int_equal(
      cport_proxy_parse(buf, (size_t)n, version, 0, &out, &used, NULL), 0);
  assert_int_equal(used, (size_t)n);
  assert_int_equal(out.version, version == CPORT_PROXY_V1 ? 1 : 2);
  if (src == NULL) {
    assert_int_equal(out.local, 1);
    assert_true(addr_unset(&out.src));
  } else {
    assert_int_equal(out.local, 0);
    assert_int_equal(cport_addr_format(&s, want, sizeof(want)), 0);
    assert_addr(&out.src, want);
    assert_int_equal(cport_addr_format(&d, want, sizeof(want)), 0);
    assert_addr(&out.dst, want);
  }
  if (version == CPORT_PROXY_V2) {
    const uint8_t* v;
    size_t vlen;
    assert_int_equal(out.tlvs_len, tlvs_len + (crc ? 7u : 0u));
    if (tlvs_len > 0)
      assert_memory_equal(out.tlvs, tlvs, tlvs_len);
    assert_int_equal(cport_proxy_tlv(&out, CPORT_PROXY_TLV_CRC32C, &v, &vlen),
                     crc ? 0 : CPORT_ENOENT);
    if (crc) {
      /* Filled in by the encoder: changing a byte is caught. */
      buf[n - 8] ^= 1;
      assert_int_equal(
          cport_proxy_parse(buf, (size_t)n, version, 0, &out, &used, NULL),
          CPORT_EPROXY);
    }
  }
}

static void test_proxy_encode_round_trips_through_the_parser(void** state) {
  static const uint8_t tlvs[] = {0x01, 0,    2, 'h', '2', 0x02, 0, 3, 'a', '.',
                                 'b',  0x20, 0, 5,   1,   0,    0, 0, 0};
  uint8_t buf[64];
  (void)state;
  round_trip(CPORT_PROXY_V1, "192.168.0.1", 56324, "10.0.0.1", 443, NULL, 0, 0);
  round_trip(CPORT_PROXY_V1, "2001:db8::1", 1, "::ffff:1.2.3.4", 65535, NULL, 0,
             0);
  round_trip(CPORT_PROXY_V1, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535,
             "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 65535, NULL, 0, 0);
  round_trip(CPORT_PROXY_V1, NULL, 0, NULL, 0, NULL, 0, 0);
  round_trip(CPORT_PROXY_V2, "192.168.0.1", 56324, "10.0.0.1", 443, NULL, 0, 0);
  round_trip(CPORT_PROXY_V2, "2001:db8::1", 0, "::1", 80, tlvs, sizeof(tlvs),
             0);
  round_trip(CPORT_PROXY_V2, "1.2.3.4", 1111, "5.6.7.8", 2222, tlvs,
             sizeof(tlvs), 1);
  round_trip(CPORT_PROXY_V2, NULL, 0, NULL, 0, NULL, 0, 0);
  round_trip(CPORT_PROXY_V2, NULL, 0, NULL, 0, tlvs, sizeof(tlvs), 1);
  /* The exact bytes of a v1 line and of a v2 LOCAL header. */
  assert_int_equal(cport_proxy_encode(buf, sizeof(buf), CPORT_PROXY_V1, NULL,
                                      NULL, NULL, 0, 0),
                   15);
  assert_memory_equal(buf, "PROXY UNKNOWN\r\n", 15);
  assert_int_equal(cport_proxy_encode(buf, sizeof(buf), CPORT_PROXY_V2, NULL,
                                      NULL, NULL, 0, 0),
                   16);
  assert_memory_equal(buf, v2_sig, 12);
  assert_int_equal(buf[12], 0x20);
  assert_int_equal(buf[13], 0x00);
  assert_int_equal(buf[14], 0);
  assert_int_equal(buf[15], 0);
  {
    cport_addr_t s;
    cport_addr_t d;
    static const uint8_t want[28] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A,
                                     0x51, 0x55, 0x49, 0x54, 0x0A, 0x21, 0x11,
                                     0x00, 0x0C, 1,    2,    3,    4,    5,
                                     6,    7,    8,    0x04, 0x57, 0x08, 0xAE};
    assert_int_equal(cport_addr_parse(&s, "1.2.3.4", 1111), 0);
    assert_int_equal(cport_addr_parse(&d, "5.6.7.8", 2222), 0);
    assert_int_equal(cport_proxy_encode(buf, sizeof(buf), CPORT_PROXY_V2, &s,
                                        &d, NULL, 0, 0),
                     28);
    assert_memory_equal(buf, want, sizeof(want));
    assert_int_equal(cport_proxy_encode(buf, sizeof(buf), CPORT_PROXY_V1, &s,
                                        &d, NULL, 0, 0),
                     38);
    assert_memory_equal(buf, "PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\r\n", 38);
  }
}

static void test_proxy_encode_refuses_what_it_cannot_build(void** state) {
  static const uint8_t crc_tlv[] = {0x03, 0, 4, 0, 0, 0, 0};
  static const uint8_t overrun[] = {0x01, 0, 9, 'h', '2'};
  uint8_t buf[256];
  cport_addr_t v4;
  cport_addr_t v6;
  cport_addr_t name;
  (void)state;
  assert_int_equal(cport_addr_parse(&v4, "1.2.3.4", 1), 0);
  assert_int_equal(cport_addr_parse(&v6, "::1", 1), 0);
  assert_int_equal(cport_addr_parse(&name, "localhost", 1), 0);
  const struct {
    cport_proxy_t version;
    const cport_addr_t* src;
    const cport_addr_t* dst;
    const void* tlvs;
    size_t tlvs_len;
    int crc;
  } bad[] = {
      {CPORT_PROXY_ANY, &v4, &v4, NULL, 0, 0}, /* not a version to send */
      {CPORT_PROXY_OFF, &v4, &v4, NULL, 0, 0},
      {CPORT_PROXY_V2, &v4, NULL, NULL, 0, 0}, /* one address alone */
      {CPORT_PROXY_V2, NULL, &v4, NULL, 0, 0},
      {CPORT_PROXY_V1, &v4, &v6, NULL, 0, 0}, /* two families */
      {CPORT_PROXY_V2, &v6, &v4, NULL, 0, 0},
      {CPORT_PROXY_V1, &name, &name, NULL, 0, 0}, /* not looked up */
      /* TLVs and CRC32C are v2's only. */
      {CPORT_PROXY_V1, &v4, &v4, "\x04\x00\x00", 3, 0},
      {CPORT_PROXY_V1, &v4, &v4, NULL, 0, 1},
      {CPORT_PROXY_V2, &v4, &v4, NULL, 3, 0},
      /* TLVs the parser would refuse, or a checksum of the caller's own. */
      {CPORT_PROXY_V2, &v4, &v4, overrun, sizeof(overrun), 0},
      {CPORT_PROXY_V2, &v4, &v4, crc_tlv, sizeof(crc_tlv), 0},
  };
  size_t i;
  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    if (cport_proxy_encode(buf, sizeof(buf), bad[i].version, bad[i].src,
                           bad[i].dst, bad[i].tlvs, bad[i].tlvs_len,
                           bad[i].crc) != UV_EINVAL)
      fail_msg("case %u was not refused", (unsigned)i);
  assert_int_equal(
      cport_proxy_encode(NULL, 10, CPORT_PROXY_V1, &v4, &v4, NULL, 0, 0),
      UV_EINVAL);
  /* As many TLVs as a 16-bit length carries with the addresses, and one
   * byte more. */
  {
    size_t most = 65535 - 12;
    uint8_t* tl = calloc(1, most + 1);
    uint8_t* out = malloc(16 + 65535);
    assert_non_null(tl);
    assert_non_null(out);
    tl[0] = 0xE0;
    tl[1] = (uint8_t)((most - 3) >> 8);
    tl[2] = (uint8_t)(most - 3);
    assert_int_equal(cport_proxy_encode(out, 16 + 65535, CPORT_PROXY_V2, &v4,
                                        &v4, tl, most, 0),
                     16 + 65535);
    assert_int_equal(
        parse_exact(out, 16 + 65535, CPORT_PROXY_V2, 0, NULL, NULL), 0);
    assert_int_equal(cport_proxy_encode(out, 16 + 65535, CPORT_PROXY_V2, &v4,
                                        &v4, tl, most, 1),
                     UV_EINVAL); /* no room left for the checksum */
    assert_int_equal(cport_proxy_encode(out, 16 + 65534, CPORT_PROXY_V2, &v4,
                                        &v4, tl, most, 0),
                     UV_ENOSPC);
    tl[1] = (uint8_t)((most - 2) >> 8);
    tl[2] = (uint8_t)(most - 2);
    assert_int_equal(cport_proxy_encode(out, 16 + 65535, CPORT_PROXY_V2, &v4,
                                        &v4, tl, most + 1, 0),
                     UV_EINVAL);
    free(tl);
    free(out);
  }
  assert_int_equal(
      cport_proxy_encode(buf, 10, CPORT_PROXY_V1, &v4, &v4, NULL, 0, 0),
      UV_ENOSPC);
  assert_int_equal(
      cport_proxy_encode(buf, 27, CPORT_PROXY_V2, &v4, &v4, NULL, 0, 0),
      UV_ENOSPC);
}


/* ---- the allow-list ---- */

static void test_proxy_nets_parse_reads_addresses_and_networks(void** state) {
  cport__proxy_net_t* nets = NULL;
  size_t n = 0;
  (void)state;
  assert_int_equal(cport__proxy_nets_parse(
                       "10.0.0.0/8, 127.0.0.1 ,::1,\tfd00::/8 , 0.0.0.0/0,"
                       "::/0,192.168.1.128/25,2001:db8::1/128",
                       &nets, &n, NULL),
                   0);
  assert_int_equal(n, 8);
  assert_int_equal(nets[0].family, 4);
  assert_int_equal(nets[0].bits, 8);
  assert_int_equal(nets[0].addr[0], 10);
  assert_int_equal(nets[1].family, 4);
  assert_int_equal(nets[1].bits, 32);
  assert_int_equal(nets[2].family, 6);
  assert_int_equal(nets[2].bits, 128);
  assert_int_equal(nets[2].addr[15], 1);
  assert_int_equal(nets[3].family, 6);
  assert_int_equal(nets[3].bits, 8);
  assert_int_equal(nets[3].addr[0], 0xFD);
  assert_int_equal(nets[4].bits, 0);
  assert_int_equal(nets[5].bits, 0);
  assert_int_equal(nets[5].family, 6);
  assert_int_equal(nets[6].bits, 25);
  cport__free(nets);
  assert_int_equal(cport__proxy_nets_parse("::ffff:10.0.0.1", &nets, &n, NULL),
                   0);
  assert_int_equal(n, 1);
  assert_int_equal(nets[0].family, 6);
  cport__free(nets);
}

static void test_proxy_nets_parse_refuses_bad_lists(void** state) {
  static const struct {
    const char* text;
    const char* cause;
  } bad[] = {
      {"", "empty list"},
      {"  ", "empty list"},
      {"10.0.0.1,", "empty item"},
      {",10.0.0.1", "empty item"},
      {"10.0.0.1,,::1", "empty item"},
      {"10.0.0.1, ,::1", "empty item"},
      {"10.0.0.1/8", "address has bits set past its prefix length"},
      {"fd00::1/8", "address has bits set past its prefix length"},
      {"10.0.0.0/33", "bad prefix length"},
      {"::/129", "bad prefix length"},
      {"10.0.0.0/", "bad prefix length"},
      {"10.0.0.0/-1", "bad prefix length"},
      {"10.0.0.0/8a", "bad prefix length"},
      {"10.0.0.0/0008", "bad prefix length"},
      {"10.0.0.0 /8", "bad address"},
      {"localhost", "bad address"},
      {"10.0.0", "bad address"},
      {"[::1]", "bad address"},
      {"fe80::1%1", "bad address"},
      {"/8", "bad address"},
      {"10.0.0.0/8/8", "bad prefix length"},
      {"1111:2222:3333:4444:5555:6666:7777:8888:9999:0000", "bad address"},
  };
  cport__proxy_net_t* nets = NULL;
  size_t n = 0;
  size_t i;
  (void)state;
  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    const char* cause = NULL;
    long live = cport__mem_live();
    if (cport__proxy_nets_parse(bad[i].text, &nets, &n, &cause) != UV_EINVAL)
      fail_msg("\"%s\" was taken", bad[i].text);
    if (cause == NULL || strcmp(cause, bad[i].cause) != 0)
      fail_msg("\"%s\": cause \"%s\"", bad[i].text, cause ? cause : "(null)");
    assert_int_equal(cport__mem_live(), live);
  }
  assert_int_equal(cport__proxy_nets_parse(NULL, &nets, &n, NULL), UV_EINVAL);
  assert_int_equal(cport__proxy_nets_parse("::1", NULL, &n, NULL), UV_EINVAL);
  assert_int_equal(cport__proxy_nets_parse("::1", &nets, NULL, NULL),
                   UV_EINVAL);
  cport__mem_fail_after(0);
  assert_int_equal(cport__proxy_nets_parse("::1", &nets, &n, NULL), UV_ENOMEM);
  cport__mem_fail_after(-1);
}

static int matches(const char* list, const char* ip) {
  cport__proxy_net_t* nets = NULL;
  size_t n = 0;
  cport_addr_t a;
  int m;
  assert_int_equal(cport__proxy_nets_parse(list, &nets, &n, NULL), 0);
  assert_int_equal(cport_addr_parse(&a, ip, 80), 0);
  m = cport__proxy_nets_match(nets, n, cport_addr_sockaddr(&a));
  cport__free(nets);
  return m;
}

static void test_proxy_nets_match_hosts_prefixes_and_mapped_v4(void** state) {
  (void)state;
  /* /32 and /128: the one host. */
  assert_true(matches("127.0.0.1", "127.0.0.1"));
  assert_false(matches("127.0.0.1", "127.0.0.2"));
  assert_true(matches("127.0.0.1/32", "127.0.0.1"));
  assert_true(matches("::1", "::1"));
  assert_false(matches("::1", "::2"));
  assert_true(matches("2001:db8::1/128", "2001:db8::1"));
  /* Prefixes, on and off byte boundaries. */
  assert_true(matches("10.0.0.0/8", "10.255.1.2"));
  assert_false(matches("10.0.0.0/8", "11.0.0.1"));
  assert_true(matches("192.168.1.128/25", "192.168.1.255"));
  assert_false(matches("192.168.1.128/25", "192.168.1.127"));
  assert_true(matches("fd00::/8", "fdff::1"));
  assert_false(matches("fd00::/8", "fe00::1"));
  assert_true(matches("2001:db8::/33", "2001:db8:7fff::1"));
  assert_false(matches("2001:db8::/33", "2001:db8:8000::1"));
  /* /0: everything of its family, nothing of the other. */
  assert_true(matches("0.0.0.0/0", "203.0.113.9"));
  assert_false(matches("0.0.0.0/0", "2001:db8::1"));
  assert_true(matches("::/0", "2001:db8::1"));
  assert_false(matches("::/0", "203.0.113.9"));
  /* An IPv4-mapped IPv6 peer (a dual-stack socket's) is its IPv4 address. */
  assert_true(matches("10.0.0.0/8", "::ffff:10.1.2.3"));
  assert_false(matches("10.0.0.0/8", "::ffff:11.1.2.3"));
  assert_true(matches("127.0.0.1", "::ffff:127.0.0.1"));
  assert_false(matches("127.0.0.1", "::127.0.0.1")); /* not mapped */
  /* The second item of a list. */
  assert_true(matches("10.0.0.0/8, ::1", "::1"));
  assert_false(cport__proxy_nets_match(NULL, 0, NULL));
}


int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_proxy_crc32c_gives_the_check_value),
      cmocka_unit_test(test_proxy_v1_tcp4_gives_both_addresses),
      cmocka_unit_test(test_proxy_v1_tcp6_gives_both_addresses),
      cmocka_unit_test(test_proxy_v1_unknown_names_no_client),
      cmocka_unit_test(test_proxy_v1_refuses_every_malformed_line),
      cmocka_unit_test(test_proxy_v1_without_crlf_in_107_bytes_is_refused),
      cmocka_unit_test(test_proxy_v1_malformed_byte_is_refused_where_it_is),
      cmocka_unit_test(test_proxy_plain_tcp_and_tls_are_refused_after_one_byte),
      cmocka_unit_test(test_proxy_accept_limits_the_versions_read),
      cmocka_unit_test(test_proxy_v2_tcp4_gives_addresses_and_tlvs),
      cmocka_unit_test(test_proxy_v2_tcp6_gives_addresses),
      cmocka_unit_test(test_proxy_v2_local_unspec_and_unix_name_no_client),
      cmocka_unit_test(test_proxy_v2_refuses_bad_version_command_and_family),
      cmocka_unit_test(test_proxy_v2_signature_is_checked_byte_by_byte),
      cmocka_unit_test(test_proxy_v2_short_address_block_is_refused),
      cmocka_unit_test(test_proxy_v2_tlvs_must_fill_the_header_exactly),
      cmocka_unit_test(test_proxy_v2_with_200_bytes_of_tlvs_parses),
      cmocka_unit_test(test_proxy_v2_preamble_over_max_is_refused_at_16_bytes),
      cmocka_unit_test(test_proxy_v2_crc32c_must_match),
      cmocka_unit_test(
          test_proxy_every_prefix_waits_and_the_whole_stops_at_its_end),
      cmocka_unit_test(
          test_proxy_header_then_client_hello_uses_only_the_header),
      cmocka_unit_test(
          test_proxy_tlv_finds_the_first_of_a_type_and_ssl_subtlvs),
      cmocka_unit_test(test_proxy_encode_round_trips_through_the_parser),
      cmocka_unit_test(test_proxy_encode_refuses_what_it_cannot_build),
      cmocka_unit_test(test_proxy_nets_parse_reads_addresses_and_networks),
      cmocka_unit_test(test_proxy_nets_parse_refuses_bad_lists),
      cmocka_unit_test(test_proxy_nets_match_hosts_prefixes_and_mapped_v4),
  };
  return cmocka_run_group_tests_name("proxy", tests, NULL, NULL);
}
