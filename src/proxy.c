/* The PROXY protocol: parsing and building v1 and v2 headers, TLV lookup,
 * the allow-list of balancers, and CRC32C. proxy.h describes the format.
 *
 * Design notes. The parser keeps no state between calls: it is run again
 * on all the bytes received so far, and reads them left to right, so that
 * its answer for a prefix never contradicts its answer for the whole. A
 * refusal is decided by the bytes up to the one refused, and is the same
 * however many bytes follow; CPORT_EAGAIN means every byte so far can
 * begin an accepted header. A v1 line is checked field by field as its
 * bytes arrive (a character a field cannot hold is refused at once); a v2
 * header is refused on its 16-byte preamble when the length it announces
 * is over the caller's limit, before the body is waited for. Nothing is
 * read past `len`. */
#include <stdio.h>
#include <string.h>

#include "proxy_internal.h"

#define V1_SIG "PROXY "
#define V1_SIG_LEN 6
#define V2_SIG_LEN 12
#define V2_PREAMBLE 16
#define V2_CMD_LOCAL 0x0
#define V2_CMD_PROXY 0x1
#define V2_FAM_UNSPEC 0x00
#define V2_FAM_TCP4 0x11
#define V2_FAM_TCP6 0x21
#define V2_TRANSPORT_DGRAM 0x2
#define V2_ADDR4 12   /* two IPv4 addresses and two ports */
#define V2_ADDR6 36   /* two IPv6 addresses and two ports */
#define V2_ADDRUX 216 /* two 108-byte UNIX socket paths */
#define TLV_HEAD 3    /* type and 16-bit length */
#define CRC_LEN 4
#define SSL_HEAD 5 /* client flags and verify result */
/* The longest address a v1 line may name, as text: INET6_ADDRSTRLEN - 1,
 * an IPv4-mapped IPv6 address written out in full. */
#define V1_ADDR4_MAX 15
#define V1_ADDR6_MAX 45
#define V1_PORT_MAX 5

static const uint8_t v2_sig[V2_SIG_LEN] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                           0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};


static int refuse(const char** cause, const char* why) {
  if (cause != NULL)
    *cause = why;
  return CPORT_EPROXY;
}


/* The first `len` bytes at `p` against the `n`-byte signature `sig`: 0
 * when all of it is there, CPORT_EAGAIN for a beginning of it, else a
 * refusal, `why`. */
static int sig_check(const uint8_t* p,
                     size_t len,
                     const void* sig,
                     size_t n,
                     const char** cause,
                     const char* why) {
  if (memcmp(p, sig, len < n ? len : n) != 0)
    return refuse(cause, why);
  return len <= n ? CPORT_EAGAIN : 0;
}


/* ---- CRC32C ---- */

/* Four bits at a time: the Castagnoli polynomial, reflected, applied to
 * each nibble value. A 16-entry table is small enough to check by eye,
 * and a header is at most 64 KiB. */
static const uint32_t crc32c_nibble[16] = {
    0x00000000, 0x105EC76F, 0x20BD8EDE, 0x30E349B1, 0x417B1DBC, 0x5125DAD3,
    0x61C69362, 0x7198540D, 0x82F63B78, 0x92A8FC17, 0xA24BB5A6, 0xB21572C9,
    0xC38D26C4, 0xD3D3E1AB, 0xE330A81A, 0xF36E6F75};


uint32_t cport__crc32c(uint32_t crc, const void* data, size_t len) {
  const uint8_t* p = data;
  size_t i;
  crc = ~crc;
  for (i = 0; i < len; i++) {
    crc ^= p[i];
    crc = (crc >> 4) ^ crc32c_nibble[crc & 0xF];
    crc = (crc >> 4) ^ crc32c_nibble[crc & 0xF];
  }
  return ~crc;
}


/* ---- addresses ---- */

static unsigned get16(const uint8_t* p) {
  return ((unsigned)p[0] << 8) | p[1];
}


static void put16(uint8_t* p, unsigned v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}


