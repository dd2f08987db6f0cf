/* echo_server: a cport server that sends back every byte it receives.
 *
 *   echo_server [--host ADDR] [--port N] [--threads N] [--max-sessions N]
 *               [--idle-timeout MS] [--stats-every SECONDS]
 *               [--tls-cert FILE --tls-key FILE [--tls-ca FILE]]
 *               [--proxy-protocol v1|v2|any [--trusted-proxy CIDR]...]
 *               [--drain-timeout MS] [--inherit-fd N] [--reuse-port]
 *               [--unix PATH [--unix-mode OCTAL]] [--pipe NAME]
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
 * of those CAs.
 *
 * Behind a load balancer (docs/deploy.md): --proxy-protocol reads the
 * PROXY header HAProxy or nginx puts before each connection's bytes, and
 * the server logs each such session's real client address, one line:
 *   echo_server: session 7 from 127.0.0.7:40312 via 127.0.0.1:51000
 *   (PROXY v2, ssl TLSv1.3, cn client, authority localhost, alpn h2)
 * --trusted-proxy (repeatable) lists the balancers' networks; a header from
 * anywhere else closes the connection. --drain-timeout MS makes SIGINT or
 * SIGTERM drain instead of stop: the listener closes at once (the
 * balancer's health check sees the server down), the sessions go on, and
 * once the last has ended (or MS have passed, when the rest are cut) the
 * server prints "drained" and the summary and exits 0; a second signal
 * stops it at once. --inherit-fd N serves an already-listening socket
 * instead of binding (a parent, or a new version taking over: the old one
 * drains); with systemd socket activation (LISTEN_FDS) the first socket
 * passed is used by itself. --host and --port are then ignored.
 * --reuse-port lets several servers bind one port (SO_REUSEPORT).
 *
 * Local endpoints instead of TCP: --unix PATH listens on a Unix domain
 * socket ("@name" for a Linux abstract name), whose file gets the
 * permission bits of --unix-mode (for example 0660) and is removed when
 * the server stops; a file a dead server left is replaced, a live
 * server's never. --pipe \\.\pipe\NAME listens on a Windows named pipe.
 * Prints "listening on unix:PATH" (or "pipe:NAME") and one line per
 * session naming the peer's process:
 *   echo_server: session 3 from pid 4242 uid 1000 gid 1000 */
#include <stdio.h>
#include <string.h>

#include "cport/cport.h"
#include "example_args.h"

#define STOP_DEADLINE_MS 2000

typedef struct server_s {
  cport_core_t* core;
  cport_service_t* svc;
  cport_timer_t* stats_timer; /* NULL without --stats-every */
  long drain_timeout;         /* -1: signals stop, not drain */
  int drained;                /* the drain completed */
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
      "protocol=%llu local=%llu other=%llu proxy_headers=%llu "
      "proxy_errors=%llu proxy_untrusted=%llu\n",
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
      (unsigned long long)st.disconnects_other,
      (unsigned long long)st.proxy_headers, (unsigned long long)st.proxy_errors,
      (unsigned long long)st.proxy_untrusted);
  fflush(stdout);
}


static void on_stats_timer(cport_timer_t* timer, void* arg) {
  server_t* server = arg;
  (void)timer;
  print_stats(server->svc);
}


/* Append ", NAME VALUE" for the TLV `type` of `hdr`, if it has one, to
 * `line` (`size` bytes, NUL-terminated), the value's bytes that are not
 * printable as '?': they come from the client, through the balancer. */
static void append_tlv(char* line,
                       size_t size,
                       const cport_proxy_header_t* hdr,
                       unsigned type,
                       const char* name) {
  const uint8_t* value;
  size_t len;
  size_t at = strlen(line);
  size_t i;
  if (cport_proxy_tlv(hdr, type, &value, &len) != 0)
    return;
  at += (size_t)snprintf(line + at, size - at, ", %s ", name);
  for (i = 0; i < len && at + 1 < size; i++)
    line[at++] = value[i] >= 0x20 && value[i] < 0x7f ? (char)value[i] : '?';
  line[at < size ? at : size - 1] = '\0';
}


