/* echo_client: a cport client service that checks an echo server, and a
 * small load generator.
 *
 *   echo_client --host ADDR --port N [--sessions N] [--threads N]
 *               [--messages N | --seconds S] [--size BYTES]
 *               [--timeout SECONDS] [--text]
 *               [--tls | --tls-ca FILE | --tls-insecure] [--tls-name NAME]
 *               [--tls-cert FILE --tls-key FILE]
 *
 * Each session sends a message, waits for its whole echo, compares it byte
 * for byte, and repeats: --messages times, or with --seconds until S
 * seconds (fractions allowed) have passed since every session connected,
 * when it finishes the message in flight and stops. Prints one summary line
 * on stdout:
 *
 *   sessions=N messages=N bytes=N seconds=S msg/s=N MiB/s=N errors=N
 *   threads=N p50_us=U p99_us=U max_us=U
 *
 * A message's latency runs from its send to the last byte of its echo; the
 * percentiles come from a histogram (within about 3%), the maximum is exact.
 * Exits 0 only if every session connected and every echo matched, 1
 * otherwise, 2 on bad arguments.
 *
 * --text sends lines of letters and digits, each ending in '\n', instead
 * of any bytes, for echo servers that work line by line (gnutls-serv
 * --echo).
 *
 * --tls talks TLS, verifying the server's certificate against the
 * system's CAs and the name in --host (or --tls-name); --tls-ca FILE
 * trusts those CAs instead; --tls-insecure verifies nothing (tests only).
 * --tls-cert and --tls-key present a client certificate. A failed connect
 * prints the code's name and text, "ETLSNAME: TLS peer certificate does
 * not match the host name" for a certificate for another name.
 *
 * Design notes. --threads N runs N loops, one loop thread each. A client
 * service's sessions all live on its own loop, so there is one service per
 * loop, and the sessions are split among them (the first loops get one more
 * when N does not divide them). Every callback of a session runs on its
 * loop's thread, so each loop keeps its counters and latency histogram
 * without a lock, and main() adds them up after cport_core_join(). Only two
 * things cross loops, as atomics: the count of settled connects, whose last
 * one posts the start of every loop's --seconds timer (one timer per loop,
 * not per session), and the count of finished loops, whose last one stops
 * the core. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "cport/cport.h"
#include "example_args.h"

#define DEFAULT_TIMEOUT_MS 60000

/* Latency histogram in nanoseconds, log-linear: bucket 0 holds everything
 * under 2^10 ns (about 1 us), then each power of two up to 2^36 ns (about
 * 69 s) splits into 16 buckets, none wider than 6.25% of its values; longer
 * latencies land in the last bucket. Recording is one increment, so every
 * message counts, at 3.3 KiB per loop. */
#define HIST_FIRST_BITS 10
#define HIST_LAST_BITS 36
#define HIST_SUB_BITS 4
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS (1 + (HIST_LAST_BITS - HIST_FIRST_BITS) * HIST_SUB)

typedef struct hist_s {
  uint64_t counts[HIST_BUCKETS];
  uint64_t n;
  uint64_t max_ns; /* exact */
} hist_t;

typedef struct client_loop_s client_loop_t;

/* Shared by every loop: set before cport_core_run(), read-only afterwards
 * except for the atomics and timed_out. */
typedef struct client_s {
  cport_core_t* core;
  client_loop_t* loops;
  size_t size;
  int text;             /* --text */
  long sessions;        /* in all */
  long messages;        /* per session; 0 with --seconds */
  uint64_t duration_ms; /* --seconds */
  unsigned busy_ports;  /* loops 0..busy_ports-1 have sessions */
  atomic_long settled;  /* sessions that connected or failed to */
  atomic_uint ports_done;
  atomic_int reported; /* the first failure has been printed */
  int timed_out;       /* written by loop 0's thread */
  /* Set by main() once the loop threads are gone: callbacks that still run
   * inside cport_core_destroy() must neither post nor stop the core. */
  int joined;
} client_t;

/* One loop: its client service and what its sessions count. Only the
 * loop's thread touches it until cport_core_join(). */
