/* cport: socket addresses.
 *
 * A cport_addr_t is a plain value: declare it on the stack, copy it with `=`.
 * It holds an IPv4 or an IPv6 address and a port, a host name not yet
 * looked up and a port (cport_addr_is_name), or a local endpoint: a Unix
 * domain socket or a Windows named pipe (cport_addr_kind). */
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
 * a host name of CPORT_ADDR_NAME_MAX characters and ":65535", or "unix:" or
 * "pipe:" and a local path; the IPv6 scope, "%eth0", is not written) and a
 * NUL. */
#define CPORT_ADDR_STRLEN 264

/* The longest path of a Unix domain socket, in bytes: the platform's
 * sockaddr_un.sun_path less its NUL (107 on Linux, 103 on macOS and the
 * BSDs), checked when the address is parsed. A Linux abstract name,
 * written "@name", has as many bytes after its '@'. A Windows named pipe's
 * name may have CPORT_ADDR_NAME_MAX characters.
 * Thread:  any.
 * Returns: that length; 0 on Windows, which has no Unix domain sockets. */
CPORT_API size_t cport_addr_unix_path_max(void);

/* What an address is (cport_addr_kind). */
typedef enum {
  CPORT_ADDR_NONE = 0, /* unset (zero-filled) */
  CPORT_ADDR_INET,     /* an IPv4 or IPv6 address and a port */
  CPORT_ADDR_NAME,     /* a host name and a port, not looked up yet */
  CPORT_ADDR_UNIX,     /* a Unix domain socket: a path or an abstract name */
  CPORT_ADDR_PIPE      /* a Windows named pipe: \\.\pipe\name */
} cport_addr_kind_t;

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
  /* CPORT_ADDR_UNIX or CPORT_ADDR_PIPE for a local endpoint, whose path
   * is in `name`; 0 otherwise. Read it with cport_addr_kind(). */
  unsigned char local;
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
 * Also a local endpoint, as cport_addr_parse_local() takes its path:
 * "unix:/run/app.sock" (Unix), "unix:@app" (a Linux abstract name) or
 * "pipe:\\.\pipe\app" (Windows).
 * Ownership: `text` is read during the call only; `out` written on success.
 * Thread:    any.
 * Returns:   0; UV_EINVAL for NULL, a missing or bad port, a malformed host,
 *            or an IPv6 host without brackets; for "unix:" and "pipe:" what
 *            cport_addr_parse_local() returns, and UV_ENOTSUP for "unix:"
 *            on Windows (libuv's local endpoints there are named pipes)
 *            and "pipe:" elsewhere. */
CPORT_API int cport_addr_parse_hostport(cport_addr_t* out, const char* text);

/* Parse a local endpoint into `out`. On Unix `path` is the path of a Unix
 * domain socket ("/run/app.sock", or relative), or on Linux "@name", an
 * abstract name: no file, gone with the last socket that uses it (the '@'
 * stands for the leading NUL byte of the kernel's name; a file whose name
 * begins with '@' is written "./@name"). On Windows `path` is a named
 * pipe's name, "\\.\pipe\name". The
 * path is kept as text; services bind or connect it when they start.
 * Ownership: `path` is read during the call only; `out` written on success.
 * Thread:    any.
 * Returns:   0; UV_EINVAL for NULL or an empty path (or, on Windows, a name
 *            that does not begin with \\.\pipe\ or has nothing after
 *            it); UV_ENAMETOOLONG for a path longer than
 *            cport_addr_unix_path_max() (a pipe name longer than
 *            CPORT_ADDR_NAME_MAX); UV_ENOTSUP for an abstract name outside
 *            Linux. */
CPORT_API int cport_addr_parse_local(cport_addr_t* out, const char* path);

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

/* Format as "1.2.3.4:80", "[::1]:80", "localhost:80", "unix:/run/app.sock"
 * or "pipe:\\.\pipe\app" into `buf` of `size` bytes (CPORT_ADDR_STRLEN
 * always suffices); cport_addr_parse_hostport() reads every one back.
 * Thread:  any.
 * Returns: 0; UV_EINVAL for NULL or an unset address; UV_ENOSPC if `size` is
 *          too small (then `buf` holds an empty string if size > 0). */
CPORT_API int cport_addr_format(const cport_addr_t* addr,
                                char* buf,
                                size_t size);

/* Format only the host part, without brackets: "1.2.3.4", "::1" or
 * "localhost"; the path of a local endpoint.
 * Thread:  any.
 * Returns: as cport_addr_format(). */
CPORT_API int cport_addr_format_host(const cport_addr_t* addr,
                                     char* buf,
                                     size_t size);

/* Thread: any. Returns: the port (0..65535; 0 for a local endpoint), or
 * UV_EINVAL for NULL/unset. */
CPORT_API int cport_addr_port(const cport_addr_t* addr);

/* Thread: any. Returns: 4 or 6; 0 for a host name, whose family is known
 * only once it is looked up, and for a local endpoint; UV_EINVAL for
 * NULL/unset. */
CPORT_API int cport_addr_family(const cport_addr_t* addr);

/* Thread: any. Returns: 1 if `addr` holds a host name (not looked up), 0
 * for a numeric, unset or NULL address. */
CPORT_API int cport_addr_is_name(const cport_addr_t* addr);

/* Thread: any. Returns: what `addr` holds; CPORT_ADDR_NONE for NULL or
 * unset. */
CPORT_API cport_addr_kind_t cport_addr_kind(const cport_addr_t* addr);

/* The path of a local endpoint, as cport_addr_parse_local() took it
 * ("@name" for a Linux abstract name).
 * Ownership: points into `addr`; valid while `addr` is.
 * Thread:    any.
 * Returns:   the path; NULL for any other address, unset or NULL. */
CPORT_API const char* cport_addr_path(const cport_addr_t* addr);

/* The host name `addr` holds, as cport_addr_parse() took it.
 * Ownership: points into `addr`; valid while `addr` is.
 * Thread:    any.
 * Returns:   the name; NULL for a numeric, unset or NULL address. */
CPORT_API const char* cport_addr_host(const cport_addr_t* addr);

#ifdef __cplusplus
}
#endif
#endif /* CPORT_ADDR_H */
