/* Local endpoints: servers and clients on Unix domain sockets (a path, or
 * a Linux abstract name) and, on Windows, named pipes. The same sessions
 * as TCP (echo, packets, sends from other threads, idle timeouts), the
 * peer's credentials, and the socket file's rules: a stale file replaced,
 * a live one or another kind of file never, the mode set, the file removed
 * on stop unless another server has replaced it, the path's length. */
#include "fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _WIN32
#include <windows.h>
#else
#include <errno.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#endif

#include "common.h"


static unsigned local_seq;

/* A fresh local endpoint for this process: a short path in /tmp (macOS
 * allows 103 bytes, and its $TMPDIR alone takes about 50), or a pipe. */
static void local_path(char* buf, size_t size, const char* tag) {
#ifdef _WIN32
  snprintf(buf, size, "\\\\.\\pipe\\cport-test-%lu-%s-%u",
           (unsigned long)GetCurrentProcessId(), tag, ++local_seq);
#else
  snprintf(buf, size, "/tmp/cport-%ld-%s-%u.sock", (long)getpid(), tag,
           ++local_seq);
  (void)unlink(buf);
#endif
}


static void local_addr(cport_addr_t* out, const char* path) {
  assert_int_equal(cport_addr_parse_local(out, path), 0);
}


/* A fresh endpoint, its path in `path` and its address in `out`. */
static void local_endpoint(char* path,
                           size_t size,
                           const char* tag,
                           cport_addr_t* out) {
  local_path(path, size, tag);
  local_addr(out, path);
}


static long own_pid(void) {
#ifdef _WIN32
  return (long)GetCurrentProcessId();
#else
  return (long)getpid();
#endif
}


/* A server of the fixture on a fresh local endpoint (fx->server_addr),
 * and `n` client sessions of the fixture's to it. */
static void start_local_pair(fixture_t* fx, const char* tag, unsigned n) {
  char path[128];
  cport_addr_t addr;
  local_endpoint(path, sizeof(path), tag, &addr);
  fixture_start_server_at(fx, &addr);
  assert_int_equal(cport_addr_kind(&fx->server_addr), cport_addr_kind(&addr));
  assert_string_equal(cport_addr_path(&fx->server_addr), path);
  if (n > 0) {
    fixture_start_client(fx, &fx->server_addr, n);
    fixture_wait_int(fx, &fx->connected, 2 * (int)n, FIXTURE_TIMEOUT_MS);
  }
}


static void test_local_echo_is_byte_exact(void** state) {
  fixture_t* fx = *state;
  const size_t len = 256 * 1024;
  uint8_t* data = malloc(len);
  rec_session_t* r;
  cport_service_stats_t st;
  assert_non_null(data);
  fill_pattern(data, len, 19);
  start_local_pair(fx, "echo", 1);
  assert_int_equal(cport_session_send(fx->last_client, data, len), 0);
  r = rec_of(fx->last_client);
  fixture_wait_size(fx, &r->received.len, len, FIXTURE_TIMEOUT_MS);
  assert_int_equal(r->received.len, len);
  assert_memory_equal(r->received.data, data, len);
  assert_int_equal(cport_service_stats(fx->server, &st), 0);
  assert_int_equal(st.bytes_in, len);
  assert_int_equal(st.connected, 1);
  free(data);
}


static void test_local_serves_many_sessions(void** state) {
  fixture_t* fx = *state;
  cport_service_stats_t st;
  start_local_pair(fx, "many", 32);
  assert_int_equal(cport_service_session_count(fx->server), 32);
  assert_int_equal(cport_service_stats(fx->client, &st), 0);
  assert_int_equal(st.connected, 32);
}


static int pred_rejected_2(void* arg) {
  cport_service_stats_t st;
  return cport_service_stats(arg, &st) == 0 && st.rejected >= 2;
}


/* max_sessions holds for local servers (on Windows, a named pipe's client
 * beyond it is accepted from the pipe only to be closed). */
