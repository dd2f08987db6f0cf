/* The chat protocol of chat_server and chat_client: rooms over packets.
 *
 * Every packet has the lecture's header, cport's default packet format:
 * uint16 size (header included), uint16 id, little endian. The ids and
 * payloads:
 *
 *   client -> server
 *     CHAT_NICK   name         call me this (the default is "guestN")
 *     CHAT_JOIN   room         enter the room, leaving the one I am in;
 *                              a room exists while someone is in it
 *     CHAT_SAY    text         to everyone in my room, me included
 *     CHAT_LEAVE  (empty)      leave my room
 *
 *   server -> client
 *     CHAT_NAME     name                 your name is now this
 *     CHAT_MESSAGE  room 0 name 0 text   someone said something
 *     CHAT_JOINED   room 0 name          someone entered (you too)
 *     CHAT_LEFT     room 0 name          someone left (you too)
 *     CHAT_ERROR    text                 your last request was refused
 *
 * ("0" is one zero byte: names and rooms cannot contain one.)
 *
 * Rules, checked by the server on everything it receives: a name is 1 to
 * CHAT_NAME_MAX visible ASCII characters (no spaces), a room name 1 to
 * CHAT_ROOM_MAX of them, a text 1 to CHAT_TEXT_MAX bytes without control
 * characters (UTF-8 passes as it is). A request that breaks them, an
 * unknown id, a SAY or LEAVE outside a room, or a LEAVE with a payload is
 * answered with CHAT_ERROR and changes nothing. A packet longer than
 * CHAT_PACKET_MAX, or a header whose size is below 4, ends the session:
 * cport's packet layer refuses it before the payload arrives. Names need
 * not be unique.
 *
 * Every JOIN, LEAVE and SAY makes the server write to a whole room, so
 * each client has a budget of them (chat_server.c gives the rates). A
 * request over it is answered with CHAT_ERROR "slow down: ..." and changes
 * nothing; a client that keeps sending regardless gets a last CHAT_ERROR
 * ("too many ..., disconnected") and is disconnected. */
#ifndef CHAT_PROTO_H
#define CHAT_PROTO_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum chat_id_e {
  /* client -> server */
  CHAT_NICK = 1,
  CHAT_JOIN = 2,
  CHAT_SAY = 3,
  CHAT_LEAVE = 4,
  /* server -> client; apart from the client's, so that a packet sent the
   * wrong way is an unknown id, not a request */
  CHAT_NAME = 101,
  CHAT_MESSAGE = 102,
  CHAT_JOINED = 103,
  CHAT_LEFT = 104,
  CHAT_ERROR = 105
};

#define CHAT_NAME_MAX 24
#define CHAT_ROOM_MAX 32
#define CHAT_TEXT_MAX 1000
/* The longest packet either side accepts, header included (the packet
 * format's max_packet). It holds the largest CHAT_MESSAGE with room to
 * spare, and keeps what a peer can make the other side buffer small. */
#define CHAT_PACKET_MAX 2048

_Static_assert((4 + CHAT_ROOM_MAX + 1 + CHAT_NAME_MAX + 1 + CHAT_TEXT_MAX <=
                CHAT_PACKET_MAX),
               "a CHAT_MESSAGE must fit in one packet");

/* Non-zero if the `len` bytes at `p` are a valid name or room name of at
 * most `max` bytes: visible ASCII, so that names print plainly and split
 * nothing. */
static inline int chat_valid_name(const uint8_t* p, size_t len, size_t max) {
  size_t i;
  if (len == 0 || len > max)
    return 0;
  for (i = 0; i < len; i++)
    if (p[i] <= 0x20 || p[i] >= 0x7f)
      return 0;
  return 1;
}


/* Non-zero if the `len` bytes at `p` are a valid text: no control
 * characters, so that a message is one line on every terminal. */
static inline int chat_valid_text(const uint8_t* p, size_t len) {
  size_t i;
  if (len == 0 || len > CHAT_TEXT_MAX)
    return 0;
  for (i = 0; i < len; i++)
    if (p[i] < 0x20 || p[i] == 0x7f)
      return 0;
  return 1;
}


/* Split a payload of zero-separated fields into `n` parts: the first n - 1
 * end at a zero byte, the last one takes the rest. Fills `field` and
 * `field_len`. Returns 0, or -1 if the payload has fewer fields. */
static inline int chat_split(const uint8_t* p,
                             size_t len,
                             const uint8_t** field,
                             size_t* field_len,
                             size_t n) {
  size_t i;
  for (i = 0; i + 1 < n; i++) {
    const uint8_t* zero = len > 0 ? memchr(p, 0, len) : NULL;
    if (zero == NULL)
      return -1;
    field[i] = p;
    field_len[i] = (size_t)(zero - p);
    len -= field_len[i] + 1;
    p = zero + 1;
  }
  field[i] = p;
  field_len[i] = len;
  return 0;
}

#endif /* CHAT_PROTO_H */
