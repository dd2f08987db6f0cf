/* cport: packets (length-prefixed messages).
 *
 * Many protocols want whole messages rather than a byte stream. A packet is
 * a header followed by a payload; the header holds the packet's length and,
 * optionally, a 2-byte id. The default layout is
 *
 *   struct { uint16 size; uint16 id; }   little endian, size counts the
 *                                        4 header bytes too
 *
 * and cport_packet_format_t describes it and its usual variants (a 4-byte
 * length, big endian, a length that counts only the payload, no id), the
 * way netty's LengthFieldBasedFrameDecoder or libhv's unpack settings do.
 *
 * Receiving: a service whose callbacks set on_packet (service.h) gets one
 * on_packet(s, id, payload, len) per complete packet, however the bytes were
 * split or joined on the wire. A packet that lies whole in one read is
 * handed over where it lies, without a copy; only the bytes of a packet
 * split across reads are gathered in the session's receive buffer. A header
 * whose length is impossible ends the session with CPORT_EPACKET
 * ("malformed packet header"), one over the maximum with CPORT_EPACKETSIZE
 * ("packet too large"), before any byte of its payload is awaited; other
 * sessions are not affected.
 *
 * Sending: cport_session_send_packet() writes header and payload as one
 * send request; cport_packet_buf() builds a shared buffer holding one
 * packet, for cport_service_broadcast() or cport_session_send_buf(). */
#ifndef CPORT_PACKET_H
#define CPORT_PACKET_H

#include <stddef.h>
#include <stdint.h>

#include "cport/buf.h"
#include "cport/export.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cport_session_s cport_session_t;

/* The header layout. Fill with cport_packet_format_init(), then change what
 * differs. */
typedef struct cport_packet_format_s {
  /* Bytes of the length field: 2 or 4. Default 2. */
  unsigned length_size;
  /* Non-zero: the length (and the id) are big endian, network order.
   * Default 0: little endian, as C structs on x86. */
  int big_endian;
  /* Non-zero (the default): the length counts the whole packet, header
   * included; a length below the header's size is
   * then malformed. 0: it counts the payload only. */
  int length_includes_header;
  /* Non-zero (the default): a 2-byte id follows the length. 0: no id; every
   * packet then has id 0. */
  int has_id;
  /* Most bytes of one packet, header included; a longer one is refused on
   * receive (CPORT_EPACKETSIZE, the session ends) and on send. At least the
   * header size. Default 65535, the most a 2-byte length counting the
   * header can say. */
  size_t max_packet;
} cport_packet_format_t;

/* Fill `fmt` with the default layout described above. Thread: any. */
CPORT_API void cport_packet_format_init(cport_packet_format_t* fmt);

/* Bytes of the header `fmt` describes: length_size, plus 2 with an id.
 * Thread:  any.
 * Returns: the size; 0 for NULL or an invalid format (see
 *          cport_packet_format_check). */
CPORT_API size_t cport_packet_header_size(const cport_packet_format_t* fmt);

/* Check a format: length_size 2 or 4, max_packet at least the header size
 * and at most UINT32_MAX.
 * Thread:  any.
 * Returns: 0; UV_EINVAL for NULL or any field out of range. */
CPORT_API int cport_packet_format_check(const cport_packet_format_t* fmt);

/* Send one packet on `s`: a header in the service's format (opts.packet)
 * with `id` and the length of `payload`, then the `len` payload bytes,
 * copied together into one send request, so the packet leaves whole and in
 * order with the session's other sends. Everything else (threads, order,
 * the send queue limit and its policy, on_send with the packet's whole
 * length) is as for cport_session_send().
 * Ownership: `payload` is copied before return; the caller keeps it.
 * Thread:    any, holding a reference to `s`.
 * Returns:   as cport_session_send(), and: UV_EINVAL for NULL `s`, NULL
 *            `payload` with `len` above 0, an `id` above 65535, or an id
 *            other than 0 for a format without one; CPORT_EPACKETSIZE when
 *            the packet would exceed max_packet or what the length field
 *            can say (nothing is sent; the session is unharmed). */
CPORT_API int cport_session_send_packet(cport_session_t* s,
                                        unsigned id,
                                        const void* payload,
                                        size_t len);

/* Build a shared buffer holding one packet in format `fmt`: the header for
 * `id` and `len` bytes, then a copy of the payload. Send it to any number of
 * sessions with cport_session_send_buf() or cport_service_broadcast().
 * Ownership: `payload` is copied; `*out` is written only on success and
 *            holds one reference, the caller's (cport_buf_unref()).
 * Thread:    any.
 * Returns:   0; UV_EINVAL for NULL `out`, an invalid format (NULL `fmt`
 *            means the default layout), NULL `payload` with `len` above 0,
 *            or a bad `id` as for cport_session_send_packet();
 *            CPORT_EPACKETSIZE when the packet is too large for `fmt`;
 *            UV_ENOMEM. */
CPORT_API int cport_packet_buf(cport_buf_t** out,
                               const cport_packet_format_t* fmt,
                               unsigned id,
                               const void* payload,
                               size_t len);

#ifdef __cplusplus
}
#endif
#endif /* CPORT_PACKET_H */