/* `out` from `family`'s raw address at `ip` (4 or 16 bytes, network order)
 * and a port. The port is stored byte by byte: sin_port is big-endian. */
static void addr_fill(cport_addr_t* out,
                      int family,
                      const uint8_t* ip,
                      unsigned port) {
  if (family == 4) {
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    memcpy(&sin.sin_addr, ip, 4);
    put16((uint8_t*)&sin.sin_port, port);
    (void)cport_addr_from_sockaddr(out, (const struct sockaddr*)&sin);
  } else {
    struct sockaddr_in6 sin6;
    memset(&sin6, 0, sizeof(sin6));
    sin6.sin6_family = AF_INET6;
    memcpy(&sin6.sin6_addr, ip, 16);
    put16((uint8_t*)&sin6.sin6_port, port);
    (void)cport_addr_from_sockaddr(out, (const struct sockaddr*)&sin6);
  }
}


/* The raw address (4 or 16 bytes) and port of `a`; returns its family, 4
 * or 6, or 0 for anything else. */
static int addr_raw(const cport_addr_t* a, uint8_t ip[16], uint8_t port[2]) {
  const struct sockaddr* sa = cport_addr_sockaddr(a);
  if (sa == NULL)
    return 0;
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in* sin = (const struct sockaddr_in*)sa;
    memcpy(ip, &sin->sin_addr, 4);
    memcpy(port, &sin->sin_port, 2);
    return 4;
  }
  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6* sin6 = (const struct sockaddr_in6*)sa;
    memcpy(ip, &sin6->sin6_addr, 16);
    memcpy(port, &sin6->sin6_port, 2);
    return 6;
  }
  return 0;
}


/* ---- TLVs ---- */

/* The sub-TLVs of an SSL TLV's value must exactly fill it, after its
 * client flags and verify result. */
static int ssl_check(const uint8_t* v, size_t len, const char** cause) {
  size_t at = SSL_HEAD;
  if (len < SSL_HEAD)
    return refuse(cause, "SSL TLV shorter than 5 bytes");
  while (at < len) {
    if (len - at < TLV_HEAD || get16(v + at + 1) > len - at - TLV_HEAD)
      return refuse(cause, "SSL sub-TLV overruns its TLV");
    at += TLV_HEAD + get16(v + at + 1);
  }
  return 0;
}


/* The TLV area `p` (`len` bytes) must be whole TLVs, exactly: a CRC32C
 * TLV of 4 bytes, at most one, and SSL TLVs whose sub-TLVs fit.
 * `*crc_at`, when non-NULL, is set to the CRC32C value's offset (or
 * left as it was when there is none). */
static int tlvs_check(const uint8_t* p,
                      size_t len,
                      size_t* crc_at,
                      const char** cause) {
  size_t at = 0;
  int crc_seen = 0;
  while (at < len) {
    size_t vlen;
    if (len - at < TLV_HEAD)
      return refuse(cause, "TLV header overruns the v2 header");
    vlen = get16(p + at + 1);
    if (vlen > len - at - TLV_HEAD)
      return refuse(cause, "TLV overruns the v2 header");
    if (p[at] == CPORT_PROXY_TLV_CRC32C) {
      if (vlen != CRC_LEN)
        return refuse(cause, "CRC32C TLV not 4 bytes");
      /* Each would cover the other's value: only one can hold. */
      if (crc_seen)
        return refuse(cause, "two CRC32C TLVs");
      crc_seen = 1;
      if (crc_at != NULL)
        *crc_at = at + TLV_HEAD;
    }
    if (p[at] == CPORT_PROXY_TLV_SSL &&
        ssl_check(p + at + TLV_HEAD, vlen, cause) != 0)
      return CPORT_EPROXY;
    at += TLV_HEAD + vlen;
  }
  return 0;
}


/* The first TLV of `type` in `p` (`len` bytes, skipping `skip` first),
 * tolerant of a malformed area: a header filled in by hand is walked only
 * as far as it holds together. */
