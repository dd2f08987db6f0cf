/* chat_client: a client for chat_server, by hand in a terminal or from a
 * script.
 *
 *   chat_client [--host ADDR] [--port N] [--name NAME] [--script FILE]
 *               [--timeout SECONDS]
 *               [--tls | --tls-ca FILE | --tls-insecure] [--tls-name NAME]
 *               [--tls-cert FILE --tls-key FILE]
 *
 * Reads lines from the terminal (or FILE) and sends them:
 *
 *   /join ROOM     enter ROOM (leaving the room you are in)
 *   /leave         leave your room
 *   /nick NAME     change your name
 *   /quit          leave (so does the end of the input)
 *   /expect TEXT   wait until a line containing TEXT has been printed,
 *                  at most --timeout seconds; lines are matched in turn,
 *                  each once, so that scripts need no sleeps
 *   /raw HEX       send these bytes as they are, header and all, to see
 *                  what a server does with them
 *   //TEXT         say "/TEXT"
 *   anything else  say it to your room
 *
 * In a script, lines starting with '#' are comments. Everything the server
 * sends is printed on stdout, one line each, as it arrives:
 *
 *   [room] name: text     * name joined room     * name left room
 *   * you are now name    ! the server's error
 *
 * Exits 0 once the input has ended and everything sent has been flushed to
 * the server; 1 if the connection cannot be made or ends unexpectedly, an
 * /expect times out, or a script line is bad; 2 on bad arguments.
 *
 * --tls talks TLS, verifying the server's certificate against the
 * system's CAs and the name in --host (or --tls-name); --tls-ca FILE
 * trusts those CAs instead; --tls-insecure verifies nothing (tests only).
 * --tls-cert and --tls-key present a client certificate, for a server
 * started with --tls-ca.
 *
 * Design notes. The core's one loop runs on a thread of cport_core_run(),
 * which prints what arrives. The input is read by a plain thread
 * (uv_thread_t), because reading a terminal blocks, and that thread sends:
 * cport_session_send_packet() may be called from any thread holding a
 * reference to the session. main() only waits for the session to end. One
 * mutex guards what the threads share, and a condition variable announces
 * every change of it: the session's state, and the printed lines kept for
 * /expect. */
#if defined(_MSC_VER) && !defined(_CRT_SECURE_NO_WARNINGS)
/* MSVC calls fopen unsafe; it is the portable way to open a file. */
#define _CRT_SECURE_NO_WARNINGS
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "chat_proto.h"
#include "cport/cport.h"
#include "example_args.h"

#define DEFAULT_PORT 7778
#define DEFAULT_TIMEOUT_S 10
/* Longest input line, '\n' included; the server refuses long texts. */
#define INPUT_MAX 4096
/* Printed lines kept for /expect; past this the oldest are dropped. */
#define KEPT_MAX 4096

enum { CLIENT_CONNECTING, CLIENT_CONNECTED, CLIENT_ENDED };

typedef struct client_s {
  cport_core_t* core;
  cport_service_t* svc;
  char peer[CPORT_ADDR_STRLEN];
  FILE* input;
  int scripted;
  uint64_t timeout_ms;
  uv_mutex_t lock; /* guards everything below */
  uv_cond_t cond;  /* broadcast on every change below */
  int state;
  int connect_error; /* the failed connect's code */
  int end_code;      /* the session's on_disconnected code */
  char end_cause[256];
  int quitting;             /* the input ended and asked for the disconnect */
  int input_done;           /* the input thread has returned */
  int failed;               /* a script line or an /expect failed */
  cport_session_t* session; /* referenced while set */
  char* kept[KEPT_MAX];     /* a ring of printed lines for /expect */
  size_t kept_head;
  size_t kept_count;
} client_t;

/* Static rather than in main(): an input thread blocked on a terminal is
 * never joined, and must find the state in place whatever it does. */
static client_t client;


/* Append `len` bytes to `out` (of `cap` bytes, `*n` used), with control
 * characters shown as '?': the server checks its texts, but a terminal
 * must not take orders from any peer. */
static void append(
    char* out, size_t cap, size_t* n, const void* data, size_t len) {
  const uint8_t* p = data;
  size_t i;
  for (i = 0; i < len && *n + 1 < cap; i++)
    out[(*n)++] = (char)(p[i] < 0x20 || p[i] == 0x7f ? '?' : p[i]);
  out[*n] = '\0';
}


