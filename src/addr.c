/* cport_addr_t: parsing and formatting of IPv4 and IPv6 socket addresses,
 * of host names kept for later lookup, and of local endpoints (Unix domain
 * sockets, Windows named pipes), kept as their path.
 * libuv does the address conversions (uv_ip4_addr, uv_ip6_addr, uv_ip_name,
 * uv_getaddrinfo); this file adds strict port parsing, the "[v6]:port"
 * syntax, the refusal of empty hosts, host name syntax, and reads IPv6
 * scopes itself. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifndef _WIN32
#include <sys/un.h>
#endif

#include "addr_internal.h"

_Static_assert((sizeof(struct sockaddr_in6) <= sizeof(((cport_addr_t*)0)->u)),
               "cport_addr_t too small for sockaddr_in6");
_Static_assert((sizeof(struct sockaddr_in) <= sizeof(((cport_addr_t*)0)->u)),
               "cport_addr_t too small for sockaddr_in");

/* The longest IPv4 or IPv6 text, INET6_ADDRSTRLEN less its NUL:
 * "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255". Longer text before any
 * '%' is refused whole, never read in part. */
#define ADDR_IP_TEXT_MAX 45


static int addr_family_of(const cport_addr_t* addr) {
  const struct sockaddr* sa = (const struct sockaddr*)addr->u.bytes;
  return sa->sa_family;
}


/* Decimal digits only, 0..65535, no sign, no spaces, no trailing text. */
static int parse_port(const char* text, int* out) {
  long value = 0;
  const char* p = text;
  if (*p == '\0')
    return UV_EINVAL;
  for (; *p != '\0'; p++) {
    if (*p < '0' || *p > '9')
      return UV_EINVAL;
    value = value * 10 + (*p - '0');
    if (value > 65535)
      return UV_EINVAL;
  }
  *out = (int)value;
  return 0;
}


/* A scope of `len` characters: a decimal interface index, or the name of an
 * interface that exists. The number is read here, not with strtoul, whose
 * `unsigned long` is 32 bits on Windows and would clamp 4294967296 to
 * UINT32_MAX instead of failing. */
static int parse_scope(const char* text, size_t len, uint32_t* out) {
  uint64_t index = 0;
  size_t i;
  if (len == 0)
    return UV_EINVAL;
  for (i = 0; i < len; i++) {
    if (text[i] < '0' || text[i] > '9')
      return cport__platform_if_index(text, len, out);
  }
  for (i = 0; i < len; i++) {
    index = index * 10 + (uint64_t)(text[i] - '0');
    if (index > UINT32_MAX)
      return UV_EINVAL;
  }
  *out = (uint32_t)index;
  return 0;
}


/* `host` of length `len`, not NUL-terminated, without brackets. `bracketed`
 * says it was written in brackets, which only IPv6 may be.
 *
 * The address and an IPv6 "%scope" are read apart. uv_ip6_addr() is given
 * the address alone, because with a scope it cuts the text before '%' to 39
 * characters unchecked (a 45-character address lost its tail), and turns an
 * unknown scope name into scope 0 (on Windows, a scope into atoi()'s
 * number). */
static int parse_ip(
    cport_addr_t* out, const char* host, size_t len, int port, int bracketed) {
  char ip[ADDR_IP_TEXT_MAX + 1];
  const char* percent = memchr(host, '%', len);
  size_t ip_len = percent != NULL ? (size_t)(percent - host) : len;
  cport_addr_t tmp;
  struct sockaddr_in6* sin6 = (struct sockaddr_in6*)tmp.u.bytes;
  uint32_t scope_id = 0;
  if (ip_len == 0 || ip_len > ADDR_IP_TEXT_MAX)
    return UV_EINVAL;
  memcpy(ip, host, ip_len);
  ip[ip_len] = '\0';
  memset(&tmp, 0, sizeof(tmp));
  if (memchr(ip, ':', ip_len) == NULL) {
    if (bracketed || percent != NULL)
      return UV_EINVAL;
    if (uv_ip4_addr(ip, port, (struct sockaddr_in*)tmp.u.bytes) != 0)
      return UV_EINVAL;
    *out = tmp;
    return 0;
  }
  if (percent != NULL &&
      parse_scope(percent + 1, len - ip_len - 1, &scope_id) != 0)
    return UV_EINVAL;
  if (uv_ip6_addr(ip, port, sin6) != 0)
    return UV_EINVAL;
  sin6->sin6_scope_id = scope_id;
  *out = tmp;
  return 0;
}


