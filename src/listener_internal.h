/* The listener: the listening socket of a server
 * service, handing each accepted connection to the service. Not public in
 * this version: the service owns exactly one and exposes what users need
 * (its bound address, the rejected count). */
#ifndef CPORT_LISTENER_INTERNAL_H
#define CPORT_LISTENER_INTERNAL_H

#include "service_internal.h"

typedef struct cport__listener_s cport__listener_t;

/* Bind the service's address, listen, and store the listener in `*out`.
 * Returns 0 or the bind/listen error; on error nothing is left open and
 * `*out` is untouched (the memory is released by the close callback). */
CPORT__NODISCARD int cport__listener_start(cport_service_t* svc,
                                           cport__listener_t** out);

/* Close the listener (NULL: nothing); when its handles have closed it
 * calls cport__service_listener_closed(). Safe to call twice. */
void cport__listener_close(cport__listener_t* l);

/* The bound address. Returns 0 or a libuv error. */
int cport__listener_addr(const cport__listener_t* l, cport_addr_t* out);

#endif /* CPORT_LISTENER_INTERNAL_H */
