/* line_server: the guide's sections 4 and 5 as one program. It answers each
 * newline-terminated line with "> " and the line, keeping a partial line
 * until the rest arrives (on_recv returns what it consumed), and counts
 * each connection's lines in its per-session user area.
 *
 *   line_server [PORT]    (default 7777; 0 picks a free port)
 *
 * Prints "listening on HOST:PORT", then one line per closed connection.
 * Runs until killed; echo_server shows a graceful stop. */
#include <stdio.h>
#include <string.h>

#include "cport/cport.h"
#include "example_args.h"

#define LINE_MAX_LEN 4096 /* longest line, '\n' included */

typedef struct conn_s {
  char peer[CPORT_ADDR_STRLEN];
  unsigned long lines;
} conn_t;

static void on_connected(cport_session_t* s) {
  conn_t* c = cport_session_user(s); /* zero-filled */
  cport_addr_t addr;
  if (cport_session_peer_addr(s, &addr) == 0)
    cport_addr_format(&addr, c->peer, sizeof(c->peer));
}

static size_t on_recv_lines(cport_session_t* s,
                            const uint8_t* data,
                            size_t len) {
  conn_t* c = cport_session_user(s);
  uint8_t reply[2 + LINE_MAX_LEN];
  size_t used = 0;
  const uint8_t* nl;
  while ((nl = memchr(data + used, '\n', len - used)) != NULL) {
    size_t line_len = (size_t)(nl - (data + used)) + 1; /* with '\n' */
    if (line_len > LINE_MAX_LEN) {
      cport_session_disconnect(s, "line too long");
      return used;
    }
    /* One send per answer: if it is refused, nothing of it went out. */
    memcpy(reply, "> ", 2);
    memcpy(reply + 2, data + used, line_len);
    if (cport_session_send(s, reply, 2 + line_len) != 0)
      break; /* this line stays unconsumed and comes back (section 6) */
    used += line_len;
    c->lines++;
  }
  return used; /* a partial last line is presented again, first */
}

static void on_disconnected(cport_session_t* s, int code, const char* cause) {
  conn_t* c = cport_session_user(s);
  (void)code;
  printf("%s: %lu lines, %s\n", c->peer, c->lines, cause);
  fflush(stdout);
}

int main(int argc, char** argv) {
  cport_core_t* core = NULL;
  cport_service_t* svc = NULL;
  cport_service_opts_t opts;
  cport_addr_t addr;
  char text[CPORT_ADDR_STRLEN];
  long port = 7777;
  int rc;
  if (argc > 2 ||
      (argc == 2 && example_parse_long(argv[1], 0, 65535, &port) != 0)) {
    fprintf(stderr, "usage: line_server [PORT]   (0 to 65535)\n");
    return 2;
  }
  rc = cport_core_create(&core, NULL);
  if (rc == 0)
    rc = cport_addr_parse(&addr, "127.0.0.1", (int)port);
  cport_service_opts_init(&opts);
  opts.cbs.on_connected = on_connected;
  opts.cbs.on_recv = on_recv_lines;
  opts.cbs.on_disconnected = on_disconnected;
  opts.user_size = sizeof(conn_t);
  opts.recv_buffer_limit = LINE_MAX_LEN; /* a longer partial line ends it */
  if (rc == 0)
    rc = cport_service_create(&svc, core, CPORT_SERVICE_SERVER, &addr, &opts);
  if (rc == 0)
    rc = cport_service_start(svc);
  if (rc != 0) {
    fprintf(stderr, "line_server: %s\n", cport_strerror(rc));
    cport_service_destroy(svc);
    cport_core_destroy(core);
    return 1;
  }
  cport_service_local_addr(svc, &addr);
  cport_addr_format(&addr, text, sizeof(text));
  printf("listening on %s\n", text);
  fflush(stdout);
  for (;;) /* one round of the loop at a time, on this thread */
    cport_core_dispatch(core, 0, -1);
}
