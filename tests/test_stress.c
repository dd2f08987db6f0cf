/* A seeded, randomized concurrency stress test of cport's thread-facing API.
 *
 * Each round builds a core of 2-4 loops under cport_core_run(), a server
 * service with random options (send queue limit and policy, on_send or not,
 * packets or raw bytes, idle and disconnect timeouts), worker threads that
 * make random public calls against the live sessions (sends of every kind,
 * disconnects, references, jobs that send, broadcasts, stats, and stop,
 * destroy and create of services from jobs on their loops), and a peer
 * thread whose libuv clients behave at random (readers, 1-byte writers,
 * peers that never read, resets, half-closes). After the round it checks
 * what the headers promise:
 *  - on_disconnected exactly once per on_connected; no callback of a session
 *    after its on_disconnected; every callback on its session's loop;
 *  - each sending thread's messages reach each peer in that thread's send
 *    order, byte-exact and without gaps; no message whose send failed
 *    arrives; at a well-behaved peer, after a graceful end, every send that
 *    returned 0 before the disconnect (or stop) call arrives;
 *  - no callback but on_disconnected after cport_service_destroy() returned
 *    (service.h promises on_disconnected later), and on_stopped only once
 *    every session has had on_disconnected;
 *  - cport_session_queued_bytes() at most send_queue_limit plus one send
 *    per sending thread;
 *  - every peer sees its connection end, every thread and socket is closed,
 *    and cport__mem_live() is back at its baseline after the core is gone.
 * Every wait is bounded: a hang prints what was awaited and fails the run.
 *
 * Replaying and running longer (the seed is printed first):
 *   CPORT_STRESS_SEED=N     replay seed N: the same rounds, configurations
 *                           and random decisions (thread timing still
 *                           differs, so a failure may need a few runs)
 *   CPORT_STRESS_ROUND=R    start with round R of that seed (printed on
 *                           failure), skipping the rounds before it
 *   CPORT_STRESS_SECONDS=S  start rounds for S seconds (default 5)
 *   CPORT_STRESS_ROUNDS=N   at most N rounds (default 100000)
 *   CPORT_STRESS_SKIP=a,b   leave out operations (send, buf, packet, job,
 *                           bcast, disconnect, ref, stats, lifecycle,
 *                           reply) or checks (order, gap, required,
 *                           after-destroy, queued, peer-addr, reset-loss:
 *                           losses at peers whose connection met an RST),
 *                           to look past a known failure. Unset, it is
 *                           "reset-loss": cport does not linger after a
 *                           graceful close yet, so a peer that writes late
 *                           meets an RST; CPORT_STRESS_SKIP= checks all
 *   CPORT_STRESS_VERBOSE=1  print every round's configuration and counts
 * For example
 *   CPORT_STRESS_SEED=12345 CPORT_STRESS_SECONDS=600 \
 *     build/test-tsan/tests/test_stress
 * scripts/stress.sh runs it for a minute under ASan+UBSan and one under
 * TSan. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fixture.h"

#include "common.h"           /* cport__mem_live */
#include "service_internal.h" /* cport__loop_is_mine, cport__core_loop */

#define MAX_PORTS 4
#define MAX_WORKERS 4
/* Workers are senders 0..MAX_WORKERS-1; port P's thread (replies from
 * on_recv and on_packet) is sender MAX_WORKERS + P. */
#define MAX_SENDERS (MAX_WORKERS + MAX_PORTS)
#define MAX_SERVICES 5
#define MAX_PEERS 48

/* Any wait of the test; only a hang reaches it. */
#define WAIT_MS 30000
/* How long peers may take to see their connections end once every session
 * has had on_disconnected. */
#define PEER_FINISH_MS 20000
/* Timers run on the loop's cached clock, which can lag ours by a long
 * callback round: a cport timeout may fire that much early, so "could a
 * timeout have cut this session short?" errs by this much towards yes. */
#define TIMER_SLACK_NS (300 * 1000000ull)

/* A message: a record of REC_HDR bytes of header and a body, on packet
 * services the payload of one packet.
 *   u32 magic, u16 sender, u8 kind, u8 0, u32 seq, u32 len (whole record),
 *   u32 FNV-1a of the body; body byte i = pattern(sender, seq, i). */
#define REC_HDR 20
#define REC_MAGIC 0x31525453u /* "STR1" */
#define RAW_MAX_RECORD (96 * 1024)
/* The peers' first bytes: u32 magic, u32 peer id (little endian). */
#define HELLO_MAGIC 0x4f4c4548u /* "HELO" */
#define HELLO_LEN 8

enum { K_SEND = 1, K_BUF, K_PACKET, K_JOB, K_BCAST, K_REPLY, K_COUNT };
static const char* const kind_names[K_COUNT] = {
    "?", "send", "send_buf", "send_packet", "job", "broadcast", "reply"};

/* Why a sent message must arrive (sent_t.req). */
enum {
  /* The send returned 0 before any disconnect or stop of its session had
   * been asked for: a graceful disconnect or stop must flush it. */
  REQ_CALLED = 1,
  /* The send returned 0 on the session's own loop before any disconnect
   * or stop was asked for: it is in the session's queue, or in the loop's
   * mailbox ahead of whatever ends the session, and any graceful end
   * flushes it. */
  REQ_LOCAL = 2
};

/* How a session ended, as far as what must arrive goes. */
enum {
  END_FORCED, /* closed at once: queued sends may be dropped */
  END_CALLED, /* graceful, asked for by cport_session_disconnect or a stop */
  END_PORT    /* graceful, begun by the loop: peer's EOF, idle timeout */
};

enum { SVC_NEW, SVC_LIVE, SVC_STOPPING, SVC_DESTROYED, SVC_SKIPPED };
static const char* const svc_state_names[] = {"not created", "live", "stopping",
                                              "destroyed", "never created"};

/* How a service ends. */
enum {
  PLAN_STOP,      /* stop; on_stopped destroys */
  PLAN_STOP_RACE, /* stop, and a destroy job right behind it */
  PLAN_DESTROY    /* destroy at once */
};

enum { PK_READER, PK_TRICKLE, PK_MUTE, PK_RESET, PK_HALFCLOSE, PK_COUNT };
static const char* const peer_kind_names[PK_COUNT] = {
    "reader", "trickle", "mute", "reset", "half-close"};
/* end_code of a peer that closed its own side before seeing the end. */
#define PEER_CLOSED_BY_US 1


/* ---- run options ---- */

static struct {
  uint64_t seed;
  double seconds;
  unsigned max_rounds;
  unsigned first_round;
  int verbose;
  const char* skip;
} opt;

/* Non-zero if CPORT_STRESS_SKIP names `what`. */
static int skipped(const char* what) {
  const char* p = opt.skip;
  size_t n = strlen(what);
  while (p != NULL && *p != 0) {
    const char* end = strchr(p, ',');
    size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
    if (len == n && strncmp(p, what, n) == 0)
      return 1;
    p = end != NULL ? end + 1 : NULL;
  }
  return 0;
}


static uint64_t env_number(const char* name, uint64_t dflt) {
  const char* v = getenv(name);
  char* end;
  unsigned long long x;
  if (v == NULL || *v == 0)
    return dflt;
  x = strtoull(v, &end, 10);
  if (*end != 0) {
    fprintf(stderr, "stress: %s=%s is not a number\n", name, v);
    exit(2);
  }
  return (uint64_t)x;
}


/* cmocka's asserts may only fail on the test's thread; on the others, the
 * few things that cannot go wrong (allocations, handle set-up) are checked
 * with this. */
static void must(int ok, const char* what) {
  if (!ok) {
    fprintf(stderr, "stress: %s failed (seed %" PRIu64 ")\n", what, opt.seed);
    abort();
  }
}


static uint64_t now_ns(void) {
  return uv_hrtime();
}


/* ---- random numbers: one generator per thread, each seeded from the
 * run's seed, the round and the thread's role, so a seed repeats every
 * decision that does not depend on timing ---- */

typedef struct rng_s {
  uint64_t s;
} rng_t;

static uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}


static void rng_init(rng_t* r, uint64_t seed, uint64_t nround, uint64_t role) {
  r->s = mix64(seed ^ mix64(nround * 0x9E3779B97F4A7C15ull ^ mix64(role + 1)));
}


static uint64_t rng_next(rng_t* r) {
  r->s += 0x9E3779B97F4A7C15ull; /* splitmix64 */
  return mix64(r->s);
}


static uint64_t rng_below(rng_t* r, uint64_t n) {
  return n == 0 ? 0 : rng_next(r) % n;
}


/* Uniform in [lo, hi]. */
static uint64_t rng_range(rng_t* r, uint64_t lo, uint64_t hi) {
  return lo + rng_below(r, hi - lo + 1);
}


static int rng_pct(rng_t* r, unsigned pct) {
  return rng_below(r, 100) < pct;
}


/* In [lo, hi] (lo > 0), each octave as likely as any other, so small limits
 * come up as often as large ones. */
static uint64_t rng_log(rng_t* r, uint64_t lo, uint64_t hi) {
  unsigned octaves = 0;
  uint64_t v;
  while ((lo << (octaves + 1)) <= hi) octaves++;
  v = lo << rng_below(r, octaves + 1);
  v += rng_below(r, v);
  return v > hi ? hi : v;
}


/* ---- failures ----
 * Threads other than the test's never assert: they note what they saw here,
 * and the test's thread fails after the round, with the seed. */

#define FAIL_KEEP 40
#define FAIL_LINE 512

static struct {
  uv_mutex_t mu;
  int count;
  char text[FAIL_KEEP][FAIL_LINE];
} fails;

#if defined(__GNUC__)
#define STRESS_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define STRESS_PRINTF(a, b)
#endif

static void note_fail(const char* fmt, ...) STRESS_PRINTF(1, 2);

static void note_fail(const char* fmt, ...) {
  char line[FAIL_LINE];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  uv_mutex_lock(&fails.mu);
  if (fails.count < FAIL_KEEP)
    memcpy(fails.text[fails.count], line, sizeof(line));
  fails.count++;
  uv_mutex_unlock(&fails.mu);
}


static int fail_count(void) {
  int n;
  uv_mutex_lock(&fails.mu);
  n = fails.count;
  uv_mutex_unlock(&fails.mu);
  return n;
}


static void print_fails(void) {
  int i;
  uv_mutex_lock(&fails.mu);
  for (i = 0; i < fails.count && i < FAIL_KEEP; i++)
    fprintf(stderr, "stress:   %s\n", fails.text[i]);
  if (fails.count > FAIL_KEEP)
    fprintf(stderr, "stress:   ... and %d more\n", fails.count - FAIL_KEEP);
  uv_mutex_unlock(&fails.mu);
}


/* ---- messages ---- */

static void put32(uint8_t* p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
}


static uint32_t get32(const uint8_t* p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}


static uint32_t body_key(uint32_t seed32, unsigned sender, uint32_t seq) {
  return (uint32_t)mix64(((uint64_t)seed32 << 32) ^ ((uint64_t)sender << 24) ^
                         seq);
}


static uint8_t body_byte(uint32_t key, size_t i) {
  uint32_t x = key + (uint32_t)i * 0x9E3779B1u;
  x ^= x >> 15;
  return (uint8_t)(x ^ (x >> 7));
}


static uint32_t fnv_step(uint32_t h, uint8_t b) {
  return (h ^ b) * 16777619u;
}


#define FNV_START 2166136261u

/* The bytes peers send: after the hello, raw services get byte j of this
 * stream, packet services packets whose byte i of packet k is peer_packet. */
static uint8_t peer_stream_byte(unsigned peer, uint64_t j) {
  return (uint8_t)((peer * 31u + (unsigned)j * 7u + (unsigned)(j >> 8)) ^ 0x5a);
}


static uint8_t peer_packet_byte(unsigned peer, unsigned k, size_t i) {
  return (uint8_t)(peer + k * 13u + (unsigned)i * 5u);
}


/* ---- packet headers, written and read here independently of cport's
 * framer, so that the framer is checked rather than trusted ---- */

static size_t fmt_header_size(const cport_packet_format_t* f) {
  return f->length_size + (f->has_id ? 2u : 0u);
}


static void fmt_put(const cport_packet_format_t* f,
                    uint8_t* p,
                    unsigned n,
                    uint32_t v) {
  unsigned i;
  for (i = 0; i < n; i++) {
    p[f->big_endian ? n - 1 - i : i] = (uint8_t)v;
    v >>= 8;
  }
}


static uint32_t fmt_get(const cport_packet_format_t* f,
                        const uint8_t* p,
                        unsigned n) {
  uint32_t v = 0;
  unsigned i;
  for (i = 0; i < n; i++) v = v << 8 | p[f->big_endian ? i : n - 1 - i];
  return v;
}


/* Write the header of a packet of `payload_len` bytes; returns its size. */
static size_t fmt_header(const cport_packet_format_t* f,
                         unsigned id,
                         size_t payload_len,
                         uint8_t* out) {
  size_t hs = fmt_header_size(f);
  size_t field = f->length_includes_header ? payload_len + hs : payload_len;
  fmt_put(f, out, f->length_size, (uint32_t)field);
  if (f->has_id)
    fmt_put(f, out + f->length_size, 2, id);
  return hs;
}


/* Read a whole header. Returns 0, or -1 for an impossible length. */
static int fmt_parse(const cport_packet_format_t* f,
                     const uint8_t* h,
                     size_t* payload_len,
                     unsigned* id) {
  size_t hs = fmt_header_size(f);
  size_t field = fmt_get(f, h, f->length_size);
  if (f->length_includes_header) {
    if (field < hs)
      return -1;
    field -= hs;
  }
  *payload_len = field;
  *id = f->has_id ? fmt_get(f, h + f->length_size, 2) : 0;
  return 0;
}


/* ---- what the test keeps about services, sessions and sends ---- */

typedef struct round_s round_t;

/* One service's random options. */
typedef struct svc_cfg_s {
  unsigned port;
  int spread;
  int packet; /* on_packet with `fmt`, else on_recv */
  cport_packet_format_t fmt;
  size_t send_queue_limit;
  int policy;
  int on_send;
  unsigned idle_ms;
  unsigned disc_timeout_ms;
  unsigned max_sessions;
  size_t recv_limit;
  int nodelay;
  unsigned packet_budget; /* packet services: 0 or a few packets a round */
} svc_cfg_t;

