/* libFuzzer target: a TLS client engine and a server engine
 * (src/tls_conn.c) talking to each other in memory, with every ciphertext
 * stream cut into pieces the input chooses, fed the way session.c feeds
 * (cport__tls_conn_input, read until the budget runs out,
 * cport__tls_conn_keep, drain later through cport__tls_conn_has_input),
 * plaintext of the input's sizes written both ways, and optionally one
 * ciphertext byte corrupted or an allocation failing. docs/fuzzing.md has
 * the overview.
 *
 * Input layout. A byte past the end reads as 0, so every input is valid.
 *
 *   [0]    flags  bit 0: the server speaks TLS 1.2 at most (else 1.3).
 *                 bit 1: corrupt one byte (bytes [3..6]).
 *                 bit 2: the corrupted byte is in the server's stream (else
 *                 the client's).
 *                 bits 3-7, n: when not 0, cport's allocation after n - 1
 *                 successful ones fails, and every one after it.
 *   [1]    the client's read cap: bytes per cport__tls_conn_read, 1-255;
 *                 0 means a whole read chunk (64 KiB), as a session's.
 *   [2]    the server's read cap, the same way.
 *   [3..4] where to corrupt: the offset in that stream, big endian (past
 *                 the end of what is ever sent: no corruption).
 *   [5]    what to XOR the byte with (0 means 0x80).
 *   rest   steps, each an op byte and its arguments:
 *            bit 0     the side: 0 the client, 1 the server.
 *            bits 1-2  0 feed: [size] bytes of the peer's ciphertext not
 *                      fed yet (0: all of it), then [budget] (below).
 *                      1 drain: [budget]; only when the side holds input.
 *                      2 write: [len], then the plaintext; bits 3-4, m:
 *                      len << 3m bytes, read from the input when m is 0,
 *                      else a pattern; 64 KiB a side in all, past which
 *                      a write is cut short. Before the handshake has
 *                      completed the side queues it, as a session does.
 *                      3 close_notify (once the handshake has completed).
 *          A budget is how many reads return plaintext before the side
 *          stops reading (a paused session); 0 means until it wants
 *          more ciphertext.
 *   When the steps run out, both sides are fed everything and drain
 *   until nothing moves (all written must then have been read), then
 *   close_notify, until both have read the other's close_notify.
 *
 * The oracle. Every engine call leaves OpenSSL's error queue empty. The
 * plaintext a side reads is always a prefix of what the other wrote, in
 * order. Without corruption and allocation failure, no call fails, both
 * handshakes complete, each side reads all the other wrote and then
 * UV_EOF. With corruption: an error (negative), or the peer waiting for
 * more after all was fed (a corrupted length), or, when OpenSSL ignores
 * the byte (a record header's legacy version), the same complete run.
 * With allocation failure: any negative code, or a complete run. Every
 * loop is bounded; a run that does not finish is a failure. Every piece
 * fed is a heap block of exactly its size, freed right after
 * cport__tls_conn_keep, so AddressSanitizer sees any read of the
 * caller's bytes past the call that was given them.
 *
 * Determinism: OpenSSL's randomness makes the ciphertext differ from run
 * to run, so every decision comes from the input and none from the bytes
 * of the ciphertext (record lengths may still differ by a byte or two,
 * since ECDSA signatures do). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "cport/tls.h"
#include "common.h"
#include "core_internal.h" /* CPORT__READ_CHUNK */
#include "tls_certs.h"
#include "tls_internal.h"

#define FUZZ_NAME "fuzz_tls"
#define FUZZ_ON_FAIL() ERR_print_errors_fp(stderr)
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

#define F_TLS12 0x01
#define F_CORRUPT 0x02
#define F_CORRUPT_SERVER 0x04

#define OP_FEED 0
#define OP_DRAIN 1
#define OP_WRITE 2
#define OP_CLOSE 3

/* Plaintext a side writes in one run, at most: a few records' worth,
 * so that a run stays fast; a write past it is cut short. */
#define WRITE_MAX (64 * 1024)
/* Rounds of the end, far more than a run needs. */
#define FINISH_ROUNDS 64

/* ---- byte strings ---- */

typedef struct bytes_s {
  uint8_t* p;
  size_t len;
  size_t cap;
} bytes_t;


/* The loop's pool of ciphertext blocks, as a session's engine has one;
 * emptied after each run for the leak check. */
