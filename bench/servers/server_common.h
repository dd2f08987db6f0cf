/* The set-up that the benchmark's reference echo servers share, so that each
 * server's file holds only its read and write model. The servers take
 *
 *   PROG [--host ADDR] [--port N] [--threads N]
 *
 * and print "listening on HOST:PORT" only once SIGINT and SIGTERM are
 * watched, because a script may send either as soon as it reads the line.
 * The libuv servers also take --unix PATH: a Unix domain socket instead,
 * announced as "listening on unix:PATH", as cport's echo_server does.
 *
 * Every function is static inline, so a program that needs only part of it
 * (faulty_echo has a command line of its own) builds without unused-function
 * warnings. The libuv part exists only where <uv.h> was included first,
 * because bench_libevent does not link libuv; likewise the TLS part
 * (--tls-cert, --tls-key) only where <openssl/ssl.h> was. */
#ifndef CPORT_BENCH_SERVER_COMMON_H
#define CPORT_BENCH_SERVER_COMMON_H

#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "example_args.h"

/* Room for the longest "[host]:port" server_format_addr() writes. */
#define SERVER_ADDR_STRLEN (NI_MAXHOST + NI_MAXSERV + 4)


/* "host:port", or "[host]:port" for IPv6, as cport's echo_server prints. */
static inline void server_format_addr(const struct sockaddr* sa,
                                      char* out,
                                      size_t size) {
  char host[NI_MAXHOST];
  char port[NI_MAXSERV];
  socklen_t len = sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                            : sizeof(struct sockaddr_in);
  if (getnameinfo(sa, len, host, sizeof(host), port, sizeof(port),
                  NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
    snprintf(out, size, "?");
    return;
  }
  snprintf(out, size, sa->sa_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host,
           port);
}


/* Flushed, because the scripts read this line through a pipe. */
static inline void server_announce(const struct sockaddr* bound) {
  char text[SERVER_ADDR_STRLEN];
  server_format_addr(bound, text, sizeof(text));
  printf("listening on %s\n", text);
  fflush(stdout);
}


static inline void server_usage(const char* prog, FILE* out) {
  fprintf(out,
          "usage: %s [--host ADDR] [--port N] [--threads N]"
#ifdef OPENSSL_SSL_H
          " --tls-cert FILE --tls-key FILE"
#endif
#ifdef UV_VERSION_MAJOR
          " [--loop-thread 0|1] [--unix PATH]"
#endif
          "\n"
          "  --host ADDR       address to listen on (default 127.0.0.1)\n"
          "  --port N          TCP port, 0 for any free one (default 7777)\n"
          "  --threads N       accepted for a common command line; runs 1\n"
#ifdef OPENSSL_SSL_H
          "  --tls-cert FILE   certificate chain (PEM, leaf first), required\n"
          "  --tls-key FILE    its private key (PEM), required\n"
#endif
#ifdef UV_VERSION_MAJOR
          "  --loop-thread 1   run the loop on a second thread while main\n"
          "                    waits to join it, as cport_core_run() and\n"
          "                    cport_core_join() do (default 0: on main)\n"
          "  --unix PATH       listen on this Unix domain socket instead of\n"
          "                    --host and --port; a stale socket file there\n"
          "                    (nothing listening) is replaced\n"
#endif
          ,
          prog);
}

#ifdef UV_VERSION_MAJOR
/* --loop-thread: the libuv servers' loop runs on a thread of its own. */
static int server_loop_thread;
/* --unix: the path to listen on instead of TCP; NULL for TCP. */
static const char* server_unix_path;
#endif

#ifdef OPENSSL_SSL_H
/* --tls-cert and --tls-key, both required where TLS is compiled in. */
static const char* server_tls_cert;
static const char* server_tls_key;
#endif


/* Parses the command line and resolves --host and --loop. Exits, as main()
 * would, with 0 after --help and with 2 after the usage on a bad argument
 * or address.
 * Returns: the address to listen on, which the caller frees with
 *          freeaddrinfo(). */
static inline struct addrinfo* server_parse_args(const char* prog,
                                                 int argc,
                                                 char** argv) {
  const char* host = "127.0.0.1";
  const char* port = "7777";
  long number;
  struct addrinfo hints;
  struct addrinfo* ai;
  int i;
  int rc;

  /* Every option takes a value, so options come in pairs. */
  for (i = 1; i < argc; i += 2) {
    const char* value = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      server_usage(prog, stdout);
      exit(0);
    } else if (strcmp(argv[i], "--host") == 0 && value != NULL) {
      host = value;
    } else if (strcmp(argv[i], "--port") == 0 &&
               example_parse_long(value, 0, 65535, &number) == 0) {
      port = value;
    } else if (strcmp(argv[i], "--threads") == 0 &&
               example_parse_long(value, 1, 1024, &number) == 0) {
      if (number > 1)
        fprintf(stderr, "%s: single-threaded; --threads %ld runs 1\n", prog,
                number);
#ifdef UV_VERSION_MAJOR
    } else if (strcmp(argv[i], "--loop-thread") == 0 &&
               example_parse_long(value, 0, 1, &number) == 0) {
      server_loop_thread = (int)number;
    } else if (strcmp(argv[i], "--unix") == 0 && value != NULL &&
               *value != '\0' &&
               strlen(value) < sizeof(((struct sockaddr_un*)0)->sun_path)) {
      server_unix_path = value;
#endif
#ifdef OPENSSL_SSL_H
    } else if (strcmp(argv[i], "--tls-cert") == 0 && value != NULL) {
      server_tls_cert = value;
    } else if (strcmp(argv[i], "--tls-key") == 0 && value != NULL) {
      server_tls_key = value;
#endif
    } else {
      fprintf(stderr, "%s: bad argument '%s'%s%s\n", prog, argv[i],
              value != NULL ? " " : "", value != NULL ? value : "");
      server_usage(prog, stderr);
      exit(2);
    }
  }
#ifdef OPENSSL_SSL_H
  if (server_tls_cert == NULL || server_tls_key == NULL) {
    fprintf(stderr, "%s: --tls-cert and --tls-key are required\n", prog);
    server_usage(prog, stderr);
    exit(2);
  }
#endif
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  rc = getaddrinfo(host, port, &hints, &ai);
  if (rc != 0) {
    fprintf(stderr, "%s: bad address '%s': %s\n", prog, host, gai_strerror(rc));
    server_usage(prog, stderr);
    exit(2);
  }
  return ai;
}