typedef struct svc_rec_s {
  round_t* rd;
  int index;
  svc_cfg_t cfg;
  size_t max_record; /* largest record sent to its sessions */
  cport_addr_t addr;
  /* The service, for other threads: read under the read lock, and only
   * while `state` is LIVE or STOPPING; destroy takes the write lock, so no
   * thread calls into a service that is being destroyed. */
  uv_rwlock_t lock;
  cport_service_t* svc;
  atomic_int state;
  /* Set before the stop is posted (its deadline and time with it), and
   * before cport_service_destroy is called; `destroyed` once it returned. */
  atomic_int stop_started;
  atomic_uint_fast64_t stop_ns;
  atomic_int stop_deadline_ms;
  atomic_int destroy_started;
  atomic_int destroyed;
  atomic_uint_fast64_t destroyed_ns; /* when it returned */
  int plan; /* how the service ends, set before its stop or destroy */
  /* Part of a worker's lifecycle operation: created by it (life_create),
   * ended by it (life_end); each reports to round_t.life_parts. */
  int life_create;
  int life_end;
  struct svc_rec_s* next; /* the service that lifecycle creates */
  atomic_int connected;
  atomic_int disconnected;
  atomic_int stopped_calls;
  atomic_uint_fast64_t disconnect_timeouts;
} svc_rec_t;

/* One send of one message to one session. */
typedef struct sent_s {
  struct sent_s* next;
  uint32_t seq;
  uint32_t len; /* record bytes */
  uint8_t kind;
  uint8_t how; /* K_SEND, K_BUF or K_PACKET: the call that sent it */
  atomic_int rc;
  atomic_int req;
} sent_t;

#define SENT_PENDING 1

/* Sends of one sender to one session, in the sender's order. Only the
 * sender's thread appends; a job fills in the result of a send its worker
 * appended (rc and req are atomic). */
typedef struct sent_list_s {
  sent_t* head;
  sent_t* tail;
} sent_list_t;

typedef struct sess_rec_s {
  cport_session_t* s; /* referenced by the test until the round ends */
  const cport_service_t* svc_ident;
  svc_rec_t* svc;
  uint64_t id;
  unsigned port;
  uint64_t connected_ns;
  atomic_int disconnects;
  atomic_int late_callbacks;
  atomic_int code;
  atomic_uint_fast64_t disconnected_ns;
  atomic_int destroy_seen; /* its service's destroy had begun by then */
  atomic_uint peer_id;     /* from the peer's hello; 0 until then */
  atomic_int disc_started;
  atomic_uint_fast64_t disc_ns; /* earliest cport_session_disconnect call */
  atomic_uint_fast64_t on_send_bytes;
  atomic_int peer_addr_rc; /* a failed cport_session_peer_addr, or 0 */
  /* Loop thread only: checking the peer's bytes as they arrive. */
  rng_t rng;
  uint8_t hello[HELLO_LEN];
  size_t hello_have;
  uint64_t rx_off;
  unsigned rx_packets;
  uint64_t rx_wire; /* the peer's bytes consumed, headers included */
  int rx_bad;
  sent_list_t logs[MAX_SENDERS];
} sess_rec_t;

/* The per-session user area. */
typedef struct sess_user_s {
  sess_rec_t* rec;
} sess_user_t;

typedef struct bcast_s {
  uint32_t seq;
  uint32_t len;
  int svc_index;
  int rc;
} bcast_t;

typedef struct worker_s {
  round_t* rd;
  unsigned index;
  rng_t rng;
  uv_thread_t thread;
  uint32_t seq;
  bcast_t* bcasts; /* in seq order */
  size_t nbcasts;
  size_t bcap;
  cport_service_stats_t last[MAX_SERVICES];
  int have_last[MAX_SERVICES];
  int starved; /* the last pick found no live session */
  unsigned long ops;
  unsigned long sends_ok;
  unsigned long sends_sendq;
  unsigned long sends_notconn;
} worker_t;

/* ---- peers ---- */

typedef struct arrival_s {
  uint32_t seq;
  uint32_t len;
  uint16_t sender;
  uint8_t kind;
} arrival_t;

enum { RX_PKT, RX_REC, RX_BODY };

/* The streaming parser of what a peer receives. */
typedef struct rx_s {
  int packet;
  cport_packet_format_t fmt;
  size_t hs;
  size_t max_record;
  uint32_t seed32;
  int phase;
  uint8_t hb[REC_HDR];
  size_t have;
  size_t pkt_len;
  unsigned pkt_id;
  unsigned sender;
  unsigned kind;
  uint32_t seq;
  uint32_t len;
  uint32_t check;
  uint32_t key;
  uint32_t fnv;
  size_t off;
  uint64_t pos;
  arrival_t* arr;
  size_t narr;
  size_t cap;
  char err[200];
} rx_t;

typedef struct peer_loop_s peer_loop_t;

typedef struct speer_s {
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_connect_t connect;
  uv_shutdown_t shutdown;
  peer_loop_t* pl;
  svc_rec_t* svc;
  unsigned id;
  int kind;
  rng_t rng;
  int handles;
  int connected;
  int connect_status;
  int reading;
  int closing;
  int ended;
  int end_code; /* UV_EOF, an error, or PEER_CLOSED_BY_US */
  int write_error;
  uint64_t written; /* bytes whose write completed */
  uint64_t fin_ns;  /* our shutdown, reset or early close */
  uint8_t* out;
  size_t out_len;
  size_t out_off; /* trickle: bytes written so far */
  size_t hello_wire;
  uint64_t bytes_in;
  rx_t rx;
} speer_t;

struct peer_loop_s {
  round_t* rd;
  uv_loop_t loop;
  uv_async_t wake;
  uv_timer_t spawn;
  uv_timer_t deadline;
  uv_thread_t thread;
  rng_t rng;
  speer_t* peers[MAX_PEERS];
  unsigned npeers;
  unsigned open;
  unsigned max_open;
  unsigned budget;
  int quiesced;
  int finishing;
  int done;
  uint8_t chunk[65536];
};

struct round_s {
  unsigned index;
  uint64_t seed;
  uint32_t seed32;
  rng_t rng; /* the test thread's */
  cport_core_t* core;
  unsigned nports;
  unsigned nworkers;
  unsigned round_ms;
  unsigned ops_cap;
  int lifecycle_on;
  uint64_t start_ns;
  long mem_baseline;
  /* Raised on every event the test's thread may wait for. */
  signal_t progress;
  uv_mutex_t svc_mu; /* nsvcs, target, ending */
  svc_rec_t svcs[MAX_SERVICES];
  unsigned nsvcs;
  svc_rec_t* target; /* where new peers connect */
  int ending;
  uv_mutex_t reg_mu; /* the session registry */
  sess_rec_t** recs;
  size_t nrecs;
  size_t rcap;
  atomic_int jobs;      /* posted and not yet run */
  atomic_int life_busy; /* a lifecycle operation is under way */
  atomic_int life_parts;
  atomic_uint port_seq[MAX_PORTS];
  atomic_int stop_workers;
  atomic_int workers_done;
  atomic_int peers_done;
  atomic_int peer_cmd; /* 1: stop connecting; 2: finish */
  worker_t workers[MAX_WORKERS];
  peer_loop_t pl;
  char desc[400];
};

/* Run totals, for the closing line. */
static struct {
  unsigned long rounds;
  unsigned long sessions;
  unsigned long peers;
  unsigned long ops;
  unsigned long sends_ok;
  unsigned long sends_sendq;
  unsigned long sends_notconn;
  unsigned long checked;
  unsigned long required;
  /* Callbacks on other loops just after a destroy returned (after_destroy):
   * written by loop threads. */
  atomic_ulong under_way;
} totals;

/* How long after cport_service_destroy() returned a callback on another
 * loop counts as one already under way. */
#define UNDER_WAY_GRACE_NS (1000 * 1000000ull)


/* ---- hangs ----
 * A watchdog thread ends the process with a message when a phase of the
 * test's thread (a join, a destroy, a wait) outlives its deadline, since a
 * thread blocked inside cport cannot be stopped any other way. */

static struct {
  uv_mutex_t mu;
  uv_cond_t cv;
  uv_thread_t thread;
  uint64_t deadline;
  const char* what;
  int quit;
  round_t* rd;
} wd;

static void round_dump(round_t* rd);

static void hang(round_t* rd, const char* what) {
  fprintf(stderr,
          "stress: FAIL seed %" PRIu64
          " round %u: hang: %s did not happen within %d ms\n"
          "stress: replay with CPORT_STRESS_SEED=%" PRIu64
          " CPORT_STRESS_ROUND=%u\n",
          opt.seed, rd != NULL ? rd->index : 0, what, WAIT_MS, opt.seed,
          rd != NULL ? rd->index : 0);
  if (rd != NULL)
    round_dump(rd);
  print_fails();
  fflush(stderr);
  fflush(stdout);
  /* Threads may be stuck inside cport: only the process can end them. */
  _Exit(1);
}


static void watchdog_main(void* arg) {
  (void)arg;
  uv_mutex_lock(&wd.mu);
  while (!wd.quit) {
    uint64_t now = now_ns();
    if (wd.deadline != 0 && now >= wd.deadline)
      hang(wd.rd, wd.what);
    (void)uv_cond_timedwait(
        &wd.cv, &wd.mu, wd.deadline != 0 ? wd.deadline - now : 1000000000ull);
  }
  uv_mutex_unlock(&wd.mu);
}


static void watchdog_arm(round_t* rd, const char* what) {
  uv_mutex_lock(&wd.mu);
  wd.rd = rd;
  wd.what = what;
  wd.deadline = now_ns() + (uint64_t)WAIT_MS * 1000000u;
  uv_cond_signal(&wd.cv);
  uv_mutex_unlock(&wd.mu);
}


static void watchdog_disarm(void) {
  uv_mutex_lock(&wd.mu);
  wd.deadline = 0;
  uv_mutex_unlock(&wd.mu);
}


/* Wait for `done(rd)`, woken by rd->progress; a hang after WAIT_MS. */
static void wait_for(round_t* rd, int (*done)(round_t* rd), const char* what) {
  uint64_t deadline = now_ns() + (uint64_t)WAIT_MS * 1000000u;
  for (;;) {
    int seen = signal_count(&rd->progress);
    uint64_t now;
    if (done(rd))
      return;
    now = now_ns();
    if (now >= deadline)
      hang(rd, what);
    (void)signal_wait(&rd->progress, seen + 1,
                      (int)((deadline - now) / 1000000u) + 1);
  }
}


/* ---- helpers of the callbacks and workers ---- */

static int on_port(round_t* rd, unsigned port) {
  return cport__loop_is_mine(cport__core_loop(rd->core, port));
}


static const char* sender_name(unsigned sender, char* buf, size_t n) {
  if (sender < MAX_WORKERS)
    snprintf(buf, n, "worker %u", sender);
  else
    snprintf(buf, n, "loop %u", sender - MAX_WORKERS);
  return buf;
}


/* Jobs of the test go through here so that the round can wait for them. */
static int job_post(round_t* rd, unsigned port, void (*fn)(void*), void* arg) {
  int rc;
  atomic_fetch_add(&rd->jobs, 1);
  rc = cport_core_post(rd->core, port, fn, arg);
  if (rc != 0) {
    atomic_fetch_sub(&rd->jobs, 1);
    note_fail("cport_core_post to loop %u: %s", port, cport_err_name(rc));
  }
  return rc;
}


static void job_done(round_t* rd) {
  atomic_fetch_sub(&rd->jobs, 1);
  signal_raise(&rd->progress);
}


/* Mostly small messages, some of a few KiB, now and then a large one, never
 * over what the service's format can carry. */
static size_t pick_record_len(rng_t* r, const svc_rec_t* sv) {
  size_t max = sv->max_record;
  size_t lo = REC_HDR;
  size_t hi = 200;
  unsigned p = (unsigned)rng_below(r, 100);
  if (p >= 95) {
    lo = 4096;
    hi = max;
  } else if (p >= 70) {
    lo = 200;
    hi = 4096;
  }
  if (hi > max)
    hi = max;
  if (lo > hi)
    lo = hi;
  return (size_t)rng_range(r, lo, hi);
}


static unsigned packet_id_of(const svc_rec_t* sv, uint32_t seq) {
  return sv->cfg.fmt.has_id ? (seq & 0xFFFFu) : 0;
}


/* One message as the wire carries it: on packet services a packet header
 * in front of the record. `base` is malloc'd. */
typedef struct msg_s {
  uint8_t* base;
  size_t hlen;
  size_t rec_len;
} msg_t;

static void msg_make(msg_t* m,
                     const svc_rec_t* sv,
                     unsigned sender,
                     unsigned kind,
                     uint32_t seq,
                     size_t rec_len) {
  uint32_t key = body_key(sv->rd->seed32, sender, seq);
  uint32_t h = FNV_START;
  uint8_t* rec;
  size_t i;
  m->hlen = sv->cfg.packet ? fmt_header_size(&sv->cfg.fmt) : 0;
  m->rec_len = rec_len;
  m->base = malloc(m->hlen + rec_len);
  must(m->base != NULL, "malloc");
  rec = m->base + m->hlen;
  for (i = 0; i < rec_len - REC_HDR; i++) {
    uint8_t b = body_byte(key, i);
    rec[REC_HDR + i] = b;
    h = fnv_step(h, b);
  }
  put32(rec, REC_MAGIC);
  rec[4] = (uint8_t)sender;
  rec[5] = (uint8_t)(sender >> 8);
  rec[6] = (uint8_t)kind;
  rec[7] = 0;
  put32(rec + 8, seq);
  put32(rec + 12, (uint32_t)rec_len);
  put32(rec + 16, h);
  if (m->hlen > 0)
    fmt_header(&sv->cfg.fmt, packet_id_of(sv, seq), rec_len, m->base);
}


static const uint8_t* msg_record(const msg_t* m) {
  return m->base + m->hlen;
}


static size_t msg_wire_len(const msg_t* m) {
  return m->hlen + m->rec_len;
}


/* A shared buffer holding the message as the wire carries it. */
static cport_buf_t* msg_buf(const msg_t* m, const svc_rec_t* sv) {
  cport_buf_t* buf = NULL;
  int rc;
  if (sv->cfg.packet)
    rc = cport_packet_buf(&buf, &sv->cfg.fmt,
                          packet_id_of(sv, get32(msg_record(m) + 8)),
                          msg_record(m), m->rec_len);
  else
    rc = cport_buf_from(&buf, m->base, m->rec_len);
  if (rc != 0) {
    note_fail("building a shared buffer of %zu bytes: %s", m->rec_len,
              cport_err_name(rc));
    return NULL;
  }
  return buf;
}


/* Append a send to the log of `sender` for `rec`, before the send is made
 * (so that a job's sends keep their worker's order). */
