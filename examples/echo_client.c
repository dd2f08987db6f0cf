/* echo_client: a cport client service that checks an echo server.
 *
 *   echo_client --host ADDR --port N [--sessions N] [--messages N]
 *               [--size BYTES] [--timeout SECONDS]
 *
 * Each session sends a message, waits for its whole echo, compares it byte
 * for byte, and repeats. Prints one summary line; exits 0 only if every
 * session connected and every echo matched, 1 otherwise, 2 on bad
 * arguments. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "cport/cport.h"
#include "example_args.h"

typedef struct client_s {
  cport_core_t* core;
  long sessions;
  long messages;
  size_t size;
  long finished; /* sessions that ended, well or not */
  long errors;
  uint64_t echoed; /* messages whose echo matched */
  int first_error;
} client_t;

/* Per-session state, in the session's user area. */
typedef struct conn_s {
  uint8_t* message; /* the message in flight, to compare the echo with */
  size_t matched;   /* bytes of its echo received and equal so far */
  long sent;        /* messages sent */
  int done;
} conn_t;


static client_t* client_of(cport_session_t* s) {
  return cport_service_get_data(cport_session_service(s));
}


/* Every message differs, so an echo from the wrong session or an old
 * message cannot pass the comparison. */
static void fill_message(uint8_t* buf, size_t len, uint64_t session, long seq) {
  uint32_t x = (uint32_t)(session * 2654435761u) ^ (uint32_t)seq ^ 0x9e3779b9u;
  size_t i;
  for (i = 0; i < len; i++) {
    x = x * 1103515245u + 12345u;
    buf[i] = (uint8_t)(x >> 16);
  }
}


static void send_next(cport_session_t* s) {
  client_t* c = client_of(s);
  conn_t* conn = cport_session_user(s);
  int rc;
  fill_message(conn->message, c->size, cport_session_id(s), conn->sent);
  conn->matched = 0;
  rc = cport_session_send(s, conn->message, c->size);
  if (rc != 0) {
    cport_session_disconnect(s, cport_strerror(rc));
    return;
  }
  conn->sent++;
}


static void on_connected(cport_session_t* s) {
  client_t* c = client_of(s);
  conn_t* conn = cport_session_user(s);
  conn->message = malloc(c->size);
  if (conn->message == NULL) {
    cport_session_disconnect(s, "out of memory");
    return;
  }
  send_next(s);
}


static size_t on_recv(cport_session_t* s, const uint8_t* data, size_t len) {
  client_t* c = client_of(s);
  conn_t* conn = cport_session_user(s);
  size_t want = c->size - conn->matched;
  if (len > want || memcmp(data, conn->message + conn->matched, len) != 0) {
    cport_session_disconnect(s, "echo mismatch");
    return len;
  }
  conn->matched += len;
  if (conn->matched == c->size) {
    c->echoed++;
    if (conn->sent < c->messages) {
      send_next(s);
    } else {
      conn->done = 1;
      cport_session_disconnect(s, "done");
    }
  }
  return len;
}


static void session_finished(client_t* c) {
  if (++c->finished == c->sessions)
    cport_core_stop(c->core);
}


static void on_disconnected(cport_session_t* s, int code, const char* cause) {
  client_t* c = client_of(s);
  conn_t* conn = cport_session_user(s);
  if (!conn->done) {
    c->errors++;
    if (c->first_error == 0) {
      c->first_error = code;
      fprintf(stderr, "echo_client: session %llu ended early: %s\n",
              (unsigned long long)cport_session_id(s), cause);
    }
  }
  free(conn->message);
  conn->message = NULL;
  session_finished(c);
}


static void on_connect_failed(cport_service_t* svc, int code) {
  client_t* c = cport_service_get_data(svc);
  c->errors++;
  if (c->first_error == 0) {
    c->first_error = code;
    fprintf(stderr, "echo_client: connect failed: %s\n", cport_strerror(code));
  }
  session_finished(c);
}


static void usage(FILE* out) {
  fprintf(out,
          "usage: echo_client --host ADDR --port N [--sessions N] "
          "[--messages N] [--size BYTES] [--timeout SECONDS]\n"
          "  --sessions N      concurrent sessions (default 1)\n"
          "  --messages N      messages per session (default 1000)\n"
          "  --size BYTES      bytes per message (default 64)\n"
          "  --timeout SECONDS give up after this long (default 60)\n");
}


