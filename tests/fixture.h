/* Loopback test helpers shared by the cmocka executables.
 *
 * A fixture is one core with one owned loop, driven from the test's thread
 * with cport_core_dispatch(), so every callback runs on the test thread and
 * tests need no locks. A "recorder" set of session callbacks counts events
 * into the fixture; a "peer" is a plain libuv TCP client on the same loop
 * that the tests use to act as the other side (half-close, reset, stop
 * reading) without going through cport. */
#ifndef CPORT_TEST_FIXTURE_H
#define CPORT_TEST_FIXTURE_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>

#include <cmocka.h>
#include <uv.h>

#include "cport/cport.h"

/* Deadline for any wait in a test; a timeout fails the test. */
#define FIXTURE_TIMEOUT_MS 10000

/* What the recorder's on_recv does with incoming bytes. */
typedef enum {
  RECV_ECHO,        /* send everything back, consume all */
  RECV_CONSUME,     /* consume all, record */
  RECV_PARTIAL,     /* consume at most `consume_max` bytes per call, record */
  RECV_NOTHING,     /* consume nothing */
  RECV_DISCONNECT,  /* record, then cport_session_disconnect, consume all */
  RECV_OVERCONSUME, /* return more than len (a contract violation) */
  RECV_FLOOD_ONCE   /* first call: send flood_len bytes, consume nothing;
                       later calls: consume all, record */
} recv_mode_t;

/* A growable byte record. */
typedef struct bytes_s {
  uint8_t* data;
  size_t len;
  size_t cap;
} bytes_t;

void bytes_append(bytes_t* b, const void* data, size_t len);
void bytes_free(bytes_t* b);

typedef struct fixture_s fixture_t;

/* Per-session user area of the recorder callbacks. */
typedef struct rec_session_s {
  fixture_t* fx;
  int connected;
  int disconnected;
  int code;
  bytes_t received;  /* bytes consumed by on_recv, in order */
  size_t sent;       /* bytes reported by on_send */
  size_t calls;      /* on_recv calls */
  bytes_t last_call; /* what the latest on_recv call was given */
} rec_session_t;

struct fixture_s {
  cport_core_t* core;
  uv_loop_t* loop;
  cport_service_opts_t opts; /* applied by fixture_start_server/client */
  cport_service_t* server;
  cport_service_t* client;
  cport_addr_t server_addr;
  recv_mode_t mode;        /* on_recv of server sessions (default echo) */
  recv_mode_t client_mode; /* on_recv of client sessions (default consume) */
  size_t consume_max;
  size_t flood_len;
  /* Leave on_send out of the recorder's callbacks, so that sends take the
   * direct-write path (rec_session_t.sent then stays 0). */
  int no_on_send;
  /* Totals over every session. */
  int connected;
  int disconnected;
  int connect_failed;
  int last_connect_error;
  int last_code;
  size_t count_in_disconnect; /* session_count seen inside on_disconnected */
  char last_cause[256];
  size_t sent;
  /* The latest session of each service to connect, referenced until the
   * next one connects or teardown. Their records survive on_disconnected. */
  cport_session_t* last_server;
  cport_session_t* last_client;
  int stopped;
  long mem_baseline;
};

/* cmocka setup/teardown: *state becomes a fixture_t*. Teardown stops the
 * services, destroys everything, and fails if cport memory leaked. */
int fixture_setup(void** state);
int fixture_teardown(void** state);

/* cmocka setup/teardown for tests that make their own cores: teardown
 * fails if cport memory allocated since the setup is still live.
 * mem_live_since_setup() tells a test how much is live now. */
int mem_setup(void** state);
int mem_teardown(void** state);
long mem_live_since_setup(void);

/* A cmocka test with the fixture as its state. */
#define FIXTURE_TEST(name) \
  cmocka_unit_test_setup_teardown(name, fixture_setup, fixture_teardown)

/* Create (not start) a service of `kind` for `host` loop 0 with `o`, or the
 * defaults when `o` is NULL, on the fixture's core; fails the test on error.
 * The caller destroys it. */