static sent_t* sent_add(sess_rec_t* rec,
                        unsigned sender,
                        uint32_t seq,
                        size_t rec_len,
                        unsigned kind,
                        unsigned how) {
  sent_t* n = calloc(1, sizeof(*n));
  sent_list_t* l = &rec->logs[sender];
  must(n != NULL, "calloc");
  n->seq = seq;
  n->len = (uint32_t)rec_len;
  n->kind = (uint8_t)kind;
  n->how = (uint8_t)how;
  atomic_init(&n->rc, SENT_PENDING);
  atomic_init(&n->req, 0);
  if (l->tail != NULL)
    l->tail->next = n;
  else
    l->head = n;
  l->tail = n;
  return n;
}


/* Record a send's result. Read after the call returned: a disconnect or
 * stop asked for later cannot be what dropped it. */
static void sent_done(sess_rec_t* rec, sent_t* n, int rc, int local) {
  int req = 0;
  /* A send on the loop made after a stop or disconnect was asked for (a
   * job posted, a call returned on another thread) may be queued behind it
   * in the loop's mailbox and dropped there: only earlier ones must
   * arrive. */
  if (rc == 0 && !atomic_load(&rec->disc_started) &&
      !atomic_load(&rec->svc->stop_started))
    req |= REQ_CALLED | (local ? REQ_LOCAL : 0);
  atomic_store(&n->req, req);
  atomic_store(&n->rc, rc);
}


/* What a send may return here; anything else is a bug of cport's or of
 * the test's. A write error only comes from the loop's own thread. */
static void check_send_rc(const char* what, int rc, int local) {
  if (rc == 0 || rc == UV_ENOTCONN || rc == CPORT_ESENDQ || rc == UV_ENOMEM)
    return;
  if (local && (rc == UV_EPIPE || rc == UV_ECONNRESET || rc == UV_ECONNABORTED))
    return;
  note_fail("%s returned %s (%d)", what, cport_err_name(rc), rc);
}


/* The send queue may exceed its limit by one send per sending thread:
 * every worker and every loop thread. */
static void check_queued(round_t* rd, sess_rec_t* rec) {
  size_t q = cport_session_queued_bytes(rec->s);
  size_t bound =
      rec->svc->cfg.send_queue_limit +
      (size_t)(rd->nworkers + rd->nports) * (rec->svc->max_record + 8);
  if (q > bound && !skipped("queued"))
    note_fail("session %" PRIu64
              ": cport_session_queued_bytes %zu > limit %zu + %u senders x %zu",
              rec->id, q, rec->svc->cfg.send_queue_limit,
              rd->nworkers + rd->nports, rec->svc->max_record + 8);
}


static void mark_disconnect(sess_rec_t* rec) {
  uint64_t t = now_ns();
  uint_fast64_t old = atomic_load(&rec->disc_ns);
  while ((old == 0 || t < old) &&
         !atomic_compare_exchange_weak(&rec->disc_ns, &old, t)) {
  }
  atomic_store(&rec->disc_started, 1);
}


static sess_rec_t* rec_of_session(cport_session_t* s) {
  sess_user_t* u = cport_session_user(s);
  return u != NULL ? u->rec : NULL;
}


/* ---- the server's callbacks (loop threads) ---- */

/* Non-zero if a callback of session `rec` running now breaks the promise
 * that none follows cport_service_destroy(). On the destroying loop the
 * promise is exact. A loop the session lives on checks the service's state
 * just before each callback, so a callback whose check passed as the
 * destroy began on another loop's thread may still start after it
 * returned ("already under way", service.h); a short grace covers that
 * (the thread may lose the CPU in between), and is counted. */
static int after_destroy(const sess_rec_t* rec) {
  const svc_rec_t* sv = rec->svc;
  if (!atomic_load(&sv->destroyed) || skipped("after-destroy"))
    return 0;
  if (rec->port != sv->cfg.port &&
      now_ns() - atomic_load(&sv->destroyed_ns) < UNDER_WAY_GRACE_NS) {
    atomic_fetch_add(&totals.under_way, 1);
    return 0;
  }
  return 1;
}


static void cb_check(sess_rec_t* rec, const char* what) {
  svc_rec_t* sv = rec->svc;
  if (!on_port(sv->rd, rec->port))
    note_fail("session %" PRIu64 ": %s ran off its loop %u's thread", rec->id,
              what, rec->port);
  if (atomic_load(&rec->disconnects) != 0) {
    atomic_fetch_add(&rec->late_callbacks, 1);
    note_fail("session %" PRIu64 ": %s after its on_disconnected", rec->id,
              what);
  }
  if (after_destroy(rec))
    note_fail("service %d: %s of session %" PRIu64
              " (loop %u) ran after cport_service_destroy returned (on loop "
              "%u)",
              sv->index, what, rec->id, rec->port, sv->cfg.port);
}


static void srv_connected(cport_session_t* s) {
  svc_rec_t* sv = cport_service_get_data(cport_session_service(s));
  round_t* rd = sv->rd;
  sess_user_t* u = cport_session_user(s);
  sess_rec_t* rec;
  if (u->rec != NULL) {
    note_fail("session %" PRIu64 ": on_connected twice", cport_session_id(s));
    return;
  }
  rec = calloc(1, sizeof(*rec));
  must(rec != NULL, "calloc");
  rec->s = s;
  rec->svc = sv;
  rec->svc_ident = cport_session_service(s);
  rec->id = cport_session_id(s);
  rec->port = cport_session_loop(s);
  rec->connected_ns = now_ns();
  rng_init(&rec->rng, rd->seed, rd->index, 0x10000u + rec->id);
  if (!on_port(rd, rec->port))
    note_fail("session %" PRIu64 ": on_connected off its loop %u's thread",
              rec->id, rec->port);
  if (after_destroy(rec))
    note_fail("service %d: on_connected of session %" PRIu64
              " (loop %u) ran after cport_service_destroy returned (on loop "
              "%u)",
              sv->index, rec->id, rec->port, sv->cfg.port);
  /* The registry's reference: workers use the session until the round
   * ends, long after on_disconnected. */
  cport_session_ref(s);
  u->rec = rec;
  uv_mutex_lock(&rd->reg_mu);
  if (rd->nrecs == rd->rcap) {
    rd->rcap = rd->rcap ? rd->rcap * 2 : 64;
    rd->recs = realloc(rd->recs, rd->rcap * sizeof(*rd->recs));
    must(rd->recs != NULL, "realloc");
  }
  rd->recs[rd->nrecs++] = rec;
  uv_mutex_unlock(&rd->reg_mu);
  atomic_fetch_add(&sv->connected, 1);
  signal_raise(&rd->progress);
}


/* A reply from the loop's thread, logged as sender "port P". Made inside
 * on_recv/on_packet, so under PAUSE_READ it may pause reading. */
static void srv_maybe_reply(sess_rec_t* rec) {
  svc_rec_t* sv = rec->svc;
  round_t* rd = sv->rd;
  unsigned sender = MAX_WORKERS + rec->port;
  uint32_t seq;
  size_t len;
  msg_t m;
  sent_t* n;
  int rc;
  int as_packet;
  if (!rng_pct(&rec->rng, 12) || skipped("reply"))
    return;
  seq = atomic_fetch_add(&rd->port_seq[rec->port], 1) + 1;
  len = (size_t)rng_range(&rec->rng, REC_HDR, 2000);
  if (len > sv->max_record)
    len = sv->max_record;
  msg_make(&m, sv, sender, K_REPLY, seq, len);
  as_packet = sv->cfg.packet && rng_pct(&rec->rng, 50);
  n = sent_add(rec, sender, seq, len, K_REPLY, as_packet ? K_PACKET : K_SEND);
  if (as_packet)
    rc = cport_session_send_packet(rec->s, packet_id_of(sv, seq),
                                   msg_record(&m), len);
  else
    rc = cport_session_send(rec->s, m.base, msg_wire_len(&m));
  sent_done(rec, n, rc, 1);
  check_send_rc("reply send", rc, 1);
  check_queued(rd, rec);
  free(m.base);
}


static void srv_maybe_disconnect(sess_rec_t* rec) {
  if (rng_below(&rec->rng, 1000) >= 2 || skipped("disconnect"))
    return;
  mark_disconnect(rec);
  if (cport_session_disconnect(rec->s, "stress: on_recv") != 0)
    note_fail("session %" PRIu64 ": disconnect on its loop failed", rec->id);
}


/* The peer's raw bytes: the hello, then peer_stream_byte. */
static void srv_rx_raw(sess_rec_t* rec, const uint8_t* data, size_t len) {
  size_t i;
  for (i = 0; i < len && !rec->rx_bad; i++) {
    if (rec->hello_have < HELLO_LEN) {
      rec->hello[rec->hello_have++] = data[i];
      if (rec->hello_have == HELLO_LEN) {
        if (get32(rec->hello) != HELLO_MAGIC) {
          rec->rx_bad = 1;
          note_fail("session %" PRIu64 ": bad hello from its peer", rec->id);
        } else {
          atomic_store(&rec->peer_id, get32(rec->hello + 4));
        }
      }
      continue;
    }
    if (data[i] != peer_stream_byte(atomic_load(&rec->peer_id), rec->rx_off)) {
      rec->rx_bad = 1;
      note_fail("session %" PRIu64 ": byte %" PRIu64
                " from peer %u differs from what it sent",
                rec->id, rec->rx_off, atomic_load(&rec->peer_id));
    }
    rec->rx_off++;
  }
}


static size_t srv_recv(cport_session_t* s, const uint8_t* data, size_t len) {
  sess_rec_t* rec = rec_of_session(s);
  size_t take = len;
  if (rec == NULL) {
    note_fail("on_recv of a session without on_connected");
    return len;
  }
  cb_check(rec, "on_recv");
  /* Leave a few bytes now and then: cport keeps them and presents them
   * again first. Never so many that the receive limit is reached. */
  if (len > 8 && rng_pct(&rec->rng, 30))
    take = len - (size_t)rng_range(&rec->rng, 1, 7);
  srv_rx_raw(rec, data, take);
  rec->rx_wire += take;
  srv_maybe_reply(rec);
  srv_maybe_disconnect(rec);
  return take;
}


static void srv_packet(cport_session_t* s,
                       unsigned id,
                       const uint8_t* payload,
                       size_t len) {
  sess_rec_t* rec = rec_of_session(s);
  const cport_packet_format_t* f;
  size_t i;
  if (rec == NULL) {
    note_fail("on_packet of a session without on_connected");
    return;
  }
  cb_check(rec, "on_packet");
  f = &rec->svc->cfg.fmt;
  if (!rec->rx_bad && rec->rx_packets == 0) {
    if (len != HELLO_LEN || get32(payload) != HELLO_MAGIC ||
        id != (f->has_id ? 1u : 0u)) {
      rec->rx_bad = 1;
      note_fail("session %" PRIu64 ": bad hello packet (id %u, %zu bytes)",
                rec->id, id, len);
    } else {
      atomic_store(&rec->peer_id, get32(payload + 4));
    }
  } else if (!rec->rx_bad) {
    unsigned peer = atomic_load(&rec->peer_id);
    int bad = id != (f->has_id ? 2u : 0u);
    for (i = 0; i < len && !bad; i++)
      bad = payload[i] != peer_packet_byte(peer, rec->rx_packets, i);
    if (bad) {
      rec->rx_bad = 1;
      note_fail("session %" PRIu64
                ": packet %u (id %u, %zu bytes) from peer "
                "%u differs from what it sent",
                rec->id, rec->rx_packets, id, len, peer);
    }
  }
  rec->rx_packets++;
  rec->rx_wire += fmt_header_size(f) + len;
  srv_maybe_reply(rec);
  srv_maybe_disconnect(rec);
}


static void srv_send(cport_session_t* s, size_t len) {
  sess_rec_t* rec = rec_of_session(s);
  if (rec == NULL) {
    note_fail("on_send of a session without on_connected");
    return;
  }
  cb_check(rec, "on_send");
  atomic_fetch_add(&rec->on_send_bytes, len);
}


static void srv_disconnected(cport_session_t* s, int code, const char* cause) {
  sess_rec_t* rec = rec_of_session(s);
  svc_rec_t* sv;
  (void)cause;
  if (rec == NULL) {
    note_fail("on_disconnected (%s) of a session without on_connected",
              cport_err_name(code));
    return;
  }
  sv = rec->svc;
  if (!on_port(sv->rd, rec->port))
    note_fail("session %" PRIu64 ": on_disconnected off its loop's thread",
              rec->id);
  atomic_store(&rec->code, code);
  atomic_store(&rec->disconnected_ns, now_ns());
  atomic_store(&rec->destroy_seen, atomic_load(&sv->destroy_started));
  if (atomic_fetch_add(&rec->disconnects, 1) != 0)
    note_fail("session %" PRIu64 ": on_disconnected twice (now %s)", rec->id,
              cport_err_name(code));
  atomic_fetch_add(&sv->disconnected, 1);
  signal_raise(&sv->rd->progress);
}


/* ---- service lifecycle: everything here runs on the service's loop ---- */

static void svc_cfg_random(rng_t* r, unsigned nports, svc_cfg_t* c) {
  memset(c, 0, sizeof(*c));
  c->port = (unsigned)rng_below(r, nports);
  c->spread = rng_pct(r, 80);
  c->packet = rng_pct(r, 40);
  cport_packet_format_init(&c->fmt);
  c->fmt.length_size = rng_pct(r, 30) ? 4 : 2;
  c->fmt.big_endian = rng_pct(r, 50);
  c->fmt.length_includes_header = rng_pct(r, 70);
  c->fmt.has_id = rng_pct(r, 70);
  c->fmt.max_packet = c->fmt.length_size == 2
                          ? (size_t)rng_range(r, 1024, 65535)
                          : (size_t)rng_range(r, 1024, 200000);
  c->send_queue_limit = (size_t)rng_log(r, 512, 1024 * 1024);
  c->policy = rng_pct(r, 35) ? CPORT_SENDQ_DISCONNECT : CPORT_SENDQ_PAUSE_READ;
  c->on_send = rng_pct(r, 50);
  c->idle_ms = rng_pct(r, 25) ? (unsigned)rng_range(r, 150, 1500) : 0;
  c->disc_timeout_ms = rng_pct(r, 20) ? 0 : (unsigned)rng_range(r, 300, 5000);
  c->max_sessions = rng_pct(r, 15) ? (unsigned)rng_range(r, 2, 6) : 0;
  c->recv_limit = (size_t)rng_log(r, 4096, 256 * 1024);
  c->nodelay = rng_pct(r, 80);
  /* Small, so that sessions yield and come back all the time, also while
   * paused, disconnecting or being stopped. */
  c->packet_budget = rng_pct(r, 50) ? (unsigned)rng_range(r, 1, 8) : 0;
}


