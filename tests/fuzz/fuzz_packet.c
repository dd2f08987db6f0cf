/* libFuzzer target: arbitrary byte streams, split at arbitrary points, fed
 * through the receive buffer (src/recv_buf.c) and the packet framer
 * (src/packet.c) in every header layout, and checked against a reference
 * decoder written here, apart from packet.c, so that a wrong answer is
 * caught and not only a crash. docs/fuzzing.md has the overview.
 *
 * Input layout. A byte past the end reads as 0, so every input is valid.
 *
 *   [0]    flags  bits 0-3, the header layout: bit 0 a 4-byte length (else
 *                 2 bytes), bit 1 big endian, bit 2 the length counts the
 *                 header, bit 3 a 2-byte id follows the length.
 *                 bit 4: raw mode, an on_recv-like consumer in place of the
 *                 packet layer.
 *                 bits 5-7, n: when not 0, the allocation after n - 1
 *                 successful ones fails, and every one after it.
 *   [1]    size   packet mode: max_packet is the header size plus this;
 *                 0xFE means 65535 and 0xFF UINT32_MAX. Raw mode, the
 *                 receive limit: 0-0xEF this plus 1, 0xF0-0xFE 1-15 KiB
 *                 (past the buffer's first 4 KiB), 0xFF 256 KiB.
 *   [2]    S      then S bytes: the sizes of the pieces the stream is fed
 *                 in, used in turn and then again from the first: 0 is a
 *                 feed of no bytes (a session's after a pause), 1-0xFE
 *                 that many bytes, 0xFF a whole read (64 KiB). With S = 0,
 *                 or only zeros, the stream comes in whole reads.
 *   [3+S]  A      then A bytes: the consumer's answers, used in turn.
 *                 Packet mode, one per packet delivered: 0xFE and 0xFF
 *                 close the session after it, else bit 0 pauses it, and
 *                 bit 1 with it keeps reading for one more piece first.
 *                 Raw mode, one per call: 0xFF closes the session, 0xFE
 *                 takes every byte, any other value takes that many bytes
 *                 (all there are, when fewer). A = 0: no pause, take all.
 *   rest          the stream.
 *
 * Design notes. The packet-mode consumer behaves as session.c's: on_packet
 * may pause (stop delivering; while paused, every call consumes nothing)
 * and the pause ends, as when the send queue drains, with a feed of no
 * bytes, repeated until the consumer no longer pauses; only then comes the
 * next piece, because a paused session does not read. The limit is then
 * max_packet plus the largest piece, as a session's is max_packet plus its
 * 64 KiB read: session.c claims that this always holds one partial packet
 * and one read held back, so a packet-mode CPORT_ERECVFULL is a failure.
 * A pause may also let one more piece in before it ends, which no session
 * does today, so that the receive buffer's own contract is tried with whole
 * packets kept; that feed may end in CPORT_ERECVFULL, by the raw-mode rule
 * below.
 *
 * After every feed the kept bytes must be exactly the stream bytes fed but
 * not consumed, fewer than the limit, and every call must have been shown
 * the stream from the first byte not consumed. After a piece and its
 * pauses, every packet that the reference finds whole in the bytes fed so
 * far must have been delivered, in order, with its id and payload, where it
 * lies; a bad header, once all of it is fed, must have ended delivery with
 * the reference's error; cport__packet_need must say what the reference
 * says the kept partial packet lacks. In raw mode, CPORT_ERECVFULL is right
 * exactly when a call left `limit` bytes or more unconsumed, and no call
 * may follow it. Every error must drop the kept bytes, and nothing may
 * leak. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_NAME "fuzz_packet"
#include "fuzz_common.h"

#include "common.h"        /* cport__mem_* */
#include "core_internal.h" /* CPORT__READ_CHUNK */
#include "packet_internal.h"
#include "recv_buf.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

#define RAW_LIMIT_DEFAULT (256 * 1024)

#define ACT_CLOSE 0xFF
#define ACT_ALL 0xFE /* raw mode; in packet mode it closes too */


/* ---- the reference decoder ---- */

typedef enum { REF_SHORT, REF_BAD, REF_BIG, REF_OK } ref_kind_t;

typedef struct ref_packet_s {
  size_t start;
  size_t size; /* header included */
  unsigned id;
} ref_packet_t;

typedef struct ref_s {
  size_t header;
  ref_packet_t* pk;
  size_t count;
  int error;       /* 0, CPORT_EPACKET or CPORT_EPACKETSIZE */
  size_t error_at; /* where the bad header starts */
} ref_t;