static void keep_line(const char* line, size_t len) {
  char* copy = malloc(len + 1);
  if (copy == NULL)
    return; /* an /expect then waits for a later line, or times out */
  memcpy(copy, line, len + 1);
  uv_mutex_lock(&client.lock);
  if (client.kept_count == KEPT_MAX) {
    free(client.kept[client.kept_head]);
    client.kept_head = (client.kept_head + 1) % KEPT_MAX;
    client.kept_count--;
  }
  client.kept[(client.kept_head + client.kept_count) % KEPT_MAX] = copy;
  client.kept_count++;
  uv_cond_broadcast(&client.cond);
  uv_mutex_unlock(&client.lock);
}


static void on_connected(cport_session_t* s) {
  if (cport_session_is_tls(s))
    fprintf(stderr, "chat_client: connected to %s over %s\n", client.peer,
            cport_session_tls_version(s));
  else
    fprintf(stderr, "chat_client: connected to %s\n", client.peer);
  uv_mutex_lock(&client.lock);
  cport_session_ref(s); /* for the input thread */
  client.session = s;
  client.state = CLIENT_CONNECTED;
  uv_cond_broadcast(&client.cond);
  uv_mutex_unlock(&client.lock);
}


static void on_connect_failed(cport_service_t* svc, int code) {
  (void)svc;
  uv_mutex_lock(&client.lock);
  client.connect_error = code;
  client.state = CLIENT_ENDED;
  uv_cond_broadcast(&client.cond);
  uv_mutex_unlock(&client.lock);
}


static void on_packet(cport_session_t* s,
                      unsigned id,
                      const uint8_t* payload,
                      size_t len) {
  char line[CHAT_PACKET_MAX + 64];
  const uint8_t* f[3];
  size_t flen[3];
  size_t n = 0;
  (void)s;
  line[0] = '\0';
  if (id == CHAT_MESSAGE && chat_split(payload, len, f, flen, 3) == 0) {
    append(line, sizeof(line), &n, "[", 1);
    append(line, sizeof(line), &n, f[0], flen[0]);
    append(line, sizeof(line), &n, "] ", 2);
    append(line, sizeof(line), &n, f[1], flen[1]);
    append(line, sizeof(line), &n, ": ", 2);
    append(line, sizeof(line), &n, f[2], flen[2]);
  } else if ((id == CHAT_JOINED || id == CHAT_LEFT) &&
             chat_split(payload, len, f, flen, 2) == 0) {
    const char* verb = id == CHAT_JOINED ? " joined " : " left ";
    append(line, sizeof(line), &n, "* ", 2);
    append(line, sizeof(line), &n, f[1], flen[1]);
    append(line, sizeof(line), &n, verb, strlen(verb));
    append(line, sizeof(line), &n, f[0], flen[0]);
  } else if (id == CHAT_NAME) {
    append(line, sizeof(line), &n, "* you are now ", 14);
    append(line, sizeof(line), &n, payload, len);
  } else if (id == CHAT_ERROR) {
    append(line, sizeof(line), &n, "! ", 2);
    append(line, sizeof(line), &n, payload, len);
  } else {
    /* A newer server, or a broken one: say so, and carry on. */
    fprintf(stderr, "chat_client: ignored packet id %u of %llu bytes\n", id,
            (unsigned long long)len);
    return;
  }
  printf("%s\n", line);
  fflush(stdout);
  keep_line(line, n);
}


static void on_disconnected(cport_session_t* s, int code, const char* cause) {
  size_t len = strlen(cause);
  (void)s;
  if (len >= sizeof(client.end_cause))
    len = sizeof(client.end_cause) - 1;
  uv_mutex_lock(&client.lock);
  client.end_code = code;
  memcpy(client.end_cause, cause, len);
  client.end_cause[len] = '\0';
  client.state = CLIENT_ENDED;
  uv_cond_broadcast(&client.cond);
  uv_mutex_unlock(&client.lock);
}


/* Send one packet, or, with `raw`, the bytes as they are. Returns 0, or -1
 * (with a message) if they could not be sent. */
static int send_out(unsigned id, const void* data, size_t len, int raw) {
  int rc = CPORT_ENOTCONN;
  uv_mutex_lock(&client.lock);
  if (client.state == CLIENT_CONNECTED && client.session != NULL)
    rc = raw ? cport_session_send(client.session, data, len)
             : cport_session_send_packet(client.session, id, data, len);
  uv_mutex_unlock(&client.lock);
  if (rc != 0)
    fprintf(stderr, "chat_client: cannot send: %s\n", cport_strerror(rc));
  return rc == 0 ? 0 : -1;
}


/* Wait for a printed line containing `text`, consuming the lines before
 * it. Returns 0, or -1 (with a message) after the timeout or the end of
 * the session. */
