/* chat_server: chat rooms over cport packets.
 *
 *   chat_server [--host ADDR] [--port N] [--threads N]
 *               [--tls-cert FILE --tls-key FILE [--tls-ca FILE]]
 *
 * Clients name themselves, join a room, say something, and everyone in the
 * room receives it; the protocol is in chat_proto.h, on cport's default
 * packet header (2-byte size, 2-byte id). Prints "listening on HOST:PORT"
 * once ready. SIGINT or SIGTERM stops it gracefully (every session flushed
 * and closed, or cut off after two seconds if its peer does not read),
 * prints a summary line and exits 0. --tls-cert and --tls-key serve TLS
 * (tls.h) instead of plain TCP; --tls-ca then also requires a client
 * certificate issued by one of those CAs.
 *
 * Design notes. --threads N runs N loops, one loop thread each, and the
 * server spreads its sessions over them, so the members of one room live
 * on different threads. Each room therefore has a mutex of its own, which
 * guards its member list, and each member is held with a session
 * reference, so that a member stays valid for the thread that sends to it.
 * To say something, the speaker's thread builds the packet once
 * (cport_packet_buf), before taking any lock, and queues that one shared
 * buffer to every member (cport_session_send_buf): no copy per member, and
 * members on other loops get it through their loop's queue. Broadcasts
 * are queued while the room's lock is held, so every member of a room
 * receives the room's messages and notices in the same order. One more
 * mutex guards only the table of rooms: finding or opening a room by name,
 * and closing it when the last member is out. No broadcast runs under it,
 * so a busy room holds back no other room. A member that does not read is
 * disconnected at the send-queue limit (CPORT_SENDQ_DISCONNECT) rather
 * than let it hold memory, and the others are not held back.
 *
 * Budgets. A request that reaches a room costs the server one write per
 * member: in a room of 200, one 64 KiB write of LEAVE+JOIN pairs is two
 * million of them, seconds of CPU during which nobody else is served.
 * Every session therefore has two token buckets: room changes (JOIN and
 * LEAVE) may come 5 at once and then one a second, messages (SAY) 10 at
 * once and then five a second. A request over its budget is answered with
 * CHAT_ERROR and does nothing, but it is still charged, so that a peer
 * that ignores the refusals only digs deeper: after a whole burst of
 * refusals, its next request gets a last CHAT_ERROR and the session is
 * disconnected, the rest of what it sent unread. What one session can
 * cost is then bounded by its room's size times the rates above, however
 * fast it writes. Requests answered to the sender alone (NICK, invalid
 * ones) cost about what they carry, and are not limited. Finally, cport
 * hands on_packet at most 32 packets of one session per loop round
 * (packet_budget); the rest of a big write waits for the next round, so
 * that even requests within their budgets, or refused ones, do not keep
 * the loop from the other sessions on it. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "chat_proto.h"
#include "cport/cport.h"
#include "example_args.h"

#define STOP_DEADLINE_MS 2000
#define DEFAULT_PORT 7778
/* Rooms open at once: the table is searched by name under its lock, so a
 * small bound keeps every lookup cheap and memory bounded. */
#define MAX_ROOMS 1024
/* The budgets of the design notes: a burst, then one more request every
 * interval. */
#define ROOM_CHANGE_BURST 5
#define ROOM_CHANGE_INTERVAL_MS 1000
#define MESSAGE_BURST 10
#define MESSAGE_INTERVAL_MS 200
/* The protocol's limits and the budgets, spelled out in the error texts. */
#define STR(x) STR_(x)
#define STR_(x) #x

typedef struct limit_s {
  uint64_t burst;
  uint64_t interval_ms;
  const char* refused; /* the CHAT_ERROR for a request over the budget */
  const char* cause;   /* why a session that kept on was disconnected */
} limit_t;

static const limit_t room_change_limit = {
    ROOM_CHANGE_BURST, ROOM_CHANGE_INTERVAL_MS,
    "slow down: at most " STR(ROOM_CHANGE_BURST) " room changes at once, "
    "then one every " STR(ROOM_CHANGE_INTERVAL_MS) " ms",
    "too many room changes"};
static const limit_t message_limit = {
    MESSAGE_BURST, MESSAGE_INTERVAL_MS,
    "slow down: at most " STR(MESSAGE_BURST) " messages at once, "
    "then one every " STR(MESSAGE_INTERVAL_MS) " ms",
    "too many messages"};

typedef struct member_s member_t;

