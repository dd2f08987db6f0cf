/* What services need of addr.c to look host names up. */
#ifndef CPORT_ADDR_INTERNAL_H
#define CPORT_ADDR_INTERNAL_H

#include "common.h"

/* The hints of every lookup: TCP, IPv4 and IPv6 alike. No AI_ADDRCONFIG:
 * on a host with loopback only it can hide "localhost" itself, and an
 * address of a family the host cannot reach only fails its own connect. */
void cport__addr_hints(struct addrinfo* hints);

/* Look `host` up, blocking, on a private loop, so that no loop of the
 * caller's is touched. `*out` is the result, for uv_freeaddrinfo().
 * Returns 0 or a UV_EAI_* code (or a libuv error setting the loop up). */
CPORT__NODISCARD int cport__addr_lookup(const char* host,
                                        struct addrinfo** out);

/* The next IPv4 or IPv6 entry from `ai` on (NULL when none is left). */
const struct addrinfo* cport__addr_next_inet(const struct addrinfo* ai);

/* `out` from a lookup result's sockaddr with `port` set. Returns 0 or
 * UV_EINVAL for another family. */
int cport__addr_from_lookup(cport_addr_t* out,
                            const struct sockaddr* sa,
                            int port);

#endif /* CPORT_ADDR_INTERNAL_H */
