/* Timeouts against the clock: a stop's deadline, the idle timeout and what
 * counts as activity. Each test makes the loop's cached time lag (a long
 * callback, or a long stretch of work between dispatches, as an application
 * that embeds the loop has) and checks that no timeout ends early because
 * of it: every bound asserted here is a lower one, which a loaded machine
 * can only make easier to meet. */
#include "fixture.h"

#include <stdlib.h>
#include <string.h>

#include "session_internal.h" /* cport__session_handle: the kernel's buffers */

/* Work for `ms` milliseconds without returning to the loop. */
static void busy(unsigned ms) {
  uint64_t end = uv_hrtime() + (uint64_t)ms * 1000000u;
  while (uv_hrtime() < end) {
  }
}


/* ---- the stop deadline ---- */

static uint64_t stopped_at_ns;
static int stopped_calls;

static void stamp_stopped(cport_service_t* svc) {
  (void)svc;
  stopped_at_ns = uv_hrtime();
  stopped_calls++;
}

/* A stop made after a long stretch of work gives flushing sessions the
 * whole deadline, counted from the call: the loop's cached time, 600 ms
 * old by then, would end them 400 ms after it. */
static void test_timeouts_stop_deadline_counts_from_the_call(void** state) {
  fixture_t* fx = *state;
  uint64_t called_ns;
  peer_t* p;
  FIXTURE_SKIP_UNDER_WINE(FIXTURE_WINE_DRAINS_STUCK_WRITES);
  fx->opts.send_queue_limit = 2 * FIXTURE_STUCK_BYTES;
  fixture_start_server(fx);
  p = fixture_connect_stuck_peer(fx);
  stopped_calls = 0;
  busy(600);
  called_ns = uv_hrtime();
  assert_int_equal(cport_service_stop(fx->server, 1000, stamp_stopped), 0);
  fixture_wait_int(fx, &stopped_calls, 1, 4 * FIXTURE_TIMEOUT_MS);
  assert_int_equal(fx->disconnected, 1);
  assert_int_equal(fx->last_code, CPORT_ESTOPPED);
  print_message("stop: sessions cut %llu ms after the call (deadline 1000)\n",
                (unsigned long long)((stopped_at_ns - called_ns) / 1000000u));
  /* 1 ms for the millisecond rounding of libuv's timers. */
  assert_true((stopped_at_ns - called_ns) / 1000000u >= 999);
  peer_destroy(p);
}


/* ---- the idle timeout ---- */

typedef struct idle_rec_s {
  uint64_t recv_ns; /* last on_recv */
  uint64_t end_ns;  /* on_disconnected */
  int code;
} idle_rec_t;

static int idle_connected;
static int idle_ended;
static int idle_busy_ms; /* the next on_recv works this long */

static void idle_on_connected(cport_session_t* s) {
  (void)s;
  idle_connected++;
}

static size_t idle_on_recv(cport_session_t* s,
                           const uint8_t* data,
                           size_t len) {
  idle_rec_t* r = cport_session_user(s);
  (void)data;
  r->recv_ns = uv_hrtime();
  if (idle_busy_ms > 0) {
    busy((unsigned)idle_busy_ms);
    idle_busy_ms = 0;
  }
  return len;
}

static void idle_on_disconnected(cport_session_t* s,
                                 int code,
                                 const char* cause) {
  idle_rec_t* r = cport_session_user(s);
  (void)cause;
  r->end_ns = uv_hrtime();
  r->code = code;
  idle_ended++;
}

static cport_session_t* idle_sessions[2];
static int idle_collect(cport_session_t* s, void* arg) {
  int* n = arg;
  if (*n < 2) {
    cport_session_ref(s);
    idle_sessions[(*n)++] = s;
  }
  return 0;
}

/* Two sessions receive a byte in the same loop round; the first one's
 * on_recv works 250 ms. The second received its byte 250 ms after the
 * round began, and its 300 ms idle timeout counts from then: stamped with
 * the round's cached time, it ended 50 ms after its byte. */