static int tlv_find(const uint8_t* p,
                    size_t len,
                    size_t skip,
                    unsigned type,
                    const uint8_t** value,
                    size_t* vlen) {
  size_t at = skip;
  while (at < len && len - at >= TLV_HEAD) {
    size_t n = get16(p + at + 1);
    if (n > len - at - TLV_HEAD)
      break;
    if (p[at] == type) {
      *value = p + at + TLV_HEAD;
      *vlen = n;
      return 0;
    }
    at += TLV_HEAD + n;
  }
  return CPORT_ENOENT;
}


int cport_proxy_tlv(const cport_proxy_header_t* hdr,
                    unsigned type,
                    const uint8_t** value,
                    size_t* len) {
  const uint8_t* ssl;
  size_t ssl_len;
  if (hdr == NULL || value == NULL || len == NULL)
    return UV_EINVAL;
  if (hdr->version != 2 || hdr->tlvs == NULL)
    return CPORT_ENOENT;
  if (type < CPORT_PROXY_TLV_SSL_VERSION || type > CPORT_PROXY_TLV_SSL_KEY_ALG)
    return tlv_find(hdr->tlvs, hdr->tlvs_len, 0, type, value, len);
  if (tlv_find(hdr->tlvs, hdr->tlvs_len, 0, CPORT_PROXY_TLV_SSL, &ssl,
               &ssl_len) != 0)
    return CPORT_ENOENT;
  return tlv_find(ssl, ssl_len, SSL_HEAD, type, value, len);
}


int cport_proxy_tlv_foreach(
    const cport_proxy_header_t* hdr,
    int (*fn)(unsigned type, const uint8_t* value, size_t len, void* arg),
    void* arg) {
  const uint8_t* p;
  size_t at = 0;
  if (hdr == NULL || fn == NULL)
    return UV_EINVAL;
  if (hdr->version != 2 || hdr->tlvs == NULL)
    return 0;
  p = hdr->tlvs;
  while (at < hdr->tlvs_len && hdr->tlvs_len - at >= TLV_HEAD) {
    size_t n = get16(p + at + 1);
    int rc;
    if (n > hdr->tlvs_len - at - TLV_HEAD)
      break;
    rc = fn(p[at], p + at + TLV_HEAD, n, arg);
    if (rc != 0)
      return rc;
    at += TLV_HEAD + n;
  }
  return 0;
}


/* ---- version 1 ---- */

typedef enum { F_ADDR4, F_ADDR6, F_PORT } v1_kind_t;

/* Whether byte `c` may follow the `k` bytes `f` of a field of `kind`. */
static int v1_byte_ok(v1_kind_t kind, const uint8_t* f, size_t k, uint8_t c) {
  switch (kind) {
    case F_ADDR4:
      return k < V1_ADDR4_MAX && ((c >= '0' && c <= '9') || c == '.');
    case F_ADDR6:
      return k < V1_ADDR6_MAX &&
             ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
              (c >= 'A' && c <= 'F') || c == ':' || c == '.');
    case F_PORT: {
      unsigned v = 0;
      size_t i;
      if (c < '0' || c > '9' || k >= V1_PORT_MAX || (k > 0 && f[0] == '0'))
        return 0;
      for (i = 0; i < k; i++) v = v * 10 + (unsigned)(f[i] - '0');
      return v * 10 + (unsigned)(c - '0') <= 65535;
    }
  }
  return 0;
}


/* The field of `kind` at `*at`, ended by `end`, in the `n` bytes at `p`
 * (a v1 line's first bytes, at most CPORT_PROXY_V1_MAX). On 0, `*at` is
 * past `end` and the field is `*start`, `*flen` bytes. */