struct client_loop_s {
  client_t* c;
  cport_service_t* svc;
  long sessions;
  long finished; /* sessions that ended, well or not */
  long errors;
  uint64_t echoed; /* messages whose echo matched */
  int ending;      /* --seconds are up: finish the message in flight */
  hist_t hist;
};

/* Per-session state, in the session's user area. */
typedef struct conn_s {
  uint8_t* message; /* the message in flight, to compare the echo with */
  size_t matched;   /* bytes of its echo received and equal so far */
  uint64_t sent;    /* messages sent */
  uint64_t sent_ns; /* uv_hrtime() when the message in flight was sent */
  int done;
} conn_t;


static client_loop_t* loop_of(cport_session_t* s) {
  return cport_service_get_data(cport_session_service(s));
}


static unsigned msb64(uint64_t v) {
#if defined(__GNUC__) || defined(__clang__)
  return 63u - (unsigned)__builtin_clzll(v);
#else
  unsigned n = 0;
  while (v >>= 1) n++;
  return n;
#endif
}


static void hist_record(hist_t* h, uint64_t ns) {
  size_t i;
  if (ns < ((uint64_t)1 << HIST_FIRST_BITS)) {
    i = 0;
  } else if (ns >= ((uint64_t)1 << HIST_LAST_BITS)) {
    i = HIST_BUCKETS - 1;
  } else {
    unsigned octave = msb64(ns);
    size_t sub = (size_t)(ns >> (octave - HIST_SUB_BITS)) - HIST_SUB;
    i = 1 + (size_t)(octave - HIST_FIRST_BITS) * HIST_SUB + sub;
  }
  h->counts[i]++;
  h->n++;
  if (ns > h->max_ns)
    h->max_ns = ns;
}


static void hist_merge(hist_t* into, const hist_t* from) {
  size_t i;
  for (i = 0; i < HIST_BUCKETS; i++) into->counts[i] += from->counts[i];
  into->n += from->n;
  if (from->max_ns > into->max_ns)
    into->max_ns = from->max_ns;
}


/* The middle of the bucket holding the value of rank ceil(q * n), but never
 * above the exact maximum, so that p50 <= p99 <= max always holds. */
static uint64_t hist_quantile(const hist_t* h, double q) {
  uint64_t rank;
  uint64_t seen = 0;
  uint64_t low;
  uint64_t width;
  uint64_t mid;
  size_t i;
  if (h->n == 0)
    return 0;
  rank = (uint64_t)(q * (double)h->n);
  if ((double)rank < q * (double)h->n)
    rank++;
  if (rank == 0)
    rank = 1;
  for (i = 0; i < HIST_BUCKETS - 1; i++) {
    seen += h->counts[i];
    if (seen >= rank)
      break;
  }
  if (i == 0) {
    low = 0;
    width = (uint64_t)1 << HIST_FIRST_BITS;
  } else {
    unsigned octave = HIST_FIRST_BITS + (unsigned)((i - 1) / HIST_SUB);
    width = (uint64_t)1 << (octave - HIST_SUB_BITS);
    low = (HIST_SUB + (uint64_t)((i - 1) % HIST_SUB)) * width;
  }
  mid = low + width / 2;
  return mid < h->max_ns ? mid : h->max_ns;
}


/* Print only the first failure: one cause (a server that is gone, say)
 * usually fails every session, on every loop. */
static int first_report(client_t* c) {
  return atomic_exchange(&c->reported, 1) == 0;
}


/* Every message differs, so an echo from the wrong session or an old
 * message cannot pass the comparison. With `text`, one line of letters and
 * digits. */
static void fill_message(
    uint8_t* buf, size_t len, uint64_t session, uint64_t seq, int text) {
  static const char alnum[] =
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  uint32_t x = (uint32_t)(session * 2654435761u) ^ (uint32_t)seq ^ 0x9e3779b9u;
  size_t i;
  for (i = 0; i < len; i++) {
    x = x * 1103515245u + 12345u;
    buf[i] = text ? (uint8_t)alnum[(x >> 16) % 62] : (uint8_t)(x >> 16);
  }
  if (text)
    buf[len - 1] = '\n';
}