static cport__tls_pool_t pool;

static void bytes_add(bytes_t* b, const uint8_t* p, size_t n) {
  if (n == 0)
    return;
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    uint8_t* grown;
    while (cap < b->len + n) cap *= 2;
    grown = realloc(b->p, cap);
    if (grown == NULL)
      fail("out of memory");
    b->p = grown;
    b->cap = cap;
  }
  memcpy(b->p + b->len, p, n);
  b->len += n;
}


/* ---- the contexts, made once per process ---- */

static cport_tls_t* ctx_client;
static cport_tls_t* ctx_server13;
static cport_tls_t* ctx_server12;

static void contexts_make(void) {
  tls_certs_t certs;
  cport_tls_opts_t o;
  if (ctx_client != NULL)
    return;
  if (tls_certs_make(&certs) != 0)
    fail("cannot make the certificates");
  cport_tls_opts_init(&o);
  o.cert_pem = certs.server;
  o.key_pem = certs.server_key;
  if (cport_tls_create(&ctx_server13, CPORT_TLS_SERVER, &o) != 0 ||
      cport_tls_create(&ctx_server12, CPORT_TLS_SERVER, &o) != 0)
    fail("cannot make the server contexts");
  /* Not in cport's options: the highest version is always 1.3 there. */
  if (SSL_CTX_set_max_proto_version(cport__tls_ctx(ctx_server12),
                                    TLS1_2_VERSION) != 1)
    fail("cannot cap the server at TLS 1.2");
  cport_tls_opts_init(&o);
  o.ca_pem = certs.ca;
  o.verify = CPORT_TLS_VERIFY_PEER;
  if (cport_tls_create(&ctx_client, CPORT_TLS_CLIENT, &o) != 0)
    fail("cannot make the client context");
  tls_certs_free(&certs);
  ERR_clear_error();
}


/* ---- one run ---- */

typedef struct side_s {
  const char* name;
  cport__tls_conn_t* conn;
  size_t cap;    /* bytes per read */
  bytes_t wire;  /* ciphertext this side sent, all of it */
  size_t fed;    /* how much of the peer's wire this side was fed */
  bytes_t wrote; /* plaintext handed to cport__tls_conn_write */
  bytes_t queue; /* plaintext written before the handshake completed */
  size_t got;    /* plaintext read: a prefix of the peer's `wrote` */
  int done;      /* handshake completed */
  int closed;    /* close_notify made */
  int eof;       /* the peer's close_notify read */
  int error;     /* the first error, negative */
} side_t;

typedef struct run_s {
  side_t side[2]; /* 0 the client, 1 the server */
  int corrupt;    /* a byte was corrupted */
  int corrupt_side;
  size_t corrupt_at;
  uint8_t corrupt_xor;
  int oom;
  uint8_t* buf; /* read into: read_buf */
} run_t;

/* One for the process: a fresh 64 KiB block per run costs AddressSanitizer
 * more than the run's handshake. */
static uint8_t read_buf[CPORT__READ_CHUNK];

static side_t* peer_of(run_t* r, side_t* s) {
  return s == &r->side[0] ? &r->side[1] : &r->side[0];
}


/* After every engine call: OpenSSL's queue is empty, the code is one the
 * header lists. */
static int check(run_t* r, side_t* s, const char* call, int rc) {
  (void)r;
  if (ERR_peek_error() != 0)
    fail("%s: %s left OpenSSL's error queue non-empty (rc %d)", s->name,
         call, rc);
  if (rc > 0 && rc != CPORT__TLS_WANT)
    fail("%s: %s returned %d", s->name, call, rc);
  return rc;
}


/* Take what the side made onto its wire, corrupting the chosen byte. */
static void take(run_t* r, side_t* s) {
  cport__tls_out_t* o = cport__tls_conn_take(s->conn);
  size_t start = s->wire.len;
  if (ERR_peek_error() != 0)
    fail("%s: take left OpenSSL's error queue non-empty", s->name);
  if (o == NULL)
    return;
  if (o->len == 0 || o->len > o->cap)
    fail("%s: took a block of %u bytes (room %u)", s->name,
         (unsigned)o->len, (unsigned)o->cap);
  bytes_add(&s->wire, o->data, o->len);
  cport__tls_out_put(&pool, o);
  if (r->corrupt_side == (int)(s - r->side) && r->corrupt_at >= start &&
      r->corrupt_at < s->wire.len) {
    s->wire.p[r->corrupt_at] ^= r->corrupt_xor;
    r->corrupt = 1;
  }
}


