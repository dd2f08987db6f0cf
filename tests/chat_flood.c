/* chat_flood: one chat client floods chat_server's busiest room, whose
 * members only listen, for tests/chat_test.sh. Written on plain libuv,
 * sharing only the protocol (chat_proto.h) with the examples.
 *
 *   chat_flood rooms|messages PORT MEMBERS PROBE_LIMIT_MS [SERVER_PID]
 *
 * MEMBERS clients join the room "flood" and read everything. Then one more,
 * the attacker, joins it and sends a single write that fills 64 KiB with
 * LEAVE+JOIN pairs (rooms) or with SAYs (messages), each of which asks the
 * server to write to every member. As soon as the server has answered the
 * first request, a new client (the probe) connects and asks to join the
 * room "quiet": the time from its connect to its JOINED notice is what a
 * newcomer waits during the attack. Finally member 0 says "end" in "flood";
 * once every member has read it, everything the attack caused has been
 * delivered. Prints, one line each:
 *
 *   attack: Q requests in one write of B bytes
 *   probe: answered in N ms
 *   attacker: R of Q requests answered: T to the room, E errors ("first
 *             error", "last error"), closed by the server: HOW | still
 *             connected
 *   members: each heard H packets from the attacker
 *   server cpu: S s during the attack    (given SERVER_PID, where /proc is)
 *
 * Exits 0 when all of that happened; 1 if the probe had no answer within
 * PROBE_LIMIT_MS, a member or the probe was dropped, or it was not over
 * within 120 s; 3 on a network error; 2 on bad arguments. Always connects
 * to 127.0.0.1. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "chat_proto.h"

#define ROOM "flood"
#define QUIET "quiet"
#define DEADLINE_MS 120000
#define ATTACK_BYTES 65536

enum { MEMBER, ATTACKER, PROBE };

typedef struct conn_s {
  uv_tcp_t tcp;
  uv_connect_t connect;
  int role;
  char name[24];
  uint8_t in[2 * CHAT_PACKET_MAX]; /* a partial packet, then a whole one */
  size_t have;
  int joined;          /* saw its own JOINED */
  unsigned long heard; /* room packets from the attacker */
} conn_t;

typedef struct flood_s {
  uv_loop_t* loop;
  struct sockaddr_in addr;
  int messages; /* flood with SAYs rather than room changes */
  long members;
  long probe_limit_ms;
  long server_pid;
  conn_t* conns; /* the members, then the attacker, then the probe */
  conn_t* attacker;
  conn_t* probe;
  uv_timer_t probe_timer;
  uv_timer_t deadline;
  long joined;
  long ended;
  int attack_sent;
  unsigned long requests;
  unsigned long replies;
  unsigned long to_room;
  unsigned long errors;
  char first_error[128];
  char last_error[128];
  int attacker_closed; /* the libuv code its read ended with, or 0 */
  int attacker_done;
  uint64_t probe_start_ns;
  int probe_done;
  int end_said;
  double cpu_start_s;
} flood_t;

static flood_t flood;


/* The CPU time the server has used so far, in seconds; -1 where
 * /proc/PID/stat is not there to ask (macOS). */
static double server_cpu_s(void) {
  char path[64];
  char line[1024];
  unsigned long utime = 0;
  unsigned long stime = 0;
  const char* p;
  FILE* f;
  if (flood.server_pid <= 0)
    return -1;
  snprintf(path, sizeof(path), "/proc/%ld/stat", flood.server_pid);
  f = fopen(path, "r");
  if (f == NULL)
    return -1;
  p = fgets(line, sizeof(line), f);
  fclose(f);
  /* The command name may hold spaces: count the fields from its closing
   * parenthesis (the state is field 3, utime and stime 14 and 15). */
  if (p != NULL)
    p = strrchr(line, ')');
  if (p == NULL ||
      sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
             &utime, &stime) != 2)
    return -1;
  return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}


static void finish(int code, const char* why) {
  if (why != NULL)
    printf("FAIL: %s\n", why);
  fflush(stdout);
  /* The sockets close with the process; the server sees each one end. */
  exit(code);
}