static void send_next(cport_session_t* s) {
  client_t* c = loop_of(s)->c;
  conn_t* conn = cport_session_user(s);
  int rc;
  fill_message(conn->message, c->size, cport_session_id(s), conn->sent,
               c->text);
  conn->matched = 0;
  conn->sent_ns = uv_hrtime();
  rc = cport_session_send(s, conn->message, c->size);
  if (rc != 0) {
    cport_session_disconnect(s, cport_strerror(rc));
    return;
  }
  conn->sent++;
}


/* The --seconds are up on this loop: each session finishes the message in
 * flight. Runs on the loop's thread; harmless once its sessions are done. */
static void end_timer_cb(cport_timer_t* timer, void* arg) {
  client_loop_t* p = arg;
  (void)timer;
  p->ending = 1;
}


/* A session connected or failed to. After the last one, on whichever loop,
 * every loop gets its --seconds timer: a one-shot cport timer, started from
 * this thread and run on that loop's, that nobody needs to cancel (a core
 * destroyed first closes it unrun). */
static void session_settled(client_loop_t* p) {
  client_t* c = p->c;
  unsigned i;
  int rc;
  if (c->messages > 0 || c->joined)
    return;
  if (atomic_fetch_add(&c->settled, 1) + 1 != c->sessions)
    return;
  for (i = 0; i < c->busy_ports; i++) {
    rc = cport_timer_start(c->core, i, c->duration_ms, 0, end_timer_cb,
                           &c->loops[i], NULL);
    if (rc != 0) {
      if (first_report(c))
        fprintf(stderr, "echo_client: cannot start the clock on loop %u: %s\n",
                i, cport_strerror(rc));
      p->errors++;
      cport_core_stop(c->core);
      return;
    }
  }
}


/* A session ended, well or not. The last one of the last busy loop stops
 * the core. */
static void session_finished(client_loop_t* p) {
  client_t* c = p->c;
  if (++p->finished < p->sessions || c->joined)
    return;
  if (atomic_fetch_add(&c->ports_done, 1) + 1 == c->busy_ports)
    cport_core_stop(c->core);
}


static void on_connected(cport_session_t* s) {
  client_loop_t* p = loop_of(s);
  conn_t* conn = cport_session_user(s);
  session_settled(p);
  conn->message = malloc(p->c->size);
  if (conn->message == NULL) {
    cport_session_disconnect(s, "out of memory");
    return;
  }
  send_next(s);
}


static size_t on_recv(cport_session_t* s, const uint8_t* data, size_t len) {
  client_loop_t* p = loop_of(s);
  client_t* c = p->c;
  conn_t* conn = cport_session_user(s);
  size_t want = c->size - conn->matched;
  int more;
  if (len > want || memcmp(data, conn->message + conn->matched, len) != 0) {
    cport_session_disconnect(s, "echo mismatch");
    return len;
  }
  conn->matched += len;
  if (conn->matched == c->size) {
    hist_record(&p->hist, uv_hrtime() - conn->sent_ns);
    p->echoed++;
    more = c->messages > 0 ? conn->sent < (uint64_t)c->messages : !p->ending;
    if (more) {
      send_next(s);
    } else {
      conn->done = 1;
      cport_session_disconnect(s, "done");
    }
  }
  return len;
}


static void on_disconnected(cport_session_t* s, int code, const char* cause) {
  client_loop_t* p = loop_of(s);
  conn_t* conn = cport_session_user(s);
  (void)code;
  if (!conn->done) {
    p->errors++;
    if (first_report(p->c))
      fprintf(stderr, "echo_client: session %llu ended early: %s\n",
              (unsigned long long)cport_session_id(s), cause);
  }
  free(conn->message);
  conn->message = NULL;
  session_finished(p);
}