static void svc_describe(const svc_rec_t* sv, char* buf, size_t n) {
  const svc_cfg_t* c = &sv->cfg;
  char fmt[80] = "raw";
  if (c->packet)
    snprintf(fmt, sizeof(fmt), "packet(len%u %s %s %s max %zu budget %u)",
             c->fmt.length_size, c->fmt.big_endian ? "BE" : "LE",
             c->fmt.length_includes_header ? "incl" : "excl",
             c->fmt.has_id ? "id" : "no-id", c->fmt.max_packet,
             c->packet_budget);
  snprintf(buf, n,
           "service %d: loop %u%s %s limit %zu %s%s idle %u disc_timeout %u "
           "max_sessions %u recv_limit %zu",
           sv->index, c->port, c->spread ? " spread" : "", fmt,
           c->send_queue_limit,
           c->policy == CPORT_SENDQ_DISCONNECT ? "DISCONNECT" : "PAUSE_READ",
           c->on_send ? " on_send" : "", c->idle_ms, c->disc_timeout_ms,
           c->max_sessions, c->recv_limit);
}


/* A new service record (not yet created), or NULL when the round has its
 * most. Under svc_mu. */
static svc_rec_t* svc_rec_new(round_t* rd, const svc_cfg_t* cfg) {
  svc_rec_t* sv;
  size_t field_max;
  if (rd->nsvcs == MAX_SERVICES)
    return NULL;
  sv = &rd->svcs[rd->nsvcs];
  sv->index = (int)rd->nsvcs++;
  sv->rd = rd;
  sv->cfg = *cfg;
  sv->max_record = RAW_MAX_RECORD;
  if (cfg->packet) {
    size_t hs = fmt_header_size(&cfg->fmt);
    field_max = cfg->fmt.length_size == 2 ? 0xFFFFu : 0xFFFFFFFFu;
    sv->max_record = cfg->fmt.max_packet - hs;
    if (cfg->fmt.length_includes_header && sv->max_record > field_max - hs)
      sv->max_record = field_max - hs;
    if (!cfg->fmt.length_includes_header && sv->max_record > field_max)
      sv->max_record = field_max;
    if (sv->max_record > RAW_MAX_RECORD)
      sv->max_record = RAW_MAX_RECORD;
  }
  assert_int_equal(uv_rwlock_init(&sv->lock), 0);
  atomic_init(&sv->state, SVC_NEW);
  return sv;
}


static void life_part_done(round_t* rd) {
  if (atomic_fetch_sub(&rd->life_parts, 1) == 1)
    atomic_store(&rd->life_busy, 0);
  signal_raise(&rd->progress);
}


static void svc_on_stopped(cport_service_t* svc);

/* Create and start the service of `sv` on its loop and make it the peers'
 * target. A job on sv's loop. */
static void create_job(void* arg) {
  svc_rec_t* sv = arg;
  round_t* rd = sv->rd;
  cport_service_opts_t o;
  cport_service_t* svc = NULL;
  cport_addr_t any;
  int rc;
  if (!on_port(rd, sv->cfg.port))
    note_fail("service %d: create job off its loop", sv->index);
  uv_mutex_lock(&rd->svc_mu);
  if (rd->ending) {
    atomic_store(&sv->state, SVC_SKIPPED);
    goto done;
  }
  cport_service_opts_init(&o);
  o.cbs.on_connected = srv_connected;
  if (sv->cfg.packet)
    o.cbs.on_packet = srv_packet;
  else
    o.cbs.on_recv = srv_recv;
  o.cbs.on_send = sv->cfg.on_send ? srv_send : NULL;
  o.cbs.on_disconnected = srv_disconnected;
  o.user_size = sizeof(sess_user_t);
  o.max_sessions = sv->cfg.max_sessions;
  o.recv_buffer_limit = sv->cfg.recv_limit;
  o.packet = sv->cfg.fmt;
  o.packet_budget = sv->cfg.packet_budget;
  o.send_queue_limit = sv->cfg.send_queue_limit;
  o.send_queue_policy = (cport_sendq_policy_t)sv->cfg.policy;
  o.loop = sv->cfg.port;
  o.data = sv;
  o.tcp_nodelay = sv->cfg.nodelay;
  o.spread = sv->cfg.spread;
  o.idle_timeout_ms = sv->cfg.idle_ms;
  o.disconnect_timeout_ms = sv->cfg.disc_timeout_ms;
  must(cport_addr_parse(&any, "127.0.0.1", 0) == 0, "cport_addr_parse");
  rc = cport_service_create(&svc, rd->core, CPORT_SERVICE_SERVER, &any, &o);
  if (rc == 0)
    rc = cport_service_start(svc);
  if (rc == 0)
    rc = cport_service_local_addr(svc, &sv->addr);
  if (rc != 0) {
    note_fail("service %d: create/start: %s", sv->index, cport_err_name(rc));
    if (svc != NULL)
      cport_service_destroy(svc);
    atomic_store(&sv->state, SVC_SKIPPED);
    goto done;
  }
  uv_rwlock_wrlock(&sv->lock);
  sv->svc = svc;
  atomic_store(&sv->state, SVC_LIVE);
  uv_rwlock_wrunlock(&sv->lock);
  rd->target = sv;
done:
  uv_mutex_unlock(&rd->svc_mu);
  if (sv->life_create)
    life_part_done(rd);
  job_done(rd);
}


/* Destroy the service of `sv`, once. On its loop. */
static void svc_destroy_here(svc_rec_t* sv) {
  cport_service_stats_t st;
  if (atomic_load(&sv->state) == SVC_DESTROYED)
    return;
  uv_rwlock_wrlock(&sv->lock);
  if (cport_service_stats(sv->svc, &st) == 0)
    atomic_store(&sv->disconnect_timeouts, st.disconnect_timeouts);
  atomic_store(&sv->destroy_started, 1);
  cport_service_destroy(sv->svc);
  atomic_store(&sv->destroyed_ns, now_ns());
  atomic_store(&sv->destroyed, 1);
  sv->svc = NULL;
  atomic_store(&sv->state, SVC_DESTROYED);
  uv_rwlock_wrunlock(&sv->lock);
  signal_raise(&sv->rd->progress);
}


/* on_stopped promises that every session has had on_disconnected: the
 * counts and the stats must say so. */
static void svc_on_stopped(cport_service_t* svc) {
  svc_rec_t* sv = cport_service_get_data(svc);
  cport_service_stats_t st;
  uint64_t ended;
  int conn = atomic_load(&sv->connected);
  int disc = atomic_load(&sv->disconnected);
  if (!on_port(sv->rd, sv->cfg.port))
    note_fail("service %d: on_stopped off its loop", sv->index);
  if (atomic_load(&sv->destroyed) && !skipped("after-destroy"))
    note_fail("service %d: on_stopped after cport_service_destroy returned",
              sv->index);
  if (atomic_fetch_add(&sv->stopped_calls, 1) != 0)
    note_fail("service %d: on_stopped twice", sv->index);
  if (conn != disc)
    note_fail(
        "service %d: on_stopped with %d sessions connected and %d "
        "disconnected",
        sv->index, conn, disc);
  if (cport_service_session_count(svc) != 0)
    note_fail("service %d: on_stopped with session_count %zu", sv->index,
              cport_service_session_count(svc));
  if (cport_service_stats(svc, &st) != 0) {
    note_fail("service %d: stats failed in on_stopped", sv->index);
  } else {
    ended = st.disconnects_peer + st.disconnects_reset + st.disconnects_idle +
            st.disconnects_backpressure + st.disconnects_protocol +
            st.disconnects_local + st.disconnects_other;
    if (st.connected != (uint64_t)conn || ended != st.connected ||
        st.active != 0 || st.queued_bytes != 0)
      note_fail("service %d: stats in on_stopped: connected %" PRIu64
                " (callbacks %d), ended %" PRIu64 ", active %" PRIu64
                ", queued %" PRIu64,
                sv->index, st.connected, conn, ended, st.active,
                st.queued_bytes);
  }
  if (sv->plan == PLAN_STOP) {
    svc_destroy_here(sv);
    if (sv->life_end)
      life_part_done(sv->rd);
  }
  signal_raise(&sv->rd->progress);
}


static void destroy_job(void* arg) {
  svc_rec_t* sv = arg;
  svc_destroy_here(sv);
  if (sv->life_end)
    life_part_done(sv->rd);
  job_done(sv->rd);
}


/* End `sv` by its plan: a job on its loop. stop_started was set when the
 * job was posted. */
static void end_job(void* arg) {
  svc_rec_t* sv = arg;
  round_t* rd = sv->rd;
  int rc;
  if (!on_port(rd, sv->cfg.port))
    note_fail("service %d: end job off its loop", sv->index);
  if (sv->next != NULL)
    (void)job_post(rd, sv->next->cfg.port, create_job, sv->next);
  if (sv->plan == PLAN_DESTROY) {
    svc_destroy_here(sv);
    if (sv->life_end)
      life_part_done(rd);
  } else {
    atomic_store(&sv->state, SVC_STOPPING);
    rc = cport_service_stop(sv->svc, atomic_load(&sv->stop_deadline_ms),
                            svc_on_stopped);
    if (rc != 0) {
      /* No on_stopped will come: end it here so the round goes on. */
      note_fail("service %d: cport_service_stop: %s", sv->index,
                cport_err_name(rc));
      svc_destroy_here(sv);
      if (sv->life_end && sv->plan == PLAN_STOP)
        life_part_done(rd);
    }
    if (sv->plan == PLAN_STOP_RACE)
      (void)job_post(rd, sv->cfg.port, destroy_job, sv);
  }
  job_done(rd);
}


/* Decide how `sv` ends and post the job that does it. */
static void svc_end(round_t* rd, svc_rec_t* sv, rng_t* r, int plan) {
  sv->plan = plan;
  if (plan != PLAN_DESTROY) {
    atomic_store(&sv->stop_deadline_ms, (int)rng_range(r, 0, 1500));
    atomic_store(&sv->stop_ns, now_ns());
    atomic_store(&sv->stop_started, 1);
  }
  (void)job_post(rd, sv->cfg.port, end_job, sv);
}


/* ---- workers ---- */

/* A session to act on, most often a recent one (more likely live); now and
 * then one that has ended (its calls must fail cleanly). NULL when no live
 * one turned up: the worker then waits for the next connection. */
static sess_rec_t* pick_session(worker_t* w) {
  round_t* rd = w->rd;
  sess_rec_t* rec = NULL;
  int tries;
  uv_mutex_lock(&rd->reg_mu);
  for (tries = 0; tries < 6 && rd->nrecs > 0; tries++) {
    size_t n = rd->nrecs;
    size_t i = rng_pct(&w->rng, 60) && n > 8 ? n - 1 - rng_below(&w->rng, 8)
                                             : rng_below(&w->rng, n);
    rec = rd->recs[i];
    if (atomic_load(&rec->disconnects) == 0 || rng_pct(&w->rng, 5))
      break;
    rec = NULL;
  }
  uv_mutex_unlock(&rd->reg_mu);
  if (rec == NULL)
    w->starved = 1;
  return rec;
}


/* Another session of the same service, or NULL. */
static sess_rec_t* pick_sibling(worker_t* w, const sess_rec_t* of) {
  int tries;
  for (tries = 0; tries < 4; tries++) {
    sess_rec_t* rec = pick_session(w);
    if (rec != NULL && rec != of && rec->svc == of->svc)
      return rec;
  }
  return NULL;
}


/* A service other threads may call into: read-locked on return, or NULL. */
static svc_rec_t* lock_service(worker_t* w) {
  round_t* rd = w->rd;
  svc_rec_t* sv;
  int st;
  uv_mutex_lock(&rd->svc_mu);
  sv = rd->nsvcs > 0 ? &rd->svcs[rng_below(&w->rng, rd->nsvcs)] : NULL;
  uv_mutex_unlock(&rd->svc_mu);
  if (sv == NULL)
    return NULL;
  uv_rwlock_rdlock(&sv->lock);
  st = atomic_load(&sv->state);
  if (sv->svc == NULL || (st != SVC_LIVE && st != SVC_STOPPING)) {
    uv_rwlock_rdunlock(&sv->lock);
    return NULL;
  }
  return sv;
}


static void worker_count_send(worker_t* w, int rc) {
  if (rc == 0)
    w->sends_ok++;
  else if (rc == CPORT_ESENDQ)
    w->sends_sendq++;
  else
    w->sends_notconn++;
}


static void op_send(worker_t* w, sess_rec_t* rec, unsigned how) {
  svc_rec_t* sv;
  uint32_t seq = ++w->seq;
  size_t len;
  msg_t m;
  sent_t* n;
  int rc;
  if (rec == NULL)
    rec = pick_session(w);
  if (rec == NULL)
    return;
  sv = rec->svc;
  if (how == K_PACKET && !sv->cfg.packet)
    how = K_SEND;
  len = pick_record_len(&w->rng, sv);
  msg_make(&m, sv, w->index, how, seq, len);
  n = sent_add(rec, w->index, seq, len, how, how);
  if (how == K_PACKET)
    rc = cport_session_send_packet(rec->s, packet_id_of(sv, seq),
                                   msg_record(&m), len);
  else
    rc = cport_session_send(rec->s, m.base, msg_wire_len(&m));
  sent_done(rec, n, rc, 0);
  check_send_rc(
      how == K_PACKET ? "cport_session_send_packet" : "cport_session_send", rc,
      0);
  check_queued(w->rd, rec);
  worker_count_send(w, rc);
  free(m.base);
}


/* One shared buffer to one to three sessions of a service. */
static void op_send_buf(worker_t* w) {
  sess_rec_t* to[3];
  unsigned nto = 1;
  unsigned i;
  uint32_t seq = ++w->seq;
  size_t len;
  cport_buf_t* buf;
  msg_t m;
  to[0] = pick_session(w);
  if (to[0] == NULL)
    return;
  while (nto < 3 && rng_pct(&w->rng, 40)) {
    sess_rec_t* more = pick_sibling(w, to[0]);
    if (more == NULL || (nto == 2 && more == to[1]))
      break;
    to[nto++] = more;
  }
  len = pick_record_len(&w->rng, to[0]->svc);
  msg_make(&m, to[0]->svc, w->index, K_BUF, seq, len);
  buf = msg_buf(&m, to[0]->svc);
  free(m.base);
  if (buf == NULL)
    return;
  for (i = 0; i < nto; i++) {
    sent_t* n = sent_add(to[i], w->index, seq, len, K_BUF, K_BUF);
    int rc = cport_session_send_buf(to[i]->s, buf);
    sent_done(to[i], n, rc, 0);
    check_send_rc("cport_session_send_buf", rc, 0);
    check_queued(w->rd, to[i]);
    worker_count_send(w, rc);
  }
  /* The sessions' writes hold references of their own. */
  cport_buf_unref(buf);
}


