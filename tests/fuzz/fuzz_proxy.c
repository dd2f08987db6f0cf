/* libFuzzer target: the PROXY protocol parser (src/proxy.c) on arbitrary
 * bytes, whole and in pieces, with the encoder and the TLV lookup checked
 * against it and against a TLV walker written here. docs/fuzzing.md has
 * the overview.
 *
 * Input layout. A byte past the end reads as 0, so every input is valid.
 *
 *   [0]    flags  bits 0-1, the versions accepted: 1 V1, 2 V2, else ANY.
 *                 bit 2: fill in the value of every 4-byte CRC32C TLV the
 *                 walker here finds, as a balancer would, so that the
 *                 fuzzer gets past the checksum.
 *   [1]    max    0: the default limit; else this times 8 bytes.
 *   [2]    S      then S bytes: the sizes of the pieces the bytes arrive
 *                 in (0 counts as 1), used in turn and then again from
 *                 the first. S = 0: no pieces, only the whole.
 *   rest          the bytes received.
 *
 * The oracle. Every call is given a heap block of exactly the bytes it
 * may read, so AddressSanitizer sees any read past `len`. The answer is 0,
 * CPORT_EAGAIN, CPORT_EPROXY or CPORT_EPROXYSIZE, a refusal with a cause,
 * and anything but 0 writes nothing. On 0: `used` is at most `len` (107
 * at most for v1), the TLVs end the header, a header names a client
 * exactly when it is not local; parsing exactly `used` bytes gives the
 * same header; every shorter prefix gives CPORT_EAGAIN (each up to 128
 * bytes, then a sample); the version alone and `max` = `used` take it,
 * the other version and `max` = `used` - 1 (v2) do not; every TLV the
 * walker finds is what cport_proxy_tlv finds first for its type (SSL
 * sub-TLVs too) and what cport_proxy_tlv_foreach visits, in order; and
 * cport_proxy_encode of the header's addresses and TLVs (a CRC32C TLV
 * asked for with `crc`) parses back to the same addresses and TLVs. Fed
 * in pieces, every prefix at a piece's end answers CPORT_EAGAIN, or what
 * the whole answers (the same `used`), and once it has answered that it
 * never waits again. */
#include <stdlib.h>
#include <string.h>

#define FUZZ_NAME "fuzz_proxy"
#include "fuzz_common.h"

#include "proxy_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

/* Exhaustive prefixes up to here, then a sample. */
#define PREFIX_ALL 128
#define PREFIX_STEP 61


/* ---- the walker ---- */

typedef struct tlv_s {
  unsigned type;
  const uint8_t* value;
  size_t len;
} tlv_t;

/* The TLVs of the `len` bytes at `p`, skipping `skip` first, into `out`
 * (room for `room`). Returns how many; stops where one does not fit. */
static size_t walk(
    const uint8_t* p, size_t len, size_t skip, tlv_t* out, size_t room) {
  size_t at = skip;
  size_t n = 0;
  while (n < room && at + 3 <= len) {
    size_t vlen = ((size_t)p[at + 1] << 8) | p[at + 2];
    if (at + 3 + vlen > len)
      break;
    out[n].type = p[at];
    out[n].value = p + at + 3;
    out[n].len = vlen;
    n++;
    at += 3 + vlen;
  }
  return n;
}

/* The `len` bytes at `s` taken as a v2 header: fill each 4-byte CRC32C
 * TLV, with its own value zeroed while summed. Anything else: left. */
static void fill_crc(uint8_t* s, size_t len) {
  static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                  0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
  size_t total;
  size_t addr;
  size_t at;
  if (len < 16 || memcmp(s, sig, 12) != 0)
    return;
  total = 16 + (((size_t)s[14] << 8) | s[15]);
  switch (s[13] >> 4) {
    case 1:
      addr = 12;
      break;
    case 2:
      addr = 36;
      break;
    case 3:
      addr = 216;
      break;
    default:
      addr = 0;
      break;
  }
  if (total > len || 16 + addr > total)
    return;
  for (at = 16 + addr; at + 3 <= total;) {
    size_t vlen = ((size_t)s[at + 1] << 8) | s[at + 2];
    if (at + 3 + vlen > total)
      return;
    if (s[at] == CPORT_PROXY_TLV_CRC32C && vlen == 4) {
      uint32_t c;
      memset(s + at + 3, 0, 4);
      c = cport__crc32c(0, s, total);
      s[at + 3] = (uint8_t)(c >> 24);
      s[at + 4] = (uint8_t)(c >> 16);
      s[at + 5] = (uint8_t)(c >> 8);
      s[at + 6] = (uint8_t)c;
    }
    at += 3 + vlen;
  }
}


