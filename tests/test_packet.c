/* Packets: header layouts, the framer and the receive buffer driven with
 * every split of a stream, bad headers, and packet sessions over loopback. */
#include "fixture.h"

#include <stdlib.h>
#include <string.h>

#include "common.h" /* cport__mem_fail_after */
#include "packet_internal.h"
#include "recv_buf.h"
#include "session_internal.h" /* the loop's read chunk */

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

static int got_consume(void* ctx,
                       const uint8_t* data,
                       size_t len,
                       size_t* consumed) {
  got_t* g = ctx;
  int rc = cport__packet_consume(g->fmt, data, len, got_packet, g, consumed);
  if (rc != 0) {
    g->error = rc;
    return CPORT__RECV_STOP;
  }
  return 0;
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


static void test_packet_default_layout_is_size_then_id(void** state) {
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


static void test_packet_receive_buffer_out_of_memory_drops_cleanly(
    void** state) {
  cport_packet_format_t f = layout(8 | 4);
  bytes_t stream = {0};
  got_t g = {&f, 0, 0, 0, 0};
  cport__rbuf_t* kept = NULL;
  long live = cport__mem_live();
  (void)state;
  build_stream(&f, 3, &stream);
  /* Two whole packets and part of the third: keeping it needs memory. */
  cport__mem_fail_after(0);
  assert_int_equal(cport__recv_feed(&kept, f.max_packet + 65536, stream.data,
                                    stream.len - 1, &got_ops, &g),
                   UV_ENOMEM);
  cport__mem_fail_after(-1);
  assert_int_equal(g.packets, 2);
  assert_null(kept);
  assert_int_equal(cport__mem_live(), live);
  bytes_free(&stream);
}


/* ---- packet sessions over loopback ---- */

/* What a packet service's callbacks record. */
typedef struct pk_s {
  fixture_t* fx;
  int echo;           /* on_packet sends each packet back */
  size_t reply_size;  /* ... or sends this many bytes for each one */
  size_t reply_first; /* ... but this many for the first one */
  size_t packets;     /* on_packet calls */
  size_t in_chunk;    /* of which the payload lay in the read chunk */
  bytes_t got;        /* per packet: id (2 bytes), len (4), payload */
  int connected;
  int disconnected;
  int code;
  char cause[64];
  cport_session_t* last; /* latest connected session, referenced */
} pk_t;

static pk_t* pk_of(cport_session_t* s) {
  return cport_service_get_data(cport_session_service(s));
}

static void pk_connected(cport_session_t* s) {
  pk_t* pk = pk_of(s);
  pk->connected++;
  cport_session_unref(pk->last);
  cport_session_ref(s);
  pk->last = s;
}

static void pk_packet(cport_session_t* s,
                      unsigned id,
                      const uint8_t* payload,
                      size_t len) {
  pk_t* pk = pk_of(s);
  uint8_t head[6];
  const char* chunk =
      cport__service_view(cport_session_service(s))->lp->read_chunk;
  uintptr_t at = (uintptr_t)payload;
  pk->packets++;
  if (chunk != NULL && at >= (uintptr_t)chunk &&
      at + len <= (uintptr_t)chunk + CPORT__READ_CHUNK)
    pk->in_chunk++;
  head[0] = (uint8_t)id;
  head[1] = (uint8_t)(id >> 8);
  head[2] = (uint8_t)len;
  head[3] = (uint8_t)(len >> 8);
  head[4] = (uint8_t)(len >> 16);
  head[5] = (uint8_t)(len >> 24);
  bytes_append(&pk->got, head, sizeof(head));
  bytes_append(&pk->got, payload, len);
  if (pk->echo)
    assert_int_equal(cport_session_send_packet(s, id, payload, len), 0);
  if (pk->reply_size > 0) {
    size_t n = pk->packets == 1 && pk->reply_first > 0 ? pk->reply_first
                                                       : pk->reply_size;
    uint8_t* reply = calloc(1, n);
    assert_non_null(reply);
    (void)cport_session_send(s, reply, n);
    free(reply);
  }
}

static void pk_disconnected(cport_session_t* s, int code, const char* cause) {
  pk_t* pk = pk_of(s);
  pk->disconnected++;
  pk->code = code;
  snprintf(pk->cause, sizeof(pk->cause), "%s", cause);
}

/* Packet server options recording into `pk`, in format `fmt`. */
static cport_service_opts_t pk_opts(pk_t* pk,
                                    fixture_t* fx,
                                    const cport_packet_format_t* fmt) {
  cport_service_opts_t o;
  cport_service_opts_init(&o);
  o.cbs.on_connected = pk_connected;
  o.cbs.on_packet = pk_packet;
  o.cbs.on_disconnected = pk_disconnected;
  o.data = pk;
  if (fmt != NULL)
    o.packet = *fmt;
  pk->fx = fx;
  return o;
}

/* Start the packet server as the fixture's server (teardown destroys it). */
static void pk_start_server(fixture_t* fx, const cport_service_opts_t* o) {
  fx->server = fixture_create_service(fx, CPORT_SERVICE_SERVER, "127.0.0.1", o);
  assert_int_equal(cport_service_start(fx->server), 0);
  assert_int_equal(cport_service_local_addr(fx->server, &fx->server_addr), 0);
}

/* Start a client of the fixture's server as the fixture's client, with
 * co.connect_count sessions (teardown destroys it). */
static void pk_start_client(fixture_t* fx, const cport_service_opts_t* co) {
  assert_int_equal(
      cport_service_create(&fx->client, fx->core, CPORT_SERVICE_CLIENT,
                           &fx->server_addr, co),
      0);
  assert_int_equal(cport_service_start(fx->client), 0);
}

/* Destroy the fixture's services while the records on this test's stack
 * still exist, and wait for the `n` sessions of each to report. */
static void pk_destroy_both(fixture_t* fx, pk_t* server, pk_t* client, int n) {
  cport_service_destroy(fx->client);
  fx->client = NULL;
  cport_service_destroy(fx->server);
  fx->server = NULL;
  fixture_wait_int(fx, &client->disconnected, n, FIXTURE_TIMEOUT_MS);
  fixture_wait_int(fx, &server->disconnected, n, FIXTURE_TIMEOUT_MS);
}

static void pk_release(pk_t* pk) {
  cport_session_unref(pk->last);
  pk->last = NULL;
  bytes_free(&pk->got);
}

/* The record got_packet's checks expect for build_stream's packets. */
static void expected_record(const cport_packet_format_t* f,
                            unsigned n,
                            bytes_t* out) {
  unsigned i;
  for (i = 0; i < n; i++) {
    uint8_t head[6] = {0};
    uint8_t payload[64];
    size_t len = i % 40;
    unsigned id = f->has_id ? 7 + i : 0;
    fill_pattern(payload, len, i);
    head[0] = (uint8_t)id;
    head[1] = (uint8_t)(id >> 8);
    head[2] = (uint8_t)len;
    bytes_append(out, head, sizeof(head));
    bytes_append(out, payload, len);
  }
}


static void test_packet_session_every_layout_echoes_whole_packets(
    void** state) {
  fixture_t* fx = *state;
  unsigned i;
  for (i = 0; i < LAYOUTS; i++) {
    cport_packet_format_t f = layout(i);
    pk_t pk = {0};
    cport_service_opts_t o = pk_opts(&pk, fx, &f);
    bytes_t stream = {0};
    bytes_t want = {0};
    peer_t* p;
    pk.echo = 1;
    pk_start_server(fx, &o);
    build_stream(&f, 60, &stream);
    expected_record(&f, 60, &want);
    p = peer_connect(fx, &fx->server_addr, 0);
    peer_write(p, stream.data, stream.len);
    /* The echo is re-framed by send_packet: the same bytes come back. */
    fixture_wait_size(fx, &p->received.len, stream.len, FIXTURE_TIMEOUT_MS);
    assert_memory_equal(p->received.data, stream.data, stream.len);
    assert_int_equal(pk.packets, 60);
    assert_int_equal(pk.got.len, want.len);
    assert_memory_equal(pk.got.data, want.data, want.len);
    peer_destroy(p);
    fixture_wait_int(fx, &pk.disconnected, 1, FIXTURE_TIMEOUT_MS);
    pk_release(&pk);
    bytes_free(&stream);
    bytes_free(&want);
    cport_service_destroy(fx->server);
    fx->server = NULL;
  }
}


typedef struct pending_wait_s {
  pk_t* pk;
  size_t packets;
  size_t pending;
} pending_wait_t;

/* The server has either delivered another packet or holds `pending` bytes
 * of the next one. */
static int pred_arrived(void* arg) {
  pending_wait_t* w = arg;
  return w->pk->packets > w->packets ||
         (w->pk->last != NULL &&
          cport_session_pending_bytes(w->pk->last) >= w->pending);
}

static void test_packet_session_one_byte_at_a_time(void** state) {
  fixture_t* fx = *state;
  cport_packet_format_t f = layout(8 | 4); /* the default layout, max 4096 */
  pk_t pk = {0};
  cport_service_opts_t o = pk_opts(&pk, fx, &f);
  bytes_t stream = {0};
  bytes_t want = {0};
  peer_t* p;
  size_t at;
  size_t partial = 0;
  pk_start_server(fx, &o);
  build_stream(&f, 12, &stream);
  expected_record(&f, 12, &want);
  p = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &pk.connected, 1, FIXTURE_TIMEOUT_MS);
  /* Each byte waits until the server has it, so every packet really
   * arrives split at every byte. */
  for (at = 0; at < stream.len; at++) {
    pending_wait_t w = {&pk, pk.packets, partial + 1};
    peer_write(p, stream.data + at, 1);
    assert_true(fixture_run_until(fx, pred_arrived, &w, FIXTURE_TIMEOUT_MS));
    partial = pk.packets > w.packets ? 0 : partial + 1;
  }
  assert_int_equal(pk.packets, 12);
  assert_int_equal(pk.got.len, want.len);
  assert_memory_equal(pk.got.data, want.data, want.len);
  assert_int_equal(cport_session_pending_bytes(pk.last), 0);
  peer_destroy(p);
  fixture_wait_int(fx, &pk.disconnected, 1, FIXTURE_TIMEOUT_MS);
  pk_release(&pk);
  bytes_free(&stream);
  bytes_free(&want);
}


static void test_packet_session_whole_packets_are_not_copied(void** state) {
  fixture_t* fx = *state;
  cport_packet_format_t f = layout(8 | 4);
  pk_t pk = {0};
  cport_service_opts_t o = pk_opts(&pk, fx, &f);
  bytes_t stream = {0};
  peer_t* p;
  size_t first = 0;
  unsigned i;
  pending_wait_t w = {&pk, 0, 0};
  pk_start_server(fx, &o);
  build_stream(&f, 10, &stream);
  p = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &pk.connected, 1, FIXTURE_TIMEOUT_MS);
  /* Whole packets in one read: every payload is read where it landed. */
  peer_write(p, stream.data, stream.len);
  fixture_wait_size(fx, &pk.packets, 10, FIXTURE_TIMEOUT_MS);
  assert_int_equal(pk.in_chunk, 10);
  /* Packet 5 split in two reads: only it is gathered (copied); the
   * packets behind it in the second read are read in place again. */
  for (i = 0; i < 5; i++) first += 4 + i % 40; /* packets 0-4 */
  w.packets = pk.packets;
  w.pending = first + 3;
  peer_write(p, stream.data, first + 3); /* 0-4 whole, 3 bytes of 5 */
  assert_true(fixture_run_until(fx, pred_arrived, &w, FIXTURE_TIMEOUT_MS));
  fixture_wait_size(fx, &pk.packets, 15, FIXTURE_TIMEOUT_MS);
  w.packets = pk.packets;
  w.pending = 3;
  assert_true(fixture_run_until(fx, pred_arrived, &w, FIXTURE_TIMEOUT_MS));
  assert_int_equal(cport_session_pending_bytes(pk.last), 3);
  peer_write(p, stream.data + first + 3, stream.len - first - 3);
  fixture_wait_size(fx, &pk.packets, 20, FIXTURE_TIMEOUT_MS);
  assert_int_equal(pk.in_chunk, 19);
  assert_int_equal(cport_session_pending_bytes(pk.last), 0);
  peer_destroy(p);
  fixture_wait_int(fx, &pk.disconnected, 1, FIXTURE_TIMEOUT_MS);
  pk_release(&pk);
  bytes_free(&stream);
}