static void test_timeouts_idle_counts_from_the_read_not_the_round(
    void** state) {
  fixture_t* fx = *state;
  cport_service_opts_t o;
  cport_addr_t addr;
  peer_t* a;
  peer_t* b;
  int n = 0;
  int i;
  cport_service_opts_init(&o);
  o.cbs.on_connected = idle_on_connected;
  o.cbs.on_recv = idle_on_recv;
  o.cbs.on_disconnected = idle_on_disconnected;
  o.user_size = sizeof(idle_rec_t);
  o.idle_timeout_ms = 300;
  idle_connected = idle_ended = 0;
  idle_busy_ms = 0;
  fx->server = fixture_create_service(fx, CPORT_SERVICE_SERVER, "127.0.0.1", &o);
  assert_int_equal(cport_service_start(fx->server), 0);
  assert_int_equal(cport_service_local_addr(fx->server, &addr), 0);
  a = peer_connect(fx, &addr, 0);
  b = peer_connect(fx, &addr, 0);
  fixture_wait_int(fx, &idle_connected, 2, FIXTURE_TIMEOUT_MS);
  assert_int_equal(cport_service_foreach(fx->server, idle_collect, &n), 0);
  assert_int_equal(n, 2);
  /* Both bytes are in the server's socket buffers before the loop runs
   * again (a loopback write completes in the call), so one poll returns
   * both sessions. */
  idle_busy_ms = 250;
  peer_write(a, "a", 1);
  peer_write(b, "b", 1);
  fixture_wait_int(fx, &idle_ended, 2, FIXTURE_TIMEOUT_MS);
  for (i = 0; i < 2; i++) {
    idle_rec_t* r = cport_session_user(idle_sessions[i]);
    assert_int_equal(r->code, CPORT_EIDLE);
    assert_true(r->recv_ns != 0);
    print_message("idle: session %d ended %llu ms after its byte (300)\n", i,
                  (unsigned long long)((r->end_ns - r->recv_ns) / 1000000u));
    /* 1 ms for the rounding of the clock to milliseconds. */
    assert_true((r->end_ns - r->recv_ns) / 1000000u >= 299);
    cport_session_unref(idle_sessions[i]);
  }
  peer_destroy(a);
  peer_destroy(b);
}


/* A reader that takes `chunk` bytes every `every_ms`, written against raw
 * libuv: the peer of an echo that cport pauses for its send queue. */
typedef struct slow_reader_s {
  uv_tcp_t tcp;
  uv_connect_t connect;
  uv_write_t write;
  uv_timer_t timer;
  uint8_t* out;
  size_t out_len;
  uint8_t buf[4096];
  size_t chunk;
  int connected;
  int reading;
  int fast; /* read everything from now on */
  int eof;
  int error;
  int closed;
  size_t received;
  size_t mismatch; /* bytes that were not what was sent */
} slow_reader_t;

static void slow_alloc_cb(uv_handle_t* h, size_t suggested, uv_buf_t* buf) {
  slow_reader_t* r = h->data;
  (void)suggested;
  buf->base = (char*)r->buf;
  buf->len = (unsigned int)(r->fast ? sizeof(r->buf) : r->chunk);
}

static void slow_read_cb(uv_stream_t* st, ssize_t n, const uv_buf_t* buf) {
  slow_reader_t* r = st->data;
  ssize_t i;
  if (n < 0) {
    if (n == UV_EOF)
      r->eof = 1;
    else
      r->error = (int)n;
    uv_read_stop(st);
    r->reading = 0;
    return;
  }
  for (i = 0; i < n; i++)
    if (r->received + (size_t)i >= r->out_len ||
        (uint8_t)buf->base[i] != r->out[r->received + (size_t)i])
      r->mismatch++;
  r->received += (size_t)n;
  /* One read per tick until told to hurry. */
  if (!r->fast && n > 0) {
    uv_read_stop(st);
    r->reading = 0;
  }
}

static void slow_tick_cb(uv_timer_t* t) {
  slow_reader_t* r = t->data;
  if (!r->reading && !r->eof && r->error == 0) {
    r->reading = 1;
    (void)uv_read_start((uv_stream_t*)&r->tcp, slow_alloc_cb, slow_read_cb);
  }
}

static void slow_connect_cb(uv_connect_t* req, int status) {
  slow_reader_t* r = req->handle->data;
  assert_int_equal(status, 0);
  r->connected = 1;
}

static void slow_write_cb(uv_write_t* req, int status) {
  (void)req;
  (void)status;
}

static void slow_close_cb(uv_handle_t* h) {
  slow_reader_t* r = h->data;
  r->closed++;
}

