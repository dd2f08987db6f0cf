/* embed_uv_loop: an application that already runs its own libuv loop adds
 * a cport echo server to that same loop. One thread, one loop, no thread of
 * cport's.
 *
 *   embed_uv_loop [--host ADDR] [--port N] [--tick-ms MS]
 *
 * The application's own work is a heartbeat timer that prints
 * "tick N sessions=S" every MS milliseconds (default 1000). Prints
 * "listening on HOST:PORT" once the server is up. SIGINT or SIGTERM (a
 * uv_signal_t on the same loop) stops the server gracefully, then the
 * application closes its own handles, uv_run() returns because nothing is
 * left on the loop, and a summary line is printed: exit 0. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <uv.h>

#include "cport/cport.h"
#include "example_args.h"

#define STOP_DEADLINE_MS 2000

typedef struct app_s {
  uv_loop_t loop; /* the application's loop: cport only borrows it */
  uv_timer_t heartbeat;
  uv_signal_t sigint;
  uv_signal_t sigterm;
  unsigned long long ticks;
  cport_core_t* core;
  cport_service_t* svc;
  cport_service_stats_t stats; /* kept from on_stopped for the summary */
} app_t;


static void on_heartbeat(uv_timer_t* timer) {
  app_t* app = timer->data;
  /* The service runs on this thread, so reading it here needs no lock. */
  printf("tick %llu sessions=%zu\n", ++app->ticks,
         cport_service_session_count(app->svc));
  fflush(stdout);
}


static size_t echo_on_recv(cport_session_t* s,
                           const uint8_t* data,
                           size_t len) {
  /* At the send-queue limit keep the bytes; they come back with the next
   * read once the peer has caught up. */
  return cport_session_send(s, data, len) == CPORT_ESENDQ ? 0 : len;
}


static void on_stopped(cport_service_t* svc) {
  app_t* app = cport_service_get_data(svc);
  cport_service_stats(svc, &app->stats);
  cport_service_destroy(svc); /* allowed inside on_stopped */
  app->svc = NULL;
  /* The server is gone; now the application closes what it owns. With
   * nothing active left on the loop, uv_run() in main() returns. The
   * heartbeat ran until here, also while sessions were being flushed. */
  uv_close((uv_handle_t*)&app->heartbeat, NULL);
  uv_close((uv_handle_t*)&app->sigint, NULL);
  uv_close((uv_handle_t*)&app->sigterm, NULL);
}


static void on_signal(uv_signal_t* handle, int signum) {
  app_t* app = handle->data;
  (void)signum;
  /* A second signal while stopping is harmless: the stop returns
   * CPORT_EALREADY and on_stopped still runs once. */
  if (app->svc != NULL)
    cport_service_stop(app->svc, STOP_DEADLINE_MS, on_stopped);
}


static void usage(FILE* out) {
  fprintf(out,
          "usage: embed_uv_loop [--host ADDR] [--port N] [--tick-ms MS]\n"
          "  --host ADDR   address to listen on (default 127.0.0.1)\n"
          "  --port N      TCP port, 0 for any free one (default 7777)\n"
          "  --tick-ms MS  the application's heartbeat period "
          "(default 1000)\n");
}


int main(int argc, char** argv) {
  const char* host = "127.0.0.1";
  long port = 7777;
  long tick_ms = 1000;
  static app_t app; /* static: zeroed, and outlives every callback */
  cport_core_opts_t core_opts;
  cport_service_opts_t opts;
  cport_addr_t addr;
  char text[CPORT_ADDR_STRLEN];
  int i;
  int rc;

  for (i = 1; i < argc; i += 2) { /* every option takes a value */
    const char* value = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(argv[i], "--help") == 0) {
      usage(stdout);
      return 0;
    } else if (strcmp(argv[i], "--host") == 0 && value != NULL) {
      host = value;
    } else if (strcmp(argv[i], "--port") == 0 &&
               example_parse_long(value, 0, 65535, &port) == 0) {
    } else if (strcmp(argv[i], "--tick-ms") == 0 &&
               example_parse_long(value, 1, 3600000, &tick_ms) == 0) {
    } else {
      fprintf(stderr, "embed_uv_loop: bad argument '%s'%s%s\n", argv[i],
              value != NULL ? " " : "", value != NULL ? value : "");
      usage(stderr);
      return 2;
    }
  }
  if (cport_addr_resolve(&addr, host, (int)port) != 0) {
    fprintf(stderr, "embed_uv_loop: bad address '%s'\n", host);
    usage(stderr);
    return 2;
  }

  /* The application's loop and its own work, as it had them before cport. */
  uv_loop_init(&app.loop);
  uv_timer_init(&app.loop, &app.heartbeat);
  app.heartbeat.data = &app;
  uv_timer_start(&app.heartbeat, on_heartbeat, (uint64_t)tick_ms,
                 (uint64_t)tick_ms);

  /* Embed: loop 0 of the core is the application's loop. Created on the
   * thread that will run uv_run(), which makes it the loop's owner. */
  cport_core_opts_init(&core_opts);
  core_opts.uv_loop = &app.loop;
  rc = cport_core_create(&app.core, &core_opts);
  if (rc == 0) {
    cport_service_opts_init(&opts);
    opts.cbs.on_recv = echo_on_recv;
    opts.data = &app;
    rc = cport_service_create(&app.svc, app.core, CPORT_SERVICE_SERVER, &addr,
                              &opts);
  }
  if (rc == 0)
    rc = cport_service_start(app.svc);
  if (rc != 0) {
    cport_addr_format(&addr, text, sizeof(text));
    fprintf(stderr, "embed_uv_loop: cannot listen on %s: %s\n", text,
            cport_strerror(rc));
    /* The same teardown as at the end of main(), minus the server. */
    cport_service_destroy(app.svc);
    cport_core_destroy(app.core);
    uv_close((uv_handle_t*)&app.heartbeat, NULL);
    uv_run(&app.loop, UV_RUN_NOWAIT);
    uv_loop_close(&app.loop);
    return 1;
  }

  /* Signals on the same loop. Installed before "listening on", because
   * whoever reads that line may signal at once. */
  uv_signal_init(&app.loop, &app.sigint);
  uv_signal_init(&app.loop, &app.sigterm);
  app.sigint.data = app.sigterm.data = &app;
  uv_signal_start(&app.sigint, on_signal, SIGINT);
  uv_signal_start(&app.sigterm, on_signal, SIGTERM);

  cport_service_local_addr(app.svc, &addr);
  cport_addr_format(&addr, text, sizeof(text));
  printf("listening on %s\n", text);
  fflush(stdout);

  /* The application drives its loop exactly as before; cport's callbacks
   * run inside this call, between the heartbeat's. */
  uv_run(&app.loop, UV_RUN_DEFAULT);

  printf("embed_uv_loop: %llu ticks, served %llu sessions, echoed %llu bytes\n",
         app.ticks, (unsigned long long)app.stats.connected,
         (unsigned long long)app.stats.bytes_out);
  /* cport's own handles are closed by the destroy and freed by one more
   * turn of the loop; only then may the loop be closed. */
  cport_core_destroy(app.core);
  uv_run(&app.loop, UV_RUN_NOWAIT);
  return uv_loop_close(&app.loop) == 0 ? 0 : 1;
}