/* A peer writes `good` whole packets, then the header `bad`: the packets
 * arrive, then that session alone ends with `code`, while a second
 * session goes on being served. */
static void expect_bad_header(fixture_t* fx,
                              const cport_packet_format_t* f,
                              const uint8_t* bad,
                              size_t bad_len,
                              int code,
                              const char* cause) {
  pk_t pk = {0};
  cport_service_opts_t o = pk_opts(&pk, fx, f);
  cport_service_stats_t st;
  bytes_t stream = {0};
  peer_t* p;
  peer_t* other;
  uint8_t ping[CPORT__PACKET_HEADER_MAX + 4];
  pk.echo = 1;
  pk_start_server(fx, &o);
  other = peer_connect(fx, &fx->server_addr, 0);
  p = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &pk.connected, 2, FIXTURE_TIMEOUT_MS);
  build_stream(f, 3, &stream);
  bytes_append(&stream, bad, bad_len);
  peer_write(p, stream.data, stream.len);
  fixture_wait_int(fx, &pk.disconnected, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(pk.code, code);
  assert_string_equal(pk.cause, cause);
  assert_int_equal(pk.packets, 3);
  /* The peer sees the echo of the good packets, then the end. */
  fixture_wait_int(fx, &p->eof, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(p->received.len, stream.len - bad_len);
  /* The other session is untouched. */
  assert_int_equal(cport__packet_header(f, f->has_id ? 5 : 0, 4, ping),
                   (int)cport_packet_header_size(f));
  memcpy(ping + cport_packet_header_size(f), "ping", 4);
  peer_write(other, ping, cport_packet_header_size(f) + 4);
  fixture_wait_size(fx, &other->received.len, cport_packet_header_size(f) + 4,
                    FIXTURE_TIMEOUT_MS);
  assert_int_equal(cport_service_stats(fx->server, &st), 0);
  assert_int_equal(st.disconnects_protocol, 1);
  assert_int_equal(st.packets_in, 4);
  assert_int_equal(st.active, 1);
  peer_destroy(p);
  peer_destroy(other);
  fixture_wait_int(fx, &pk.disconnected, 2, FIXTURE_TIMEOUT_MS);
  pk_release(&pk);
  bytes_free(&stream);
}


static void test_packet_session_length_below_header_is_malformed(void** state) {
  cport_packet_format_t f;
  static const uint8_t bad[] = {3, 0, 1, 0}; /* size 3 < the 4-byte header */
  cport_packet_format_init(&f);
  expect_bad_header(*state, &f, bad, sizeof(bad), CPORT_EPACKET,
                    "malformed packet header");
}


static void test_packet_session_oversize_ends_before_its_payload(void** state) {
  cport_packet_format_t f;
  /* 4097 > max_packet 4096; no payload byte follows, and none is awaited. */
  static const uint8_t bad[] = {0x01, 0x10, 1, 0};
  cport_packet_format_init(&f);
  f.max_packet = 4096;
  expect_bad_header(*state, &f, bad, sizeof(bad), CPORT_EPACKETSIZE,
                    "packet too large");
}


static void test_packet_session_length_that_would_overflow_is_too_large(
    void** state) {
  cport_packet_format_t f;
  /* A payload of 0xFFFFFFFF bytes plus the header: past any max_packet, and
   * past 32 bits. */
  static const uint8_t bad[] = {0xFF, 0xFF, 0xFF, 0xFF, 0, 0};
  cport_packet_format_init(&f);
  f.length_size = 4;
  f.length_includes_header = 0;
  f.max_packet = UINT32_MAX;
  expect_bad_header(*state, &f, bad, sizeof(bad), CPORT_EPACKETSIZE,
                    "packet too large");
}


static void test_packet_send_packet_arguments_and_limits(void** state) {
  fixture_t* fx = *state;
  cport_packet_format_t f;
  pk_t pk = {0};
  cport_service_opts_t o;
  peer_t* p;
  uint8_t* big;
  static const uint8_t empty[] = {4, 0, 0x34, 0x12};
  cport_packet_format_init(&f);
  f.max_packet = 1000;
  o = pk_opts(&pk, fx, &f);
  pk_start_server(fx, &o);
  p = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &pk.connected, 1, FIXTURE_TIMEOUT_MS);
  big = calloc(1, 1000);
  assert_non_null(big);
  assert_int_equal(cport_session_send_packet(NULL, 1, "x", 1), UV_EINVAL);
  assert_int_equal(cport_session_send_packet(pk.last, 1, NULL, 1), UV_EINVAL);
  assert_int_equal(cport_session_send_packet(pk.last, 65536, "x", 1),
                   UV_EINVAL);
  assert_int_equal(cport_session_send_packet(pk.last, 1, big, 997),
                   CPORT_EPACKETSIZE);
  assert_true(cport_session_is_connected(pk.last));
  /* An empty packet is a header alone. */
  assert_int_equal(cport_session_send_packet(pk.last, 0x1234, NULL, 0), 0);
  assert_int_equal(cport_session_send_packet(pk.last, 1, big, 996), 0);
  fixture_wait_size(fx, &p->received.len, 4 + 1000, FIXTURE_TIMEOUT_MS);
  assert_memory_equal(p->received.data, empty, 4);
  assert_int_equal(p->received.data[4], 0xE8); /* 1000 = 0x3E8 */
  assert_int_equal(p->received.data[5], 0x03);
  free(big);
  peer_destroy(p);
  fixture_wait_int(fx, &pk.disconnected, 1, FIXTURE_TIMEOUT_MS);
  pk_release(&pk);
}