/* The header at `p` (`avail` bytes there), read byte by byte with 64-bit
 * sums, so that it shares no overflow or byte-order slip with packet.c. */
static ref_kind_t ref_header(const cport_packet_format_t* f,
                             size_t header,
                             const uint8_t* p,
                             size_t avail,
                             uint64_t* size,
                             unsigned* id) {
  uint64_t field = 0;
  unsigned i;
  *size = 0;
  *id = 0;
  if (avail < header)
    return REF_SHORT;
  for (i = 0; i < f->length_size; i++) {
    unsigned shift = 8 * (f->big_endian ? f->length_size - 1 - i : i);
    field += (uint64_t)p[i] << shift;
  }
  if (f->length_includes_header && field < header)
    return REF_BAD;
  *size = f->length_includes_header ? field : field + header;
  if (*size > f->max_packet)
    return REF_BIG;
  if (f->has_id)
    *id = f->big_endian
              ? ((unsigned)p[f->length_size] << 8) | p[f->length_size + 1]
              : ((unsigned)p[f->length_size + 1] << 8) | p[f->length_size];
  return REF_OK;
}

/* Whether `v` is a size_t too (not always past 4 GiB with 32 bits). */
static int fits_size_t(uint64_t v) {
#if SIZE_MAX < UINT64_MAX
  return v <= SIZE_MAX;
#else
  (void)v;
  return 1;
#endif
}

/* cport_packet_buf, the public way to frame a packet, must build the bytes
 * of the packet at `p` (`size` bytes) from its id and payload. */
static void check_packet_buf(const cport_packet_format_t* f,
                             size_t header,
                             unsigned id,
                             const uint8_t* p,
                             size_t size) {
  cport_buf_t* buf = NULL;
  int rc = cport_packet_buf(&buf, f, id, p + header, size - header);
  if (rc != 0 || cport_buf_len(buf) != size ||
      memcmp(cport_buf_data(buf), p, size) != 0)
    fail("cport_packet_buf (%d) does not build the first packet again", rc);
  cport_buf_unref(buf);
}

/* Decode the whole stream at once. Every packet found is also framed again
 * with cport__packet_header, which must give back its header's bytes. */
static void ref_decode(const cport_packet_format_t* f,
                       const uint8_t* s,
                       size_t len,
                       ref_t* r) {
  size_t at = 0;
  r->header = f->length_size + (f->has_id ? 2u : 0u);
  r->pk = malloc((len / r->header + 1) * sizeof(*r->pk));
  if (r->pk == NULL)
    fail("out of memory");
  r->count = 0;
  r->error = 0;
  r->error_at = 0;
  for (;;) {
    uint64_t size;
    unsigned id;
    uint8_t hdr[CPORT__PACKET_HEADER_MAX];
    ref_kind_t k = ref_header(f, r->header, s + at, len - at, &size, &id);
    /* The send side must refuse what the receive side refuses. */
    if (k == REF_BIG && fits_size_t(size - r->header) &&
        cport__packet_header(f, id, (size_t)(size - r->header), hdr) !=
            CPORT_EPACKETSIZE)
      fail("cport__packet_header frames a packet of %llu bytes, over %zu",
           (unsigned long long)size, f->max_packet);
    if (k == REF_BAD || k == REF_BIG) {
      r->error = k == REF_BAD ? CPORT_EPACKET : CPORT_EPACKETSIZE;
      r->error_at = at;
      break;
    }
    if (k == REF_SHORT || size > len - at)
      break;
    if (cport__packet_header(f, id, (size_t)size - r->header, hdr) !=
            (int)r->header ||
        memcmp(hdr, s + at, r->header) != 0)
      fail("cport__packet_header does not frame the packet at %zu again", at);
    if (r->count == 0)
      check_packet_buf(f, r->header, id, s + at, (size_t)size);
    r->pk[r->count].start = at;
    r->pk[r->count].size = (size_t)size;
    r->pk[r->count].id = id;
    r->count++;
    at += (size_t)size;
  }
}


/* ---- the consumer ---- */

typedef struct fuzz_s {
  int raw;
  const cport_packet_format_t* fmt;
  const ref_t* ref;
  const uint8_t* stream;
  size_t limit;
  const uint8_t* acts;
  size_t acts_len;
  size_t act_at;
  size_t fed;       /* stream bytes handed to cport__recv_feed so far */
  size_t consumed;  /* stream bytes the consumer took */
  size_t delivered; /* packets */
  int paused;
  int read_on; /* the pause lets one more piece in before it ends */
  int closed;
  int error;
  /* The current call's bytes, for where a payload must lie. */
  const uint8_t* window;
  size_t window_len;
  /* The current feed's calls. */
  unsigned calls;
  size_t last_end; /* stream offset after the last call's bytes */
  int full;        /* a call left `limit` bytes or more unconsumed */
} fuzz_t;