static int is_letter_digit(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9');
}


/* A host name of `len` characters (RFC 1123): labels of 1..63 letters,
 * digits and hyphens, no hyphen first or last, separated by single dots,
 * one trailing dot allowed. The last label must not be all digits, so
 * that a bad IPv4 address ("1.2.3.256", "1.2.3") is refused, not taken for
 * a name the resolver might read as a number. Checked by hand rather than
 * with isalnum(), whose answer depends on the locale. */
static int parse_name(cport_addr_t* out,
                      const char* host,
                      size_t len,
                      int port) {
  size_t i;
  size_t label = 0;     /* characters in the current label */
  int numeric = 1;      /* the current label is all digits so far */
  int last_numeric = 1; /* the last complete label was */
  size_t end = len > 0 && host[len - 1] == '.' ? len - 1 : len;
  if (end == 0 || len > CPORT_ADDR_NAME_MAX)
    return UV_EINVAL;
  for (i = 0; i <= end; i++) {
    char c = i < end ? host[i] : '.';
    if (c == '.') {
      if (label == 0 || host[i - 1] == '-')
        return UV_EINVAL;
      last_numeric = numeric;
      label = 0;
      numeric = 1;
      continue;
    }
    if (!is_letter_digit(c) && (c != '-' || label == 0))
      return UV_EINVAL;
    if (c < '0' || c > '9')
      numeric = 0;
    if (++label > 63)
      return UV_EINVAL;
  }
  if (last_numeric)
    return UV_EINVAL;
  memset(out, 0, sizeof(*out));
  memcpy(out->name, host, len);
  out->name_port = (uint16_t)port;
  return 0;
}


/* A numeric host first: the common case pays nothing for names. */
static int parse_host(
    cport_addr_t* out, const char* host, size_t len, int port, int bracketed) {
  if (parse_ip(out, host, len, port, bracketed) == 0)
    return 0;
  return bracketed ? UV_EINVAL : parse_name(out, host, len, port);
}


/* `names`: a host name is kept (cport_addr_parse) or refused (the numeric
 * short cut of cport_addr_resolve). */
static int parse_text(cport_addr_t* out,
                      const char* host,
                      int port,
                      int names) {
  size_t len;
  if (out == NULL || host == NULL || port < 0 || port > 65535)
    return UV_EINVAL;
  len = strlen(host);
  if (len >= 2 && host[0] == '[' && host[len - 1] == ']')
    return parse_ip(out, host + 1, len - 2, port, 1);
  if (memchr(host, '[', len) != NULL || memchr(host, ']', len) != NULL)
    return UV_EINVAL;
  return names ? parse_host(out, host, len, port, 0)
               : parse_ip(out, host, len, port, 0);
}


int cport_addr_parse(cport_addr_t* out, const char* host, int port) {
  return parse_text(out, host, port, 1);
}


size_t cport_addr_unix_path_max(void) {
#ifdef _WIN32
  return 0;
#else
  return sizeof(((struct sockaddr_un*)0)->sun_path) - 1;
#endif
}


/* Windows' prefix of every named pipe's name. */
#define ADDR_PIPE_PREFIX "\\\\.\\pipe\\"

int cport_addr_parse_local(cport_addr_t* out, const char* path) {
  size_t len;
  size_t max;
  if (out == NULL || path == NULL || path[0] == '\0')
    return UV_EINVAL;
  len = strlen(path);
#ifdef _WIN32
  max = CPORT_ADDR_NAME_MAX;
  if (len <= sizeof(ADDR_PIPE_PREFIX) - 1 ||
      strncmp(path, ADDR_PIPE_PREFIX, sizeof(ADDR_PIPE_PREFIX) - 1) != 0)
    return UV_EINVAL;
#else
  /* An abstract name has no NUL in the kernel's name, so its '@' (the
   * leading NUL there) takes the terminator's place. */
  max = cport_addr_unix_path_max() + (path[0] == '@' ? 1 : 0);
#if !defined(__linux__)
  if (path[0] == '@')
    return UV_ENOTSUP;
#endif
  if (path[0] == '@' && len == 1)
    return UV_EINVAL;
#endif
  if (len > max)
    return UV_ENAMETOOLONG;
  memset(out, 0, sizeof(*out));
  memcpy(out->name, path, len);
#ifdef _WIN32
  out->local = CPORT_ADDR_PIPE;
#else
  out->local = CPORT_ADDR_UNIX;
#endif
  return 0;
}