typedef struct afar_s {
  cport_session_t* s;
  int rc;
} afar_t;

static void afar_main(void* arg) {
  afar_t* a = arg;
  unsigned i;
  for (i = 0; i < 100 && a->rc == 0; i++) {
    uint8_t payload[8];
    memset(payload, (int)i, sizeof(payload));
    a->rc = cport_session_send_packet(a->s, i, payload, i % 9);
  }
}

static void test_packet_send_packet_from_another_thread(void** state) {
  fixture_t* fx = *state;
  pk_t pk = {0};
  pk_t cl = {0};
  cport_service_opts_t o = pk_opts(&pk, fx, NULL);
  cport_service_opts_t co = pk_opts(&cl, fx, NULL);
  uv_thread_t t;
  afar_t a = {NULL, 0};
  bytes_t want = {0};
  unsigned i;
  pk.echo = 1;
  pk_start_server(fx, &o);
  pk_start_client(fx, &co);
  fixture_wait_int(fx, &cl.connected, 1, FIXTURE_TIMEOUT_MS);
  a.s = cl.last;
  assert_int_equal(uv_thread_create(&t, afar_main, &a), 0);
  assert_int_equal(uv_thread_join(&t), 0);
  assert_int_equal(a.rc, 0);
  fixture_wait_size(fx, &cl.packets, 100, FIXTURE_TIMEOUT_MS);
  for (i = 0; i < 100; i++) {
    uint8_t head[6] = {(uint8_t)i, 0, (uint8_t)(i % 9), 0, 0, 0};
    uint8_t payload[8];
    memset(payload, (int)i, sizeof(payload));
    bytes_append(&want, head, sizeof(head));
    bytes_append(&want, payload, i % 9);
  }
  assert_int_equal(cl.got.len, want.len);
  assert_memory_equal(cl.got.data, want.data, want.len);
  bytes_free(&want);
  pk_destroy_both(fx, &pk, &cl, 1);
  pk_release(&pk);
  pk_release(&cl);
}