/* An echo server paused by its own send queue while its peer keeps reading
 * (slowly) receives nothing, but is not idle: its writes make progress.
 * Only silence in both directions ends a session for idleness. */
static void test_timeouts_paused_echo_with_a_reading_peer_is_not_idle(
    void** state) {
  fixture_t* fx = *state;
  const size_t total = 1024 * 1024;
  const size_t checkpoint = 256 * 1024;
  slow_reader_t* r = calloc(1, sizeof(*r));
  cport_service_stats_t st;
  uv_buf_t buf;
  assert_non_null(r);
  fx->mode = RECV_ECHO;
  fx->opts.send_queue_limit = 64 * 1024;
  fx->opts.send_queue_policy = CPORT_SENDQ_PAUSE_READ;
  fx->opts.idle_timeout_ms = 400;
  fixture_start_server(fx);
  r->out = malloc(total);
  assert_non_null(r->out);
  r->out_len = total;
  fill_pattern(r->out, total, 5);
  r->chunk = 4096;
  {
    /* Small kernel buffers at both ends, so that the echo waits in cport's
     * send queue, which pauses reading, as it does on a real network. */
    int rcvbuf = 16 * 1024;
    assert_int_equal(uv_tcp_init_ex(fx->loop, &r->tcp, AF_INET), 0);
    assert_int_equal(uv_recv_buffer_size((uv_handle_t*)&r->tcp, &rcvbuf), 0);
  }
  assert_int_equal(uv_timer_init(fx->loop, &r->timer), 0);
  r->tcp.data = r->timer.data = r;
  assert_int_equal(uv_tcp_connect(&r->connect, &r->tcp,
                                  cport_addr_sockaddr(&fx->server_addr),
                                  slow_connect_cb),
                   0);
  fixture_wait_int(fx, &r->connected, 1, FIXTURE_TIMEOUT_MS);
  fixture_wait_int(fx, &fx->connected, 1, FIXTURE_TIMEOUT_MS);
  {
    /* The server's send buffer too: loopback's 64 KiB segments let Linux
     * grow it past a megabyte otherwise. */
    int sndbuf = 16 * 1024;
    assert_int_equal(
        uv_send_buffer_size(
            cport__session_handle(fx->last_server), &sndbuf),
        0);
  }
  buf = uv_buf_init((char*)r->out, (unsigned int)total);
  assert_int_equal(
      uv_write(&r->write, (uv_stream_t*)&r->tcp, &buf, 1, slow_write_cb), 0);
  assert_int_equal(uv_timer_start(&r->timer, slow_tick_cb, 20, 20), 0);
  /* 4 KiB every 20 ms: 256 KiB takes over 1.2 s, three idle timeouts. */
  fixture_wait_size(fx, &r->received, checkpoint, 4 * FIXTURE_TIMEOUT_MS);
  if (fx->disconnected != 0)
    print_message("paused echo: ended (%s) with %llu of %llu bytes read\n",
                  cport_strerror(fx->last_code),
                  (unsigned long long)r->received, (unsigned long long)total);
  assert_int_equal(fx->disconnected, 0);
  assert_int_equal(r->eof, 0);
  assert_int_equal(cport_service_stats(fx->server, &st), 0);
  assert_true(st.pauses > 0); /* the echo really was held back */
  /* The rest at full speed, byte-exact. */
  r->fast = 1;
  fixture_wait_size(fx, &r->received, total, 4 * FIXTURE_TIMEOUT_MS);
  assert_int_equal(r->mismatch, 0);
  assert_int_equal(fx->disconnected, 0);
  uv_timer_stop(&r->timer);
  uv_close((uv_handle_t*)&r->timer, slow_close_cb);
  uv_close((uv_handle_t*)&r->tcp, slow_close_cb);
  fixture_wait_int(fx, &r->closed, 2, FIXTURE_TIMEOUT_MS);
  free(r->out);
  free(r);
}


int main(void) {
  const struct CMUnitTest tests[] = {
#define T FIXTURE_TEST
      T(test_timeouts_stop_deadline_counts_from_the_call),
      T(test_timeouts_idle_counts_from_the_read_not_the_round),
      T(test_timeouts_paused_echo_with_a_reading_peer_is_not_idle),
#undef T
  };
  return cmocka_run_group_tests_name("timeouts", tests, NULL, NULL);
}