/* A job that sends, on the session's own loop, messages its worker
 * numbered (and logged) when it posted the job. */
typedef struct send_job_s {
  round_t* rd;
  sess_rec_t* rec;
  unsigned n;
  struct {
    sent_t* sent;
    msg_t m;
    unsigned how;
  } msg[3];
} send_job_t;

static void send_job_run(void* arg) {
  send_job_t* j = arg;
  sess_rec_t* rec = j->rec;
  svc_rec_t* sv = rec->svc;
  unsigned i;
  if (!on_port(j->rd, rec->port))
    note_fail("session %" PRIu64 ": send job off its loop", rec->id);
  for (i = 0; i < j->n; i++) {
    msg_t* m = &j->msg[i].m;
    int rc = UV_EINVAL;
    if (j->msg[i].how == K_PACKET) {
      rc = cport_session_send_packet(rec->s,
                                     packet_id_of(sv, j->msg[i].sent->seq),
                                     msg_record(m), m->rec_len);
    } else if (j->msg[i].how == K_BUF) {
      cport_buf_t* buf = msg_buf(m, sv);
      if (buf != NULL) {
        rc = cport_session_send_buf(rec->s, buf);
        cport_buf_unref(buf);
      }
    } else {
      rc = cport_session_send(rec->s, m->base, msg_wire_len(m));
    }
    sent_done(rec, j->msg[i].sent, rc, 1);
    check_send_rc("a job's send", rc, 1);
    check_queued(j->rd, rec);
    free(m->base);
  }
  job_done(j->rd);
  free(j);
}


static void op_job(worker_t* w) {
  sess_rec_t* rec = pick_session(w);
  send_job_t* j;
  unsigned i;
  if (rec == NULL)
    return;
  j = calloc(1, sizeof(*j));
  must(j != NULL, "calloc");
  j->rd = w->rd;
  j->rec = rec;
  j->n = (unsigned)rng_range(&w->rng, 1, 3);
  for (i = 0; i < j->n; i++) {
    uint32_t seq = ++w->seq;
    size_t len = pick_record_len(&w->rng, rec->svc);
    unsigned how = (unsigned)rng_range(&w->rng, K_SEND, K_PACKET);
    if (how == K_PACKET && !rec->svc->cfg.packet)
      how = K_SEND;
    msg_make(&j->msg[i].m, rec->svc, w->index, K_JOB, seq, len);
    j->msg[i].how = how;
    j->msg[i].sent = sent_add(rec, w->index, seq, len, K_JOB, how);
  }
  if (job_post(w->rd, rec->port, send_job_run, j) != 0) {
    for (i = 0; i < j->n; i++) {
      atomic_store(&j->msg[i].sent->rc, UV_ENOMEM);
      free(j->msg[i].m.base);
    }
    free(j);
  }
}


static void op_broadcast(worker_t* w) {
  svc_rec_t* sv = lock_service(w);
  uint32_t seq;
  size_t len;
  cport_buf_t* buf;
  msg_t m;
  bcast_t* b;
  int rc;
  if (sv == NULL)
    return;
  seq = ++w->seq;
  len = pick_record_len(&w->rng, sv);
  msg_make(&m, sv, w->index, K_BCAST, seq, len);
  buf = msg_buf(&m, sv);
  free(m.base);
  if (buf == NULL) {
    uv_rwlock_rdunlock(&sv->lock);
    return;
  }
  rc = cport_service_broadcast(sv->svc, buf);
  cport_buf_unref(buf);
  uv_rwlock_rdunlock(&sv->lock);
  if (rc != 0 && rc != UV_ENOMEM)
    note_fail("cport_service_broadcast returned %s", cport_err_name(rc));
  if (w->nbcasts == w->bcap) {
    w->bcap = w->bcap ? w->bcap * 2 : 64;
    w->bcasts = realloc(w->bcasts, w->bcap * sizeof(*w->bcasts));
    must(w->bcasts != NULL, "realloc");
  }
  b = &w->bcasts[w->nbcasts++];
  b->seq = seq;
  b->len = (uint32_t)len;
  b->svc_index = sv->index;
  b->rc = rc;
}


static void op_disconnect(worker_t* w) {
  sess_rec_t* rec = pick_session(w);
  int rc;
  if (rec == NULL)
    return;
  mark_disconnect(rec);
  rc = cport_session_disconnect(rec->s, "stress: worker");
  if (rc != 0 && rc != UV_ENOMEM)
    note_fail("cport_session_disconnect returned %s", cport_err_name(rc));
}


static void unref_job(void* arg) {
  sess_rec_t* rec = arg;
  cport_session_unref(rec->s);
  job_done(rec->svc->rd);
}


/* A reference of the worker's own, the read-only queries under it, maybe
 * a send, and the reference dropped here or by a job on the loop. */
static void op_ref(worker_t* w) {
  sess_rec_t* rec = pick_session(w);
  cport_addr_t peer;
  sess_user_t* u;
  int rc;
  if (rec == NULL)
    return;
  cport_session_ref(rec->s);
  u = cport_session_user(rec->s);
  if (cport_session_id(rec->s) != rec->id ||
      cport_session_loop(rec->s) != rec->port ||
      cport_session_service(rec->s) != rec->svc_ident || u == NULL ||
      u->rec != rec)
    note_fail("session %" PRIu64 ": id, loop, service or user area changed",
              rec->id);
  rc = cport_session_peer_addr(rec->s, &peer);
  if (rc != 0)
    atomic_store(&rec->peer_addr_rc, rc); /* reported with its peer's kind */
  (void)cport_session_is_connected(rec->s);
  if (rng_pct(&w->rng, 30))
    op_send(w, rec, K_SEND);
  if (rng_pct(&w->rng, 30)) {
    if (job_post(w->rd, rec->port, unref_job, rec) != 0)
      cport_session_unref(rec->s);
  } else {
    cport_session_unref(rec->s);
  }
}


/* Counters never go back; active never exceeds connected. */
static void op_stats(worker_t* w) {
  svc_rec_t* sv = lock_service(w);
  cport_service_stats_t st;
  cport_service_stats_t* last;
  int rc;
  if (sv == NULL)
    return;
  rc = cport_service_stats(sv->svc, &st);
  (void)cport_service_session_count(sv->svc);
  uv_rwlock_rdunlock(&sv->lock);
  if (rc != 0) {
    note_fail("cport_service_stats returned %s", cport_err_name(rc));
    return;
  }
  last = &w->last[sv->index];
  if (w->have_last[sv->index] &&
      (st.connected < last->connected || st.rejected < last->rejected ||
       st.bytes_in < last->bytes_in || st.bytes_out < last->bytes_out ||
       st.sends < last->sends || st.writes < last->writes ||
       st.packets_in < last->packets_in || st.pauses < last->pauses ||
       st.disconnect_timeouts < last->disconnect_timeouts ||
       st.disconnects_local < last->disconnects_local ||
       st.disconnects_peer < last->disconnects_peer ||
       st.disconnects_reset < last->disconnects_reset))
    note_fail("service %d: a stats counter went backwards", sv->index);
  *last = st;
  w->have_last[sv->index] = 1;
}


/* End the peers' current service by a random plan and create its
 * successor with new random options, both from jobs on their loops. One
 * at a time, at most MAX_SERVICES per round. */
static void op_lifecycle(worker_t* w) {
  round_t* rd = w->rd;
  svc_rec_t* old;
  svc_rec_t* next;
  svc_cfg_t cfg;
  int expected = 0;
  unsigned p;
  if (!rd->lifecycle_on ||
      !atomic_compare_exchange_strong(&rd->life_busy, &expected, 1))
    return;
  svc_cfg_random(&w->rng, rd->nports, &cfg);
  uv_mutex_lock(&rd->svc_mu);
  old = rd->target;
  next = old != NULL && atomic_load(&old->state) == SVC_LIVE && !rd->ending
             ? svc_rec_new(rd, &cfg)
             : NULL;
  uv_mutex_unlock(&rd->svc_mu);
  if (next == NULL) {
    atomic_store(&rd->life_busy, 0);
    return;
  }
  next->life_create = 1;
  old->life_end = 1;
  old->next = next;
  atomic_store(&rd->life_parts, 2); /* next created, old destroyed */
  p = (unsigned)rng_below(&w->rng, 100);
  svc_end(rd, old, &w->rng,
          p < 50   ? PLAN_STOP
          : p < 70 ? PLAN_STOP_RACE
                   : PLAN_DESTROY);
}


enum {
  OP_SEND,
  OP_BUF,
  OP_PACKET,
  OP_JOB,
  OP_BCAST,
  OP_DISCONNECT,
  OP_REF,
  OP_STATS,
  OP_LIFECYCLE,
  OP_COUNT
};
static const char* const op_names[OP_COUNT] = {"send", "buf",   "packet",
                                               "job",  "bcast", "disconnect",
                                               "ref",  "stats", "lifecycle"};
/* Per mille. */
static const unsigned op_weights[OP_COUNT] = {330, 120, 120, 150, 60,
                                              8,   120, 90,  2};

static int op_pick(worker_t* w) {
  unsigned total = 0;
  unsigned x;
  int i;
  for (i = 0; i < OP_COUNT; i++)
    if (!skipped(op_names[i]))
      total += op_weights[i];
  if (total == 0)
    return -1;
  x = (unsigned)rng_below(&w->rng, total);
  for (i = 0; i < OP_COUNT; i++) {
    if (skipped(op_names[i]))
      continue;
    if (x < op_weights[i])
      return i;
    x -= op_weights[i];
  }
  return -1;
}


static int have_session(round_t* rd) {
  size_t n;
  uv_mutex_lock(&rd->reg_mu);
  n = rd->nrecs;
  uv_mutex_unlock(&rd->reg_mu);
  return n > 0 || atomic_load(&rd->stop_workers);
}


static void worker_main(void* arg) {
  worker_t* w = arg;
  round_t* rd = w->rd;
  uint64_t deadline = rd->start_ns + (uint64_t)rd->round_ms * 1000000u;
  /* The first session; bounded by the round's own time. */
  while (!have_session(rd) && now_ns() < deadline) {
    int seen = signal_count(&rd->progress);
    if (have_session(rd))
      break;
    (void)signal_wait(&rd->progress, seen + 1, 50);
  }
  while (w->ops < rd->ops_cap && !atomic_load(&rd->stop_workers) &&
         now_ns() < deadline) {
    if (w->starved) {
      /* Every session picked had ended: wait for news (a connection),
       * bounded, rather than spin on sessions that are gone. */
      int seen = signal_count(&rd->progress);
      w->starved = 0;
      (void)signal_wait(&rd->progress, seen + 1, 10);
    }
    w->ops++;
    switch (op_pick(w)) {
      case OP_SEND:
        op_send(w, NULL, K_SEND);
        break;
      case OP_BUF:
        op_send_buf(w);
        break;
      case OP_PACKET:
        op_send(w, NULL, K_PACKET);
        break;
      case OP_JOB:
        op_job(w);
        break;
      case OP_BCAST:
        op_broadcast(w);
        break;
      case OP_DISCONNECT:
        op_disconnect(w);
        break;
      case OP_REF:
        op_ref(w);
        break;
      case OP_STATS:
        op_stats(w);
        break;
      case OP_LIFECYCLE:
        op_lifecycle(w);
        break;
      default:
        break;
    }
  }
  atomic_fetch_add(&rd->workers_done, 1);
  signal_raise(&rd->progress);
}


/* ---- the peers' receive parser ---- */

static void rx_init(rx_t* x, const svc_rec_t* sv) {
  memset(x, 0, sizeof(*x));
  x->packet = sv->cfg.packet;
  x->fmt = sv->cfg.fmt;
  x->hs = fmt_header_size(&x->fmt);
  x->max_record = sv->max_record;
  x->seed32 = sv->rd->seed32;
  x->phase = x->packet ? RX_PKT : RX_REC;
}


static void rx_fail(rx_t* x, const char* fmt, ...) STRESS_PRINTF(2, 3);

static void rx_fail(rx_t* x, const char* fmt, ...) {
  va_list ap;
  int n;
  if (x->err[0] != 0)
    return;
  n = snprintf(x->err, sizeof(x->err), "at stream byte %" PRIu64 ": ", x->pos);
  va_start(ap, fmt);
  vsnprintf(x->err + n, sizeof(x->err) - (size_t)n, fmt, ap);
  va_end(ap);
}


static void rx_record_done(rx_t* x) {
  arrival_t* a;
  if (x->fnv != x->check) {
    rx_fail(x, "sender %u seq %u: checksum differs", x->sender, x->seq);
    return;
  }
  if (x->narr == x->cap) {
    x->cap = x->cap ? x->cap * 2 : 256;
    x->arr = realloc(x->arr, x->cap * sizeof(*x->arr));
    must(x->arr != NULL, "realloc");
  }
  a = &x->arr[x->narr++];
  a->seq = x->seq;
  a->len = x->len;
  a->sender = (uint16_t)x->sender;
  a->kind = (uint8_t)x->kind;
  x->phase = x->packet ? RX_PKT : RX_REC;
  x->have = 0;
  x->off = 0;
}


static void rx_record_header(rx_t* x) {
  const uint8_t* h = x->hb;
  x->sender = h[4] | (unsigned)h[5] << 8;
  x->kind = h[6];
  x->seq = get32(h + 8);
  x->len = get32(h + 12);
  x->check = get32(h + 16);
  if (get32(h) != REC_MAGIC || h[7] != 0) {
    rx_fail(x, "no record header where one should start");
    return;
  }
  if (x->sender >= MAX_SENDERS || x->kind == 0 || x->kind >= K_COUNT ||
      x->len < REC_HDR || x->len > x->max_record) {
    rx_fail(x, "record header out of range (sender %u kind %u len %u)",
            x->sender, x->kind, x->len);
    return;
  }
  if (x->packet && (x->pkt_len != x->len ||
                    x->pkt_id != (x->fmt.has_id ? (x->seq & 0xFFFFu) : 0))) {
    rx_fail(x, "packet of %zu bytes, id %u holds record seq %u of %u bytes",
            x->pkt_len, x->pkt_id, x->seq, x->len);
    return;
  }
  x->key = body_key(x->seed32, x->sender, x->seq);
  x->fnv = FNV_START;
  x->off = 0;
  x->phase = RX_BODY;
  if (x->len == REC_HDR)
    rx_record_done(x);
}


