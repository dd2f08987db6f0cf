/* Session behaviour over loopback: receive semantics, sends, disconnect
 * causes, flushing, limits and lifetime. */
#include "fixture.h"

#include <stdlib.h>
#include <string.h>

#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
#else
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>
#endif

/* The heap in use, for the send queue's memory bound: glibc's and macOS's
 * allocators can tell; a sanitizer's allocator is not measured. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define HEAP_NOT_MEASURED "a sanitizer replaces the allocator"
#endif
#endif
#if !defined(HEAP_NOT_MEASURED) && \
    (defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__))
#define HEAP_NOT_MEASURED "a sanitizer replaces the allocator"
#endif
#if !defined(HEAP_NOT_MEASURED) && defined(__GLIBC__) && \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
#include <malloc.h>
static long long heap_in_use(void) {
  struct mallinfo2 mi = mallinfo2();
  return (long long)(mi.uordblks + mi.hblkhd);
}
#elif !defined(HEAP_NOT_MEASURED) && defined(__APPLE__)
#include <malloc/malloc.h>
static long long heap_in_use(void) {
  malloc_statistics_t st;
  malloc_zone_statistics(NULL, &st);
  return (long long)st.size_in_use;
}
#elif !defined(HEAP_NOT_MEASURED)
#define HEAP_NOT_MEASURED "no heap statistics on this platform"
#endif

#include "common.h"           /* cport__mem_live, cport__mem_allocs */
#include "send_req.h" /* cport__send_req_cost: what a send is charged */
#include "session_internal.h" /* cport__session_is_paused, the loop's pool */


/* Dispatch a few more rounds, to catch a callback that should not come. */
static void settle(fixture_t* fx) {
  int i;
  for (i = 0; i < 20; i++) cport_core_dispatch(fx->core, 0, 1);
}


static void test_session_echo_roundtrip(void** state) {
  fixture_t* fx = *state;
  peer_t* p;
  fixture_start_server(fx);
  p = peer_connect(fx, &fx->server_addr, 0);
  peer_write(p, "ping", 4);
  fixture_wait_size(fx, &p->received.len, 4, FIXTURE_TIMEOUT_MS);
  assert_memory_equal(p->received.data, "ping", 4);
  assert_int_equal(fx->connected, 1);
  fixture_wait_size(fx, &rec_of(fx->last_server)->sent, 4, FIXTURE_TIMEOUT_MS);
  peer_destroy(p);
  fixture_wait_int(fx, &fx->disconnected, 1, FIXTURE_TIMEOUT_MS);
}


static void test_session_echo_through_client_service(void** state) {
  fixture_t* fx = *state;
  rec_session_t* r;
  fixture_start_server(fx);
  fixture_start_client(fx, &fx->server_addr, 1);
  fixture_wait_int(fx, &fx->connected, 2, FIXTURE_TIMEOUT_MS);
  assert_non_null(fx->last_client);
  assert_int_equal(cport_session_send(fx->last_client, "hello ", 6), 0);
  assert_int_equal(cport_session_send(fx->last_client, "world", 5), 0);
  r = rec_of(fx->last_client);
  fixture_wait_size(fx, &r->received.len, 11, FIXTURE_TIMEOUT_MS);
  assert_memory_equal(r->received.data, "hello world", 11);
  assert_int_equal(r->sent, 11);
}


static void test_session_partial_consumption_presents_rest_first(void** state) {
  fixture_t* fx = *state;
  peer_t* p;
  rec_session_t* r;
  fx->mode = RECV_PARTIAL;
  fx->consume_max = 3;
  fixture_start_server(fx);
  p = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &fx->connected, 1, FIXTURE_TIMEOUT_MS);
  r = rec_of(fx->last_server);
  peer_write(p, "abcdefgh", 8);
  fixture_wait_size(fx, &r->calls, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(r->last_call.len, 8);
  assert_memory_equal(r->received.data, "abc", 3);
  assert_int_equal(cport_session_pending_bytes(fx->last_server), 5);
  /* Nothing new arrived, so on_recv is not called again by itself. */
  settle(fx);
  assert_int_equal(r->calls, 1);
  peer_write(p, "ij", 2);
  fixture_wait_size(fx, &r->calls, 2, FIXTURE_TIMEOUT_MS);
  assert_int_equal(r->last_call.len, 7);
  assert_memory_equal(r->last_call.data, "defghij", 7);
  assert_int_equal(r->received.len, 6);
  assert_memory_equal(r->received.data, "abcdef", 6);
  assert_int_equal(cport_session_pending_bytes(fx->last_server), 4);
  peer_destroy(p);
}


static void test_session_idle_session_holds_no_receive_buffer(void** state) {
  fixture_t* fx = *state;
  peer_t* p;
  rec_session_t* r;
  long live_idle;
  fx->mode = RECV_PARTIAL;
  fx->consume_max = 1;
  fixture_start_server(fx);
  p = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &fx->connected, 1, FIXTURE_TIMEOUT_MS);
  r = rec_of(fx->last_server);
  /* A first byte, consumed whole, brings the loop's shared read chunk. */
  peer_write(p, "a", 1);
  fixture_wait_size(fx, &r->calls, 1, FIXTURE_TIMEOUT_MS);
  live_idle = cport__mem_live();
  peer_write(p, "xyz", 3);
  fixture_wait_size(fx, &r->calls, 2, FIXTURE_TIMEOUT_MS);
  /* Two bytes are left over and need a private buffer. */
  assert_int_equal(cport__mem_live(), live_idle + 1);
  fx->consume_max = SIZE_MAX;
  peer_write(p, "!", 1);
  fixture_wait_size(fx, &r->calls, 3, FIXTURE_TIMEOUT_MS);
  assert_int_equal(cport_session_pending_bytes(fx->last_server), 0);
  assert_int_equal(cport__mem_live(), live_idle);
  peer_destroy(p);
}


static void test_session_8mib_payload_is_byte_exact(void** state) {
  fixture_t* fx = *state;
  const size_t len = 8u * 1024 * 1024;
  uint8_t* payload = malloc(len);
  rec_session_t* r;
  peer_t* p;
  assert_non_null(payload);
  fill_pattern(payload, len, 8);
  fixture_start_server(fx);
  /* One send of 8 MiB from a client service, echoed by the server. */
  fixture_start_client(fx, &fx->server_addr, 1);
  fixture_wait_int(fx, &fx->connected, 2, FIXTURE_TIMEOUT_MS);
  assert_int_equal(cport_session_send(fx->last_client, payload, len), 0);
  r = rec_of(fx->last_client);
  fixture_wait_size(fx, &r->received.len, len, FIXTURE_TIMEOUT_MS);
  assert_int_equal(r->received.len, len);
  assert_memory_equal(r->received.data, payload, len);
  /* And 8 MiB from a raw peer in one write. */
  p = peer_connect(fx, &fx->server_addr, 0);
  peer_write(p, payload, len);
  fixture_wait_size(fx, &p->received.len, len, FIXTURE_TIMEOUT_MS);
  assert_memory_equal(p->received.data, payload, len);
  peer_destroy(p);
  free(payload);
}


/* A send made outside on_recv, far past the limit and past what the
 * kernel's buffers hold both ways, to an echo server: the sender must keep
 * reading the echo, or both ends wait for the other to read. */
static void test_session_big_send_outside_on_recv_keeps_reading(void** state) {
  fixture_t* fx = *state;
  const size_t len = 32u * 1024 * 1024;
  uint8_t* payload = malloc(len);
  rec_session_t* r;
  assert_non_null(payload);
  fill_pattern(payload, len, 5);
  fx->opts.send_queue_limit = 64 * 1024;
  fixture_start_server(fx);
  fixture_start_client(fx, &fx->server_addr, 1);
  fixture_wait_int(fx, &fx->connected, 2, FIXTURE_TIMEOUT_MS);
  assert_int_equal(cport_session_send(fx->last_client, payload, len), 0);
  r = rec_of(fx->last_client);
  fixture_wait_size(fx, &r->received.len, len, FIXTURE_TIMEOUT_MS);
  assert_memory_equal(r->received.data, payload, len);
  /* Neither end gave up on the way. */
  assert_int_equal(fx->disconnected, 0);
  free(payload);
}


static void test_session_disconnected_once_when_peer_closes(void** state) {
  fixture_t* fx = *state;
  cport_service_stats_t st;
  peer_t* p;
  fixture_start_server(fx);
  p = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &fx->connected, 1, FIXTURE_TIMEOUT_MS);
  peer_destroy(p);
  fixture_wait_int(fx, &fx->disconnected, 1, FIXTURE_TIMEOUT_MS);
  settle(fx);
  assert_int_equal(fx->disconnected, 1);
  assert_int_equal(rec_of(fx->last_server)->disconnected, 1);
  assert_int_equal(fx->last_code, UV_EOF);
  /* Live until its on_disconnected has returned. */
  assert_int_equal(fx->count_in_disconnect, 1);
  assert_int_equal(cport_service_session_count(fx->server), 0);
  assert_int_equal(cport_service_stats(fx->server, &st), 0);
  assert_int_equal(st.disconnects_peer, 1);
  assert_int_equal(st.disconnects_reset + st.disconnects_local +
                       st.disconnects_other + st.disconnects_idle,
                   0);
}


static void test_session_disconnected_once_when_peer_resets(void** state) {
  fixture_t* fx = *state;
  cport_service_stats_t st;
  peer_t* p;
  fixture_start_server(fx);
  p = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &fx->connected, 1, FIXTURE_TIMEOUT_MS);
  peer_reset(p);
  fixture_wait_int(fx, &fx->disconnected, 1, FIXTURE_TIMEOUT_MS);
  settle(fx);
  assert_int_equal(fx->disconnected, 1);
  assert_int_equal(fx->last_code, UV_ECONNRESET);
  assert_string_equal(fx->last_cause, cport_strerror(UV_ECONNRESET));
  assert_int_equal(cport_service_stats(fx->server, &st), 0);
  assert_int_equal(st.disconnects_reset, 1);
  assert_int_equal(st.disconnects_peer, 0);
  peer_destroy(p);
}