static uint8_t next_act(fuzz_t* z) {
  uint8_t a;
  if (z->acts_len == 0)
    return z->raw ? ACT_ALL : 0;
  a = z->acts[z->act_at];
  z->act_at = (z->act_at + 1) % z->acts_len;
  return a;
}

/* Every call must be shown the stream from its first unconsumed byte, no
 * byte not yet fed, and none after a call that left the limit's worth. */
static void check_call(fuzz_t* z, const uint8_t* data, size_t len) {
  if (z->closed || z->error != 0)
    fail("a call after the consumer stopped delivery");
  if (z->full)
    fail("a call after one left %zu bytes or more (the limit)", z->limit);
  if (len == 0)
    fail("a call with no bytes");
  if (len > z->fed - z->consumed)
    fail("a call shown %zu bytes, but only %zu are fed and unconsumed", len,
         z->fed - z->consumed);
  if (memcmp(data, z->stream + z->consumed, len) != 0)
    fail("a call shown bytes that are not the stream's at %zu", z->consumed);
}

static void note_call(fuzz_t* z, size_t start, size_t len, size_t took) {
  z->calls++;
  z->last_end = start + len;
  if (len - took >= z->limit)
    z->full = 1;
}

static int fuzz_packet(void* ctx,
                       unsigned id,
                       const uint8_t* payload,
                       size_t len) {
  fuzz_t* z = ctx;
  const ref_packet_t* want;
  size_t off;
  uint8_t act;
  if (z->delivered >= z->ref->count)
    fail("packet %zu delivered; the stream holds %zu", z->delivered + 1,
         z->ref->count);
  want = &z->ref->pk[z->delivered];
  off = want->start - z->consumed + z->ref->header;
  if (want->start + want->size > z->consumed + z->window_len)
    fail("packet %zu delivered before all of it was shown", z->delivered);
  if (id != want->id || len != want->size - z->ref->header)
    fail("packet %zu: id %u, %zu bytes; the stream says id %u, %zu bytes",
         z->delivered, id, len, want->id, want->size - z->ref->header);
  if (payload != z->window + off)
    fail("packet %zu: the payload is not where the packet lies", z->delivered);
  if (len > 0 &&
      memcmp(payload, z->stream + want->start + z->ref->header, len) != 0)
    fail("packet %zu: the payload differs from the stream's", z->delivered);
  z->delivered++;
  act = next_act(z);
  if (act == ACT_CLOSE || act == ACT_ALL) {
    z->closed = 1;
    return 1;
  }
  if (act & 1) {
    z->paused = 1;
    z->read_on = (act & 2) != 0;
    return 1;
  }
  return 0;
}

static size_t delivered_end(const fuzz_t* z) {
  if (z->delivered == 0)
    return 0;
  return z->ref->pk[z->delivered - 1].start + z->ref->pk[z->delivered - 1].size;
}

/* session.c's session_consume_packets, with fuzz_packet as on_packet. */
static int fuzz_consume_packets(void* ctx,
                                const uint8_t* data,
                                size_t len,
                                size_t* consumed) {
  fuzz_t* z = ctx;
  size_t start = z->consumed;
  size_t n = 0;
  int rc;
  check_call(z, data, len);
  *consumed = 0;
  if (z->paused) {
    note_call(z, start, len, 0);
    return 0;
  }
  z->window = data;
  z->window_len = len;
  rc = cport__packet_consume(z->fmt, data, len, fuzz_packet, z, &n);
  if (n != delivered_end(z) - start)
    fail("cport__packet_consume took %zu bytes for packets of %zu", n,
         delivered_end(z) - start);
  if (rc != 0) {
    if (rc != z->ref->error || z->delivered != z->ref->count ||
        delivered_end(z) != z->ref->error_at)
      fail("error %d after %zu packets; the stream has error %d after %zu", rc,
           z->delivered, z->ref->error, z->ref->count);
    if (z->ref->error_at + z->ref->header > start + len)
      fail("error %d before all of the bad header was shown", rc);
    z->error = rc;
    note_call(z, start, len, len); /* the session ends: nothing is kept */
    return CPORT__RECV_STOP;
  }
  z->consumed += n;
  note_call(z, start, len, n);
  *consumed = n;
  return z->closed ? CPORT__RECV_STOP : 0;
}