static void on_written(uv_write_t* req, int status) {
  free(req);
  /* The attacker may be cut off before the server has read it all. */
  if (status != 0 && status != UV_ECANCELED && status != UV_EPIPE &&
      status != UV_ECONNRESET)
    finish(3, uv_strerror(status));
}


/* Append one packet with the chat's header to `out` at `*n`. */
static void put_packet(uint8_t* out,
                       size_t* n,
                       unsigned id,
                       const char* payload) {
  size_t len = strlen(payload);
  size_t size = 4 + len;
  out[(*n)++] = (uint8_t)(size & 0xff);
  out[(*n)++] = (uint8_t)(size >> 8);
  out[(*n)++] = (uint8_t)(id & 0xff);
  out[(*n)++] = (uint8_t)(id >> 8);
  memcpy(out + *n, payload, len);
  *n += len;
}


/* Write a copy of the `len` bytes at `data` on `c`. */
static void send_bytes(conn_t* c, const uint8_t* data, size_t len) {
  uv_write_t* req = malloc(sizeof(*req) + len);
  uv_buf_t buf;
  if (req == NULL)
    finish(3, "out of memory");
  memcpy(req + 1, data, len);
  buf = uv_buf_init((char*)(req + 1), (unsigned int)len);
  if (uv_write(req, (uv_stream_t*)&c->tcp, &buf, 1, on_written) != 0)
    finish(3, "write failed");
}


static void start_conn(conn_t* c);


static void send_attack(void) {
  static uint8_t out[ATTACK_BYTES];
  size_t n = 0;
  /* Whole packets only: LEAVE is 4 bytes, JOIN "flood" 9, SAY "x" 5. */
  while (n + (flood.messages ? 5 : 13) <= sizeof(out)) {
    if (flood.messages) {
      put_packet(out, &n, CHAT_SAY, "x");
      flood.requests++;
    } else {
      put_packet(out, &n, CHAT_LEAVE, "");
      put_packet(out, &n, CHAT_JOIN, ROOM);
      flood.requests += 2;
    }
  }
  flood.cpu_start_s = server_cpu_s();
  flood.attack_sent = 1;
  send_bytes(flood.attacker, out, n);
  printf("attack: %lu requests in one write of %zu bytes\n", flood.requests, n);
  fflush(stdout);
}


static void maybe_end(void) {
  uint8_t out[16];
  size_t n = 0;
  if (flood.end_said || !flood.probe_done || !flood.attacker_done)
    return;
  flood.end_said = 1;
  printf(
      "attacker: %lu of %lu requests answered: %lu to the room, %lu "
      "errors (\"%s\", \"%s\"), %s%s\n",
      flood.replies, flood.requests, flood.to_room, flood.errors,
      flood.first_error, flood.last_error,
      flood.attacker_closed != 0 ? "closed by the server: " : "still connected",
      flood.attacker_closed != 0 ? uv_strerror(flood.attacker_closed) : "");
  fflush(stdout);
  /* A room's traffic reaches every member in one order: whoever hears
   * this has heard everything the attack made the room hear. */
  put_packet(out, &n, CHAT_SAY, "end");
  send_bytes(&flood.conns[0], out, n);
}


static void attacker_finished(void) {
  if (flood.attacker_done)
    return;
  flood.attacker_done = 1;
  uv_read_stop((uv_stream_t*)&flood.attacker->tcp);
  maybe_end();
}


/* Non-zero if the payload `p` is `room` 0 `name`. */
static int fields_are(const uint8_t* p,
                      size_t len,
                      const char* room,
                      const char* name) {
  size_t rl = strlen(room);
  size_t nl = strlen(name);
  return len == rl + 1 + nl && memcmp(p, room, rl) == 0 && p[rl] == 0 &&
         memcmp(p + rl + 1, name, nl) == 0;
}


/* Non-zero if the packet is a JOINED, LEFT or MESSAGE of the attacker in
 * the flooded room. */