static void side_failed(side_t* s, int rc) {
  if (s->error == 0)
    s->error = rc;
}


static void side_write(run_t* r, side_t* s, const uint8_t* p, size_t n) {
  int rc;
  if (n == 0)
    return;
  /* As session_tls_write: room for the whole write first; without it
   * nothing is written. */
  rc = cport__tls_conn_reserve(s->conn, n);
  if (ERR_peek_error() != 0)
    fail("%s: reserve left OpenSSL's error queue non-empty", s->name);
  if (rc != 0) {
    side_failed(s, rc);
    return;
  }
  rc = check(r, s, "write", cport__tls_conn_write(s->conn, p, n));
  take(r, s);
  /* A write that failed may have made records for a part of it already
   * (one record's room found, the next's not): the peer may read a
   * prefix of it. */
  bytes_add(&s->wrote, p, n);
  if (rc != 0)
    side_failed(s, rc);
}


/* What session_tls_pump does: the handshake, then plaintext until the
 * budget of reads that return some runs out (0: no budget). */
static void pump(run_t* r, side_t* s, unsigned budget) {
  side_t* peer = peer_of(r, s);
  unsigned reads = 0;
  size_t i, bound;
  int rc;
  if (s->error != 0)
    return;
  if (!s->done) {
    rc = check(r, s, "handshake", cport__tls_conn_handshake(s->conn));
    take(r, s);
    if (rc == CPORT__TLS_WANT)
      return;
    if (rc != 0) {
      side_failed(s, rc);
      return;
    }
    s->done = 1;
    if (cport__tls_conn_version(s->conn) == NULL ||
        cport__tls_conn_cipher(s->conn) == NULL)
      fail("%s: no version or cipher after the handshake", s->name);
    side_write(r, s, s->queue.p, s->queue.len);
    s->queue.len = 0;
    if (s->error != 0)
      return;
  }
  /* Each read returns a byte at least, or ends the loop. */
  bound = peer->wrote.len - s->got + 1;
  for (i = 0; i < bound && !s->eof; i++) {
    size_t n = 0;
    if (budget != 0 && reads >= budget)
      return; /* paused */
    rc = check(r, s, "read", cport__tls_conn_read(s->conn, r->buf, s->cap, &n));
    take(r, s);
    if (rc == CPORT__TLS_WANT)
      return;
    if (rc == UV_EOF) {
      s->eof = 1;
      return;
    }
    if (rc != 0) {
      side_failed(s, rc);
      return;
    }
    if (n == 0 || n > s->cap)
      fail("%s: read returned 0 with %lu bytes (cap %lu)", s->name,
           (unsigned long)n, (unsigned long)s->cap);
    if (s->got + n > peer->wrote.len ||
        memcmp(r->buf, peer->wrote.p + s->got, n) != 0)
      fail("%s: read %lu bytes at %lu that %s did not write there", s->name,
           (unsigned long)n, (unsigned long)s->got, peer->name);
    s->got += n;
    reads++;
  }
  if (i == bound)
    fail("%s: still reading after %lu reads", s->name, (unsigned long)i);
}


/* Feed `size` bytes (0: all) of the peer's ciphertext not fed yet, as
 * session_tls_input does: input, pump, keep, and the bytes go. */
static void feed(run_t* r, side_t* s, size_t size, unsigned budget) {
  side_t* peer = peer_of(r, s);
  size_t pending = peer->wire.len - s->fed;
  uint8_t* piece;
  int rc;
  if (s->error != 0)
    return;
  if (size == 0 || size > pending)
    size = pending;
  if (size == 0)
    return;
  piece = malloc(size);
  if (piece == NULL)
    fail("out of memory");
  memcpy(piece, peer->wire.p + s->fed, size);
  s->fed += size;
  cport__tls_conn_input(s->conn, piece, size);
  pump(r, s, budget);
  if (s->error != 0) {
    cport__tls_conn_input(s->conn, NULL, 0); /* ending: nobody reads it */
  } else {
    rc = check(r, s, "keep", cport__tls_conn_keep(s->conn));
    if (rc != 0)
      side_failed(s, rc);
  }
  /* Scribbled over, then freed: a read of it later is caught either way. */
  memset(piece, 0xEE, size);
  free(piece);
}


