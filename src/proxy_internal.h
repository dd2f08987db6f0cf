/* What services and sessions use of the PROXY protocol module besides its
 * public functions (proxy.h): the allow-list of balancers
 * (opts.proxy_trusted). */
#ifndef CPORT_PROXY_INTERNAL_H
#define CPORT_PROXY_INTERNAL_H

#include "common.h"
#include "cport/proxy.h"

/* One network of the list: `bits` leading bits of `addr` (4 bytes for
 * IPv4, 16 for IPv6). */
typedef struct cport__proxy_net_s {
  uint8_t family; /* 4 or 6 */
  uint8_t bits;   /* 0..32 or 0..128 */
  uint8_t addr[16];
} cport__proxy_net_t;

/* Parse a comma-separated list of addresses and networks ("10.0.0.0/8,
 * 127.0.0.1, ::1, fd00::/8"; spaces around items allowed; an address
 * without /bits is a single host; bits set below the prefix length are
 * refused, as "10.0.0.1/8" is likely a mistake) into an array allocated
 * with cport__malloc (free with cport__free).
 * Returns 0 with the array and its length (at least 1); UV_EINVAL for NULL
 * or an empty list, an empty item, a bad address or prefix length, with a
 * short reason in `*cause` (static text, when `cause` is non-NULL);
 * UV_ENOMEM. */
CPORT__NODISCARD int cport__proxy_nets_parse(const char* text,
                                             cport__proxy_net_t** out,
                                             size_t* count,
                                             const char** cause);

/* Non-zero when `sa` (a sockaddr_in or sockaddr_in6) lies in one of the
 * `count` networks. An IPv4-mapped IPv6 address (::ffff:a.b.c.d, what a
 * dual-stack socket reports for an IPv4 peer) matches IPv4 networks as
 * its IPv4 address. */
int cport__proxy_nets_match(const cport__proxy_net_t* nets,
                            size_t count,
                            const struct sockaddr* sa);

/* CRC32C (Castagnoli, the v2 header's checksum) of `len` bytes, starting
 * from `crc` (0 for a new sum). */
uint32_t cport__crc32c(uint32_t crc, const void* data, size_t len);

#endif /* CPORT_PROXY_INTERNAL_H */
