/* chat_server: chat rooms over cport packets.
 *
 *   chat_server [--host ADDR] [--port N] [--threads N]
 *
 * Clients name themselves, join a room, say something, and everyone in the
 * room receives it; the protocol is in chat_proto.h, on the lecture's
 * packet header. Prints "listening on HOST:PORT" once ready. SIGINT or
 * SIGTERM stops it gracefully (every session flushed and closed, or cut off
 * after two seconds if its peer does not read), prints a summary line and
 * exits 0.
 *
 * Design notes. --threads N runs N ports, one loop thread each, and the
 * server spreads its sessions over them, so the members of one room live
 * on different threads. The room table is therefore shared: one mutex
 * guards it, and each member is held with a session reference, so that a
 * member stays valid for the thread that sends to it. To say something,
 * the speaker's thread builds the packet once (cport_packet_buf) and queues
 * that one shared buffer to every member (cport_session_send_buf): no copy
 * per member, and members on other ports get it through their port's
 * queue. Broadcasts are queued while the lock is held, so every member of
 * a room receives the room's messages and notices in the same order. A
 * member that does not read is disconnected at the send-queue limit
 * (CPORT_SENDQ_DISCONNECT) rather than let it hold memory, and the others
 * are not held back. */
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
/* Rooms open at once: the table is searched by name under the lock, so a
 * small bound keeps every request cheap and memory bounded. */
#define MAX_ROOMS 1024
/* The protocol's limits, spelled out in the error texts. */
#define STR(x) STR_(x)
#define STR_(x) #x

typedef struct room_s {
  char name[CHAT_ROOM_MAX];
  size_t name_len;
  cport_session_t** members; /* each holds a reference */
  size_t count;
  size_t cap;
} room_t;

/* One per session, in its user area. `name` is used by the session's own
 * callbacks only, which all run on its port's thread; `room` is shared
 * with the table and read or written only under its lock. */
typedef struct member_s {
  char name[CHAT_NAME_MAX];
  size_t name_len;
  room_t* room;
} member_t;

typedef struct chat_s {
  cport_core_t* core;
  cport_service_t* svc;
  cport_packet_format_t format;
  uv_signal_t sigint;
  uv_signal_t sigterm;
  uv_mutex_t lock; /* guards the rooms and every member's `room` */
  room_t* rooms[MAX_ROOMS];
  size_t room_count;
} chat_t;


static chat_t* chat_of(cport_session_t* s) {
  return cport_service_get_data(cport_session_service(s));
}


static void send_error(cport_session_t* s, const char* text) {
  /* A failure means the session is going anyway; nothing left to tell. */
  (void)cport_session_send_packet(s, CHAT_ERROR, text, strlen(text));
}


/* Queue one packet to every member of `room`, built once and shared.
 * Called with the lock held. */
static void room_send(chat_t* chat,
                      room_t* room,
                      unsigned id,
                      const uint8_t* payload,
                      size_t len) {
  cport_buf_t* buf;
  size_t i;
  int rc = cport_packet_buf(&buf, &chat->format, id, payload, len);
  if (rc != 0) {
    fprintf(stderr, "chat_server: room %.*s: %s\n", (int)room->name_len,
            room->name, cport_strerror(rc));
    return;
  }
  /* A member on its way out answers UV_ENOTCONN and one that does not read
   * is disconnected at its limit: neither concerns the rest. */
  for (i = 0; i < room->count; i++)
    (void)cport_session_send_buf(room->members[i], buf);
  /* Each queued write holds its own reference until written. */
  cport_buf_unref(buf);
}


/* `room` 0 `name` [0 `text`] into `out`, which holds CHAT_PACKET_MAX bytes
 * (the lengths are bounded by the protocol's rules). Returns the length. */
static size_t build_fields(uint8_t* out,
                           const room_t* room,
                           const member_t* m,
                           const uint8_t* text,
                           size_t text_len) {
  size_t n = 0;
  memcpy(out, room->name, room->name_len);
  n += room->name_len;
  out[n++] = 0;
  memcpy(out + n, m->name, m->name_len);
  n += m->name_len;
  if (text != NULL) {
    out[n++] = 0;
    memcpy(out + n, text, text_len);
    n += text_len;
  }
  return n;
}


static void room_notice(chat_t* chat,
                        room_t* room,
                        unsigned id,
                        const member_t* m) {
  uint8_t payload[CHAT_PACKET_MAX];
  room_send(chat, room, id, payload, build_fields(payload, room, m, NULL, 0));
}