cport_service_t* fixture_create_service(fixture_t* fx,
                                        cport_service_kind_t kind,
                                        const char* host,
                                        const cport_service_opts_t* o);

/* Create and start a server service with fx->opts and the recorder
 * callbacks on 127.0.0.1 loop 0; fx->server_addr gets the real port. */
void fixture_start_server(fixture_t* fx);
/* The same on `addr` (NULL: 127.0.0.1 loop 0, or no address at all with
 * fx->opts.listen_fd). */
void fixture_start_server_at(fixture_t* fx, const cport_addr_t* addr);
/* Same for a client service of `n` sessions to `addr`. */
void fixture_start_client(fixture_t* fx, const cport_addr_t* addr, unsigned n);

/* Dispatch the loop until `*counter >= target`, or fail the test once the
 * counter has not changed for `timeout_ms` (or after 20 times that in all):
 * a hang fails, a slow machine only waits longer. */
void fixture_wait_int(fixture_t* fx,
                      const int* counter,
                      int target,
                      int timeout_ms);
void fixture_wait_size(fixture_t* fx,
                       const size_t* counter,
                       size_t target,
                       int timeout_ms);
/* Dispatch until pred(arg) is non-zero; returns 0 on timeout. */
int fixture_run_until(fixture_t* fx,
                      int (*pred)(void* arg),
                      void* arg,
                      int timeout_ms);
/* Stop the service and wait for on_stopped. */
void fixture_stop_service(fixture_t* fx, cport_service_t* svc, int deadline_ms);

/* ---- raw libuv peers ---- */
typedef struct peer_s {
  uv_tcp_t tcp;
  uv_connect_t connect;
  uv_shutdown_t shutdown;
  fixture_t* fx;
  int connected;
  int connect_error;
  int eof;
  int error;
  int closed;
  int reading;
  bytes_t received;
  size_t written; /* bytes whose write completed */
} peer_t;

/* Connect a peer to `addr` and wait until connected (fails the test on
 * error unless `allow_fail`). */
peer_t* peer_connect(fixture_t* fx, const cport_addr_t* addr, int allow_fail);
void peer_write(peer_t* p, const void* data, size_t len);
void peer_shutdown(peer_t* p);     /* half-close: FIN, keep reading */
void peer_reset(peer_t* p);        /* RST and close */
void peer_stop_reading(peer_t* p); /* leave bytes in the kernel */
void peer_resume_reading(peer_t* p);
/* Close (if still open), wait for the close, free. */
void peer_destroy(peer_t* p);

/* The recorder area of a session. */
rec_session_t* rec_of(cport_session_t* s);

/* More bytes than the kernel buffers of both ends of a loopback connection
 * hold (receive autotuning may reach 32 MiB), so that a flush to a peer
 * that does not read cannot finish. */
#define FIXTURE_STUCK_BYTES (96u * 1024 * 1024)

/* Connect a peer to the fixture's server, stop it reading, and queue
 * FIXTURE_STUCK_BYTES to it from the server's session (fx->last_server).
 * fx->opts.send_queue_limit must exceed that. */
peer_t* fixture_connect_stuck_peer(fixture_t* fx);

/* Start this test program again as a child on the fixture's loop, with
 * `args` (at most 4, NULL-terminated) after its own path, stdin closed and
 * stdout and stderr shared with the test, so that the child's messages
 * show with its own. Returns uv_spawn's result; `proc` must be closed
 * whatever it returns. */
int fixture_spawn_self(fixture_t* fx,
                       uv_process_t* proc,
                       const char* const* args,
                       uv_exit_cb exit_cb);

/* Non-zero when the tests run under wine rather than on Windows or a POSIX
 * system. Wine differs from Windows in a few socket behaviours that some
 * tests rely on; those tests skip under wine and print why. */
int fixture_under_wine(void);