static int expect(const char* text) {
  uint64_t deadline = uv_hrtime() + client.timeout_ms * 1000000u;
  uint64_t now = 0;
  int found = 0;
  uv_mutex_lock(&client.lock);
  for (;;) {
    while (client.kept_count > 0 && !found) {
      char* line = client.kept[client.kept_head];
      client.kept_head = (client.kept_head + 1) % KEPT_MAX;
      client.kept_count--;
      found = strstr(line, text) != NULL;
      free(line);
    }
    if (found || client.state != CLIENT_CONNECTED)
      break;
    now = uv_hrtime();
    if (now >= deadline)
      break;
    /* Returns early on every new line or state change; a spurious wake-up
     * just goes round again. */
    (void)uv_cond_timedwait(&client.cond, &client.lock, deadline - now);
  }
  uv_mutex_unlock(&client.lock);
  if (found)
    return 0;
  fprintf(stderr, "chat_client: %s while waiting for '%s'\n",
          now >= deadline ? "timed out" : "the connection ended", text);
  return -1;
}


static int hex_digit(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}


static int send_raw(const char* hex) {
  uint8_t bytes[INPUT_MAX / 2];
  size_t n = 0;
  int high = -1;
  for (; *hex != '\0'; hex++) {
    int d = hex_digit(*hex);
    if (*hex == ' ')
      continue;
    if (d < 0) {
      fprintf(stderr, "chat_client: /raw takes hex digits, not '%c'\n", *hex);
      return -1;
    }
    if (high < 0) {
      high = d;
    } else {
      bytes[n++] = (uint8_t)(high * 16 + d);
      high = -1;
    }
  }
  if (high >= 0 || n == 0) {
    fprintf(stderr, "chat_client: /raw takes whole bytes\n");
    return -1;
  }
  return send_out(0, bytes, n, 1);
}


/* The argument of command `cmd` in `line`: what follows "cmd " ("" for the
 * bare command), or NULL if the line is not that command. */
static const char* command_arg(const char* line, const char* cmd) {
  size_t n = strlen(cmd);
  if (strncmp(line, cmd, n) != 0)
    return NULL;
  if (line[n] == '\0')
    return line + n;
  return line[n] == ' ' ? line + n + 1 : NULL;
}


/* Act on one input line. Returns 0 to go on, 1 to quit, -1 on failure. A
 * failure ends a script; typing continues. */
static int run_line(const char* line) {
  const char* arg;
  int rc;
  if (line[0] == '\0' || (client.scripted && line[0] == '#'))
    return 0;
  if (line[0] != '/' || line[1] == '/') {
    if (line[0] == '/')
      line++;
    rc = send_out(CHAT_SAY, line, strlen(line), 0);
  } else if ((arg = command_arg(line, "/join")) != NULL) {
    rc = send_out(CHAT_JOIN, arg, strlen(arg), 0);
  } else if ((arg = command_arg(line, "/nick")) != NULL) {
    rc = send_out(CHAT_NICK, arg, strlen(arg), 0);
  } else if (strcmp(line, "/leave") == 0) {
    rc = send_out(CHAT_LEAVE, NULL, 0, 0);
  } else if (strcmp(line, "/quit") == 0) {
    return 1;
  } else if ((arg = command_arg(line, "/expect")) != NULL) {
    rc = expect(arg);
  } else if ((arg = command_arg(line, "/raw")) != NULL) {
    rc = send_raw(arg);
  } else {
    fprintf(stderr,
            "chat_client: unknown command '%s' (/join ROOM, /leave, "
            "/nick NAME, /quit, /expect TEXT, /raw HEX, //text)\n",
            line);
    rc = -1;
  }
  return rc != 0 && client.scripted ? -1 : 0;
}


/* The input thread: run every line, then disconnect gracefully, which
 * flushes what was sent before. */