#ifdef OPENSSL_SSL_H

/* The TLS servers' context: TLS 1.3 only, with TLS_AES_128_GCM_SHA256 so
 * that every server of the benchmark runs the same cipher, and otherwise
 * OpenSSL's defaults (session tickets on, SSL_MODE_RELEASE_BUFFERS off).
 * Returns: the context, which lives as long as the process; NULL after
 *          printing why not. */
static inline SSL_CTX* server_tls_context(const char* prog) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == NULL ||
      SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256") != 1) {
    fprintf(stderr, "%s: cannot set up TLS 1.3 with AES-128-GCM\n", prog);
    return NULL;
  }
  if (SSL_CTX_use_certificate_chain_file(ctx, server_tls_cert) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx, server_tls_key, SSL_FILETYPE_PEM) !=
          1 ||
      SSL_CTX_check_private_key(ctx) != 1) {
    fprintf(stderr, "%s: cannot load %s and %s\n", prog, server_tls_cert,
            server_tls_key);
    SSL_CTX_free(ctx);
    return NULL;
  }
  return ctx;
}

#endif /* OPENSSL_SSL_H */


#ifdef UV_VERSION_MAJOR

static inline void server_uv_free_cb(uv_handle_t* handle) {
  free(handle);
}


/* Accepts a connection into a zeroed heap block of `size` bytes that starts
 * with its handle, so a server can keep its own state after the handle: a
 * uv_tcp_t with Nagle off, as cport does, or from a Unix domain socket
 * listener a uv_pipe_t (`size` then holds one).
 * Returns: the handle, which server_uv_free_cb() frees on close; NULL when
 *          there is nothing to serve (a failed accept is already closed). */
static inline uv_stream_t* server_uv_accept(uv_stream_t* server,
                                            int status,
                                            size_t size) {
  uv_stream_t* stream;
  int rc;
  /* Errors such as EMFILE leave the listener running; libuv retries. */
  if (status < 0)
    return NULL;
  stream = calloc(1, size);
  if (stream == NULL)
    return NULL;
  if (server->type == UV_NAMED_PIPE) {
    uv_pipe_init(server->loop, (uv_pipe_t*)stream, 0);
    rc = uv_accept(server, stream);
  } else {
    uv_tcp_init(server->loop, (uv_tcp_t*)stream);
    rc = uv_accept(server, stream);
    if (rc == 0)
      rc = uv_tcp_nodelay((uv_tcp_t*)stream, 1);
  }
  if (rc != 0) {
    uv_close((uv_handle_t*)stream, server_uv_free_cb);
    return NULL;
  }
  return stream;
}