typedef struct room_s {
  uv_mutex_t lock; /* guards the member list; held while sending to it */
  member_t* first; /* each member holds a reference to its session */
  /* Members, and joiners on their way in. Under the table's lock, which
   * closes the room when it reaches 0. */
  size_t users;
  char name[CHAT_ROOM_MAX];
  size_t name_len;
} room_t;

/* One per session, in its user area. Other threads read only `session`,
 * which is set before the member joins a room, and the list links, under
 * the room's lock. The rest is used by the session's own callbacks only,
 * which all run on its loop's thread, so it needs no lock. */
struct member_s {
  cport_session_t* session;
  char name[CHAT_NAME_MAX];
  size_t name_len;
  room_t* room;
  /* Links in room->first's list: a member leaves in O(1), however big its
   * room. */
  member_t* prev;
  member_t* next;
  /* When each token bucket will be full again (budget_take). */
  uint64_t room_changes_full_ms;
  uint64_t messages_full_ms;
};

typedef struct chat_s {
  cport_core_t* core;
  cport_service_t* svc;
  cport_packet_format_t format;
  uv_mutex_t lock; /* guards the table of rooms and every room's `users` */
  room_t* rooms[MAX_ROOMS];
  size_t room_count;
} chat_t;

enum { BUDGET_OK, BUDGET_REFUSED, BUDGET_SPENT };


static chat_t* chat_of(cport_session_t* s) {
  return cport_service_get_data(cport_session_service(s));
}


static void send_error(cport_session_t* s, const char* text) {
  /* A failure means the session is going anyway; nothing left to tell. */
  (void)cport_session_send_packet(s, CHAT_ERROR, text, strlen(text));
}


/* Charge one request to the token bucket `*full_ms` (the time at which it
 * will hold `lim->burst` tokens again, so one number is the whole
 * bucket). Refused requests are charged too, which is what ends a flood:
 * BUDGET_SPENT once the debt is a whole burst deep. */
static int budget_take(uint64_t* full_ms, const limit_t* lim) {
  uint64_t now_ms = uv_hrtime() / 1000000;
  uint64_t due_ms = (*full_ms > now_ms ? *full_ms : now_ms) + lim->interval_ms;
  *full_ms = due_ms;
  if (due_ms - now_ms <= lim->burst * lim->interval_ms)
    return BUDGET_OK;
  if (due_ms - now_ms <= 2 * lim->burst * lim->interval_ms)
    return BUDGET_REFUSED;
  return BUDGET_SPENT;
}


/* Non-zero if `s` may go on with a request that `lim` governs; otherwise
 * it has been refused or, past its debt, disconnected. */
static int within_budget(cport_session_t* s,
                         uint64_t* full_ms,
                         const limit_t* lim) {
  char text[128];
  switch (budget_take(full_ms, lim)) {
    case BUDGET_OK:
      return 1;
    case BUDGET_REFUSED:
      send_error(s, lim->refused);
      return 0;
    default:
      snprintf(text, sizeof(text), "%s, disconnected", lim->cause);
      send_error(s, text);
      /* Graceful, so that the error is flushed first; no packet of `s` is
       * delivered after this, the rest of its read included. */
      (void)cport_session_disconnect(s, lim->cause);
      return 0;
  }
}


/* A packet of `room` 0 `name` [0 `text`] with `id`, built once to be
 * shared by every member; NULL (said on stderr) if it cannot be built. */
static cport_buf_t* room_packet(chat_t* chat,
                                unsigned id,
                                const uint8_t* room,
                                size_t room_len,
                                const member_t* m,
                                const uint8_t* text,
                                size_t text_len) {
  uint8_t payload[CHAT_PACKET_MAX]; /* the protocol's bounds make it fit */
  cport_buf_t* buf;
  size_t n = 0;
  int rc;
  memcpy(payload, room, room_len);
  n += room_len;
  payload[n++] = 0;
  memcpy(payload + n, m->name, m->name_len);
  n += m->name_len;
  if (text != NULL) {
    payload[n++] = 0;
    memcpy(payload + n, text, text_len);
    n += text_len;
  }
  rc = cport_packet_buf(&buf, &chat->format, id, payload, n);
  if (rc != 0) {
    fprintf(stderr, "chat_server: room %.*s: %s\n", (int)room_len,
            (const char*)room, cport_strerror(rc));
    return NULL;
  }
  return buf;
}


/* Queue `buf` (NULL: nothing) to every member of `room`. Called with the
 * room's lock held. */