/* Close `room` if nobody is left in it. Called with the lock held. */
static void room_close_if_empty(chat_t* chat, room_t* room) {
  size_t i;
  if (room->count > 0)
    return;
  for (i = 0; i < chat->room_count && chat->rooms[i] != room; i++) {
  }
  if (i < chat->room_count)
    chat->rooms[i] = chat->rooms[--chat->room_count];
  free(room->members);
  free(room);
}


/* Take `s` out of its room, telling the room (`s` included) first. The
 * last one out closes the room. Called with the lock held. */
static void leave_room(chat_t* chat, cport_session_t* s, member_t* m) {
  room_t* room = m->room;
  size_t i;
  if (room == NULL)
    return;
  room_notice(chat, room, CHAT_LEFT, m);
  for (i = 0; i < room->count && room->members[i] != s; i++) {
  }
  if (i < room->count) {
    room->members[i] = room->members[--room->count];
    cport_session_unref(s);
  }
  m->room = NULL;
  room_close_if_empty(chat, room);
}


/* Find or open the room called `name`; NULL with `*err` set if it cannot
 * be opened. Called with the lock held. */
static room_t* room_get(chat_t* chat,
                        const uint8_t* name,
                        size_t len,
                        const char** err) {
  room_t* room;
  size_t i;
  for (i = 0; i < chat->room_count; i++) {
    room = chat->rooms[i];
    if (room->name_len == len && memcmp(room->name, name, len) == 0)
      return room;
  }
  if (chat->room_count == MAX_ROOMS) {
    *err = "too many rooms, try an existing one";
    return NULL;
  }
  room = calloc(1, sizeof(*room));
  if (room == NULL) {
    *err = "out of memory";
    return NULL;
  }
  memcpy(room->name, name, len);
  room->name_len = len;
  chat->rooms[chat->room_count++] = room;
  return room;
}


static void handle_join(chat_t* chat,
                        cport_session_t* s,
                        member_t* m,
                        const uint8_t* name,
                        size_t len) {
  char text[64 + CHAT_ROOM_MAX];
  const char* err = NULL;
  room_t* room;
  if (!chat_valid_name(name, len, CHAT_ROOM_MAX)) {
    send_error(
        s, "room name must be 1 to " STR(CHAT_ROOM_MAX) " visible characters");
    return;
  }
  uv_mutex_lock(&chat->lock);
  if (m->room != NULL && m->room->name_len == len &&
      memcmp(m->room->name, name, len) == 0) {
    snprintf(text, sizeof(text), "already in room %.*s", (int)len,
             (const char*)name);
    send_error(s, text);
    goto done;
  }
  room = room_get(chat, name, len, &err);
  if (room != NULL && room->count == room->cap) {
    size_t cap = room->cap == 0 ? 8 : room->cap * 2;
    cport_session_t** grown = realloc(room->members, cap * sizeof(*grown));
    if (grown == NULL) {
      err = "out of memory";
    } else {
      room->members = grown;
      room->cap = cap;
    }
  }
  if (err != NULL) {
    /* A room just opened for us is still empty: close it again. */
    if (room != NULL)
      room_close_if_empty(chat, room);
    send_error(s, err);
    goto done;
  }
  /* Switching rooms: the old one hears us leave first. */
  leave_room(chat, s, m);
  cport_session_ref(s);
  room->members[room->count++] = s;
  m->room = room;
  room_notice(chat, room, CHAT_JOINED, m);
done:
  uv_mutex_unlock(&chat->lock);
}


static void handle_say(chat_t* chat,
                       cport_session_t* s,
                       member_t* m,
                       const uint8_t* text,
                       size_t len) {
  uint8_t payload[CHAT_PACKET_MAX];
  if (!chat_valid_text(text, len)) {
    send_error(s, "text must be 1 to " STR(
                      CHAT_TEXT_MAX) " bytes, without control characters");
    return;
  }
  uv_mutex_lock(&chat->lock);
  if (m->room == NULL)
    send_error(s, "join a room first");
  else
    room_send(chat, m->room, CHAT_MESSAGE, payload,
              build_fields(payload, m->room, m, text, len));
  uv_mutex_unlock(&chat->lock);
}


static void on_connected(cport_session_t* s) {
  member_t* m = cport_session_user(s);
  char name[32];
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
      if (len != 0) {
        send_error(s, "LEAVE takes no payload");
        break;
      }
      uv_mutex_lock(&chat->lock);
      if (m->room == NULL)
        send_error(s, "not in a room");
      else
        leave_room(chat, s, m);
      uv_mutex_unlock(&chat->lock);
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
  uv_mutex_lock(&chat->lock);
  leave_room(chat, s, m);
  uv_mutex_unlock(&chat->lock);
  /* Peers that break the framing or do not read are worth a line; the
   * ordinary ways to leave are not. */
  if (code == CPORT_EPACKET || code == CPORT_EPACKETSIZE ||
      code == CPORT_ESENDQ)
    fprintf(stderr, "chat_server: %.*s dropped: %s\n", (int)m->name_len,
            m->name, cause);
}