static void test_session_disconnected_once_on_local_disconnect(void** state) {
  fixture_t* fx = *state;
  peer_t* p;
  fx->mode = RECV_DISCONNECT;
  fixture_start_server(fx);
  p = peer_connect(fx, &fx->server_addr, 0);
  peer_write(p, "bye", 3);
  fixture_wait_int(fx, &fx->disconnected, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(fx->last_code, CPORT_ELOCAL);
  assert_string_equal(fx->last_cause, "test asked");
  /* Idempotent, also after the end. */
  assert_int_equal(cport_session_disconnect(fx->last_server, "again"), 0);
  fixture_wait_int(fx, &p->eof, 1, FIXTURE_TIMEOUT_MS);
  settle(fx);
  assert_int_equal(fx->disconnected, 1);
  assert_false(cport_session_is_connected(fx->last_server));
  /* Still reachable: a service outlives its sessions' memory. */
  assert_ptr_equal(cport_session_service(fx->last_server), fx->server);
  peer_destroy(p);
}


static void test_session_disconnect_twice_in_a_row_reports_once(void** state) {
  fixture_t* fx = *state;
  peer_t* p;
  fixture_start_server(fx);
  p = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &fx->connected, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(cport_session_disconnect(fx->last_server, "first"), 0);
  assert_int_equal(cport_session_disconnect(fx->last_server, "second"), 0);
  assert_int_equal(cport_session_disconnect(fx->last_server, NULL), 0);
  fixture_wait_int(fx, &fx->disconnected, 1, FIXTURE_TIMEOUT_MS);
  settle(fx);
  assert_int_equal(fx->disconnected, 1);
  assert_string_equal(fx->last_cause, "first");
  peer_destroy(p);
}


static void test_session_half_close_gets_every_byte_back(void** state) {
  fixture_t* fx = *state;
  const size_t len = 2u * 1024 * 1024;
  uint8_t* payload = malloc(len);
  peer_t* p;
  assert_non_null(payload);
  fill_pattern(payload, len, 2);
  fixture_start_server(fx);
  p = peer_connect(fx, &fx->server_addr, 0);
  peer_write(p, payload, len);
  peer_shutdown(p);
  fixture_wait_int(fx, &p->eof, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(p->received.len, len);
  assert_memory_equal(p->received.data, payload, len);
  fixture_wait_int(fx, &fx->disconnected, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(fx->last_code, UV_EOF);
  peer_destroy(p);
  free(payload);
}


static void test_session_disconnect_flushes_queued_sends(void** state) {
  fixture_t* fx = *state;
  const size_t len = 4u * 1024 * 1024;
  uint8_t* payload = malloc(len);
  peer_t* p;
  assert_non_null(payload);
  fill_pattern(payload, len, 4);
  fx->opts.send_queue_limit = 2 * len;
  fixture_start_server(fx);
  p = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &fx->connected, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(cport_session_send(fx->last_server, payload, len / 2), 0);
  assert_int_equal(
      cport_session_send(fx->last_server, payload + len / 2, len / 2), 0);
  assert_int_equal(cport_session_disconnect(fx->last_server, "done"), 0);
  /* Once disconnecting, no more sends are taken. */
  assert_int_equal(cport_session_send(fx->last_server, "x", 1), UV_ENOTCONN);
  fixture_wait_int(fx, &p->eof, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(p->received.len, len);
  assert_memory_equal(p->received.data, payload, len);
  fixture_wait_int(fx, &fx->disconnected, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(rec_of(fx->last_server)->sent, len);
  peer_destroy(p);
  free(payload);
}


static void test_session_full_receive_buffer_ends_session(void** state) {
  fixture_t* fx = *state;
  uint8_t junk[3000];
  peer_t* p;
  memset(junk, 'j', sizeof(junk));
  fx->mode = RECV_NOTHING;
  fx->opts.recv_buffer_limit = 1024;
  fixture_start_server(fx);
  p = peer_connect(fx, &fx->server_addr, 0);
  peer_write(p, junk, sizeof(junk));
  fixture_wait_int(fx, &fx->disconnected, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(fx->last_code, CPORT_ERECVFULL);
  assert_string_equal(fx->last_cause, cport_strerror(CPORT_ERECVFULL));
  peer_destroy(p);
}


static void test_session_leftover_growing_to_limit_ends_session(void** state) {
  fixture_t* fx = *state;
  uint8_t junk[100];
  peer_t* p;
  rec_session_t* r;
  int i;
  memset(junk, 'k', sizeof(junk));
  fx->mode = RECV_NOTHING;
  fx->opts.recv_buffer_limit = 1000;
  fixture_start_server(fx);
  p = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &fx->connected, 1, FIXTURE_TIMEOUT_MS);
  r = rec_of(fx->last_server);
  /* Small pieces pile up behind each other until the limit is reached. */
  for (i = 0; i < 9; i++) {
    peer_write(p, junk, sizeof(junk));
    fixture_wait_size(fx, &r->last_call.len, (size_t)(i + 1) * 100,
                      FIXTURE_TIMEOUT_MS);
  }
  assert_int_equal(fx->disconnected, 0);
  assert_int_equal(cport_session_pending_bytes(fx->last_server), 900);
  peer_write(p, junk, sizeof(junk));
  fixture_wait_int(fx, &fx->disconnected, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(fx->last_code, CPORT_ERECVFULL);
  peer_destroy(p);
}


static void test_session_overconsuming_on_recv_ends_session(void** state) {
  fixture_t* fx = *state;
  peer_t* p;
  fx->mode = RECV_OVERCONSUME;
  fixture_start_server(fx);
  p = peer_connect(fx, &fx->server_addr, 0);
  peer_write(p, "abc", 3);
  fixture_wait_int(fx, &fx->disconnected, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(fx->last_code, CPORT_ECONSUMED);
  peer_destroy(p);
}


typedef struct flood_wait_s {
  cport_session_t* s;
  size_t limit;
  peer_t* p;
  size_t total;
} flood_wait_t;


static int pred_paused_or_written(void* arg) {
  flood_wait_t* w = arg;
  return cport__session_is_paused(w->s) || w->p->written == w->total;
}


/* The scenario of the two tests below; `direct` leaves on_send out, so
 * that the echo takes the direct-write path straight from the read chunk,
 * whose unsent tails must then be copied byte-exact. */
/* Another peer's echo, exact, while something else holds a session back;
 * its session has ended (one more on_disconnected) when this returns. */
static void check_reading_peer_is_served(fixture_t* fx) {
  uint8_t msg[1000];
  int before = fx->disconnected;
  peer_t* q = peer_connect(fx, &fx->server_addr, 0);
  fill_pattern(msg, sizeof(msg), 99);
  peer_write(q, msg, sizeof(msg));
  fixture_wait_size(fx, &q->received.len, sizeof(msg), FIXTURE_TIMEOUT_MS);
  assert_int_equal(q->received.len, sizeof(msg));
  assert_memory_equal(q->received.data, msg, sizeof(msg));
  peer_destroy(q);
  fixture_wait_int(fx, &fx->disconnected, before + 1, FIXTURE_TIMEOUT_MS);
}


static void check_peer_that_never_reads_is_paused(fixture_t* fx, int direct) {
  const size_t limit = 256 * 1024;
  const size_t chunk = 1024 * 1024;
  uint8_t* buf = malloc(chunk);
  cport_service_stats_t st;
  uint64_t bytes_in;
  flood_wait_t w;
  peer_t* p;
  size_t i;
  size_t chunks = 0;
  if (!direct)
    FIXTURE_SKIP_UNDER_WINE(
        "the uv_write queue to a peer that stopped reading still drains "
        "under wine (wine's socket buffering, not Windows'), so reading "
        "does not stay paused");
  assert_non_null(buf);
  fx->opts.send_queue_limit = limit;
  fx->no_on_send = direct;
  fixture_start_server(fx);
  p = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &fx->connected, 1, FIXTURE_TIMEOUT_MS);
  peer_stop_reading(p);
  /* Send until the kernel buffers on both sides are full and the server's
   * own queue reaches the limit, which pauses reading; how much that takes
   * depends on the kernel's buffer tuning, hence the loop (bounded at
   * 1 GiB). */
  w.s = fx->last_server;
  w.limit = limit;
  w.p = p;
  w.total = 0;
  while (!cport__session_is_paused(fx->last_server)) {
    assert_true(chunks < 1024);
    fill_pattern(buf, chunk, (uint32_t)chunks);
    peer_write(p, buf, chunk);
    chunks++;
    w.total += chunk;
    assert_true(
        fixture_run_until(fx, pred_paused_or_written, &w, FIXTURE_TIMEOUT_MS));
  }
  /* It paused at the limit (the queue may since have drained a little, but
   * reading resumes only at half the limit). However long it runs now, the
   * queue stays bounded and the server takes no more of the peer's bytes. */
  assert_true(cport_session_queued_bytes(fx->last_server) > limit / 2);
  assert_int_equal(cport_service_stats(fx->server, &st), 0);
  bytes_in = st.bytes_in;
  for (i = 0; i < 50; i++) {
    cport_core_dispatch(fx->core, 0, 2);
    assert_true(cport__session_is_paused(fx->last_server));
    assert_true(cport_session_queued_bytes(fx->last_server) <
                limit + 64 * 1024);
  }
  assert_int_equal(cport_service_stats(fx->server, &st), 0);
  assert_int_equal(st.bytes_in, bytes_in);
  assert_true(st.pauses >= 1);
  assert_int_equal(fx->disconnected, 0);
  /* A peer that reads is served meanwhile, byte for byte. */
  check_reading_peer_is_served(fx);
  /* Reading again drains everything, in order, with nothing lost. */
  peer_resume_reading(p);
  fixture_wait_size(fx, &p->received.len, w.total, 4 * FIXTURE_TIMEOUT_MS);
  assert_int_equal(p->received.len, w.total);
  for (i = 0; i < chunks; i++) {
    fill_pattern(buf, chunk, (uint32_t)i);
    assert_memory_equal(p->received.data + i * chunk, buf, chunk);
  }
  assert_int_equal(fx->disconnected, 1); /* the reading peer's */
  peer_destroy(p);
  free(buf);
}


static void test_session_peer_that_never_reads_is_paused(void** state) {
  check_peer_that_never_reads_is_paused(*state, 0);
}


static void test_session_direct_echo_of_unread_peer_is_paused_and_exact(
    void** state) {
  check_peer_that_never_reads_is_paused(*state, 1);
}


static void test_session_kept_bytes_presented_again_when_reading_resumes(
    void** state) {
  fixture_t* fx = *state;
  rec_session_t* r;
  peer_t* p;
  fx->mode = RECV_FLOOD_ONCE;
  fx->flood_len = 4u * 1024 * 1024;
  fx->opts.send_queue_limit = 64 * 1024;
  fixture_start_server(fx);
  p = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &fx->connected, 1, FIXTURE_TIMEOUT_MS);
  r = rec_of(fx->last_server);
  /* The first on_recv floods the send queue past the limit and keeps "req";
   * no further byte comes from the peer, yet "req" must be seen again once
   * the queue has drained. */
  peer_write(p, "req", 3);
  fixture_wait_size(fx, &r->calls, 1, FIXTURE_TIMEOUT_MS);
  assert_true(cport_session_queued_bytes(fx->last_server) >= 64 * 1024);
  fixture_wait_size(fx, &p->received.len, fx->flood_len, FIXTURE_TIMEOUT_MS);
  fixture_wait_size(fx, &r->calls, 2, FIXTURE_TIMEOUT_MS);
  assert_int_equal(r->last_call.len, 3);
  assert_memory_equal(r->last_call.data, "req", 3);
  assert_int_equal(cport_session_pending_bytes(fx->last_server), 0);
  peer_destroy(p);
}


/* A server under CPORT_SENDQ_DISCONNECT with a limit of four `chunk`s, a
 * peer that stopped reading, and sends of `chunk` bytes to it until one is
 * refused and the session has ended for it. Returns the bytes accepted. */
static size_t fill_until_disconnected(fixture_t* fx,
                                      const uint8_t* payload,
                                      size_t chunk,
                                      peer_t** peer) {
  size_t sent = 0;
  int rc = 0;
  int i;
  fx->opts.send_queue_limit = 4 * chunk;
  fx->opts.send_queue_policy = CPORT_SENDQ_DISCONNECT;
  fixture_start_server(fx);
  *peer = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &fx->connected, 1, FIXTURE_TIMEOUT_MS);
  peer_stop_reading(*peer);
  /* The kernel buffers take a few MiB first; bounded by the loop count. */
  for (i = 0; i < 100000 && rc == 0; i++) {
    rc = cport_session_send(fx->last_server, payload, chunk);
    if (rc == 0)
      sent += chunk;
    cport_core_dispatch(fx->core, 0, 0);
  }
  assert_int_equal(rc, CPORT_ESENDQ);
  fixture_wait_int(fx, &fx->disconnected, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(fx->last_code, CPORT_ESENDQ);
  return sent;
}


static void test_session_slow_reader_disconnected_under_disconnect_policy(
    void** state) {
  fixture_t* fx = *state;
  const size_t chunk = 64 * 1024;
  uint8_t* payload = calloc(1, chunk);
  cport_service_stats_t st;
  peer_t* p;
  assert_non_null(payload);
  (void)fill_until_disconnected(fx, payload, chunk, &p);
  assert_int_equal(cport_session_send(fx->last_server, payload, chunk),
                   UV_ENOTCONN);
  assert_int_equal(cport_service_stats(fx->server, &st), 0);
  assert_int_equal(st.disconnects_backpressure, 1);
  /* The other peers are not held back. */
  check_reading_peer_is_served(fx);
  peer_destroy(p);
  free(payload);
}


/* Read what a peer that stopped reading has left, with recv() itself:
 * libuv reports a reset that comes after a short read as an EOF. Returns 1
 * if the connection ended with a reset, 0 for an orderly EOF. */
static int peer_drain_raw(fixture_t* fx, peer_t* p) {
  uint64_t deadline = uv_hrtime() + (uint64_t)FIXTURE_TIMEOUT_MS * 1000000u;
  static char buf[64 * 1024];
  uv_os_fd_t fd;
  assert_int_equal(uv_fileno((uv_handle_t*)&p->tcp, &fd), 0);
  while (uv_hrtime() < deadline) {
#ifdef _WIN32
    int n = recv((SOCKET)fd, buf, (int)sizeof(buf), 0);
    int err = n < 0 ? WSAGetLastError() : 0;
    if (n < 0 && err == WSAECONNRESET)
      return 1;
    if (n < 0 && err != WSAEWOULDBLOCK)
      fail_msg("recv: error %d", err);
#else
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n < 0 && errno == ECONNRESET)
      return 1;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
      fail_msg("recv: %s", strerror(errno));
#endif
    if (n == 0)
      return 0;
    if (n > 0)
      bytes_append(&p->received, buf, (size_t)n);
    else
      cport_core_dispatch(fx->core, 0, 1);
  }
  fail_msg("the peer's connection did not end");
  return -1;
}


/* A session ended because its peer does not read is reset, not closed
 * gracefully: the kernel would otherwise keep sending what it holds (the
 * socket lingering in FIN-WAIT-1) to a peer that may never take it. The
 * peer, reading again, gets what had reached it, then the reset instead of
 * the rest and an EOF. */
static void test_session_send_queue_disconnect_resets_the_peer(void** state) {
  fixture_t* fx = *state;
  const size_t chunk = 64 * 1024;
  uint8_t* payload;
  cport_service_stats_t st;
  size_t sent;
  peer_t* p;
  FIXTURE_SKIP_UNDER_WINE(
      "wine lets the cancelled writes drain and closes with a FIN, so the "
      "peer reads an orderly EOF (libuv asks Windows for an abortive close)");
  payload = calloc(1, chunk);
  assert_non_null(payload);
  sent = fill_until_disconnected(fx, payload, chunk, &p);
  assert_int_equal(cport_service_stats(fx->server, &st), 0);
  assert_int_equal(st.queued_bytes, 0);
  assert_int_equal(peer_drain_raw(fx, p), 1);
  assert_true(p->received.len < sent);
  peer_destroy(p);
  free(payload);
}


/* The idle timeout of a session whose peer reads nothing while bytes wait
 * for it resets it within two timeouts, instead of a graceful close that
 * would hold the queue until disconnect_timeout_ms (a minute here). */
static void test_session_idle_with_bytes_the_peer_never_reads_is_reset(
    void** state) {
  fixture_t* fx = *state;
  cport_service_stats_t st;
  peer_t* p;
  FIXTURE_SKIP_UNDER_WINE(FIXTURE_WINE_DRAINS_STUCK_WRITES);
  fx->opts.send_queue_limit = 2 * FIXTURE_STUCK_BYTES;
  fx->opts.idle_timeout_ms = 200;
  fx->opts.disconnect_timeout_ms = 60000;
  fixture_start_server(fx);
  p = fixture_connect_stuck_peer(fx);
  fixture_wait_int(fx, &fx->disconnected, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(fx->last_code, CPORT_EIDLE);
  assert_int_equal(cport_service_stats(fx->server, &st), 0);
  assert_int_equal(st.queued_bytes, 0);
  assert_int_equal(st.disconnect_timeouts, 0);
  assert_int_equal(peer_drain_raw(fx, p), 1);
  peer_destroy(p);
}


static int pred_not_connected(void* arg) {
  return !cport_session_is_connected(arg);
}


/* A peer that half-closes puts the server's socket in CLOSE_WAIT; if it then
 * vanishes while the server is still flushing to it, the next write fails
 * with EPIPE, which raises SIGPIPE unless cport dealt with it. */
static void test_session_writing_to_vanished_peer_is_an_error_not_a_signal(
    void** state) {
  fixture_t* fx = *state;
  peer_t* p;
  FIXTURE_SKIP_UNDER_WINE(
      "under wine the flush to the half-closed peer completes and the "
      "session closes before the peer resets, so the scenario cannot be "
      "set up (SIGPIPE, its subject, does not exist on Windows)");
  fx->mode = RECV_CONSUME;
  fx->opts.send_queue_limit = 2 * FIXTURE_STUCK_BYTES;
  fixture_start_server(fx);
  p = fixture_connect_stuck_peer(fx);
  peer_shutdown(p);
  /* The server saw EOF and is flushing before it closes. */
  assert_true(fixture_run_until(fx, pred_not_connected, fx->last_server,
                                FIXTURE_TIMEOUT_MS));
  assert_int_equal(fx->disconnected, 0);
  peer_reset(p);
  fixture_wait_int(fx, &fx->disconnected, 1, FIXTURE_TIMEOUT_MS);
  /* The first cause wins: the peer's EOF. The process is still alive. */
  assert_int_equal(fx->last_code, UV_EOF);
  assert_true(rec_of(fx->last_server)->sent < FIXTURE_STUCK_BYTES);
  peer_destroy(p);
}


static void test_session_send_rejects_invalid_arguments(void** state) {
  fixture_t* fx = *state;
  peer_t* p;
  char byte = 'b';
  fixture_start_server(fx);
  p = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &fx->connected, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(cport_session_send(NULL, "x", 1), UV_EINVAL);
  assert_int_equal(cport_session_send(fx->last_server, NULL, 1), UV_EINVAL);
  assert_int_equal(cport_session_send(fx->last_server, "x", 0), UV_EINVAL);
#if SIZE_MAX > UINT32_MAX
  /* Refused before the bytes are touched: a libuv buffer is 32-bit. */
  assert_int_equal(
      cport_session_send(fx->last_server, &byte, (size_t)UINT32_MAX + 1),
      UV_EINVAL);
#endif
  (void)byte;
  assert_int_equal(cport_session_disconnect(NULL, "x"), UV_EINVAL);
  assert_int_equal(cport_session_peer_addr(NULL, NULL), UV_EINVAL);
  assert_null(cport_session_user(NULL));
  assert_null(cport_session_service(NULL));
  assert_int_equal(cport_session_id(NULL), 0);
  assert_int_equal(cport_session_queued_bytes(NULL), 0);
  cport_session_ref(NULL);
  cport_session_unref(NULL);
  peer_destroy(p);
}


static void test_session_send_out_of_memory_fails_cleanly(void** state) {
  fixture_t* fx = *state;
  peer_t* p;
  fixture_start_server(fx);
  p = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &fx->connected, 1, FIXTURE_TIMEOUT_MS);
  cport__mem_fail_after(0);
  assert_int_equal(cport_session_send(fx->last_server, "lost", 4), UV_ENOMEM);
  cport__mem_fail_after(-1);
  /* The session is unharmed and the failed send left nothing behind. */
  assert_int_equal(cport_session_send(fx->last_server, "kept", 4), 0);
  fixture_wait_size(fx, &p->received.len, 4, FIXTURE_TIMEOUT_MS);
  assert_memory_equal(p->received.data, "kept", 4);
  peer_destroy(p);
}


static void test_session_reference_outlives_disconnect(void** state) {
  fixture_t* fx = *state;
  cport_session_t* s;
  peer_t* p;
  long live;
  fixture_start_server(fx);
  p = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &fx->connected, 1, FIXTURE_TIMEOUT_MS);
  s = fx->last_server;
  cport_session_ref(s);
  rec_of(s)->sent = 12345; /* user area is writable while referenced */
  peer_destroy(p);
  fixture_wait_int(fx, &fx->disconnected, 1, FIXTURE_TIMEOUT_MS);
  settle(fx);
  assert_int_equal(rec_of(s)->sent, 12345);
  assert_int_equal(rec_of(s)->disconnected, 1);
  assert_ptr_equal(cport_session_service(s), fx->server);
  live = cport__mem_live();
  cport_session_unref(s);
  /* The fixture still holds its own reference; dropping the test's frees
   * nothing yet. */
  assert_int_equal(cport__mem_live(), live);
}


static void test_session_peer_addr_matches_peer(void** state) {
  fixture_t* fx = *state;
  struct sockaddr_storage ss;
  int len = (int)sizeof(ss);
  cport_addr_t got;
  cport_addr_t want;
  peer_t* p;
  fixture_start_server(fx);
  p = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &fx->connected, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(uv_tcp_getsockname(&p->tcp, (struct sockaddr*)&ss, &len), 0);
  assert_int_equal(cport_addr_from_sockaddr(&want, (struct sockaddr*)&ss), 0);
  assert_int_equal(cport_session_peer_addr(fx->last_server, &got), 0);
  assert_int_equal(cport_addr_port(&got), cport_addr_port(&want));
  assert_int_equal(cport_addr_family(&got), 4);
  assert_true(cport_session_id(fx->last_server) > 0);
  assert_true(cport_session_is_connected(fx->last_server));
  peer_destroy(p);
}


/* ---- a peer process killed mid-transfer ---- */

typedef struct child_s {
  uv_process_t proc;
  int exited;
  int64_t status;
  int term_signal;
} child_t;


static void child_exit_cb(uv_process_t* proc, int64_t status, int sig) {
  child_t* c = proc->data;
  c->exited = 1;
  c->status = status;
  c->term_signal = sig;
  uv_close((uv_handle_t*)proc, NULL);
}


static void test_session_killed_peer_process_frees_session(void** state) {
  fixture_t* fx = *state;
  char port[16];
  const char* args[3];
  child_t child;
  rec_session_t* r;
  FIXTURE_SKIP_UNDER_WINE(
      "a child killed under wine is not always seen to go promptly (seen "
      "once in a fresh wine prefix: a 10 s wait after uv_process_kill "
      "timed out)");
  memset(&child, 0, sizeof(child));
  fx->mode = RECV_CONSUME;
  fixture_start_server(fx);
  snprintf(port, sizeof(port), "%d", cport_addr_port(&fx->server_addr));
  args[0] = "--child-sender";
  args[1] = port;
  args[2] = NULL;
  child.proc.data = &child;
  assert_int_equal(fixture_spawn_self(fx, &child.proc, args, child_exit_cb), 0);
  fixture_wait_int(fx, &fx->connected, 1, FIXTURE_TIMEOUT_MS);
  r = rec_of(fx->last_server);
  /* Mid-transfer: a good amount has arrived and more is coming. */
  fixture_wait_size(fx, &r->received.len, 1024 * 1024, FIXTURE_TIMEOUT_MS);
  assert_int_equal(uv_process_kill(&child.proc, SIGKILL), 0);
  fixture_wait_int(fx, &child.exited, 1, FIXTURE_TIMEOUT_MS);
  fixture_wait_int(fx, &fx->disconnected, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(cport_service_session_count(fx->server), 0);
  assert_true(fx->last_code == UV_EOF || fx->last_code == UV_ECONNRESET);
  settle(fx);
  assert_int_equal(fx->disconnected, 1);
}


/* The child: connect to 127.0.0.1:PORT and send until killed, or give up
 * after 30 s so that it can never outlive a crashed parent for long. */
typedef struct sender_s {
  uv_tcp_t tcp;
  uv_connect_t connect;
  uv_write_t write;
  uv_timer_t limit;
  char chunk[64 * 1024];
} sender_t;


static void sender_write_cb(uv_write_t* req, int status);


static void sender_write_more(sender_t* snd) {
  uv_buf_t buf = uv_buf_init(snd->chunk, sizeof(snd->chunk));
  if (uv_write(&snd->write, (uv_stream_t*)&snd->tcp, &buf, 1,
               sender_write_cb) != 0)
    uv_stop(snd->tcp.loop);
}


static void sender_write_cb(uv_write_t* req, int status) {
  sender_t* snd = req->data;
  if (status != 0) {
    uv_stop(snd->tcp.loop);
    return;
  }
  sender_write_more(snd);
}


static void sender_connect_cb(uv_connect_t* req, int status) {
  sender_t* snd = req->data;
  if (status != 0) {
    uv_stop(snd->tcp.loop);
    return;
  }
  sender_write_more(snd);
}


static void sender_limit_cb(uv_timer_t* t) {
  uv_stop(t->loop);
}


static int child_sender_main(const char* port_text) {
  static sender_t snd;
  cport_addr_t addr;
  uv_loop_t* loop = uv_default_loop();
  if (cport_addr_parse(&addr, "127.0.0.1", atoi(port_text)) != 0)
    return 2;
  memset(snd.chunk, 'c', sizeof(snd.chunk));
  snd.connect.data = &snd;
  snd.write.data = &snd;
  uv_tcp_init(loop, &snd.tcp);
  uv_timer_init(loop, &snd.limit);
  uv_timer_start(&snd.limit, sender_limit_cb, 30000, 0);
  uv_tcp_connect(&snd.connect, &snd.tcp, cport_addr_sockaddr(&addr),
                 sender_connect_cb);
  uv_run(loop, UV_RUN_DEFAULT);
  return 0;
}


/* ---- the send path: direct writes, the request pool, gathering ---- */

static void test_session_idle_session_is_small(void** state) {
  fixture_t* fx = *state;
  cport_service_t* svc =
      fixture_create_service(fx, CPORT_SERVICE_SERVER, "127.0.0.1", NULL);
  /* The benchmark's memory target (docs/benchmarks.md) rests on this: an
   * idle session is its uv_tcp_t plus at most 104 bytes, and holds nothing
   * else (no receive buffer, no request). */
  assert_true(cport__session_footprint(svc) <= sizeof(uv_tcp_t) + 104);
  cport_service_destroy(svc);
}


static void test_session_warm_direct_sends_allocate_nothing(void** state) {
  fixture_t* fx = *state;
  uint8_t msg[64];
  cport_service_stats_t st;
  long allocs = 0;
  peer_t* p;
  int round;
  fx->no_on_send = 1;
  fixture_start_server(fx);
  p = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &fx->connected, 1, FIXTURE_TIMEOUT_MS);
  /* Ping-pong: the server's echo always finds nothing queued. The first
   * rounds warm the loop's read chunk and request pool. */
  for (round = 0; round < 210; round++) {
    if (round == 10)
      allocs = cport__mem_allocs();
    fill_pattern(msg, sizeof(msg), (uint32_t)round);
    peer_write(p, msg, sizeof(msg));
    fixture_wait_size(fx, &p->received.len, (size_t)(round + 1) * sizeof(msg),
                      FIXTURE_TIMEOUT_MS);
    assert_memory_equal(p->received.data + (size_t)round * sizeof(msg), msg,
                        sizeof(msg));
  }
  assert_int_equal(cport__mem_allocs() - allocs, 0);
  /* Every echo was one send written at once: nothing was ever queued. */
  assert_int_equal(cport_service_stats(fx->server, &st), 0);
  assert_true(st.sends >= 210);
  assert_int_equal(st.writes, st.sends);
  assert_int_equal(st.bytes_out, 210 * sizeof(msg));
  assert_int_equal(cport_session_queued_bytes(fx->last_server), 0);
  peer_destroy(p);
}


/* Bytes of the send that gets stuck: far more than loopback's kernel
 * buffers take while the peer does not read. */
#define STUCK_LEN (16u * 1024 * 1024)

/* Start a server without on_send, connect a peer that stops reading, and
 * send it STUCK_LEN bytes: the direct write takes what fits and the rest
 * stays queued, so later sends wait behind a write in flight. Returns the
 * payload (the caller frees it) and the peer in `*peer`. */
static uint8_t* start_behind_stuck_write(fixture_t* fx, peer_t** peer) {
  uint8_t* big = malloc(STUCK_LEN);
  peer_t* p;
  assert_non_null(big);
  fill_pattern(big, STUCK_LEN, 77);
  fx->no_on_send = 1;
  fx->opts.send_queue_limit = 64u * 1024 * 1024;
  fixture_start_server(fx);
  p = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &fx->connected, 1, FIXTURE_TIMEOUT_MS);
  peer_stop_reading(p);
  assert_int_equal(cport_session_send(fx->last_server, big, STUCK_LEN), 0);
  assert_true(cport_session_queued_bytes(fx->last_server) > 0);
  *peer = p;
  return big;
}


static void test_session_sends_behind_a_write_leave_gathered_in_order(
    void** state) {
  fixture_t* fx = *state;
  const size_t nsmall = 100;
  uint8_t small[100][48];
  cport_service_stats_t st;
  size_t queued;
  uint8_t* big;
  peer_t* p;
  size_t i;
  big = start_behind_stuck_write(fx, &p);
  /* The direct write took what fitted; the tail went to one uv_write. */
  assert_int_equal(cport_service_stats(fx->server, &st), 0);
  assert_int_equal(st.sends, 1);
  assert_int_equal(st.writes, 2);
  queued = cport_session_queued_bytes(fx->last_server);
  for (i = 0; i < nsmall; i++) {
    fill_pattern(small[i], sizeof(small[i]), (uint32_t)(1000 + i));
    assert_int_equal(
        cport_session_send(fx->last_server, small[i], sizeof(small[i])), 0);
  }
  /* All queued behind the write in flight: no further write yet. */
  assert_int_equal(cport_service_stats(fx->server, &st), 0);
  assert_int_equal(st.writes, 2);
  /* Each charged its request's block, which holds its bytes. */
  assert_int_equal(cport_session_queued_bytes(fx->last_server),
                   queued + nsmall * cport__send_req_cost(sizeof(small[0]), 0, 1));
  peer_resume_reading(p);
  fixture_wait_size(fx, &p->received.len, STUCK_LEN + nsmall * sizeof(small[0]),
                    4 * FIXTURE_TIMEOUT_MS);
  assert_memory_equal(p->received.data, big, STUCK_LEN);
  for (i = 0; i < nsmall; i++)
    assert_memory_equal(p->received.data + STUCK_LEN + i * sizeof(small[0]),
                        small[i], sizeof(small[0]));
  /* The hundred small sends left in two gathered writes (64 buffers at most
   * per uv_write), not a hundred. */
  assert_int_equal(cport_service_stats(fx->server, &st), 0);
  assert_int_equal(st.sends, 1 + nsmall);
  assert_int_equal(st.writes, 2 + 2);
  assert_int_equal(st.bytes_out, STUCK_LEN + nsmall * sizeof(small[0]));
  assert_int_equal(cport_session_queued_bytes(fx->last_server), 0);
  peer_destroy(p);
  free(big);
}


static void test_session_request_pool_keeps_a_bounded_amount(void** state) {
  fixture_t* fx = *state;
  const size_t nsmall = 5000;
  cport__loop_t* port = cport__core_loop(fx->core, 0);
  uint8_t msg[200];
  uint8_t* big;
  peer_t* p;
  size_t i;
  big = start_behind_stuck_write(fx, &p);
  memset(msg, 'm', sizeof(msg));
  for (i = 0; i < nsmall; i++)
    assert_int_equal(cport_session_send(fx->last_server, msg, sizeof(msg)), 0);
  peer_resume_reading(p);
  fixture_wait_size(fx, &p->received.len, STUCK_LEN + nsmall * sizeof(msg),
                    4 * FIXTURE_TIMEOUT_MS);
  /* 5000 requests came back to the pool; it kept at most its class budget
   * and freed the rest. */
  assert_true(cport__send_pool_cached(&port->send_pool) > 0);
  assert_true(cport__send_pool_cached(&port->send_pool) <=
              CPORT__SEND_POOL_CLASS_BYTES);
  peer_destroy(p);
  free(big);
}


static void test_session_reset_drops_queued_sends_without_leaks(void** state) {
  fixture_t* fx = *state;
  uint8_t* big;
  peer_t* p;
  int i;
  big = start_behind_stuck_write(fx, &p);
  for (i = 0; i < 300; i++)
    assert_int_equal(cport_session_send(fx->last_server, big, 1000), 0);
  peer_reset(p);
  fixture_wait_int(fx, &fx->disconnected, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(cport_session_queued_bytes(fx->last_server), 0);
  /* Teardown proves every dropped request went back to the pool or was
   * freed. */
  peer_destroy(p);
  free(big);
}


static void test_session_disconnect_flushes_gathered_sends(void** state) {
  fixture_t* fx = *state;
  uint8_t tail[32];
  uint8_t* big;
  peer_t* p;
  int i;
  big = start_behind_stuck_write(fx, &p);
  for (i = 0; i < 10; i++) {
    memset(tail, 'a' + i, sizeof(tail));
    assert_int_equal(cport_session_send(fx->last_server, tail, sizeof(tail)),
                     0);
  }
  /* The pending sends must reach libuv before the shutdown does. */
  assert_int_equal(cport_session_disconnect(fx->last_server, "bye"), 0);
  peer_resume_reading(p);
  fixture_wait_int(fx, &p->eof, 1, 4 * FIXTURE_TIMEOUT_MS);
  assert_int_equal(p->received.len, STUCK_LEN + 10 * sizeof(tail));
  assert_memory_equal(p->received.data, big, STUCK_LEN);
  for (i = 0; i < 10; i++) {
    memset(tail, 'a' + i, sizeof(tail));
    assert_memory_equal(p->received.data + STUCK_LEN + (size_t)i * sizeof(tail),
                        tail, sizeof(tail));
  }
  fixture_wait_int(fx, &fx->disconnected, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(fx->last_code, CPORT_ELOCAL);
  peer_destroy(p);
  free(big);
}


static int session_sockopt(cport_session_t* s, int level, int name) {
  uv_os_fd_t fd;
  /* Windows writes a one-byte BOOLEAN, so start from 0. */
  int on = 0;
  socklen_t len = (socklen_t)sizeof(on);
  assert_int_equal(uv_fileno(cport__session_handle(s), &fd), 0);
  assert_int_equal(getsockopt((uv_os_sock_t)fd, level, name, (char*)&on, &len),
                   0);
  return on != 0;
}


static int session_nodelay(cport_session_t* s) {
  return session_sockopt(s, IPPROTO_TCP, TCP_NODELAY);
}


static void test_session_tcp_nodelay_follows_the_option(void** state) {
  fixture_t* fx = *state;
  peer_t* p;
  fixture_start_server(fx);
  p = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &fx->connected, 1, FIXTURE_TIMEOUT_MS);
  assert_true(session_nodelay(fx->last_server)); /* the default */
  peer_destroy(p);
  fixture_stop_service(fx, fx->server, 1000);
  cport_service_destroy(fx->server);
  fx->server = NULL;
  fx->opts.tcp_nodelay = 0;
  fixture_start_server(fx);
  p = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &fx->connected, 2, FIXTURE_TIMEOUT_MS);
  assert_false(session_nodelay(fx->last_server));
  peer_destroy(p);
}


static void test_session_tcp_keepalive_follows_the_option(void** state) {
  fixture_t* fx = *state;
  peer_t* p;
  fixture_start_server(fx);
  p = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &fx->connected, 1, FIXTURE_TIMEOUT_MS);
  assert_false(session_sockopt(fx->last_server, SOL_SOCKET, SO_KEEPALIVE));
  peer_destroy(p);
  fixture_stop_service(fx, fx->server, 1000);
  cport_service_destroy(fx->server);
  fx->server = NULL;
  fx->opts.tcp_keepalive_s = 30;
  fixture_start_server(fx);
  p = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &fx->connected, 2, FIXTURE_TIMEOUT_MS);
  assert_true(session_sockopt(fx->last_server, SOL_SOCKET, SO_KEEPALIVE));
  peer_destroy(p);
}