static void on_timeout(uv_timer_t* timer) {
  client_t* c = timer->data;
  fprintf(stderr, "echo_client: timed out\n");
  c->errors++;
  cport_core_stop(c->core);
}


int main(int argc, char** argv) {
  const char* host = NULL;
  long port = -1;
  long size = 64;
  long timeout_s = 60;
  client_t c;
  cport_addr_t addr;
  cport_service_t* svc = NULL;
  cport_service_opts_t opts;
  uv_timer_t timer;
  uint64_t start_ns;
  double seconds;
  int i;
  int rc;

  memset(&c, 0, sizeof(c));
  c.sessions = 1;
  c.messages = 1000;
  /* Every option takes a value, so options come in pairs. */
  for (i = 1; i < argc; i += 2) {
    const char* value = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      usage(stdout);
      return 0;
    } else if (strcmp(argv[i], "--host") == 0 && value != NULL) {
      host = value;
    } else if (strcmp(argv[i], "--port") == 0 &&
               example_parse_long(value, 1, 65535, &port) == 0) {
    } else if (strcmp(argv[i], "--sessions") == 0 &&
               example_parse_long(value, 1, 1000000, &c.sessions) == 0) {
    } else if (strcmp(argv[i], "--messages") == 0 &&
               example_parse_long(value, 1, 1000000000, &c.messages) == 0) {
    } else if (strcmp(argv[i], "--size") == 0 &&
               example_parse_long(value, 1, 64L * 1024 * 1024, &size) == 0) {
    } else if (strcmp(argv[i], "--timeout") == 0 &&
               example_parse_long(value, 1, 86400, &timeout_s) == 0) {
    } else {
      fprintf(stderr, "echo_client: bad argument '%s'%s%s\n", argv[i],
              value != NULL ? " " : "", value != NULL ? value : "");
      usage(stderr);
      return 2;
    }
  }
  if (host == NULL || port < 0) {
    fprintf(stderr, "echo_client: --host and --port are required\n");
    usage(stderr);
    return 2;
  }
  if (cport_addr_resolve(&addr, host, (int)port) != 0) {
    fprintf(stderr, "echo_client: bad address '%s'\n", host);
    return 2;
  }
  c.size = (size_t)size;

  rc = cport_core_create(&c.core, NULL);
  if (rc == 0) {
    cport_service_opts_init(&opts);
    opts.cbs.on_connected = on_connected;
    opts.cbs.on_recv = on_recv;
    opts.cbs.on_disconnected = on_disconnected;
    opts.cbs.on_connect_failed = on_connect_failed;
    opts.user_size = sizeof(conn_t);
    opts.connect_count = (unsigned)c.sessions;
    opts.data = &c;
    rc = cport_service_create(&svc, c.core, CPORT_SERVICE_CLIENT, &addr, &opts);
  }
  if (rc != 0) {
    fprintf(stderr, "echo_client: %s\n", cport_strerror(rc));
    return 1;
  }
  uv_timer_init(cport_core_loop(c.core, 0), &timer);
  timer.data = &c;
  uv_timer_start(&timer, on_timeout, (uint64_t)timeout_s * 1000, 0);

  start_ns = uv_hrtime();
  rc = cport_service_start(svc);
  if (rc == 0)
    rc = cport_core_run(c.core);
  if (rc == 0)
    cport_core_join(c.core);
  else
    c.errors++;
  seconds = (double)(uv_hrtime() - start_ns) / 1e9;

  printf(
      "sessions=%ld messages=%llu bytes=%llu seconds=%.3f msg/s=%.0f "
      "MiB/s=%.2f errors=%ld\n",
      c.sessions, (unsigned long long)c.echoed,
      (unsigned long long)(c.echoed * c.size), seconds,
      seconds > 0 ? (double)c.echoed / seconds : 0.0,
      seconds > 0 ? (double)(c.echoed * c.size) / seconds / 1048576.0 : 0,
      c.errors);
  fflush(stdout);

  uv_close((uv_handle_t*)&timer, NULL);
  cport_service_destroy(svc);
  cport_core_destroy(c.core);
  return c.errors == 0 && c.echoed == (uint64_t)(c.sessions * c.messages) ? 0
                                                                          : 1;
}