static void test_packet_buf_broadcast_reaches_every_client_once(void** state) {
  fixture_t* fx = *state;
  pk_t pk = {0};
  pk_t cl = {0};
  cport_service_opts_t o = pk_opts(&pk, fx, NULL);
  cport_service_opts_t co = pk_opts(&cl, fx, NULL);
  cport_packet_format_t bad;
  cport_buf_t* buf = NULL;
  uint8_t big[70000] = {0};
  static const uint8_t want[] = {9, 0, 2, 0, 0, 0, 'h', 'i'};
  size_t i;
  co.connect_count = 3;
  pk_start_server(fx, &o);
  pk_start_client(fx, &co);
  fixture_wait_int(fx, &cl.connected, 3, FIXTURE_TIMEOUT_MS);
  fixture_wait_int(fx, &pk.connected, 3, FIXTURE_TIMEOUT_MS);
  assert_int_equal(cport_packet_buf(NULL, NULL, 9, "hi", 2), UV_EINVAL);
  assert_int_equal(cport_packet_buf(&buf, NULL, 9, NULL, 2), UV_EINVAL);
  cport_packet_format_init(&bad);
  bad.length_size = 1;
  assert_int_equal(cport_packet_buf(&buf, &bad, 9, "hi", 2), UV_EINVAL);
  assert_int_equal(cport_packet_buf(&buf, NULL, 9, big, sizeof(big)),
                   CPORT_EPACKETSIZE);
  assert_null(buf);
  assert_int_equal(cport_packet_buf(&buf, NULL, 9, "hi", 2), 0);
  assert_int_equal(cport_buf_len(buf), 6);
  assert_int_equal(cport_service_broadcast(fx->server, buf), 0);
  cport_buf_unref(buf);
  fixture_wait_size(fx, &cl.packets, 3, FIXTURE_TIMEOUT_MS);
  assert_int_equal(cl.got.len, 3 * sizeof(want));
  for (i = 0; i < 3; i++)
    assert_memory_equal(cl.got.data + i * sizeof(want), want, sizeof(want));
  pk_destroy_both(fx, &pk, &cl, 3);
  pk_release(&pk);
  pk_release(&cl);
}