/* ---- sends and disconnects from other threads ---- */

#define XS_THREADS 8
#define XS_MESSAGES 10000
#define XS_MSG 8

typedef struct xsender_s {
  cport_session_t* s;
  uint8_t tag;
  uint32_t count;
  const char* disconnect_cause; /* disconnect after the sends, if set */
  int errors;
  int last_error;
} xsender_t;

static void xsender_main(void* arg) {
  xsender_t* x = arg;
  uint32_t i;
  for (i = 0; i < x->count; i++) {
    uint8_t msg[XS_MSG];
    int rc;
    msg[0] = x->tag;
    msg[1] = msg[2] = msg[3] = 0xA5;
    msg[4] = (uint8_t)(i >> 24);
    msg[5] = (uint8_t)(i >> 16);
    msg[6] = (uint8_t)(i >> 8);
    msg[7] = (uint8_t)i;
    rc = cport_session_send(x->s, msg, sizeof(msg));
    if (rc != 0) {
      x->errors++;
      x->last_error = rc;
    }
  }
  if (x->disconnect_cause != NULL)
    (void)cport_session_disconnect(x->s, x->disconnect_cause);
}

static void xsender_init(xsender_t* x,
                         cport_session_t* s,
                         uint8_t tag,
                         uint32_t count) {
  memset(x, 0, sizeof(*x));
  x->s = s;
  x->tag = tag;
  x->count = count;
}

