/* TLS sessions: contexts, the handshake, plaintext both ways over the
 * same Session API, verification, and the ways TLS layers over libuv
 * have gone wrong before. Certificates are made at test time
 * (tls_certs.c); everything runs on loopback. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#ifdef _WIN32
#include <winsock2.h>
#else
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#endif

#include "common.h" /* cport__mem_live */
#include "fixture.h"
#include "session_internal.h" /* cport__session_test_tls_fill */
#include "tls_certs.h"

static tls_certs_t certs;

static int certs_setup(void** state) {
  (void)state;
  return tls_certs_make(&certs);
}


static int certs_teardown(void** state) {
  (void)state;
  tls_certs_free(&certs);
  return 0;
}


/* A server context presenting `cert`/`key`. */
static cport_tls_t* server_ctx(const char* cert, const char* key) {
  cport_tls_opts_t o;
  cport_tls_t* t = NULL;
  cport_tls_opts_init(&o);
  o.cert_pem = cert;
  o.key_pem = key;
  assert_int_equal(cport_tls_create(&t, CPORT_TLS_SERVER, &o), 0);
  return t;
}


/* A client context trusting the test CA. */
static cport_tls_t* client_ctx(void) {
  cport_tls_opts_t o;
  cport_tls_t* t = NULL;
  cport_tls_opts_init(&o);
  o.ca_pem = certs.ca;
  assert_int_equal(cport_tls_create(&t, CPORT_TLS_CLIENT, &o), 0);
  return t;
}


/* Start the fixture's server with `srv` and one client with `cli` (the
 * fixture's services take their own references). */
static void start_pair(fixture_t* fx, cport_tls_t* srv, cport_tls_t* cli) {
  fx->opts.tls = srv;
  fixture_start_server(fx);
  fx->opts.tls = cli;
  fixture_start_client(fx, &fx->server_addr, 1);
  fx->opts.tls = NULL;
  cport_tls_unref(srv);
  cport_tls_unref(cli);
}


/* One client of fx->opts and a client context to the fixture's server. */
static void start_tls_client(fixture_t* fx) {
  fx->opts.tls = client_ctx();
  fixture_start_client(fx, &fx->server_addr, 1);
  cport_tls_unref(fx->opts.tls);
  fx->opts.tls = NULL;
}


/* A client context with `alpn` (or NULL) and `verify`, trusting the test
 * CA unless `verify` is CPORT_TLS_VERIFY_NONE. */
static cport_tls_t* client_ctx_with(const char* alpn,
                                    cport_tls_verify_t verify) {
  cport_tls_opts_t o;
  cport_tls_t* t = NULL;
  cport_tls_opts_init(&o);
  if (verify != CPORT_TLS_VERIFY_NONE)
    o.ca_pem = certs.ca;
  o.alpn = alpn;
  o.verify = verify;
  assert_int_equal(cport_tls_create(&t, CPORT_TLS_CLIENT, &o), 0);
  return t;
}


/* Destroy the fixture's services and let their closes run; the sessions
 * the fixture remembers keep their records. */
static void stop_pair(fixture_t* fx) {
  uint64_t deadline = uv_hrtime() + (uint64_t)FIXTURE_TIMEOUT_MS * 1000000u;
  cport_service_destroy(fx->client);
  cport_service_destroy(fx->server);
  fx->client = NULL;
  fx->server = NULL;
  while (cport_core_dispatch(fx->core, 0, 10) > 0)
    assert_true(uv_hrtime() < deadline);
}


static cport_service_stats_t stats_of(cport_service_t* svc) {
  cport_service_stats_t st;
  assert_int_equal(cport_service_stats(svc, &st), 0);
  return st;
}


/* ---- a relay: client -> relay -> TLS server ----
 * A libuv listener that takes one connection and connects onward to the
 * server, forwarding ciphertext both ways: optionally one byte per write,
 * optionally holding what the server sends (not reading it, so that the
 * server's writes stall in the kernel), and able to cut both connections
 * (a FIN each way, no close_notify). */
typedef struct relay_s relay_t;

typedef struct relay_end_s {
  uv_tcp_t tcp;
  relay_t* relay;
  struct relay_end_s* other;
  int open;
  int reading;
} relay_end_t;

struct relay_s {
  fixture_t* fx;
  uv_tcp_t listener;
  relay_end_t down; /* the client's connection */
  relay_end_t up;   /* ours to the server */
  uv_connect_t connect;
  cport_addr_t addr; /* where clients connect */
  cport_addr_t target;
  int one_byte;
  int hold;  /* the server's bytes stay unread */
  int small; /* a small receive buffer on `up`, so holding stalls soon */
  int connected;
  int accepted;
  size_t to_server; /* bytes whose write to the server completed */
  size_t to_client;
  int closes;
};

typedef struct relay_write_s {
  uv_write_t req;
  relay_t* relay;
  int to_server;
  size_t len;
  char data[];
} relay_write_t;

static void relay_alloc_cb(uv_handle_t* h, size_t suggested, uv_buf_t* buf) {
  static char chunk[65536];
  (void)h;
  (void)suggested;
  buf->base = chunk;
  buf->len = sizeof(chunk);
}

static void relay_write_cb(uv_write_t* req, int status) {
  relay_write_t* w = (relay_write_t*)req;
  if (status == 0 && w->to_server)
    w->relay->to_server += w->len;
  else if (status == 0)
    w->relay->to_client += w->len;
  free(w);
}

static void relay_send(relay_end_t* to, const char* data, size_t len) {
  relay_t* r = to->relay;
  size_t step = r->one_byte ? 1 : len;
  size_t off;
  for (off = 0; off < len; off += step) {
    relay_write_t* w = malloc(sizeof(*w) + step);
    uv_buf_t buf;
    assert_non_null(w);
    w->relay = r;
    w->to_server = to == &r->up;
    w->len = step;
    memcpy(w->data, data + off, step);
    buf = uv_buf_init(w->data, (unsigned)step);
    if (uv_write(&w->req, (uv_stream_t*)&to->tcp, &buf, 1, relay_write_cb) !=
        0) {
      free(w);
      return;
    }
  }
}

static void relay_close_cb(uv_handle_t* h) {
  relay_end_t* e = h->data;
  e->relay->closes++;
}

static void relay_close_end(relay_end_t* e) {
  if (e->open && !uv_is_closing((uv_handle_t*)&e->tcp))
    uv_close((uv_handle_t*)&e->tcp, relay_close_cb);
  e->open = 0;
}

static void relay_shutdown_cb(uv_shutdown_t* req, int status) {
  (void)status;
  free(req);
}

static void relay_read_cb(uv_stream_t* stream,
                          ssize_t nread,
                          const uv_buf_t* buf) {
  relay_end_t* from = stream->data;
  if (nread > 0) {
    relay_send(from->other, buf->base, (size_t)nread);
  } else if (nread == UV_EOF) {
    uv_shutdown_t* req = malloc(sizeof(*req));
    assert_non_null(req);
    if (uv_shutdown(req, (uv_stream_t*)&from->other->tcp, relay_shutdown_cb) !=
        0)
      free(req);
  } else if (nread < 0) {
    relay_close_end(from);
    relay_close_end(from->other);
  }
}

static void relay_read(relay_end_t* e, int on) {
  if (!e->open || e->reading == on)
    return;
  if (on)
    assert_int_equal(
        uv_read_start((uv_stream_t*)&e->tcp, relay_alloc_cb, relay_read_cb), 0);
  else
    uv_read_stop((uv_stream_t*)&e->tcp);
  e->reading = on;
}

static void relay_connect_cb(uv_connect_t* req, int status) {
  relay_t* r = req->data;
  if (status != 0) {
    relay_close_end(&r->down);
    relay_close_end(&r->up);
    return;
  }
  r->connected = 1;
  (void)uv_tcp_nodelay(&r->up.tcp, 1);
  (void)uv_tcp_nodelay(&r->down.tcp, 1);
  relay_read(&r->down, 1);
  relay_read(&r->up, !r->hold);
}

static void relay_end_init(relay_t* r, relay_end_t* e, relay_end_t* other) {
  e->relay = r;
  e->other = other;
  e->tcp.data = e;
}

static void relay_connection_cb(uv_stream_t* server, int status) {
  relay_t* r = server->data;
  assert_int_equal(status, 0);
  assert_int_equal(r->accepted, 0); /* one connection per relay */
  assert_int_equal(uv_tcp_init(r->fx->loop, &r->down.tcp), 0);
  relay_end_init(r, &r->down, &r->up);
  r->down.open = 1;
  assert_int_equal(uv_accept(server, (uv_stream_t*)&r->down.tcp), 0);
  r->accepted = 1;
  assert_int_equal(uv_tcp_init_ex(r->fx->loop, &r->up.tcp, AF_INET), 0);
  relay_end_init(r, &r->up, &r->down);
  r->up.open = 1;
  if (r->small) {
    /* A fixed receive buffer turns off autotuning: what the server may
     * have in flight is then its own send buffer and little more. */
    int size = 64 * 1024;
    assert_int_equal(uv_recv_buffer_size((uv_handle_t*)&r->up.tcp, &size), 0);
  }
  r->connect.data = r;
  assert_int_equal(
      uv_tcp_connect(&r->connect, &r->up.tcp, cport_addr_sockaddr(&r->target),
                     relay_connect_cb),
      0);
}