static void rx_feed(rx_t* x, const uint8_t* d, size_t n) {
  while (n > 0 && x->err[0] == 0) {
    size_t take;
    size_t i;
    switch (x->phase) {
      case RX_PKT:
        take = x->hs - x->have < n ? x->hs - x->have : n;
        memcpy(x->hb + x->have, d, take);
        x->have += take;
        if (x->have == x->hs) {
          if (fmt_parse(&x->fmt, x->hb, &x->pkt_len, &x->pkt_id) != 0)
            rx_fail(x, "impossible packet length");
          x->have = 0;
          x->phase = RX_REC;
        }
        break;
      case RX_REC:
        take = REC_HDR - x->have < n ? REC_HDR - x->have : n;
        memcpy(x->hb + x->have, d, take);
        x->have += take;
        if (x->have == REC_HDR)
          rx_record_header(x);
        break;
      default: /* RX_BODY */
        take = x->len - REC_HDR - x->off;
        if (take > n)
          take = n;
        for (i = 0; i < take; i++) {
          if (d[i] != body_byte(x->key, x->off + i)) {
            rx_fail(x, "sender %u seq %u (%s, %u bytes): body byte %zu differs",
                    x->sender, x->seq, kind_names[x->kind], x->len, x->off + i);
            return;
          }
          x->fnv = fnv_step(x->fnv, d[i]);
        }
        x->off += take;
        if (x->off == x->len - REC_HDR)
          rx_record_done(x);
        break;
    }
    d += take;
    n -= take;
    x->pos += take;
  }
}


/* Non-zero when the stream stopped inside a message. */
static int rx_partial(const rx_t* x) {
  return x->have != 0 || x->phase == RX_BODY ||
         (x->packet && x->phase == RX_REC);
}


/* ---- peers: libuv clients on a thread of their own ---- */

static void peer_close_cb(uv_handle_t* h);
static void peer_trickle(speer_t* p);

static void peer_check_done(peer_loop_t* pl) {
  if (!pl->finishing || pl->open > 0 || pl->done)
    return;
  pl->done = 1;
  uv_close((uv_handle_t*)&pl->wake, NULL);
  uv_close((uv_handle_t*)&pl->spawn, NULL);
  uv_close((uv_handle_t*)&pl->deadline, NULL);
}


static void peer_close_cb(uv_handle_t* h) {
  speer_t* p = h->data;
  if (--p->handles == 0) {
    p->pl->open--;
    peer_check_done(p->pl);
  }
}


static void peer_end(speer_t* p, int code) {
  if (p->ended)
    return;
  p->ended = 1;
  p->end_code = code;
}


/* Close both handles; `reset` sends an RST (SO_LINGER 0) instead of a FIN. */
static void peer_close(speer_t* p, int reset) {
  if (p->closing)
    return;
  p->closing = 1;
  if (!p->ended) {
    if (p->fin_ns == 0)
      p->fin_ns = now_ns();
    peer_end(p, PEER_CLOSED_BY_US);
  }
  uv_close((uv_handle_t*)&p->timer, peer_close_cb);
  if (!reset || uv_tcp_close_reset(&p->tcp, peer_close_cb) != 0)
    uv_close((uv_handle_t*)&p->tcp, peer_close_cb);
}


static void peer_alloc_cb(uv_handle_t* h, size_t suggested, uv_buf_t* buf) {
  speer_t* p = h->data;
  (void)suggested;
  buf->base = (char*)p->pl->chunk;
  buf->len = sizeof(p->pl->chunk);
}


static void peer_read_cb(uv_stream_t* st, ssize_t n, const uv_buf_t* buf) {
  speer_t* p = st->data;
  if (n > 0) {
    p->bytes_in += (uint64_t)n;
    rx_feed(&p->rx, (const uint8_t*)buf->base, (size_t)n);
    return;
  }
  if (n == 0)
    return;
  peer_end(p, (int)n);
  peer_close(p, 0);
}


static void peer_read_start(speer_t* p) {
  if (p->reading || p->closing)
    return;
  if (uv_read_start((uv_stream_t*)&p->tcp, peer_alloc_cb, peer_read_cb) == 0)
    p->reading = 1;
}


/* One write of a peer, with what it carries. */
typedef struct peer_write_s {
  uv_write_t req;
  speer_t* p;
  size_t len;
} peer_write_t;

static void peer_write_cb(uv_write_t* req, int status) {
  peer_write_t* w = cport__container_of(req, peer_write_t, req);
  speer_t* p = w->p;
  if (status == 0)
    p->written += w->len;
  free(w);
  if (status < 0) {
    /* ECANCELED is our own close; anything else is the connection's. */
    if (p->write_error == 0 && status != UV_ECANCELED)
      p->write_error = status;
    return;
  }
  if (p->kind == PK_TRICKLE)
    peer_trickle(p);
}


static void peer_send_bytes(speer_t* p, size_t off, size_t len) {
  peer_write_t* w;
  uv_buf_t b;
  if (len == 0 || p->closing)
    return;
  w = malloc(sizeof(*w));
  must(w != NULL, "malloc");
  w->p = p;
  w->len = len;
  b = uv_buf_init((char*)p->out + off, (unsigned)len);
  if (uv_write(&w->req, (uv_stream_t*)&p->tcp, &b, 1, peer_write_cb) != 0)
    free(w);
}


static void peer_timer_trickle_cb(uv_timer_t* t) {
  speer_t* p = t->data;
  if (p->out_off < p->out_len && !p->closing && p->write_error == 0) {
    peer_send_bytes(p, p->out_off, 1);
    p->out_off++;
  }
}


/* One byte per write, the next after the previous one's callback, now and
 * then after a 1 ms pause, so the server sees 1-byte segments. */
static void peer_trickle(speer_t* p) {
  if (p->out_off >= p->out_len || p->closing || p->write_error != 0)
    return;
  if (rng_pct(&p->rng, 30)) {
    uv_timer_start(&p->timer, peer_timer_trickle_cb, 1, 0);
    return;
  }
  peer_send_bytes(p, p->out_off, 1);
  p->out_off++;
}


static void peer_reset_cb(uv_timer_t* t) {
  speer_t* p = t->data;
  p->fin_ns = now_ns();
  peer_close(p, 1);
}


static void peer_shutdown_cb(uv_shutdown_t* req, int status) {
  (void)req;
  (void)status;
}


static void peer_halfclose_cb(uv_timer_t* t) {
  speer_t* p = t->data;
  if (p->closing)
    return;
  p->fin_ns = now_ns();
  if (uv_shutdown(&p->shutdown, (uv_stream_t*)&p->tcp, peer_shutdown_cb) != 0)
    peer_close(p, 0);
}


static void peer_connect_cb(uv_connect_t* req, int status) {
  speer_t* p = req->data;
  size_t cut;
  if (status != 0 || p->closing) {
    p->connect_status = status;
    peer_end(p, status != 0 ? status : PEER_CLOSED_BY_US);
    peer_close(p, 0);
    return;
  }
  p->connected = 1;
  /* A mute peer reads only once every session has ended (peer_finish);
   * one whose connect completes after that, its callback delayed on a
   * busy machine, reads at once, or it would never see its end. */
  if (p->kind != PK_MUTE || p->pl->finishing)
    peer_read_start(p);
  switch (p->kind) {
    case PK_READER:
      /* In one or two writes, split anywhere. */
      cut = (size_t)rng_below(&p->rng, p->out_len + 1);
      peer_send_bytes(p, 0, cut);
      peer_send_bytes(p, cut, p->out_len - cut);
      break;
    case PK_TRICKLE:
      peer_trickle(p);
      break;
    case PK_MUTE:
      peer_send_bytes(p, 0, p->out_len);
      break;
    case PK_RESET:
      peer_send_bytes(p, 0, p->hello_wire);
      uv_timer_start(&p->timer, peer_reset_cb, rng_range(&p->rng, 0, 40), 0);
      break;
    default: /* PK_HALFCLOSE */
      peer_send_bytes(p, 0, p->out_len);
      uv_timer_start(&p->timer, peer_halfclose_cb, rng_range(&p->rng, 0, 80),
                     0);
      break;
  }
}


/* What the peer will write: the hello, then its own bytes. */
static void peer_build(speer_t* p) {
  static const unsigned data_max[PK_COUNT] = {4096, 200, 2048, 64, 2048};
  const svc_rec_t* sv = p->svc;
  size_t data = (size_t)rng_below(&p->rng, data_max[p->kind] + 1);
  /* A data byte costs at most 7 bytes: 1-byte packets of 6-byte headers. */
  size_t cap = 16 + HELLO_LEN + data * 7 + 64;
  uint8_t hello[HELLO_LEN];
  size_t n = 0;
  put32(hello, HELLO_MAGIC);
  put32(hello + 4, p->id);
  p->out = malloc(cap);
  must(p->out != NULL, "malloc");
  if (!sv->cfg.packet) {
    size_t j;
    memcpy(p->out, hello, HELLO_LEN);
    n = HELLO_LEN;
    p->hello_wire = n;
    for (j = 0; j < data; j++) p->out[n++] = peer_stream_byte(p->id, j);
  } else {
    const cport_packet_format_t* f = &sv->cfg.fmt;
    unsigned k = 1;
    n = fmt_header(f, f->has_id ? 1 : 0, HELLO_LEN, p->out);
    memcpy(p->out + n, hello, HELLO_LEN);
    n += HELLO_LEN;
    p->hello_wire = n;
    while (data > 0) {
      size_t len = (size_t)rng_range(&p->rng, 1, 200);
      size_t i;
      if (len > data)
        len = data;
      if (n + fmt_header_size(f) + len > cap)
        break;
      n += fmt_header(f, f->has_id ? 2 : 0, len, p->out + n);
      for (i = 0; i < len; i++) p->out[n++] = peer_packet_byte(p->id, k, i);
      data -= len;
      k++;
    }
  }
  p->out_len = n;
}


static void peer_spawn(peer_loop_t* pl) {
  static const unsigned weights[PK_COUNT] = {35, 20, 15, 15, 15};
  round_t* rd = pl->rd;
  svc_rec_t* sv;
  cport_addr_t addr;
  speer_t* p;
  unsigned x;
  int rc;
  uv_mutex_lock(&rd->svc_mu);
  sv = rd->target;
  if (sv != NULL)
    addr = sv->addr;
  uv_mutex_unlock(&rd->svc_mu);
  if (sv == NULL)
    return;
  p = calloc(1, sizeof(*p));
  must(p != NULL, "calloc");
  p->pl = pl;
  p->svc = sv;
  p->id = pl->npeers + 1;
  pl->peers[pl->npeers++] = p;
  rng_init(&p->rng, rd->seed, rd->index, 0x1000u + p->id);
  x = (unsigned)rng_below(&p->rng, 100);
  for (p->kind = 0; p->kind < PK_COUNT - 1 && x >= weights[p->kind]; p->kind++)
    x -= weights[p->kind];
  rx_init(&p->rx, sv);
  peer_build(p);
  must(uv_tcp_init(&pl->loop, &p->tcp) == 0, "uv_tcp_init");
  must(uv_timer_init(&pl->loop, &p->timer) == 0, "uv_timer_init");
  p->tcp.data = p;
  p->timer.data = p;
  p->connect.data = p;
  p->handles = 2;
  pl->open++;
  rc = uv_tcp_connect(&p->connect, &p->tcp, cport_addr_sockaddr(&addr),
                      peer_connect_cb);
  if (rc != 0) {
    p->connect_status = rc;
    peer_end(p, rc);
    peer_close(p, 0);
  }
}


static void peer_spawn_cb(uv_timer_t* t) {
  peer_loop_t* pl = t->data;
  if (pl->quiesced || pl->npeers >= pl->budget || pl->open >= pl->max_open)
    return;
  if (rng_pct(&pl->rng, 40))
    peer_spawn(pl);
}


static void peer_deadline_cb(uv_timer_t* t) {
  peer_loop_t* pl = t->data;
  unsigned i;
  for (i = 0; i < pl->npeers; i++) {
    speer_t* p = pl->peers[i];
    if (p->handles == 0)
      continue;
    if (!p->ended)
      note_fail(
          "peer %u (%s, service %d): its connection did not end within "
          "%d ms of the end of every session (connected %d)",
          p->id, peer_kind_names[p->kind], p->svc->index, PEER_FINISH_MS,
          p->connected);
    peer_close(p, 0);
  }
}


/* Every session has ended: peers that never read start now, so that each
 * sees its connection's end. */
static void peer_finish(peer_loop_t* pl) {
  unsigned i;
  pl->quiesced = 1;
  pl->finishing = 1;
  uv_timer_stop(&pl->spawn);
  for (i = 0; i < pl->npeers; i++) {
    speer_t* p = pl->peers[i];
    if (p->connected && !p->closing)
      peer_read_start(p);
  }
  uv_timer_start(&pl->deadline, peer_deadline_cb, PEER_FINISH_MS, 0);
  peer_check_done(pl);
}


static void peer_wake_cb(uv_async_t* a) {
  peer_loop_t* pl = a->data;
  int cmd = atomic_load(&pl->rd->peer_cmd);
  if (cmd >= 1)
    pl->quiesced = 1;
  if (cmd >= 2 && !pl->finishing)
    peer_finish(pl);
}


static void peer_main(void* arg) {
  peer_loop_t* pl = arg;
  uv_run(&pl->loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&pl->loop) != 0)
    note_fail("the peers' loop still had handles open");
  atomic_store(&pl->rd->peers_done, 1);
  signal_raise(&pl->rd->progress);
}


static void peers_start(round_t* rd) {
  peer_loop_t* pl = &rd->pl;
  pl->rd = rd;
  rng_init(&pl->rng, rd->seed, rd->index, 0x100u);
  pl->max_open = (unsigned)rng_range(&rd->rng, 3, 12);
  pl->budget = (unsigned)rng_range(&rd->rng, 6, MAX_PEERS);
  /* Set up here, before the thread runs the loop, so the test's thread can
   * wake it at any time. */
  assert_int_equal(uv_loop_init(&pl->loop), 0);
  assert_int_equal(uv_async_init(&pl->loop, &pl->wake, peer_wake_cb), 0);
  assert_int_equal(uv_timer_init(&pl->loop, &pl->spawn), 0);
  assert_int_equal(uv_timer_init(&pl->loop, &pl->deadline), 0);
  pl->wake.data = pl;
  pl->spawn.data = pl;
  pl->deadline.data = pl;
  assert_int_equal(uv_timer_start(&pl->spawn, peer_spawn_cb, 1, 1), 0);
  assert_int_equal(uv_thread_create(&pl->thread, peer_main, pl), 0);
}


static void peers_command(round_t* rd, int cmd) {
  atomic_store(&rd->peer_cmd, cmd);
  uv_async_send(&rd->pl.wake);
}


/* ---- the checks after a round ---- */

