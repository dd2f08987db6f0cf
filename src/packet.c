/* Packets: header layouts, framing of
 * received bytes, and packets to send. packet.h describes the model.
 *
 * The framer never reads a byte it was not given: the length is read only
 * once the whole header is there, and every size is checked against
 * max_packet, in size_t arithmetic that cannot wrap (max_packet is at most
 * UINT32_MAX, a length at most UINT32_MAX plus a 6-byte header), before any
 * payload byte is looked at. */
#include <string.h>

#include "packet_internal.h"

#define PACKET_ID_SIZE 2


void cport_packet_format_init(cport_packet_format_t* fmt) {
  if (fmt == NULL)
    return;
  memset(fmt, 0, sizeof(*fmt));
  fmt->length_size = 2;
  fmt->big_endian = 0;
  fmt->length_includes_header = 1;
  fmt->has_id = 1;
  fmt->max_packet = 65535;
}


static size_t packet_header_size(const cport_packet_format_t* fmt) {
  return fmt->length_size + (fmt->has_id ? PACKET_ID_SIZE : 0);
}


int cport_packet_format_check(const cport_packet_format_t* fmt) {
  if (fmt == NULL || (fmt->length_size != 2 && fmt->length_size != 4))
    return UV_EINVAL;
  if (fmt->max_packet < packet_header_size(fmt) || fmt->max_packet > UINT32_MAX)
    return UV_EINVAL;
  return 0;
}


size_t cport_packet_header_size(const cport_packet_format_t* fmt) {
  if (cport_packet_format_check(fmt) != 0)
    return 0;
  return packet_header_size(fmt);
}


static uint32_t packet_get(const cport_packet_format_t* fmt,
                           const uint8_t* p,
                           unsigned n) {
  uint32_t v = 0;
  unsigned i;
  for (i = 0; i < n; i++) {
    unsigned at = fmt->big_endian ? i : n - 1 - i;
    v = (v << 8) | p[at];
  }
  return v;
}


static void packet_put(const cport_packet_format_t* fmt,
                       uint8_t* p,
                       unsigned n,
                       uint32_t v) {
  unsigned i;
  for (i = 0; i < n; i++) {
    unsigned at = fmt->big_endian ? n - 1 - i : i;
    p[at] = (uint8_t)(v & 0xFF);
    v >>= 8;
  }
}


int cport__packet_peek(const cport_packet_format_t* fmt,
                       const uint8_t* data,
                       size_t len,
                       cport__packet_t* p) {
  size_t field;
  p->header = packet_header_size(fmt);
  p->size = 0;
  p->id = 0;
  if (len < p->header)
    return 0;
  field = packet_get(fmt, data, fmt->length_size);
  if (fmt->length_includes_header) {
    if (field < p->header)
      return CPORT_EPACKET;
    p->size = field;
  } else {
    /* Cannot wrap: field <= UINT32_MAX and SIZE_MAX is at least that plus
     * a header on every platform cport builds for (size_t of 32 bits
     * checks first). */
    if (field > SIZE_MAX - p->header)
      return CPORT_EPACKETSIZE;
    p->size = field + p->header;
  }
  if (p->size > fmt->max_packet) {
    p->size = 0;
    return CPORT_EPACKETSIZE;
  }
  if (fmt->has_id)
    p->id = packet_get(fmt, data + fmt->length_size, PACKET_ID_SIZE);
  return len >= p->size ? 1 : 0;
}


int cport__packet_header(const cport_packet_format_t* fmt,
                         unsigned id,
                         size_t payload_len,
                         uint8_t* out) {
  size_t header = packet_header_size(fmt);
  size_t field_max = fmt->length_size == 2 ? 0xFFFFu : UINT32_MAX;
  size_t field;
  if (fmt->has_id ? id > 0xFFFFu : id != 0)
    return UV_EINVAL;
  if (payload_len > fmt->max_packet - header)
    return CPORT_EPACKETSIZE;
  field = fmt->length_includes_header ? payload_len + header : payload_len;
  if (field > field_max)
    return CPORT_EPACKETSIZE;
  packet_put(fmt, out, fmt->length_size, (uint32_t)field);
  if (fmt->has_id)
    packet_put(fmt, out + fmt->length_size, PACKET_ID_SIZE, id);
  return (int)header;
}


int cport__packet_consume(const cport_packet_format_t* fmt,
                          const uint8_t* data,
                          size_t len,
                          cport__packet_fn fn,
                          void* ctx,
                          size_t* done) {
  *done = 0;
  for (;;) {
    cport__packet_t p;
    int rc = cport__packet_peek(fmt, data + *done, len - *done, &p);
    if (rc < 0)
      return rc;
    if (rc == 0)
      return 0;
    /* Counted before the call: a stop asked by fn still means it took
     * this packet. */
    *done += p.size;
    if (fn(ctx, p.id, data + *done - p.size + p.header, p.size - p.header))
      return 0;
  }
}


size_t cport__packet_need(const cport_packet_format_t* fmt,
                          const uint8_t* data,
                          size_t len) {
  cport__packet_t p;
  if (cport__packet_peek(fmt, data, len, &p) != 0)
    return 0;
  if (p.size == 0)
    return p.header - len;
  return p.size - len;
}


int cport_packet_buf(cport_buf_t** out,
                     const cport_packet_format_t* fmt,
                     unsigned id,
                     const void* payload,
                     size_t len) {
  cport_packet_format_t dflt;
  uint8_t header[CPORT__PACKET_HEADER_MAX];
  cport_buf_t* buf;
  int hlen;
  int rc;
  if (fmt == NULL) {
    cport_packet_format_init(&dflt);
    fmt = &dflt;
  }
  if (out == NULL || (payload == NULL && len > 0) ||
      cport_packet_format_check(fmt) != 0)
    return UV_EINVAL;
  hlen = cport__packet_header(fmt, id, len, header);
  if (hlen < 0)
    return hlen;
  rc = cport_buf_create(&buf, (size_t)hlen + len);
  if (rc != 0)
    return rc;
  memcpy(cport_buf_data(buf), header, (size_t)hlen);
  if (len > 0)
    memcpy(cport_buf_data(buf) + hlen, payload, len);
  *out = buf;
  return 0;
}