static void xsender_run(xsender_t* x) {
  uv_thread_t t;
  assert_int_equal(uv_thread_create(&t, xsender_main, x), 0);
  assert_int_equal(uv_thread_join(&t), 0);
}

/* A server session and the raw peer connected to it, with the session
 * referenced for the test's threads. */
static cport_session_t* xs_connect(fixture_t* fx, peer_t** p) {
  cport_session_t* s;
  int before = fx->connected;
  *p = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &fx->connected, before + 1, FIXTURE_TIMEOUT_MS);
  s = fx->last_server;
  cport_session_ref(s);
  return s;
}


/* ---- what the send queue limit bounds: memory ---- */

#ifndef HEAP_NOT_MEASURED
typedef enum {
  MEM_SEND_1,      /* 1-byte copies */
  MEM_PACKET_24,   /* 24-byte packets (4-byte header) */
  MEM_SAME_BUF,    /* one shared buffer, again and again */
  MEM_FRESH_BUF,   /* a new 16-byte shared buffer each time, then dropped */
  MEM_MIX,         /* all of those and some bigger copies, in turn */
  MEM_AFAR_SEND_1, /* 1-byte copies from another thread */
  MEM_AFAR_MIX,    /* the mix from another thread */
  MEM_KINDS
} mem_kind_t;

static const char* const mem_kind_names[MEM_KINDS] = {
    "1-byte sends",      "24-byte packets",    "one shared buffer",
    "fresh 16-byte buffers", "a mix",          "1-byte sends from afar",
    "a mix from afar"};

typedef struct mem_fill_s {
  cport_session_t* s;
  mem_kind_t kind;
  cport_buf_t* same;
  size_t sends;
  int rc; /* the refusal that ended the fill */
  long long start;
  long long cap; /* give up past this growth: the bound is broken anyway */
} mem_fill_t;

static int mem_send_one(mem_fill_t* f, size_t i) {
  static const uint8_t bytes[3000];
  cport_buf_t* b;
  int rc;
  int which = (int)f->kind;
  if (f->kind == MEM_MIX || f->kind == MEM_AFAR_MIX)
    which = (int)(i % 6);
  switch (which) {
    case MEM_SEND_1:
    case MEM_AFAR_SEND_1:
      return cport_session_send(f->s, bytes, 1);
    case MEM_PACKET_24:
      return cport_session_send_packet(f->s, 7, bytes, 20);
    case MEM_SAME_BUF:
      return cport_session_send_buf(f->s, f->same);
    case MEM_FRESH_BUF:
      if (cport_buf_from(&b, bytes, 16) != 0)
        return UV_ENOMEM;
      rc = cport_session_send_buf(f->s, b);
      cport_buf_unref(b);
      return rc;
    default:
      return cport_session_send(f->s, bytes, i % 2 ? 700 : sizeof(bytes));
  }
}

static void mem_fill(void* arg) {
  mem_fill_t* f = arg;
  size_t i;
  f->rc = 0;
  for (i = 0; i < 20u * 1000 * 1000 && f->rc == 0; i++) {
    f->rc = mem_send_one(f, i);
    if (f->rc == 0)
      f->sends++;
    if (i % 4096 == 4095 && heap_in_use() - f->start > f->cap)
      break;
  }
}
#endif /* HEAP_NOT_MEASURED */

/* A session whose peer reads nothing may hold at most twice
 * send_queue_limit of heap (plus a small constant), whatever it is sent
 * and from where: each request is charged what it allocates, not only the
 * bytes it carries (a 1-byte send once cost about 500 bytes of heap against
 * a count of 1). Measured, not asserted through cport's own count. */
static void test_session_send_queue_limit_bounds_memory(void** state) {
#ifdef HEAP_NOT_MEASURED
  (void)state;
  print_message("not measured: %s\n", HEAP_NOT_MEASURED);
#else
  fixture_t* fx = *state;
  const size_t limit = 1024 * 1024;
  const long long slack = 64 * 1024;
  cport_buf_t* same;
  int kind;
  fx->mode = RECV_CONSUME;
  fx->opts.send_queue_limit = limit;
  fixture_start_server(fx);
  assert_int_equal(cport_buf_from(&same, "shared", 6), 0);
  for (kind = 0; kind < MEM_KINDS; kind++) {
    mem_fill_t f;
    long long grew;
    cport_session_t* s;
    peer_t* p;
    int before = fx->disconnected;
    s = xs_connect(fx, &p);
    peer_stop_reading(p);
    memset(&f, 0, sizeof(f));
    f.s = s;
    f.kind = (mem_kind_t)kind;
    f.same = same;
    f.cap = 8 * (long long)limit;
    f.start = heap_in_use();
    if (kind >= MEM_AFAR_SEND_1) {
      uv_thread_t t;
      assert_int_equal(uv_thread_create(&t, mem_fill, &f), 0);
      assert_int_equal(uv_thread_join(&t), 0);
    } else {
      mem_fill(&f);
    }
    grew = heap_in_use() - f.start;
    print_message("%s: %zu sends, heap grew %lld bytes (limit %zu)\n",
                  mem_kind_names[kind], f.sends, grew, limit);
    assert_int_equal(f.rc, CPORT_ESENDQ);
    assert_true(grew <= 2 * (long long)limit + slack);
    /* The queue goes with the session. */
    peer_reset(p);
    fixture_wait_int(fx, &fx->disconnected, before + 1, FIXTURE_TIMEOUT_MS);
    cport_session_unref(s);
    peer_destroy(p);
  }
  cport_buf_unref(same);
#endif
}

