/* echo_server: a cport server that sends back every byte it receives.
 *
 *   echo_server [--host ADDR] [--port N] [--threads N] [--max-sessions N]
 *               [--idle-timeout MS] [--stats-every SECONDS]
 *               [--tls-cert FILE --tls-key FILE [--tls-ca FILE]]
 *
 * Prints "listening on HOST:PORT" once ready. SIGINT or SIGTERM stops it
 * gracefully: no new connections, every session flushed and closed (or cut
 * off after two seconds if its peer does not read), a summary line, exit 0.
 * A peer that sends but never reads is simply no longer read once a
 * megabyte is queued for it (CPORT_SENDQ_PAUSE_READ), so memory stays
 * bounded.
 *
 * --threads N runs N loops; the server spreads its connections over them in
 * turn, and each session lives on its loop's thread. Loop 0 runs on the main
 * thread (cport_core_run_here), each other loop on a thread of its own, so
 * the default single loop adds no thread. --idle-timeout MS disconnects
 * sessions that send nothing for that long (slow or dead peers). The service's
 * counters are printed as one "stats" line on exit, and every SECONDS with
 * --stats-every.
 *
 * --tls-cert and --tls-key serve TLS instead of plain TCP: the echo is the
 * same, cport does the handshake and the encryption (tls.h). --tls-ca
 * then also requires each client to present a certificate issued by one
 * of those CAs. */
#include <stdio.h>
#include <string.h>

#include "cport/cport.h"
#include "example_args.h"

#define STOP_DEADLINE_MS 2000

typedef struct server_s {
  cport_core_t* core;
  cport_service_t* svc;
  cport_timer_t* stats_timer; /* NULL without --stats-every */
} server_t;


/* One line of the service's counters (any thread may read them). */
static void print_stats(cport_service_t* svc) {
  cport_service_stats_t st;
  if (cport_service_stats(svc, &st) != 0)
    return;
  printf(
      "echo_server: stats connected=%llu rejected=%llu accept_errors=%llu "
      "active=%llu peak=%llu bytes_in=%llu bytes_out=%llu sends=%llu "
      "writes=%llu queued_bytes=%llu pauses=%llu disconnect_timeouts=%llu "
      "disconnects: peer=%llu reset=%llu idle=%llu backpressure=%llu "
      "protocol=%llu local=%llu other=%llu\n",
      (unsigned long long)st.connected, (unsigned long long)st.rejected,
      (unsigned long long)st.accept_errors, (unsigned long long)st.active,
      (unsigned long long)st.peak, (unsigned long long)st.bytes_in,
      (unsigned long long)st.bytes_out, (unsigned long long)st.sends,
      (unsigned long long)st.writes, (unsigned long long)st.queued_bytes,
      (unsigned long long)st.pauses, (unsigned long long)st.disconnect_timeouts,
      (unsigned long long)st.disconnects_peer,
      (unsigned long long)st.disconnects_reset,
      (unsigned long long)st.disconnects_idle,
      (unsigned long long)st.disconnects_backpressure,
      (unsigned long long)st.disconnects_protocol,
      (unsigned long long)st.disconnects_local,
      (unsigned long long)st.disconnects_other);
  fflush(stdout);
}


static void on_stats_timer(cport_timer_t* timer, void* arg) {
  server_t* server = arg;
  (void)timer;
  print_stats(server->svc);
}


static size_t echo_on_recv(cport_session_t* s,
                           const uint8_t* data,
                           size_t len) {
  int rc = cport_session_send(s, data, len);
  /* At the send-queue limit keep the bytes: they are presented again, with
   * whatever arrives next, once reading resumes. */
  if (rc == CPORT_ESENDQ)
    return 0;
  return len;
}


/* Listen, run until SIGINT or SIGTERM has stopped the service and the
 * core, print the summary. Returns 0 or the first error, reported. */
static int serve(server_t* server, cport_addr_t* addr, long stats_every) {
  cport_service_stats_t stats;
  char text[CPORT_ADDR_STRLEN];
  int rc = cport_service_start(server->svc);
  if (rc != 0) {
    cport_addr_format(addr, text, sizeof(text));
    fprintf(stderr, "echo_server: cannot listen on %s: %s\n", text,
            cport_strerror(rc));
    return rc;
  }
  /* Watch the signals first: whoever reads "listening on" may signal at
   * once. The first SIGINT or SIGTERM stops the service gracefully (its
   * sessions flushed, or cut off at the deadline), then the core; a
   * second one stops the core at once. */
  rc = cport_core_stop_on_signals(server->core, STOP_DEADLINE_MS, NULL, NULL);
  if (rc == 0 && stats_every > 0)
    rc = cport_timer_start(server->core, 0, (uint64_t)stats_every * 1000,
                           (uint64_t)stats_every * 1000, on_stats_timer, server,
                           &server->stats_timer);
  if (rc == 0)
    rc = cport_service_local_addr(server->svc, addr);
  if (rc == 0) {
    cport_addr_format(addr, text, sizeof(text));
    printf("listening on %s\n", text);
    if (cport_core_loops(server->core) > 1)
      fprintf(stderr, "echo_server: %u threads\n",
              cport_core_loops(server->core));
    fflush(stdout);
    /* Returns once a signal has stopped the service and the core. */
    rc = cport_core_run_here(server->core);
  }
  if (server->stats_timer != NULL)
    cport_timer_cancel(server->stats_timer);
  if (rc != 0) {
    fprintf(stderr, "echo_server: %s\n", cport_strerror(rc));
    return rc;
  }
  if (cport_service_stats(server->svc, &stats) == 0)
    printf(
        "echo_server: served %llu sessions, echoed %llu bytes, "
        "rejected %llu\n",
        (unsigned long long)stats.connected,
        (unsigned long long)stats.bytes_out,
        (unsigned long long)stats.rejected);
  print_stats(server->svc);
  return 0;
}