/* Sessions that began with a PROXY header: one line with the client's
 * address (from the header), the balancer's, and what the balancer's TLS
 * saw, when it says. */
static void echo_on_connected(cport_session_t* s) {
  cport_proxy_header_t hdr;
  cport_addr_t addr;
  char peer[CPORT_ADDR_STRLEN] = "?";
  char via[CPORT_ADDR_STRLEN] = "?";
  char line[512];
  cport_peer_cred_t cred;
  if (cport_session_peer_cred(s, &cred) == 0) {
    printf("echo_server: session %llu from pid %lld uid %lld gid %lld\n",
           (unsigned long long)cport_session_id(s), (long long)cred.pid,
           (long long)cred.uid, (long long)cred.gid);
    fflush(stdout);
    return;
  }
  if (cport_session_proxy(s, &hdr) != 0)
    return; /* no PROXY protocol: nothing to add to the address it has */
  if (cport_session_peer_addr(s, &addr) == 0)
    cport_addr_format(&addr, peer, sizeof(peer));
  if (cport_session_proxy_addr(s, &addr) == 0)
    cport_addr_format(&addr, via, sizeof(via));
  snprintf(line, sizeof(line), "PROXY v%d%s", hdr.version,
           hdr.local ? " LOCAL" : "");
  append_tlv(line, sizeof(line), &hdr, CPORT_PROXY_TLV_SSL_VERSION, "ssl");
  append_tlv(line, sizeof(line), &hdr, CPORT_PROXY_TLV_SSL_CN, "cn");
  append_tlv(line, sizeof(line), &hdr, CPORT_PROXY_TLV_AUTHORITY, "authority");
  append_tlv(line, sizeof(line), &hdr, CPORT_PROXY_TLV_ALPN, "alpn");
  printf("echo_server: session %llu from %s via %s (%s)\n",
         (unsigned long long)cport_session_id(s), peer, via, line);
  fflush(stdout);
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


static void on_drained(cport_service_t* svc) {
  server_t* server = cport_service_get_data(svc);
  server->drained = 1;
}


/* --drain-timeout: the first signal drains instead of stopping. The
 * core's watch then waits for the drain, not a stop, before it stops the
 * core; a second signal stops the core at once. */
static void on_signal(cport_core_t* core, int signum, void* arg) {
  server_t* server = arg;
  int rc;
  (void)core;
  (void)signum;
  if (server->drain_timeout < 0)
    return;
  fprintf(stderr,
          "echo_server: draining: no new connections, sessions go on "
          "(at most %ld ms)\n",
          server->drain_timeout);
  rc = cport_service_drain(server->svc, (int)server->drain_timeout,
                           on_drained);
  if (rc != 0)
    fprintf(stderr, "echo_server: drain: %s\n", cport_strerror(rc));
}


/* Watch SIGINT and SIGTERM: the first stops the service gracefully (its
 * sessions flushed, or cut off at the deadline), or drains it, then the
 * core; a second one stops the core at once. */
static int watch_signals(server_t* server) {
  long deadline = STOP_DEADLINE_MS;
  if (server->drain_timeout >= 0)
    deadline += server->drain_timeout; /* and the flush after it */
  return cport_core_stop_on_signals(server->core, (int)deadline, on_signal,
                                    server);
}


/* Listen, run until a signal has stopped (or drained) the service and
 * stopped the core, print the summary. `fd`: the inherited socket, or -1.
 * Returns 0 or the first error, reported. */
static int serve(server_t* server,
                 cport_addr_t* addr,
                 long fd,
                 long stats_every) {
  cport_service_stats_t stats;
  char text[CPORT_ADDR_STRLEN];
  int rc = cport_service_start(server->svc);
  if (rc != 0) {
    if (fd >= 0)
      snprintf(text, sizeof(text), "inherited socket %ld", fd);
    else
      cport_addr_format(addr, text, sizeof(text));
    fprintf(stderr, "echo_server: cannot listen on %s: %s\n", text,
            cport_strerror(rc));
    return rc;
  }
  /* Watch the signals first: whoever reads "listening on" may signal at
   * once. */
  rc = watch_signals(server);
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
  if (cport_service_stats(server->svc, &stats) == 0) {
    /* disconnects_local: during a drain, the sessions its deadline cut. */
    if (server->drained)
      printf("echo_server: drained, %llu sessions cut at the deadline\n",
             (unsigned long long)stats.disconnects_local);
    printf(
        "echo_server: served %llu sessions, echoed %llu bytes, "
        "rejected %llu\n",
        (unsigned long long)stats.connected,
        (unsigned long long)stats.bytes_out,
        (unsigned long long)stats.rejected);
  }
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
          "these CAs (PEM)\n"
          "  --proxy-protocol V  every connection begins with a PROXY "
          "header: v1, v2 or any\n"
          "  --trusted-proxy NET take headers only from this address or "
          "network (CIDR), repeatable\n"
          "  --drain-timeout MS  on SIGINT/SIGTERM drain: accept no more, "
          "cut sessions after MS\n"
          "  --inherit-fd N      serve the listening socket N instead of "
          "--host/--port\n"
          "                      (systemd socket activation's is found "
          "without it)\n"
          "  --reuse-port        let other processes bind the same port "
          "(SO_REUSEPORT)\n"
          "  --unix PATH         listen on a Unix domain socket instead "
          "(@NAME: abstract)\n"
          "  --unix-mode OCTAL   the socket file's permissions, e.g. 0660\n"
          "  --pipe NAME         listen on a Windows named pipe, "
          "\\\\.\\pipe\\NAME\n",
          CPORT_CORE_MAX_LOOPS);
}


