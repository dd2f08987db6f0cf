/* Packets: header layouts, the framer and the receive buffer driven with
 * every split of a stream, bad headers, and packet sessions over loopback. */
#include "fixture.h"

#include <stdlib.h>
#include <string.h>

#include "packet_internal.h"
#include "recv_buf.h"

/* Every layout: length 2 or 4 bytes, either byte order, counting the
 * header or not, with or without an id. */
#define LAYOUTS 16

static cport_packet_format_t layout(unsigned i) {
  cport_packet_format_t f;
  cport_packet_format_init(&f);
  f.length_size = (i & 1) ? 4 : 2;
  f.big_endian = (i & 2) != 0;
  f.length_includes_header = (i & 4) != 0;
  f.has_id = (i & 8) != 0;
  f.max_packet = 4096;
  return f;
}


/* A stream of `n` packets of sizes 0, 1, 2, ... payload bytes in `f`,
 * ids 7, 8, ... (0 without an id field). */
static void build_stream(const cport_packet_format_t* f,
                         unsigned n,
                         bytes_t* out) {
  unsigned i;
  for (i = 0; i < n; i++) {
    uint8_t hdr[CPORT__PACKET_HEADER_MAX];
    uint8_t payload[64];
    size_t len = i % 40;
    int h;
    fill_pattern(payload, len, i);
    h = cport__packet_header(f, f->has_id ? 7 + i : 0, len, hdr);
    assert_true(h > 0);
    bytes_append(out, hdr, (size_t)h);
    bytes_append(out, payload, len);
  }
}


/* ---- what a consumer records ---- */

typedef struct got_s {
  const cport_packet_format_t* fmt;
  unsigned packets;
  int bad;        /* a packet differed from build_stream's */
  int stop_every; /* ask to stop after every Nth packet (0: never) */
  int error;      /* the framer's error, once */
} got_t;

static int got_packet(void* ctx,
                      unsigned id,
                      const uint8_t* payload,
                      size_t len) {
  got_t* g = ctx;
  uint8_t want[64];
  unsigned i = g->packets++;
  size_t want_len = i % 40;
  fill_pattern(want, want_len, i);
  if (id != (g->fmt->has_id ? 7 + i : 0) || len != want_len ||
      (len > 0 && memcmp(payload, want, len) != 0))
    g->bad = 1;
  return g->stop_every > 0 && g->packets % (unsigned)g->stop_every == 0;
}

static long got_consume(void* ctx, const uint8_t* data, size_t len) {
  got_t* g = ctx;
  long n = cport__packet_consume(g->fmt, data, len, got_packet, g);
  if (n < 0) {
    g->error = (int)n;
    return CPORT__RECV_STOP;
  }
  return n;
}

static size_t got_need(void* ctx, const uint8_t* data, size_t len) {
  got_t* g = ctx;
  return cport__packet_need(g->fmt, data, len);
}

static const cport__recv_ops_t got_ops = {got_consume, got_need};


/* Feed `stream` in pieces of `step` bytes (0: all at once), each copied to
 * a block of its own size so that a read past it is caught by ASan. */
static void feed_in_steps(got_t* g,
                          const bytes_t* stream,
                          size_t step,
                          cport__rbuf_t** kept) {
  size_t at = 0;
  size_t limit = g->fmt->max_packet + 65536;
  while (at < stream->len) {
    size_t n = step == 0 || step > stream->len - at ? stream->len - at : step;
    uint8_t* piece = malloc(n);
    assert_non_null(piece);
    memcpy(piece, stream->data + at, n);
    assert_int_equal(cport__recv_feed(kept, limit, piece, n, &got_ops, g), 0);
    /* A stop leaves whole packets kept: present them until none is left,
     * as a session does when a pause ends. */
    while (g->stop_every > 0 && *kept != NULL) {
      unsigned before = g->packets;
      assert_int_equal(cport__recv_feed(kept, limit, NULL, 0, &got_ops, g), 0);
      if (g->packets == before)
        break;
    }
    free(piece);
    at += n;
  }
}


static void test_packet_default_layout_is_the_lectures(void** state) {
  cport_packet_format_t f;
  uint8_t hdr[CPORT__PACKET_HEADER_MAX];
  (void)state;
  cport_packet_format_init(&f);
  assert_int_equal(f.length_size, 2);
  assert_int_equal(f.big_endian, 0);
  assert_int_equal(f.length_includes_header, 1);
  assert_int_equal(f.has_id, 1);
  assert_int_equal(f.max_packet, 65535);
  assert_int_equal(cport_packet_header_size(&f), 4);
  /* { uint16 size = 4 + 3; uint16 id = 0x0102; } little endian */
  assert_int_equal(cport__packet_header(&f, 0x0102, 3, hdr), 4);
  assert_int_equal(hdr[0], 7);
  assert_int_equal(hdr[1], 0);
  assert_int_equal(hdr[2], 0x02);
  assert_int_equal(hdr[3], 0x01);
}


static void test_packet_header_bytes_of_each_layout(void** state) {
  cport_packet_format_t f;
  uint8_t hdr[CPORT__PACKET_HEADER_MAX];
  static const uint8_t be4_excl_id[] = {0, 0, 1, 0x2C, 0xAB, 0xCD};
  static const uint8_t le4_incl[] = {0x30, 1, 0, 0};
  (void)state;
  cport_packet_format_init(&f);
  f.length_size = 4;
  f.big_endian = 1;
  f.length_includes_header = 0;
  f.max_packet = 1000;
  assert_int_equal(cport_packet_header_size(&f), 6);
  assert_int_equal(cport__packet_header(&f, 0xABCD, 300, hdr), 6);
  assert_memory_equal(hdr, be4_excl_id, 6);
  f.big_endian = 0;
  f.length_includes_header = 1;
  f.has_id = 0;
  assert_int_equal(cport__packet_header(&f, 0, 300, hdr), 4);
  assert_memory_equal(hdr, le4_incl, 4); /* 304 = 0x130 */
}