static void room_send(room_t* room, cport_buf_t* buf) {
  member_t* m;
  if (buf == NULL)
    return;
  /* A member on its way out answers CPORT_ENOTCONN and one that does not read
   * is disconnected at its limit: neither concerns the rest. */
  for (m = room->first; m != NULL; m = m->next)
    (void)cport_session_send_buf(m->session, buf);
}


/* Find or open the room called `name`, counting the caller as one of its
 * users; NULL with `*err` set if it cannot be opened. */
static room_t* room_enter(chat_t* chat,
                          const uint8_t* name,
                          size_t len,
                          const char** err) {
  room_t* room = NULL;
  size_t i;
  uv_mutex_lock(&chat->lock);
  for (i = 0; i < chat->room_count; i++) {
    if (chat->rooms[i]->name_len == len &&
        memcmp(chat->rooms[i]->name, name, len) == 0) {
      room = chat->rooms[i];
      break;
    }
  }
  if (room == NULL && chat->room_count == MAX_ROOMS) {
    *err = "too many rooms, try an existing one";
  } else if (room == NULL) {
    room = calloc(1, sizeof(*room));
    if (room == NULL || uv_mutex_init(&room->lock) != 0) {
      free(room);
      room = NULL;
      *err = "out of memory";
    } else {
      memcpy(room->name, name, len);
      room->name_len = len;
      chat->rooms[chat->room_count++] = room;
    }
  }
  if (room != NULL)
    room->users++;
  uv_mutex_unlock(&chat->lock);
  return room;
}


/* Undo one room_enter(); the last user out closes the room. */
static void room_exit(chat_t* chat, room_t* room) {
  size_t i;
  int last;
  uv_mutex_lock(&chat->lock);
  last = --room->users == 0;
  if (last) {
    for (i = 0; i < chat->room_count && chat->rooms[i] != room; i++) {
    }
    if (i < chat->room_count)
      chat->rooms[i] = chat->rooms[--chat->room_count];
  }
  uv_mutex_unlock(&chat->lock);
  /* Out of the table with no user left: nobody else can reach it. */
  if (last) {
    uv_mutex_destroy(&room->lock);
    free(room);
  }
}


/* Take `m` out of its room, telling the room (`m` included) first. */
static void leave_room(chat_t* chat, member_t* m) {
  room_t* room = m->room;
  cport_buf_t* buf;
  if (room == NULL)
    return;
  buf = room_packet(chat, CHAT_LEFT, (const uint8_t*)room->name, room->name_len,
                    m, NULL, 0);
  uv_mutex_lock(&room->lock);
  room_send(room, buf);
  if (m->prev != NULL)
    m->prev->next = m->next;
  else
    room->first = m->next;
  if (m->next != NULL)
    m->next->prev = m->prev;
  uv_mutex_unlock(&room->lock);
  /* Each queued write holds its own reference until written. */
  cport_buf_unref(buf);
  m->prev = m->next = NULL;
  m->room = NULL;
  cport_session_unref(m->session);
  room_exit(chat, room);
}


static void handle_join(chat_t* chat,
                        cport_session_t* s,
                        member_t* m,
                        const uint8_t* name,
                        size_t len) {
  char text[64 + CHAT_ROOM_MAX];
  const char* err = NULL;
  cport_buf_t* buf;
  room_t* room;
  if (!chat_valid_name(name, len, CHAT_ROOM_MAX)) {
    send_error(
        s, "room name must be 1 to " STR(CHAT_ROOM_MAX) " visible characters");
    return;
  }
  if (m->room != NULL && m->room->name_len == len &&
      memcmp(m->room->name, name, len) == 0) {
    snprintf(text, sizeof(text), "already in room %.*s", (int)len,
             (const char*)name);
    send_error(s, text);
    return;
  }
  if (!within_budget(s, &m->room_changes_full_ms, &room_change_limit))
    return;
  room = room_enter(chat, name, len, &err);
  if (room == NULL) {
    send_error(s, err);
    return;
  }
  /* Switching rooms: the old one hears us leave first. */
  leave_room(chat, m);
  buf = room_packet(chat, CHAT_JOINED, name, len, m, NULL, 0);
  cport_session_ref(s);
  m->room = room;
  uv_mutex_lock(&room->lock);
  m->next = room->first;
  if (room->first != NULL)
    room->first->prev = m;
  room->first = m;
  room_send(room, buf);
  uv_mutex_unlock(&room->lock);
  cport_buf_unref(buf);
}