static int v1_field(const uint8_t* p,
                    size_t n,
                    size_t* at,
                    v1_kind_t kind,
                    uint8_t end,
                    size_t* start,
                    size_t* flen,
                    const char** cause,
                    const char* why) {
  size_t i;
  *start = *at;
  for (i = *at; i < n; i++) {
    if (p[i] == end && i > *start) {
      *flen = i - *start;
      *at = i + 1;
      return 0;
    }
    if (!v1_byte_ok(kind, p + *start, i - *start, p[i]))
      return refuse(cause, why);
  }
  return n >= CPORT_PROXY_V1_MAX ? refuse(cause, "no CRLF in 107 bytes")
                                 : CPORT_EAGAIN;
}


/* The address of `family` (4 or 6) written in the `len` bytes at `text`,
 * into `ip`. Returns 0 or CPORT_EPROXY. */
static int v1_addr(int family,
                   const uint8_t* text,
                   size_t len,
                   uint8_t ip[16],
                   const char** cause,
                   const char* why) {
  char s[V1_ADDR6_MAX + 1];
  memcpy(s, text, len); /* v1_byte_ok bounded it */
  s[len] = '\0';
  if (uv_inet_pton(family == 4 ? AF_INET : AF_INET6, s, ip) != 0)
    return refuse(cause, why);
  return 0;
}


static unsigned v1_port(const uint8_t* text, size_t len) {
  unsigned v = 0;
  size_t i;
  for (i = 0; i < len; i++) v = v * 10 + (unsigned)(text[i] - '0');
  return v;
}


/* CRLF at `at`: the line ends there. */
static int v1_crlf(const uint8_t* p, size_t n, size_t at, const char** cause) {
  if (at < n && p[at] != '\r')
    return refuse(cause, "bad byte before CRLF in v1 header");
  if (at + 1 < n && p[at + 1] != '\n')
    return refuse(cause, "CR without LF in v1 header");
  if (at + 1 < n)
    return 0;
  return n >= CPORT_PROXY_V1_MAX ? refuse(cause, "no CRLF in 107 bytes")
                                 : CPORT_EAGAIN;
}


static int v1_parse(const uint8_t* p,
                    size_t len,
                    cport_proxy_header_t* out,
                    size_t* used,
                    const char** cause) {
  static const char* const protos[3] = {"TCP4 ", "TCP6 ", "UNKNOWN"};
  size_t n = len < CPORT_PROXY_V1_MAX ? len : CPORT_PROXY_V1_MAX;
  size_t at = V1_SIG_LEN;
  size_t avail;
  size_t pos[4];
  size_t flen[4];
  uint8_t src[16];
  uint8_t dst[16];
  int which = -1;
  int partial = 0;
  int family;
  int rc;
  int i;

  rc = sig_check(p, n, V1_SIG, V1_SIG_LEN, cause, "bad v1 signature");
  if (rc != 0)
    return rc;
  avail = n - V1_SIG_LEN;
  for (i = 0; i < 3; i++) {
    size_t m = strlen(protos[i]);
    if (memcmp(p + at, protos[i], avail < m ? avail : m) != 0)
      continue;
    if (avail >= m)
      which = i;
    else
      partial = 1;
  }
  if (which < 0)
    return partial ? CPORT_EAGAIN : refuse(cause, "bad v1 protocol");
  at += strlen(protos[which]);

  if (which == 2) {
    /* "UNKNOWN", then CRLF, or a space and anything up to CRLF. */
    if (at < n && p[at] == ' ') {
      for (at++; at < n && p[at] != '\r'; at++) {
      }
    }
    rc = v1_crlf(p, n, at, cause);
    if (rc != 0)
      return rc;
    memset(out, 0, sizeof(*out));
    out->version = 1;
    out->local = 1;
    *used = at + 2;
    return 0;
  }

  family = which == 0 ? 4 : 6;
  rc = v1_field(p, n, &at, family == 4 ? F_ADDR4 : F_ADDR6, ' ', &pos[0],
                &flen[0], cause, "bad v1 source address");
  if (rc == 0)
    rc = v1_addr(family, p + pos[0], flen[0], src, cause,
                 "bad v1 source address");
  if (rc == 0)
    rc = v1_field(p, n, &at, family == 4 ? F_ADDR4 : F_ADDR6, ' ', &pos[1],
                  &flen[1], cause, "bad v1 destination address");
  if (rc == 0)
    rc = v1_addr(family, p + pos[1], flen[1], dst, cause,
                 "bad v1 destination address");
  if (rc == 0)
    rc = v1_field(p, n, &at, F_PORT, ' ', &pos[2], &flen[2], cause,
                  "bad v1 source port");
  if (rc == 0)
    rc = v1_field(p, n, &at, F_PORT, '\r', &pos[3], &flen[3], cause,
                  "bad v1 destination port");
  if (rc == 0)
    rc = v1_crlf(p, n, at - 1, cause); /* the CR is read: the LF */
  if (rc != 0)
    return rc;
  memset(out, 0, sizeof(*out));
  out->version = 1;
  addr_fill(&out->src, family, src, v1_port(p + pos[2], flen[2]));
  addr_fill(&out->dst, family, dst, v1_port(p + pos[3], flen[3]));
  *used = at + 1;
  return 0;
}