static int pred_paused(void* arg) {
  pk_t* pk = arg;
  return pk->last != NULL && cport__session_is_paused(pk->last);
}

static void test_packet_session_pause_holds_packets_back_in_order(
    void** state) {
  fixture_t* fx = *state;
  cport_packet_format_t f = layout(8 | 4);
  pk_t pk = {0};
  cport_service_opts_t o = pk_opts(&pk, fx, &f);
  cport_service_stats_t st;
  bytes_t stream = {0};
  bytes_t want = {0};
  peer_t* p;
  unsigned n = 200;
  int i;
  pending_wait_t w = {&pk, 0, 3};
  /* The reply to the first packet is more than the kernel's buffers and
   * the 1 MiB send queue hold, so it pauses the session; the others get a
   * byte each. */
  pk.reply_first = FIXTURE_STUCK_BYTES;
  pk.reply_size = 1;
  pk_start_server(fx, &o);
  build_stream(&f, n, &stream);
  expected_record(&f, n, &want);
  p = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &pk.connected, 1, FIXTURE_TIMEOUT_MS);
  peer_stop_reading(p);
  /* The first packet arrives split, so that it completes in the receive
   * buffer and the packets behind it, in the same read, are the ones the
   * pause must hold back. */
  peer_write(p, stream.data, 3);
  assert_true(fixture_run_until(fx, pred_arrived, &w, FIXTURE_TIMEOUT_MS));
  peer_write(p, stream.data + 3, stream.len - 3);
  assert_true(fixture_run_until(fx, pred_paused, &pk, FIXTURE_TIMEOUT_MS));
  for (i = 0; i < 50; i++) cport_core_dispatch(fx->core, 0, 1);
  assert_int_equal(pk.packets, 1);
  /* Reading again drains the queue; every packet then arrives, in order. */
  peer_resume_reading(p);
  fixture_wait_size(fx, &pk.packets, n, 4 * FIXTURE_TIMEOUT_MS);
  assert_int_equal(pk.got.len, want.len);
  assert_memory_equal(pk.got.data, want.data, want.len);
  fixture_wait_size(fx, &p->received.len, FIXTURE_STUCK_BYTES + n - 1,
                    4 * FIXTURE_TIMEOUT_MS);
  assert_int_equal(cport_service_stats(fx->server, &st), 0);
  assert_int_equal(st.pauses, 1);
  assert_int_equal(st.packets_in, n);
  peer_destroy(p);
  fixture_wait_int(fx, &pk.disconnected, 1, FIXTURE_TIMEOUT_MS);
  pk_release(&pk);
  bytes_free(&stream);
  bytes_free(&want);
}