static size_t fuzz_need(void* ctx, const uint8_t* data, size_t len) {
  fuzz_t* z = ctx;
  return cport__packet_need(z->fmt, data, len);
}

/* An on_recv that takes what the input says. */
static int fuzz_consume_raw(void* ctx,
                            const uint8_t* data,
                            size_t len,
                            size_t* consumed) {
  fuzz_t* z = ctx;
  size_t start = z->consumed;
  size_t take;
  uint8_t act;
  check_call(z, data, len);
  act = next_act(z);
  if (act == ACT_CLOSE) {
    z->closed = 1;
    note_call(z, start, len, len); /* the session ends: nothing is kept */
    return CPORT__RECV_STOP;
  }
  take = act == ACT_ALL || act > len ? len : act;
  z->consumed += take;
  note_call(z, start, len, take);
  *consumed = take;
  return 0;
}

static const cport__recv_ops_t packet_ops = {fuzz_consume_packets, fuzz_need};
static const cport__recv_ops_t raw_ops = {fuzz_consume_raw, NULL};


/* ---- the driver ---- */

/* Feed the next `n` stream bytes (0: present the kept ones again) from a
 * block of exactly their size, so that ASan sees any read past them.
 * Returns cport__recv_feed's answer, once it has been checked. */
static int feed(fuzz_t* z, size_t n, int oom_armed, cport__rbuf_t** kept) {
  uint8_t* piece = NULL;
  size_t before = z->consumed;
  int paused = z->paused;
  size_t have;
  int rc;
  if (n > 0) {
    piece = malloc(n);
    if (piece == NULL)
      fail("out of memory");
    memcpy(piece, z->stream + z->fed, n);
  }
  z->fed += n;
  z->calls = 0;
  z->full = 0;
  rc = cport__recv_feed(kept, z->limit, piece, n,
                        z->raw ? &raw_ops : &packet_ops, z);
  free(piece);
  if (z->full && rc != CPORT_ERECVFULL)
    fail("a call left the limit's worth of bytes, and the feed returned %d",
         rc);
  switch (rc) {
    case 0:
      break;
    case CPORT__RECV_STOP:
      if (!z->closed && z->error == 0)
        fail("CPORT__RECV_STOP that the consumer did not ask for");
      return rc;
    case CPORT_ERECVFULL:
      if (!z->raw && !paused)
        fail("CPORT_ERECVFULL in packet mode: %zu bytes kept, limit %zu",
             cport__recv_kept(*kept), z->limit);
      if (!z->full)
        fail("CPORT_ERECVFULL, but no call left the limit's worth");
      if (*kept != NULL)
        fail("CPORT_ERECVFULL left %zu bytes kept", (*kept)->len);
      return rc;
    case UV_ENOMEM:
      if (!oom_armed)
        fail("UV_ENOMEM with no allocation failing");
      if (*kept != NULL)
        fail("UV_ENOMEM left %zu bytes kept", (*kept)->len);
      return rc;
    default:
      fail("cport__recv_feed returned %d", rc);
  }
  if (z->closed || z->error != 0)
    fail("the consumer stopped delivery, and the feed returned 0");
  if (z->fed > before && (z->calls == 0 || z->last_end != z->fed))
    fail("the consumer was not shown the bytes up to %zu", z->fed);
  have = cport__recv_kept(*kept);
  if (have != z->fed - z->consumed)
    fail("%zu bytes kept; %zu are fed and unconsumed", have,
         z->fed - z->consumed);
  if (*kept != NULL) {
    if (have >= z->limit || (*kept)->cap > z->limit || have > (*kept)->cap)
      fail("%zu bytes kept in %zu, limit %zu", have, (*kept)->cap, z->limit);
    if (memcmp((*kept)->bytes, z->stream + z->consumed, have) != 0)
      fail("the kept bytes are not the stream's at %zu", z->consumed);
  }
  return 0;
}

/* Packet mode, once a piece and its pauses are through: every packet whole
 * in the bytes fed is delivered, and the kept partial one is as the
 * reference says. */