/* ---- version 2 ---- */

static int v2_parse(const uint8_t* p,
                    size_t len,
                    size_t max,
                    cport_proxy_header_t* out,
                    size_t* used,
                    const char** cause) {
  size_t addr_len;
  size_t total;
  size_t crc_at = 0;
  unsigned cmd;
  uint8_t fam;
  int rc;

  rc = sig_check(p, len, v2_sig, V2_SIG_LEN, cause, "bad v2 signature");
  if (rc != 0)
    return rc;
  if ((p[12] >> 4) != 2)
    return refuse(cause, "bad v2 version");
  cmd = p[12] & 0xF;
  if (cmd != V2_CMD_LOCAL && cmd != V2_CMD_PROXY)
    return refuse(cause, "bad v2 command");
  if (len <= 13)
    return CPORT_EAGAIN;
  fam = p[13];
  switch (fam) {
    case V2_FAM_UNSPEC:
      addr_len = 0;
      break;
    case 0x11:
    case 0x12:
      addr_len = V2_ADDR4;
      break;
    case 0x21:
    case 0x22:
      addr_len = V2_ADDR6;
      break;
    case 0x31:
    case 0x32:
      addr_len = V2_ADDRUX;
      break;
    default:
      return refuse(cause, "bad v2 address family");
  }
  /* A LOCAL header's family is discarded, as the specification says. */
  if (cmd == V2_CMD_PROXY && (fam & 0xF) == V2_TRANSPORT_DGRAM)
    return refuse(cause, "datagram family on a stream connection");
  if (len < V2_PREAMBLE)
    return CPORT_EAGAIN;
  total = V2_PREAMBLE + get16(p + 14);
  if (total > max) {
    if (cause != NULL)
      *cause = "v2 header longer than the limit";
    return CPORT_EPROXYSIZE;
  }
  if (total - V2_PREAMBLE < addr_len)
    return refuse(cause, "v2 address block too short for its family");
  if (len < total)
    return CPORT_EAGAIN;

  rc = tlvs_check(p + V2_PREAMBLE + addr_len, total - V2_PREAMBLE - addr_len,
                  &crc_at, cause);
  if (rc != 0)
    return rc;
  if (crc_at != 0) {
    static const uint8_t zero[CRC_LEN] = {0};
    size_t v = V2_PREAMBLE + addr_len + crc_at;
    uint32_t want = ((uint32_t)p[v] << 24) | ((uint32_t)p[v + 1] << 16) |
                    ((uint32_t)p[v + 2] << 8) | p[v + 3];
    uint32_t crc = cport__crc32c(0, p, v);
    crc = cport__crc32c(crc, zero, CRC_LEN);
    crc = cport__crc32c(crc, p + v + CRC_LEN, total - v - CRC_LEN);
    if (crc != want)
      return refuse(cause, "CRC32C mismatch");
  }

  memset(out, 0, sizeof(*out));
  out->version = 2;
  if (cmd == V2_CMD_PROXY && fam == V2_FAM_TCP4) {
    addr_fill(&out->src, 4, p + 16, get16(p + 24));
    addr_fill(&out->dst, 4, p + 20, get16(p + 26));
  } else if (cmd == V2_CMD_PROXY && fam == V2_FAM_TCP6) {
    addr_fill(&out->src, 6, p + 16, get16(p + 48));
    addr_fill(&out->dst, 6, p + 32, get16(p + 50));
  } else {
    out->local = 1;
  }
  out->tlvs_len = total - V2_PREAMBLE - addr_len;
  out->tlvs = out->tlvs_len > 0 ? p + V2_PREAMBLE + addr_len : NULL;
  *used = total;
  return 0;
}