static int from_attacker(unsigned id, const uint8_t* p, size_t len) {
  static const char prefix[] = ROOM "\0attacker";
  size_t n = sizeof(prefix) - 1;
  if (id == CHAT_JOINED || id == CHAT_LEFT)
    return len == n && memcmp(p, prefix, n) == 0;
  return id == CHAT_MESSAGE && len > n && memcmp(p, prefix, n) == 0 &&
         p[n] == 0;
}


static void attacker_reply(unsigned id, const uint8_t* p, size_t len) {
  size_t n =
      len < sizeof(flood.last_error) ? len : sizeof(flood.last_error) - 1;
  if (flood.replies++ == 0)
    start_conn(flood.probe);
  if (from_attacker(id, p, len)) {
    flood.to_room++;
  } else if (id == CHAT_ERROR) {
    memcpy(flood.last_error, p, n);
    flood.last_error[n] = '\0';
    if (flood.errors++ == 0)
      memcpy(flood.first_error, flood.last_error, n + 1);
  }
  if (flood.replies == flood.requests)
    attacker_finished();
}


static void member_heard_end(const conn_t* c) {
  double cpu;
  if (++flood.ended < flood.members)
    return;
  cpu = server_cpu_s();
  printf("members: each heard %lu packets from the attacker\n", c->heard);
  if (cpu >= 0 && flood.cpu_start_s >= 0)
    printf("server cpu: %.2f s during the attack\n", cpu - flood.cpu_start_s);
  finish(0, NULL);
}


static void on_packet(conn_t* c, unsigned id, const uint8_t* p, size_t len) {
  static const char end[] = ROOM "\0m0\0end";
  if (id == CHAT_JOINED && !c->joined &&
      fields_are(p, len, c->role == PROBE ? QUIET : ROOM, c->name)) {
    c->joined = 1;
    if (c->role == MEMBER && ++flood.joined == flood.members) {
      start_conn(flood.attacker);
    } else if (c->role == ATTACKER) {
      send_attack();
    } else if (c->role == PROBE) {
      printf(
          "probe: answered in %llu ms\n",
          (unsigned long long)((uv_hrtime() - flood.probe_start_ns) / 1000000));
      fflush(stdout);
      uv_timer_stop(&flood.probe_timer);
      flood.probe_done = 1;
      maybe_end();
    }
    return;
  }
  if (from_attacker(id, p, len))
    c->heard++;
  if (c->role == ATTACKER && flood.attack_sent)
    attacker_reply(id, p, len);
  else if (c->role == MEMBER && id == CHAT_MESSAGE && flood.end_said &&
           len == sizeof(end) - 1 && memcmp(p, end, len) == 0)
    member_heard_end(c);
}


static void on_alloc(uv_handle_t* h, size_t size, uv_buf_t* buf) {
  conn_t* c = h->data;
  (void)size;
  buf->base = (char*)c->in + c->have;
  buf->len = sizeof(c->in) - c->have;
}


static void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  conn_t* c = s->data;
  size_t at = 0;
  (void)buf;
  if (n < 0) {
    uv_read_stop(s);
    if (c->role == ATTACKER && flood.attack_sent) {
      flood.attacker_closed = (int)n;
      attacker_finished();
      return;
    }
    fprintf(stderr, "chat_flood: %s: %s\n", c->name, uv_strerror((int)n));
    finish(1, "a client that reads was dropped");
  }
  c->have += (size_t)n;
  while (c->have - at >= 4) {
    size_t size = (size_t)c->in[at] | (size_t)c->in[at + 1] << 8;
    if (size < 4 || size > CHAT_PACKET_MAX)
      finish(3, "bad packet from the server");
    if (c->have - at < size)
      break;
    on_packet(c, (unsigned)c->in[at + 2] | (unsigned)c->in[at + 3] << 8,
              c->in + at + 4, size - 4);
    at += size;
  }
  memmove(c->in, c->in + at, c->have - at);
  c->have -= at;
}