/* Has SIGINT and SIGTERM call `signal_cb` on `loop`. */
static inline void server_uv_watch_signals(uv_loop_t* loop,
                                           uv_signal_cb signal_cb) {
  static uv_signal_t sigint;
  static uv_signal_t sigterm;
  uv_signal_init(loop, &sigint);
  uv_signal_init(loop, &sigterm);
  uv_signal_start(&sigint, signal_cb, SIGINT);
  uv_signal_start(&sigterm, signal_cb, SIGTERM);
}


/* Listens on `sa` with a backlog of 511, has SIGINT and SIGTERM call
 * `signal_cb`, then prints "listening on HOST:PORT".
 * Ownership: `server` must outlive the loop; `sa` is read during the call.
 * Returns: 0, or 1 after printing "PROG: cannot listen on HOST:PORT: why". */
static inline int server_uv_listen(const char* prog,
                                   uv_loop_t* loop,
                                   uv_tcp_t* server,
                                   const struct sockaddr* sa,
                                   uv_connection_cb connection_cb,
                                   uv_signal_cb signal_cb) {
  struct sockaddr_storage bound;
  int len = (int)sizeof(bound);
  int rc;

  /* A peer that resets while a write is in flight must not kill us. */
  signal(SIGPIPE, SIG_IGN);
  uv_tcp_init(loop, server);
  rc = uv_tcp_bind(server, sa, 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t*)server, 511, connection_cb);
  if (rc == 0)
    rc = uv_tcp_getsockname(server, (struct sockaddr*)&bound, &len);
  if (rc != 0) {
    char text[SERVER_ADDR_STRLEN];
    server_format_addr(sa, text, sizeof(text));
    fprintf(stderr, "%s: cannot listen on %s: %s\n", prog, text,
            uv_strerror(rc));
    return 1;
  }
  server_uv_watch_signals(loop, signal_cb);
  server_announce((struct sockaddr*)&bound);
  return 0;
}


/* Whether `path` is a socket that nobody listens on: what a server killed
 * before it could unlink its socket leaves behind. Anything else there, a
 * regular file or a live server's socket, is left alone. */
static inline int server_unix_stale(const char* path) {
  struct stat st;
  struct sockaddr_un un;
  int fd;
  int refused;
  if (lstat(path, &st) != 0 || !S_ISSOCK(st.st_mode))
    return 0;
  fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0)
    return 0;
  memset(&un, 0, sizeof(un));
  un.sun_family = AF_UNIX;
  memcpy(un.sun_path, path, strlen(path) + 1);
  refused = connect(fd, (struct sockaddr*)&un, sizeof(un)) != 0;
  close(fd);
  return refused;
}


/* server_uv_listen() on a Unix domain socket at `path` (a stale socket
 * file there is replaced), announced as "listening on unix:PATH".
 * Ownership: `server` must outlive the loop; `path` is copied by libuv.
 * Returns: 0, or 1 after printing "PROG: cannot listen on unix:PATH: why". */
static inline int server_uv_listen_unix(const char* prog,
                                        uv_loop_t* loop,
                                        uv_pipe_t* server,
                                        const char* path,
                                        uv_connection_cb connection_cb,
                                        uv_signal_cb signal_cb) {
  int rc;
  signal(SIGPIPE, SIG_IGN);
  if (server_unix_stale(path))
    unlink(path);
  uv_pipe_init(loop, server, 0);
  rc = uv_pipe_bind(server, path);
  if (rc == 0)
    rc = uv_listen((uv_stream_t*)server, 511, connection_cb);
  if (rc != 0) {
    fprintf(stderr, "%s: cannot listen on unix:%s: %s\n", prog, path,
            uv_strerror(rc));
    return 1;
  }
  server_uv_watch_signals(loop, signal_cb);
  printf("listening on unix:%s\n", path);
  fflush(stdout);
  return 0;
}


/* What follows is the connection of the two plain libuv echo servers,
 * around their own alloc_cb and read_cb. Reading pauses while a megabyte
 * is queued to the peer and resumes once half of it has drained, the
 * thresholds cport uses. */