/* ---- parsing exactly what may be read ---- */

typedef struct result_s {
  int rc;
  size_t used;
  cport_proxy_header_t h;
  size_t tlvs_at; /* the TLVs' offset in the bytes parsed */
} result_t;

/* Parse the first `k` bytes of `s` from the end of a block of exactly
 * `k` bytes. The header's TLV pointer is turned into an offset, as the
 * block is freed. */
static result_t parse_k(const uint8_t* s,
                        size_t k,
                        cport_proxy_t accept,
                        size_t max) {
  result_t r;
  const char* cause = NULL;
  uint8_t* block = malloc(k > 0 ? k : 1);
  if (block == NULL)
    fail("out of memory");
  memcpy(block, s, k);
  memset(&r, 0, sizeof(r));
  memset(&r.h, 0xA5, sizeof(r.h));
  r.used = 0xA5A5;
  r.rc = cport_proxy_parse(block, k, accept, max, &r.h, &r.used, &cause);
  switch (r.rc) {
    case 0:
      if (r.h.tlvs != NULL) {
        if (r.h.tlvs < block || r.h.tlvs + r.h.tlvs_len > block + r.used)
          fail("TLVs outside the header");
        r.tlvs_at = (size_t)(r.h.tlvs - block);
      } else if (r.h.tlvs_len != 0) {
        fail("%zu TLV bytes and no pointer", r.h.tlvs_len);
      }
      break;
    case CPORT_EPROXY:
    case CPORT_EPROXYSIZE:
      if (cause == NULL || cause[0] == '\0')
        fail("refusal %d of %zu bytes without a cause", r.rc, k);
      /* fall through */
    case CPORT_EAGAIN: {
      size_t i;
      for (i = 0; i < sizeof(r.h); i++)
        if (((const uint8_t*)&r.h)[i] != 0xA5)
          fail("answer %d wrote the header", r.rc);
      if (r.used != 0xA5A5)
        fail("answer %d wrote `used`", r.rc);
      break;
    }
    default:
      fail("cport_proxy_parse answered %d", r.rc);
  }
  free(block);
  return r;
}

static int same_result(const result_t* a, const result_t* b) {
  if (a->rc != b->rc)
    return 0;
  if (a->rc != 0)
    return 1;
  return a->used == b->used && a->h.version == b->h.version &&
         a->h.local == b->h.local &&
         memcmp(&a->h.src, &b->h.src, sizeof(a->h.src)) == 0 &&
         memcmp(&a->h.dst, &b->h.dst, sizeof(a->h.dst)) == 0 &&
         a->h.tlvs_len == b->h.tlvs_len && a->tlvs_at == b->tlvs_at;
}

/* The same address, or both unset. */
static int same_addr(const cport_addr_t* a, const cport_addr_t* b) {
  char x[CPORT_ADDR_STRLEN];
  char y[CPORT_ADDR_STRLEN];
  int ra = cport_addr_format(a, x, sizeof(x));
  int rb = cport_addr_format(b, y, sizeof(y));
  if (ra != 0 || rb != 0)
    return ra == rb;
  return strcmp(x, y) == 0 && cport_addr_family(a) == cport_addr_family(b);
}


/* ---- the checks of an accepted header ---- */

typedef struct visit_s {
  const tlv_t* want;
  size_t n;
  size_t seen;
  size_t stop_at;
} visit_t;

static int visit(unsigned type, const uint8_t* value, size_t len, void* arg) {
  visit_t* v = arg;
  if (v->seen >= v->n)
    fail("foreach visits more than the %zu TLVs", v->n);
  if (type != v->want[v->seen].type || value != v->want[v->seen].value ||
      len != v->want[v->seen].len)
    fail("foreach's TLV %zu is not the walker's", v->seen);
  v->seen++;
  return v->seen == v->stop_at ? 7 : 0;
}