static void test_packet_format_check_rejects_bad_layouts(void** state) {
  cport_packet_format_t f;
  (void)state;
  assert_int_equal(cport_packet_format_check(NULL), UV_EINVAL);
  assert_int_equal(cport_packet_header_size(NULL), 0);
  cport_packet_format_init(&f);
  assert_int_equal(cport_packet_format_check(&f), 0);
  f.length_size = 3;
  assert_int_equal(cport_packet_format_check(&f), UV_EINVAL);
  assert_int_equal(cport_packet_header_size(&f), 0);
  f.length_size = 2;
  f.max_packet = 3; /* below the 4-byte header */
  assert_int_equal(cport_packet_format_check(&f), UV_EINVAL);
  f.max_packet = 4;
  assert_int_equal(cport_packet_format_check(&f), 0);
#if SIZE_MAX > UINT32_MAX
  f.max_packet = (size_t)UINT32_MAX + 1;
  assert_int_equal(cport_packet_format_check(&f), UV_EINVAL);
#endif
}


static void test_packet_send_side_refuses_what_it_cannot_frame(void** state) {
  cport_packet_format_t f;
  uint8_t hdr[CPORT__PACKET_HEADER_MAX];
  (void)state;
  cport_packet_format_init(&f);
  assert_int_equal(cport__packet_header(&f, 65536, 0, hdr), UV_EINVAL);
  assert_int_equal(cport__packet_header(&f, 65535, 65531, hdr), 4);
  assert_int_equal(cport__packet_header(&f, 1, 65532, hdr), CPORT_EPACKETSIZE);
  /* The length field is the bound even when max_packet is larger. */
  f.max_packet = 100000;
  assert_int_equal(cport__packet_header(&f, 1, 65532, hdr), CPORT_EPACKETSIZE);
  f.length_includes_header = 0;
  assert_int_equal(cport__packet_header(&f, 1, 65535, hdr), 4);
  assert_int_equal(cport__packet_header(&f, 1, 65536, hdr), CPORT_EPACKETSIZE);
  f.has_id = 0;
  assert_int_equal(cport__packet_header(&f, 1, 0, hdr), UV_EINVAL);
  assert_int_equal(cport__packet_header(&f, 0, 0, hdr), 2);
}


static void test_packet_every_layout_every_split(void** state) {
  unsigned i;
  (void)state;
  for (i = 0; i < LAYOUTS; i++) {
    cport_packet_format_t f = layout(i);
    bytes_t stream = {0};
    size_t step;
    build_stream(&f, 60, &stream);
    /* 0 is all at once; then every piece size from 1 byte up to more than
     * the longest packet. */
    for (step = 0; step <= 50; step++) {
      got_t g = {&f, 0, 0, 0, 0};
      cport__rbuf_t* kept = NULL;
      feed_in_steps(&g, &stream, step, &kept);
      if (g.packets != 60 || g.bad || g.error != 0 || kept != NULL)
        fail_msg("layout %u, pieces of %zu: %u packets, bad %d, error %d", i,
                 step, g.packets, g.bad, g.error);
    }
    bytes_free(&stream);
  }
}


static void test_packet_random_splits_and_stops(void** state) {
  unsigned i;
  uint32_t seed = 12345;
  (void)state;
  for (i = 0; i < LAYOUTS * 8; i++) {
    cport_packet_format_t f = layout(i % LAYOUTS);
    bytes_t stream = {0};
    got_t g = {&f, 0, 0, (int)(i % 4), 0};
    cport__rbuf_t* kept = NULL;
    size_t limit = f.max_packet + 65536;
    size_t at = 0;
    build_stream(&f, 200, &stream);
    while (at < stream.len) {
      size_t n;
      uint8_t* piece;
      seed = seed * 1103515245u + 12345u;
      n = 1 + (seed >> 16) % 97;
      if (n > stream.len - at)
        n = stream.len - at;
      piece = malloc(n);
      assert_non_null(piece);
      memcpy(piece, stream.data + at, n);
      assert_int_equal(cport__recv_feed(&kept, limit, piece, n, &got_ops, &g),
                       0);
      free(piece);
      at += n;
    }
    /* What stops held back comes out when presented again. */
    while (kept != NULL) {
      unsigned before = g.packets;
      assert_int_equal(cport__recv_feed(&kept, limit, NULL, 0, &got_ops, &g),
                       0);
      if (g.packets == before)
        break;
    }
    if (g.packets != 200 || g.bad || g.error != 0 || kept != NULL)
      fail_msg("layout %u: %u packets, bad %d, error %d, kept %zu", i % LAYOUTS,
               g.packets, g.bad, g.error, cport__recv_kept(kept));
    cport__recv_clear(&kept);
    bytes_free(&stream);
  }
}


int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_packet_default_layout_is_the_lectures),
      cmocka_unit_test(test_packet_header_bytes_of_each_layout),
      cmocka_unit_test(test_packet_format_check_rejects_bad_layouts),
      cmocka_unit_test(test_packet_send_side_refuses_what_it_cannot_frame),
      cmocka_unit_test(test_packet_every_layout_every_split),
      cmocka_unit_test(test_packet_random_splits_and_stops),
  };
  return cmocka_run_group_tests_name("packet", tests, NULL, NULL);
}
