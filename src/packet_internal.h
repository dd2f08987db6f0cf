/* Packet framing shared by sessions, tests and the fuzzer. Pure functions
 * over bytes: no libuv, no sessions. */
#ifndef CPORT_PACKET_INTERNAL_H
#define CPORT_PACKET_INTERNAL_H

#include "common.h"

/* Longest header: a 4-byte length and a 2-byte id. */
#define CPORT__PACKET_HEADER_MAX 6

/* What the front of a byte run holds. */
typedef struct cport__packet_s {
  size_t header; /* header bytes */
  size_t size;   /* whole packet, header included; 0 while the header is
                    incomplete */
  unsigned id;
} cport__packet_t;

/* Read the header at the front of `data` (`len` bytes, never more).
 * `fmt` must have passed cport_packet_format_check().
 * Returns: 1 when a whole packet is there (`p` filled); 0 when more bytes
 *          are needed (p->size is the packet's size once the header is
 *          complete, else 0); CPORT_EPACKET for a length below the header
 *          size; CPORT_EPACKETSIZE for a packet over max_packet. */
int cport__packet_peek(const cport_packet_format_t* fmt,
                       const uint8_t* data,
                       size_t len,
                       cport__packet_t* p);

/* Write the header of a packet with `id` and `payload_len` payload bytes
 * into `out` (cport__packet_header_size bytes).
 * Returns: the header size; UV_EINVAL for a bad id; CPORT_EPACKETSIZE when
 *          the packet exceeds max_packet or the length field. */
int cport__packet_header(const cport_packet_format_t* fmt,
                         unsigned id,
                         size_t payload_len,
                         uint8_t* out);

/* Called for each whole packet; returns non-zero to stop delivering (the
 * session closed, or paused). */
typedef int (*cport__packet_fn)(void* ctx,
                                unsigned id,
                                const uint8_t* payload,
                                size_t len);

/* Deliver every whole packet at the front of `data` to `fn`, in order,
 * until one is incomplete or `fn` says stop. `*done` gets the bytes of the
 * packets delivered (0..len), also on error.
 * Returns: 0; or, when a header is bad, that error (CPORT_EPACKET,
 *          CPORT_EPACKETSIZE) once the good packets before it have been
 *          delivered (if `fn` did not stop). */
int cport__packet_consume(const cport_packet_format_t* fmt,
                          const uint8_t* data,
                          size_t len,
                          cport__packet_fn fn,
                          void* ctx,
                          size_t* done);

/* For a partial packet of `len` bytes at `data`: how many more bytes it
 * needs (to complete the header, or the packet); 0 when a whole packet is
 * there or the header is bad (the consumer then acts at once). */
size_t cport__packet_need(const cport_packet_format_t* fmt,
                          const uint8_t* data,
                          size_t len);

#endif /* CPORT_PACKET_INTERNAL_H */