static int end_class(const sess_rec_t* rec,
                     const speer_t* p,
                     const char** why) {
  const svc_rec_t* sv = rec->svc;
  int code = atomic_load(&rec->code);
  uint64_t t_end = atomic_load(&rec->disconnected_ns);
  uint64_t t_start = 0;
  int cls;
  /* A destroy, or a stop's deadline, closes at once whatever is still
   * flushing, and the session keeps its first code (ELOCAL, EOF, ...). */
  if (atomic_load(&rec->destroy_seen)) {
    *why = "service destroyed";
    return END_FORCED;
  }
  if (atomic_load(&sv->stop_started) &&
      t_end + TIMER_SLACK_NS >=
          atomic_load(&sv->stop_ns) +
              (uint64_t)atomic_load(&sv->stop_deadline_ms) * 1000000u) {
    *why = "stop deadline";
    return END_FORCED;
  }
  switch (code) {
    case CPORT_ELOCAL:
      cls = END_CALLED;
      t_start = atomic_load(&rec->disc_ns);
      if (t_start == 0)
        note_fail("session %" PRIu64
                  ": ended ELOCAL, but nobody called disconnect",
                  rec->id);
      break;
    case CPORT_ESTOPPED:
      cls = END_CALLED;
      t_start = atomic_load(&sv->stop_ns);
      if (!atomic_load(&sv->stop_started)) {
        note_fail("session %" PRIu64
                  ": ended ESTOPPED, but its service was neither stopped nor "
                  "destroyed",
                  rec->id);
        return END_FORCED;
      }
      break;
    case UV_EOF:
      cls = END_PORT;
      t_start = p != NULL && p->fin_ns != 0 ? p->fin_ns : rec->connected_ns;
      break;
    case CPORT_EIDLE:
      cls = END_PORT;
      t_start = rec->connected_ns + (uint64_t)sv->cfg.idle_ms * 1000000u;
      break;
    default:
      *why = cport_err_name(code);
      return END_FORCED;
  }
  if (t_start == 0)
    return END_FORCED;
  /* The close began no earlier than t_start: had the flush outlived
   * disconnect_timeout_ms, it was cut. */
  if (sv->cfg.disc_timeout_ms > 0 &&
      t_end + TIMER_SLACK_NS >=
          t_start + (uint64_t)sv->cfg.disc_timeout_ms * 1000000u) {
    *why = "disconnect timeout";
    return END_FORCED;
  }
  *why = cls == END_CALLED ? "graceful (called)" : "graceful (loop)";
  return cls;
}


static int code_expected(const sess_rec_t* rec) {
  switch (atomic_load(&rec->code)) {
    case CPORT_ELOCAL:
    case CPORT_ESTOPPED:
    case CPORT_EIDLE:
    case UV_EOF:
    case UV_ECONNRESET:
    case UV_EPIPE:
    case UV_ECONNABORTED:
      return 1;
    case CPORT_ESENDQ:
      return rec->svc->cfg.policy == CPORT_SENDQ_DISCONNECT;
    default:
      return 0;
  }
}


static const bcast_t* find_bcast(const worker_t* w, uint32_t seq) {
  size_t lo = 0;
  size_t hi = w->nbcasts;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (w->bcasts[mid].seq < seq)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < w->nbcasts && w->bcasts[lo].seq == seq ? &w->bcasts[lo] : NULL;
}


/* Timings of a session's end, for failure messages. */
static const char* describe_end(const sess_rec_t* rec,
                                const speer_t* p,
                                char* buf,
                                size_t n) {
  uint64_t t0 = rec->connected_ns;
  uint64_t disc = atomic_load(&rec->disc_ns);
  uint64_t stop = atomic_load(&rec->svc->stop_ns);
  uint64_t end = atomic_load(&rec->disconnected_ns);
  snprintf(buf, n,
           "ms after on_connected: disconnect asked %.1f, stop posted %.1f, "
           "on_disconnected %.1f, peer's FIN/RST %.1f; peer read %" PRIu64
           " bytes, on_send %" PRIu64,
           disc ? (double)(disc - t0) / 1e6 : -1.0,
           stop && stop > t0 ? (double)(stop - t0) / 1e6 : -1.0,
           (double)(end - t0) / 1e6,
           p->fin_ns ? (double)(p->fin_ns - t0) / 1e6 : -1.0, p->bytes_in,
           (uint64_t)atomic_load(&rec->on_send_bytes));
  return buf;
}


/* A send `n` that did not arrive: fine if it failed, or if the session's
 * end allowed dropping it; a failure if it had to arrive. */
/* Must send `n` have arrived, after an end of class `cls`? */
static int must_arrive(const sent_t* n, int cls) {
  int req = atomic_load(&n->req);
  if (atomic_load(&n->rc) != 0)
    return 0;
  if (cls == END_CALLED)
    return (req & (REQ_CALLED | REQ_LOCAL)) != 0;
  return cls == END_PORT && (req & REQ_LOCAL) != 0;
}


/* A send `n` that did not arrive: fine if it failed, or if the session's
 * end allowed dropping it; a failure if it had to arrive. */
static void check_missing(const speer_t* p,
                          const sess_rec_t* rec,
                          const sent_t* n,
                          const char* who,
                          int cls,
                          int strict,
                          const char* how_ended,
                          const char* lingering,
                          int* missing,
                          uint32_t* first_missing,
                          int* noted) {
  char line[200];
  if (atomic_load(&n->rc) != 0)
    return;
  if (!*missing) {
    *missing = 1;
    *first_missing = n->seq;
  }
  if (!strict || !must_arrive(n, cls) || skipped("required"))
    return;
  totals.required++;
  if (*noted)
    return;
  *noted = 1;
  note_fail("session %" PRIu64
            " (peer %u, %s): %s's message %u (%s via "
            "%s%s) returned 0 before the session's end (%s, %s) but never "
            "arrived; peer end %s; %s%s",
            rec->id, p->id, peer_kind_names[p->kind], who, n->seq,
            kind_names[n->kind], kind_names[n->how],
            atomic_load(&n->req) & REQ_LOCAL ? ", on the loop" : "",
            cport_err_name(atomic_load(&rec->code)), how_ended,
            p->end_code == PEER_CLOSED_BY_US ? "closed by the peer"
                                             : cport_err_name(p->end_code),
            describe_end(rec, p, line, sizeof(line)), lingering);
}


/* What `sender` sent to `rec`, against what peer `p` got: order, gaps,
 * sends that failed, and (when `strict`) sends that must have arrived. */
static void check_sender(round_t* rd,
                         const speer_t* p,
                         const sess_rec_t* rec,
                         unsigned sender,
                         int cls,
                         int strict,
                         const char* how_ended,
                         const char* lingering) {
  const rx_t* x = &p->rx;
  const sent_t* n = rec->logs[sender].head;
  const arrival_t* prev = NULL;
  char who[32];
  size_t i;
  int missing = 0;
  uint32_t first_missing = 0;
  int gap_noted = 0;
  int required_noted = 0;
  sender_name(sender, who, sizeof(who));
  /* Order first: with messages out of order, gaps mean nothing. */
  for (i = 0; i < x->narr; i++) {
    const arrival_t* a = &x->arr[i];
    if (a->sender != sender)
      continue;
    if (prev != NULL && a->seq <= prev->seq) {
      if (!skipped("order"))
        note_fail("session %" PRIu64
                  " (peer %u): %s's message %u (%s) "
                  "arrived after its message %u (%s): not in send order",
                  rec->id, p->id, who, a->seq, kind_names[a->kind], prev->seq,
                  kind_names[prev->kind]);
      return;
    }
    prev = a;
  }
  for (i = 0; i < x->narr; i++) {
    const arrival_t* a = &x->arr[i];
    if (a->sender != sender)
      continue;
    totals.checked++;
    if (a->kind == K_BCAST) {
      const bcast_t* b = sender < MAX_WORKERS
                             ? find_bcast(&rd->workers[sender], a->seq)
                             : NULL;
      if (b == NULL || b->svc_index != rec->svc->index || b->len != a->len)
        note_fail("session %" PRIu64
                  " (peer %u): broadcast %u of %s was not "
                  "made to its service",
                  rec->id, p->id, a->seq, who);
      continue;
    }
    /* Sends the log has before this arrival did not arrive. */
    while (n != NULL && n->seq < a->seq) {
      check_missing(p, rec, n, who, cls, strict, how_ended, lingering, &missing,
                    &first_missing, &required_noted);
      n = n->next;
    }
    if (n == NULL || n->seq != a->seq) {
      note_fail("session %" PRIu64
                " (peer %u): %s's message %u (%s) arrived "
                "but was never sent to this session",
                rec->id, p->id, who, a->seq, kind_names[a->kind]);
      continue;
    }
    if (atomic_load(&n->rc) != 0) {
      note_fail("session %" PRIu64
                " (peer %u): %s's message %u (%s via %s) "
                "arrived although the send returned %s",
                rec->id, p->id, who, a->seq, kind_names[n->kind],
                kind_names[n->how], cport_err_name(atomic_load(&n->rc)));
    } else if (missing && !gap_noted && !skipped("gap")) {
      gap_noted = 1;
      note_fail("session %" PRIu64
                " (peer %u): %s's message %u is missing "
                "but its later message %u (%s) arrived",
                rec->id, p->id, who, first_missing, a->seq,
                kind_names[a->kind]);
    }
    if (strict && must_arrive(n, cls))
      totals.required++;
    if (n->len != a->len || n->kind != a->kind)
      note_fail("session %" PRIu64
                " (peer %u): %s's message %u arrived with "
                "another length or kind",
                rec->id, p->id, who, a->seq);
    n = n->next;
  }
  for (; n != NULL; n = n->next)
    check_missing(p, rec, n, who, cls, strict, how_ended, lingering, &missing,
                  &first_missing, &required_noted);
}


static void check_peer(round_t* rd, const speer_t* p, const sess_rec_t* rec) {
  char line[200];
  const char* how = "?";
  unsigned sender;
  int cls;
  int reader =
      p->kind == PK_READER || p->kind == PK_TRICKLE || p->kind == PK_HALFCLOSE;
  int clean = p->end_code == UV_EOF;
  /* A socket closed with some of the peer's bytes unread answers with an
   * RST, and its kernel drops what it had not sent yet, on_send-reported
   * bytes included; the peer's own write may take the ECONNRESET, so that
   * its read sees a plain EOF. A graceful disconnect stops reading first,
   * so any peer that writes late risks this ("lingering close"). */
  int reset = p->end_code == UV_ECONNRESET || p->write_error != 0 ||
              (rec != NULL && p->written > rec->rx_wire);
  /* cport resets a session it ends for a peer that does not read: the
   * send-queue limit under CPORT_SENDQ_DISCONNECT, and an idle timeout
   * with bytes still unsent. The kernel then drops what it held, bytes
   * on_send reported included, and libuv may show the peer an EOF. */
  int cport_reset =
      rec != NULL && (atomic_load(&rec->code) == CPORT_ESENDQ ||
                      atomic_load(&rec->code) == CPORT_EIDLE);
  char lingering[160] = "";
  int strict;
  uint64_t sent_bytes;
  if (p->rx.err[0] != 0)
    note_fail("peer %u (%s, session %" PRIu64 "): received stream corrupt %s",
              p->id, peer_kind_names[p->kind], rec != NULL ? rec->id : 0,
              p->rx.err);
  if (rec == NULL) {
    /* No session took its hello: only the stream's own order is known. */
    const arrival_t* last[MAX_SENDERS] = {NULL};
    size_t i;
    for (i = 0; i < p->rx.narr; i++) {
      const arrival_t* a = &p->rx.arr[i];
      if (last[a->sender] != NULL && a->seq <= last[a->sender]->seq &&
          !skipped("order")) {
        note_fail(
            "peer %u (no session read its hello): sender %u's message "
            "%u (%s) arrived after its message %u (%s): not in send "
            "order",
            p->id, a->sender, a->seq, kind_names[a->kind], last[a->sender]->seq,
            kind_names[last[a->sender]->kind]);
        break;
      }
      last[a->sender] = a;
    }
    return;
  }
  if (rec->svc != p->svc)
    note_fail("peer %u: its hello reached a session of another service", p->id);
  cls = end_class(rec, p, &how);
  if (reset)
    snprintf(lingering, sizeof(lingering),
             " [lingering close: the session was closed with %" PRIu64
             " of the peer's bytes unread; peer write %s]",
             p->written > rec->rx_wire ? p->written - rec->rx_wire : 0,
             cport_err_name(p->write_error));
  /* Only a peer that read everything up to the server's FIN can show that
   * nothing was lost. */
  strict = cls != END_FORCED && reader && p->rx.err[0] == 0 && !cport_reset &&
           !(reset && skipped("reset-loss"));
  for (sender = 0; sender < MAX_SENDERS; sender++)
    check_sender(rd, p, rec, sender, cls, strict, how, lingering);
  if (strict && clean && rx_partial(&p->rx))
    note_fail("session %" PRIu64
              " (peer %u, %s): the stream ends inside a "
              "message after a graceful end (%s); %s%s",
              rec->id, p->id, peer_kind_names[p->kind], how,
              describe_end(rec, p, line, sizeof(line)), lingering);
  /* Bytes on_send reported are in the kernel: a peer that read to the FIN
   * has them all, and after a graceful end nothing else. */
  sent_bytes = atomic_load(&rec->on_send_bytes);
  if (rec->svc->cfg.on_send && clean && p->rx.err[0] == 0 && !cport_reset) {
    if (p->bytes_in < sent_bytes && !(reset && skipped("reset-loss")))
      note_fail("session %" PRIu64 " (peer %u, %s): on_send reported %" PRIu64
                " bytes, the peer read %" PRIu64 " up to its EOF (%s)%s",
                rec->id, p->id, peer_kind_names[p->kind], sent_bytes,
                p->bytes_in, how, lingering);
    else if (strict && p->bytes_in != sent_bytes)
      note_fail("session %" PRIu64
                " (peer %u): graceful end (%s) but on_send "
                "reported %" PRIu64 " bytes and the peer read %" PRIu64 "%s",
                rec->id, p->id, how, sent_bytes, p->bytes_in, lingering);
  }
}