int cport_proxy_parse(const void* data,
                      size_t len,
                      cport_proxy_t accept,
                      size_t max,
                      cport_proxy_header_t* out,
                      size_t* used,
                      const char** cause) {
  const uint8_t* p = data;
  if (data == NULL || out == NULL || used == NULL ||
      (accept != CPORT_PROXY_V1 && accept != CPORT_PROXY_V2 &&
       accept != CPORT_PROXY_ANY))
    return UV_EINVAL;
  if (max == 0)
    max = CPORT_PROXY_V2_MAX;
  if (len == 0)
    return CPORT_EAGAIN;
  /* The signatures differ in their first byte. */
  if (p[0] == 'P' && accept != CPORT_PROXY_V2)
    return v1_parse(p, len, out, used, cause);
  if (p[0] == v2_sig[0] && accept != CPORT_PROXY_V1)
    return v2_parse(p, len, max, out, used, cause);
  return refuse(cause, accept == CPORT_PROXY_V1   ? "not a PROXY v1 header"
                       : accept == CPORT_PROXY_V2 ? "not a PROXY v2 header"
                                                  : "not a PROXY header");
}


/* ---- building ---- */

static int v1_encode(uint8_t* buf,
                     size_t size,
                     const cport_addr_t* src,
                     const cport_addr_t* dst,
                     int family) {
  char line[CPORT_PROXY_V1_MAX + 1];
  char s[CPORT_ADDR_STRLEN];
  char d[CPORT_ADDR_STRLEN];
  int n;
  if (src == NULL) {
    n = snprintf(line, sizeof(line), "PROXY UNKNOWN\r\n");
  } else {
    if (cport_addr_format_host(src, s, sizeof(s)) != 0 ||
        cport_addr_format_host(dst, d, sizeof(d)) != 0)
      return UV_EINVAL;
    n = snprintf(line, sizeof(line), "PROXY TCP%d %s %s %d %d\r\n", family, s,
                 d, cport_addr_port(src), cport_addr_port(dst));
  }
  if (n < 0 || (size_t)n >= sizeof(line))
    return UV_EINVAL;
  if ((size_t)n > size)
    return UV_ENOSPC;
  memcpy(buf, line, (size_t)n);
  return n;
}