static void test_session_sends_from_8_threads_keep_each_threads_order(
    void** state) {
  fixture_t* fx = *state;
  const size_t total = (size_t)XS_THREADS * XS_MESSAGES * XS_MSG;
  xsender_t x[XS_THREADS];
  uv_thread_t t[XS_THREADS];
  uint32_t next[XS_THREADS] = {0};
  cport_session_t* s;
  cport_service_stats_t st;
  peer_t* p;
  size_t off;
  int i;
  fx->mode = RECV_CONSUME;
  /* No CPORT_ESENDQ here: each send from afar is charged its own block. */
  fx->opts.send_queue_limit =
      2 * (size_t)XS_THREADS * XS_MESSAGES * cport__send_req_cost(XS_MSG, 0, 0);
  fixture_start_server(fx);
  s = xs_connect(fx, &p);
  for (i = 0; i < XS_THREADS; i++) {
    xsender_init(&x[i], s, (uint8_t)i, XS_MESSAGES);
    assert_int_equal(uv_thread_create(&t[i], xsender_main, &x[i]), 0);
  }
  /* The loop runs here, on the test's thread, while the others send. */
  fixture_wait_size(fx, &p->received.len, total, FIXTURE_TIMEOUT_MS);
  for (i = 0; i < XS_THREADS; i++) {
    assert_int_equal(uv_thread_join(&t[i]), 0);
    assert_int_equal(x[i].errors, 0);
  }
  settle(fx);
  assert_int_equal(p->received.len, total);
  /* Each thread's messages arrive whole and in that thread's order. */
  for (off = 0; off < total; off += XS_MSG) {
    const uint8_t* m = p->received.data + off;
    uint32_t seq = ((uint32_t)m[4] << 24) | ((uint32_t)m[5] << 16) |
                   ((uint32_t)m[6] << 8) | m[7];
    assert_true(m[0] < XS_THREADS);
    assert_int_equal(m[1] & m[2] & m[3], 0xA5);
    assert_int_equal(seq, next[m[0]]);
    next[m[0]]++;
  }
  assert_int_equal(cport_service_stats(fx->server, &st), 0);
  assert_int_equal(st.sends, (uint64_t)XS_THREADS * XS_MESSAGES);
  /* Gathered: far fewer writes than sends. */
  assert_true(st.writes < st.sends / 4);
  cport_session_unref(s);
  peer_destroy(p);
}

static void test_session_send_on_loop_follows_earlier_send_from_afar(
    void** state) {
  fixture_t* fx = *state;
  xsender_t x;
  cport_session_t* s;
  peer_t* p;
  fx->mode = RECV_CONSUME;
  fixture_start_server(fx);
  s = xs_connect(fx, &p);
  xsender_init(&x, s, 'T', 1);
  /* The other thread's send has returned before this thread's is made, and
   * the loop has not run in between: the loop's send must still come
   * second. */
  xsender_run(&x);
  assert_int_equal(x.errors, 0);
  assert_int_equal(cport_session_send(s, "port", 4), 0);
  fixture_wait_size(fx, &p->received.len, XS_MSG + 4, FIXTURE_TIMEOUT_MS);
  assert_int_equal(p->received.data[0], 'T');
  assert_memory_equal(p->received.data + XS_MSG, "port", 4);
  cport_session_unref(s);
  peer_destroy(p);
}

/* A graceful close that begins on the loop while another thread's sends
 * still wait in the loop's mailbox (here: a stop made on the loop's own
 * thread) flushes them first: they returned before the stop was called
 * (session.h: sends leave in call order; a disconnect flushes the sends
 * made before it). */