int cport_addr_parse_hostport(cport_addr_t* out, const char* text) {
  const char* colon;
  const char* close;
  int port;
  if (out == NULL || text == NULL)
    return UV_EINVAL;
  if (strncmp(text, "unix:", 5) == 0 || strncmp(text, "pipe:", 5) == 0) {
#ifdef _WIN32
    if (text[0] == 'u')
      return UV_ENOTSUP;
#else
    if (text[0] == 'p')
      return UV_ENOTSUP;
#endif
    return cport_addr_parse_local(out, text + 5);
  }
  if (text[0] == '[') {
    close = strchr(text, ']');
    if (close == NULL || close[1] != ':')
      return UV_EINVAL;
    if (parse_port(close + 2, &port) != 0)
      return UV_EINVAL;
    return parse_host(out, text + 1, (size_t)(close - text - 1), port, 1);
  }
  colon = strchr(text, ':');
  /* A second colon means an IPv6 literal without brackets: ambiguous. */
  if (colon == NULL || strchr(colon + 1, ':') != NULL)
    return UV_EINVAL;
  if (parse_port(colon + 1, &port) != 0)
    return UV_EINVAL;
  if (memchr(text, '[', (size_t)(colon - text)) != NULL ||
      memchr(text, ']', (size_t)(colon - text)) != NULL)
    return UV_EINVAL;
  return parse_host(out, text, (size_t)(colon - text), port, 0);
}


void cport__addr_hints(struct addrinfo* hints) {
  memset(hints, 0, sizeof(*hints));
  hints->ai_family = AF_UNSPEC;
  hints->ai_socktype = SOCK_STREAM;
}


int cport__addr_lookup(const char* host, struct addrinfo** out) {
  uv_loop_t loop;
  uv_getaddrinfo_t req;
  struct addrinfo hints;
  int rc;
  cport__addr_hints(&hints);
  /* A NULL callback makes uv_getaddrinfo synchronous; libuv still counts
   * the request on a loop, so a private one is used. */
  rc = uv_loop_init(&loop);
  if (rc != 0)
    return rc;
  rc = uv_getaddrinfo(&loop, &req, NULL, host, NULL, &hints);
  uv_loop_close(&loop);
  if (rc != 0)
    return rc;
  *out = req.addrinfo;
  return 0;
}