/* Is `text` an address or a network, "10.0.0.0/8", "127.0.0.1",
 * "fd00::/8"? Numeric only: a balancer is named by its address. */
static int parse_network(const char* text) {
  char host[CPORT_ADDR_STRLEN];
  const char* slash = strchr(text, '/');
  size_t len = slash != NULL ? (size_t)(slash - text) : strlen(text);
  cport_addr_t addr;
  long bits;
  if (len == 0 || len >= sizeof(host))
    return -1;
  memcpy(host, text, len);
  host[len] = '\0';
  if (cport_addr_parse(&addr, host, 0) != 0 || cport_addr_is_name(&addr))
    return -1;
  if (slash == NULL)
    return 0;
  return example_parse_long(slash + 1, 0,
                            cport_addr_family(&addr) == 6 ? 128 : 32, &bits);
}


/* Add `net` to the comma-separated list `list` (`size` bytes). */
static int add_network(char* list, size_t size, const char* net) {
  size_t at = strlen(list);
  if (parse_network(net) != 0 || at + strlen(net) + 2 > size)
    return -1;
  snprintf(list + at, size - at, "%s%s", at > 0 ? "," : "", net);
  return 0;
}


int main(int argc, char** argv) {
  const char* host = "127.0.0.1";
  long port = 7777;
  long threads = 1;
  long max_sessions = 10000;
  long idle_timeout = 0;
  long stats_every = 0;
  long drain_timeout = -1;
  long inherit_fd = -1;
  int reuse_port = 0;
  const char* local = NULL; /* --unix or --pipe */
  long unix_mode = 0;
  cport_proxy_t proxy = CPORT_PROXY_OFF;
  char trusted[1024] = "";
  server_t server;
  cport_addr_t addr;
  cport_core_opts_t core_opts;
  cport_service_opts_t opts;
  example_tls_t tls;
  const char* err;
  int step;
  int i;
  int rc;

  memset(&tls, 0, sizeof(tls));
  /* Options take a value, so they come in pairs, but for the flags. */
  for (i = 1; i < argc; i += step) {
    const char* value = i + 1 < argc ? argv[i + 1] : NULL;
    step = 2;
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      usage(stdout);
      return 0;
    } else if (strcmp(argv[i], "--reuse-port") == 0) {
      reuse_port = 1;
      step = 1;
    } else if (strcmp(argv[i], "--host") == 0 && value != NULL) {
      host = value;
    } else if ((strcmp(argv[i], "--unix") == 0 ||
                strcmp(argv[i], "--pipe") == 0) &&
               value != NULL) {
      local = value;
    } else if (strcmp(argv[i], "--unix-mode") == 0 &&
               example_parse_octal(value, 0777, &unix_mode) == 0) {
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
    } else if (strcmp(argv[i], "--drain-timeout") == 0 &&
               example_parse_long(value, 0, 86400000, &drain_timeout) == 0) {
    } else if (strcmp(argv[i], "--inherit-fd") == 0 &&
               example_parse_long(value, 0, 65535, &inherit_fd) == 0) {
    } else if (strcmp(argv[i], "--proxy-protocol") == 0 && value != NULL &&
               (strcmp(value, "v1") == 0 || strcmp(value, "v2") == 0 ||
                strcmp(value, "any") == 0)) {
      proxy = value[0] == 'a'   ? CPORT_PROXY_ANY
              : value[1] == '1' ? CPORT_PROXY_V1
                                : CPORT_PROXY_V2;
    } else if (strcmp(argv[i], "--trusted-proxy") == 0 && value != NULL &&
               add_network(trusted, sizeof(trusted), value) == 0) {
    } else if ((step = example_tls_option(&tls, CPORT_TLS_SERVER, argv[i],
                                          value)) == 2) {
    } else {
      fprintf(stderr, "echo_server: bad argument '%s'%s%s\n", argv[i],
              value != NULL ? " " : "", value != NULL ? value : "");
      usage(stderr);
      return 2;
    }
  }
  if (trusted[0] != '\0' && proxy == CPORT_PROXY_OFF) {
    fprintf(stderr,
            "echo_server: bad arguments: --trusted-proxy needs "
            "--proxy-protocol\n");
    usage(stderr);
    return 2;
  }
  /* systemd socket activation, when no socket was named: the first one
   * passed. The variables are removed so that no child takes them. */
  if (inherit_fd < 0) {
    rc = cport_listen_fds(1);
    if (rc < 0) {
      fprintf(stderr, "echo_server: bad LISTEN_FDS: %s\n", cport_strerror(rc));
      return 2;
    }
    if (rc > 0)
      inherit_fd = CPORT_LISTEN_FDS_START;
  }
  memset(&addr, 0, sizeof(addr));
  if (local != NULL && inherit_fd < 0) {
    rc = cport_addr_parse_local(&addr, local);
    if (rc != 0) {
      fprintf(stderr, "echo_server: bad local path '%s': %s\n", local,
              cport_strerror(rc));
      usage(stderr);
      return 2;
    }
  } else if (inherit_fd < 0 &&
             cport_addr_resolve(&addr, host, (int)port) != 0) {
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
  server.drain_timeout = drain_timeout;
  cport_core_opts_init(&core_opts);
  core_opts.loops = (unsigned)threads;
  rc = cport_core_create(&server.core, &core_opts);
  if (rc != 0) {
    fprintf(stderr, "echo_server: %s\n", cport_strerror(rc));
    return 1;
  }
  cport_service_opts_init(&opts);
  opts.cbs.on_recv = echo_on_recv;
  opts.cbs.on_connected = echo_on_connected;
  opts.data = &server;
  opts.max_sessions = (unsigned)max_sessions;
  opts.idle_timeout_ms = (unsigned)idle_timeout;
  opts.proxy_protocol = proxy;
  opts.proxy_trusted = trusted[0] != '\0' ? trusted : NULL;
  opts.listen_fd = inherit_fd;
  opts.reuse_port = reuse_port;
  opts.unix_mode = (unsigned)unix_mode;
  /* opts.tls stays NULL without --tls-cert: plain TCP. */
  rc = example_tls_create(&tls, CPORT_TLS_SERVER, "echo_server", &opts.tls);
  if (rc == 0) {
    /* An inherited socket is bound already: no address. */
    rc = cport_service_create(&server.svc, server.core, CPORT_SERVICE_SERVER,
                              inherit_fd >= 0 ? NULL : &addr, &opts);
    cport_tls_unref(opts.tls); /* the service holds its own reference */
    if (rc != 0)
      fprintf(stderr, "echo_server: %s\n", cport_strerror(rc));
    else
      rc = serve(&server, &addr, inherit_fd, stats_every);
  }
  cport_service_destroy(server.svc);
  cport_core_destroy(server.core);
  return rc == 0 ? 0 : 1;
}