static void check_round(round_t* rd) {
  peer_loop_t* pl = &rd->pl;
  sess_rec_t** by_peer = calloc(pl->npeers + 1, sizeof(*by_peer));
  size_t i;
  assert_non_null(by_peer);
  for (i = 0; i < rd->nrecs; i++) {
    sess_rec_t* rec = rd->recs[i];
    unsigned peer = atomic_load(&rec->peer_id);
    int d = atomic_load(&rec->disconnects);
    if (d != 1)
      note_fail("session %" PRIu64 ": on_disconnected ran %d times", rec->id,
                d);
    else if (!code_expected(rec))
      note_fail("session %" PRIu64 ": unexpected disconnect code %s", rec->id,
                cport_err_name(atomic_load(&rec->code)));
    if (peer == 0)
      continue;
    if (peer > pl->npeers || by_peer[peer] != NULL) {
      note_fail("session %" PRIu64 ": hello of an unknown or taken peer %u",
                rec->id, peer);
      continue;
    }
    by_peer[peer] = rec;
  }
  for (i = 0; i < pl->npeers; i++)
    check_peer(rd, pl->peers[i], by_peer[pl->peers[i]->id]);
  for (i = 0; i < rd->nrecs; i++) {
    sess_rec_t* rec = rd->recs[i];
    unsigned peer = atomic_load(&rec->peer_id);
    int rc = atomic_load(&rec->peer_addr_rc);
    if (rc != 0 && !skipped("peer-addr"))
      note_fail("session %" PRIu64
                ": cport_session_peer_addr returned %s "
                "after on_connected (peer %u, %s)",
                rec->id, cport_err_name(rc), peer,
                peer != 0 && peer <= pl->npeers
                    ? peer_kind_names[pl->peers[peer - 1]->kind]
                    : "hello never read");
  }
  for (i = 0; i < rd->nsvcs; i++) {
    svc_rec_t* sv = &rd->svcs[i];
    int st = atomic_load(&sv->state);
    if (st != SVC_DESTROYED && st != SVC_SKIPPED)
      note_fail("service %d: not destroyed at the end of the round", sv->index);
    if (atomic_load(&sv->connected) != atomic_load(&sv->disconnected))
      note_fail("service %d: %d on_connected, %d on_disconnected", sv->index,
                atomic_load(&sv->connected), atomic_load(&sv->disconnected));
  }
  free(by_peer);
}


/* ---- one round ---- */

static void round_dump(round_t* rd) {
  unsigned i;
  int ended = 0;
  uv_mutex_lock(&rd->reg_mu);
  for (i = 0; i < rd->nrecs; i++)
    ended += atomic_load(&rd->recs[i]->disconnects) > 0;
  fprintf(stderr, "stress: %s\n", rd->desc);
  fprintf(stderr,
          "stress: state: %zu sessions (%d ended), %d jobs pending, "
          "lifecycle %s, workers done %d/%u, peers done %d\n",
          rd->nrecs, ended, atomic_load(&rd->jobs),
          atomic_load(&rd->life_busy) ? "busy" : "idle",
          atomic_load(&rd->workers_done), rd->nworkers,
          atomic_load(&rd->peers_done));
  uv_mutex_unlock(&rd->reg_mu);
  uv_mutex_lock(&rd->svc_mu);
  for (i = 0; i < rd->nsvcs; i++) {
    svc_rec_t* sv = &rd->svcs[i];
    char line[300];
    svc_describe(sv, line, sizeof(line));
    fprintf(stderr, "stress:   %s: %s, %d connected, %d ended\n", line,
            svc_state_names[atomic_load(&sv->state)],
            atomic_load(&sv->connected), atomic_load(&sv->disconnected));
  }
  uv_mutex_unlock(&rd->svc_mu);
}


static int workers_finished(round_t* rd) {
  return atomic_load(&rd->workers_done) == (int)rd->nworkers;
}


static int lifecycle_idle(round_t* rd) {
  return atomic_load(&rd->life_busy) == 0 && atomic_load(&rd->jobs) == 0;
}


static int first_service_up(round_t* rd) {
  int st = atomic_load(&rd->svcs[0].state);
  return st != SVC_NEW;
}


static int all_ended(round_t* rd) {
  unsigned i;
  int ended = atomic_load(&rd->jobs) == 0;
  for (i = 0; i < rd->nsvcs && ended; i++) {
    int st = atomic_load(&rd->svcs[i].state);
    ended = st == SVC_DESTROYED || st == SVC_SKIPPED;
  }
  uv_mutex_lock(&rd->reg_mu);
  for (i = 0; i < rd->nrecs && ended; i++)
    ended = atomic_load(&rd->recs[i]->disconnects) > 0;
  uv_mutex_unlock(&rd->reg_mu);
  return ended;
}


static int peers_finished(round_t* rd) {
  return atomic_load(&rd->peers_done);
}


static void round_free(round_t* rd) {
  size_t i;
  unsigned k;
  for (i = 0; i < rd->nrecs; i++) {
    sess_rec_t* rec = rd->recs[i];
    for (k = 0; k < MAX_SENDERS; k++) {
      sent_t* n = rec->logs[k].head;
      while (n != NULL) {
        sent_t* next = n->next;
        free(n);
        n = next;
      }
    }
    free(rec);
  }
  free(rd->recs);
  for (k = 0; k < rd->pl.npeers; k++) {
    free(rd->pl.peers[k]->out);
    free(rd->pl.peers[k]->rx.arr);
    free(rd->pl.peers[k]);
  }
  for (k = 0; k < rd->nworkers; k++) free(rd->workers[k].bcasts);
  for (k = 0; k < rd->nsvcs; k++) uv_rwlock_destroy(&rd->svcs[k].lock);
  uv_mutex_destroy(&rd->svc_mu);
  uv_mutex_destroy(&rd->reg_mu);
  signal_destroy(&rd->progress);
  free(rd);
}


/* Run round `number`; returns non-zero if it found a problem. */
static int run_round(unsigned number) {
  round_t* rd = calloc(1, sizeof(*rd));
  cport_core_opts_t copts;
  svc_cfg_t cfg;
  svc_rec_t* first;
  unsigned i;
  int failed;
  char line[300];
  long live;
  assert_non_null(rd);
  rd->index = number;
  rd->seed = opt.seed;
  rd->seed32 = (uint32_t)mix64(opt.seed ^ number);
  rng_init(&rd->rng, opt.seed, number, 0);
  signal_init(&rd->progress);
  assert_int_equal(uv_mutex_init(&rd->svc_mu), 0);
  assert_int_equal(uv_mutex_init(&rd->reg_mu), 0);

  rd->nports = (unsigned)rng_range(&rd->rng, 2, MAX_PORTS);
  rd->nworkers = (unsigned)rng_range(&rd->rng, 2, MAX_WORKERS);
  rd->round_ms = (unsigned)rng_range(&rd->rng, 150, 800);
  /* Rounds end by time; the cap only bounds a round on a fast machine. */
  rd->ops_cap = (unsigned)rng_range(&rd->rng, 20000, 400000);
  rd->lifecycle_on = rng_pct(&rd->rng, 60);
  svc_cfg_random(&rd->rng, rd->nports, &cfg);
  first = svc_rec_new(rd, &cfg);
  svc_describe(first, line, sizeof(line));
  snprintf(rd->desc, sizeof(rd->desc),
           "round %u: %u loops, %u workers, %u ms, %u ops, lifecycle %s; %s",
           number, rd->nports, rd->nworkers, rd->round_ms, rd->ops_cap,
           rd->lifecycle_on ? "on" : "off", line);
  if (opt.verbose)
    printf("stress: %s\n", rd->desc);

  rd->mem_baseline = cport__mem_live();
  cport_core_opts_init(&copts);
  copts.loops = rd->nports;
  assert_int_equal(cport_core_create(&rd->core, &copts), 0);
  assert_int_equal(cport_core_run(rd->core), 0);
  (void)job_post(rd, first->cfg.port, create_job, first);
  wait_for(rd, first_service_up, "the first service's start");

  rd->start_ns = now_ns();
  peers_start(rd);
  for (i = 0; i < rd->nworkers; i++) {
    worker_t* w = &rd->workers[i];
    w->rd = rd;
    w->index = i;
    rng_init(&w->rng, opt.seed, number, 1 + i);
    assert_int_equal(uv_thread_create(&w->thread, worker_main, w), 0);
  }

  /* The workers end by their time or operation budget. */
  wait_for(rd, workers_finished, "the workers' end");
  atomic_store(&rd->stop_workers, 1);
  for (i = 0; i < rd->nworkers; i++) {
    watchdog_arm(rd, "joining a worker");
    uv_thread_join(&rd->workers[i].thread);
    watchdog_disarm();
  }
  peers_command(rd, 1);
  wait_for(rd, lifecycle_idle, "the workers' jobs and lifecycle operations");

  /* End every service still up, by a random plan. */
  uv_mutex_lock(&rd->svc_mu);
  rd->ending = 1;
  for (i = 0; i < rd->nsvcs; i++) {
    svc_rec_t* sv = &rd->svcs[i];
    if (atomic_load(&sv->state) == SVC_LIVE)
      svc_end(rd, sv, &rd->rng,
              rng_pct(&rd->rng, 50) ? PLAN_STOP : PLAN_DESTROY);
  }
  uv_mutex_unlock(&rd->svc_mu);
  wait_for(rd, all_ended,
           "every service's destroy and every session's on_disconnected");

  peers_command(rd, 2);
  wait_for(rd, peers_finished, "the peers' end");
  watchdog_arm(rd, "joining the peers' thread");
  uv_thread_join(&rd->pl.thread);
  watchdog_disarm();

  watchdog_arm(rd, "cport_core_stop and cport_core_join");
  assert_int_equal(cport_core_stop(rd->core), 0);
  assert_int_equal(cport_core_join(rd->core), 0);
  watchdog_disarm();

  check_round(rd);

  for (i = 0; i < rd->nrecs; i++) cport_session_unref(rd->recs[i]->s);
  watchdog_arm(rd, "cport_core_destroy");
  cport_core_destroy(rd->core);
  watchdog_disarm();
  live = cport__mem_live();
  if (live != rd->mem_baseline)
    note_fail(
        "cport__mem_live() is %ld after cport_core_destroy, %ld before "
        "the round",
        live, rd->mem_baseline);

  totals.rounds++;
  totals.sessions += rd->nrecs;
  totals.peers += rd->pl.npeers;
  for (i = 0; i < rd->nworkers; i++) {
    totals.ops += rd->workers[i].ops;
    totals.sends_ok += rd->workers[i].sends_ok;
    totals.sends_sendq += rd->workers[i].sends_sendq;
    totals.sends_notconn += rd->workers[i].sends_notconn;
  }
  if (opt.verbose) {
    unsigned long ops = 0;
    unsigned long ok = 0;
    unsigned long sendq = 0;
    unsigned long notconn = 0;
    for (i = 0; i < rd->nworkers; i++) {
      ops += rd->workers[i].ops;
      ok += rd->workers[i].sends_ok;
      sendq += rd->workers[i].sends_sendq;
      notconn += rd->workers[i].sends_notconn;
    }
    printf(
        "stress: round %u: %zu sessions, %u peers, %lu operations, "
        "worker sends %lu ok, %lu ESENDQ, %lu other\n",
        number, rd->nrecs, rd->pl.npeers, ops, ok, sendq, notconn);
  }
  failed = fail_count() > 0;
  if (failed) {
    fprintf(stderr,
            "stress: FAIL seed %" PRIu64
            " round %u: %d problem(s)\n"
            "stress: replay with CPORT_STRESS_SEED=%" PRIu64
            " CPORT_STRESS_ROUND=%u\n",
            opt.seed, number, fail_count(), opt.seed, number);
    round_dump(rd);
    print_fails();
  }
  round_free(rd);
  return failed;
}


static void test_stress_random_rounds(void** state) {
  uint64_t start = now_ns();
  uint64_t budget = (uint64_t)(opt.seconds * 1e9);
  unsigned nround = opt.first_round;
  int failed = 0;
  (void)state;
  while (nround < opt.first_round + opt.max_rounds &&
         (nround == opt.first_round || now_ns() - start < budget)) {
    failed = run_round(nround);
    if (failed)
      break;
    nround++;
  }
  printf("stress: seed %" PRIu64
         ": %lu rounds in %.1f s, %lu sessions, %lu "
         "peers, %lu operations, worker sends %lu ok, %lu ESENDQ, %lu "
         "other; %lu messages checked, %lu had to arrive; %lu callbacks "
         "under way on other loops as a destroy returned: %s\n",
         opt.seed, totals.rounds, (double)(now_ns() - start) / 1e9,
         totals.sessions, totals.peers, totals.ops, totals.sends_ok,
         totals.sends_sendq, totals.sends_notconn, totals.checked,
         totals.required, (unsigned long)atomic_load(&totals.under_way),
         failed ? "FAILED" : "passed");
  fflush(stdout);
  if (failed)
    fail_msg("stress: seed %" PRIu64 " round %u failed (see above)", opt.seed,
             nround);
}


int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_stress_random_rounds),
  };
  const char* seed = getenv("CPORT_STRESS_SEED");
  const char* seconds = getenv("CPORT_STRESS_SECONDS");
  const char* verbose = getenv("CPORT_STRESS_VERBOSE");
  int rc;
  if (seed != NULL && *seed != 0)
    opt.seed = env_number("CPORT_STRESS_SEED", 0);
  else
    opt.seed = mix64(uv_hrtime() ^ ((uint64_t)time(NULL) << 20) ^
                     (uint64_t)uv_os_getpid()) %
                   1000000000u +
               1;
  opt.seconds = seconds != NULL && *seconds != 0 ? atof(seconds) : 5.0;
  opt.max_rounds = (unsigned)env_number("CPORT_STRESS_ROUNDS", 100000);
  opt.first_round = (unsigned)env_number("CPORT_STRESS_ROUND", 0);
  opt.verbose = verbose != NULL && *verbose != 0 && *verbose != '0';
  opt.skip = getenv("CPORT_STRESS_SKIP");
  /* cport does not linger after a graceful close (docs/design.md, section
   * 7): a peer still writing when the socket closes gets an RST, and its
   * kernel may drop bytes cport had written. Until it does, those losses
   * are not counted unless asked for (CPORT_STRESS_SKIP set, even empty). */
  if (opt.skip == NULL)
    opt.skip = "reset-loss";
  printf("stress: seed %" PRIu64 " (replay with CPORT_STRESS_SEED=%" PRIu64
         ")\n",
         opt.seed, opt.seed);
  if (opt.skip[0] != 0)
    printf("stress: not checked: %s (CPORT_STRESS_SKIP= checks all)\n",
           opt.skip);
  fflush(stdout);
  assert_int_equal(uv_mutex_init(&fails.mu), 0);
  assert_int_equal(uv_mutex_init(&wd.mu), 0);
  assert_int_equal(uv_cond_init(&wd.cv), 0);
  assert_int_equal(uv_thread_create(&wd.thread, watchdog_main, NULL), 0);
  rc = cmocka_run_group_tests_name("stress", tests, NULL, NULL);
  uv_mutex_lock(&wd.mu);
  wd.quit = 1;
  uv_cond_signal(&wd.cv);
  uv_mutex_unlock(&wd.mu);
  uv_thread_join(&wd.thread);
  uv_cond_destroy(&wd.cv);
  uv_mutex_destroy(&wd.mu);
  uv_mutex_destroy(&fails.mu);
  return rc;
}