static void check_progress(fuzz_t* z, const cport__rbuf_t* kept) {
  const ref_t* r = z->ref;
  size_t whole = 0;
  size_t want_need;
  uint64_t size;
  unsigned id;
  ref_kind_t k;
  while (whole < r->count && r->pk[whole].start + r->pk[whole].size <= z->fed)
    whole++;
  if (z->delivered != whole)
    fail("%zu packets delivered of the %zu whole in %zu bytes", z->delivered,
         whole, z->fed);
  if (r->error != 0 && r->error_at + r->header <= z->fed)
    fail("the bad header at %zu is fed but was not refused", r->error_at);
  if (kept == NULL)
    return;
  k = ref_header(z->fmt, r->header, kept->bytes, kept->len, &size, &id);
  if (k == REF_SHORT)
    want_need = r->header - kept->len;
  else if (k == REF_OK && size > kept->len)
    want_need = (size_t)size - kept->len;
  else
    fail("the kept bytes hold a whole packet or a bad header");
  if (cport__packet_need(z->fmt, kept->bytes, kept->len) != want_need)
    fail("cport__packet_need says %zu for %zu kept bytes; %zu are missing",
         cport__packet_need(z->fmt, kept->bytes, kept->len), kept->len,
         want_need);
}

static cport_packet_format_t fuzz_format(uint8_t flags, uint8_t size) {
  cport_packet_format_t f;
  cport_packet_format_init(&f);
  f.length_size = (flags & 1) ? 4 : 2;
  f.big_endian = (flags & 2) != 0;
  f.length_includes_header = (flags & 4) != 0;
  f.has_id = (flags & 8) != 0;
  if (size == 0xFF)
    f.max_packet = UINT32_MAX;
  else if (size == 0xFE)
    f.max_packet = 65535;
  else
    f.max_packet = f.length_size + (f.has_id ? 2u : 0u) + size;
  if (cport_packet_format_check(&f) != 0)
    fail("a layout cport_packet_format_check refuses");
  return f;
}

/* Piece `i`'s size from the table (0xFF: a whole read). */
static size_t piece_size(const uint8_t* pieces, size_t n, size_t i) {
  uint8_t v = pieces[i % n];
  return v == 0xFF ? CPORT__READ_CHUNK : v;
}


int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  input_t in = {data, size, 0};
  uint8_t flags = input_byte(&in);
  uint8_t size_sel = input_byte(&in);
  size_t pieces_len;
  const uint8_t* pieces = input_take(&in, input_byte(&in), &pieces_len);
  size_t acts_len;
  const uint8_t* acts = input_take(&in, input_byte(&in), &acts_len);
  const uint8_t* stream = data + in.at;
  size_t stream_len = size - in.at;
  cport_packet_format_t fmt = fuzz_format(flags, size_sel);
  unsigned oom = (flags >> 5) & 7;
  ref_t ref;
  fuzz_t z;
  cport__rbuf_t* kept = NULL;
  size_t chunk = 0;
  size_t i;
  size_t piece = 0;
  long live = cport__mem_live();

  memset(&z, 0, sizeof(z));
  z.raw = (flags & 0x10) != 0;
  z.fmt = &fmt;
  z.ref = &ref;
  z.stream = stream;
  z.acts = acts;
  z.acts_len = acts_len;
  for (i = 0; i < pieces_len; i++)
    if (piece_size(pieces, pieces_len, i) > chunk)
      chunk = piece_size(pieces, pieces_len, i);
  if (chunk == 0) {
    static const uint8_t whole_reads = 0xFF;
    pieces = &whole_reads;
    pieces_len = 1;
    chunk = CPORT__READ_CHUNK;
  }
  if (z.raw)
    z.limit = size_sel == 0xFF   ? RAW_LIMIT_DEFAULT
              : size_sel >= 0xF0 ? (size_t)(size_sel - 0xEF) * 1024
                                 : (size_t)size_sel + 1;
  else /* saturated where a 32-bit size_t cannot hold the sum */
    z.limit =
        fmt.max_packet > SIZE_MAX - chunk ? SIZE_MAX : fmt.max_packet + chunk;
  ref_decode(&fmt, stream, stream_len, &ref);

  if (oom != 0)
    cport__mem_fail_after((long)oom - 1);
  while (z.fed < stream_len) {
    size_t n = piece_size(pieces, pieces_len, piece++);
    int rc;
    if (n > stream_len - z.fed)
      n = stream_len - z.fed;
    rc = feed(&z, n, oom != 0, &kept);
    if (rc == 0 && z.paused && z.read_on && z.fed < stream_len) {
      z.read_on = 0;
      continue;
    }
    /* A paused session reads nothing until its pause ends. */
    while (rc == 0 && z.paused) {
      z.paused = 0;
      rc = feed(&z, 0, oom != 0, &kept);
    }
    if (rc != 0)
      break;
    if (!z.raw)
      check_progress(&z, kept);
  }
  cport__mem_fail_after(-1);
  cport__recv_clear(&kept);
  if (cport__mem_live() != live)
    fail("%ld blocks leaked", cport__mem_live() - live);
  free(ref.pk);
  return 0;
}
