/* cport: socket addresses.
 *
 * A cport_addr_t is a plain value: declare it on the stack, copy it with `=`.
 * It holds an IPv4 or an IPv6 address and a port. */
#ifndef CPORT_ADDR_H
#define CPORT_ADDR_H

#include <stddef.h>
#include <stdint.h>

#include "cport/export.h"

#ifdef __cplusplus
extern "C" {
#endif

struct sockaddr;

/* Large enough for any text cport_addr_format() writes ("[v6]:65535"; the
 * IPv6 scope, "%eth0", is not written) and a NUL. */
#define CPORT_ADDR_STRLEN 96

/* An address zero-filled (cport_addr_t a = {0}, or memset) is "unset":
 * cport_addr_sockaddr() returns NULL for it and services refuse it. */
typedef struct cport_addr_s {
  /* A struct sockaddr_in or sockaddr_in6; read it with cport_addr_sockaddr().
   * The union gives it the alignment the socket structures need without
   * pulling system socket headers into this header. */
  union {
    uint64_t align;
    unsigned char bytes[32];
  } u;
} cport_addr_t;

/* Parse a numeric IPv4 or IPv6 host and a port into `out`.
 * `host` is "127.0.0.1", "::1", "[::1]" or "fe80::1%eth0" (the scope must
 * be a decimal interface index or, on Unix, name an existing interface);
 * brackets only around IPv6. The host is read whole or refused, never cut
 * short. Names such as "localhost" are not looked up here (see
 * cport_addr_resolve). "0.0.0.0" and "::" are accepted only when written
 * out: an empty host is an error.
 * Ownership: `host` is read during the call only; `out` is written only on
 *            success.
 * Thread:    any.
 * Returns:   0; UV_EINVAL for NULL arguments, an empty or malformed host, or a
 *            port outside 0..65535. */
CPORT_API int cport_addr_parse(cport_addr_t* out, const char* host, int port);

/* Parse "v4:port" or "[v6]:port" (for example "127.0.0.1:7777" or
 * "[::1]:7777") into `out`. The port must be present, decimal, 0..65535.
 * Ownership: `text` is read during the call only; `out` written on success.
 * Thread:    any.
 * Returns:   0; UV_EINVAL for NULL, a missing or bad port, a malformed host,
 *            or an IPv6 host without brackets. */
CPORT_API int cport_addr_parse_hostport(cport_addr_t* out, const char* text);

/* Look up a host name (or numeric address) and take its first IPv4 or IPv6
 * result, with `port`.
 * Ownership: `host` read during the call only; `out` written on success.
 * Thread:    any.
 * Blocks:    yes, on the system resolver; never call it on a port thread of a
 *            busy server.
 * Returns:   0; UV_EINVAL for NULL, empty host or bad port; a UV_EAI_* code
 *            from the resolver; another libuv error if the private loop the
 *            lookup runs on cannot be set up. */
CPORT_API int cport_addr_resolve(cport_addr_t* out, const char* host, int port);

/* Fill `out` from a struct sockaddr_in or sockaddr_in6.
 * Thread: any.
 * Returns: 0; UV_EINVAL for NULL or another address family. */
CPORT_API int cport_addr_from_sockaddr(cport_addr_t* out,
                                       const struct sockaddr* sa);

/* The address as a struct sockaddr*, to pass to libuv or the socket API.
 * Ownership: points into `addr`; valid while `addr` is.
 * Thread:    any.
 * Returns:   NULL for a NULL or never-parsed address. */
CPORT_API const struct sockaddr* cport_addr_sockaddr(const cport_addr_t* addr);

/* Format as "1.2.3.4:80" or "[::1]:80" into `buf` of `size` bytes
 * (CPORT_ADDR_STRLEN always suffices).
 * Thread:  any.
 * Returns: 0; UV_EINVAL for NULL or an unset address; UV_ENOSPC if `size` is
 *          too small (then `buf` holds an empty string if size > 0). */
CPORT_API int cport_addr_format(const cport_addr_t* addr,
                                char* buf,
                                size_t size);

/* Format only the host part, without brackets: "1.2.3.4" or "::1".
 * Thread:  any.
 * Returns: as cport_addr_format(). */
CPORT_API int cport_addr_format_host(const cport_addr_t* addr,
                                     char* buf,
                                     size_t size);

/* Thread: any. Returns: the port (0..65535), or UV_EINVAL for NULL/unset. */
CPORT_API int cport_addr_port(const cport_addr_t* addr);

/* Thread: any. Returns: 4 or 6, or UV_EINVAL for NULL/unset. */
CPORT_API int cport_addr_family(const cport_addr_t* addr);

#ifdef __cplusplus
}
#endif
#endif /* CPORT_ADDR_H */