const struct addrinfo* cport__addr_next_inet(const struct addrinfo* ai) {
  while (ai != NULL && ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
    ai = ai->ai_next;
  return ai;
}


int cport__addr_from_lookup(cport_addr_t* out,
                            const struct sockaddr* sa,
                            int port) {
  int rc = cport_addr_from_sockaddr(out, sa);
  if (rc != 0)
    return rc;
  if (sa->sa_family == AF_INET)
    ((struct sockaddr_in*)out->u.bytes)->sin_port = htons((uint16_t)port);
  else
    ((struct sockaddr_in6*)out->u.bytes)->sin6_port = htons((uint16_t)port);
  return 0;
}


int cport_addr_resolve(cport_addr_t* out, const char* host, int port) {
  struct addrinfo* list;
  const struct addrinfo* ai;
  int rc;
  if (out == NULL || host == NULL || host[0] == '\0' || port < 0 ||
      port > 65535)
    return UV_EINVAL;
  if (parse_text(out, host, port, 0) == 0)
    return 0;
  rc = cport__addr_lookup(host, &list);
  if (rc != 0)
    return rc;
  ai = cport__addr_next_inet(list);
  rc = ai != NULL ? cport__addr_from_lookup(out, ai->ai_addr, port)
                  : UV_EAI_NONAME;
  uv_freeaddrinfo(list);
  return rc;
}


int cport_addr_from_sockaddr(cport_addr_t* out, const struct sockaddr* sa) {
  if (out == NULL || sa == NULL)
    return UV_EINVAL;
  if (sa->sa_family == AF_INET) {
    memset(out, 0, sizeof(*out));
    memcpy(out->u.bytes, sa, sizeof(struct sockaddr_in));
    return 0;
  }
  if (sa->sa_family == AF_INET6) {
    memset(out, 0, sizeof(*out));
    memcpy(out->u.bytes, sa, sizeof(struct sockaddr_in6));
    return 0;
  }
  return UV_EINVAL;
}


const struct sockaddr* cport_addr_sockaddr(const cport_addr_t* addr) {
  int family;
  if (addr == NULL)
    return NULL;
  family = addr_family_of(addr);
  if (family != AF_INET && family != AF_INET6)
    return NULL;
  return (const struct sockaddr*)addr->u.bytes;
}


int cport_addr_format_host(const cport_addr_t* addr, char* buf, size_t size) {
  char tmp[CPORT_ADDR_STRLEN];
  const struct sockaddr* sa = cport_addr_sockaddr(addr);
  const char* text = tmp;
  int rc;
  size_t len;
  if (buf == NULL)
    return UV_EINVAL;
  if (sa == NULL) {
    text = cport_addr_host(addr);
    if (text == NULL)
      text = cport_addr_path(addr);
    if (text == NULL)
      return UV_EINVAL;
  } else {
    if (sa->sa_family == AF_INET)
      rc = uv_ip4_name((const struct sockaddr_in*)sa, tmp, sizeof(tmp));
    else
      rc = uv_ip6_name((const struct sockaddr_in6*)sa, tmp, sizeof(tmp));
    if (rc != 0)
      return rc;
  }
  len = strlen(text);
  if (len + 1 > size) {
    if (size > 0)
      buf[0] = '\0';
    return UV_ENOSPC;
  }
  memcpy(buf, text, len + 1);
  return 0;
}


int cport_addr_format(const cport_addr_t* addr, char* buf, size_t size) {
  char host[CPORT_ADDR_STRLEN];
  char tmp[CPORT_ADDR_STRLEN + 16];
  int rc;
  int n;
  if (buf == NULL)
    return UV_EINVAL;
  rc = cport_addr_format_host(addr, host, sizeof(host));
  if (rc != 0)
    return rc;
  if (addr->local != 0)
    n = snprintf(tmp, sizeof(tmp), "%s:%s",
                 addr->local == CPORT_ADDR_PIPE ? "pipe" : "unix", host);
  else
    n = snprintf(tmp, sizeof(tmp),
                 cport_addr_family(addr) == 6 ? "[%s]:%d" : "%s:%d", host,
                 cport_addr_port(addr));
  if (n < 0 || (size_t)n + 1 > size) {
    if (size > 0)
      buf[0] = '\0';
    return UV_ENOSPC;
  }
  memcpy(buf, tmp, (size_t)n + 1);
  return 0;
}


int cport_addr_port(const cport_addr_t* addr) {
  const struct sockaddr* sa = cport_addr_sockaddr(addr);
  if (sa == NULL)
    return cport_addr_is_name(addr) ? addr->name_port
           : cport_addr_path(addr) != NULL ? 0
                                           : UV_EINVAL;
  if (sa->sa_family == AF_INET)
    return ntohs(((const struct sockaddr_in*)sa)->sin_port);
  return ntohs(((const struct sockaddr_in6*)sa)->sin6_port);
}


int cport_addr_family(const cport_addr_t* addr) {
  const struct sockaddr* sa = cport_addr_sockaddr(addr);
  if (sa == NULL)
    return cport_addr_is_name(addr) || cport_addr_path(addr) != NULL
               ? 0
               : UV_EINVAL;
  return sa->sa_family == AF_INET ? 4 : 6;
}


int cport_addr_is_name(const cport_addr_t* addr) {
  /* A numeric address is written with a zeroed name (from_sockaddr,
   * parse_ip), a name with a zeroed socket address. */
  return addr != NULL && addr->name[0] != '\0' && addr->local == 0 &&
         cport_addr_sockaddr(addr) == NULL;
}


const char* cport_addr_path(const cport_addr_t* addr) {
  return addr != NULL && addr->name[0] != '\0' &&
                 (addr->local == CPORT_ADDR_UNIX ||
                  addr->local == CPORT_ADDR_PIPE)
             ? addr->name
             : NULL;
}


cport_addr_kind_t cport_addr_kind(const cport_addr_t* addr) {
  if (cport_addr_sockaddr(addr) != NULL)
    return CPORT_ADDR_INET;
  if (cport_addr_is_name(addr))
    return CPORT_ADDR_NAME;
  if (cport_addr_path(addr) != NULL)
    return (cport_addr_kind_t)addr->local;
  return CPORT_ADDR_NONE;
}


const char* cport_addr_host(const cport_addr_t* addr) {
  return cport_addr_is_name(addr) ? addr->name : NULL;
}