/* What cport_proxy_tlv finds for each type is the walker's first. */
static void check_tlvs(const cport_proxy_header_t* h) {
  static tlv_t tl[65536 / 3 + 1];
  static tlv_t sub[65536 / 3 + 1];
  size_t n = 0;
  size_t nsub = 0;
  size_t i;
  unsigned type;
  visit_t v;
  int rc;
  if (h->tlvs != NULL)
    n = walk(h->tlvs, h->tlvs_len, 0, tl, sizeof(tl) / sizeof(tl[0]));
  for (i = 0; i < n; i++)
    if (tl[i].type == CPORT_PROXY_TLV_SSL) {
      if (tl[i].len < 5)
        fail("an SSL TLV of %zu bytes was taken", tl[i].len);
      nsub = walk(tl[i].value, tl[i].len, 5, sub, sizeof(sub) / sizeof(sub[0]));
      break;
    }
  for (type = 0; type < 256; type++) {
    const uint8_t* value = NULL;
    size_t len = 0;
    const tlv_t* list = tl;
    size_t count = n;
    const tlv_t* first = NULL;
    if (type >= CPORT_PROXY_TLV_SSL_VERSION &&
        type <= CPORT_PROXY_TLV_SSL_KEY_ALG) {
      list = sub;
      count = nsub;
    }
    for (i = 0; i < count && first == NULL; i++)
      if (list[i].type == type)
        first = &list[i];
    rc = cport_proxy_tlv(h, type, &value, &len);
    if (first == NULL ? rc != CPORT_ENOENT
                      : rc != 0 || value != first->value || len != first->len)
      fail("cport_proxy_tlv(0x%02x) answered %d, not the walker's", type, rc);
  }
  memset(&v, 0, sizeof(v));
  v.want = tl;
  v.n = n;
  if (cport_proxy_tlv_foreach(h, visit, &v) != 0 || v.seen != n)
    fail("foreach visited %zu TLVs of %zu", v.seen, n);
  if (n >= 2) {
    memset(&v, 0, sizeof(v));
    v.want = tl;
    v.n = n;
    v.stop_at = 2;
    if (cport_proxy_tlv_foreach(h, visit, &v) != 7 || v.seen != 2)
      fail("foreach went on after a non-zero answer");
  }
}

/* Build the header again and parse it back. */
static void check_encode(const cport_proxy_header_t* h) {
  static uint8_t tlvs[65536];
  static uint8_t buf[16 + 65536];
  static tlv_t tl[65536 / 3 + 1];
  const cport_addr_t* src = h->local ? NULL : &h->src;
  const cport_addr_t* dst = h->local ? NULL : &h->dst;
  size_t n = 0;
  size_t len = 0;
  size_t i;
  int crc = 0;
  int v;
  if (h->tlvs != NULL)
    n = walk(h->tlvs, h->tlvs_len, 0, tl, sizeof(tl) / sizeof(tl[0]));
  /* The checksum is the encoder's to add. */
  for (i = 0; i < n; i++) {
    if (tl[i].type == CPORT_PROXY_TLV_CRC32C) {
      crc = 1;
      continue;
    }
    memcpy(tlvs + len, tl[i].value - 3, 3 + tl[i].len);
    len += 3 + tl[i].len;
  }
  for (v = 1; v <= 2; v++) {
    cport_proxy_header_t back;
    size_t used = 0;
    int rc;
    int w;
    if (v == 1 && h->version == 2 && len > 0)
      continue; /* v1 carries no TLVs */
    w = cport_proxy_encode(buf, sizeof(buf), (cport_proxy_t)v, src, dst,
                           v == 2 ? tlvs : NULL, v == 2 ? len : 0,
                           v == 2 && crc);
    if (w <= 0 || (v == 1 && w > CPORT_PROXY_V1_MAX))
      fail("cport_proxy_encode v%d of a parsed header: %d", v, w);
    rc = cport_proxy_parse(buf, (size_t)w, CPORT_PROXY_ANY, 0, &back, &used,
                           NULL);
    if (rc != 0 || used != (size_t)w || back.version != v)
      fail("the v%d header built does not parse back (%d)", v, rc);
    if (back.local != h->local || !same_addr(&back.src, &h->src) ||
        !same_addr(&back.dst, &h->dst))
      fail("the v%d header built names other addresses", v);
    if (v == 2 && (back.tlvs_len != len + (crc ? 7u : 0u) ||
                   (len > 0 && memcmp(back.tlvs, tlvs, len) != 0)))
      fail("the v2 header built carries other TLVs");
  }
}