static void handle_leave(chat_t* chat,
                         cport_session_t* s,
                         member_t* m,
                         size_t len) {
  if (len != 0)
    send_error(s, "LEAVE takes no payload");
  else if (m->room == NULL)
    send_error(s, "not in a room");
  else if (within_budget(s, &m->room_changes_full_ms, &room_change_limit))
    leave_room(chat, m);
}


static void handle_say(chat_t* chat,
                       cport_session_t* s,
                       member_t* m,
                       const uint8_t* text,
                       size_t len) {
  cport_buf_t* buf;
  if (!chat_valid_text(text, len)) {
    send_error(s, "text must be 1 to " STR(
                      CHAT_TEXT_MAX) " bytes, without control characters");
    return;
  }
  if (m->room == NULL) {
    send_error(s, "join a room first");
    return;
  }
  if (!within_budget(s, &m->messages_full_ms, &message_limit))
    return;
  buf = room_packet(chat, CHAT_MESSAGE, (const uint8_t*)m->room->name,
                    m->room->name_len, m, text, len);
  uv_mutex_lock(&m->room->lock);
  room_send(m->room, buf);
  uv_mutex_unlock(&m->room->lock);
  cport_buf_unref(buf);
}


static void on_connected(cport_session_t* s) {
  member_t* m = cport_session_user(s);
  char name[32];
  m->session = s;
  snprintf(name, sizeof(name), "guest%llu",
           (unsigned long long)cport_session_id(s));
  /* Names are kept without their terminating zero, as they travel. */
  m->name_len = strlen(name) < CHAT_NAME_MAX ? strlen(name) : CHAT_NAME_MAX;
  memcpy(m->name, name, m->name_len);
}


static void on_packet(cport_session_t* s,
                      unsigned id,
                      const uint8_t* payload,
                      size_t len) {
  chat_t* chat = chat_of(s);
  member_t* m = cport_session_user(s);
  char text[64];
  switch (id) {
    case CHAT_NICK:
      if (!chat_valid_name(payload, len, CHAT_NAME_MAX)) {
        send_error(
            s, "name must be 1 to " STR(CHAT_NAME_MAX) " visible characters");
        break;
      }
      memcpy(m->name, payload, len);
      m->name_len = len;
      (void)cport_session_send_packet(s, CHAT_NAME, m->name, m->name_len);
      break;
    case CHAT_JOIN:
      handle_join(chat, s, m, payload, len);
      break;
    case CHAT_SAY:
      handle_say(chat, s, m, payload, len);
      break;
    case CHAT_LEAVE:
      handle_leave(chat, s, m, len);
      break;
    default:
      snprintf(text, sizeof(text), "unknown packet id %u", id);
      send_error(s, text);
      break;
  }
}


static void on_disconnected(cport_session_t* s, int code, const char* cause) {
  chat_t* chat = chat_of(s);
  member_t* m = cport_session_user(s);
  leave_room(chat, m);
  /* Peers that break the framing, do not read or flood are worth a line
   * (CPORT_ELOCAL: only within_budget disconnects); the ordinary ways to
   * leave are not. */
  if (code == CPORT_EPACKET || code == CPORT_EPACKETSIZE ||
      code == CPORT_ESENDQ || code == CPORT_ELOCAL)
    fprintf(stderr, "chat_server: %.*s dropped: %s\n", (int)m->name_len,
            m->name, cause);
}


/* Listen, run until SIGINT or SIGTERM has stopped the service and the
 * core, print the summary. Returns 0 or the first error. */
static int serve(chat_t* chat, cport_addr_t* addr) {
  cport_service_stats_t stats;
  char text[CPORT_ADDR_STRLEN];
  int rc = cport_service_start(chat->svc);
  if (rc != 0) {
    cport_addr_format(addr, text, sizeof(text));
    fprintf(stderr, "chat_server: cannot listen on %s: %s\n", text,
            cport_strerror(rc));
    return rc;
  }
  /* Watch the signals first: whoever reads "listening on" may signal at
   * once. SIGINT or SIGTERM stops the service gracefully, then the core. */
  rc = cport_core_stop_on_signals(chat->core, STOP_DEADLINE_MS, NULL, NULL);
  if (rc == 0)
    rc = cport_service_local_addr(chat->svc, addr);
  if (rc == 0) {
    cport_addr_format(addr, text, sizeof(text));
    printf("listening on %s\n", text);
    fflush(stdout);
  }
  if (rc == 0)
    rc = cport_core_run(chat->core);
  if (rc == 0)
    rc = cport_core_join(chat->core);
  if (rc != 0) {
    fprintf(stderr, "chat_server: %s\n", cport_strerror(rc));
    return rc;
  }
  cport_service_stats(chat->svc, &stats);
  printf(
      "chat_server: served %llu sessions, %llu packets in, "
      "%llu dropped for bad packets\n",
      (unsigned long long)stats.connected, (unsigned long long)stats.packets_in,
      (unsigned long long)stats.disconnects_protocol);
  fflush(stdout);
  return 0;
}