static void test_session_stop_flushes_sends_waiting_in_the_mailbox(
    void** state) {
  fixture_t* fx = *state;
  xsender_t x;
  cport_session_t* s;
  peer_t* p;
  fx->mode = RECV_CONSUME;
  fixture_start_server(fx);
  s = xs_connect(fx, &p);
  xsender_init(&x, s, 'F', 50);
  xsender_run(&x);
  assert_int_equal(x.errors, 0);
  /* Not dispatched since: the sends wait in the mailbox as the stop
   * begins the graceful close. */
  fixture_stop_service(fx, fx->server, 5000);
  fixture_wait_int(fx, &p->eof, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(fx->last_code, CPORT_ESTOPPED);
  assert_int_equal(p->received.len, 50 * XS_MSG);
  assert_int_equal(p->received.data[0], 'F');
  cport_session_unref(s);
  peer_destroy(p);
}


#ifndef _WIN32
static int pred_started_or_refused(void* arg) {
  fixture_t* fx = arg;
  cport_service_stats_t st;
  assert_int_equal(cport_service_stats(fx->server, &st), 0);
  return fx->connected >= 1 || st.accept_errors >= 1;
}
#endif

/* A peer that connects and resets before the server has accepted: either
 * the session never starts (counted in accept_errors), or it starts with
 * its peer's address known; never on_connected with a peer_addr that says
 * UV_ENOTCONN (session.h: only before the connection is up). */
static void test_session_peer_gone_before_start_is_never_half_reported(
    void** state) {
#ifdef _WIN32
  (void)state;
  print_message("skipped on Windows: the raw reset uses POSIX sockets\n");
#else
  fixture_t* fx = *state;
  struct sockaddr_storage to;
  struct linger lg;
  cport_addr_t addr;
  int fd;
  fixture_start_server(fx);
  memset(&to, 0, sizeof(to));
  memcpy(&to, cport_addr_sockaddr(&fx->server_addr),
         sizeof(struct sockaddr_in));
  fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  /* The kernel completes the handshake into the backlog; the loop has not
   * run, so nothing has accepted it yet. */
  assert_int_equal(
      connect(fd, (struct sockaddr*)&to, sizeof(struct sockaddr_in)), 0);
  lg.l_onoff = 1;
  lg.l_linger = 0;
  assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
  close(fd); /* RST */
  assert_true(fixture_run_until(fx, pred_started_or_refused, fx,
                                FIXTURE_TIMEOUT_MS));
  if (fx->connected >= 1) {
    print_message("this system started the session: its address must be "
                  "known\n");
    assert_int_equal(cport_session_peer_addr(fx->last_server, &addr), 0);
  }
#endif
}


static void test_session_disconnect_from_afar_flushes_earlier_sends(
    void** state) {
  fixture_t* fx = *state;
  xsender_t x;
  cport_session_t* s;
  peer_t* p;
  fx->mode = RECV_CONSUME;
  fixture_start_server(fx);
  s = xs_connect(fx, &p);
  xsender_init(&x, s, 'D', 100);
  x.disconnect_cause = "from another thread";
  xsender_run(&x);
  assert_int_equal(x.errors, 0);
  /* Queued, not yet taken by the loop: the bytes still count. */
  assert_true(cport_session_queued_bytes(s) >= 100 * XS_MSG);
  fixture_wait_int(fx, &fx->disconnected, 1, FIXTURE_TIMEOUT_MS);
  fixture_wait_int(fx, &p->eof, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(fx->last_code, CPORT_ELOCAL);
  assert_string_equal(fx->last_cause, "from another thread");
  assert_int_equal(p->received.len, 100 * XS_MSG);
  /* Now refused on every thread, and nothing is kept. */
  xsender_init(&x, s, 'L', 3);
  xsender_run(&x);
  assert_int_equal(x.errors, 3);
  assert_int_equal(x.last_error, UV_ENOTCONN);
  assert_int_equal(cport_session_send(s, "late", 4), UV_ENOTCONN);
  assert_false(cport_session_is_connected(s));
  cport_session_unref(s);
  peer_destroy(p);
}

static void test_session_send_limit_from_afar_follows_the_policy(void** state) {
  fixture_t* fx = *state;
  xsender_t x;
  cport_session_t* s;
  peer_t* p;
  fx->mode = RECV_CONSUME;
  fx->opts.send_queue_limit = 4 * cport__send_req_cost(XS_MSG, 0, 0);
  fx->opts.send_queue_policy = CPORT_SENDQ_DISCONNECT;
  fixture_start_server(fx);
  s = xs_connect(fx, &p);
  xsender_init(&x, s, 'Q', 6);
  /* Nothing drains while the thread runs: sends 5 and 6 find the limit. */
  xsender_run(&x);
  assert_int_equal(x.errors, 2);
  assert_int_equal(x.last_error, CPORT_ESENDQ);
  fixture_wait_int(fx, &fx->disconnected, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(fx->last_code, CPORT_ESENDQ);
  cport_session_unref(s);
  peer_destroy(p);
}

/* Sends from two threads racing a disconnect from a third, round after
 * round: each session ends once, nothing is used after it is freed (ASan),
 * nothing races (TSan), nothing leaks (the fixture's teardown). */
static void test_session_disconnect_races_sends_from_threads(void** state) {
  fixture_t* fx = *state;
  const int rounds = fixture_under_wine() ? 100 : 1000;
  int round;
  fx->mode = RECV_CONSUME;
  fixture_start_server(fx);
  for (round = 0; round < rounds; round++) {
    xsender_t x[3];
    uv_thread_t t[3];
    cport_session_t* s;
    peer_t* p;
    int i;
    s = xs_connect(fx, &p);
    for (i = 0; i < 3; i++) {
      xsender_init(&x[i], s, (uint8_t)i, i < 2 ? 50 : 0);
      x[i].disconnect_cause = i == 2 ? "race" : NULL;
      assert_int_equal(uv_thread_create(&t[i], xsender_main, &x[i]), 0);
    }
    fixture_wait_int(fx, &fx->disconnected, round + 1, FIXTURE_TIMEOUT_MS);
    for (i = 0; i < 3; i++) assert_int_equal(uv_thread_join(&t[i]), 0);
    for (i = 0; i < 2; i++)
      assert_true(x[i].errors == 0 || x[i].last_error == UV_ENOTCONN);
    cport_session_unref(s);
    peer_destroy(p);
  }
  settle(fx);
  assert_int_equal(fx->disconnected, rounds);
  assert_int_equal(fx->last_code, CPORT_ELOCAL);
}


/* ---- shared buffers ---- */

typedef struct buf_sender_s {
  cport_session_t* s;
  cport_buf_t* buf;
  int rc;
} buf_sender_t;

static void buf_sender_main(void* arg) {
  buf_sender_t* b = arg;
  b->rc = cport_session_send_buf(b->s, b->buf);
}

/* A buffer sent from the loop (direct write and queued behind it) and from
 * another thread reaches the peer each time; its only owners are the
 * requests once the caller has dropped its reference, and it is freed
 * after the last write (the fixture's teardown counts the blocks). */
static void test_session_send_buf_from_any_thread_keeps_the_buffer_alive(
    void** state) {
  fixture_t* fx = *state;
  const size_t len = 3000;
  cport_buf_t* buf;
  buf_sender_t b;
  uv_thread_t t;
  cport_session_t* s;
  peer_t* p;
  uint8_t* expect = malloc(len);
  size_t i;
  assert_non_null(expect);
  fill_pattern(expect, len, 3);
  fx->mode = RECV_CONSUME;
  fixture_start_server(fx);
  s = xs_connect(fx, &p);
  assert_int_equal(cport_buf_create(&buf, len), 0);
  fill_pattern(cport_buf_data(buf), len, 3);
  /* The on_send recorder makes both go through uv_write's queue. */
  assert_int_equal(cport_session_send_buf(s, buf), 0);
  assert_int_equal(cport_session_send_buf(s, buf), 0);
  b.s = s;
  b.buf = buf;
  b.rc = -1;
  assert_int_equal(uv_thread_create(&t, buf_sender_main, &b), 0);
  assert_int_equal(uv_thread_join(&t), 0);
  assert_int_equal(b.rc, 0);
  cport_buf_unref(buf);
  fixture_wait_size(fx, &p->received.len, 3 * len, FIXTURE_TIMEOUT_MS);
  for (i = 0; i < 3; i++)
    assert_memory_equal(p->received.data + i * len, expect, len);
  free(expect);
  fixture_wait_size(fx, &rec_of(s)->sent, 3 * len, FIXTURE_TIMEOUT_MS);
  cport_session_unref(s);
  peer_destroy(p);
}

static void test_session_send_buf_direct_write_and_refusals(void** state) {
  fixture_t* fx = *state;
  cport_buf_t* buf;
  cport_session_t* s;
  peer_t* p;
  fx->mode = RECV_CONSUME;
  fx->no_on_send = 1; /* the direct-write path */
  fixture_start_server(fx);
  s = xs_connect(fx, &p);
  assert_int_equal(cport_buf_from(&buf, "direct", 6), 0);
  assert_int_equal(cport_session_send_buf(s, buf), 0);
  fixture_wait_size(fx, &p->received.len, 6, FIXTURE_TIMEOUT_MS);
  assert_memory_equal(p->received.data, "direct", 6);
  assert_int_equal(cport_session_send_buf(NULL, buf), UV_EINVAL);
  assert_int_equal(cport_session_send_buf(s, NULL), UV_EINVAL);
  /* A disconnecting session takes no reference (else the teardown would
   * find the buffer leaked), on this thread and on another. */
  assert_int_equal(cport_session_disconnect(s, NULL), 0);
  assert_int_equal(cport_session_send_buf(s, buf), UV_ENOTCONN);
  {
    buf_sender_t b = {s, buf, 0};
    uv_thread_t t;
    assert_int_equal(uv_thread_create(&t, buf_sender_main, &b), 0);
    assert_int_equal(uv_thread_join(&t), 0);
    assert_int_equal(b.rc, UV_ENOTCONN);
  }
  cport_buf_unref(buf);
  fixture_wait_int(fx, &fx->disconnected, 1, FIXTURE_TIMEOUT_MS);
  cport_session_unref(s);
  peer_destroy(p);
}


/* ---- audit regressions ---- */

/* Queries from a thread that is not the loop's, while the loop keeps
 * receiving on the session. The rig: a core of two loops run by
 * cport_core_run, a server on port 0 and a client on loop 1 that streams
 * to it (each completed send makes the next). */
typedef struct query_rig_s {
  cport_session_t* session; /* the server's, referenced */
  atomic_int streaming;
  atomic_size_t received;
  signal_t ready;
} query_rig_t;


static query_rig_t* query_of(cport_session_t* s) {
  return cport_service_get_data(cport_session_service(s));
}


static void query_server_connected(cport_session_t* s) {
  query_rig_t* q = query_of(s);
  cport_session_ref(s);
  q->session = s;
  signal_raise(&q->ready);
}


static size_t query_server_recv(cport_session_t* s,
                                const uint8_t* data,
                                size_t len) {
  (void)data;
  atomic_fetch_add(&query_of(s)->received, len);
  return len;
}


static void query_stream(cport_session_t* s) {
  static const uint8_t chunk[16384];
  if (atomic_load(&query_of(s)->streaming))
    (void)cport_session_send(s, chunk, sizeof(chunk));
}


static void query_client_connected(cport_session_t* s) {
  query_stream(s);
}


static void query_client_sent(cport_session_t* s, size_t len) {
  (void)len;
  query_stream(s);
}


/* session.h: cport_session_user() ("Thread: any, while a reference is held
 * or inside a callback") and cport_session_peer_addr() ("Thread: any, while
 * a reference is held") may be called from another thread while the loop
 * receives on the session: TSan must see no race between them and the
 * loop's own bookkeeping of the session. */
static void test_audit_session_queries_from_any_thread_do_not_race(
    void** state) {
  const size_t enough = 4u * 1024 * 1024;
  cport_core_opts_t copts;
  cport_service_opts_t o;
  cport_core_t* core = NULL;
  cport_service_t* server = NULL;
  cport_service_t* client = NULL;
  cport_addr_t addr;
  cport_addr_t peer;
  query_rig_t q;
  uint64_t deadline;
  size_t start;
  long calls = 0;
  long bad = 0;
  int timed_out = 0;
  (void)state;
  memset(&q, 0, sizeof(q));
  atomic_init(&q.streaming, 1);
  atomic_init(&q.received, 0);
  signal_init(&q.ready);
  cport_core_opts_init(&copts);
  copts.loops = 2;
  assert_int_equal(cport_core_create(&core, &copts), 0);
  assert_int_equal(cport_addr_parse(&addr, "127.0.0.1", 0), 0);
  cport_service_opts_init(&o);
  o.cbs.on_connected = query_server_connected;
  o.cbs.on_recv = query_server_recv;
  o.user_size = 64;
  o.spread = 0;
  o.data = &q;
  assert_int_equal(
      cport_service_create(&server, core, CPORT_SERVICE_SERVER, &addr, &o), 0);
  assert_int_equal(cport_service_start(server), 0);
  assert_int_equal(cport_service_local_addr(server, &addr), 0);
  cport_service_opts_init(&o);
  o.cbs.on_connected = query_client_connected;
  o.cbs.on_send = query_client_sent;
  o.loop = 1;
  o.data = &q;
  assert_int_equal(
      cport_service_create(&client, core, CPORT_SERVICE_CLIENT, &addr, &o), 0);
  assert_int_equal(cport_service_start(client), 0);
  assert_int_equal(cport_core_run(core), 0);
  assert_true(signal_wait(&q.ready, 1, FIXTURE_TIMEOUT_MS));

  /* A bounded loop: until the loop has received `enough` more bytes
   * meanwhile, and at least 10000 rounds. */
  start = atomic_load(&q.received);
  deadline = uv_hrtime() + (uint64_t)FIXTURE_TIMEOUT_MS * 1000000u;
  while (calls < 10000 || atomic_load(&q.received) - start < enough) {
    if (uv_hrtime() >= deadline) {
      timed_out = 1;
      break;
    }
    if (cport_session_user(q.session) == NULL)
      bad++;
    if (cport_session_peer_addr(q.session, &peer) != 0)
      bad++;
    calls++;
  }
  atomic_store(&q.streaming, 0);
  assert_int_equal(cport_core_stop(core), 0);
  assert_int_equal(cport_core_join(core), 0);
  cport_session_unref(q.session);
  cport_service_destroy(client);
  cport_service_destroy(server);
  cport_core_destroy(core);
  signal_destroy(&q.ready);
  assert_false(timed_out);
  assert_int_equal(bad, 0);
}


typedef struct afar_disconnect_s {
  cport_session_t* s;
  int rc;
} afar_disconnect_t;


static void afar_disconnect_main(void* arg) {
  afar_disconnect_t* d = arg;
  d->rc = cport_session_disconnect(d->s, "from afar");
}


static int pred_peer_eof(void* arg) {
  peer_t* p = arg;
  return p->eof || p->error != 0;
}


/* session.h: sends leave "in the order of the send calls, across all
 * threads", a disconnect from another thread is "queued behind that
 * thread's sends", and a send returns UV_ENOTCONN "once a disconnect has
 * begun". Another thread's disconnect has returned 0; a send the loop's
 * owner makes afterwards must not overtake it: it returns UV_ENOTCONN and
 * the peer sees EOF with none of its bytes. */
static void test_audit_send_after_disconnect_from_afar_is_refused(
    void** state) {
  fixture_t* fx = *state;
  afar_disconnect_t d;
  uv_thread_t t;
  cport_session_t* s;
  peer_t* p;
  int send_rc;
  int saw_eof;
  size_t after_eof;
  fx->mode = RECV_CONSUME;
  fixture_start_server(fx);
  s = xs_connect(fx, &p);
  d.s = s;
  d.rc = -1;
  assert_int_equal(uv_thread_create(&t, afar_disconnect_main, &d), 0);
  assert_int_equal(uv_thread_join(&t), 0);
  /* The loop has not run since: the disconnect waits in its queue. */
  send_rc = cport_session_send(s, "late", 4);
  saw_eof = fixture_run_until(fx, pred_peer_eof, p, FIXTURE_TIMEOUT_MS);
  after_eof = p->received.len;
  fixture_wait_int(fx, &fx->disconnected, 1, FIXTURE_TIMEOUT_MS);
  cport_session_unref(s);
  peer_destroy(p);
  assert_int_equal(d.rc, 0);
  assert_true(saw_eof);
  assert_int_equal(fx->last_code, CPORT_ELOCAL);
  if (send_rc != UV_ENOTCONN || after_eof != 0)
    fail_msg(
        "a send after another thread's disconnect returned %d (want "
        "UV_ENOTCONN %d) and the peer got %zu byte(s) before EOF (want 0)",
        send_rc, UV_ENOTCONN, after_eof);
}


typedef struct refused_sender_s {
  cport_session_t* s;
  long calls;
  long accepted;
  long refused; /* CPORT_ESENDQ */
  long notconn; /* UV_ENOTCONN: the close has begun */
  int other;    /* any other return */
} refused_sender_t;


static void refused_sender_main(void* arg) {
  refused_sender_t* r = arg;
  uint8_t msg[100];
  long i;
  memset(msg, 'r', sizeof(msg));
  for (i = 0; i < r->calls; i++) {
    int rc = cport_session_send(r->s, msg, sizeof(msg));
    if (rc == 0)
      r->accepted++;
    else if (rc == CPORT_ESENDQ)
      r->refused++;
    else if (rc == UV_ENOTCONN)
      r->notconn++;
    else
      r->other = rc;
  }
}


/* service.h, cport_sendq_policy_t: "cport_session_send() refuses further
 * bytes with CPORT_ESENDQ, so memory stays bounded"; session.h: under
 * CPORT_SENDQ_DISCONNECT "the session is also closed at once with that
 * cause". Another thread sends 100-byte messages to a peer that never
 * reads while the loop is not dispatched (limit 4096): the accepted ones
 * and the one close may cost memory, the refusals may not, however many
 * there are. Once dispatched the session ends once, with CPORT_ESENDQ. */
static void test_audit_refused_sends_from_afar_keep_memory_bounded(
    void** state) {
  fixture_t* fx = *state;
  refused_sender_t r;
  uv_thread_t t;
  cport_session_t* s;
  peer_t* p;
  long before;
  long grown;
  fx->mode = RECV_CONSUME;
  fx->opts.send_queue_limit = 4096;
  fx->opts.send_queue_policy = CPORT_SENDQ_DISCONNECT;
  fixture_start_server(fx);
  s = xs_connect(fx, &p);
  peer_stop_reading(p);
  memset(&r, 0, sizeof(r));
  r.s = s;
  r.calls = 200000;
  before = cport__mem_live();
  assert_int_equal(uv_thread_create(&t, refused_sender_main, &r), 0);
  assert_int_equal(uv_thread_join(&t), 0);
  grown = cport__mem_live() - before;
  fixture_wait_int(fx, &fx->disconnected, 1, FIXTURE_TIMEOUT_MS);
  settle(fx);
  cport_session_unref(s);
  peer_destroy(p);
  assert_int_equal(r.other, 0);
  assert_true(r.accepted > 0);
  assert_true(r.refused > 0);
  assert_int_equal(fx->disconnected, 1);
  assert_int_equal(fx->last_code, CPORT_ESENDQ);
  if (grown >= 64)
    fail_msg(
        "%ld sends accepted, %ld refused with CPORT_ESENDQ and %ld with "
        "UV_ENOTCONN left %ld more live blocks (want fewer than 64)",
        r.accepted, r.refused, r.notconn, grown);
}


/* A session counts its uv_writes in flight, and 65536 of them once wrapped
 * a 16-bit counter to 0: one stuck write plus 65535 more of
 * SESSION_GATHER_MAX (64) queued sends each, which a graceful disconnect
 * hands to libuv at once. A few requests more or less change how many
 * writes there are, so the count is exact. */
#define WRAP_GATHER 64
#define WRAP_SENDS ((long)65535 * WRAP_GATHER)

/* Over a GiB of requests (1.2 GiB peak in the plain build), 1.7 GiB and
 * 10 s just to queue them under ASan, 3.9 GiB and close to a minute under
 * TSan: the plain build runs it. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define AUDIT_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define AUDIT_SANITIZED 1
#endif
#endif

#ifndef AUDIT_SANITIZED
typedef struct byte_sender_s {
  cport_session_t* s;
  long calls;
  long failed;
  int last_error;
} byte_sender_t;


static int pred_int_at_least_one(void* arg) {
  return *(const int*)arg >= 1;
}


static void byte_sender_main(void* arg) {
  byte_sender_t* b = arg;
  long i;
  for (i = 0; i < b->calls; i++) {
    int rc = cport_session_send(b->s, "w", 1);
    if (rc != 0) {
      b->failed++;
      b->last_error = rc;
    }
  }
}


/* service.h, disconnect_timeout_ms: "A graceful disconnect ... whose queued
 * bytes have not all been written after this many milliseconds, because the
 * peer does not read, is closed at once; its code stays the disconnect's
 * own". It must hold however many sends are queued: here enough one-byte
 * sends behind a stuck write (sent from another thread, which costs the
 * least memory per request) that the disconnect's flush puts 65536
 * uv_writes in flight. on_disconnected must follow, with CPORT_ELOCAL. */
static void test_audit_disconnect_timeout_holds_behind_65536_writes(
    void** state) {
  fixture_t* fx = *state;
  byte_sender_t b;
  uv_thread_t t;
  cport_session_t* s;
  peer_t* p;
  uint64_t start;
  uint64_t sent_ms;
  uint64_t ended_ms;
  int ended;
  FIXTURE_SKIP_UNDER_WINE(FIXTURE_WINE_DRAINS_STUCK_WRITES);
  fx->mode = RECV_CONSUME;
  fx->opts.send_queue_limit = 2 * FIXTURE_STUCK_BYTES +
                              (size_t)WRAP_SENDS * cport__send_req_cost(1, 0, 0);
  fx->opts.disconnect_timeout_ms = 100;
  fixture_start_server(fx);
  p = fixture_connect_stuck_peer(fx);
  s = fx->last_server;
  cport_session_ref(s);
  assert_true(cport_session_queued_bytes(s) > 0);
  start = uv_hrtime();
  memset(&b, 0, sizeof(b));
  b.s = s;
  b.calls = WRAP_SENDS;
  assert_int_equal(uv_thread_create(&t, byte_sender_main, &b), 0);
  assert_int_equal(uv_thread_join(&t), 0);
  assert_int_equal(b.failed, 0);
  /* The loop takes them all behind the stuck write, then disconnects. */
  cport_core_dispatch(fx->core, 0, 0);
  sent_ms = (uv_hrtime() - start) / 1000000u;
  assert_int_equal(cport_session_disconnect(s, "wrap"), 0);
  ended = fixture_run_until(fx, pred_int_at_least_one, &fx->disconnected,
                            2 * FIXTURE_TIMEOUT_MS);
  ended_ms = (uv_hrtime() - start) / 1000000u;
  print_message("%ld sends queued in %llu ms; %s after %llu ms\n", WRAP_SENDS,
                (unsigned long long)sent_ms,
                ended ? "on_disconnected" : "still waiting",
                (unsigned long long)ended_ms);
  /* Gone either way: the peer's close fails the stuck writes. */
  peer_destroy(p);
  fixture_wait_int(fx, &fx->disconnected, 1, FIXTURE_TIMEOUT_MS);
  cport_session_unref(s);
  if (!ended)
    fail_msg(
        "no on_disconnected %d ms after a disconnect with "
        "disconnect_timeout_ms 100 and %ld queued sends",
        2 * FIXTURE_TIMEOUT_MS, WRAP_SENDS);
  assert_int_equal(fx->last_code, CPORT_ELOCAL);
}
#else
/* Its own function, because cmocka 2's skip() does not return: code after it
 * is unreachable (MSVC C4702). */
static void test_audit_disconnect_timeout_holds_behind_65536_writes(
    void** state) {
  (void)state;
  print_message(
      "skipped in sanitizer builds: %ld queued requests take 1.7 GiB (ASan) "
      "to 3.9 GiB (TSan) and tens of seconds there; the plain build runs "
      "it\n",
      WRAP_SENDS);
  skip();
}
#endif


typedef struct held_s {
  cport_session_t* s; /* referenced in on_connected */
  int connected;
  int disconnected;
} held_t;


static void held_connected(cport_session_t* s) {
  held_t* h = cport_service_get_data(cport_session_service(s));
  cport_session_ref(s);
  h->s = s;
  h->connected++;
}


static void held_disconnected(cport_session_t* s, int code, const char* cause) {
  held_t* h = cport_service_get_data(cport_session_service(s));
  (void)code;
  (void)cause;
  h->disconnected++;
}


/* session.h, "Lifetime: a session's memory, including its user area, lives
 * while anyone holds a reference", and its functions for a session whose
 * on_disconnected has run. A reference taken in on_connected and held past
 * cport_service_destroy() and cport_core_destroy() (services first, as
 * core.h asks): the session still answers, without touching the core's
 * memory: sends UV_ENOTCONN, disconnect 0, not connected, the loop index
 * and id it had, its user area readable and writable, nothing queued; and
 * the last cport_session_unref() frees everything (the allocation count
 * returns to what it was before the core was created). */
static void test_audit_session_reference_outlives_the_core(void** state) {
  fixture_t* fx = *state; /* its loop runs the peer */
  cport_core_opts_t copts;
  cport_service_opts_t o;
  cport_core_t* core = NULL;
  cport_service_t* svc = NULL;
  cport_addr_t addr;
  cport_buf_t* buf;
  held_t h;
  peer_t* p;
  uint64_t id;
  uint64_t id_after;
  char* user;
  char kept[32];
  long baseline;
  int i;
  int send_rc;
  int send_buf_rc;
  int disconnect_rc;
  int connected;
  unsigned port;
  size_t queued;
  long live;
  baseline = cport__mem_live();
  memset(&h, 0, sizeof(h));
  cport_core_opts_init(&copts);
  copts.loops = 2;
  assert_int_equal(cport_core_create(&core, &copts), 0);
  cport_service_opts_init(&o);
  o.cbs.on_connected = held_connected;
  o.cbs.on_disconnected = held_disconnected;
  o.user_size = sizeof(kept);
  o.loop = 1;
  o.spread = 0;
  o.data = &h;
  assert_int_equal(cport_addr_parse(&addr, "127.0.0.1", 0), 0);
  assert_int_equal(
      cport_service_create(&svc, core, CPORT_SERVICE_SERVER, &addr, &o), 0);
  assert_int_equal(cport_service_start(svc), 0);
  assert_int_equal(cport_service_local_addr(svc, &addr), 0);
  p = peer_connect(fx, &addr, 0);
  for (i = 0; i < 1000 && h.connected == 0; i++)
    cport_core_dispatch(core, 1, 10);
  assert_int_equal(h.connected, 1);
  id = cport_session_id(h.s);
  assert_int_equal(cport_session_loop(h.s), 1);
  user = cport_session_user(h.s);
  assert_non_null(user);
  strcpy(user, "kept");

  cport_service_destroy(svc);
  cport_core_destroy(core);

  /* Everything is asked first and checked after the clean-up, so that a
   * failure leaves nothing open behind it. */
  assert_int_equal(cport_buf_from(&buf, "late", 4), 0);
  send_rc = cport_session_send(h.s, "late", 4);
  send_buf_rc = cport_session_send_buf(h.s, buf);
  disconnect_rc = cport_session_disconnect(h.s, "late");
  connected = cport_session_is_connected(h.s);
  port = cport_session_loop(h.s);
  id_after = cport_session_id(h.s);
  user = cport_session_user(h.s);
  kept[0] = '\0';
  if (user != NULL) {
    memcpy(kept, user, sizeof(kept)); /* the whole user area */
    kept[sizeof(kept) - 1] = '\0';
    strcpy(user, "still mine");
  }
  queued = cport_session_queued_bytes(h.s);
  cport_buf_unref(buf);
  cport_session_unref(h.s);
  live = cport__mem_live();
  peer_destroy(p);
  assert_int_equal(h.disconnected, 1);
  assert_int_equal(send_rc, UV_ENOTCONN);
  assert_int_equal(send_buf_rc, UV_ENOTCONN);
  assert_int_equal(disconnect_rc, 0);
  assert_false(connected);
  assert_int_equal(port, 1);
  assert_int_equal(id_after, id);
  assert_non_null(user);
  assert_string_equal(kept, "kept");
  assert_int_equal(queued, 0);
  assert_int_equal(live, baseline);
}


/* ---- the PROXY protocol ---- */

/* A v1 header for `src`..`dst` into `buf`; returns its length. */
static size_t proxy_v1(char* buf, size_t size, const char* line) {
  int n = snprintf(buf, size, "%s", line);
  assert_true(n > 0 && (size_t)n < size);
  return (size_t)n;
}


static void assert_addr_text(const cport_addr_t* a, const char* want) {
  char text[CPORT_ADDR_STRLEN];
  assert_int_equal(cport_addr_format(a, text, sizeof(text)), 0);
  assert_string_equal(text, want);
}


static void test_session_proxy_v1_gives_the_client_address(void** state) {
  fixture_t* fx = *state;
  char buf[256];
  size_t n;
  cport_addr_t a;
  cport_proxy_header_t h;
  cport_service_stats_t st;
  peer_t* p;
  fx->opts.proxy_protocol = CPORT_PROXY_ANY;
  fixture_start_server(fx);
  p = peer_connect(fx, &fx->server_addr, 0);
  /* The header and the first bytes in one segment: the bytes go on to
   * on_recv once the session is up, the header never does. */
  n = proxy_v1(buf, sizeof(buf),
               "PROXY TCP4 203.0.113.7 198.51.100.1 4242 443\r\nhello");
  peer_write(p, buf, n);
  fixture_wait_size(fx, &p->received.len, 5, FIXTURE_TIMEOUT_MS);
  assert_memory_equal(p->received.data, "hello", 5);
  assert_int_equal(fx->connected, 1);
  assert_int_equal(cport_session_peer_addr(fx->last_server, &a), 0);
  assert_addr_text(&a, "203.0.113.7:4242");
  assert_int_equal(cport_session_local_addr(fx->last_server, &a), 0);
  assert_addr_text(&a, "198.51.100.1:443");
  assert_int_equal(cport_session_proxy_addr(fx->last_server, &a), 0);
  assert_int_equal(cport_addr_family(&a), 4);
  assert_string_equal(cport_addr_format_host(&a, buf, sizeof(buf)) == 0
                          ? buf
                          : "?",
                      "127.0.0.1");
  assert_int_equal(cport_session_proxy(fx->last_server, &h), 0);
  assert_int_equal(h.version, 1);
  assert_int_equal(h.local, 0);
  assert_int_equal(h.tlvs_len, 0);
  assert_int_equal(cport_service_stats(fx->server, &st), 0);
  assert_int_equal(st.proxy_headers, 1);
  assert_int_equal(st.bytes_in, 5); /* the header is not the application's */
  peer_destroy(p);
}


/* A v2 PROXY header for IPv6 with `tlv_bytes` of TLVs: an authority, a
 * unique id, then NOOP padding. Returns its length. */
static size_t proxy_v2_with_tlvs(uint8_t* b, size_t tlv_bytes) {
  static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                  0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
  size_t len = 36 + tlv_bytes;
  size_t at = 16;
  size_t i;
  memcpy(b, sig, 12);
  b[12] = 0x21; /* v2, PROXY */
  b[13] = 0x21; /* TCP over IPv6 */
  b[14] = (uint8_t)(len >> 8);
  b[15] = (uint8_t)len;
  memset(b + at, 0, 32);
  b[at + 0] = 0x20; /* 2001:db8::5 */
  b[at + 1] = 0x01;
  b[at + 2] = 0x0d;
  b[at + 3] = 0xb8;
  b[at + 15] = 0x05;
  b[at + 16 + 15] = 0x01; /* ::1 */
  b[at + 32] = 0x1f;      /* port 8080 */
  b[at + 33] = 0x90;
  b[at + 34] = 0x01;      /* port 443 */
  b[at + 35] = 0xbb;
  at += 36;
  memcpy(b + at, "\x02\x00\x0b" "example.org", 14);
  at += 14;
  memcpy(b + at, "\x05\x00\x04" "id42", 7);
  at += 7;
  assert_true(tlv_bytes >= 21 + 3);
  i = tlv_bytes - 21 - 3;
  b[at++] = 0x04; /* NOOP over the rest */
  b[at++] = (uint8_t)(i >> 8);
  b[at++] = (uint8_t)i;
  memset(b + at, 0, i);
  return 16 + len;
}


static void test_session_proxy_v2_split_byte_by_byte_with_tlvs(
    void** state) {
  fixture_t* fx = *state;
  uint8_t hdr[512];
  size_t n = proxy_v2_with_tlvs(hdr, 200);
  size_t i;
  const uint8_t* v;
  size_t vlen;
  cport_addr_t a;
  cport_proxy_header_t h;
  peer_t* p;
  fx->opts.proxy_protocol = CPORT_PROXY_V2;
  fixture_start_server(fx);
  p = peer_connect(fx, &fx->server_addr, 0);
  for (i = 0; i < n; i++) {
    peer_write(p, hdr + i, 1);
    fixture_wait_size(fx, &p->written, i + 1, FIXTURE_TIMEOUT_MS);
    cport_core_dispatch(fx->core, 0, 0);
    /* Nothing is reported before the header's last byte. */
    if (i + 1 < n)
      assert_int_equal(fx->connected, 0);
  }
  fixture_wait_int(fx, &fx->connected, 1, FIXTURE_TIMEOUT_MS);
  peer_write(p, "x", 1);
  fixture_wait_size(fx, &p->received.len, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(rec_of(fx->last_server)->received.len, 1);
  assert_int_equal(cport_session_peer_addr(fx->last_server, &a), 0);
  assert_addr_text(&a, "[2001:db8::5]:8080");
  assert_int_equal(cport_session_proxy(fx->last_server, &h), 0);
  assert_int_equal(h.version, 2);
  assert_int_equal(h.tlvs_len, 200);
  assert_int_equal(cport_proxy_tlv(&h, CPORT_PROXY_TLV_AUTHORITY, &v, &vlen),
                   0);
  assert_int_equal(vlen, 11);
  assert_memory_equal(v, "example.org", 11);
  assert_int_equal(cport_proxy_tlv(&h, CPORT_PROXY_TLV_UNIQUE_ID, &v, &vlen),
                   0);
  assert_memory_equal(v, "id42", 4);
  peer_destroy(p);
}


static int pred_peer_gone(void* arg) {
  peer_t* p = arg;
  return p->eof || p->error != 0;
}


/* The peer sends `bytes` and must be closed without a session. */
static void proxy_refused(fixture_t* fx,
                          const void* bytes,
                          size_t len,
                          uint64_t* counter_of_stats) {
  cport_service_stats_t st;
  peer_t* p = peer_connect(fx, &fx->server_addr, 0);
  if (len > 0)
    peer_write(p, bytes, len);
  assert_true(fixture_run_until(fx, pred_peer_gone, p, FIXTURE_TIMEOUT_MS));
  assert_int_equal(fx->connected, 0);
  assert_int_equal(cport_service_stats(fx->server, &st), 0);
  assert_int_equal(st.bytes_in, 0);
  *counter_of_stats = st.proxy_errors + 1000 * st.proxy_untrusted;
  peer_destroy(p);
}


static void test_session_proxy_refuses_hostile_headers(void** state) {
  fixture_t* fx = *state;
  static const uint8_t huge[16] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
                                   0x21, 0x11, 0xFF, 0xFF};
  char no_crlf[200];
  uint64_t count = 0;
  fx->opts.proxy_protocol = CPORT_PROXY_ANY;
  fixture_start_server(fx);
  /* Plain TCP on a PROXY service: refused at its first bytes. */
  proxy_refused(fx, "GET / HTTP/1.1\r\n\r\n", 18, &count);
  assert_int_equal(count, 1);
  /* A v2 header that claims 64 KiB: refused at its 16th byte, without
   * waiting for a body that never comes. */
  proxy_refused(fx, huge, sizeof(huge), &count);
  assert_int_equal(count, 2);
  /* A v1 line without CRLF in its 107 bytes. */
  memset(no_crlf, 'A', sizeof(no_crlf));
  memcpy(no_crlf, "PROXY TCP4 ", 11);
  proxy_refused(fx, no_crlf, sizeof(no_crlf), &count);
  assert_int_equal(count, 3);
  /* A TLS ClientHello's first bytes where a header must be. */
  proxy_refused(fx, "\x16\x03\x01\x02\x00\x01", 6, &count);
  assert_int_equal(count, 4);
}


static void test_session_proxy_header_has_its_own_timeout(void** state) {
  fixture_t* fx = *state;
  uint64_t count = 0;
  fx->opts.proxy_protocol = CPORT_PROXY_V1;
  fx->opts.proxy_timeout_ms = 50;
  fixture_start_server(fx);
  proxy_refused(fx, "PROXY TCP4 ", 11, &count); /* and then nothing */
  assert_int_equal(count, 1);
  proxy_refused(fx, NULL, 0, &count); /* nothing at all */
  assert_int_equal(count, 2);
}


static void test_session_proxy_refuses_untrusted_sources(void** state) {
  fixture_t* fx = *state;
  uint64_t count = 0;
  char buf[128];
  size_t n = proxy_v1(buf, sizeof(buf),
                      "PROXY TCP4 203.0.113.7 198.51.100.1 4242 443\r\n");
  fx->opts.proxy_protocol = CPORT_PROXY_V1;
  fx->opts.proxy_trusted = "10.0.0.0/8, fd00::/8";
  fixture_start_server(fx);
  proxy_refused(fx, buf, n, &count);
  assert_int_equal(count, 1000);
}


static void test_session_proxy_local_keeps_the_real_endpoints(void** state) {
  fixture_t* fx = *state;
  static const uint8_t local[16] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                    0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
                                    0x20, 0x00, 0x00, 0x00};
  cport_proxy_header_t h;
  cport_addr_t a;
  cport_addr_t via;
  peer_t* p;
  fx->opts.proxy_protocol = CPORT_PROXY_V2;
  fx->opts.proxy_trusted = "127.0.0.0/8";
  fixture_start_server(fx);
  p = peer_connect(fx, &fx->server_addr, 0);
  peer_write(p, local, sizeof(local));
  fixture_wait_int(fx, &fx->connected, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(cport_session_proxy(fx->last_server, &h), 0);
  assert_int_equal(h.local, 1);
  assert_int_equal(cport_session_peer_addr(fx->last_server, &a), 0);
  assert_int_equal(cport_session_proxy_addr(fx->last_server, &via), 0);
  assert_int_equal(cport_addr_port(&a), cport_addr_port(&via));
  assert_int_equal(cport_session_local_addr(fx->last_server, &a), 0);
  assert_int_equal(cport_addr_port(&a), cport_addr_port(&fx->server_addr));
  peer_destroy(p);
}


static void test_session_proxy_send_from_a_client(void** state) {
  fixture_t* fx = *state;
  cport_addr_t client_side;
  cport_addr_t server_side;
  cport_proxy_header_t h;
  int v;
  for (v = CPORT_PROXY_V1; v <= CPORT_PROXY_V2; v++) {
    fx->opts.proxy_protocol = (cport_proxy_t)v;
    fx->opts.proxy_send = CPORT_PROXY_OFF;
    fixture_start_server(fx);
    fx->opts.proxy_protocol = CPORT_PROXY_OFF;
    fx->opts.proxy_send = (cport_proxy_t)v;
    fixture_start_client(fx, &fx->server_addr, 1);
    fixture_wait_int(fx, &fx->connected, 2 * v, FIXTURE_TIMEOUT_MS);
    assert_int_equal(cport_session_send(fx->last_client, "ping", 4), 0);
    fixture_wait_size(fx, &rec_of(fx->last_client)->received.len, 4,
                      FIXTURE_TIMEOUT_MS);
    /* The header named the client's own endpoints. */
    assert_int_equal(cport_session_proxy(fx->last_server, &h), 0);
    assert_int_equal(h.version, v);
    assert_int_equal(cport_session_local_addr(fx->last_client, &client_side),
                     0);
    assert_int_equal(cport_session_peer_addr(fx->last_server, &server_side), 0);
    assert_int_equal(cport_addr_port(&client_side),
                     cport_addr_port(&server_side));
    fixture_stop_service(fx, fx->client, 1000);
    fixture_stop_service(fx, fx->server, 1000);
    cport_service_destroy(fx->client);
    cport_service_destroy(fx->server);
    fx->client = NULL;
    fx->server = NULL;
  }
}


static void test_session_proxy_options_are_checked(void** state) {
  fixture_t* fx = *state;
  cport_service_opts_t o;
  cport_service_t* svc = NULL;
  cport_addr_t addr;
  (void)fx;
  assert_int_equal(cport_addr_parse(&addr, "127.0.0.1", 0), 0);
  cport_service_opts_init(&o);
  assert_int_equal(o.proxy_protocol, CPORT_PROXY_OFF);
  assert_int_equal(o.proxy_timeout_ms, 3000);
  o.proxy_protocol = (cport_proxy_t)4;
  assert_int_equal(cport_service_create(&svc, fx->core, CPORT_SERVICE_SERVER,
                                        &addr, &o),
                   UV_EINVAL);
  o.proxy_protocol = CPORT_PROXY_V1;
  o.proxy_trusted = "10.0.0.0/33";
  assert_int_equal(cport_service_create(&svc, fx->core, CPORT_SERVICE_SERVER,
                                        &addr, &o),
                   UV_EINVAL);
  o.proxy_trusted = "10.0.0.0/8";
  o.proxy_max_header = 15;
  assert_int_equal(cport_service_create(&svc, fx->core, CPORT_SERVICE_SERVER,
                                        &addr, &o),
                   UV_EINVAL);
  o.proxy_max_header = 4096;
  assert_int_equal(cport_service_create(&svc, fx->core, CPORT_SERVICE_CLIENT,
                                        &addr, &o),
                   UV_EINVAL); /* clients do not read headers */
  cport_service_opts_init(&o);
  o.proxy_send = CPORT_PROXY_ANY;
  assert_int_equal(cport_service_create(&svc, fx->core, CPORT_SERVICE_CLIENT,
                                        &addr, &o),
                   UV_EINVAL); /* ANY is no version to send */
  o.proxy_send = CPORT_PROXY_V2;
  assert_int_equal(cport_service_create(&svc, fx->core, CPORT_SERVICE_SERVER,
                                        &addr, &o),
                   UV_EINVAL);
  o.proxy_send = CPORT_PROXY_OFF;
  o.proxy_trusted = "127.0.0.1"; /* without proxy_protocol: a mistake */
  assert_int_equal(cport_service_create(&svc, fx->core, CPORT_SERVICE_SERVER,
                                        &addr, &o),
                   UV_EINVAL);
  assert_null(svc);
}


/* Another thread reads the PROXY facts and the drain state while the loop
 * serves the session and drains the service (TSan watches). */
typedef struct proxy_reader_s {
  cport_session_t* s;
  cport_service_t* svc;
  atomic_int stop;
  atomic_int reads;
  atomic_int wrong;
  atomic_int saw_draining;
} proxy_reader_t;

static void proxy_reader_main(void* arg) {
  proxy_reader_t* r = arg;
  uint64_t deadline = uv_hrtime() + (uint64_t)FIXTURE_TIMEOUT_MS * 1000000u;
  while (!atomic_load(&r->stop) && uv_hrtime() < deadline) {
    cport_proxy_header_t h;
    cport_addr_t a;
    const uint8_t* v;
    size_t len;
    if (cport_session_proxy(r->s, &h) != 0 || h.version != 2 ||
        cport_proxy_tlv(&h, CPORT_PROXY_TLV_AUTHORITY, &v, &len) != 0 ||
        len != 11 || memcmp(v, "example.org", 11) != 0 ||
        cport_session_peer_addr(r->s, &a) != 0 ||
        cport_addr_port(&a) != 8080 ||
        cport_session_proxy_addr(r->s, &a) != 0 || cport_addr_family(&a) != 4)
      atomic_fetch_add(&r->wrong, 1);
    if (cport_service_is_draining(r->svc))
      atomic_store(&r->saw_draining, 1);
    atomic_fetch_add(&r->reads, 1);
  }
}


static int pred_reader_saw_draining(void* arg) {
  proxy_reader_t* r = arg;
  return atomic_load(&r->saw_draining) && atomic_load(&r->reads) > 100;
}


static void test_session_proxy_facts_read_from_any_thread(void** state) {
  fixture_t* fx = *state;
  uint8_t hdr[512];
  size_t n = proxy_v2_with_tlvs(hdr, 200);
  proxy_reader_t r;
  uv_thread_t thread;
  peer_t* p;
  int i;
  fx->opts.proxy_protocol = CPORT_PROXY_V2;
  fixture_start_server(fx);
  p = peer_connect(fx, &fx->server_addr, 0);
  peer_write(p, hdr, n);
  fixture_wait_int(fx, &fx->connected, 1, FIXTURE_TIMEOUT_MS);
  memset(&r, 0, sizeof(r));
  r.s = fx->last_server;
  r.svc = fx->server;
  cport_session_ref(r.s); /* the thread's */
  assert_int_equal(uv_thread_create(&thread, proxy_reader_main, &r), 0);
  for (i = 0; i < 20; i++) {
    peer_write(p, "ping", 4);
    fixture_wait_size(fx, &p->received.len, (size_t)(i + 1) * 4,
                      FIXTURE_TIMEOUT_MS);
  }
  assert_int_equal(cport_service_drain(fx->server, 60000, NULL), 0);
  assert_true(
      fixture_run_until(fx, pred_reader_saw_draining, &r, FIXTURE_TIMEOUT_MS));
  atomic_store(&r.stop, 1);
  assert_int_equal(uv_thread_join(&thread), 0);
  assert_int_equal(atomic_load(&r.wrong), 0);
  cport_session_unref(r.s);
  peer_destroy(p);
}


int main(int argc, char** argv) {
  const struct CMUnitTest tests[] = {
#define T FIXTURE_TEST
      T(test_session_echo_roundtrip),
      T(test_session_proxy_v1_gives_the_client_address),
      T(test_session_proxy_v2_split_byte_by_byte_with_tlvs),
      T(test_session_proxy_refuses_hostile_headers),
      T(test_session_proxy_header_has_its_own_timeout),
      T(test_session_proxy_refuses_untrusted_sources),
      T(test_session_proxy_local_keeps_the_real_endpoints),
      T(test_session_proxy_send_from_a_client),
      T(test_session_proxy_options_are_checked),
      T(test_session_proxy_facts_read_from_any_thread),
      T(test_session_echo_through_client_service),
      T(test_session_partial_consumption_presents_rest_first),
      T(test_session_idle_session_holds_no_receive_buffer),
      T(test_session_8mib_payload_is_byte_exact),
      T(test_session_big_send_outside_on_recv_keeps_reading),
      T(test_session_disconnected_once_when_peer_closes),
      T(test_session_disconnected_once_when_peer_resets),
      T(test_session_disconnected_once_on_local_disconnect),
      T(test_session_disconnect_twice_in_a_row_reports_once),
      T(test_session_half_close_gets_every_byte_back),
      T(test_session_disconnect_flushes_queued_sends),
      T(test_session_full_receive_buffer_ends_session),
      T(test_session_leftover_growing_to_limit_ends_session),
      T(test_session_overconsuming_on_recv_ends_session),
      T(test_session_peer_that_never_reads_is_paused),
      T(test_session_direct_echo_of_unread_peer_is_paused_and_exact),
      T(test_session_kept_bytes_presented_again_when_reading_resumes),
      T(test_session_slow_reader_disconnected_under_disconnect_policy),
      T(test_session_send_queue_disconnect_resets_the_peer),
      T(test_session_idle_with_bytes_the_peer_never_reads_is_reset),
      T(test_session_writing_to_vanished_peer_is_an_error_not_a_signal),
      T(test_session_send_rejects_invalid_arguments),
      T(test_session_send_out_of_memory_fails_cleanly),
      T(test_session_reference_outlives_disconnect),
      T(test_session_peer_addr_matches_peer),
      T(test_session_killed_peer_process_frees_session),
      T(test_session_idle_session_is_small),
      T(test_session_warm_direct_sends_allocate_nothing),
      T(test_session_sends_behind_a_write_leave_gathered_in_order),
      T(test_session_request_pool_keeps_a_bounded_amount),
      T(test_session_reset_drops_queued_sends_without_leaks),
      T(test_session_disconnect_flushes_gathered_sends),
      T(test_session_tcp_nodelay_follows_the_option),
      T(test_session_tcp_keepalive_follows_the_option),
      T(test_session_sends_from_8_threads_keep_each_threads_order),
      T(test_session_send_on_loop_follows_earlier_send_from_afar),
      T(test_session_disconnect_from_afar_flushes_earlier_sends),
      T(test_session_stop_flushes_sends_waiting_in_the_mailbox),
      T(test_session_peer_gone_before_start_is_never_half_reported),
      T(test_session_send_limit_from_afar_follows_the_policy),
      T(test_session_disconnect_races_sends_from_threads),
      T(test_session_send_buf_from_any_thread_keeps_the_buffer_alive),
      T(test_session_send_buf_direct_write_and_refusals),
      T(test_audit_session_queries_from_any_thread_do_not_race),
      T(test_audit_send_after_disconnect_from_afar_is_refused),
      T(test_audit_refused_sends_from_afar_keep_memory_bounded),
      T(test_audit_disconnect_timeout_holds_behind_65536_writes),
      T(test_audit_session_reference_outlives_the_core),
      T(test_session_send_queue_limit_bounds_memory),
#undef T
  };
  if (argc == 3 && strcmp(argv[1], "--child-sender") == 0)
    return child_sender_main(argv[2]);
  return cmocka_run_group_tests_name("session", tests, NULL, NULL);
}