static void input_main(void* arg) {
  char line[INPUT_MAX];
  int rc = 0;
  (void)arg;
  while (rc == 0 && fgets(line, sizeof(line), client.input) != NULL) {
    size_t len = strlen(line);
    if (len > 0 && line[len - 1] == '\n') {
      line[--len] = '\0';
    } else if (!feof(client.input)) {
      int c;
      /* Refuse the whole line rather than send it in pieces. */
      do c = fgetc(client.input);
      while (c != '\n' && c != EOF);
      fprintf(stderr, "chat_client: line longer than %d bytes ignored\n",
              INPUT_MAX - 2);
      rc = client.scripted ? -1 : 0;
      continue;
    }
    if (len > 0 && line[len - 1] == '\r') /* a script from Windows */
      line[--len] = '\0';
    rc = run_line(line);
  }
  uv_mutex_lock(&client.lock);
  client.failed = rc < 0;
  client.quitting = 1;
  if (client.state == CLIENT_CONNECTED) {
    rc = cport_session_disconnect(client.session, "bye");
    if (rc != 0) {
      /* Nothing will end the session now: end the wait in main(), whose
       * stop closes it without the flush. */
      client.end_code = rc;
      snprintf(client.end_cause, sizeof(client.end_cause), "%s",
               cport_strerror(rc));
      client.state = CLIENT_ENDED;
    }
  }
  client.input_done = 1;
  uv_cond_broadcast(&client.cond);
  uv_mutex_unlock(&client.lock);
}


static void usage(FILE* out) {
  fprintf(out,
          "usage: chat_client [--host ADDR] [--port N] [--name NAME] "
          "[--script FILE]\n"
          "                   [--timeout SECONDS]\n"
          "  --host ADDR        server address (default 127.0.0.1)\n"
          "  --port N           server port (default %d)\n"
          "  --name NAME        your name, 1 to %d visible characters\n"
          "  --script FILE      read the lines from FILE instead of the "
          "terminal\n"
          "  --timeout SECONDS  longest connect and /expect wait "
          "(default %d)\n"
          "  --tls              TLS, the server verified against the "
          "system's CAs\n"
          "  --tls-ca FILE      TLS, the server verified against these "
          "CAs (PEM)\n"
          "  --tls-insecure     TLS, the server not verified at all "
          "(tests only)\n"
          "  --tls-name NAME    the name to send and verify (default: "
          "--host)\n"
          "  --tls-cert FILE    a client certificate chain (PEM), with\n"
          "  --tls-key FILE     its private key (PEM)\n"
          "Lines: /join ROOM, /leave, /nick NAME, /quit, /expect TEXT, "
          "/raw HEX,\n"
          "//TEXT to say a line that starts with '/', anything else to "
          "say it.\n",
          DEFAULT_PORT, CHAT_NAME_MAX, DEFAULT_TIMEOUT_S);
}