/* ---- packet_budget ---- */

static unsigned budget_round;          /* loop rounds so far */
static unsigned budget_at[256];        /* the round of each packet */

static void budget_check_cb(uv_check_t* h) {
  (void)h;
  budget_round++;
}

static void budget_packet(cport_session_t* s,
                          unsigned id,
                          const uint8_t* payload,
                          size_t len) {
  pk_t* pk = pk_of(s);
  if (pk->packets < sizeof(budget_at) / sizeof(budget_at[0]))
    budget_at[pk->packets] = budget_round;
  pk_packet(s, id, payload, len);
}

/* One write of 200 small packets to a service with packet_budget 16: no
 * loop round gives on_packet more than 16 of them (32 here: the fixture's
 * dispatch runs the loop's mailbox once before its loop round, then the
 * round runs it again), the rest wait for later rounds, and every packet
 * still comes whole and in order; the echo of each one leaves in order
 * too. Without the budget all 200 came in the round of the read. */
static void test_packet_session_budget_spreads_a_flood_over_rounds(
    void** state) {
  fixture_t* fx = *state;
  cport_packet_format_t f = layout(0);
  pk_t pk = {0};
  cport_service_opts_t o = pk_opts(&pk, fx, &f);
  bytes_t stream = {0};
  bytes_t want = {0};
  static uv_check_t check; /* closes after this function returns */
  unsigned n = 200;
  unsigned i;
  unsigned in_round = 0;
  unsigned most = 0;
  unsigned rounds = 1;
  peer_t* p;
  o.cbs.on_packet = budget_packet;
  o.packet_budget = 16;
  pk.echo = 1;
  budget_round = 0;
  assert_int_equal(uv_check_init(fx->loop, &check), 0);
  assert_int_equal(uv_check_start(&check, budget_check_cb), 0);
  pk_start_server(fx, &o);
  build_stream(&f, n, &stream);
  expected_record(&f, n, &want);
  p = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &pk.connected, 1, FIXTURE_TIMEOUT_MS);
  peer_write(p, stream.data, stream.len);
  fixture_wait_size(fx, &pk.packets, n, FIXTURE_TIMEOUT_MS);
  assert_int_equal(pk.got.len, want.len);
  assert_memory_equal(pk.got.data, want.data, want.len);
  /* The counting handle goes first, so that a failure below does not
   * leave it keeping the loop alive. */
  uv_close((uv_handle_t*)&check, NULL);
  for (i = 0; i < n; i++) {
    if (i > 0 && budget_at[i] != budget_at[i - 1]) {
      rounds++;
      in_round = 0;
    }
    in_round++;
    if (in_round > most)
      most = in_round;
  }
  print_message("200 packets in %u rounds, at most %u in one\n", rounds,
                most);
  assert_true(most <= 2 * 16);
  assert_true(rounds >= n / (2 * 16));
  fixture_wait_size(fx, &p->received.len, stream.len, FIXTURE_TIMEOUT_MS);
  assert_memory_equal(p->received.data, stream.data, stream.len);
  peer_destroy(p);
  fixture_wait_int(fx, &pk.disconnected, 1, FIXTURE_TIMEOUT_MS);
  pk_release(&pk);
  bytes_free(&stream);
  bytes_free(&want);
}