static void check_accepted(const uint8_t* s,
                           const result_t* r,
                           cport_proxy_t accept,
                           size_t max,
                           const cport_proxy_header_t* h) {
  cport_proxy_t other;
  result_t again;
  size_t k;
  if (r->used == 0 || (r->h.version != 1 && r->h.version != 2))
    fail("version %d header of %zu bytes", r->h.version, r->used);
  if (r->h.version == 1 && (r->used > CPORT_PROXY_V1_MAX || r->h.tlvs_len > 0))
    fail("a v1 header of %zu bytes, %zu TLV bytes", r->used, r->h.tlvs_len);
  if (r->h.tlvs_len > 0 && r->tlvs_at + r->h.tlvs_len != r->used)
    fail("the TLVs do not end the header");
  if (r->h.local != (cport_addr_sockaddr(&r->h.src) == NULL) ||
      r->h.local != (cport_addr_sockaddr(&r->h.dst) == NULL))
    fail("local %d, and the addresses say otherwise", r->h.local);
  again = parse_k(s, r->used, accept, max);
  if (!same_result(&again, r))
    fail("exactly the %zu bytes used parse otherwise (%d)", r->used, again.rc);
  for (k = 0; k < r->used; k++) {
    if (k > PREFIX_ALL && k + 1 < r->used && k % PREFIX_STEP != 0)
      continue;
    if (parse_k(s, k, accept, max).rc != CPORT_EAGAIN)
      fail("the prefix of %zu bytes of a %zu-byte header does not wait", k,
           r->used);
  }
  /* The version alone takes it, the other refuses it at once. */
  again = parse_k(s, r->used, (cport_proxy_t)r->h.version, max);
  if (!same_result(&again, r))
    fail("accept = v%d alone answers %d", r->h.version, again.rc);
  other = r->h.version == 1 ? CPORT_PROXY_V2 : CPORT_PROXY_V1;
  if (parse_k(s, 1, other, max).rc != CPORT_EPROXY)
    fail("the other version's parser waits for more of a v%d header",
         r->h.version);
  /* `max` bounds a v2 header, and never a v1 line. */
  again = parse_k(s, r->used, accept, r->h.version == 1 ? 1 : r->used);
  if (!same_result(&again, r))
    fail("max = %zu refuses a v%d header of that size",
         r->h.version == 1 ? (size_t)1 : r->used, r->h.version);
  if (r->h.version == 2 && r->used > 1 &&
      parse_k(s, r->used, accept, r->used - 1).rc != CPORT_EPROXYSIZE)
    fail("max = %zu takes a v2 header of %zu bytes", r->used - 1, r->used);
  check_tlvs(h);
  check_encode(h);
}


int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  input_t in = {data, size, 0};
  uint8_t flags = input_byte(&in);
  uint8_t max_sel = input_byte(&in);
  size_t pieces_len;
  const uint8_t* pieces = input_take(&in, input_byte(&in), &pieces_len);
  size_t len = size - in.at;
  cport_proxy_t accept = (flags & 3) == 1   ? CPORT_PROXY_V1
                         : (flags & 3) == 2 ? CPORT_PROXY_V2
                                            : CPORT_PROXY_ANY;
  size_t max = (size_t)max_sel * 8;
  uint8_t* s = malloc(len > 0 ? len : 1);
  result_t whole;
  int answered = 0;
  size_t fed = 0;
  size_t i = 0;

  if (s == NULL)
    fail("out of memory");
  memcpy(s, data + in.at, len);
  if (flags & 4)
    fill_crc(s, len);

  whole = parse_k(s, len, accept, max);
  if (whole.rc == 0) {
    /* The TLV and encoder checks need the header's own pointers. */
    cport_proxy_header_t h;
    size_t used;
    if (cport_proxy_parse(s, len, accept, max, &h, &used, NULL) != 0)
      fail("the second parse of the same bytes differs");
    check_accepted(s, &whole, accept, max, &h);
  }

  /* In pieces: a session parses all it has after each read. */
  while (pieces_len > 0 && fed < len) {
    size_t n = pieces[i++ % pieces_len];
    result_t r;
    fed += n == 0 ? 1 : n;
    if (fed > len)
      fed = len;
    r = parse_k(s, fed, accept, max);
    if (r.rc == CPORT_EAGAIN) {
      if (answered)
        fail("%zu bytes wait, after fewer were answered", fed);
      continue;
    }
    if (!same_result(&r, &whole))
      fail("%zu bytes answer %d (used %zu), all %zu answer %d (used %zu)", fed,
           r.rc, r.rc == 0 ? r.used : 0, len, whole.rc,
           whole.rc == 0 ? whole.used : 0);
    answered = 1;
  }
  free(s);
  return 0;
}