static void drain(run_t* r, side_t* s, unsigned budget) {
  if (s->error == 0 && cport__tls_conn_has_input(s->conn))
    pump(r, s, budget);
}


static void close_notify(run_t* r, side_t* s) {
  int rc;
  if (s->error != 0 || !s->done || s->closed)
    return;
  s->closed = 1;
  rc = check(r, s, "close_notify", cport__tls_conn_close_notify(s->conn));
  take(r, s);
  if (rc != 0)
    side_failed(s, rc);
}


static void step_write(run_t* r, side_t* s, input_t* in, uint8_t op) {
  unsigned m = (op >> 3) & 3;
  size_t len = (size_t)input_byte(in) << (3 * m);
  size_t room = WRITE_MAX - s->wrote.len - s->queue.len;
  uint8_t* p;
  size_t i;
  if (len > room)
    len = room;
  if (len == 0 || s->closed || s->error != 0)
    return;
  p = malloc(len);
  if (p == NULL)
    fail("out of memory");
  for (i = 0; i < len; i++)
    p[i] = m == 0 ? input_byte(in)
                  : (uint8_t)(i * 131 + s->wrote.len + s->queue.len);
  if (s->done)
    side_write(r, s, p, len);
  else
    bytes_add(&s->queue, p, len);
  free(p);
}


static int run_failed(const run_t* r) {
  return r->side[0].error != 0 || r->side[1].error != 0;
}


static size_t progress(const run_t* r) {
  return r->side[0].got + r->side[0].fed + r->side[0].wire.len +
         r->side[1].got + r->side[1].fed + r->side[1].wire.len;
}


/* The end. First, without closing, each side is fed all that is pending
 * and drains until nothing moves: then every byte written must have been
 * read, since a side that stopped reading with input held must have said
 * so (cport__tls_conn_has_input) to be drained, no more ciphertext coming
 * to wake it. Then each side closes, until both have read the other's
 * close_notify. */
static void finish(run_t* r) {
  int round, k;
  size_t before;
  for (round = 0; round < FINISH_ROUNDS && !run_failed(r); round++) {
    before = progress(r);
    for (k = 0; k < 2; k++) {
      drain(r, &r->side[k], 0);
      feed(r, &r->side[k], 0, 0);
    }
    if (progress(r) == before)
      break;
  }
  if (!run_failed(r) && !r->corrupt && !r->oom) {
    for (k = 0; k < 2; k++) {
      side_t* s = &r->side[k];
      if (!s->done || s->got != peer_of(r, s)->wrote.len)
        fail("%s: idle with the handshake %s and %lu of %lu bytes read",
             s->name, s->done ? "done" : "not done", (unsigned long)s->got,
             (unsigned long)peer_of(r, s)->wrote.len);
    }
  }
  for (round = 0; round < FINISH_ROUNDS && !run_failed(r); round++) {
    if (r->side[0].eof && r->side[1].eof)
      return;
    for (k = 0; k < 2 && !run_failed(r); k++) {
      side_t* s = &r->side[k];
      drain(r, s, 0);
      feed(r, s, 0, 0);
      close_notify(r, s);
    }
  }
}


/* Once a side failed: its alert (when it made one) goes to the peer, which
 * must not crash on it either. */
static void after_failure(run_t* r) {
  int k;
  for (k = 0; k < 2; k++) {
    side_t* s = &r->side[k];
    side_t* peer = peer_of(r, s);
    if (s->error != 0 && peer->error == 0)
      feed(r, peer, 0, 0);
  }
}


/* A corrupted byte OpenSSL may ignore: a record header's legacy version
 * (its second and third byte) in `wire`. */
static int corrupted_version_byte(const bytes_t* wire, size_t at) {
  size_t pos = 0;
  while (pos + 5 <= wire->len) {
    size_t len = ((size_t)wire->p[pos + 3] << 8) | wire->p[pos + 4];
    if (at < pos + 5)
      return at == pos + 1 || at == pos + 2;
    pos += 5 + len;
  }
  return 0;
}