static void test_local_max_sessions_rejects_the_rest(void** state) {
  fixture_t* fx = *state;
  cport_service_stats_t st;
  char path[128];
  cport_addr_t addr;
  local_endpoint(path, sizeof(path), "max", &addr);
  fx->opts.max_sessions = 2;
  fixture_start_server_at(fx, &addr);
  fx->opts.max_sessions = 0;
  fixture_start_client(fx, &addr, 4);
  assert_true(
      fixture_run_until(fx, pred_rejected_2, fx->server, FIXTURE_TIMEOUT_MS));
  assert_int_equal(cport_service_stats(fx->server, &st), 0);
  assert_int_equal(st.rejected, 2);
  assert_int_equal(st.connected, 2);
  assert_int_equal(cport_service_session_count(fx->server), 2);
}


/* Both ends name the endpoint; both learn the other's process. */
static void test_local_peer_addr_and_credentials(void** state) {
  fixture_t* fx = *state;
  cport_peer_cred_t cred;
  cport_addr_t a;
  int i;
  start_local_pair(fx, "cred", 1);
  for (i = 0; i < 2; i++) {
    cport_session_t* s = i == 0 ? fx->last_server : fx->last_client;
    assert_int_equal(cport_session_peer_addr(s, &a), 0);
    assert_int_equal(cport_addr_kind(&a), cport_addr_kind(&fx->server_addr));
    assert_string_equal(cport_addr_path(&a), cport_addr_path(&fx->server_addr));
    assert_int_equal(cport_session_local_addr(s, &a), 0);
    assert_string_equal(cport_addr_path(&a), cport_addr_path(&fx->server_addr));
    assert_int_equal(cport_session_peer_cred(s, &cred), 0);
#if defined(__linux__) || defined(__APPLE__) || defined(_WIN32)
    assert_int_equal(cred.pid, own_pid());
#endif
#ifndef _WIN32
    assert_int_equal(cred.uid, (int64_t)getuid());
    assert_int_equal(cred.gid, (int64_t)getgid());
#endif
  }
  assert_int_equal(cport_session_peer_cred(NULL, &cred), UV_EINVAL);
  assert_int_equal(cport_session_peer_cred(fx->last_server, NULL), UV_EINVAL);
}