int main(int argc, char** argv) {
  const char* host = "127.0.0.1";
  const char* name = NULL;
  const char* script = NULL;
  long port = DEFAULT_PORT;
  long timeout_s = DEFAULT_TIMEOUT_S;
  cport_addr_t addr;
  cport_service_opts_t opts;
  cport_session_t* s;
  example_tls_t tls;
  const char* err;
  uv_thread_t input_thread;
  int started = 0;
  int joined = 0;
  int status = 1;
  size_t k;
  int taken;
  int i;
  int rc;

  memset(&tls, 0, sizeof(tls));
  /* Options come in pairs, a name and its value, but for the TLS flags. */
  for (i = 1; i < argc; i += taken) {
    const char* value = i + 1 < argc ? argv[i + 1] : NULL;
    taken = 2;
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      usage(stdout);
      return 0;
    } else if (strcmp(argv[i], "--host") == 0 && value != NULL) {
      host = value;
    } else if (strcmp(argv[i], "--port") == 0 &&
               example_parse_long(value, 1, 65535, &port) == 0) {
    } else if (strcmp(argv[i], "--name") == 0 && value != NULL &&
               chat_valid_name((const uint8_t*)value, strlen(value),
                               CHAT_NAME_MAX)) {
      name = value;
    } else if (strcmp(argv[i], "--script") == 0 && value != NULL) {
      script = value;
    } else if (strcmp(argv[i], "--timeout") == 0 &&
               example_parse_long(value, 1, 86400, &timeout_s) == 0) {
    } else if ((taken = example_tls_option(&tls, CPORT_TLS_CLIENT, argv[i],
                                           value)) > 0) {
    } else {
      fprintf(stderr, "chat_client: bad argument '%s'%s%s\n", argv[i],
              value != NULL ? " " : "", value != NULL ? value : "");
      usage(stderr);
      return 2;
    }
  }
  if (cport_addr_resolve(&addr, host, (int)port) != 0) {
    fprintf(stderr, "chat_client: bad address '%s'\n", host);
    usage(stderr);
    return 2;
  }
  if ((err = example_tls_check(&tls, CPORT_TLS_CLIENT)) != NULL) {
    fprintf(stderr, "chat_client: %s\n", err);
    usage(stderr);
    return 2;
  }
  client.input = stdin;
  if (script != NULL) {
    client.input = fopen(script, "r");
    if (client.input == NULL) {
      fprintf(stderr, "chat_client: cannot open script '%s'\n", script);
      return 2;
    }
    client.scripted = 1;
  }
  client.timeout_ms = (uint64_t)timeout_s * 1000;
  cport_addr_format(&addr, client.peer, sizeof(client.peer));
  if (uv_mutex_init(&client.lock) != 0 || uv_cond_init(&client.cond) != 0) {
    fprintf(stderr, "chat_client: cannot create a mutex\n");
    return 1;
  }

  rc = cport_core_create(&client.core, NULL);
  if (rc == 0) {
    cport_service_opts_init(&opts);
    opts.cbs.on_connected = on_connected;
    opts.cbs.on_packet = on_packet;
    opts.cbs.on_disconnected = on_disconnected;
    opts.cbs.on_connect_failed = on_connect_failed;
    opts.packet.max_packet = CHAT_PACKET_MAX;
    opts.connect_timeout_ms = (unsigned)client.timeout_ms;
    /* The final flush waits no longer than an /expect. */
    opts.disconnect_timeout_ms = (unsigned)client.timeout_ms;
    opts.tls_name = tls.name;
    /* opts.tls stays NULL without the TLS options: plain TCP. */
    rc = example_tls_create(&tls, CPORT_TLS_CLIENT, "chat_client", &opts.tls);
    if (rc == 0) {
      rc = cport_service_create(&client.svc, client.core, CPORT_SERVICE_CLIENT,
                                &addr, &opts);
      cport_tls_unref(opts.tls); /* the service holds its own reference */
    }
  }
  /* Until cport_core_run() this thread is the loop's: start from here. */
  if (rc == 0)
    rc = cport_service_start(client.svc);
  if (rc == 0)
    rc = cport_core_run(client.core);
  if (rc != 0) {
    fprintf(stderr, "chat_client: cannot connect to %s: %s (%s)\n", client.peer,
            cport_strerror(rc), cport_err_name(rc));
    goto destroy;
  }

  uv_mutex_lock(&client.lock);
  while (client.state == CLIENT_CONNECTING)
    uv_cond_wait(&client.cond, &client.lock);
  rc = client.connect_error;
  uv_mutex_unlock(&client.lock);
  if (rc != 0) {
    fprintf(stderr, "chat_client: cannot connect to %s: %s (%s)\n", client.peer,
            cport_strerror(rc), cport_err_name(rc));
    goto stop;
  }
  /* Sent before the input thread starts, so before any of its lines. */
  if (name != NULL && send_out(CHAT_NICK, name, strlen(name), 0) != 0)
    goto stop;
  if (uv_thread_create(&input_thread, input_main, NULL) != 0) {
    fprintf(stderr, "chat_client: cannot start the input thread\n");
    goto stop;
  }
  started = 1;

  /* The session's end is bounded: by the server, or after the input's
   * disconnect by disconnect_timeout_ms. */
  uv_mutex_lock(&client.lock);
  while (client.state != CLIENT_ENDED) uv_cond_wait(&client.cond, &client.lock);
  if (client.quitting && client.end_code == CPORT_ELOCAL) {
    status = client.failed ? 1 : 0;
  } else {
    fprintf(stderr, "chat_client: connection to %s lost: %s\n", client.peer,
            client.end_code == CPORT_EOF ? "the server closed it"
                                         : client.end_cause);
  }
  uv_mutex_unlock(&client.lock);

stop:
  cport_core_stop(client.core);
  cport_core_join(client.core);
  /* Take the session from the input thread before it goes: from here on
   * that thread finds it ended and sends nothing. */
  uv_mutex_lock(&client.lock);
  s = client.session;
  client.session = NULL;
  client.state = CLIENT_ENDED;
  uv_cond_broadcast(&client.cond);
  /* A script always comes to its end; a terminal may block in fgets for
   * ever, and is left to the process's exit. */
  joined = started && (client.scripted || client.input_done);
  uv_mutex_unlock(&client.lock);
  cport_session_unref(s);
  if (joined)
    uv_thread_join(&input_thread);
destroy:
  cport_service_destroy(client.svc);
  cport_core_destroy(client.core);
  if (!started || joined) {
    for (k = 0; k < client.kept_count; k++)
      free(client.kept[(client.kept_head + k) % KEPT_MAX]);
    uv_cond_destroy(&client.cond);
    uv_mutex_destroy(&client.lock);
    if (client.scripted)
      fclose(client.input);
  }
  fflush(stdout);
  if (started && !joined)
    _Exit(status); /* exit() would flush stdin under the blocked fgets */
  return status;
}