static void on_stopped(cport_service_t* svc) {
  chat_t* chat = cport_service_get_data(svc);
  uv_close((uv_handle_t*)&chat->sigint, NULL);
  uv_close((uv_handle_t*)&chat->sigterm, NULL);
  cport_core_stop(chat->core);
}


static void on_signal(uv_signal_t* handle, int signum) {
  chat_t* chat = handle->data;
  (void)signum;
  /* A second signal while stopping changes nothing (UV_EALREADY). */
  cport_service_stop(chat->svc, STOP_DEADLINE_MS, on_stopped);
}


static void usage(FILE* out) {
  fprintf(out,
          "usage: chat_server [--host ADDR] [--port N] [--threads N]\n"
          "  --host ADDR   address to listen on (default 127.0.0.1)\n"
          "  --port N      TCP port, 0 for any free one (default %d)\n"
          "  --threads N   ports, one loop thread each (default 1, at most "
          "%d)\n"
          "The protocol is in examples/chat_proto.h; examples/chat_client "
          "speaks it.\n",
          DEFAULT_PORT, CPORT_CORE_MAX_PORTS);
}


int main(int argc, char** argv) {
  const char* host = "127.0.0.1";
  long port = DEFAULT_PORT;
  long threads = 1;
  static chat_t chat; /* 8 KiB of room table: not on the stack */
  cport_addr_t addr;
  cport_core_opts_t core_opts;
  cport_service_opts_t opts;
  cport_service_stats_t stats;
  char text[CPORT_ADDR_STRLEN];
  int i;
  int rc;

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
               example_parse_long(value, 1, CPORT_CORE_MAX_PORTS, &threads) ==
                   0) {
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

  if (uv_mutex_init(&chat.lock) != 0) {
    fprintf(stderr, "chat_server: cannot create a mutex\n");
    return 1;
  }
  cport_core_opts_init(&core_opts);
  core_opts.ports = (unsigned)threads;
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
  /* The lecture's header (the default), and no packet longer than the
   * protocol needs, so that a peer cannot make us buffer 64 KiB. */
  opts.packet.max_packet = CHAT_PACKET_MAX;
  opts.send_queue_policy = CPORT_SENDQ_DISCONNECT;
  opts.data = &chat;
  chat.format = opts.packet;
  rc = cport_service_create(&chat.svc, chat.core, CPORT_SERVICE_SERVER, &addr,
                            &opts);
  if (rc == 0)
    rc = cport_service_start(chat.svc);
  if (rc != 0) {
    cport_addr_format(&addr, text, sizeof(text));
    fprintf(stderr, "chat_server: cannot listen on %s: %s\n", text,
            cport_strerror(rc));
    cport_service_destroy(chat.svc);
    cport_core_destroy(chat.core);
    uv_mutex_destroy(&chat.lock);
    return 1;
  }
  /* Handlers first: whoever reads "listening on" may signal at once. */
  uv_signal_init(cport_core_loop(chat.core, 0), &chat.sigint);
  uv_signal_init(cport_core_loop(chat.core, 0), &chat.sigterm);
  chat.sigint.data = chat.sigterm.data = &chat;
  uv_signal_start(&chat.sigint, on_signal, SIGINT);
  uv_signal_start(&chat.sigterm, on_signal, SIGTERM);

  cport_service_local_addr(chat.svc, &addr);
  cport_addr_format(&addr, text, sizeof(text));
  printf("listening on %s\n", text);
  fflush(stdout);

  rc = cport_core_run(chat.core);
  if (rc != 0) {
    fprintf(stderr, "chat_server: %s\n", cport_strerror(rc));
    return 1;
  }
  cport_core_join(chat.core);

  cport_service_stats(chat.svc, &stats);
  printf(
      "chat_server: served %llu sessions, %llu packets in, "
      "%llu dropped for bad packets\n",
      (unsigned long long)stats.connected, (unsigned long long)stats.packets_in,
      (unsigned long long)stats.disconnects_protocol);
  fflush(stdout);
  /* No room is left to free: on_stopped ran after every session's
   * on_disconnected, and the last member out closes a room. */
  cport_service_destroy(chat.svc);
  cport_core_destroy(chat.core);
  uv_mutex_destroy(&chat.lock);
  return 0;
}