static void usage(FILE* out) {
  fprintf(out,
          "usage: chat_server [--host ADDR] [--port N] [--threads N]\n"
          "                   [--tls-cert FILE --tls-key FILE "
          "[--tls-ca FILE]]\n"
          "  --host ADDR      address to listen on (default 127.0.0.1)\n"
          "  --port N         TCP port, 0 for any free one (default %d)\n"
          "  --threads N      loops, one thread each (default 1, at most "
          "%d)\n"
          "  --tls-cert FILE  serve TLS with this certificate chain (PEM, "
          "leaf first)\n"
          "  --tls-key FILE   and its private key (PEM)\n"
          "  --tls-ca FILE    require client certificates issued by these "
          "CAs (PEM)\n"
          "The protocol is in examples/chat_proto.h; examples/chat_client "
          "speaks it.\n",
          DEFAULT_PORT, CPORT_CORE_MAX_LOOPS);
}


int main(int argc, char** argv) {
  const char* host = "127.0.0.1";
  long port = DEFAULT_PORT;
  long threads = 1;
  static chat_t chat; /* 8 KiB of room table: not on the stack */
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
    } else if (example_tls_option(&tls, CPORT_TLS_SERVER, argv[i], value) ==
               2) {
    } else {
      fprintf(stderr, "chat_server: bad argument '%s'%s%s\n", argv[i],
              value != NULL ? " " : "", value != NULL ? value : "");
      usage(stderr);
      return 2;
    }
  }
  if (cport_addr_resolve(&addr, host, (int)port) != 0) {
    fprintf(stderr, "chat_server: bad address '%s'\n", host);
    usage(stderr);
    return 2;
  }
  if ((err = example_tls_check(&tls, CPORT_TLS_SERVER)) != NULL) {
    fprintf(stderr, "chat_server: %s\n", err);
    usage(stderr);
    return 2;
  }

  if (uv_mutex_init(&chat.lock) != 0) {
    fprintf(stderr, "chat_server: cannot create a mutex\n");
    return 1;
  }
  cport_core_opts_init(&core_opts);
  core_opts.loops = (unsigned)threads;
  rc = cport_core_create(&chat.core, &core_opts);
  if (rc != 0) {
    fprintf(stderr, "chat_server: %s\n", cport_strerror(rc));
    uv_mutex_destroy(&chat.lock);
    return 1;
  }
  cport_service_opts_init(&opts);
  opts.cbs.on_connected = on_connected;
  opts.cbs.on_packet = on_packet;
  opts.cbs.on_disconnected = on_disconnected;
  opts.user_size = sizeof(member_t);
  /* The default header (2-byte size, 2-byte id), and no packet longer than the
   * protocol needs, so that a peer cannot make us buffer 64 KiB. */
  opts.packet.max_packet = CHAT_PACKET_MAX;
  opts.send_queue_policy = CPORT_SENDQ_DISCONNECT;
  /* A round of the loop serves every session a little: a 64 KiB write of
   * requests is taken 32 at a time. */
  opts.packet_budget = 32;
  opts.data = &chat;
  chat.format = opts.packet;
  /* opts.tls stays NULL without --tls-cert: plain TCP. */
  rc = example_tls_create(&tls, CPORT_TLS_SERVER, "chat_server", &opts.tls);
  if (rc == 0) {
    rc = cport_service_create(&chat.svc, chat.core, CPORT_SERVICE_SERVER, &addr,
                              &opts);
    cport_tls_unref(opts.tls); /* the service holds its own reference */
    if (rc != 0)
      fprintf(stderr, "chat_server: %s\n", cport_strerror(rc));
    else
      rc = serve(&chat, &addr); /* reports its own errors */
  }
  /* No room is left to free: the last member out closes a room, and
   * destroying the service ends every session still open (one the stop
   * deadline cut off). */
  cport_service_destroy(chat.svc);
  cport_core_destroy(chat.core);
  uv_mutex_destroy(&chat.lock);
  return rc == 0 ? 0 : 1;
}