static void on_connect_failed(cport_service_t* svc, int code) {
  client_loop_t* p = cport_service_get_data(svc);
  p->errors++;
  if (first_report(p->c))
    fprintf(stderr, "echo_client: connect failed: %s: %s\n",
            cport_err_name(code), cport_strerror(code));
  session_settled(p);
  session_finished(p);
}


static void usage(FILE* out) {
  fprintf(out,
          "usage: echo_client --host ADDR --port N | --unix PATH | --pipe "
          "NAME\n"
          "                   [--sessions N] [--threads N]\n"
          "                   [--messages N | --seconds S] [--size BYTES]\n"
          "                   [--timeout SECONDS]\n"
          "  --unix PATH       connect to a Unix domain socket (@NAME: "
          "abstract)\n"
          "  --pipe NAME       connect to a Windows named pipe, "
          "\\\\.\\pipe\\NAME\n"
          "  --sessions N      concurrent sessions, split over the threads "
          "(default 1)\n"
          "  --threads N       loops, one thread and client service "
          "each\n"
          "                    (default 1, at most %d)\n"
          "  --messages N      messages per session (default 1000)\n"
          "  --seconds S       instead of --messages: keep sending for S "
          "seconds (a\n"
          "                    positive number, e.g. 0.5), counted from when "
          "every\n"
          "                    session has connected; each session then "
          "finishes its\n"
          "                    message in flight\n"
          "  --size BYTES      bytes per message (default 64)\n"
          "  --text            messages are lines of letters and digits "
          "(for line\n"
          "                    based echo servers)\n"
          "  --timeout SECONDS give up after this long from the start "
          "(default 60,\n"
          "                    or S + 60 with --seconds)\n"
          "  --tls             TLS, the server verified against the "
          "system's CAs\n"
          "  --tls-ca FILE     TLS, the server verified against these CAs "
          "(PEM)\n"
          "  --tls-insecure    TLS, the server not verified at all (tests "
          "only)\n"
          "  --tls-name NAME   the name to send and verify (default: "
          "--host)\n"
          "  --tls-cert FILE   a client certificate chain (PEM), with\n"
          "  --tls-key FILE    its private key (PEM)\n"
          "Prints one line: sessions= messages= bytes= seconds= msg/s= "
          "MiB/s= errors=\n"
          "threads= p50_us= p99_us= max_us= (a message's latency runs from "
          "its send\n"
          "to the last byte of its echo)\n",
          CPORT_CORE_MAX_LOOPS);
}


static void on_timeout(cport_timer_t* timer, void* arg) {
  client_t* c = arg;
  (void)timer;
  fprintf(stderr, "echo_client: timed out\n");
  c->timed_out = 1;
  cport_core_stop(c->core);
}


