/* reconnect_client: one cport client session kept up by a reconnect policy,
 * for tests/dualstack_test.sh, where the name it connects to moves to
 * another address while it runs. Unlike tcp_peer it is built on cport:
 * cport's client service is what is under test.
 *
 *   reconnect_client HOST PORT SESSIONS SECONDS
 *
 * Connects one session to HOST:PORT (a host name or a numeric address)
 * under CPORT_RECONNECT_FIXED, every 100 ms. On each session it gets it
 * sends ECHO_LINES numbered lines, one at a time, and checks each echo
 * (then the session idles until it ends). Prints, flushed, one line per
 * connect and one per session whose lines all came back:
 *
 *   connected 1 to 127.0.0.1:5000 (pid 1234)
 *   echoed 1: 3 lines from 127.0.0.1:5000
 *
 * and at the end "reconnect_client: S sessions, R reconnects". Exits 0
 * once SESSIONS sessions have echoed their lines; 1 if SECONDS (at most
 * 60) pass first or an echo differs; 2 on bad arguments; 3 when it cannot
 * start. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "cport/cport.h"

#define ECHO_LINES 3
#define LINE_LEN 12 /* "s0001 l0001\n" */

typedef struct conn_s {
  unsigned serial; /* 1 for the first session */
  unsigned line;   /* the line in flight, 1..ECHO_LINES */
  size_t have;     /* bytes of its echo received */
  char sent[LINE_LEN + 1];
  char peer[CPORT_ADDR_STRLEN];
} conn_t;

static struct {
  cport_core_t* core;
  cport_service_t* svc;
  cport_timer_t* deadline;
  unsigned sessions; /* SESSIONS */
  unsigned connected;
  unsigned echoed; /* sessions whose lines all came back */
  int result;      /* -1 while running */
} app;


static void on_stopped(cport_service_t* svc) {
  cport_core_stop(cport_service_core(svc));
}


static void finish(int result) {
  if (app.result >= 0)
    return;
  app.result = result;
  if (cport_service_stop(app.svc, 1000, on_stopped) != 0)
    cport_core_stop(app.core);
}


static void on_deadline(cport_timer_t* t, void* arg) {
  (void)t;
  (void)arg;
  fprintf(stderr, "reconnect_client: %u of %u sessions echoed in time\n",
          app.echoed, app.sessions);
  finish(1);
}


static void send_line(cport_session_t* s, conn_t* c) {
  snprintf(c->sent, sizeof(c->sent), "s%04u l%04u\n", c->serial % 10000,
           c->line);
  c->have = 0;
  if (cport_session_send(s, c->sent, LINE_LEN) != 0)
    cport_session_disconnect(s, "send failed");
}


static void on_connected(cport_session_t* s) {
  conn_t* c = cport_session_user(s);
  cport_addr_t peer;
  memset(c, 0, sizeof(*c));
  c->serial = ++app.connected;
  c->line = 1;
  if (cport_session_peer_addr(s, &peer) != 0 ||
      cport_addr_format(&peer, c->peer, sizeof(c->peer)) != 0)
    snprintf(c->peer, sizeof(c->peer), "?");
  printf("connected %u to %s (pid %lu)\n", c->serial, c->peer,
         (unsigned long)uv_os_getpid());
  fflush(stdout);
  send_line(s, c);
}


static size_t on_recv(cport_session_t* s, const uint8_t* data, size_t len) {
  conn_t* c = cport_session_user(s);
  size_t used = 0;
  while (used < len && c->line <= ECHO_LINES) {
    size_t n = LINE_LEN - c->have;
    if (n > len - used)
      n = len - used;
    if (memcmp(data + used, c->sent + c->have, n) != 0) {
      fprintf(stderr, "reconnect_client: session %u: wrong echo of %.11s\n",
              c->serial, c->sent);
      finish(1);
      return len;
    }
    c->have += n;
    used += n;
    if (c->have < LINE_LEN)
      break;
    if (c->line == ECHO_LINES) {
      c->line++;
      printf("echoed %u: %d lines from %s\n", c->serial, ECHO_LINES, c->peer);
      fflush(stdout);
      if (++app.echoed == app.sessions)
        finish(0);
    } else {
      c->line++;
      send_line(s, c);
    }
  }
  return len; /* nothing more was asked for: anything further is dropped */
}


static void on_disconnected(cport_session_t* s, int code, const char* cause) {
  conn_t* c = cport_session_user(s);
  printf("disconnected %u: %s (%s)\n", c->serial, cport_err_name(code), cause);
  fflush(stdout);
}


static void on_connect_failed(cport_service_t* svc, int code) {
  (void)svc;
  printf("connect failed: %s\n", cport_err_name(code));
  fflush(stdout);
}


int main(int argc, char** argv) {
  cport_service_opts_t opts;
  cport_service_stats_t st;
  cport_addr_t addr;
  long port, sessions, seconds;
  int rc;

  if (argc != 5)
    return 2;
  port = strtol(argv[2], NULL, 10);
  sessions = strtol(argv[3], NULL, 10);
  seconds = strtol(argv[4], NULL, 10);
  if (port <= 0 || port > 65535 || sessions <= 0 || sessions > 100 ||
      seconds <= 0 || seconds > 60 ||
      cport_addr_parse(&addr, argv[1], (int)port) != 0)
    return 2;
  app.sessions = (unsigned)sessions;
  app.result = -1;

  cport_service_opts_init(&opts);
  opts.cbs.on_connected = on_connected;
  opts.cbs.on_recv = on_recv;
  opts.cbs.on_disconnected = on_disconnected;
  opts.cbs.on_connect_failed = on_connect_failed;
  opts.user_size = sizeof(conn_t);
  opts.connect_timeout_ms = 2000;
  opts.reconnect = CPORT_RECONNECT_FIXED;
  opts.reconnect_delay_ms = 100;
  opts.reconnect_jitter_pct = 0;
  opts.reconnect_reset_ms = 0; /* every lost session starts over */

  rc = cport_core_create(&app.core, NULL);
  if (rc == 0)
    rc = cport_service_create(&app.svc, app.core, CPORT_SERVICE_CLIENT, &addr,
                              &opts);
  if (rc == 0)
    rc = cport_timer_start(app.core, 0, (uint64_t)seconds * 1000, 0,
                           on_deadline, NULL, &app.deadline);
  if (rc == 0)
    rc = cport_service_start(app.svc);
  if (rc == 0)
    rc = cport_core_run_here(app.core);
  if (rc != 0)
    fprintf(stderr, "reconnect_client: %s\n", cport_strerror(rc));
  if (app.deadline != NULL)
    cport_timer_cancel(app.deadline);
  if (app.svc != NULL && cport_service_stats(app.svc, &st) == 0)
    printf("reconnect_client: %u sessions, %llu reconnects\n", app.connected,
           (unsigned long long)st.reconnects);
  cport_service_destroy(app.svc);
  cport_core_destroy(app.core);
  if (rc != 0)
    return 3;
  return app.result == 0 ? 0 : 1;
}