static int v2_encode(uint8_t* buf,
                     size_t size,
                     const cport_addr_t* src,
                     const cport_addr_t* dst,
                     const uint8_t* tlvs,
                     size_t tlvs_len,
                     int crc) {
  /* Zeroed: MinGW's gcc cannot see that src != NULL fills them. */
  uint8_t sip[16] = {0};
  uint8_t dip[16] = {0};
  uint8_t sport[2] = {0};
  uint8_t dport[2] = {0};
  size_t ip_len = 0;
  size_t addr_len = 0;
  size_t total;
  size_t crc_at = 0;
  size_t at;

  if (tlvs_check(tlvs, tlvs_len, &crc_at, NULL) != 0 || crc_at != 0)
    return UV_EINVAL; /* malformed, or a CRC32C of its own: use `crc` */
  if (src != NULL) {
    ip_len = addr_raw(src, sip, sport) == 4 ? 4 : 16;
    (void)addr_raw(dst, dip, dport);
    addr_len = ip_len == 4 ? V2_ADDR4 : V2_ADDR6;
  }
  if (tlvs_len > 65535 - addr_len - (crc ? TLV_HEAD + CRC_LEN : 0))
    return UV_EINVAL;
  total = V2_PREAMBLE + addr_len + tlvs_len + (crc ? TLV_HEAD + CRC_LEN : 0);
  if (total > size)
    return UV_ENOSPC;

  memcpy(buf, v2_sig, V2_SIG_LEN);
  buf[12] = src != NULL ? 0x20 | V2_CMD_PROXY : 0x20 | V2_CMD_LOCAL;
  buf[13] = src == NULL   ? V2_FAM_UNSPEC
            : ip_len == 4 ? V2_FAM_TCP4
                          : V2_FAM_TCP6;
  put16(buf + 14, (unsigned)(total - V2_PREAMBLE));
  at = V2_PREAMBLE;
  if (src != NULL) {
    memcpy(buf + at, sip, ip_len);
    memcpy(buf + at + ip_len, dip, ip_len);
    memcpy(buf + at + 2 * ip_len, sport, 2);
    memcpy(buf + at + 2 * ip_len + 2, dport, 2);
    at += addr_len;
  }
  if (tlvs_len > 0)
    memcpy(buf + at, tlvs, tlvs_len);
  at += tlvs_len;
  if (crc) {
    uint32_t sum;
    buf[at] = CPORT_PROXY_TLV_CRC32C;
    put16(buf + at + 1, CRC_LEN);
    memset(buf + at + TLV_HEAD, 0, CRC_LEN);
    sum = cport__crc32c(0, buf, total);
    put16(buf + at + TLV_HEAD, (unsigned)(sum >> 16));
    put16(buf + at + TLV_HEAD + 2, (unsigned)(sum & 0xFFFF));
  }
  return (int)total;
}


int cport_proxy_encode(void* buf,
                       size_t size,
                       cport_proxy_t version,
                       const cport_addr_t* src,
                       const cport_addr_t* dst,
                       const void* tlvs,
                       size_t tlvs_len,
                       int crc) {
  int family = 0;
  if (buf == NULL || (src == NULL) != (dst == NULL) ||
      (tlvs == NULL && tlvs_len > 0))
    return UV_EINVAL;
  if (src != NULL) {
    uint8_t ip[16];
    uint8_t port[2];
    family = addr_raw(src, ip, port);
    if (family == 0 || addr_raw(dst, ip, port) != family)
      return UV_EINVAL;
  }
  if (version == CPORT_PROXY_V1) {
    if (tlvs_len > 0 || crc)
      return UV_EINVAL;
    return v1_encode(buf, size, src, dst, family);
  }
  if (version == CPORT_PROXY_V2)
    return v2_encode(buf, size, src, dst, tlvs, tlvs_len, crc);
  return UV_EINVAL;
}


/* ---- the allow-list ---- */

static int is_space(char c) {
  return c == ' ' || c == '\t';
}