/* A TCP session has no credentials to give. */
static void test_local_tcp_sessions_have_no_credentials(void** state) {
  fixture_t* fx = *state;
  cport_peer_cred_t cred;
  peer_t* p;
  fixture_start_server(fx);
  p = peer_connect(fx, &fx->server_addr, 0);
  fixture_wait_int(fx, &fx->connected, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(cport_session_peer_cred(fx->last_server, &cred), UV_ENOTSUP);
  peer_destroy(p);
}


/* ---- packets ---- */

typedef struct lpk_s {
  size_t packets;
  bytes_t got; /* id (1 byte) and payload, per packet */
  cport_session_t* last;
} lpk_t;

static void lpk_connected(cport_session_t* s) {
  lpk_t* k = cport_service_get_data(cport_session_service(s));
  cport_session_unref(k->last);
  cport_session_ref(s);
  k->last = s;
}

static void lpk_echo(cport_session_t* s,
                     unsigned id,
                     const uint8_t* payload,
                     size_t len) {
  (void)cport_session_send_packet(s, id, payload, len);
}

static void lpk_record(cport_session_t* s,
                       unsigned id,
                       const uint8_t* payload,
                       size_t len) {
  lpk_t* k = cport_service_get_data(cport_session_service(s));
  uint8_t head = (uint8_t)id;
  k->packets++;
  bytes_append(&k->got, &head, 1);
  bytes_append(&k->got, payload, len);
}


static void test_local_packets_both_ways(void** state) {
  fixture_t* fx = *state;
  lpk_t server;
  lpk_t client;
  cport_service_opts_t o;
  char path[128];
  cport_addr_t addr;
  uint8_t payload[300];
  unsigned i;
  memset(&server, 0, sizeof(server));
  memset(&client, 0, sizeof(client));
  local_endpoint(path, sizeof(path), "pk", &addr);
  cport_service_opts_init(&o);
  o.packet.has_id = 1;
  o.cbs.on_connected = lpk_connected;
  o.cbs.on_packet = lpk_echo;
  o.data = &server;
  assert_int_equal(cport_service_create(&fx->server, fx->core,
                                        CPORT_SERVICE_SERVER, &addr, &o),
                   0);
  assert_int_equal(cport_service_start(fx->server), 0);
  o.cbs.on_packet = lpk_record;
  o.data = &client;
  assert_int_equal(cport_service_create(&fx->client, fx->core,
                                        CPORT_SERVICE_CLIENT, &addr, &o),
                   0);
  assert_int_equal(cport_service_start(fx->client), 0);
  while (client.last == NULL) cport_core_dispatch(fx->core, 0, 10);
  for (i = 0; i < 50; i++) {
    fill_pattern(payload, sizeof(payload), i);
    assert_int_equal(
        cport_session_send_packet(client.last, i, payload, 1 + i * 5), 0);
  }
  fixture_wait_size(fx, &client.packets, 50, FIXTURE_TIMEOUT_MS);
  {
    size_t off = 0;
    for (i = 0; i < 50; i++) {
      fill_pattern(payload, sizeof(payload), i);
      assert_int_equal(client.got.data[off], (uint8_t)i);
      assert_memory_equal(client.got.data + off + 1, payload, 1 + i * 5);
      off += 2 + i * 5;
    }
    assert_int_equal(off, client.got.len);
  }
  cport_service_destroy(fx->client);
  fx->client = NULL;
  cport_service_destroy(fx->server);
  fx->server = NULL;
  cport_session_unref(server.last);
  cport_session_unref(client.last);
  bytes_free(&client.got);
}


/* ---- sends from other threads ---- */

#define LX_THREADS 4
#define LX_MESSAGES 3000

typedef struct lx_s {
  cport_session_t* s;
  uint8_t tag;
  int errors;
} lx_t;

static void lx_main(void* arg) {
  lx_t* x = arg;
  uint32_t i;
  for (i = 0; i < LX_MESSAGES; i++) {
    uint8_t m[5];
    m[0] = x->tag;
    m[1] = (uint8_t)(i >> 24);
    m[2] = (uint8_t)(i >> 16);
    m[3] = (uint8_t)(i >> 8);
    m[4] = (uint8_t)i;
    if (cport_session_send(x->s, m, sizeof(m)) != 0)
      x->errors++;
  }
}


/* "Any thread, in the order the calls returned", over a local socket. */
static void test_local_sends_from_threads_keep_each_threads_order(
    void** state) {
  fixture_t* fx = *state;
  const size_t total = (size_t)LX_THREADS * LX_MESSAGES * 5;
  lx_t x[LX_THREADS];
  uv_thread_t t[LX_THREADS];
  uint32_t next[LX_THREADS] = {0};
  rec_session_t* r;
  size_t off;
  int i;
  fx->mode = RECV_CONSUME;
  fx->opts.send_queue_limit = 64u * 1024 * 1024;
  start_local_pair(fx, "xs", 1);
  for (i = 0; i < LX_THREADS; i++) {
    x[i].s = fx->last_server;
    x[i].tag = (uint8_t)i;
    x[i].errors = 0;
    assert_int_equal(uv_thread_create(&t[i], lx_main, &x[i]), 0);
  }
  r = rec_of(fx->last_client);
  fixture_wait_size(fx, &r->received.len, total, FIXTURE_TIMEOUT_MS);
  for (i = 0; i < LX_THREADS; i++) {
    assert_int_equal(uv_thread_join(&t[i]), 0);
    assert_int_equal(x[i].errors, 0);
  }
  assert_int_equal(r->received.len, total);
  for (off = 0; off < total; off += 5) {
    const uint8_t* m = r->received.data + off;
    uint32_t seq = ((uint32_t)m[1] << 24) | ((uint32_t)m[2] << 16) |
                   ((uint32_t)m[3] << 8) | m[4];
    assert_true(m[0] < LX_THREADS);
    assert_int_equal(seq, next[m[0]]);
    next[m[0]]++;
  }
}


static void test_local_idle_timeout_ends_a_silent_session(void** state) {
  fixture_t* fx = *state;
  char path[128];
  cport_addr_t addr;
  local_endpoint(path, sizeof(path), "idle", &addr);
  /* The server's alone: the client must not time out first. */
  fx->opts.idle_timeout_ms = 100;
  fixture_start_server_at(fx, &addr);
  fx->opts.idle_timeout_ms = 0;
  fixture_start_client(fx, &addr, 1);
  fixture_wait_int(fx, &fx->disconnected, 2, FIXTURE_TIMEOUT_MS);
  assert_int_equal(rec_of(fx->last_server)->code, CPORT_EIDLE);
  assert_int_equal(rec_of(fx->last_client)->code, UV_EOF);
}


/* ---- options ---- */

static void test_local_options_that_do_not_apply_are_refused(void** state) {
  fixture_t* fx = *state;
  cport_service_opts_t o;
  cport_service_t* svc = NULL;
  cport_addr_t local;
  cport_addr_t tcp;
  char path[128];
  local_endpoint(path, sizeof(path), "opts", &local);
  assert_int_equal(cport_addr_parse(&tcp, "127.0.0.1", 0), 0);
  cport_service_opts_init(&o);
  o.unix_mode = 0600;
  assert_int_equal(
      cport_service_create(&svc, fx->core, CPORT_SERVICE_SERVER, &tcp, &o),
      UV_EINVAL);
  assert_int_equal(
      cport_service_create(&svc, fx->core, CPORT_SERVICE_CLIENT, &local, &o),
      UV_EINVAL);
#ifdef _WIN32
  assert_int_equal(
      cport_service_create(&svc, fx->core, CPORT_SERVICE_SERVER, &local, &o),
      UV_EINVAL);
#endif
  o.unix_mode = 04755; /* no setuid bit on a socket */
  assert_int_equal(
      cport_service_create(&svc, fx->core, CPORT_SERVICE_SERVER, &local, &o),
      UV_EINVAL);
  cport_service_opts_init(&o);
  o.proxy_protocol = CPORT_PROXY_V2;
  assert_int_equal(
      cport_service_create(&svc, fx->core, CPORT_SERVICE_SERVER, &local, &o),
      UV_EINVAL);
  cport_service_opts_init(&o);
  o.proxy_send = CPORT_PROXY_V1;
  assert_int_equal(
      cport_service_create(&svc, fx->core, CPORT_SERVICE_CLIENT, &local, &o),
      UV_EINVAL);
  /* An inherited socket comes without an address (AF_UNIX ones are not
   * adopted). */
  cport_service_opts_init(&o);
  o.listen_fd = 3;
  assert_int_equal(cport_service_create(&svc, fx->core, CPORT_SERVICE_SERVER,
                                        &local, &o),
                   UV_EINVAL);
  cport_service_opts_init(&o);
  o.ipv6_only = 1;
  assert_int_equal(
      cport_service_create(&svc, fx->core, CPORT_SERVICE_SERVER, &local, &o),
      UV_EINVAL);
  assert_null(svc);
}


/* A client's connect to an endpoint where nothing listens fails as an
 * attempt, reported to on_connect_failed. */
static void test_local_connect_to_nothing_fails_cleanly(void** state) {
  fixture_t* fx = *state;
  char path[128];
  cport_addr_t addr;
  local_endpoint(path, sizeof(path), "none", &addr);
  fixture_start_client(fx, &addr, 1);
  fixture_wait_int(fx, &fx->connect_failed, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(fx->connected, 0);
  assert_int_equal(fx->last_connect_error, UV_ENOENT);
}


#ifndef _WIN32
/* ---- the socket file (Unix) ---- */

/* A socket file whose socket is closed: what a killed server leaves. */
static void make_stale_socket(const char* path) {
  struct sockaddr_un un;
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  memset(&un, 0, sizeof(un));
  un.sun_family = AF_UNIX;
  snprintf(un.sun_path, sizeof(un.sun_path), "%s", path);
  assert_int_equal(bind(fd, (struct sockaddr*)&un, sizeof(un)), 0);
  close(fd);
}


static int is_socket_file(const char* path) {
  struct stat st;
  return lstat(path, &st) == 0 && S_ISSOCK(st.st_mode);
}


/* A peer that connects and never reads: the server's sends pile up to
 * its send queue limit and are refused there, memory bounded, as over
 * TCP. */
static void test_local_peer_that_never_reads_meets_the_limit(void** state) {
  fixture_t* fx = *state;
  struct sockaddr_un un;
  cport_service_stats_t st;
  uint8_t chunk[64 * 1024];
  int fd;
  int i;
  int rc = 0;
  fx->opts.send_queue_limit = 256 * 1024;
  start_local_pair(fx, "bp", 0);
  fd = socket(AF_UNIX, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  memset(&un, 0, sizeof(un));
  un.sun_family = AF_UNIX;
  snprintf(un.sun_path, sizeof(un.sun_path), "%s",
           cport_addr_path(&fx->server_addr));
  assert_int_equal(connect(fd, (struct sockaddr*)&un, sizeof(un)), 0);
  fixture_wait_int(fx, &fx->connected, 1, FIXTURE_TIMEOUT_MS);
  memset(chunk, 0x5a, sizeof(chunk));
  /* The kernel's buffers take a few hundred KiB first. */
  for (i = 0; i < 4096; i++) {
    rc = cport_session_send(fx->last_server, chunk, sizeof(chunk));
    if (rc != 0)
      break;
    cport_core_dispatch(fx->core, 0, 1);
  }
  assert_int_equal(rc, CPORT_ESENDQ);
  assert_int_equal(cport_service_stats(fx->server, &st), 0);
  assert_true(st.queued_bytes > 0);
  /* Refused once it held the limit or more: the last admitted send may
   * have passed it by its own size (and a request's overhead). */
  assert_true(st.queued_bytes <=
              fx->opts.send_queue_limit + 2 * sizeof(chunk));
  assert_true(cport_session_is_connected(fx->last_server));
  close(fd);
}


static void test_local_stale_file_is_replaced(void** state) {
  fixture_t* fx = *state;
  char path[128];
  cport_addr_t addr;
  local_path(path, sizeof(path), "stale");
  make_stale_socket(path);
  assert_true(is_socket_file(path));
  /* A client finds nobody there. */
  local_addr(&addr, path);
  fixture_start_client(fx, &addr, 1);
  fixture_wait_int(fx, &fx->connect_failed, 1, FIXTURE_TIMEOUT_MS);
  assert_int_equal(fx->last_connect_error, UV_ECONNREFUSED);
  cport_service_destroy(fx->client);
  fx->client = NULL;
  /* A server takes the path over. */
  fixture_start_server_at(fx, &addr);
  fixture_start_client(fx, &addr, 1);
  fixture_wait_int(fx, &fx->connected, 2, FIXTURE_TIMEOUT_MS);
}


static void test_local_live_file_is_refused_and_kept(void** state) {
  fixture_t* fx = *state;
  cport_service_t* second = NULL;
  cport_service_opts_t o;
  cport_addr_t addr;
  start_local_pair(fx, "live", 0);
  addr = fx->server_addr;
  cport_service_opts_init(&o);
  assert_int_equal(
      cport_service_create(&second, fx->core, CPORT_SERVICE_SERVER, &addr, &o),
      0);
  assert_int_equal(cport_service_start(second), UV_EADDRINUSE);
  cport_service_destroy(second);
  /* The first server's file is still there and still serves. */
  assert_true(is_socket_file(cport_addr_path(&addr)));
  fixture_start_client(fx, &addr, 1);
  /* Its probe was a session too: one closed at once. */
  fixture_wait_int(fx, &fx->connected, 3, FIXTURE_TIMEOUT_MS);
  assert_non_null(fx->last_client);
  assert_true(cport_session_is_connected(fx->last_client));
}


static void test_local_other_files_are_left_alone(void** state) {
  fixture_t* fx = *state;
  cport_service_t* svc = NULL;
  cport_service_opts_t o;
  cport_addr_t addr;
  char path[128];
  char text[16] = "";
  FILE* f;
  local_path(path, sizeof(path), "file");
  f = fopen(path, "w");
  assert_non_null(f);
  fputs("keep me", f);
  fclose(f);
  local_addr(&addr, path);
  cport_service_opts_init(&o);
  assert_int_equal(
      cport_service_create(&svc, fx->core, CPORT_SERVICE_SERVER, &addr, &o), 0);
  assert_int_equal(cport_service_start(svc), UV_EADDRINUSE);
  cport_service_destroy(svc);
  f = fopen(path, "r");
  assert_non_null(f);
  assert_non_null(fgets(text, sizeof(text), f));
  fclose(f);
  assert_string_equal(text, "keep me");
  unlink(path);
}


static void test_local_mode_is_set_before_clients_come(void** state) {
  fixture_t* fx = *state;
  struct stat st;
  char path[128];
  cport_addr_t addr;
  local_endpoint(path, sizeof(path), "mode", &addr);
  fx->opts.unix_mode = 0600;
  fixture_start_server_at(fx, &addr);
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 07777, 0600);
}


static void test_local_file_is_removed_on_stop(void** state) {
  fixture_t* fx = *state;
  char path[128];
  start_local_pair(fx, "rm", 1);
  snprintf(path, sizeof(path), "%s", cport_addr_path(&fx->server_addr));
  assert_true(is_socket_file(path));
  fixture_stop_service(fx, fx->server, 0);
  assert_false(is_socket_file(path));
  assert_int_equal(access(path, F_OK), -1);
}


/* A newer server (a restart) replaced the file: the old one's stop must
 * not remove the new one's. */
static void test_local_stop_leaves_a_replaced_file(void** state) {
  fixture_t* fx = *state;
  char path[128];
  start_local_pair(fx, "repl", 0);
  snprintf(path, sizeof(path), "%s", cport_addr_path(&fx->server_addr));
  assert_int_equal(unlink(path), 0);
  make_stale_socket(path);
  fixture_stop_service(fx, fx->server, 0);
  assert_true(is_socket_file(path));
  unlink(path);
}


/* The longest path the platform takes is served; one byte more is
 * refused when parsed, with a clear code. */
static void test_local_path_length_limit(void** state) {
  fixture_t* fx = *state;
  size_t max = cport_addr_unix_path_max();
  char dir[64];
  char path[256];
  cport_addr_t addr;
  size_t len;
  assert_true(max == sizeof(((struct sockaddr_un*)0)->sun_path) - 1);
#if defined(__linux__)
  assert_int_equal(max, 107);
#elif defined(__APPLE__)
  assert_int_equal(max, 103);
#endif
  snprintf(dir, sizeof(dir), "/tmp/cport-%ld-long", (long)getpid());
  (void)mkdir(dir, 0700);
  len = (size_t)snprintf(path, sizeof(path), "%s/", dir);
  memset(path + len, 'x', max + 1 - len);
  path[max + 1] = '\0';
  assert_int_equal(cport_addr_parse_local(&addr, path), UV_ENAMETOOLONG);
  {
    char text[300];
    snprintf(text, sizeof(text), "unix:%s", path);
    assert_int_equal(cport_addr_parse_hostport(&addr, text), UV_ENAMETOOLONG);
  }
  path[max] = '\0';
  assert_int_equal(strlen(path), max);
  (void)unlink(path);
  assert_int_equal(cport_addr_parse_local(&addr, path), 0);
  fixture_start_server_at(fx, &addr);
  fixture_start_client(fx, &addr, 1);
  fixture_wait_int(fx, &fx->connected, 2, FIXTURE_TIMEOUT_MS);
  fixture_stop_service(fx, fx->server, 0);
  assert_int_equal(access(path, F_OK), -1);
  rmdir(dir);
}


/* Sessions of a Unix socket server spread over the loops as TCP's do. */
static void test_local_server_spreads_over_loops(void** state) {
  cport_core_opts_t co;
  cport_core_t* core = NULL;
  cport_service_t* srv = NULL;
  cport_service_t* cli = NULL;
  cport_service_opts_t o;
  cport_service_stats_t st;
  cport_addr_t addr;
  char path[128];
  int i;
  (void)state;
  cport_core_opts_init(&co);
  co.loops = 2;
  assert_int_equal(cport_core_create(&core, &co), 0);
  local_endpoint(path, sizeof(path), "spread", &addr);
  cport_service_opts_init(&o);
  assert_int_equal(
      cport_service_create(&srv, core, CPORT_SERVICE_SERVER, &addr, &o), 0);
  assert_int_equal(cport_service_start(srv), 0);
  o.connect_count = 8;
  assert_int_equal(
      cport_service_create(&cli, core, CPORT_SERVICE_CLIENT, &addr, &o), 0);
  assert_int_equal(cport_service_start(cli), 0);
  for (i = 0; i < 2000; i++) {
    cport_core_dispatch(core, 0, 5);
    cport_core_dispatch(core, 1, 5);
    if (cport_service_session_count(srv) == 8)
      break;
  }
  assert_int_equal(cport_service_session_count(srv), 8);
  assert_int_equal(cport_service_stats(srv, &st), 0);
  assert_int_equal(st.connected, 8);
  cport_service_destroy(cli);
  cport_service_destroy(srv);
  cport_core_destroy(core);
  assert_int_equal(access(path, F_OK), -1);
}
#endif /* !_WIN32 */


#if defined(__linux__)
/* A Linux abstract name: no file at all. */
static void test_local_abstract_name(void** state) {
  fixture_t* fx = *state;
  char name[64];
  cport_addr_t addr;
  char text[CPORT_ADDR_STRLEN];
  snprintf(name, sizeof(name), "@cport-test-%ld", (long)getpid());
  local_addr(&addr, name);
  assert_int_equal(cport_addr_format(&addr, text, sizeof(text)), 0);
  assert_int_equal(strncmp(text, "unix:@cport-test-", 17), 0);
  fixture_start_server_at(fx, &addr);
  fixture_start_client(fx, &addr, 2);
  fixture_wait_int(fx, &fx->connected, 4, FIXTURE_TIMEOUT_MS);
  assert_int_equal(access(name, F_OK), -1);
  /* A mode is for files only. */
  {
    cport_service_t* svc = NULL;
    cport_service_opts_t o;
    cport_service_opts_init(&o);
    o.unix_mode = 0600;
    assert_int_equal(
        cport_service_create(&svc, fx->core, CPORT_SERVICE_SERVER, &addr, &o),
        UV_EINVAL);
  }
}
#endif


int main(void) {
  const struct CMUnitTest tests[] = {
    FIXTURE_TEST(test_local_echo_is_byte_exact),
    FIXTURE_TEST(test_local_serves_many_sessions),
    FIXTURE_TEST(test_local_max_sessions_rejects_the_rest),
    FIXTURE_TEST(test_local_peer_addr_and_credentials),
    FIXTURE_TEST(test_local_tcp_sessions_have_no_credentials),
    FIXTURE_TEST(test_local_packets_both_ways),
    FIXTURE_TEST(test_local_sends_from_threads_keep_each_threads_order),
    FIXTURE_TEST(test_local_idle_timeout_ends_a_silent_session),
    FIXTURE_TEST(test_local_options_that_do_not_apply_are_refused),
    FIXTURE_TEST(test_local_connect_to_nothing_fails_cleanly),
#ifndef _WIN32
    FIXTURE_TEST(test_local_peer_that_never_reads_meets_the_limit),
    FIXTURE_TEST(test_local_stale_file_is_replaced),
    FIXTURE_TEST(test_local_live_file_is_refused_and_kept),
    FIXTURE_TEST(test_local_other_files_are_left_alone),
    FIXTURE_TEST(test_local_mode_is_set_before_clients_come),
    FIXTURE_TEST(test_local_file_is_removed_on_stop),
    FIXTURE_TEST(test_local_stop_leaves_a_replaced_file),
    FIXTURE_TEST(test_local_path_length_limit),
    cmocka_unit_test_setup_teardown(test_local_server_spreads_over_loops,
                                    mem_setup, mem_teardown),
#endif
#if defined(__linux__)
    FIXTURE_TEST(test_local_abstract_name),
#endif
  };
  return cmocka_run_group_tests_name("local", tests, NULL, NULL);
}