static void usage(FILE* out) {
  fprintf(out,
          "usage: echo_server [--host ADDR] [--port N] [--threads N] "
          "[--max-sessions N]\n"
          "  --host ADDR         address to listen on (default 127.0.0.1)\n"
          "  --port N            TCP port, 0 for any free one (default 7777)\n"
          "  --threads N         loops, one thread each (default 1, "
          "at most %d)\n"
          "  --max-sessions N    most concurrent sessions, 0 = no limit "
          "(default 10000)\n"
          "  --idle-timeout MS   disconnect a session silent for MS "
          "milliseconds, 0 = never (default 0)\n"
          "  --stats-every S     print the stats line every S seconds, "
          "0 = only on exit (default 0)\n"
          "  --tls-cert FILE     serve TLS with this certificate chain "
          "(PEM, leaf first)\n"
          "  --tls-key FILE      and its private key (PEM)\n"
          "  --tls-ca FILE       require client certificates issued by "
          "these CAs (PEM)\n",
          CPORT_CORE_MAX_LOOPS);
}


int main(int argc, char** argv) {
  const char* host = "127.0.0.1";
  long port = 7777;
  long threads = 1;
  long max_sessions = 10000;
  long idle_timeout = 0;
  long stats_every = 0;
  server_t server;
  cport_addr_t addr;
  cport_core_opts_t core_opts;
  cport_service_opts_t opts;
  example_tls_t tls;
  const char* err;
  int i;
  int rc;

  memset(&tls, 0, sizeof(tls));
  /* Every option takes a value, so options come in pairs. */
  for (i = 1; i < argc; i += 2) {
    const char* value = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      usage(stdout);
      return 0;
    } else if (strcmp(argv[i], "--host") == 0 && value != NULL) {
      host = value;
    } else if (strcmp(argv[i], "--port") == 0 &&
               example_parse_long(value, 0, 65535, &port) == 0) {
    } else if (strcmp(argv[i], "--threads") == 0 &&
               example_parse_long(value, 1, CPORT_CORE_MAX_LOOPS, &threads) ==
                   0) {
    } else if (strcmp(argv[i], "--max-sessions") == 0 &&
               example_parse_long(value, 0, 10000000, &max_sessions) == 0) {
    } else if (strcmp(argv[i], "--idle-timeout") == 0 &&
               example_parse_long(value, 0, 86400000, &idle_timeout) == 0) {
    } else if (strcmp(argv[i], "--stats-every") == 0 &&
               example_parse_long(value, 0, 86400, &stats_every) == 0) {
    } else if (example_tls_option(&tls, CPORT_TLS_SERVER, argv[i], value) ==
               2) {
    } else {
      fprintf(stderr, "echo_server: bad argument '%s'%s%s\n", argv[i],
              value != NULL ? " " : "", value != NULL ? value : "");
      usage(stderr);
      return 2;
    }
  }
  if (cport_addr_resolve(&addr, host, (int)port) != 0) {
    fprintf(stderr, "echo_server: bad address '%s'\n", host);
    usage(stderr);
    return 2;
  }
  if ((err = example_tls_check(&tls, CPORT_TLS_SERVER)) != NULL) {
    fprintf(stderr, "echo_server: %s\n", err);
    usage(stderr);
    return 2;
  }
  memset(&server, 0, sizeof(server));
  cport_core_opts_init(&core_opts);
  core_opts.loops = (unsigned)threads;
  rc = cport_core_create(&server.core, &core_opts);
  if (rc != 0) {
    fprintf(stderr, "echo_server: %s\n", cport_strerror(rc));
    return 1;
  }
  cport_service_opts_init(&opts);
  opts.cbs.on_recv = echo_on_recv;
  opts.max_sessions = (unsigned)max_sessions;
  opts.idle_timeout_ms = (unsigned)idle_timeout;
  /* opts.tls stays NULL without --tls-cert: plain TCP. */
  rc = example_tls_create(&tls, CPORT_TLS_SERVER, "echo_server", &opts.tls);
  if (rc == 0) {
    rc = cport_service_create(&server.svc, server.core, CPORT_SERVICE_SERVER,
                              &addr, &opts);
    cport_tls_unref(opts.tls); /* the service holds its own reference */
    if (rc != 0)
      fprintf(stderr, "echo_server: %s\n", cport_strerror(rc));
    else
      rc = serve(&server, &addr, stats_every); /* reports its own errors */
  }
  cport_service_destroy(server.svc);
  cport_core_destroy(server.core);
  return rc == 0 ? 0 : 1;
}