/* A relay to `target` on the fixture's loop; clients connect to r->addr. */
static relay_t* relay_start(fixture_t* fx,
                            const cport_addr_t* target,
                            int one_byte,
                            int hold) {
  relay_t* r = calloc(1, sizeof(*r));
  cport_addr_t any;
  struct sockaddr_storage name;
  int len = (int)sizeof(name);
  assert_non_null(r);
  r->fx = fx;
  r->target = *target;
  r->one_byte = one_byte;
  r->hold = hold;
  r->small = 1;
  assert_int_equal(uv_tcp_init(fx->loop, &r->listener), 0);
  r->listener.data = r;
  assert_int_equal(cport_addr_parse(&any, "127.0.0.1", 0), 0);
  assert_int_equal(uv_tcp_bind(&r->listener, cport_addr_sockaddr(&any), 0), 0);
  assert_int_equal(
      uv_listen((uv_stream_t*)&r->listener, 8, relay_connection_cb), 0);
  assert_int_equal(
      uv_tcp_getsockname(&r->listener, (struct sockaddr*)&name, &len), 0);
  assert_int_equal(cport_addr_from_sockaddr(&r->addr, (struct sockaddr*)&name),
                   0);
  return r;
}

/* Let the server's bytes through again. */
static void relay_release(relay_t* r) {
  r->hold = 0;
  relay_read(&r->up, r->connected);
}

/* End both connections: each side sees a TCP EOF, no close_notify. */
static void relay_cut(relay_t* r) {
  relay_end_t* ends[2] = {&r->down, &r->up};
  int i;
  for (i = 0; i < 2; i++) {
    uv_shutdown_t* req = malloc(sizeof(*req));
    assert_non_null(req);
    if (!ends[i]->open ||
        uv_shutdown(req, (uv_stream_t*)&ends[i]->tcp, relay_shutdown_cb) != 0)
      free(req);
  }
}

static void relay_listener_close_cb(uv_handle_t* h) {
  relay_t* r = h->data;
  r->closes++;
}

static void relay_destroy(relay_t* r) {
  int want = 1 + (r->accepted ? 2 : 0);
  relay_close_end(&r->down);
  relay_close_end(&r->up);
  uv_close((uv_handle_t*)&r->listener, relay_listener_close_cb);
  fixture_wait_int(r->fx, &r->closes, want, FIXTURE_TIMEOUT_MS);
  free(r);
}


/* Start the fixture's server with `srv` and a client with `cli` that
 * connects through a new relay (returned). */
static relay_t* start_relayed(
    fixture_t* fx, cport_tls_t* srv, cport_tls_t* cli, int one_byte, int hold) {
  relay_t* r;
  fx->opts.tls = srv;
  fixture_start_server(fx);
  r = relay_start(fx, &fx->server_addr, one_byte, hold);
  fx->opts.tls = cli;
  fixture_start_client(fx, &r->addr, 1);
  fx->opts.tls = NULL;
  cport_tls_unref(srv);
  cport_tls_unref(cli);
  return r;
}


static int atomic_reached(void* arg) {
  return atomic_load((atomic_int*)arg) != 0;
}


/* ---- the handshake and on_connected ---- */

typedef struct hs_s {
  int connected;
  int settled; /* on_connected found the handshake's results */
  int disconnected;
  size_t received;
} hs_t;

static void hs_connected(cport_session_t* s) {
  hs_t* h = cport_service_get_data(cport_session_service(s));
  char subject[128];
  h->connected++;
  if (cport_session_tls_version(s) != NULL &&
      cport_session_tls_cipher(s) != NULL &&
      cport_session_tls_alpn(s) != NULL &&
      strcmp(cport_session_tls_alpn(s), "http/1.1") == 0 &&
      cport_session_tls_resumed(s) == 0 &&
      cport_session_tls_peer_subject(s, subject, sizeof(subject)) == UV_ENOENT)
    h->settled++;
}

static size_t hs_recv(cport_session_t* s, const uint8_t* data, size_t len) {
  hs_t* h = cport_service_get_data(cport_session_service(s));
  (void)data;
  h->received += len;
  return len;
}

static void hs_disconnected(cport_session_t* s, int code, const char* cause) {
  hs_t* h = cport_service_get_data(cport_session_service(s));
  (void)code;
  (void)cause;
  h->disconnected++;
}

/* A plain TCP peer that sends nothing never gets its session reported,
 * while a TLS client that completes its handshake does, and its
 * on_connected finds what the handshake settled. */