#define SERVER_PAUSE_BYTES (1024 * 1024)
#define SERVER_RESUME_BYTES (SERVER_PAUSE_BYTES / 2)

typedef struct server_conn_s {
  /* First, so the handle pointer is the conn pointer; a uv_pipe_t with
   * --unix. */
  union {
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } handle;
  int paused;
} server_conn_t;

/* The server's own callbacks, for starting and resuming reads; set once by
 * server_uv_main() before the loop runs. */
static uv_alloc_cb server_alloc_cb;
static uv_read_cb server_read_cb;


static inline void server_conn_close(uv_stream_t* stream) {
  if (!uv_is_closing((uv_handle_t*)stream))
    uv_close((uv_handle_t*)stream, server_uv_free_cb);
}


/* For read_cb, with what uv_write() returned: a failure ends the
 * connection, and a queue over the limit pauses reading. */
static inline void server_conn_queued(uv_stream_t* stream, int rc) {
  if (rc != 0) {
    server_conn_close(stream);
    return;
  }
  if (uv_stream_get_write_queue_size(stream) >= SERVER_PAUSE_BYTES) {
    uv_read_stop(stream);
    ((server_conn_t*)stream)->paused = 1;
  }
}


/* For write_cb, with its status, once it has freed the request. */
static inline void server_conn_written(uv_stream_t* stream, int status) {
  server_conn_t* conn = (server_conn_t*)stream;
  /* UV_ECANCELED from a close in progress lands here too;
   * server_conn_close() then has nothing left to do. */
  if (status < 0) {
    server_conn_close(stream);
    return;
  }
  if (conn->paused &&
      uv_stream_get_write_queue_size(stream) <= SERVER_RESUME_BYTES) {
    conn->paused = 0;
    if (uv_read_start(stream, server_alloc_cb, server_read_cb) != 0)
      server_conn_close(stream);
  }
}


static inline void server_connection_cb(uv_stream_t* server, int status) {
  uv_stream_t* stream =
      server_uv_accept(server, status, sizeof(server_conn_t));
  if (stream != NULL &&
      uv_read_start(stream, server_alloc_cb, server_read_cb) != 0)
    server_conn_close(stream);
}


/* A stop leaves connections open: the process exits right after, and the
 * kernel closes them faster than a graceful walk would. The socket file of
 * --unix goes, though, since nothing else would remove it. */
static inline void server_uv_stop_cb(uv_signal_t* handle, int signum) {
  (void)signum;
  if (server_unix_path != NULL)
    unlink(server_unix_path);
  uv_stop(handle->loop);
}


static void server_run_loop(void* loop) {
  uv_run(loop, UV_RUN_DEFAULT);
}


/* The whole main() of a plain libuv echo server, on the default loop.
 * Returns: the exit status, 0 after SIGINT or SIGTERM and 1 when it cannot
 *          listen; bad arguments exit with 2 inside. */
static inline int server_uv_main(const char* prog,
                                 int argc,
                                 char** argv,
                                 uv_alloc_cb alloc_cb,
                                 uv_read_cb read_cb) {
  static union {
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } server;
  uv_loop_t* loop = uv_default_loop();
  struct addrinfo* ai = server_parse_args(prog, argc, argv);
  int rc;
  server_alloc_cb = alloc_cb;
  server_read_cb = read_cb;
  if (server_unix_path != NULL)
    rc = server_uv_listen_unix(prog, loop, &server.pipe, server_unix_path,
                               server_connection_cb, server_uv_stop_cb);
  else
    rc = server_uv_listen(prog, loop, &server.tcp, ai->ai_addr,
                          server_connection_cb, server_uv_stop_cb);
  freeaddrinfo(ai);
  if (rc != 0)
    return rc;
  if (server_loop_thread) {
    /* The process then has two threads, as a cport server under
     * cport_core_run() has: the cost of that alone, measured. */
    uv_thread_t thread;
    if (uv_thread_create(&thread, server_run_loop, loop) != 0) {
      fprintf(stderr, "%s: cannot start the loop thread\n", prog);
      return 1;
    }
    uv_thread_join(&thread);
  } else {
    uv_run(loop, UV_RUN_DEFAULT);
  }
  return 0;
}

#endif /* UV_VERSION_MAJOR */

#endif /* CPORT_BENCH_SERVER_COMMON_H */