/* Log capture: route cport's log to a buffer (at `level` and more severe)
 * until log_capture_end(), which restores the default writer. Thread-safe.
 * log_capture_take() copies the lines logged since the last take (each
 * ended by '\n', cut to `cap`) into `out` and returns how many there were. */
void log_capture_begin(cport_log_level_t level);
int log_capture_take(char* out, size_t cap);
void log_capture_end(void);

/* Why a test of a flush that cannot finish skips under wine. */
#define FIXTURE_WINE_DRAINS_STUCK_WRITES                                 \
  "the uv_write queue to a peer that stopped reading still drains under " \
  "wine, so the flush never gets stuck"

/* Skip the current test under wine, printing `why`. */
#define FIXTURE_SKIP_UNDER_WINE(why)                    \
  do {                                                  \
    if (fixture_under_wine()) {                         \
      print_message("skipped under wine: %s\n", (why)); \
      skip();                                           \
    }                                                   \
  } while (0)

/* Deterministic test payload. */
void fill_pattern(uint8_t* buf, size_t len, uint32_t seed);

/* ---- cross-thread signalling ----
 * A counter under a mutex, waited for with a uv_cond_timedwait() deadline:
 * how a test thread waits for callbacks on loop threads without sleeping. */
typedef struct signal_s {
  uv_mutex_t mu;
  uv_cond_t cv;
  int count;
  uv_thread_t thread; /* the thread of the last raise */
} signal_t;

void signal_init(signal_t* s);
void signal_destroy(signal_t* s);
void signal_raise(signal_t* s);
/* Wait until the count reaches `target`; 0 on timeout. */
int signal_wait(signal_t* s, int target, int timeout_ms);
int signal_count(signal_t* s);
int signal_raised_on_this_thread(signal_t* s);

/* ---- a core of several loops ----
 * A core of SPREAD_PORTS loops, a server on port 0 that spreads its
 * sessions over all of them (echoing what it receives), and a client
 * service of `conns` sessions on loop 1. Counters are atomic, so the rig
 * works driven from the test's thread (spread_drive) and under
 * cport_core_run alike. */
#define SPREAD_PORTS 4
#define SPREAD_CONNS 400

typedef struct spread_s {
  cport_core_t* core;
  int ping;                          /* clients send "ping" when connected */
  atomic_int expect;                 /* client bytes that raise `done` */
  atomic_int per_port[SPREAD_PORTS]; /* server sessions per loop */
  atomic_int connected;              /* server on_connected */
  atomic_int disconnected;           /* server on_disconnected */
  atomic_int client_connected;
  atomic_int wrong_thread; /* a callback off its session's loop thread */
  atomic_int received;     /* bytes the clients received */
  atomic_int stopped;      /* spread_stopped calls */
  signal_t done; /* raised when `expect` is reached, and on each stop */
} spread_t;

/* Create the core and both services and start them (from this thread,
 * before any cport_core_run). max_sessions applies to the server; `ping`
 * makes each client send "ping" once connected (then `expect` is 4 bytes
 * per client). */
void spread_start(spread_t* sp,
                  cport_service_t** server,
                  cport_service_t** client,
                  unsigned max_sessions,
                  unsigned conns,
                  int ping);
/* Dispatch every loop from this thread until `*counter` reaches `target`;
 * 0 after FIXTURE_TIMEOUT_MS. */
int spread_drive(spread_t* sp, atomic_int* counter, int target);
/* An on_stopped for either service: counts and raises `done`. */
void spread_stopped(cport_service_t* svc);
/* A job for cport_core_post: stop the service `arg` with spread_stopped. */
void spread_stop_job(void* arg);
/* Under cport_core_run: stop both services on their loops, wait for both
 * on_stopped, then stop and join the core (this thread owns it again). */
void spread_stop_running(spread_t* sp,
                         cport_service_t* server,
                         cport_service_t* client);
/* Destroy both services (either may be NULL), the core and the signal. */
void spread_destroy(spread_t* sp,
                    cport_service_t* server,
                    cport_service_t* client);

#endif /* CPORT_TEST_FIXTURE_H */