static void test_tls_handshake_then_on_connected(void** state) {
  fixture_t* fx = *state;
  hs_t h = {0};
  cport_service_opts_t o;
  cport_tls_opts_t t;
  cport_tls_t* srv = NULL;
  peer_t* silent;
  peer_t* hello;
  static const uint8_t partial[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01};
  cport_tls_opts_init(&t);
  t.cert_pem = certs.server;
  t.key_pem = certs.server_key;
  t.alpn = "http/1.1";
  assert_int_equal(cport_tls_create(&srv, CPORT_TLS_SERVER, &t), 0);
  cport_service_opts_init(&o);
  o.cbs.on_connected = hs_connected;
  o.cbs.on_recv = hs_recv;
  o.cbs.on_disconnected = hs_disconnected;
  o.data = &h;
  o.tls = srv;
  fx->server =
      fixture_create_service(fx, CPORT_SERVICE_SERVER, "127.0.0.1", &o);
  cport_tls_unref(srv);
  assert_int_equal(cport_service_start(fx->server), 0);
  assert_int_equal(cport_service_local_addr(fx->server, &fx->server_addr), 0);
  silent = peer_connect(fx, &fx->server_addr, 0);
  hello = peer_connect(fx, &fx->server_addr, 0);
  peer_write(hello, partial, sizeof(partial));
  /* A real client after them: once it is reported, the server has long
   * seen both peers' connections (and the second one's bytes). */
  fx->opts.tls = client_ctx_with("http/1.1", CPORT_TLS_VERIFY_DEFAULT);
  fixture_start_client(fx, &fx->server_addr, 1);
  cport_tls_unref(fx->opts.tls);
  fx->opts.tls = NULL;
  fixture_wait_int(fx, &fx->connected, 1, FIXTURE_TIMEOUT_MS);
  fixture_wait_int(fx, &h.connected, 1, FIXTURE_TIMEOUT_MS);
  /* A round trip more: the peers' sessions are still unreported. */
  assert_int_equal(cport_session_send(fx->last_client, "x", 1), 0);
  fixture_wait_size(fx, &h.received, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(h.connected, 1);
  assert_int_equal(h.settled, 1);
  assert_int_equal(stats_of(fx->server).connected, 1);
  peer_destroy(silent);
  peer_destroy(hello);
  stop_pair(fx);
  /* The two peers' sessions ended unreported: one on_disconnected only. */
  assert_int_equal(h.disconnected, 1);
}


/* ---- plaintext both ways ---- */

/* A packet server over TLS: counts packets and echoes each. */
typedef struct pkt_s {
  size_t packets;
  unsigned next_id; /* the id the next packet must have */
  int out_of_order;
} pkt_t;

static void pkt_packet(cport_session_t* s,
                       unsigned id,
                       const uint8_t* payload,
                       size_t len) {
  pkt_t* p = cport_service_get_data(cport_session_service(s));
  if (id != p->next_id || len != id % 7)
    p->out_of_order++;
  p->next_id = (id + 1) & 0xffff;
  p->packets++;
  assert_int_equal(cport_session_send_packet(s, id, payload, len), 0);
}

/* `n` packets of the default format (2-byte length counting the 4-byte
 * header, 2-byte id, little endian), packet i with id i and i % 7 bytes. */
static void build_packets(unsigned n, bytes_t* out) {
  unsigned i;
  for (i = 0; i < n; i++) {
    uint8_t p[4 + 7];
    size_t len = i % 7;
    p[0] = (uint8_t)(4 + len);
    p[1] = 0;
    p[2] = (uint8_t)i;
    p[3] = (uint8_t)(i >> 8);
    memset(p + 4, (int)(i & 0xff), len);
    bytes_append(out, p, 4 + len);
  }
}

/* 1 MiB echoed byte-exact through TLS both ways; then a packet service
 * with packet_budget 4 given thousands of tiny packets in one burst: the
 * budget's yields leave plaintext and ciphertext in the TLS engine, and
 * the resume must drain them, since the socket brings nothing more. */
static void test_tls_on_recv_gets_plaintext(void** state) {
  fixture_t* fx = *state;
  enum { N = 1 << 20, PACKETS = 3000 };
  uint8_t* data = malloc(N);
  rec_session_t* rc;
  pkt_t pk = {0};
  bytes_t burst = {0};
  cport_service_opts_t o;
  assert_non_null(data);
  fill_pattern(data, N, 17);
  start_pair(fx, server_ctx(certs.server, certs.server_key), client_ctx());
  fixture_wait_int(fx, &fx->connected, 2, FIXTURE_TIMEOUT_MS);
  assert_int_equal(cport_session_send(fx->last_client, data, N), 0);
  rc = rec_of(fx->last_client);
  fixture_wait_size(fx, &rc->received.len, N, FIXTURE_TIMEOUT_MS);
  assert_int_equal(rc->received.len, N);
  assert_memory_equal(rc->received.data, data, N);
  assert_int_equal(rec_of(fx->last_server)->received.len, N);
  assert_memory_equal(rec_of(fx->last_server)->received.data, data, N);
  free(data);
  stop_pair(fx);

  cport_service_opts_init(&o);
  o.cbs.on_packet = pkt_packet;
  o.packet_budget = 4;
  o.data = &pk;
  o.tls = server_ctx(certs.server, certs.server_key);
  fx->server =
      fixture_create_service(fx, CPORT_SERVICE_SERVER, "127.0.0.1", &o);
  cport_tls_unref(o.tls);
  assert_int_equal(cport_service_start(fx->server), 0);
  assert_int_equal(cport_service_local_addr(fx->server, &fx->server_addr), 0);
  start_tls_client(fx);
  fixture_wait_int(fx, &fx->connected, 3, FIXTURE_TIMEOUT_MS);
  /* A budget yield while TLS still holds plaintext: the resume must drain
   * it, since the last read brought everything. */
  cport__session_test_tls_fill(512);
  build_packets(PACKETS, &burst);
  assert_int_equal(cport_session_send(fx->last_client, burst.data, burst.len),
                   0);
  rc = rec_of(fx->last_client);
  fixture_wait_size(fx, &pk.packets, PACKETS, FIXTURE_TIMEOUT_MS);
  assert_int_equal(pk.out_of_order, 0);
  fixture_wait_size(fx, &rc->received.len, burst.len, FIXTURE_TIMEOUT_MS);
  assert_memory_equal(rc->received.data, burst.data, burst.len);
  assert_int_equal(stats_of(fx->server).packets_in, PACKETS);
  cport__session_test_tls_fill(0);
  bytes_free(&burst);
  stop_pair(fx);
}


/* A session paused by its send queue (an echo to a peer, limit 1 byte)
 * while TLS still holds decrypted plaintext reads it when the queue
 * drains: the socket has nothing more to wake it with. */
static void test_tls_pause_drains_what_tls_holds(void** state) {
  fixture_t* fx = *state;
  enum { N = 256 * 1024 };
  uint8_t* data = malloc(N);
  rec_session_t* rc;
  assert_non_null(data);
  fill_pattern(data, N, 29);
  fx->opts.send_queue_limit = 1;
  fx->opts.tls = server_ctx(certs.server, certs.server_key);
  fixture_start_server(fx);
  cport_tls_unref(fx->opts.tls);
  fx->opts.send_queue_limit = 1024 * 1024;
  start_tls_client(fx);
  fixture_wait_int(fx, &fx->connected, 2, FIXTURE_TIMEOUT_MS);
  cport__session_test_tls_fill(512);
  assert_int_equal(cport_session_send(fx->last_client, data, N), 0);
  rc = rec_of(fx->last_client);
  fixture_wait_size(fx, &rc->received.len, N, FIXTURE_TIMEOUT_MS);
  cport__session_test_tls_fill(0);
  assert_memory_equal(rc->received.data, data, N);
  assert_true(stats_of(fx->server).pauses > 0);
  free(data);
}


/* Ciphertext relayed one byte per write both ways: records and reads
 * split at every byte still give a byte-exact echo. */
static void test_tls_one_byte_relay_round_trips(void** state) {
  fixture_t* fx = *state;
  /* Under wine every one-byte write is an IOCP round of its own, so slow
   * that 64 KiB made no progress in 10 s there: one record each way under
   * wine (still thousands of one-byte writes), four records elsewhere. */
  size_t N = fixture_under_wine() ? 4096 : 64 * 1024;
  uint8_t* data = malloc(N);
  rec_session_t* rc;
  relay_t* r;
  assert_non_null(data);
  fill_pattern(data, N, 5);
  r = start_relayed(fx, server_ctx(certs.server, certs.server_key),
                    client_ctx(), 1, 0);
  fixture_wait_int(fx, &fx->connected, 2, FIXTURE_TIMEOUT_MS);
  assert_int_equal(cport_session_send(fx->last_client, data, N), 0);
  rc = rec_of(fx->last_client);
  fixture_wait_size(fx, &rc->received.len, N, FIXTURE_TIMEOUT_MS);
  assert_int_equal(rc->received.len, N);
  assert_memory_equal(rc->received.data, data, N);
  free(data);
  relay_destroy(r);
  stop_pair(fx);
}


/* ---- sends ---- */

/* More than the kernel's buffers hold once the relay stops reading with a
 * small receive buffer (a send buffer autotunes up to 4 MiB on Linux). */
#define HELD_BYTES (12u * 1024 * 1024)

/* on_send reports a send once the ciphertext block carrying it was
 * written, not when it was encrypted: while the relay holds the server's
 * ciphertext, on_send stays short of the total. */
static void test_tls_on_send_after_ciphertext_written(void** state) {
  fixture_t* fx = *state;
  enum { SENDS = 12, EACH = HELD_BYTES / SENDS };
  uint8_t* data = malloc(HELD_BYTES);
  rec_session_t* srv;
  rec_session_t* cli;
  relay_t* r;
  int i;
  FIXTURE_SKIP_UNDER_WINE(FIXTURE_WINE_DRAINS_STUCK_WRITES);
  assert_non_null(data);
  fill_pattern(data, HELD_BYTES, 9);
  fx->mode = RECV_CONSUME;
  fx->opts.send_queue_limit = 2 * HELD_BYTES;
  r = start_relayed(fx, server_ctx(certs.server, certs.server_key),
                    client_ctx(), 0, 0);
  fixture_wait_int(fx, &fx->connected, 2, FIXTURE_TIMEOUT_MS);
  srv = rec_of(fx->last_server);
  cli = rec_of(fx->last_client);
  /* Hold from here: the handshake went through. */
  r->hold = 1;
  relay_read(&r->up, 0);
  for (i = 0; i < SENDS; i++)
    assert_int_equal(
        cport_session_send(fx->last_server, data + (size_t)i * EACH, EACH), 0);
  /* Round trips the other way, so that the server's loop has run its
   * writes as far as the kernel takes them. */
  for (i = 1; i <= 3; i++) {
    assert_int_equal(cport_session_send(fx->last_client, "ping", 4), 0);
    fixture_wait_size(fx, &srv->received.len, (size_t)i * 4,
                      FIXTURE_TIMEOUT_MS);
  }
  print_message("on_send %llu of %u bytes while held\n",
                (unsigned long long)srv->sent, HELD_BYTES);
  assert_true(srv->sent < HELD_BYTES);
  assert_true(cport_session_queued_bytes(fx->last_server) > 0);
  relay_release(r);
  fixture_wait_size(fx, &cli->received.len, HELD_BYTES, FIXTURE_TIMEOUT_MS);
  assert_memory_equal(cli->received.data, data, HELD_BYTES);
  fixture_wait_size(fx, &srv->sent, HELD_BYTES, FIXTURE_TIMEOUT_MS);
  assert_int_equal(srv->sent, HELD_BYTES);
  free(data);
  relay_destroy(r);
  stop_pair(fx);
}


/* The largest queued_bytes the check handle saw of `watched`. */
static cport_session_t* watched;
static size_t watched_max;

static void watch_check_cb(uv_check_t* h) {
  (void)h;
  if (watched != NULL && cport_session_queued_bytes(watched) > watched_max)
    watched_max = cport_session_queued_bytes(watched);
}

/* The server stopped reading for its send queue and stays stopped. */
static int server_paused(void* arg) {
  fixture_t* fx = arg;
  return stats_of(fx->server).pauses > 0 &&
         cport_session_queued_bytes(fx->last_server) >
             fx->opts.send_queue_limit;
}

/* Ciphertext waiting to be written counts in queued_bytes with the
 * plaintext it carries; send_queue_limit still refuses sends
 * (CPORT_ESENDQ); and an echo to a reader that reads nothing keeps the
 * server's queue bounded (its reading pauses). */
/* Without on_send a send into an idle TLS session is encrypted at once
 * and offered to the kernel (no request queued); what the kernel leaves
 * goes through uv_write, and the sends behind it queue as usual. Held by
 * the relay, nothing may be lost or reordered, and bytes_out counts every
 * byte once written. */
static void test_tls_direct_writes_keep_order_when_the_kernel_is_full(
    void** state) {
  fixture_t* fx = *state;
  enum { SENDS = 48, EACH = HELD_BYTES / SENDS };
  uint8_t* data = malloc(HELD_BYTES);
  rec_session_t* cli;
  relay_t* r;
  int i;
  FIXTURE_SKIP_UNDER_WINE(FIXTURE_WINE_DRAINS_STUCK_WRITES);
  assert_non_null(data);
  fill_pattern(data, HELD_BYTES, 41);
  fx->mode = RECV_CONSUME;
  fx->no_on_send = 1;
  fx->opts.send_queue_limit = 2 * HELD_BYTES;
  r = start_relayed(fx, server_ctx(certs.server, certs.server_key),
                    client_ctx(), 0, 0);
  fixture_wait_int(fx, &fx->connected, 2, FIXTURE_TIMEOUT_MS);
  cli = rec_of(fx->last_client);
  r->hold = 1;
  relay_read(&r->up, 0);
  for (i = 0; i < SENDS; i++)
    assert_int_equal(
        cport_session_send(fx->last_server, data + (size_t)i * EACH, EACH), 0);
  /* The kernel's buffers hold less than this: some of it waits in cport. */
  assert_true(cport_session_queued_bytes(fx->last_server) > 0);
  relay_release(r);
  fixture_wait_size(fx, &cli->received.len, (size_t)SENDS * EACH,
                    FIXTURE_TIMEOUT_MS);
  assert_memory_equal(cli->received.data, data, (size_t)SENDS * EACH);
  assert_int_equal(cport_session_queued_bytes(fx->last_server), 0);
  assert_int_equal(stats_of(fx->server).bytes_out, (uint64_t)SENDS * EACH);
  free(data);
  relay_destroy(r);
  stop_pair(fx);
}


/* The tests below again without on_send, where sends into an idle
 * session take the direct path instead of the queue. */
static void test_tls_on_recv_gets_plaintext_direct(void** state) {
  ((fixture_t*)*state)->no_on_send = 1;
  test_tls_on_recv_gets_plaintext(state);
}


static void test_tls_one_byte_relay_round_trips_direct(void** state) {
  ((fixture_t*)*state)->no_on_send = 1;
  test_tls_one_byte_relay_round_trips(state);
}


static void test_tls_backpressure_counts_ciphertext(void** state) {
  fixture_t* fx = *state;
  enum { EACH = 64 * 1024, LIMIT = 1 << 20, ECHOED = 12 << 20 };
  uint8_t* data = malloc(ECHOED);
  static uv_check_t check; /* closes after this function returns */
  size_t accepted = 0;
  size_t queued, unsent;
  rec_session_t* srv;
  rec_session_t* cli;
  relay_t* r;
  int rc = 0;
  int i;
  FIXTURE_SKIP_UNDER_WINE(FIXTURE_WINE_DRAINS_STUCK_WRITES);
  assert_non_null(data);
  fill_pattern(data, ECHOED, 3);
  fx->mode = RECV_CONSUME;
  fx->opts.send_queue_limit = LIMIT;
  r = start_relayed(fx, server_ctx(certs.server, certs.server_key),
                    client_ctx(), 0, 0);
  fixture_wait_int(fx, &fx->connected, 2, FIXTURE_TIMEOUT_MS);
  srv = rec_of(fx->last_server);
  r->hold = 1;
  relay_read(&r->up, 0);
  /* Send until refused, letting the loop write in between: the kernel
   * fills, then the queue. */
  for (i = 0; i < 4096; i++) {
    rc = cport_session_send(fx->last_server, data, EACH);
    if (rc != 0)
      break;
    accepted += EACH;
    cport_core_dispatch(fx->core, 0, 0);
  }
  assert_int_equal(rc, CPORT_ESENDQ);
  queued = cport_session_queued_bytes(fx->last_server);
  unsent = accepted - srv->sent;
  print_message("refused after %llu bytes: %llu unsent, %llu queued\n",
                (unsigned long long)accepted, (unsigned long long)unsent,
                (unsigned long long)queued);
  assert_true(queued >= LIMIT);
  /* The block in flight carries at least one send: its ciphertext counts
   * on top of the plaintext requests (each charged at least its
   * bytes). */
  assert_true(queued >= unsent + EACH);
  /* Bounded: the plaintext under the limit, and its ciphertext. */
  assert_true(queued <= 2 * (LIMIT + EACH) + 64 * 1024);
  assert_int_equal(cport_session_send(fx->last_server, "x", 1), CPORT_ESENDQ);
  relay_release(r);
  cli = rec_of(fx->last_client);
  fixture_wait_size(fx, &srv->sent, accepted, FIXTURE_TIMEOUT_MS);
  fixture_wait_size(fx, &cli->received.len, accepted, FIXTURE_TIMEOUT_MS);
  relay_destroy(r);
  stop_pair(fx);

  /* An echo server whose client's reader holds everything. */
  fx->mode = RECV_ECHO;
  fx->opts.send_queue_limit = 256 * 1024;
  fx->opts.tls = server_ctx(certs.server, certs.server_key);
  fixture_start_server(fx);
  cport_tls_unref(fx->opts.tls);
  r = relay_start(fx, &fx->server_addr, 0, 0);
  fx->opts.tls = client_ctx();
  fx->opts.send_queue_limit = 2 * ECHOED;
  fixture_start_client(fx, &r->addr, 1);
  fx->opts.send_queue_limit = 256 * 1024; /* the server's, for the wait */
  cport_tls_unref(fx->opts.tls);
  fx->opts.tls = NULL;
  fixture_wait_int(fx, &fx->connected, 4, FIXTURE_TIMEOUT_MS);
  r->hold = 1;
  relay_read(&r->up, 0);
  watched = fx->last_server;
  watched_max = 0;
  assert_int_equal(uv_check_init(fx->loop, &check), 0);
  assert_int_equal(uv_check_start(&check, watch_check_cb), 0);
  srv = rec_of(fx->last_server);
  cli = rec_of(fx->last_client);
  assert_int_equal(cport_session_send(fx->last_client, data, ECHOED), 0);
  /* The server reads until its echo fills the queue, then pauses. */
  assert_true(fixture_run_until(fx, server_paused, fx, FIXTURE_TIMEOUT_MS));
  print_message(
      "server paused after %llu bytes (queue %llu), queue at most %llu\n",
      (unsigned long long)srv->received.len,
      (unsigned long long)cport_session_queued_bytes(fx->last_server),
      (unsigned long long)watched_max);
  assert_true(srv->received.len < ECHOED);
  assert_true(watched_max <= 2 * (256 * 1024 + 64 * 1024) + 64 * 1024);
  relay_release(r);
  fixture_wait_size(fx, &cli->received.len, ECHOED, FIXTURE_TIMEOUT_MS);
  assert_memory_equal(cli->received.data, data, ECHOED);
  assert_true(watched_max <= 2 * (256 * 1024 + 64 * 1024) + 64 * 1024);
  watched = NULL;
  uv_close((uv_handle_t*)&check, NULL);
  free(data);
  relay_destroy(r);
  stop_pair(fx);
}


/* ---- handshake timeout ---- */

static size_t mute_recv(cport_session_t* s, const uint8_t* data, size_t len) {
  (void)s;
  (void)data;
  return len;
}

static int peer_ended(void* arg) {
  peer_t* p = arg;
  return p->eof || p->error != 0;
}

/* tls_handshake_timeout_ms 200: a peer that sends nothing and one that
 * sends part of a ClientHello are closed unreported and counted; a TLS
 * client of a plain TCP server that never answers fails its connect with
 * UV_ETIMEDOUT. */
static void test_tls_handshake_timeout(void** state) {
  fixture_t* fx = *state;
  static const uint8_t partial[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00};
  cport_service_opts_t o;
  cport_service_t* plain;
  cport_addr_t plain_addr;
  peer_t* silent;
  peer_t* hello;
  fx->opts.tls_handshake_timeout_ms = 200;
  fx->opts.tls = server_ctx(certs.server, certs.server_key);
  fixture_start_server(fx);
  cport_tls_unref(fx->opts.tls);
  fx->opts.tls = NULL;
  silent = peer_connect(fx, &fx->server_addr, 0);
  hello = peer_connect(fx, &fx->server_addr, 0);
  peer_write(hello, partial, sizeof(partial));
  assert_true(fixture_run_until(fx, peer_ended, silent, FIXTURE_TIMEOUT_MS));
  assert_true(fixture_run_until(fx, peer_ended, hello, FIXTURE_TIMEOUT_MS));
  assert_int_equal(silent->received.len, 0);
  assert_int_equal(fx->connected, 0);
  assert_int_equal(fx->disconnected, 0);
  assert_int_equal(stats_of(fx->server).tls_failures, 2);
  assert_int_equal(stats_of(fx->server).tls_handshakes, 0);
  peer_destroy(silent);
  peer_destroy(hello);

  /* A plain TCP server that takes the ClientHello and never answers. */
  cport_service_opts_init(&o);
  o.cbs.on_recv = mute_recv;
  plain = fixture_create_service(fx, CPORT_SERVICE_SERVER, "127.0.0.1", &o);
  assert_int_equal(cport_service_start(plain), 0);
  assert_int_equal(cport_service_local_addr(plain, &plain_addr), 0);
  fx->opts.tls = client_ctx();
  fixture_start_client(fx, &plain_addr, 1);
  cport_tls_unref(fx->opts.tls);
  fx->opts.tls = NULL;
  fixture_wait_int(fx, &fx->connect_failed, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(fx->last_connect_error, UV_ETIMEDOUT);
  assert_int_equal(fx->connected, 0);
  assert_int_equal(stats_of(fx->client).tls_failures, 1);
  cport_service_destroy(plain);
}


/* ---- the end of a session ---- */

/* A disconnect on the server writes every queued send, then close_notify:
 * the client reads all of it and ends with UV_EOF, not
 * CPORT_ETLSTRUNCATED. */
static void test_tls_disconnect_sends_close_notify_then_shutdown(void** state) {
  fixture_t* fx = *state;
  enum { SENDS = 20, EACH = 10000 };
  uint8_t* data = malloc(SENDS * EACH);
  rec_session_t* cli;
  int i;
  assert_non_null(data);
  fill_pattern(data, SENDS * EACH, 11);
  fx->mode = RECV_CONSUME;
  start_pair(fx, server_ctx(certs.server, certs.server_key), client_ctx());
  fixture_wait_int(fx, &fx->connected, 2, FIXTURE_TIMEOUT_MS);
  cli = rec_of(fx->last_client);
  for (i = 0; i < SENDS; i++)
    assert_int_equal(cport_session_send(fx->last_server, data + i * EACH, EACH),
                     0);
  assert_int_equal(cport_session_disconnect(fx->last_server, "bye"), 0);
  fixture_wait_int(fx, &cli->disconnected, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(cli->code, UV_EOF);
  assert_int_equal(cli->received.len, SENDS * EACH);
  assert_memory_equal(cli->received.data, data, SENDS * EACH);
  fixture_wait_int(fx, &rec_of(fx->last_server)->disconnected, 1,
                   FIXTURE_TIMEOUT_MS);
  assert_int_equal(rec_of(fx->last_server)->code, CPORT_ELOCAL);
  free(data);
}


/* The TCP connection ends mid-session without close_notify (the relay
 * closes it): both sessions end with CPORT_ETLSTRUNCATED. */
static void test_tls_eof_without_close_notify_is_truncated(void** state) {
  fixture_t* fx = *state;
  rec_session_t* srv;
  relay_t* r;
  fx->mode = RECV_CONSUME;
  r = start_relayed(fx, server_ctx(certs.server, certs.server_key),
                    client_ctx(), 0, 0);
  fixture_wait_int(fx, &fx->connected, 2, FIXTURE_TIMEOUT_MS);
  srv = rec_of(fx->last_server);
  assert_int_equal(cport_session_send(fx->last_client, "half", 4), 0);
  fixture_wait_size(fx, &srv->received.len, 4, FIXTURE_TIMEOUT_MS);
  relay_cut(r);
  fixture_wait_int(fx, &srv->disconnected, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(srv->code, CPORT_ETLSTRUNCATED);
  fixture_wait_int(fx, &rec_of(fx->last_client)->disconnected, 1,
                   FIXTURE_TIMEOUT_MS);
  assert_int_equal(rec_of(fx->last_client)->code, CPORT_ETLSTRUNCATED);
  relay_destroy(r);
  stop_pair(fx);
}


/* ---- closes during the handshake ---- */

/* A client's ClientHello has reached the server; the relay holds the
 * server's reply. */
static relay_t* start_half_done(fixture_t* fx) {
  relay_t* r = start_relayed(fx, server_ctx(certs.server, certs.server_key),
                             client_ctx(), 0, 1);
  fixture_wait_size(fx, &r->to_server, 1, FIXTURE_TIMEOUT_MS);
  return r;
}

/* Handshakes held half done by the relay end by a destroy and a stop of
 * either side: no session callback runs, and the fixture's teardown
 * finds no cport allocation left (run under ASan as well). */
static void test_tls_close_during_handshake_leaks_nothing(void** state) {
  fixture_t* fx = *state;
  relay_t* r;
  int failed;

  /* The server's service is destroyed while the relay holds its reply. */
  r = start_half_done(fx);
  cport_service_destroy(fx->server);
  fx->server = NULL;
  relay_release(r); /* the client learns of it */
  fixture_wait_int(fx, &fx->connect_failed, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(fx->last_connect_error, CPORT_ETLS);
  relay_destroy(r);
  stop_pair(fx);

  /* The server's service is stopped with its handshake half done. */
  r = start_half_done(fx);
  failed = fx->connect_failed;
  fixture_stop_service(fx, fx->server, 1000);
  relay_release(r);
  fixture_wait_int(fx, &fx->connect_failed, failed + 1, FIXTURE_TIMEOUT_MS);
  relay_destroy(r);
  stop_pair(fx);

  /* The client's service is stopped mid-handshake, then destroyed. */
  r = start_half_done(fx);
  failed = fx->connect_failed;
  fixture_stop_service(fx, fx->client, 1000);
  fixture_wait_int(fx, &fx->connect_failed, failed + 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(fx->last_connect_error, UV_ECANCELED);
  relay_destroy(r);
  stop_pair(fx);

  assert_int_equal(fx->connected, 0);
  assert_int_equal(fx->disconnected, 0);
}


/* ---- a blocking OpenSSL client on a thread of its own ---- */

typedef struct ossl_client_s {
  int port;
  int max_version; /* TLS1_2_VERSION or TLS1_3_VERSION */
  int renegotiate; /* else a KeyUpdate */
  atomic_int done;
  int ok;          /* every step went as expected */
  int step;        /* the step that failed */
  int reneg_rc;    /* SSL_do_handshake after SSL_renegotiate */
  int key_updates; /* KeyUpdate messages received */
  uv_thread_t thread;
} ossl_client_t;

static void ossl_msg_cb(int write_p,
                        int version,
                        int content_type,
                        const void* buf,
                        size_t len,
                        SSL* ssl,
                        void* arg) {
  ossl_client_t* c = SSL_get_app_data(ssl);
  (void)version;
  (void)arg;
  if (!write_p && content_type == SSL3_RT_HANDSHAKE && len > 0 &&
      ((const uint8_t*)buf)[0] == SSL3_MT_KEY_UPDATE)
    c->key_updates++;
}

/* Write `msg` and read its echo back whole. */
static int ossl_echo(SSL* ssl, const char* msg) {
  char got[64];
  size_t len = strlen(msg);
  size_t have = 0;
  if (SSL_write(ssl, msg, (int)len) != (int)len)
    return 0;
  while (have < len) {
    int n = SSL_read(ssl, got + have, (int)(len - have));
    if (n <= 0)
      return 0;
    have += (size_t)n;
  }
  return memcmp(got, msg, len) == 0;
}

static void ossl_client_main(void* arg) {
  ossl_client_t* c = arg;
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL* ssl = NULL;
  BIO* bio = NULL;
  char target[32];
  int fd;
  snprintf(target, sizeof(target), "127.0.0.1:%d", c->port);
  c->step = 1;
  if (ctx == NULL || SSL_CTX_set_max_proto_version(ctx, c->max_version) != 1)
    goto done;
  SSL_CTX_set_msg_callback(ctx, ossl_msg_cb);
  c->step = 2;
  bio = BIO_new_connect(target);
  if (bio == NULL || BIO_do_connect(bio) != 1)
    goto done;
  fd = (int)BIO_get_fd(bio, NULL);
  {
    /* A server that never answers fails the test instead of hanging. */
#ifdef _WIN32
    DWORD ms = FIXTURE_TIMEOUT_MS;
    setsockopt((SOCKET)fd, SOL_SOCKET, SO_RCVTIMEO, (const char*)&ms,
               sizeof(ms));
#else
    struct timeval tv = {FIXTURE_TIMEOUT_MS / 1000, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
#endif
  }
  c->step = 3;
  ssl = SSL_new(ctx);
  if (ssl == NULL)
    goto done;
  SSL_set_app_data(ssl, c);
  SSL_set_bio(ssl, bio, bio);
  bio = NULL;
  if (SSL_connect(ssl) != 1 || !ossl_echo(ssl, "before"))
    goto done;
  c->step = 4;
  if (c->renegotiate) {
    if (SSL_version(ssl) != TLS1_2_VERSION || SSL_renegotiate(ssl) != 1)
      goto done;
    c->reneg_rc = SSL_do_handshake(ssl);
    /* Refused: the handshake must not succeed; nothing more to check on
     * this connection. */
    c->ok = c->reneg_rc != 1;
    goto done;
  }
  if (SSL_version(ssl) != TLS1_3_VERSION ||
      SSL_key_update(ssl, SSL_KEY_UPDATE_REQUESTED) != 1)
    goto done;
  c->step = 5;
  /* The update leaves with this write; the server's reply to it comes
   * before its echo. */
  if (!ossl_echo(ssl, "after the update") || !ossl_echo(ssl, "and again"))
    goto done;
  c->step = 6;
  c->ok = c->key_updates >= 1;
  if (c->ok)
    (void)SSL_shutdown(ssl);
done:
  SSL_free(ssl);
  BIO_free_all(bio);
  SSL_CTX_free(ctx);
  ERR_clear_error();
  atomic_store(&c->done, 1);
}

static void ossl_client_run(fixture_t* fx, ossl_client_t* c) {
  c->port = cport_addr_port(&fx->server_addr);
  atomic_init(&c->done, 0);
  assert_int_equal(uv_thread_create(&c->thread, ossl_client_main, c), 0);
  /* The loop runs here while the client works on its thread. */
  if (!fixture_run_until(fx, atomic_reached, &c->done, 2 * FIXTURE_TIMEOUT_MS))
    fail_msg("the OpenSSL client hung at step %d", c->step);
  assert_int_equal(uv_thread_join(&c->thread), 0);
}


/* A TLS 1.2 client's renegotiation does not succeed; the server goes on
 * serving new connections. */
static void test_tls_renegotiation_is_refused(void** state) {
  fixture_t* fx = *state;
  ossl_client_t c;
  memset(&c, 0, sizeof(c));
  c.max_version = TLS1_2_VERSION;
  c.renegotiate = 1;
  start_pair(fx, server_ctx(certs.server, certs.server_key), client_ctx());
  fixture_wait_int(fx, &fx->connected, 2, FIXTURE_TIMEOUT_MS);
  ossl_client_run(fx, &c);
  if (!c.ok)
    fail_msg("step %d, renegotiation handshake returned %d", c.step,
             c.reneg_rc);
  fixture_wait_int(fx, &fx->disconnected, 1, FIXTURE_TIMEOUT_MS);
  /* And a new connection is served as before. */
  memset(&c, 0, sizeof(c));
  c.max_version = TLS1_3_VERSION;
  ossl_client_run(fx, &c);
  assert_true(c.ok);
  assert_int_equal(cport_session_send(fx->last_client, "still", 5), 0);
  fixture_wait_size(fx, &rec_of(fx->last_client)->received.len, 5,
                    FIXTURE_TIMEOUT_MS);
}


/* A TLS 1.3 client's KeyUpdate (update requested) is answered with the
 * server's own, and the echo goes on both ways. */
static void test_tls_key_update_is_answered(void** state) {
  fixture_t* fx = *state;
  ossl_client_t c;
  memset(&c, 0, sizeof(c));
  c.max_version = TLS1_3_VERSION;
  fx->opts.tls = server_ctx(certs.server, certs.server_key);
  fixture_start_server(fx);
  cport_tls_unref(fx->opts.tls);
  fx->opts.tls = NULL;
  ossl_client_run(fx, &c);
  if (!c.ok)
    fail_msg("step %d, %d KeyUpdate received", c.step, c.key_updates);
  fixture_wait_int(fx, &fx->disconnected, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(fx->last_code, UV_EOF);
}


/* ---- the OpenSSL error queue ---- */

/* Every callback asserts that it finds the thread's error queue empty;
 * sessions whose user area says `dirty` leave junk on it when they
 * return, as an application's own OpenSSL calls might. */
typedef struct eq_s {
  int connected;
  int failed;
  int last_failure;
  size_t received;
  int found_junk; /* callbacks that found the queue not empty */
  int echo;       /* the server's */
} eq_t;

typedef struct eq_session_s {
  int dirty;
} eq_session_t;

static void eq_enter(cport_session_t* s) {
  eq_t* e = cport_service_get_data(cport_session_service(s));
  if (ERR_peek_error() != 0) {
    e->found_junk++;
    ERR_clear_error();
  }
}

static void eq_leave(cport_session_t* s) {
  eq_session_t* u = cport_session_user(s);
  if (u->dirty)
    ERR_raise(ERR_LIB_USER, 1);
}

static void eq_connected(cport_session_t* s) {
  eq_t* e = cport_service_get_data(cport_session_service(s));
  eq_enter(s);
  e->connected++;
  eq_leave(s);
}

static size_t eq_recv(cport_session_t* s, const uint8_t* data, size_t len) {
  eq_t* e = cport_service_get_data(cport_session_service(s));
  eq_session_t* u = cport_session_user(s);
  eq_enter(s);
  e->received += len;
  /* Servers echo; a "D" marks the server's session dirty too. */
  if (len > 0 && data[0] == 'D')
    u->dirty = 1;
  if (e->echo)
    (void)cport_session_send(s, data, len);
  eq_leave(s);
  return len;
}

static void eq_send(cport_session_t* s, size_t len) {
  (void)len;
  eq_enter(s);
  eq_leave(s);
}

static void eq_disconnected(cport_session_t* s, int code, const char* cause) {
  (void)code;
  (void)cause;
  eq_enter(s);
  eq_leave(s);
}

static void eq_connect_failed(cport_service_t* svc, int code) {
  eq_t* e = cport_service_get_data(svc);
  if (ERR_peek_error() != 0) {
    e->found_junk++;
    ERR_clear_error();
  }
  e->failed++;
  e->last_failure = code;
}

static cport_service_t* eq_service(fixture_t* fx,
                                   cport_service_kind_t kind,
                                   const cport_addr_t* to,
                                   eq_t* e,
                                   cport_tls_t* tls,
                                   const char* tls_name) {
  cport_service_opts_t o;
  cport_service_t* svc = NULL;
  cport_service_opts_init(&o);
  o.cbs.on_connected = eq_connected;
  o.cbs.on_recv = eq_recv;
  o.cbs.on_send = eq_send;
  o.cbs.on_disconnected = eq_disconnected;
  o.cbs.on_connect_failed = eq_connect_failed;
  o.user_size = sizeof(eq_session_t);
  o.data = e;
  o.tls = tls;
  o.tls_name = tls_name;
  if (kind == CPORT_SERVICE_SERVER) {
    svc = fixture_create_service(fx, kind, "127.0.0.1", &o);
  } else {
    assert_int_equal(cport_service_create(&svc, fx->core, kind, to, &o), 0);
  }
  cport_tls_unref(tls);
  assert_int_equal(cport_service_start(svc), 0);
  return svc;
}

static int first_session(cport_session_t* s, void* arg) {
  *(cport_session_t**)arg = s;
  return 1;
}

/* A failed handshake leaves the queue empty; junk one session's
 * callbacks leave does not reach another session's callbacks nor break
 * its handshake and echo. */
static void test_tls_error_queue_is_left_empty(void** state) {
  fixture_t* fx = *state;
  eq_t srv = {0};
  eq_t bad = {0};
  eq_t dirty = {0};
  eq_t clean = {0};
  cport_service_t* c_bad;
  cport_service_t* c_dirty;
  cport_service_t* c_clean;
  srv.echo = 1;
  fx->server = eq_service(fx, CPORT_SERVICE_SERVER, NULL, &srv,
                          server_ctx(certs.server, certs.server_key), NULL);
  assert_int_equal(cport_service_local_addr(fx->server, &fx->server_addr), 0);
  /* A handshake that fails verification on this thread. */
  c_bad = eq_service(fx, CPORT_SERVICE_CLIENT, &fx->server_addr, &bad,
                     client_ctx(), "wrong.invalid");
  fixture_wait_int(fx, &bad.failed, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(bad.last_failure, CPORT_ETLSNAME);
  assert_int_equal(ERR_peek_error(), 0);
  /* A dirty client and a clean one, side by side on the same loop. */
  c_dirty = eq_service(fx, CPORT_SERVICE_CLIENT, &fx->server_addr, &dirty,
                       client_ctx(), NULL);
  fixture_wait_int(fx, &dirty.connected, 1, FIXTURE_TIMEOUT_MS);
  c_clean = eq_service(fx, CPORT_SERVICE_CLIENT, &fx->server_addr, &clean,
                       client_ctx(), NULL);
  {
    cport_session_t* d = NULL;
    cport_session_t* c = NULL;
    assert_int_equal(cport_service_foreach(c_dirty, first_session, &d), 1);
    ((eq_session_t*)cport_session_user(d))->dirty = 1;
    assert_int_equal(cport_session_send(d, "Dirty", 5), 0);
    ERR_raise(ERR_LIB_USER, 1); /* as if sent from a dirty callback */
    fixture_wait_int(fx, &clean.connected, 1, FIXTURE_TIMEOUT_MS);
    assert_int_equal(cport_service_foreach(c_clean, first_session, &c), 1);
    assert_int_equal(cport_session_send(c, "clean", 5), 0);
    assert_int_equal(cport_session_send(d, "Dirty again", 11), 0);
  }
  fixture_wait_size(fx, &clean.received, 5, FIXTURE_TIMEOUT_MS);
  fixture_wait_size(fx, &dirty.received, 16, FIXTURE_TIMEOUT_MS);
  assert_int_equal(clean.found_junk, 0);
  assert_int_equal(bad.found_junk, 0);
  ERR_clear_error();
  cport_service_destroy(c_bad);
  cport_service_destroy(c_dirty);
  cport_service_destroy(c_clean);
  stop_pair(fx);
  ERR_clear_error();
}


/* ---- resumption ---- */

/* A client under a reconnect policy resumes its session with the ticket
 * the server gave it: the second session says so, and the stats count
 * it. */
static void test_tls_client_resumes_across_reconnects(void** state) {
  fixture_t* fx = *state;
  rec_session_t* cli;
  fx->opts.tls = server_ctx(certs.server, certs.server_key);
  fixture_start_server(fx);
  cport_tls_unref(fx->opts.tls);
  fx->opts.tls = client_ctx();
  fx->opts.reconnect = CPORT_RECONNECT_FIXED;
  fx->opts.reconnect_delay_ms = 10;
  fx->opts.reconnect_jitter_pct = 0;
  fx->opts.reconnect_reset_ms = 0;
  fixture_start_client(fx, &fx->server_addr, 1);
  cport_tls_unref(fx->opts.tls);
  fx->opts.tls = NULL;
  fixture_wait_int(fx, &fx->connected, 2, FIXTURE_TIMEOUT_MS);
  assert_int_equal(cport_session_tls_resumed(fx->last_client), 0);
  /* An echo first: the ticket the server sent after its handshake has
   * reached the client before the echo. */
  cli = rec_of(fx->last_client);
  assert_int_equal(cport_session_send(fx->last_client, "t", 1), 0);
  fixture_wait_size(fx, &cli->received.len, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(cport_session_disconnect(fx->last_server, "again"), 0);
  fixture_wait_int(fx, &fx->connected, 4, FIXTURE_TIMEOUT_MS);
  assert_int_equal(cport_session_tls_resumed(fx->last_client), 1);
  assert_int_equal(cport_session_tls_resumed(fx->last_server), 1);
  assert_true(stats_of(fx->client).tls_resumed >= 1);
  assert_true(stats_of(fx->server).tls_resumed >= 1);
  assert_int_equal(stats_of(fx->client).tls_handshakes, 2);
}


/* ---- verification ---- */

static int connect_error_with(fixture_t* fx,
                              const char* cert,
                              const char* key) {
  int failed = fx->connect_failed;
  int connected = fx->connected;
  start_pair(fx, server_ctx(cert, key), client_ctx());
  fixture_wait_int(fx, &fx->connect_failed, failed + 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(fx->connected, connected);
  stop_pair(fx);
  return fx->last_connect_error;
}

/* The client refuses a certificate for another name, one from an
 * unknown CA and an expired one, each with its own code; the server
 * counts the failures and reports none; VERIFY_NONE connects. */
static void test_tls_verification_failures(void** state) {
  fixture_t* fx = *state;
  assert_int_equal(connect_error_with(fx, certs.other, certs.other_key),
                   CPORT_ETLSNAME);
  assert_int_equal(connect_error_with(fx, certs.stranger, certs.stranger_key),
                   CPORT_ETLSCA);
  assert_int_equal(connect_error_with(fx, certs.expired, certs.expired_key),
                   CPORT_ETLSEXPIRED);
  assert_int_equal(fx->disconnected, 0);
  start_pair(fx, server_ctx(certs.expired, certs.expired_key),
             client_ctx_with(NULL, CPORT_TLS_VERIFY_NONE));
  fixture_wait_int(fx, &fx->connected, 2, FIXTURE_TIMEOUT_MS);
}


/* ---- sends from threads ---- */

enum { ORDER_THREADS = 4, ORDER_MSGS = 500, ORDER_LEN = 12 };

typedef struct order_thread_s {
  cport_session_t* s;
  int index;
  int failed;
  uv_thread_t thread;
} order_thread_t;

static void order_main(void* arg) {
  order_thread_t* t = arg;
  int i;
  for (i = 0; i < ORDER_MSGS; i++) {
    char msg[ORDER_LEN + 1];
    snprintf(msg, sizeof(msg), "t%d:%08d\n", t->index, i);
    if (cport_session_send(t->s, msg, ORDER_LEN) != 0)
      t->failed++;
  }
}

/* Threads send numbered messages to one TLS session at once: the peer
 * gets every one, each thread's in the order sent. */
static void test_tls_sends_from_threads_keep_order(void** state) {
  fixture_t* fx = *state;
  order_thread_t th[ORDER_THREADS];
  int next[ORDER_THREADS] = {0};
  rec_session_t* cli;
  size_t off;
  int i;
  fx->mode = RECV_CONSUME;
  fx->opts.send_queue_limit = 64u << 20;
  start_pair(fx, server_ctx(certs.server, certs.server_key), client_ctx());
  fixture_wait_int(fx, &fx->connected, 2, FIXTURE_TIMEOUT_MS);
  cli = rec_of(fx->last_client);
  for (i = 0; i < ORDER_THREADS; i++) {
    th[i].s = fx->last_server;
    th[i].index = i;
    th[i].failed = 0;
    assert_int_equal(uv_thread_create(&th[i].thread, order_main, &th[i]), 0);
  }
  fixture_wait_size(fx, &cli->received.len,
                    (size_t)ORDER_THREADS * ORDER_MSGS * ORDER_LEN,
                    FIXTURE_TIMEOUT_MS);
  for (i = 0; i < ORDER_THREADS; i++) {
    assert_int_equal(uv_thread_join(&th[i].thread), 0);
    assert_int_equal(th[i].failed, 0);
  }
  assert_int_equal(cli->received.len,
                   (size_t)ORDER_THREADS * ORDER_MSGS * ORDER_LEN);
  for (off = 0; off < cli->received.len; off += ORDER_LEN) {
    char msg[ORDER_LEN + 1];
    int t, n;
    memcpy(msg, cli->received.data + off, ORDER_LEN);
    msg[ORDER_LEN] = '\0';
    assert_int_equal(sscanf(msg, "t%d:%d", &t, &n), 2);
    assert_true(t >= 0 && t < ORDER_THREADS);
    assert_int_equal(n, next[t]);
    next[t]++;
  }
}


/* ---- ALPN and SNI ---- */

/* ALPN picks the server's first protocol the client offers; a name asked
 * for by SNI gets the context added for it; a client that offers only
 * protocols the server lacks is refused. */
static void test_tls_alpn_and_sni(void** state) {
  fixture_t* fx = *state;
  cport_tls_opts_t t;
  cport_tls_t* srv = NULL;
  char subject[128];
  cport_tls_opts_init(&t);
  t.cert_pem = certs.server;
  t.key_pem = certs.server_key;
  t.alpn = "h2,http/1.1";
  assert_int_equal(cport_tls_create(&srv, CPORT_TLS_SERVER, &t), 0);
  start_pair(fx, srv, client_ctx_with("http/1.1", CPORT_TLS_VERIFY_DEFAULT));
  fixture_wait_int(fx, &fx->connected, 2, FIXTURE_TIMEOUT_MS);
  assert_string_equal(cport_session_tls_alpn(fx->last_server), "http/1.1");
  assert_string_equal(cport_session_tls_alpn(fx->last_client), "http/1.1");
  stop_pair(fx);

  /* SNI "other.invalid" picks the other certificate. */
  srv = server_ctx(certs.server, certs.server_key);
  {
    cport_tls_t* other = server_ctx(certs.other, certs.other_key);
    assert_int_equal(cport_tls_add_name(srv, "other.invalid", other), 0);
    cport_tls_unref(other);
  }
  fx->opts.tls_name = "other.invalid";
  start_pair(fx, srv, client_ctx());
  fx->opts.tls_name = NULL;
  fixture_wait_int(fx, &fx->connected, 4, FIXTURE_TIMEOUT_MS);
  assert_string_equal(cport_session_tls_sni(fx->last_server), "other.invalid");
  assert_string_equal(cport_session_tls_sni(fx->last_client), "other.invalid");
  assert_int_equal(
      cport_session_tls_peer_subject(fx->last_client, subject, sizeof(subject)),
      0);
  assert_non_null(strstr(subject, "CN=other.invalid"));
  stop_pair(fx);

  /* Only a protocol the server lacks: refused. */
  assert_int_equal(cport_tls_create(&srv, CPORT_TLS_SERVER, &t), 0);
  start_pair(fx, srv, client_ctx_with("spdy/1", CPORT_TLS_VERIFY_DEFAULT));
  fixture_wait_int(fx, &fx->connect_failed, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(fx->last_connect_error, CPORT_ETLS);
  assert_int_equal(fx->connected, 4);
  assert_int_equal(stats_of(fx->server).tls_failures, 1);
}


/* ---- contexts ---- */

static void test_tls_context_options_refused(void** state) {
  fixture_t* fx = *state;
  cport_tls_opts_t t;
  cport_tls_t* ctx = (cport_tls_t*)&t;
  cport_tls_t* other;
  cport_service_opts_t o;
  cport_service_t* svc = NULL;
  cport_addr_t addr;
  /* A server without a certificate. */
  cport_tls_opts_init(&t);
  assert_int_equal(cport_tls_create(&ctx, CPORT_TLS_SERVER, &t), UV_EINVAL);
  assert_null(ctx);
  /* ALPN lists with an empty entry, or an entry over 255 bytes. */
  cport_tls_opts_init(&t);
  t.alpn = "h2,,http/1.1";
  assert_int_equal(cport_tls_create(&ctx, CPORT_TLS_CLIENT, &t), UV_EINVAL);
  {
    char long_alpn[300];
    memset(long_alpn, 'a', sizeof(long_alpn) - 1);
    long_alpn[sizeof(long_alpn) - 1] = '\0';
    t.alpn = long_alpn;
    assert_int_equal(cport_tls_create(&ctx, CPORT_TLS_CLIENT, &t), UV_EINVAL);
  }
  /* A protocol version other than 1.2 and 1.3. */
  cport_tls_opts_init(&t);
  t.min_version = 0x0301;
  assert_int_equal(cport_tls_create(&ctx, CPORT_TLS_CLIENT, &t), UV_EINVAL);
  /* A key that is not the certificate's. */
  cport_tls_opts_init(&t);
  t.cert_pem = certs.server;
  t.key_pem = certs.other_key;
  assert_int_equal(cport_tls_create(&ctx, CPORT_TLS_SERVER, &t), CPORT_ETLS);
  assert_null(ctx);
  /* Text that is no PEM. */
  t.key_pem = "not a key";
  assert_int_equal(cport_tls_create(&ctx, CPORT_TLS_SERVER, &t), CPORT_ETLS);
  assert_int_equal(ERR_peek_error(), 0);

  /* The SNI map is fixed once a service has the context. */
  ctx = server_ctx(certs.server, certs.server_key);
  other = server_ctx(certs.other, certs.other_key);
  cport_service_opts_init(&o);
  o.cbs.on_recv = mute_recv;
  o.tls = ctx;
  svc = fixture_create_service(fx, CPORT_SERVICE_SERVER, "127.0.0.1", &o);
  assert_int_equal(cport_tls_add_name(ctx, "other.invalid", other), UV_EBUSY);
  cport_service_destroy(svc);
  svc = NULL;
  /* A context of the wrong role. */
  assert_int_equal(cport_addr_parse(&addr, "127.0.0.1", 0), 0);
  assert_int_equal(
      cport_service_create(&svc, fx->core, CPORT_SERVICE_CLIENT, &addr, &o),
      UV_EINVAL);
  assert_null(svc);
  cport_tls_unref(ctx);
  o.tls = client_ctx();
  assert_int_equal(
      cport_service_create(&svc, fx->core, CPORT_SERVICE_SERVER, &addr, &o),
      UV_EINVAL);
  assert_null(svc);
  cport_tls_unref(o.tls);
  cport_tls_unref(other);
}


/* A client that does not verify connects to a server no CA of its
 * vouches for, and logs one warning for its context however many
 * sessions use it. */
static void test_tls_insecure_client_warns(void** state) {
  fixture_t* fx = *state;
  char lines[1024];
  int n;
  log_capture_begin(CPORT_LOG_WARN);
  fx->opts.tls = server_ctx(certs.stranger, certs.stranger_key);
  fixture_start_server(fx);
  cport_tls_unref(fx->opts.tls);
  fx->opts.tls = client_ctx_with(NULL, CPORT_TLS_VERIFY_NONE);
  fixture_start_client(fx, &fx->server_addr, 2);
  cport_tls_unref(fx->opts.tls);
  fx->opts.tls = NULL;
  fixture_wait_int(fx, &fx->connected, 4, FIXTURE_TIMEOUT_MS);
  n = log_capture_take(lines, sizeof(lines));
  log_capture_end();
  assert_int_equal(n, 1);
  assert_non_null(strstr(lines, "CPORT_TLS_VERIFY_NONE"));
}


/* PROXY protocol and TLS: the header comes first, outside TLS, and what
 * follows it in the same segment is the ClientHello. */
static void test_tls_behind_a_proxy_header(void** state) {
  fixture_t* fx = *state;
  uint8_t* first;
  size_t first_len;
  cport_addr_t a;
  cport_addr_t client_side;
  peer_t* p;
  /* 1. What a TLS client with proxy_send sends first, caught by a plain
   * server: the header, then the ClientHello. */
  fx->mode = RECV_CONSUME;
  fixture_start_server(fx);
  fx->opts.proxy_send = CPORT_PROXY_V2;
  start_tls_client(fx);
  fixture_wait_int(fx, &fx->connected, 1, FIXTURE_TIMEOUT_MS);
  while (rec_of(fx->last_server)->received.len < 16 + 12 + 5)
    assert_true(cport_core_dispatch(fx->core, 0, FIXTURE_TIMEOUT_MS) >= 0);
  first_len = rec_of(fx->last_server)->received.len;
  first = malloc(first_len);
  assert_non_null(first);
  memcpy(first, rec_of(fx->last_server)->received.data, first_len);
  assert_int_equal(first[12], 0x21); /* v2 PROXY */
  assert_int_equal(first[16 + 12], 0x16); /* a TLS handshake record */
  stop_pair(fx);
  fx->connected = 0;
  fx->mode = RECV_ECHO;

  /* 2. Those bytes in one segment to a TLS server reading PROXY headers:
   * its TLS answers the hello, so nothing of it was lost behind the
   * header. */
  fx->opts.proxy_send = CPORT_PROXY_OFF;
  fx->opts.proxy_protocol = CPORT_PROXY_V2;
  fx->opts.tls = server_ctx(certs.server, certs.server_key);
  fixture_start_server(fx);
  cport_tls_unref(fx->opts.tls);
  fx->opts.tls = NULL;
  p = peer_connect(fx, &fx->server_addr, 0);
  peer_write(p, first, first_len);
  fixture_wait_size(fx, &p->received.len, 5, FIXTURE_TIMEOUT_MS);
  assert_int_equal(p->received.data[0], 0x16); /* the ServerHello's record */
  peer_destroy(p);
  free(first);

  /* 3. End to end: a TLS client with proxy_send to it. */
  fx->opts.proxy_protocol = CPORT_PROXY_OFF;
  fx->opts.proxy_send = CPORT_PROXY_V2;
  start_tls_client(fx);
  fx->opts.proxy_send = CPORT_PROXY_OFF;
  fixture_wait_int(fx, &fx->connected, 2, FIXTURE_TIMEOUT_MS);
  assert_int_equal(cport_session_send(fx->last_client, "secret", 6), 0);
  fixture_wait_size(fx, &rec_of(fx->last_client)->received.len, 6,
                    FIXTURE_TIMEOUT_MS);
  assert_memory_equal(rec_of(fx->last_client)->received.data, "secret", 6);
  assert_int_equal(cport_session_is_tls(fx->last_server), 1);
  assert_int_equal(cport_session_peer_addr(fx->last_server, &a), 0);
  assert_int_equal(cport_session_local_addr(fx->last_client, &client_side),
                   0);
  assert_int_equal(cport_addr_port(&a), cport_addr_port(&client_side));
  stop_pair(fx);
}


/* TLS over a local endpoint (a Unix domain socket, a named pipe): the same
 * sessions; the client names the server to verify, since a path is no
 * host name, and is refused without one. */
static void test_tls_over_a_local_endpoint(void** state) {
  fixture_t* fx = *state;
  const size_t len = 100 * 1024;
  uint8_t* data = malloc(len);
  char path[128];
  cport_addr_t addr;
  cport_service_t* svc = NULL;
  rec_session_t* r;
  assert_non_null(data);
#ifdef _WIN32
  snprintf(path, sizeof(path), "\\\\.\\pipe\\cport-tls-%lu",
           (unsigned long)GetCurrentProcessId());
#else
  snprintf(path, sizeof(path), "/tmp/cport-tls-%ld.sock", (long)getpid());
  (void)unlink(path);
#endif
  assert_int_equal(cport_addr_parse_local(&addr, path), 0);
  fx->opts.tls = server_ctx(certs.server, certs.server_key);
  fixture_start_server_at(fx, &addr);
  cport_tls_unref(fx->opts.tls);
  fx->opts.tls = client_ctx();
  assert_int_equal(cport_service_create(&svc, fx->core, CPORT_SERVICE_CLIENT,
                                        &addr, &fx->opts),
                   UV_EINVAL);
  fx->opts.tls_name = "localhost";
  fixture_start_client(fx, &addr, 1);
  cport_tls_unref(fx->opts.tls);
  fx->opts.tls = NULL;
  fixture_wait_int(fx, &fx->connected, 2, FIXTURE_TIMEOUT_MS);
  assert_true(cport_session_is_tls(fx->last_client));
  fill_pattern(data, len, 7);
  assert_int_equal(cport_session_send(fx->last_client, data, len), 0);
  r = rec_of(fx->last_client);
  fixture_wait_size(fx, &r->received.len, len, FIXTURE_TIMEOUT_MS);
  assert_memory_equal(r->received.data, data, len);
  free(data);
}


int main(void) {
  const struct CMUnitTest tests[] = {
      FIXTURE_TEST(test_tls_handshake_then_on_connected),
      FIXTURE_TEST(test_tls_over_a_local_endpoint),
      FIXTURE_TEST(test_tls_on_recv_gets_plaintext),
      FIXTURE_TEST(test_tls_pause_drains_what_tls_holds),
      FIXTURE_TEST(test_tls_on_recv_gets_plaintext_direct),
      FIXTURE_TEST(test_tls_one_byte_relay_round_trips_direct),
      FIXTURE_TEST(
          test_tls_direct_writes_keep_order_when_the_kernel_is_full),
      FIXTURE_TEST(test_tls_one_byte_relay_round_trips),
      FIXTURE_TEST(test_tls_on_send_after_ciphertext_written),
      FIXTURE_TEST(test_tls_backpressure_counts_ciphertext),
      FIXTURE_TEST(test_tls_handshake_timeout),
      FIXTURE_TEST(test_tls_disconnect_sends_close_notify_then_shutdown),
      FIXTURE_TEST(test_tls_eof_without_close_notify_is_truncated),
      FIXTURE_TEST(test_tls_renegotiation_is_refused),
      FIXTURE_TEST(test_tls_key_update_is_answered),
      FIXTURE_TEST(test_tls_close_during_handshake_leaks_nothing),
      FIXTURE_TEST(test_tls_error_queue_is_left_empty),
      FIXTURE_TEST(test_tls_client_resumes_across_reconnects),
      FIXTURE_TEST(test_tls_verification_failures),
      FIXTURE_TEST(test_tls_sends_from_threads_keep_order),
      FIXTURE_TEST(test_tls_alpn_and_sni),
      FIXTURE_TEST(test_tls_context_options_refused),
      FIXTURE_TEST(test_tls_insecure_client_warns),
      FIXTURE_TEST(test_tls_behind_a_proxy_header),
  };
  return cmocka_run_group_tests(tests, certs_setup, certs_teardown);
}