int main(int argc, char** argv) {
  const char* host = NULL;
  const char* local = NULL; /* --unix or --pipe */
  long port = -1;
  long size = 64;
  long sessions = 1;
  long messages = 1000;
  long threads = 1;
  long timeout_s = 0;
  double seconds = 0; /* > 0: duration mode */
  int have_messages = 0;
  int text = 0;
  uint64_t timeout_ms;
  client_t c;
  client_loop_t* loops = NULL;
  hist_t all;
  cport_addr_t addr;
  cport_core_opts_t core_opts;
  cport_service_opts_t opts;
  example_tls_t tls;
  cport_tls_t* tls_ctx;
  const char* err;
  cport_timer_t* timer = NULL;
  uint64_t start_ns;
  uint64_t echoed = 0;
  long finished = 0;
  long errors = 0;
  double elapsed;
  unsigned n;
  unsigned j;
  int taken;
  int i;
  int rc;

  memset(&tls, 0, sizeof(tls));
  /* Options come in pairs, a name and its value, but for the flags
   * --text, --tls and --tls-insecure. */
  for (i = 1; i < argc; i += taken) {
    const char* value = i + 1 < argc ? argv[i + 1] : NULL;
    taken = 2;
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      usage(stdout);
      return 0;
    } else if (strcmp(argv[i], "--host") == 0 && value != NULL) {
      host = value;
    } else if ((strcmp(argv[i], "--unix") == 0 ||
                strcmp(argv[i], "--pipe") == 0) &&
               value != NULL) {
      local = value;
    } else if (strcmp(argv[i], "--port") == 0 &&
               example_parse_long(value, 1, 65535, &port) == 0) {
    } else if (strcmp(argv[i], "--sessions") == 0 &&
               example_parse_long(value, 1, 1000000, &sessions) == 0) {
    } else if (strcmp(argv[i], "--threads") == 0 &&
               example_parse_long(value, 1, CPORT_CORE_MAX_LOOPS, &threads) ==
                   0) {
    } else if (strcmp(argv[i], "--messages") == 0 &&
               example_parse_long(value, 1, 1000000000, &messages) == 0) {
      have_messages = 1;
    } else if (strcmp(argv[i], "--seconds") == 0 &&
               example_parse_double(value, 0, 86400, &seconds) == 0 &&
               seconds > 0) {
    } else if (strcmp(argv[i], "--size") == 0 &&
               example_parse_long(value, 1, 64L * 1024 * 1024, &size) == 0) {
    } else if (strcmp(argv[i], "--timeout") == 0 &&
               example_parse_long(value, 1, 86400, &timeout_s) == 0) {
    } else if (strcmp(argv[i], "--text") == 0) {
      text = 1;
      taken = 1;
    } else if ((taken = example_tls_option(&tls, CPORT_TLS_CLIENT, argv[i],
                                           value)) > 0) {
    } else {
      fprintf(stderr, "echo_client: bad argument '%s'%s%s\n", argv[i],
              value != NULL ? " " : "", value != NULL ? value : "");
      usage(stderr);
      return 2;
    }
  }
  if (local != NULL && (host != NULL || port >= 0)) {
    fprintf(stderr, "echo_client: --unix or --pipe replaces --host and "
                    "--port\n");
    usage(stderr);
    return 2;
  }
  if (local == NULL && (host == NULL || port < 0)) {
    fprintf(stderr, "echo_client: --host and --port are required\n");
    usage(stderr);
    return 2;
  }
  if (have_messages && seconds > 0) {
    fprintf(stderr,
            "echo_client: --messages and --seconds exclude each other\n");
    usage(stderr);
    return 2;
  }
  if (seconds > 0 && timeout_s > 0 && seconds >= (double)timeout_s) {
    fprintf(stderr, "echo_client: --seconds must be shorter than --timeout\n");
    usage(stderr);
    return 2;
  }
  if ((err = example_tls_check(&tls, CPORT_TLS_CLIENT)) != NULL) {
    fprintf(stderr, "echo_client: %s\n", err);
    usage(stderr);
    return 2;
  }
  /* A name is kept as a name: each service looks it up as it connects,
   * and races its addresses (Happy Eyeballs), so a name whose IPv6 route
   * is broken still connects over IPv4. */
  if (local != NULL) {
    rc = cport_addr_parse_local(&addr, local);
    if (rc != 0) {
      fprintf(stderr, "echo_client: bad local path '%s': %s\n", local,
              cport_strerror(rc));
      usage(stderr);
      return 2;
    }
  } else if (cport_addr_parse(&addr, host, (int)port) != 0) {
    fprintf(stderr, "echo_client: bad address '%s'\n", host);
    usage(stderr);
    return 2;
  }
  /* Says why on stderr if it fails. */
  if (example_tls_create(&tls, CPORT_TLS_CLIENT, "echo_client", &tls_ctx) != 0)
    return 1;

  memset(&c, 0, sizeof(c));
  atomic_init(&c.settled, 0);
  atomic_init(&c.ports_done, 0);
  atomic_init(&c.reported, 0);
  c.size = (size_t)size;
  c.text = text;
  c.sessions = sessions;
  c.messages = seconds > 0 ? 0 : messages;
  c.duration_ms = (uint64_t)(seconds * 1000.0 + 0.5);
  if (timeout_s > 0)
    timeout_ms = (uint64_t)timeout_s * 1000;
  else if (seconds > 0)
    timeout_ms = c.duration_ms + DEFAULT_TIMEOUT_MS;
  else
    timeout_ms = DEFAULT_TIMEOUT_MS;
  n = (unsigned)threads;
  c.busy_ports = sessions < threads ? (unsigned)sessions : n;
  loops = calloc(n, sizeof(*loops));
  if (loops == NULL) {
    fprintf(stderr, "echo_client: out of memory\n");
    cport_tls_unref(tls_ctx);
    return 1;
  }
  c.loops = loops;

  cport_core_opts_init(&core_opts);
  core_opts.loops = n;
  rc = cport_core_create(&c.core, &core_opts);
  if (rc != 0) {
    fprintf(stderr, "echo_client: %s\n", cport_strerror(rc));
    free(loops);
    cport_tls_unref(tls_ctx);
    return 1;
  }
  /* Until cport_core_run() this thread owns every loop, so the services,
   * their timers and the safety timer are all set up from here. */
  cport_service_opts_init(&opts);
  opts.cbs.on_connected = on_connected;
  opts.cbs.on_recv = on_recv;
  opts.cbs.on_disconnected = on_disconnected;
  opts.cbs.on_connect_failed = on_connect_failed;
  opts.user_size = sizeof(conn_t);
  opts.tls = tls_ctx; /* NULL: plain TCP */
  opts.tls_name = tls.name;
  for (j = 0; j < n; j++) {
    client_loop_t* p = &loops[j];
    p->c = &c;
    p->sessions = sessions / threads + ((long)j < sessions % threads ? 1 : 0);
  }
  for (j = 0; j < c.busy_ports && rc == 0; j++) {
    opts.loop = j;
    opts.connect_count = (unsigned)loops[j].sessions;
    opts.data = &loops[j];
    rc = cport_service_create(&loops[j].svc, c.core, CPORT_SERVICE_CLIENT,
                              &addr, &opts);
  }
  cport_tls_unref(tls_ctx); /* each service holds its own reference */
  start_ns = uv_hrtime();
  if (rc == 0)
    rc = cport_timer_start(c.core, 0, timeout_ms, 0, on_timeout, &c, &timer);
  if (rc == 0) {
    for (j = 0; j < c.busy_ports && rc == 0; j++)
      rc = cport_service_start(loops[j].svc);
  }
  if (rc == 0)
    rc = cport_core_run(c.core);
  if (rc == 0) {
    cport_core_join(c.core);
  } else {
    if (first_report(&c))
      fprintf(stderr, "echo_client: %s\n", cport_strerror(rc));
    errors++;
  }
  c.joined = 1;
  elapsed = (double)(uv_hrtime() - start_ns) / 1e9;

  memset(&all, 0, sizeof(all));
  for (j = 0; j < n; j++) {
    echoed += loops[j].echoed;
    finished += loops[j].finished;
    errors += loops[j].errors;
    hist_merge(&all, &loops[j].hist);
  }
  if (c.timed_out)
    errors++;
  printf(
      "sessions=%ld messages=%llu bytes=%llu seconds=%.3f msg/s=%.0f "
      "MiB/s=%.2f errors=%ld threads=%u p50_us=%.1f p99_us=%.1f "
      "max_us=%.1f\n",
      sessions, (unsigned long long)echoed,
      (unsigned long long)(echoed * c.size), elapsed,
      elapsed > 0 ? (double)echoed / elapsed : 0.0,
      elapsed > 0 ? (double)(echoed * c.size) / elapsed / 1048576.0 : 0.0,
      errors, n, (double)hist_quantile(&all, 0.50) / 1e3,
      (double)hist_quantile(&all, 0.99) / 1e3, (double)all.max_ns / 1e3);
  fflush(stdout);

  /* The loop threads are gone: this thread owns every loop again. */
  if (timer != NULL)
    cport_timer_cancel(timer);
  for (j = 0; j < n; j++) cport_service_destroy(loops[j].svc);
  cport_core_destroy(c.core);
  free(loops);
  if (errors != 0 || finished != sessions)
    return 1;
  if (c.messages > 0 && echoed != (uint64_t)sessions * (uint64_t)c.messages)
    return 1;
  return 0;
}
