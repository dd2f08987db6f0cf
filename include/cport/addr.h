/* cport: socket addresses.
 *
 * A cport_addr_t is a plain value: declare it on the stack, copy it with `=`.
 * It holds an IPv4 or an IPv6 address and a port, or a host name not yet
 * looked up and a port (cport_addr_is_name). */
#ifndef CPORT_ADDR_H
#define CPORT_ADDR_H

#include <stddef.h>
#include <stdint.h>

#include "cport/export.h"

#ifdef __cplusplus
extern "C" {
#endif

struct sockaddr;

/* The longest host name cport_addr_parse() keeps, in characters. */
#define CPORT_ADDR_NAME_MAX 253

/* Large enough for any text cport_addr_format() writes ("[v6]:65535", or
 * a host name of CPORT_ADDR_NAME_MAX characters and ":65535"; the IPv6
 * scope, "%eth0", is not written) and a NUL. */
#define CPORT_ADDR_STRLEN 264

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
  /* A host name: NUL-terminated, empty for a numeric address; read it with
   * cport_addr_host(). */
  char name[CPORT_ADDR_NAME_MAX + 1];
  /* A host name's port; read it with cport_addr_port(). */
  uint16_t name_port;
} cport_addr_t;

/* Parse a host and a port into `out`.
 * `host` is a numeric IPv4 or IPv6 address, "127.0.0.1", "::1", "[::1]" or
 * "fe80::1%eth0" (the scope must be a decimal interface index or, on Unix,
 * name an existing interface; brackets only around IPv6), or a host name
 * such as "localhost" or "db.example.com". A name is checked, not looked
 * up: dot-separated labels of 1 to 63 ASCII letters, digits and hyphens,
 * none beginning or ending with a hyphen, CPORT_ADDR_NAME_MAX characters
 * at most (one trailing dot allowed and counted), the last label not all
 * digits (so "1.2.3.256" stays a bad IPv4 address). It is kept as text,
 * and services look it up when they bind or connect (cport_service_start).
 * The host is read whole or refused, never cut short. "0.0.0.0" and "::"
 * are accepted only when written out: an empty host is an error.
 * Ownership: `host` is read during the call only; `out` is written only on
 *            success.
 * Thread:    any.
 * Returns:   0; UV_EINVAL for NULL arguments, an empty, malformed or
 *            over-long host (spaces, control characters, '_', a label of
 *            64 characters or more, an empty label), or a port outside
 *            0..65535. */
CPORT_API int cport_addr_parse(cport_addr_t* out, const char* host, int port);

/* Parse "v4:port", "[v6]:port" or "name:port" (for example
 * "127.0.0.1:7777", "[::1]:7777" or "localhost:7777") into `out`; hosts as
 * cport_addr_parse() takes them, brackets only around IPv6. The port must
 * be present, decimal, 0..65535.
 * Ownership: `text` is read during the call only; `out` written on success.
 * Thread:    any.
 * Returns:   0; UV_EINVAL for NULL, a missing or bad port, a malformed host,
 *            or an IPv6 host without brackets. */
CPORT_API int cport_addr_parse_hostport(cport_addr_t* out, const char* text);

/* Look up a host name (or numeric address) now and take its first IPv4 or
 * IPv6 result, with `port`. Services do not need it: they take a name
 * (cport_addr_parse) and look it up themselves.
 * Ownership: `host` read during the call only; `out` written on success.
 * Thread:    any.
 * Blocks:    yes, on the system resolver; never call it on the thread of a
 *            loop that serves sessions.
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
 * Returns:   NULL for a NULL or never-parsed address, and for a host name,
 *            which has no socket address until looked up. */
CPORT_API const struct sockaddr* cport_addr_sockaddr(const cport_addr_t* addr);

/* Format as "1.2.3.4:80", "[::1]:80" or "localhost:80" into `buf` of
 * `size` bytes (CPORT_ADDR_STRLEN always suffices).
 * Thread:  any.
 * Returns: 0; UV_EINVAL for NULL or an unset address; UV_ENOSPC if `size` is
 *          too small (then `buf` holds an empty string if size > 0). */
CPORT_API int cport_addr_format(const cport_addr_t* addr,
                                char* buf,
                                size_t size);

/* Format only the host part, without brackets: "1.2.3.4", "::1" or
 * "localhost".
 * Thread:  any.
 * Returns: as cport_addr_format(). */
CPORT_API int cport_addr_format_host(const cport_addr_t* addr,
                                     char* buf,
                                     size_t size);

/* Thread: any. Returns: the port (0..65535), or UV_EINVAL for NULL/unset. */
CPORT_API int cport_addr_port(const cport_addr_t* addr);

/* Thread: any. Returns: 4 or 6; 0 for a host name, whose family is known
 * only once it is looked up; UV_EINVAL for NULL/unset. */
CPORT_API int cport_addr_family(const cport_addr_t* addr);

/* Thread: any. Returns: 1 if `addr` holds a host name (not looked up), 0
 * for a numeric, unset or NULL address. */
CPORT_API int cport_addr_is_name(const cport_addr_t* addr);

/* The host name `addr` holds, as cport_addr_parse() took it.
 * Ownership: points into `addr`; valid while `addr` is.
 * Thread:    any.
 * Returns:   the name; NULL for a numeric, unset or NULL address. */
CPORT_API const char* cport_addr_host(const cport_addr_t* addr);

#ifdef __cplusplus
}
#endif
#endif /* CPORT_ADDR_H */