static void on_connect(uv_connect_t* req, int status) {
  conn_t* c = req->data;
  uint8_t out[128];
  size_t n = 0;
  if (status != 0) {
    fprintf(stderr, "chat_flood: %s: %s\n", c->name, uv_strerror(status));
    finish(3, "cannot connect");
  }
  uv_read_start((uv_stream_t*)&c->tcp, on_alloc, on_read);
  put_packet(out, &n, CHAT_NICK, c->name);
  put_packet(out, &n, CHAT_JOIN, c->role == PROBE ? QUIET : ROOM);
  send_bytes(c, out, n);
}


static void on_probe_timer(uv_timer_t* t) {
  char why[96];
  (void)t;
  snprintf(why, sizeof(why), "probe: no answer within %ld ms",
           flood.probe_limit_ms);
  finish(1, why);
}


static void on_deadline(uv_timer_t* t) {
  char why[200];
  (void)t;
  snprintf(why, sizeof(why),
           "not over after %d ms: %ld of %ld members joined, attacker %s, "
           "%lu of %lu requests answered, %ld members heard the end",
           DEADLINE_MS, flood.joined, flood.members,
           flood.attacker_done ? "done" : "busy", flood.replies, flood.requests,
           flood.ended);
  finish(1, why);
}


static void start_conn(conn_t* c) {
  c->tcp.data = c;
  c->connect.data = c;
  if (c->role == PROBE) {
    flood.probe_start_ns = uv_hrtime();
    uv_timer_start(&flood.probe_timer, on_probe_timer,
                   (uint64_t)flood.probe_limit_ms, 0);
  }
  if (uv_tcp_init(flood.loop, &c->tcp) != 0 ||
      uv_tcp_connect(&c->connect, &c->tcp, (const struct sockaddr*)&flood.addr,
                     on_connect) != 0)
    finish(3, "cannot start a connect");
}


static int parse(const char* text, long min, long max, long* out) {
  char* end = NULL;
  long v = strtol(text, &end, 10);
  if (end == text || *end != '\0' || v < min || v > max)
    return -1;
  *out = v;
  return 0;
}


int main(int argc, char** argv) {
  long port;
  long i;
  if (argc == 5 || argc == 6)
    flood.messages = strcmp(argv[1], "messages") == 0;
  if ((argc != 5 && argc != 6) ||
      (!flood.messages && strcmp(argv[1], "rooms") != 0) ||
      parse(argv[2], 1, 65535, &port) != 0 ||
      parse(argv[3], 1, 10000, &flood.members) != 0 ||
      parse(argv[4], 1, DEADLINE_MS, &flood.probe_limit_ms) != 0 ||
      (argc == 6 && parse(argv[5], 1, 1L << 30, &flood.server_pid) != 0)) {
    fprintf(stderr,
            "usage: chat_flood rooms|messages PORT MEMBERS PROBE_LIMIT_MS "
            "[SERVER_PID]\n");
    return 2;
  }
  if (uv_ip4_addr("127.0.0.1", (int)port, &flood.addr) != 0)
    return 2;
  flood.conns = calloc((size_t)flood.members + 2, sizeof(*flood.conns));
  if (flood.conns == NULL)
    return 3;
  for (i = 0; i < flood.members; i++) {
    flood.conns[i].role = MEMBER;
    snprintf(flood.conns[i].name, sizeof(flood.conns[i].name), "m%ld", i);
  }
  flood.attacker = &flood.conns[flood.members];
  flood.attacker->role = ATTACKER;
  strcpy(flood.attacker->name, "attacker");
  flood.probe = &flood.conns[flood.members + 1];
  flood.probe->role = PROBE;
  strcpy(flood.probe->name, "probe");
  flood.loop = uv_default_loop();
  uv_timer_init(flood.loop, &flood.probe_timer);
  uv_timer_init(flood.loop, &flood.deadline);
  uv_timer_start(&flood.deadline, on_deadline, DEADLINE_MS, 0);
  for (i = 0; i < flood.members; i++) start_conn(&flood.conns[i]);
  uv_run(flood.loop, UV_RUN_DEFAULT);
  return 3; /* the loop ends only through finish() */
}