/* One item, `len` bytes at `s`, without surrounding spaces. */
static int net_parse(const char* s,
                     size_t len,
                     cport__proxy_net_t* net,
                     const char** cause) {
  char text[V1_ADDR6_MAX + 1];
  const char* slash = memchr(s, '/', len);
  size_t alen = slash != NULL ? (size_t)(slash - s) : len;
  unsigned max_bits;
  unsigned bits;
  unsigned i;

  if (alen == 0 || alen > V1_ADDR6_MAX)
    goto bad_addr;
  memcpy(text, s, alen);
  text[alen] = '\0';
  memset(net, 0, sizeof(*net));
  if (uv_inet_pton(AF_INET, text, net->addr) == 0) {
    net->family = 4;
    max_bits = 32;
  } else if (uv_inet_pton(AF_INET6, text, net->addr) == 0 &&
             strchr(text, '%') == NULL) {
    net->family = 6;
    max_bits = 128;
  } else {
    goto bad_addr;
  }
  bits = max_bits;
  if (slash != NULL) {
    size_t dlen = len - alen - 1;
    if (dlen == 0 || dlen > 3)
      goto bad_bits;
    bits = 0;
    for (i = 0; i < dlen; i++) {
      if (slash[1 + i] < '0' || slash[1 + i] > '9')
        goto bad_bits;
      bits = bits * 10 + (unsigned)(slash[1 + i] - '0');
    }
    if (bits > max_bits)
      goto bad_bits;
  }
  net->bits = (uint8_t)bits;
  for (i = bits; i < max_bits; i++)
    if (net->addr[i / 8] & (0x80 >> (i % 8))) {
      if (cause != NULL)
        *cause = "address has bits set past its prefix length";
      return UV_EINVAL;
    }
  return 0;

bad_addr:
  if (cause != NULL)
    *cause = "bad address";
  return UV_EINVAL;
bad_bits:
  if (cause != NULL)
    *cause = "bad prefix length";
  return UV_EINVAL;
}


int cport__proxy_nets_parse(const char* text,
                            cport__proxy_net_t** out,
                            size_t* count,
                            const char** cause) {
  cport__proxy_net_t* nets;
  const char* s;
  size_t n = 1;
  size_t i = 0;
  if (text == NULL || out == NULL || count == NULL) {
    if (cause != NULL)
      *cause = "no list";
    return UV_EINVAL;
  }
  for (s = text; is_space(*s); s++) {
  }
  if (*s == '\0') {
    if (cause != NULL)
      *cause = "empty list";
    return UV_EINVAL;
  }
  for (s = text; *s != '\0'; s++) n += *s == ',';
  nets = cport__malloc(n * sizeof(*nets));
  if (nets == NULL)
    return UV_ENOMEM;
  for (s = text; i < n; i++) {
    const char* end = strchr(s, ',');
    const char* after;
    int rc;
    if (end == NULL)
      end = s + strlen(s);
    after = *end == ',' ? end + 1 : end;
    while (s < end && is_space(*s)) s++;
    while (end > s && is_space(end[-1])) end--;
    if (s == end) {
      if (cause != NULL)
        *cause = "empty item";
      cport__free(nets);
      return UV_EINVAL;
    }
    rc = net_parse(s, (size_t)(end - s), &nets[i], cause);
    if (rc != 0) {
      cport__free(nets);
      return rc;
    }
    s = after;
  }
  *out = nets;
  *count = n;
  return 0;
}


static int net_has(const cport__proxy_net_t* net, const uint8_t* ip) {
  unsigned full = net->bits / 8u;
  unsigned rest = net->bits % 8u;
  uint8_t mask;
  if (memcmp(net->addr, ip, full) != 0)
    return 0;
  if (rest == 0)
    return 1;
  mask = (uint8_t)(0xFF << (8 - rest));
  return (net->addr[full] & mask) == (ip[full] & mask);
}


int cport__proxy_nets_match(const cport__proxy_net_t* nets,
                            size_t count,
                            const struct sockaddr* sa) {
  static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
  const uint8_t* ip4 = NULL;
  const uint8_t* ip6 = NULL;
  size_t i;
  if (nets == NULL || sa == NULL)
    return 0;
  if (sa->sa_family == AF_INET) {
    ip4 = (const uint8_t*)&((const struct sockaddr_in*)sa)->sin_addr;
  } else if (sa->sa_family == AF_INET6) {
    ip6 = (const uint8_t*)&((const struct sockaddr_in6*)sa)->sin6_addr;
    if (memcmp(ip6, mapped, sizeof(mapped)) == 0)
      ip4 = ip6 + sizeof(mapped);
  }
  for (i = 0; i < count; i++) {
    if (nets[i].family == 4 && ip4 != NULL && net_has(&nets[i], ip4))
      return 1;
    if (nets[i].family == 6 && ip6 != NULL && net_has(&nets[i], ip6))
      return 1;
  }
  return 0;
}