static void verify(run_t* r) {
  side_t* c = &r->side[0];
  side_t* s = &r->side[1];
  int complete = c->eof && s->eof && c->got == s->wrote.len &&
                 s->got == c->wrote.len && c->queue.len == 0 &&
                 s->queue.len == 0;
  if (run_failed(r)) {
    if (!r->corrupt && !r->oom)
      fail("failed without corruption: client %d, server %d", c->error,
           s->error);
    return;
  }
  if (complete) {
    if (r->corrupt &&
        !corrupted_version_byte(&r->side[r->corrupt_side].wire,
                                r->corrupt_at))
      fail("corrupted byte %lu of the %s's stream went unnoticed",
           (unsigned long)r->corrupt_at, r->side[r->corrupt_side].name);
    return;
  }
  if (r->corrupt) {
    /* A corrupted length: the reader waits, having been fed all there
     * is, for a record or a handshake message that never comes whole (a
     * session's timeouts end that). */
    side_t* reader = peer_of(r, &r->side[r->corrupt_side]);
    if (!reader->eof && reader->fed == r->side[r->corrupt_side].wire.len)
      return;
  }
  fail("no end after %d rounds: client done %d eof %d read %lu of %lu, "
       "server done %d eof %d read %lu of %lu",
       FINISH_ROUNDS, c->done, c->eof, (unsigned long)c->got,
       (unsigned long)s->wrote.len, s->done, s->eof, (unsigned long)s->got,
       (unsigned long)c->wrote.len);
}


int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  input_t in = {data, size, 0};
  run_t r;
  uint8_t flags, x;
  unsigned fail_n;
  long live;
  int k, rc;
  contexts_make();
  memset(&r, 0, sizeof(r));
  flags = input_byte(&in);
  for (k = 0; k < 2; k++) {
    uint8_t cap = input_byte(&in);
    r.side[k].cap = cap == 0 ? CPORT__READ_CHUNK : cap;
  }
  r.side[0].name = "client";
  r.side[1].name = "server";
  r.corrupt_side = (flags & F_CORRUPT_SERVER) ? 1 : 0;
  r.corrupt_at = (size_t)input_byte(&in) << 8;
  r.corrupt_at |= input_byte(&in);
  if (!(flags & F_CORRUPT))
    r.corrupt_at = (size_t)-1;
  x = input_byte(&in);
  r.corrupt_xor = x == 0 ? 0x80 : x;
  fail_n = flags >> 3;
  r.buf = read_buf;

  live = cport__mem_live();
  if (fail_n != 0) {
    cport__mem_fail_after((long)fail_n - 1);
    r.oom = 1;
  }
  rc = cport__tls_conn_new(&r.side[0].conn, ctx_client, &pool, "localhost",
                           NULL);
  if (ERR_peek_error() != 0)
    fail("client: new left OpenSSL's error queue non-empty");
  if (rc == 0)
    rc = cport__tls_conn_new(&r.side[1].conn,
                             (flags & F_TLS12) ? ctx_server12 : ctx_server13,
                             &pool, NULL, NULL);
  if (ERR_peek_error() != 0)
    fail("server: new left OpenSSL's error queue non-empty");
  if (rc != 0 && !r.oom)
    fail("cport__tls_conn_new: %d", rc);

  if (rc == 0) {
    /* The client's hello, as session_tls_begin pumps it. */
    pump(&r, &r.side[0], 0);
    while (in.at < in.len && !run_failed(&r)) {
      uint8_t op = input_byte(&in);
      side_t* s = &r.side[op & 1];
      switch ((op >> 1) & 3) {
        case OP_FEED: {
          size_t n = input_byte(&in);
          feed(&r, s, n, input_byte(&in));
          break;
        }
        case OP_DRAIN:
          drain(&r, s, input_byte(&in));
          break;
        case OP_WRITE:
          step_write(&r, s, &in, op);
          break;
        default:
          close_notify(&r, s);
          break;
      }
    }
    finish(&r);
    after_failure(&r);
    verify(&r);
  }

  cport__mem_fail_after(-1);
  for (k = 0; k < 2; k++) {
    cport__tls_conn_free(r.side[k].conn);
    free(r.side[k].wire.p);
    free(r.side[k].wrote.p);
    free(r.side[k].queue.p);
  }
  if (ERR_peek_error() != 0)
    fail("free left OpenSSL's error queue non-empty");
  cport__tls_pool_clear(&pool);
  if (cport__mem_live() != live)
    fail("%ld cport blocks leaked", cport__mem_live() - live);
  return 0;
}