/* A thread other than the loop's sends to the session, and returns. */
static void resume_sender(void* arg) {
  (void)cport_session_send(arg, "W", 1);
}

static int resume_send_rc;

/* The second packet, which the budget held back to a later round: another
 * thread's send returns, then this callback disconnects. */
static void resume_packet(cport_session_t* s,
                          unsigned id,
                          const uint8_t* payload,
                          size_t len) {
  pk_t* pk = pk_of(s);
  uv_thread_t th;
  pk_packet(s, id, payload, len);
  if (pk->packets != 2)
    return;
  resume_send_rc = uv_thread_create(&th, resume_sender, s);
  if (resume_send_rc == 0)
    resume_send_rc = uv_thread_join(&th);
  (void)cport_session_disconnect(s, "done");
}

/* Packets held back by packet_budget come from a mailbox entry, but what
 * their on_packet does acts where it is done, as from any other callback:
 * a send another thread made before the disconnect is flushed before it.
 * (0.5.0 before this fix: the disconnect acted in the resume entry's
 * place, ahead of the send, which was dropped.) */
static void test_packet_budget_resume_keeps_call_order(void** state) {
  fixture_t* fx = *state;
  cport_packet_format_t f = layout(0);
  pk_t pk = {0};
  cport_service_opts_t o = pk_opts(&pk, fx, &f);
  bytes_t stream = {0};
  peer_t* p;
  o.cbs.on_packet = resume_packet;
  o.packet_budget = 1;
  resume_send_rc = -1;
  pk_start_server(fx, &o);
  build_stream(&f, 2, &stream);
  p = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &pk.connected, 1, FIXTURE_TIMEOUT_MS);
  peer_write(p, stream.data, stream.len); /* one read: the budget yields */
  fixture_wait_int(fx, &pk.disconnected, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(resume_send_rc, 0);
  assert_int_equal(pk.code, CPORT_ELOCAL);
  fixture_wait_int(fx, &p->eof, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(p->received.len, 1);
  assert_memory_equal(p->received.data, "W", 1);
  peer_destroy(p);
  pk_release(&pk);
  bytes_free(&stream);
}


static void ignore_recv_cb(void) {
}

static size_t raw_recv(cport_session_t* s, const uint8_t* d, size_t n) {
  (void)s;
  (void)d;
  return n;
}

static void test_packet_service_options_are_checked(void** state) {
  fixture_t* fx = *state;
  cport_service_opts_t o;
  cport_service_t* svc = NULL;
  cport_addr_t addr;
  pk_t pk = {0};
  (void)ignore_recv_cb;
  assert_int_equal(cport_addr_parse(&addr, "127.0.0.1", 0), 0);
  o = pk_opts(&pk, fx, NULL);
  o.cbs.on_recv = raw_recv;
  assert_int_equal(
      cport_service_create(&svc, fx->core, CPORT_SERVICE_SERVER, &addr, &o),
      UV_EINVAL);
  o = pk_opts(&pk, fx, NULL);
  o.packet.length_size = 8;
  assert_int_equal(
      cport_service_create(&svc, fx->core, CPORT_SERVICE_SERVER, &addr, &o),
      UV_EINVAL);
  o = pk_opts(&pk, fx, NULL);
  o.packet.max_packet = 2;
  assert_int_equal(
      cport_service_create(&svc, fx->core, CPORT_SERVICE_SERVER, &addr, &o),
      UV_EINVAL);
  assert_null(svc);
}


int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_packet_default_layout_is_size_then_id),
      cmocka_unit_test(test_packet_header_bytes_of_each_layout),
      cmocka_unit_test(test_packet_format_check_rejects_bad_layouts),
      cmocka_unit_test(test_packet_send_side_refuses_what_it_cannot_frame),
      cmocka_unit_test(test_packet_every_layout_every_split),
      cmocka_unit_test(test_packet_random_splits_and_stops),
      cmocka_unit_test(test_packet_receive_buffer_out_of_memory_drops_cleanly),
      FIXTURE_TEST(test_packet_session_every_layout_echoes_whole_packets),
      FIXTURE_TEST(test_packet_session_one_byte_at_a_time),
      FIXTURE_TEST(test_packet_session_whole_packets_are_not_copied),
      FIXTURE_TEST(test_packet_session_length_below_header_is_malformed),
      FIXTURE_TEST(test_packet_session_oversize_ends_before_its_payload),
      FIXTURE_TEST(test_packet_session_length_that_would_overflow_is_too_large),
      FIXTURE_TEST(test_packet_send_packet_arguments_and_limits),
      FIXTURE_TEST(test_packet_send_packet_from_another_thread),
      FIXTURE_TEST(test_packet_buf_broadcast_reaches_every_client_once),
      FIXTURE_TEST(test_packet_session_pause_holds_packets_back_in_order),
      FIXTURE_TEST(test_packet_session_budget_spreads_a_flood_over_rounds),
      FIXTURE_TEST(test_packet_budget_resume_keeps_call_order),
      FIXTURE_TEST(test_packet_service_options_are_checked),
  };
  return cmocka_run_group_tests_name("packet", tests, NULL, NULL);
}
